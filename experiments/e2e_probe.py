"""Where the end-to-end NVDEC runner loses against the pipeline alone: the same 8-stream e2e run (runners_bench
e2e) under variants, in one process on one card, with the GPU worker's time split and, optionally, a CUDA
activity trace of one variant.

    python experiments/e2e_probe.py [--clip 768x432] [--variants nvdec:current:2,nvdec:own:2,...] [--trace 1]

A variant is ``decoder:stream:ring[:chunk[:flags]]``: decoder nvdec | nvdec-process (optionally /kernel or /dma);
stream 'current' (the GPU worker on torch's legacy default stream, the runner's behaviour before this probe)
or 'own' (a CUDA stream of its own); ring: PosePipeline slots per signature (batches in flight).
flags, '+'-joined: nousage (no NVML/psutil sampler thread), nogc (cyclic GC off during the run), log (a
host-side timeline: decoder calls, queue puts, batch submits and read-backs; see HostLog), lowprio (the
in-process decoders' CUDA streams at the default priority instead of high). Every
variant logs the GC's collections during its run. ``--trace K``: the K-th variant (0-based) runs again under torch.profiler (CUDA activity only); the summary
(busy fraction of the card over the run, per CUDA stream: kernels/copies and busy ms, the largest idle gaps)
goes into the JSON. Writes results/e2e_probe.json (runs appended) and prints one line per variant.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


FLAGS = ("nousage", "nogc", "log", "lowprio")


def parse_variant(v: str) -> dict:
    parts = v.split(":")
    flags = parts[4].split("+") if len(parts) == 5 and parts[4] else []
    if len(parts) not in (3, 4, 5) or parts[1] not in ("own", "current") or set(flags) - set(FLAGS):
        raise SystemExit(f"--variants: expected decoder:own|current:ring[:chunk[:flag+flag]] (flags: {FLAGS}), got {v!r}")
    return {"decoder": parts[0], "worker_stream": parts[1], "ring": int(parts[2]),
            "chunk": int(parts[3]) if len(parts) >= 4 and parts[3] else None, "flags": flags}


class GcLog:
    """Collections the cyclic GC ran (generation, milliseconds) while installed."""

    def __init__(self):
        self.t0, self.events = None, []

    def __call__(self, phase, info):
        if phase == "start":
            self.t0 = time.perf_counter()
        elif self.t0 is not None:
            self.events.append((info["generation"], (time.perf_counter() - self.t0) * 1e3))

    def summary(self) -> dict:
        out = {}
        for g in (0, 1, 2):
            ms = [m for gen, m in self.events if gen == g]
            out[f"gen{g}"] = {"count": len(ms), "total_ms": sum(ms), "max_ms": max(ms, default=0.0)}
        return out


class HostLog:
    """Host-side timeline of one run (``log`` flag), by wrapping the runner's module functions: each decoder
    call (in-process NVDEC: start, end, stream, frames), each parcel put in the frame queue, each batch
    submitted (start, end, frames) and each batch read back (end, frames). Times in ms from install()."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.fetch, self.put, self.submit, self.finish = [], [], [], []
        self._undo = []

    def _ms(self) -> float:
        return round((time.perf_counter() - self.t0) * 1e3, 2)

    def install(self):
        import runners.concurrent as rc
        import runners.nvdec as rn

        log = self
        put0, submit0, finish0, stream0 = rc._put, rc.submit_frames, rc.finish, rn.nvdec_stream

        def put(q, item, state):
            ok = put0(q, item, state)
            if isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], str):
                log.put.append([log._ms(), item[0], item[1], len(item[2])])
            return ok

        def submit(pipe, frames):
            a = log._ms()
            out = submit0(pipe, frames)
            log.submit.append([a, log._ms(), len(frames)])
            return out

        def finish(submitted, monitor):
            out = list(finish0(submitted, monitor))
            log.finish.append([log._ms(), len(out)])
            return out

        def stream(*args, **kw):
            cs = stream0(*args, **kw)
            fetch0 = cs.fetch

            def fetch(i):
                a = log._ms()
                rows, ev = fetch0(i)
                log.fetch.append([a, log._ms(), id(cs) % 10007, i, len(rows or [])])
                return rows, ev

            cs.fetch = fetch
            return cs

        rc._put, rc.submit_frames, rc.finish, rn.nvdec_stream = put, submit, finish, stream
        self._undo = [(rc, "_put", put0), (rc, "submit_frames", submit0), (rc, "finish", finish0),
                      (rn, "nvdec_stream", stream0)]
        return self

    def remove(self):
        for mod, name, fn in self._undo:
            setattr(mod, name, fn)

    def summary(self) -> dict:
        per = {}
        for t, name, seq, n in self.put:
            d = per.setdefault(name, {"first_put_ms": t, "last_put_ms": t, "frames": 0})
            d["last_put_ms"], d["frames"] = t, d["frames"] + n
        sub = self.submit
        gaps = sorted(([b[0] - a[1], a[1]] for a, b in zip(sub, sub[1:])), reverse=True)[:12]
        return {"streams": per, "batches": len(sub), "largest_submit_gaps_ms_at": gaps,
                "timeline": {"fetch": self.fetch, "put": self.put, "submit": self.submit, "finish": self.finish}}


