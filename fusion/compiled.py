"""The backbone compiled by Inductor (``torch.compile``), then captured with the rest of the stage chain in
the pipeline's CUDA graph.

Inductor fuses the backbone's convolutions' epilogues (bias, SiLU, concatenations) into Triton kernels, and
the pipeline's graph then replays them without launch cost: the backbone alone runs about twice as fast
(results/compile.md). Compiling costs tens of seconds the first time a model, precision and batch shape
are seen on a machine, seconds afterwards: Inductor's caches (FX graphs, Triton kernels) live in
:func:`cache_dir`, kept across runs.

Modes (``COMPILE_MODES``): 'off'; 'default' (Inductor's default: no autotuning); 'max-autotune' (Inductor
benchmarks Triton and cuBLAS choices per layer: minutes to compile, for long runs and the service). Inductor's
own CUDA graphs stay off ('...-no-cudagraphs'): the pipeline captures the whole chain itself.
"""
from __future__ import annotations

import hashlib
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


def model_key(model: str, precision: str, mode: str) -> str:
    """What a compiled backbone's cache entries depend on, as a file name: the checkpoint (path, size, mtime),
    the precision, the mode and torch's version."""
    import torch

    st = os.stat(model)
    text = f"{os.path.abspath(model)}|{st.st_size}|{st.st_mtime_ns}|{precision}|{mode}|{torch.__version__}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def seen(key: str) -> bool:
    """True when a pipeline compiled this model key on this machine before (its cache entries are warm)."""
    return (use_cache_dir() / "posefuse" / key).exists()


def mark_seen(key: str) -> None:
    d = use_cache_dir() / "posefuse"
    d.mkdir(parents=True, exist_ok=True)
    (d / key).touch()
