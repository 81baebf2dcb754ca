"""Benchmark fixtures: the card's measured copy bandwidth and an environment record for results/."""
from __future__ import annotations

import pytest
import torch

from runners.gpuinfo import environment


def cuda_median_ms(fn, iters: int = 20, warmup: int = 3) -> float:
    """Median of per-call device times, measured with CUDA events around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


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
    return environment()
