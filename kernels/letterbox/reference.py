"""CPU reference letterbox: exactly what Ultralytics ``predict`` does to a list of BGR frames.

``cv2.resize`` (INTER_LINEAR) + ``cv2.copyMakeBorder`` (114) per frame, stacked, BGR->RGB, HWC->CHW,
/255 in float32. Bit-exact to ``LetterBox`` + ``BasePredictor.preprocess`` (tests/test_letterbox.py).
"""
from __future__ import annotations

import cv2
import numpy as np

from .geometry import BatchGeometry, batch_geometry

PAD_VALUE = 114


def nv12_to_bgr(nv12: np.ndarray) -> np.ndarray:
    """(H*3/2, W) uint8 NV12 to (H, W, 3) BGR, BT.601 limited range, as OpenCV converts it."""
    return cv2.cvtColor(nv12, cv2.COLOR_YUV2BGR_NV12)


def letterbox_uint8(frame: np.ndarray, geo) -> np.ndarray:
    """One frame to its (out_h, out_w, 3) uint8 BGR canvas (the ``LetterBox.apply_image`` steps)."""
    img = frame
    if (geo.src_w, geo.src_h) != (geo.new_w, geo.new_h):
        img = cv2.resize(img, (geo.new_w, geo.new_h), interpolation=cv2.INTER_LINEAR)
    return img


def letterbox_reference(frames, imgsz=640, rect: bool = True, stride: int = 32, pixel_format: str = "bgr",
                        per_frame: bool = False):
    """Letterbox a batch on the CPU.

    Args:
        frames: list of (H, W, 3) uint8 BGR arrays (``pixel_format="bgr"``) or (H*3/2, W) uint8 NV12 arrays
            (``pixel_format="nv12"``, converted with OpenCV first).
    Returns:
        (B, 3, out_h, out_w) float32 RGB in [0, 1], and (B, 4) float32 ratio_pad rows
        (gain_x, gain_y, pad_x, pad_y).
    """
    frames = [np.asarray(f) for f in frames]
    if pixel_format == "nv12":
        frames = [nv12_to_bgr(f) for f in frames]
    elif pixel_format != "bgr":
        raise ValueError(f"pixel_format: expected 'bgr' or 'nv12', got {pixel_format!r}")
    geo: BatchGeometry = batch_geometry([f.shape for f in frames], imgsz, rect, stride, per_frame)
    out = np.empty((len(frames), geo.out_h, geo.out_w, 3), np.uint8)
    for i, (f, g) in enumerate(zip(frames, geo.frames)):
        img = letterbox_uint8(f, g)
        bottom = geo.out_h - g.new_h - g.top
        right = geo.out_w - g.new_w - g.left
        out[i] = cv2.copyMakeBorder(img, g.top, bottom, g.left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    chw = out[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return np.ascontiguousarray(chw), geo.ratio_pad()
