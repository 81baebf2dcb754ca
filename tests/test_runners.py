"""Runners (CPU): sources and their errors, strategies agree, accounting, the command line end to end."""
from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest
import torch

from posefuse.fusion import PosePipeline
from posefuse.fusion.accuracy import AccuracyTally
from posefuse.runners import PerformanceMonitor, SourceError, open_source, synthesized_clip
from posefuse.runners.strategies import run_source
from posefuse.runners.cli import main
import helpers


@pytest.fixture(scope="module")
def cpu_pipe():
    return PosePipeline(device="cpu")


def collect(src, runner, engine, **kw):
    mon, out = PerformanceMonitor(), {}
    run_source(src, runner, engine, mon, helpers.on_frame(lambda s, i, img, r: out.__setitem__(i, r)), **kw)
    mon.stop()
    return out, mon.report()


def test_synthesized_clip_is_deterministic_and_has_people(cpu_pipe):
    a, b = synthesized_clip(8), synthesized_clip(8)
    assert len(a) == 8 and a[0].shape == (432, 768, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])  # the camera moves
    assert all(len(r) >= 1 for r in cpu_pipe([a[0], a[-1]]))


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _mkdir(path) -> str:
    path.mkdir()
    return str(path)


@pytest.mark.parametrize("make, match", [
    (lambda d: str(d / "missing.mp4"), "no such file or folder"),
    (lambda d: _write(d / "empty.mp4", b""), "the file is empty"),
    (lambda d: _write(d / "junk.mp4", b"\x00garbage" * 100), "could not open|no frame"),
    (lambda d: _mkdir(d / "nothing"), "folder holds no images"),
])
def test_source_errors_name_the_source(tmp_path, make, match):
    spec = make(tmp_path)
    with pytest.raises(SourceError, match=match) as e:
        src = open_source(spec)
        list(src.frames())
    assert spec in str(e.value)


def test_video_folder_and_image_sources(tmp_path, clip_frames):
    src = open_source(helpers.data_path("one-by-one-person-detection.mp4"), max_frames=5)
    frames = list(src.frames())
    assert [f.index for f in frames] == list(range(5)) and src.fps and src.count == 5
    for i, f in enumerate(clip_frames[150:153]):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), f)
    got = list(open_source(str(tmp_path)).frames())
    assert len(got) == 3 and np.array_equal(got[1].image, clip_frames[151])
    assert len(list(open_source(str(tmp_path / "000.png")).frames())) == 1
    part = list(open_source(helpers.data_path("one-by-one-person-detection.mp4"), max_frames=3, start=151).frames())
    assert [f.index for f in part] == [151, 152, 153] and np.array_equal(part[0].image, clip_frames[151])
    with pytest.raises(SourceError, match="a start frame is for video files"):
        open_source(str(tmp_path), start=2)



def test_a_looping_video_begun_mid_way_wraps_round_to_its_start_without_a_gap(clip_frames):
    """looping(start=s): the first pass runs from frame s to the video's end, the next from its first
    frame, the indices counting on (no gap for a paced stream to wait out), the new pass marked restart."""
    from posefuse.runners.sources import looping, video_frames

    clip = helpers.data_path("one-by-one-person-detection.mp4")
    n = video_frames(clip)
    src = looping(lambda first: open_source(clip, start=first), "c", loop=True, duration_s=None, start=n - 2)
    it = src.frames()
    got = [next(it) for _ in range(5)]
    src.close()
    assert n == 1394 and [f.index for f in got] == [n - 2, n - 1, n, n + 1, n + 2]
    assert [f.restart for f in got] == [False, False, True, False, False]
    assert all(np.array_equal(f.image, clip_frames[k]) for f, k in zip(got[2:], range(3)))


