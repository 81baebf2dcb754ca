"""The tracking issue's figures on one card, in one process (start-up: in fresh processes), for the checkout
imported (``PYTHONPATH=.old`` measures an old one beside this; ``--checkout`` labels it):

* e2e: ``--streams`` NVDEC streams of a clip through ``posefuse.run``, without and with ``track``, the two
  alternated ``--repeats`` times (the median of each reported, every run kept), on the sample clip and on the
  crowded clip (experiments/crowd_clip.py: a 4x4 mosaic, ~12 people a frame);
* tracker: ByteTrackBatch (CuPy) per frame at 8 streams x 64 frames of the crowded clip's detections (the
  GPU pipeline's), against Ultralytics' BYTETracker (bytetrack.yaml) fed the same detections frame by frame;
* start: a one-clip ``posefuse run`` job as a fresh process with and without ``--track``, first with an
  empty CuPy kernel cache (cold: the tracker's kernels compile) and then with the cache it left (warm); the
  report's start-up split gives the tracker's share.

    python experiments/track_bench.py [--crowd PATH] [--only e2e,tracker,start] [--repeats 5]
                                      [--checkout LABEL] [--out-dir results]   -> results/track_e2e.{json,md}

Targets (tracking issue): e2e with track >= 0.95 of without on both clips; tracker >= 50x Ultralytics per
frame; a warm start adds <= 0.3 s for tracking.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import harness

SAMPLE = "one-by-one-person-detection.mp4"
CROWD = "crowd-mosaic-1080p.mp4"  # made by crowd_clip.mosaic_path where it is missing (needs ffmpeg)
TARGETS = {"e2e_ratio": 0.95, "tracker_over_ultralytics": 50.0, "warm_tracker_s": 0.3}


def crowd_path(path: str | None, frames: int) -> str:
    """``path``, else the data folder's crowded clip; either made first where it is missing (needs ffmpeg)."""
    import crowd_clip

    if path is None:
        return crowd_clip.mosaic_path(CROWD, frames)
    if not Path(path).exists():
        crowd_clip.make_mosaic(CROWD, path, frames)
    return str(path)


def e2e(path: str, streams: int, batch: int, track: bool) -> dict:
    """``streams`` NVDEC streams of ``path``, each read once."""
    from posefuse import RunConfig, run

    rep = run(RunConfig(sources=[path], repeat=streams, decoder="nvdec", batch=batch, track=track, progress=False))
    r = rep.overall
    return {"track": track, "frames": r["results"], "frames_per_s": r["frames_per_s"], "wall_s": r.get("wall_s"),
            "gpu_util_mean": harness.usage_stat(r.get("usage"), "gpu_util_percent"),
            "nvdec_util_mean": harness.usage_stat(r.get("usage"), "nvdec_util_percent"),
            "startup_s": rep.startup_s, "failed": rep.failed, "drops": r["drops"]}


