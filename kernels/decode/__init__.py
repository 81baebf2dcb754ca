"""Pose head decode on the GPU: boxes, scores, keypoints, threshold and compaction in one launch.

    cands = decode(raw, levels, conf=0.25, max_nms=30000, head=POSE, backend="auto")

``raw``: (B, head.channels, A) float16/float32 head outputs (layout and heads in kernels/decode/reference.py:
116 channels for YOLOv8/YOLO11's ``Pose``, 56 for YOLO26's ``Pose26``); ``levels``: per-level
(h, w, stride), e.g. ``levels_for(384, 640)``. Returns :class:`Candidates` with capacity
``cap = min(A, max_nms)`` per image (an end-to-end head: its top-k); ``counts[b]`` valid rows of image b
(never more than cap), in no particular order (compaction order); NMS or top-k sorts them.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .._common import KernelInputError, as_tensor, check_tensor, nvtx_range, resolve_backend
from .reference import HEADS, MAX_NMS, NKPT, KDIM, POSE, Head, decode_reference, levels_for

__all__ = ["decode", "decode_reference", "levels_for", "top_cut", "Candidates", "Cut", "Head", "HEADS", "POSE",
           "BACKENDS"]

BACKENDS = ("cupy", "numba", "torch", "reference")


@dataclass
class Candidates:
    """Padded candidate buffers. boxes (B, cap, 4) float32 xyxy letterbox pixels; scores (B, cap) float32;
    keypoints (B, cap, 17, 3) float32 (x, y letterbox pixels, visibility); anchors (B, cap) int32 anchor index;
    counts (B,) int32 valid rows per image."""

    boxes: torch.Tensor
    scores: torch.Tensor
    keypoints: torch.Tensor
    anchors: torch.Tensor
    counts: torch.Tensor

    @property
    def cap(self) -> int:
        return self.scores.shape[1]

    @staticmethod
    def empty(b: int, cap: int, device) -> "Candidates":
        f = dict(dtype=torch.float32, device=device)
        return Candidates(
            torch.empty((b, cap, 4), **f), torch.empty((b, cap), **f), torch.empty((b, cap, NKPT, KDIM), **f),
            torch.empty((b, cap), dtype=torch.int32, device=device), torch.zeros((b,), dtype=torch.int32, device=device),
        )

    def per_image(self):
        """Host-side list of dicts like decode_reference's, sorted by anchor (synchronizes; for tests)."""
        out = []
        counts = self.counts.cpu().tolist()
        for b, n in enumerate(counts):
            a = self.anchors[b, :n].long().cpu()
            order = torch.argsort(a)
            out.append({"anchor": a[order], "boxes": self.boxes[b, :n].cpu()[order],
                        "scores": self.scores[b, :n].cpu()[order], "keypoints": self.keypoints[b, :n].cpu()[order]})
        return out


_LEVELS: OrderedDict = OrderedDict()


def _level_table(levels, device) -> torch.Tensor:
    key = (tuple(levels), str(device))
    t = _LEVELS.get(key)
    if t is None:
        rows, off = [], 0
        for h, w, s in levels:
            rows.append((h, w, s, off))
            off += h * w
        t = torch.from_numpy(np.array(rows, dtype=np.int32)).to(device)
        _LEVELS[key] = t
        if len(_LEVELS) > 64:
            _LEVELS.popitem(last=False)
    return t


def check_levels(levels, a: int):
    try:
        levels = tuple((int(h), int(w), int(s)) for h, w, s in levels)
    except (TypeError, ValueError):
        raise KernelInputError(f"levels: expected a sequence of (h, w, stride), got {levels!r}") from None
    if not levels or sum(h * w for h, w, _ in levels) != a:
        raise KernelInputError(
            f"levels: expected per-level (h, w, stride) whose cells sum to the {a} anchors of raw, got {levels}")
    return levels


