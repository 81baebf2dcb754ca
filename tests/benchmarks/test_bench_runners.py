"""Runner benchmarks (``pytest tests/benchmarks/test_bench_runners.py --benchmark-only``): each runner over 8
streams of the 768x432 clip, end to end (file -> poses in host memory), frames/s and latency in
``extra_info``; experiments/bench_report.py --name runners turns the JSON into markdown. The recorded
runner figures (with their anchors: NVDEC alone, pipeline alone, predict) come from
experiments/runners_bench.py; this file puts the runners in the same benchmark harness as the kernels.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu

CLIP = "one-by-one-person-detection.mp4"
STREAMS = 8
FRAMES = 400  # per stream


@pytest.fixture(scope="module")
def pipes():
    from fusion import PosePipeline

    p = PosePipeline()
    return [p, p.replica()]


def _sources(decoder):
    from runners.sources import open_source
    from tests import helpers

    out = []
    for k in range(STREAMS):
        s = open_source(helpers.data_path(CLIP), FRAMES, decoder, chunk=64)
        s.name = f"s{k}"
        out.append(s)
    return out


@pytest.mark.parametrize("runner, decoder", [("pipelined", "cpu"), ("streams", "cpu"), ("dynamic", "cpu"),
                                             ("dynamic", "nvdec"), ("dynamic", "nvdec-shared"),
                                             ("dynamic", "nvdec-process")])
def test_runner_end_to_end(benchmark, runner, decoder, pipes, env_info):
    from runners.concurrent import run_concurrent, warm_up
    from runners.monitor import PerformanceMonitor
    from runners.nvdec import nvdec_available

    if decoder.startswith("nvdec") and nvdec_available():
        pytest.skip(nvdec_available())
    engine = pipes if runner == "streams" else pipes[0]
    shapes = _sources(decoder)
    warm_up(engine, shapes, 64)
    for s in shapes:  # opened for their frame shape only
        s.close()
    reports = []

    def setup():
        return (_sources(decoder),), {}

    def run(sources):
        mon = PerformanceMonitor()
        mon.start()
        run_concurrent(sources, engine, mon, batch=64, max_wait_ms=5.0 if runner == "dynamic" else None)
        mon.stop()
        reports.append(mon.report())

    benchmark.pedantic(run, setup=setup, rounds=3, warmup_rounds=1)
    best = max(reports, key=lambda r: r["frames_per_s"])
    assert best["results"] == STREAMS * FRAMES and not best["drops"]
    benchmark.extra_info.update(kernel="runner", impl=runner, decoder=decoder, batch=64, streams=STREAMS,
                                env=env_info, frames_per_s=best["frames_per_s"],
                                latency_ms_p50=best["latency_ms"]["p50"], latency_ms_p99=best["latency_ms"]["p99"],
                                runner_thread_s=best["runner_thread_s"])
