"""``multigpu``: one worker process per device; the streams are sharded over the devices (round-robin), each
worker runs the concurrent runner on its shard with its own pipeline and sources, and the parent gathers
every event: arrivals, results (per stream in frame order: a stream lives on one worker), drops and GPU
span times go into the caller's RunEvents and ``on_result``.

A worker that raises stops the run: the parent stops the other workers and raises RunnerError naming the
stage ('read', 'gpu', 'result', or 'worker' for a worker that died or failed to start) with the remote
traceback. Frames a failed worker had taken in become recorded drops. Ctrl-C / SIGTERM in the parent makes
every worker drain (finish what is in flight, read nothing new) and raises RunInterrupted after that.

The devices may repeat, and may be 'cpu' (the CPU reference pipeline): that is how it is tested without GPUs.
"""
from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from .concurrent import POLL
from .events import FrameResult, RunEvents, RunInterrupted, RunnerError
from .monitor import PerformanceMonitor

FLUSH_EVENTS = 256  # a worker sends its events in messages of up to this many...
FLUSH_S = 0.02  # ...or after this long


class Flag:
    """A flag the parent sets and its workers poll (drain, go): one shared byte. Not multiprocessing.Event:
    a worker that exits while a thread of it waits on an Event leaves the Event's condition counting a
    sleeper that never wakes, and the parent's next set() blocks for ever (seen in CI: a worker that failed
    at start-up with its drain watcher waiting)."""

    def __init__(self, ctx):
        self._v = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._v.value = 1

    def is_set(self) -> bool:
        return bool(self._v.value)

    def wait(self, timeout: float, step: float | None = None) -> bool:
        """True once set (looked at every ``step`` seconds, default ``timeout``); False after ``timeout``
        seconds unset."""
        end = time.perf_counter() + timeout
        while not self._v.value:
            left = end - time.perf_counter()
            if left <= 0:
                return False
            time.sleep(min(left, step or timeout))
        return True


class RemoteError(RuntimeError):
    """An exception raised in a worker process (its traceback is the message)."""


# Worker -> parent messages
@dataclass(frozen=True)
class WorkerStarted:
    """The worker's assembly is open (engine loaded, sources open): its run starts."""
    rank: int


@dataclass
class Events:
    """A batch of a worker's events, in order: arrivals and drops first (a result in this message may
    belong to a frame that arrived in it), then the packed results."""

    rank: int
    arrivals: list = field(default_factory=list)  # [(keys, t)]
    drops: list = field(default_factory=list)  # [(key, reason)]
    spans: list = field(default_factory=list)  # [gpu ms per span]
    waits: list = field(default_factory=list)  # [(intake, queue, batch seconds, frames ran)] per batch
    seconds: list = field(default_factory=list)  # [thread seconds]
    results: "PackedResults | None" = None


@dataclass
class PackedResults:
    """Results of many frames as a few arrays (a few arrays to pickle per message, not three per frame)."""

    meta: list  # [(stream, index, (h, w), timestamp, file, restart)]
    counts: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    track_ids: np.ndarray | None = None  # a tracking run's ids (tracked in the worker)


@dataclass(frozen=True)
class WorkerEnded:
    """The worker's run ended: its streams that failed ({name: error}) and whether it was interrupted."""
    rank: int
    failed: dict
    interrupted: bool


@dataclass(frozen=True)
class WorkerFailed:
    """The worker raised in ``stage``; its traceback as text."""
    rank: int
    stage: str
    traceback: str


def shard(items: list, n: int) -> list[list]:
    """Round-robin: item i goes to worker i % n."""
    return [items[i::n] for i in range(n)]


