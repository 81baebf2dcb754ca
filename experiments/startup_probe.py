"""Where a run's start-up goes, step by step, each probe a fresh process.

    python experiments/startup_probe.py [--probes default,eager_modules,...] [--out-dir results]

Each probe times, from the top of a fresh interpreter: importing torch, the CUDA context, importing CuPy,
Ultralytics and posefuse, loading the weights; then the backbone's first and second call at each batch
size of ``--sizes`` (fp16, channels_last, 384x640: the 768x432 clip letterboxed), and its steady ms per
batch. Probes differ by one thing each:

* ``default``: cuDNN autotuning off (what ``posefuse.run`` sets);
* ``benchmark``: cuDNN autotuning on;
* ``eager_modules``: ``CUDA_MODULE_LOADING=EAGER`` (every kernel module loaded at context creation);
* ``heuristic_b``: ``TORCH_CUDNN_USE_HEURISTIC_MODE_B=1`` (cuDNN's slower, more exact engine heuristic);
* ``layers``: the first call of each convolution timed alone (its share of the first-call cost);
* ``thread``: the same batch size first on the main thread, then on a second thread (torch keeps its
  cuDNN plans per thread);
* ``pipeline``: the fused pipeline's warm-up (plans, CuPy kernels, capture) per batch size, with a fresh
  CuPy kernel cache, then ``pipeline_cached`` with the cache the first one left;
* ``decode``: a decode host (spawn, imports, NVDEC open) to the first frame of the clip.

Writes results/startup_probe.{json,md} (runs appended).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

T0 = time.perf_counter()

import harness  # noqa: E402

PROBES = ("default", "benchmark", "eager_modules", "heuristic_b", "layers", "thread", "pipeline",
          "pipeline_cached", "decode")
ENV = {"eager_modules": {"CUDA_MODULE_LOADING": "EAGER"}, "heuristic_b": {"TORCH_CUDNN_USE_HEURISTIC_MODE_B": "1"}}


def child(probe: str, sizes: list[int]) -> dict:
    out: dict = {"probe": probe, "steps_s": {}}
    steps = out["steps_s"]
    t = [T0]

    def lap(name):
        now = time.perf_counter()
        steps[name] = now - t[0]
        t[0] = now

    import torch
    lap("import_torch")
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    lap("cuda_context")
    import cupy  # noqa: F401
    lap("import_cupy")
    import ultralytics  # noqa: F401
    lap("import_ultralytics")
    import posefuse.fusion.pipeline  # noqa: F401
    from posefuse import PosePipeline
    lap("import_posefuse")
    if probe == "decode":
        return decode_probe(out, lap)
    torch.backends.cudnn.benchmark = probe == "benchmark"
    pipe = PosePipeline(cuda_graph=probe.startswith("pipeline"))
    torch.cuda.synchronize()
    lap("weights")
    if probe.startswith("pipeline"):
        import numpy as np

        frame = np.full((432, 768, 3), 114, np.uint8)
        out["warmup_s"] = {}
        for n in (1, 2, 4, 8, 16, 32, 64):  # warmup(n) captures every bucket up to n: each step adds one
            t1 = time.perf_counter()
            pipe.warmup((432, 768), n)
            torch.cuda.synchronize()
            out["warmup_s"][n] = time.perf_counter() - t1
        t1 = time.perf_counter()
        pipe([frame] * 64)
        out["first_call_after_warmup_s"] = time.perf_counter() - t1
        return out
    bb = pipe.backbone

    def x_of(n):
        return torch.zeros((n, 3, 384, 640), dtype=torch.float16, device="cuda").to(memory_format=torch.channels_last)

    def timed_call(x):
        t1 = time.perf_counter()
        with torch.inference_mode():
            bb(x)
        torch.cuda.synchronize()
        return time.perf_counter() - t1

    if probe == "layers":
        convs = [(name, m) for name, m in bb.named_modules() if isinstance(m, torch.nn.Conv2d)]
        per: dict = {}

        def pre(name):
            def hook(m, args):
                torch.cuda.synchronize()
                per[name] = -time.perf_counter()
            return hook

        def post(name, m):
            def hook(mod, args, res):
                torch.cuda.synchronize()
                per[name] += time.perf_counter()
                shapes[name] = (tuple(args[0].shape), tuple(m.weight.shape), m.stride, m.padding, m.groups)
            return hook

        shapes: dict = {}
        handles = [m.register_forward_pre_hook(pre(n)) for n, m in convs]
        handles += [m.register_forward_hook(post(n, m)) for n, m in convs]
        first = timed_call(x_of(sizes[0]))
        per_first = dict(per)
        second = timed_call(x_of(sizes[0]))
        for h in handles:
            h.remove()
        ranked = sorted(per_first.items(), key=lambda kv: -kv[1])
        out.update(first_call_s=first, second_call_s=second, convs=len(convs),
                   distinct_conv_shapes=len(set(shapes.values())), conv_first_s_sum=sum(per_first.values()),
                   conv_first_s_top=[(n, round(v, 4), str(shapes[n])) for n, v in ranked[:12]],
                   conv_first_s_median=sorted(per_first.values())[len(per_first) // 2])
        return out
    out["first_s"], out["second_s"] = {}, {}
    for n in sizes:
        x = x_of(n)
        out["first_s"][n] = timed_call(x)
        out["second_s"][n] = timed_call(x)
    if probe == "thread":
        import threading

        res = {}
        th = threading.Thread(target=lambda: res.update(first=timed_call(x_of(sizes[0])), second=timed_call(x_of(sizes[0]))))
        th.start()
        th.join()
        out["other_thread_s"] = res
        return out
    x = x_of(sizes[0])
    out["steady_ms"] = harness.cuda_median_ms(lambda: bb(x), iters=20)
    return out


def decode_probe(out: dict, lap) -> dict:
    from posefuse.runners.sources import open_source
    from posefuse.runners.sources.decodehost import DecodeHosts

    dp = DecodeHosts()
    src = open_source(harness.data_path(harness.CLIP), decoder="nvdec", device="cuda:0", chunk=64, decode_hosts=dp)
    lap("decode_host_open")
    it = iter(src.frames())
    f = next(it)
    lap("first_frame")
    f.release()
    n = 1
    for f in it:
        f.release()
        n += 1
    lap("rest_of_clip")
    out["frames"] = n
    src.close()
    dp.close()
    lap("close")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probes", default=",".join(PROBES))
    ap.add_argument("--sizes", default="64,32,1")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    if a.child:
        print("PROBE " + json.dumps(child(a.child, sizes)), flush=True)
        return None
    cache = tempfile.mkdtemp(prefix="cupy-cache-")
    rows = []
    for probe in a.probes.split(","):
        env = {**os.environ, **ENV.get(probe, {})}
        if probe.startswith("pipeline"):
            env["CUPY_CACHE_DIR"] = cache  # fresh for 'pipeline', as it left it for 'pipeline_cached'
        t = time.perf_counter()
        r = subprocess.run([sys.executable, __file__, "--child", probe, "--sizes", a.sizes], env=env,
                           capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t
        line = [x for x in r.stdout.splitlines() if x.startswith("PROBE ")]
        row = json.loads(line[-1][6:]) if line else {"probe": probe, "error": r.stderr[-2000:]}
        row["process_wall_s"] = wall
        rows.append(row)
        print(json.dumps(row), flush=True)
    run = harness.new_run("startup_probe.py", argv, probes=rows)
    harness.record(a.out_dir, "startup_probe", run, markdown)
    return run


def markdown(runs: list) -> str:
    lines = ["# Start-up, step by step (each probe a fresh process)", ""]
    for run in reversed(runs):
        lines += harness.run_heading(run) + [
                  "| probe | process wall s | steps (s) | backbone first / second call (s) by batch size | other |",
                  "|---|---:|---|---|---|"]
        for r in run["probes"]:
            steps = ", ".join(f"{k} {v:.2f}" for k, v in r.get("steps_s", {}).items())
            calls = ", ".join(f"bs{n}: {v:.2f} / {r['second_s'][n]:.3f}" for n, v in r.get("first_s", {}).items())
            if "warmup_s" in r:
                calls = ", ".join(f"warm-up to bs{n}: {v:.2f}" for n, v in r["warmup_s"].items())
            other = {k: v for k, v in r.items() if k not in ("probe", "steps_s", "first_s", "second_s", "warmup_s",
                                                            "process_wall_s", "env")}
            if "error" in other:  # its last line: a table cell holds one line
                other["error"] = other["error"].strip().splitlines()[-1]
            lines.append(f"| {r['probe']} | {r['process_wall_s']:.1f} | {steps} | {calls} | "
                         f"{json.dumps(other)[:600] if other else ''} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
