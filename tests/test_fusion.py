"""The fused pipeline: equal to Ultralytics predict, every backend and mode equal to each other, streams,
zero-copy, no allocation after warm-up, async queueing, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from posefuse.fusion import PosePipeline
from posefuse.fusion.accuracy import AccuracyTally, ultralytics_results
from posefuse.kernels._common import KernelInputError
import helpers

gpu = pytest.mark.gpu
FP16 = dict(atol=0.05, score_atol=1e-3)  # two fp16 pipelines may autotune different cuDNN algorithms


@pytest.fixture(scope="module")
def cpu_pipe():
    return PosePipeline(device="cpu")


def assert_results_close(a, b, atol=1e-3, score_atol=1e-4):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y), (len(x), len(y))
        np.testing.assert_allclose(x.boxes, y.boxes, atol=atol)
        np.testing.assert_allclose(x.scores, y.scores, atol=score_atol)
        np.testing.assert_allclose(x.keypoints, y.keypoints, atol=atol)


# ------------------------------------------------------------------------------------------------
# CPU: the pipeline is Ultralytics predict
# ------------------------------------------------------------------------------------------------
def test_cpu_pipeline_equals_predict(cpu_pipe, yolo, clip_frames, clip1080_frames, gif_frames):
    tally = AccuracyTally()
    batches = [clip_frames[150:154], clip_frames[280:282], clip1080_frames[100:102], gif_frames[5:8],
               helpers.asset_images()]  # the last: a mixed-size batch, each frame as predict runs it alone
    for frames in batches:
        ours = cpu_pipe(list(frames))
        theirs = [r for f in frames for r in ultralytics_results(yolo.predict(f, verbose=False, conf=0.25, iou=0.7))]
        for o, t in zip(ours, theirs):
            tally.add(o, t)
    s = tally.summary()
    assert s["their_detections"] >= 10
    assert s["matched_fraction"] == 1.0 and s["extra_fraction"] == 0.0
    assert s["keypoint_mean_error_px"] <= 1e-3 and s["max_score_diff"] <= 1e-4


def test_cpu_poses_do_not_depend_on_the_batch(cpu_pipe, clip_frames, clip1080_frames, gif_frames):
    """A frame's poses are the same alone and in any batch: with frames of another resolution and the same
    canvas (768x432 beside 1920x1080: both 384x640), of another canvas (the GIF, images), of any size."""
    frame = clip_frames[280]
    alone = cpu_pipe([frame])[0]
    assert len(alone) >= 1
    company = [[clip1080_frames[100], frame, clip1080_frames[101]], [gif_frames[0], frame] + helpers.asset_images(),
               list(clip_frames[276:284])]
    for batch in company:
        got = cpu_pipe(batch)[[id(f) for f in batch].index(id(frame))]
        for name in ("boxes", "scores", "keypoints"):
            np.testing.assert_array_equal(getattr(got, name), getattr(alone, name), err_msg=name)


def test_cpu_submit_and_nv12(cpu_pipe, clip_frames):
    p = cpu_pipe.submit(clip_frames[150:152])
    assert p.done() and len(p.result()) == 2
    nv12 = [helpers.bgr_to_nv12(f) for f in clip_frames[150:152]]
    res = cpu_pipe(nv12, pixel_format="nv12")
    ref = p.result()
    for a, b in zip(res, ref):  # chroma subsampling changes pixels slightly: same people, close boxes
        assert len(a) == len(b)
        assert np.abs(a.boxes - b.boxes).max() < 8.0


class TinyHead(nn.Module):
    """A custom module that returns raw per-level head maps (a list of (B, 116, h, w))."""

    strides = (8, 16, 32)

    def forward(self, x):
        b, _, h, w = x.shape
        outs = []
        for s in self.strides:
            m = torch.full((b, 116, h // s, w // s), -8.0)
            m[:, 64, 1, 1] = 4.0  # one confident anchor per level
            outs.append(m)
        return outs


def test_custom_module_backbone():
    pipe = PosePipeline(model=TinyHead(), device="cpu")
    res = pipe([np.zeros((64, 64, 3), np.uint8)])
    assert len(res[0]) >= 1 and res[0].keypoints.shape[1:] == (17, 3)


def test_bad_arguments_named():
    with pytest.raises(KernelInputError, match="backend: expected one of"):
        PosePipeline(device="cpu", backend="opencl")
    with pytest.raises(KernelInputError, match="precision: expected one of"):
        PosePipeline(device="cpu", precision="int8")
    with pytest.raises(KernelInputError, match=r"conf: expected a score in \[0, 1\], got 2.0"):
        PosePipeline(device="cpu", conf=2.0)
    with pytest.raises(KernelInputError, match="model: expected a model name"):
        PosePipeline(model=3, device="cpu")
    with pytest.raises(FileNotFoundError, match="model: no checkpoint at"):
        PosePipeline(model="/nonexistent/model.pt", device="cpu")


def test_bad_frames_named(cpu_pipe):
    with pytest.raises(KernelInputError, match=r"frames\[1\]: expected uint8 HxWx3"):
        cpu_pipe([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])
    with pytest.raises(KernelInputError, match="frames: expected at least one frame"):
        cpu_pipe([])


# ------------------------------------------------------------------------------------------------
# GPU
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipes():
    """Built once: pipeline construction loads the model."""
    cache = {}

    def get(**kw):
        key = tuple(sorted(kw.items()))
        if key not in cache:
            cache[key] = PosePipeline(**kw)
        return cache[key]

    return get


@gpu
@pytest.mark.parametrize("backend", ["cupy", "numba", "torch"])
@pytest.mark.parametrize("cuda_graph", [True, False])
def test_gpu_fp32_equals_cpu_reference(no_tf32, pipes, cpu_pipe, backend, cuda_graph, clip_frames, gif_frames):
    pipe = pipes(backend=backend, cuda_graph=cuda_graph, precision="fp32")
    # The CuPy and Numba letterboxes are cv2's resize bit for bit: only cuDNN vs CPU convolution order remains.
    # The torch-ops letterbox (float bilinear) differs from cv2 by a level here and there, which moves boxes
    # by ~0.1 px: for it, the fp32 accuracy bounds.
    for frames in (clip_frames[140:148], clip_frames[150:158], gif_frames[:3]):  # two batches: same graph slot
        got, ref = pipe(list(frames)), cpu_pipe(list(frames))
        if backend == "torch":  # float bilinear letterbox: the fp32 accuracy bounds
            tally = AccuracyTally()
            for g, r in zip(got, ref):
                tally.add(g, r)
            s = tally.summary()
            assert s["matched_fraction"] == 1.0 and s["extra_fraction"] == 0.0, s
            assert s["keypoint_mean_error_px"] <= 0.5 and s["max_score_diff"] <= 0.005, s
        else:
            assert_results_close(got, ref, atol=2e-2, score_atol=2e-3)


@gpu
@pytest.mark.parametrize("backend", ["cupy", "numba"])
def test_gpu_graph_equals_eager_fp16_and_replays_fresh_inputs(pipes, backend, clip_frames):
    g, e = pipes(backend=backend, cuda_graph=True), pipes(backend=backend, cuda_graph=False)
    for start in (100, 150, 200, 250, 300 - 8):  # replays of one graph with different frames
        frames = clip_frames[start : start + 8]
        assert_results_close(g(frames), e(frames), **FP16)


@gpu
@pytest.mark.parametrize("backend", ["cupy", "numba"])
def test_gpu_device_frames_batch_list_cupy(pipes, backend, clip_frames):
    pipe = pipes(backend=backend)
    frames = clip_frames[150:158]
    ref = pipe(frames)
    dev = torch.from_numpy(np.stack(frames)).cuda()
    assert_results_close(pipe(dev), ref, **FP16)
    assert_results_close(pipe(list(dev.unbind(0))), ref, **FP16)
    import cupy

    assert_results_close(pipe(cupy.asarray(np.stack(frames))), ref, **FP16)


@gpu
def test_gpu_zero_copy_pointer_table_reads_caller_memory(pipes, clip_frames):
    """Graph mode with device frames: the letterbox reads the caller's frames in place (no staging copy)."""
    pipe = pipes(backend="cupy")
    ring = None
    for _ in range(3):
        dev = torch.from_numpy(np.stack(clip_frames[150:154])).cuda()
        pipe(dev)
        ring = [s for sig, r in pipe._slots.items() if sig[3] == "device" and sig[0] == 4 for s in r]
        used = [s for s in ring if s.src_pinned is not None and dev.data_ptr() in s.src_pinned[:, 0].tolist()]
        assert len(used) == 1 and used[0].graph is not None
    assert all(s.in_dev is None for s in ring)  # no device staging buffer exists for device frames


