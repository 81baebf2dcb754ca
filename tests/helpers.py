"""Shared test helpers: where the sample data lies, frame readers, comparisons."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """``$POSEFUSE_DATA``, else ``../shared/data`` beside the checkout, else ``.offline/data`` (GPU machine)."""
    for cand in (os.environ.get("POSEFUSE_DATA"), ROOT.parent / "shared" / "data", ROOT / ".offline" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    raise FileNotFoundError("sample data: set POSEFUSE_DATA or provide ../shared/data")


def data_path(name: str) -> str:
    return str(data_dir() / name)


@lru_cache(maxsize=8)
def _read_video(path: str, n: int):
    cap = cv2.VideoCapture(path)
    frames = []
    while len(frames) < n:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    if not frames:
        raise RuntimeError(f"could not read frames from {path}")
    return tuple(frames)


def read_video(path: str, n: int) -> list[np.ndarray]:
    return list(_read_video(path, n))


def read_gif(path: str) -> list[np.ndarray]:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [cv2.cvtColor(np.asarray(f.convert("RGB")), cv2.COLOR_RGB2BGR) for f in ImageSequence.Iterator(im)]


def asset_images() -> list[np.ndarray]:
    """The images shipped in the ultralytics wheel (bus.jpg, zidane.jpg)."""
    import ultralytics

    d = Path(ultralytics.__file__).parent / "assets"
    return [cv2.imread(str(p)) for p in sorted(d.glob("*.jpg"))]


def bgr_to_nv12(bgr: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR (even H, W) -> (H*3/2, W) NV12 through OpenCV's I420, UV interleaved."""
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    y = i420[:h]
    u = i420[h : h + h // 4].reshape(h // 2, w // 2)
    v = i420[h + h // 4 :].reshape(h // 2, w // 2)
    uv = np.stack((u, v), -1).reshape(h // 2, w)
    return np.ascontiguousarray(np.concatenate((y, uv), 0))


def assert_letterbox_close(got: np.ndarray, ref: np.ndarray, max_levels: float = 2.0, mean_levels: float = 0.25):
    """Kernel letterbox vs the cv2 reference: max |diff| <= 2/255, mean <= 0.25/255 (fixed-point cv2 vs float)."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.isfinite(got).all(), "unwritten (NaN-poisoned) or non-finite output values"
    d = np.abs(got.astype(np.float64) - ref.astype(np.float64)) * 255
    assert d.max() <= max_levels + 1e-3, f"max diff {d.max():.3f} levels"
    assert d.mean() <= mean_levels, f"mean diff {d.mean():.4f} levels"


def assert_letterbox_exact(got: np.ndarray, ref: np.ndarray):
    """Kernel letterbox == the cv2 reference bit for bit (fp16 output: the reference rounded to fp16)."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    ref = ref.astype(got.dtype)
    bad = got != ref
    assert not bad.any(), f"{int(bad.sum())} of {bad.size} values differ, max {np.abs(got.astype(np.float64) - ref).max() * 255:.3f} levels"
