"""Numba CUDA decode: same arithmetic and compaction as decode.cu, same Python signature; one kernel per
Head (its constants are compile-time values of the kernel, as decode.cu's #defines)."""
from __future__ import annotations

import math

import numpy as np
import torch

from .._common import numba_array, numba_cuda, numba_stream
from .reference import Head

cuda = numba_cuda()  # module global: the simulator swaps it for its own (NUMBA_ENABLE_CUDASIM=1)

BLOCK = 128
NKV = 51

_KERNELS: dict = {}  # Head -> kernel


@cuda.jit(device=True, inline=True)
def _sigmoid(x):  # float32 throughout, as the CUDA C kernel
    return np.float32(1.0) / (np.float32(1.0) + np.float32(math.exp(-x)))


@cuda.jit(device=True, inline=True)
def _finite(x):
    return not (math.isnan(x) or math.isinf(x))


def _kernel(head: Head):
    kernel = _KERNELS.get(head)
    if kernel is not None:
        return kernel
    reg_max, kpt26, e2e = head.reg_max, head.kind == "pose26", head.end2end
    c_cls, c_kpt = 4 * reg_max, 4 * reg_max + 1

    @cuda.jit
    def pose_decode(raw, lvl, conf, kth, ties, use_kth, boxes, scores, kpts, anchors, counts):
        b = cuda.blockIdx.y
        a = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if a >= raw.shape[2]:
            return
        logit = np.float32(raw[b, c_cls, a])
        if not _finite(logit):
            return
        score = _sigmoid(logit)
        if not (score > conf):
            return
        if use_kth:  # the top-cap cut (kernels.decode.top_cut): an anchor tied at it only while a place is left
            if not (logit >= kth[b]):
                return
            if logit == kth[b] and cuda.atomic.add(ties, (b, 1), 1) >= ties[b, 0]:
                return
        lv = 0
        while lv + 1 < lvl.shape[0] and a >= lvl[lv + 1, 3]:
            lv += 1
        lw = lvl[lv, 1]
        stride = np.float32(lvl[lv, 2])
        cell = a - lvl[lv, 3]
        ax = np.float32(cell % lw) + np.float32(0.5)
        ay = np.float32(cell // lw) + np.float32(0.5)
        ok = True
        d = cuda.local.array(4, np.float32)
        for s in range(4):
            if reg_max > 1:  # DFL: softmax over the bins, expectation of the bin index
                m = -math.inf
                for j in range(reg_max):
                    v = np.float32(raw[b, s * reg_max + j, a])
                    ok = ok and _finite(v)
                    m = max(m, v)
                se = np.float32(0.0)
                sj = np.float32(0.0)
                for j in range(reg_max):
                    e = math.exp(np.float32(raw[b, s * reg_max + j, a]) - m)
                    se += e
                    sj += e * j
                d[s] = sj / se
            else:  # the distances themselves
                d[s] = np.float32(raw[b, s, a])
                ok = ok and _finite(d[s])
        for k in range(NKV):
            ok = ok and _finite(np.float32(raw[b, c_kpt + k, a]))
        if not ok:
            return
        slot = cuda.atomic.add(counts, b, 1)
        if slot >= scores.shape[1]:
            return
        x1 = ax - d[0]
        y1 = ay - d[1]
        x2 = ax + d[2]
        y2 = ay + d[3]
        if e2e:  # xyxy in grid units times stride
            boxes[b, slot, 0] = x1 * stride
            boxes[b, slot, 1] = y1 * stride
            boxes[b, slot, 2] = x2 * stride
            boxes[b, slot, 3] = y2 * stride
        else:  # centre/size times stride, then xyxy
            cx = (x1 + x2) / 2 * stride
            cy = (y1 + y2) / 2 * stride
            w = (x2 - x1) * stride
            h = (y2 - y1) * stride
            boxes[b, slot, 0] = cx - w / 2
            boxes[b, slot, 1] = cy - h / 2
            boxes[b, slot, 2] = cx + w / 2
            boxes[b, slot, 3] = cy + h / 2
        scores[b, slot] = score
        anchors[b, slot] = a
        for k in range(17):
            vx = np.float32(raw[b, c_kpt + 3 * k, a])
            vy = np.float32(raw[b, c_kpt + 3 * k + 1, a])
            if kpt26:
                kpts[b, slot, k, 0] = (vx + ax) * stride
                kpts[b, slot, k, 1] = (vy + ay) * stride
            else:
                kpts[b, slot, k, 0] = (vx * 2 + (ax - 0.5)) * stride
                kpts[b, slot, k, 1] = (vy * 2 + (ay - 0.5)) * stride
            kpts[b, slot, k, 2] = _sigmoid(np.float32(raw[b, c_kpt + 3 * k + 2, a]))

    _KERNELS[head] = pose_decode
    return pose_decode


def run(raw: torch.Tensor, lvl: torch.Tensor, conf: float, cut, out, head: Head) -> None:
    b, _, a = raw.shape
    if cut is None:  # never read
        kth, ties = out.scores.view(-1)[:1], out.anchors[:1, :2]
    else:
        kth, ties = cut.kth, cut.ties
    _kernel(head)[((a + BLOCK - 1) // BLOCK, b), BLOCK, numba_stream(raw.device)](
        numba_array(raw), numba_array(lvl), np.float32(conf), numba_array(kth), numba_array(ties), cut is not None,
        numba_array(out.boxes), numba_array(out.scores), numba_array(out.keypoints), numba_array(out.anchors),
        numba_array(out.counts))
