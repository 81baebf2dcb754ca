"""The one assembly of a run: where each stream is read (placement), the same poses for a frame whatever its
batch company or runner (alone, beside a 1080p stream, through the archive job's actor), a multi-GPU run
built by the same assembly (decode hosts, tracking), and run() writing its report itself."""
from __future__ import annotations

import json

import numpy as np
import pytest

import helpers
from posefuse import RunConfig, run
from posefuse.runners.assembly import DECODE_HOST, READER_THREAD, RUNNER_THREAD, place

CLIP = helpers.data_path("one-by-one-person-detection.mp4")
CLIP_1080 = helpers.data_path("one-by-one-person-1080p.mp4")


def _placed(spec, **cfg) -> tuple:
    c = RunConfig(**{"device": "cpu", "runner": "dynamic", **cfg})
    p = place(c, spec)
    return p.reader, p.decoder


def test_place_is_the_one_decision_of_where_a_stream_is_read():
    assert _placed(CLIP) == (READER_THREAD, "cpu")
    assert _placed(None) == (READER_THREAD, "cpu")  # the embedded clip
    assert _placed(CLIP, paced=True) == (DECODE_HOST, "cpu")
    assert _placed(CLIP, mode="live") == (DECODE_HOST, "cpu")
    assert _placed("rtsp://127.0.0.1:9/cam") == (DECODE_HOST, "cpu")
    assert _placed(CLIP, runner="batched") == (RUNNER_THREAD, "cpu")
    assert _placed("rtsp://127.0.0.1:9/cam", runner="serial") == (RUNNER_THREAD, "cpu")
    assert _placed(CLIP, runner="multigpu", paced=True) == (DECODE_HOST, "cpu")
    # decoder nvdec (a config as validated() leaves it on a GPU machine): video files only; a camera keeps
    # OpenCV's reconnect and stall handling, and the reason says so
    assert _placed(CLIP, decoder="nvdec") == (DECODE_HOST, "nvdec")
    assert _placed(CLIP, decoder="nvdec", paced=True) == (DECODE_HOST, "nvdec")
    assert _placed(None, decoder="nvdec") == (READER_THREAD, "cpu")
    cam = place(RunConfig(device="cpu", runner="dynamic", decoder="nvdec"), "rtsp://127.0.0.1:9/cam")
    assert (cam.reader, cam.decoder) == (DECODE_HOST, "cpu") and "reconnect" in cam.reason


def _poses(report_frames: dict, stream: str) -> dict:
    return {i: r for (s, i), r in report_frames.items() if s == stream}


def _run_collect(device: str, **cfg) -> tuple:
    got = {}
    rep = run(RunConfig(device=device, progress=False, **cfg),
              on_result=lambda r: got.__setitem__((r.stream, r.index), r.poses))
    assert rep.exit_code == 0, rep.failed
    return got, rep


def _actor_poses(device: str, tmp_path, frames: int, batch: int) -> dict:
    """The archive job's actor (posefuse archive's map_batches UDF) on the clip's first ``frames`` frames, in
    this process: {frame: (boxes, scores, keypoints)} read back from its Parquet file. Made and called outside
    Ray, it starts no Ray instance (one would stay up, with its dashboard, for the rest of the process)."""
    pq = pytest.importorskip("pyarrow.parquet")
    from posefuse.runners.archive import PoseActor, video_key

    try:
        import ray
    except ImportError:
        ray = None
    was = ray is not None and ray.is_initialized()
    actor = PoseActor(str(tmp_path / "poses"), RunConfig(device=device, batch=batch, decoder="cpu"))
    row, = actor.run_segments([(CLIP, video_key(CLIP), 0, 0, frames)])
    assert ray is None or ray.is_initialized() == was, "a PoseActor outside Ray started a Ray instance"
    assert row["error"] is None and row["frames"] == frames
    got: dict = {}
    for r in pq.read_table(tmp_path / "poses" / video_key(CLIP) / "000000.parquet").to_pylist():
        got.setdefault(r["frame"], []).append(r)
    return got


def _assert_same(a, b, exact: bool):
    """Two frames' poses: bit for bit (``exact``), else within fp16's own run-to-run spread."""
    assert len(a) == len(b)
    for name in ("boxes", "scores", "keypoints"):
        x, y = getattr(a, name), getattr(b, name)
        if exact:
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, atol=0.05 if name != "scores" else 1e-3, err_msg=name)


