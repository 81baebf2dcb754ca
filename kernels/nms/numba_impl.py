"""Numba CUDA NMS + rescale: the algorithm of nms.cu, one block per image. The removed flags and the kept
list live in global scratch (Numba's dynamic shared memory is one untyped region per kernel; global
scratch keeps the kernel simple and also runs under the simulator)."""
from __future__ import annotations

import numpy as np

from .._common import numba_array, numba_cuda, numba_simulator, numba_stream

cuda = numba_cuda()  # module global: the simulator swaps it for its own (NUMBA_ENABLE_CUDASIM=1)

BLOCK = 32 if numba_simulator() else 256
_KERNEL = []


def _kernel():
    if _KERNEL:
        return _KERNEL[0]

    @cuda.jit
    def nms_rescale(boxes, scores, kpts, anchors, counts, ratio_pad, orig_hw, iou_thr, max_det,
                    order, removed, keep, oboxes, oscores, okpts, ocounts):
        b = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        cap = scores.shape[1]
        n = min(counts[b], cap)
        for i in range(tid, n, nt):
            si = scores[b, i]
            ai = anchors[b, i]
            r = 0
            for j in range(n):
                sj = scores[b, j]
                if sj > si or (sj == si and anchors[b, j] < ai):
                    r += 1
            order[b, r] = i
            removed[b, i] = 0
        cuda.syncthreads()

        kept = 0
        i = 0
        while i < n and kept < max_det:
            if removed[b, i] == 0:
                ci = order[b, i]
                ix1 = boxes[b, ci, 0]
                iy1 = boxes[b, ci, 1]
                ix2 = boxes[b, ci, 2]
                iy2 = boxes[b, ci, 3]
                iarea = (ix2 - ix1) * (iy2 - iy1)
                if tid == 0:
                    keep[b, kept] = ci
                kept += 1
                if kept < max_det:
                    for j in range(i + 1 + tid, n, nt):
                        if removed[b, j] == 0:
                            cj = order[b, j]
                            x1 = boxes[b, cj, 0]
                            y1 = boxes[b, cj, 1]
                            x2 = boxes[b, cj, 2]
                            y2 = boxes[b, cj, 3]
                            area = (x2 - x1) * (y2 - y1)
                            w = max(np.float32(0), min(ix2, x2) - max(ix1, x1))
                            h = max(np.float32(0), min(iy2, y2) - max(iy1, y1))
                            inter = w * h
                            den = iarea + area - inter
                            # 0/0 (zero-area pair) is NaN in CUDA and suppresses nothing
                            if den != 0 and np.float64(inter / den) > iou_thr:
                                removed[b, j] = 1
                cuda.syncthreads()
            i += 1
        cuda.syncthreads()

        gx = ratio_pad[b, 0]
        gy = ratio_pad[b, 1]
        px = ratio_pad[b, 2]
        py = ratio_pad[b, 3]
        hh = np.float32(orig_hw[b, 0])
        ww = np.float32(orig_hw[b, 1])
        for k in range(tid, max_det, nt):
            if k < kept:
                ci = keep[b, k]
                oboxes[b, k, 0] = min(max((boxes[b, ci, 0] - px) / gx, np.float32(0)), ww)
                oboxes[b, k, 1] = min(max((boxes[b, ci, 1] - py) / gy, np.float32(0)), hh)
                oboxes[b, k, 2] = min(max((boxes[b, ci, 2] - px) / gx, np.float32(0)), ww)
                oboxes[b, k, 3] = min(max((boxes[b, ci, 3] - py) / gy, np.float32(0)), hh)
                oscores[b, k] = scores[b, ci]
                for q in range(17):
                    okpts[b, k, q, 0] = min(max((kpts[b, ci, q, 0] - px) / gx, np.float32(0)), ww)
                    okpts[b, k, q, 1] = min(max((kpts[b, ci, q, 1] - py) / gy, np.float32(0)), hh)
                    okpts[b, k, q, 2] = kpts[b, ci, q, 2]
            else:
                for q in range(4):
                    oboxes[b, k, q] = 0
                oscores[b, k] = 0
                for q in range(17):
                    okpts[b, k, q, 0] = 0
                    okpts[b, k, q, 1] = 0
                    okpts[b, k, q, 2] = 0
        if tid == 0:
            ocounts[b] = kept

    _KERNEL.append(nms_rescale)
    return nms_rescale


def run(cands, ratio_pad, orig_hw, iou: float, max_det: int, order, out) -> None:
    import torch

    b, cap = cands.scores.shape
    removed = out.scratch("removed", (b, cap), torch.int8)
    keep = out.scratch("keep", (b, max_det), torch.int32)
    _kernel()[b, BLOCK, numba_stream(cands.scores.device)](
        numba_array(cands.boxes), numba_array(cands.scores), numba_array(cands.keypoints), numba_array(cands.anchors),
        numba_array(cands.counts), numba_array(ratio_pad), numba_array(orig_hw), np.float64(iou), np.int32(max_det),
        numba_array(order), numba_array(removed), numba_array(keep), numba_array(out.boxes), numba_array(out.scores),
        numba_array(out.keypoints), numba_array(out.counts))
