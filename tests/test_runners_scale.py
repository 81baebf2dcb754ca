"""Runners that scale out: pipeline replicas on CUDA streams (``replicas``), a worker process per device
(``multigpu``), NVDEC sources; and the monitor's usage sampling and progress line. CPU tests run the same
machinery with CPU pipelines (and 'cpu' devices for the workers); GPU tests run it on the card."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from posefuse.fusion import PosePipeline
from posefuse.runners import PerformanceMonitor, RunConfig, open_source, synthesized_clip
from posefuse.runners.strategies import run_source
from posefuse.runners.sources import Frame, Source, SourceError
import helpers

CLIP = "one-by-one-person-detection.mp4"


@pytest.fixture(scope="module")
def cpu_pipe():
    return PosePipeline(device="cpu")


def _frames(n=6):
    return [np.ascontiguousarray(f[::2, ::2]) for f in synthesized_clip(n)]  # 216x384: quick on the CPU


def _serial(pipe, frames):
    mon, out = PerformanceMonitor(usage=False), {}
    run_source(Source.from_frames("s", ([Frame(i, f) for i, f in enumerate(frames)])), "serial", pipe, mon,
               helpers.on_frame(lambda s, i, img, r: out.__setitem__(i, r)))
    return out


class SlowFirst:
    """A pipeline whose first ``n`` submits are slow: later batches, on the other replica, finish first."""

    def __init__(self, pipe, n=1, delay=0.6):
        self.pipe, self.n, self.delay = pipe, n, delay

    def __getattr__(self, name):  # device, ring_wait_s, ...: the real pipeline's
        return getattr(self.pipe, name)

    def submit(self, frames, pixel_format="bgr", track=None):
        if self.n > 0:
            self.n -= 1
            time.sleep(self.delay)
        return self.pipe.submit(frames, pixel_format, track)


def test_streams_replicas_deliver_each_stream_in_order(cpu_pipe):
    from posefuse.runners.concurrent import run_concurrent

    frames = _frames(6)
    ref = _serial(cpu_pipe, frames)
    replicas = [SlowFirst(cpu_pipe), cpu_pipe.replica()]
    assert replicas[1].backbone is cpu_pipe.backbone and replicas[1]._slots is not cpu_pipe._slots
    mon, got = PerformanceMonitor(usage=False), []
    sources = [Source.from_frames("a", ([Frame(i, f) for i, f in enumerate(frames)])),
               Source.from_frames("b", ([Frame(i, f) for i, f in enumerate(frames[::-1])]))]
    failed = run_concurrent(sources, replicas, mon, helpers.on_frame(lambda s, i, img, r: got.append((s, i, r))), batch=2)
    mon.stop()
    assert failed == {} and mon.results == 12
    for name in "ab":
        order = [i for s, i, _ in got if s == name]
        assert order == list(range(6)), order  # in order although the first batch finished last
    for s, i, r in got:
        want = ref[i] if s == "a" else ref[5 - i]
        np.testing.assert_allclose(r.boxes, want.boxes, atol=1e-3)


def test_pipelined_flushes_a_partial_batch_when_a_source_waits_for_its_frames(cpu_pipe):
    """An NVDEC source asks for more frames only after the ones it gave were released: a fixed-batch runner
    must not wait for a full batch forever (partial batch after ``idle_ms``)."""
    from posefuse.runners.concurrent import run_concurrent

    frames = _frames(4)
    released = threading.Event()

    def leased():
        for i in range(2):
            yield Frame(i, frames[i], on_release=released.set if i == 1 else None)
        if not released.wait(20):  # the runner never released frame 1
            raise SourceError("source leased: frames never released (deadlock)")
        for i in range(2, 4):
            yield Frame(i, frames[i])

    mon, got = PerformanceMonitor(usage=False), []
    failed = run_concurrent([Source.from_frames("leased", leased())], cpu_pipe, mon, helpers.on_frame(lambda s, i, img, r: got.append(i)),
                            batch=8, idle_ms=100)
    mon.stop()
    assert failed == {} and got == [0, 1, 2, 3]


def test_frames_are_released_after_their_results_and_when_dropped(cpu_pipe):
    from posefuse.runners.concurrent import run_concurrent

    frames = _frames(4)
    released = []
    src = [Frame(0, frames[0], on_release=lambda: released.append(0)),
           Frame(1, np.zeros((5, 5), np.uint8), on_release=lambda: released.append(1)),  # bad: a drop
           Frame(2, frames[2], on_release=lambda: released.append(2))]
    mon = PerformanceMonitor(usage=False)
    run_concurrent([Source.from_frames("cam", (src))], cpu_pipe, mon, batch=2, max_wait_ms=1.0)
    mon.stop()
    assert sorted(released) == [0, 1, 2] and mon.results == 2 and sum(mon.drops.values()) == 1


@pytest.mark.slow
def test_multigpu_runner_shards_streams_over_worker_processes():
    """Two worker processes ('cpu' devices stand in for GPUs here): every stream complete, in order, with
    the same poses as one pipeline; the parent's accounting holds."""
    from posefuse.runners.assembly import StreamSpec
    from posefuse.runners.multigpu import run_multigpu, shard

    assert shard(list(range(5)), 2) == [[0, 2, 4], [1, 3]]
    spec = helpers.data_path(CLIP)
    streams = [StreamSpec(spec, f"cam{k}", max_frames=3) for k in range(3)]
    mon, got = PerformanceMonitor(usage=False), {}
    cfg = RunConfig(runner="multigpu", gpus=["cpu", "cpu"], batch=4, max_wait_ms=5.0, max_frames=3, imgsz=320)
    failed = run_multigpu(streams, ["cpu", "cpu"], cfg.validated(), mon,
                          helpers.on_frame(lambda s, i, img, r: got.setdefault(s, []).append((i, r))))
    mon.stop()
    assert failed == {} and mon.results == 9 and mon.frames_in == 9
    ref = PosePipeline(device="cpu", imgsz=320)(list(f.image for f in open_source(spec, 3).frames()))
    for k in range(3):
        assert [i for i, _ in got[f"cam{k}"]] == [0, 1, 2]
        for i, r in got[f"cam{k}"]:
            np.testing.assert_allclose(r.boxes, ref[i].boxes, atol=1e-3)


