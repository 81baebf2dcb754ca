"""The Inductor-compiled backbone inside the pipeline's CUDA graph against today's (issue 36), in one call.

    python experiments/compile_bench.py [--batches 64 256 1] [--modes off default] [--out-dir results]
        -> results/compile.{json,md}

* pipeline: the pipeline alone (frames on the GPU -> poses in host memory, two batches in flight) per mode
  and batch size: frames/s, and for batch 1 the latency of one frame (median of 50). The first capture of
  each (mode, batch) is timed: the compile, cold unless the cache holds it.
* start: a fresh process builds the pipeline and captures batch 64 for each mode, cold (an empty Inductor
  cache) then warm (the cache the cold one filled): what a job's start-up pays.
* parts: where a batch of 64 goes, per mode: the pipeline's frames/s; the GPU ms of its graph (letterbox to
  rescale, the timed batches) and of its copy to the host; the backbone alone replayed in a CUDA graph of its
  own on the pipeline's canvas (channels-last, as the letterbox writes it on the GPU) and on a planar one;
  the host ms that turn a copied batch into PoseResults. (Rows before 2026-12-07 12:30: the pipeline's
  canvas was planar; they also timed the backbone converting it to channels-last first.)
* variants: the backbone alone (bs64, the pipeline's channels-last canvas, in a CUDA graph of its own) as
  the pipeline compiles it beside ``torch.compile`` of the same module (static shapes) with Inductor options
  that cost no autotuning search: where the rest of the way to 1.8x could come from. Each row: GPU ms of a
  replay, the compile's seconds, the largest difference from the uncompiled output.
* equal: the compiled pipeline's poses against the uncompiled one's on 64 real frames (fp16): detections
  matched at IoU >= 0.98, the largest keypoint and score differences.
The yolo11n-pose trained weights, fp16, the CuPy backend, 384x640 canvas (the 768x432 clip).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import harness


def _pipe(mode: str, batch: int):
    from posefuse import PosePipeline

    return PosePipeline(device="cuda", backend="cupy", precision="fp16", batch_sizes=(batch,), compile=mode)


def pipeline(frames, modes, batches, calls: int = 30, done=None) -> list:
    """One row per batch size and mode (see the module docstring); ``done(rows)`` after each."""
    import torch

    rows = []
    for batch in batches:
        for mode in modes:
            pipe = _pipe(mode, batch)
            t = time.perf_counter()
            pipe.warmup((432, 768), batch, device_frames=True)
            torch.cuda.synchronize()
            first_s = time.perf_counter() - t
            sets = [frames[i:i + batch] for i in range(0, len(frames) - batch + 1, batch)][:4]
            for s in sets:
                pipe(s)
            torch.cuda.synchronize()
            row = {"mode": mode, "batch": batch, "first_capture_s": first_s}
            if batch == 1:
                lat = []
                for k in range(50):
                    t = time.perf_counter()
                    pipe(sets[k % len(sets)])
                    lat.append(time.perf_counter() - t)
                row["latency_ms_p50"] = 1e3 * float(np.median(lat))
            row["frames_per_s"] = harness.pipeline_frames_per_s(pipe, sets, calls)
            row["graph_errors"] = list(pipe.graph_errors)
            rows.append(row)
            print(row, flush=True)
            if done is not None:
                done(rows)
            del pipe
            torch.cuda.empty_cache()
    return rows


def _graph_ms(fwd, x) -> float:
    """GPU ms of one replay of ``fwd(x)`` captured in a CUDA graph of its own (median of 100)."""
    import torch

    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fwd(x)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fwd(x)
    return harness.cuda_median_ms(g.replay, iters=100)


def parts(frames, modes, batch: int = 64, calls: int = 400) -> list:
    """One row per mode: see the module docstring's ``parts``."""
    import torch

    from posefuse.fusion.compiled import compile_backbone

    rows = []
    sets = [frames[i:i + batch] for i in range(0, len(frames) - batch + 1, batch)]
    for mode in modes:
        pipe = _pipe(mode, batch)
        pipe.warmup((432, 768), batch, device_frames=True)
        row = {"mode": mode, "batch": batch, "frames_per_s": harness.pipeline_frames_per_s(pipe, sets, calls)}
        spans, host_ms, pending = {}, [], None
        for k in range(calls):  # the timed batches' GPU spans; the host's share of result() once the copy is done
            nxt = pipe.submit(sets[k % len(sets)])
            if pending is not None:
                while not pending.done():
                    time.sleep(0)
                t = time.perf_counter()
                pending.result()
                host_ms.append(1e3 * (time.perf_counter() - t))
                for name, ms in pending.gpu_ms.items():
                    spans.setdefault(name, []).append(ms)
            pending = nxt
        pending.result()
        row["gpu_ms"] = {name: float(np.median(v)) for name, v in spans.items()}
        row["results_host_ms"] = float(np.median(host_ms))
        x = torch.empty((batch, 3, 384, 640), dtype=torch.float16, device="cuda", memory_format=pipe.canvas_format)
        x.copy_(torch.rand_like(x))  # the pipeline's canvas
        fwd = pipe.backbone if mode == "off" else compile_backbone(pipe.backbone, mode)  # its artifact, loaded
        row["canvas"] = "channels_last" if pipe.canvas_format == torch.channels_last else "planar"
        row["backbone_graph_ms"] = _graph_ms(fwd, x)
        # the same canvas laid out planar (compiled: another artifact)
        row["backbone_graph_ms_planar"] = _graph_ms(fwd, x.contiguous())
        row["graph_errors"] = list(pipe.graph_errors)
        rows.append(row)
        print(row, flush=True)
        del pipe, fwd
        torch.cuda.empty_cache()
    return rows


