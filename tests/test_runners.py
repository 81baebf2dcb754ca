"""Runners (CPU): sources and their errors, strategies agree, accounting, the command line end to end."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from fusion import PosePipeline
from fusion.accuracy import AccuracyTally
from runners import PerformanceMonitor, SourceError, open_source, run_source, synthesized_clip
from runners.cli import main
from tests import helpers


@pytest.fixture(scope="module")
def cpu_pipe():
    return PosePipeline(device="cpu")


def collect(src, runner, engine, **kw):
    mon, out = PerformanceMonitor(), {}
    run_source(src, runner, engine, mon, lambda s, i, img, r: out.__setitem__(i, r), **kw)
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
        list(src.frames)
    assert spec in str(e.value)


def test_video_folder_and_image_sources(tmp_path, clip_frames):
    src = open_source(helpers.data_path("one-by-one-person-detection.mp4"), max_frames=5)
    frames = list(src.frames)
    assert [f.index for f in frames] == list(range(5)) and src.fps and src.count == 5
    for i, f in enumerate(clip_frames[150:153]):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), f)
    got = list(open_source(str(tmp_path)).frames)
    assert len(got) == 3 and np.array_equal(got[1].image, clip_frames[151])
    assert len(list(open_source(str(tmp_path / "000.png")).frames)) == 1


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
    from runners.sources import Frame, Source

    frames = [Frame(0, synthesized_clip(1)[0]), Frame(1, np.zeros((10, 10), np.uint8)), Frame(2, synthesized_clip(1)[0])]
    out, rep = collect(Source("mixed", iter(frames)), "serial", cpu_pipe)
    assert sorted(out) == [0, 2] and rep["results"] == 2 and sum(rep["drops"].values()) == 1
    assert "frames[0]: expected uint8 HxWx3" in next(iter(rep["drops"]))


def test_monitor_accounting_catches_a_lost_frame():
    m = PerformanceMonitor()
    m.arrived(("s", 0))
    m.arrived(("s", 1))
    m.done(("s", 0), 1)
    with pytest.raises(AssertionError, match="1 frames unaccounted for"):
        m.stop()


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
