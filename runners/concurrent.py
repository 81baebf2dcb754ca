"""Threaded runners over many sources at once: decode threads -> batcher/GPU thread -> result thread,
joined by bounded queues (backpressure: a slow stage stops the ones before it; memory stays bounded).

* ``pipelined``: fixed batches (a batch leaves when full, when the sources end, or when no frame came for
  ``idle_ms``: a source may be waiting for its frames to be released);
* ``streams``: the same with several pipeline replicas (``pipe`` a list), each in its own GPU thread on its
  own CUDA stream, sharing the frame queue; results are put back in per-stream order;
* ``dynamic``: a dynamic batcher across all streams: a batch leaves when it holds ``batch`` frames or its
  oldest frame has waited ``max_wait_ms``; latency is measured per frame from arrival to result.

Every source has its own decode thread; results are delivered per stream in frame order. A source that
fails is reported (``failed``) and the others go on. An exception in a worker stops the run: the caller
gets :class:`RunnerError` naming the stage, with the original exception as its cause, within a few
seconds; every wait is bounded, so nothing hangs and no thread is left behind.
``realtime=True`` releases each source's frames at its own frame rate, as a camera would.
"""
from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

import torch

from .monitor import PerformanceMonitor
from .sources import Source, SourceError
from .strategies import finish, frame_problem, pipe_device, submit_frames

POLL = 0.05  # seconds: how often a blocked worker looks at the stop flag
SWITCH_INTERVAL_S = 0.001  # GIL switch interval while a run's threads are up (see run_concurrent)
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
    thread_s: dict = field(default_factory=dict)  # seconds each kind of thread spent per activity (summed)

    def add_times(self, times: dict):
        with self.lock:
            for k, v in times.items():
                self.thread_s[k] = self.thread_s.get(k, 0.0) + v

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


def _decode(src: Source, frames_q: queue.Queue, monitor: PerformanceMonitor, state: RunState, realtime: bool,
            device=None):
    t_start = time.perf_counter()
    seq = 0  # order of this stream's frames in the queue (the result thread delivers in this order)
    t_src = t_put = 0.0
    it = iter(src.frames)
    try:
        while True:
            t0 = time.perf_counter()
            f = next(it, None)
            t_src += time.perf_counter() - t0
            if f is None:
                break
            if realtime and src.fps:  # wait for the frame's time, still answering a stop
                while not (state.stop.is_set() or state.draining.is_set()):
                    wait = t_start + f.index / src.fps - time.perf_counter()
                    if wait <= 0:
                        break
                    time.sleep(min(wait, POLL))
            if state.stop.is_set() or state.draining.is_set():
                f.done()
                return
            monitor.arrived((src.name, f.index))
            bad = frame_problem(src.name, f.index, f.image, f.pixel_format, device)
            if bad:  # recorded drop naming stream, index and reason; the stream goes on
                f.done()
                monitor.dropped((src.name, f.index), bad)
                continue
            state.enter((src.name, f.index))
            t0 = time.perf_counter()
            ok = _put(frames_q, (src.name, seq, f), state)
            t_put += time.perf_counter() - t0
            if not ok:
                return  # the run stopped: accounted as a drop at the end
            seq += 1
    except SourceError as e:  # this source is over; the others go on
        with state.lock:
            state.failed[src.name] = str(e)
    except BaseException as e:  # noqa: BLE001 - any other error stops the run, with its stage
        state.fail("decode", e)
    finally:
        src.close()
        state.add_times({"decode.source": t_src, "decode.queue_full_wait": t_put, **src.stats})


def _batcher(frames_q, results_q, pipe, state: RunState, batch: int, max_wait: float | None, idle: float,
             ended: dict, stream=None):
    """One GPU worker: takes frames from ``frames_q`` into batches and submits them to ``pipe`` on
    ``stream`` (its own CUDA stream, or the current one). Several may share one queue (the ``streams``
    runner). ``ended``: {"n": sources ended, "of": sources} shared by the workers."""
    buf = []
    first_t = last_t = None
    times = {"gpu.frames_wait": 0.0, "gpu.submit": 0.0, "gpu.results_full_wait": 0.0}

    def flush():
        nonlocal buf, first_t
        items, buf, first_t = buf, [], None
        t0 = time.perf_counter()
        submitted = submit_frames(pipe, [f for _, _, f in items])
        t1 = time.perf_counter()
        _put(results_q, (items, submitted), state)
        times["gpu.submit"] += t1 - t0
        times["gpu.results_full_wait"] += time.perf_counter() - t1

    def all_ended():
        with state.lock:
            return ended["n"] >= ended["of"]

    try:
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            while not state.stop.is_set():
                timeout = POLL
                if buf and max_wait is not None:
                    timeout = max(0.0, min(POLL, first_t + max_wait - time.perf_counter()))
                t0 = time.perf_counter()
                try:
                    item = frames_q.get(timeout=timeout)
                except queue.Empty:
                    item = None
                    if all_ended():
                        break
                now = time.perf_counter()
                times["gpu.frames_wait"] += now - t0
                if item is _END:
                    with state.lock:
                        ended["n"] += 1
                    if all_ended() and frames_q.empty():
                        break
                elif item is not None:
                    buf.append(item)
                    last_t = now
                    if first_t is None:
                        first_t = now
                due = buf and max_wait is not None and now - first_t >= max_wait
                # pipelined: a partial batch also leaves when no frame came for ``idle`` s (a slow or
                # blocked source: NVDEC sources wait for their frames to be released)
                stalled = buf and max_wait is None and item is None and now - last_t >= idle
                if len(buf) >= batch or due or stalled:
                    flush()
            if buf and not state.stop.is_set():
                flush()
    except BaseException as e:  # noqa: BLE001
        state.fail("gpu", e)
    finally:
        _put(results_q, _END, state)
        state.add_times(times)


