"""The backbone compiled by Inductor (``torch.compile``), then captured with the rest of the stage chain in
the pipeline's CUDA graph.

Inductor fuses the backbone's convolutions' epilogues (bias, SiLU, concatenations) into Triton kernels, and
the pipeline's graph then replays them without launch cost: the pipeline alone runs 1.6x as fast at batch
64, and a frame's latency at batch 1 halves (results/compile.md). It costs start-up: about 20 s per batch
shape the first time a model, precision and batch shape are seen on a machine, and still about 20 s more
than an uncompiled start when Inductor's caches (FX graphs, Triton kernels, kept across runs in
:func:`cache_dir`) hold it all: worth it for long runs.

Modes (``COMPILE_MODES``): 'off'; 'default' (Inductor's default: no autotuning); 'max-autotune' (Inductor
benchmarks Triton and cuBLAS choices per layer: far longer to compile; its cost and gain inside the
pipeline are not yet recorded in results/). Inductor's own CUDA graphs stay off ('...-no-cudagraphs'):
the pipeline captures the whole chain itself.
"""
from __future__ import annotations

import os
from pathlib import Path

COMPILE_MODES = ("off", "default", "max-autotune")
_INDUCTOR_MODE = {"default": None, "max-autotune": "max-autotune-no-cudagraphs"}


def cache_dir() -> Path:
    """Inductor's cache folder: ``$POSEFUSE_CACHE/inductor`` (default ``~/.cache/posefuse/inductor``), one per
    machine; torch keys its entries by its version, the graph and the device."""
    root = os.environ.get("POSEFUSE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "posefuse")
    return Path(root) / "inductor"


def use_cache_dir() -> Path:
    """Point Inductor (and the Triton kernels it builds) at :func:`cache_dir` unless the environment already
    chose a folder (TORCHINDUCTOR_CACHE_DIR)."""
    d = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir())))
    d.mkdir(parents=True, exist_ok=True)
    return d


def compile_backbone(backbone, mode: str):
    """``backbone`` compiled in ``mode`` (one of COMPILE_MODES but 'off'), static shapes: each batch shape the
    pipeline captures compiles once (then comes from the cache)."""
    import torch

    use_cache_dir()
    return torch.compile(backbone, mode=_INDUCTOR_MODE[mode], dynamic=False)
