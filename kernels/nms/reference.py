"""CPU reference NMS + rescale (Ultralytics 8.4.190 ``non_max_suppression`` for the single pose class,
``scale_boxes`` / ``scale_coords``), written out so each rule is visible:

* candidates sorted by score, descending (ties: lower anchor index first);
* greedy: a candidate is dropped when its IoU with an already kept one is > iou (IoU <= iou keeps), with
  torchvision's float32 arithmetic (zero-area pairs give 0/0 = NaN, which suppresses nothing);
* at most max_det kept; then boxes and keypoints x, y: (v - pad) / gain per axis, clipped to the image.

An end-to-end head (YOLO26 with ``nms=False``) has no NMS: its selection is the same sort and the first
max_det (``iou=None``; Ultralytics 8.4.190 ``Detect.postprocess`` top-k, then ``non_max_suppression``'s
end-to-end branch keeps those above conf, best first).
"""
from __future__ import annotations

import numpy as np
import torch


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """torchvision CPU nms_kernel's IoU, float32: inter / (area_i + area_j - inter)."""
    box = box.astype(np.float32)
    boxes = boxes.astype(np.float32)
    area_i = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    w = np.maximum(np.float32(0), np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]))
    h = np.maximum(np.float32(0), np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]))
    inter = w * h
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_i + areas - inter)


def nms_reference(boxes, scores, iou: float | None = 0.7, max_det: int = 300, anchors=None) -> np.ndarray:
    """Indices into ``boxes`` of the kept candidates, best score first (``iou`` None: none suppressed)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    n = scores.shape[0]
    tie = np.arange(n) if anchors is None else np.asarray(anchors).reshape(-1)
    order = np.lexsort((tie, -scores))
    if iou is None:
        return order[:max_det].astype(np.int64)
    removed = np.zeros(n, bool)
    keep = []
    for pos, i in enumerate(order):
        if removed[pos]:
            continue
        keep.append(i)
        if len(keep) == max_det:
            break
        rest = order[pos + 1 :]
        # float32 IoU compared with the threshold in double, as torchvision's C++ does
        removed[pos + 1 :] |= iou_one_to_many(boxes[i], boxes[rest]).astype(np.float64) > float(iou)
    return np.asarray(keep, dtype=np.int64)


def rescale_reference(boxes, keypoints, ratio_pad, orig_hw):
    """Letterbox pixels -> original-image pixels. ``ratio_pad``: (gain_x, gain_y, pad_x, pad_y);
    ``orig_hw``: (h, w). Boxes (n, 4) xyxy and keypoints (n, 17, 3) float32; returns new arrays."""
    gx, gy, px, py = (np.float32(v) for v in ratio_pad)
    h, w = orig_hw
    b = np.array(boxes, np.float32, copy=True).reshape(-1, 4)
    k = np.array(keypoints, np.float32, copy=True).reshape(-1, 17, 3)
    b[:, [0, 2]] = np.clip((b[:, [0, 2]] - px) / gx, 0, w)
    b[:, [1, 3]] = np.clip((b[:, [1, 3]] - py) / gy, 0, h)
    k[..., 0] = np.clip((k[..., 0] - px) / gx, 0, w)
    k[..., 1] = np.clip((k[..., 1] - py) / gy, 0, h)
    return b, k


def postprocess_reference(candidates, ratio_pad, orig_hw, iou: float | None = 0.7, max_det: int = 300):
    """NMS (``iou`` None: top-k) + rescale of per-image candidate dicts (``decode_reference`` output); a list
    of result dicts with ``boxes`` (n, 4) xyxy original pixels, ``scores`` (n,), ``keypoints`` (n, 17, 3),
    best score first."""
    out = []
    for d, rp, hw in zip(candidates, np.asarray(ratio_pad, np.float32), np.asarray(orig_hw)):
        boxes = torch.as_tensor(d["boxes"]).cpu().numpy()
        scores = torch.as_tensor(d["scores"]).cpu().numpy()
        anchors = torch.as_tensor(d["anchor"]).cpu().numpy() if "anchor" in d else None
        keep = nms_reference(boxes, scores, iou, max_det, anchors)
        b, k = rescale_reference(boxes[keep], torch.as_tensor(d["keypoints"]).cpu().numpy()[keep], rp, hw)
        out.append({"boxes": b, "scores": scores[keep], "keypoints": k})
    return out
