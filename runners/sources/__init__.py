"""Sources: the one factory :func:`open_source` turns a spec into a :class:`Source`.

* ``frame``: the frame model (Frame, Source, SourceError, looping);
* ``cpu``: one spec opened on the CPU (the default clip, images, videos, cameras);
* ``opencv``: video files and URLs, image folders (subfolders included) and single images, on the CPU;
* ``synthetic``: the embedded default clip (no data needed);
* ``network``: cameras and live streams at a URL, reconnecting;
* ``pool``: chunked decoders and their frame pools, the decoder stand-in for tests;
* ``nvdec``: the NVDEC decoder (PyNvVideoCodec) into GPU memory as NV12;
* ``decodehost``: decode hosts, spawned processes each reading many streams (NVDEC into rows shared by
  CUDA IPC, OpenCV into shared rows pinned here).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..config import DECODERS, video_header
from .frame import Frame, Source, SourceError, looping
from .cpu import open_cpu
from .network import RECONNECT_S, is_network
from .opencv import IMAGE_EXT
from .synthetic import DEFAULT_NAME, synthesized_clip


def open_source(spec: str | None, max_frames: int | None = None, *, decoder: str = "cpu", device=None,
                chunk: int | None = None, decode_hosts=None, reconnect_s: float = RECONNECT_S,
                start: int = 0, threads: int = 0, pinned: bool = False, row_pool=None) -> Source:
    """The Source for ``spec``: a video file or URL, an image folder (read with its subfolders), an image
    file, or None / 'default' for the embedded clip.

    decoder: 'cpu' (OpenCV) or 'nvdec' (video files decoded on the GPU ``device`` into NV12 frames, in a
    decode host; images and the default clip are still read on the CPU). chunk: NVDEC frames handed
    on at once (default nvdec.CHUNK). decode_hosts: the :class:`~.decodehost.DecodeHosts` that serve
    NVDEC streams (default: this process's, one GPU host for all its streams per device). A URL read
    with decoder 'cpu' is a camera (a network source (network.py: reconnects for up to ``reconnect_s``).
    start: a video file's first frame (frame indices stay the video's own; a segment of an archive job).
    threads: FFmpeg decode threads of a video file read with OpenCV (0: one per core; see
    :func:`decode_threads`). pinned: a video or URL read with OpenCV decodes into reused pinned rows (a
    CUDA run: the pipeline copies them to the device without a CPU copy); row_pool(shape): the HostRows a
    video or URL read with OpenCV decodes into instead (a decode host). Raises SourceError naming the
    source when it cannot be opened."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder: expected one of {DECODERS}, got {decoder!r}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames: expected >= 1, got {max_frames}")
    if start < 0:
        raise ValueError(f"start: expected a frame index >= 0, got {start}")
    if decoder == "nvdec" and host_decodable(spec):
        from .nvdec import open_nvdec

        return open_nvdec(spec, device, max_frames, chunk, decode_hosts, start=start)
    return open_cpu(spec, max_frames, start=start, threads=threads, pinned=pinned, row_pool=row_pool,
                    reconnect_s=reconnect_s)


def host_decodable(spec: str | None) -> bool:
    """Whether ``spec`` is a video file or URL that OpenCV decodes (not the default clip, a folder or an image)."""
    if spec in (None, "", DEFAULT_NAME):
        return False
    if "://" in spec:
        return True
    p = Path(spec)
    return not p.is_dir() and p.suffix.lower() not in IMAGE_EXT


def nvdec_file(spec: str | None) -> bool:
    """Whether ``spec`` is a video file (not a URL: cameras keep OpenCV's reconnect handling), the sources a
    run reads with NVDEC in a decode host when its decoder is 'nvdec'."""
    return host_decodable(spec) and not is_network(spec)


def decode_threads(cpu_streams: int) -> int:
    """FFmpeg threads for each of ``cpu_streams`` videos decoded with OpenCV at once: the cores shared out,
    at least one each (OpenCV's default, a thread per core for every video, puts cores x streams threads
    on the cores; results/DECISIONS.md)."""
    return max(1, (os.cpu_count() or 1) // max(1, cpu_streams))


def video_frames(spec: str | None) -> int | None:
    """The frame count a video file's container declares (config.video_header); None for other sources or
    where it does not say."""
    head = video_header(spec) if host_decodable(spec) else None
    return head[0] if head and head[0] else None


def announce(spec: str | None, decoder: str) -> tuple | None:
    """((H, W), pixel format) of the frames an NVDEC source of ``spec`` will give, read from the file's
    header (OpenCV, milliseconds) before its decode host has opened it, so a run can capture its graphs
    meanwhile; None for other sources (they open at once) or when the header does not say."""
    if decoder != "nvdec" or not nvdec_file(spec):
        return None
    head = video_header(spec)
    return (head[1:], "nv12") if head else None


__all__ = ["announce", "decode_threads", "host_decodable", "is_network", "looping", "nvdec_file", "video_frames", "Frame", "Source", "SourceError", "open_source", "synthesized_clip", "DECODERS", "DEFAULT_NAME"]
