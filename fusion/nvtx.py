"""NVTX ranges for posefuse: one domain (``posefuse``), one range per stage, the same names everywhere:
decode (video), letterbox, backbone, head_decode, nms, rescale, d2h. No-ops without the ``nvtx`` package.

Select a stage's kernels in Nsight Compute with ``ncu --nvtx --nvtx-include "posefuse@letterbox/" ...``
(see experiments/profile.sh). Ranges are emitted by the kernels' Python wrappers and by the pipeline; a
CUDA-graph replay is one launch, so profile per stage with ``cuda_graph=False``.
"""
from kernels._common import NVTX_DOMAIN, nvtx_enabled, nvtx_range

STAGES = ("decode", "letterbox", "backbone", "head_decode", "nms", "rescale", "d2h")

__all__ = ["NVTX_DOMAIN", "STAGES", "nvtx_enabled", "nvtx_range"]
