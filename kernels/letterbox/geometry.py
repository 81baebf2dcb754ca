"""Letterbox geometry with Ultralytics 8.4.190 semantics (``LetterBox.get_params`` + ``pre_transform``).

Pure Python on the host: one place computes, per frame, the resized size, the pads and the gains, and
every implementation (reference, CuPy, Numba, torch ops) uses it, so they can differ only in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameGeometry:
    src_h: int
    src_w: int
    new_h: int  # resized image height inside the canvas
    new_w: int
    top: int  # pad rows above the image (Ultralytics' round(dh - 0.1))
    left: int  # pad columns left of the image

    @property
    def gain_x(self) -> float:
        """x scale from original to letterbox pixels (new_w / src_w), as ``scale_boxes`` uses it."""
        return self.new_w / self.src_w

    @property
    def gain_y(self) -> float:
        return self.new_h / self.src_h


@dataclass(frozen=True)
class BatchGeometry:
    out_h: int
    out_w: int
    frames: tuple[FrameGeometry, ...]

    def ratio_pad(self) -> np.ndarray:
        """(B, 4) float32: gain_x, gain_y, pad_x, pad_y per frame."""
        return np.array([[f.gain_x, f.gain_y, f.left, f.top] for f in self.frames], dtype=np.float32).reshape(-1, 4)

    def table(self) -> np.ndarray:
        """(B, 6) int32: src_h, src_w, new_h, new_w, top, left (the kernels' per-frame descriptor)."""
        return np.array(
            [[f.src_h, f.src_w, f.new_h, f.new_w, f.top, f.left] for f in self.frames], dtype=np.int32
        ).reshape(-1, 6)


def check_imgsz(imgsz, stride: int = 32) -> tuple[int, int]:
    """``imgsz`` as (h, w); each must be a positive multiple of ``stride`` (Ultralytics rounds; we refuse)."""
    hw = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(int(v) for v in imgsz)
    if len(hw) != 2 or any(v <= 0 or v % stride for v in hw):
        raise ValueError(f"imgsz: expected a positive multiple of stride {stride} (int or (h, w)), got {imgsz!r}")
    return hw


def frame_geometry(src_h: int, src_w: int, new_shape: tuple[int, int], auto: bool, stride: int) -> tuple[FrameGeometry, int, int]:
    """``LetterBox.get_params`` for one frame (scaleup, centred); returns the geometry and canvas (h, w)."""
    r = min(new_shape[0] / src_h, new_shape[1] / src_w)
    new_w, new_h = max(round(src_w * r), 1), max(round(src_h * r), 1)
    dw, dh = new_shape[1] - new_w, new_shape[0] - new_h
    if auto:
        dw, dh = int(np.mod(dw, stride)), int(np.mod(dh, stride))
    dw /= 2
    dh /= 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return FrameGeometry(src_h, src_w, new_h, new_w, top, left), new_h + top + bottom, new_w + left + right


def batch_geometry(shapes, imgsz=640, rect: bool = True, stride: int = 32) -> BatchGeometry:
    """Geometry of a batch as ``predict`` letterboxes it.

    ``rect``: like ``predict(rect=True)``: when every frame has the same shape the canvas is the smallest
    stride multiple that holds the resized frame (``LetterBox(auto=True)``); mixed shapes, or
    ``rect=False``, use the fixed ``imgsz`` canvas.
    """
    new_shape = check_imgsz(imgsz, stride)
    shapes = [tuple(int(v) for v in s[:2]) for s in shapes]
    if not shapes:
        raise ValueError("frames: expected at least one frame, got an empty batch")
    auto = rect and len(set(shapes)) == 1
    frames, canvases = [], set()
    for h, w in shapes:
        g, ch, cw = frame_geometry(h, w, new_shape, auto, stride)
        frames.append(g)
        canvases.add((ch, cw))
    assert len(canvases) == 1, canvases  # one canvas per batch, by construction
    (out_h, out_w), = canvases
    return BatchGeometry(out_h, out_w, tuple(frames))
