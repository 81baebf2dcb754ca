"""Benchmark fixtures: the card's measured copy bandwidth and an environment record for results/; at the end
of a ``--benchmark-only`` session, a summary of every benchmark per call (one call: one batch) with frames/s,
the fraction of the memory floor and the ratio to its anchor (experiments/bench_report.py ANCHORS).
pytest-benchmark's own table is per call too (helpers.per_call)."""
from __future__ import annotations

import pytest
import torch

import helpers

cuda_median_ms = helpers.harness.cuda_median_ms


@pytest.fixture(scope="session")
def copy_bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth of a 1 GiB tensor, bytes read + written counted (median of 20)."""
    n = 1 << 30
    bufs = [torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)]
    bufs.append(torch.empty_like(bufs[0]))
    ms = cuda_median_ms(lambda: bufs[1].copy_(bufs[0]), iters=20, warmup=3)
    bufs.clear()  # give the 2 GiB back before the benchmarks run
    torch.cuda.empty_cache()
    return 2 * n / (ms * 1e-3) / 1e9


@pytest.fixture(scope="session")
def env_info() -> dict:
    return helpers.harness.environment()


_ROWS: list = []


@pytest.fixture(autouse=True)
def _collect_row(request):
    """Keeps each benchmark's figures (its extra_info) for the session summary."""
    yield
    bench = request.node.funcargs.get("benchmark")
    info = getattr(bench, "extra_info", None)
    if info:
        _ROWS.append({**{k: v for k, v in info.items() if k != "env"}, "name": request.node.name})


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    report = helpers.load_experiment("bench_report")
    terminalreporter.section("posefuse benchmarks: per call (one batch), frames/s, floor, anchor")
    for line in report.summary_lines(_ROWS):
        terminalreporter.write_line(line)
