"""Numba CUDA letterbox: the table-driven fixed-point arithmetic of letterbox.cu (cv2.resize bit for bit).

A batch given as one (B, H, W, 3) tensor (or (B, H*3/2, W) NV12) is one launch. A list of separate
frames is one launch per frame: Numba kernels take arrays, not a table of raw device pointers, so frames
that live in separate allocations cannot share one launch without a copy (the CuPy kernel can).
"""
from __future__ import annotations

import numpy as np
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

    @cuda.jit(device=True, inline=True)
    def vresize(d0, d1, b0, b1):  # OpenCV's SIMD vertical step, saturated to uint8
        return min(255, max(0, ((((d0 >> 4) * b0) >> 16) + (((d1 >> 4) * b1) >> 16) + 2) >> 2))

    def make(nv12, nhwc):
        # nhwc: ``out`` is the channels-last canvas seen as (B, H, W, 3) (contiguous); else (B, 3, H, W)
        @cuda.jit(device=True, inline=True)
        def put(out, b, c, oy, ox, v):
            if nhwc:
                out[b, oy, ox, c] = v
            else:
                out[b, c, oy, ox] = v

        @cuda.jit
        def letterbox_kernel(src, geo, cols, rows, out):
            b = cuda.blockIdx.z
            oy = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
            ox0 = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) * PX
            out_h = out.shape[1] if nhwc else out.shape[2]
            out_w = out.shape[2] if nhwc else out.shape[3]
            if oy >= out_h or ox0 >= out_w:
                return
            src_h = geo[b, 0]
            new_h = geo[b, 2]
            new_w = geo[b, 3]
            top = geo[b, 4]
            left = geo[b, 5]
            c0 = geo[b, 6]
            pad = np.float32(114.0) / np.float32(255.0)
            dy = oy - top
            row_in = dy >= 0 and dy < new_h
            r = geo[b, 7] + (dy if row_in else 0)
            ya = rows[r, 0]
            yb = rows[r, 1]
            b0 = rows[r, 2]
            b1 = rows[r, 3]
            for k in range(PX):
                ox = ox0 + k
                dx = ox - left
                if not row_in or dx < 0 or dx >= new_w:
                    for c in range(3):
                        put(out, b, c, oy, ox, pad)
                    continue
                x0 = cols[c0 + dx, 0]
                x1 = cols[c0 + dx, 1]
                a0 = cols[c0 + dx, 2]
                a1 = cols[c0 + dx, 3]
                for c in range(3):  # output plane c is RGB; source channel 2 - c is BGR
                    sc = 2 - c
                    if nv12:
                        p00 = tap_nv12(src, b, src_h, ya, x0, sc)
                        p01 = tap_nv12(src, b, src_h, ya, x1, sc)
                        p10 = tap_nv12(src, b, src_h, yb, x0, sc)
                        p11 = tap_nv12(src, b, src_h, yb, x1, sc)
                    else:
                        p00 = int(tap_bgr(src, b, ya, x0, sc))
                        p01 = int(tap_bgr(src, b, ya, x1, sc))
                        p10 = int(tap_bgr(src, b, yb, x0, sc))
                        p11 = int(tap_bgr(src, b, yb, x1, sc))
                    v = vresize(p00 * a0 + p01 * a1, p10 * a0 + p11 * a1, b0, b1)
                    put(out, b, c, oy, ox, np.float32(v) / np.float32(255.0))

        return letterbox_kernel

    for fmt in ("bgr", "nv12"):
        for order in ("nchw", "nhwc"):
            _KERNELS[fmt, order] = make(fmt == "nv12", order == "nhwc")
    return _KERNELS


def _launch(src: torch.Tensor, geo: torch.Tensor, layout, out: torch.Tensor, nv12: bool, nhwc: bool):
    k = _kernels()["nv12" if nv12 else "bgr", "nhwc" if nhwc else "nchw"]
    b, _, out_h, out_w = out.shape
    grid = ((out_w // PX + BLOCK[0] - 1) // BLOCK[0], (out_h + BLOCK[1] - 1) // BLOCK[1], b)
    view = out.permute(0, 2, 3, 1) if nhwc else out  # contiguous either way
    k[grid, BLOCK, numba_stream(out.device)](numba_array(src), numba_array(geo), numba_array(layout.cols),
                                            numba_array(layout.rows), numba_array(view))


def run(frames, batch: torch.Tensor | None, layout, out: torch.Tensor, nv12: bool, nhwc: bool) -> None:
    """``batch``: the frames as one (B, ...) tensor when they were given so (one launch); else per frame.
    ``layout``: the batch's kernels.letterbox.Layout (descriptors and coefficient tables on the device);
    ``out`` planar, or channels-last with ``nhwc``."""
    if batch is not None:
        _launch(batch, layout.geo, layout, out, nv12, nhwc)
        return
    for i, f in enumerate(frames):
        _launch(f.unsqueeze(0), layout.geo[i : i + 1], layout, out[i : i + 1], nv12, nhwc)