def test_the_copies_of_a_looping_video_start_spread_over_it():
    """A run's r copies of a looping video start at frames k * n // r; other streams, and every stream of a
    run that does not loop or is cut by max_frames, at frame 0."""
    import dataclasses

    from posefuse import RunConfig
    from posefuse.runners.assembly import stream_specs

    def copy_starts(c):
        return {s.name: s.start for s in stream_specs(c)}

    clip = helpers.data_path("one-by-one-person-detection.mp4")
    cfg = RunConfig(sources=[clip, None], repeat=4, loop=True, duration_s=5.0)
    starts = copy_starts(cfg)
    assert [starts[f"{clip}#{k}"] for k in range(4)] == [0, 348, 697, 1045]
    assert [starts[f"default#{k}"] for k in range(4)] == [0] * 4
    for other in (dataclasses.replace(cfg, loop=False), dataclasses.replace(cfg, max_frames=100),
                  dataclasses.replace(cfg, repeat=1)):
        assert set(copy_starts(other).values()) == {0}


def test_a_source_closed_from_another_thread_while_it_reads_ends_without_a_crash():
    """close() from the run's thread while the reader's thread is inside OpenCV's read (a remove, a stop):
    closing the generator there crashed the process (SIGSEGV in CPython 3.11, one run in ~10 of
    tests/test_network.py); the source ends at its next parcel and its reader closes it."""
    import threading

    clip = helpers.data_path("one-by-one-person-detection.mp4")
    for _ in range(40):
        src = open_source(clip, max_frames=400)
        it = iter(src)
        next(it)
        got = []
        reader = threading.Thread(target=lambda: got.extend(it))
        reader.start()
        for _ in range(50):
            src.close()
            time.sleep(0.0001)
        reader.join(10)
        assert not reader.is_alive() and len(got) < 399
        src.close()  # the reader's own close (as concurrent._read's): the generator and its capture end
        assert src.parcels.gi_frame is None

def test_serial_batched_and_ultralytics_agree(cpu_pipe, yolo):
    spec = helpers.data_path("one-by-one-person-detection.mp4")
    ser, rep_s = collect(open_source(spec, max_frames=5), "serial", cpu_pipe)
    bat, rep_b = collect(open_source(spec, max_frames=5), "batched", cpu_pipe, batch=2)  # 2 + 2 + a partial 1
    ul, rep_u = collect(open_source(spec, max_frames=5), "ultralytics", yolo,
                        predict_kw=dict(conf=0.25, iou=0.7, device="cpu"))
    assert rep_s["frames_in"] == rep_s["results"] == rep_b["results"] == rep_u["results"] == 5
    for i in range(5):
        np.testing.assert_allclose(ser[i].boxes, bat[i].boxes, atol=1e-3)
    tally = AccuracyTally()
    for i in range(5):
        tally.add(bat[i], ul[i])
    assert tally.summary()["matched_fraction"] == 1.0 and tally.summary()["extra_fraction"] == 0.0


def test_bad_frames_become_recorded_drops(cpu_pipe):
    from posefuse.runners.sources import Frame, Source

    frames = [Frame(0, synthesized_clip(1)[0]), Frame(1, np.zeros((10, 10), np.uint8)), Frame(2, synthesized_clip(1)[0])]
    out, rep = collect(Source.from_frames("mixed", (frames)), "serial", cpu_pipe)
    assert sorted(out) == [0, 2] and rep["results"] == 2 and sum(rep["drops"].values()) == 1
    assert next(iter(rep["drops"])) == "mixed[1]: expected uint8 HxWx3 (BGR), got shape (10, 10)"


def test_monitor_accounting_catches_a_lost_frame():
    m = PerformanceMonitor()
    m.arrived([("s", 0)])
    m.arrived([("s", 1)])
    m.delivered([(("s", 0), 1)])
    with pytest.raises(AssertionError, match="1 frames unaccounted for"):
        m.stop()


def test_monitor_clock_ends_at_end_clock_not_at_stop():
    """end_clock() (the multigpu parent: last worker's end message) fixes the run's wall time; a later stop()
    (after the workers are joined) keeps it; start() begins a new clock."""
    m = PerformanceMonitor(usage=False)
    m.start()
    m.arrived([("s", 0)])
    m.delivered([(("s", 0), 1)])
    time.sleep(0.02)
    m.end_clock()
    wall = m.report()["wall_s"]
    time.sleep(0.1)
    m.stop()
    assert m.report()["wall_s"] == wall and 0.02 <= wall < 0.1
    m.start()
    assert m.t_end is None


