"""Letterbox: the reference against Ultralytics, every implementation against the reference, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posefuse.kernels._common import KernelInputError, numba_simulator
from posefuse.kernels.letterbox import batch_geometry, letterbox, letterbox_reference
import helpers

EDGE_SHAPES = [(1, 1), (3, 5), (781, 1823), (3024, 4032), (1823, 781), (864, 1280), (432, 768)]  # 864x1280: exact 2x down


def _rand(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------
# Reference == Ultralytics (bit-exact)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(432, 768), (1080, 1920), (1, 1), (3, 5), (1823, 781), (640, 640), (17, 2000)])
@pytest.mark.parametrize("auto", [True, False])
def test_reference_bit_exact_to_ultralytics_letterbox(shape, auto):
    from ultralytics.data.augment import LetterBox

    f = _rand(shape, 1)
    ref, rp = letterbox_reference([f], 640, rect=auto)
    ul = LetterBox((640, 640), auto=auto, stride=32)(image=f)
    expect = np.ascontiguousarray(ul[..., ::-1].transpose(2, 0, 1)).astype(np.float32) / 255.0
    assert ref.shape[1:] == expect.shape
    np.testing.assert_array_equal(ref[0], expect)
    g = batch_geometry([shape], 640, rect=auto).frames[0]
    assert rp[0].tolist() == pytest.approx([g.gain_x, g.gain_y, g.left, g.top])


def test_reference_equals_predictor_preprocess(yolo, clip_frames, gif_frames):
    """Same-shape batches (rect) and mixed batches (square), through Ultralytics' own predictor."""
    pred = yolo.predictor
    for batch in (clip_frames[100:104], gif_frames[:3], [clip_frames[0], gif_frames[0], helpers.asset_images()[0]]):
        expect = pred.preprocess(list(batch)).cpu().numpy()
        got, _ = letterbox_reference(batch, pred.imgsz, rect=True, stride=int(pred.model.stride))
        np.testing.assert_array_equal(got, expect)


def test_ratio_pad_matches_scale_boxes():
    """Our (gain, pad) rows undo the letterbox exactly as Ultralytics' scale_boxes recomputes them."""
    from ultralytics.utils.ops import scale_boxes

    for shape in [(432, 768), (1080, 1920), (3, 5), (1823, 781), (333, 777)]:
        for rect in (True, False):
            geo = batch_geometry([shape], 640, rect=rect)
            gx, gy, px, py = geo.ratio_pad()[0]
            box = torch.tensor([[10.0, 20.0, 300.0, 200.0]])
            ours = ((box[0, 0::2] - px) / gx).tolist() + ((box[0, 1::2] - py) / gy).tolist()
            theirs = scale_boxes((geo.out_h, geo.out_w), box.clone(), shape, padding=True)[0]
            clipped = [min(max(v, 0), shape[1]) for v in ours[:2]] + [min(max(v, 0), shape[0]) for v in ours[2:]]
            assert [theirs[0], theirs[2], theirs[1], theirs[3]] == pytest.approx(clipped, abs=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_resize_coefficients_reproduce_cv2_bit_for_bit(seed):
    """The kernels' fixed-point tables (geometry.resize_coefficients) applied in NumPy == cv2.resize."""
    import cv2

    from posefuse.kernels.letterbox.geometry import apply_coefficients, resize_coefficients

    rng = np.random.default_rng(seed)
    sizes = [(1, 1), (3, 5), (781, 1823), (1823, 781), (864, 1280), (432, 768), (1080, 1920)]
    sizes += [tuple(int(v) for v in rng.integers(1, 1400, 2)) for _ in range(20)]
    for h, w in sizes:
        r = min(640 / h, 640 / w)
        nw, nh = max(round(w * r), 1), max(round(h * r), 1)
        if (nh, nw) == (h, w):
            continue
        img = _rand((h, w), seed)
        got = apply_coefficients(img, *resize_coefficients(h, w, nh, nw))
        np.testing.assert_array_equal(got, cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR), err_msg=f"{(h, w)}")


def test_mixed_sizes_use_square_canvas_and_same_shapes_use_rect():
    assert (batch_geometry([(432, 768)] * 3).out_h, batch_geometry([(432, 768)] * 3).out_w) == (384, 640)
    g = batch_geometry([(432, 768), (1080, 1920)])
    assert (g.out_h, g.out_w) == (640, 640)
    g = batch_geometry([(432, 768)], rect=False)
    assert (g.out_h, g.out_w) == (640, 640)