def _results(results_q, monitor, on_result, state: RunState, n_workers: int):
    """Reads batches back in submission order and delivers each stream's frames in their queue order
    (with several GPU workers a later frame of a stream can finish first: it waits in ``held``)."""
    next_seq: dict = {}
    held: dict = {}  # (stream, seq) -> (frame, result)
    ended = 0
    times = {"result.batches_wait": 0.0, "result.gpu_wait_and_deliver": 0.0}
    try:
        while not state.stop.is_set() and ended < n_workers:
            t0 = time.perf_counter()
            try:
                item = results_q.get(timeout=POLL)
            except queue.Empty:
                continue
            finally:
                t1 = time.perf_counter()
                times["result.batches_wait"] += t1 - t0
            if item is _END:
                ended += 1
                continue
            items, submitted = item
            seqs = {id(f): (name, seq) for name, seq, f in items}
            for f, r in finish(submitted, monitor):
                name, seq = seqs[id(f)]
                held[(name, seq)] = (f, r)
                n = next_seq.get(name, 0)
                while (name, n) in held:
                    g, res = held.pop((name, n))
                    monitor.done((name, g.index), len(res))
                    state.leave((name, g.index))
                    if on_result is not None:
                        on_result(name, g.index, g.image, res)
                    n += 1
                next_seq[name] = n
            times["result.gpu_wait_and_deliver"] += time.perf_counter() - t1
    except BaseException as e:  # noqa: BLE001
        state.fail("result", e)
    finally:
        state.add_times(times)


def warm_up(pipe, sources: list[Source], batch: int):
    """Capture (and autotune) every batch size the runner can produce, for each frame shape and format the
    sources announce, before the clock starts (see PosePipeline.warmup)."""
    pipes = list(pipe) if isinstance(pipe, (list, tuple)) else [pipe]
    for shape, fmt in {(s.shape, s.pixel_format) for s in sources if s.shape}:
        for p in pipes:
            if hasattr(p, "warmup"):
                p.warmup(shape, batch, fmt, device_frames=fmt == "nv12")


def run_concurrent(sources: list[Source], pipe, monitor: PerformanceMonitor, on_result=None, *, batch: int = 32,
                   max_wait_ms: float | None = None, realtime: bool = False, queue_frames: int | None = None,
                   join_timeout: float = 2.0, idle_ms: float = 200.0) -> dict:
    """Run all ``sources`` at once (see the module docstring). ``pipe``: a PosePipeline, or a list of them
    (the ``streams`` runner: one GPU worker thread per pipeline, each on its own CUDA stream).
    ``max_wait_ms=None``: fixed batches (``pipelined``); a number: the ``dynamic`` batcher.
    Returns {source name: error} for the sources that failed; raises RunnerError when a worker failed."""
    pipes = list(pipe) if isinstance(pipe, (list, tuple)) else [pipe]
    if not pipes:
        raise ValueError("pipe: expected a pipeline or a non-empty list of pipelines, got an empty list")
    state = RunState()
    frames_q: queue.Queue = queue.Queue(maxsize=queue_frames or 2 * batch * len(pipes))
    results_q: queue.Queue = queue.Queue(maxsize=2 * len(pipes))  # read back while the next batches compute
    max_wait = None if max_wait_ms is None else max_wait_ms / 1e3
    ended = {"n": 0, "of": len(sources)}

    def decode_then_end(src):
        try:
            _decode(src, frames_q, monitor, state, realtime, pipe_device(pipes))
        finally:
            _put(frames_q, _END, state)

    threads = [threading.Thread(target=decode_then_end, args=(s,), name=f"posefuse-decode-{i}", daemon=True)
               for i, s in enumerate(sources)]
    for i, p in enumerate(pipes):
        cuda = getattr(p, "device", None) is not None and p.device.type == "cuda"
        stream = torch.cuda.Stream(p.device) if cuda and len(pipes) > 1 else None
        threads.append(threading.Thread(target=_batcher, name=f"posefuse-gpu-{i}", daemon=True,
                                        args=(frames_q, results_q, p, state, batch, max_wait, idle_ms / 1e3, ended,
                                              stream)))
    threads.append(threading.Thread(target=_results, name="posefuse-result", daemon=True,
                                    args=(results_q, monitor, on_result, state, len(pipes))))
    if not sources:
        return {}
    # GIL hand-offs between the decode, GPU and result threads: the default 5 ms switch interval lets one
    # busy thread hold the others (and every frame's latency) for 5 ms at a time; 1 ms during the run
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL_S))
    try:
        return _run_threads(threads, state, sources, monitor, join_timeout)
    finally:
        sys.setswitchinterval(switch)


def _run_threads(threads, state: RunState, sources, monitor, join_timeout: float) -> dict:
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
            for s in sources:
                s.close()
    for s in sources:  # a source blocked on its consumer (NVDEC) returns
        if state.stop.is_set():
            s.close()
    deadline = time.perf_counter() + join_timeout
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    alive = [t.name for t in threads if t.is_alive()]
    if hasattr(monitor, "runner_times"):  # where the threads spent their time: which stage limits
        monitor.runner_times(state.thread_s)
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
