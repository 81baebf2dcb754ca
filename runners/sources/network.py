"""Network sources: a camera or live stream at a URL (RTSP, HTTP, UDP, TCP, SRT: whatever OpenCV's FFmpeg
backend opens), read the way a camera is watched.

Frames arrive at the camera's pace. A read that brings nothing for ``stall_s``, or the end of a stream that
declares no length, is a disconnect: the source reopens the URL with backoff (BACKOFF_S doubling up to
BACKOFF_MAX_S) and fails with a SourceError naming the URL once ``reconnect_s`` have passed without a frame.
Delivered frames keep consecutive indices over reconnects; the gap is counted in the source's ``counts``
('network.reconnects', 'network.disconnected_s', 'network.frames_missed' from the stream's frame rate); the
first frame after a reconnect has ``restart`` set. A camera the run holds back (no row free in its decode host)
is not read meanwhile: its frames wait in its socket, which is never a stall, and the time is counted apart
('network.blocked_s', decodehost.BLOCKED). A change of resolution is counted ('network.resolution_changes') and
passed on: each frame carries its own shape. A stream that declares its length (a video file served over HTTP)
ends at its end. Timestamps are seconds since the source opened, on the host clock, gaps included. Its frame
rate is FFmpeg's estimate at the open, from its first frames read at the camera's pace (OpenCV opens a
process's captures one at a time: a decode host's cameras open ~0.67 s apart at 30 fr/s); opens without that
read put 200 cameras on a served run at once, which then dropped frames late for tens of seconds
(results/DECISIONS.md). A camera decodes on one FFmpeg thread: frame threads would hold each frame back by one
frame time per thread (OpenCV's default is a thread per core), latency a live stream cannot spare, and many
cameras share the cores anyway. From its open to its first read (the run's start: engine, warm-up, the other
sources' opens) a camera's frames are read and discarded on a thread of its own, counted as
'network.frames_before_start': a camera's past is not the run's, and a backlog of seconds per camera, handed to
the run in one burst, would hold every stream's latency up.
"""
from __future__ import annotations

import threading
import time

import cv2

from ...kernels._common import nvtx_range
from ..config import RECONNECT_S
from .frame import Frame, Source, SourceError
from .opencv import NEW_ARRAYS, host_rows, read_frame

STALL_S = 3.0  # a read with no frame for this long is a disconnect (OpenCV's read timeout)
BACKOFF_S, BACKOFF_MAX_S = 0.25, 4.0  # the first wait between attempts to reopen, and the longest
BEFORE_START = "network.frames_before_start"  # a camera's frames read and discarded before its first read


def is_network(spec: str | None) -> bool:
    """Whether ``spec`` is a URL a network source reads (not a local path or a file:// URL)."""
    return bool(spec) and "://" in spec and not spec.startswith("file://")


def _open_capture(url: str, stall_s: float):
    ms = int(stall_s * 1000)
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms,
                                                 cv2.CAP_PROP_N_THREADS, 1])
    if cap.isOpened():
        return cap
    cap.release()
    return None


def _connect(url: str, stall_s: float, give_up_at: float, cancel) -> tuple:
    """(capture, attempts) once the URL opens; (None, attempts) when ``give_up_at`` passed or cancelled."""
    wait, attempts = BACKOFF_S, 0
    while not cancel.is_set():
        attempts += 1
        cap = _open_capture(url, stall_s)
        if cap is not None:
            return cap, attempts
        left = give_up_at - time.monotonic()
        if left <= 0:
            break
        cancel.wait(min(wait, left))
        wait = min(2 * wait, BACKOFF_MAX_S)
    return None, attempts


