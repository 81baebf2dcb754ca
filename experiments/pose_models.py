"""Pose checkpoints of every Ultralytics pose family, built from the yaml files in the ultralytics wheel
(no trained YOLO26-pose weights can be installed, and nothing is downloaded): one person class, a seeded
random initialisation, made to score like a trained model so that a comparison with Ultralytics rests on
distinct scores, not ties.

    python experiments/pose_models.py --out /tmp/models            # yolov8n-pose.pt, yolo11n-pose.pt, yolo26n-pose.pt

A random model scores every anchor near its class-bias prior, so its top-k and NMS would order ties. Here
each model is conditioned on a calibration frame (one of the sample clip's): every BatchNorm takes that
frame's statistics, every weight is jittered, and the final convolutions of both branches are rescaled so
that the class logits spread (a few percent of the anchors pass conf 0.25, each with its own score) and
the box distances are positive (about 2.5 grid cells).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

ARCHS = ("yolov8n-pose", "yolo11n-pose", "yolo26n-pose")
SHARE = 0.005  # of the calibration frame's anchors, the share whose score passes CONF
CONF = 0.25
SPREAD = 1.5  # standard deviation of the class logits after the rescale


def _input(frame: np.ndarray, size=(384, 640)) -> torch.Tensor:
    import cv2

    x = cv2.resize(frame, size[::-1])[..., ::-1].astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]


def _rescale_outputs(convs, outs: list[torch.Tensor], anchor: float, at: float, std: float):
    """Rescale the 1x1 convolutions ``convs`` (one per level; ``outs`` what they gave on the calibration
    frame) so that their outputs, over all anchors and channels, have standard deviation ``std`` and their
    ``anchor`` quantile lies at ``at``."""
    y = torch.cat([o.flatten() for o in outs]).double()
    q, sd = float(torch.quantile(y, anchor)), float(y.std()) or 1.0
    for c in convs:
        c.weight.mul_(std / sd)
        c.bias.copy_((c.bias - q) * (std / sd) + at)


def build(arch: str, frame: np.ndarray, seed: int = 0, jitter: float = 0.1, var_scale: float = 1.5):
    """A PoseModel of ``arch`` (one of ARCHS) conditioned on ``frame`` (BGR), in eval mode, both branches
    of a YOLO26 head made to score."""
    from ultralytics.nn.tasks import PoseModel

    torch.manual_seed(seed)
    m = PoseModel(f"{arch}.yaml", nc=1, verbose=False)
    x = _input(frame)
    with torch.no_grad():
        for p in m.parameters():  # every anchor's outputs its own (the DFL's fixed bin weights stay)
            if p.requires_grad:
                p.add_(torch.randn_like(p) * jitter * (p.abs().mean() + 1e-3))
        bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
        for b in bns:  # the calibration frame's statistics (a cumulative average over one batch)
            b.reset_running_stats()
            b.momentum = None
        m.train()
        m(x)
        m.eval()
        for b in bns:  # one variance per layer (a channel of near-constant output is not amplified)
            b.running_var.fill_(float(b.running_var.mean()) * var_scale)
            b.momentum = 0.03
        h = m.model[-1]
        branches = [h.one2many] + ([h.one2one] if getattr(h, "one2one_cv2", None) is not None else [])
        for br in branches:
            cls = [s[-1] for s in br["cls_head"]]
            box = [s[-1] for s in br["box_head"]]
            seen: dict = {}
            hooks = [c.register_forward_hook(lambda mod, i, o: seen.setdefault(id(mod), o)) for c in cls + box]
            m.model[-1].end2end = br is not branches[0]  # the forward that runs this branch
            m(x)
            for k in hooks:
                k.remove()
            logit_conf = math.log(CONF / (1 - CONF))  # SHARE of the anchors above it
            _rescale_outputs(cls, [seen[id(c)] for c in cls], 1 - SHARE, logit_conf, SPREAD)
            if h.reg_max == 1:  # distances regressed directly: positive, median 2.5 cells
                _rescale_outputs(box, [seen[id(c)] for c in box], 0.5, 2.5, 0.6)
        m.model[-1].end2end = False
    return m


def save(model, path) -> Path:
    """``model`` as a checkpoint ``ultralytics.YOLO(path)`` and posefuse load as a pose model."""
    import ultralytics

    path = Path(path)
    torch.save({"model": model, "train_args": {"task": "pose"}, "version": ultralytics.__version__}, path)
    return path


def make(arch: str, out_dir, frame: np.ndarray, seed: int = 0) -> Path:
    return save(build(arch, frame, seed), Path(out_dir) / f"{arch}.pt")


def main(argv=None):
    import cv2

    from harness import data_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the checkpoints")
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cap = cv2.VideoCapture(str(data_path("one-by-one-person-detection.mp4")))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 160)  # people in the frame
    ok, frame = cap.read()
    if not ok:
        raise SystemExit("the sample clip could not be read")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    for arch in a.archs:
        print(make(arch, a.out, frame, a.seed))


if __name__ == "__main__":
    main()
