"""The one assembly of a run on one device: engine, sources (each read where :func:`place` puts it), warm-up,
tracking, process settings and the runner, from a validated RunConfig.

    asm = Assembly(cfg, cfg.device, stream_specs(cfg), events, sinks)
    try:
        asm.open()            # decode hosts start and sources open while the engine loads and captures
        failed = asm.run()    # the runner, under run_settings(); every frame a result or a recorded drop
    finally:
        asm.close()           # sources, decode hosts; asm.shutdown_s says how long each took

``run()`` builds one for a one-device run, each multi-GPU worker one for its shard of the streams (so a
multi-GPU run reads cameras in decode hosts and tracks on its GPUs, as a one-GPU run does), and
each Ray actor one per call for its segments (keeping its pipeline across calls).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .concurrent import Arrivals, run_concurrent, signatures, warm_up
from .config import CONCURRENT, RunConfig
from .sources import (SourceError, announce, decode_threads, host_decodable, is_network, looping, open_source,
                      video_frames)
from .sources.decodehost import SWITCH_INTERVAL_S, open_cpu_in_host
from .sources.nvdec import open_in_host
from .strategies import run_source

OPENERS = 32  # threads opening a run's sources at once (a camera's open waits on the network; a GPU decode
# host opens its NVDEC streams one at a time, its hosts side by side)

# Where a stream is read (Placement.reader)
READER_THREAD = "reader thread"  # a file, folder or the default clip, read by one of the run's reader threads
RUNNER_THREAD = "runner thread"  # a sequential runner's one thread reads its source, then runs it
DECODE_HOST = "decode host"  # a video decoded in a decode host: NVDEC (rows shared by CUDA IPC) or OpenCV


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a run: its source spec, its name, its first frame (a looping copy's offset, an archive
    segment's start) and the most frames it reads (None: all)."""

    spec: str | None
    name: str
    start: int = 0
    max_frames: int | None = None


@dataclass(frozen=True)
class Placement:
    """Where a stream is read (one of READER_THREAD, RUNNER_THREAD, DECODE_HOST), with which decoder ('cpu':
    OpenCV, 'nvdec') and why; the report lists it per stream."""

    reader: str
    decoder: str
    reason: str


def place(cfg: RunConfig, spec: str | None) -> Placement:
    """The one decision of where the stream of ``spec`` is read in a run of ``cfg`` (validated).

    * with decoder 'nvdec', a video file goes to a GPU decode host (images and the default clip have no
      video to decode), paced there when the run is;
    * a sequential runner reads everything else on its one thread;
    * a URL is a camera: OpenCV, with its reconnect and stall handling (network.py), which the NVDEC path
      lacks, in a CPU decode host;
    * a paced stream (``paced``, or live mode) read on the CPU goes to a CPU decode host, where pacing
      lives for every decoder, so the run's own threads decode nothing while frames are due at their time
      (results/DECISIONS.md);
    * everything else is read by the run's reader threads, as fast as it comes."""
    concurrent = cfg.runner in CONCURRENT or cfg.runner == "multigpu"
    video = host_decodable(spec)
    if cfg.decoder == "nvdec" and video and not is_network(spec):
        return Placement(DECODE_HOST, "nvdec", "decoder nvdec: decoded on the GPU in a decode host")
    if not concurrent:
        return Placement(RUNNER_THREAD, "cpu", f"the {cfg.runner} runner reads its sources one after another")
    if is_network(spec):
        return Placement(DECODE_HOST, "cpu", "a camera: OpenCV reconnects it; read apart from the run's threads"
                         + ("" if cfg.decoder == "cpu" else " (NVDEC has no camera reconnect handling)"))
    if cfg.paced or cfg.mode == "live":
        return Placement(DECODE_HOST, "cpu", "paced: released at its frame rate by a decode host, apart from the "
                         "run's threads")
    return Placement(READER_THREAD, "cpu", "a video decoded by OpenCV" if video
                     else "images or the embedded clip: no video to decode")


