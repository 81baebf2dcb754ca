"""Runners: sources, execution strategies, the run configuration and ``run()``, the performance monitor
and the ``posefuse`` command line. Names are imported on first use (the command line starts light)."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "run": "run", "Report": "run", "RunConfig": "config", "ConfigError": "config",
    "PerformanceMonitor": "monitor", "RunEvents": "events", "FrameResult": "events",
    "Frame": "sources", "Source": "sources", "SourceError": "sources", "open_source": "sources",
    "synthesized_clip": "sources", "RUNNERS": "strategies",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value
