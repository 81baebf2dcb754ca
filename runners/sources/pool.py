"""Chunked decoders and their frame pools.

A :class:`ChunkStream` is a decoder that answers in chunks: ``fetch(i)`` decodes frames ``i, i+1, ...`` into
free rows of its ``buffers`` tensor, which it takes from its :class:`FramePool`; a row goes back to the pool
once every frame of its chunk is released by the runner (:class:`Release`); :func:`chunk_source` gives its
frames as a Source. ``simulated_stream`` is a decoder stand-in with the same protocol, for the CPU tests of
the decode hosts (``simulated_in_host``). :class:`HostRows` is the pool of an OpenCV decoder's host frames.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .frame import Frame, Source, SourceError, looping

POLL = 0.05  # seconds: how often a waiting pool looks at its cancel flag


class FramePool:
    """Rows ``0..size-1`` of a source's frame buffer tensor, handed out to the decoder and back as the
    consumer releases them. Thread-safe: the decode thread takes, the runner's threads give back."""

    def __init__(self, size: int, cancel: threading.Event):
        self.size, self.cancel = size, cancel
        self.free: list[int] = list(range(size))[::-1]
        self.cv = threading.Condition()

    def take(self, n: int) -> list[int]:
        """``n`` rows (fewer only when cancelled); waits for released ones while none is free."""
        got: list[int] = []
        with self.cv:
            while len(got) < n:
                if self.free:
                    k = min(len(self.free), n - len(got))
                    got += self.free[-k:]
                    del self.free[-k:]
                elif self.cancel.is_set():
                    break
                else:
                    self.cv.wait(POLL)
        return got

    def release(self, rows: list[int]):
        with self.cv:
            self.free += rows
            self.cv.notify_all()

    def all_free(self) -> bool:
        with self.cv:
            return len(self.free) == self.size


class HostRows:
    """Reused host buffers for one source's frames of one shape (``shape``, uint8), in pinned memory on a CUDA
    run: the decoder writes each frame where the pipeline's copy engine reads it, so a host frame is never
    copied on the CPU again (results/DECISIONS.md). ``memory``: a (size, *shape) uint8 tensor to hold the
    rows (a decode host's shared memory) instead of new ones. :meth:`take` never waits: with every
    row in use (a consumer behind) or a frame of another shape (a stream that changed resolution) the
    caller reads into a new array instead, so a reader that serves other sources is never held up by this
    one; a reader that should wait instead calls :meth:`wait_free` first."""

    def __init__(self, shape: tuple, size: int = 4, pinned: bool = False, memory: torch.Tensor | None = None):
        if size < 1:
            raise ValueError(f"size: expected rows >= 1, got {size}")
        self.shape, self.pinned = tuple(shape), pinned
        if memory is None:
            memory = torch.empty((size, *self.shape), dtype=torch.uint8, pin_memory=pinned)
        elif tuple(memory.shape) != (size, *self.shape) or memory.dtype != torch.uint8:
            raise ValueError(f"memory: expected a uint8 tensor of shape {(size, *self.shape)}, "
                             f"got {memory.dtype} {tuple(memory.shape)}")
        self.memory = memory
        self.rows = list(memory.numpy())
        self.free = list(range(size))
        self.cv = threading.Condition()

    def take(self) -> tuple:
        """(a free row, its release: call once when the frame's memory is no longer read), or (None, None)."""
        with self.cv:
            if not self.free:
                return None, None
            r = self.free.pop()
        return self.rows[r], lambda: self._release(r)

    def wait_free(self, cancel: threading.Event) -> bool:
        """Waits until a row is free (True) or ``cancel`` is set (False)."""
        with self.cv:
            while not self.free:
                if cancel.is_set():
                    return False
                self.cv.wait(POLL)
            return True

    def index(self, image) -> int | None:
        """The row ``image`` (a NumPy array) is, or None when it is not one of these rows."""
        off = image.ctypes.data - self.memory.data_ptr()
        size = self.rows[0].nbytes
        if 0 <= off < size * len(self.rows) and off % size == 0 and image.shape == self.shape:
            return off // size
        return None

    def _release(self, r: int):
        with self.cv:
            self.free.append(r)
            self.cv.notify()


class Release:
    """Gives ``rows`` back (``release(rows)``) once it has been called ``len(rows)`` times: one per frame."""

    __slots__ = ("release", "left", "lock", "rows")

    def __init__(self, release: Callable[[list[int]], object], rows: list[int]):
        self.release, self.rows, self.left = release, rows, len(rows)
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.left -= 1
            last = self.left == 0
        if last:
            self.release(self.rows)


