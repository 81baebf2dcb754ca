"""Kernel benchmarks (``pytest tests/benchmarks --benchmark-only``), each with its anchors in the same run.

Letterbox: 768x432 and 1920x1080 real frames -> 640x640 fp16, batch 1/64/256: CuPy, Numba, torch ops on the
GPU, and Ultralytics' own predictor preprocessing (cv2 LetterBox on the CPU, then H2D and conversion).
Decode + NMS + rescale on real yolo11n-pose fp16 head outputs of the sample clip, batch 1/64/256: CuPy,
Numba, the torch/torchvision ``batched_nms`` pipeline, Ultralytics' ``non_max_suppression`` + scaling.

Each timed call ends with a device synchronize (pytest-benchmark times with the host clock). Figures go to
``benchmark.extra_info``; experiments/bench_report.py turns the JSON into results/kernels.{json,md}.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import helpers

pytestmark = pytest.mark.gpu

OUT_HW = (640, 640)
BATCHES = (1, 64, 256)
ROUNDS = {1: 30, 64: 10, 256: 5}


def _timed(benchmark, fn, batch, calls, rounds, extra):
    """Run ``fn`` ``calls`` times per round, synchronize, report per-call and per-frame figures."""
    sec = helpers.per_call(benchmark, fn, calls, rounds, warmup_rounds=2)
    benchmark.extra_info.update(extra, batch=batch, ms_per_batch=sec * 1e3, frames_per_s=batch / sec,
                                us_per_frame=sec / batch * 1e6)
    return sec


def _graph_us(fn, batch):
    """Device time per frame of ``fn`` captured in a CUDA graph and replayed (no Python, no launch gaps);
    None (with the reason) where the implementation cannot be captured."""
    cuda_median_ms = helpers.harness.cuda_median_ms

    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn(), fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return cuda_median_ms(g.replay, iters=30) * 1e3 / batch, None
    except Exception as e:  # reported, not hidden: the row says why there is no graph figure
        torch.cuda.synchronize()
        return None, f"{type(e).__name__}: {str(e)[:200]}"


# ------------------------------------------------------------------------------------------------
# Letterbox
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def source_frames(clip_frames, clip1080_frames):
    return {"768x432": clip_frames[:256], "1920x1080": [clip1080_frames[i % len(clip1080_frames)] for i in range(256)]}


@pytest.fixture(scope="module")
def predictor_cuda():
    """Ultralytics' predictor on the GPU in fp16 (as predict(quantize=16) sets it up), a model of its own."""
    from posefuse.fusion.backbone import load_ultralytics

    y = load_ultralytics()
    y.predict(helpers.asset_images()[0], verbose=False, device=0, quantize=16)
    return y.predictor