@pytest.mark.slow
def test_multigpu_worker_failure_is_raised_with_its_stage_and_no_process_left():
    import multiprocessing as mp

    from posefuse.runners.assembly import StreamSpec
    from posefuse.runners.concurrent import RunnerError
    from posefuse.runners.multigpu import run_multigpu

    mon = PerformanceMonitor(usage=False)
    t0 = time.perf_counter()
    with pytest.raises(RunnerError, match="worker stage failed") as e:
        cfg = RunConfig(runner="multigpu", gpus=["cpu"], max_frames=2, model="/nope.pt",  # not validated: the
                        compile="off")  # model fails in the worker (validated() would resolve compile, as here)
        run_multigpu([StreamSpec(helpers.data_path(CLIP), "cam0", max_frames=2)], ["cpu"], cfg, mon)
    assert "nope.pt" in str(e.value.__cause__) and time.perf_counter() - t0 < 120
    assert not mp.active_children()
    mon.stop()


def test_unsupported_codec_is_a_clear_error(tmp_path):
    """An AVI whose video stream claims a codec no decoder knows: an error naming the file."""
    import cv2

    path = tmp_path / "odd.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(3):
        w.write(np.full((48, 64, 3), 90, np.uint8))
    w.release()
    data = path.read_bytes()
    assert data.count(b"MJPG") >= 1
    path.write_bytes(data.replace(b"MJPG", b"QQ9Z").replace(b"mjpg", b"qq9z"))
    with pytest.raises(SourceError, match="odd.avi") as e:
        list(open_source(str(path)).frames())
    assert "could not open" in str(e.value) or "no frame" in str(e.value)