# torch.compile variants: (name, Inductor options, cuDNN autotuning)
VARIANTS = (("torch.compile default", {}, False),
            ("torch.compile default, cudnn.benchmark", {}, True),
            ("torch.compile coordinate descent", {"coordinate_descent_tuning": True}, False),
            ("torch.compile freezing", {"freezing": True}, False),
            ("torch.compile conv 1x1 as mm", {"conv_1x1_as_mm": True}, False))


def variants(batch: int = 64, done=None) -> list:
    """One row per way of running the backbone: see the module docstring's ``variants``; ``done(rows)`` after
    each."""
    import torch

    from posefuse.fusion.compiled import compile_backbone

    pipe = _pipe("off", batch)
    x = torch.empty((batch, 3, 384, 640), dtype=torch.float16, device="cuda", memory_format=pipe.canvas_format)
    x.copy_(torch.rand_like(x))
    with torch.inference_mode():
        ref = pipe.backbone(x).float()
    ways = [("uncompiled", lambda: pipe.backbone, False),
            ("posefuse 'default' (export, symbolic batch)", lambda: compile_backbone(pipe.backbone, "default"),
             False)]
    ways += [(name, (lambda o=opts: torch.compile(pipe.backbone, dynamic=False, options=o)), bench)
             for name, opts, bench in VARIANTS]
    rows = []
    for name, make, bench in ways:
        torch.compiler.reset()
        torch.backends.cudnn.benchmark = bench
        t = time.perf_counter()
        fwd = make()
        with torch.inference_mode():
            out = fwd(x)  # the compile, where there is one
        torch.cuda.synchronize()
        row = {"way": name, "batch": batch, "compile_s": time.perf_counter() - t,
               "max_abs_diff": float((out.float() - ref).abs().max()), "backbone_graph_ms": _graph_ms(fwd, x)}
        rows.append(row)
        print(row, flush=True)
        if done is not None:
            done(rows)
        del fwd
    torch.backends.cudnn.benchmark = False
    return rows


_START = """
import json, time
import torch
t0 = time.perf_counter()
from posefuse import PosePipeline
p = PosePipeline(device="cuda", backend="cupy", precision="fp16", batch_sizes=(64,), compile={mode!r})
t1 = time.perf_counter()
if p.compile != "off":  # the compile stack, timed apart from the capture that would import it; Inductor
    from posefuse.fusion.compiled import use_cache_dir  # pointed at posefuse's cache first, as the capture does
    use_cache_dir()  # (the import points it at Inductor's default folder otherwise)
    from torch._inductor import CompiledArtifact, standalone_compile
t_import = time.perf_counter() - t1
t1 = time.perf_counter()
prof = None
if {profile!r}:
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
p.warmup((432, 768), 64, device_frames=True)
torch.cuda.synchronize()
t2 = time.perf_counter()
top = []
if prof is not None:
    import pstats
    prof.disable()
    st = pstats.Stats(prof)
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][3])[:{profile!r}]
    top = [[f"{{k[0].rsplit('site-packages/', 1)[-1]}}:{{k[1]}}({{k[2]}})", round(v[3], 3)] for k, v in rows]
print(json.dumps({{"build_s": t1 - t0 - t_import, "import_s": t_import, "capture_s": t2 - t1, "compile": p.compile,
                  "end": time.time(), "profile": top}}))
"""


