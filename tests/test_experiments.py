"""CPU smoke tests of the experiment scripts, so they do not rot between GPU sessions."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import helpers

ROOT = helpers.ROOT


def test_accuracy_script_on_a_few_frames(tmp_path):
    out = tmp_path / "acc.json"
    r = subprocess.run([sys.executable, "experiments/accuracy.py", "--device", "cpu", "--max-frames", "2", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    s = rep["precisions"]["fp32"]["all"]
    assert s["frames"] == 2 + 2 + 2 + 2 and s["matched_fraction"] == 1.0 and all(rep["precisions"]["fp32"]["met"].values())


def test_run_notebook_executes_cells_and_reports_errors(tmp_path):
    run_notebook = helpers.load_experiment("run_notebook")

    def nb(*cells):
        return {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                           "source": [c]} for c in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

    p = tmp_path / "ok.ipynb"
    p.write_text(json.dumps(nb("x = 21", "print(x * 2)\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])")))
    assert run_notebook.run(str(p)) == 0
    cells = json.loads(p.read_text())["cells"]
    assert cells[1]["outputs"][0]["text"] == ["42\n"] and "image/png" in cells[1]["outputs"][1]["data"]
    p.write_text(json.dumps(nb("1 / 0", "print('not reached')")))
    assert run_notebook.run(str(p)) == 1
    cells = json.loads(p.read_text())["cells"]
    assert cells[0]["outputs"][0]["ename"] == "ZeroDivisionError" and cells[1]["outputs"] == []


def test_reports_reproduce_the_recorded_targets():
    """bench_report's target checks, re-run on the recorded rows, give the recorded verdicts; the README
    generator builds its section from results/."""
    bench_report = helpers.load_experiment("bench_report")
    readme_results = helpers.load_experiment("readme_results")

    for name in ("kernels", "pipeline"):
        run = json.loads((ROOT / "results" / f"{name}.json").read_text())["runs"][-1]
        again = bench_report.evaluate(name, run["rows"])
        assert [(t["target"], t["met"]) for t in again] == [(t["target"], t["met"]) for t in run["targets"]]
        assert bench_report.markdown(name, [run]).startswith(f"# {name}: measured results")
    sec = readme_results.section()
    assert sec.startswith(readme_results.BEGIN) and sec.endswith(readme_results.END) and "Fused pipeline" in sec


def test_readme_figures_leave_out_an_old_checkouts_runs_and_runs_in_a_changed_environment():
    readme_results = helpers.load_experiment("readme_results")
    runs = [{"command": "mine"}, {"command": "old", "checkout": "abc"},
            {"command": "tried", "environ": {"TORCH_CUDNN_V8_API_DISABLED": "1"}}]
    assert [r["command"] for r in readme_results.own_runs(runs)] == ["mine"]


def test_benchmark_summary_reads_per_call_with_the_anchor_ratio():
    """The session summary of ``--benchmark-only`` on the recorded kernel rows: time per call is one batch
    (not a round of many calls), and each row's ratio to its anchor is frames/s over the anchor's."""
    bench_report = helpers.load_experiment("bench_report")
    rows = json.loads((ROOT / "results" / "kernels.json").read_text())["runs"][-1]["rows"]
    lines = bench_report.summary_lines(rows)
    assert len(lines) == len(rows) + 2
    for r, line in zip(rows, lines[2:]):
        ms = float(line[58:].split()[0].replace(",", ""))
        assert abs(ms - r["ms_per_batch"]) <= 0.0005 + 1e-3 * r["ms_per_batch"], (line, r["ms_per_batch"])
        if r["kernel"] == "letterbox" and r["impl"] == "cupy":
            torch_row = bench_report._get(rows, "letterbox", impl="torch", src=r["src"], batch=r["batch"])
            assert line.endswith(f"{r['frames_per_s'] / torch_row['frames_per_s']:.2f}x torch")


def test_cpu_soak_60_seconds_nothing_lost_no_growth(tmp_path):
    """The reliability issue's CI soak: 60 s of the dynamic runner over looping real video on the CPU
    (reference kernels). Memory growth <= 1% after warm-up and zero lost frames, asserted.
    Throughput stability is measured and reported but not asserted here: on a shared 2-core machine the
    CPU's own speed moves by more than the bound within a minute (same code, measured ratios last/first of
    0.66 to 1.18 between runs); the recorded GPU soak (results/soak.json) is where the 5% bound is held."""
    import os

    out = tmp_path / "soak.json"
    # glibc: a fixed mmap threshold returns the 1 MB frame buffers to the system at once; with its default
    # adaptive threshold and per-thread arenas, RSS wanders by +-1.5% within a minute (measured), which is
    # heap noise, not growth. Long-running deployments set the same.
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "65536"}
    r = subprocess.run([sys.executable, "experiments/soak.py", "--duration", "60", "--device", "cpu", "--streams", "2",
                        "--period", "1", "--warmup", "10", "--imgsz", "320", "--batch", "8", "--max-frames", "16",
                        "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    rc = r.returncode
    res = json.loads(out.read_text())
    ev = res["evaluation"]
    assert res["report"]["results"] > 0 and res["report"]["drops"] == {}
    assert rc in (0, 1) and "checks" in ev, r.stderr[-2000:]  # 1: a check failed (asserted one by one below)
    assert ev["checks"]["zero_lost_frames"] and ev["checks"]["rss_mib_growth_le_1pct"], ev
    # The 24-hour extrapolation is computed and reported, but a 50-second fit cannot bound it: RSS moves by
    # +-10 MiB with the frames in flight, so the fitted slope extrapolates to anywhere from -1600% to +600%
    # from run to run of the same code (measured), and asserting it would pass or fail at random. The
    # recorded GPU soak (results/soak.json, 450 s) is where it is held.
    assert ev["rss_mib"]["extrapolated_24h"] is not None
    assert ev["throughput"]["first"] > 0 and ev["throughput"]["last"] > 0
    assert ev["samples_after_warmup"] >= 40 and sum(res["results_per_second"]) == res["report"]["results"]


def test_soak_over_loopback_cameras_counts_each_outage_and_loses_nothing(tmp_path):
    """The live soak's harness on the CPU: two ffmpeg cameras at 5 fr/s, one killed and restarted and one
    stalled every 8 s; the sources reconnect (counted per stream), no source fails, no frame is lost."""
    import shutil

    import pytest

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (.ci/run installs it)")
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, "experiments/soak.py", "--duration", "30", "--device", "cpu", "--streams", "2",
                        "--cameras", "--fps", "5", "--outage-every", "8", "--period", "2", "--imgsz", "320",
                        "--batch", "4", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.exists(), r.stderr[-2000:]
    res = json.loads(out.read_text())
    events = [e for _, _, e in res["cameras"]["outages"]]
    assert events.count("killed") >= 2 and events.count("restarted") >= 2 and events.count("stalled") >= 2
    per = res["cameras"]["per_stream"]
    assert sum(st["network.reconnects"] for st in per.values()) >= 2, per
    assert res["failed_sources"] == {} and res["report"]["drops"] == {}
    assert res["evaluation"]["checks"]["zero_lost_frames"]


def test_camera_opens_beside_an_old_checkout(tmp_path):
    """experiments/camera_opens.py on the CPU: two loopback cameras opened through the decode hosts by this
    checkout and by a copy of it standing in as the old one (imported first, as gpu_run.sh's .old is); both
    report the sample's 10 fr/s and the page lists a row per checkout."""
    import shutil

    import pytest

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (.ci/run installs it)")
    old = tmp_path / "old"
    shutil.copytree(ROOT, old / "posefuse", ignore=shutil.ignore_patterns(".git", ".offline", ".old", "results"))
    r = subprocess.run([sys.executable, "experiments/camera_opens.py", "--cameras", "2", "--rounds", "1", "--old",
                        str(old), "--old-label", "copy", "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "camera_opens.json").read_text())["runs"][-1]["rows"]
    assert [x["checkout"] for x in rows] == ["this", "copy"] and all(x["fps"] == 10 and x["cameras"] == 2 for x in rows)
    assert "| copy | 1 | 2 |" in (tmp_path / "camera_opens.md").read_text()


def test_paced_intake_delivers_every_paced_frame_and_times_it(tmp_path):
    """experiments/paced_intake.py on the CPU: 3 streams paced at 30 fr/s for 2 s through one and two decode
    hosts: every frame comes (60 a stream), its median lateness not negative (a frame is lent at its due time),
    and the page has a row per host count; the same decoding without the hosts is timed on a thread per core and
    a thread per stream."""
    r = subprocess.run([sys.executable, "experiments/paced_intake.py", "--streams", "3", "--processes", "1", "2",
                        "--seconds", "2", "--rounds", "1", "--alone-s", "1", "--out-dir", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    run = json.loads((tmp_path / "paced_intake.json").read_text())["runs"][-1]
    rows = run["rows"]
    assert [x["processes"] for x in rows] == [1, 2]
    assert all(x["frames"] == 180 and x["late_ms"]["p50"] >= 0 for x in rows)
    assert {x["threads"] for x in run["opencv_alone"]} == {min(3, os.cpu_count()), 3}
    assert all(x["frames_per_s"] > 0 and x["cpu_ms_per_frame"] > 0 for x in run["opencv_alone"])
    assert "| 3 | 2 | 1 |" in (tmp_path / "paced_intake.md").read_text()


def test_runners_bench_markdown_from_a_recorded_shape():
    runners_bench = helpers.load_experiment("runners_bench")

    rep = {"frames_per_s": 100.0, "latency_ms": {"p50": 1.0, "p99": 2.0}, "usage": {}}
    run = {"env": {"date": "d", "card": "c", "gpus": 1}, "command": "x", "streams": 8,
           "e2e": {"768x432": {"nvdec_alone": {"frames_per_s": 200.0}, "pipeline_alone": {"frames_per_s": 150.0},
                               "runners": {"dynamic": rep}, "best_runner": "dynamic", "e2e_frames_per_s": 100.0,
                               "e2e_over_bound": 100 / 150, "limited_by": "pipeline",
                               "predict_serial": {"frames_per_s": 10.0}, "e2e_over_predict_serial": 10.0}},
           "realtime": {"clips": {"1080p": {"rows": [{"streams": 50, "held": True, "runs": [
                            {"streams": 50, "frames_per_s": 1500.0, "latency_ms": {"p50": 5.0, "p99": 9.0},
                             "drops": {}, "gpu_util_mean": None, "cpu_percent_mean": 50.0}] * 2 + [
                            {"streams": 50, "frames_per_s": 1400.0, "latency_ms": {"p50": 5.0, "p99": 9.0},
                             "drops": {}, "gpu_util_mean": 40.0, "cpu_percent_mean": 50.0,
                             "gpu_mem_used_mib_max": 2048.0,
                             "failed": {"/d/clip.mp4#7": "source /d/clip.mp4: NVDEC could not decode its first "
                                                         "frame"}}]}],
                                             "max_streams_p99_le_50ms": 50}},
                        "max_wait_ms": 10, "batch": 64, "seconds": 6, "repeats": 3}}
    md = runners_bench.markdown([run])
    assert "| 768x432 | 8 | 200 | 150 | 100 (dynamic) | 0.67 | pipeline | 10.0 | 10.0x |" in md
    assert "Real time, 1080p" in md and ">= 95% of the offered frames/s): **50**" in md
    assert "| 50 | 2 | 1500 | 5.0 | 9.0 | 0 | 0 | None | - | 50 | 1.00 |" in md  # records before the two columns
    assert "| 50 | 3 | 1400 | 5.0 | 9.0 | 0 | 1 | 40 | 2.0 | 50 | 1.00 |" in md
    assert "Failed streams (all runs): 1 x NVDEC could not decode its first frame" in md


def test_runners_bench_page_shows_each_decoders_live_run_and_an_mps_run_beside_the_plain_one():
    runners_bench = helpers.load_experiment("runners_bench")

    def run(date, **kw):
        return {"env": {"date": date}, "command": date, **kw}

    e2e, e2e_mps = run("1", e2e={"a": {}, "b": {}}), run("4", e2e={"a": {}, "b": {}}, mps=True)
    cpu_old, cpu, nvdec = (run("2", realtime={"decoder": "cpu"}), run("3", realtime={"decoder": "cpu"}),
                           run("5", realtime={"decoder": "nvdec"}))
    mps_live, old = run("6", realtime={"decoder": "nvdec"}, mps=True), run("7", realtime={}, checkout="abc")
    compiled_a = run("8", e2e={"a": {}}, mps=True, compile="default")
    mps_a = run("9", e2e={"a": {}}, mps=True, compile="off")  # hides run 4's a, not its b
    shown = runners_bench.latest_runs([e2e, cpu_old, cpu, e2e_mps, nvdec, mps_live, old, compiled_a, mps_a])
    assert [r["command"] for r in shown] == ["9", "8", "7", "5", "4", "3", "1"]  # newest first; no MPS live run


def test_compile_bench_start_rows_old_and_split():
    compile_bench = helpers.load_experiment("compile_bench")

    old = {"mode": "off", "cache": "-", "process_wall_s": 6.2, "build_s": 1.3, "capture_s": 2.2}
    new = {"mode": "default", "cache": "warm, profiled", "process_wall_s": 11.0, "build_s": 1.0, "capture_s": 5.0,
           "exit_s": 0.5, "interpreter_and_torch_s": 4.5, "profile": [["torch/_inductor/x.py:1(load)", 3.25]]}
    split = {**new, "cache": "warm", "import_s": 1.2, "profile": []}
    parts = {"mode": "default", "batch": 64, "frames_per_s": 14268.4, "results_host_ms": 0.3,
             "gpu_ms": {"letterbox..rescale": 4.483, "d2h": 0.086}, "backbone_graph_ms": 4.308}
    nhwc = {**parts, "canvas": "channels_last", "backbone_graph_ms": 4.1, "backbone_graph_ms_planar": 4.4}
    variants = [{"way": "uncompiled", "backbone_graph_ms": 7.0, "compile_s": 0.01, "max_abs_diff": 0.0},
                {"way": "torch.compile freezing", "backbone_graph_ms": 3.5, "compile_s": 30.0, "max_abs_diff": 0.004}]
    md = compile_bench.markdown([{"env": {"date": "d"}, "command": "c", "start": [old, new, split],
                                  "parts": [parts, nhwc], "variants": variants}])
    assert "| torch.compile freezing | 3.500 | 2.00x | 30.0 | 0.004 |" in md  # against the first (uncompiled) row
    assert "| off | - | 6.2 | - | 1.3 | - | 2.2 | - |" in md  # a row from before the import was timed apart
    assert "| default | warm, profiled | 11.0 | 4.5 | 1.0 | - | 5.0 | 0.5 |" in md
    assert "| default | warm | 11.0 | 4.5 | 1.0 | 1.2 | 5.0 | 0.5 |" in md
    assert "- 3.25 s `torch/_inductor/x.py:1(load)`" in md
    # a planar canvas's row (before the letterbox wrote it channels-last), then a channels-last one's
    assert "| default | 64 | 14,268 | 4.483 | 0.086 | planar | 4.308 | 0.175 | 0.300 | 4.308 | - | - |" in md
    assert "| default | 64 | 14,268 | 4.483 | 0.086 | channels-last | 4.100 | 0.383 | 0.300 | 4.400 | 4.100 | - |" in md


def test_phase_table_smoke_on_the_cpu(tmp_path):
    """Every phase row the CPU can run (predict, the threaded runners with the reference kernels), a few
    frames each: the script, its JSON, markdown and plot do not rot."""
    r = subprocess.run([sys.executable, "experiments/phase_table.py", "--device", "cpu", "--predict-frames", "2",
                        "--max-frames", "2", "--streams", "2", "--out-dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((tmp_path / "phase_table.json").read_text())
    assert [x["phase"] for x in doc["rows"]] == ["baseline", "phase1", "phase2", "phase3"]
    assert all(x["frames"] > 0 and not x["drops"] for x in doc["rows"]) and doc["rows"][0]["speedup"] == 1.0
    assert (tmp_path / "phase_table.md").read_text().count("| phase | what |") == 1 and (tmp_path / "phase_table.png").exists()


def test_plots_from_the_recorded_results(tmp_path):
    import shutil

    plots = helpers.load_experiment("plots")

    for f in ("phase_table.json", "kernels.json"):
        shutil.copy(ROOT / "results" / f, tmp_path / f)
    made = plots.main(["--results", str(tmp_path)])
    assert set(made) == {"phase_table.png", "latency_cdf.png", "stage_breakdown.png", "roofline.png"}
    assert all((tmp_path / m).stat().st_size > 10_000 for m in made)


def test_startup_job_benchmark_smoke(tmp_path):
    """experiments/startup.py times user jobs as fresh processes: a posefuse job and its Ultralytics twin,
    both timed from start to exit, the posefuse report's start-up split beside the wall time."""
    r = subprocess.run([sys.executable, "experiments/startup.py", "--device", "cpu", "--repeats", "1", "--jobs", "e",
                        "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    job = json.loads((tmp_path / "startup.json").read_text())["runs"][-1]["jobs"]["e"]
    runs = job["posefuse"][""]
    assert runs[0]["frames"] == 50 and job["ultralytics"][0]["frames"] == 50
    # in sequence, from the interpreter's start to the clock's (the command line's steps, then run()'s)
    assert list(runs[0]["startup_s"]) == ["interpreter", "imports", "config", "setup", "engine", "warmup", "sources"]
    # what the run chose, from its report: the options as resolved, and why (on the CPU: no MPS)
    assert runs[0]["ran"]["mps"] == "off" and runs[0]["ran"]["compile"] == "off" and "mps" in runs[0]["chosen"]
    assert job["ultralytics_over_posefuse"][""] > 0 and "| e: a folder of 50 images |" in (tmp_path / "startup.md").read_text()


def test_startup_page_gives_the_64_clip_jobs_rate_against_its_runs():
    startup = helpers.load_experiment("startup")
    row = {"process_wall_s": 40.0, "frames": 89216, "run_frames_per_s": 2788.0, "startup_s": {}}
    job = {"posefuse": {"": [row]}, "posefuse_median_s": {"": 40.0}, "ultralytics_median_s": None,
           "ultralytics_over_posefuse": {"": None}}
    md = startup.markdown([{"env": {"date": "d"}, "command": "c", "jobs": {"f": job}}])
    assert "| f: 64 clips as one job (--repeat 64) |" in md
    assert "89,216 frames in 40.0 s of process wall, 2,230 fr/s: 0.80 of its run's own rate (2,788 fr/s" in md


def test_lap_iterations_counts_both_forms_and_both_solve_as_lap(tmp_path):
    """experiments/lap_iterations.py on the walking clip (several people): every problem's solution equals
    lap.lapjv's in both forms, and the rectangular form (track.cu's) takes fewer steps than lap's square
    extended problem."""
    clip = helpers.data_path("face-demographics-walking.gif")
    r = subprocess.run([sys.executable, "experiments/lap_iterations.py", "--clip", clip, "--frames", "35",
                        "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    run = json.loads((tmp_path / "lap_iterations.json").read_text())["runs"][-1]
    assert run["problems"] > 0 and run["same_as_lap"] == {"extended": run["problems"], "rectangular": run["problems"]}
    assert run["steps"]["rectangular"] < run["steps"]["extended"]
    assert (tmp_path / "lap_iterations.md").read_text().startswith("# The tracker's assignment, in steps")


def test_derived_clips_are_what_their_tests_assume(tmp_path):
    """crowd_clip's clips, made here (ffmpeg): the B-frame copy holds B-frames (what the exact-frame NVDEC test
    exists for) and every frame of the sample; a mosaic has its grid's size and frame count."""
    import shutil

    import pytest

    if shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg is not here (.ci/run installs it)")
    crowd_clip = helpers.load_experiment("crowd_clip")

    def probe(path, entries):
        r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", *entries, "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, check=True)
        return r.stdout.split()

    b = crowd_clip.bframes(tmp_path / crowd_clip.BFRAMES)
    types = probe(b, ["-show_entries", "frame=pict_type"])
    assert len(types) == 1394 and types.count("B") > 100, (len(types), {t: types.count(t) for t in set(types)})
    m = crowd_clip.make(tmp_path / "m.mp4", frames=12, side=2, tile=(64, 36))
    assert probe(m, ["-count_frames", "-show_entries", "stream=width,height,nb_read_frames"]) == ["128,72,12"]


def test_stacks_sums_py_spys_samples_per_process_and_thread(tmp_path):
    """experiments/stacks.py on py-spy's collapsed stacks of the shape serve_bench --profile-dir records: a
    decode host's stacks name the server first and carry a command holding ';'; with --merge the host's
    numbered threads are one row; --match charges a wait to the package's frame that waits."""
    stacks = helpers.load_experiment("stacks")
    server = 'process 10:"python -m posefuse.runners.cli serve --port 0"'
    host = 'process 11:"python -B -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=10)"'
    path = tmp_path / "p.txt"
    path.write_text("\n".join([
        f"{server};thread (20): posefuse-gpu-0;Thread.run (threading.py:982);_batcher (runners/concurrent.py:455) 30",
        f"{server};{host};thread (21): Thread-2 (_run);_run (runners/sources/pool.py:90);"
        "HostRows.wait_free (runners/sources/pool.py:94);Condition.wait (threading.py:355) 50",
        f"{server};{host};thread (22): Thread-3 (_run);read_frame (runners/sources/opencv.py:25) 20",
    ]) + "\n")
    got = stacks.parse(str(path), merge=True)
    assert set(got) == {("posefuse.runners.cli serve", "posefuse-gpu-N"), ("spawned child", "Thread-N (_run)")}
    assert sum(got[("spawned child", "Thread-N (_run)")].values()) == 70
    text = stacks.summary(str(path), match="runners/", merge=True)
    assert "spawned child | Thread-N (_run): 70 samples (70.0% of all)" in text
    assert "71.4%  HostRows.wait_free (runners/sources/pool.py:94)" in text  # 50 of the thread's 70