@dataclass(frozen=True)
class Cut:
    """The top-``cap`` cut of each image, for kernels that see one anchor at a time: ``kth`` (B,) float32, the
    cap-th largest finite class logit; ``ties`` (B, 2) int32, the places left for anchors whose logit equals
    it (cap minus those above it) and a counter of the places taken (zero before the launch)."""
    kth: torch.Tensor
    ties: torch.Tensor


def top_cut(raw: torch.Tensor, cap: int, head: Head = POSE) -> Cut | None:
    """When A > cap: each image's :class:`Cut`, computed on the device without a sync. Kernels keep an
    anchor above the cut, and one at it only while a place is left, so that a tie at the cut never pushes
    out a better anchor; comparing logits (not sigmoids) makes the cut independent of how each
    implementation rounds the sigmoid. A non-finite logit (never a candidate) counts as -inf: it takes no
    place."""
    if raw.shape[2] <= cap:
        return None
    logits = raw[:, head.cls].float().nan_to_num(nan=float("-inf"), posinf=float("-inf"))
    kth = torch.topk(logits, cap, dim=1, sorted=False).values.amin(1)
    room = cap - (logits > kth[:, None]).sum(1, dtype=torch.int32)
    return Cut(kth.contiguous(), torch.stack([room, torch.zeros_like(room)], 1).contiguous())


def decode(raw, levels, conf: float = 0.25, max_nms: int = MAX_NMS, *, head: Head = POSE, backend: str = "auto",
           out: Candidates | None = None) -> Candidates:
    raw = as_tensor(raw, "raw")
    check_tensor(raw, "raw", dtypes=(torch.float16, torch.float32), ndim=3)
    if not isinstance(head, Head):
        raise KernelInputError(f"head: expected a kernels.decode.Head, got {type(head).__name__}")
    if raw.shape[1] != head.channels:
        raise KernelInputError(f"raw: expected {head.channels} channels ({4 * head.reg_max} box + 1 class + 51 "
                               f"keypoint) for {head}, got shape {tuple(raw.shape)}")
    if not (0.0 <= float(conf) <= 1.0):
        raise KernelInputError(f"conf: expected a value in [0, 1], got {conf}")
    if int(max_nms) < 1:
        raise KernelInputError(f"max_nms: expected >= 1, got {max_nms}")
    b, _, a = raw.shape
    levels = check_levels(levels, a)
    cap = min(a, int(max_nms))
    backend = resolve_backend(backend, raw.device, BACKENDS)
    if out is None:
        out = Candidates.empty(b, cap, raw.device)
    elif out.cap != cap or out.counts.shape[0] != b:
        raise KernelInputError(f"out: expected Candidates for batch {b} with cap {cap}, got batch {out.counts.shape[0]} cap {out.cap}")
    if b == 0:
        return out
    with nvtx_range("head_decode"):
        if backend in ("reference", "torch"):
            _fill_from_reference(out, decode_reference(raw.cpu() if backend == "reference" else raw, levels, conf, cap,
                                                       head))
            return out
        lvl = _level_table(levels, raw.device)
        cut = top_cut(raw, cap, head)
        out.counts.zero_()
        if backend == "cupy":
            from . import cupy_impl

            cupy_impl.run(raw, lvl, float(conf), cut, out, head)
        else:
            from . import numba_impl

            numba_impl.run(raw, lvl, float(conf), cut, out, head)
        out.counts.clamp_(max=cap)
    return out


def _fill_from_reference(out: Candidates, per_image):
    out.counts.zero_()
    for bi, d in enumerate(per_image):
        n = d["anchor"].numel()
        out.boxes[bi, :n] = d["boxes"].to(out.boxes.device)
        out.scores[bi, :n] = d["scores"].to(out.boxes.device)
        out.keypoints[bi, :n] = d["keypoints"].to(out.boxes.device)
        out.anchors[bi, :n] = d["anchor"].to(out.boxes.device, torch.int32)
        out.counts[bi] = n
