"""Compare posefuse results with Ultralytics ``predict`` results on the same frames.

A detection of ours is matched to one of theirs (greedy by IoU, best first) when their box IoU is at least
``iou_match`` (0.98). Reported: the fraction of their detections we matched, our extra detections (ours
unmatched) as a fraction of theirs, the mean keypoint error (px, matched pairs, x/y of all 17 points),
and the largest |score difference|.
"""
from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(inter / (area_a[:, None] + area_b[None] - inter))


def match(ours_boxes, theirs_boxes, iou_match: float = 0.98):
    """Greedy one-to-one matching; returns a list of (our index, their index)."""
    iou = box_iou(ours_boxes, theirs_boxes)
    pairs = []
    while iou.size and iou.max() >= iou_match:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        pairs.append((int(i), int(j)))
        iou[i, :] = -1
        iou[:, j] = -1
    return pairs


class AccuracyTally:
    """Accumulates the comparison over frames. ``add(ours, theirs)``: dicts or objects with boxes, scores,
    keypoints as arrays (N, 4), (N,), (N, 17, 3)."""

    def __init__(self, iou_match: float = 0.98):
        self.iou_match = iou_match
        self.frames = self.theirs = self.ours = self.matched = 0
        self.kpt_err_sum = 0.0
        self.kpt_n = 0
        self.kpt_max = 0.0  # largest |x| or |y| difference of a matched keypoint, px
        self.max_score_diff = 0.0

    @staticmethod
    def _get(x, k):
        return np.asarray(x[k] if isinstance(x, dict) else getattr(x, k), np.float64)

    def add(self, ours, theirs):
        ob, tb = self._get(ours, "boxes").reshape(-1, 4), self._get(theirs, "boxes").reshape(-1, 4)
        os_, ts = self._get(ours, "scores").reshape(-1), self._get(theirs, "scores").reshape(-1)
        ok, tk = self._get(ours, "keypoints").reshape(-1, 17, 3), self._get(theirs, "keypoints").reshape(-1, 17, 3)
        self.frames += 1
        self.ours += len(ob)
        self.theirs += len(tb)
        for i, j in match(ob, tb, self.iou_match):
            self.matched += 1
            diff = ok[i, :, :2] - tk[j, :, :2]
            d = np.linalg.norm(diff, axis=1)
            self.kpt_err_sum += float(d.sum())
            self.kpt_n += len(d)
            self.kpt_max = max(self.kpt_max, float(np.abs(diff).max()))
            self.max_score_diff = max(self.max_score_diff, float(abs(os_[i] - ts[j])))

    def summary(self) -> dict:
        return {
            "frames": self.frames,
            "their_detections": self.theirs,
            "our_detections": self.ours,
            "matched": self.matched,
            "matched_fraction": self.matched / self.theirs if self.theirs else 1.0,
            "extra_fraction": (self.ours - self.matched) / self.theirs if self.theirs else float(self.ours > 0),
            "keypoint_mean_error_px": self.kpt_err_sum / self.kpt_n if self.kpt_n else 0.0,
            "keypoint_max_error_px": self.kpt_max,
            "max_score_diff": self.max_score_diff,
        }


def ultralytics_results(results) -> list[dict]:
    """Ultralytics Results objects as plain dicts of NumPy arrays."""
    out = []
    for r in results:
        out.append({"boxes": r.boxes.xyxy.cpu().numpy(), "scores": r.boxes.conf.cpu().numpy(),
                    "keypoints": r.keypoints.data.cpu().numpy().reshape(-1, 17, 3)})
    return out