def union_ms(iv: list) -> float:
    """Total length of the union of [start, end) intervals (microseconds in, milliseconds out)."""
    tot, end = 0.0, None
    for a, b in sorted(iv):
        if end is None or a > end:
            tot += b - a
            end = b
        elif b > end:
            tot += b - end
            end = b
    return tot / 1e3


def trace_summary(path: str) -> dict:
    """Busy time of the card and of each CUDA stream from a chrome trace of torch.profiler."""
    ev = json.load(open(path))
    ev = ev.get("traceEvents", ev) if isinstance(ev, dict) else ev
    gpu = [e for e in ev if e.get("ph") == "X" and e.get("cat") in GPU_CATS]
    if not gpu:
        return {"events": 0}
    t0 = min(e["ts"] for e in gpu)
    t1 = max(e["ts"] + e["dur"] for e in gpu)
    streams: dict = {}
    for e in gpu:
        s = streams.setdefault(str(e.get("tid")), {"kernels": 0, "copies": 0, "iv": []})
        s["kernels" if e["cat"] == "kernel" else "copies"] += 1
        s["iv"].append((e["ts"], e["ts"] + e["dur"]))
    all_iv = sorted((e["ts"], e["ts"] + e["dur"]) for e in gpu if e["cat"] == "kernel")
    gaps, idle, end = [], [], None  # idle: the card ran nothing (no kernel, copy or memset) for over 3 ms
    for a, b in all_iv:
        if end is not None and a > end:
            gaps.append(a - end)
        end = b if end is None else max(end, b)
    end = None
    for a, b in sorted((e["ts"], e["ts"] + e["dur"]) for e in gpu):
        if end is not None and a - end > 3000:
            idle.append([round((end - t0) / 1e3, 1), round((a - end) / 1e3, 1)])
        end = b if end is None else max(end, b)
    gaps.sort(reverse=True)
    return {
        "events": len(gpu), "window_ms": (t1 - t0) / 1e3,
        "kernel_busy_ms": union_ms(all_iv), "any_busy_ms": union_ms([(e["ts"], e["ts"] + e["dur"]) for e in gpu]),
        "kernel_gaps_ms": {"count_over_0.1ms": sum(g > 100 for g in gaps), "sum_over_0.1ms": sum(g for g in gaps if g > 100) / 1e3,
                           "largest": [g / 1e3 for g in gaps[:10]]},
        "idle_over_3ms": {"count": len(idle), "sum_ms": round(sum(g for _, g in idle), 1), "at_ms_len_ms": idle[:60]},
        "streams": {k: {"kernels": v["kernels"], "copies": v["copies"], "busy_ms": union_ms(v["iv"]),
                        "first_ms": (min(a for a, _ in v["iv"]) - t0) / 1e3, "last_ms": (max(b for _, b in v["iv"]) - t0) / 1e3}
                    for k, v in sorted(streams.items(), key=lambda kv: -len(kv[1]["iv"]))[:16]},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default="768x432", help="comma list of 768x432, 1080p (the trace: the first clip)")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--variants", default="nvdec:current:2,nvdec:own:2,nvdec:own:3,nvdec-process:own:2,nvdec-process:own:3")
    ap.add_argument("--alone-rings", default="2,3", help="pipeline alone (frames on the GPU) at these rings")
    ap.add_argument("--nvdec-alone", action="store_true", help="also NVDEC decoding alone (threads, processes)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of the variant list (interleaved)")
    ap.add_argument("--trace", type=int, default=None, help="index of the variant to trace again")
    ap.add_argument("--trace-dir", default=None, help="where the chrome trace goes (default: out-dir)")
    ap.add_argument("--out-dir", default=str(ROOT / "results"))
    a = ap.parse_args(argv)
    variants = [parse_variant(v) for v in a.variants.split(",") if v]

    import torch

    from fusion import PosePipeline

    base = PosePipeline()
    for k, clip in enumerate(c for c in a.clip.split(",") if c):
        probe_clip(clip, a, variants, base, a.trace if k == 0 else None)
    torch.cuda.synchronize()


