"""``multigpu``: one worker process per GPU; the streams are sharded over the GPUs (round-robin), each worker
runs the ``dynamic`` (or ``pipelined``) runner on its shard with its own pipeline and sources, and the
parent gathers every event: arrivals, results (per stream in frame order: a stream lives on one worker),
drops and GPU stage times go into the caller's monitor and ``on_result``.

A worker that raises stops the run: the parent stops the other workers and raises RunnerError naming the
stage ('decode', 'gpu', 'result', or 'worker' for a worker that died or failed to start) with the remote
traceback. Frames a failed worker had taken in become recorded drops. Ctrl-C / SIGTERM in the parent makes
every worker drain (finish what is in flight, read nothing new) and raises RunInterrupted after that.

The devices may repeat, and may be 'cpu' (the CPU reference pipeline): that is how it is tested without GPUs.
"""
from __future__ import annotations

import queue
import threading
import time
import traceback

from .concurrent import POLL, RunInterrupted, RunnerError
from .monitor import PerformanceMonitor

FLUSH_EVENTS = 256  # a worker sends its events in lists of up to this many...
FLUSH_S = 0.02  # ...or after this long


class RemoteError(RuntimeError):
    """An exception raised in a worker process (its traceback is the message)."""


def shard(items: list, n: int) -> list[list]:
    """Round-robin: item i goes to worker i % n."""
    return [items[i::n] for i in range(n)]


class _Outbox:
    """Worker side: the monitor and result callback of run_concurrent, batched onto the parent's queue.
    Results travel packed: one message holds the keys of up to FLUSH_EVENTS frames and their poses as three
    concatenated arrays (a few arrays to pickle per message, not three per frame)."""

    def __init__(self, q, rank: int):
        self.q, self.rank = q, rank
        self.events: list = []  # ("arrived_many", keys, t) / ("dropped", key, reason) / ("stages", ms) / ("times", s)
        self.res_keys: list = []
        self.res: list = []  # (boxes, scores, keypoints) per frame
        self.t = time.perf_counter()
        self.lock = threading.Lock()
        self.local = PerformanceMonitor(usage=False)  # the worker's own accounting

    def _add(self, ev=None, result=None):
        with self.lock:
            if ev is not None:
                self.events.append(ev)
            if result is not None:
                self.res_keys.append(result[0])
                self.res.append(result[1])
            if len(self.events) + len(self.res) >= FLUSH_EVENTS or time.perf_counter() - self.t >= FLUSH_S:
                self._flush_locked()

    def _flush_locked(self):
        import numpy as np

        if self.events or self.res:
            packed = None
            if self.res:
                counts = np.array([len(s) for _, s, _ in self.res], np.int64)
                packed = (self.res_keys, counts, np.concatenate([b for b, _, _ in self.res]),
                          np.concatenate([s for _, s, _ in self.res]), np.concatenate([k for _, _, k in self.res]))
            # arrivals go first: a result in this message may belong to a frame that arrived in it
            self.q.put(("events", self.rank, self.events, packed))
            self.events, self.res_keys, self.res = [], [], []
        self.t = time.perf_counter()

    def flush(self):
        with self.lock:
            self._flush_locked()

    # PerformanceMonitor interface used by the runners
    def arrived(self, key, t=None):
        self.arrived_many([key], t)

    def arrived_many(self, keys, t=None):
        t = time.perf_counter() if t is None else t
        self.local.arrived_many(keys, t)
        self._add(("arrived_many", keys, t))

    def done(self, key, n):
        self.local.done(key, n)  # the result itself follows through on_result

    def done_many(self, done):
        self.local.done_many(done)

    def dropped(self, key, reason):
        self.local.dropped(key, reason)
        self._add(("dropped", key, reason))

    def gpu_stages(self, ms):
        self.local.gpu_stages(ms)
        self._add(("stages", ms))

    def runner_times(self, seconds):
        self.local.runner_times(seconds)
        self._add(("times", seconds))

    def on_result(self, name, index, image, res):
        self._add(result=((name, index), (res.boxes, res.scores, res.keypoints)))


def _worker(rank: int, device: str, specs: list, cfg: dict, q, drain, go):
    """Entry point of one worker process."""
    box = None
    try:
        import _thread

        import torch

        from fusion import PosePipeline

        from .concurrent import run_concurrent, warm_up
        from .sources import SourceError, open_source

        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        pipe = PosePipeline(device=device, **cfg["pipeline"])
        box = _Outbox(q, rank)
        sources, failed = [], {}
        for spec, name in specs:
            try:
                src = open_source(spec, cfg.get("max_frames"), cfg.get("decoder", "cpu"), device, cfg.get("chunk"))
                src.name = name
                sources.append(src)
            except SourceError as e:
                failed[name] = str(e)

        in_run = threading.Event()

        def watch():  # the parent asks for a drain: interrupt this process's main thread like Ctrl-C
            while not drain.wait(POLL):
                pass
            if in_run.is_set():
                _thread.interrupt_main()

        threading.Thread(target=watch, daemon=True).start()
        warm_up(pipe, sources, cfg["batch"])  # graph captures before the clock starts
        q.put(("started", rank, device))
        while not go.wait(POLL):  # every worker ready: start together
            if drain.is_set():
                break
        box.local.start()
        interrupted = False
        in_run.set()
        try:
            failed.update(run_concurrent(sources, pipe, box, box.on_result, batch=cfg["batch"],
                                         max_wait_ms=cfg.get("max_wait_ms"), realtime=cfg.get("realtime", False)))
        except RunInterrupted:
            interrupted = True
        finally:
            in_run.clear()
        box.local.stop()  # asserts this worker's accounting
        box.flush()
        q.put(("end", rank, {"failed": failed, "interrupted": interrupted, "report": box.local.report()}))
    except RunnerError as e:
        if box is not None:
            box.flush()
        q.put(("error", rank, e.stage, "".join(traceback.format_exception(e.__cause__ or e))))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        if box is not None:
            box.flush()
        q.put(("error", rank, "worker", "".join(traceback.format_exception(e))))