def test_monitor_steady_rate_counts_the_results_between_every_stream_in_and_the_first_end():
    """streams_in() and the first stream_ended() bound the steady window: the results delivered inside it
    over its seconds; results before and after it, and later ends, do not count."""
    m = PerformanceMonitor(usage=False)
    m.start()
    keys = [("s", i) for i in range(20)]
    m.arrived(keys)
    m.delivered([(k, 1) for k in keys[:5]])
    m.streams_in()
    time.sleep(0.05)
    m.delivered([(k, 1) for k in keys[5:12]])
    m.stream_ended("s")
    m.delivered([(k, 1) for k in keys[12:]])
    m.stream_ended("t")
    time.sleep(0.05)
    m.stop()
    rep = m.report()
    assert 0.05 <= rep["steady_s"] < rep["wall_s"] - 0.05 and rep["streams_in_s"] >= 0
    assert rep["steady_frames_per_s"] * rep["steady_s"] == pytest.approx(7)
    ended_first = PerformanceMonitor(usage=False)  # a stream ended before every stream was in
    ended_first.start()
    ended_first.stream_ended("s")
    ended_first.streams_in()
    assert ended_first.report()["steady_frames_per_s"] is None
    assert "steady_frames_per_s" not in PerformanceMonitor(usage=False).report()  # a run that never says


def test_cli_default_clip_end_to_end(tmp_path):
    rc = main(["run", "--device", "cpu", "--max-frames", "4", "--batch", "3", "--out", str(tmp_path / "r.json"),
               "--save-json", str(tmp_path / "p.jsonl"), "--save-video", str(tmp_path / "a.mp4")])
    assert rc == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["overall"]["frames_in"] == rep["overall"]["results"] == 4 and rep["overall"]["detections"] >= 4
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 2, 3]
    assert len(lines[0]["poses"][0]["keypoints"]) == 17
    cap = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 4


def test_cli_failing_source_is_reported_and_others_go_on(tmp_path):
    good = helpers.data_path("one-by-one-person-detection.mp4")
    rc = main(["run", "--device", "cpu", "--source", str(tmp_path / "missing.mp4"), good, "--max-frames", "2",
               "--runner", "serial", "--out", str(tmp_path / "r.json")])
    assert rc == 1
    rep = json.loads((tmp_path / "r.json").read_text())
    assert "no such file" in rep["failed_sources"][str(tmp_path / "missing.mp4")]
    assert rep["streams"][good]["results"] == 2


def test_cli_bad_arguments():
    with pytest.raises(SystemExit) as e:
        main(["run", "--runner", "warp-speed"])
    assert e.value.code == 2
    assert main(["run", "--batch", "0"]) == 2
    # NVDEC frames are NV12 on the GPU and go back to their pool: no annotated video, no predict on them
    assert main(["run", "--decoder", "nvdec", "--save-video", "out.mp4"]) == 2
    assert main(["run", "--decoder", "nvdec", "--runner", "ultralytics"]) == 2


# ------------------------------------------------------------------------------------------------
# Concurrent runners: many sources at once, bounded queues, faults
# ------------------------------------------------------------------------------------------------
def _small_sources(n_each=4):
    from posefuse.runners.sources import Frame, Source

    clip = [np.ascontiguousarray(f[::2, ::2]) for f in synthesized_clip(8)]  # 216x384: quick on the CPU
    video = [np.ascontiguousarray(f[::2, ::2]) for f in helpers.read_video(helpers.data_path("one-by-one-person-detection.mp4"), 200)[150:150 + n_each]]
    return (lambda: [Source.from_frames("clip", ([Frame(i, f) for i, f in enumerate(clip[:n_each])]), 50.0),
                     Source.from_frames("video", ([Frame(i, f) for i, f in enumerate(video)]), 50.0)])


