"""The events a run reports, as a declared protocol, and the fan-out of one run's events per stream.

A runner reports each frame's arrival, its result or its drop (with the reason), each batch's GPU time per
span and its frames' waits before the GPU, and where its threads spent their time. Implemented by the
PerformanceMonitor (the figures), :class:`StreamFanout` (one monitor per stream beside the run's total)
and the multi-GPU worker's sender (events batched to the parent process). A key is (stream name, frame
index).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Key = tuple  # (stream name, frame index)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM: the run drained (no new frames read, frames already in finished) and stopped."""


class RunnerError(RuntimeError):
    """A worker failed; ``stage`` is 'read', 'gpu' or 'result'; ``__cause__`` is the original error."""

    def __init__(self, stage: str, err: BaseException):
        super().__init__(f"{stage} stage failed: {type(err).__name__}: {err}")
        self.stage = stage


@runtime_checkable
class RunEvents(Protocol):
    def start(self) -> None:
        """The run's clock starts (warm-up is over)."""

    def arrived(self, keys: list, t: float | list | None = None) -> None:
        """Frames entered the run (``t``: their arrival time in perf_counter seconds, one for all or a list
        with one per key; default now)."""

    def delivered(self, results: list) -> None:
        """Results of frames: [(key, number of detections)]."""

    def dropped(self, key: Key, reason: str) -> None:
        """A frame that arrived ends without a result, for ``reason``."""

    def gpu_spans(self, ms: dict) -> None:
        """One batch's GPU milliseconds per timed span (PendingBatch.gpu_ms)."""

    def waits(self, intake: list, queue: list, batch: list, ran: int) -> None:
        """One batch's frames (those run and those dropped as late), where each one's latency went before the
        GPU, in seconds: from its arrival until the run queued it (``intake``: its reader or decode host and
        the hand-off), in the queue until the batcher took it (``queue``), and there until its batch left
        (``batch``); ``ran``: how many of them the batch ran (the others were late)."""

    def thread_seconds(self, seconds: dict) -> None:
        """Seconds the runner's threads spent per activity."""

    def streams_in(self) -> None:
        """Every stream of the run is in: at its start, or when the last of a job's streams that join as they
        open (concurrent.Arrivals) joined. From here until a stream ends, every stream runs."""

    def stream_ended(self, name: str) -> None:
        """Stream ``name`` handed on its last frame (it ended or failed)."""

    def end_clock(self) -> None:
        """The run's last result is in: the clock stops now."""


class BatchSink:
    """A result sink that takes each delivered batch at once (its FrameResults, each stream's in frame
    order): :func:`~.strategies.deliver` calls ``batch(results)``; any other sink is called per result."""

    def batch(self, results: list) -> None:
        raise NotImplementedError

    def __call__(self, r) -> None:
        self.batch([r])


class StreamFanout:
    """RunEvents to the run's total monitor and to one monitor per stream (made on first sight)."""

    def __init__(self, total, make_monitor):
        self.total = total
        self.streams: dict = {}
        self._make = make_monitor
        self._lock = threading.Lock()

    def forget(self, names):
        """Drop the monitors of finished streams (their frames are in the total)."""
        with self._lock:
            for n in names:
                self.streams.pop(n, None)

    def _mon(self, name: str):
        with self._lock:
            m = self.streams.get(name)
            if m is None:
                m = self.streams[name] = self._make()
                if self.total.t0 is not None:
                    m.start()
            return m

    def start(self):
        self.total.start()
        for m in list(self.streams.values()):
            m.start()

    def arrived(self, keys, t=None):
        if t is None:
            t = time.perf_counter()
        times = t if isinstance(t, list) else [t] * len(keys)
        for name, group in _by_stream(list(zip(keys, times)), lambda kt: kt[0]).items():
            self._mon(name).arrived([k for k, _ in group], [x for _, x in group])
        self.total.arrived(keys, t)

    def delivered(self, results):
        for name, group in _by_stream(results, lambda r: r[0]).items():
            self._mon(name).delivered(group)
        self.total.delivered(results)

    def dropped(self, key, reason):
        self._mon(key[0]).dropped(key, reason)
        self.total.dropped(key, reason)

    def gpu_spans(self, ms):
        self.total.gpu_spans(ms)

    def waits(self, intake, queue, batch, ran):
        self.total.waits(intake, queue, batch, ran)

    def thread_seconds(self, seconds):
        self.total.thread_seconds(seconds)

    def streams_in(self):
        self.total.streams_in()

    def stream_ended(self, name):
        self.total.stream_ended(name)

    def end_clock(self):
        self.total.end_clock()
        for m in list(self.streams.values()):
            m.end_clock()


def _by_stream(items: list, key_of) -> dict:
    """``items`` grouped by the stream name of their key (``key_of(item)[0]``), in first-seen order."""
    groups: dict = {}
    for it in items:
        groups.setdefault(key_of(it)[0], []).append(it)
    return groups


@dataclass
class FrameResult:
    """What ``on_result`` receives for each frame, per stream in frame order.

    stream: the source's name; index: the frame's position in it; poses: its PoseResult; size: the image's
    (h, w); timestamp: seconds from the source's start (None if unknown); file: the image file (image
    sources); image: the BGR frame (host sources; None for NV12 GPU frames and in the multi-GPU parent),
    valid until ``on_result`` returns: a video's frames live in rows its decoder reuses, so copy it to keep
    it; restart: the first frame after its source started over (Frame.restart)."""

    stream: str
    index: int
    poses: object
    size: tuple
    timestamp: float | None = None
    file: str | None = None
    image: object = None
    restart: bool = False