def run_multigpu(streams: list[tuple], devices: list[str], monitor: PerformanceMonitor, on_result=None, *,
                 pipeline: dict | None = None, batch: int = 64, max_wait_ms: float | None = 10.0,
                 realtime: bool = False, decoder: str = "cpu", max_frames: int | None = None,
                 chunk: int | None = None, start_timeout: float = 600.0, join_timeout: float = 10.0) -> dict:
    """Run ``streams`` ([(spec, name)], see sources.open_source) sharded over ``devices`` (['cuda:0', ...]).
    ``pipeline``: PosePipeline keyword arguments (model, backend, precision, ...). ``on_result`` receives
    (stream, index, None, PoseResult): images stay in the workers. Returns {source name: error}."""
    import multiprocessing as mp

    import numpy as np

    from fusion.pipeline import PoseResult

    if not devices:
        raise ValueError("devices: expected at least one device, got none")
    shards = shard(list(streams), len(devices))
    work = [(r, d, s) for r, (d, s) in enumerate(zip(devices, shards)) if s]
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    q = ctx.Queue()
    drain = ctx.Event()
    go = ctx.Event()
    cfg = {"pipeline": pipeline or {}, "batch": batch, "max_wait_ms": max_wait_ms, "realtime": realtime,
           "decoder": decoder, "max_frames": max_frames, "chunk": chunk}
    procs = {r: ctx.Process(target=_worker, args=(r, d, s, cfg, q, drain, go), name=f"posefuse-gpu{r}", daemon=False)
             for r, d, s in work}
    for p in procs.values():
        p.start()
    inflight: dict[int, set] = {r: set() for r in procs}
    ended: dict[int, dict] = {}
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
                                                       f"{procs[r].exitcode}"), r)
                        break
                elif len(started) < len(procs) and time.perf_counter() - t_start > start_timeout:
                    error = ("worker", RemoteError(f"workers did not start within {start_timeout} s"), None)
                    break
                if msg is None:
                    continue
            kind, rank = msg[0], msg[1]
            if kind == "events":
                for ev in msg[2]:
                    if ev[0] == "arrived_many":
                        inflight[rank].update(ev[1])
                        monitor.arrived_many(ev[1], ev[2])
                    elif ev[0] == "dropped":
                        inflight[rank].discard(ev[1])
                        monitor.dropped(ev[1], ev[2])
                    elif ev[0] == "stages" and hasattr(monitor, "gpu_stages"):
                        monitor.gpu_stages(ev[1])
                    elif ev[0] == "times" and hasattr(monitor, "runner_times"):
                        monitor.runner_times(ev[1])
                if msg[3] is not None:
                    keys, counts, boxes, scores, kpts = msg[3]
                    inflight[rank].difference_update(keys)
                    monitor.done_many(list(zip(keys, counts.tolist())))
                    if on_result is not None:
                        ends = np.cumsum(counts)
                        for key, n, end in zip(keys, counts, ends):
                            a = end - n
                            on_result(key[0], key[1], None, PoseResult(boxes[a:end], scores[a:end], kpts[a:end]))
            elif kind == "started":
                started.add(rank)
                if len(started) == len(procs):  # the clock starts when every worker is warm
                    monitor.start()
                    go.set()
            elif kind == "end":
                ended[rank] = msg[2]
                failed.update(msg[2]["failed"])
                interrupted |= msg[2]["interrupted"]
                if len(ended) == len(procs) and hasattr(monitor, "end_clock"):
                    # every result is in: the worker processes' exit (CUDA contexts, decode processes torn
                    # down) is not the run's time
                    monitor.end_clock()
            elif kind == "error":
                error = (msg[2], RemoteError(f"worker {rank}: {msg[3]}"), rank)
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
        stage, err, _rank = error
        for r, keys in inflight.items():  # frames taken in by workers that did not finish them
            for key in keys:
                monitor.dropped(key, f"run stopped: {stage} stage failed")
        raise RunnerError(stage, err) from err
    if interrupted:
        raise RunInterrupted("interrupted: in-flight frames finished, no new frames read")
    return failed
