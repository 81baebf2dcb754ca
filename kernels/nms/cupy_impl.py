"""CuPy RawKernels NMS or top-k (one block per image) and rescale (one thread per output row), CUDA C in
nms.cu: one module per selection (SUPPRESS), each with its rescale."""
from __future__ import annotations

import numpy as np
import torch

from .._common import KERNEL_DIR, cupy_launch, cupy_module, ptr

CU = str(KERNEL_DIR / "nms" / "nms.cu")
NMS_BLOCK = 256
RESCALE_BLOCK = 128


OPTIONS = ("--fmad=false",)


def defines(suppress: bool = True) -> tuple[tuple[str, str], ...]:
    """The #define prelude of the NMS (``suppress``) or top-k module, each with its rescale."""
    return (("KNAME", "nms_f32" if suppress else "topk_f32"), ("RNAME", "rescale_f32"),
            ("SUPPRESS", str(int(suppress))))


def _module(device: torch.device, suppress: bool = True):
    return cupy_module(CU, defines(suppress), OPTIONS,
                       device.index if device.index is not None else torch.cuda.current_device())


def run_nms(cands, iou: float, max_det: int, order, keep, counts) -> None:
    b, cap = cands.scores.shape
    dev = cands.scores.device
    args = (ptr(cands.boxes), ptr(cands.scores), ptr(cands.anchors), ptr(cands.counts), np.int32(cap),
            np.float64(iou), np.int32(max_det), ptr(order), ptr(keep), ptr(counts))
    cupy_launch(_module(dev).get_function("nms_f32"), (b, 1, 1), (NMS_BLOCK, 1, 1), args, dev, shared_mem=cap)


def run_topk(cands, max_det: int, order, keep, counts) -> None:
    b, cap = cands.scores.shape
    dev = cands.scores.device
    args = (ptr(cands.boxes), ptr(cands.scores), ptr(cands.anchors), ptr(cands.counts), np.int32(cap),
            np.float64(1.0), np.int32(max_det), ptr(order), ptr(keep), ptr(counts))
    cupy_launch(_module(dev, suppress=False).get_function("topk_f32"), (b, 1, 1), (NMS_BLOCK, 1, 1), args, dev)


def run_rescale(cands, keep, ratio_pad, orig_hw, out) -> None:
    b, cap = cands.scores.shape
    max_det = out.max_det
    dev = cands.scores.device
    rows = b * max_det
    args = (ptr(cands.boxes), ptr(cands.scores), ptr(cands.keypoints), np.int32(cap), ptr(keep), ptr(out.counts),
            ptr(ratio_pad), ptr(orig_hw), np.int32(b), np.int32(max_det), ptr(out.boxes), ptr(out.scores),
            ptr(out.keypoints))
    cupy_launch(_module(dev).get_function("rescale_f32"), ((rows + RESCALE_BLOCK - 1) // RESCALE_BLOCK, 1, 1),
                (RESCALE_BLOCK, 1, 1), args, dev)