def start(modes, warm_env=(), profile: int = 0) -> list:
    """One fresh process per row (cold: an empty cache; warm: the cache the cold one filled), then for each
    compiled mode one more warm row per ``warm_env`` setting (KEY=VALUE, e.g. TORCHINDUCTOR_COMPILE_THREADS=1)
    and, with ``profile`` > 0, a warm row whose capture runs under cProfile (its top ``profile`` functions by
    cumulative seconds; its times carry the profiler's cost). A row splits the process's wall: the
    interpreter and torch's import, the pipeline's build, the import of torch's compile stack (compiled modes:
    timed apart, before the capture that would import it), the capture (bs64), and the exit (the process's
    atexit work, Inductor's among it)."""
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "POSEFUSE_CACHE": cache}
        env.pop("TORCHINDUCTOR_CACHE_DIR", None)
        for mode in modes:
            states = [("cold", {}), ("warm", {})] if mode != "off" else [("-", {})]
            if mode != "off":
                states += [(f"warm, {kv}", dict([kv.split("=", 1)])) for kv in warm_env]
                states += [("warm, profiled", {})] if profile else []
            for state, extra in states:
                t = time.perf_counter()
                code = _START.format(mode=mode, profile=profile if state == "warm, profiled" else 0)
                r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **extra})
                wall, t_end = time.perf_counter() - t, time.time()
                if r.returncode:
                    raise SystemExit(r.stderr[-2000:])
                out = json.loads(r.stdout.strip().splitlines()[-1])
                exit_s = t_end - out.pop("end")
                row = {"mode": mode, "cache": state, "process_wall_s": wall, **out, "exit_s": exit_s,
                       "interpreter_and_torch_s": wall - exit_s - out["build_s"] - out["import_s"] - out["capture_s"]}
                rows.append(row)
                print({k: v for k, v in row.items() if k != "profile"}, flush=True)
                for name, cum in row["profile"][:12]:
                    print(f"   {cum:7.3f} s  {name}", flush=True)
    return rows


def equal(frames) -> dict:
    from posefuse.fusion.accuracy import AccuracyTally

    a, b = _pipe("off", 64), _pipe("default", 64)
    tally = AccuracyTally()
    for ours, theirs in zip(b(frames[:64]), a(frames[:64])):
        tally.add(ours, theirs)
    row = tally.summary()
    print(row, flush=True)
    return row


def _ms3(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.3f}"


def _ms(row: dict, key: str) -> str:
    return _ms3(row.get(key))