def stream_specs(cfg: RunConfig) -> list[StreamSpec]:
    """The run's streams (RunConfig.streams), each with its first frame: the r copies of a looping video
    (``repeat``, or a spec given more than once) start spread over it, copy k at frame k * n // r of its n
    frames, and wrap round to its start (looping), so they are r streams of one recording, not one stream
    r times in step: in step, every copy decodes the same frame at the same moment and the video's costlier
    stretches load the host all at once (results/DECISIONS.md). Every other stream starts at frame 0, as
    do all of a run limited by ``max_frames``."""
    streams = cfg.streams()
    starts = {name: 0 for _, name in streams}
    if cfg.loop and cfg.max_frames is None:
        copies: dict = {}
        for spec, name in streams:
            copies.setdefault(spec, []).append(name)
        for spec, names in copies.items():
            n = video_frames(spec) if len(names) > 1 else None
            for k, name in enumerate(names):
                starts[name] = k * n // len(names) if n else 0
    return [StreamSpec(spec, name, starts[name], cfg.max_frames) for spec, name in streams]


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


def batch_sizes(cfg: RunConfig) -> tuple | None:
    """The sizes the run's batches are padded to (PosePipeline.batch_sizes): a paced or live run's batches are
    as large as the frames that arrived in time (every bucket: low latency); over files and folders a
    partial batch is padded to the run's batch, so one capture serves the run (each capture costs seconds
    of cuDNN plan building: results/DECISIONS.md)."""
    if cfg.paced or cfg.mode == "live" or cfg.batch is None:  # None: a config not validated
        return None
    return (1,) if cfg.runner == "serial" else (cfg.batch,)


def make_pipelines(cfg: RunConfig, device: str) -> list:
    """The fused pipeline on ``device`` and, for the replicas runner, its replicas (weights shared). A model
    whose head the pipeline cannot run is a ConfigError of 'model' (or 'end2end')."""
    from ..fusion.backbone import ModelError
    from ..fusion.pipeline import PosePipeline
    from .config import ConfigError

    try:
        pipe = PosePipeline(cfg.model, device, cfg.backend, cfg.precision, cfg.imgsz, cfg.conf, cfg.iou,
                            cuda_graph=cfg.cuda_graph, batch_sizes=batch_sizes(cfg), end2end=cfg.end2end or None,
                            compile=cfg.compile)
    except ModelError as e:  # read from the checkpoint: a bad option all the same
        raise ConfigError(e.option, e.message) from None
    return [pipe] + [pipe.replica() for _ in range((cfg.replicas if cfg.runner == "replicas" else 1) - 1)]


