"""No-regression check: the same measurements on two checkouts side by side in one call, each through its
own code (its command line and its pytest benchmarks), alternating runs so drift on the machine falls on both.

    python experiments/regression.py --old .old --new . [--repeats 3] [--out-dir results]

``--old`` holds the old checkout as ``posefuse/`` (e.g. ``git archive REV __init__.py kernels fusion runners``
unpacked into .old/posefuse), which its runs import first.

Measured per checkout: the 8-stream NVDEC end-to-end run (dynamic runner, batch 64, 768x432 and 1080p
clips; the report's steady frames/s and the process wall of the job), and from its benchmarks the pipeline
on GPU frames bs64, the backbone alone bs64, the CuPy letterbox and decode+NMS at bs64, and the bs1 latency.
``--old-cli`` / ``--new-cli`` are the module of each checkout's command line and its NVDEC decoder option.
``--track`` also runs the new checkout's end-to-end job with ``--track`` (ByteTrack on the device), beside the
two others, against the tracking issue's gate: >= 0.95 of the same job without tracking.
Writes results/regression.{json,md} (runs appended).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

BENCH = ["tests/benchmarks/test_bench_pipeline.py::test_pipeline_gpu_frames[64]",
         "tests/benchmarks/test_bench_pipeline.py::test_backbone_alone[64]",
         "tests/benchmarks/test_bench_pipeline.py::test_latency_bs1[posefuse]",
         "tests/benchmarks/test_bench_kernels.py::test_letterbox[cupy-64-768x432]",
         "tests/benchmarks/test_bench_kernels.py::test_decode_nms[cupy-64]"]
CLIPS = {"768x432": harness.CLIP, "1080p": harness.CLIP_1080}


def e2e(tree: Path, cli: list, clip: str, env: dict) -> dict:
    """One 8-stream NVDEC run of ``clip`` through the checkout's command line: its report's steady figures
    and the process wall of the job."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        cmd = [sys.executable, "-m", *cli, "--source", harness.data_path(clip), "--repeat", "8", "--runner", "dynamic",
               "--batch", "64", "--max-wait-ms", "5", "--no-progress", "--out", str(out)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=400)
        wall = time.perf_counter() - t0
        if r.returncode != 0 or not out.exists():
            return {"error": (r.stderr or r.stdout)[-1500:], "returncode": r.returncode}
        rep = json.loads(out.read_text())["overall"]
    return {"frames_per_s": rep["frames_per_s"], "results": rep["results"], "wall_s": rep["wall_s"],
            "process_wall_s": wall, "p99_ms": rep["latency_ms"]["p99"]}


def bench(tree: Path, env: dict) -> dict:
    """The checkout's own benchmarks (BENCH) in one pytest session: {test: extra_info without env}."""
    with tempfile.TemporaryDirectory() as d:
        js = Path(d) / "b.json"
        r = subprocess.run([sys.executable, "-m", "pytest", *BENCH, "--benchmark-only", "-q", "-p", "no:cacheprovider",
                            f"--benchmark-json={js}"], cwd=tree, env=env, capture_output=True, text=True, timeout=500)
        if not js.exists():
            return {"error": (r.stdout + r.stderr)[-1500:]}
        doc = json.loads(js.read_text())
    return {b["name"]: {k: v for k, v in b["extra_info"].items() if k != "env" and isinstance(v, (int, float))}
            for b in doc["benchmarks"]}


def _median(res: dict, clip: str, key: str) -> float | None:
    """The median of ``key`` over a checkout's e2e runs of ``clip`` (runs that failed have no figures)."""
    xs = [r[key] for r in res["e2e"].get(clip, []) if key in r]
    return statistics.median(xs) if xs else None


def compare(old: dict, new: dict) -> list:
    """Rows (what, old, new, new/old, within 3%) for the figures both have; lower is better for latency."""
    rows = []
    for clip in CLIPS:
        for key, what, lower, gate in (("frames_per_s", "fr/s", False, True),
                                       ("process_wall_s", "job process wall s", True, False)):
            o, n = _median(old, clip, key), _median(new, clip, key)
            if o and n:
                rows.append(_row(f"e2e 8 NVDEC streams {clip}, {what} (median)", o, n, lower=lower, gate=gate))
    for name in BENCH:
        test = name.split("::")[1]
        o, n = old["bench"].get(test, {}), new["bench"].get(test, {})
        for key, lower in (("frames_per_s", False), ("graph_us_per_frame", True), ("latency_ms_p50", True)):
            if key in o and key in n:
                rows.append(_row(f"{test} {key}", o[key], n[key], lower=lower))
    return rows


