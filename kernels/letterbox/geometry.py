"""Letterbox geometry with Ultralytics 8.4.190 semantics (``LetterBox.get_params`` + ``pre_transform``).

Pure Python on the host: one place computes, per frame, the resized size, the pads and the gains, and
every implementation (reference, CuPy, Numba, torch ops) uses it, so they can differ only in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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
        """(B, 8) int32: src_h, src_w, new_h, new_w, top, left, then the offsets of the frame's column and row
        coefficients in :meth:`coefficients` (the kernels' per-frame descriptor)."""
        offsets = self._coefficient_offsets()[0]
        return np.array(
            [[f.src_h, f.src_w, f.new_h, f.new_w, f.top, f.left, *offsets[(f.src_h, f.src_w, f.new_h, f.new_w)]]
             for f in self.frames], dtype=np.int32).reshape(-1, 8)

    def _coefficient_offsets(self):
        offsets, cols, rows, nc, nr = {}, [], [], 0, 0
        for f in self.frames:
            key = (f.src_h, f.src_w, f.new_h, f.new_w)
            if key not in offsets:  # frames of one size share their tables
                c, r = resize_coefficients(*key)
                offsets[key] = (nc, nr)
                cols.append(c)
                rows.append(r)
                nc, nr = nc + len(c), nr + len(r)
        return offsets, cols, rows

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """Column (sum new_w, 4) and row (sum new_h, 4) int32 tables of every distinct frame size."""
        _, cols, rows = self._coefficient_offsets()
        return np.concatenate(cols), np.concatenate(rows)


def _source_coords(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2.resize's source coordinate per destination index: (float)((d + 0.5) * scale - 0.5) with
    scale = 1 / (dst / src) in double; returns its floor and the float32 fraction."""
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    return s, (f - s.astype(np.float32)).astype(np.float32)


def resize_coefficients(src_h: int, src_w: int, new_h: int, new_w: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR fixed-point coefficients for uint8 (11-bit, INTER_RESIZE_COEF_SCALE = 2048).

    cols (new_w, 4) int32: x0, x1, a0, a1 -- a tap off the image moves onto the edge pixel with weight 1;
    rows (new_h, 4) int32: y0, y1, b0, b1 -- rows clamped to the image, weights kept.
    Applied as D = S[x0]*a0 + S[x1]*a1 per row, then ((D0 >> 4) * b0 >> 16) + ((D1 >> 4) * b1 >> 16) + 2 >> 2:
    cv2.resize's result bit for bit (tests/test_letterbox.py checks it against cv2 on random sizes)."""
    one = np.float32(1.0)
    q = np.float32(2048.0)
    sx, fx = _source_coords(src_w, new_w)
    lo, hi = sx < 0, sx >= src_w - 1
    fx[lo | hi] = 0.0
    sx[lo] = 0
    sx[hi] = src_w - 1
    cols = np.stack([sx, np.minimum(sx + 1, src_w - 1), np.rint((one - fx) * q), np.rint(fx * q)], 1)
    sy, fy = _source_coords(src_h, new_h)
    rows = np.stack([np.clip(sy, 0, src_h - 1), np.clip(sy + 1, 0, src_h - 1), np.rint((one - fy) * q), np.rint(fy * q)], 1)
    return cols.astype(np.int32), rows.astype(np.int32)


def apply_coefficients(img: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Resize an (H, W, C) uint8 image with :func:`resize_coefficients` tables, in NumPy (the kernel's math)."""
    x = img.astype(np.int64)
    d = x[:, cols[:, 0]] * cols[None, :, 2, None] + x[:, cols[:, 1]] * cols[None, :, 3, None]
    b0 = rows[:, 2, None, None].astype(np.int64)
    b1 = rows[:, 3, None, None].astype(np.int64)
    v = (((d[rows[:, 0]] >> 4) * b0 >> 16) + ((d[rows[:, 1]] >> 4) * b1 >> 16) + 2) >> 2
    return np.clip(v, 0, 255).astype(np.uint8)


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


@lru_cache(maxsize=1024)
def frame_canvas(shape: tuple, imgsz=640, rect: bool = True, stride: int = 32) -> tuple[int, int]:
    """The canvas (h, w) a frame of ``shape`` (h, w, ...) is letterboxed to when ``predict`` runs it alone:
    with ``rect`` the smallest stride multiple that holds the resized frame (``LetterBox(auto=True)``), else
    the fixed ``imgsz`` canvas. Frames of different shapes can share a canvas (768x432 and 1920x1080 both
    give 384x640 at 640): such frames batch together with the same result as alone."""
    h, w = int(shape[0]), int(shape[1])
    _, ch, cw = frame_geometry(h, w, check_imgsz(imgsz, stride), rect, stride)
    return ch, cw


def batch_geometry(shapes, imgsz=640, rect: bool = True, stride: int = 32, per_frame: bool = False) -> BatchGeometry:
    """Geometry of a batch.

    ``per_frame=False``: as ``predict`` letterboxes a batch: with ``rect`` (``predict(rect=True)``) and every
    frame of one shape the canvas is the smallest stride multiple that holds the resized frame
    (``LetterBox(auto=True)``); mixed shapes, or ``rect=False``, use the fixed ``imgsz`` canvas, so a
    frame's letterbox depends on the other frames of its batch.
    ``per_frame=True``: each frame as ``predict`` letterboxes it alone (:func:`frame_canvas`), so its
    result depends on the frame only; every frame must then have the same canvas (ValueError naming the
    first that differs: split the batch by canvas).
    """
    new_shape = check_imgsz(imgsz, stride)
    shapes = [tuple(int(v) for v in s[:2]) for s in shapes]
    if not shapes:
        raise ValueError("frames: expected at least one frame, got an empty batch")
    auto = rect and (per_frame or len(set(shapes)) == 1)
    frames, canvases = [], []
    for h, w in shapes:
        g, ch, cw = frame_geometry(h, w, new_shape, auto, stride)
        frames.append(g)
        canvases.append((ch, cw))
    for i, c in enumerate(canvases):
        if c != canvases[0]:
            raise ValueError(f"frames[{i}]: its own canvas {c[0]}x{c[1]} differs from frames[0]'s "
                             f"{canvases[0][0]}x{canvases[0][1]}: a batch letterboxed per frame holds one canvas")
    out_h, out_w = canvases[0]
    return BatchGeometry(out_h, out_w, tuple(frames))