def markdown(runs: list) -> str:
    out = ["# The backbone compiled by Inductor inside the pipeline's CUDA graph", "",
           "yolo11n-pose (trained), fp16, CuPy backend, 384x640 canvas. Each run below is one command; its card "
           "and versions are in its heading.", ""]
    for r in reversed(runs):
        out += harness.run_heading(r)
        if r.get("pipeline"):
            out += ["| mode | batch | frames/s | first capture s | latency p50 ms |", "|---|---:|---:|---:|---:|"]
            out += [f"| {x['mode']} | {x['batch']} | {x['frames_per_s']:,.0f} | {x['first_capture_s']:.1f} | "
                    f"{'%.2f' % x['latency_ms_p50'] if 'latency_ms_p50' in x else '-'} |" for x in r["pipeline"]]
            out.append("")
        if r.get("parts"):
            out += ["| mode | batch | frames/s | pipeline graph GPU ms | copy to host GPU ms "
                    "| pipeline's canvas | backbone alone (graph) on it GPU ms | rest of the graph GPU ms "
                    "| PoseResults host ms | backbone alone, planar canvas GPU ms "
                    "| backbone alone, channels-last canvas GPU ms "
                    "| backbone alone, converting a planar canvas to channels-last first GPU ms |",
                    "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
            for x in r["parts"]:
                g = x["gpu_ms"]
                chain = next((v for k, v in g.items() if k.startswith("letterbox")), None)
                rest = "-" if chain is None else f"{chain - x['backbone_graph_ms']:.3f}"
                canvas = x.get("canvas", "planar")
                planar = x["backbone_graph_ms"] if canvas == "planar" else x.get("backbone_graph_ms_planar")
                nhwc = x["backbone_graph_ms"] if canvas != "planar" else x.get("backbone_graph_ms_channels_last")
                out.append(f"| {x['mode']} | {x['batch']} | {x['frames_per_s']:,.0f} | "
                           f"{'-' if chain is None else '%.3f' % chain} | {_ms(g, 'd2h')} | "
                           f"{canvas.replace('_', '-')} | {x['backbone_graph_ms']:.3f} | {rest} | "
                           f"{x['results_host_ms']:.3f} | {_ms3(planar)} | {_ms3(nhwc)} | "
                           f"{_ms(x, 'backbone_graph_ms_converted')} |")
            out.append("")
        if r.get("start"):
            def s(x, k):
                return f"{x[k]:.1f}" if x.get(k) is not None else "-"

            out += ["| mode | cache | process wall s | interpreter and torch s | build s | compile stack import s "
                    "| capture s (bs64) | exit s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
            out += [f"| {x['mode']} | {x['cache']} | {s(x, 'process_wall_s')} | {s(x, 'interpreter_and_torch_s')} | "
                    f"{s(x, 'build_s')} | {s(x, 'import_s')} | {s(x, 'capture_s')} | {s(x, 'exit_s')} |"
                    for x in r["start"]]
            out.append("")
            for x in r["start"]:
                if x.get("profile"):
                    out += [f"Capture of the {x['mode']} / {x['cache']} row by cumulative seconds (cProfile):", ""]
                    out += [f"- {cum:.2f} s `{name}`" for name, cum in x["profile"]]
                    out.append("")
        if r.get("variants"):
            base = r["variants"][0]["backbone_graph_ms"]
            out += ["| backbone (bs64, channels-last canvas, own CUDA graph) | GPU ms | uncompiled over it "
                    "| compile s | largest difference from uncompiled |", "|---|---:|---:|---:|---:|"]
            out += [f"| {x['way']} | {x['backbone_graph_ms']:.3f} | {base / x['backbone_graph_ms']:.2f}x | "
                    f"{x['compile_s']:.1f} | {x['max_abs_diff']:.3g} |" for x in r["variants"]]
            out.append("")
        if r.get("equal"):
            e = r["equal"]
            out += [f"Compiled against uncompiled, 64 frames: {e['matched']}/{e['their_detections']} matched at "
                    f"IoU >= 0.98, {e['our_detections'] - e['matched']} extra, keypoints within "
                    f"{e['keypoint_max_error_px']:.3f} px, scores within {e['max_score_diff']:.4f}.", ""]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 256, 1])
    ap.add_argument("--modes", nargs="+", default=["off", "default"])
    ap.add_argument("--only", nargs="+", choices=("pipeline", "parts", "start", "equal", "variants"), default=None)
    ap.add_argument("--warm-env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="start: one more warm row per setting, each in its own process's environment")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="start: one more warm row, its capture profiled (the top N functions by cumulative time)")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    import torch

    sections = a.only or ("equal", "pipeline", "start")
    run = harness.new_run("compile_bench.py", argv, device="cuda")

    def keep(section, rows):  # recorded as it goes: a max-autotune compile can outlast the call running it
        run[section] = rows
        harness.record(a.out_dir, "compile", run, markdown)

    frames = torch.from_numpy(np.stack(harness.read_video(harness.data_path(harness.CLIP), 512))).cuda()
    if "equal" in sections:
        keep("equal", equal(frames[100:164]))  # people walking in
    if "pipeline" in sections:
        keep("pipeline", pipeline(frames, a.modes, a.batches, done=lambda rows: keep("pipeline", rows)))
    if "parts" in sections:
        keep("parts", parts(frames, a.modes))
    if "variants" in sections:
        keep("variants", variants(done=lambda rows: keep("variants", rows)))
    if "start" in sections:
        keep("start", start(a.modes, a.warm_env, a.profile))


if __name__ == "__main__":
    sys.exit(main())
