"""Numba CUDA NMS or top-k (one block per image) and rescale (one thread per output row): the algorithms of
nms.cu.
The removed flags live in global scratch (Numba's dynamic shared memory is one untyped region per kernel;
global scratch keeps the kernel simple and also runs under the simulator)."""
from __future__ import annotations

import numpy as np

from .._common import numba_array, numba_cuda, numba_simulator, numba_stream

cuda = numba_cuda()  # module global: the simulator swaps it for its own (NUMBA_ENABLE_CUDASIM=1)

NMS_BLOCK = 32 if numba_simulator() else 256
RESCALE_BLOCK = 32 if numba_simulator() else 128
_KERNELS = {}


def _kernels():
    if _KERNELS:
        return _KERNELS

    @cuda.jit(device=True)
    def rank_sort(scores, anchors, b, n, tid, nt, order):
        """order[b, r] = the candidate of rank r: score descending, ties lower anchor first."""
        for i in range(tid, n, nt):
            si = scores[b, i]
            ai = anchors[b, i]
            r = 0
            for j in range(n):
                sj = scores[b, j]
                if sj > si or (sj == si and anchors[b, j] < ai):
                    r += 1
            order[b, r] = i

    @cuda.jit
    def nms(boxes, scores, anchors, counts, iou_thr, max_det, order, removed, keep, ocounts):
        b = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        n = min(counts[b], scores.shape[1])
        rank_sort(scores, anchors, b, n, tid, nt, order)
        for i in range(tid, n, nt):
            removed[b, i] = 0
        cuda.syncthreads()

        kept = 0
        i = 0
        while i < n and kept < max_det:
            if removed[b, i] == 0:
                ci = order[b, i]
                if tid == 0:
                    keep[b, kept] = ci
                kept += 1
                if kept < max_det:
                    ix1 = boxes[b, ci, 0]
                    iy1 = boxes[b, ci, 1]
                    ix2 = boxes[b, ci, 2]
                    iy2 = boxes[b, ci, 3]
                    iarea = (ix2 - ix1) * (iy2 - iy1)
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
                            # 0/0 (zero-area pair) is NaN in CUDA C and suppresses nothing
                            if den != 0 and np.float64(inter / den) > iou_thr:
                                removed[b, j] = 1
                    cuda.syncthreads()
            i += 1
        if tid == 0:
            ocounts[b] = kept

    @cuda.jit
    def topk(scores, anchors, counts, max_det, order, keep, ocounts):
        b = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        n = min(counts[b], scores.shape[1])
        rank_sort(scores, anchors, b, n, tid, nt, order)
        cuda.syncthreads()
        top = min(n, max_det)
        for i in range(tid, top, nt):
            keep[b, i] = order[b, i]
        if tid == 0:
            ocounts[b] = top

    @cuda.jit
    def rescale(boxes, scores, kpts, keep, counts, ratio_pad, orig_hw, oboxes, oscores, okpts):
        row = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        max_det = oscores.shape[1]
        if row >= oscores.shape[0] * max_det:
            return
        b = row // max_det
        k = row - b * max_det
        if k >= counts[b]:
            for q in range(4):
                oboxes[b, k, q] = 0
            oscores[b, k] = 0
            for q in range(17):
                for c in range(3):
                    okpts[b, k, q, c] = 0
            return
        ci = keep[b, k]
        gx = ratio_pad[b, 0]
        gy = ratio_pad[b, 1]
        px = ratio_pad[b, 2]
        py = ratio_pad[b, 3]
        hh = np.float32(orig_hw[b, 0])
        ww = np.float32(orig_hw[b, 1])
        zero = np.float32(0)
        oboxes[b, k, 0] = min(max((boxes[b, ci, 0] - px) / gx, zero), ww)
        oboxes[b, k, 1] = min(max((boxes[b, ci, 1] - py) / gy, zero), hh)
        oboxes[b, k, 2] = min(max((boxes[b, ci, 2] - px) / gx, zero), ww)
        oboxes[b, k, 3] = min(max((boxes[b, ci, 3] - py) / gy, zero), hh)
        oscores[b, k] = scores[b, ci]
        for q in range(17):
            okpts[b, k, q, 0] = min(max((kpts[b, ci, q, 0] - px) / gx, zero), ww)
            okpts[b, k, q, 1] = min(max((kpts[b, ci, q, 1] - py) / gy, zero), hh)
            okpts[b, k, q, 2] = kpts[b, ci, q, 2]

    _KERNELS["nms"] = nms
    _KERNELS["topk"] = topk
    _KERNELS["rescale"] = rescale
    return _KERNELS


def run_nms(cands, iou: float, max_det: int, order, keep, counts, removed) -> None:
    b = cands.scores.shape[0]
    _kernels()["nms"][b, NMS_BLOCK, numba_stream(cands.scores.device)](
        numba_array(cands.boxes), numba_array(cands.scores), numba_array(cands.anchors), numba_array(cands.counts),
        np.float64(iou), np.int32(max_det), numba_array(order), numba_array(removed), numba_array(keep),
        numba_array(counts))


def run_topk(cands, max_det: int, order, keep, counts) -> None:
    b = cands.scores.shape[0]
    _kernels()["topk"][b, NMS_BLOCK, numba_stream(cands.scores.device)](
        numba_array(cands.scores), numba_array(cands.anchors), numba_array(cands.counts), np.int32(max_det),
        numba_array(order), numba_array(keep), numba_array(counts))


def run_rescale(cands, keep, ratio_pad, orig_hw, out) -> None:
    rows = out.scores.shape[0] * out.scores.shape[1]
    _kernels()["rescale"][(rows + RESCALE_BLOCK - 1) // RESCALE_BLOCK, RESCALE_BLOCK, numba_stream(out.scores.device)](
        numba_array(cands.boxes), numba_array(cands.scores), numba_array(cands.keypoints), numba_array(keep),
        numba_array(out.counts), numba_array(ratio_pad), numba_array(orig_hw), numba_array(out.boxes),
        numba_array(out.scores), numba_array(out.keypoints))
