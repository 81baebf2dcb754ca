"""``run(config) -> Report``: the one run path of the command line, the experiments and the benchmarks.

A run: validate the config and check the output paths; build the run's one :class:`~.assembly.Assembly`
(engine, sources read where ``place()`` puts them, warm-up, tracking, process settings, the runner) or,
with the multigpu runner, one in each worker process for its shard of the streams; run; report, and write
the report to ``config.out``. Every frame that enters ends as a result (``on_result`` and the sinks) or
a recorded drop with its reason. Ctrl-C or SIGTERM lets the frames in flight finish, records the rest as
dropped ('interrupted') and returns the partial report.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from .assembly import Assembly, stream_specs
from .config import CONCURRENT, ConfigError, RunConfig
from .events import FrameResult, RunInterrupted, RunnerError, StreamFanout
from .monitor import PerformanceMonitor
from .mps import join, resolved
from .outputs import Outputs, check_paths


DROP_WARN_SHARE = 0.1  # a run that dropped more than this share of its frames warns (Report.warnings)


@dataclass
class Report:
    """What a run did. ``overall`` and ``streams`` are PerformanceMonitor reports (frames in, results,
    drops by reason, frames/s, latency percentiles, GPU span times, usage); ``failed``: {source or '<run>':
    error}; ``startup_s``: seconds per start-up step before the clock, in sequence (the command line's
    interpreter, imports and config with CUDA's initialization; run()'s setup up to the assembly, then its
    engine, warm-up and wait for the sources; ``startup_overlap_s``:
    steps that ran beside them: the sources opening while the engine loaded, and for a job, whose streams join
    its run as they open, while it ran); ``ran``: what actually ran
    (device, backend, precision, decoder, compile; with a compiled backbone ``compile_origin``: per
    canvas, 'compiled' by this start or 'loaded' from a start before); ``chosen``: {option: why} for each
    option the run chose itself (RunConfig 'auto' and unset defaults); ``notes``: {source: how it was read}
    where that differs from what was asked (a video NVDEC cannot open, read with OpenCV); ``shutdown_s``:
    seconds per step after the last result (closing the sources, the outputs, the decode hosts: their
    streams' ends, their Closed messages and the rows unmapped here as ``decode_hosts.<step>``; the
    figures: the monitors stopped, the streams' reports);
    ``warnings``: one line each for what the run did that its user should change (most frames dropped:
    :func:`drop_warning`)."""

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
    warnings: list = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """130 interrupted, 1 a source or the run failed, else 0."""
        return 130 if self.interrupted else 1 if self.failed or self.run_error else 0

    def write(self, path: str, extra: dict | None = None):
        """The report as JSON at ``path`` (``extra``: more top-level fields, e.g. the command line's process
        figures). A report that cannot be written is recorded in ``failed`` under '<out>', not raised."""
        try:
            Path(path).write_text(json.dumps({**self.to_dict(), **(extra or {})}, indent=1))
        except OSError as e:
            self.failed["<out>"] = f"out {path}: the report could not be written: {e}"

    def to_dict(self) -> dict:
        return {"posefuse": __version__, **self.ran, "config": self.config, "chosen": self.chosen,
                "notes": self.notes, "startup_s": self.startup_s, "startup_overlap_s": self.startup_overlap_s,
                "shutdown_s": self.shutdown_s, "overall": self.overall, "streams": self.streams,
                "failed_sources": self.failed,
                "outputs": self.outputs, "interrupted": self.interrupted, "run_error": self.run_error,
                "warnings": self.warnings}


class _Signals:
    """SIGTERM ends the run like Ctrl-C; both wait while the run starts up (blocked until :meth:`unblock`,
    just before the runner runs), so neither lands inside a library's initialization (the engine imports
    and loads the model, the decode host starts): one there has aborted the process at exit
    ("terminate called without an active exception"; results/DECISIONS.md). A signal that came meanwhile
    is raised when they are unblocked and the run drains at once. Main thread only; the previous handler and
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

    def unblock(self):
        if self.main:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)

    def __exit__(self, *exc):
        if self.main:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
            signal.signal(signal.SIGTERM, self.previous)
        return False