def _company(device: str, tmp_path, exact: bool, decoders=("cpu",)):
    """Alone vs beside the 1080p clip with each of ``decoders`` (NVDEC's pixels are not OpenCV's, so a
    frame is compared with itself decoded the same way); then the archive actor (OpenCV) vs alone."""
    n = 70  # the case: frame 61 scored 0.666 beside the 1080p clip against 0.435 alone
    for decoder in decoders:
        alone, _ = _run_collect(device, sources=[CLIP], max_frames=n, runner="dynamic", batch=8, decoder=decoder)
        mixed, rep = _run_collect(device, sources=[CLIP, CLIP_1080], max_frames=n, runner="dynamic", batch=8,
                                  decoder=decoder)
        assert len(_poses(alone, CLIP)) == len(_poses(mixed, CLIP)) == n and len(_poses(mixed, CLIP_1080)) == n
        assert sum(len(p) for p in _poses(alone, CLIP).values()) >= 9  # people in these frames (9 on the CPU)
        for i, p in _poses(alone, CLIP).items():
            _assert_same(mixed[(CLIP, i)], p, exact)
    rows = _actor_poses(device, tmp_path, n, 8)
    for i, p in _poses(alone, CLIP).items():
        r = rows.get(i, [])
        assert len(r) == len(p), i
        if r:  # Parquet keeps float32: the same values
            boxes = np.array([x["box"] for x in r], np.float32)
            kpts = np.array([x["keypoints"] for x in r], np.float32).reshape(-1, 17, 3)
            _assert_same(type(p)(boxes, np.array([x["score"] for x in r], np.float32), kpts), p, exact)
    return rep


@pytest.mark.slow
def test_a_frames_poses_do_not_depend_on_its_company_cpu(tmp_path):
    """Alone, in batches with a 1080p stream (another resolution, the same canvas), and through the archive
    job's actor: bit-identical poses on every frame (CPU)."""
    _company("cpu", tmp_path, exact=True)


@pytest.mark.gpu
def test_a_frames_poses_do_not_depend_on_its_company_gpu_fp16(tmp_path):
    """The same on the GPU in fp16, with CUDA graphs (every batch padded to the run's batch size), read by
    NVDEC and by OpenCV."""
    _company("cuda", tmp_path, exact=True, decoders=("nvdec", "cpu"))


@pytest.mark.slow
def test_multigpu_tracks_paced_streams_through_the_same_assembly(tmp_path):
    """`posefuse run --runner multigpu --gpus cpu,cpu --track` of paced streams: each worker builds the run's
    assembly, so the streams are read in decode hosts and tracked in the worker, with the same ids
    as a one-device run of the same streams."""
    import cv2

    from posefuse.runners.cli import main

    clip = tmp_path / "people.mp4"  # frames 150-189 of the sample clip: people walk in
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (768, 432))
    for f in helpers.read_video(CLIP, 190)[150:]:
        w.write(f)
    w.release()
    common = ["--device", "cpu", "--source", str(clip), "--repeat", "2", "--paced", "--fps", "30", "--max-frames",
              "24", "--batch", "4", "--track", "--no-progress"]
    outs = {}
    for label, extra in (("multigpu", ["--runner", "multigpu", "--gpus", "cpu,cpu"]), ("one", ["--runner", "dynamic"])):
        out, poses = tmp_path / f"{label}.json", tmp_path / f"{label}.jsonl"
        assert main(["run", *common, *extra, "--out", str(out), "--save-json", str(poses)]) == 0
        rep = json.loads(out.read_text())
        assert rep["overall"]["results"] == 48
        lines = [json.loads(x) for x in poses.read_text().splitlines()]
        outs[label] = {(x["stream"], x["frame"]): [p["track_id"] for p in x["poses"]] for x in lines}
        if label == "one":
            for s in rep["streams"].values():
                assert s["placement"]["reader"] == DECODE_HOST
    assert outs["multigpu"] == outs["one"]
    assert any(i > 0 for ids in outs["one"].values() for i in ids)  # confirmed tracks


def test_run_writes_its_report_to_out(tmp_path):
    """The API writes ``out`` as the command line does, with each stream's placement."""
    out = tmp_path / "report.json"
    rep = run(RunConfig(device="cpu", max_frames=2, imgsz=320, progress=False, out=str(out)))
    written = json.loads(out.read_text())
    assert written["overall"]["results"] == rep.overall["results"] == 2
    (stream,) = written["streams"].values()
    assert stream["placement"]["reader"] == RUNNER_THREAD and stream["placement"]["reason"]
