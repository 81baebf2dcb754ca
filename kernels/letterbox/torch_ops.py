"""Letterbox with plain torch ops (gather, integer arithmetic, pad): the GPU anchor the kernels beat.

Same geometry and the same arithmetic as the kernels: OpenCV's fixed-point INTER_LINEAR
(geometry.resize_coefficients), so every backend gives cv2.resize's levels bit for bit (a float bilinear
resize differs by a level here and there, enough to flip a detection of a sensitive model); several
kernel launches and intermediate tensors per frame group instead of one pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .geometry import BatchGeometry, resize_coefficients

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


def _resize(x: torch.Tensor, g) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, new_h, new_w, C) uint8 with the kernels' fixed-point coefficients
    (geometry.apply_coefficients in torch). int32 holds every step: a horizontal sum is at most
    255 * 2048 * 2, its (>> 4) * weight at most 2**27."""
    cols, rows = (torch.from_numpy(t).to(x.device) for t in resize_coefficients(g.src_h, g.src_w, g.new_h, g.new_w))
    s = x.int()
    xi0, xi1 = cols[:, 0].long(), cols[:, 1].long()
    d = s[:, :, xi0] * cols[None, None, :, 2, None] + s[:, :, xi1] * cols[None, None, :, 3, None]
    b0, b1 = rows[None, :, 2, None, None], rows[None, :, 3, None, None]
    v = (((d[:, rows[:, 0].long()] >> 4) * b0 >> 16) + ((d[:, rows[:, 1].long()] >> 4) * b1 >> 16) + 2) >> 2
    return v.clamp_(0, 255).to(torch.uint8)


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
        if (g.new_h, g.new_w) != (g.src_h, g.src_w):
            x = _resize(x, g)
        x = x.permute(0, 3, 1, 2).flip(1).float()  # BHWC BGR -> BCHW RGB
        x = F.pad(x.div_(255.0), (g.left, geo.out_w - g.new_w - g.left, g.top, geo.out_h - g.new_h - g.top), value=PAD)
        out[idx[0] : idx[0] + len(idx)] = x
