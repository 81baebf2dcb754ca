"""Per-image greedy NMS + rescale to original-image pixels on the GPU (no host synchronization), and the
end-to-end heads' selection without NMS (top-k: best scores first) + the same rescale.

    dets = nms_rescale(cands, ratio_pad, orig_hw, iou=0.7, max_det=300, backend="auto")
    dets = topk_rescale(cands, ratio_pad, orig_hw, max_det=300, backend="auto")

``cands``: kernels.decode.Candidates; ``ratio_pad``: (B, 4) float32 (gain_x, gain_y, pad_x, pad_y) from
letterbox; ``orig_hw``: (B, 2) int32 original (h, w) (a tensor, or a list of (h, w) pairs).
Returns :class:`Detections`, padded to max_det rows per image, best score first; ``counts[b]`` valid rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .._common import (KernelInputError, as_tensor, check_tensor, nvtx_range, resolve_backend, same_device,
                       shared_memory_per_block)
from .reference import nms_reference, postprocess_reference, rescale_reference

__all__ = ["nms_rescale", "topk_rescale", "Detections", "nms_reference", "rescale_reference", "postprocess_reference", "BACKENDS"]

BACKENDS = ("cupy", "numba", "torch", "reference")


ROW = 4 + 1 + 17 * 3  # floats per detection row in the flat buffer


@dataclass
class Detections:
    """boxes (B, max_det, 4) float32 xyxy original-image pixels; scores (B, max_det) float32;
    keypoints (B, max_det, 17, 3) float32 (x, y original pixels, visibility); counts (B,) int32.
    Rows past counts[b] are zero. track_ids (B, max_det) int32: the tracker's id of each pose (0: none),
    written by a tracked pipeline (fusion.tracking), else unset. All five are views of one flat buffer
    (``flat``), so one copy moves a batch's results between devices: ``host.flat.copy_(dev.flat,
    non_blocking=True)``; ``untracked`` is the part before track_ids (an untracked batch's copy)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    keypoints: torch.Tensor
    counts: torch.Tensor
    flat: torch.Tensor | None = None
    track_ids: torch.Tensor | None = None
    untracked: torch.Tensor | None = None
    workspace: dict = field(default_factory=dict, repr=False)  # kernel scratch, reused across calls

    @property
    def max_det(self) -> int:
        return self.scores.shape[1]

    @staticmethod
    def empty(b: int, max_det: int, device, pin_memory: bool = False) -> "Detections":
        """Layout of ``flat`` (float32): boxes b*m*4 | scores b*m | keypoints b*m*51 | counts b | track_ids
        b*m (both int32 bits)."""
        m = b * max_det
        flat = torch.empty(m * ROW + b + m, dtype=torch.float32, device=device, pin_memory=pin_memory)
        boxes = flat[: 4 * m].view(b, max_det, 4)
        scores = flat[4 * m : 5 * m].view(b, max_det)
        kpts = flat[5 * m : ROW * m].view(b, max_det, 17, 3)
        counts = flat[ROW * m : ROW * m + b].view(torch.int32)
        track_ids = flat[ROW * m + b :].view(torch.int32).view(b, max_det)
        counts.zero_()
        return Detections(boxes, scores, kpts, counts, flat, track_ids, flat[: ROW * m + b])

    def scratch(self, name: str, shape, dtype) -> torch.Tensor:
        t = self.workspace.get(name)
        if t is None or tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            t = torch.empty(shape, dtype=dtype, device=self.scores.device)
            self.workspace[name] = t
        return t

    def per_image(self):
        """Host-side list of dicts (boxes, scores, keypoints as NumPy), one per image (synchronizes)."""
        counts = self.counts.cpu().tolist()
        b, s, k = self.boxes.cpu().numpy(), self.scores.cpu().numpy(), self.keypoints.cpu().numpy()
        return [{"boxes": b[i, :n], "scores": s[i, :n], "keypoints": k[i, :n]} for i, n in enumerate(counts)]


def _meta(x, name, shape_tail, dtype, device, b):
    if isinstance(x, (list, tuple, np.ndarray)):
        x = torch.as_tensor(np.asarray(x), dtype=dtype).to(device)
    t = as_tensor(x, name)
    check_tensor(t, name, dtypes=(dtype,), ndim=2)
    if tuple(t.shape) != (b,) + shape_tail:
        raise KernelInputError(f"{name}: expected shape {(b,) + shape_tail}, got {tuple(t.shape)}")
    if not same_device(t.device, device):
        raise KernelInputError(f"{name}: expected a tensor on {device}, got one on {t.device}")
    return t


def nms_rescale(cands, ratio_pad, orig_hw, iou: float = 0.7, max_det: int = 300, *, backend: str = "auto",
                out: Detections | None = None) -> Detections:
    if not (0.0 <= float(iou) <= 1.0):
        raise KernelInputError(f"iou: expected a value in [0, 1], got {iou}")
    return _select_rescale(cands, ratio_pad, orig_hw, float(iou), max_det, backend, out)


def topk_rescale(cands, ratio_pad, orig_hw, max_det: int = 300, *, backend: str = "auto",
                 out: Detections | None = None) -> Detections:
    """An end-to-end head's selection: each image's candidates best score first (ties: lower anchor), the
    first ``max_det``, rescaled; nothing suppressed."""
    return _select_rescale(cands, ratio_pad, orig_hw, None, max_det, backend, out)


def _select_rescale(cands, ratio_pad, orig_hw, iou: float | None, max_det: int, backend: str,
                    out: Detections | None) -> Detections:
    """NMS (``iou``) or top-k (``iou`` None), then rescale."""
    device = cands.scores.device
    b, cap = cands.scores.shape
    if int(max_det) < 1:
        raise KernelInputError(f"max_det: expected >= 1, got {max_det}")
    ratio_pad = _meta(ratio_pad, "ratio_pad", (4,), torch.float32, device, b)
    orig_hw = _meta(orig_hw, "orig_hw", (2,), torch.int32, device, b)
    backend = resolve_backend(backend, device, BACKENDS)
    if out is None:
        out = Detections.empty(b, int(max_det), device)
    elif out.max_det != int(max_det) or out.counts.shape[0] != b:
        raise KernelInputError(f"out: expected Detections for batch {b} with max_det {max_det}, got {tuple(out.scores.shape)}")
    if b == 0:
        return out
    stage = "nms" if iou is not None else "topk"
    if backend in ("reference", "torch"):
        with nvtx_range(stage):
            _torch_path(cands, ratio_pad, orig_hw, iou, int(max_det), out, backend)
        return out
    if backend == "cupy" and iou is not None and cap > shared_memory_per_block(device):  # a flag per candidate
        raise KernelInputError(f"max_nms: the CuPy NMS keeps one flag per candidate in shared memory; cap {cap} > "
                               f"{shared_memory_per_block(device)} bytes per block on {device}")
    order = out.scratch("order", (b, cap), torch.int32)
    keep = out.scratch("keep", (b, int(max_det)), torch.int32)
    if backend == "cupy":
        from . import cupy_impl as impl

        flags = ()  # the CuPy NMS keeps its removed flags in shared memory
    else:
        from . import numba_impl as impl

        flags = () if iou is None else (out.scratch("removed", (b, cap), torch.int8),)
    with nvtx_range(stage):
        if iou is None:
            impl.run_topk(cands, int(max_det), order, keep, out.counts)
        else:
            impl.run_nms(cands, iou, int(max_det), order, keep, out.counts, *flags)
    with nvtx_range("rescale"):
        impl.run_rescale(cands, keep, ratio_pad, orig_hw, out)
    return out


def _torch_path(cands, ratio_pad, orig_hw, iou, max_det, out, backend):
    """'reference': the NumPy loop; 'torch': torchvision.ops.batched_nms (or, top-k, a sort) on the device."""
    out.boxes.zero_(), out.scores.zero_(), out.keypoints.zero_(), out.counts.zero_()
    counts = cands.counts.cpu().tolist()
    if backend == "reference":
        per = [{"boxes": cands.boxes[i, :n].cpu(), "scores": cands.scores[i, :n].cpu(),
                "keypoints": cands.keypoints[i, :n].cpu(), "anchor": cands.anchors[i, :n].cpu()}
               for i, n in enumerate(counts)]
        res = postprocess_reference(per, ratio_pad.cpu().numpy(), orig_hw.cpu().numpy(), iou, max_det)
        for i, r in enumerate(res):
            n = len(r["scores"])
            out.boxes[i, :n] = torch.from_numpy(r["boxes"]).to(out.boxes.device)
            out.scores[i, :n] = torch.from_numpy(r["scores"]).to(out.boxes.device)
            out.keypoints[i, :n] = torch.from_numpy(r["keypoints"]).to(out.boxes.device)
            out.counts[i] = n
        return
    import torchvision

    valid = torch.arange(cands.cap, device=cands.scores.device)[None] < cands.counts[:, None]
    img, row = valid.nonzero(as_tuple=True)
    boxes, scores = cands.boxes[img, row], cands.scores[img, row]
    if iou is None:  # top-k: by image, then score descending, then anchor (the candidates' tie order)
        keep = torch.argsort(cands.anchors[img, row], stable=True)  # stable sorts, last key first, on the device
        keep = keep[torch.argsort(-scores[keep], stable=True)]
        keep = keep[torch.argsort(img[keep], stable=True)]
    else:
        keep = torchvision.ops.batched_nms(boxes, scores, img, iou)  # sorted by score, descending
    kimg = img[keep]
    rank = torch.zeros_like(kimg)
    for i in range(len(counts)):  # position of each kept box within its image
        sel = kimg == i
        rank[sel] = torch.arange(int(sel.sum()), device=kimg.device)
    m = rank < max_det
    keep, kimg, rank = keep[m], kimg[m], rank[m]
    rp = ratio_pad[kimg]
    hw = orig_hw[kimg].float()
    bx = boxes[keep].clone()
    bx[:, 0::2] = torch.minimum(((bx[:, 0::2] - rp[:, 2:3]) / rp[:, 0:1]).clamp_min(0), hw[:, 1:2])
    bx[:, 1::2] = torch.minimum(((bx[:, 1::2] - rp[:, 3:4]) / rp[:, 1:2]).clamp_min(0), hw[:, 0:1])
    kp = cands.keypoints[img[keep], row[keep]].clone()
    kp[..., 0] = torch.minimum(((kp[..., 0] - rp[:, 2:3]) / rp[:, 0:1]).clamp_min(0), hw[:, 1:2])
    kp[..., 1] = torch.minimum(((kp[..., 1] - rp[:, 3:4]) / rp[:, 1:2]).clamp_min(0), hw[:, 0:1])
    out.boxes[kimg, rank] = bx
    out.scores[kimg, rank] = scores[keep]
    out.keypoints[kimg, rank] = kp
    out.counts.copy_(torch.bincount(kimg, minlength=len(counts)).to(torch.int32))
