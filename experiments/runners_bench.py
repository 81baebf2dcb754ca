"""The runners issue's figures, measured in one process on one card (and, with --gpus 2, the multi-GPU one).

    python experiments/runners_bench.py [--streams 8] [--seconds 6] [--out-dir results] [--only e2e,realtime,multigpu]

* e2e, for each clip: 8 copies as 8 streams, each looping the clip for E2E_SECONDS from its open (the copies
  start spread over it), NVDEC + fused pipeline, fp16, end to
  end (compressed file -> poses in host memory) against (a) NVDEC decoding alone (the same 8 NVDEC sources as
  the run reads, every frame released at once) and (b) the fused pipeline alone on NV12 frames already on
  the GPU, both measured in the same run; and against Ultralytics ``predict`` frame by frame on the same card.
  The e2e figure is the run's rate while all 8 streams run (the report's ``steady_frames_per_s``: from the
  last stream's join to the first one's end), the whole run's beside it.
* realtime: S live 30 frames/s streams (the clip looping, decoded by OpenCV and released at 30 frames/s each)
  under the dynamic runner; p99 latency from release to result, S raised until p99 exceeds 50 ms.
* multigpu: the 8-stream NVDEC workload on 1 GPU and on all GPUs (worker process per GPU).
Every runner figure is a ``posefuse.run`` of a RunConfig, as the command line runs it.

Writes results/runners.json (runs appended) and results/runners.md (latest run).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path

import harness

PIPELINE: dict = {}  # RunConfig options every run of this process gets (--compile)
CLIPS = {"768x432": "one-by-one-person-detection.mp4", "1080p": "one-by-one-person-1080p.mp4",
         "720p": "mosaic-720p.mp4"}  # the last a 2x2 mosaic of the sample clip (crowd_clip.MOSAICS), 0-4 people
DECODED = {"cpu": "OpenCV (host frames)", "nvdec": "NVDEC (GPU frames)"}


def clip_path(label: str) -> str:
    """The clip of ``label`` in the data folder, a mosaic made there first where it is missing (crowd_clip)."""
    import crowd_clip

    name = CLIPS[label]
    return crowd_clip.mosaic_path(name) if name in crowd_clip.MOSAICS else harness.data_path(name)


def read_released(srcs: list) -> dict:
    """Every frame of ``srcs``, each source read on a thread of its own and each frame released at once:
    frames, wall seconds, frames/s, and ``spans_s``: each source's first and last frame, seconds after the
    start."""
    counts = [0] * len(srcs)
    spans = [[None, None] for _ in srcs]

    def run(k):
        for f in srcs[k].frames():
            f.release()
            counts[k] += 1
            spans[k][1] = time.perf_counter() - t0
            if spans[k][0] is None:
                spans[k][0] = spans[k][1]

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(srcs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"frames": sum(counts), "wall_s": wall, "frames_per_s": sum(counts) / wall, "spans_s": spans}


E2E_SECONDS = 6.0  # each e2e stream's reading, from its open: ~4 s with every stream in after ~2 s of opens


def nvdec_alone(path: str, streams: int, chunk: int = 64) -> dict:
    """The production NVDEC path without the pipeline: ``streams`` NVDEC sources (``open_source(...,
    decoder='nvdec')``: the checkout's decode hosts or processes, one frame per decoder call, each copied into
    the stream's rows), opened before the clock, read by :func:`read_released`: the ceiling the run's
    ingest can give, with the NVDEC engines' mean use meanwhile (near 100: the card's decoders are the limit)."""
    from posefuse.runners.gpuinfo import UsageSampler
    from posefuse.runners.sources import open_source

    srcs = [open_source(path, decoder="nvdec", chunk=chunk) for _ in range(streams)]
    usage = UsageSampler(period=0.1).start()
    r = read_released(srcs)
    usage.stop()
    for s in srcs:
        s.close()
    return {"frames": r["frames"], "wall_s": r["wall_s"], "frames_per_s": r["frames_per_s"], "form": "sources",
            "nvdec_util_mean": harness.usage_stat(usage.summary(), "nvdec_util_percent")}


def captured_batch(path: str, batch: int):
    """A PosePipeline and the first ``batch`` NV12 frames of ``path`` (decoded once by the NVDEC source, kept
    on the GPU), the pipeline's graph for them captured (its backbone compiled as --compile says): what
    :func:`pipeline_alone` replays."""
    from posefuse import PosePipeline
    from posefuse.runners.sources import open_source

    pipe = PosePipeline(compile=PIPELINE.get("compile", "off"))
    src = open_source(path, max_frames=batch, decoder="nvdec", chunk=batch)
    frames = []
    for f in src.frames():
        frames.append(f.image.clone())
        f.release()
    src.close()
    pipe.submit(frames, "nv12").result()  # capture
    return pipe, frames


def replay(pipe, frames: list, going) -> tuple[int, float]:
    """Submits ``frames`` (NV12, on the GPU) to ``pipe`` again and again while ``going(seconds so far)``, the
    next batch submitted before the last is read back: (frames run, wall seconds)."""
    pend, n = None, 0
    t0 = time.perf_counter()
    while going(time.perf_counter() - t0):
        p = pipe.submit(frames, "nv12")
        if pend is not None:
            pend.result()
            n += len(frames)
        pend = p
    if pend is not None:
        pend.result()
        n += len(frames)
    return n, time.perf_counter() - t0


def pipeline_alone(path: str, batch: int, seconds: float = 3.0) -> dict:
    """The fused pipeline on NV12 frames already on the GPU (:func:`captured_batch`): batches of ``batch``,
    the next submitted before the last is read back (:func:`replay`)."""
    import torch

    pipe, frames = captured_batch(path, batch)
    torch.cuda.synchronize()
    n, wall = replay(pipe, frames, lambda t: t < seconds)
    return {"frames": n, "wall_s": wall, "frames_per_s": n / wall, "batch": batch}


def e2e(path: str, streams: int, batch: int, runner: str, per_process: int | None, chunk: int,
        seconds: float = E2E_SECONDS) -> dict:
    """``streams`` NVDEC streams of ``path`` through ``posefuse.run`` (graphs captured before its clock), each
    looping its clip for ``seconds`` from its open, so that every stream runs at once for seconds after the
    last has opened (they open one after another; a clip read once can end before: results/DECISIONS.md)."""
    from posefuse import RunConfig, run

    # the option only where asked (None: the checkout's default): checkouts before the decode hosts (beside
    # this one, --checkout) name it streams_per_decode_process
    hosts = {} if per_process is None else {"streams_per_decode_host": per_process}
    rep = run(RunConfig(sources=[path], repeat=streams, runner=runner, decoder="nvdec", batch=batch,
                        max_wait_ms=5.0, chunk=chunk, loop=True, duration_s=seconds, progress=False, **hosts,
                        **PIPELINE))
    r = rep.overall
    # the figure: the streams' rate while all ran at once (the report's steady_frames_per_s): a job's
    # streams join its run as they open, so the whole run's rate includes their opens (checkouts before
    # that report no steady rate: they opened every stream before the clock)
    r["run_frames_per_s"] = r["frames_per_s"]
    if r.get("steady_frames_per_s"):
        r["frames_per_s"] = r["steady_frames_per_s"]
    r.update(failed=rep.failed, startup_s=rep.startup_s, streams_per_decode_host=per_process)
    return r


def predict_serial(path: str, n: int = 300) -> dict:
    from posefuse.fusion.backbone import load_ultralytics

    yolo = load_ultralytics()
    frames = harness.read_video(path, n)
    for f in frames[:5]:
        yolo.predict(f, verbose=False, quantize=16, device=0)
    t0 = time.perf_counter()
    for f in frames:
        yolo.predict(f, verbose=False, quantize=16, device=0)
    wall = time.perf_counter() - t0
    return {"frames": len(frames), "wall_s": wall, "frames_per_s": len(frames) / wall, "half": True}


def opencv_alone(path: str, threads: int, seconds: float = 3.0) -> dict:
    """OpenCV decoding alone, BGR frames as the CPU sources read them: ``threads`` threads, each with a
    capture of one FFmpeg thread, looping the clip for ``seconds``: the host's ceiling for host frames."""
    import cv2

    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(k):
        while time.perf_counter() < stop:
            cap = cv2.VideoCapture(path, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
            while time.perf_counter() < stop and cap.read()[0]:
                counts[k] += 1
            cap.release()

    ts = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return {"threads": threads, "frames": sum(counts), "frames_per_s": sum(counts) / wall}


def realtime(path: str, s: int, seconds: float, max_wait_ms: float, batch: int, decoder: str = "cpu",
             network: bool = False, per_host: int | None = None) -> dict:
    """``s`` live 30 fr/s streams of the looping clip for ``seconds`` through ``posefuse.run``, decoded by
    ``decoder`` ('cpu': OpenCV, host frames, as network cameras are read; 'nvdec'); ``network``: each
    stream a camera on loopback (ffmpeg serving the clip at 30 fr/s over HTTP, cameras.py) instead of the
    file released at 30 fr/s. With the run's thread split (seconds per activity, summed over the threads of
    each kind) and the frames decoded outside the sources' pinned rows. ``per_host``: NVDEC streams a decode
    host serves (0: one host; None: the run's default)."""
    from posefuse import RunConfig, run

    if network:
        import cameras

        cams = cameras.Cameras(path, s, fps=30.0).start()
        try:
            rep = run(RunConfig(sources=cams.urls, runner="dynamic", decoder="cpu", batch=batch,
                                max_wait_ms=max_wait_ms, duration_s=seconds, progress=False, **PIPELINE))
        finally:
            cams.stop()
    else:
        # checkouts up to 795c01f (measured beside this one as .old) call the pace option ``realtime``
        fields = {f.name for f in dataclasses.fields(RunConfig)}
        pace = {"paced": True} if "paced" in fields else {"realtime": True}
        hosts = {} if per_host is None else {"streams_per_decode_host": per_host}
        rep = run(RunConfig(sources=[path], repeat=s, runner="dynamic", decoder=decoder, batch=batch,
                            max_wait_ms=max_wait_ms, fps=30.0, loop=True, duration_s=seconds, progress=False,
                            **pace, **hosts, **PIPELINE))
    r = rep.overall

    def summed(count: str):  # a source count (Source.counts) summed over the streams
        return sum((st.get("source") or {}).get(count, 0) for st in rep.streams.values())

    return {"streams": s, "decoder": decoder, "frames": r["results"], "frames_per_s": r["frames_per_s"],
            "frames_outside_pinned_rows": summed("host_rows.new_arrays"),
            "latency_ms": r["latency_ms"], "drops": r["drops"],
            "gpu_util_mean": harness.usage_stat(r.get("usage"), "gpu_util_percent"),
            "nvdec_util_mean": harness.usage_stat(r.get("usage"), "nvdec_util_percent"),
            "cpu_percent_mean": harness.usage_stat(r.get("usage"), "cpu_percent"),
            "gpu_mem_used_mib_max": harness.usage_stat(r.get("usage"), "gpu_mem_used_mib", "max"),
            "thread_s": r.get("runner_thread_s"), "wall_s": r.get("wall_s"), "failed": rep.failed,
            "reconnects": summed("network.reconnects"), "frames_before_start": summed("network.frames_before_start"),
            "latency_per_second": r.get("latency_per_second"), "gpu_ms_per_batch": r.get("gpu_ms_per_batch"),
            "waits_ms": r.get("waits_ms")}


def multigpu(path: str, streams: int, n_gpus: int, batch: int, chunk: int) -> dict:
    """The NVDEC streams sharded over ``n_gpus`` worker processes; the parent's clock runs from every
    worker warm (model loaded, graphs captured) to the last worker's end message."""
    from posefuse import RunConfig, run

    rep = run(RunConfig(sources=[path], repeat=streams, runner="multigpu", gpus=[f"cuda:{i}" for i in range(n_gpus)],
                        decoder="nvdec", batch=batch, max_wait_ms=5.0, chunk=chunk, progress=False, **PIPELINE))
    r = rep.overall
    return {"gpus": n_gpus, "frames": r["results"], "wall_s": r["wall_s"], "frames_per_s": r["frames_per_s"],
            "failed": rep.failed, "usage": r.get("usage")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=6.0, help="realtime: seconds per S")
    ap.add_argument("--only", default="e2e,realtime", help="comma list of: e2e, realtime, multigpu")
    ap.add_argument("--realtime-s", default="50,100,150,200,300,400")
    ap.add_argument("--realtime-repeats", type=int, default=3, help="realtime: runs per S (S holds when every run does)")
    ap.add_argument("--realtime-all", action="store_true", help="realtime: measure every S, also after one did not hold")
    ap.add_argument("--realtime-clips", default="768x432", help="realtime: comma list of: " + ", ".join(CLIPS))
    ap.add_argument("--realtime-decoder", default="cpu", choices=("cpu", "nvdec"),
                    help="realtime: 'cpu' (OpenCV, host frames, as cameras are read) or 'nvdec'")
    ap.add_argument("--realtime-per-host", type=int, default=None,
                    help="realtime, nvdec: NVDEC streams per decode host (0: one host; default: the run's)")
    ap.add_argument("--checkout", default="", help="the commit of the code measured when it is not this checkout "
                    "(an old one imported first: gpu_run.sh oldrunners); the README leaves such runs out")
    ap.add_argument("--realtime-network", action="store_true",
                    help="realtime: the streams are cameras on loopback (ffmpeg over HTTP), read with OpenCV")
    ap.add_argument("--clips", default=",".join(CLIPS), help="comma list of: " + ", ".join(CLIPS))
    ap.add_argument("--runners", default="dynamic", help="e2e runners to measure: pipelined, dynamic, streams")
    ap.add_argument("--per-process", default="default",
                    help="e2e: comma list of NVDEC streams per decode host (0: all; default: the run's default)")
    ap.add_argument("--repeats", type=int, default=3, help="e2e: runs per configuration (its median is reported)")
    ap.add_argument("--compile", default=None, choices=("off", "default", "max-autotune", "saved"),
                    help="the backbone compiled by Inductor in every run and in the pipeline alone (the first compile "
                         "cold, later ones load it; default: the run's own choice; checkouts before the option have "
                         "none)")
    ap.add_argument("--mps", action="store_true",
                    help="this process (every pipeline and run in it) and its decode hosts as clients of a CUDA MPS "
                         "server, joined or started by posefuse (RunConfig.mps) before CUDA is initialized here")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args()
    if a.mps:
        from posefuse.runners.mps import join

        join()
    import torch

    if torch.cuda.is_available():  # CUDA started here, after --mps's join: every run's mps 'auto' then finds it
        torch.cuda.init()  # started and stays as this flag says (checkouts without the option alike)
    if a.compile:
        PIPELINE["compile"] = a.compile

    only = set(a.only.split(","))
    run = {"env": harness.environment(), "command": "python experiments/runners_bench.py " + " ".join(sys.argv[1:]),
           **({"checkout": a.checkout} if a.checkout else {}), **({"mps": True} if harness.under_mps() else {}),
           **PIPELINE,
           "streams": a.streams, "batch": a.batch, "chunk": a.chunk}
    if "e2e" in only:
        run["e2e"] = {}
        for label, clip in CLIPS.items():
            if label not in a.clips.split(","):
                continue
            path = clip_path(label)
            # the bound: the fastest of ``repeats`` runs of each (the e2e figure: the median of its runs)
            r = {"nvdec_alone": max((nvdec_alone(path, a.streams, a.chunk) for _ in range(a.repeats)),
                                    key=lambda x: x["frames_per_s"])}
            print(label, "nvdec alone", r["nvdec_alone"], flush=True)
            r["pipeline_alone"] = pipeline_alone(path, a.batch)
            print(label, "pipeline alone", r["pipeline_alone"], flush=True)
            r["runners"] = {}
            pers = [None if x == "default" else int(x) for x in a.per_process.split(",")]
            for name, per in itertools.product(a.runners.split(","), pers):
                reps = sorted((e2e(path, a.streams, a.batch, name, per, a.chunk) for _ in range(a.repeats)),
                              key=lambda x: x["frames_per_s"])
                rep = reps[len(reps) // 2]  # the median run stands for the configuration; every run is kept
                rep["repeats_frames_per_s"] = [x["frames_per_s"] for x in reps]
                name = f"{name}, " + ("the default decode hosts" if per is None else "one decode host" if per == 0
                                      else f"{per} stream(s) per decode host")
                r["runners"][name] = rep
                print(label, "e2e", name, rep["results"], "frames", f"{rep['frames_per_s']:.0f} fr/s", rep["failed"],
                      flush=True)
            r["predict_serial"] = predict_serial(path)
            print(label, "predict serial", r["predict_serial"], flush=True)
            best = max(r["runners"].items(), key=lambda kv: kv[1]["frames_per_s"])
            dec_alone = nvdec_bound(r)
            bound = min(dec_alone, r["pipeline_alone"]["frames_per_s"])
            r["best_runner"] = best[0]
            r["e2e_frames_per_s"] = best[1]["frames_per_s"]
            r["e2e_over_bound"] = best[1]["frames_per_s"] / bound
            r["limited_by"] = "nvdec" if dec_alone < r["pipeline_alone"]["frames_per_s"] else "pipeline"
            r["e2e_over_predict_serial"] = best[1]["frames_per_s"] / r["predict_serial"]["frames_per_s"]
            run["e2e"][label] = r
            _write(run, a.out_dir)
    if "realtime" in only:
        run["realtime"] = {"max_wait_ms": 10.0, "batch": 64, "seconds": a.seconds, "repeats": a.realtime_repeats,
                           "decoder": a.realtime_decoder, "network": a.realtime_network, "clips": {},
                           "streams_per_decode_host": a.realtime_per_host}
        for label in a.realtime_clips.split(","):
            path, rows = clip_path(label), []
            if a.realtime_decoder == "cpu":
                n = os.cpu_count() or 1
                alone = run["realtime"].setdefault("opencv_alone", {})[label] = opencv_alone(path, n)
                print("opencv alone", label, alone, flush=True)
            for s in (int(x) for x in a.realtime_s.split(",")):
                reps = [realtime(path, s, a.seconds, max_wait_ms=10.0, batch=64, decoder=a.realtime_decoder,
                                 network=a.realtime_network, per_host=a.realtime_per_host)
                        for _ in range(a.realtime_repeats)]
                held = harness.realtime_held(reps)
                rows.append({"streams": s, "held": held, "runs": reps})
                print("realtime", label, s, "streams: p99", [f"{r['latency_ms']['p99']:.1f} ms" for r in reps],
                      [f"{r['frames_per_s']:.0f} fr/s" for r in reps],
                      "failed streams", [len(r.get("failed") or {}) for r in reps],
                      "waits p99 ms", [{k: round(v["p99"], 1) for k, v in (r["waits_ms"] or {}).items()} for r in reps],
                      flush=True)
                ok = [r["streams"] for r in rows if r["held"]]
                run["realtime"]["clips"][label] = {"rows": rows, "max_streams_p99_le_50ms": max(ok) if ok else 0}
                _write(run, a.out_dir)
                if not held and not a.realtime_all:
                    break
    if "multigpu" in only:
        n = torch.cuda.device_count()
        path = clip_path("768x432")
        rows = [multigpu(path, a.streams, g, a.batch, a.chunk) for g in sorted({1, n})]
        for r in rows:
            print("multigpu", r["gpus"], f"{r['frames_per_s']:.0f} fr/s", r["failed"], flush=True)
        run["multigpu"] = {"rows": rows, "speedup": rows[-1]["frames_per_s"] / rows[0]["frames_per_s"]}
        _write(run, a.out_dir)


def nvdec_bound(r: dict) -> float:
    """NVDEC decoding alone through the production path: the rate end to end is held to. (Records before
    2026-12-06 also hold the raw batched loops, whose frames could be wrong: not read here.)"""
    return r["nvdec_alone"]["frames_per_s"]


def _write(run: dict, out_dir: str):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runners.json"
    hist = json.loads(path.read_text()) if path.exists() else {"runs": []}
    runs = [r for r in hist["runs"] if r.get("env", {}).get("date") != run["env"]["date"]] + [run]
    path.write_text(json.dumps({"runs": runs}, indent=1, default=float))
    (out / "runners.md").write_text(markdown(runs))


def latest_runs(runs: list) -> list:
    """The runs the page shows, newest first: of the code measured as it stands (no ``checkout``), per clip
    the latest with its e2e figures of each kind (plain, under CUDA MPS; backbone compiled or not), the
    latest with real-time rows per decoder and the latest two with multi-GPU rows (a run holding several
    counts once); and the latest old checkout's real-time run, the comparison made beside it."""
    picked = []
    mine = [r for r in runs if not r.get("checkout")]
    for mps in (False, True):
        for compiled in (False, True):
            kind = [r for r in mine if "e2e" in r and bool(r.get("mps")) == mps
                    and ((r.get("compile") or "off") != "off") == compiled]
            for clip in {c for r in kind for c in r["e2e"]}:
                picked += [r for r in kind if clip in r["e2e"]][-1:]
    picked += [r for r in mine if "multigpu" in r][-2:]
    for decoder in ("cpu", "nvdec"):
        picked += [r for r in mine if "realtime" in r and not r.get("mps")
                   and r["realtime"].get("decoder", "cpu") == decoder][-1:]
    picked += [r for r in runs if "realtime" in r and r.get("checkout")][-1:]
    unique = {id(r): r for r in picked}.values()
    return sorted(unique, key=lambda r: r["env"].get("date", ""), reverse=True)


def markdown(runs: list) -> str:
    lines = ["# Runners (issue #4 figures)", "",
             "The latest run of each kind (end to end, real time, multi-GPU) of the code as it stands, and the latest "
             "old checkout's real-time run beside it; every run is in runners.json.", ""]
    for run in latest_runs(runs):
        env = run["env"]
        driver = str(env.get("driver")).splitlines()[0]  # runs recorded before environment() kept one line per GPU
        lines += [f"## {env.get('date')} — {env.get('card')} x{env.get('gpus')}, driver {driver}, "
                  f"torch {env.get('torch')}, CuPy {env.get('cupy')}, PyNvVideoCodec {env.get('PyNvVideoCodec')}"
                  + (", every process a client of one CUDA MPS server" if run.get("mps") else "")
                  + (f", the backbone compiled ({run['compile']})" if run.get("compile") not in (None, "off")
                     else "") + (f", checkout {run['checkout']}" if run.get("checkout") else ""), "",
                  f"Command: `{run['command']}`", ""]
        if run.get("note"):
            lines += [f"Note: {run['note']}", ""]
        if "e2e" in run:
            lines += ["| clip | streams | NVDEC alone fr/s | pipeline alone fr/s | e2e fr/s (runner) | e2e / min(a, b) "
                      "(target >= 0.90) | limited by | predict frame by frame fr/s | e2e / predict (target >= 25) |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for label, r in run["e2e"].items():
                lines.append(f"| {label} | {run['streams']} | {harness.decoders_alone(r)} | "
                             f"{r['pipeline_alone']['frames_per_s']:.0f} | {r['e2e_frames_per_s']:.0f} "
                             f"({r['best_runner']}) | {r['e2e_over_bound']:.2f} | {r['limited_by']} | "
                             f"{r['predict_serial']['frames_per_s']:.1f} | {r['e2e_over_predict_serial']:.1f}x |")
            lines.append("")
            lines += ["| clip | runner | fr/s (median) | every run fr/s | the whole run fr/s, all streams in at s, "
                      "for s | p50 ms | p99 ms | GPU util % | NVDEC util % | CPU % |", "|---|---|---|---|---|---|---|---|---|---|"]
            for label, r in run["e2e"].items():
                for name, rep in r["runners"].items():
                    gu, du, cpu = (harness.usage_stat(rep.get("usage"), q)
                                   for q in ("gpu_util_percent", "nvdec_util_percent", "cpu_percent"))
                    every = ", ".join(f"{x:.0f}" for x in rep.get("repeats_frames_per_s", [rep["frames_per_s"]]))
                    window = "-" if rep.get("steady_s") is None else f"{rep['steady_s']:.2f}"
                    whole = (f"{rep['run_frames_per_s']:.0f}, {rep['streams_in_s']:.2f}, {window}"
                             if rep.get("streams_in_s") is not None else "-")
                    lines.append(f"| {label} | {name} | {rep['frames_per_s']:.0f} | {every} | {whole} | "
                                 f"{rep['latency_ms']['p50']:.1f} | {rep['latency_ms']['p99']:.1f} | "
                                 f"{gu if gu is None else round(gu)} | {du if du is None else round(du)} | "
                                 f"{cpu if cpu is None else round(cpu)} |")
            lines.append("")
        if "realtime" in run:
            rt = run["realtime"]
            for label, c in harness.realtime_clips(rt).items():
                what = "cameras on loopback (ffmpeg, HTTP), " if rt.get("network") else ""
                per = rt.get("streams_per_decode_host")
                hosts = "" if per is None else (", one decode host" if per == 0 else f", {per} streams per decode host")
                lines += [f"Real time, {label}, {what}decoded by {DECODED[rt.get('decoder', 'cpu')]}{hosts} "
                          f"(dynamic runner, batch "
                          f"{rt['batch']}, max wait {rt['max_wait_ms']} ms, "
                          f"{rt['seconds']} s per run, {rt.get('repeats', 1)} run(s) per S): largest S held (every run: p99 "
                          f"<= 50 ms, no drop, >= 95% of the offered frames/s): **{c.get('max_streams_p99_le_50ms', '-')}**", "",
                          *([f"OpenCV decoding alone on this host ({alone['threads']} threads, one FFmpeg thread "
                             f"each): {alone['frames_per_s']:,.0f} fr/s, the ceiling for host-frame streams.", ""]
                            if (alone := rt.get("opencv_alone", {}).get(label)) else []),
                          "| live 30 fr/s streams | run | fr/s | p50 ms | p99 ms | drops | failed streams | GPU util % "
                          "| GPU memory peak GiB | CPU % | CPU % per stream |",
                          "|---|---|---|---|---|---|---|---|---|---|---|"]
                errors: dict = {}  # a failed stream's error ("source NAME: " left out) -> how many streams
                for row in c["rows"]:
                    for i, r in enumerate(row["runs"]):
                        cpu = r["cpu_percent_mean"]
                        per = "-" if cpu is None else f"{cpu / row['streams']:.2f}"
                        mem = r.get("gpu_mem_used_mib_max")
                        mem = "-" if mem is None else f"{mem / 1024:.1f}"
                        for err in (r.get("failed") or {}).values():
                            why = " ".join((err.split(": ", 1)[1] if err.startswith("source ") else err).split())[:160]
                            errors[why] = errors.get(why, 0) + 1
                        lines.append(f"| {row['streams']} | {i + 1} | {r['frames_per_s']:.0f} | {r['latency_ms']['p50']:.1f} | "
                                     f"{r['latency_ms']['p99']:.1f} | {sum(r['drops'].values())} | "
                                     f"{len(r.get('failed') or {})} | "
                                     f"{r['gpu_util_mean'] if r['gpu_util_mean'] is None else round(r['gpu_util_mean'])} | "
                                     f"{mem} | "
                                     f"{cpu if cpu is None else round(cpu)} | "
                                     f"{per} |")
                lines.append("")
                lines += [f"Failed streams (all runs): {n} x {why}" for why, n in errors.items()]
                lines += [""] if errors else []
        if "multigpu" in run:
            mg = run["multigpu"]
            lines += [f"Multi-GPU ({run['streams']} NVDEC streams): speed-up **{mg['speedup']:.2f}x** (target >= 1.8)", "",
                      "| GPUs | frames | wall s | fr/s |", "|---|---|---|---|"]
            for r in mg["rows"]:
                lines.append(f"| {r['gpus']} | {r['frames']} | {r['wall_s']:.1f} | {r['frames_per_s']:.0f} |")
            lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
