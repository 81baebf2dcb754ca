"""The backbone compiled by Inductor, then captured with the rest of the stage chain in the pipeline's CUDA
graph.

Inductor fuses the backbone's convolutions' epilogues (bias, SiLU, concatenations) into Triton kernels, and
the pipeline's graph then replays them without launch cost: the pipeline alone runs 1.6x as fast at batch
64, and a frame's latency at batch 1 nearly halves (results/compile.md).

Each canvas compiles once per machine, for every batch size: ``torch.export`` traces the backbone (the batch
dimension symbolic), AOTInductor compiles it ahead of time into a package (the Triton kernels, the weights
and a C++ wrapper that launches them), saved in :func:`artifacts_dir` and named by a digest of everything
it depends on (torch's version, the mode, the canvas, layout, dtype and device, the backbone's modules,
weights and code). A later start that finds the package loads it with torch's C++ loader: no Dynamo, no
Inductor, no compile workers in its process, only a shared library and its kernels to load. A compile needs
what AOTInductor builds with: a C++ compiler and, for CUDA, the CUDA toolkit's headers. The symbolic
batch costs 3% at batch 64 against a compile per batch size, and saves a run that captures seven batch
sizes six compiles (results/DECISIONS.md).

Modes (``COMPILE_MODES``): 'off'; 'default' (Inductor's default: no autotuning); 'max-autotune' (Inductor
benchmarks Triton and cuBLAS choices per layer: far longer to compile). Inductor's own CUDA graphs stay off:
the pipeline captures the whole chain itself.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

COMPILE_MODES = ("off", "default", "max-autotune")
# Inductor's config per mode: torch._inductor.list_mode_options("max-autotune-no-cudagraphs") for max-autotune
_CONFIGS = {"default": {}, "max-autotune": {"max_autotune": True, "coordinate_descent_tuning": True}}


def cache_dir() -> Path:
    """Inductor's cache folder: ``$POSEFUSE_CACHE/inductor`` (default ``~/.cache/posefuse/inductor``), one per
    machine; torch keys its entries by its version, the graph and the device."""
    root = os.environ.get("POSEFUSE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "posefuse")
    return Path(root) / "inductor"


def use_cache_dir() -> Path:
    """Point Inductor (and the Triton kernels it builds) at :func:`cache_dir` unless the environment already
    chose a folder (TORCHINDUCTOR_CACHE_DIR). Importing ``torch._inductor`` sets that variable to Inductor's
    default folder: call this first."""
    d = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir())))
    d.mkdir(parents=True, exist_ok=True)
    return d


def artifacts_dir() -> Path:
    """The compiled backbones (AOTInductor packages, ``<digest>.pt2``): ``artifacts`` in :func:`cache_dir`'s
    folder."""
    return cache_dir().parent / "artifacts"


# The batch size the compiled backbone is traced, tuned and first run at: Inductor sizes its kernels' launch
# configurations by the example's sizes and tunes the rest on a kernel's first launch, whatever the batch
# size; the run's default batch is 64.
EXAMPLE_BATCH = 64


class CompiledBackbone:
    """``backbone`` (an eval-mode module mapping a (B, 3, H, W) tensor to one tensor) compiled in ``mode``
    (one of COMPILE_MODES but 'off'), one AOTInductor package per canvas (C, H, W), layout, dtype and device
    for every batch size (the batch dimension stays symbolic), loaded from :func:`artifacts_dir` where a
    start before this one compiled it. ``origin`` says, per canvas (C, H, W), where its package came from:
    'compiled' or 'loaded'."""

    def __init__(self, backbone, mode: str):
        if mode not in _CONFIGS:
            raise ValueError(f"mode: expected one of {tuple(_CONFIGS)}, got {mode!r}")
        self.backbone, self.mode = backbone, mode
        use_cache_dir()  # before anything imports Inductor: its import points it at its default folder
        self.origin: dict = {}  # canvas (C, H, W) -> 'compiled' or 'loaded'
        self._fns: dict = {}
        self._model_digest: str | None = None

    def __call__(self, x):
        key = (tuple(x.shape[1:]), x.stride(), x.dtype, x.device)  # a layout's strides do not depend on B
        fn = self._fns.get(key)
        if fn is None:
            fn = self._fns[key] = self._build(x)
        return fn(x)

    def _digest(self, x) -> str:
        """What the artifact for input ``x`` depends on, as a hex digest."""
        import torch

        if self._model_digest is None:  # the modules, their code and every weight, once per backbone
            h = hashlib.sha256(repr(self.backbone).encode())
            h.update(Path(inspect.getfile(type(self.backbone))).read_bytes())
            for name, t in [*self.backbone.named_parameters(), *self.backbone.named_buffers()]:
                h.update(f"{name}{tuple(t.shape)}{t.stride()}{t.dtype}".encode())
                h.update(t.detach().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())  # flat: any layout
            self._model_digest = h.hexdigest()
        dev = x.device
        card = (torch.cuda.get_device_name(dev) + str(torch.cuda.get_device_capability(dev))
                if dev.type == "cuda" else dev.type)
        return hashlib.sha256(json.dumps([self._model_digest, torch.__version__, self.mode, "B", list(x.shape[1:]),
                                          list(x.stride()), str(x.dtype), card]).encode()).hexdigest()[:32]

    def _build(self, x):
        """The compiled function for inputs like ``x`` of any batch size: its package loaded when saved, else
        traced, compiled and saved first; then run once at EXAMPLE_BATCH, which loads its kernels."""
        import torch

        example = torch.empty_strided((EXAMPLE_BATCH, *x.shape[1:]), x.stride(), dtype=x.dtype, device=x.device)
        example.copy_(x[:1].expand_as(example))
        path = artifacts_dir() / f"{self._digest(x)}.pt2"
        origin = "loaded"
        if not path.exists():
            from torch._inductor import aoti_compile_and_package

            with torch.inference_mode(False), torch.no_grad():
                batch = torch.export.Dim("batch", min=1)
                ep = torch.export.export(self.backbone, (example,), dynamic_shapes=({0: batch},), strict=False)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.pt2")  # the package path must end in .pt2
                aoti_compile_and_package(ep, package_path=str(tmp), inductor_configs=_CONFIGS[self.mode])
            os.replace(tmp, path)  # a start that finds the package finds all of it
            origin = "compiled"
        # the package's C++ loader: no Dynamo, no Inductor, no compile workers in a start that loads it (their
        # import and exit made a warm start 1.7-3.7 s slower, results/compile.md); single-threaded: no locks or
        # events between calls, so that the pipeline's CUDA graph can capture a call
        device = -1 if x.device.type == "cpu" else x.device.index if x.device.index is not None else \
            torch.cuda.current_device()
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", True, 1, device)
        loader.run([example])  # the first call loads the kernels
        self.origin[tuple(x.shape[1:])] = origin
        return lambda inp: loader.run([inp])[0]


def compile_backbone(backbone, mode: str) -> CompiledBackbone:
    """``backbone`` compiled in ``mode`` (one of COMPILE_MODES but 'off'): see :class:`CompiledBackbone`."""
    return CompiledBackbone(backbone, mode)
