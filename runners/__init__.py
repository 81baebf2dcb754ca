"""Runners: sources, execution strategies, the run configuration and ``run()``, the performance monitor
and the ``posefuse`` command line. Names are imported on first use (the command line starts light)."""
from __future__ import annotations

from .. import lazy_exports

_EXPORTS = {
    "run": "run", "Report": "run", "RunControl": "control", "RunConfig": "config", "ConfigError": "config",
    "PerformanceMonitor": "monitor", "RunEvents": "events", "FrameResult": "events",
    "Frame": "sources", "Source": "sources", "SourceError": "sources", "open_source": "sources",
    "synthesized_clip": "sources", "RUNNERS": "config",
}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
