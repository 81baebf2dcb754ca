"""The Ray Data archive job on a real local Ray runtime (CPU, reference kernels, real clips): segments cover
every frame once, poses equal the in-process runner's frame for frame, an actor killed mid-segment is
retried and the output still holds each frame once, a bad video is reported, a rerun skips finished
segments, and a simulated two-node cluster runs the job. Each job runs in a fresh process, so Ray's
runtime never lives inside the test process."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import helpers

if importlib.util.find_spec("ray") is None:  # not imported here: Ray runs in the jobs' own processes
    pytest.skip("Ray is the 'ray' extra (.ci/run installs it)", allow_module_level=True)
pq = pytest.importorskip("pyarrow.parquet")

CLIP = "one-by-one-person-detection.mp4"


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """60 frames of the sample clip with people in them (frames 150-209), as a video of its own."""
    import cv2

    frames = helpers.read_video(helpers.data_path(CLIP), 210)[150:210]
    path = tmp_path_factory.mktemp("clips") / "people.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        w.write(f)
    w.release()
    return str(path)


def _archive(actor_kwargs=None, **cfg) -> dict:
    """posefuse.runners.archive.archive(ArchiveConfig(RunConfig(run fields of cfg), job fields of cfg)) in a
    fresh process (Ray's runtime starts and ends
    with it, never inside the test process); returns its summary."""
    import json

    code = ("import dataclasses, json, sys; from posefuse import RunConfig; "
            "from posefuse.runners.archive import ArchiveConfig, archive; a = json.loads(sys.argv[1]); "
            "job = {f.name: a['cfg'].pop(f.name) for f in dataclasses.fields(ArchiveConfig) if f.name in a['cfg']}; "
            "s = archive(ArchiveConfig(RunConfig(**a['cfg']), **job), actor_kwargs=a['actor']); "
            "print('RESULT ' + json.dumps(s, default=str))")
    r = subprocess.run([sys.executable, "-c", code, json.dumps({"cfg": cfg, "actor": actor_kwargs})],
                       capture_output=True, text=True, timeout=600)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, r.stderr[-3000:]
    return json.loads(line[-1][7:])


def _rows(out) -> dict:
    """{frame: [(box, score, keypoints)]} over every segment file of ``out``, each frame once."""
    got: dict = {}
    for p in sorted(out.glob("*/*.parquet")):
        t = pq.read_table(p).to_pylist()
        for r in t:
            got.setdefault(r["frame"], []).append((r["box"], r["score"], r["keypoints"]))
    return got


def test_segments_cover_every_frame_once_and_a_seek_reads_the_same_frames(short_clip, tmp_path):
    from posefuse.runners.archive import segments
    from posefuse.runners.sources.keyframes import keyframes
    from posefuse.runners.sources.opencv import open_video

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    rows, failed = segments([short_clip, str(bad), str(tmp_path / "none.mp4")], 25)
    keys = keyframes(short_clip)
    assert len(keys) > 3 and len(rows) == 3  # three parts of ~20 frames, each starting at a keyframe
    assert rows[0]["start"] == 0 and rows[-1]["end"] == 60 and all(r["start"] in keys for r in rows)
    assert all(a["end"] == b["start"] for a, b in zip(rows, rows[1:]))
    assert set(failed) == {str(bad), str(tmp_path / "none.mp4")}
    whole = [f.image for f in open_video(short_clip, None).frames()]
    for r in rows:
        part = list(open_video(short_clip, r["end"] - r["start"], r["start"]).frames())
        assert [f.index for f in part] == list(range(r["start"], r["end"]))
        for f in part:
            assert np.array_equal(f.image, whole[f.index])


def test_keyframes_are_read_from_the_container_in_display_order():
    """keyframes() reads MP4's sync-sample table and puts it in display order (as ffprobe -show_frames
    lists key frames); cut_at_keyframes moves each cut of equal parts to the nearest keyframe."""
    from posefuse.runners.archive import cut_at_keyframes
    from posefuse.runners.sources.keyframes import keyframes

    assert keyframes(helpers.data_path(CLIP)) == list(range(0, 1394, 10))  # ffprobe: closed GOPs of 10
    assert keyframes(helpers.data_path("one-by-one-person-1080p.mp4")) == [0, 80, 190, 440, 520]  # open GOPs
    assert keyframes(helpers.data_path("face-demographics-walking.gif")) is None
    assert cut_at_keyframes(1394, 1024, list(range(0, 1394, 10))) == [0, 700, 1394]
    assert cut_at_keyframes(600, 100, [0, 80, 190, 440, 520]) == [0, 80, 190, 440, 520, 600]
    assert cut_at_keyframes(600, 300, [0, 80, 190, 440, 520]) == [0, 190, 600]
    assert cut_at_keyframes(600, 100, None) == [0, 600]  # keyframes unknown: one segment


def test_ray_job_equals_the_in_process_runner_reports_bad_videos_and_resumes(short_clip, tmp_path):
    from posefuse import RunConfig, run

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    out = tmp_path / "poses"
    cfg = dict(sources=[short_clip, str(bad)], out_dir=str(out), segment_frames=25, imgsz=320, actors=2, batch=8,
               device="cpu")
    s = _archive(**cfg)
    assert s["frames"] == 60 and s["segments"] == 3 and str(bad) in s["failed"]
    ref: dict = {}
    run(RunConfig(sources=[short_clip], imgsz=320, device="cpu", progress=False),
        on_result=lambda r: ref.__setitem__(r.index, r.poses))
    got = _rows(out)
    assert sum(len(p) for p in ref.values()) > 0  # the clip has people
    for i in range(60):
        poses = got.get(i, [])
        assert len(poses) == len(ref[i]), i
        if poses:
            np.testing.assert_allclose(np.array([b for b, _, _ in poses]), ref[i].boxes, atol=1e-2)
            np.testing.assert_allclose(np.array([k for _, _, k in poses]).reshape(-1, 17, 3), ref[i].keypoints,
                                       atol=1e-2)
    again = _archive(**cfg)  # a rerun: every segment's file is there
    assert again["frames"] == 60 and all(v["skipped"] == 3 for v in again["videos"].values())
    assert _rows(out) == got


def test_an_actor_killed_mid_segment_is_retried_and_each_frame_is_written_once(short_clip, tmp_path):
    from posefuse.runners.archive import segments, video_key

    marker = tmp_path / "crashed"
    out = tmp_path / "poses"
    s = _archive({"crash_once": str(marker), "crash_segment": [video_key(short_clip), 1]}, sources=[short_clip],
               out_dir=str(out), segment_frames=30, imgsz=320, actors=1, batch=8, device="cpu")
    assert marker.exists()  # the actor died once, mid-segment
    assert s["frames"] == 60 and not s["failed"]
    per_file = {p.name: pq.read_schema(p).metadata[b"posefuse.frames"] for p in out.glob("*/*.parquet")}
    want = {f"{r['segment']:06d}.parquet": str(r["end"] - r["start"]).encode() for r in segments([short_clip], 30)[0]}
    assert len(want) == 2 and per_file == want and not list(out.glob("*/.*.tmp"))
    from posefuse import PosePipeline
    from posefuse.runners.sources.opencv import open_video

    ref = PosePipeline(device="cpu", imgsz=320)([f.image for f in open_video(short_clip, None).frames()])
    got = _rows(out)  # each frame's detections once: as many rows as the pipeline finds, not twice as many
    assert {i: len(got.get(i, [])) for i in range(60)} == {i: len(r) for i, r in enumerate(ref)}


def test_simulated_two_node_cluster_runs_the_job(short_clip, tmp_path):
    """Two Ray nodes on this machine (ray.cluster_utils.Cluster), one actor each; driven in a subprocess so
    the cluster's processes end with it."""
    code = f"""
import json, ray
from ray.cluster_utils import Cluster
from posefuse import RunConfig
from posefuse.runners.archive import ArchiveConfig, archive
c = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
c.add_node(num_cpus=1)
ray.init(address=c.address, log_to_driver=False)
s = archive(ArchiveConfig(RunConfig(sources=[{short_clip!r}], imgsz=320, batch=8, device="cpu"),
                          out_dir={str(tmp_path / 'poses')!r}, segment_frames=20, actors=2, segments_per_call=1))
nodes = len([n for n in ray.nodes() if n["Alive"]])
ray.shutdown(); c.shutdown()
print("RESULT", json.dumps({{"frames": s["frames"], "actors": len(s["per_actor"]), "nodes": nodes}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, r.stderr[-3000:]
    import json

    res = json.loads(line[-1][7:])
    assert res == {"frames": 60, "actors": 2, "nodes": 2}


def test_archive_cli_bad_options_are_one_line_and_exit_2(short_clip, tmp_path):
    for args, message in ((["--source", str(tmp_path / "none*.mp4")], "--source: no video files match"),
                          (["--source", short_clip, "--imgsz", "100"], "--imgsz: expected a multiple of 32"),
                          (["--source", short_clip, "--segment-frames", "0"], "--segment-frames: expected a whole")):
        r = subprocess.run([sys.executable, "-m", "posefuse.runners.cli", "archive", *args, "--out",
                            str(tmp_path / "o")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("posefuse: ") and message in r.stderr


def test_archive_config_is_a_run_config_plus_the_jobs_fields():
    """The run's options are checked by RunConfig's own rules; options an archive job does not take, and the
    job's own fields, are refused naming the option."""
    from posefuse import ConfigError, RunConfig
    from posefuse.runners.archive import ArchiveConfig

    ArchiveConfig(RunConfig(sources=["a.mp4"], imgsz=320, batch=8)).check()
    cases = [(ArchiveConfig(RunConfig(imgsz=100)), "imgsz"), (ArchiveConfig(RunConfig(paced=True)), "paced"),
             (ArchiveConfig(RunConfig(track=True)), "track"), (ArchiveConfig(RunConfig(runner="serial")), "runner"),
             (ArchiveConfig(RunConfig(), segment_frames=0), "segment_frames"),
             (ArchiveConfig(RunConfig(), segments_per_call=0), "segments_per_call"),
             (ArchiveConfig(RunConfig(), actors=0), "actors")]
    for cfg, option in cases:
        with pytest.raises(ConfigError) as e:
            cfg.check()
        assert e.value.option == option


