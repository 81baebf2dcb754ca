"""Video archives on Ray Data: work items are video segments, decoded inside the pose actors; poses go to
Parquet.

    posefuse archive --source 'archive/**/*.mp4' --out poses/ [--address auto] [--actors 4] [--gpus-per-actor 1]
    summary = posefuse.runners.archive.archive(ArchiveConfig(RunConfig(sources=[...]), out_dir="poses/"))

The job's configuration is a RunConfig (the sources, and the decoding and pipeline of every actor, validated
by its rules) plus the job's own fields (ArchiveConfig).

Rows of the dataset are (video, segment, start, end) in frames, not frames: an actor decodes its own
segment (NVDEC where PyNvVideoCodec and a GPU are, else OpenCV; either seeks to ``start``) and runs the
fused pipeline on it, so no frame crosses the object store. Long videos are cut at keyframes into segments of
about ``segment_frames`` so that many actors share one video; every
frame lands in exactly one segment, and within it in order. :class:`PoseActor` is the map_batches UDF
(a callable class, one pipeline per actor) for a user's own Ray Data pipeline.

Each segment is written as ``<out_dir>/<video key>/<segment>.parquet`` (a temporary file renamed into place),
one row per detection: video, frame, timestamp, box (x1, y1, x2, y2), score, keypoints (17 x (x, y,
visibility), flat); a segment's frame count, frames with no detection included, is in the file's metadata
and the summary. A segment retried after its actor died replaces its file, so the output holds each frame
once; a rerun skips the segments whose file exists. An unreadable video is reported in the summary and the
rest go on.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import ConfigError, RunConfig, at_least

SEGMENT_FRAMES = 1024  # a work item's length: a 30 fr/s hour is 106 items, a 1,394-frame clip 2 (700 + 694)
SEGMENTS_PER_CALL = 8  # segments an actor runs at once (the map_batches batch size; results/DECISIONS.md)
# RunConfig options an archive job does not take ({name: the value it must keep}): its segments are files
# read as fast as they go
NOT_ARCHIVE = {"repeat": 1, "max_frames": None, "mode": "archive", "paced": False, "fps": None, "loop": False,
               "duration_s": None, "gpus": None, "track": False, "out": None, "save_json": None, "save_coco": None,
               "save_video": None}
CONNECT_TIMEOUT_S = 5.0  # a cluster's address must take a connection within this long (not measured: a bound)
SCHEMA_VERSION = 1
COLUMNS = ("video", "frame", "timestamp", "box", "score", "keypoints")


@dataclass
class ArchiveConfig:
    """One archive job: ``run``, the RunConfig of the job (its ``sources``: video files or glob patterns,
    '**' recursing; its decoder, device, model, backend, precision, imgsz, conf, iou, batch and cuda_graph:
    each actor's; 'auto' decoder: NVDEC where the actor has it, a video NVDEC cannot open read with OpenCV;
    each actor runs the dynamic runner), plus the job's own fields:

    out_dir: the output folder (created). address: the Ray cluster ('auto': a running one; None: start a
    local one). actors: pose actors (default: one per GPU of the cluster, else 2). gpus_per_actor: GPUs each
    actor holds (default: 1 where the cluster has GPUs, else 0). segment_frames: a work item's length, frames
    (>= 1; cuts fall on keyframes). segments_per_call: segments an actor runs at once, as streams of one
    batcher (>= 1; the map_batches batch size). max_restarts: times Ray restarts a dead actor (its segment is
    retried on the new one).
    """

    run: RunConfig = field(default_factory=RunConfig)
    out_dir: str = "poses"
    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    segment_frames: int = SEGMENT_FRAMES
    segments_per_call: int = SEGMENTS_PER_CALL
    max_restarts: int = 3

    def check(self):
        """Raises ConfigError naming the option: the run's own rules (RunConfig.check), the options an archive
        job does not take, and the job's fields."""
        self.run.check()
        for name, default in NOT_ARCHIVE.items():
            if getattr(self.run, name) != default:
                raise ConfigError(name, "is not an option of an archive job (its segments run as fast as they go)")
        if self.run.runner not in ("auto", "dynamic"):
            raise ConfigError("runner", f"an archive job's actors run the dynamic runner, got {self.run.runner!r}")
        at_least("segment_frames", self.segment_frames, 1)
        at_least("segments_per_call", self.segments_per_call, 1)
        at_least("max_restarts", self.max_restarts, 0)
        if self.actors is not None:
            at_least("actors", self.actors, 1)
        if self.gpus_per_actor is not None and not self.gpus_per_actor >= 0:
            raise ConfigError("gpus_per_actor", f"expected GPUs >= 0, got {self.gpus_per_actor!r}")