@gpu
def test_gpu_interop_same_pointers():
    from posefuse.fusion.interop import data_ptr, to_cupy, to_numba, to_torch

    t = torch.arange(1000, dtype=torch.float32, device="cuda")
    c = to_cupy(t)
    n = to_numba(t)
    assert data_ptr(c) == data_ptr(n) == t.data_ptr() == to_torch(c).data_ptr()
    c[0] = 7
    assert float(t[0]) == 7.0


@gpu
def test_gpu_non_default_stream_and_two_pipelines_at_once(pipes, clip_frames):
    a = pipes(backend="cupy")
    b = PosePipeline(backend="cupy")
    fa, fb = clip_frames[150:158], clip_frames[200:208]
    ref_a, ref_b = a(fa), a(fb)
    sa, sb = torch.cuda.Stream(), torch.cuda.Stream()
    for _ in range(3):
        with torch.cuda.stream(sa):
            pa = a.submit(fa)
        with torch.cuda.stream(sb):
            pb = b.submit(fb)
        assert_results_close(pa.result(), ref_a, atol=1e-3)
        assert_results_close(pb.result(), ref_b, **FP16)


@gpu
def test_gpu_async_queue_and_unread_results_survive_slot_reuse(pipes, clip_frames):
    pipe = pipes(backend="cupy")
    batches = [clip_frames[i : i + 4] for i in range(100, 300, 20)]
    refs = [pipe(b) for b in batches]
    pending = [pipe.submit(b) for b in batches]  # more than the ring holds, none read yet
    for p, r in zip(pending, refs):
        assert_results_close(p.result(), r, atol=1e-3)


