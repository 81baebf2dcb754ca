"""The fused pipeline: letterbox -> torch backbone -> head decode -> NMS -> rescale on one CUDA stream."""
from .backbone import PoseBackbone, default_weights, load_backbone, load_ultralytics
from .pipeline import PendingBatch, PosePipeline, PoseResult, pose_results
from .stages import STAGES, nvtx_range, span

__all__ = ["PosePipeline", "PoseResult", "PendingBatch", "pose_results", "PoseBackbone", "load_backbone",
           "load_ultralytics", "default_weights", "nvtx_range", "STAGES", "span"]
