"""OpenCV sources: video files and URLs (OpenCV's FFmpeg backend), image folders and single images.

Frames are BGR uint8 HxWx3 NumPy arrays in host memory."""
from __future__ import annotations

from pathlib import Path

import cv2

from ...kernels._common import nvtx_range
from .frame import Frame, Source, SourceError
from .pool import HostRows

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


NEW_ARRAYS = "host_rows.new_arrays"  # a source's count of frames decoded outside its rows (none free, or another shape)


def read_frame(cap, rows: HostRows | None, counts: dict) -> tuple:
    """``cap.read()`` into a free row of ``rows`` where there is one: (ok, image, release), ``release`` the
    row's (None for a new array: no row free, or a frame of another shape, which OpenCV allocates anew; a
    frame read so with ``rows`` is counted in ``counts[NEW_ARRAYS]``)."""
    buf, release = rows.take() if rows is not None else (None, None)
    ok, img = cap.read() if buf is None else cap.read(buf)
    if release is not None and (not ok or img is not buf):
        release()
        release = None
    if ok and rows is not None and release is None:
        counts[NEW_ARRAYS] += 1
    return ok, img, release


def host_rows(shape: tuple, pinned: bool, row_pool=None) -> HostRows | None:
    """The row pool of a source of BGR frames of ``shape`` (h, w): ``row_pool(shape)``'s when given (a
    decode host's shared rows), else pinned rows when ``pinned`` (a CUDA run), else None."""
    if not all(shape):
        return None
    if row_pool is not None:
        return row_pool((*shape, 3))
    return HostRows((*shape, 3), pinned=True) if pinned else None


def open_video(path: str, max_frames: int | None, start: int = 0, threads: int = 0, pinned: bool = False,
               row_pool=None) -> Source:
    """A video file or URL, from frame ``start`` (OpenCV seeks to the keyframe before it and decodes up to
    it; frame indices are the video's own). ``threads``: FFmpeg decode threads (0: OpenCV's default, one
    per core). ``pinned``: frames are decoded into reused pinned rows (:class:`~.pool.HostRows`; a CUDA
    run); ``row_pool(shape)``: the HostRows to decode into instead (a decode host). A file that
    stops short of the frame count its container declares raises SourceError after its last good frame
    (truncated or corrupt)."""
    if threads < 0:
        raise ValueError(f"threads: expected decode threads >= 0, got {threads}")
    cap = cv2.VideoCapture(path, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, threads] if threads else [])
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"source {path}: OpenCV could not open it (missing codec, not a video, or unreachable)")
    fps = cap.get(cv2.CAP_PROP_FPS) or None
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    shape = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
    if start and not cap.set(cv2.CAP_PROP_POS_FRAMES, start):
        cap.release()
        raise SourceError(f"source {path}: OpenCV could not seek to frame {start}")

    rows = host_rows(shape, pinned, row_pool)
    counts = {NEW_ARRAYS: 0} if rows is not None else {}

    def parcels():
        i = start
        try:
            while max_frames is None or i - start < max_frames:
                with nvtx_range("video_decode"):
                    ok, img, release = read_frame(cap, rows, counts)
                if not ok:
                    break
                ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                yield [Frame(i, img, timestamp=ms / 1e3 if ms or not fps else i / fps, on_release=release,
                             pinned=release is not None and rows.pinned)]
                i += 1
        finally:
            cap.release()
        if i == start:
            raise SourceError(f"source {path}: no frame could be decoded" + (f" from frame {start}" if start else ""))
        # containers' counts can be a frame or two off, hence the slack
        wanted = declared if max_frames is None else min(declared or 0, start + max_frames)
        if declared and "://" not in path and i < wanted - max(2, wanted // 100):
            raise SourceError(f"source {path}: stopped after {i} of {declared} frames (truncated or corrupt file)")

    left = declared - start if declared else None
    count = min(left, max_frames) if left and max_frames else left
    return Source(path, parcels(), fps, count, shape=shape if all(shape) else None, counts=counts)


def image_files(folder: Path) -> list[Path]:
    """The images in ``folder`` and its subfolders, in sorted path order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXT)


def open_images(paths: list[Path], name: str, max_frames: int | None) -> Source:
    """Images, one frame each, named by file; an unreadable file is a frame with an error (a recorded drop
    naming the file), and the rest are read."""
    paths = paths[:max_frames] if max_frames else paths

    def parcels():
        for i, p in enumerate(paths):
            img = cv2.imread(str(p))
            if img is None:
                yield [Frame(i, None, file=str(p), error=f"{name}[{i}]: {p} is not a readable image")]
            else:
                yield [Frame(i, img, file=str(p))]

    return Source(name, parcels(), None, len(paths))
