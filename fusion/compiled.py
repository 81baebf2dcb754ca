"""The backbone compiled ahead of time by Inductor (AOTInductor: ``torch.export``, then
``aoti_compile_and_package``), one package per input shape, then captured with the rest of the stage chain
in the pipeline's CUDA graph.

Inductor fuses the backbone's convolutions' epilogues (bias, SiLU, concatenations) into Triton kernels, and
the pipeline's graph then replays them without launch cost: the pipeline alone runs 1.6x as fast at batch
64, and a frame's latency at batch 1 halves (results/compile.md). The first time a model, precision and
input shape are seen on a machine, exporting and compiling them takes seconds to tens of seconds; the
package is then kept in :func:`cache_dir` and later runs load it (a shared library and its weights) instead,
with no tracing or compiling at all: that is what a warm start costs.

A package's name is a digest of everything its code depends on (:meth:`CompiledBackbone.fingerprint`): the
weights, the module tree, posefuse's backbone code, the input's shape, strides and dtype, the mode, the GPU
and the versions of torch and Triton; anything else changes the name, so a stale package is never loaded.

Modes (``COMPILE_MODES``): 'off'; 'default' (Inductor's default: no autotuning); 'max-autotune' (Inductor
benchmarks Triton and cuBLAS choices per layer: far longer to compile). The packages run without
AOTInductor's thread synchronization (``run_single_threaded``), which is what lets the pipeline capture
them in its own CUDA graph.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

COMPILE_MODES = ("off", "default", "max-autotune")
_INDUCTOR_CONFIGS = {"default": {}, "max-autotune": {"max_autotune": True}}


def cache_dir() -> Path:
    """The posefuse compile cache: ``$POSEFUSE_CACHE/inductor`` (default ``~/.cache/posefuse/inductor``), one
    per machine: the packages (``aoti/``) and Inductor's own caches (Triton kernels, FX graphs), which make
    a new shape's compile shorter."""
    root = os.environ.get("POSEFUSE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "posefuse")
    return Path(root) / "inductor"


def use_cache_dir() -> Path:
    """Point Inductor (and the Triton kernels it builds) at :func:`cache_dir` unless the environment already
    chose a folder (TORCHINDUCTOR_CACHE_DIR)."""
    d = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir())))
    d.mkdir(parents=True, exist_ok=True)
    return d


class CompiledBackbone:
    """``backbone`` (an eval-mode module taking one (B, 3, H, W) tensor) run as AOTInductor packages: the
    first call with a new input shape loads its package from the cache, exporting and compiling it first
    where the cache has none. ``loaded`` and ``compiled`` list the packages this instance took from the
    cache and those it compiled (what the report says of the start)."""

    def __init__(self, backbone, mode: str):
        if mode not in _INDUCTOR_CONFIGS:
            raise ValueError(f"mode: expected one of {tuple(_INDUCTOR_CONFIGS)}, got {mode!r}")
        self.backbone, self.mode = backbone, mode
        self.loaded: list[Path] = []
        self.compiled: list[Path] = []
        self._runners: dict = {}
        self._model_digest: str | None = None
        self._lock = threading.Lock()

    def __call__(self, x):
        key = (tuple(x.shape), tuple(x.stride()), x.dtype, x.device)
        with self._lock:  # the packages run single-threaded; pipeline replicas share this instance
            run = self._runners.get(key)
            if run is None:
                run = self._runners[key] = self._load(x)
            return run(x)

    def fingerprint(self, x) -> str:
        """The package name for input ``x``: a digest of the weights and buffers, the module tree, posefuse's
        backbone code, the input's shape, strides, dtype and device kind, the mode, the GPU, and the
        versions of torch and Triton."""
        import torch

        if self._model_digest is None:
            h = hashlib.sha256()
            for name, t in list(self.backbone.state_dict().items()):
                h.update(name.encode())
                h.update(str((tuple(t.shape), t.dtype)).encode())
                h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            h.update(repr(self.backbone).encode())
            h.update(Path(__file__).with_name("backbone.py").read_bytes())
            self._model_digest = h.hexdigest()
        try:
            import triton

            triton_version = triton.__version__
        except ImportError:
            triton_version = None
        gpu = torch.cuda.get_device_name(x.device) if x.device.type == "cuda" else "cpu"
        parts = (self._model_digest, tuple(x.shape), tuple(x.stride()), str(x.dtype), x.device.type, self.mode,
                 gpu, torch.__version__, triton_version)
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]

    def _load(self, x):
        import torch

        folder = use_cache_dir() / "aoti"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.fingerprint(x)}.pt2"
        if path.exists():
            self.loaded.append(path)
        else:
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.pt2")
            with torch.no_grad():
                exported = torch.export.export(self.backbone, (x,))
                torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp),
                                                         inductor_configs=_INDUCTOR_CONFIGS[self.mode])
            os.replace(tmp, path)  # whole or not at all: another process may be loading it
            self.compiled.append(path)
        index = -1
        if x.device.type == "cuda":
            index = x.device.index if x.device.index is not None else torch.cuda.current_device()
        return torch._inductor.aoti_load_package(str(path), run_single_threaded=True, device_index=index)


def compile_backbone(backbone, mode: str) -> CompiledBackbone:
    """``backbone`` compiled in ``mode`` (one of COMPILE_MODES but 'off'): each input shape the pipeline
    captures is compiled once per machine, then loaded (see the module docstring)."""
    return CompiledBackbone(backbone, mode)
