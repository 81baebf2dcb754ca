"""Head decode: reference == the Pose head's own decode; kernels == reference; thresholds, caps, NaN/inf."""
from __future__ import annotations

import pytest
import torch

from posefuse.kernels._common import KernelInputError, numba_simulator
from posefuse.kernels.decode import decode, decode_reference, levels_for
from posefuse.kernels.decode.reference import CHANNELS, decode_dense_reference
from posefuse.kernels.letterbox import letterbox_reference

sim = pytest.mark.skipif(not numba_simulator(), reason="Numba CUDA simulator only (the GPU runs the gpu tests)")


def _raw(b, in_h, in_w, seed, shift=1.5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    lv = levels_for(in_h, in_w)
    a = sum(h * w for h, w, _ in lv)
    raw = torch.randn(b, CHANNELS, a, generator=g) * 2
    raw[:, 64] += shift  # class logits: a good share above conf
    return raw.to(dtype), lv


def assert_candidates_equal(ref, got, atol=1e-3):
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert torch.equal(r["anchor"], g["anchor"]), (r["anchor"][:10], g["anchor"][:10])
        for k in ("boxes", "scores", "keypoints"):
            assert torch.isfinite(g[k]).all()
            if r[k].numel():
                err = (r[k].float() - g[k].float()).abs().max().item()
                assert err <= atol, f"{k}: max abs diff {err}"


# ------------------------------------------------------------------------------------------------
# Reference == Ultralytics' head decode
# ------------------------------------------------------------------------------------------------
def test_dense_reference_equals_pose_head_output(yolo, backbone, clip_frames, gif_frames):
    net = yolo.predictor.model.model
    for frames in (clip_frames[150:152], gif_frames[:2]):
        x, _ = letterbox_reference(frames, 640)
        with torch.no_grad():
            raw = backbone(torch.from_numpy(x))
            head = net(torch.from_numpy(x))[0]  # (B, 4 + 1 + 51, A), the head's own decode
        dense = decode_dense_reference(raw, backbone.levels(*x.shape[2:]))
        assert dense.shape == head.shape
        assert (dense - head).abs().max().item() <= 1e-3


def test_reference_threshold_is_strict_and_drops_non_finite():
    raw, lv = _raw(1, 64, 64, 0)
    conf = float(torch.sigmoid(raw[0, 64, 7]))  # exactly one anchor's score
    got = decode_reference(raw, lv, conf)[0]
    assert 7 not in got["anchor"].tolist()
    assert (got["scores"] > conf).all()
    raw[0, 64, :] = 10.0
    raw[0, 3, 5] = float("nan")
    raw[0, 70, 9] = float("inf")
    raw[0, 64, 11] = float("inf")
    got = decode_reference(raw, lv, 0.25)[0]["anchor"].tolist()
    assert 5 not in got and 9 not in got and 11 not in got and len(got) == raw.shape[2] - 3


def test_reference_max_nms_keeps_best_scores():
    raw, lv = _raw(1, 64, 64, 1)
    full = decode_reference(raw, lv, 0.25)[0]
    capped = decode_reference(raw, lv, 0.25, max_nms=10)[0]
    best = full["anchor"][torch.argsort(-full["scores"])[:10]].sort().values
    assert torch.equal(capped["anchor"], best)


# ------------------------------------------------------------------------------------------------
# Numba under the simulator (small maps)
# ------------------------------------------------------------------------------------------------
@sim
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_numba_sim_matches_reference(dtype):
    raw, lv = _raw(2, 64, 96, 3, dtype=dtype)
    raw[1, 5, 3] = float("nan")
    raw[1, 64, 3] = 5.0
    raw[0, 64, 4] = float("inf")
    got = decode(raw, lv, 0.25, backend="numba")
    assert_candidates_equal(decode_reference(raw, lv, 0.25), got.per_image())


@sim
def test_numba_sim_cap_no_candidates_and_max_nms():
    raw, lv = _raw(2, 32, 64, 4)
    raw[1, 64] = -20.0  # image 1: nothing above threshold
    got = decode(raw, lv, 0.25, max_nms=7, backend="numba")
    assert got.cap == 7 and got.counts.tolist()[1] == 0 and got.counts.tolist()[0] == 7
    assert_candidates_equal(decode_reference(raw, lv, 0.25, max_nms=7), got.per_image())


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------
def test_bad_input_named():
    raw, lv = _raw(1, 32, 32, 0)
    with pytest.raises(KernelInputError, match="raw: expected dtype float16/float32, got int32"):
        decode(raw.int(), lv)
    with pytest.raises(KernelInputError, match=r"raw: expected 116 channels"):
        decode(raw[:, :100], lv)
    with pytest.raises(KernelInputError, match="raw: expected 3 dimensions"):
        decode(raw[0], lv)
    with pytest.raises(KernelInputError, match="raw: expected a contiguous tensor"):
        decode(raw.transpose(0, 2).contiguous().transpose(0, 2), lv)
    with pytest.raises(KernelInputError, match="levels: expected per-level"):
        decode(raw, levels_for(64, 64))
    with pytest.raises(KernelInputError, match="conf: expected a value in"):
        decode(raw, lv, conf=1.5)
    with pytest.raises(KernelInputError, match="max_nms: expected >= 1"):
        decode(raw, lv, max_nms=0)
    with pytest.raises(KernelInputError, match="raw: expected an array, got None"):
        decode(None, lv)
    empty = decode(raw[:0], lv, backend="reference")
    assert empty.counts.numel() == 0


# ------------------------------------------------------------------------------------------------
# GPU
# ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cupy", "numba", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_random_matches_reference(backend, dtype):
    raw, lv = _raw(4, 384, 640, 5, dtype=dtype)
    raw[1, 5, 3] = float("nan")
    raw[1, 64, 3] = 5.0
    raw[2, 64, 100] = float("inf")
    raw[3, 64] = -30.0  # no candidate
    got = decode(raw.cuda(), lv, 0.25, backend=backend)
    assert_candidates_equal(decode_reference(raw, lv, 0.25), got.per_image())


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cupy", "numba"])
def test_gpu_max_nms_cap_by_score(backend):
    raw, lv = _raw(3, 640, 640, 6, shift=4.0)
    got = decode(raw.cuda(), lv, 0.25, max_nms=500, backend=backend)
    assert got.counts.tolist() == [500, 500, 500]
    assert_candidates_equal(decode_reference(raw, lv, 0.25, max_nms=500), got.per_image())


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cupy", "numba"])
def test_gpu_real_head_outputs(backend, backbone, clip_frames, clip1080_frames):
    for frames in (clip_frames[140:148], clip1080_frames[100:102]):
        x, _ = letterbox_reference(frames, 640)
        with torch.no_grad():
            raw = backbone(torch.from_numpy(x))
        lv = backbone.levels(*x.shape[2:])
        got = decode(raw.cuda(), lv, 0.25, backend=backend)
        assert_candidates_equal(decode_reference(raw, lv, 0.25), got.per_image())
        got = decode(raw.cuda(), lv, 0.01, backend=backend)  # many candidates
        assert_candidates_equal(decode_reference(raw, lv, 0.01), got.per_image())


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cupy", "numba"])
def test_gpu_non_default_stream(backend):
    raw, lv = _raw(8, 384, 640, 7)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        r = raw.cuda(non_blocking=False)
        got = decode(r, lv, 0.25, backend=backend)
        per = got.per_image()
    assert_candidates_equal(decode_reference(raw, lv, 0.25), per)
