"""NMS + rescale: reference == torchvision / Ultralytics predict; kernels == reference; edge cases. The
end-to-end heads' top-k + rescale: reference == Ultralytics' top-k and end-to-end branch; kernels ==
reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posefuse.kernels._common import KernelInputError, numba_simulator
from posefuse.kernels.decode import Candidates, decode, decode_reference
from posefuse.kernels.letterbox import letterbox_reference
from posefuse.kernels.nms import (nms_reference, nms_rescale, postprocess_reference, rescale_reference,
                                  topk_rescale)
from posefuse.kernels.nms.reference import iou_one_to_many
import helpers

sim = pytest.mark.skipif(not numba_simulator(), reason="Numba CUDA simulator only (the GPU runs the gpu tests)")


def random_boxes(n, seed, size=200.0, max_wh=80.0):
    g = np.random.default_rng(seed)
    xy = g.uniform(0, size, (n, 2)).astype(np.float32)
    wh = g.uniform(1, max_wh, (n, 2)).astype(np.float32)
    return np.concatenate((xy, xy + wh), 1), g.permutation(n).astype(np.float32) / n + 0.01  # distinct scores


def make_candidates(boxes, scores, device="cpu", cap=None, kpts=None) -> Candidates:
    n = len(scores)
    cap = cap or max(n, 1)
    c = Candidates.empty(1, cap, device)
    c.boxes.zero_(), c.scores.zero_(), c.keypoints.zero_(), c.anchors.zero_()
    c.boxes[0, :n] = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    c.scores[0, :n] = torch.as_tensor(np.asarray(scores, np.float32))
    c.anchors[0, :n] = torch.arange(n, dtype=torch.int32)
    if kpts is not None:
        c.keypoints[0, :n] = torch.as_tensor(kpts)
    c.counts[0] = n
    return c


IDENTITY = ([[1.0, 1.0, 0.0, 0.0]], [[10000, 10000]])  # gain 1, pad 0, large image: no clipping


def kept_boxes(dets, b=0):
    n = int(dets.counts[b])
    return dets.boxes[b, :n].cpu().numpy(), dets.scores[b, :n].cpu().numpy()


# ------------------------------------------------------------------------------------------------
# Reference == torchvision.ops.nms, and == Ultralytics predict end to end
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_reference_same_kept_set_as_torchvision(seed, iou):
    import torchvision

    boxes, scores = random_boxes(300, seed)
    ours = nms_reference(boxes, scores, iou, max_det=10**6)
    tv = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
    np.testing.assert_array_equal(ours, tv)


def _predict_vs_reference(yolo, backbone, frames):
    """Our full reference chain (letterbox -> backbone -> decode -> NMS -> rescale) vs predict()."""
    res = yolo.predict(list(frames), verbose=False, conf=0.25, iou=0.7)
    x, rp = letterbox_reference(frames, 640)
    with torch.no_grad():
        raw = backbone(torch.from_numpy(x))
    cands = decode_reference(raw, backbone.levels(*x.shape[2:]), 0.25)
    ours = postprocess_reference(cands, rp, [f.shape[:2] for f in frames], 0.7, 300)
    for o, r in zip(ours, res):
        assert len(o["scores"]) == len(r.boxes), (len(o["scores"]), len(r.boxes))
        np.testing.assert_allclose(o["boxes"], r.boxes.xyxy.numpy(), atol=1e-3)
        np.testing.assert_allclose(o["scores"], r.boxes.conf.numpy(), atol=1e-3)
        np.testing.assert_allclose(o["keypoints"], r.keypoints.data.numpy(), atol=1e-3)
    return sum(len(o["scores"]) for o in ours)


def test_reference_postprocess_equals_predict(yolo, backbone, clip_frames, clip1080_frames, gif_frames):
    n = 0
    n += _predict_vs_reference(yolo, backbone, clip_frames[150:154])
    n += _predict_vs_reference(yolo, backbone, clip_frames[260:262])
    n += _predict_vs_reference(yolo, backbone, clip1080_frames[100:102])
    n += _predict_vs_reference(yolo, backbone, gif_frames[10:12])
    for img in helpers.asset_images():  # bus.jpg, zidane.jpg: several people each
        n += _predict_vs_reference(yolo, backbone, [img])
    assert n >= 10  # the comparison covered real detections


# ------------------------------------------------------------------------------------------------
# Edge cases, on every backend that runs here
# ------------------------------------------------------------------------------------------------
def _backends():
    out = ["reference"]
    if numba_simulator():
        out.append("numba")
    if torch.cuda.is_available():
        out += ["cupy", "numba", "torch"]
    return out


def _edge_cases():
    cases = {}
    cases["no_candidates"] = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.7, 300)
    b = np.tile(np.array([[10, 10, 50, 60]], np.float32), (40, 1))
    cases["all_overlapping"] = (b + np.arange(40, dtype=np.float32)[:, None] * 0.01, np.linspace(0.9, 0.3, 40), 0.7, 300)
    grid = np.array([[x * 20, y * 20, x * 20 + 10, y * 20 + 10] for x in range(7) for y in range(7)], np.float32)
    cases["more_than_max_det"] = (grid, np.linspace(0.95, 0.3, 49), 0.7, 12)
    cases["score_ties"] = (random_boxes(60, 3)[0], np.repeat(np.float32([0.9, 0.8, 0.5]), 20), 0.5, 300)
    cases["zero_area"] = (np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 0], [0, 0, 10, 10]], np.float32),
                          np.float32([0.9, 0.8, 0.7, 0.6]), 0.5, 300)
    return cases


def _iou_threshold_case(delta):
    """Two boxes with IoU = 0.5 exactly-ish; threshold set at IoU +- delta."""
    a = np.float32([0, 0, 100, 100])
    bx = np.float32([0, 0, 100, 50 * 2 / 1.5])  # IoU = area_b / area_a
    iou = float(iou_one_to_many(a, bx[None])[0])
    return np.stack([a, bx]), np.float32([0.9, 0.8]), iou + delta


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("case", list(_edge_cases()))
def test_edge_cases_match_reference(backend, case):
    boxes, scores, iou, max_det = _edge_cases()[case]
    dev = "cuda" if backend in ("cupy", "torch") or (backend == "numba" and not numba_simulator()) else "cpu"
    c = make_candidates(boxes, scores, dev, cap=64)
    d = nms_rescale(c, *IDENTITY, iou=iou, max_det=max_det, backend=backend)
    kb, ks = kept_boxes(d)
    keep = nms_reference(boxes, scores, iou, max_det)
    if case == "score_ties":  # order inside a tie may differ; the kept set per score level must not
        assert sorted(map(tuple, kb.tolist())) == sorted(map(tuple, boxes[keep].tolist()))
    else:
        np.testing.assert_array_equal(kb, boxes[keep])
        np.testing.assert_array_equal(ks, np.asarray(scores, np.float32)[keep])
    n = int(d.counts[0])
    assert (d.boxes[0, n:] == 0).all() and (d.scores[0, n:] == 0).all() and (d.keypoints[0, n:] == 0).all()
    expect = {"no_candidates": 0, "all_overlapping": 1, "more_than_max_det": 12, "zero_area": 4}
    if case in expect:
        assert n == expect[case]


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("delta, kept", [(1e-5, 2), (-1e-5, 1)])
def test_iou_at_threshold(backend, delta, kept):
    boxes, scores, thr = _iou_threshold_case(delta)
    dev = "cuda" if backend in ("cupy", "torch") or (backend == "numba" and not numba_simulator()) else "cpu"
    d = nms_rescale(make_candidates(boxes, scores, dev), *IDENTITY, iou=thr, max_det=300, backend=backend)
    assert int(d.counts[0]) == kept == len(nms_reference(boxes, scores, thr))


@pytest.mark.parametrize("backend", _backends())
def test_rescale_and_clip(backend):
    dev = "cuda" if backend in ("cupy", "torch") or (backend == "numba" and not numba_simulator()) else "cpu"
    boxes = np.float32([[-20, 10, 700, 300], [100, 100, 120, 130]])
    kp = np.zeros((2, 17, 3), np.float32)
    kp[..., 0], kp[..., 1], kp[..., 2] = 650.0, 20.0, 0.7
    c = make_candidates(boxes, [0.9, 0.8], dev, kpts=kp)
    rp, hw = [[0.5, 0.25, 8.0, 12.0]], [[400, 1000]]
    d = nms_rescale(c, rp, hw, iou=0.7, max_det=10, backend=backend)
    eb, ek = rescale_reference(boxes, kp, rp[0], hw[0])
    np.testing.assert_allclose(d.boxes[0, :2].cpu().numpy(), eb, rtol=0, atol=1e-4)
    np.testing.assert_allclose(d.keypoints[0, :2].cpu().numpy(), ek, rtol=0, atol=1e-4)




# ------------------------------------------------------------------------------------------------
# Top-k (an end-to-end head's selection, no NMS)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_det, conf", [(300, 0.25), (300, 0.0), (10, 0.25), (400, 0.5)])
def test_topk_reference_equals_ultralytics_end_to_end_selection(seed, max_det, conf):
    """Ultralytics 8.4.190: ``Detect.postprocess`` keeps the top k = max(max_det, 300) scores over all
    anchors (predict sets the head's max_det so), then ``non_max_suppression``'s end-to-end branch those
    above conf, the first max_det; ours: the candidates above conf, best first, the first max_det."""
    pytest.importorskip("ultralytics")
    from ultralytics.nn.modules.head import Detect
    from ultralytics.utils.nms import non_max_suppression

    g = np.random.default_rng(seed)
    a = 1200
    boxes = g.uniform(0, 600, (a, 4)).astype(np.float32)
    scores = g.permutation(a).astype(np.float32) / a  # distinct
    head = Detect(nc=1, ch=(16,))
    head.max_det = max(max_det, 300)
    preds = torch.cat([torch.from_numpy(boxes), torch.from_numpy(scores)[:, None]], 1)[None]
    top = head.postprocess(preds)  # (1, k, 6): box, score, class
    theirs = non_max_suppression(top, conf, 0.7, max_det=max_det, end2end=True)[0].numpy()
    cand = scores > conf
    idx = np.nonzero(cand)[0]
    keep = nms_reference(boxes[idx], scores[idx], None, max_det, anchors=idx)
    np.testing.assert_array_equal(boxes[idx][keep], theirs[:, :4])
    np.testing.assert_array_equal(scores[idx][keep], theirs[:, 4])


def _backend_device(backend):
    return "cuda" if backend in ("cupy", "torch") or (backend == "numba" and not numba_simulator()) else "cpu"


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("case", ["random", "ties", "none", "more_than_max_det"])
def test_topk_kernels_match_reference(backend, case):
    boxes, scores = random_boxes(50, 7)
    max_det = 300
    if case == "ties":  # ties: lower anchor first, as the NMS kernels
        scores = np.repeat(np.float32([0.9, 0.8, 0.5, 0.3, 0.26]), 10)
    elif case == "none":
        boxes, scores = boxes[:0], scores[:0]
    elif case == "more_than_max_det":
        max_det = 12
    c = make_candidates(boxes, scores, _backend_device(backend), cap=64)
    kp = torch.rand(c.keypoints.shape, generator=torch.Generator().manual_seed(1)) * 100
    c.keypoints.copy_(kp.to(c.keypoints.device))
    rp, hw = [[0.5, 0.25, 8.0, 12.0]], [[400, 1000]]
    d = topk_rescale(c, rp, hw, max_det=max_det, backend=backend)
    keep = nms_reference(boxes, scores, None, max_det)
    eb, ek = rescale_reference(boxes[keep], kp[0, : len(scores)].numpy()[keep], rp[0], hw[0])
    n = int(d.counts[0])
    assert n == min(len(scores), max_det)
    np.testing.assert_allclose(d.boxes[0, :n].cpu().numpy(), eb, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(d.scores[0, :n].cpu().numpy(), np.asarray(scores, np.float32)[keep])
    np.testing.assert_allclose(d.keypoints[0, :n].cpu().numpy(), ek, rtol=0, atol=1e-4)
    assert (d.boxes[0, n:] == 0).all() and (d.scores[0, n:] == 0).all()


def test_bad_input_named():
    c = make_candidates(*random_boxes(5, 0))
    with pytest.raises(KernelInputError, match=r"ratio_pad: expected shape \(1, 4\)"):
        nms_rescale(c, [[1.0, 1.0, 0.0]], [[10, 10]])
    with pytest.raises(KernelInputError, match="orig_hw: expected dtype int32"):
        nms_rescale(c, [[1.0, 1.0, 0.0, 0.0]], torch.ones(1, 2))
    with pytest.raises(KernelInputError, match="iou: expected a value in"):
        nms_rescale(c, *IDENTITY, iou=-0.1)
    with pytest.raises(KernelInputError, match="max_det: expected >= 1"):
        nms_rescale(c, *IDENTITY, max_det=0)
    with pytest.raises(KernelInputError, match="max_det: expected >= 1"):
        topk_rescale(c, *IDENTITY, max_det=0)


# ------------------------------------------------------------------------------------------------
# GPU: random, real, large
# ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cupy", "numba", "torch"])
@pytest.mark.parametrize("seed", range(4))
def test_gpu_random_kept_set(backend, seed):
    boxes, scores = random_boxes(2000, seed, size=600, max_wh=120)
    d = nms_rescale(make_candidates(boxes, scores, "cuda"), *IDENTITY, iou=0.5, max_det=300, backend=backend)
    kb, _ = kept_boxes(d)
    np.testing.assert_array_equal(kb, boxes[nms_reference(boxes, scores, 0.5, 300)])


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cupy", "numba"])
def test_gpu_every_candidate_overlapping_full_cap(backend):
    n = 8400
    boxes = np.tile(np.float32([[100, 100, 300, 400]]), (n, 1)) + np.random.default_rng(0).uniform(0, 2, (n, 4)).astype(np.float32)
    scores = np.random.default_rng(1).permutation(n).astype(np.float32) / n + 0.3
    d = nms_rescale(make_candidates(boxes, scores, "cuda"), *IDENTITY, iou=0.7, max_det=300, backend=backend)
    kb, _ = kept_boxes(d)
    np.testing.assert_array_equal(kb, boxes[nms_reference(boxes, scores, 0.7, 300)])


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cupy", "numba", "torch"])
def test_gpu_full_chain_on_real_frames_equals_reference(backend, backbone, clip_frames, clip1080_frames, gif_frames):
    for frames in (clip_frames[140:156], clip1080_frames[90:94], gif_frames[:4]):
        x, rp = letterbox_reference(frames, 640)
        with torch.no_grad():
            raw = backbone(torch.from_numpy(x))
        lv = backbone.levels(*x.shape[2:])
        hw = [f.shape[:2] for f in frames]
        ref = postprocess_reference(decode_reference(raw, lv, 0.25), rp, hw, 0.7, 300)
        c = decode(raw.cuda(), lv, 0.25, backend="cupy" if backend == "torch" else backend)
        d = nms_rescale(c, torch.from_numpy(rp).cuda(), torch.tensor(hw, dtype=torch.int32).cuda(), 0.7, 300, backend=backend)
        for r, g in zip(ref, d.per_image()):
            assert len(r["scores"]) == len(g["scores"])
            np.testing.assert_allclose(g["boxes"], r["boxes"], atol=1e-3)
            np.testing.assert_allclose(g["scores"], r["scores"], atol=1e-5)
            np.testing.assert_allclose(g["keypoints"], r["keypoints"], atol=1e-3)
