"""User jobs by the clock on the wall: each job is a fresh process (``posefuse run`` and the same job through
Ultralytics ``predict``), timed from start to exit, side by side in one call.

    python experiments/startup.py [--repeats 3] [--jobs a,b,c,d,e] [--posefuse-args "..." ...] [--normal-exit]
                                  [--out-dir results]

Jobs: (a) one 768x432 clip, (b) one 1080p clip, (c) 8 clips (the 768x432 clip 8 times), (d) 64 frames of
the 768x432 clip (the fixed cost), (e) a folder of 50 images, (f) 64 clips as one job (``--repeat 64``: its
frames over the process wall against the run's own rate). ``--posefuse-args`` are the options of the
posefuse runs (default: none, the command line's defaults); given several times, each set of options is a
configuration of its own, run beside the others. Each posefuse run also writes its report, so the
start-up split (interpreter, imports, engine, sources, warm-up), the shutdown split, the time to the first
result and the run's own steady frames/s stand beside the wall time; ``exit_s`` is the process wall after
the report was written (the interpreter's exit). ``--normal-exit`` runs each configuration a second time
through ``main()`` and ``sys.exit`` (the interpreter's full teardown) instead of the ``posefuse`` command's
``console()`` (os._exit once flushed), labelled '<options> [normal exit]'. Writes results/startup.{json,md}
(runs appended).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

PREDICT = """
import sys
from posefuse.fusion.backbone import load_ultralytics
yolo = load_ultralytics()
half = sys.argv[1] == "cuda"
n = 0
for src in sys.argv[2:]:
    for r in yolo.predict(src, stream=True, verbose=False, device=0 if half else "cpu", quantize=16 if half else None):
        n += 1
print(n)
"""


NORMAL_EXIT = "[normal exit]"
MAIN = "import sys; from posefuse.runners.cli import main; sys.exit(main(sys.argv[1:]))"


def jobs(tmp: Path, max_frames: int | None) -> dict:
    """{job: (sources, posefuse extra args)}; the folder job's 50 images are written into ``tmp``."""
    clip, clip1080 = harness.data_path(harness.CLIP), harness.data_path(harness.CLIP_1080)
    folder = tmp / "images"
    folder.mkdir()
    import cv2

    for i, f in enumerate(harness.read_video(clip, 200)[150:200]):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), f)
    cap = [] if max_frames is None else ["--max-frames", str(max_frames)]
    return {"a": ([clip], cap), "b": ([clip1080], cap), "c": ([clip] * 8, cap), "d": ([clip], ["--max-frames", "64"]),
            "e": ([str(folder)], []), "f": ([clip], ["--repeat", "64", *cap])}


