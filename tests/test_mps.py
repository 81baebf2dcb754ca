"""``--mps`` (runners/mps.py): the option's rules and its one-line errors on any machine; on a GPU, a job whose
process and decode hosts are clients of an MPS daemon started for it, with the poses of the same job without
MPS, and the daemon gone after the process."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

import helpers
from posefuse.runners.config import ConfigError, RunConfig

CLIP = helpers.data_path("one-by-one-person-detection.mp4")


def cli(*args, timeout=600):
    r = subprocess.run([sys.executable, "-m", "posefuse.runners.cli", *args], capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("kwargs", [{"device": "cpu"}, {"runner": "multigpu"}, {"gpus": ["cuda:0", "cuda:1"]}])
def test_mps_is_refused_where_no_one_gpu_is_shared(kwargs):
    with pytest.raises(ConfigError, match=r"^mps: shares one GPU"):
        RunConfig(mps=True, **kwargs).check()
    RunConfig(**kwargs).check()


def test_mps_errors_are_one_line_naming_the_option():
    rc, _, err = cli("run", "--mps", "--device", "cpu", "--max-frames", "2", "--no-progress")
    assert rc == 2 and err.strip() == ("posefuse: --mps: shares one GPU between the run's processes: not with "
                                       "device 'cpu', the multigpu runner or gpus")
    if shutil.which("nvidia-cuda-mps-control") is None:  # no NVIDIA driver here: nothing to start
        rc, _, err = cli("run", "--mps", "--max-frames", "2", "--no-progress")
        assert rc == 2 and err.strip() == ("posefuse: --mps: nvidia-cuda-mps-control (the NVIDIA driver's MPS "
                                           "daemon) is not on PATH")


def _daemons() -> int:
    """MPS processes on this machine (control daemons and their servers)."""
    return len(subprocess.run(["pgrep", "-f", "nvidia-cuda-mps-"], capture_output=True, text=True).stdout.split())


@pytest.mark.gpu
def test_a_job_under_mps_is_a_client_with_the_poses_of_one_without(tmp_path):
    """The sample clip's first 96 frames as 2 NVDEC streams, with and without --mps: the report says the
    process became a client of a daemon started for it, every frame's poses are the same, and the daemon
    has gone within 20 s of the process's exit."""
    if shutil.which("nvidia-cuda-mps-control") is None:
        pytest.skip("no nvidia-cuda-mps-control on this GPU machine")
    before = _daemons()
    runs = {}
    for name, extra in (("plain", []), ("mps", ["--mps"])):
        out, poses = tmp_path / f"{name}.json", tmp_path / f"{name}.jsonl"
        rc, _, err = cli("run", "--source", CLIP, CLIP, "--decoder", "nvdec", "--max-frames", "96", "--no-progress",
                         "--out", str(out), "--save-json", str(poses), *extra)
        assert rc == 0, err[-2000:]
        runs[name] = (json.loads(out.read_text()), [json.loads(x) for x in poses.read_text().splitlines()])
    report, lines = runs["mps"]
    assert report["mps"].startswith("client of the MPS daemon at ") and "started for this process" in report["mps"]
    assert "mps" not in runs["plain"][0]
    key = lambda r: (r["stream"], r["frame"])  # noqa: E731
    assert len(lines) == 192 and sorted(lines, key=key) == sorted(runs["plain"][1], key=key)
    deadline = time.monotonic() + 20
    while _daemons() > before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _daemons() == before
