"""CPU reference of the pose head decode (Ultralytics 8.4.190 ``Detect._inference`` with ``Pose.kpts_decode``
or ``Pose26.kpts_decode``, and for an end-to-end head the boxes of ``Detect.postprocess``).

Raw head layout used throughout posefuse: ``raw`` (B, C, A) with C = 4*reg_max + nc + nk, per anchor
``[box distances (4 x reg_max DFL logits, or 4 values when reg_max is 1) | class logits (nc) | keypoint raw
values (nk = 17 x 3)]``; anchors are the cells of each level in row-major order, levels concatenated
(strides 8, 16, 32). This is exactly the head's ``forward_head`` tensors stacked on the channel axis (see
fusion/backbone.py).

A :class:`Head` says which decode applies; the three heads of the pose families:

* ``Pose`` (YOLOv8, YOLO11): 16 DFL bins per side; keypoints ``(v * 2 + (anchor - 0.5)) * stride``; boxes
  as centre and size, NMS after.
* ``Pose26`` (YOLO26): box distances regressed directly (reg_max 1); keypoints ``(v + anchor) * stride``.
  Ultralytics ``predict`` runs its one-to-many branch with NMS by default, and its one-to-one branch
  (``end2end``) with ``nms=False``: boxes xyxy from the distances, the top scores kept, no NMS.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NC = 1
NKPT = 17
KDIM = 3
MAX_NMS = 30000


@dataclass(frozen=True)
class Head:
    """The decode of a pose head: ``kind`` 'pose' (YOLOv8, YOLO11 keypoint grid) or 'pose26' (YOLO26),
    ``reg_max`` box bins per side (1: distances regressed directly), ``end2end`` the one-to-one branch
    (top scores kept, no NMS; boxes computed as xyxy)."""

    kind: str = "pose"
    reg_max: int = 16
    end2end: bool = False

    def __post_init__(self):
        if self.kind not in ("pose", "pose26") or not 1 <= int(self.reg_max) <= 32:
            raise ValueError(f"head: expected kind 'pose' or 'pose26' and reg_max in 1..32, got {self}")

    @property
    def channels(self) -> int:
        """Channels of raw: 4 * reg_max box + 1 class + 51 keypoint."""
        return 4 * self.reg_max + NC + NKPT * KDIM

    @property
    def cls(self) -> int:
        """Channel of the class logit."""
        return 4 * self.reg_max

    @property
    def variant(self) -> str:
        """The kernels' name for this decode: pose, pose26, pose_e2e, pose26_e2e."""
        return self.kind + ("_e2e" if self.end2end else "")


POSE = Head()  # YOLOv8, YOLO11
HEADS = (POSE, Head("pose", 16, True), Head("pose26", 1, False), Head("pose26", 1, True))  # every specialization


