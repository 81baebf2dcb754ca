"""Runners: frame sources, execution strategies, the performance monitor and the ``posefuse`` command line."""
from .monitor import PerformanceMonitor
from .sources import Frame, Source, SourceError, open_source, synthesized_clip
from .strategies import RUNNERS, run_source

__all__ = ["PerformanceMonitor", "Frame", "Source", "SourceError", "open_source", "synthesized_clip", "RUNNERS",
           "run_source"]
