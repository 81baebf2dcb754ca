"""How much other CUDA processes' small GPU work slows the pose pipeline in this one: the GPU time-slices
between contexts (each process is one) unless an MPS server joins them. A decode host's work beside the
run is an NVDEC call and a 0.5 MB device-to-device copy per 768x432 frame, in a context of its own.

    python experiments/context_probe.py [--children 2] [--rate 4800] [--seconds 3] [--out-dir results]
        -> results/context_probe.{json,md}

The pipeline alone (the 768x432 clip's first 64 frames on the GPU, its graph replayed two batches in
flight, as runners_bench's "pipeline alone") is timed four times: with no other process; beside
``--children`` processes holding an idle context; beside them copying a frame-sized buffer (``copy_``, one
wait per 16 frames, as sources/nvdec.py) at ``--rate`` frames/s in all; beside them launching one small
kernel per frame at that rate instead. Run under MPS (gpu_run.sh mps) the same figures say what an MPS
server changes. Figures: results/context_probe.md.
"""
from __future__ import annotations

import argparse
import sys
import time

import harness

LOADS = ("idle", "copy", "kernel")


def child(load_q, ready, stop, out, rate: float, nbytes: int):
    """A process with a CUDA context of its own: it waits for a load name, runs it until ``stop``, reports
    the frames it did, and waits for the next."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty(16, nbytes, dtype=torch.uint8, device="cuda")
    s = torch.cuda.Stream()
    torch.cuda.synchronize()
    ready.set()
    while True:
        load = load_q.get()
        if load is None:
            return
        n, t0 = 0, time.perf_counter()
        with torch.cuda.stream(s):
            while not stop.is_set():
                if load != "idle":
                    for k in range(16):
                        if load == "copy":
                            dst[k].copy_(src, non_blocking=True)
                        else:
                            dst[k].add_(1)
                    s.synchronize()
                    n += 16
                due = t0 + n / rate
                time.sleep(max(0.0, due - time.perf_counter()) if load != "idle" else 0.01)
        out.put(n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--children", type=int, default=2, help="processes beside this one (the default decode hosts: 2)")
    ap.add_argument("--rate", type=float, default=4800.0, help="frames/s of all children together")
    ap.add_argument("--seconds", type=float, default=3.0, help="each timing")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    import torch
    import torch.multiprocessing as mp

    import runners_bench
    from posefuse.runners.sources.decodehost import default_decode_hosts

    run = harness.new_run("context_probe.py", argv, children=a.children, rate=a.rate, seconds=a.seconds,
                          **({"mps": True} if harness.under_mps() else {}))
    pipe, frames = runners_bench.captured_batch(harness.data_path(harness.CLIP), 64)
    default_decode_hosts().close()  # the decode host that read the frames (they are cloned): no context but ours
    nbytes = int(frames[0].numel())

    def pipeline_fps() -> float:
        n, wall = runners_bench.replay(pipe, frames, lambda t: t < a.seconds)
        return n / wall

    rows = {"none": pipeline_fps()}
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    kids = []
    for _ in range(a.children):
        q, ready = ctx.Queue(), ctx.Event()
        p = ctx.Process(target=child, args=(q, ready, stop, out, a.rate / a.children, nbytes), daemon=True)
        p.start()
        kids.append((p, q, ready))
    for _, _, ready in kids:
        if not ready.wait(180):
            raise SystemExit("context_probe: a child process made no CUDA context within 180 s")
    done = {}
    for load in LOADS:
        stop.clear()
        for _, q, _ in kids:
            q.put(load)
        time.sleep(0.3)
        rows[load] = pipeline_fps()
        stop.set()
        done[load] = sum(out.get(timeout=60) for _ in kids) / a.seconds
        print(f"pipeline beside {a.children} {load} contexts: {rows[load]:,.0f} fr/s "
              f"(alone {rows['none']:,.0f}); their frames/s {done[load]:,.0f}", flush=True)
    for p, q, _ in kids:
        q.put(None)
        p.join(30)
    torch.cuda.synchronize()
    run["pipeline_frames_per_s"] = rows
    run["children_frames_per_s"] = done
    harness.record(a.out_dir, "context_probe", run, markdown)


def markdown(runs: list) -> str:
    out = ["# The pipeline beside other CUDA processes", "",
           "experiments/context_probe.py: the pose pipeline alone (bs64, the 768x432 clip) in this process, beside "
           "processes that hold an idle CUDA context, copy a frame-sized buffer per frame, or launch a small kernel "
           "per frame (the decode hosts' GPU work, without NVDEC). Under MPS: every process a client of one server.", ""]
    for r in reversed(runs):
        out += harness.run_heading(r, ", under MPS" if r.get("mps") else "")
        p, c = r["pipeline_frames_per_s"], r["children_frames_per_s"]
        out += [f"| beside {r['children']} processes | pipeline fr/s | over alone | "
                f"their frames/s (asked {r['rate']:,.0f}) |",
                "| --- | ---: | ---: | ---: |", f"| none | {p['none']:,.0f} | 1.00 | - |"]
        out += [f"| {k} | {p[k]:,.0f} | {p[k] / p['none']:.2f} | {c[k]:,.0f} |" for k in LOADS]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