@pytest.mark.parametrize("max_wait_ms", [None, 5.0])  # pipelined, dynamic
def test_concurrent_runners_keep_stream_order_and_equal_serial(cpu_pipe, max_wait_ms):
    from posefuse.runners.concurrent import run_concurrent

    make = _small_sources()
    mon, got = PerformanceMonitor(), {}
    failed = run_concurrent(make(), cpu_pipe, mon, helpers.on_frame(lambda s, i, img, r: got.setdefault(s, []).append((i, r))),
                            batch=3, max_wait_ms=max_wait_ms)
    mon.stop()
    assert failed == {} and mon.report()["results"] == 8
    for src in make():
        order = [i for i, _ in got[src.name]]
        assert order == sorted(order) == list(range(4))
        ref, _ = collect(src, "serial", cpu_pipe)
        for i, r in got[src.name]:
            np.testing.assert_allclose(r.boxes, ref[i].boxes, atol=1e-3)


@pytest.mark.parametrize("max_wait_ms", [None, 5.0])  # pipelined, dynamic
def test_sources_that_arrive_while_the_run_goes_on_join_it_and_it_ends_after_the_last(cpu_pipe, max_wait_ms):
    """A job's streams join its run as they open: one there at the start, one after the first has ended,
    one that could not be opened (None): every frame of the two is delivered, in order, and the run waits
    for the last to come."""
    from posefuse.runners.concurrent import Arrivals, run_concurrent

    first, later = _small_sources()()
    arrivals = Arrivals(3)
    arrivals.put(first)
    mon, got = PerformanceMonitor(), {}

    def on_result(s, i, img, r):
        got.setdefault(s, []).append(i)
        if s == first.name and len(got[s]) == 4:  # the first stream is done: the others come now
            arrivals.put(None)
            threading.Timer(0.3, arrivals.put, (later,)).start()

    failed = run_concurrent([], cpu_pipe, mon, helpers.on_frame(on_result), batch=3, max_wait_ms=max_wait_ms,
                            arrivals=arrivals)
    mon.stop()
    assert failed == {} and got == {first.name: [0, 1, 2, 3], later.name: [0, 1, 2, 3]}
    rep = mon.report()
    assert rep["results"] == 8
    # every stream was in only after the first had ended: no moment ran both, no steady rate
    assert rep["streams_in_s"] >= 0.3 and rep["steady_s"] is None and rep["steady_frames_per_s"] is None


def test_concurrent_failing_source_is_reported_others_go_on(cpu_pipe, tmp_path):
    from posefuse.runners.concurrent import run_concurrent
    from posefuse.runners.sources import Source

    def broken():
        raise SourceError("source cam7: stream ended mid-frame")
        yield

    mon, got = PerformanceMonitor(), []
    sources = _small_sources()() + [Source.from_frames("cam7", broken())]
    failed = run_concurrent(sources, cpu_pipe, mon, helpers.on_frame(lambda s, i, img, r: got.append(s)), batch=4)
    mon.stop()
    assert failed == {"cam7": "source cam7: stream ended mid-frame"} and len(got) == 8


class FailingPipeline:
    """Fault injection around the real pipeline: the n-th submit raises."""

    def __init__(self, pipe, n):
        self.pipe, self.n, self.calls = pipe, n, 0

    def __getattr__(self, name):  # device, ring_wait_s, ...: the real pipeline's
        return getattr(self.pipe, name)

    def submit(self, frames, pixel_format="bgr", track=None):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("injected GPU fault")
        return self.pipe.submit(frames, pixel_format, track)


def test_worker_exception_stops_the_run_with_its_stage_and_no_thread_left(cpu_pipe):
    import threading
    import time

    from posefuse.runners.concurrent import RunnerError, run_concurrent

    before = set(threading.enumerate())  # an earlier test's process-wide decode hosts are not this run's
    mon = PerformanceMonitor()
    t0 = time.perf_counter()
    with pytest.raises(RunnerError, match="gpu stage failed: RuntimeError: injected GPU fault") as e:
        run_concurrent(_small_sources(8)(), FailingPipeline(cpu_pipe, 2), mon, batch=2)
    assert time.perf_counter() - t0 < 10  # the CPU pipeline takes ~1 s per batch here; the stop itself < 2 s
    assert isinstance(e.value.__cause__, RuntimeError) and e.value.stage == "gpu"
    mon.stop()  # accounting holds: every frame in is a result or a recorded drop
    rep = mon.report()
    assert rep["results"] + sum(rep["drops"].values()) == rep["frames_in"] and sum(rep["drops"].values()) > 0
    assert not [t for t in threading.enumerate() if t.name.startswith("posefuse-") and t not in before]