@pytest.mark.parametrize("src", ["768x432", "1920x1080"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", ["cupy", "numba", "torch", "ultralytics_cv2"])
def test_letterbox(benchmark, impl, batch, src, source_frames, copy_bandwidth_gbs, env_info, predictor_cuda):
    from posefuse.kernels.letterbox import letterbox

    frames = source_frames[src][:batch] if batch > 1 else source_frames[src][:16]
    h, w = frames[0].shape[:2]
    bytes_per_frame = h * w * 3 + 3 * OUT_HW[0] * OUT_HW[1] * 2
    extra = dict(kernel="letterbox", impl=impl, src=src, out="640x640 fp16", env=env_info,
                 copy_bandwidth_gbs=copy_bandwidth_gbs, bytes_per_frame=bytes_per_frame,
                 floor_frames_per_s=copy_bandwidth_gbs * 1e9 / bytes_per_frame)
    benchmark.group = f"letterbox {src} bs{batch}"
    if impl == "ultralytics_cv2":
        calls = 1
        lst = list(frames[:batch])
        fn = lambda: predictor_cuda.preprocess(lst)  # noqa: E731
        rounds = 3 if batch > 1 else 20
    else:
        dev = torch.device("cuda")
        if batch == 1:  # rotate through 16 single frames: inputs this small would otherwise sit in L2
            sets = [torch.from_numpy(f).to(dev).unsqueeze(0) for f in frames]
        else:
            sets = [torch.from_numpy(np.stack(frames)).to(dev)]
        outs = [torch.empty((batch, 3, *OUT_HW), dtype=torch.float16, device=dev) for _ in range(2)]
        state = {"i": 0}

        def fn():
            i = state["i"] = state["i"] + 1
            letterbox(sets[i % len(sets)], OUT_HW, rect=False, backend=impl, out=outs[i % 2])

        calls = 50 if batch == 1 else 5
        rounds = ROUNDS[batch]
    sec = _timed(benchmark, fn, batch, calls, rounds, extra)
    gbs = bytes_per_frame * batch / sec / 1e9
    benchmark.extra_info.update(gb_per_s=gbs, fraction_of_copy_bw=gbs / copy_bandwidth_gbs)
    if impl in ("cupy", "numba"):
        us, err = _graph_us(fn, batch)
        benchmark.extra_info.update(graph_us_per_frame=us, graph_error=err)
        if us:
            benchmark.extra_info["graph_fraction_of_copy_bw"] = bytes_per_frame / (us * 1e-6) / 1e9 / copy_bandwidth_gbs


# ------------------------------------------------------------------------------------------------
# Decode + NMS + rescale on real head outputs
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def head_outputs(clip_frames):
    """yolo11n-pose fp16 raw head maps of 256 frames of the 768x432 clip at the rect shape 384x640."""
    from posefuse.fusion.backbone import load_backbone
    from posefuse.kernels.letterbox import letterbox

    dev = torch.device("cuda")
    bb = load_backbone(device=dev, half=True)
    frames = torch.from_numpy(np.stack(clip_frames[:256])).to(dev)
    raws, dense = [], []
    with torch.no_grad():
        for i in range(0, 256, 64):
            x, rp = letterbox(frames[i : i + 64], 640, rect=True, backend="torch")
            raws.append(bb(x))
    raw = torch.cat(raws)
    lv = bb.levels(*x.shape[2:])
    from posefuse.kernels.decode.reference import decode_dense_reference

    with torch.no_grad():
        for i in range(0, 256, 64):  # what the head's own inference decode returns (Ultralytics' NMS input)
            dense.append(decode_dense_reference(raw[i : i + 64], lv).half())
    rp = rp[:1].expand(256, 4).contiguous()
    hw = torch.tensor([[432, 768]] * 256, dtype=torch.int32, device=dev)
    return {"raw": raw, "dense": torch.cat(dense), "levels": lv, "ratio_pad": rp, "orig_hw": hw,
            "in_shape": tuple(x.shape[2:])}


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", ["cupy", "numba", "torchvision", "ultralytics"])
def test_decode_nms(benchmark, impl, batch, head_outputs, env_info):
    from posefuse.kernels.decode import Candidates, decode
    from posefuse.kernels.nms import Detections, nms_rescale

    ho = head_outputs
    nsets = 16 if batch == 1 else 256 // batch
    sl = [slice(i * batch, (i + 1) * batch) for i in range(nsets)]
    state = {"i": 0}
    benchmark.group = f"decode+nms bs{batch}"
    extra = dict(kernel="decode_nms_rescale", impl=impl, input="yolo11n-pose fp16 head, 768x432 clip, 384x640",
                 env=env_info)
    if impl in ("cupy", "numba", "torchvision"):
        back = {"torchvision": "torch"}.get(impl, impl)
        cap = min(ho["raw"].shape[2], 30000)
        cands = [Candidates.empty(batch, cap, "cuda") for _ in range(nsets)]
        dets = [Detections.empty(batch, 300, "cuda") for _ in range(nsets)]

        def fn():
            i = state["i"] = (state["i"] + 1) % nsets
            c = decode(ho["raw"][sl[i]], ho["levels"], 0.25, backend=back, out=cands[i])
            nms_rescale(c, ho["ratio_pad"][sl[i]], ho["orig_hw"][sl[i]], 0.7, 300, backend=back, out=dets[i])
    else:
        from ultralytics.utils import nms as ul_nms
        from ultralytics.utils import ops

        shape = ho["in_shape"]

        def fn():
            i = state["i"] = (state["i"] + 1) % nsets
            preds = ul_nms.non_max_suppression(ho["dense"][sl[i]], 0.25, 0.7, max_det=300, nc=1)
            for p in preds:
                p[:, :4] = ops.scale_boxes(shape, p[:, :4], (432, 768))
                k = p[:, 6:].view(p.shape[0], 17, 3)
                ops.scale_coords(shape, k, (432, 768))

    calls = 20 if batch == 1 else 3
    _timed(benchmark, fn, batch, calls, ROUNDS[batch], extra)
    if impl in ("cupy", "numba"):
        us, err = _graph_us(fn, batch)
        benchmark.extra_info.update(graph_us_per_frame=us, graph_error=err)
