"""``--mps`` (runners/mps.py): the option's rules, what 'auto' decides for a job and why, and the one-line
errors, on any machine; on a GPU, a default job read with NVDEC whose process and decode hosts are clients of
an MPS daemon started for it, with the poses of the same job with ``--mps off``, and the daemon gone after
the process."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time

import pytest

import helpers
from posefuse.runners.config import ConfigError, RunConfig
from posefuse.runners.mps import CONTROL, declines, resolved

CLIP = helpers.data_path("one-by-one-person-detection.mp4")


def cli(*args, timeout=600):
    r = subprocess.run([sys.executable, "-m", "posefuse.runners.cli", *args], capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("kwargs", [{"device": "cpu"}, {"runner": "multigpu"}, {"gpus": ["cuda:0", "cuda:1"]}])
def test_mps_on_is_refused_where_no_one_gpu_is_shared_and_auto_declines_there(kwargs):
    with pytest.raises(ConfigError, match=r"^mps: shares one GPU"):
        RunConfig(mps="on", **kwargs).check()
    cfg = RunConfig(sources=[CLIP] * 8, **kwargs)
    assert declines(cfg).endswith(": no decode host shares one GPU with the pipeline")
    out = resolved(cfg)
    assert out.mps == "off" and out.chosen["mps"] == declines(cfg) and cfg.mps == "auto"  # a copy


def test_mps_takes_on_off_or_auto():
    with pytest.raises(ConfigError, match=r"^mps: expected one of auto, on, off; got True$"):
        RunConfig(mps=True).check()
    assert resolved(RunConfig(mps="off", sources=[CLIP] * 8)).chosen == {}


def test_auto_declines_a_job_without_nvdec_decode_hosts(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    assert declines(RunConfig(sources=[CLIP] * 8, decoder="cpu")) == "decoder cpu: no NVDEC decode host"
    assert declines(RunConfig(sources=[str(tmp_path)], decoder="nvdec")) == (
        "no video file among the sources: no NVDEC decode host")
    assert declines(RunConfig(sources=["rtsp://127.0.0.1:1/x"] * 8)) == (
        "no video file among the sources: no NVDEC decode host")  # cameras are read with OpenCV
    assert declines(RunConfig(sources=[CLIP])).startswith(
        "decoder auto reads this job with OpenCV (one video stream of 1394 frames of 0.3 Mpx")
    assert declines(RunConfig(sources=[CLIP], max_frames=4, repeat=2)).startswith(
        "decoder auto reads this job with OpenCV (2 video streams of 3 Mpx of frames in all")


def test_auto_joins_for_a_job_read_with_nvdec_where_a_daemon_is_found():
    """2 clips with decoder nvdec, and 8 clips (3,700 Mpx of frames: NVDEC by decoder auto where PyNvVideoCodec
    is installed), are jobs that auto puts under MPS; without the driver's daemon (the CPU machine) it stays
    off and says why."""
    nvdec = RunConfig(sources=[CLIP] * 2, decoder="nvdec")
    assert declines(nvdec) is None
    if importlib.util.find_spec("PyNvVideoCodec") is None:  # decoder auto would read the job with OpenCV
        assert declines(RunConfig(sources=[CLIP] * 8)) == (
            "decoder auto reads this job with OpenCV (PyNvVideoCodec is not installed)")
    else:
        assert declines(RunConfig(sources=[CLIP] * 8)) is None
    if shutil.which(CONTROL) is None:
        out = resolved(nvdec)
        assert out.mps == "off" and out.chosen["mps"] == f"{CONTROL} (the NVIDIA driver's MPS daemon) is not on PATH"


def test_mps_errors_are_one_line_naming_the_option():
    rc, _, err = cli("run", "--mps", "--device", "cpu", "--max-frames", "2", "--no-progress")
    assert rc == 2 and err.strip() == ("posefuse: --mps: shares one GPU between the run's processes: not with "
                                       "device 'cpu', the multigpu runner or gpus")
    rc, _, err = cli("run", "--mps", "yes", "--device", "cpu")
    assert rc == 2 and "argument --mps: invalid choice: 'yes'" in err
    if shutil.which("nvidia-cuda-mps-control") is None:  # no NVIDIA driver here: nothing to start
        rc, _, err = cli("run", "--mps", "--max-frames", "2", "--no-progress")
        assert rc == 2 and err.strip() == ("posefuse: --mps: nvidia-cuda-mps-control (the NVIDIA driver's MPS "
                                           "daemon) is not on PATH")


def test_a_watcher_runs_its_quit_once_its_process_is_killed(tmp_path):
    """watch_exit's contract, as join() uses it for a daemon it starts: the command gets 'quit' once the
    process that started the watcher has ended, here by SIGKILL (no exit handler runs), and not before."""
    got = tmp_path / "quit"
    command = [sys.executable, "-c", f"import sys; open({str(got)!r}, 'w').write(sys.stdin.read())"]
    code = ("import os, sys, time; from posefuse.runners.mps import watch_exit; "
            f"watch_exit({command!r}, dict(os.environ)); print('watching', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "watching"
    time.sleep(1.0)
    assert not got.exists()  # the process lives: nothing told to quit
    p.kill()
    p.wait()
    deadline = time.monotonic() + 20
    while not (got.exists() and got.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert got.read_text() == "quit\n"


def _daemons() -> int:
    """MPS processes on this machine (control daemons and their servers)."""
    return len(subprocess.run(["pgrep", "-f", "nvidia-cuda-mps-"], capture_output=True, text=True).stdout.split())


@pytest.mark.gpu
def test_a_default_nvdec_job_is_an_mps_client_with_the_poses_of_one_without(tmp_path):
    """The sample clip's first 96 frames as 2 NVDEC streams, by default (mps auto) and with --mps off: the
    report says the default's process became a client of a daemon started for it and why, every frame's
    poses are the same, and the daemon has gone within 20 s of the process's exit."""
    if shutil.which("nvidia-cuda-mps-control") is None:
        pytest.skip("no nvidia-cuda-mps-control on this GPU machine")
    before = _daemons()
    runs = {}
    for name, extra in (("plain", ["--mps", "off"]), ("mps", [])):
        out, poses = tmp_path / f"{name}.json", tmp_path / f"{name}.jsonl"
        rc, _, err = cli("run", "--source", CLIP, CLIP, "--decoder", "nvdec", "--max-frames", "96", "--no-progress",
                         "--out", str(out), "--save-json", str(poses), *extra)
        assert rc == 0, err[-2000:]
        runs[name] = (json.loads(out.read_text()), [json.loads(x) for x in poses.read_text().splitlines()])
    report, lines = runs["mps"]
    assert report["mps"].startswith("client of the MPS daemon at ") and "started for this process" in report["mps"]
    assert report["chosen"]["mps"].startswith("the run reads video files with NVDEC in decode hosts")
    assert "mps" not in runs["plain"][0] and "mps" not in runs["plain"][0]["chosen"]
    key = lambda r: (r["stream"], r["frame"])  # noqa: E731
    assert len(lines) == 192 and sorted(lines, key=key) == sorted(runs["plain"][1], key=key)
    deadline = time.monotonic() + 20
    while _daemons() > before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _daemons() == before
