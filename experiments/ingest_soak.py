"""The ingest alone, for an hour: decode hosts (runners.sources.decodehost) serving ``--cameras`` loopback
cameras (cameras.py: ffmpeg over HTTP, one killed and restarted and one stalled every ``--outage-every`` s), no
model: each frame is released as it arrives. Every ``--period`` s the resident memory of each decode host
(the spawned Python children of this process; the cameras are ffmpeg's) is sampled; after ``--warmup`` s each
process's RSS is fitted by a line: its slope in MiB per hour.

    MALLOC_ARENA_MAX=2 python experiments/ingest_soak.py [--duration 3600] [--cameras 16] [--fps 30]
                                                         -> results/ingest_soak.{json,md}

Target (reliability issue): every decode host's slope <= 1 MiB/h after warm-up.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np

import cameras
import harness

TARGET_MIB_PER_H = 1.0


def soak(duration: float, n: int, fps: float, period: float, outage_every: float, reconnect_s: float | None) -> dict:
    from posefuse.runners.config import RECONNECT_S
    from posefuse.runners.sources.decodehost import DecodeHosts

    cams = cameras.Cameras(harness.data_path(harness.CLIP), n, fps=fps).start()
    hosts = DecodeHosts(pin=False)
    frames, ended, lock = {}, {}, threading.Lock()

    class Released:
        """The Feed the cameras push to (sources.Feed): each frame counted per stream and released at once."""

        def hand(self, parcels: list) -> bool:
            with lock:
                for src, parcel in parcels:
                    frames[src.name] = frames.get(src.name, 0) + len(parcel)
            for _, parcel in parcels:
                for f in parcel:
                    f.release()
            return True

        def end(self, src, error):
            ended[src.name] = error

    feed, sources = Released(), []
    for k, url in enumerate(cams.urls):
        src = hosts.open(f"cam{k}", spec=url, reconnect_s=reconnect_s or RECONNECT_S)
        src.push(feed)
        sources.append(src)
    samples = []
    outages = cameras.Outages(cams, every_s=outage_every, down_s=min(5.0, outage_every / 4),
                              stall_s=min(10.0, outage_every / 2))
    t0 = time.perf_counter()
    with outages:
        while (t := time.perf_counter() - t0) < duration:
            rss = {}
            for p in harness.decode_hosts():
                try:
                    rss[p.pid] = p.memory_info().rss / 2**20
                except Exception:  # noqa: BLE001 - a process that just ended
                    pass
            with lock:
                total = sum(frames.values())
            samples.append({"t_s": t, "rss_mib": rss, "frames": total})
            print(f"{t:7.0f} s  frames {total:,}  rss MiB {sorted(round(v, 1) for v in rss.values())}", flush=True)
            time.sleep(period)
    for s in sources:
        s.close()
    hosts.close()
    cams.stop()
    counts = {s.name: dict(s.counts) for s in sources}
    return {"samples": samples, "frames": dict(frames), "ended": ended, "source_counts": counts,
            "outages": outages.log}


def slopes(samples: list, warmup: float) -> dict:
    """{pid: MiB per hour} of each decode host's RSS after ``warmup`` s (a least-squares line)."""
    out = {}
    pids = {pid for s in samples for pid in s["rss_mib"]}
    for pid in pids:
        pts = [(s["t_s"], s["rss_mib"][pid]) for s in samples if s["t_s"] >= warmup and pid in s["rss_mib"]]
        if len(pts) >= 3:
            t, m = np.array(pts).T
            out[str(pid)] = float(np.polyfit(t / 3600.0, m, 1)[0])
    return out


def markdown(runs: list) -> str:
    out = ["# The ingest alone: decode hosts serving loopback cameras, no model", "",
           "experiments/ingest_soak.py: each decode host's resident memory sampled through the run; its slope "
           f"after warm-up (target <= {TARGET_MIB_PER_H} MiB/h).", ""]
    for r in reversed(runs):
        out += harness.run_heading(r)
        last = r["samples"][-1]
        failed = {k: v for k, v in r["ended"].items() if v}  # a stream that ended with an error (None: closed)
        out += [f"{r['cameras']} cameras at {r['fps']} fr/s for {r['duration_s'] / 60:.0f} min, an outage every "
                f"{r['outage_every_s']:.0f} s ({len(r['outages'])} outage events: kills, restarts, stalls, resumes); "
                f"{last['frames']:,} frames; warm-up {r['warmup_s']:.0f} s; streams that failed: {len(failed)}"
                + (f" ({'; '.join(f'{k}: {v}' for k, v in list(failed.items())[:3])})" if failed else "") + ".", "",
                "| decode host | RSS at warm-up MiB | RSS at the end MiB | slope after warm-up MiB/h | met | "
                "slope over the second half MiB/h |", "| --- | ---: | ---: | ---: | --- | ---: |"]
        half = slopes(r["samples"], r["duration_s"] / 2)
        for pid, slope in r["slopes_mib_per_h"].items():
            at = [s["rss_mib"][pid] for s in r["samples"] if s["t_s"] >= r["warmup_s"] and pid in s["rss_mib"]]
            out.append(f"| {pid} | {at[0]:.1f} | {at[-1]:.1f} | {slope:+.2f} | {abs(slope) <= TARGET_MIB_PER_H} | "
                       f"{half.get(pid, float('nan')):+.2f} |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--period", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=None, help="seconds left out of the fit (default: 1/6)")
    ap.add_argument("--outage-every", type=float, default=60.0)
    ap.add_argument("--reconnect-s", type=float, default=None,
                    help="seconds a camera may go without a frame before its stream ends (default: RunConfig's)")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    warmup = a.warmup if a.warmup is not None else a.duration / 6
    got = soak(a.duration, a.cameras, a.fps, a.period, a.outage_every, a.reconnect_s)
    for s in got["samples"]:  # json keys are strings
        s["rss_mib"] = {str(k): v for k, v in s["rss_mib"].items()}
    run = harness.new_run("ingest_soak.py", argv, cameras=a.cameras, fps=a.fps, duration_s=a.duration,
                          warmup_s=warmup, outage_every_s=a.outage_every, period_s=a.period,
                          malloc_arena_max=os.environ.get("MALLOC_ARENA_MAX"), **got)
    run["slopes_mib_per_h"] = slopes(run["samples"], warmup)
    run["met"] = bool(run["slopes_mib_per_h"]) and all(abs(v) <= TARGET_MIB_PER_H
                                                      for v in run["slopes_mib_per_h"].values())
    harness.record(a.out_dir, "ingest_soak", run, markdown)
    print(markdown([run]))
    return 0 if run["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
