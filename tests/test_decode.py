"""Head decode: reference == the Pose head's own decode; kernels == reference for every head (YOLOv8/YOLO11
Pose, YOLO26 Pose26 in both branches); thresholds, caps, NaN/inf. The reference against Pose26's own decode
is in test_heads.py (random YOLO26 models)."""
from __future__ import annotations

import pytest
import torch

from posefuse.kernels._common import KernelInputError, numba_simulator
import helpers
from posefuse.kernels.decode import HEADS, POSE, Head, decode, decode_reference, levels_for, top_cut
from posefuse.kernels.decode.reference import decode_dense_reference
from posefuse.kernels.letterbox import letterbox_reference

sim = pytest.mark.skipif(not numba_simulator(), reason="Numba CUDA simulator only (the GPU runs the gpu tests)")


def _raw(b, in_h, in_w, seed, shift=1.5, dtype=torch.float32, head=POSE):
    g = torch.Generator().manual_seed(seed)
    lv = levels_for(in_h, in_w)
    a = sum(h * w for h, w, _ in lv)
    raw = torch.randn(b, head.channels, a, generator=g) * 2
    raw[:, head.cls] += shift  # class logits: a good share above conf
    if head.reg_max == 1:  # distances: mostly positive, as a trained head's
        raw[:, :4] = raw[:, :4].abs() + 0.5
    return raw.to(dtype), lv


def assert_candidates_equal(ref, got, atol=1e-3, raw=None, cap=None, head=POSE):
    """The same anchors with the same values. Given the ``raw`` maps and a binding ``cap``, anchors tied at
    the cut's logit may differ (the kernels keep any of the tied; the reference the lowest indices), in
    equal numbers."""
    assert len(ref) == len(got)
    kth = top_cut(raw.float(), cap, head).kth if raw is not None else None
    for b, (r, g) in enumerate(zip(ref, got)):
        if kth is not None:
            tied = set(torch.nonzero(raw[b, head.cls].float() == kth[b]).view(-1).tolist())
            ra, ga = set(r["anchor"].tolist()), set(g["anchor"].tolist())
            assert len(ra) == len(ga) and (ra ^ ga) <= tied, (sorted(ra - ga)[:5], sorted(ga - ra)[:5])
            r = {k: v[[a in ga for a in r["anchor"].tolist()]] for k, v in r.items()}
            g = {k: v[[a in ra for a in g["anchor"].tolist()]] for k, v in g.items()}
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
@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.variant)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_numba_sim_matches_reference(dtype, head):
    raw, lv = _raw(2, 64, 96, 3, dtype=dtype, head=head)
    raw[1, 2, 3] = float("nan")
    raw[1, head.cls, 3] = 9.0  # the top logit
    raw[0, head.cls, 4] = float("inf")
    got = decode(raw, lv, 0.25, head=head, backend="numba")
    assert_candidates_equal(decode_reference(raw, lv, 0.25, head=head), got.per_image())
    # capped: the inf logit takes no place in the cut; anchor 3 (top logit, a NaN box) takes one, then drops
    got = decode(raw, lv, 0.25, 9, head=head, backend="numba")
    assert got.counts.tolist() == [9, 8]
    assert_candidates_equal(decode_reference(raw, lv, 0.25, 9, head=head), got.per_image(), raw=raw, cap=9,
                            head=head)