def video_key(path: str) -> str:
    """The output folder name of a video: its file name and a short hash of its absolute path (two
    videos of one name in different folders do not collide)."""
    ab = os.path.abspath(path)
    return f"{Path(ab).stem}-{hashlib.sha1(ab.encode()).hexdigest()[:8]}"


def expand(sources: list) -> list[str]:
    """The video files of ``sources`` (files and glob patterns), sorted, each once."""
    out: list = []
    for s in sources:  # a pattern gives the files it matches; a plain path stays (segments() reports it)
        out += [h for h in sorted(glob.glob(s, recursive=True)) if os.path.isfile(h)] if glob.has_magic(s) else [s]
    return list(dict.fromkeys(out))


def segments(videos: list[str], segment_frames: int) -> tuple[list[dict], dict]:
    """Work items [(video, key, segment, start, end)] and {video: why} for the videos that cannot be read. A
    video of n frames is cut into ceil(n / segment_frames) segments of about equal length (so the segments an
    actor runs at once end together), each cut moved to the keyframe nearest it, where a decoder seeking to
    the segment's start begins afresh; a video whose keyframes the container does not list is one segment."""
    import cv2

    from .sources.keyframes import keyframes

    if segment_frames < 1:
        raise ValueError(f"segment_frames: expected >= 1, got {segment_frames}")
    rows, failed = [], {}
    for v in videos:
        cap = cv2.VideoCapture(v)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        ok = cap.isOpened() and cap.read()[0]
        cap.release()
        if not os.path.isfile(v):
            failed[v] = "no such file"
        elif not ok or n <= 0:
            failed[v] = "OpenCV could not read it (not a video, a missing codec, or no frame count)"
        else:
            key, cuts = video_key(v), cut_at_keyframes(n, segment_frames, keyframes(v))
            rows += [{"video": v, "key": key, "segment": k, "start": a, "end": b}
                     for k, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    return rows, failed


def cut_at_keyframes(n: int, segment_frames: int, keys: list[int] | None) -> list[int]:
    """The segment bounds [0, ..., n] of a video of ``n`` frames: as few segments as fit ``segment_frames``,
    of equal length, each inner cut moved to the nearest keyframe of ``keys`` (None: no inner cut)."""
    if not keys:
        return [0, n]
    import bisect

    keys = [k for k in keys if 0 < k < n]
    parts = -(-n // segment_frames)
    cuts = [0]
    for target in (n * k // parts for k in range(1, parts)):
        i = bisect.bisect_left(keys, target)
        near = min(keys[max(i - 1, 0):i + 1], key=lambda k: (abs(k - target), k), default=None)
        if near is not None and near > cuts[-1]:
            cuts.append(near)
    return cuts + [n]


def segment_path(out: str, key: str, segment: int) -> Path:
    return Path(out) / key / f"{segment:06d}.parquet"


class PoseActor:
    """The Ray Data map_batches UDF: ``ds.map_batches(PoseActor, fn_constructor_kwargs={"out_dir": ..., "run":
    RunConfig(...)}, batch_size=SEGMENTS_PER_CALL, concurrency=N, num_gpus=1)`` over rows of :func:`segments`. A
    call runs its rows' segments at once, as streams of one dynamic batcher (the package's concurrent runner, as
    ``posefuse run`` runs several files), so one segment's decode overlaps the others' and the GPU's work; then it
    writes each segment's Parquet file and returns a summary row per segment (video, segment, frames, detections,
    skipped, error, actor, and the call's id, clock and warm-up seconds). ``crash_once``: a path; the first actor
    to reach the middle of the segment named by ``crash_segment`` creates it and dies (os._exit), the
    fault-injection hook for tests of Ray's retries."""

    def __init__(self, out_dir: str, run: RunConfig, crash_once: str | None = None, crash_segment: tuple | None = None):
        import dataclasses

        from .assembly import make_pipelines

        self.out = out_dir
        # the job's run config and pipeline: partial batches padded to its batch, one graph capture per shape
        self.cfg = dataclasses.replace(run, runner="dynamic", progress=False).validated()
        self.pipe = make_pipelines(self.cfg, self.cfg.device)[0]
        self.warmed: set = set()
        self.calls = 0
        self.crash_once, self.crash_segment = crash_once, tuple(crash_segment) if crash_segment else None
        self.actor = str(os.getpid())  # outside Ray (a plain call): the process
        try:
            import ray
        except ImportError:
            ray = None
        if ray is not None and ray.is_initialized():  # get_runtime_context() would start a local Ray instance
            self.actor = ray.get_runtime_context().get_actor_id() or self.actor

    def __call__(self, rows: dict) -> dict:
        items = [(str(rows["video"][i]), str(rows["key"][i]), int(rows["segment"][i]), int(rows["start"][i]),
                  int(rows["end"][i])) for i in range(len(rows["video"]))]
        done = self.run_segments(items)
        keys = ("video", "segment", "frames", "detections", "skipped", "error", "actor", "decoder", "call", "call_s",
                "warmup_s")
        return {k: [r[k] for r in done] for k in keys}

    def run_segments(self, items: list[tuple]) -> list[dict]:
        """Segments [(video, key, segment, start, end)] to their Parquet files, all at once, through the run's
        one Assembly (assembly.py) with this actor's pipeline; a segment whose file exists is skipped (a
        rerun). Returns a summary row per segment, in the order given."""
        import pyarrow.parquet as pq

        from .assembly import Assembly, StreamSpec
        from .events import StreamFanout
        from .monitor import PerformanceMonitor

        self.calls += 1
        call = f"{self.actor}:{self.calls}"
        res, todo, streams = {}, {}, []
        for video, key, segment, start, end in items:
            name = f"{key}/{segment:06d}"
            r = res[name] = {"video": video, "segment": segment, "frames": 0, "detections": 0, "skipped": False,
                             "error": None, "actor": self.actor, "decoder": self.cfg.decoder, "call": call,
                             "call_s": 0.0, "warmup_s": 0.0}
            path = segment_path(self.out, key, segment)
            if path.exists():
                meta = pq.read_schema(path).metadata or {}
                r.update(skipped=True, frames=int(meta.get(b"posefuse.frames", b"0")),
                         detections=pq.ParquetFile(path).metadata.num_rows)
                continue
            streams.append(StreamSpec(video, name, start, end - start))
            todo[name] = (path, key, segment, start, end, {c: [] for c in COLUMNS})
        if not streams:
            return [res[f"{k}/{s:06d}"] for _, k, s, _, _ in items]
        events = StreamFanout(PerformanceMonitor(usage=False), lambda: PerformanceMonitor(usage=False, timeline=False))

        def collect(fr):
            path, key, segment, start, end, cols = todo[fr.stream]
            if self.crash_once and (key, segment) == self.crash_segment and fr.index > (start + end) // 2:
                self._crash()
            for b, s, k in zip(fr.poses.boxes, fr.poses.scores, fr.poses.keypoints):
                cols["video"].append(res[fr.stream]["video"])
                cols["frame"].append(fr.index)
                cols["timestamp"].append(fr.timestamp)
                cols["box"].append([float(v) for v in b])
                cols["score"].append(float(s))
                cols["keypoints"].append([float(v) for v in k.reshape(-1)])

        asm = Assembly(self.cfg, self.cfg.device, streams, events, collect, pipes=[self.pipe], warmed=self.warmed,
                       decode_hosts=self._decode_hosts())
        try:
            asm.open()
            failed = asm.run()
        finally:
            events.end_clock()
            asm.close()
        warmup_s = asm.startup_s.get("warmup", 0.0)
        call_s = events.total.report()["wall_s"]
        for name, (path, key, segment, start, end, cols) in todo.items():
            r, mon = res[name], events.streams.get(name)
            got = mon.results if mon is not None else 0
            r.update(frames=got, detections=len(cols["frame"]), call_s=call_s, warmup_s=warmup_s)
            if name in asm.notes:  # NVDEC could not open it: read with OpenCV
                r["decoder"] = "cpu"
            if name in failed:
                r["error"] = failed[name]
            elif mon is not None and mon.drops:
                r["error"] = f"source {r['video']}: segment {segment} dropped frames: {dict(mon.drops)}"
            elif got != end - start:
                r["error"] = f"source {r['video']}: segment {segment} gave {got} of its {end - start} frames"
            else:
                self._write(path, cols, got, start, end)
        return [res[f"{k}/{s:06d}"] for _, k, s, _, _ in items]

    def _decode_hosts(self):
        """The decode hosts this actor keeps across its calls, its GPU host warm (none without NVDEC)."""
        if self.cfg.decoder != "nvdec":
            return None
        from .sources.decodehost import default_decode_hosts

        return default_decode_hosts()

    def _write(self, path: Path, cols: dict, frames: int, start: int, end: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("video", pa.string()), ("frame", pa.int64()), ("timestamp", pa.float64()),
                            ("box", pa.list_(pa.float32(), 4)), ("score", pa.float32()),
                            ("keypoints", pa.list_(pa.float32(), 51))],
                           metadata={"posefuse.frames": str(frames), "posefuse.start": str(start),
                                     "posefuse.end": str(end), "posefuse.schema": str(SCHEMA_VERSION)})
        table = pa.table(cols, schema=schema)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)  # a retried segment replaces the file; a reader never sees half of one

    def _crash(self):
        try:
            fd = os.open(self.crash_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # crashed once already: this is the retry
        os.close(fd)
        os._exit(1)


def archive(cfg: ArchiveConfig, actor_kwargs: dict | None = None) -> dict:
    """Run the archive job ``cfg`` on Ray Data; returns (and writes as ``<out_dir>/summary.json``) the summary:
    per video frames, detections and segments, failures, frames/s overall and per actor. Raises ConfigError
    for a bad option. ``actor_kwargs``: more PoseActor arguments (its fault-injection hook, for tests)."""
    import dataclasses

    import ray

    cfg.check()
    videos = expand(cfg.run.sources)
    if not videos:
        raise ConfigError("sources", f"no video files match {cfg.run.sources}")
    rows, failed = segments(videos, cfg.segment_frames)
    t0 = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, cfg.address)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)  # once a cluster answers: no empty folder left behind
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        per_actor = cfg.gpus_per_actor if cfg.gpus_per_actor is not None else (1 if gpus else 0)
        actors = cfg.actors or (max(1, int(gpus / per_actor)) if per_actor else 2)
        device = cfg.run.device or ("cuda" if per_actor else "cpu")
        if cfg.run.decoder == "nvdec" and not device.startswith("cuda"):
            raise ConfigError("decoder", f"'nvdec' decodes into GPU memory: the actors need a GPU, got device "
                                         f"{device!r}")
        run = dataclasses.replace(cfg.run, device=device, sources=[None])  # each call names its own segments
        # a call takes at most its share of the segments, so every actor gets some (8 to a call left one of
        # two actors idle with 3 segments: issue 33)
        per_call = max(1, min(cfg.segments_per_call, -(-len(rows) // actors)))
        done, interrupted = [], False
        if rows:
            ctx = ray.data.DataContext.get_current()  # the command line prints its own summary: no progress log
            ctx.enable_progress_bars = ctx.print_on_execution_start = False
            ds = ray.data.from_items(rows, override_num_blocks=len(rows))
            ds = ds.map_batches(PoseActor, fn_constructor_kwargs={"out_dir": cfg.out_dir, "run": run,
                                                                  **(actor_kwargs or {})},
                                batch_size=per_call, concurrency=actors, num_gpus=per_actor, num_cpus=1,
                                max_restarts=cfg.max_restarts, max_task_retries=cfg.max_restarts)
            try:
                done = ds.take_all()
            except KeyboardInterrupt:  # Ctrl-C: the summary holds the segments whose files were written
                interrupted, done = True, _written(cfg.out_dir, rows)
    finally:
        if started_here:
            ray.shutdown()
    wall = time.perf_counter() - t0
    return _summary(cfg, videos, rows, done, failed, wall, actors, device, interrupted)


def _written(out_dir: str, rows: list) -> list:
    """Summary rows of the segments of ``rows`` whose Parquet file is in ``out_dir`` (an interrupted job)."""
    import pyarrow.parquet as pq

    done = []
    for r in rows:
        path = segment_path(out_dir, r["key"], r["segment"])
        if path.exists():
            meta = pq.read_schema(path).metadata or {}
            done.append({"video": r["video"], "segment": r["segment"], "skipped": True, "error": None,
                         "frames": int(meta.get(b"posefuse.frames", b"0")),
                         "detections": pq.ParquetFile(path).metadata.num_rows})
    return done


def _connect(ray, address: str | None):
    """``ray.init`` of ``address`` ('auto', HOST:PORT, or None: a local cluster); a cluster that does not answer
    is a ConfigError naming the address within CONNECT_TIMEOUT_S (Ray itself waits minutes on a dead port)."""
    if address and address != "auto":
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except (OSError, ValueError) as e:
            raise ConfigError("address", f"no Ray cluster answers at {address} ({e})") from None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except ConnectionError as e:
        raise ConfigError("address", f"no Ray cluster at {address!r}: {str(e).splitlines()[0]}") from None


def _summary(cfg, videos, rows, done, failed, wall, actors, device, interrupted: bool = False) -> dict:
    def zero():
        return {"frames": 0, "detections": 0, "segments": 0, "skipped": 0}

    per_video: dict = {v: zero() for v in videos if v not in failed}
    per_actor: dict = {}
    for d in done:
        v = per_video.setdefault(d["video"], zero())
        if d["error"]:
            failed[d["video"]] = d["error"]
            continue
        v["frames"] += int(d["frames"])
        v["detections"] += int(d["detections"])
        v["segments"] += 1
        v["skipped"] += bool(d["skipped"])
        if not d["skipped"]:
            a = per_actor.setdefault(d["actor"], {"frames": 0, "seconds": 0.0, "warmup_s": 0.0, "calls": {},
                                                  "decoders": {}})
            a["decoders"][d["decoder"]] = a["decoders"].get(d["decoder"], 0) + 1  # segments per decoder
            a["frames"] += int(d["frames"])
            a["calls"][d["call"]] = (float(d["call_s"]), float(d["warmup_s"]))  # one clock per call, not per segment
    for a in per_actor.values():
        calls = a.pop("calls").values()
        a["seconds"], a["warmup_s"], a["calls"] = sum(c for c, _ in calls), sum(w for _, w in calls), len(calls)
    frames = sum(v["frames"] for v in per_video.values())
    summary = {"config": asdict(cfg), "videos": per_video, "failed": failed, "segments": len(rows),
               "frames": frames, "wall_s": wall, "frames_per_s": frames / wall if wall else None,
               "actors": actors, "device": device, "interrupted": interrupted,
               "per_actor": {k: {**a, "frames_per_s": a["frames"] / a["seconds"] if a["seconds"] else None}
                             for k, a in per_actor.items()}}
    (Path(cfg.out_dir) / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