def e2e_pair(path: str, streams: int, batch: int, repeats: int) -> dict:
    """Without and with tracking, alternated (a host drifts within a call); the median run of each."""
    runs = {False: [], True: []}
    for _ in range(repeats):
        for track in (False, True):
            runs[track].append(e2e(path, streams, batch, track))
            print(Path(path).name, "track" if track else "plain", f"{runs[track][-1]['frames_per_s']:.0f} fr/s",
                  flush=True)
    med = {k: sorted(v, key=lambda x: x["frames_per_s"])[len(v) // 2] for k, v in runs.items()}
    return {"without": med[False], "with": med[True], "ratio": med[True]["frames_per_s"] / med[False]["frames_per_s"],
            "runs_frames_per_s": {"without": [x["frames_per_s"] for x in runs[False]],
                                  "with": [x["frames_per_s"] for x in runs[True]]}}


def crowd_detections(path: str, streams: int, frames: int):
    """(boxes, scores, counts) on the GPU for streams x frames rows (row f * streams + s: frame f of stream s,
    stream s starting at frame s * frames / 2 of the clip) and the rows as host arrays."""
    import torch

    from posefuse import PosePipeline

    pipe = PosePipeline(device="cuda")
    clip = harness.read_video(path, (streams + 1) * frames // 2)
    seqs = [clip[s * frames // 2: s * frames // 2 + frames] for s in range(streams)]
    rows = [seqs[s][f] for f in range(frames) for s in range(streams)]
    M = pipe.max_det
    boxes, scores = torch.zeros(len(rows), M, 4, device="cuda"), torch.zeros(len(rows), M, device="cuda")
    counts, host = torch.zeros(len(rows), dtype=torch.int32, device="cuda"), []
    for i in range(0, len(rows), 64):
        for b, r in enumerate(pipe(rows[i:i + 64]), start=i):
            bx, sc = np.asarray(r.boxes, np.float32), np.asarray(r.scores, np.float32)
            boxes[b, :len(bx)], scores[b, :len(sc)], counts[b] = torch.from_numpy(bx), torch.from_numpy(sc), len(bx)
            host.append((bx, sc))
    return boxes, scores, counts, [s for _ in range(frames) for s in range(streams)], host, clip[0].shape[:2]


def tracker(path: str, streams: int = 8, frames: int = 64, calls: int = 20) -> dict:
    import torch
    from ultralytics.engine.results import Boxes
    from ultralytics.cfg import get_cfg
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import ROOT

    from posefuse.kernels.track import ByteTrackBatch

    boxes, scores, counts, stream, host, hw = crowd_detections(path, streams, frames)
    n = len(stream)
    people = float(np.mean([len(b) for b, _ in host]))
    ours = ByteTrackBatch(streams, boxes.shape[1], "cuda", backend="cupy")
    ours.update(boxes, scores, counts, stream)  # kernels built, state warm
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        ours.update(boxes, scores, counts, stream)
    torch.cuda.synchronize()
    ours_s = (time.perf_counter() - t) / calls
    cfg = get_cfg(ROOT / "cfg/trackers/bytetrack.yaml")
    theirs = [BYTETracker(cfg) for _ in range(streams)]
    data = [Boxes(np.c_[b, s, np.zeros(len(s))].astype(np.float32).reshape(-1, 6), hw) for b, s in host]
    t = time.perf_counter()
    for s, d in zip(stream, data):
        theirs[s].update(d)
    theirs_s = time.perf_counter() - t
    return {"streams": streams, "frames": frames, "people_per_frame": people,
            "ours_ms_per_call": ours_s * 1e3, "ours_us_per_frame": ours_s / n * 1e6,
            "ultralytics_us_per_frame": theirs_s / n * 1e6, "over_ultralytics": theirs_s / ours_s}


def start(path: str, frames: int) -> dict:
    """One-clip jobs as fresh processes: plain, then tracked with an empty kernel cache (cold), then both
    again on the cache left behind (warm). Each job's report gives its start-up split."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CUPY_CACHE_DIR": str(Path(tmp) / "cupy")}
        for label, track in (("plain_cold", False), ("track_cold", True), ("plain_warm", False),
                             ("track_warm", True)):
            report = Path(tmp) / f"{label}.json"
            cmd = [sys.executable, "-m", "posefuse.runners.cli", "run", "--source", path, "--max-frames", str(frames),
                   "--out", str(report), "--no-progress"] + (["--track"] if track else [])
            t = time.perf_counter()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t
            rep = json.loads(report.read_text()) if report.exists() else {}
            out[label] = {"wall_s": wall, "rc": p.returncode, "startup_s": rep.get("startup_s"),
                          **({"stderr": p.stderr[-600:]} if p.returncode else {})}
            print("start", label, f"{wall:.2f} s", rep.get("startup_s"), flush=True)
    return out


def markdown(runs: list) -> str:
    out = ["# Tracking end to end, the tracker on crowds, and its start-up", "",
           "experiments/track_bench.py: NVDEC streams through `posefuse.run` without and with `track` (alternated, "
           "median of each); ByteTrackBatch per frame against Ultralytics' BYTETracker on the crowded clip's "
           "detections; one-clip jobs as fresh processes with an empty and a warm CuPy kernel cache.", ""]
    for r in reversed(runs):
        out += harness.run_heading(r, f"; checkout {r.get('checkout') or r.get('commit') or 'this one'}")
        if r.get("e2e"):
            out += ["| clip | streams | without track | with track | ratio of medians (target >= 0.95) | "
                    "each round's ratio (a host that drifts shows here) |", "| --- | ---: | ---: | ---: | ---: | --- |"]
            for clip, e in r["e2e"].items():
                rounds = ", ".join(f"{w / o:.2f}" for o, w in zip(e["runs_frames_per_s"]["without"],
                                                                   e["runs_frames_per_s"]["with"]))
                out.append(f"| {clip} | {r['streams']} | {e['without']['frames_per_s']:,.0f} fr/s | "
                           f"{e['with']['frames_per_s']:,.0f} fr/s | {e['ratio']:.3f} | {rounds} |")
            out.append("")
        if r.get("tracker"):
            t = r["tracker"]
            out += [f"Tracker, {t['streams']} streams x {t['frames']} frames of the crowded clip "
                    f"({t['people_per_frame']:.1f} detections a frame): ByteTrackBatch {t['ours_ms_per_call']:.3f} ms "
                    f"a call, {t['ours_us_per_frame']:.2f} us a frame; Ultralytics {t['ultralytics_us_per_frame']:.1f} "
                    f"us a frame: **{t['over_ultralytics']:.1f}x** (target >= 50x).", ""]
        if r.get("start"):
            out += ["| one-clip job | wall s | start-up split (s) |", "| --- | ---: | --- |"]
            for k, v in r["start"].items():
                split = ", ".join(f"{a} {b:.2f}" for a, b in (v.get("startup_s") or {}).items())
                out.append(f"| {k} | {v['wall_s']:.2f} | {split or 'rc ' + str(v['rc'])} |")
            out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crowd", default=None, help=f"the crowded clip (default: {CROWD} in the data folder, made "
                                                  "there with ffmpeg when missing)")
    ap.add_argument("--crowd-frames", type=int, default=600, help="frames of the crowded clip when it is made")
    ap.add_argument("--only", default="e2e,tracker,start")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="e2e: rounds of (without, with), alternated")
    ap.add_argument("--start-frames", type=int, default=100, help="start: frames of the one-clip job")
    ap.add_argument("--checkout", default="", help="the code measured when it is not this checkout")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    only = set(a.only.split(","))
    crowd = crowd_path(a.crowd, a.crowd_frames)
    run = harness.new_run("track_bench.py", argv, streams=a.streams, batch=a.batch,
                          **({"checkout": a.checkout} if a.checkout else {}))
    if "e2e" in only:
        run["e2e"] = {name: e2e_pair(p, a.streams, a.batch, a.repeats)
                      for name, p in (("sample 768x432", harness.data_path(SAMPLE)), ("crowd 1920x1080", crowd))}
    if "tracker" in only:
        run["tracker"] = tracker(crowd)
        print("tracker", run["tracker"], flush=True)
    if "start" in only:
        run["start"] = start(harness.data_path(SAMPLE), a.start_frames)
    harness.record(a.out_dir, "track_e2e", run, markdown)
    print(markdown([run]))


if __name__ == "__main__":
    sys.exit(main())