def probe_clip(clip: str, a, variants: list, base, trace: int | None):
    """The pipeline alone and every variant on ``clip``; ``trace``: the variant traced again."""
    from runners.gpuinfo import environment
    from runners_bench import CLIPS, e2e, nvdec_alone, nvdec_alone_processes, pipeline_alone
    from tests import helpers

    path = helpers.data_path(CLIPS[clip])
    pipes: dict = {}

    def pipe_for(ring: int):
        if ring not in pipes:
            p = base.replica()
            p.ring = ring
            pipes[ring] = p
        return pipes[ring]

    run = {"env": environment(), "command": "python experiments/e2e_probe.py " + " ".join(sys.argv[1:]),
           "clip": clip, "streams": a.streams, "batch": a.batch, "chunk": a.chunk, "max_wait_ms": a.max_wait_ms,
           "alone": {}, "variants": []}
    for ring in [int(r) for r in a.alone_rings.split(",") if r]:
        r = pipeline_alone(pipe_for(ring), path, a.batch)
        run["alone"][f"ring{ring}"] = r
        print(f"pipeline alone ring {ring}: {r['frames_per_s']:.0f} fr/s", flush=True)

    if a.nvdec_alone:
        for form, fn in (("threads", nvdec_alone), ("processes", nvdec_alone_processes)):
            r = fn(path, a.streams, a.chunk)
            run["alone"][f"nvdec_{form}"] = r
            print(f"NVDEC alone ({form}): {r['frames_per_s']:.0f} fr/s", flush=True)

    def one(v: dict) -> dict:
        pipe = pipe_for(v["ring"])
        w0 = pipe.ring_wait_s
        t0 = time.perf_counter()
        log = GcLog()
        gc.callbacks.append(log)
        if "nogc" in v["flags"]:
            gc.disable()
        hl = HostLog().install() if "log" in v["flags"] else None
        import runners.nvdec as rn

        prio = rn.DECODER_STREAM_PRIORITY
        if "lowprio" in v["flags"]:
            rn.DECODER_STREAM_PRIORITY = 0
        try:
            rep = e2e(pipe, path, a.streams, a.batch, a.max_wait_ms, v["chunk"] or a.chunk, v["decoder"],
                      worker_stream=v["worker_stream"], usage="nousage" not in v["flags"])
        finally:
            rn.DECODER_STREAM_PRIORITY = prio
            gc.enable()
            gc.callbacks.remove(log)
            if hl is not None:
                hl.remove()
        rep["gc"] = log.summary()
        if hl is not None:
            rep["host_log"] = hl.summary()
        rep["variant"] = dict(v)
        rep["ring_wait_s_total"] = pipe.ring_wait_s - w0
        rep["phase_wall_s"] = time.perf_counter() - t0
        th = rep.get("runner_thread_s", {})
        print(f"{v['decoder']:22s} {v['worker_stream']:7s} ring {v['ring']} chunk {v['chunk'] or a.chunk}: "
              f"{rep['frames_per_s']:7.0f} fr/s  graph {rep.get('gpu_stage_ms_per_batch', {}).get('graph', 0):.2f} ms "
              f"d2h {rep.get('gpu_stage_ms_per_batch', {}).get('d2h', 0):.2f} ms  submit {th.get('gpu.submit', 0):.2f} s "
              f"ring_wait {th.get('gpu.ring_wait', 0):.2f} s frames_wait {th.get('gpu.frames_wait', 0):.2f} s  "
              f"util {(rep.get('usage') or {}).get('gpu_util_percent', {}).get('mean', 0):.0f}%  "
              f"gc2 {rep['gc']['gen2']['count']}x max {rep['gc']['gen2']['max_ms']:.1f} ms  {'+'.join(v['flags'])}", flush=True)
        return rep

    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(a.repeats):
        for v in variants:
            run["variants"].append(one(v))
            _write(out, run)
    if trace is not None and trace < len(variants):
        from torch.profiler import ProfilerActivity, profile

        tdir = Path(a.trace_dir or out)
        tdir.mkdir(parents=True, exist_ok=True)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            rep = one(variants[trace])
        tpath = tdir / "e2e_probe_trace.json"
        prof.export_chrome_trace(str(tpath))
        rep["trace"] = trace_summary(str(tpath))
        rep["traced"] = True
        run["variants"].append(rep)
        print(json.dumps({k: v for k, v in rep["trace"].items() if k != "streams"}), flush=True)
        _write(out, run)