HOST_SHIMS = """#include <string.h>
#define __forceinline__ inline
struct float4 { float x, y, z, w; };
static float4 make_float4(float a, float b, float c, float d) { float4 v = {a, b, c, d}; return v; }
static int atomicAdd(int* p, int v) { int old = *p; *p += v; return old; }
static float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
extern "C" void set_image(unsigned b) { blockIdx.y = b; }
"""


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.variant)
def test_decode_cu_built_for_the_host_matches_reference(head, tmp_path):
    """decode.cu's CUDA C (fp32 input) built for the host with each head's #defines: every variant's
    arithmetic, threshold and compaction against the reference, NaN and a capped image included."""
    import ctypes

    import numpy as np

    from posefuse.kernels.decode import Candidates, check_levels
    from posefuse.kernels.decode import cupy_impl

    d = dict(cupy_impl.defines(head, torch.float32))
    lib = helpers.host_build(cupy_impl.CU, d, tmp_path, prelude=HOST_SHIMS)
    kern = getattr(lib, d["KNAME"])
    raw, lv = _raw(2, 64, 96, 8, head=head)
    raw[1, 2, 3] = float("nan")
    raw[1, head.cls, 3] = 8.0  # in the cut of 9, then dropped (its box is not finite)
    raw[0, head.cls, 4] = float("inf")  # never a candidate, no place in the cut
    raw[1, head.cls] = (raw[1, head.cls] * 2).round() / 2  # logits tied at the cut: none pushes out a better one
    b, _, a = raw.shape
    rows, off = [], 0
    for h, w, st in check_levels(lv, a):
        rows.append((h, w, st, off))
        off += h * w
    lvl = np.ascontiguousarray(np.array(rows, np.int32))
    for cap in (a, 9):  # every candidate; the best 9 (the kth floor cuts)
        out = Candidates.empty(b, cap, "cpu")
        kth = ties = None
        if cap < a:
            cut = top_cut(raw, cap, head)
            kth, ties = np.ascontiguousarray(cut.kth.numpy()), np.ascontiguousarray(cut.ties.numpy())
        x = np.ascontiguousarray(raw.numpy())
        f, i = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int)
        args = [x.ctypes.data_as(f), ctypes.c_int(a), lvl.ctypes.data_as(i), ctypes.c_int(len(rows)),
                ctypes.c_float(0.25), kth.ctypes.data_as(f) if kth is not None else None,
                ties.ctypes.data_as(i) if ties is not None else None, ctypes.c_int(cap),
                *(t.numpy().ctypes.data_as(f) for t in (out.boxes, out.scores, out.keypoints)),
                out.anchors.numpy().ctypes.data_as(i), out.counts.numpy().ctypes.data_as(i)]
        for bi in range(b):
            lib.set_image(bi)
            for t in range(a):
                lib.set_thread(t // 128, 128, t % 128)
                kern(*args)
        out.counts.clamp_(max=cap)
        assert_candidates_equal(decode_reference(raw, lv, 0.25, max_nms=cap, head=head), out.per_image(), atol=1e-4,
                                raw=raw if cap < a else None, cap=cap, head=head)
        if cap < a:
            assert (raw[1, head.cls] == float(cut.kth[1])).sum() > 1 and out.counts.tolist() == [9, 8]


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
    with pytest.raises(KernelInputError, match=r"raw: expected 56 channels \(4 box \+ 1 class"):
        decode(raw, lv, head=Head("pose26", 1, True))
    with pytest.raises(KernelInputError, match="head: expected a kernels.decode.Head"):
        decode(raw, lv, head="pose26")
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
@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.variant)
@pytest.mark.parametrize("backend", ["cupy", "numba", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_random_matches_reference(backend, dtype, head):
    raw, lv = _raw(4, 384, 640, 5, dtype=dtype, head=head)
    raw[1, 2, 3] = float("nan")
    raw[1, head.cls, 3] = 5.0
    raw[2, head.cls, 100] = float("inf")
    raw[3, head.cls] = -30.0  # no candidate
    got = decode(raw.cuda(), lv, 0.25, head=head, backend=backend)
    assert_candidates_equal(decode_reference(raw, lv, 0.25, head=head), got.per_image())
    got = decode(raw.cuda(), lv, 0.25, 300, head=head, backend=backend)  # an end-to-end head's top-k cap
    assert_candidates_equal(decode_reference(raw, lv, 0.25, 300, head=head), got.per_image(), raw=raw, cap=300,
                            head=head)


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