class _Progress:
    """A tqdm bar on stderr for the frames finished (results and drops), drawn only where asked for.
    ``total()``: the frames the run holds, None while it is not known yet (asked again at each update),
    0 when it cannot be known (the bar then counts without one)."""

    def __init__(self, enabled: bool, total=None):
        self.bar, self._total = None, total
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=None, unit="fr", file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
                            desc="posefuse")
        self._lock = threading.Lock()

    def update(self, n: int):
        if self.bar is not None:
            with self._lock:
                if self._total is not None:
                    total = self._total()
                    if total is not None:
                        self._total = None
                        if total:
                            self.bar.total = total
                self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run(config: RunConfig, on_result=None, control=None) -> Report:
    """Run ``config`` (see the module docstring). ``on_result(FrameResult)`` is called for every result, per
    stream in frame order, besides the config's sinks. ``control``: a RunControl that adds and removes
    sources while the run goes on and stops it (the run lasts until control.stop()); it learns when the run
    ends, and what it raised (RunControl.wait_started raises then). Writes the report to ``config.out``
    when set. Raises ConfigError for a bad option or output path, before anything runs."""
    try:
        t_run = time.perf_counter()
        cfg = resolved(config).validated()  # MPS joined or not before validated() asks torch for the GPUs
        mps = join() if cfg.mps == "on" else None  # the daemon resolved() joined
        check_paths(cfg)
        streams = stream_specs(cfg)
        if not streams and control is None:
            raise ConfigError("sources", "expected at least one source, got none")
        if control is not None:
            if cfg.runner not in CONCURRENT:
                raise ConfigError("runner", f"a run steered by a RunControl needs one of {CONCURRENT}, "
                                            f"got {cfg.runner!r}")
            control.bind(s.name for s in streams)
        outputs = Outputs(cfg, [(s.spec, s.name) for s in streams])
        sinks = outputs if on_result is None else _both(outputs, on_result)
        total = PerformanceMonitor(usage=True)
        events = StreamFanout(total, lambda: PerformanceMonitor(usage=False, timeline=False))
        progress = _Progress(False, None)
        interrupted, run_error, failed = False, None, {}
        peak = _PeakMemory(cfg.device if cfg.runner != "multigpu" else None)
        asm = None
        if cfg.runner != "multigpu":  # the multigpu workers each build the assembly of their shard
            asm = Assembly(cfg, cfg.device, streams, events, sinks, control=control, on_added=outputs.add_stream)
            ran = asm.ran
        else:
            gpu = any(d.startswith("cuda") for d in cfg.gpus)
            ran = {"runner": cfg.runner, "device": cfg.device, "decoder": cfg.decoder, "gpus": cfg.gpus,
                   "backend": cfg.backend if cfg.backend != "auto" else ("auto" if gpu else "reference"),
                   "precision": cfg.precision if gpu else "fp32", "compile": cfg.compile if gpu else "off"}
        if control is not None:  # a service's live view of each stream
            control.bind_figures(lambda: _figures(events, asm), lambda names: _forget(names, events, asm, outputs),
                                 ran, total.waits_ms)
            control.bind_state("batch_frames", total.batch_sizes)
            if asm is not None:
                control.bind_state("decode_hosts", lambda: asm.decode_hosts.state() if asm.decode_hosts else {})
        with _Signals() as signals:
            try:
                if asm is not None:
                    asm.startup_s["setup"] = time.perf_counter() - t_run  # before the assembly's own steps
                    asm.open()
                    if mps is not None:  # the engine's CUDA context exists: a client now, or never
                        ran["mps"] = mps.describe()
                    outputs.fps = asm.fps  # filled as the streams open (a job's later ones while it runs)
                    progress = _Progress(cfg.progress, asm.frames_total)
                total.on_count = progress.update
                try:
                    signals.unblock()  # a Ctrl-C or SIGTERM of the start-up is raised here: the run drains
                    try:
                        if asm is not None:
                            failed.update(asm.run())
                        else:
                            from .multigpu import run_multigpu

                            failed.update(run_multigpu(streams, cfg.gpus, cfg, events, sinks))
                    finally:  # the last result is in: closing sources and decode hosts is not run time
                        events.end_clock()
                except (KeyboardInterrupt, RunInterrupted):
                    interrupted = True
                    for key in total.unfinished():
                        events.dropped(key, "interrupted")
                except RunnerError as e:
                    run_error = str(e)
                    failed["<run>"] = run_error
            finally:
                if asm is not None:
                    asm.close()
                    failed = {**asm.failed, **failed}
                progress.close()
                t = time.perf_counter()
                failed.update(outputs.close())  # an output that cannot be written is named; the report still is
                shutdown_outputs = time.perf_counter() - t
        t = time.perf_counter()
        per_stream = {}
        for name, mon in events.streams.items():
            mon.stop()
            per_stream[name] = mon.report()
        if asm is not None:
            asm.stream_reports(per_stream)
        total.stop()
        overall = total.report()
        overall["first_result_since_run_s"] = None if total.t_first is None else total.t_first - t_run
        overall.update(peak.report())
        if outputs.lost_video_frames:
            failed["<save_video>"] = f"{outputs.lost_video_frames} frames had no host image to draw on"
        shutdown_figures = time.perf_counter() - t
        report = Report(cfg.to_dict(), ran, overall, per_stream, failed, outputs.paths,
                        asm.startup_s if asm else {}, interrupted, run_error, chosen=dict(cfg.chosen),
                        notes=asm.notes if asm else {}, startup_overlap_s=asm.startup_overlap_s if asm else {},
                        shutdown_s={**(asm.shutdown_s if asm else {}), "outputs": shutdown_outputs,
                                    "figures": shutdown_figures})
        warning = drop_warning(overall, cfg)
        if warning:
            report.warnings.append(warning)
        if cfg.out:
            report.write(cfg.out)
    except BaseException as e:  # the control learns that the run failed (wait_started raises it)
        if control is not None:
            control.mark_ended(e)
        raise
    if control is not None:
        control.mark_ended()
    return report


