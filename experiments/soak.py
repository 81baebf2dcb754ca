"""Soak: the dynamic runner at full load over many looping streams for any duration, sampling GPU memory,
host memory and throughput every ``--period`` seconds; then the reliability issue's checks.

    python experiments/soak.py --duration 480 --streams 16 --decoder nvdec       # the recorded H100 run
    python experiments/soak.py --duration 60 --device cpu --streams 2 --period 5 # the CPU soak (CI)
    python experiments/soak.py --duration 480 --streams 100 --cameras --plot      # live cameras with outages
    python experiments/soak.py --duration 86400 ...                               # the plan's 24 hours

Run it with ``MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=65536`` (glibc): otherwise the heap's adaptive
mmap threshold makes the process RSS wander by +-1.5% within a minute with no growth at all (measured on
the CPU soak), which the 1% check cannot tell from a leak.

Checks (after a warm-up of ``--warmup`` seconds; windows are 2 minutes, or a quarter of the rest when
shorter): GPU memory (torch allocated and NVML used) and host memory (RSS) grow <= 1%; the memory slope
fitted over the run, extrapolated to 24 hours, stays under 5%; throughput in the last window is within 5%
of the first (``--throughput-tolerance``); zero lost frames (frames in = results + drops, and no drops). Writes results/soak.json
(and soak.png with --plot). Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

import cameras
import harness


def memory_sample(usage, device: str, results: int) -> dict:
    """Memory now: torch's allocated and reserved bytes on the device, NVML's used memory and the process's
    resident memory (``usage``: a UsageSampler of the package's monitor, its own instance)."""
    import torch

    s = {"t": time.perf_counter(), "results": results}
    if device.startswith("cuda") and torch.cuda.is_available():
        s["torch_allocated_mib"] = torch.cuda.memory_allocated(device) / 2**20
        s["torch_reserved_mib"] = torch.cuda.memory_reserved(device) / 2**20
    u = usage.sample()
    if u.get("gpu_mem_mib"):
        s["nvml_used_mib"] = sum(u["gpu_mem_mib"])
    if "rss_mib" in u:  # the run's process and its decode hosts, and apart
        s["rss_mib"] = u["rss_mib"]
        s["rss_parent_mib"] = u["rss_mib"] - u["rss_children_mib"]
        s["rss_decode_processes_mib"] = u["rss_children_mib"]
    return s


CHECKED = ("torch_allocated_mib", "nvml_used_mib", "rss_mib")
MEMORY = CHECKED + ("rss_parent_mib", "rss_decode_processes_mib")  # the parts of the RSS: reported, to place a growth


def evaluate(samples: list[dict], warmup: float, t0: float, accounting_ok: bool, drops: int, per_second: dict,
             tolerance: float = 0.05) -> dict:
    """The issue's checks over the samples taken after ``warmup`` seconds. ``per_second``: results
    completed in each second of the run (throughput windows from these, not from the coarser samples)."""
    post = [s for s in samples if s["t"] - t0 >= warmup]
    out = {"samples_after_warmup": len(post), "checks": {}}
    if len(post) < 3:
        out["checks"]["enough_samples"] = False
        return out
    span = post[-1]["t"] - post[0]["t"]
    win = min(120.0, span / 3)
    first = [s for s in post if s["t"] - post[0]["t"] <= win]
    last = [s for s in post if post[-1]["t"] - s["t"] <= win]
    for key in MEMORY:
        vals = [s[key] for s in post if key in s]
        if len(vals) < 3:
            continue
        ts = np.array([s["t"] for s in post if key in s]) - post[0]["t"]
        # growth: the last window's median against the first window's (allocator noise averages out)
        base = float(np.median([s[key] for s in first if key in s]))
        end = float(np.median([s[key] for s in last if key in s]))
        growth = (end - base) / base if base else 0.0
        slope = float(np.polyfit(ts, vals, 1)[0])  # MiB per second
        day = slope * 86400 / (np.mean(vals) or 1)
        out[key] = {"first_window_median": base, "last_window_median": end, "max": max(vals), "growth": growth,
                    "slope_mib_per_h": slope * 3600, "extrapolated_24h": day}
        if key in CHECKED:
            out["checks"][f"{key}_growth_le_1pct"] = bool(growth <= 0.01)
            out["checks"][f"{key}_24h_extrapolation_lt_5pct"] = bool(day < 0.05)

    def rate(a, b):  # results per second over whole seconds [a, b) of the run
        a, b = int(a), int(b)
        return sum(per_second.get(k, 0) for k in range(a, b)) / (b - a) if b > a else None

    w0 = post[0]["t"] - t0
    w1 = post[-1]["t"] - t0 - 1  # the last, partial second is left out
    r_first, r_last = rate(w0, w0 + win), rate(w1 - win, w1)
    out["throughput"] = {"window_s": int(win), "first": r_first, "last": r_last,
                         "ratio": r_last / r_first if r_first and r_last else None, "tolerance": tolerance}
    out["checks"]["throughput_last_within_tolerance_of_first"] = bool(
        r_first and r_last and abs(r_last / r_first - 1) <= tolerance)
    out["checks"]["zero_lost_frames"] = bool(accounting_ok and drops == 0)
    out["passed"] = all(out["checks"].values())
    return out


def run(duration: float, streams: int, decoder: str, device: str, period: float, warmup: float, batch: int,
        max_wait_ms: float, backend: str, imgsz: int, chunk: int, max_frames=None, tolerance: float = 0.05,
        partial_out: Path | None = None, cams=None, outage_every: float = 0.0, track: bool = False) -> dict:
    """``streams`` looping copies of the clip through ``posefuse.run`` (dynamic runner) for ``duration`` s;
    with ``cams`` (cameras.Cameras) the streams are those live cameras instead, put through an outage every
    ``outage_every`` s (cameras.Outages: one killed and restarted, one stalled); ``track``: the run tracks
    every stream's poses."""
    import torch

    from posefuse import RunConfig, run as run_pipeline
    from posefuse.runners.gpuinfo import UsageSampler

    if cams is not None:  # live cameras: their own pace, read with OpenCV
        cfg = RunConfig(sources=cams.urls, duration_s=duration, decoder="cpu", runner="dynamic", batch=batch,
                        max_wait_ms=max_wait_ms, device=device, backend=backend, imgsz=imgsz, track=track,
                        progress=False)
    else:
        cfg = RunConfig(sources=[harness.data_path(harness.CLIP)], repeat=streams, loop=True, duration_s=duration,
                        max_frames=max_frames, decoder=decoder, chunk=chunk, runner="dynamic", batch=batch,
                        max_wait_ms=max_wait_ms, device=device, backend=backend, imgsz=imgsz, track=track,
                        progress=False)
    dev = "cuda:0" if device == "cuda" else device
    usage = UsageSampler()  # the GPUs this process may use, as the run's monitor samples them
    samples: list[dict] = []
    per_second: dict = {}
    count = [0]
    t0 = [None]  # the first result: the run's clock as the soak sees it
    stop = threading.Event()

    def sampler():
        while not stop.wait(period):
            if t0[0] is None:
                continue
            samples.append(memory_sample(usage, dev, count[0]))
            if partial_out is not None:  # a run cut short still leaves its samples
                partial_out.write_text(json.dumps({"partial": True, "samples": samples,
                                                   "results_per_second": dict(per_second)}, default=float))

    def on_result(r):  # the result thread only: no lock needed
        now = time.perf_counter()
        if t0[0] is None:
            t0[0] = now
            samples.append(memory_sample(usage, dev, 0))
        k = int(now - t0[0])
        per_second[k] = per_second.get(k, 0) + 1
        count[0] += 1

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    outages = None
    if cams is not None and outage_every:
        outages = cameras.Outages(cams, every_s=outage_every, down_s=min(5.0, outage_every / 4),
                                  stall_s=min(10.0, outage_every / 2))
    with outages or contextlib.nullcontext():
        report = run_pipeline(cfg, on_result)
    stop.set()
    th.join()
    samples.append(memory_sample(usage, dev, count[0]))
    rep = report.overall
    start = t0[0] or time.perf_counter()
    for s in samples:
        s["t_s"] = s["t"] - start
    accounting_ok = rep["frames_in"] == rep["results"] + sum(rep["drops"].values())  # run() asserts it too
    # the last sample is taken after the streams ended (buffers already freed): reported, not evaluated
    ev = evaluate(samples[:-1], warmup, start, accounting_ok and not report.failed, sum(rep["drops"].values()),
                  per_second, tolerance)
    return {"env": harness.environment(), "duration_s": duration, "streams": streams, "decoder": decoder,
            "track": track, "device": report.ran["device"], "backend": report.ran["backend"], "batch": batch,
            "max_wait_ms": max_wait_ms, "period_s": period, "warmup_s": warmup, "failed_sources": report.failed,
            "report": rep, "samples": samples, "evaluation": ev,
            "results_per_second": [per_second.get(k, 0) for k in range(max(per_second, default=0) + 1)],
            "torch_cuda": torch.cuda.is_available(),
            **({"cameras": {"fps": cams.fps, "outage_every_s": outage_every,
                            "outages": outages.log if outages else [],
                            "per_stream": {name: {"results": st["results"], "drops": st["drops"], **(st.get("source") or {})}
                                           for name, st in report.streams.items()}}} if cams is not None else {})}


def plot(result: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["samples"]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for key in MEMORY:
        if any(key in x for x in s):
            ax[0].plot([x["t_s"] for x in s if key in x], [x[key] for x in s if key in x], label=key)
    ax[0].axvline(result["warmup_s"], color="gray", ls=":", label="warm-up end")
    ax[0].set_xlabel("s")
    ax[0].set_ylabel("MiB")
    ax[0].legend()
    ax[0].set_title("memory")
    ax[1].plot(range(len(result["results_per_second"])), result["results_per_second"], lw=0.6)
    ax[1].set_xlabel("s")
    ax[1].set_ylabel("frames/s")
    ax[1].set_title(f"throughput ({result['streams']} streams, {result['decoder']} decode)")
    fig.suptitle(f"soak {result['duration_s']:.0f} s on {result['env'].get('card', 'CPU')} — "
                 f"{'passed' if result['evaluation'].get('passed') else 'FAILED'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=480.0, help="seconds (86400 for the plan's 24 hours)")
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--decoder", default="cpu", choices=("cpu", "nvdec"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--period", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=None, help="seconds excluded from the checks (default: 1/8)")
    ap.add_argument("--max-frames", type=int, default=None, help="frames of the clip per loop")
    ap.add_argument("--throughput-tolerance", type=float, default=0.05,
                    help="last window's throughput within this fraction of the first's (the issue: 0.05)")
    ap.add_argument("--out", default=str(harness.RESULTS / "soak.json"))
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--cameras", action="store_true",
                    help="the streams are live cameras on loopback (ffmpeg serving the clip over HTTP at --fps)")
    ap.add_argument("--fps", type=float, default=30.0, help="--cameras: each camera's frame rate")
    ap.add_argument("--outage-every", type=float, default=60.0,
                    help="--cameras: every this many seconds one camera is killed (back 5 s later) and the next "
                         "stalls 10 s (at most a quarter and a half of the period; 0: none)")
    ap.add_argument("--track", action="store_true", help="the run tracks every stream's poses (RunConfig.track)")
    a = ap.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    warmup = a.warmup if a.warmup is not None else a.duration / 8
    cams = cameras.Cameras(harness.data_path(harness.CLIP), a.streams, a.fps).start() if a.cameras else None
    try:
        res = run(a.duration, a.streams, a.decoder, device, a.period, warmup, a.batch, a.max_wait_ms, a.backend,
                  a.imgsz, a.chunk, a.max_frames, a.throughput_tolerance, Path(a.out).with_suffix(".partial.json"),
                  cams, a.outage_every, a.track)
    finally:
        if cams is not None:
            cams.stop()
    res["command"] = "python experiments/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    if a.plot:
        plot(res, out.with_suffix(".png"))
    ev = res["evaluation"]
    print(json.dumps({"results": res["report"]["results"], "frames_per_s": res["report"]["frames_per_s"],
                      "drops": res["report"]["drops"], "checks": ev["checks"]}, indent=1))
    return 0 if ev.get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
