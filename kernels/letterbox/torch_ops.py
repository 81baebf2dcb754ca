"""Letterbox with plain torch ops (permute, flip, interpolate, pad): the GPU anchor the kernels beat.

Same geometry and the same rounding to uint8 levels as the kernels; several kernel launches and
intermediate tensors per frame group instead of one pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .geometry import BatchGeometry

PAD = 114.0 / 255.0


def _nv12_to_bgr(nv12: torch.Tensor, h: int) -> torch.Tensor:
    """(H*3/2, W) uint8 NV12 -> (H, W, 3) uint8 BGR with OpenCV's integer BT.601 formula."""
    y = nv12[:h].int()
    uv = nv12[h:].view(h // 2, -1, 2).int() - 128
    uv = uv.repeat_interleave(2, 0).repeat_interleave(2, 1)
    u, v = uv[..., 0], uv[..., 1]
    yy = (y - 16).clamp_min(0) * 1220542
    half = 1 << 19
    r = (yy + half + 1673527 * v) >> 20
    g = (yy + half - 852492 * v - 409993 * u) >> 20
    b = (yy + half + 2116026 * u) >> 20
    return torch.stack((b, g, r), -1).clamp_(0, 255).to(torch.uint8)


def run(frames, batch: torch.Tensor | None, geo: BatchGeometry, out: torch.Tensor, nv12: bool) -> None:
    if frames is None:
        frames = list(batch.unbind(0))
    groups = [(batch, list(range(len(frames))))] if batch is not None and not nv12 else [
        (f.unsqueeze(0), [i]) for i, f in enumerate(frames)
    ]
    for x, idx in groups:
        g = geo.frames[idx[0]]
        if nv12:
            x = _nv12_to_bgr(x[0], g.src_h).unsqueeze(0)
        x = x.permute(0, 3, 1, 2).flip(1).float()  # BHWC BGR -> BCHW RGB
        if (g.new_h, g.new_w) != (g.src_h, g.src_w):
            x = F.interpolate(x, size=(g.new_h, g.new_w), mode="bilinear", align_corners=False).round_()
        x = F.pad(x.div_(255.0), (g.left, geo.out_w - g.new_w - g.left, g.top, geo.out_h - g.new_h - g.top), value=PAD)
        out[idx[0] : idx[0] + len(idx)] = x
