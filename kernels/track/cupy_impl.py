"""CuPy RawKernel Kalman filter (CUDA C in kalman.cu), the same arguments as numba_impl. Compiled without
FMA contraction (``--fmad=false``), so predict stays bit-equal to the reference."""
from __future__ import annotations

import numpy as np
import torch

from .._common import KERNEL_DIR, cupy_launch, cupy_module, ptr

CU = str(KERNEL_DIR / "track" / "kalman.cu")
BLOCK = 128


def _module(device: torch.device):
    defines = (("PREDICT_NAME", "kf_predict_f64"), ("UPDATE_NAME", "kf_update_f64"))
    return cupy_module(CU, defines, ("--fmad=false",),
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