def tracking(new: dict, track: dict) -> list:
    """Rows (what, without tracking, with, with / without, >= 0.95) for the new checkout's e2e runs."""
    rows = []
    for clip in CLIPS:
        o, n = _median(new, clip, "frames_per_s"), _median(track, clip, "frames_per_s")
        if o and n:
            rows.append({**_row(f"e2e 8 NVDEC streams {clip}, fr/s (median): with --track (new) against without (new)",
                                o, n, floor=0.95), "gate": 0.95})
    return rows


def _row(what, old, new, lower=False, gate=True, floor=0.97):
    """``within_3pct``: new / old >= ``floor`` (<= 1.03 where lower is better); None where not gated."""
    ratio = new / old if old else None
    ok = None if ratio is None or not gate else (ratio <= 1.03 if lower else ratio >= floor)
    return {"what": what, "old": old, "new": new, "new_over_old": ratio, "within_3pct": ok}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="a folder holding the old checkout as posefuse/ (imported first)")
    ap.add_argument("--new", default=str(harness.ROOT))
    ap.add_argument("--old-label", default="", help="what the old checkout is (a commit), for the record")
    ap.add_argument("--old-cli", default="posefuse.runners.cli run --decoder nvdec")
    ap.add_argument("--new-cli", default="posefuse.runners.cli run --decoder nvdec")
    ap.add_argument("--new-args", default="", help="more options for the new checkout's command line, comma-separated "
                    "(e.g. --new-args=--streams-per-decode-host,2: the same code beside one option changed)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="e2e,bench")
    ap.add_argument("--clips", default=",".join(CLIPS), help="e2e clips: comma list of " + ", ".join(CLIPS))
    ap.add_argument("--track", action="store_true", help="also the new checkout's e2e job with --track")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    only = set(a.only.split(","))
    trees = {"old": Path(a.old).resolve(), "new": Path(a.new).resolve()}
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    site = os.environ.get("PYTHONPATH", "")
    envs = {"old": {**base, "PYTHONPATH": f"{trees['old']}:{site}"}, "new": {**base, "PYTHONPATH": site}}
    clis = {"old": a.old_cli.split(), "new": a.new_cli.split() + [x for x in a.new_args.split(",") if x]}
    if a.track:
        trees["track"], envs["track"], clis["track"] = trees["new"], envs["new"], clis["new"] + ["--track"]
    res = {k: {"e2e": {}, "bench": {}} for k in trees}
    if "bench" in only:
        for k in ("old", "new"):
            res[k]["bench"] = bench(trees[k], envs[k])
            print(k, "bench", json.dumps(res[k]["bench"])[:600], flush=True)
    if "e2e" in only:
        for clip in a.clips.split(","):
            path = CLIPS[clip]
            for i in range(a.repeats):
                for k in (list(trees) if i % 2 == 0 else list(trees)[::-1]):
                    r = e2e(trees[k], clis[k], path, envs[k])
                    res[k]["e2e"].setdefault(clip, []).append(r)
                    print(k, clip, r, flush=True)
    run = {"env": harness.environment(), "command": "python experiments/regression.py " + " ".join(argv or sys.argv[1:]),
           "trees": {k: str(v) for k, v in trees.items()}, "old_label": a.old_label, "results": res,
           "rows": compare(res["old"], res["new"]) + (tracking(res["new"], res["track"]) if a.track else [])}
    out = Path(a.out_dir)
    runs = harness.append_run(out / "regression.json", run)
    (out / "regression.md").write_text(markdown(runs))
    for r in run["rows"]:
        print(r, flush=True)


def markdown(runs: list) -> str:
    """Every run, newest first: old and new side by side, measured in the same call."""
    lines = ["# No-regression checks: an old checkout beside the new one, each pair measured in one call", ""]
    for run in reversed(runs):
        env = run["env"]
        lines += [f"## {env.get('date')}: {env.get('card')}, driver {env.get('driver')}, torch {env.get('torch')}, "
                  f"CuPy {env.get('cupy')}, PyNvVideoCodec {env.get('PyNvVideoCodec')}", "",
                  f"Command: `{run['command']}`; old: {run.get('old_label') or run['trees']['old']}, new: this "
                  "checkout", "",
                  *([f"Note: {run['note']}", ""] if run.get("note") else []),
                  "| measurement | old | new | new / old | within 3% (tracking: >= 0.95) |", "|---|---:|---:|---:|---|"]
        for r in run["rows"]:
            ratio = "-" if r["new_over_old"] is None else f"{r['new_over_old']:.3f}"
            ok = "-" if r["within_3pct"] is None else ("yes" if r["within_3pct"] else "**no**")
            lines.append(f"| {r['what']} | {r['old']:,.2f} | {r['new']:,.2f} | {ratio} | {ok} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
