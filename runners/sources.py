"""Frame sources: video files and URLs (OpenCV/FFmpeg), image folders, single images, and the embedded
default clip synthesized from the images shipped in the ultralytics wheel (no download, no data needed).

Every source yields ``Frame(index, image)`` with ``image`` a BGR uint8 HxWx3 NumPy array, in order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_NAME = "default"


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message names the source and the reason."""


@dataclass
class Frame:
    """One frame. ``image``: BGR uint8 HxWx3 (host NumPy), or with ``pixel_format="nv12"`` an NV12
    (H*3/2, W) uint8 CUDA tensor from NVDEC. ``ready``: a CUDA event the consumer stream must wait on
    before reading ``image``; ``release``: called once the GPU has finished reading it (decoder buffers
    are reused after that)."""

    index: int
    image: object
    pixel_format: str = "bgr"
    ready: object = None
    release: object = None

    def done(self):
        """The consumer is finished with the frame's memory (idempotent)."""
        rel, self.release = self.release, None
        if rel is not None:
            rel()


@dataclass
class Source:
    """A named, ordered stream of frames. ``fps`` is the source's nominal frame rate (None if unknown)."""

    name: str
    frames: Iterator[Frame]
    fps: float | None = None
    count: int | None = None  # frames it will yield, when known
    cancel: object = None  # threading.Event: set it to make a source blocked on its consumer return
    shape: tuple | None = None  # (height, width) of its frames, when known ahead (for warm-up)
    pixel_format: str = "bgr"
    stats: dict = field(default_factory=dict)  # seconds the source spent per activity (decoder, pool wait...)
    on_close: object = None  # called once by close() (a decoder's background thread is stopped)
    chunks: Iterator[list[Frame]] | None = None  # the same frames as lists, as a chunked decoder gives them

    def parcels(self) -> Iterator[list[Frame]]:
        """The frames in lists: a chunked decoder's chunks as they come (so a runner handles a chunk at once,
        not frame by frame), else one frame per list. Read either ``frames`` or this, not both."""
        if self.chunks is not None:
            return self.chunks
        return ([f] for f in self.frames)

    def close(self):
        """Stop the source (a blocked NVDEC source returns; a generator is closed)."""
        if self.cancel is not None:
            self.cancel.set()
        fin, self.on_close = self.on_close, None
        if fin is not None:
            fin()


def synthesized_clip(n: int = 96, size=(432, 768)) -> list[np.ndarray]:
    """A short clip made from the ultralytics wheel's images (bus.jpg, zidane.jpg): a slow camera pan and
    zoom over each, ``n`` frames of ``size`` (h, w). Deterministic; people in every frame."""
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


def _video(path: str, max_frames: int | None) -> Source:
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"source {path}: OpenCV could not open it (missing codec, not a video, or unreachable)")
    fps = cap.get(cv2.CAP_PROP_FPS) or None
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    declared = count

    def gen():
        i = 0
        try:
            while max_frames is None or i < max_frames:
                ok, img = cap.read()
                if not ok:
                    break
                yield Frame(i, img)
                i += 1
        finally:
            cap.release()
        if i == 0:
            raise SourceError(f"source {path}: no frame could be decoded")
        # a file that stops mid-stream (truncated, corrupt): fewer frames than its container declares;
        # containers' counts can be a frame or two off, hence the slack
        wanted = declared if max_frames is None else min(declared or 0, max_frames)
        if declared and "://" not in path and i < wanted - max(2, wanted // 100):
            raise SourceError(f"source {path}: stopped after {i} of {declared} frames (truncated or corrupt file)")

    if count and max_frames:
        count = min(count, max_frames)
    shape = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
    return Source(path, gen(), fps, count, shape=shape if all(shape) else None)


def _images(paths: list[Path], name: str, max_frames: int | None) -> Source:
    paths = paths[:max_frames] if max_frames else paths

    def gen():
        for i, p in enumerate(paths):
            img = cv2.imread(str(p))
            if img is None:
                raise SourceError(f"source {p}: not a readable image")
            yield Frame(i, img)

    return Source(name, gen(), None, len(paths))


DECODERS = ("cpu", "nvdec", "nvdec-process", "nvdec-shared")
_NVDEC_PROCESS = {"nvdec": False, "nvdec-process": True, "nvdec-shared": "shared"}


def open_source(spec: str | None, max_frames: int | None = None, decoder: str = "cpu", device=None,
                chunk: int | None = None, **nvdec_kw) -> Source:
    """``spec``: a video file or URL, an image folder, an image file, or None / 'default' for the embedded
    clip. ``decoder``: 'cpu' (OpenCV), 'nvdec' (video files decoded on the GPU ``device`` into NV12;
    images and the default clip are still read on the CPU), 'nvdec-process' (the same decoder in a
    decode process per source, its frames shared with this process: the decoder's Python work leaves this
    process's interpreter to the runner) or 'nvdec-shared' (every such source's decoder in one decode
    process per device: one CUDA context besides the runner's instead of one per source). ``chunk``: NVDEC
    frames per decoder call; ``nvdec_kw``: further options of runners.nvdec.open_nvdec (pool, copy).
    Raises SourceError (naming the source) when it cannot be opened."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder: expected one of {DECODERS}, got {decoder!r}")
    if spec in (None, "", DEFAULT_NAME):
        frames = synthesized_clip()
        frames = frames[:max_frames] if max_frames else frames
        return Source(DEFAULT_NAME, (Frame(i, f) for i, f in enumerate(frames)), 30.0, len(frames),
                      shape=frames[0].shape[:2])
    if "://" in spec:
        if decoder != "cpu":
            from .nvdec import CHUNK, open_nvdec

            return open_nvdec(spec, device, max_frames, chunk or CHUNK, process=_NVDEC_PROCESS[decoder], **nvdec_kw)
        return _video(spec, max_frames)
    p = Path(spec)
    if p.is_dir():
        imgs = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXT)
        if not imgs:
            raise SourceError(f"source {spec}: folder holds no images ({', '.join(sorted(IMAGE_EXT))})")
        return _images(imgs, spec, max_frames)
    if not p.exists():
        raise SourceError(f"source {spec}: no such file or folder")
    if p.suffix.lower() in IMAGE_EXT:
        return _images([p], spec, max_frames)
    if os.path.getsize(p) == 0:
        raise SourceError(f"source {spec}: the file is empty")
    if decoder != "cpu":
        from .nvdec import CHUNK, open_nvdec

        return open_nvdec(str(p), device, max_frames, chunk or CHUNK, process=_NVDEC_PROCESS[decoder], **nvdec_kw)
    return _video(str(p), max_frames)
