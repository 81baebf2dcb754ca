"""The backbone compiled by Inductor, then captured with the rest of the stage chain in the pipeline's CUDA
graph.

Inductor fuses the backbone's convolutions' epilogues (bias, SiLU, concatenations) into Triton kernels, and
the pipeline's graph then replays them without launch cost: the pipeline alone runs 1.6x as fast at batch
64, and a frame's latency at batch 1 nearly halves (results/compile.md).

Each canvas compiles once per machine, for every batch size: ``torch.export`` traces the backbone (its
weights lifted to inputs, the batch dimension symbolic), ``torch._inductor.standalone_compile`` compiles that
graph, and the compiled artifact is saved in :func:`artifacts_dir`, named by a digest of everything it
depends on (torch's version, the mode and its options, the canvas, layout, dtype and device, the backbone's
modules, weights and code). A later start that finds the artifact loads it instead of tracing and compiling:
no Dynamo, no lowering, no compile workers, only the compile stack's modules, the generated module and its
kernels to load.
The symbolic batch costs 3% at batch 64 against an artifact per batch size, and saves a run that captures
seven batch sizes six compiles and loads (results/DECISIONS.md). A warm start still takes seconds more than
an uncompiled one (results/compile.md).

Modes (``COMPILE_MODES``): 'off'; 'default' (Inductor's default: no autotuning); 'max-autotune' (Inductor
benchmarks Triton and cuBLAS choices per layer: far longer to compile); 'saved' ('default' for each canvas
whose artifact a start before saved, the uncompiled backbone for the others: a start that never compiles,
for jobs long enough to repay a warm start but not a cold compile). Inductor's own CUDA graphs stay off: the
pipeline captures the whole chain itself.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import operator
import os
from pathlib import Path

COMPILE_MODES = ("off", "default", "max-autotune", "saved")
# Inductor's config per mode (standalone_compile's options are compile_fx's arguments: the config goes in
# config_patches): torch._inductor.list_mode_options("max-autotune-no-cudagraphs") for max-autotune
_OPTIONS = {"default": {},
            "max-autotune": {"config_patches": {"max_autotune": True, "coordinate_descent_tuning": True}}}


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
    """The compiled backbones: ``artifacts`` in :func:`cache_dir`'s folder."""
    return cache_dir().parent / "artifacts"


# The batch size the compiled backbone is traced, tuned and first run at: Inductor sizes its kernels' launch
# configurations by the example's sizes and tunes the rest on a kernel's first launch, whatever the batch
# size; the run's default batch is 64.
EXAMPLE_BATCH = 64