@dataclass
class ChunkStream:
    """A chunked decoder: ``fetch(i)`` decodes the stream's frames ``i, i+1, ...`` (as many as it gives at once)
    into rows it takes from ``pool`` and returns (rows, a CUDA event the reader waits on before reading, or
    None), or (None, None) at the end or when cancelled. ``want`` frames are expected; fewer (not cancelled)
    is a truncated stream, an error naming ``name``. ``start``: the video's index of the stream's frame 0
    (a segment of a video keeps the video's frame indices)."""

    name: str
    buffers: torch.Tensor  # (pool size, *frame shape)
    fetch: Callable
    want: int
    pool: FramePool
    cancel: threading.Event
    shape: tuple  # (height, width) of the images
    pixel_format: str = "nv12"
    fps: float | None = None
    declared: int | None = None  # the container's frame count
    stats: dict = field(default_factory=dict)
    on_close: Callable | None = None
    start: int = 0

    def chunks(self):
        """Yields (first frame's video index, rows, ready event or None) until ``want`` frames or cancel."""
        i = 0
        while i < self.want and not self.cancel.is_set():
            rows, ready = self.fetch(i)
            if not rows:
                break
            yield self.start + i, rows, ready
            i += len(rows)
        if i < self.want and not self.cancel.is_set():
            raise SourceError(f"source {self.name}: stopped after {i} of {self.declared or self.want} frames "
                              "(truncated or corrupt file)")


def chunk_source(cs: ChunkStream) -> Source:
    """The frames of chunked decoder ``cs`` as a Source: each chunk a parcel, each frame a row of
    ``cs.buffers`` (read once its chunk's event is complete), the rows back to ``cs.pool`` once every frame
    of the chunk is released."""

    def parcels():
        for first, rows, ready in cs.chunks():
            if ready is not None:
                ready.synchronize()
            release = Release(cs.pool.release, rows)
            yield [Frame(first + k, cs.buffers[r], cs.pixel_format, (first + k) / cs.fps if cs.fps else None,
                         on_release=release) for k, r in enumerate(rows)]

    return Source(cs.name, parcels(), cs.fps, cs.want, cs.shape, cs.pixel_format, cs.stats, cs.cancel, cs.on_close)


def simulated_stream(name: str, frames: int, fps: float, chunk: int, rows, shape=(432, 768),
                     truncate_at: int | None = None, mark: bool = False) -> ChunkStream:
    """A decoder stand-in: ``frames`` NV12 frames of ``shape`` into ``rows`` (a decode host's ChunkRows),
    ``chunk`` per call at ``fps`` frames/s with the interpreter lock released (as NVDEC's calls release it);
    ``mark``: each frame's first luma pixel holds its index (mod 256). ``truncate_at``: the stream breaks
    off there (a truncated file)."""
    h, w = shape
    cancel = threading.Event()
    buffers, fp = rows.buffers, rows.pool
    stats = {"video_decode.decoder": 0.0, "video_decode.pool_wait": 0.0}
    end = frames if truncate_at is None else truncate_at

    def fetch(i: int):
        k = min(chunk, end - i)
        if k <= 0:
            return None, None
        t0 = time.perf_counter()
        time.sleep(k / fps)
        t1 = time.perf_counter()
        got = fp.take(k)
        stats["video_decode.decoder"] += t1 - t0
        stats["video_decode.pool_wait"] += time.perf_counter() - t1
        if len(got) < k:  # cancelled
            return None, None
        if mark:
            for j, r in enumerate(got):
                buffers[r, 0, 0] = (i + j) % 256
        return got, None

    return ChunkStream(name, buffers, fetch, frames, fp, cancel, (h, w), "nv12", None, frames, stats)


class _LoggedTeardown:
    """A decoder stand-in's session: its teardown appends the time (``time.time()``) to the file ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __del__(self):
        with open(self.path, "a") as f:
            f.write(f"{time.time()}\n")


def simulated_in_host(rows, name: str, frames: int, fps: float, chunk: int, shape=(432, 768), pool: int | None = None,
                      truncate_at: int | None = None, mark: bool = False, loop: bool = False,
                      duration_s: float | None = None, rate: float | None = None,
                      teardown_log: str | None = None, open_log: str | None = None, open_s: float = 0.0) -> Source:
    """The decoder stand-in as a decode host's opener (decodehost.DecodeHosts.open): its frames in the
    stream's chunked rows, as NVDEC's are; looping, timed or given a frame rate ``rate`` (what a paced
    stream is released at) as frame.looping. ``teardown_log``: the host keeps a _LoggedTeardown as the
    stream's decoder (``rows.keep``, as NVDEC's), which logs when it is torn down. ``open_s``: the open
    takes this long; ``open_log``: a line "pid start end" (time.time()) appended per open."""
    t0 = time.time()
    time.sleep(open_s)
    if open_log:
        with open(open_log, "a") as f:
            f.write(f"{os.getpid()} {t0} {time.time()}\n")
    h, w = shape
    size = max(pool or 2 * chunk, chunk)
    if teardown_log:
        rows.keep(_LoggedTeardown(teardown_log))
    cr = rows.chunked(size, (h * 3 // 2, w))
    return looping(lambda first: chunk_source(simulated_stream(name, frames, fps, chunk, cr, shape, truncate_at, mark)),
                   name, loop, duration_s, rate)
