"""CuPy RawKernel letterbox: one launch per batch, frames of any sizes (CUDA C in letterbox.cu)."""
from __future__ import annotations

import numpy as np
import torch

from .._common import KERNEL_DIR, cupy_launch, cupy_module, ptr

CU = str(KERNEL_DIR / "letterbox" / "letterbox.cu")
BLOCK = (32, 8, 1)  # 32 threads x 4 px = 128 px per row segment, 8 rows
PX = 4


def _kernel(device: torch.device, nv12: bool, out_dtype: torch.dtype, nhwc: bool):
    fmt = "nv12" if nv12 else "bgr"
    suffix = "f16" if out_dtype == torch.float16 else "f32"
    name = f"letterbox_{fmt}_{suffix}_{'nhwc' if nhwc else 'nchw'}"
    defines = (("KNAME", name), ("NV12", str(int(nv12))), ("OUT_F16", str(int(out_dtype == torch.float16))),
               ("NHWC", str(int(nhwc))))
    mod = cupy_module(CU, defines, (), device.index if device.index is not None else torch.cuda.current_device())
    return mod.get_function(name)


def run(layout, out: torch.Tensor, nv12: bool, nhwc: bool) -> None:
    """Launch on the current torch stream. ``layout``: a kernels.letterbox.Layout (device tables); ``out``
    laid out planar, or channels-last with ``nhwc`` (checked by the caller)."""
    b, _, out_h, out_w = out.shape
    k = _kernel(out.device, nv12, out.dtype, nhwc)
    grid = ((out_w // PX + BLOCK[0] - 1) // BLOCK[0], (out_h + BLOCK[1] - 1) // BLOCK[1], b)
    args = (ptr(layout.src), ptr(layout.geo), ptr(layout.cols), ptr(layout.rows), ptr(out), np.int32(out_h), np.int32(out_w))
    cupy_launch(k, grid, BLOCK, args, out.device)