def open_network(url: str, max_frames: int | None = None, *, reconnect_s: float = RECONNECT_S,
                 stall_s: float = STALL_S, pinned: bool = False, row_pool=None) -> Source:
    """The camera at ``url`` (see the module docstring). Waits up to ``reconnect_s`` for the URL to
    open; raises SourceError naming it when it does not. ``pinned``: frames are decoded into reused pinned
    rows (a CUDA run; frames of another resolution into new arrays); ``row_pool(shape)``: the HostRows to
    decode into instead (a decode host)."""
    if not reconnect_s > 0:
        raise ValueError(f"reconnect_s: expected seconds > 0, got {reconnect_s}")
    if not stall_s > 0:
        raise ValueError(f"stall_s: expected seconds > 0, got {stall_s}")
    src = Source(url, iter(()))
    cap, attempts = _connect(url, stall_s, time.monotonic() + reconnect_s, src.cancel)
    if cap is None:
        raise SourceError(f"source {url}: could not open it in {reconnect_s:g} s ({attempts} attempts: "
                          "unreachable, refused, not found, or not a stream OpenCV's FFmpeg can read)")
    fps = cap.get(cv2.CAP_PROP_FPS) or None
    fps = fps if fps and 0 < fps < 1000 else None
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finite = declared > 0
    shape = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
    counts = src.counts
    counts.update({"network.reconnects": 0, "network.disconnected_s": 0.0, "network.frames_missed": 0,
                  "network.resolution_changes": 0, BEFORE_START: 0})
    t_open = time.monotonic()
    rows = host_rows(shape, pinned, row_pool)
    if rows is not None:
        counts[NEW_ARRAYS] = 0

    preroll = _Preroll(cap, src.cancel, counts)

    def parcels():
        nonlocal cap
        i, last_shape, restart = 0, shape if all(shape) else None, False
        preroll.hand_over()
        try:
            while max_frames is None or i < max_frames:
                if src.cancel.is_set():
                    return
                with nvtx_range("video_decode"):
                    ok, img, release = read_frame(cap, rows, counts)
                if ok and img is not None:
                    if last_shape is not None and img.shape[:2] != last_shape:
                        counts["network.resolution_changes"] += 1
                    last_shape = img.shape[:2]
                    yield [Frame(i, img, timestamp=time.monotonic() - t_open, restart=restart, on_release=release,
                                 pinned=release is not None and rows.pinned)]
                    i, restart = i + 1, False
                    continue
                if finite or src.cancel.is_set():  # the end of a stream of known length, or closed
                    return
                cap.release()
                t_lost = time.monotonic()
                cap, _ = _connect(url, stall_s, t_lost + reconnect_s, src.cancel)
                if cap is None:
                    if src.cancel.is_set():
                        return
                    raise SourceError(f"source {url}: disconnected after frame {i - 1} and not back in "
                                      f"{reconnect_s:g} s ({counts['network.reconnects']} reconnects before)")
                gap = time.monotonic() - t_lost
                restart = True
                counts["network.reconnects"] += 1
                counts["network.disconnected_s"] += gap
                counts["network.frames_missed"] += round(gap * fps) if fps else 0
        finally:
            if cap is not None:
                cap.release()

    src.parcels = parcels()
    src.fps, src.shape, src.camera = fps, shape if all(shape) else None, True
    src.count = min(declared, max_frames) if finite and max_frames else (declared if finite else max_frames)
    return src


class _Preroll:
    """Reads and discards a camera's frames (``cap.grab``: no colour conversion) from its open until
    :meth:`hand_over`, counting them in ``counts[BEFORE_START]``; a grab that fails ends it (the first read
    then reconnects). A source closed before its first read has its capture released here."""

    def __init__(self, cap, cancel: threading.Event, counts: dict):
        self.cap, self.cancel, self.counts = cap, cancel, counts
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="posefuse-preroll", daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not (self.stop.is_set() or self.cancel.is_set()) and self.cap.grab():
                self.counts[BEFORE_START] += 1
        finally:
            if self.cancel.is_set() and not self.stop.is_set():  # closed before its first read
                self.cap.release()  # (a second release, by the reader, is harmless)

    def hand_over(self):
        """The source's first read: the grabbing stops (at most one read's wait) and the capture is the
        reader's."""
        self.stop.set()
        self.thread.join()
