"""A failing output ends the run the same way with every runner: the output named in one line, the frames
not delivered recorded as drops with the reason, the report written (or one line saying it could not be),
exit 1, no traceback. /dev/full takes the opening of a file and fails its writes (ENOSPC)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import helpers

CLIP = helpers.data_path("one-by-one-person-detection.mp4")
pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "posefuse.runners.cli", "run", "--device", "cpu", "--source", CLIP,
                        "--imgsz", "320", "--batch", "8", "--no-progress", *args],
                       capture_output=True, text=True, timeout=600)
    return r.returncode, r.stderr


@pytest.mark.parametrize("runner", ["serial", "batched", "dynamic", "pipelined"])
@pytest.mark.parametrize("output", ["--save-json", "--save-coco"])
def test_a_failing_output_is_named_its_frames_accounted_and_the_report_written(tmp_path, runner, output):
    out = tmp_path / "report.json"
    rc, err = cli("--runner", runner, output, "/dev/full", "--out", str(out), "--max-frames", "120")
    lines = [x for x in err.splitlines() if x.startswith("posefuse:")]
    assert rc == 1 and "Traceback" not in err, err[-2000:]
    option = output[2:].replace("-", "_")
    assert any(f"{option} /dev/full: No space left on device" in x for x in lines), err[-2000:]
    rep = json.loads(out.read_text())
    o = rep["overall"]
    assert o["frames_in"] == o["results"] + sum(o["drops"].values())  # every frame a result or a drop
    assert any(option in why for why in rep["failed_sources"].values())
    if option == "save_json":  # the run stopped: what was not delivered is a drop naming the failure
        assert all(reason.startswith("run stopped: result stage failed") for reason in o["drops"])
        if runner == "batched":  # the batch in flight when the sink failed is not handed to it again
            assert sum(o["drops"].values()) >= 1


def test_a_report_that_cannot_be_written_is_one_line():
    rc, err = cli("--out", "/dev/full", "--max-frames", "4")
    assert rc == 1 and "Traceback" not in err, err[-2000:]
    lines = [x for x in err.splitlines() if x.startswith("posefuse:")]
    assert lines == ["posefuse: out /dev/full: the report could not be written: [Errno 28] No space left on device"]


def test_a_batch_that_cannot_fit_is_refused_naming_the_limit():
    """--batch is bounded by the device's memory (issue 33: --batch 100000 took 8.3 GB for 400 frames)."""
    from posefuse import ConfigError, RunConfig
    from posefuse.runners.config import max_batch

    most, why = max_batch("cpu", 640)
    assert most >= 32 and "GiB free" in why
    with pytest.raises(ConfigError) as e:
        RunConfig(device="cpu", runner="batched", batch=100000).validated()
    assert e.value.option == "batch" and f"at most {most} frames fit on cpu" in str(e.value)
    rc, err = cli("--runner", "batched", "--batch", "100000", "--max-frames", "4")
    assert rc == 2 and err.strip().splitlines()[-1].startswith("posefuse: --batch: at most"), err[-1000:]


def test_a_live_run_that_drops_most_frames_says_so_and_why(tmp_path):
    """8 paced 30 fr/s streams in live mode on the CPU: most frames come too late; the run warns in one line
    with the reason and what to change, and the report flags it (issue 33: 12 of 15,838 frames, exit 0, no word)."""
    out = tmp_path / "r.json"
    rc, err = cli("--runner", "dynamic", "--repeat", "8", "--paced", "--fps", "30", "--mode", "live", "--late-ms", "20",
                  "--loop", "--duration-s", "3", "--out", str(out))
    warnings = [x for x in err.splitlines() if x.startswith("posefuse: warning:")]
    assert rc == 0 and len(warnings) == 1, err[-2000:]
    assert "most as 'late'" in warnings[0] and "fewer streams" in warnings[0] and "or a GPU" in warnings[0]
    rep = json.loads(out.read_text())
    assert rep["warnings"] and rep["warnings"][0] in warnings[0]
