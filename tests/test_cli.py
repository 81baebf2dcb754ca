"""The command line as a new user meets it (CPU): every runner's CLI path, bad options as one line with
exit 2, output paths checked before the run, image folders, progress, the output formats."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import helpers
from posefuse.runners.cli import main

CLIP = helpers.data_path("one-by-one-person-detection.mp4")


def cli(*args, timeout=600):
    """``posefuse`` in a subprocess, as a user runs it: (exit code, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", "posefuse.runners.cli", *args], capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("runner", ["serial", "batched", "ultralytics", "pipelined", "replicas", "dynamic", "multigpu"])
def test_every_runner_runs_from_the_cli(tmp_path, runner):
    extra = ["--gpus", "cpu,cpu", "--repeat", "2"] if runner == "multigpu" else []
    out = tmp_path / "r.json"
    rc = main(["run", "--device", "cpu", "--runner", runner, "--source", CLIP, "--max-frames", "3", "--batch", "2",
               "--imgsz", "320", "--no-progress", "--out", str(out), *extra])
    assert rc == 0
    rep = json.loads(out.read_text())
    n = 6 if runner == "multigpu" else 3
    assert rep["overall"]["frames_in"] == rep["overall"]["results"] == n
    assert rep["precision"] == "fp32" and rep["device"] == "cpu"  # what ran, not what was asked for
    assert rep["backend"] == ("ultralytics" if runner == "ultralytics" else "reference")


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda:3"], "--device: 'cuda:3'"),
    (["--device", "tpu"], "--device: expected 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["--device", "cpu", "--backend", "cupy"], "--backend: 'cupy' cannot run on cpu here"),
    (["--imgsz", "100"], "--imgsz: expected a multiple of 32"),
    (["--conf", "2"], "--conf: expected a score in [0, 1], got 2.0"),
    (["--model", "/nope.pt"], "--model: expected 'yolo11n-pose' or a checkpoint file, got '/nope.pt'"),
    (["--runner", "multigpu", "--gpus", "banana"], "--gpus: expected 'cpu', 'cuda' or 'cuda:N', got 'banana'"),
    (["--repeat", "0"], "--repeat: expected a whole number >= 1, got 0"),
    (["--max-wait-ms", "-5"], "--max-wait-ms: expected >= 0 ms, got -5.0"),
    (["--max-frames", "0"], "--max-frames: expected a whole number >= 1, got 0"),
    (["--batch", "0"], "--batch: expected a whole number >= 1, got 0"),
    (["--out", "/proc/x.json"], "--out: cannot write /proc/x.json"),
    (["--save-json", "/no/such/folder/p.jsonl"], "--save-json: cannot write /no/such/folder/p.jsonl: the folder"),
    (["--save-video", "/tmp/a.xyz"], "--save-video: OpenCV cannot write mp4v video to '/tmp/a.xyz'"),
    (["--decoder", "nvdec", "--save-video", "a.mp4"], "--decoder: 'nvdec'"),
    (["--loop"], "--loop: needs a duration"),
    (["--fps", "0"], "--fps: expected frames/s > 0"),
    (["--late-ms", "0"], "--late-ms: expected ms > 0, got 0.0"),
    (["--mode", "live", "--runner", "batched"], "--mode: 'live' needs a runner of"),
    (["--reconnect-s", "-1"], "--reconnect-s: expected seconds > 0, got -1.0"),
])
def test_bad_options_are_one_line_and_exit_2(capsys, args, message):
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"posefuse: {message}") and "\n" not in err, err


def test_bad_output_path_is_found_before_the_run(capsys):
    t0 = time.perf_counter()
    assert main(["run", "--device", "cpu", "--out", "/proc/report.json"]) == 2
    assert time.perf_counter() - t0 < 5  # no model was loaded, no frame was read
    assert "Traceback" not in capsys.readouterr().err