@pytest.mark.parametrize("address, message", [("auto", "--address: no Ray cluster at 'auto'"),
                                              ("127.0.0.1:9", "--address: no Ray cluster answers at 127.0.0.1:9")])
def test_archive_with_no_cluster_is_one_line_exit_2_and_no_folder(short_clip, tmp_path, address, message):
    out = tmp_path / "poses"
    r = subprocess.run([sys.executable, "-m", "posefuse.runners.cli", "archive", "--source", short_clip, "--out",
                        str(out), "--address", address, "--device", "cpu"], capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"})
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[-1]], r.stderr
    assert r.stderr.startswith("posefuse: " + message) and not out.exists()


@pytest.mark.slow
def test_ctrl_c_in_an_archive_job_exits_130_with_a_summary(tmp_path):
    """Ctrl-C while the actors run: no traceback, exit 130, summary.json of what was written (interrupted)."""
    import json
    import signal
    import time

    out = tmp_path / "poses"
    p = subprocess.Popen([sys.executable, "-m", "posefuse.runners.cli", "archive", "--source", helpers.data_path(CLIP),
                          "--out", str(out), "--device", "cpu", "--segment-frames", "100", "--actors", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(15)  # Ray up, the actors loading (the whole clip takes over a minute on 2 cores)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "posefuse: interrupted" in err
    s = json.loads((out / "summary.json").read_text())
    assert s["interrupted"] is True and s["segments"] == 14
