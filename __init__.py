"""posefuse: a YOLO-pose video pipeline at the speed of the GPU.

    import posefuse
    report = posefuse.run(posefuse.RunConfig(sources=["clip.mp4"]))    # the command line's one run path
    pipe = posefuse.PosePipeline()                                      # the fused pipeline on its own

The subpackages are ``posefuse.kernels`` (letterbox, head decode, NMS: CuPy, Numba, torch and reference
implementations), ``posefuse.fusion`` (the fused pipeline) and ``posefuse.runners`` (sources, runners,
monitor, command line). The names below are imported on first use, so ``import posefuse`` costs nothing
until one is touched.
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    "PosePipeline": "fusion.pipeline", "PoseResult": "fusion.pipeline", "PendingBatch": "fusion.pipeline",
    "run": "runners.run", "RunControl": "runners.control", "RunConfig": "runners.config",
    "ConfigError": "runners.config", "Report": "runners.run",
    "open_source": "runners.sources", "Source": "runners.sources", "Frame": "runners.sources",
    "SourceError": "runners.sources",
}

__all__ = ["__version__", *_EXPORTS]


def lazy_exports(package: str, exports: dict, namespace: dict):
    """A module ``__getattr__`` that imports ``exports[name]`` (a submodule of ``package``) on first use of
    ``name`` and keeps the value in ``namespace`` (the module's globals)."""

    def __getattr__(name: str):
        mod = exports.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{mod}"), name)
        namespace[name] = value
        return value

    return __getattr__


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