def test_image_folder_bad_file_is_a_named_drop_subfolders_are_read(tmp_path, clip_frames):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.jpg"), clip_frames[150])
    (folder / "b.jpg").write_bytes(b"not an image")
    cv2.imwrite(str(folder / "sub" / "c.png"), clip_frames[151])
    out, poses = tmp_path / "r.json", tmp_path / "p.jsonl"
    rc = main(["run", "--device", "cpu", "--source", str(folder), "--imgsz", "320", "--no-progress",
               "--out", str(out), "--save-json", str(poses)])
    assert rc == 0
    rep = json.loads(out.read_text())["overall"]
    assert rep["frames_in"] == 3 and rep["results"] == 2
    assert list(rep["drops"]) == [f"{folder}[1]: {folder / 'b.jpg'} is not a readable image"]
    files = [json.loads(x)["file"] for x in poses.read_text().splitlines()]
    assert files == [str(folder / "a.jpg"), str(folder / "sub" / "c.png")]


def test_json_lines_and_coco_outputs(tmp_path):
    poses, coco = tmp_path / "p.jsonl", tmp_path / "c.json"
    assert main(["run", "--device", "cpu", "--max-frames", "3", "--no-progress",  # the default clip: people in each
                 "--save-json", str(poses), "--save-coco", str(coco)]) == 0
    lines = [json.loads(x) for x in poses.read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 2] and [x["image_id"] for x in lines] == [0, 1, 2]
    assert (lines[0]["height"], lines[0]["width"]) == (432, 768) and lines[0]["file"] is None
    assert lines[0]["timestamp"] == 0.0 and abs(lines[2]["timestamp"] - 2 / 30) < 1e-3  # the clip is 30 fr/s
    assert len(lines[0]["poses"][0]["keypoints"]) == 17
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": [{"id": i, "height": 432, "width": 768} for i in range(3)],
                  "categories": [{"id": 1, "name": "person"}], "annotations": []}
    gt.createIndex()
    dt = gt.loadRes(str(coco))
    anns = dt.loadAnns(dt.getAnnIds())
    assert len(anns) == sum(len(x["poses"]) for x in lines) > 0
    a, p = anns[0], lines[0]["poses"][0]
    assert len(a["keypoints"]) == 51 and a["category_id"] == 1
    np.testing.assert_allclose(a["bbox"], [p["box"][0], p["box"][1], p["box"][2] - p["box"][0],
                                           p["box"][3] - p["box"][1]], atol=0.02)


def test_progress_bar_on_stderr_once_and_off_with_no_progress():
    rc, out, err = cli("run", "--device", "cpu", "--max-frames", "4", "--imgsz", "320")
    assert rc == 0 and err.count("100%") == 1 and "4/4" in err  # one bar, finished once
    rc, out, err = cli("run", "--device", "cpu", "--max-frames", "4", "--imgsz", "320", "--no-progress")
    assert rc == 0 and "4/4" not in err
    # a job whose streams join its run as they open: the bar's total once they all have
    rc, out, err = cli("run", "--device", "cpu", "--runner", "dynamic", "--repeat", "2", "--max-frames", "4",
                       "--imgsz", "320")
    bars = [x for x in err.replace("\r", "\n").splitlines() if x.startswith("posefuse: ")]
    totals = {total for _, total in re.findall(r"\| *(\d+)/(\d+) \[", err)}
    assert rc == 0 and totals == {"8"} and bars[-1].startswith("posefuse: 100%") and "8/8" in bars[-1]  # tqdm's
    # close redraws the finished bar where its last update already drew it: one bar, one total


def test_ultralytics_runner_warns_at_most_once():
    rc, out, err = cli("run", "--device", "cpu", "--runner", "ultralytics", "--max-frames", "4", "--no-progress")
    assert rc == 0 and (out + err).count("deprecated") == 0


def test_version_and_help_show_defaults(capsys):
    import posefuse

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"posefuse {posefuse.__version__}"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "(default: 64 on a GPU" in text and "(default: auto)" in text and "--save-coco" in text


