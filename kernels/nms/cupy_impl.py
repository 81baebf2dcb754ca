"""CuPy RawKernel NMS + rescale (CUDA C in nms.cu): one block per image."""
from __future__ import annotations

import numpy as np
import torch

from .._common import KERNEL_DIR, cupy_launch, cupy_module, ptr

CU = str(KERNEL_DIR / "nms" / "nms.cu")
BLOCK = 256


def _kernel(device: torch.device):
    name = "nms_rescale_f32"
    mod = cupy_module(CU, (("KNAME", name),), ("--fmad=false",),
                      device.index if device.index is not None else torch.cuda.current_device())
    return mod.get_function(name)


def run(cands, ratio_pad, orig_hw, iou: float, max_det: int, order, out) -> None:
    b, cap = cands.scores.shape
    args = (ptr(cands.boxes), ptr(cands.scores), ptr(cands.keypoints), ptr(cands.anchors), ptr(cands.counts),
            np.int32(cap), ptr(ratio_pad), ptr(orig_hw), np.float64(iou), np.int32(max_det), ptr(order),
            ptr(out.boxes), ptr(out.scores), ptr(out.keypoints), ptr(out.counts))
    cupy_launch(_kernel(cands.scores.device), (b, 1, 1), (BLOCK, 1, 1), args, cands.scores.device,
                shared_mem=4 * max_det + cap)
