"""CuPy RawKernel decode (CUDA C in decode.cu), one specialization per head and input dtype."""
from __future__ import annotations

import numpy as np
import torch

from .._common import KERNEL_DIR, cupy_launch, cupy_module, ptr
from .reference import Head

CU = str(KERNEL_DIR / "decode" / "decode.cu")
BLOCK = 128


def defines(head: Head, dtype: torch.dtype) -> tuple[tuple[str, str], ...]:
    """The #define prelude of one specialization; its kernel name is the first value."""
    name = f"{head.variant}_decode_{'f16' if dtype == torch.float16 else 'f32'}"
    return (("KNAME", name), ("IN_F16", str(int(dtype == torch.float16))), ("REG_MAX", str(head.reg_max)),
            ("KPT26", str(int(head.kind == "pose26"))), ("E2E", str(int(head.end2end))))


def _kernel(device: torch.device, dtype: torch.dtype, head: Head):
    d = defines(head, dtype)
    return cupy_module(CU, d, (), device.index if device.index is not None else torch.cuda.current_device()).get_function(d[0][1])


def run(raw: torch.Tensor, lvl: torch.Tensor, conf: float, cut, out, head: Head) -> None:
    b, _, a = raw.shape
    k = _kernel(raw.device, raw.dtype, head)
    kth, ties = (cut.kth, cut.ties) if cut is not None else (None, None)
    args = (ptr(raw), np.int32(a), ptr(lvl), np.int32(lvl.shape[0]), np.float32(conf), ptr(kth), ptr(ties),
            np.int32(out.cap),
            ptr(out.boxes), ptr(out.scores), ptr(out.keypoints), ptr(out.anchors), ptr(out.counts))
    cupy_launch(k, ((a + BLOCK - 1) // BLOCK, b, 1), (BLOCK, 1, 1), args, raw.device)
