"""Numba CUDA letterbox: same sampling and rounding as letterbox.cu, same Python signature.

A batch given as one (B, H, W, 3) tensor (or (B, H*3/2, W) NV12) is one launch. A list of separate
frames is one launch per frame: Numba kernels take arrays, not a table of raw device pointers, so frames
that live in separate allocations cannot share one launch without a copy (the CuPy kernel can).
"""
from __future__ import annotations

import math

import torch

from .._common import numba_array, numba_cuda, numba_stream

cuda = numba_cuda()  # module global: the simulator swaps it for its own (NUMBA_ENABLE_CUDASIM=1)

PX = 4
BLOCK = (32, 8)
_KERNELS = {}


def _kernels():
    if _KERNELS:
        return _KERNELS

    @cuda.jit(device=True, inline=True)
    def clampi(v, lo, hi):
        return lo if v < lo else (hi if v > hi else v)

    @cuda.jit(device=True, inline=True)
    def sat_u8(v):
        return 0 if v < 0 else (255 if v > 255 else v)

    @cuda.jit(device=True, inline=True)
    def tap_bgr(src, b, y, x, c):
        return src[b, y, x, c]

    @cuda.jit(device=True, inline=True)
    def tap_nv12(src, b, h, y, x, c):
        # OpenCV's YUV420sp -> BGR (BT.601 limited range, 20-bit fixed point); c: 0=B, 1=G, 2=R
        yv = int(src[b, y, x])
        xu = x - (x & 1)
        u = int(src[b, h + (y >> 1), xu]) - 128
        v = int(src[b, h + (y >> 1), xu + 1]) - 128
        yy = max(0, yv - 16) * 1220542
        half = 1 << 19
        if c == 2:
            return sat_u8((yy + half + 1673527 * v) >> 20)
        if c == 1:
            return sat_u8((yy + half - 852492 * v - 409993 * u) >> 20)
        return sat_u8((yy + half + 2116026 * u) >> 20)

    def make(nv12):
        @cuda.jit
        def letterbox_kernel(src, geo, out):
            b = cuda.blockIdx.z
            oy = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
            ox0 = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) * PX
            out_h = out.shape[2]
            out_w = out.shape[3]
            if oy >= out_h or ox0 >= out_w:
                return
            src_h = geo[b, 0]
            src_w = geo[b, 1]
            new_h = geo[b, 2]
            new_w = geo[b, 3]
            top = geo[b, 4]
            left = geo[b, 5]
            pad = 114.0 / 255.0
            dy = oy - top
            row_in = dy >= 0 and dy < new_h
            fy = (dy + 0.5) * (src_h / new_h) - 0.5
            y0f = int(math.floor(fy))
            ay = fy - y0f
            ya = clampi(y0f, 0, src_h - 1)
            yb = clampi(y0f + 1, 0, src_h - 1)
            sx = src_w / new_w
            for k in range(PX):
                ox = ox0 + k
                dx = ox - left
                if not row_in or dx < 0 or dx >= new_w:
                    for c in range(3):
                        out[b, c, oy, ox] = pad
                    continue
                fx = (dx + 0.5) * sx - 0.5
                x0f = int(math.floor(fx))
                ax = fx - x0f
                xa = clampi(x0f, 0, src_w - 1)
                xb = clampi(x0f + 1, 0, src_w - 1)
                for c in range(3):  # output plane c is RGB; source channel 2 - c is BGR
                    sc = 2 - c
                    if nv12:
                        p00 = tap_nv12(src, b, src_h, ya, xa, sc)
                        p01 = tap_nv12(src, b, src_h, ya, xb, sc)
                        p10 = tap_nv12(src, b, src_h, yb, xa, sc)
                        p11 = tap_nv12(src, b, src_h, yb, xb, sc)
                    else:
                        p00 = tap_bgr(src, b, ya, xa, sc)
                        p01 = tap_bgr(src, b, ya, xb, sc)
                        p10 = tap_bgr(src, b, yb, xa, sc)
                        p11 = tap_bgr(src, b, yb, xb, sc)
                    v = (1.0 - ay) * ((1.0 - ax) * p00 + ax * p01) + ay * ((1.0 - ax) * p10 + ax * p11)
                    out[b, c, oy, ox] = round(v) / 255.0  # round half to even, like rintf

        return letterbox_kernel

    _KERNELS["bgr"] = make(False)
    _KERNELS["nv12"] = make(True)
    return _KERNELS


def _launch(src: torch.Tensor, geo: torch.Tensor, out: torch.Tensor, nv12: bool):
    k = _kernels()["nv12" if nv12 else "bgr"]
    b, _, out_h, out_w = out.shape
    grid = ((out_w // PX + BLOCK[0] - 1) // BLOCK[0], (out_h + BLOCK[1] - 1) // BLOCK[1], b)
    k[grid, BLOCK, numba_stream(out.device)](numba_array(src), numba_array(geo), numba_array(out))


def run(frames, batch: torch.Tensor | None, geo: torch.Tensor, out: torch.Tensor, nv12: bool) -> None:
    """``batch``: the frames as one (B, ...) tensor when they were given so (one launch); else per frame."""
    if batch is not None:
        _launch(batch, geo, out, nv12)
        return
    for i, f in enumerate(frames):
        _launch(f.unsqueeze(0), geo[i : i + 1], out[i : i + 1], nv12)
