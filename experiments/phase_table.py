"""The optimization plan's phases, measured in one process on one card on the same real video.

    python experiments/phase_table.py [--streams 8] [--predict-frames 300] [--out-dir results]
    python experiments/phase_table.py --device cpu --backend reference --predict-frames 2 --max-frames 4   # smoke

Rows (each builds on the one before):
  baseline  Ultralytics ``predict`` frame by frame, as shipped (fp32)
  phase1    batching + fp16: ``predict`` on batches of 32, quantize=16
  phase2    threaded pipeline + CUDA streams: decode threads -> 2 pipeline replicas on their own CUDA
            streams -> result thread; torch-ops kernels (not fused), no CUDA graph; 8 OpenCV-decoded streams
  phase3    fused kernels + CUDA graph: the same runner with the CuPy kernels and graphs
  phase3-compiled  + the backbone compiled by Inductor inside the graphs (``compile='default'``): the plan's
            "fused model" row (TensorRT cannot be installed here: results/DECISIONS.md)
  phase4    dynamic batching over 8 NVDEC streams (batch 64, max wait 5 ms); phase4-compiled the same with
            the compiled backbone
  phase4-2gpu  the phase4 workload on every GPU (one worker process per GPU), when there are >= 2
For each: frames/s, speed-up over the baseline, latency p50/p99 (arrival -> result), GPU utilization and
memory (NVML), CPU usage (psutil, this process), and model FLOP utilization: backbone FLOPs per frame x
frames/s over the card's dense fp16 tensor peak. Writes results/phase_table.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import harness
import plots

CLIP = harness.CLIP
# dense fp16/bf16 tensor-core peak, TFLOP/s (NVIDIA datasheets)
PEAK_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.4}


def peak_tflops(card: str | None) -> float | None:
    if not card:
        return None
    for k, v in PEAK_TFLOPS.items():
        if k in card:
            return v
    return None


def backbone_gflops(h: int, w: int) -> float:
    """GFLOPs of one yolo11n-pose forward pass at h x w (Ultralytics' thop count, 2 FLOPs per MAC)."""
    from ultralytics.utils.torch_utils import get_flops

    from posefuse.fusion.backbone import load_ultralytics

    model = load_ultralytics().model
    return get_flops(model, 640) * (h * w) / (640 * 640)


def _row(name: str, what: str, rep: dict, extra: dict | None = None) -> dict:
    u = rep.get("usage")
    return {"phase": name, "what": what, "frames": rep["results"], "frames_per_s": rep["frames_per_s"],
            "latency_ms": rep["latency_ms"], "drops": rep["drops"],
            "gpu_util_percent": harness.usage_stat(u, "gpu_util_percent"),
            "gpu_mem_used_mib": harness.usage_stat(u, "gpu_mem_used_mib", "max"),
            "cpu_percent": harness.usage_stat(u, "cpu_percent"),
            "stage_ms_per_batch": rep.get("gpu_ms_per_batch"), **(extra or {})}


def predict_phase(frames, batch: int, half: bool, device) -> tuple[dict, dict]:
    """Ultralytics predict over ``frames`` in batches of ``batch`` (1: frame by frame): the anchor."""
    from posefuse.fusion.backbone import load_ultralytics
    from posefuse.runners.monitor import PerformanceMonitor

    yolo = load_ultralytics()
    dev = 0 if device.startswith("cuda") else "cpu"
    yolo.predict(frames[:batch], verbose=False, quantize=16 if half else None, device=dev)  # warm-up
    mon = PerformanceMonitor()
    speed = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    mon.start()
    for i in range(0, len(frames), batch):
        chunk = frames[i:i + batch]
        mon.arrived([("clip", i + k) for k in range(len(chunk))])
        res = yolo.predict(chunk, verbose=False, quantize=16 if half else None, device=dev)
        mon.delivered([(("clip", i + k), len(r.boxes)) for k, r in enumerate(res)])
        for r in res:
            for s in speed:
                speed[s] += r.speed[s] / len(frames)  # ms per image
    mon.stop()
    return mon.report(), {"ultralytics_ms_per_image": speed}


def runner_phase(**cfg) -> dict:
    """One ``posefuse.run`` (graphs captured before its clock starts): its overall report."""
    from posefuse import RunConfig, run

    rep = run(RunConfig(progress=False, **cfg))
    return {**rep.overall, "failed": rep.failed, "backend": rep.ran.get("backend")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--predict-frames", type=int, default=300)
    ap.add_argument("--max-frames", type=int, default=None, help="frames per stream (default: the whole clip)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--chunk", type=int, default=32, help="phase 4: NVDEC frames handed to the runner at once")
    ap.add_argument("--backend", default=None, help="override the fused phases' backend (smoke tests)")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    import torch

    from posefuse.runners.gpuinfo import nvdec_available

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    env = harness.environment()
    path = harness.data_path(CLIP)
    frames = harness.read_video(path, a.predict_frames)
    h, w = frames[0].shape[:2]
    gflops = backbone_gflops(384 if (h, w) == (432, 768) else 640, 640)
    peak = peak_tflops(env.get("card")) if cuda else None
    rows, cdfs = [], {}

    def add(name, what, rep, extra=None):
        r = _row(name, what, rep, extra)
        r["mfu"] = (gflops * 1e9 * r["frames_per_s"] / (peak * 1e12)) if peak and r["frames_per_s"] else None
        rows.append(r)
        cdfs[name] = rep["latency_cdf_ms"]
        print(f"{name:16s} {r['frames_per_s']:9.1f} fr/s  p50 {r['latency_ms']['p50']:8.1f} ms  "
              f"p99 {r['latency_ms']['p99']:8.1f} ms  {what}", flush=True)
        _write(env, rows, cdfs, gflops, peak, a, argv)

    rep, ex = predict_phase(frames, 1, False, device)
    add("baseline", "Ultralytics predict, frame by frame, fp32", rep, ex)
    rep, ex = predict_phase(frames, 32, cuda, device)
    add("phase1", "Ultralytics predict, batches of 32, fp16", rep, ex)
    common = dict(sources=[path], repeat=a.streams, max_frames=a.max_frames, device=device, decoder="cpu")
    rep = runner_phase(runner="replicas", replicas=2, batch=32, backend=a.backend or ("torch" if cuda else "reference"),
                       cuda_graph=False, **common)
    add("phase2", f"threaded pipeline + 2 CUDA streams, {rep['backend']} kernels, no graph, {a.streams} OpenCV streams",
        rep)
    rep = runner_phase(runner="replicas", replicas=2, batch=64, backend=a.backend or "auto", **common)
    add("phase3", f"+ fused {rep['backend']} kernels + CUDA graphs (batch 64), {a.streams} OpenCV streams", rep)
    if cuda:
        rep = runner_phase(runner="replicas", replicas=2, batch=64, backend=a.backend or "auto", compile="default",
                           **common)
        add("phase3-compiled", "+ the backbone compiled by Inductor inside the graphs", rep)
    why = nvdec_available()
    if why is None:
        rep = runner_phase(runner="dynamic", batch=64, max_wait_ms=5.0, chunk=a.chunk, **{**common, "decoder": "nvdec"})
        add("phase4", f"+ dynamic batching (64, 5 ms) over {a.streams} NVDEC streams (one decode host)", rep)
        rep = runner_phase(runner="dynamic", batch=64, max_wait_ms=5.0, chunk=a.chunk, compile="default",
                           **{**common, "decoder": "nvdec"})
        add("phase4-compiled", "the phase4 workload with the compiled backbone", rep)
        if torch.cuda.device_count() >= 2:
            n = torch.cuda.device_count()
            rep = runner_phase(runner="multigpu", gpus=[f"cuda:{i}" for i in range(n)], batch=64, max_wait_ms=5.0,
                               decoder="nvdec", chunk=a.chunk, sources=[path], repeat=a.streams,
                               max_frames=a.max_frames)
            add(f"phase4-{n}gpu", f"the phase4 workload on {n} GPUs (a worker process each)", rep)
    else:
        print(f"phase4 skipped: {why}")
    return rows


def _write(env, rows, cdfs, gflops, peak, a, argv):
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = rows[0]["frames_per_s"]
    for r in rows:
        r["speedup"] = r["frames_per_s"] / base if base else None
    doc = {"env": env, "command": "python experiments/phase_table.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "backbone_gflops_per_frame": gflops, "peak_tflops_fp16_dense": peak, "rows": rows, "latency_cdf_ms": cdfs}
    (out / "phase_table.json").write_text(json.dumps(doc, indent=1, default=float))
    (out / "phase_table.md").write_text(markdown(doc))
    try:
        plots.phase_bars(doc, out / "phase_table.png")
    except Exception as e:  # matplotlib missing on the GPU machine: plots/plots.py redraws from the JSON
        print(f"phase_table.png not drawn: {e}")


def markdown(doc: dict) -> str:
    env = doc["env"]
    fmt = lambda v, f="{:.0f}": "-" if v is None else f.format(v)  # noqa: E731
    driver = str(env.get("driver")).splitlines()[0]  # runs recorded before environment() kept one line per GPU
    lines = [f"# Phase table — {env.get('card', 'CPU')}, driver {driver}, torch {env.get('torch')}, "
             f"CuPy {env.get('cupy')}, {env.get('date')}", "",
             f"Command: `{doc['command']}`. Backbone {doc['backbone_gflops_per_frame']:.2f} GFLOP/frame at the rect "
             f"letterbox shape; MFU against {fmt(doc['peak_tflops_fp16_dense'])} TFLOP/s dense fp16.", "",
             *([f"Note: {doc['note']}", ""] if doc.get("note") else []),
             "| phase | what | frames/s | speed-up | p50 ms | p99 ms | GPU util % | GPU mem MiB | CPU % | MFU |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['phase']} | {r['what']} | {r['frames_per_s']:.1f} | {fmt(r['speedup'], '{:.1f}x')} | "
                     f"{r['latency_ms']['p50']:.1f} | {r['latency_ms']['p99']:.1f} | {fmt(r['gpu_util_percent'])} | "
                     f"{fmt(r['gpu_mem_used_mib'])} | {fmt(r['cpu_percent'])} | {fmt(r['mfu'], '{:.2%}')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
