"""``run(config) -> Report``: the one run path of the command line, the experiments and the benchmarks.

A run: validate the config and check the output paths; build the engine (the fused pipeline, its
replicas, or Ultralytics for the baseline runner); open the sources; capture every batch size the runner
can produce; then run with the chosen runner under :func:`run_settings` (the process settings it owns,
restored after it), and report. Every frame that enters ends as a result (``on_result`` and the sinks) or
a recorded drop with its reason. Ctrl-C or SIGTERM lets the frames in flight finish, records the rest as
dropped ('interrupted') and returns the partial report.
"""
from __future__ import annotations

import contextlib
import gc
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

from concurrent.futures import ThreadPoolExecutor

from .. import __version__
from .concurrent import RunInterrupted, RunnerError, run_concurrent, signatures, warm_up
from .config import CONCURRENT, ConfigError, RunConfig
from .events import FrameResult, StreamFanout
from .monitor import PerformanceMonitor
from .outputs import Outputs, check_paths
from .sources import SourceError, announce, decode_threads, host_decodable, is_network, looping, open_source, video_frames
from .strategies import run_source

# While a run's threads are up, the GIL changes hands every 1 ms, not every 5 ms (Python's default), so one
# busy thread holds the others, and every frame in flight, for at most that long (results/DECISIONS.md).
SWITCH_INTERVAL_S = 0.001
OPENERS = 32  # threads opening a run's OpenCV sources at once (a camera's open waits on the network)


@dataclass
class Report:
    """What a run did. ``overall`` and ``streams`` are PerformanceMonitor reports (frames in, results,
    drops by reason, frames/s, latency percentiles, GPU span times, usage); ``failed``: {source or '<run>':
    error}; ``startup_s``: seconds per start-up step before the clock, in sequence (``startup_overlap_s``:
    steps that ran beside them: the sources opening while the engine loaded); ``ran``: what actually ran
    (device, backend, precision, decoder); ``chosen``: {option: why} for each option the run chose itself
    (RunConfig 'auto' and unset defaults); ``notes``: {source: how it was read} where that differs from
    what was asked (a video NVDEC cannot open, read with OpenCV); ``shutdown_s``: seconds per step after
    the last result (closing the sources, the outputs, the decode processes)."""

    config: dict
    ran: dict
    overall: dict
    streams: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    outputs: list = field(default_factory=list)
    startup_s: dict = field(default_factory=dict)
    interrupted: bool = False
    run_error: str | None = None
    chosen: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    startup_overlap_s: dict = field(default_factory=dict)
    shutdown_s: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """130 interrupted, 1 a source or the run failed, else 0."""
        return 130 if self.interrupted else 1 if self.failed or self.run_error else 0

    def to_dict(self) -> dict:
        return {"posefuse": __version__, **self.ran, "config": self.config, "chosen": self.chosen,
                "notes": self.notes, "startup_s": self.startup_s, "startup_overlap_s": self.startup_overlap_s,
                "shutdown_s": self.shutdown_s, "overall": self.overall, "streams": self.streams, "failed_sources": self.failed,
                "outputs": self.outputs, "interrupted": self.interrupted, "run_error": self.run_error}