def test_per_frame_geometry_is_each_frame_alone():
    """per_frame: each frame's geometry is the one it has alone; frames of one canvas share a batch, frames of
    two canvases are refused, naming the first that differs."""
    from posefuse.kernels.letterbox import frame_canvas

    assert frame_canvas((432, 768)) == frame_canvas((1080, 1920)) == (384, 640)
    assert frame_canvas((432, 768), rect=False) == (640, 640)
    g = batch_geometry([(432, 768), (1080, 1920)], per_frame=True)
    assert (g.out_h, g.out_w) == (384, 640)
    for shape, frame in zip([(432, 768), (1080, 1920)], g.frames):
        assert frame == batch_geometry([shape]).frames[0]
    with pytest.raises(ValueError, match=r"frames\[1\]: its own canvas 480x640 differs from frames\[0\]'s 384x640"):
        batch_geometry([(432, 768), (480, 640)], per_frame=True)


# ------------------------------------------------------------------------------------------------
# CPU backends: torch ops, Numba under the CUDA simulator (small inputs: the simulator is slow)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", EDGE_SHAPES[:2] + [(20, 9), (64, 64), (37, 53)])
def test_torch_ops_cpu_matches_reference(shape):
    f = _rand(shape, 2)
    ref, rp = letterbox_reference([f], 64)
    got, grp = letterbox([torch.from_numpy(f)], 64, backend="torch", dtype=torch.float32)
    np.testing.assert_array_equal(got.numpy(), ref)  # cv2's fixed-point levels, bit for bit
    np.testing.assert_array_equal(grp.numpy(), rp)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_channels_last_canvas_holds_the_planar_values(backend):
    frames = [_rand((37, 53), 4), _rand((20, 9), 5)]
    ref, _ = letterbox_reference(frames, 64)
    got, _ = letterbox([torch.from_numpy(f) for f in frames], 64, backend=backend, dtype=torch.float32,
                       memory_format=torch.channels_last)
    assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
    np.testing.assert_array_equal(got.numpy(), ref)


sim = pytest.mark.skipif(not numba_simulator(), reason="Numba CUDA simulator only (the GPU runs the gpu tests)")


@sim
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_numba_sim_mixed_and_edge_shapes(dtype):
    frames = [_rand(s, i) for i, s in enumerate([(1, 1), (3, 5), (20, 9), (64, 64), (37, 53)])]  # 64x64 -> 32: exact 2x
    ref, _ = letterbox_reference(frames, 32)
    got, _ = letterbox([torch.from_numpy(f) for f in frames], 32, backend="numba", dtype=dtype)
    helpers.assert_letterbox_exact(got.numpy(), ref)  # cv2's fixed-point resize, bit for bit


@sim
def test_numba_sim_channels_last_out():
    frames = [_rand(s, i) for i, s in enumerate([(3, 5), (37, 53)])]
    ref, _ = letterbox_reference(frames, 32)
    out = torch.full(ref.shape, float("nan")).contiguous(memory_format=torch.channels_last)  # every value written
    got, _ = letterbox([torch.from_numpy(f) for f in frames], 32, backend="numba", dtype=torch.float32, out=out,
                       memory_format=torch.channels_last)
    assert got.data_ptr() == out.data_ptr()
    helpers.assert_letterbox_exact(got.numpy(), ref)


@sim
def test_numba_sim_batch_tensor_rect_real_frame(clip_frames):
    import cv2

    small = np.stack([cv2.resize(f, (96, 54), interpolation=cv2.INTER_AREA) for f in clip_frames[150:152]])
    ref, rp = letterbox_reference(list(small), 64)
    got, grp = letterbox(torch.from_numpy(small), 64, backend="numba", dtype=torch.float32)
    assert got.shape == (2, 3, 64, 64)[:2] + ref.shape[2:]
    helpers.assert_letterbox_exact(got.numpy(), ref)
    np.testing.assert_array_equal(grp.numpy(), rp)


