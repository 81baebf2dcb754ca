"""The stage vocabulary shared by NVTX ranges, the pipeline's GPU timing spans and the reports.

NVTX: one domain (``posefuse``), one range per stage, no-ops without the ``nvtx`` package. Select a stage's
kernels in Nsight Compute with ``ncu --nvtx --nvtx-include "posefuse@letterbox/" ...`` (experiments/
profile.sh). A CUDA-graph replay is one launch, so profile per stage with ``cuda_graph=False``.

Timing: the pipeline records a CUDA event at the end of each timed span; a span is one stage, or
``first..last`` when one measurement covers several (a graph replay is ``letterbox..rescale``; the eager
NMS and rescale are one call, ``nms..rescale``).
"""
from ..kernels._common import NVTX_DOMAIN, STAGES, nvtx_enabled, nvtx_range


def span(first: str, last: str | None = None) -> str:
    """The name of the span of stages ``first`` to ``last`` (both in STAGES, in order)."""
    last = last or first
    if first not in STAGES or last not in STAGES or STAGES.index(last) < STAGES.index(first):
        raise ValueError(f"span: expected stages of {STAGES} in order, got {first!r}, {last!r}")
    return first if first == last else f"{first}..{last}"


__all__ = ["NVTX_DOMAIN", "STAGES", "nvtx_enabled", "nvtx_range", "span"]
