"""The sources read on the CPU: one spec (the embedded default clip, an image folder or file, a video file, a
camera URL) opened with OpenCV. :func:`~posefuse.runners.sources.open_source` and a decode host's opener
(``decodehost.open_cpu_in_host``) both open through :func:`open_cpu`."""
from __future__ import annotations

from pathlib import Path

from ..config import RECONNECT_S
from .frame import Source, SourceError, check_file
from .network import is_network, open_network
from .opencv import IMAGE_EXT, image_files, open_images, open_video
from .synthetic import DEFAULT_NAME, default_source


def open_cpu(spec: str | None, max_frames: int | None = None, *, start: int = 0, threads: int = 0,
             pinned: bool = False, row_pool=None, reconnect_s: float = RECONNECT_S) -> Source:
    """The Source of ``spec`` read on the CPU (see open_source for the arguments); raises SourceError naming
    the source when it cannot be opened."""
    if start and (spec in (None, "", DEFAULT_NAME) or is_network(spec) or Path(spec).is_dir()
                  or Path(spec).suffix.lower() in IMAGE_EXT):
        raise SourceError(f"source {spec}: a start frame is for video files (got start {start})")
    if spec in (None, "", DEFAULT_NAME):
        return default_source(max_frames)
    check_file(spec)
    if "://" not in spec:
        p = Path(spec)
        if p.is_dir():
            imgs = image_files(p)
            if not imgs:
                raise SourceError(f"source {spec}: folder holds no images ({', '.join(sorted(IMAGE_EXT))})")
            return open_images(imgs, spec, max_frames)
        if p.suffix.lower() in IMAGE_EXT:
            return open_images([p], spec, max_frames)
    if is_network(spec):
        return open_network(spec, max_frames, reconnect_s=reconnect_s, pinned=pinned, row_pool=row_pool)
    return open_video(spec, max_frames, start, threads, pinned, row_pool)
