"""Threaded runners over many sources at once: decode threads -> batcher/GPU thread -> result thread,
joined by bounded queues (backpressure: a slow stage stops the ones before it; memory stays bounded).

* ``pipelined``: fixed batches (a batch leaves when full, or when the sources end);
* ``dynamic``: a dynamic batcher across all streams: a batch leaves when it holds ``batch`` frames or its
  oldest frame has waited ``max_wait_ms``; latency is measured per frame from arrival to result.

Every source has its own decode thread; results are delivered per stream in frame order. A source that
fails is reported (``failed``) and the others go on. An exception in a worker stops the run: the caller
gets :class:`RunnerError` naming the stage, with the original exception as its cause, within a few
seconds; every wait is bounded, so nothing hangs and no thread is left behind.
``realtime=True`` releases each source's frames at its own frame rate, as a camera would.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from .monitor import PerformanceMonitor
from .sources import Source, SourceError
from .strategies import frame_problem, results_of, submit_split

POLL = 0.05  # seconds: how often a blocked worker looks at the stop flag
_END = object()


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM: the run drained (no new frames read, frames already in finished) and stopped."""


class RunnerError(RuntimeError):
    """A worker failed; ``stage`` is 'decode', 'gpu' or 'result'; ``__cause__`` is the original error."""

    def __init__(self, stage: str, err: BaseException):
        super().__init__(f"{stage} stage failed: {type(err).__name__}: {err}")
        self.stage = stage


@dataclass
class RunState:
    stop: threading.Event = field(default_factory=threading.Event)  # stop now (a worker failed)
    draining: threading.Event = field(default_factory=threading.Event)  # read no more frames, finish the rest
    error: tuple | None = None  # (stage, exception), the first one
    failed: dict = field(default_factory=dict)  # source name -> message
    inflight: set = field(default_factory=set)  # (stream, index) arrived and not yet delivered or dropped
    lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self, key):
        with self.lock:
            self.inflight.add(key)

    def leave(self, key):
        with self.lock:
            self.inflight.discard(key)

    def fail(self, stage: str, err: BaseException):
        with self.lock:
            if self.error is None:
                self.error = (stage, err)
        self.stop.set()


def _put(q: queue.Queue, item, state: RunState) -> bool:
    """Blocking put that gives up when the run stops (bounded queues must never hang a stopping run)."""
    while not state.stop.is_set():
        try:
            q.put(item, timeout=POLL)
            return True
        except queue.Full:
            continue
    return False


def _decode(src: Source, frames_q: queue.Queue, monitor: PerformanceMonitor, state: RunState, realtime: bool):
    t_start = time.perf_counter()
    try:
        for f in src.frames:
            if realtime and src.fps:  # wait for the frame's time, still answering a stop
                while not (state.stop.is_set() or state.draining.is_set()):
                    wait = t_start + f.index / src.fps - time.perf_counter()
                    if wait <= 0:
                        break
                    time.sleep(min(wait, POLL))
            if state.stop.is_set() or state.draining.is_set():
                return
            monitor.arrived((src.name, f.index))
            bad = frame_problem(src.name, f.index, f.image)
            if bad:  # recorded drop naming stream, index and reason; the stream goes on
                monitor.dropped((src.name, f.index), bad)
                continue
            state.enter((src.name, f.index))
            if not _put(frames_q, (src.name, f), state):
                return  # the run stopped: accounted as a drop at the end
    except SourceError as e:  # this source is over; the others go on
        with state.lock:
            state.failed[src.name] = str(e)
    except BaseException as e:  # noqa: BLE001 - any other error stops the run, with its stage
        state.fail("decode", e)