class WorkerEvents:
    """Worker side: RunEvents and the result callback of the concurrent runner, batched onto the parent's
    queue; the worker's own PerformanceMonitor checks its accounting."""

    def __init__(self, q, rank: int):
        self.q, self.rank = q, rank
        self.local = PerformanceMonitor(usage=False)
        self.lock = threading.Lock()
        self._new()

    def _new(self):
        self.msg = Events(self.rank)
        self.meta: list = []
        self.res: list = []
        self.n = 0
        self.t = time.perf_counter()

    def _added(self):
        self.n += 1
        if self.n >= FLUSH_EVENTS or time.perf_counter() - self.t >= FLUSH_S:
            self._flush_locked()

    def _flush_locked(self):
        if self.n:
            if self.res:
                self.msg.results = PackedResults(
                    self.meta, np.array([len(p.scores) for p in self.res], np.int64),
                    np.concatenate([p.boxes for p in self.res]), np.concatenate([p.scores for p in self.res]),
                    np.concatenate([p.keypoints for p in self.res]),
                    None if self.res[0].track_ids is None else np.concatenate([p.track_ids for p in self.res]))
            self.q.put(self.msg)
        self._new()

    def flush(self):
        with self.lock:
            self._flush_locked()

    def start(self):
        self.local.start()

    def arrived(self, keys, t=None):
        t = time.perf_counter() if t is None else t
        self.local.arrived(keys, t)
        with self.lock:
            self.msg.arrivals.append((keys, t))
            self._added()

    def delivered(self, results):
        self.local.delivered(results)  # the results themselves follow through on_result

    def dropped(self, key, reason):
        self.local.dropped(key, reason)
        with self.lock:
            self.msg.drops.append((key, reason))
            self._added()

    def gpu_spans(self, ms):
        self.local.gpu_spans(ms)
        with self.lock:
            self.msg.spans.append(ms)
            self._added()

    def waits(self, intake, queue, batch, ran):
        self.local.waits(intake, queue, batch, ran)
        with self.lock:
            self.msg.waits.append((intake, queue, batch, ran))
            self._added()

    def thread_seconds(self, seconds):
        self.local.thread_seconds(seconds)
        with self.lock:
            self.msg.seconds.append(seconds)
            self._added()

    def streams_in(self):
        self.local.streams_in()

    def stream_ended(self, name):
        self.local.stream_ended(name)

    def end_clock(self):
        self.local.end_clock()

    def on_result(self, r: FrameResult):
        with self.lock:
            self.meta.append((r.stream, r.index, r.size, r.timestamp, r.file, r.restart))
            self.res.append(r.poses)
            self._added()


def _worker(rank: int, device: str, streams: list, cfg, q, drain, go):
    """Entry point of one worker process: the run's Assembly (assembly.py) of ``streams`` (StreamSpecs) on
    ``device`` with the dynamic batcher, the options of the run's RunConfig ``cfg``: decode hosts,
    NVDEC, tracking on this device, as a one-device run."""
    box = asm = None
    try:
        import _thread
        import dataclasses

        import torch

        from .assembly import Assembly

        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        box = WorkerEvents(q, rank)
        asm = Assembly(dataclasses.replace(cfg, runner="dynamic", device=device, gpus=None), device, streams, box,
                       box.on_result)
        in_run = threading.Event()

        def watch():  # the parent asks for a drain: interrupt this process's main thread like Ctrl-C
            while not drain.wait(POLL):
                pass
            if in_run.is_set():
                _thread.interrupt_main()

        threading.Thread(target=watch, daemon=True).start()
        asm.open()  # engine, sources, graph captures before the clock starts
        q.put(WorkerStarted(rank))
        while not go.wait(POLL, step=0.001):  # every worker ready: start together (within 1 ms of the clock)
            if drain.is_set():
                break
        interrupted = False
        in_run.set()
        try:
            asm.run()  # its events' clock starts here
        except RunInterrupted:
            interrupted = True
        finally:
            in_run.clear()
        box.local.stop()  # asserts this worker's accounting
        box.flush()
        q.put(WorkerEnded(rank, dict(asm.failed), interrupted))
    except RunnerError as e:
        if box is not None:
            box.flush()
        q.put(WorkerFailed(rank, e.stage, "".join(traceback.format_exception(e.__cause__ or e))))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        if box is not None:
            box.flush()
        q.put(WorkerFailed(rank, "worker", f"{type(e).__name__}: {e}\n" + "".join(traceback.format_exception(e))))
    finally:
        if asm is not None:
            asm.close()