@gpu
@pytest.mark.parametrize("source", ["host", "device"])
def test_gpu_no_allocation_after_warmup(pipes, source, clip_frames):
    pipe = pipes(backend="cupy")
    frames = np.stack(clip_frames[100:116])
    src = torch.from_numpy(frames).cuda() if source == "device" else list(frames)
    for _ in range(3):
        pipe(src)
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    for _ in range(10):
        pipe(src)
    torch.cuda.synchronize()
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before


@gpu
def test_gpu_mixed_sizes_and_nv12(no_tf32, pipes, cpu_pipe, clip_frames, clip1080_frames):
    pipe = pipes(backend="cupy", precision="fp32")
    mixed = [clip_frames[150], clip1080_frames[100], helpers.asset_images()[0]]
    assert_results_close(pipe(mixed), cpu_pipe(mixed), atol=2e-2, score_atol=2e-3)
    nv12 = torch.from_numpy(np.stack([helpers.bgr_to_nv12(f) for f in clip_frames[150:154]])).cuda()
    got = pipe(nv12, pixel_format="nv12")
    ref = cpu_pipe([helpers.bgr_to_nv12(f) for f in clip_frames[150:154]], pixel_format="nv12")
    assert_results_close(got, ref, atol=2e-2, score_atol=2e-3)


def test_pipeline_defaults_to_the_best_device_and_changes_no_process_setting():
    before = torch.backends.cudnn.benchmark
    pipe = PosePipeline(model=TinyHead())
    assert pipe.device == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    assert torch.backends.cudnn.benchmark == before
    assert "device:" in PosePipeline.__doc__ and PosePipeline.__call__.__doc__
    if pipe.device.type == "cpu":
        assert pipe.precision == "fp32"  # what runs, not what was asked for


@pytest.mark.parametrize("kw, match", [({"device": "tpu"}, "device: expected 'cuda', 'cuda:N' or 'cpu'"),
                                       ({"conf": 2}, "conf: expected a score in"), ({"iou": -1}, "iou: expected"),
                                       ({"imgsz": 8}, "imgsz: expected >= 32"), ({"backend": "fast"}, "backend:")])
def test_pipeline_arguments_are_checked_by_name(kw, match):
    from posefuse.kernels._common import KernelInputError

    with pytest.raises(KernelInputError, match=match):
        PosePipeline(model=TinyHead(), **({"device": "cpu"} | kw))
