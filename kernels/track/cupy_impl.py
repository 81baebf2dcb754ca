"""CuPy RawKernels of the tracker (CUDA C in kalman.cu and match.cu), the same arguments as numba_impl.
Compiled without FMA contraction (``--fmad=false``), so predict and the IoU costs stay bit-equal to the
reference."""
from __future__ import annotations

import numpy as np
import torch

from .._common import KERNEL_DIR, cupy_launch, cupy_module, ptr

CU = str(KERNEL_DIR / "track" / "kalman.cu")
MATCH_CU = str(KERNEL_DIR / "track" / "match.cu")
BLOCK = 128
ASSIGN_BLOCK = 32  # streams per block of the assignment (one thread each)


def _module(device: torch.device):
    defines = (("PREDICT_NAME", "kf_predict_f64"), ("UPDATE_NAME", "kf_update_f64"))
    return cupy_module(CU, defines, ("--fmad=false",),
                       device.index if device.index is not None else torch.cuda.current_device())


def _match_module(device: torch.device):
    defines = (("COST_NAME", "iou_cost_f32"), ("ASSIGN_NAME", "lap_f64"))
    return cupy_module(MATCH_CU, defines, ("--fmad=false",),
                       device.index if device.index is not None else torch.cuda.current_device())


def predict(mean: torch.Tensor, cov: torch.Tensor, tracked: torch.Tensor) -> None:
    n = mean.shape[0]
    if n:
        k = _module(mean.device).get_function("kf_predict_f64")
        cupy_launch(k, ((n + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1), (ptr(mean), ptr(cov), ptr(tracked), np.int32(n)),
                    mean.device)


def update(mean: torch.Tensor, cov: torch.Tensor, z: torch.Tensor, rows: torch.Tensor) -> None:
    n = rows.shape[0]
    if n:
        k = _module(mean.device).get_function("kf_update_f64")
        cupy_launch(k, ((n + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1), (ptr(mean), ptr(cov), ptr(z), ptr(rows), np.int32(n)),
                    mean.device)


def iou_cost(tracks, n_tracks, dets, scores, n_dets, cost, fuse: bool) -> None:
    S, T, D = cost.shape
    total = S * T * D
    if total:
        k = _match_module(cost.device).get_function("iou_cost_f32")
        cupy_launch(k, ((total + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1),
                    (ptr(tracks), ptr(n_tracks), ptr(dets), ptr(scores), ptr(n_dets), ptr(cost), np.int32(S),
                     np.int32(T), np.int32(D), np.int32(fuse)), cost.device)


def assign(cost, n_tracks, n_dets, match, work: dict, limit: float) -> None:
    S, T, D = cost.shape
    if S:
        k = _match_module(cost.device).get_function("lap_f64")
        cupy_launch(k, ((S + ASSIGN_BLOCK - 1) // ASSIGN_BLOCK, 1, 1), (ASSIGN_BLOCK, 1, 1),
                    (ptr(cost), ptr(n_tracks), ptr(n_dets), ptr(match),
                     *(ptr(work[k]) for k in ("u", "v", "minv", "p", "way", "used")),
                     np.int32(S), np.int32(T), np.int32(D), np.float64(limit)), cost.device)