def _figures(events: StreamFanout, asm) -> dict:
    """Each stream's figures so far, with what its source counted of itself (a network source's reconnects
    and gaps: as they happen where the run's threads read it; from a decode host, as they change, at most
    every decodehost.COUNTS_EVERY_S, and whole at its end)."""
    out = {name: mon.snapshot() for name, mon in list(events.streams.items())}
    for s in list(asm.sources) if asm is not None else ():
        if s.name in out and s.counts:
            out[s.name]["source"] = dict(s.counts)
    return out


def _forget(names: list, events: StreamFanout, asm, outputs):
    """Drop the finished streams ``names`` from the run's per-stream state (RunControl.forget); the run's
    total keeps their counts."""
    events.forget(names)
    outputs.forget(names)
    if asm is not None:
        asm.forget(names)


def drop_warning(overall: dict, cfg: RunConfig) -> str | None:
    """One line when more than DROP_WARN_SHARE of the frames that came in were dropped: how many, the main
    reason, and what to change (late frames: the device runs fewer frames a second than the sources offer)."""
    n, drops = overall["frames_in"], overall["drops"]
    dropped = sum(drops.values())
    if not n or dropped <= DROP_WARN_SHARE * n:
        return None
    reason = max(drops, key=drops.get)
    line = f"{dropped:,} of {n:,} frames were dropped ({dropped / n:.0%}), most as '{reason}'"
    if reason == "late":
        rate = overall.get("frames_per_s") or 0
        line += (f": the run delivered {rate:,.1f} frames/s, fewer than the sources offered; run fewer streams, "
                 f"a lower --fps or a smaller --imgsz, allow more --late-ms, use --mode archive, or a GPU"
                 + ("" if cfg.device.startswith("cuda") else f" (this run was on {cfg.device})"))
    return line


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
