"""The Ray Data archive job measured: one GPU actor against the in-process runner on the same clips, and the
wall time of a simulated CPU cluster of 1, 2 and 3 nodes.

    python experiments/ray_bench.py --gpu [--clips 8]            # one GPU: Ray (1 actor) vs posefuse.run, same call
    python experiments/ray_bench.py --curve [--clips 6 --frames 120 --cpus-per-node 2]

GPU: 8 copies of the 768x432 clip (links) as one archive: ``posefuse.runners.archive.archive`` with one actor
holding the GPU, and ``posefuse.run`` over the same files, each with OpenCV decode and (where PyNvVideoCodec
is installed) NVDEC; steady frames/s (the actor's clock over its calls, warm-up excluded; the run's clock)
and job wall for each, and the actor over the in-process runner with the same decoder.
Curve: ``ray.cluster_utils.Cluster`` with N nodes of ``--cpus-per-node`` CPUs on this machine, one CPU actor
per CPU, the reference kernels at imgsz 320; the wall time of the same clips for N = 1, 2, 3 (one process
per N). Writes results/ray.{json,md} (runs appended).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

CURVE = """
import json, sys, time, ray
from ray.cluster_utils import Cluster
from posefuse import RunConfig
from posefuse.runners.archive import ArchiveConfig, archive
n, cpus, out, clips = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
c = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus})
for _ in range(n - 1):
    c.add_node(num_cpus=cpus)
ray.init(address=c.address, log_to_driver=False)
s = archive(ArchiveConfig(RunConfig(sources=clips, imgsz=320, batch=8, device="cpu"), out_dir=out, segment_frames=60,
                          actors=n * cpus, segments_per_call=1))  # one segment per call: 12 segments over every actor
ray.shutdown(); c.shutdown()
print("RESULT", json.dumps({"nodes": n, "frames": s["frames"], "wall_s": s["wall_s"], "frames_per_s": s["frames_per_s"]}))
"""


def clip_copies(tmp: Path, n: int, frames: int | None) -> list[str]:
    """``n`` copies of the 768x432 clip (links when whole, else its first ``frames`` re-encoded once)."""
    src = harness.data_path(harness.CLIP)
    if frames:
        import cv2

        fr = harness.read_video(src, frames)
        one = tmp / "first.mp4"
        w = cv2.VideoWriter(str(one), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (fr[0].shape[1], fr[0].shape[0]))
        for f in fr:
            w.write(f)
        w.release()
        src = str(one)
    out = []
    for k in range(n):
        p = tmp / f"clip{k}.mp4"
        os.symlink(src, p)
        out.append(str(p))
    return out


def gpu(tmp: Path, clips: list[str]) -> dict:
    import ray

    from posefuse import RunConfig, run
    from posefuse.runners.archive import ArchiveConfig, archive

    import importlib.util

    res = {"nvdec_installed": importlib.util.find_spec("PyNvVideoCodec") is not None}
    for decoder in ("cpu", "nvdec") if res["nvdec_installed"] else ("cpu",):
        t = time.perf_counter()
        rep = run(RunConfig(sources=clips, decoder=decoder, progress=False))
        res[f"in_process_{decoder}"] = {"frames": rep.overall["results"], "frames_per_s": rep.overall["frames_per_s"],
                                        "wall_s": time.perf_counter() - t, "failed": rep.failed, "ran": rep.ran}
    t = time.perf_counter()
    ray.init(num_gpus=1, include_dashboard=False, log_to_driver=False)
    res["ray_init_s"] = time.perf_counter() - t
    for decoder in ("cpu", "nvdec") if res["nvdec_installed"] else ("cpu",):
        s = archive(ArchiveConfig(RunConfig(sources=clips, decoder=decoder), out_dir=str(tmp / f"poses_{decoder}"),
                                  actors=1, gpus_per_actor=1))
        actor = next(iter(s["per_actor"].values()), {})
        base = res[f"in_process_{decoder}"]["frames_per_s"]
        res[f"ray_one_gpu_actor_{decoder}"] = {
            "frames": s["frames"], "frames_per_s": actor.get("frames_per_s"), "job_frames_per_s": s["frames_per_s"],
            "wall_s": s["wall_s"], "actor": actor, "failed": s["failed"], "segments_per_call": s["config"]["segments_per_call"],
            "over_in_process": actor["frames_per_s"] / base if base and actor.get("frames_per_s") else None}
    ray.shutdown()
    return res


def curve(tmp: Path, clips: list[str], cpus: int) -> list[dict]:
    rows = []
    for n in (1, 2, 3):
        r = subprocess.run([sys.executable, "-c", CURVE, str(n), str(cpus), str(tmp / f"poses{n}"), *clips],
                           capture_output=True, text=True, timeout=900)
        line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
        rows.append(json.loads(line[-1][7:]) if line else {"nodes": n, "error": r.stderr[-1500:]})
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--curve", action="store_true")
    ap.add_argument("--clips", type=int, default=None, help="clips (default: 8 for --gpu, 6 for --curve)")
    ap.add_argument("--frames", type=int, default=None, help="frames per clip (default: all; 120 for --curve)")
    ap.add_argument("--cpus-per-node", type=int, default=2)
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    import ray

    run = harness.new_run("ray_bench.py", argv)
    run["env"]["ray"] = ray.__version__
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if a.gpu:
            run["gpu"] = gpu(tmp, clip_copies(tmp, a.clips or 8, a.frames))
            print(json.dumps(run["gpu"], default=str), flush=True)
        if a.curve:
            ctmp = tmp / "curve"
            ctmp.mkdir()
            run["curve"] = {"cpus_per_node": a.cpus_per_node, "host_cpus": os.cpu_count(),
                            "rows": curve(ctmp, clip_copies(ctmp, a.clips or 6, a.frames or 120), a.cpus_per_node)}
    harness.record(a.out_dir, "ray", run, markdown)
    return run


def markdown(runs: list) -> str:
    lines = ["# Ray Data archive job", ""]
    for run in reversed(runs):
        lines += harness.run_heading(run, f", ray {run['env'].get('ray', '-')}")
        if "gpu" in run:
            lines += ["| job | frames | steady frames/s | job wall s |", "|---|---:|---:|---:|"]
            for k, v in run["gpu"].items():
                if isinstance(v, dict):
                    lines.append(f"| {k} | {v.get('frames')} | {v.get('frames_per_s') or 0:,.0f} | {v.get('wall_s', 0):.1f} |")
            lines.append("")
            if "ray_over_in_process_cpu" in run["gpu"]:  # runs before the actor ran its segments as streams
                lines += [f"Ray (one actor) over the in-process runner, both OpenCV decode: "
                          f"{run['gpu']['ray_over_in_process_cpu'] or 0:.2f}", ""]
            for d in ("cpu", "nvdec"):
                r = run["gpu"].get(f"ray_one_gpu_actor_{d}")
                if r:
                    lines.append(f"- Ray, one actor ({r['streams']} segments at once), {d} decode: "
                                 f"{r['over_in_process'] or 0:.2f} of the in-process runner with the same decoder")
            lines.append("")
        if "curve" in run:
            c = run["curve"]
            lines += [f"Simulated cluster: {c['cpus_per_node']} CPUs per node on a host of {c['host_cpus']} CPUs", "",
                      "| nodes | frames | wall s | frames/s |", "|---:|---:|---:|---:|"]
            for r in c["rows"]:
                lines.append(f"| {r['nodes']} | {r.get('frames', '-')} | {r.get('wall_s', 0):.1f} | "
                             f"{r.get('frames_per_s') or 0:.1f} |")
            lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
