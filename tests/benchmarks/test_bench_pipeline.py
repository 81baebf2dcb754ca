"""Pipeline benchmarks (``pytest tests/benchmarks/test_bench_pipeline.py --benchmark-only``), anchors in the
same run: the backbone alone (same module, shape, batch, fp16, channels_last, CUDA graph), the fused
pipeline on frames already on the GPU as uint8 (results back in host memory), Ultralytics
``predict(quantize=16)`` on the same frames, batch-1 latency host frame -> host results, peak GPU memory.
experiments/bench_report.py --name pipeline turns the JSON into results/pipeline.{json,md}.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import helpers

pytestmark = pytest.mark.gpu

SRC = (432, 768)  # the sample clip; rect letterbox shape 384x640


@pytest.fixture(scope="module")
def gpu_frames(clip_frames):
    return torch.from_numpy(np.stack(clip_frames[:256])).cuda()


@pytest.fixture(scope="module")
def pipe():
    from posefuse.fusion import PosePipeline

    return PosePipeline(backend="cupy", precision="fp16", cuda_graph=True)


def _extra(benchmark, env_info, **kw):
    benchmark.extra_info.update(kernel="pipeline", env=env_info, model="yolo11n-pose", precision="fp16",
                                source="768x432 clip", shape="384x640", **kw)


@pytest.mark.parametrize("batch", [64, 256])
def test_backbone_alone(benchmark, batch, pipe, env_info):
    """The ceiling: the pipeline's own backbone module, replayed from a CUDA graph on a static input."""
    x = torch.rand(batch, 3, 384, 640, device="cuda").half()
    bb = pipe.backbone
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.inference_mode():
        for _ in range(3):
            bb(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g), torch.inference_mode():
        bb(x)
    benchmark.group = f"pipeline bs{batch}"
    sec = helpers.per_call(benchmark, g.replay, calls=5, rounds=5)
    _extra(benchmark, env_info, impl="backbone_alone", batch=batch, frames_per_s=batch / sec, ms_per_batch=sec * 1e3)


@pytest.mark.parametrize("batch", [64, 256])
def test_pipeline_gpu_frames(benchmark, batch, pipe, gpu_frames, env_info):
    """Frames on the GPU as uint8 -> poses in host memory, two batches in flight."""
    sets = [gpu_frames[i : i + batch] for i in range(0, 256, batch)]
    for s in sets:  # capture the graph of each slot
        pipe(s)
        pipe(s)
    state = {"i": 0, "pending": None}

    def one_batch():  # queue batch i, then read batch i-1's results: two batches in flight
        p = pipe.submit(sets[state["i"] % len(sets)])
        state["i"] += 1
        if state["pending"] is not None:
            state["pending"].result()
        state["pending"] = p

    def end_round():
        state["pending"].result()
        state["pending"] = None

    torch.cuda.reset_peak_memory_stats()
    benchmark.group = f"pipeline bs{batch}"
    sec = helpers.per_call(benchmark, one_batch, calls=8, rounds=5, end_round=end_round)
    _extra(benchmark, env_info, impl="posefuse", batch=batch, frames_per_s=batch / sec, ms_per_batch=sec * 1e3,
           backend=pipe.backend, cuda_graph=pipe.cuda_graph)


@pytest.mark.parametrize("batch", [64])
def test_ultralytics_predict(benchmark, batch, clip_frames, env_info):
    from posefuse.fusion.backbone import load_ultralytics

    y = load_ultralytics()
    frames = list(clip_frames[:batch])
    y.predict(frames[:2], verbose=False, device=0, quantize=16)

    def target():
        y.predict(frames, verbose=False, device=0, quantize=16, conf=0.25, iou=0.7)
        torch.cuda.synchronize()

    benchmark.group = f"pipeline bs{batch}"
    benchmark.pedantic(target, rounds=3, warmup_rounds=1, iterations=1)
    sec = benchmark.stats.stats.median
    _extra(benchmark, env_info, impl="ultralytics_predict", batch=batch, frames_per_s=batch / sec, ms_per_batch=sec * 1e3)


@pytest.mark.parametrize("impl", ["posefuse", "ultralytics_predict"])
def test_latency_bs1(benchmark, impl, pipe, clip_frames, env_info):
    """One 768x432 frame in host memory -> its results in host memory."""
    frames = clip_frames[100:132]
    if impl == "posefuse":
        run = pipe
        for f in frames[:3]:
            pipe([f])
    else:
        from posefuse.fusion.backbone import load_ultralytics

        y = load_ultralytics()
        y.predict(frames[0], verbose=False, device=0, quantize=16)
        run = lambda fr: y.predict(fr[0], verbose=False, device=0, quantize=16)  # noqa: E731
    lat = []
    for i in range(200 if impl == "posefuse" else 60):
        t0 = time.perf_counter()
        res = run([frames[i % len(frames)]])
        lat.append(time.perf_counter() - t0)
        assert len(res) == 1
    state = {"i": 0}

    def target():
        state["i"] += 1
        run([frames[state["i"] % len(frames)]])

    benchmark.group = "latency bs1"
    benchmark.pedantic(target, rounds=50, warmup_rounds=2, iterations=1)
    lat = np.array(lat) * 1e3
    _extra(benchmark, env_info, impl=impl, batch=1, latency_ms_p50=float(np.median(lat)),
           latency_ms_p90=float(np.percentile(lat, 90)), latency_ms_p99=float(np.percentile(lat, 99)),
           frames_per_s=1e3 / float(np.median(lat)))


@pytest.mark.parametrize("batch", [1, 64, 256])
def test_peak_memory(benchmark, batch, gpu_frames, env_info):
    """Peak GPU memory of a fresh pipeline warmed up and run at one batch size (graph mode)."""
    from posefuse.fusion import PosePipeline

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    p = PosePipeline(backend="cupy", precision="fp16", cuda_graph=True)
    x = gpu_frames[:batch]
    for _ in range(3):
        p(x)
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    benchmark.group = "peak memory"
    benchmark.pedantic(lambda: p(x), rounds=5, warmup_rounds=0, iterations=1)
    torch.cuda.synchronize()
    allocs = torch.cuda.memory_stats()["allocation.all.allocated"] - before
    _extra(benchmark, env_info, impl="posefuse_memory", batch=batch,
           peak_gpu_mib=(torch.cuda.max_memory_allocated() - base) / 2**20,
           steady_state_allocations=allocs)