@pytest.mark.parametrize("after_s", [0.3, 0.8, 1.5, 2.5])
def test_ctrl_c_while_starting_is_one_line_and_exit_130(after_s):
    """Ctrl-C while importing torch, Ultralytics or loading the model (a library may swallow it there)."""
    p = subprocess.Popen([sys.executable, "-m", "posefuse.runners.cli", "run", "--device", "cpu"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert "posefuse: interrupted" in err


def test_ctrl_c_at_the_terminal_during_a_live_run_drains_it_decode_processes_included():
    """A Ctrl-C reaches the terminal's whole process group, the decode hosts of a paced run too:
    they leave it to the run, which drains and ends with one line and exit 130, no traceback."""
    p = subprocess.Popen([sys.executable, "-m", "posefuse.runners.cli", "run", "--device", "cpu", "--imgsz", "320",
                          "--source", CLIP, "--paced", "--loop",
                          "--duration-s", "60", "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(12)  # imports, the model, the decode host: the run is under way
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert "posefuse: interrupted" in err


def test_paced_looping_sources_for_a_duration():
    """--paced --fps --loop --duration-s: a file played as a camera; frame indices keep counting over loops."""
    from posefuse import RunConfig, run

    got = {}
    t0 = time.perf_counter()
    rep = run(RunConfig(sources=[None], repeat=2, max_frames=4, runner="dynamic", paced=True, fps=20.0, loop=True,
                        duration_s=1.0, imgsz=320, device="cpu", progress=False),
              on_result=lambda r: got.setdefault(r.stream, []).append(r.index))
    assert 1.0 <= time.perf_counter() - t0 < 60 and rep.exit_code == 0
    for idx in got.values():
        assert idx == list(range(len(idx))) and len(idx) > 4  # more than one pass, in order
    assert rep.overall["frames_in"] == rep.overall["results"] + sum(rep.overall["drops"].values())


def test_run_owns_and_restores_process_settings():
    import gc

    from posefuse import RunConfig, run

    switch, frozen = sys.getswitchinterval(), gc.get_freeze_count()
    report = run(RunConfig(device="cpu", max_frames=2, imgsz=320, progress=False))
    assert report.exit_code == 0 and report.overall["results"] == 2
    assert sys.getswitchinterval() == switch and gc.get_freeze_count() == frozen
    assert list(report.startup_s) == ["setup", "engine", "warmup", "sources"]  # in sequence
    assert set(report.shutdown_s) == {"sources", "outputs", "figures"}


def test_auto_choices_are_resolved_said_and_each_has_its_option():
    from posefuse import RunConfig

    c = RunConfig(device="cpu").validated()
    assert (c.runner, c.decoder) == ("serial", "cpu")  # results/cpu_runners.md
    assert set(c.chosen) == {"runner", "batch", "decoder", "compile"} and "no GPU" in c.chosen["decoder"]
    assert c.validated() == c  # resolving twice changes nothing
    live = RunConfig(device="cpu", paced=True).validated()
    assert live.runner == "dynamic"  # paced needs a concurrent runner
    assert RunConfig(device="cpu", mode="live").validated().runner == "dynamic"
    given = RunConfig(device="cpu", runner="serial", batch=4, decoder="cpu", compile="off").validated()
    assert given.chosen == {} and (given.runner, given.batch) == ("serial", 4)


def test_auto_decoder_reads_short_video_jobs_with_opencv():
    """decoder 'auto' by the job: one bounded video stream, or several, too short or too small to win NVDEC's
    start back are read with OpenCV, and the choice says why; a looping or paced one, a long 1080p one or
    enough megapixels of frames in all are not this rule's (on a machine without NVDEC they say so instead)."""
    from posefuse import RunConfig
    from posefuse.runners.config import (ONE_STREAM_NVDEC_FRAMES_1080P as N, STREAMS_NVDEC_MEGAPIXEL_FRAMES as M,
                                         _auto_decoder, nvdec_pays_for_one_stream, nvdec_pays_for_streams)

    hd = 1920 * 1080
    assert not nvdec_pays_for_one_stream(N - 1, hd) and nvdec_pays_for_one_stream(N, hd)
    assert nvdec_pays_for_one_stream(N // 4, 4 * hd) and not nvdec_pays_for_one_stream(100 * N, 768 * 432)
    assert nvdec_pays_for_streams([(M, 10**6 // 2)] * 2) and not nvdec_pays_for_streams([(M - 1, 10**6 // 2)] * 2)
    clip1080 = helpers.data_path("one-by-one-person-1080p.mp4")
    for cfg, frames in ((RunConfig(sources=[CLIP]), 1394), (RunConfig(sources=[clip1080]), 600),
                        (RunConfig(sources=[CLIP], max_frames=64), 64)):
        decoder, why = _auto_decoder(cfg, gpu_run=True)
        assert decoder == "cpu" and f"one video stream of {frames} frames" in why, why
    for cfg, streams, mpx in ((RunConfig(sources=[CLIP], repeat=4), 4, 1_850),  # 4 x 1,394 frames of 768x432
                              (RunConfig(sources=[CLIP, clip1080]), 2, 1_707)):
        decoder, why = _auto_decoder(cfg, gpu_run=True)
        assert decoder == "cpu" and why.startswith(f"{streams} video streams of {mpx:,} Mpx of frames"), why
    for cfg in (RunConfig(sources=[CLIP], repeat=8), RunConfig(sources=[clip1080], loop=True),
                RunConfig(sources=[CLIP], paced=True), RunConfig(sources=[None])):
        assert "video stream" not in _auto_decoder(cfg, gpu_run=True)[1]
    assert _auto_decoder(RunConfig(sources=[CLIP]), gpu_run=False) == ("cpu", "no GPU in the run")


def test_cli_prints_what_it_chose(capsys):
    assert main(["run", "--device", "cpu", "--max-frames", "2", "--imgsz", "320", "--no-progress"]) == 0
    out = capsys.readouterr().out
    chosen = next(line for line in out.splitlines() if line.startswith("[chosen] "))
    assert "runner serial (" in chosen and "decoder cpu (no GPU in the run)" in chosen
    assert "mps off (device cpu: no decode host shares one GPU with the pipeline)" in chosen
    assert "first result" in out and "after the process started" in out


def test_graph_batches_run_at_the_run_batch_size_over_files_every_bucket_live():
    from posefuse import PosePipeline, RunConfig
    from posefuse.runners.assembly import batch_sizes

    assert batch_sizes(RunConfig(device="cpu", runner="batched", batch=64).validated()) == (64,)
    assert batch_sizes(RunConfig(device="cpu", runner="serial").validated()) == (1,)
    assert batch_sizes(RunConfig(device="cpu", paced=True).validated()) is None
    pipe = PosePipeline(device="cpu", batch_sizes=(64,))
    assert [pipe.run_size(n) for n in (1, 5, 64, 65, 200)] == [64, 64, 64, 128, 256]
    assert [PosePipeline(device="cpu").run_size(n) for n in (1, 3, 33, 65)] == [1, 4, 64, 128]
    with pytest.raises(ValueError, match="batch_sizes: expected whole numbers"):
        PosePipeline(device="cpu", batch_sizes=(0,))


def test_nvdec_sources_announce_their_shape_from_the_header(tmp_path):
    from posefuse.runners.sources import announce

    clip_path = helpers.data_path("one-by-one-person-detection.mp4")
    assert announce(clip_path, "nvdec") == ((432, 768), "nv12")
    assert announce(clip_path, "cpu") is None and announce(None, "nvdec") is None
    assert announce(str(tmp_path), "nvdec") is None and announce(str(tmp_path / "none.mp4"), "nvdec") is None


def test_live_mode_drops_late_frames_counted_per_stream_archive_drops_none():
    """Two streams read faster than the CPU pipeline runs them: live mode drops the frames that waited
    longer than late_ms (reason 'late', per stream, each stream's results still in order); archive mode
    runs every frame."""
    from posefuse import RunConfig, run

    for mode in ("live", "archive"):
        got: dict = {}
        rep = run(RunConfig(sources=[None], repeat=2, max_frames=24, mode=mode, late_ms=5.0, batch=4, imgsz=320,
                            device="cpu", runner="dynamic", progress=False),
                  on_result=lambda r: got.setdefault(r.stream, []).append(r.index))
        assert rep.exit_code == 0
        o = rep.overall
        assert o["frames_in"] == 48 and o["results"] + sum(o["drops"].values()) == 48
        for name, st in rep.streams.items():
            assert got.get(name, []) == sorted(got.get(name, []))
            assert st["results"] + st["drops"].get("late", 0) == 24
        if mode == "live":
            assert set(o["drops"]) == {"late"} and o["drops"]["late"] > 0
        else:
            assert o["drops"] == {} and all(v == list(range(24)) for v in got.values())


def test_installed_package_is_one_namespace():
    """posefuse.kernels / .fusion / .runners: nothing named kernels, fusion or runners is importable from
    outside the checkout."""
    code = ("import importlib.util, posefuse; print([importlib.util.find_spec(n) is None "
            "for n in ('kernels', 'fusion', 'runners')], posefuse.PosePipeline.__module__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.expanduser("~"))
    assert r.stdout.split() == ["[True,", "True,", "True]", "posefuse.fusion.pipeline"], r.stderr