def test_a_paced_run_of_images_and_the_default_clip_reads_them_in_a_decode_host(tmp_path):
    """Pacing lives in the decode hosts for every source: a paced run places its image folder and the
    embedded clip there too (tests/test_decodehost.py: each frame released at its due time), and every frame
    comes back in order."""
    import cv2

    from posefuse import RunConfig, run

    for i, img in enumerate(synthesized_clip(6)):
        cv2.imwrite(str(tmp_path / f"{i:02d}.jpg"), img[::2, ::2])
    seen: dict = {}
    rep = run(RunConfig(sources=[None, str(tmp_path)], runner="dynamic", device="cpu", batch=4, max_wait_ms=1.0,
                        paced=True, fps=20.0, max_frames=6, imgsz=320, progress=False),
              on_result=lambda r: seen.setdefault(r.stream, []).append(r.index))
    assert rep.failed == {} and rep.overall["results"] == 12
    assert sorted(seen) == sorted(rep.streams) and all(v == list(range(6)) for v in seen.values())
    for st in rep.streams.values():
        assert st["placement"]["reader"] == "decode host" and "paced" in st["placement"]["reason"]


def test_many_sources_share_a_few_readers_and_keep_their_order(cpu_pipe):
    """3 x READERS sources: at most READERS reader threads serve them, and each stream's frames come in
    order."""
    import threading
    import time

    from posefuse.runners.concurrent import READERS, run_concurrent
    from posefuse.runners.sources import Frame, Source

    img = np.ascontiguousarray(synthesized_clip(1)[0][::8, ::8])
    fps, n = 25.0, 3 * READERS
    sources = [Source.from_frames(f"cam{j}", ([Frame(i, img) for i in range(4)]), fps=fps) for j in range(n)]
    got, readers = {}, []

    def on_result(r):
        got.setdefault(r.stream, []).append((r.index, time.perf_counter()))
        readers.append(sum(t.name.startswith("posefuse-read-") for t in threading.enumerate()))

    mon = PerformanceMonitor()
    assert run_concurrent(sources, cpu_pipe, mon, on_result, batch=2 * n, max_wait_ms=5.0) == {}
    mon.stop()
    assert mon.report()["results"] == 4 * n and max(readers) <= READERS
    for name, res in got.items():
        assert [i for i, _ in res] == list(range(4))