@sim
def test_numba_sim_nv12_matches_cv2_conversion_then_letterbox(clip_frames):
    import cv2

    bgr = cv2.resize(clip_frames[150], (48, 28), interpolation=cv2.INTER_AREA)
    nv12 = helpers.bgr_to_nv12(bgr)
    ref, _ = letterbox_reference([nv12], 32, pixel_format="nv12")
    got, _ = letterbox([torch.from_numpy(nv12)], 32, pixel_format="nv12", backend="numba", dtype=torch.float32)
    helpers.assert_letterbox_exact(got.numpy(), ref)
    # the torch-ops NV12 path uses the same integer BT.601 formula: equal to cv2's conversion
    got_t, _ = letterbox([torch.from_numpy(nv12)], 32, pixel_format="nv12", backend="torch", dtype=torch.float32)
    helpers.assert_letterbox_close(got_t.numpy(), ref)


def test_nv12_torch_conversion_bit_exact_to_cv2(clip_frames):
    import cv2

    from posefuse.kernels.letterbox.torch_ops import _nv12_to_bgr

    nv12 = helpers.bgr_to_nv12(clip_frames[150])
    np.testing.assert_array_equal(_nv12_to_bgr(torch.from_numpy(nv12), 432).numpy(),
                                  cv2.cvtColor(nv12, cv2.COLOR_YUV2BGR_NV12))


# ------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the argument
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames, match", [
    ([np.zeros((4, 4, 3), np.float32)], r"frames\[0\]: expected uint8, got float32"),
    ([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)], r"frames\[1\]: expected uint8 HxWx3"),
    ([np.zeros((4, 4, 4), np.uint8)], r"frames\[0\]: expected uint8 HxWx3 \(BGR\), got shape \(4, 4, 4\)"),
    ([np.zeros((0, 4, 3), np.uint8)], r"frames\[0\]: expected a non-empty image"),
    ([np.zeros((8, 8, 3), np.uint8)[:, ::2]], r"frames\[0\]: expected packed rows"),
    ([], r"frames: expected at least one frame"),
    (None, r"frames: expected a list of frames or a batch tensor, got None"),
    ([None], r"frames\[0\]: expected an array, got None"),
    (np.zeros((4, 4, 3), np.uint8), r"frames: expected a list of frames or a \(B, H, W, 3\) batch tensor"),
])
def test_bad_frames_raise_named_errors(frames, match):
    with pytest.raises(KernelInputError, match=match):
        letterbox(frames, 64)