def run_multigpu(streams: list, devices: list[str], cfg, events: RunEvents, on_result=None, *,
                 start_timeout: float = 600.0, join_timeout: float = 10.0) -> dict:
    """Run ``streams`` (assembly.StreamSpec) sharded over ``devices`` (['cuda:0', ...]) with the options of the
    RunConfig ``cfg``. The clock starts when every worker is warm and ends at the last worker's end
    message (the workers' exit is not run time). ``on_result`` receives FrameResults without images
    (images stay in the workers). Returns {source name: error}."""
    import multiprocessing as mp

    from ..fusion.pipeline import PoseResult

    if not devices:
        raise ValueError("devices: expected at least one device, got none")
    work = [(r, d, s) for r, (d, s) in enumerate(zip(devices, shard(list(streams), len(devices)))) if s]
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    q = ctx.Queue()
    drain, go = Flag(ctx), Flag(ctx)
    procs = {r: ctx.Process(target=_worker, args=(r, d, s, cfg, q, drain, go), name=f"posefuse-gpu{r}")
             for r, d, s in work}
    for p in procs.values():
        p.start()
    inflight: dict[int, set] = {r: set() for r in procs}
    ended: set = set()
    failed: dict = {}
    error = None
    interrupted = False
    started: set = set()
    t_start = time.perf_counter()
    try:
        while len(ended) < len(procs) and error is None:
            try:
                msg = q.get(timeout=POLL)
            except queue.Empty:
                msg = None
            except KeyboardInterrupt:
                interrupted = True
                drain.set()
                continue
            if msg is None:
                dead = [r for r, p in procs.items() if r not in ended and not p.is_alive()]
                if dead:  # died without a word (killed, segfault): look once more for its last messages
                    try:
                        msg = q.get(timeout=1.0)
                    except queue.Empty:
                        r = dead[0]
                        error = ("worker", RemoteError(f"worker {r} ({procs[r].name}) died with exit code "
                                                       f"{procs[r].exitcode}"))
                        break
                elif len(started) < len(procs) and time.perf_counter() - t_start > start_timeout:
                    error = ("worker", RemoteError(f"workers did not start within {start_timeout} s"))
                    break
                if msg is None:
                    continue
            if isinstance(msg, Events):
                mine = inflight[msg.rank]
                for keys, t in msg.arrivals:
                    mine.update(keys)
                    events.arrived(keys, t)
                for key, reason in msg.drops:
                    mine.discard(key)
                    events.dropped(key, reason)
                for ms in msg.spans:
                    events.gpu_spans(ms)
                for w in msg.waits:
                    events.waits(*w)
                for s in msg.seconds:
                    events.thread_seconds(s)
                pr = msg.results
                if pr is not None:
                    keys = [(m[0], m[1]) for m in pr.meta]
                    mine.difference_update(keys)
                    events.delivered(list(zip(keys, pr.counts.tolist())))
                    if on_result is not None:
                        ends = np.cumsum(pr.counts)
                        for (stream, index, size, ts, file, restart), n, end in zip(pr.meta, pr.counts, ends):
                            a = end - n
                            poses = PoseResult(pr.boxes[a:end], pr.scores[a:end], pr.keypoints[a:end],
                                               None if pr.track_ids is None else pr.track_ids[a:end])
                            on_result(FrameResult(stream, index, poses, size, ts, file, restart=restart))
            elif isinstance(msg, WorkerStarted):
                started.add(msg.rank)
                if len(started) == len(procs):  # the clock starts when every worker is warm
                    events.start()
                    go.set()
            elif isinstance(msg, WorkerEnded):
                ended.add(msg.rank)
                failed.update(msg.failed)
                interrupted |= msg.interrupted
                if len(ended) == len(procs):
                    events.end_clock()
            elif isinstance(msg, WorkerFailed):
                error = (msg.stage, RemoteError(f"worker {msg.rank}: {msg.traceback}"))
    finally:
        if error is not None or interrupted:
            drain.set()
        deadline = time.perf_counter() + join_timeout
        for r, p in procs.items():
            if error is not None and r not in ended:
                p.terminate()
            p.join(max(0.1, deadline - time.perf_counter()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
    if error is not None:
        stage, err = error
        for keys in inflight.values():  # frames taken in by workers that did not finish them
            for key in keys:
                events.dropped(key, f"run stopped: {stage} stage failed")
        raise RunnerError(stage, err) from err
    if interrupted:
        raise RunInterrupted("interrupted: in-flight frames finished, no new frames read")
    return failed
