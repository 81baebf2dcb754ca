"""Letterbox preprocessing: BGR (or NV12) uint8 frames -> RGB CHW canvas in [0, 1], Ultralytics semantics.

    out, ratio_pad = letterbox(frames, imgsz=640, rect=True, dtype=torch.float16, backend="auto")

``frames``: a list of (H, W, 3) uint8 BGR tensors of any sizes, or one (B, H, W, 3) tensor; with
``pixel_format="nv12"``, (H*3/2, W) uint8 NV12 frames (Y plane then interleaved UV, as NVDEC emits).
CUDA tensors go to the GPU kernels on the caller's current stream; NumPy / CPU frames to the reference.
Returns ``out`` (B, 3, out_h, out_w) and ``ratio_pad`` (B, 4) float32 rows (gain_x, gain_y, pad_x, pad_y)
on the output's device. ``memory_format=torch.channels_last`` lays the canvas out as the GPU backbone's
weights are (memory B, H, W, 3): its convolutions then read it without a conversion.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .._common import KernelInputError, as_tensor, nvtx_range, resolve_backend, same_device
from .geometry import BatchGeometry, batch_geometry, check_imgsz, frame_canvas
from .reference import letterbox_reference

__all__ = ["letterbox", "letterbox_reference", "batch_geometry", "frame_canvas", "make_layout", "Layout", "FrameBatch",
           "normalize_frames", "check_frame", "source_rows", "BACKENDS"]

BACKENDS = ("cupy", "numba", "torch", "reference")
OUT_DTYPES = (torch.float16, torch.float32)
MEMORY_FORMATS = (torch.contiguous_format, torch.channels_last)


@dataclass
class Layout:
    """Device-side per-frame descriptors for one batch layout (cached: steady state copies nothing)."""

    geometry: BatchGeometry
    src: torch.Tensor | None  # (B, 4) int64: plane0 ptr, pitch, plane1 ptr, pitch
    geo: torch.Tensor  # (B, 8) int32: src_h, src_w, new_h, new_w, top, left, column/row table offsets
    ratio_pad: torch.Tensor  # (B, 4) float32
    cols: torch.Tensor  # (sum new_w, 4) int32: x0, x1, a0, a1 (geometry.resize_coefficients)
    rows: torch.Tensor  # (sum new_h, 4) int32: y0, y1, b0, b1


def make_layout(geometry: BatchGeometry, src_rows: np.ndarray | None, device) -> Layout:
    """Upload one batch layout's descriptors (done once per layout; later batches reuse it)."""
    cols, rows = geometry.coefficients()
    dev = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    return Layout(geometry, None if src_rows is None else dev(src_rows), dev(geometry.table()),
                  dev(geometry.ratio_pad()), dev(cols), dev(rows))


_LAYOUTS: OrderedDict = OrderedDict()
_LAYOUT_CACHE_SIZE = 128


