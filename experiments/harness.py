"""The experiments' small harness: where the sample footage lies, frame readers, the environment line and
the results files. Scripts in experiments/ import it as ``harness`` (their own folder is on sys.path when
run as ``python experiments/x.py``); tests load it by path (tests/helpers.py)."""
from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
CLIP = "one-by-one-person-detection.mp4"  # 768x432, 1394 frames, 10 fps
# experiments/startup.py's user jobs by name, as results/startup.md and the README give them
STARTUP_JOBS = {"a": "one 768x432 clip", "b": "one 1080p clip", "c": "8 clips", "d": "64 frames (fixed cost)",
                "e": "a folder of 50 images", "f": "64 clips as one job (--repeat 64)"}
CLIP_1080 = "one-by-one-person-1080p.mp4"  # 1920x1080, 600 frames


def data_dir() -> Path:
    """``$POSEFUSE_DATA``, else ``../shared/data`` beside the checkout, else ``.offline/data`` (GPU machine)."""
    for cand in (os.environ.get("POSEFUSE_DATA"), ROOT.parent / "shared" / "data", ROOT / ".offline" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    raise FileNotFoundError("sample data: set POSEFUSE_DATA or provide ../shared/data")


def data_path(name: str) -> str:
    return str(data_dir() / name)


@lru_cache(maxsize=8)
def _read_video(path: str, n: int) -> tuple:
    import cv2

    cap = cv2.VideoCapture(path)
    frames = []
    while len(frames) < n:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    if not frames:
        raise RuntimeError(f"could not read frames from {path}")
    return tuple(frames)


def read_video(path: str, n: int) -> list:
    """The first ``n`` frames of a video as BGR uint8 arrays (OpenCV; cached)."""
    return list(_read_video(path, n))


def read_gif(path: str) -> list:
    import cv2
    import numpy as np
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [cv2.cvtColor(np.asarray(f.convert("RGB")), cv2.COLOR_RGB2BGR) for f in ImageSequence.Iterator(im)]


def asset_images() -> list:
    """The images shipped in the ultralytics wheel (bus.jpg, zidane.jpg)."""
    import cv2
    import ultralytics

    d = Path(ultralytics.__file__).parent / "assets"
    return [cv2.imread(str(p)) for p in sorted(d.glob("*.jpg"))]


def environment() -> dict:
    """Card, driver, library versions and date, written beside every recorded figure."""
    from posefuse.runners.gpuinfo import environment as env

    import posefuse

    return {**env(), "posefuse": posefuse.__version__}


def append_run(path: Path, run: dict) -> list:
    """Append ``run`` to the {"runs": [...]} document at ``path`` (history is kept); returns all runs. A run
    recorded before (the same environment date) is replaced: a bench that records as it goes leaves what it
    measured when it is stopped."""
    doc = json.loads(path.read_text()) if path.exists() else {"runs": []}
    date = run.get("env", {}).get("date")
    doc["runs"] = [r for r in doc["runs"] if date is None or r.get("env", {}).get("date") != date] + [run]
    path.write_text(json.dumps(doc, indent=1))
    return doc["runs"]


def new_run(script: str, argv, **fields) -> dict:
    """A results record: the environment, the command that made it (``script`` and its arguments), and
    ``fields``."""
    import sys

    args = argv if argv is not None else sys.argv[1:]
    return {"env": environment(), "command": f"python experiments/{script} " + " ".join(args), **fields}


def usage_stat(usage: dict | None, quantity: str, stat: str = "mean"):
    """``stat`` ('mean' or 'max') of ``quantity`` (e.g. 'gpu_util_percent') in a report's ``usage``
    (gpuinfo.UsageSampler.summary), None where it was not sampled."""
    return ((usage or {}).get(quantity) or {}).get(stat)


def decode_hosts() -> list:
    """This process's spawned children that are alive (psutil Processes): its decode hosts, and any other
    process it spawned (not the resource tracker, nor ffmpeg cameras; an exited host not yet reaped is left
    out)."""
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def cpu_seconds(procs) -> float:
    """User and system CPU seconds of psutil Processes ``procs`` so far (one that has gone counts nothing)."""
    import psutil

    t = 0.0
    for p in procs:
        try:
            c = p.cpu_times()
            t += c.user + c.system
        except psutil.Error:
            pass
    return t


def under_mps() -> bool:
    """Whether this process's CUDA work goes through an MPS server: CUDA_MPS_PIPE_DIRECTORY names a folder
    holding a control daemon's pipe (gpu_run.sh's mps step starts one there; posefuse.runners.mps.join points
    the variable at the daemon it joins or starts)."""
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY")
    return bool(pipe) and (Path(pipe) / "control").exists()


def run_heading(run: dict, extra: str = "") -> list:
    """The markdown lines that head one run: date, card, driver and torch (``extra`` after; the ``checkout``
    measured where it is not the code as it stands), the command, and the run's ``note`` (what was learnt
    after it was recorded) where it has one."""
    env = run["env"]
    return [f"## {env.get('date')}: {env.get('card', 'CPU')}, driver {env.get('driver')}, torch {env.get('torch')}"
            + extra + (f", checkout {run['checkout']}" if run.get("checkout") else ""), "",
            f"Command: `{run['command']}`", "", *([f"Note: {run['note']}", ""] if run.get("note") else [])]


def record(out_dir: str | Path, name: str, run: dict, markdown) -> list:
    """Append ``run`` to ``<out_dir>/<name>.json`` and rewrite ``<name>.md`` as ``markdown(runs)``."""
    res = Path(out_dir)
    res.mkdir(parents=True, exist_ok=True)
    runs = append_run(res / f"{name}.json", run)
    (res / f"{name}.md").write_text(markdown(runs))
    return runs


def pipeline_frames_per_s(pipe, sets: list, calls: int) -> float:
    """Frames/s of ``pipe`` (a PosePipeline) over ``calls`` batches taken from ``sets`` in turn, two in flight
    (the next batch submitted before the last one's poses are read back), as a run keeps it busy."""
    t = time.perf_counter()
    pending = None
    for k in range(calls):
        nxt = pipe.submit(sets[k % len(sets)])
        if pending is not None:
            pending.result()
        pending = nxt
    pending.result()
    return calls * len(sets[0]) / (time.perf_counter() - t)


def cuda_median_ms(fn, iters: int = 20, warmup: int = 3) -> float:
    """Median of per-call device times in ms, measured with CUDA events around each call."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def decoders_alone(r: dict) -> str:
    """NVDEC alone as a table cell: threads in one process, and one process per stream when measured; the
    NVDEC engines' mean use where it was sampled."""
    cell = f"{r['nvdec_alone']['frames_per_s']:,.0f}"
    if "nvdec_processes_alone" in r:
        cell += f" / {r['nvdec_processes_alone']['frames_per_s']:,.0f} (threads / processes)"
    if r["nvdec_alone"].get("nvdec_util_mean") is not None:
        cell += f" (NVDEC {r['nvdec_alone']['nvdec_util_mean']:.0f}%)"
    return cell


def realtime_clips(rt: dict) -> dict:
    """{clip: {"rows": [{"streams", "runs": [...]}], ...}} of a runners_bench real-time record; records made
    before runs were repeated per S and per clip held one list of rows of the 768x432 clip."""
    return rt.get("clips") or {"768x432": {"rows": [{"streams": x["streams"], "runs": [x]} for x in rt["rows"]],
                                           "max_streams_p99_le_50ms": rt.get("max_streams_p99_le_50ms")}}


def realtime_held(runs: list, fps: float = 30.0) -> bool:
    """S live streams hold when every run of them has p99 <= 50 ms from release to result, no drop, no
    failed source, and keeps up with what the streams offer (>= 95% of S x ``fps``: a stream that falls
    behind shows in its latency, counted from each frame's due time, and in its rate too)."""
    return all(r["latency_ms"]["p99"] <= 50 and not r["drops"] and not r.get("failed")
               and r["frames_per_s"] >= 0.95 * fps * r["streams"] for r in runs)