class Assembly:
    """One run on ``device`` of ``streams`` (StreamSpecs) with the options of ``cfg`` (validated; its runner
    one of SEQUENTIAL or CONCURRENT), reporting to ``events`` (RunEvents) and handing results to ``sinks``
    (a callable or BatchSink; with ``cfg.track`` the poses carry their track ids). ``control``: a RunControl steering the run;
    ``pipes``: pipelines built already (a Ray actor's, kept across calls), else built by :meth:`open`;
    ``warmed``: the signatures those pipelines have captured (updated); ``on_added(name, fps)``: called
    for each stream the control adds, once it has opened; ``decode_hosts``: the DecodeHosts the caller
    keeps across runs (a Ray actor's), else the assembly starts its own and closes them.

    After :meth:`open`: ``sources`` (the streams opened so far: a job's later streams join its run as they
    open), ``fps`` ({stream: frame rate}, filled as they open), ``failed`` ({stream: error}), ``notes``
    ({stream: how it was read where that differs from its placement}), ``placements`` ({stream:
    Placement}), ``ran`` (what runs), ``startup_s`` and ``startup_overlap_s``; after :meth:`close`:
    ``shutdown_s``."""

    def __init__(self, cfg: RunConfig, device: str, streams: list, events, sinks, *, control=None, pipes=None,
                 warmed: set | None = None, on_added=None, decode_hosts=None):
        self.cfg, self.device, self.streams, self.events, self.control = cfg, device, list(streams), events, control
        self.on_added = on_added  # on_added(name, fps): a stream a RunControl added has opened
        self.engine = pipes
        self.warmed = warmed if warmed is not None else set()
        self.sources: list = []
        self.fps: dict = {}
        self.failed: dict = {}
        self.notes: dict = {}
        self.placements = {s.name: place(cfg, s.spec) for s in self.streams}
        self.ran = {"runner": cfg.runner, "device": device, "decoder": cfg.decoder}
        self.startup_s: dict = {}
        self.startup_overlap_s: dict = {}
        self.shutdown_s: dict = {}
        self.decode_hosts, self._own_hosts = decode_hosts, decode_hosts is None
        self._opener = None
        self.arrivals = None  # a job's streams that join its run as they open (Arrivals), made by open()
        self.sinks = sinks
        self.tracker = None  # cfg.track: a StreamTracker the pipeline steps with each batch (made by open())
        self._threads = 0
        self._adding = threading.Lock()  # streams open side by side: sources, hosts and on_added under it

    # ---------------------------------------------------------------- sources
    def _hosts(self):
        with self._adding:
            if self.decode_hosts is None:
                from .sources.decodehost import DecodeHosts

                self.decode_hosts = DecodeHosts(pin=self.device.startswith("cuda"),
                                                gpu_streams_per_process=self.cfg.streams_per_decode_host)
            return self.decode_hosts

    def open_stream(self, s: StreamSpec):
        """The Source of stream ``s``, read where its placement says (looping, paced or limited as the config
        says). With decoder 'auto', a video NVDEC cannot open is read with OpenCV and a note says why.
        Raises SourceError."""
        cfg = self.cfg
        where = self.placements.get(s.name)
        if where is None:  # a stream a RunControl adds
            where = self.placements[s.name] = place(cfg, s.spec)
        cuda = self.device.startswith("cuda")
        if where.reader == DECODE_HOST:  # looped, timed and paced there
            common = dict(max_frames=s.max_frames, start=s.start, loop=cfg.loop, duration_s=cfg.duration_s, fps=cfg.fps)
            if where.decoder == "nvdec":
                try:
                    # a paced stream's frames are due at their times: its decoder runs one chunk ahead, not three
                    # (rows: device memory per stream; read-ahead: every stream decoding at the start at once)
                    pool = 2 * cfg.chunk if cfg.paced else None
                    return self._hosts().open(s.name, open_in_host, self.device, cfg.paced, path=s.spec,
                                              chunk=cfg.chunk, pool=pool, **common)
                except SourceError as e:
                    if "decoder" not in cfg.chosen:  # asked for: its error is the stream's
                        raise
                    self.notes[s.name] = f"read with OpenCV: {e}"  # its error, if it fails too, is the source's
            return self._hosts().open(s.name, open_cpu_in_host, None, cfg.paced, spec=s.spec,
                                      reconnect_s=cfg.reconnect_s, threads=self._threads, **common)

        def open_from(first):
            return open_source(s.spec, max_frames=s.max_frames, decoder="cpu", reconnect_s=cfg.reconnect_s,
                               start=first, threads=self._threads, pinned=cuda)

        return looping(open_from, s.name, cfg.loop, cfg.duration_s, cfg.fps, s.start)

    def add_stream(self, spec, name: str, max_frames: int | None = None):
        """A stream a RunControl adds while the run goes on: opened and counted among the sources (on the
        runner's opener threads, several at once)."""
        with self._adding:
            self._threads = decode_threads(len(self.sources) + 1)
        src = self.open_stream(StreamSpec(spec, name, max_frames=max_frames))
        with self._adding:
            self.sources.append(src)
            self.fps[name] = src.fps
            if self.on_added is not None:
                self.on_added(name, src.fps)
        return src

    def forget(self, names):
        """Finished streams of a steered run: their sources (closed) and placements are dropped."""
        gone = set(names)
        with self._adding:
            self.sources = [s for s in self.sources if s.name not in gone]
        for n in gone:
            self.placements.pop(n, None)
        if self.tracker is not None:
            self.tracker.forget(gone)

    def _open_all(self):
        """Opens every stream (on the opener thread), OPENERS at once; each source joins ``sources`` (and the
        arrivals, where the run takes them in as they open) as it opens. ``sources`` ends in the streams'
        order."""
        self._threads = decode_threads(len(self.streams))

        def open_one(s):
            src = None
            try:
                src = self.open_stream(s)
            except SourceError as e:
                self.failed[s.name] = str(e)
            finally:  # another error is the opener's (raised where it is joined); the run waits for none
                if src is not None:
                    with self._adding:
                        self.sources.append(src)
                        self.fps[s.name] = src.fps
                if self.arrivals is not None:
                    self.arrivals.put(src)

        with ThreadPoolExecutor(max(1, min(OPENERS, len(self.streams))), thread_name_prefix="posefuse-open") as pool:
            list(pool.map(open_one, self.streams))
        order = {s.name: i for i, s in enumerate(self.streams)}
        with self._adding:
            self.sources.sort(key=lambda src: order.get(src.name, len(order)))

    def opened(self) -> list:
        """The sources opened so far."""
        with self._adding:
            return list(self.sources)

    def frames_total(self) -> int | None:
        """The frames the run's sources hold: None while streams are still opening, 0 where a count is
        unknown (a camera, a looping stream)."""
        if self._opener is None or not self._opener.done():
            return None
        counts = [s.count for s in self.opened()]
        return sum(counts) if counts and all(counts) else 0

    # ---------------------------------------------------------------- the run
    def open(self):
        """Start the decode hosts and open the sources on a thread of their own while the engine loads
        and captures every batch size the runner makes (before the clock starts). A job's streams (files
        and folders read as fast as they go, by a concurrent runner) join its run as they open; a paced or
        live run's, and a steered run's, are all open before it starts."""
        cfg = self.cfg
        t = time.perf_counter()
        nvdec = sum(p.decoder == "nvdec" for p in self.placements.values())
        if nvdec:  # side by side, while the engine loads
            self._hosts().start(self.device, nvdec)
        concurrent = cfg.runner in CONCURRENT
        if concurrent and not cfg.paced and cfg.mode != "live" and self.control is None:
            self.arrivals = Arrivals(len(self.streams))
        self._opener = _Opener(self._open_all)
        announced = {a for a in (announce(spec, cfg.decoder) for spec in {s.spec for s in self.streams}) if a}
        self._engine()
        self.startup_s["engine"] = time.perf_counter() - t
        t = time.perf_counter()
        if concurrent:  # the shapes the files' headers give, while the sources open
            self._warm(announced)
        self.startup_s["warmup"] = time.perf_counter() - t
        if cfg.track:  # its own entry: the tracker's kernels build (or load from the cache) here
            from ..fusion.tracking import StreamTracker

            t = time.perf_counter()
            self.tracker = StreamTracker(self.device, self.engine[0].max_det)
            self.tracker.warm_up()
            self.startup_s["tracker"] = time.perf_counter() - t
        t = time.perf_counter()
        if self.arrivals is None:
            self._opener.join()
            self.startup_overlap_s["sources_open"] = self._opener.wall_s
        self.startup_s["sources"] = time.perf_counter() - t
        t = time.perf_counter()
        if concurrent:  # those open so far (a later stream of a shape not announced is captured when it comes)
            self._warm(signatures(self.opened()))
        self.startup_s["warmup"] += time.perf_counter() - t

    def _warm(self, sigs: set):
        new = sigs - self.warmed
        warm_up(self.engine, new, self.cfg.batch)
        self.warmed |= new
        if self.ran.get("compile", "off") != "off":  # what the start paid: a compile, or a saved artifact loaded
            self.ran["compile_origin"] = {"x".join(map(str, k)): v for p in self.engine
                                          for k, v in p.compile_origin.items()}

    def _engine(self):
        cfg = self.cfg
        if self.engine is None and cfg.runner == "ultralytics":
            from ..fusion.backbone import load_ultralytics

            self.engine = load_ultralytics(cfg.model)
        elif self.engine is None:
            self.engine = make_pipelines(cfg, self.device)
        if cfg.runner == "ultralytics":
            gpu = self.device.startswith("cuda")
            self.ran.update(backend="ultralytics", precision=cfg.precision if gpu else "fp32")
        else:
            p = self.engine[0]
            self.ran.update(backend=p.backend, precision=p.precision, cuda_graph=p.cuda_graph, compile=p.compile)

    def run(self) -> dict:
        """Run the runner under :func:`run_settings`; returns {stream: error} for the streams that failed
        (those that could not be opened included). The events' clock starts when the runner does."""
        cfg, events = self.cfg, self.events
        with run_settings():
            if cfg.runner in CONCURRENT:
                events.start()
                self.failed.update(run_concurrent(
                    [] if self.arrivals is not None else self.sources, self.engine, events, self.sinks,
                    batch=cfg.batch, max_wait_ms=cfg.max_wait_ms if cfg.runner == "dynamic" else None,
                    late_ms=cfg.late_ms if cfg.mode == "live" else None, control=self.control,
                    open_stream=self.add_stream, openers=OPENERS, tracker=self.tracker, arrivals=self.arrivals))
                if self.arrivals is not None:  # every stream came: the opener has ended (its error is the run's)
                    self._opener.join()
                    self.startup_overlap_s["sources_open"] = self._opener.wall_s
                return self.failed
            on_gpu = self.device.startswith("cuda")
            predict_kw = dict(conf=cfg.conf, iou=cfg.iou, imgsz=cfg.imgsz, device=self.device if on_gpu else "cpu",
                              quantize=16 if on_gpu and cfg.precision == "fp16" else None,
                              nms=False if cfg.end2end else None)  # predict's own switch of the head's branch
            for src in self.sources:
                try:
                    run_source(src, cfg.runner, self.engine if cfg.runner == "ultralytics" else self.engine[0],
                               events, self.sinks, cfg.batch, predict_kw, self.tracker)
                except SourceError as e:
                    self.failed[src.name] = str(e)
                finally:
                    src.close()  # a decode host's stream stops with it
        return self.failed

    def close(self):
        """Close the sources (waiting for the opener first), then the decode hosts (the streams' counts
        are in once they return); seconds per step in ``shutdown_s``."""
        t = time.perf_counter()
        if self._opener is not None:
            self._opener.join(raise_error=False)
        for s in self.sources:
            s.close()
        self.shutdown_s["sources"] = time.perf_counter() - t
        if self._own_hosts and self.decode_hosts is not None:
            t = time.perf_counter()
            steps = self.decode_hosts.close()
            self.shutdown_s["decode_hosts"] = time.perf_counter() - t
            self.shutdown_s.update({f"decode_hosts.{k}": v for k, v in steps.items()})

    def stream_reports(self, per_stream: dict):
        """Adds to each stream's report where it was read and what its source counted of itself (a network
        source's reconnects and gaps)."""
        for name, where in self.placements.items():
            if name in per_stream:
                per_stream[name]["placement"] = dataclasses.asdict(where)
        for s in self.sources:
            if s.name in per_stream and s.counts:
                per_stream[s.name]["source"] = dict(s.counts)


class _Opener:
    """Runs ``open_all`` on a thread of its own, so decode hosts start (spawn, imports, CUDA context,
    decoder open: seconds) while the engine loads and captures."""

    def __init__(self, open_all):
        self.error, self.wall_s = None, 0.0
        self._thread = threading.Thread(target=self._open, args=(open_all,), name="posefuse-open", daemon=True)
        self._thread.start()

    def _open(self, open_all):
        t = time.perf_counter()
        try:
            open_all()
        except BaseException as e:  # noqa: BLE001 - re-raised in the run's thread by join()
            self.error = e
        self.wall_s = time.perf_counter() - t

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, raise_error: bool = True):
        self._thread.join()
        if raise_error and self.error is not None:
            raise self.error
