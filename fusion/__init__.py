"""The fused pipeline: letterbox -> torch backbone -> decode -> NMS -> rescale on one CUDA stream."""
from .backbone import PoseBackbone, default_weights, load_backbone, load_ultralytics
from .nvtx import STAGES, nvtx_range
from .pipeline import PendingBatch, PosePipeline, PoseResult

__all__ = ["PosePipeline", "PoseResult", "PendingBatch", "PoseBackbone", "load_backbone", "load_ultralytics",
           "default_weights", "nvtx_range", "STAGES"]