def test_bad_arguments_raise_named_errors():
    f = [np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(ValueError, match="imgsz: expected a positive multiple of stride 32"):
        letterbox(f, 100)
    with pytest.raises(KernelInputError, match="dtype: expected torch.float16 or torch.float32"):
        letterbox(f, 64, dtype=torch.int32)
    with pytest.raises(KernelInputError, match="backend: expected one of"):
        letterbox(f, 64, backend="opencl")
    with pytest.raises(KernelInputError, match="backend: 'cupy' cannot run on device cpu"):
        letterbox(f, 64, backend="cupy")
    with pytest.raises(KernelInputError, match="pixel_format: expected 'bgr' or 'nv12'"):
        letterbox(f, 64, pixel_format="rgba")
    with pytest.raises(KernelInputError, match=r"frames\[0\]: expected NV12"):
        letterbox([np.zeros((7, 8), np.uint8)], 64, pixel_format="nv12")
    with pytest.raises(KernelInputError, match=r"out: expected torch.float16 \(1, 3, 64, 64\)"):
        letterbox(f, 64, out=torch.empty(1, 3, 32, 32, dtype=torch.float16))
    with pytest.raises(KernelInputError, match="memory_format: expected torch.contiguous_format or torch.channels_last"):
        letterbox(f, 64, memory_format=torch.preserve_format)
    with pytest.raises(KernelInputError, match="out: expected a channels-last 16-byte-aligned tensor"):
        letterbox(f, 64, out=torch.empty(1, 3, 64, 64, dtype=torch.float16), memory_format=torch.channels_last)


def test_frame_batch_pinned_flags_are_per_frame_and_padded_with_the_last():
    from posefuse.kernels.letterbox import FrameBatch

    items = [torch.zeros((8, 8, 3), dtype=torch.uint8) for _ in range(3)]
    fb = FrameBatch.checked(items, [(8, 8)] * 3, "bgr", pinned=[True, False, True])
    assert fb.pinned == (True, False, True) and fb.padded(5).pinned == (True, False, True, True, True)
    assert FrameBatch.checked(items, [(8, 8)] * 3, "bgr").padded(4).pinned == ()
    with pytest.raises(KernelInputError, match=r"pinned: expected a flag per frame \(3\), got 2"):
        FrameBatch.checked(items, [(8, 8)] * 3, "bgr", pinned=(True, True))


# ------------------------------------------------------------------------------------------------
# GPU: CuPy, Numba and torch ops against the reference
# ------------------------------------------------------------------------------------------------
GPU_BACKENDS = ["cupy", "numba", "torch"]


def _gpu_case(frames, backend, dtype, imgsz=640, rect=True, pixel_format="bgr", memory_format=torch.contiguous_format):
    dev = torch.device("cuda")
    ref, rp = letterbox_reference(frames, imgsz, rect=rect, pixel_format=pixel_format)
    # poison: every element must be written
    out = torch.full(ref.shape, float("nan"), dtype=dtype, device=dev).contiguous(memory_format=memory_format)
    got, grp = letterbox([torch.from_numpy(f).to(dev) for f in frames], imgsz, rect=rect, dtype=dtype,
                         pixel_format=pixel_format, backend=backend, out=out, memory_format=memory_format)
    assert got.data_ptr() == out.data_ptr()
    helpers.assert_letterbox_close(got.float().cpu().numpy(), ref)  # the bound, for every backend
    if backend in ("cupy", "numba"):  # and the kernels are cv2's fixed-point resize bit for bit
        helpers.assert_letterbox_exact(got.cpu().numpy(), ref)
    np.testing.assert_array_equal(grp.cpu().numpy(), rp)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("shape", EDGE_SHAPES)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gpu_edge_shapes(backend, dtype, shape, memory_format):
    _gpu_case([_rand(shape, 3)], backend, dtype, memory_format=memory_format)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_mixed_sizes_one_batch(backend):
    frames = [_rand(s, i) for i, s in enumerate(EDGE_SHAPES)]
    _gpu_case(frames, backend, torch.float16)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_real_frames_rect_and_square(backend, clip_frames, clip1080_frames, gif_frames):
    for frames in (clip_frames[140:148], clip1080_frames[100:104], gif_frames[:4]):
        _gpu_case(frames, backend, torch.float16, rect=True)
        _gpu_case(frames, backend, torch.float32, rect=False)
        _gpu_case(frames, backend, torch.float16, rect=True, memory_format=torch.channels_last)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_nv12(backend, clip_frames, clip1080_frames):
    frames = [helpers.bgr_to_nv12(f) for f in (clip_frames[150], clip1080_frames[100])]
    _gpu_case(frames, backend, torch.float16, pixel_format="nv12")
    _gpu_case(frames, backend, torch.float32, pixel_format="nv12", memory_format=torch.channels_last)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_batch_tensor_zero_copy_and_non_default_stream(backend, clip_frames):
    dev = torch.device("cuda")
    batch = torch.from_numpy(np.stack(clip_frames[:16])).to(dev)
    ref, _ = letterbox_reference(clip_frames[:16], 640)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        got, _ = letterbox(batch, 640, backend=backend, dtype=torch.float32)
        cpu = got.cpu()  # ordered on s: right only if the kernel ran on s
    helpers.assert_letterbox_close(cpu.numpy(), ref)
    if backend in ("cupy", "numba"):
        helpers.assert_letterbox_exact(cpu.numpy(), ref)


@pytest.mark.gpu
def test_gpu_wrong_device_frame_is_named():
    a = torch.zeros(8, 8, 3, dtype=torch.uint8, device="cuda")
    b = torch.zeros(8, 8, 3, dtype=torch.uint8)
    with pytest.raises(KernelInputError, match=r"frames\[1\]: expected a tensor on cuda"):
        letterbox([a, b], 64, backend="cupy")


@pytest.mark.gpu
def test_gpu_accepts_cupy_and_numba_arrays_without_copy():
    import cupy

    x = cupy.asarray(_rand((32, 48), 5))
    got, _ = letterbox([x], 64, backend="cupy")
    ref, _ = letterbox_reference([cupy.asnumpy(x)], 64)
    helpers.assert_letterbox_close(got.float().cpu().numpy(), ref)
