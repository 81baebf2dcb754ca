"""The embedded default clip: frames synthesized from the images shipped in the ultralytics wheel."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .frame import Frame, Source, SourceError

DEFAULT_NAME = "default"
FPS = 30.0


def synthesized_clip(n: int = 96, size=(432, 768)) -> list[np.ndarray]:
    """A short clip made from the ultralytics wheel's images (bus.jpg, zidane.jpg): a slow camera pan and
    zoom over each, ``n`` BGR uint8 frames of ``size`` (h, w). Deterministic; people in every frame."""
    import ultralytics

    assets = sorted((Path(ultralytics.__file__).parent / "assets").glob("*.jpg"))
    images = [cv2.imread(str(p)) for p in assets]
    if not images or any(im is None for im in images):
        raise SourceError(f"source {DEFAULT_NAME}: the ultralytics wheel's images were not found under {assets}")
    h, w = size
    frames = []
    per = max(1, n // len(images))
    for im in images:
        ih, iw = im.shape[:2]
        cw0 = min(iw, ih * w / h)  # the largest crop of the output's aspect ratio
        for k in range(per):
            t = k / max(1, per - 1)
            zoom = 1.0 + 0.35 * t  # zoom in over the shot
            cw = cw0 / zoom
            ch = cw * h / w
            x0 = (iw - cw) * (0.2 + 0.6 * t)  # pan left to right
            y0 = (ih - ch) * 0.5
            m = np.float32([[w / cw, 0, -x0 * w / cw], [0, h / ch, -y0 * h / ch]])
            frames.append(cv2.warpAffine(im, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return frames[:n]


@lru_cache(maxsize=1)
def _default_frames() -> tuple:
    """The default clip, made once per process (a looping run opens it again each pass). The arrays are
    shared by every open: the pipeline reads them and the sinks draw on copies."""
    return tuple(synthesized_clip())


def default_source(max_frames: int | None = None) -> Source:
    frames = list(_default_frames())
    frames = frames[:max_frames] if max_frames else frames
    parcels = ([Frame(i, f, timestamp=i / FPS)] for i, f in enumerate(frames))
    return Source(DEFAULT_NAME, parcels, FPS, len(frames), shape=frames[0].shape[:2])
