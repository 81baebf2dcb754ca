"""Runner benchmarks (``pytest tests/benchmarks/test_bench_runners.py --benchmark-only``): each runner over 8
streams of the 768x432 clip through ``posefuse.run``, as a user runs it: one round is one whole run (model,
sources, graph capture, the run), and ``extra_info`` holds the run's own steady figures (frames/s and
latency from its clock) and its start-up split. experiments/bench_report.py --name runner_benchmarks turns
the JSON into markdown; the recorded runner figures with their anchors come from experiments/runners_bench.py.
"""
from __future__ import annotations

import pytest

import helpers

pytestmark = pytest.mark.gpu

STREAMS = 8
FRAMES = 400  # per stream


@pytest.mark.parametrize("runner, decoder", [("pipelined", "cpu"), ("replicas", "cpu"), ("dynamic", "cpu"),
                                             ("dynamic", "nvdec")])
def test_runner_end_to_end(benchmark, runner, decoder, env_info):
    from posefuse import RunConfig, run
    from posefuse.runners.gpuinfo import nvdec_available

    if decoder == "nvdec" and nvdec_available():
        pytest.skip(nvdec_available())
    cfg = RunConfig(sources=[helpers.data_path(helpers.harness.CLIP)], repeat=STREAMS, max_frames=FRAMES,
                    runner=runner, decoder=decoder, batch=64, max_wait_ms=5.0, progress=False)
    reports = []
    benchmark.pedantic(lambda: reports.append(run(cfg)), rounds=2, warmup_rounds=0)
    best = max(reports, key=lambda r: r.overall["frames_per_s"])
    assert best.overall["results"] == STREAMS * FRAMES and not best.overall["drops"]
    benchmark.extra_info.update(kernel="runner", impl=runner, decoder=decoder, batch=64, streams=STREAMS,
                                env=env_info, frames_per_s=best.overall["frames_per_s"],
                                latency_ms_p50=best.overall["latency_ms"]["p50"],
                                latency_ms_p99=best.overall["latency_ms"]["p99"],
                                startup_s=best.startup_s, runner_thread_s=best.overall["runner_thread_s"])