class CompiledBackbone:
    """``backbone`` (an eval-mode module mapping a (B, 3, H, W) tensor to one tensor) compiled in ``mode``
    (one of COMPILE_MODES but 'off'), one artifact per canvas (C, H, W), layout, dtype and device for every
    batch size (the batch dimension stays symbolic), loaded from :func:`artifacts_dir` where a start before
    this one compiled it. 'saved' loads 'default''s artifacts and compiles none: a canvas without one runs
    ``backbone`` itself. ``origin`` says, per canvas (C, H, W), what runs: 'compiled' (by this start),
    'loaded' or 'not saved' (uncompiled)."""

    def __init__(self, backbone, mode: str):
        if mode not in COMPILE_MODES[1:]:
            raise ValueError(f"mode: expected one of {COMPILE_MODES[1:]}, got {mode!r}")
        self.backbone, self.mode = backbone, mode
        self._artifact_mode = "default" if mode == "saved" else mode  # the artifacts it loads and saves
        use_cache_dir()  # before anything imports Inductor: its import points it at its default folder
        self.origin: dict = {}  # canvas (C, H, W) -> 'compiled', 'loaded' or 'not saved'
        self._fns: dict = {}
        self._model_digest: str | None = None

    def __call__(self, x):
        key = (tuple(x.shape[1:]), x.stride(), x.dtype, x.device)  # a layout's strides do not depend on B
        fn = self._fns.get(key)
        if fn is None:
            fn = self._fns[key] = self._build(x)
        return fn(x)

    def _digest(self, x) -> str:
        """What the artifact for input ``x`` depends on (the mode's Inductor options among it), as a hex
        digest."""
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
        key = [self._model_digest, torch.__version__, self._artifact_mode, _OPTIONS[self._artifact_mode], "B",
               list(x.shape[1:]), list(x.stride()), str(x.dtype), card]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]

    def _build(self, x):
        """The compiled function for inputs like ``x`` of any batch size: loaded when its artifact is saved,
        else traced, compiled and saved (mode 'saved': the backbone itself, nothing of the compile stack
        imported); then run once at EXAMPLE_BATCH, where the kernels left to tune on their first launch
        tune."""
        art_path = artifacts_dir() / f"{self._digest(x)}.bin"
        meta_path = art_path.with_suffix(".json")
        saved = art_path.exists() and meta_path.exists()
        if not saved and self.mode == "saved":
            self.origin[tuple(x.shape[1:])] = "not saved"
            return self.backbone
        import torch
        from torch._inductor import CompiledArtifact, standalone_compile

        example = torch.empty_strided((EXAMPLE_BATCH, *x.shape[1:]), x.stride(), dtype=x.dtype, device=x.device)
        example.copy_(x[:1].expand_as(example))
        if saved:
            # its kernels are built: loaded in this process, without Inductor's pool of compile workers,
            # whose start and exit cost a warm start 1.6 s (results/compile.md, 2026-12-07 04:01)
            from torch._inductor import config as inductor_config

            with inductor_config.patch(compile_threads=1):
                art = CompiledArtifact.load(path=str(art_path), format="binary")
                names = json.loads(meta_path.read_text())["weights"]
                weights = [operator.attrgetter(n)(self.backbone) for n in names]
                art(*weights, example)  # the first call loads the generated module's kernels
            self.origin[tuple(x.shape[1:])] = "loaded"
        else:
            with torch.inference_mode(False), torch.no_grad():
                batch = torch.export.Dim("batch", min=1)
                ep = torch.export.export(self.backbone, (example,), dynamic_shapes=({0: batch},), strict=False)
                specs = ep.graph_signature.input_specs
                if specs[-1].kind != torch.export.graph_signature.InputKind.USER_INPUT or any(
                        s.kind == torch.export.graph_signature.InputKind.USER_INPUT for s in specs[:-1]):
                    raise RuntimeError("compile: the exported backbone's inputs are not its weights, then the image")
                names = [s.target for s in specs[:-1]]
                weights = [operator.attrgetter(n)(self.backbone) for n in names]
                # "from_graph" takes the symbolic batch from the outputs' fake tensors under Dynamo's key
                # (torch 2.11 reads no other); export keeps them under "val"
                out = next(iter(reversed(ep.graph_module.graph.nodes)))
                torch.fx.node.map_arg(out.args, _mark_example_value)
                art = standalone_compile(ep.graph_module, [*weights, example], dynamic_shapes="from_graph",
                                         options=_OPTIONS[self._artifact_mode])
            art_path.parent.mkdir(parents=True, exist_ok=True)
            art.save(path=str(art_path), format="binary")  # written atomically
            tmp = meta_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"weights": names}))
            os.replace(tmp, meta_path)
            art(*weights, example)
            self.origin[tuple(x.shape[1:])] = "compiled"
        return lambda inp: art(*weights, inp)[0]


def _mark_example_value(node):
    """``node``'s fake tensor (export's "val") under Dynamo's key too; ``node``."""
    if "val" in node.meta:
        node.meta.setdefault("example_value", node.meta["val"])
    return node


def compile_backbone(backbone, mode: str) -> CompiledBackbone:
    """``backbone`` compiled in ``mode`` (one of COMPILE_MODES but 'off'): see :class:`CompiledBackbone`."""
    return CompiledBackbone(backbone, mode)