def levels_for(in_h: int, in_w: int, strides=(8, 16, 32)) -> tuple[tuple[int, int, int], ...]:
    """Per-level (h, w, stride) of the head's maps for an input canvas of in_h x in_w."""
    return tuple((-(-in_h // s), -(-in_w // s), s) for s in strides)


def make_anchors(levels, dtype=torch.float32, device="cpu"):
    """(A, 2) anchor centres in grid units (cell + 0.5) and (A,) strides, as ``ultralytics.utils.tal``."""
    pts, strides = [], []
    f = dict(dtype=dtype, device=device)
    for h, w, s in levels:
        sy, sx = torch.meshgrid(torch.arange(h, **f) + 0.5, torch.arange(w, **f) + 0.5, indexing="ij")
        pts.append(torch.stack((sx, sy), -1).view(-1, 2))
        strides.append(torch.full((h * w,), float(s), **f))
    return torch.cat(pts), torch.cat(strides)


def decode_dense_reference(raw: torch.Tensor, levels, head: Head = POSE) -> torch.Tensor:
    """All anchors decoded as the head's own inference output: (B, 4 + nc + nk, A) float32, boxes in
    letterbox pixels as cx, cy, w, h (xyxy for an end-to-end head, as Ultralytics computes them), class
    scores (sigmoid), keypoints x, y, visibility."""
    raw = raw.float()
    b, c, a = raw.shape
    anchors, strides = make_anchors(levels, device=raw.device)
    assert anchors.shape[0] == a and c == head.channels, (anchors.shape, a, c, head)
    anc = anchors.T.unsqueeze(0)  # (1, 2, A)
    r = head.reg_max
    if r > 1:  # DFL: softmax over the bins, expectation of the bin index
        dist = raw[:, : 4 * r].view(b, 4, r, a).softmax(2)
        dist = (dist * torch.arange(r, dtype=torch.float32, device=raw.device).view(1, 1, -1, 1)).sum(2)  # (B, 4, A)
    else:
        dist = raw[:, :4]
    lt, rb = dist.chunk(2, 1)
    x1y1, x2y2 = anc - lt, anc + rb
    if head.end2end:
        box = torch.cat((x1y1, x2y2), 1) * strides
    else:
        box = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
    cls = raw[:, head.cls : head.cls + NC].sigmoid()
    k = raw[:, head.cls + NC :].clone()
    k[:, 2::KDIM] = k[:, 2::KDIM].sigmoid()
    if head.kind == "pose26":
        k[:, 0::KDIM] = (k[:, 0::KDIM] + anchors[:, 0]) * strides
        k[:, 1::KDIM] = (k[:, 1::KDIM] + anchors[:, 1]) * strides
    else:
        k[:, 0::KDIM] = (k[:, 0::KDIM] * 2.0 + (anchors[:, 0] - 0.5)) * strides
        k[:, 1::KDIM] = (k[:, 1::KDIM] * 2.0 + (anchors[:, 1] - 0.5)) * strides
    return torch.cat((box, cls, k), 1)


def xywh2xyxy(b: torch.Tensor) -> torch.Tensor:
    half = b[..., 2:] / 2
    return torch.cat((b[..., :2] - half, b[..., :2] + half), -1)


def decode_reference(raw: torch.Tensor, levels, conf: float = 0.25, max_nms: int = MAX_NMS, head: Head = POSE):
    """Candidates per image: of the anchors with a finite class logit and score > conf (strict), the
    ``max_nms`` of highest logit (ties at the cut: lower anchor index first; the kernels keep any of the
    tied), then those whose decoded values are all finite. For an end-to-end head, ``max_nms`` is the
    top-k it keeps: Ultralytics takes the top k scores, then those above conf; the same set. Ordering by
    logit is ordering by score where the sigmoid does not round two logits to one score, and the kernels
    cut on logits (``top_cut``); an anchor whose box or keypoints are not finite takes its place in the
    cut and is then dropped, as in the kernels, which see only the logits when they cut.

    Returns a list (one per image) of dicts with ``anchor`` (n,) int64 ascending, ``boxes`` (n, 4) xyxy in
    letterbox pixels, ``scores`` (n,), ``keypoints`` (n, 17, 3).
    """
    raw = torch.as_tensor(raw).float()  # runs on raw's device: the "torch" backend is this on the GPU
    dense = decode_dense_reference(raw, levels, head)  # (B, 56, A)
    out = []
    for bi in range(raw.shape[0]):
        d = dense[bi].T  # (A, 56)
        finite = torch.isfinite(raw[bi]).all(0)
        score, logit = d[:, 4], raw[bi, head.cls]
        idx = torch.nonzero((score > conf) & torch.isfinite(logit)).view(-1)
        if idx.numel() > max_nms:
            order = sorted(idx.tolist(), key=lambda i: (-logit[i].item(), i))[:max_nms]
            idx = torch.tensor(sorted(order), dtype=torch.int64, device=raw.device)
        idx = idx[finite[idx]]
        sel = d[idx]
        out.append({
            "anchor": idx,
            "boxes": sel[:, :4].contiguous() if head.end2end else xywh2xyxy(sel[:, :4]),
            "scores": sel[:, 4].contiguous(),
            "keypoints": sel[:, 4 + NC :].reshape(-1, NKPT, KDIM).contiguous(),
        })
    return out