def timed(cmd: list, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    return time.perf_counter() - t0, r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", default="a,b,c,d,e")
    ap.add_argument("--posefuse-args", action="append", default=None,
                    help="options of the posefuse runs, e.g. '--runner dynamic'; repeat for several configurations")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--max-frames", type=int, default=None, help="frames per clip (smoke runs; 64 for job d)")
    ap.add_argument("--no-ultralytics", action="store_true")
    ap.add_argument("--normal-exit", action="store_true", help="each configuration also through main() and sys.exit")
    ap.add_argument("--ultralytics-jobs", default="a,b,d,e",
                    help="the jobs timed through Ultralytics too (c, 8 clips, takes ~8x job a's 34 s per run)")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    configs = a.posefuse_args or [""]
    if a.normal_exit:
        configs += [f"{c} {NORMAL_EXIT}".strip() for c in configs]
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        table = jobs(tmp, a.max_frames)
        for job in a.jobs.split(","):
            sources, extra = table[job]
            rows = out.setdefault(job, {"sources": len(sources), "posefuse": {c: [] for c in configs},
                                        "ultralytics": []})
            for k in range(a.repeats):
                for c in configs:
                    rep = tmp / f"r{job}{k}.json"
                    rep.unlink(missing_ok=True)
                    opts = c.replace(NORMAL_EXIT, "").split()
                    entry = ["-c", MAIN] if NORMAL_EXIT in c else ["-m", "posefuse.runners.cli"]
                    cmd = [sys.executable, *entry, "run", "--source", *sources, "--device", device, "--no-progress",
                           "--out", str(rep), *extra, *opts]
                    wall, r = timed(cmd, tmp)
                    row = {"process_wall_s": wall, "returncode": r.returncode}
                    if rep.exists():
                        doc = json.loads(rep.read_text())
                        written = doc.get("process_wall_s")
                        row.update(frames=doc["overall"]["results"], startup_s=doc["startup_s"],
                                   shutdown_s=doc.get("shutdown_s"), run_wall_s=doc["overall"].get("wall_s"),
                                   report_written_s=written, exit_s=wall - written if written else None,
                                   first_result_s=doc["overall"].get("first_result_s"),
                                   run_frames_per_s=doc["overall"]["frames_per_s"],
                                   steady_frames_per_s=doc["overall"].get("steady_frames_per_s"),
                                   streams_in_s=doc["overall"].get("streams_in_s"),
                                   startup_overlap_s=doc.get("startup_overlap_s"),
                                   ran={**{k: doc.get(k) for k in ("runner", "decoder", "backend", "batch", "compile")},
                                        "mps": (doc.get("config") or {}).get("mps")},
                                   chosen=doc.get("chosen"))
                    else:
                        row["error"] = r.stderr[-1500:]
                    rows["posefuse"][c].append(row)
                    print(job, "posefuse", repr(c), row, flush=True)
                if not a.no_ultralytics and job in a.ultralytics_jobs.split(","):
                    srcs = sources if job != "d" else [_first_frames(tmp, sources[0], 64)]
                    wall, r = timed([sys.executable, "-c", PREDICT, device, *srcs], tmp)
                    urow = {"process_wall_s": wall, "returncode": r.returncode,
                            "frames": int(r.stdout.split()[-1]) if r.returncode == 0 and r.stdout.split() else None}
                    if r.returncode:
                        urow["error"] = r.stderr[-1500:]
                    rows["ultralytics"].append(urow)
                    print(job, "ultralytics", urow, flush=True)
    for job, rows in out.items():
        rows["posefuse_median_s"] = {c: _median(r) for c, r in rows["posefuse"].items()}
        u = rows["ultralytics_median_s"] = _median(rows["ultralytics"])
        rows["ultralytics_over_posefuse"] = {c: u / p if p and u else None for c, p in rows["posefuse_median_s"].items()}
    run = harness.new_run("startup.py", argv, device=device, jobs=out)
    harness.record(a.out_dir, "startup", run, markdown)
    return run


def _median(rows: list) -> float | None:
    walls = [x["process_wall_s"] for x in rows if not x.get("returncode")]
    return statistics.median(walls) if walls else None


def _first_frames(tmp: Path, clip: str, n: int) -> str:
    """The first ``n`` frames of ``clip`` as a video of their own (the same job for predict)."""
    import cv2

    frames = harness.read_video(clip, n)
    path = tmp / f"first{n}.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        w.write(f)
    w.release()
    return str(path)


def markdown(runs: list) -> str:
    lines = ["# User jobs by the clock on the wall (process start to exit)", ""]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for run in reversed(runs):
        lines += harness.run_heading(run) + [
                  "| job | posefuse options | posefuse s (median) | every run | Ultralytics s (median) | "
                  "Ultralytics / posefuse | first result s | split of the last run (s): start-up; run; shutdown; exit |",
                  "|---|---|---:|---|---:|---:|---:|---|"]
        for job, r in run["jobs"].items():
            for c, rows in r["posefuse"].items():
                every = ", ".join(f"{x['process_wall_s']:.1f}" for x in rows)
                last = (rows or [{}])[-1]
                split = ", ".join(f"{k} {v:.2f}" for k, v in (last.get("startup_s") or {}).items())
                if last.get("run_wall_s") is not None:
                    split += f"; run {last['run_wall_s']:.2f}"
                if last.get("shutdown_s"):
                    split += "; shutdown " + ", ".join(f"{k} {v:.2f}" for k, v in last["shutdown_s"].items())
                if last.get("exit_s") is not None:
                    split += f"; exit {last['exit_s']:.2f}"
                ran = last.get("ran") or {}
                opts = f"`{c}`" if c else "(defaults)"
                if ran:
                    opts += " -> " + ", ".join(f"{k} {v}" for k, v in ran.items() if v is not None)
                lines.append(f"| {job}: {harness.STARTUP_JOBS.get(job, job)} | {opts} | {fmt(r['posefuse_median_s'][c], '.1f')} | "
                             f"{every} | {fmt(r['ultralytics_median_s'], '.1f')} | "
                             f"{fmt(r['ultralytics_over_posefuse'][c], '.2f')}{'x' if r['ultralytics_over_posefuse'][c] else ''} | {fmt(last.get('first_result_s'), '.2f')} | "
                             f"{split} |")
        for job, r in run["jobs"].items():
            for c, rows in r["posefuse"].items():
                if job == "f" and rows and rows[-1].get("frames"):
                    x = rows[-1]
                    job_fps = x["frames"] / x["process_wall_s"]
                    lines += ["", f"Job f{' (' + c + ')' if c else ''}, the last run: {x['frames']:,} frames in "
                              f"{x['process_wall_s']:.1f} s of process wall, {job_fps:,.0f} fr/s: "
                              f"{job_fps / x['run_frames_per_s']:.2f} of its run's own rate "
                              f"({x['run_frames_per_s']:,.0f} fr/s; issue 31's aim >= 0.8)."]
                    if x.get("steady_frames_per_s"):  # the rate while every stream ran, from the last one's join
                        lines[-1] += (f" Its steady rate {x['steady_frames_per_s']:,.0f} fr/s (every stream in "
                                      f"{x['streams_in_s']:.2f} s after the run's start): "
                                      f"{job_fps / x['steady_frames_per_s']:.2f} of it.")
                    if (x.get("startup_overlap_s") or {}).get("sources_open") is not None:
                        lines[-1] += f" The sources opened in {x['startup_overlap_s']['sources_open']:.2f} s."
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