class NaNHead(torch.nn.Module):
    """Raw head maps (B, 116, A) with confident people, and NaN / inf in a third of the anchors."""

    strides = (8, 16, 32)

    def forward(self, x):
        b, _, h, w = x.shape
        a = sum((h // s) * (w // s) for s in self.strides)
        g = torch.Generator().manual_seed(0)
        y = torch.randn(b, 116, a, generator=g)
        y[:, 64] = 4.0  # person logit: every anchor a candidate
        y[:, :, ::3] = float("nan")
        y[:, 64:66, 1::6] = float("inf")
        y[:, 70, 2::6] = float("-inf")
        return y


def test_nan_and_inf_model_outputs_give_no_crash_and_no_nan_in_results():
    pipe = PosePipeline(model=NaNHead(), device="cpu")
    frames = _frames(4)[:3]
    mon, got = PerformanceMonitor(usage=False), []
    run_source(Source.from_frames("cam", ([Frame(i, f) for i, f in enumerate(frames)])), "batched", pipe, mon,
               helpers.on_frame(lambda s, i, img, r: got.append(r)), batch=3)
    mon.stop()
    assert mon.results == 3 and len(got) == 3
    for r in got:
        assert np.isfinite(r.boxes).all() and np.isfinite(r.scores).all() and np.isfinite(r.keypoints).all()
    assert sum(len(r) for r in got) > 0  # the finite anchors still give poses


def test_monitor_samples_usage_and_counts_finished_frames():
    counted = []
    mon = PerformanceMonitor(on_count=counted.append)
    mon.sampler.period = 0.02
    mon.start()
    for i in range(4):
        mon.arrived([("s", i)])
        time.sleep(0.03)
        mon.delivered([(("s", i), 1)])
    mon.arrived([("s", 4)])
    mon.dropped(("s", 4), "late")
    mon.gpu_spans({"backbone": 2.0, "d2h": 0.5})
    mon.gpu_spans({"backbone": 4.0, "d2h": 0.5})
    mon.stop()
    rep = mon.report()
    assert counted == [1, 1, 1, 1, 1] and rep["first_result_s"] > 0
    assert rep["gpu_ms_per_batch"] == {"backbone": 3.0, "d2h": 0.5}
    pytest.importorskip("psutil")
    assert rep["usage"]["samples"] > 0 and rep["usage"]["cpu_percent"]["mean"] is not None


def test_usage_sampler_folds_samples_into_constant_memory():
    from posefuse.runners.gpuinfo import UsageSampler

    u = UsageSampler(gpus=[])
    for cpu, rss, util in [(0.0, 100.0, [10, 30]), (50.0, 300.0, [50, 70]), (10.0, 200.0, [])]:
        u.fold({"cpu_percent": cpu, "rss_mib": rss, "gpu_util": util, "nvdec_util": [x // 10 for x in util]})
    s = u.summary()
    assert s["samples"] == 3 and s["cpu_percent"] == {"mean": 20.0, "max": 50.0}  # the 0% sample counts
    assert s["rss_mib"] == {"mean": 200.0, "max": 300.0}
    assert s["gpu_util_percent"] == {"mean": 40.0, "max": 60.0}  # mean over GPUs, then over samples
    assert s["nvdec_util_percent"] == {"mean": 4.0, "max": 6.0}
    assert s["gpu_mem_used_mib"] == {"mean": None, "max": None}
    assert not hasattr(u, "samples")  # nothing kept per sample


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_gpu_stage_times_and_usage_in_the_report():
    from posefuse.runners.concurrent import run_concurrent

    pipe = PosePipeline()
    frames = helpers.read_video(helpers.data_path(CLIP), 64)
    mon = PerformanceMonitor()
    run_concurrent([Source.from_frames("cam", ([Frame(i, f) for i, f in enumerate(frames)]))], pipe, mon, batch=16)
    mon.stop()
    rep = mon.report()
    assert rep["results"] == 64
    assert set(rep["gpu_ms_per_batch"]) == {"h2d", "queued", "letterbox..rescale", "d2h"}
    assert all(v >= 0 for v in rep["gpu_ms_per_batch"].values())
    eager = PosePipeline(cuda_graph=False)
    p = eager.submit(frames[:8])
    p.result()
    assert set(p.gpu_ms) == {"h2d", "queued", "letterbox", "backbone", "head_decode", "nms..rescale", "d2h"}


@pytest.mark.gpu
def test_streams_runner_on_gpu_equals_one_pipeline():
    """Replicas on their own CUDA streams, graphs captured from several threads: same poses as one pipeline."""
    from posefuse.runners.concurrent import run_concurrent

    frames = helpers.read_video(helpers.data_path(CLIP), 300)[150:246]
    pipe = PosePipeline()
    # like with like: the runner's batches hold 16 frames; fp16 results may move with the batch size
    ref = [r for i in range(0, 96, 16) for r in pipe(frames[i:i + 16])]
    replicas = [pipe] + [pipe.replica() for _ in range(2)]
    mon, got = PerformanceMonitor(), {}
    run_concurrent([Source.from_frames(f"s{k}", ([Frame(i, f) for i, f in enumerate(frames)])) for k in range(3)],
                   replicas, mon, helpers.on_frame(lambda s, i, img, r: got.setdefault(s, []).append((i, r))), batch=16)
    mon.stop()
    assert mon.results == 3 * 96
    for k in range(3):
        assert [i for i, _ in got[f"s{k}"]] == list(range(96))
        for i, r in got[f"s{k}"]:
            assert len(r) == len(ref[i])
            np.testing.assert_allclose(r.boxes, ref[i].boxes, atol=0.5)


def _need_nvdec():
    from posefuse.runners.gpuinfo import nvdec_available

    why = nvdec_available()
    if why:
        pytest.skip(why)


@pytest.mark.gpu
@pytest.mark.parametrize("per_process", [1, 0], ids=["a-process-per-stream", "one-process"])
def test_nvdec_source_frames_match_opencv_and_are_released(per_process):
    _need_nvdec()
    from posefuse.runners.sources.decodehost import DecodeHosts
    from posefuse.runners.sources.nvdec import open_nvdec

    procs = DecodeHosts(gpu_streams_per_process=per_process)
    src = open_nvdec(helpers.data_path(CLIP), max_frames=40, chunk=16, decode_hosts=procs, pool=16)
    assert src.count == 40 and src.fps
    ref = helpers.read_video(helpers.data_path(CLIP), 40)
    n = 0
    for f in src.frames():
        assert f.pixel_format == "nv12" and f.image.is_cuda and tuple(f.image.shape) == (648, 768)
        y = f.image[:432].float().cpu().numpy()
        # luma of the NV12 frame against OpenCV's BGR decode (BT.601 limited range, as FFmpeg converts)
        b, g, r = (ref[f.index][..., c].astype(np.float32) for c in range(3))
        y_ref = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
        assert np.abs(y - y_ref).mean() < 3.0
        f.release()  # released: its pool buffer serves a later frame (a pool of 16 for 40 frames)
        n += 1
    assert n == 40
    src.close()
    procs.close()


def _raw_nvdec_frames(path, n):
    """Frames 0..n-1 of ``path`` from a fresh SimpleDecoder, one per call (the plainest use of it)."""
    import PyNvVideoCodec as nvc

    from posefuse.runners.sources.nvdec import nv12_view

    s = torch.cuda.Stream()
    raw = nvc.SimpleDecoder(path, gpu_id=torch.cuda.current_device(), cuda_stream=s.cuda_stream,
                            use_device_memory=True, output_color_type=nvc.OutputColorType.NATIVE)
    out = []
    for _ in range(n):
        fr = raw.get_batch_frames(1)[0]
        s.synchronize()
        out.append(nv12_view(fr).clone())
        torch.cuda.synchronize()  # cloned before the decoder's next call
    return out


@pytest.mark.gpu
def test_nvdec_source_opened_primed_starts_at_frame_zero():
    """open_nvdec starts the decoder session at open (decodes frame 0, seeks back): its frames are still
    frames 0, 1, ... exactly as a decoder that was never primed gives them."""
    _need_nvdec()
    from posefuse.runners.sources.nvdec import open_nvdec

    path = helpers.data_path(CLIP)
    want = _raw_nvdec_frames(path, 6)
    assert not torch.equal(want[0], want[5]), "the clip's first frames must differ for this check"
    src = open_nvdec(path, max_frames=6, chunk=4, pool=8)
    got = []
    for f in src.frames():
        got.append(f.image.clone())
        f.release()
    assert len(got) == 6 and src.stats["video_decode.session_init"] > 0  # the stream's stats come at its end
    for i, (g, w) in enumerate(zip(got, want)):
        assert torch.equal(g, w), f"frame {i} differs from an unprimed decoder's frame {i}"
    src.close()


@pytest.mark.gpu
@pytest.mark.parametrize("clip, starts", [(CLIP, (0, 1, 150, 155, 190)), ("one-by-one-person-1080p.mp4", (80, 100))])
def test_nvdec_source_from_a_start_frame_gives_the_videos_frames_from_there(clip, starts):
    """open_nvdec(start=k) (an archive job's segment) gives frames k, k+1, ... with the video's indices, equal
    to a fresh decoder's frames read one by one from frame 0, whether k is a keyframe or between two (the
    1080p clip's GOPs are open and of 80-250 frames); a start past the end is a named error."""
    _need_nvdec()
    from posefuse.runners.sources import SourceError
    from posefuse.runners.sources.nvdec import open_nvdec

    path = helpers.data_path(clip)
    truth = _raw_nvdec_frames(path, max(starts) + 30)
    for start in starts:
        src = open_nvdec(path, max_frames=30, chunk=8, pool=16, start=start)
        got = {}
        for f in src.frames():
            got[f.index] = f.image.clone()
            f.release()
        src.close()
        assert sorted(got) == list(range(start, start + 30))
        for i, img in got.items():
            same = [j for j, t in enumerate(truth) if torch.equal(t, img)]
            assert i in same, f"frame {i} from start {start} equals the video's frames {same}, not frame {i}"
    with pytest.raises(SourceError, match="past its last frame"):
        open_nvdec(path, start=10**7)


def nvdec_dynamic_run(chunk: int, per_process: int = 0) -> dict:
    """8 NVDEC streams (200 frames of the clip each) through the dynamic runner; per stream: frame order and
    detections on frames 150..199; plus the same frames decoded by OpenCV through the same pipeline."""
    from posefuse.runners.concurrent import run_concurrent

    spec = helpers.data_path(CLIP)
    pipe = PosePipeline()
    cpu = pipe([f.image for f in open_source(spec, 200).frames()][150:200])
    from posefuse.runners.sources.decodehost import DecodeHosts

    procs = DecodeHosts(gpu_streams_per_process=per_process)
    sources = [open_source(spec, 200, decoder="nvdec", chunk=chunk, decode_hosts=procs) for _ in range(8)]
    for k, s in enumerate(sources):
        s.name = f"cam{k}"
    mon, got = PerformanceMonitor(), {}
    failed = run_concurrent(sources, pipe, mon, helpers.on_frame(lambda s, i, img, r: got.setdefault(s, []).append((i, r))),
                            batch=64, max_wait_ms=5.0)
    mon.stop()
    procs.close()
    return {"failed": failed, "results": mon.results, "cpu_detections": sum(len(r) for r in cpu),
            "streams": {k: {"order": [i for i, _ in v], "detections": sum(len(r) for _, r in v[150:200])}
                        for k, v in got.items()}}


def _check_nvdec_run(out):
    assert out["failed"] == {} and out["results"] == 8 * 200
    n_cpu = out["cpu_detections"]
    for k in range(8):
        st = out["streams"][f"cam{k}"]
        assert st["order"] == list(range(200))
        assert abs(st["detections"] - n_cpu) <= max(2, n_cpu // 10), (st["detections"], n_cpu)


@pytest.mark.gpu
@pytest.mark.parametrize("per_process", [1, 0], ids=["a-process-per-stream", "one-process"])
def test_nvdec_dynamic_runner_poses_match_cpu_decode(per_process):
    """8 NVDEC streams through the dynamic runner: every frame,
    in order; poses agree with CPU decoding (NV12 -> RGB in the letterbox kernel vs FFmpeg's BGR)."""
    _need_nvdec()
    _check_nvdec_run(nvdec_dynamic_run(32, per_process))


@pytest.mark.gpu
def test_a_gpu_run_decodes_into_pinned_rows_and_equals_plain_frames(clip_frames):
    """On a CUDA run OpenCV decodes into pinned rows that go to the device in one call: the same poses
    as the frames given as plain arrays, and each result's image is its frame while on_result runs."""
    from posefuse import RunConfig, run

    n = 40
    pipe = PosePipeline(device="cuda")
    want = pipe([clip_frames[i] for i in range(n)])
    got, images_ok = {}, []

    def on(r):
        got[r.index] = r.poses
        images_ok.append(np.array_equal(r.image, clip_frames[r.index]))

    rep = run(RunConfig(sources=[helpers.data_path(CLIP)], decoder="cpu", runner="dynamic", batch=16,
                        max_frames=n, paced=True, fps=60.0, progress=False), on_result=on)  # paced: rows free
    assert rep.overall["results"] == n and all(images_ok) and len(images_ok) == n
    assert [st["source"] for st in rep.streams.values()] == [{"host_rows.new_arrays": 0}]  # a decode host's
    for i in range(n):
        np.testing.assert_allclose(got[i].boxes, want[i].boxes, atol=0.5)
        np.testing.assert_allclose(got[i].keypoints, want[i].keypoints, atol=0.5)


@pytest.mark.gpu
def test_a_decode_hosts_opencv_rows_are_pinned_here():
    """A CUDA run's decode host writes frames into shared rows that this process registers as
    pinned: the copy engine reads them where the decoder wrote them; once the stream has ended and its
    rows are back, they are unregistered."""
    from posefuse.runners.sources.decodehost import DecodeHosts

    torch.zeros(1, device="cuda")
    hp = DecodeHosts(pin=True, processes=1)
    try:
        src = hp.open("cam", spec=helpers.data_path(CLIP), max_frames=4)
        frames = list(src.frames())
        assert [f.pinned for f in frames] == [True] * 4
        assert all(torch.from_numpy(f.image).is_pinned() for f in frames)
        for f in frames:
            f.release()
    finally:
        hp.close()
    # the stream ended with every row back: its rows were unregistered (on the hub's sending thread)
    assert not any(torch.from_numpy(f.image).is_pinned() for f in frames)


@pytest.mark.gpu
def test_an_ended_streams_rows_are_unregistered_while_the_others_run():
    """The rows of a stream that ended are unregistered while the run goes on (one per RETIRE_GAP_S on the
    sending thread), not only at its close: a stream still open keeps its own."""
    from posefuse.runners.sources.decodehost import RETIRE_GAP_S, DecodeHosts

    torch.zeros(1, device="cuda")
    hp = DecodeHosts(pin=True, processes=1)
    try:
        ended = hp.open("ended", spec=helpers.data_path(CLIP), max_frames=2)
        running = hp.open("running", spec=helpers.data_path(CLIP), max_frames=4)
        frames = list(ended.frames())
        for f in frames:
            f.release()
        deadline = time.perf_counter() + 20 * RETIRE_GAP_S + 2.0
        while any(torch.from_numpy(f.image).is_pinned() for f in frames) and time.perf_counter() < deadline:
            time.sleep(RETIRE_GAP_S / 4)
        assert not any(torch.from_numpy(f.image).is_pinned() for f in frames)
        later = list(running.frames())
        assert len(later) == 4 and all(torch.from_numpy(f.image).is_pinned() for f in later)
        for f in later:
            f.release()
    finally:
        hp.close()


@pytest.mark.gpu
@pytest.mark.parametrize("mix", ["all-pinned", "mixed"])
def test_pinned_frames_go_to_the_device_and_match_pageable_ones(clip_frames, mix):
    """Frames in pinned rows go to the device in one copy; in a mixed batch only the others are staged
    (13 frames: the graph's batch of 16 is padded with the last frame): the same poses as pageable frames."""
    from posefuse.kernels.letterbox import FrameBatch

    pipe = PosePipeline(device="cuda")
    frames = [clip_frames[i] for i in range(0, 52, 4)]
    flags = tuple(mix == "all-pinned" or k % 3 != 1 for k in range(len(frames)))
    items = [torch.from_numpy(f).pin_memory() if p else torch.from_numpy(f.copy()) for f, p in zip(frames, flags)]
    assert [t.is_pinned() for t in items] == list(flags)
    a = pipe(frames)
    for _ in range(3):  # the third reuses the first's ring slot: its staging rows as that batch left them
        b = pipe(FrameBatch.checked(items, [f.shape[:2] for f in frames], "bgr", pinned=flags))
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.boxes, y.boxes)
            np.testing.assert_array_equal(x.keypoints, y.keypoints)


@pytest.mark.gpu
def test_nvdec_errors_name_the_source(tmp_path):
    _need_nvdec()
    bad = tmp_path / "junk.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(SourceError, match="junk.mp4"):
        list(open_source(str(bad), decoder="nvdec").frames())
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"), decoder="nvdec")


@pytest.mark.gpu
def test_multigpu_runner_on_the_gpus():
    from posefuse.runners.assembly import StreamSpec
    from posefuse.runners.multigpu import run_multigpu

    n = torch.cuda.device_count()
    spec = helpers.data_path(CLIP)
    mon, got = PerformanceMonitor(), {}
    cfg = RunConfig(runner="multigpu", batch=32, max_frames=64).validated()
    failed = run_multigpu([StreamSpec(spec, f"cam{k}", max_frames=64) for k in range(2 * n)], cfg.gpus, cfg, mon,
                          helpers.on_frame(lambda s, i, img, r: got.setdefault(s, []).append(i)))
    mon.stop()
    assert failed == {} and mon.results == 2 * n * 64
    assert all(v == list(range(64)) for v in got.values())


def test_bad_input_catalogue_in_one_stream_good_frames_go_on(cpu_pipe):
    """The reliability issue's bad frames in one stream of the dynamic runner: grayscale, BGRA, wrong ndim,
    zero-size, non-contiguous, wrong dtype, None, a tensor on the wrong device ('meta' stands in for another
    GPU here), next to a huge 7680x4320 frame and a 1x1 frame, which are valid and get results."""
    from posefuse.runners.concurrent import run_concurrent

    good = _frames(2)[0]
    huge = np.full((4320, 7680, 3), 90, np.uint8)
    huge[1000:3000, 3000:4200] = good[:1, :1]  # any content: it must just run
    bad = {1: np.zeros((432, 768), np.uint8), 2: np.zeros((8, 8, 4), np.uint8), 3: np.zeros(10, np.uint8),
           4: np.zeros((0, 0, 3), np.uint8), 5: np.zeros((64, 96, 3), np.uint8)[:, ::2], 6: good.astype(np.int16),
           7: None, 8: torch.empty((64, 96, 3), dtype=torch.uint8, device="meta")}
    frames = {0: good, 9: huge, 10: np.full((1, 1, 3), 200, np.uint8), 11: good, **bad}
    mon, got = PerformanceMonitor(usage=False), []
    failed = run_concurrent([Source.from_frames("cam", ([Frame(i, frames[i]) for i in range(12)]))], cpu_pipe, mon,
                            helpers.on_frame(lambda s, i, img, r: got.append(i)), batch=4, max_wait_ms=5.0)
    mon.stop()
    assert failed == {} and got == [0, 9, 10, 11]
    assert mon.frames_in == 12 and sum(mon.drops.values()) == len(bad)
    for i in bad:  # each drop names the stream and the frame index
        assert any(reason.startswith(f"cam[{i}]") for reason in mon.drops), (i, dict(mon.drops))


BFRAMES = "bframes-768x432.mp4"  # the sample re-encoded with two B-frames between references (crowd_clip.bframes)


def _bframes_clip(tmp_path_factory) -> str:
    """The B-frame copy of the sample from the data folder, else made here with ffmpeg (skipped without it)."""
    import shutil

    p = helpers.data_dir() / BFRAMES
    if p.exists():
        return str(p)
    if shutil.which("ffmpeg") is None:
        pytest.skip(f"{BFRAMES} is not in the data folder and ffmpeg is not here to make it")
    return str(helpers.load_experiment("crowd_clip").bframes(tmp_path_factory.mktemp("bframes") / BFRAMES))


@pytest.mark.gpu
@pytest.mark.parametrize("clip", [CLIP, "one-by-one-person-1080p.mp4", BFRAMES])
def test_every_nvdec_frame_of_8_streams_through_a_decode_host_equals_a_fresh_decoder(clip, tmp_path_factory):
    """The production NVDEC path (8 looping streams in one GPU decode host, chunks of 16, frames from the
    host's rows by CUDA IPC), each stream from its own mid-clip start and the last across the loop's wrap:
    every frame of the clip, and each equal to a fresh decoder's frame read one per call from frame 0."""
    _need_nvdec()
    import cv2

    from posefuse.runners.sources.decodehost import DecodeHosts
    from posefuse.runners.sources.nvdec import open_nvdec

    path = _bframes_clip(tmp_path_factory) if clip == BFRAMES else helpers.data_path(clip)
    n = int(cv2.VideoCapture(path).get(cv2.CAP_PROP_FRAME_COUNT))
    truth = _raw_nvdec_frames(path, n)
    assert len(truth) == n
    hosts = DecodeHosts(gpu_streams_per_process=0)
    per = n // 8 + 40  # each stream overlaps the next one's start; the last wraps past the clip's end
    try:
        srcs = [open_nvdec(path, chunk=16, decode_hosts=hosts, start=k * n // 8 + 7, loop=True) for k in range(8)]
        assert hosts.alive("cuda:0") == 1
        seen, wrong = set(), []
        its = [iter(s.frames()) for s in srcs]
        for _ in range(per):  # the streams read side by side, as a run reads them
            for k, it in enumerate(its):
                f = next(it)
                v = f.index % n
                seen.add(v)
                if not torch.equal(f.image, truth[v]):
                    wrong.append((k, f.index))
                f.release()
        for s in srcs:
            s.close()
    finally:
        hosts.close()
    assert not wrong, f"{len(wrong)} frames differ from the video's: {wrong[:10]}"
    assert seen == set(range(n))


@pytest.mark.gpu
def test_a_paced_nvdec_run_gives_every_frame_in_order_at_its_rate():
    """Pacing lives in the decode hosts for NVDEC too: 8 paced NVDEC streams (two GPU hosts of 4 by default)
    give every frame in order, released at their rate rather than as fast as NVDEC decodes."""
    _need_nvdec()
    from posefuse import RunConfig, run

    got: dict = {}

    def on(r):
        got.setdefault(r.stream, []).append(r.index)

    rep = run(RunConfig(sources=[helpers.data_path(CLIP)], repeat=8, decoder="nvdec", runner="dynamic", paced=True,
                        fps=30.0, max_frames=45, progress=False), on_result=on)
    assert rep.failed == {} and rep.overall["results"] == 8 * 45
    assert all(v == sorted(v) and len(v) == 45 for v in got.values()) and len(got) == 8
    assert all(s["placement"]["reader"] == "decode host" and s["placement"]["decoder"] == "nvdec"
               for s in rep.streams.values())
    assert rep.overall["wall_s"] >= 44 / 30  # released at 30 fr/s, not as fast as NVDEC decodes