def test_cameras_share_a_few_readers_and_their_frames_in_flight_stay_bounded(cpu_pipe):
    """3 x READERS cameras that have every frame ready at once: a pump thread each only reads, at most
    READERS readers hand their frames on, every frame arrives in order, and the frames read but not yet
    released stay bounded by the queue and the pumps' read-ahead (not the whole stream)."""
    import threading

    from posefuse.runners.concurrent import PUMP_AHEAD, READERS, run_concurrent
    from posefuse.runners.sources import Frame, Source

    img = np.ascontiguousarray(synthesized_clip(1)[0][::8, ::8])
    n, per, batch = 3 * READERS, 40, 4
    out, lock = {"now": 0, "max": 0}, threading.Lock()

    def released():
        with lock:
            out["now"] -= 1

    def frames():
        for i in range(per):
            with lock:
                out["now"] += 1
                out["max"] = max(out["max"], out["now"])
            yield Frame(i, img, on_release=released)

    sources = [Source.from_frames(f"cam{j}", frames(), camera=True) for j in range(n)]
    got, readers = {}, []

    def on_result(r):
        got.setdefault(r.stream, []).append(r.index)
        readers.append(sum(t.name.startswith("posefuse-read-") for t in threading.enumerate()))

    mon = PerformanceMonitor()
    assert run_concurrent(sources, cpu_pipe, mon, on_result, batch=batch, max_wait_ms=5.0) == {}
    mon.stop()
    assert mon.report()["results"] == n * per and max(readers) <= READERS
    assert all(got[f"cam{j}"] == list(range(per)) for j in range(n))
    per_reader = -(-n // READERS)
    group = per_reader * PUMP_AHEAD  # the most a reader hands on at once
    bound = (2 * batch + READERS) * group + n * (PUMP_AHEAD + 1) + 3 * batch  # queue, groups held, inboxes, batches
    assert out["now"] == 0 and out["max"] <= bound < n * per, (out, bound)


def test_cli_dynamic_runner_many_streams(tmp_path):
    rc = main(["run", "--device", "cpu", "--runner", "dynamic", "--repeat", "3", "--max-frames", "2", "--batch", "4",
               "--max-wait-ms", "20", "--out", str(tmp_path / "r.json")])
    assert rc == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["overall"]["results"] == 6 and len(rep["streams"]) == 3
    assert all(s["results"] == 2 for s in rep["streams"].values())


def test_cli_the_same_clip_given_twice_runs_as_two_streams(tmp_path):
    """A source named twice is two streams with names of their own (they collapsed into one before: 2 x 3
    frames in, 3 results, the run failed its accounting)."""
    clip = helpers.data_path("one-by-one-person-detection.mp4")
    rc = main(["run", "--device", "cpu", "--source", clip, clip, "--max-frames", "3", "--batch", "4", "--imgsz", "320",
               "--no-progress", "--out", str(tmp_path / "r.json")])
    assert rc == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert sorted(rep["streams"]) == [f"{clip}#0", f"{clip}#1"]
    assert rep["overall"]["results"] == 6 and all(s["results"] == 3 for s in rep["streams"].values())


def test_batched_mixed_good_and_bad_frames(cpu_pipe):
    """Good frames of a batch get results; each bad one is a recorded drop naming stream, index and reason."""
    from posefuse.runners.sources import Frame, Source

    good = np.ascontiguousarray(synthesized_clip(1)[0][::2, ::2])
    frames = [good, np.zeros((8, 8, 4), np.uint8), good, None, good.astype(np.float32), good, np.zeros((0, 5, 3), np.uint8)]
    out, rep = collect(Source.from_frames("cam", ([Frame(i, f) for i, f in enumerate(frames)])), "batched", cpu_pipe, batch=3)
    assert sorted(out) == [0, 2, 5] and rep["frames_in"] == 7 and rep["results"] == 3
    assert set(rep["drops"]) == {
        "cam[1]: expected uint8 HxWx3 (BGR), got shape (8, 8, 4)",
        "cam[3]: expected an array, got None",
        "cam[4]: expected uint8, got float32 (216, 384, 3)",
        "cam[6]: expected a non-empty image, got shape (0, 5, 3)",
    }


class OomPipeline:
    """Fault injection around the real pipeline: batches larger than ``limit`` raise CUDA out-of-memory."""

    def __init__(self, pipe, limit):
        self.pipe, self.limit, self.sizes = pipe, limit, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def submit(self, frames, pixel_format="bgr", track=None):
        self.sizes.append(len(frames))
        if len(frames) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return self.pipe.submit(frames, pixel_format, track)


def test_out_of_memory_splits_the_batch_and_loses_no_frame(cpu_pipe):
    from posefuse.runners.sources import Frame, Source

    img = np.ascontiguousarray(synthesized_clip(1)[0][::4, ::4])
    oom = OomPipeline(cpu_pipe, limit=2)
    with pytest.warns(RuntimeWarning) as rec:
        out, rep = collect(Source.from_frames("cam", ([Frame(i, img) for i in range(5)])), "batched", oom, batch=5)
    assert [str(w.message) for w in rec] == ["CUDA out of memory for a batch of 5: splitting into 2 + 3",
                                             "CUDA out of memory for a batch of 3: splitting into 1 + 2"]
    assert sorted(out) == list(range(5)) and rep["results"] == 5 and not rep["drops"]
    assert oom.sizes == [5, 2, 3, 1, 2]


def test_sigterm_drains_writes_partial_statistics_and_exits_130(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    report = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "posefuse.runners.cli", "run", "--device", "cpu", "--runner", "dynamic", "--paced",
           "--source", helpers.data_path("one-by-one-person-detection.mp4"), "--max-frames", "300",
           "--batch", "4", "--max-wait-ms", "50", "--out", str(report)]
    p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(10)  # the model loads, then frames flow at the clip's 10 frames/s
    assert p.poll() is None, "the run ended before the signal"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    rep = json.loads(report.read_text())["overall"]
    assert 0 < rep["results"] < 300
    assert rep["frames_in"] == rep["results"] + sum(rep["drops"].values())


def test_truncated_video_is_a_clear_error_after_its_frames(cpu_pipe, tmp_path):
    data = open(helpers.data_path("one-by-one-person-detection.mp4"), "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    src = open_source(str(cut))
    n = 0
    with pytest.raises(SourceError, match=r"cut.mp4: stopped after \d+ of 1394 frames \(truncated or corrupt file\)"):
        for _ in src.frames():
            n += 1
    assert 300 < n < 1394
    full = open_source(helpers.data_path("one-by-one-person-detection.mp4"))  # a whole file raises nothing
    assert sum(1 for _ in full.frames()) == 1394


def test_frame_pool_lends_rows_waits_for_released_ones_and_cancels():
    import threading

    from posefuse.runners.sources.pool import FramePool

    cancel = threading.Event()
    pool = FramePool(3, cancel)
    a = pool.take(2)
    b = pool.take(1)
    assert sorted(a + b) == [0, 1, 2]
    got = []
    t = threading.Thread(target=lambda: got.append(pool.take(2)))
    t.start()
    t.join(0.2)
    assert t.is_alive()  # no row free: it waits for released ones
    pool.release([a[0]])
    pool.release([b[0]])
    t.join(2)
    assert not t.is_alive() and sorted(got[0]) == sorted([a[0], b[0]])
    cancel.set()
    assert pool.take(1) == []  # cancelled with nothing free: returns short instead of waiting
    pool.release(a[1:] + got[0])
    assert pool.all_free()


def test_host_rows_take_free_rows_never_wait_and_give_way_to_a_new_shape(clip_frames):
    """OpenCV decodes into a free row (reused once released); with none free, or a frame of another shape,
    into a new array, the row untouched: a reader never waits on its consumer."""
    from posefuse.runners.sources.opencv import NEW_ARRAYS, read_frame
    from posefuse.runners.sources.pool import HostRows

    cap = cv2.VideoCapture(helpers.data_path("one-by-one-person-detection.mp4"))
    rows = HostRows((432, 768, 3), size=2)
    counts = {NEW_ARRAYS: 0}
    got = [read_frame(cap, rows, counts) for _ in range(3)]
    assert all(ok for ok, _, _ in got)
    for k, (_, img, _) in enumerate(got):
        np.testing.assert_array_equal(img, clip_frames[k])  # the video's frames, in rows or not
    assert [r is not None for _, _, r in got] == [True, True, False]  # the third: both rows in use
    assert counts[NEW_ARRAYS] == 1
    assert {id(img.base) for _, img, _ in got[:2]} <= {id(r.base) for r in rows.rows}
    got[0][2]()  # released: its row is the next one decoded into
    ok, img, release = read_frame(cap, rows, counts)
    assert release is not None and img is got[0][1]
    np.testing.assert_array_equal(img, clip_frames[3])
    other = HostRows((216, 384, 3), size=1)  # the stream "changed resolution": a new array, the row free
    ok, img, release = read_frame(cap, other, counts)
    assert ok and release is None and img.shape == (432, 768, 3) and other.free == [0]
    assert counts[NEW_ARRAYS] == 2
    cap.release()


def test_nvdec_arguments_are_checked_before_anything_opens():
    from posefuse.runners.sources.nvdec import open_nvdec

    with pytest.raises(ValueError, match="chunk: expected >= 1, got 0"):
        open_nvdec("clip.mp4", chunk=0)
    with pytest.raises(ValueError, match="decoder: expected one of"):
        open_source("clip.mp4", decoder="nvdec-threaded")
    with pytest.raises(ValueError, match="max_frames: expected >= 1, got 0"):
        open_source("clip.mp4", max_frames=0)


def test_latency_histogram_folds_in_groups_and_the_timeline_places_each_second():
    """Latencies added a few at a time (as a stream's monitor gets them) give the same percentiles as all of
    them added at once, before and after a fold, near NumPy's (upper bin edges, no interpolation); the
    per-second timeline counts each second's results."""
    from posefuse.runners.monitor import LatencyHistogram, LatencyTimeline

    rng = np.random.default_rng(0)
    lat = rng.lognormal(np.log(0.02), 0.5, 3 * LatencyHistogram.FOLD + 17)

    def at_once(values):
        h = LatencyHistogram()
        h.add_many(list(values))
        return h

    h = LatencyHistogram()
    for k in range(0, len(lat), 3):
        h.add_many(list(lat[k:k + 3]))
        if k == 99:  # before the first fold
            assert h.percentile(99) == at_once(lat[:102]).percentile(99)
    assert h.n == len(lat) and h.max == lat.max()
    for q in (50, 95, 99):
        assert h.percentile(q) == at_once(lat).percentile(q)
        np.testing.assert_allclose(h.percentile(q), np.percentile(lat, q), rtol=0.05)
    # as Prometheus buckets: how many are at most each bound (within the bins' 1%), and their sum
    bounds = [1e-9, 0.005, 0.01, 0.02, 0.05, 0.1, 10.0]
    got, want = h.at_most(bounds), [int((lat <= b).sum()) for b in bounds]
    assert got == sorted(got) and got[0] == 0 and got[-1] == len(lat)
    assert all(abs(g - w) <= 0.02 * len(lat) for g, w in zip(got, want)), (got, want)
    np.testing.assert_allclose(h.sum, lat.sum(), rtol=1e-9)
    t = LatencyTimeline()
    t.add_many(0, [0.010, 0.020])
    t.add_many(1, [0.030])
    t.add_many(1, [0.040])
    rows = t.report()["rows"]
    assert [r[:2] for r in rows] == [[0, 2], [1, 2]] and rows[1][4] == 40.0


def test_a_control_learns_that_its_run_failed():
    """run() raising in its thread (a model that cannot load) ends the control's wait with that error, not a
    wait for ever; a run that ends well marks the control ended."""
    import threading

    from posefuse import RunConfig, RunControl, run

    control = RunControl()
    errors = []

    def target():
        try:
            run(RunConfig(device="cpu", runner="dynamic", model="/no/such/model.pt", progress=False), control=control)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=target)
    t.start()
    with pytest.raises(RuntimeError, match="the run failed before it started: ConfigError: model"):
        control.wait_started(timeout=60)
    t.join(60)
    assert control.ended.is_set() and errors and control.error is errors[0]
    with pytest.raises(RuntimeError, match="stopped"):
        control.add_source(None)


def test_every_run_events_implementation_declares_the_whole_protocol():
    """RunEvents is declared: the monitor, the per-stream fan-out and the multi-GPU worker's sender each
    define every method of it (none is probed for at run time)."""
    import inspect

    from posefuse.runners.events import RunEvents, StreamFanout
    from posefuse.runners.multigpu import WorkerEvents

    methods = {n for n, f in vars(RunEvents).items() if inspect.isfunction(f) and not n.startswith("_")}
    assert "waits" in methods and len(methods) >= 8
    for cls in (PerformanceMonitor, StreamFanout, WorkerEvents):
        assert methods <= {n for n, f in vars(cls).items() if inspect.isfunction(f)}, cls.__name__


def test_a_dynamic_run_reports_where_its_frames_waited_before_the_gpu():
    """The report's waits_ms: each frame's time from its arrival until the run queued it (intake), in the
    queue (queue) and in the batcher until its batch left (batch), parts of its latency: none exceeds the
    largest latency."""
    from posefuse import RunConfig, run

    rep = run(RunConfig(sources=[helpers.data_path(helpers.harness.CLIP)], repeat=2, max_frames=24, runner="dynamic",
                        batch=4, imgsz=320, device="cpu", decoder="cpu", progress=False))
    o = rep.overall
    assert o["results"] == 48 and set(o["waits_ms"]) == {"intake", "queue", "batch"}
    for w in o["waits_ms"].values():
        assert 0 <= w["p50"] <= w["p99"] <= w["max"] * 1.01 <= o["latency_ms"]["max"] * 1.02, (w, o["latency_ms"])
