"""CPU reference of the Pose head decode (Ultralytics 8.4.190 ``Detect._inference`` + ``Pose.kpts_decode``).

Raw head layout used throughout posefuse: ``raw`` (B, C, A) with C = 4*reg_max + nc + nk, per anchor
``[box DFL logits (4 x reg_max) | class logits (nc) | keypoint raw values (nk = 17 x 3)]``; anchors are the
cells of each level in row-major order, levels concatenated (strides 8, 16, 32). This is exactly the
head's ``forward_head`` tensors stacked on the channel axis (see fusion/backbone.py).
"""
from __future__ import annotations

import torch

REG_MAX = 16
NC = 1
NKPT = 17
KDIM = 3
CHANNELS = 4 * REG_MAX + NC + NKPT * KDIM  # 116
MAX_NMS = 30000


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


def decode_dense_reference(raw: torch.Tensor, levels) -> torch.Tensor:
    """All anchors decoded as the head's own inference output: (B, 4 + nc + nk, A) float32,
    boxes cx, cy, w, h in letterbox pixels, class scores (sigmoid), keypoints x, y, visibility."""
    raw = raw.float()
    b, c, a = raw.shape
    anchors, strides = make_anchors(levels, device=raw.device)
    assert anchors.shape[0] == a, (anchors.shape, a)
    anc = anchors.T.unsqueeze(0)  # (1, 2, A)
    dist = raw[:, : 4 * REG_MAX].view(b, 4, REG_MAX, a).softmax(2)
    dist = (dist * torch.arange(REG_MAX, dtype=torch.float32, device=raw.device).view(1, 1, -1, 1)).sum(2)  # (B, 4, A)
    lt, rb = dist.chunk(2, 1)
    x1y1, x2y2 = anc - lt, anc + rb
    box = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
    cls = raw[:, 4 * REG_MAX : 4 * REG_MAX + NC].sigmoid()
    k = raw[:, 4 * REG_MAX + NC :].clone()
    k[:, 2::KDIM] = k[:, 2::KDIM].sigmoid()
    k[:, 0::KDIM] = (k[:, 0::KDIM] * 2.0 + (anchors[:, 0] - 0.5)) * strides
    k[:, 1::KDIM] = (k[:, 1::KDIM] * 2.0 + (anchors[:, 1] - 0.5)) * strides
    return torch.cat((box, cls, k), 1)


def xywh2xyxy(b: torch.Tensor) -> torch.Tensor:
    half = b[..., 2:] / 2
    return torch.cat((b[..., :2] - half, b[..., :2] + half), -1)


def decode_reference(raw: torch.Tensor, levels, conf: float = 0.25, max_nms: int = MAX_NMS):
    """Candidates per image: anchors with score > conf (strict) whose decoded values are all finite, at most
    ``max_nms`` of them by score (ties at the cut: lower anchor index first).

    Returns a list (one per image) of dicts with ``anchor`` (n,) int64 ascending, ``boxes`` (n, 4) xyxy and
    ``boxes_cxcywh`` (n, 4) float32 in letterbox pixels, ``scores`` (n,), ``keypoints`` (n, 17, 3).
    """
    raw = torch.as_tensor(raw).float()  # runs on raw's device: the "torch" backend is this on the GPU
    dense = decode_dense_reference(raw, levels)  # (B, 56, A)
    out = []
    for bi in range(raw.shape[0]):
        d = dense[bi].T  # (A, 56)
        finite = torch.isfinite(raw[bi]).all(0)
        score = d[:, 4]
        idx = torch.nonzero((score > conf) & finite).view(-1)
        if idx.numel() > max_nms:
            order = sorted(idx.tolist(), key=lambda i: (-score[i].item(), i))[:max_nms]
            idx = torch.tensor(sorted(order), dtype=torch.int64, device=raw.device)
        sel = d[idx]
        out.append({
            "anchor": idx,
            "boxes_cxcywh": sel[:, :4].contiguous(),
            "boxes": xywh2xyxy(sel[:, :4]),
            "scores": sel[:, 4].contiguous(),
            "keypoints": sel[:, 4 + NC :].reshape(-1, NKPT, KDIM).contiguous(),
        })
    return out