def check_frame(f: torch.Tensor, name: str, pixel_format: str) -> tuple[int, int]:
    """Validate one frame (or, with a leading batch axis stripped, a batch); returns the image (h, w)."""
    if f.dtype != torch.uint8:
        raise KernelInputError(f"{name}: expected uint8, got {str(f.dtype).replace('torch.', '')} {tuple(f.shape)}")
    if pixel_format == "bgr":
        if f.ndim != 3 or f.shape[2] != 3:
            raise KernelInputError(f"{name}: expected uint8 HxWx3 (BGR), got shape {tuple(f.shape)}")
        h, w = f.shape[0], f.shape[1]
        if h and w and (f.stride(2) != 1 or f.stride(1) != 3 or f.stride(0) < 3 * w):
            raise KernelInputError(f"{name}: expected packed rows (strides (pitch, 3, 1)), got strides {f.stride()}")
    else:
        if f.ndim != 2 or f.shape[0] % 3 or (f.shape[0] * 2 // 3) % 2 or f.shape[1] % 2:
            raise KernelInputError(f"{name}: expected NV12 (H*3/2, W) uint8 with even H and W, got shape {tuple(f.shape)}")
        h, w = f.shape[0] * 2 // 3, f.shape[1]
        if h and w and (f.stride(1) != 1 or f.stride(0) < w):
            raise KernelInputError(f"{name}: expected packed NV12 rows (strides (pitch, 1)), got strides {f.stride()}")
    if h == 0 or w == 0:
        raise KernelInputError(f"{name}: expected a non-empty image, got shape {tuple(f.shape)}")
    return h, w


@dataclass(frozen=True)
class FrameBatch:
    """Frames checked once: per-frame tensors (``items``) or one batch tensor (``batch``), their device,
    each frame's image (h, w) and the pixel format. Kernels and the pipeline take it as it is (no second
    check): build it with :func:`normalize_frames`, or with :meth:`checked` from frames that
    :func:`check_frame` has already passed."""

    items: list | None
    batch: torch.Tensor | None
    device: torch.device
    shapes: list
    pixel_format: str
    pinned: tuple = ()  # host frames: per frame, True where it is in pinned memory (the caller knows: no query)

    @classmethod
    def checked(cls, items: list, shapes: list, pixel_format: str, pinned: tuple = ()) -> "FrameBatch":
        """Frames already checked one by one (``check_frame``) and on one device: no check here. ``pinned``:
        a flag per frame, or () when none is known to be pinned."""
        if pinned and len(pinned) != len(items):
            raise KernelInputError(f"pinned: expected a flag per frame ({len(items)}), got {len(pinned)}")
        return cls(items, None, items[0].device, list(shapes), pixel_format, tuple(pinned))

    def __len__(self) -> int:
        return len(self.shapes)

    def frames(self) -> list:
        return list(self.items) if self.items is not None else list(self.batch.unbind(0))

    def subset(self, idx: list) -> "FrameBatch":
        """The frames at positions ``idx``, in that order."""
        items = self.frames()
        return FrameBatch([items[i] for i in idx], None, self.device, [self.shapes[i] for i in idx],
                          self.pixel_format, tuple(self.pinned[i] for i in idx) if self.pinned else ())

    def padded(self, n: int) -> "FrameBatch":
        """This batch with its last frame repeated up to ``n`` frames."""
        k = n - len(self)
        if k <= 0:
            return self
        items = self.frames()
        pinned = self.pinned + self.pinned[-1:] * k
        return FrameBatch(items + [items[-1]] * k, None, self.device, self.shapes + [self.shapes[-1]] * k,
                          self.pixel_format, pinned)


def normalize_frames(frames, pixel_format: str = "bgr") -> FrameBatch:
    """Check ``frames`` once and return them as a :class:`FrameBatch` (a FrameBatch passes as it is).

    A batch tensor is checked once, as a whole (no per-frame Python work: this is the hot path);
    a list is checked frame by frame, each error naming its index."""
    if isinstance(frames, FrameBatch):
        if frames.pixel_format != pixel_format:
            raise KernelInputError(f"pixel_format: the batch holds {frames.pixel_format!r} frames, got {pixel_format!r}")
        return frames
    if pixel_format not in ("bgr", "nv12"):
        raise KernelInputError(f"pixel_format: expected 'bgr' or 'nv12', got {pixel_format!r}")
    if frames is None:
        raise KernelInputError("frames: expected a list of frames or a batch tensor, got None")
    if not isinstance(frames, (list, tuple)):
        batch = as_tensor(frames, "frames")
        want = 4 if pixel_format == "bgr" else 3
        if batch.ndim != want:
            raise KernelInputError(
                f"frames: expected a list of frames or a {'(B, H, W, 3)' if want == 4 else '(B, H*3/2, W)'} "
                f"batch tensor, got shape {tuple(batch.shape)}")
        if batch.shape[0] == 0:
            raise KernelInputError("frames: expected at least one frame, got an empty batch")
        hw = check_frame(batch[0], "frames[0]", pixel_format)
        return FrameBatch(None, batch, batch.device, [hw] * batch.shape[0], pixel_format)
    items = [as_tensor(f, f"frames[{i}]") for i, f in enumerate(frames)]
    if not items:
        raise KernelInputError("frames: expected at least one frame, got an empty batch")
    device = items[0].device
    shapes = []
    for i, f in enumerate(items):
        if not same_device(f.device, device):
            raise KernelInputError(f"frames[{i}]: expected a tensor on {device} like frames[0], got one on {f.device}")
        shapes.append(check_frame(f, f"frames[{i}]", pixel_format))
    return FrameBatch(items, None, device, shapes, pixel_format)


def source_rows(items, batch, shapes, nv12: bool) -> np.ndarray:
    """(B, 4) int64 descriptor rows: plane0 pointer, pitch, plane1 (UV) pointer, pitch."""
    if batch is not None:
        h = shapes[0][0]
        pitch = batch.stride(1) * batch.element_size()
        p0 = batch.data_ptr() + np.arange(batch.shape[0], dtype=np.int64) * (batch.stride(0) * batch.element_size())
        rows = np.zeros((batch.shape[0], 4), np.int64)
        rows[:, 0], rows[:, 1] = p0, pitch
        if nv12:
            rows[:, 2], rows[:, 3] = p0 + h * pitch, pitch
        return rows
    rows = []
    for f, (h, _w) in zip(items, shapes):
        pitch = f.stride(0) * f.element_size()
        p = f.data_ptr()
        rows.append((p, pitch, p + h * pitch if nv12 else 0, pitch if nv12 else 0))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def _layout(fb: FrameBatch, imgsz, rect, stride, nv12: bool, per_frame: bool) -> Layout:
    items, batch, shapes, device = fb.items, fb.batch, fb.shapes, fb.device
    if batch is not None:  # O(1) key: the batch's memory and geometry
        src_key = ("batch", batch.data_ptr(), tuple(batch.shape), batch.stride())
    else:
        src_key = tuple((f.data_ptr(),) + tuple(f.shape) + f.stride() for f in items)
    key = (str(device), nv12, src_key, check_imgsz(imgsz, stride), rect, stride, per_frame)
    hit = _LAYOUTS.get(key)
    if hit is not None:
        _LAYOUTS.move_to_end(key)
        return hit
    lay = make_layout(batch_geometry(shapes, imgsz, rect, stride, per_frame), source_rows(items, batch, shapes, nv12), device)
    _LAYOUTS[key] = lay
    if len(_LAYOUTS) > _LAYOUT_CACHE_SIZE:
        _LAYOUTS.popitem(last=False)
    return lay


def letterbox(frames, imgsz=640, *, rect: bool = True, stride: int = 32, dtype: torch.dtype = torch.float16,
              pixel_format: str = "bgr", backend: str = "auto", out: torch.Tensor | None = None,
              layout: Layout | None = None, per_frame: bool = False,
              memory_format: torch.memory_format = torch.contiguous_format):
    """Letterbox a batch (see the module docstring). ``frames``: as the module docstring says, or a
    :class:`FrameBatch` (already checked). ``out``: optional preallocated output to fill. ``layout``: the
    descriptors of these frames built ahead (:func:`make_layout`; a CUDA graph keeps its own and rewrites
    its pointer table per batch); by default they come from a cache keyed by the frames' memory.
    ``per_frame``: each frame letterboxed as ``predict`` letterboxes it alone, every frame on one canvas
    (geometry.batch_geometry); default: ``predict``'s batch semantics (mixed shapes: the square canvas).
    ``memory_format``: the canvas's layout, planar (torch.contiguous_format) or torch.channels_last (``out``
    laid out so)."""
    fb = normalize_frames(frames, pixel_format)
    if dtype not in OUT_DTYPES:
        raise KernelInputError(f"dtype: expected torch.float16 or torch.float32, got {dtype}")
    if memory_format not in MEMORY_FORMATS:
        raise KernelInputError(f"memory_format: expected torch.contiguous_format or torch.channels_last, "
                               f"got {memory_format}")
    backend = resolve_backend(backend, fb.device, BACKENDS)
    nv12 = pixel_format == "nv12"
    if backend == "reference":
        arr, rp = letterbox_reference([f.numpy() for f in fb.frames()], imgsz, rect, stride, pixel_format,
                                      per_frame)
        res = torch.from_numpy(arr).to(dtype).contiguous(memory_format=memory_format)
        if out is not None:
            _check_out(out, res.shape, dtype, fb.device, memory_format)
            out.copy_(res)
            res = out
        return res, torch.from_numpy(rp)

    lay = layout if layout is not None else _layout(fb, imgsz, rect, stride, nv12, per_frame)
    g = lay.geometry
    shape = (len(fb), 3, g.out_h, g.out_w)
    if out is None:
        out = torch.empty(shape, dtype=dtype, device=fb.device, memory_format=memory_format)
    else:
        _check_out(out, shape, dtype, fb.device, memory_format)
    with nvtx_range("letterbox"):
        if backend == "cupy":
            from . import cupy_impl

            cupy_impl.run(lay, out, nv12, memory_format == torch.channels_last)
        elif backend == "numba":
            from . import numba_impl

            numba_impl.run(fb.items, fb.batch, lay, out, nv12, memory_format == torch.channels_last)
        else:
            from . import torch_ops

            torch_ops.run(fb.items, fb.batch, g, out, nv12)
    return out, lay.ratio_pad


def _check_out(out, shape, dtype, device, memory_format):
    if not isinstance(out, torch.Tensor):
        raise KernelInputError(f"out: expected a torch tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise KernelInputError(f"out: expected {dtype} {tuple(shape)}, got {out.dtype} {tuple(out.shape)}")
    if not same_device(out.device, device):
        raise KernelInputError(f"out: expected a tensor on {device}, got one on {out.device}")
    if not out.is_contiguous(memory_format=memory_format) or out.data_ptr() % 16:
        want = "channels-last" if memory_format == torch.channels_last else "contiguous"
        raise KernelInputError(f"out: expected a {want} 16-byte-aligned tensor, got strides {out.stride()}")
