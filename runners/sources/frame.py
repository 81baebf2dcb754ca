"""The frame model: a Frame, a Source (an ordered stream of frames, read in parcels), SourceError,
:func:`check_file` (a source's file is there) and :func:`looping` (a Source read again, timed or
re-rated)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message names the source and the reason."""


def check_file(spec: str):
    """Raises SourceError naming ``spec`` when it is a local path (not a URL) that is missing or empty."""
    if "://" in spec:
        return
    p = Path(spec)
    if not p.exists():
        raise SourceError(f"source {spec}: no such file or folder")
    if p.is_file() and p.stat().st_size == 0:
        raise SourceError(f"source {spec}: the file is empty")


@dataclass
class Frame:
    """One frame of a source.

    index: position in its source (0, 1, ...); image: BGR uint8 HxWx3 (host NumPy), or with
    ``pixel_format="nv12"`` an NV12 (H*3/2, W) uint8 CUDA tensor; timestamp: seconds from the source's start
    (None if unknown); file: the image file it was read from (image sources); error: why the frame could
    not be read (it becomes a recorded drop with this reason; ``image`` is None then); ready: a CUDA event
    the consumer stream waits on before reading ``image``; on_release: called once by :meth:`release`;
    restart: the first frame after its source started over (a looping pass, a network reconnect): what
    came before is not its past (a tracker starts again); arrived: when the frame entered the run
    (``time.perf_counter()`` seconds: a camera's read, a paced frame's due time; None: when the runner
    takes it), the start of its latency."""

    index: int
    image: object
    pixel_format: str = "bgr"
    timestamp: float | None = None
    file: str | None = None
    error: str | None = None
    ready: object = None
    on_release: Callable[[], None] | None = None
    checked: tuple | None = None  # (tensor, (h, w)) once checked: by the runner, or by a source for its rows
    restart: bool = False
    pinned: bool = False  # ``image`` is a pinned host row (a decoder's HostRows): one copy call per batch
    arrived: float | None = None

    def release(self):
        """The consumer is finished with the frame's memory (idempotent): a decoder's buffer goes back."""
        fn, self.on_release = self.on_release, None
        if fn is not None:
            fn()


@dataclass
class Source:
    """A named, ordered stream of frames in parcels: lists of consecutive frames (a decoder's chunk, or one
    frame), so a runner handles a chunk at once. ``parcels`` is the producer's iterator; a consumer
    iterates the Source itself (``for parcel in src``) or :meth:`frames`, which another thread may
    :meth:`close` at any time: the producer's generator is never closed while it runs on the reader's
    thread (CPython 3.11 can crash closing a generator that runs in another thread), only flagged
    (``cancel``), and the iteration ends at the next parcel.

    fps: nominal frame rate (None if unknown); count: frames it will yield, when known; shape: (h, w) of its
    frames when known ahead (for warm-up); stats: seconds the source spent per activity (decoder, pool
    wait, ...); cancel: set by :meth:`close` so a source blocked on its consumer returns; on_close: called
    once by :meth:`close` (a decode host's stream stops); counts: what the source counted of itself
    (a network source's reconnects and gaps), reported per stream; camera: its frames come at its own pace
    and a read waits for the next one (a camera), so a runner gives it a reader thread of its own; push:
    the source hands its parcels on from a thread of its own (a decode host's receiver): ``push(feed)``
    starts it, and it gives a :class:`Feed` its parcels, then its end; a runner then reads no parcels."""

    name: str
    parcels: Iterator[list[Frame]]
    fps: float | None = None
    count: int | None = None
    shape: tuple | None = None
    pixel_format: str = "bgr"
    stats: dict = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    on_close: Callable[[], None] | None = None
    counts: dict = field(default_factory=dict)
    camera: bool = False
    push: Callable[["Feed"], None] | None = None
    _busy: threading.Lock = field(default_factory=threading.Lock, repr=False)  # held while ``parcels`` runs

    @classmethod
    def from_frames(cls, name: str, frames, fps: float | None = None, count: int | None = None, **kw) -> "Source":
        """A source of the given Frames (any iterable), one frame per parcel."""
        return cls(name, ([f] for f in frames), fps, count, **kw)

    def __iter__(self) -> Iterator[list[Frame]]:
        """The parcels, until the source ends or is closed."""
        while not self.cancel.is_set():
            with self._busy:
                parcel = next(self.parcels, None)
            if parcel is None:
                return
            yield parcel

    def frames(self) -> Iterator[Frame]:
        """The frames one by one (the parcels flattened)."""
        for parcel in self:
            yield from parcel

    def close(self):
        """Stop the source (a blocked decoder returns; a generator is closed). Idempotent."""
        self.cancel.set()
        fn, self.on_close = self.on_close, None
        if fn is not None:
            fn()
        close = getattr(self.parcels, "close", None)
        if close is not None and self._busy.acquire(blocking=False):  # else the reader closes it after
            try:
                close()
            finally:
                self._busy.release()


class Feed(Protocol):
    """A runner's intake for the sources that push (Source.push), called on the pushing thread: ``hand``
    what arrived together, [(source, parcel)] (many sources' parcels in one call, so they are admitted and
    queued as one; False once the run has stopped), then ``end`` once per source after its last parcel
    (``error``: its message, or None)."""

    def hand(self, parcels: list) -> bool: ...

    def end(self, src: Source, error: str | None) -> None: ...


def looping(open_from, name: str, loop: bool, duration_s: float | None, fps: float | None = None,
            start: int = 0) -> Source:
    """The source ``open_from(start)`` opens, named ``name``: read again from its first frame each time it
    ends (``loop``: ``open_from(0)``; frame indices keep counting, so a pass begun at ``start`` continues
    into the next without a gap), for at most ``duration_s`` seconds from its first read (closed then, even
    while it waits for a frame); ``fps`` replaces its frame rate. With none of the three asked, the source
    as it opens."""
    first = open_from(start)
    if not (loop or duration_s or fps):
        first.name = name
        return first
    state = {"src": first}
    stopped = threading.Event()

    def merge(src):  # a later pass's counts add to the stream's (the first pass's dict)
        if src is not first:
            for k, v in src.counts.items():
                first.counts[k] = first.counts.get(k, 0) + v

    def parcels():
        deadline = None if duration_s is None else time.perf_counter() + duration_s
        timer = None
        if deadline is not None:  # a source that brings no frame (a camera reconnecting) still ends on time
            timer = threading.Timer(duration_s, lambda: state["src"].close())
            timer.daemon = True
            timer.start()
        try:
            yield from passes(deadline)
        finally:
            if timer is not None:
                timer.cancel()

    def passes(deadline):
        i, src = 0, first
        while True:
            n = 0
            for parcel in src:
                if deadline is not None and time.perf_counter() >= deadline:
                    for f in parcel:
                        f.release()
                    src.close()
                    merge(src)
                    return
                if i and n == 0:  # the first frame of a pass after the first
                    parcel[0].restart = True
                for f in parcel:
                    f.index = i + f.index
                    if f.timestamp is not None and src.fps:
                        f.timestamp = f.index / src.fps
                n = max(n, parcel[-1].index - i + 1)
                yield parcel
            i += n
            src.close()
            merge(src)
            if not loop or n == 0 or stopped.is_set() or (deadline is not None and time.perf_counter() >= deadline):
                return
            src = state["src"] = open_from(0)

    def close():
        stopped.set()
        state["src"].close()

    return Source(name, parcels(), fps or first.fps, None if loop or duration_s else first.count, first.shape,
                  first.pixel_format, first.stats, stopped, close, first.counts, first.camera)
