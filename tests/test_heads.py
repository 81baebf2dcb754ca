"""Every Ultralytics pose family: YOLOv8 and YOLO11 (the ``Pose`` head), YOLO26 (``Pose26``) with its
one-to-many branch and NMS (``predict``'s default) and its one-to-one branch without NMS (``nms=False``).
The checkpoints are built from the ultralytics wheel's yaml files, trained yolo11n-pose tensors where they
fit and a seeded random initialisation made to score like a trained model elsewhere
(experiments/pose_models.py); posefuse equals ``predict`` on them frame for frame (in fp16 on the GPU,
models with random layers within a bounded share: see the GPU test). The head's kind is read from the
model; a head of no known kind, or a branch the head lacks, is a one-line error naming the option."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import helpers
from posefuse.fusion.accuracy import match, ultralytics_results
from posefuse.fusion.backbone import ModelError, PoseBackbone, fused, load_ultralytics
from posefuse.fusion.pipeline import PosePipeline
from posefuse.kernels.decode import Head
from posefuse.kernels.decode.reference import decode_dense_reference, levels_for

pytest.importorskip("ultralytics")
pose_models = helpers.load_experiment("pose_models")
CLIP = "one-by-one-person-detection.mp4"

FAMILIES = [("yolov8n-pose", False, Head("pose", 16, False)), ("yolo11n-pose", False, Head("pose", 16, False)),
            ("yolo26n-pose", False, Head("pose26", 1, False)), ("yolo26n-pose", True, Head("pose26", 1, True))]
IDS = ["yolov8", "yolo11", "yolo26-nms", "yolo26-end2end"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """{arch: checkpoint path}, conditioned on a frame of the sample clip that the comparisons do not use."""
    out = tmp_path_factory.mktemp("pose_models")
    calib = helpers.read_video(helpers.data_path(CLIP), 161)[160]
    return {arch: pose_models.make(arch, out, calib) for arch in pose_models.ARCHS}


@pytest.fixture(scope="module")
def frames() -> list:
    """Frames of the 768x432 clip (none and one person), 2x2 and 3x3 mosaics of it (4 and 9 people), the 1080p
    clip, and a flat grey frame."""
    clip = helpers.read_video(helpers.data_path(CLIP), 751)
    people = [clip[i] for i in (100, 250, 300, 350, 400, 550, 600, 650, 750)]  # one person each

    def mosaic(k):
        return np.concatenate([np.concatenate(people[r * k:(r + 1) * k], 1) for r in range(k)], 0)

    return [clip[0], clip[150], mosaic(2), mosaic(3), helpers.read_video(helpers.data_path(
        "one-by-one-person-1080p.mp4"), 101)[100], np.full((432, 768, 3), 114, np.uint8)]


def _assert_equal_to_predict(ours, theirs) -> int:
    """Every Ultralytics detection matched at IoU >= 0.98, no extra one, keypoints within 0.5 px, scores
    within 1e-4; returns the number of detections."""
    assert len(ours) == len(theirs["scores"])
    pairs = match(ours.boxes, theirs["boxes"], 0.98)
    assert len(pairs) == len(ours)
    for i, j in pairs:
        assert np.abs(ours.keypoints[i, :, :2] - theirs["keypoints"][j, :, :2]).max() <= 0.5
        assert abs(float(ours.scores[i]) - float(theirs["scores"][j])) <= 1e-4
    return len(ours)


@pytest.mark.slow
@pytest.mark.parametrize("arch, end2end, head", FAMILIES, ids=IDS)
def test_every_pose_family_equals_predict(models, frames, arch, end2end, head):
    """fp32 on the CPU: the head's kind read from the checkpoint, and every frame's poses equal to predict's
    with the same options: conf 0.25 (the flat grey frame has no detection), a max_det below the
    candidates (the top-k or NMS output cut), and a conf that no anchor passes."""
    from ultralytics import YOLO

    yolo = YOLO(str(models[arch]))
    nms = False if end2end else None  # predict's switch of the branch
    counts = {}
    for conf, max_det in ((0.25, 300), (0.25, 5), (0.999, 300)):
        pipe = PosePipeline(str(models[arch]), device="cpu", conf=conf, max_det=max_det, end2end=end2end or None)
        assert pipe.head == head
        for k, f in enumerate(frames):
            theirs = ultralytics_results(yolo.predict(f, verbose=False, conf=conf, iou=0.7, max_det=max_det,
                                                      nms=nms))[0]
            assert len(np.unique(theirs["scores"])) == len(theirs["scores"])  # distinct scores: no tie decides
            counts[conf, max_det, k] = _assert_equal_to_predict(pipe([f])[0], theirs)
    full = [counts[0.25, 300, k] for k in range(len(frames))]
    assert sum(full) >= 10 and full[-1] == 0  # people (and a random head's edges) score; a flat frame not
    assert [counts[0.25, 5, k] for k in range(len(frames))] == [min(n, 5) for n in full]
    assert max(full) > 5 and all(counts[0.999, 300, k] == 0 for k in range(len(frames)))


@pytest.mark.parametrize("arch, end2end, head", FAMILIES, ids=IDS)
def test_dense_reference_equals_each_heads_own_decode(models, arch, end2end, head):
    """decode_dense_reference == the head's own ``_inference`` (boxes, scores, keypoints of every anchor),
    for the branch predict runs; for the end-to-end branch its boxes are xyxy, as Ultralytics computes them."""
    net = fused(load_ultralytics(str(models[arch])).model, end2end)
    bb = PoseBackbone(net, end2end or None)
    assert bb.head == head
    x = torch.rand(1, 3, 384, 640, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = bb(x)
        h = net.model[-1]
        own = h._inference(h.forward_head(bb.features(x), **bb.branch))
    dense = decode_dense_reference(raw, levels_for(384, 640, bb.strides), head)
    assert dense.shape == own.shape
    assert (dense - own).abs().max().item() <= 1e-3


def test_a_head_of_no_known_kind_and_a_missing_branch_are_refused(models, tmp_path, capsys):
    """A detection model, and end2end on a model without a one-to-one branch: the pipeline's error names
    the option; ``posefuse run`` prints it as one line and exits 2."""
    import ultralytics
    from ultralytics.nn.tasks import DetectionModel

    from posefuse.runners.cli import main

    det = tmp_path / "detect.pt"
    torch.save({"model": DetectionModel("yolo11n.yaml", nc=1, verbose=False), "train_args": {"task": "detect"},
                "version": ultralytics.__version__}, det)
    with pytest.raises(ModelError, match=r"model: expected a 1-class 17x3-keypoint Pose .* got Detect"):
        PosePipeline(str(det), device="cpu")
    with pytest.raises(ModelError, match="end2end: the model's Pose head has no one-to-one"):
        PosePipeline(str(models["yolo11n-pose"]), device="cpu", end2end=True)
    for args, flag in ((["--model", str(det)], "--model"), (["--model", str(models["yolo11n-pose"]), "--end2end"],
                                                             "--end2end")):
        capsys.readouterr()
        assert main(["run", "--device", "cpu", "--max-frames", "1", "--no-progress", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"posefuse: {flag}: "), err


@pytest.mark.gpu
@pytest.mark.parametrize("backend, cuda_graph", [("cupy", True), ("numba", True), ("torch", False)])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("arch, end2end, head", FAMILIES, ids=IDS)
def test_gpu_every_pose_family_equals_predict(no_tf32, models, frames, arch, end2end, head, precision, backend,
                                             cuda_graph):
    """On the GPU, in batches of mixed sizes (CUDA graphs where the backend captures), against ``predict`` on
    the same GPU in the same precision (fp16: its half=True). fp32: every predict detection matched at
    IoU >= 0.98, no extra one, keypoints within 0.5 px. fp16, compared by box as the issue asks: so for the
    trained yolo11n-pose; a model with random layers amplifies the last-bit differences of two fp16
    convolutions of other algorithms (batch, memory layout) into flips at the threshold and in NMS, so
    there at least 95% of predict's detections matched and at most 5% extra (results/heads.md)."""
    from ultralytics import YOLO

    yolo = YOLO(str(models[arch]))
    pipe = PosePipeline(str(models[arch]), device="cuda", backend=backend, precision=precision,
                        cuda_graph=cuda_graph, end2end=end2end or None)
    assert pipe.head == head
    theirs_n = ours_n = matched = 0
    for batch in (frames, frames[3:4] * 3):
        got = pipe(batch)
        for f, ours in zip(batch, got):
            theirs = ultralytics_results(yolo.predict(f, verbose=False, conf=0.25, iou=0.7, device="cuda",
                                                      half=precision == "fp16", nms=False if end2end else None))[0]
            if precision == "fp32":
                _assert_equal_to_predict(ours, theirs)
            elif arch == "yolo11n-pose":
                assert len(ours) == len(theirs["scores"])
                assert len(match(ours.boxes, theirs["boxes"], 0.98)) == len(ours)
            theirs_n, ours_n = theirs_n + len(theirs["scores"]), ours_n + len(ours)
            matched += len(match(ours.boxes, theirs["boxes"], 0.98))
    assert theirs_n >= 10 and matched >= 0.95 * theirs_n and ours_n - matched <= 0.05 * theirs_n