@contextlib.contextmanager
def run_settings():
    """The process settings a run owns, restored after it: the GC's existing objects are frozen out of the
    collector (a full collection with torch and ultralytics loaded walks over 200,000 objects, stalling every
    thread ~130 ms: results/DECISIONS.md), only the young generations collected first, and the GIL switch
    interval is SWITCH_INTERVAL_S."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL_S))
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        sys.setswitchinterval(switch)


class _Signals:
    """SIGTERM ends the run like Ctrl-C; both wait while the run starts up (blocked until :meth:`release`,
    just before the runner runs), so neither lands inside a library's initialization (the engine imports
    and loads the model, the decode process starts): one there has aborted the process at exit
    ("terminate called without an active exception"; results/DECISIONS.md). A signal that came meanwhile
    is raised at the release and the run drains at once. Main thread only; the previous handler and
    signal mask are restored."""

    def __init__(self):
        self.main = threading.current_thread() is threading.main_thread()

    def __enter__(self):
        if self.main:
            self.previous = signal.signal(signal.SIGTERM, self._handler)
            self.mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        return self

    @staticmethod
    def _handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def release(self):
        if self.main:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)

    def __exit__(self, *exc):
        if self.main:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
            signal.signal(signal.SIGTERM, self.previous)
        return False


def batch_sizes(cfg: RunConfig) -> tuple | None:
    """The sizes the run's batches are padded to (PosePipeline.batch_sizes): a realtime or live run's batches are
    as large as the frames that arrived in time (every bucket: low latency); over files and folders a
    partial batch is padded to the run's batch, so one capture serves the run (each capture costs seconds
    of cuDNN plan building: results/DECISIONS.md)."""
    if cfg.realtime or cfg.mode == "live" or cfg.batch is None:  # None: a config not validated
        return None
    return (1,) if cfg.runner == "serial" else (cfg.batch,)


def make_pipelines(cfg: RunConfig, device: str) -> list:
    """The fused pipeline on ``device`` and, for the streams runner, its replicas (weights shared)."""
    from ..fusion.pipeline import PosePipeline

    pipe = PosePipeline(cfg.model, device, cfg.backend, cfg.precision, cfg.imgsz, cfg.conf, cfg.iou,
                        cuda_graph=cfg.cuda_graph, batch_sizes=batch_sizes(cfg))
    return [pipe] + [pipe.replica() for _ in range((cfg.replicas if cfg.runner == "streams" else 1) - 1)]


def open_sources(cfg: RunConfig, streams: list[tuple], device: str, decode_processes=None,
                 host_processes=None) -> tuple[list, dict, dict]:
    """The sources of ``streams`` ([(spec, name)]); returns (sources, {name: error} for those that failed,
    {name: note} for those read otherwise than asked: with the decoder 'auto', a video NVDEC cannot open
    is read with OpenCV)."""
    failed, notes = {}, {}
    threads = decode_threads(len(streams))
    starts = copy_starts(cfg, streams)

    def open_one(stream):
        spec, name = stream
        try:
            return open_stream(cfg, spec, name, device, decode_processes, notes, start=starts[name],
                               threads=threads, host_processes=host_processes)
        except SourceError as e:
            failed[name] = str(e)

    # a camera takes most of a second to open (FFmpeg probes the stream): OpenCV sources open side by side;
    # NVDEC streams open one after another (one control pipe per decode process)
    workers = 1 if cfg.decoder == "nvdec" else min(OPENERS, len(streams))
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="posefuse-open") as pool:
        opened = list(pool.map(open_one, streams))
    return [s for s in opened if s is not None], failed, notes


def copy_starts(cfg: RunConfig, streams: list[tuple]) -> dict:
    """{stream name: its first frame}: the r copies of a looping video (``repeat``, or a spec given more
    than once) start spread over it, copy k at frame k * n // r of its n frames, and wrap round to its
    start (looping), so they are r streams of one recording, not one stream r times in step. In step,
    every copy decodes the same frame at the same moment, and the video's costlier stretches load the host
    all at once (results/DECISIONS.md). Every other stream starts at frame 0, as do all of a run limited
    by ``max_frames``."""
    starts = {name: 0 for _, name in streams}
    if not cfg.loop or cfg.max_frames is not None:
        return starts
    copies: dict = {}
    for spec, name in streams:
        copies.setdefault(spec, []).append(name)
    for spec, names in copies.items():
        n = video_frames(spec) if len(names) > 1 else None
        for k, name in enumerate(names):
            starts[name] = k * n // len(names) if n else 0
    return starts


def paced(cfg: RunConfig, spec) -> bool:
    """Whether the stream of ``spec`` comes at its own pace in this run (a camera at a URL, or any video of a
    realtime or live run): read in a host decode process when OpenCV decodes it."""
    return is_network(spec) or cfg.realtime or cfg.mode == "live"


def open_stream(cfg: RunConfig, spec, name: str, device: str, decode_processes=None, notes=None, start: int = 0,
                threads: int = 0, host_processes=None):
    """One stream of the run: the Source of ``spec`` named ``name`` (looping, paced or limited as ``cfg``
    says; from frame ``start`` of a video file; ``threads``: its FFmpeg threads when OpenCV decodes it,
    0 for one per core); a note goes to ``notes`` when it is read otherwise than asked. ``host_processes``:
    the run's HostDecodeProcesses, which read a paced video or camera that OpenCV decodes (:func:`paced`).
    Raises SourceError."""
    fallback = cfg.decoder == "nvdec" and "decoder" in cfg.chosen
    in_process = host_processes is not None and paced(cfg, spec) and host_decodable(spec) and \
        (cfg.decoder == "cpu" or (fallback and is_network(spec)))
    if in_process:  # looped, timed and paced there
        return host_processes.open(name, spec=spec, max_frames=cfg.max_frames, reconnect_s=cfg.reconnect_s,
                                   start=start, threads=threads, loop=cfg.loop, duration_s=cfg.duration_s,
                                   fps=cfg.fps)

    def open_once(first, decoder=cfg.decoder):
        if fallback and is_network(spec):  # 'auto': a live URL is read by the reconnecting network source
            decoder = "cpu"
        return open_source(spec, max_frames=cfg.max_frames, decoder=decoder,
                           device=device if device.startswith("cuda") else None, chunk=cfg.chunk,
                           decode_processes=decode_processes, reconnect_s=cfg.reconnect_s, start=first,
                           threads=threads, pinned=device.startswith("cuda"))

    def open_any(first):
        try:
            return open_once(first)
        except SourceError as e:
            if not fallback:
                raise
            src = open_once(first, "cpu")  # its error, if it fails too, is the source's
            if notes is not None:
                notes[name] = f"read with OpenCV: {e}"
            return src

    return looping(open_any, name, cfg.loop, cfg.duration_s, cfg.fps, start)


class _Opener:
    """Opens the run's sources on a thread of its own, so decode processes start (spawn, imports, CUDA
    context, decoder open: seconds) while the engine loads and captures."""

    def __init__(self, cfg: RunConfig, streams: list[tuple], decode_processes, host_processes=None):
        self.sources, self.failed, self.notes, self.error, self.wall_s = [], {}, {}, None, 0.0
        self.announced = {s for s in (announce(spec, cfg.decoder) for spec in {spec for spec, _ in streams}) if s}
        self._thread = threading.Thread(target=self._open, args=(cfg, streams, decode_processes, host_processes),
                                        name="posefuse-open", daemon=True)
        self._thread.start()

    def _open(self, cfg, streams, decode_processes, host_processes):
        t = time.perf_counter()
        try:
            self.sources, self.failed, self.notes = open_sources(cfg, streams, cfg.device, decode_processes,
                                                                 host_processes)
        except BaseException as e:  # noqa: BLE001 - re-raised in the run's thread by result()
            self.error = e
        self.wall_s = time.perf_counter() - t

    def result(self) -> tuple[list, dict, dict]:
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.sources, self.failed, self.notes

    def close(self):
        """Waits for the opening to end, then closes what it opened (a run that stopped before it ran)."""
        self._thread.join()
        for s in self.sources:
            s.close()


class _Progress:
    """A tqdm bar on stderr for the frames finished (results and drops), drawn only where asked for."""

    def __init__(self, enabled: bool, total: int | None):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="fr", file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
                            desc="posefuse")
        self._lock = threading.Lock()

    def update(self, n: int):
        if self.bar is not None:
            with self._lock:
                self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run(config: RunConfig, on_result=None, control=None) -> Report:
    """Run ``config`` (see the module docstring). ``on_result(FrameResult)`` is called for every result, per
    stream in frame order, besides the config's sinks. ``control``: a RunControl that adds and removes
    sources while the run is live and stops it (the run lasts until control.stop()). Raises ConfigError for
    a bad option or output path, before anything runs."""
    t_run = time.perf_counter()
    cfg = config.validated()
    check_paths(cfg)
    streams = cfg.streams()
    if control is not None:
        if cfg.runner not in CONCURRENT:
            raise ConfigError("runner", f"a run steered by a RunControl needs one of {CONCURRENT}, got {cfg.runner!r}")
        control.bind(name for _, name in streams)
    startup: dict = {}
    startup_overlap: dict = {}
    shutdown: dict = {}
    notes: dict = {}
    ran = {"runner": cfg.runner, "device": cfg.device, "decoder": cfg.decoder}
    t = time.perf_counter()
    decode_processes = None
    if cfg.decoder == "nvdec":
        from .sources.process import DecodeProcesses

        decode_processes = DecodeProcesses(cfg.streams_per_decode_process)
    host_processes = None
    if cfg.runner in CONCURRENT:
        from .sources.hostproc import HostDecodeProcesses

        host_processes = HostDecodeProcesses(realtime=cfg.realtime, pin=cfg.device.startswith("cuda"))
    outputs = Outputs(cfg, streams)
    sinks = outputs if on_result is None else _both(outputs, on_result)
    if cfg.track:
        from .tracking import StreamTracking

        sinks = StreamTracking(sinks, cfg.device if cfg.runner != "multigpu" else "cpu")
    failed: dict = {}
    sources: list = []
    progress = _Progress(False, None)
    total = PerformanceMonitor(usage=True)
    events = StreamFanout(total, lambda: PerformanceMonitor(usage=False, timeline=False))
    interrupted, run_error = False, None
    peak = _PeakMemory(cfg.device if cfg.runner != "multigpu" else None)

    def open_added(spec, name):  # a source a RunControl adds while the run is live
        src = open_stream(cfg, spec, name, cfg.device, decode_processes, notes,
                          threads=decode_threads(len(sources) + 1), host_processes=host_processes)
        sources.append(src)
        outputs.add_stream(name, src.fps)
        return src
    with _Signals() as signals:
        opener = None
        try:
            if cfg.runner != "multigpu":  # the multigpu workers open their own
                if decode_processes is not None:
                    decode_processes.start(cfg.device)
                opener = _Opener(cfg, streams, decode_processes, host_processes)
            engine = _engine(cfg, ran)
            startup["engine"] = time.perf_counter() - t
            t = time.perf_counter()
            warmed: set = set()
            if cfg.runner in CONCURRENT:  # the shapes the files' headers give, while the sources open
                warm_up(engine, opener.announced, cfg.batch)
                warmed |= opener.announced
            if cfg.track:
                sinks.warm_up()
            startup["warmup"] = time.perf_counter() - t
            t = time.perf_counter()
            if opener is not None:
                sources, failed, notes = opener.result()
                outputs.fps = {s.name: s.fps for s in sources}
                startup_overlap["sources_open"] = opener.wall_s
            startup["sources"] = time.perf_counter() - t
            t = time.perf_counter()
            if cfg.runner in CONCURRENT:
                warm_up(engine, signatures(sources) - warmed, cfg.batch)
            startup["warmup"] += time.perf_counter() - t
            counts = [s.count for s in sources]
            progress = _Progress(cfg.progress, sum(counts) if sources and all(counts) else None)
            total.on_count = progress.update
            try:
                with run_settings():
                    try:
                        signals.release()  # a Ctrl-C or SIGTERM of the start-up is raised here: the run drains
                        failed.update(_dispatch(cfg, engine, sources, streams, events, sinks, control, open_added))
                    finally:  # the last result is in: closing sources and decode processes is not run time
                        events.end_clock()
            except (KeyboardInterrupt, RunInterrupted):
                interrupted = True
                for key in total.unfinished():
                    events.dropped(key, "interrupted")
            except RunnerError as e:
                run_error = str(e)
                failed["<run>"] = run_error
        finally:
            t = time.perf_counter()
            if opener is not None:
                opener.close()
            for s in sources:
                s.close()
            progress.close()
            shutdown["sources"] = time.perf_counter() - t
            t = time.perf_counter()
            outputs.close()
            shutdown["outputs"] = time.perf_counter() - t
            if decode_processes is not None:
                t = time.perf_counter()
                decode_processes.close()
                shutdown["decode_processes"] = time.perf_counter() - t
            if host_processes is not None:
                t = time.perf_counter()
                host_processes.close()  # the streams' counts are in once it returns
                shutdown["host_decode_processes"] = time.perf_counter() - t
    per_stream = {}
    for name, mon in events.streams.items():
        mon.stop()
        per_stream[name] = mon.report()
    for s in sources:  # what the source itself counted (a network source's reconnects and gaps)
        if s.name in per_stream and s.counts:
            per_stream[s.name]["source"] = dict(s.counts)
    total.stop()
    overall = total.report()
    overall["first_result_since_run_s"] = None if total.t_first is None else total.t_first - t_run
    overall.update(peak.report())
    if outputs.lost_video_frames:
        failed["<save_video>"] = f"{outputs.lost_video_frames} frames had no host image to draw on"
    return Report(cfg.to_dict(), ran, overall, per_stream, failed, outputs.paths, startup, interrupted, run_error,
                  chosen=dict(cfg.chosen), notes=notes, startup_overlap_s=startup_overlap, shutdown_s=shutdown)


class _PeakMemory:
    """The torch allocator's peak on the run's GPU, read without resetting it: the process-wide peak at the
    end, and whether the run itself set it (a peak reached before the run is not the run's)."""

    def __init__(self, device: str | None):
        import torch

        self.dev = torch.device(device) if device and device.startswith("cuda") else None
        self.before = torch.cuda.max_memory_allocated(self.dev) if self.dev is not None else 0

    def report(self) -> dict:
        if self.dev is None:
            return {}
        import torch

        peak = torch.cuda.max_memory_allocated(self.dev)
        return {"gpu_memory_mib": {"process_peak": peak / 2**20, "peak_set_in_run": peak > self.before,
                                   "allocated_at_end": torch.cuda.memory_allocated(self.dev) / 2**20}}


def _both(outputs, on_result):
    def both(r: FrameResult):
        outputs(r)
        on_result(r)
    return both


def _engine(cfg: RunConfig, ran: dict):
    """The pipelines (or the Ultralytics model) the run uses; None for multigpu (the workers build theirs).
    Fills ``ran`` with what runs."""
    if cfg.runner == "ultralytics":
        from ..fusion.backbone import load_ultralytics

        ran.update(backend="ultralytics", precision=cfg.precision if cfg.device.startswith("cuda") else "fp32")
        return load_ultralytics(cfg.model)
    if cfg.runner == "multigpu":
        gpu = any(d.startswith("cuda") for d in cfg.gpus)
        ran.update(backend=cfg.backend if cfg.backend != "auto" else ("auto" if gpu else "reference"),
                   precision=cfg.precision if gpu else "fp32", gpus=cfg.gpus)
        return None
    pipes = make_pipelines(cfg, cfg.device)
    ran.update(backend=pipes[0].backend, precision=pipes[0].precision, cuda_graph=pipes[0].cuda_graph)
    return pipes


def _dispatch(cfg: RunConfig, engine, sources: list, streams: list, events, sinks, control=None,
              open_added=None) -> dict:
    """Runs the runner; returns {source name: error} for the sources that failed."""
    if cfg.runner == "multigpu":
        from .multigpu import run_multigpu

        return run_multigpu(streams, cfg.gpus, cfg, events, sinks)
    if cfg.runner in CONCURRENT:
        events.start()
        return run_concurrent(sources, engine, events, sinks, batch=cfg.batch, realtime=cfg.realtime,
                              max_wait_ms=cfg.max_wait_ms if cfg.runner == "dynamic" else None,
                              late_ms=cfg.late_ms if cfg.mode == "live" else None, control=control,
                              open_stream=open_added)
    failed = {}
    on_gpu = cfg.device.startswith("cuda")
    predict_kw = dict(conf=cfg.conf, iou=cfg.iou, imgsz=cfg.imgsz, device=cfg.device if on_gpu else "cpu",
                      quantize=16 if on_gpu and cfg.precision == "fp16" else None)
    for src in sources:
        try:
            run_source(src, cfg.runner, engine if cfg.runner == "ultralytics" else engine[0], events, sinks,
                       cfg.batch, predict_kw)
        except SourceError as e:
            failed[src.name] = str(e)
        finally:
            src.close()  # a decode process's stream stops with it
    return failed
