"""The paced intake alone, no model: how late a live run's frames reach it from its CPU decode hosts.

    python experiments/paced_intake.py [--streams 40] [--processes 1 2 4] [--seconds 10] [--rounds 2]
        -> results/paced_intake.{json,md}

``streams`` copies of the 768x432 sample clip, each paced at 30 fr/s in OpenCV decode hosts (the production
path of a paced run: ``DecodeHosts(processes=P).open(..., paced=True)``, one FFmpeg thread a stream), pushed
to a Feed that releases every frame as it comes (a run's intake, with a GPU that keeps up). For each number
of hosts ``P``, in turn, round after round: the frames/s delivered against those offered, how late frames
reach the feed after their due time (p50, p99, max: the intake's share of a live run's latency) and the CPU
seconds per frame of this process and of the hosts; beside them the same decoding without the hosts
(``--alone-s``: OpenCV in this process, each frame decoded as a host's reader would, on a thread per core
and on a thread per stream). The live runs of results/runners.md are limited by this wait
(their 'intake' wait); this separates it from the GPU's part.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import harness

FPS = 30.0


class _Feed:
    """A run's intake that keeps up: each frame's lateness (arrival here minus its due time), then released."""

    def __init__(self):
        self.late: list = []
        self.ended = 0
        self.lock = threading.Lock()

    def hand(self, parcels: list) -> bool:
        now = time.perf_counter()
        late = [now - f.arrived for _, frames in parcels for f in frames]
        for _, frames in parcels:
            for f in frames:
                f.release()
        with self.lock:
            self.late += late
        return True

    def end(self, src, error):
        with self.lock:
            self.ended += 1


def measure(streams: int, processes: int, seconds: float) -> dict:
    """One row: ``streams`` paced streams over ``processes`` CPU decode hosts for ``seconds``."""
    import psutil

    from posefuse.runners.assembly import OPENERS
    from posefuse.runners.sources.decodehost import DecodeHosts

    clip = harness.data_path(harness.CLIP)
    hosts = DecodeHosts(processes=processes)
    feed = _Feed()
    try:
        with ThreadPoolExecutor(OPENERS) as pool:  # as a run opens them (its hosts side by side)
            srcs = list(pool.map(lambda k: hosts.open(f"s{k}", spec=clip, paced=True, fps=FPS, loop=True,
                                                      duration_s=seconds, threads=1), range(streams)))
        me = psutil.Process()
        kids = harness.decode_hosts()
        c0, k0, t0 = harness.cpu_seconds([me]), harness.cpu_seconds(kids), time.perf_counter()
        for s in srcs:
            s.push(feed)
        while feed.ended < streams and time.perf_counter() - t0 < seconds + 30:
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        c1, k1 = harness.cpu_seconds([me]), harness.cpu_seconds(kids)
        for s in srcs:
            s.close()
    finally:
        hosts.close()
    late = np.array(feed.late) * 1e3
    n = len(late)
    return {"streams": streams, "processes": processes, "frames": n, "offered_per_s": streams * FPS,
            "frames_per_s": n / seconds, "late_ms": {"p50": float(np.percentile(late, 50)),
                                                    "p99": float(np.percentile(late, 99)), "max": float(late.max())},
            "cpu_ms_per_frame": {"run": 1e3 * (c1 - c0) / n, "hosts": 1e3 * (k1 - k0) / n}, "wall_s": wall}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def opencv_alone(streams: int, threads: int, seconds: float) -> dict:
    """The decoding a paced run needs, without the hosts: ``streams`` OpenCV captures of the clip (one FFmpeg
    thread each), each frame decoded once it is within ROWS frames of its due time (as a host's reader runs
    ahead into its rows), the streams shared by ``threads`` threads of this process. Frames/s, CPU ms a frame
    and the share decoded after their due time."""
    import heapq

    import cv2
    import psutil

    from posefuse.runners.sources.decodehost import ROWS

    clip = harness.data_path(harness.CLIP)

    def opened():
        return cv2.VideoCapture(clip, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])

    t0 = time.perf_counter() + 0.5
    end = t0 + seconds
    caps = [opened() for _ in range(streams)]
    bufs = [[None] * ROWS for _ in range(streams)]
    first = [t0 + k / streams / FPS for k in range(streams)]  # the streams' due times spread over a frame
    done = [0] * streams
    late = [0] * threads

    def work(j):
        heap = [(first[k] - ROWS / FPS, k) for k in range(j, streams, threads)]
        heapq.heapify(heap)
        while heap:
            at, k = heapq.heappop(heap)
            if at >= end:
                continue
            wait = at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            n = done[k]
            ok, bufs[k][n % ROWS] = caps[k].read(bufs[k][n % ROWS])
            if not ok:  # the clip's end: from its start again
                caps[k].release()
                caps[k] = opened()
                ok, bufs[k][n % ROWS] = caps[k].read(bufs[k][n % ROWS])
            late[j] += time.perf_counter() > first[k] + n / FPS
            done[k] = n + 1
            heapq.heappush(heap, (first[k] + (n + 1 - ROWS) / FPS, k))

    me = psutil.Process()
    c0 = harness.cpu_seconds([me])
    ts = [threading.Thread(target=work, args=(j,)) for j in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    n = sum(done)
    for cap in caps:
        cap.release()
    return {"streams": streams, "threads": threads, "frames_per_s": n / seconds,
            "cpu_ms_per_frame": 1e3 * (harness.cpu_seconds([me]) - c0) / n, "late_share": sum(late) / n}


def markdown(runs: list) -> str:
    out = ["# The paced intake alone", "",
           f"Copies of the 768x432 sample clip paced at {FPS:g} fr/s each in CPU decode hosts (OpenCV), every frame "
           "released as it reaches the run: how late frames come (arrival minus due time), by the number of hosts. "
           "No model. Each run below is one command.", ""]
    for r in reversed(runs):
        env = r["env"]
        out += harness.run_heading(r, f"; {r['cpus']} CPUs ({r['cpu_model']}), Python {env.get('python')}, "
                                      f"OpenCV {env.get('cv2')}")
        out += ["| streams | decode hosts | round | fr/s (offered) | late p50 ms | late p99 ms | late max ms "
                "| run CPU ms/frame | hosts CPU ms/frame |", "|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        out += [f"| {x['streams']} | {x['processes']} | {x['round']} | {x['frames_per_s']:,.0f} "
                f"({x['offered_per_s']:,.0f}) | {x['late_ms']['p50']:.1f} | {x['late_ms']['p99']:.1f} | "
                f"{x['late_ms']['max']:.1f} | {x['cpu_ms_per_frame']['run']:.3f} | "
                f"{x['cpu_ms_per_frame']['hosts']:.3f} |" for x in r["rows"]]
        if r.get("opencv_alone"):
            out += ["", "The same decoding without the hosts (OpenCV in this process, each frame decoded once it is "
                    "within a host's rows of its due time):", "",
                    "| streams | threads | fr/s | CPU ms/frame | decoded after their due time |",
                    "|---:|---:|---:|---:|---:|"]
            out += [f"| {x['streams']} | {x['threads']} | {x['frames_per_s']:,.0f} | {x['cpu_ms_per_frame']:.3f} | "
                    f"{x['late_share']:.1%} |" for x in r["opencv_alone"]]
        out.append("")
    return "\n".join(out)


def main(argv=None):
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--alone-s", type=float, default=10.0, help="seconds of OpenCV alone (0: none)")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    alone = []  # a thread per core, and a thread per stream (as the hosts)
    for threads in sorted({min(a.streams, os.cpu_count() or 1), a.streams}) if a.alone_s else ():
        alone.append(opencv_alone(a.streams, threads, a.alone_s))
        print(alone[-1], flush=True)
    rows = []
    for k in range(1, a.rounds + 1):
        for p in a.processes:
            row = {"round": k, **measure(a.streams, p, a.seconds)}
            print(row, flush=True)
            rows.append(row)
    args = argv if argv is not None else sys.argv[1:]
    run = harness.new_run("paced_intake.py", args, rows=rows, opencv_alone=alone, cpus=os.cpu_count(),
                           cpu_model=_cpu_model())
    harness.record(a.out_dir, "paced_intake", run, markdown)


if __name__ == "__main__":
    main()
