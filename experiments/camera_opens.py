"""How long N cameras take to open in a run's decode hosts: this checkout beside an old one, in turn.

    python experiments/camera_opens.py [--cameras 32] [--rounds 2] [--old .old --old-label 15af171]
        -> results/camera_opens.{json,md}

Each measurement is a fresh process: ``cameras`` loopback cameras (experiments/cameras.py: ffmpeg serving
the sample clip as MPEG-TS over HTTP at 30 fr/s) opened as a run opens them: OPENERS threads, each
asking the decode hosts (OpenCV hosts, as many as the machine gets) to open one and waiting until it has.
Reported: the wall until every camera is open, the median and longest open, and the frame rate the first
camera reports. The old checkout (its ``posefuse`` imported first) runs the same code in alternate
processes, round by round.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import harness


def child(n: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import cameras
    from posefuse.runners.assembly import OPENERS
    from posefuse.runners.sources.decodehost import DecodeHosts, open_cpu_in_host

    cams = cameras.Cameras(harness.data_path(harness.CLIP), n=n, fps=30.0).start()
    hosts = DecodeHosts(pin=False)
    try:
        hosts.start(None, n)
        while hosts.alive() < min(hosts.processes, n):
            time.sleep(0.05)
        took = []

        def one(url):
            t = time.perf_counter()
            src = hosts.open(url, open_cpu_in_host, None, False, spec=url, reconnect_s=10.0, threads=1)
            took.append(time.perf_counter() - t)
            return src

        t0 = time.perf_counter()
        with ThreadPoolExecutor(min(OPENERS, n)) as pool:
            srcs = list(pool.map(one, cams.urls))
        wall = time.perf_counter() - t0
        fps = srcs[0].fps
        for s in srcs:
            s.close()
    finally:
        hosts.close()
        cams.stop()
    return {"cameras": n, "hosts": hosts.processes, "openers": min(OPENERS, n), "wall_s": wall,
            "open_s_median": statistics.median(took), "open_s_max": max(took), "fps": fps}


def markdown(runs: list) -> str:
    out = ["# Cameras opening in a run's decode hosts", "",
           "Loopback cameras (ffmpeg, MPEG-TS over HTTP, 30 fr/s) opened as a run opens them; each row one "
           "fresh process, old and new checkouts in turn. Each run below is one command.", ""]
    for r in reversed(runs):
        out += harness.run_heading(r)
        out += ["| checkout | round | cameras | decode hosts | openers | all open s | open median s | open max s "
                "| frame rate |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {x['checkout']} | {x['round']} | {x['cameras']} | {x['hosts']} | {x['openers']} | "
                f"{x['wall_s']:.2f} | {x['open_s_median']:.2f} | {x['open_s_max']:.2f} | {x['fps']} |"
                for x in r["rows"]]
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--old", default=None, help="a folder holding an old checkout as posefuse/ (gpu_run.sh's .old)")
    ap.add_argument("--old-label", default="old")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    if a.child is not None:
        print(json.dumps(child(a.child)), flush=True)
        return
    checkouts = [("this", None)] + ([(a.old_label, str(Path(a.old).resolve()))] if a.old else [])
    rows = []
    for k in range(1, a.rounds + 1):
        for label, path in checkouts:
            env = dict(os.environ)
            if path:
                env["PYTHONPATH"] = os.pathsep.join([path, env.get("PYTHONPATH", "")])
            r = subprocess.run([sys.executable, __file__, "--child", str(a.cameras)], capture_output=True, text=True,
                               env=env, cwd=Path(__file__).parent, timeout=600)
            if r.returncode:
                raise SystemExit(f"{label}: {r.stderr[-2000:]}")
            row = {"checkout": label, "round": k, **json.loads(r.stdout.strip().splitlines()[-1])}
            print(row, flush=True)
            rows.append(row)
    args = argv if argv is not None else sys.argv[1:]
    run = harness.new_run("camera_opens.py", args, rows=rows)
    harness.record(a.out_dir, "camera_opens", run, markdown)


if __name__ == "__main__":
    main()