def _batcher(frames_q, results_q, pipe, state: RunState, n_sources: int, batch: int, max_wait: float | None):
    ended = 0
    buf = []
    first_t = None

    def flush():
        nonlocal buf, first_t
        frames, buf, first_t = buf, [], None
        _put(results_q, (frames, submit_split(pipe, [f.image for _, f in frames])), state)

    try:
        while ended < n_sources and not state.stop.is_set():
            timeout = POLL
            if buf and max_wait is not None:
                timeout = max(0.0, min(POLL, first_t + max_wait - time.perf_counter()))
            try:
                item = frames_q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _END:
                ended += 1
            elif item is not None:
                buf.append(item)
                if first_t is None:
                    first_t = time.perf_counter()
            due = buf and max_wait is not None and time.perf_counter() - first_t >= max_wait
            if len(buf) >= batch or due:
                flush()
        if buf and not state.stop.is_set():
            flush()
    except BaseException as e:  # noqa: BLE001
        state.fail("gpu", e)
    finally:
        _put(results_q, _END, state)


def _results(results_q, monitor, on_result, state: RunState):
    try:
        while not state.stop.is_set():
            try:
                item = results_q.get(timeout=POLL)
            except queue.Empty:
                continue
            if item is _END:
                return
            frames, parts = item
            for (name, f), r in zip(frames, results_of(parts)):
                monitor.done((name, f.index), len(r))
                state.leave((name, f.index))
                if on_result is not None:
                    on_result(name, f.index, f.image, r)
    except BaseException as e:  # noqa: BLE001
        state.fail("result", e)


def run_concurrent(sources: list[Source], pipe, monitor: PerformanceMonitor, on_result=None, *, batch: int = 32,
                   max_wait_ms: float | None = None, realtime: bool = False, queue_frames: int | None = None,
                   join_timeout: float = 2.0) -> dict:
    """Run all ``sources`` at once (see the module docstring). ``max_wait_ms=None``: the ``pipelined``
    strategy (full batches); a number: the ``dynamic`` batcher. Returns {source name: error} for the
    sources that failed; raises RunnerError when a worker failed."""
    state = RunState()
    frames_q: queue.Queue = queue.Queue(maxsize=queue_frames or 2 * batch)
    results_q: queue.Queue = queue.Queue(maxsize=2)  # one batch read back while the next is computed
    max_wait = None if max_wait_ms is None else max_wait_ms / 1e3

    def decode_then_end(src):
        try:
            _decode(src, frames_q, monitor, state, realtime)
        finally:
            _put(frames_q, _END, state)

    threads = [threading.Thread(target=decode_then_end, args=(s,), name=f"posefuse-decode-{i}", daemon=True)
               for i, s in enumerate(sources)]
    threads.append(threading.Thread(target=_batcher, name="posefuse-gpu", daemon=True,
                                    args=(frames_q, results_q, pipe, state, len(sources), batch, max_wait)))
    threads.append(threading.Thread(target=_results, name="posefuse-result", daemon=True,
                                    args=(results_q, monitor, on_result, state)))
    for t in threads:
        t.start()
    interrupted = False
    while any(t.is_alive() for t in threads) and not state.stop.is_set():
        try:
            time.sleep(POLL)
        except KeyboardInterrupt as e:
            if interrupted:  # a second Ctrl-C: stop now
                state.fail("interrupt", e)
            interrupted = True
            state.draining.set()  # first Ctrl-C / SIGTERM: read no more, finish what is in flight
    deadline = time.perf_counter() + join_timeout
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    alive = [t.name for t in threads if t.is_alive()]
    if state.error is not None:
        stage, err = state.error
        with state.lock:  # every frame that arrived but got no result becomes a recorded drop
            unfinished, state.inflight = list(state.inflight), set()
        for key in unfinished:
            monitor.dropped(key, f"run stopped: {stage} stage failed")
        if isinstance(err, KeyboardInterrupt):
            raise err
        raise RunnerError(stage, err) from err
    if alive:
        raise RuntimeError(f"runner: threads still running after {join_timeout} s: {alive}")
    if interrupted:
        raise RunInterrupted("interrupted: in-flight frames finished, no new frames read")
    return dict(state.failed)
