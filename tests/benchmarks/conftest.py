"""Benchmark fixtures: the card's measured copy bandwidth and an environment record for results/."""
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
