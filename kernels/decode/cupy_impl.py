"""CuPy RawKernel decode (CUDA C in decode.cu)."""
from __future__ import annotations

import numpy as np
import torch

from .._common import KERNEL_DIR, cupy_launch, cupy_module, ptr

CU = str(KERNEL_DIR / "decode" / "decode.cu")
BLOCK = 128


def _kernel(device: torch.device, dtype: torch.dtype):
    name = "pose_decode_f16" if dtype == torch.float16 else "pose_decode_f32"
    defines = (("KNAME", name), ("IN_F16", str(int(dtype == torch.float16))))
    return cupy_module(CU, defines, (), device.index if device.index is not None else torch.cuda.current_device()).get_function(name)


def run(raw: torch.Tensor, lvl: torch.Tensor, conf: float, kth, out) -> None:
    b, _, a = raw.shape
    k = _kernel(raw.device, raw.dtype)
    args = (ptr(raw), np.int32(a), ptr(lvl), np.int32(lvl.shape[0]), np.float32(conf), ptr(kth), np.int32(out.cap),
            ptr(out.boxes), ptr(out.scores), ptr(out.keypoints), ptr(out.anchors), ptr(out.counts))
    cupy_launch(k, ((a + BLOCK - 1) // BLOCK, b, 1), (BLOCK, 1, 1), args, raw.device)