def _write(out: Path, run: dict):
    p = out / "e2e_probe.json"
    runs = json.loads(p.read_text())["runs"] if p.exists() else []
    if runs and runs[-1].get("env", {}).get("date") == run["env"].get("date"):
        runs[-1] = run
    else:
        runs.append(run)
    p.write_text(json.dumps({"runs": runs}, indent=1, default=str))
    (out / "e2e_probe.md").write_text(markdown(runs))


def markdown(runs: list) -> str:
    """Every probe run: the references measured in it and one row per variant run."""
    lines = ["# e2e probe: the NVDEC runner end to end under variants (experiments/e2e_probe.py)", "",
             "fr/s / alone: against the pipeline alone (frames already on the GPU) of the same run. graph: GPU ms "
             "per batch of 64 from CUDA events (time-slicing with other CUDA contexts shows here). Every run "
             "is in e2e_probe.json (thread times, GC log, host timelines, trace summaries).", ""]
    for run in runs:
        env = run["env"]
        alone = run.get("alone", {})
        ref = max((v["frames_per_s"] for k, v in alone.items() if k.startswith("ring")), default=None)
        dec = ", ".join(f"{k.split('_')[1]} {v['frames_per_s']:,.0f}" for k, v in alone.items() if k.startswith("nvdec_"))
        lines += [f"## {env.get('date')}: {run['clip']}, {run['streams']} streams, {env.get('card')}", "",
                  f"Command: `{run['command']}`", "",
                  f"Pipeline alone: {ref:,.0f} fr/s" + (f"; NVDEC alone: {dec} fr/s" if dec else "") if ref else "", "",
                  "| decoder | worker stream | ring | chunk | flags | fr/s | / alone | graph ms | p99 ms | traced |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for v in run["variants"]:
            var = v["variant"]
            graph = v.get("gpu_stage_ms_per_batch", {}).get("graph")
            lines.append(f"| {var['decoder']} | {var['worker_stream']} | {var['ring']} | {var['chunk'] or run.get('chunk', 32)} | "
                         f"{'+'.join(var.get('flags', [])) or '-'} | {v['frames_per_s']:,.0f} | "
                         f"{v['frames_per_s'] / ref:.2f} | {graph if graph is None else round(graph, 2)} | "
                         f"{v['latency_ms']['p99']:.0f} | {'yes' if v.get('traced') else ''} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
