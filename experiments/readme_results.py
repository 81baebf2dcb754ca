"""Regenerate README.md's results section from results/*.json (between the results markers).

    python experiments/readme_results.py
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:begin (experiments/readme_results.py) -->", "<!-- results:end -->"


def _load(name):
    """results/<name>.json, or None when it was not recorded."""
    p = ROOT / "results" / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _latest(name):
    d = _load(name)
    return d["runs"][-1] if d else None


def _env(run):
    e = run["environment"]
    return (f"{e.get('card')}, driver {e.get('driver')}, torch {e.get('torch')}, cupy {e.get('cupy')}, "
            f"numba {e.get('numba')}, OpenCV {e.get('cv2')}, ultralytics {e.get('ultralytics')}; {e.get('date')}")


def _row(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return {}


def section() -> str:
    out = [BEGIN, ""]
    k = _latest("kernels")
    if k:
        rows = k["rows"]
        out += [f"**Kernels** ([results/kernels.md](results/kernels.md)): {_env(k)}.", "",
                "| kernel | batch | CuPy | Numba | torch / torchvision | Ultralytics (CPU cv2 / NMS) |",
                "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for b in (1, 64, 256):
            lb = {i: _row(rows, kernel="letterbox", src="768x432", batch=b, impl=i) for i in ("cupy", "numba", "torch", "ultralytics_cv2")}
            out.append(f"| letterbox 768x432 -> 640x640 fp16, frames/s | {b} | "
                       + " | ".join(f"{lb[i].get('frames_per_s', 0):,.0f}" for i in lb) + " |")
        for b in (1, 64, 256):
            dn = {i: _row(rows, kernel="decode_nms_rescale", batch=b, impl=i) for i in ("cupy", "numba", "torchvision", "ultralytics")}
            out.append(f"| decode + NMS + rescale, us/frame | {b} | "
                       + " | ".join(f"{dn[i].get('us_per_frame', 0):,.2f}" for i in dn) + " |")
        out += ["", "| target | measured | met |", "| --- | ---: | --- |"]
        out += [f"| {t['target']} | {t['measured']} | {t['met']} |" for t in k["targets"]]
        out.append("")
    p = _latest("pipeline")
    if p:
        rows = p["rows"]
        out += [f"**Fused pipeline** ([results/pipeline.md](results/pipeline.md)): yolo11n-pose fp16, 768x432 clip, "
                f"rect 384x640; {_env(p)}.", "",
                "| | frames/s | note |", "| --- | ---: | --- |"]
        for impl, b, note in (("backbone_alone", 64, "the ceiling: same module, CUDA graph"),
                              ("posefuse", 64, "GPU uint8 frames -> poses in host memory"),
                              ("backbone_alone", 256, ""), ("posefuse", 256, ""),
                              ("ultralytics_predict", 64, "predict(half=True), host frames")):
            r = _row(rows, impl=impl, batch=b)
            out.append(f"| {impl} bs{b} | {r.get('frames_per_s', 0):,.0f} | {note} |")
        lat = _row(rows, impl="posefuse", batch=1)
        ul = _row(rows, impl="ultralytics_predict", batch=1)
        out.append(f"| latency bs1 (host frame -> host results), p50 / p99 ms | {lat.get('latency_ms_p50', 0):.2f} / "
                   f"{lat.get('latency_ms_p99', 0):.2f} | Ultralytics predict: {ul.get('latency_ms_p50', 0):.2f} ms |")
        mem = [_row(rows, impl="posefuse_memory", batch=b) for b in (1, 64, 256)]
        out.append("| peak GPU memory bs1 / 64 / 256 (MiB) | " + " / ".join(f"{m.get('peak_gpu_mib', 0):,.0f}" for m in mem)
                   + f" | allocations per batch after warm-up: {', '.join(str(m.get('steady_state_allocations')) for m in mem)} |")
        out += ["", "| target | measured | met |", "| --- | ---: | --- |"]
        out += [f"| {t['target']} | {t['measured']} | {t['met']} |" for t in p["targets"]]
        out.append("")
    acc = _load("accuracy")
    if acc:
        out += [f"**Accuracy against Ultralytics predict** ([results/accuracy.json](results/accuracy.json)), every frame of "
                f"the sample footage and the wheel's images; {acc['device']}, {acc['date']}.", "",
                "| precision | frames | their detections | matched (IoU >= 0.98) | extra | keypoint mean error px | max score diff |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for prec, v in acc["precisions"].items():
            s = v["all"]
            out.append(f"| {prec} | {s['frames']} | {s['their_detections']} | {s['matched_fraction']:.4f} | "
                       f"{s['extra_fraction']:.4f} | {s['keypoint_mean_error_px']:.3f} | {s['max_score_diff']:.4f} |")
        out.append("")
    out += _startup() + _regression() + _phases() + _runners() + _soak() + _ingest_soak() + _track_ids() + _tracking() + _heads() + _compile() + _serve() + _ray()
    out.append(END)
    return "\n".join(out)


def _driver(env):
    return str(env.get("driver")).splitlines()[0]


def _phases() -> list:
    d = _load("phase_table")
    if not d:
        return []
    e = d["env"]
    out = [f"**Phases of the plan** ([results/phase_table.md](results/phase_table.md), `{d['command'].strip()}`): "
           f"one process, the 768x432 clip; {e.get('card')}, driver {_driver(e)}, torch {e.get('torch')}, "
           f"CuPy {e.get('cupy')}; {e.get('date')}.", "",
           "![throughput by phase](results/phase_table.png)", "",
           "| phase | what | frames/s | speed-up | p50 / p99 ms | GPU util % | CPU % | MFU |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    f = lambda v, s="{:.0f}": "-" if v is None else s.format(v)  # noqa: E731
    for r in d["rows"]:
        out.append(f"| {r['phase']} | {r['what']} | {r['frames_per_s']:,.0f} | {r['speedup']:.1f}x | "
                   f"{r['latency_ms']['p50']:.0f} / {r['latency_ms']['p99']:.0f} | {f(r['gpu_util_percent'])} | "
                   f"{f(r['cpu_percent'])} | {f(r['mfu'], '{:.2%}')} |")
    out += ["", "Plots: [latency CDFs](results/latency_cdf.png), [stage breakdown](results/stage_breakdown.png), "
            "[letterbox bandwidth against the copy roof](results/roofline.png).", ""]
    return out


def own_runs(runs: list) -> list:
    """The runs of this checkout in its own environment: not an older ``checkout``'s, nor one with an
    ``environ`` override (a variable set to try something)."""
    return [r for r in runs if not r.get("checkout") and not r.get("environ")]


def _runners() -> list:
    d = _load("runners")
    if not d:
        return []
    from harness import decoders_alone, realtime_clips, realtime_held

    runs = d["runs"]
    last = lambda pred: next((r for r in reversed(own_runs(runs)) if pred(r)), None)  # noqa: E731
    out = []
    run = last(lambda r: "e2e" in r and not r.get("mps"))  # the package as a user runs it: no MPS server
    if run:
        e = run["env"]
        out += [f"**Runners** ([results/runners.md](results/runners.md), `{run['command']}`): 8 copies of a clip as 8 "
                f"streams, NVDEC, fp16, the median of its runs per configuration; {e.get('card')} x{e.get('gpus')}, "
                f"driver {_driver(e)}; {e.get('date')}.", "",
                "| clip | NVDEC alone | pipeline alone (frames on GPU) | end to end | e2e / min | e2e / predict frame by frame |",
                "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for label, r in run["e2e"].items():
            out.append(f"| {label} | {decoders_alone(r)} | {r['pipeline_alone']['frames_per_s']:,.0f} | "
                       f"{r['e2e_frames_per_s']:,.0f} ({r['best_runner']}) | {r['e2e_over_bound']:.2f} | "
                       f"{r['e2e_over_predict_serial']:.1f}x |")
    pairs = {}  # clip -> (compiled, uncompiled, run): the latest MPS run compiling, and the uncompiled one after it
    mps = [r for r in own_runs(runs) if "e2e" in r and r.get("mps")]
    for i, r in enumerate(mps):
        if (r.get("compile") or "off") != "off":
            for clip, row in r["e2e"].items():
                off = next((o for o in mps[i + 1:] if (o.get("compile") or "off") == "off" and clip in o["e2e"]), None)
                if off is not None:
                    pairs[clip] = (row, off["e2e"][clip], r)
    if pairs:
        e = next(iter(pairs.values()))[2]["env"]
        out += ["", "Under MPS, the backbone compiled (`--mps --compile default`) against not, in turn on one machine "
                f"({e.get('card')}, {str(e.get('date'))[:10]}): "
                + "; ".join(f"{clip} {c['e2e_frames_per_s']:,.0f} against {o['e2e_frames_per_s']:,.0f} fr/s "
                            f"(e2e / min {c['e2e_over_bound']:.2f} against {o['e2e_over_bound']:.2f})"
                            for clip, (c, o, _) in pairs.items()) + "."]
    per_clip = {}  # each kind's rows (clip, decoder, files or cameras) from its latest day of runs on one card
    for run in (r for r in own_runs(runs) if "realtime" in r and not r.get("mps")  # as it stands: no MPS server,
                and (r.get("compile") or "off") == "off"):  # the backbone uncompiled (compile auto, a run with an end)
        rt, day = run["realtime"], (run["env"].get("card"), str(run["env"].get("date"))[:10])
        for clip, c in realtime_clips(rt).items():
            label = (clip + (", NVDEC" if rt.get("decoder") == "nvdec" else ", OpenCV")
                     + (", cameras on loopback" if rt.get("network") else "")
                     + (f", {rt['streams_per_decode_host']} streams per decode host"
                        if rt.get("streams_per_decode_host") else ""))
            if per_clip.get(label, (None,))[0] != day:
                per_clip[label] = (day, run, {})
            per_clip[label][2].update({x["streams"]: x for x in c["rows"]})
    for label, (day, run, rows) in per_clip.items():  # a run's notes stay in results/runners.json
        held = [S for S, x in rows.items() if realtime_held(x["runs"])]
        def failed(S):  # streams that did not open, in the worst run of S
            n = max(len(r.get("failed") or {}) for r in rows[S]["runs"])
            return f" ({n} of {S} streams failed)" if n else ""

        text = ", ".join(f"S={S}: p99 " + "/".join(f"{r['latency_ms']['p99']:.0f}" for r in rows[S]["runs"]) + " ms"
                         + failed(S) for S in sorted(rows))
        out += ["", f"Paced streams, {label} (dynamic runner, 30 fr/s streams, the p99 of each run; {day[0]}, "
                f"{day[1]}): {text}; largest S held (every run: p99 <= 50 ms, no drop, >= 95% of the offered "
                f"frames/s): {max(held) if held else 'none of those measured'}."]
    for pred, what in ((lambda r: "multigpu" in r and r["streams"] == 8, "the same 8 NVDEC streams"),
                       (lambda r: "multigpu" in r and r["streams"] != 8, None)):
        run = last(pred)
        if run:
            mg = run["multigpu"]
            out += ["", f"Multi-GPU, {what or str(run['streams']) + ' NVDEC streams'} ({run['env'].get('card')} "
                    f"x{run['env'].get('gpus')}, {run['env'].get('date')}): " + ", ".join(
                        f"{x['gpus']} GPU{'s' if x['gpus'] > 1 else ''} {x['frames_per_s']:,.0f} fr/s" for x in mg["rows"])
                    + f" ({mg['speedup']:.2f}x)."]
    return out + [""] if out else []


def _regression() -> list:
    """The latest old-vs-new comparison of each kind (benchmarks, end to end), from results/regression.json
    (a run's note stays there)."""
    d = _load("regression")
    if not d:
        return []
    out = ["**No regression** ([results/regression.md](results/regression.md), `python experiments/regression.py "
           "--old OLD_CHECKOUT`): the same measurements on an older commit and on this code, side by side in one "
           "call each.", "", "| measurement | old | new | new / old | old commit; card, date |",
           "| --- | ---: | ---: | ---: | --- |"]
    for kind in ("bench", "e2e"):
        run = next((r for r in reversed(d["runs"]) if kind in r["command"]), None)
        for row in run["rows"] if run else []:
            out.append(f"| {row['what']} | {row['old']:,.2f} | {row['new']:,.2f} | {row['new_over_old']:.3f} | "
                       f"{run.get('old_label') or '-'}; {run['env'].get('card')}, {run['env'].get('date')} |")
    return out + [""]


def _soak() -> list:
    """The soaks of the decode hosts: looping NVDEC files, tracked (soak_nvdec.json; it supersedes soak.json, the
    same streams untracked on older code) and live cameras with outages, tracked (soak_gpu.json; it supersedes
    soak_cameras.json)."""
    out = []
    for name in ("soak_nvdec", "soak_gpu"):
        s = _load(name)
        if not s:
            continue
        ev = s["evaluation"]
        mem = ", ".join(f"{k.replace('_mib', '')} {ev[k]['growth']:+.2%}" for k in ("torch_allocated_mib",
                                                                                    "nvml_used_mib", "rss_mib") if k in ev)
        cams = s.get("cameras")
        what = (f"{s['streams']} live cameras on loopback at {cams['fps']:g} fr/s, one killed and one stalled every "
                f"{cams['outage_every_s']:g} s ({sum(st.get('network.reconnects', 0) for st in cams['per_stream'].values())} "
                "reconnects)" if cams else f"{s['streams']} looping {s['decoder']} streams")
        what += ", tracked" if s.get("track") else ""
        p99 = s["report"].get("latency_ms", {}).get("p99")
        thr = ev.get("throughput", {}).get("ratio")
        out += [f"**Soak** ([results/{name}.json](results/{name}.json), [plot](results/{name}.png), `{s['command']}`): "
                f"{s['duration_s']:.0f} s, {what}, dynamic batching, "
                f"{s['report']['results']:,} frames at {s['report']['frames_per_s']:,.0f} fr/s, drops "
                f"{s['report']['drops'] or 0}, failed sources {len(s.get('failed_sources') or {})}"
                f"{'' if p99 is None else f', latency p99 {p99:.1f} ms'}; memory growth after "
                f"warm-up: {mem}; throughput last/first window {'-' if thr is None else f'{thr:.3f}'}; all checks "
                f"{'passed' if ev.get('passed') else 'NOT passed'}; {s['env'].get('card')}, {s['date']}.", ""]
    return out


def _startup() -> list:
    """Each job's latest recorded medians (results/startup.json): posefuse with its defaults, and Ultralytics
    where the same run timed it; for job f, its frames over the process wall against its run's own rate."""
    d = _load("startup")
    if not d:
        return []
    from harness import STARTUP_JOBS
    out = ["**User jobs by the clock on the wall** ([results/startup.md](results/startup.md), "
           "`python experiments/startup.py`): process start to exit, the median of a run's repeats, posefuse's defaults; "
           "Ultralytics from the latest run that timed it, the ratio within that run.", "",
           "| job | posefuse s | Ultralytics s | Ultralytics / posefuse | run |", "| --- | ---: | ---: | ---: | --- |"]
    latest, theirs = {}, {}
    for run in own_runs(d["runs"]):
        for job, r in run["jobs"].items():
            if r["posefuse_median_s"].get(""):
                latest[job] = (run, r)
            if r.get("ultralytics_median_s"):
                theirs[job] = (r["ultralytics_median_s"], r["posefuse_median_s"].get(""), run["env"].get("date"))
    for job in sorted(latest):
        run, r = latest[job]
        p = r["posefuse_median_s"][""]
        u, up, udate = theirs.get(job, (None, None, None))
        ratio = "-" if not u else f"{u / up:.2f}x" + ("" if udate == run["env"].get("date") else f" (posefuse {up:.1f} s then)")
        out.append(f"| {job}: {STARTUP_JOBS.get(job, job)} | {p:.1f} | {'-' if not u else f'{u:.1f} ({udate})'} | {ratio} | "
                   f"{run['env'].get('card')}, {run['env'].get('date')} |")
    if "f" in latest:
        last = latest["f"][1]["posefuse"][""][-1]
        if last.get("frames") and last.get("run_frames_per_s"):
            job_rate = last["frames"] / last["process_wall_s"]
            out += ["", f"Job f's last run: {last['frames']:,} frames in {last['process_wall_s']:.1f} s of process "
                    f"wall, {job_rate:,.0f} fr/s: {job_rate / last['run_frames_per_s']:.2f} of its run's own rate "
                    f"({last['run_frames_per_s']:,.0f} fr/s)."]
    return out + [""]


def _ray() -> list:
    """The latest GPU run (one actor against the in-process runner) and the latest simulated-cluster curve."""
    doc = _load("ray")
    recorded = doc["runs"] if doc else []
    out = []
    c = next((x for x in reversed(recorded) if "curve" in x), None)
    if c:
        rows = ", ".join(f"{row['nodes']} node{'s' if row['nodes'] > 1 else ''} {row['wall_s']:.1f} s"
                         for row in c["curve"]["rows"] if "wall_s" in row)
        out = [f"**Ray Data, simulated cluster** (`{c['command']}`, {c['curve']['cpus_per_node']} CPU per node on a "
               f"host of {c['curve']['host_cpus']} CPUs, {c['env'].get('date')}): the same clips' wall time with {rows}.", ""]
    r = next((x for x in reversed(recorded) if "gpu" in x), None)
    if not r:
        return out
    g, env = r["gpu"], r["env"]
    runs = [(d, g[f"ray_one_gpu_actor_{d}"]) for d in ("cpu", "nvdec") if f"ray_one_gpu_actor_{d}" in g]
    if not runs:  # the layout of runs before the actor ran its segments as streams
        a = g["ray_one_gpu_actor"]
        runs = [("cpu", {**a, "over_in_process": g["ray_over_in_process_cpu"]})]
    parts = [f"{d} decode {a['frames_per_s']:,.0f} fr/s against the in-process run's "
             f"{g[f'in_process_{d}']['frames_per_s']:,.0f} ({a['over_in_process']:.2f}; job {a['wall_s']:.1f} s)"
             for d, a in runs]
    init = g.get("ray_init_s", runs[0][1].get("ray_init_s"))
    return [f"**Ray Data, one GPU actor** ([results/ray.md](results/ray.md), `{r['command']}`), 8 copies of the "
            f"768x432 clip: the actor with {'; with '.join(parts)}; `ray.init` {init:.1f} s; {env.get('card')}, "
            f"{env.get('date')}.", ""] + out


def _track_ids() -> list:
    t = _latest("track_ids")
    if not t:
        return []
    env = t["env"]
    clips = "; ".join(f"{name} {r['agree_fraction']:.2%} of {r['frames']}" for name, r in t["clips"].items())
    return [f"**Track ids against Ultralytics' BYTETracker** ([results/track_ids.md](results/track_ids.md), "
            f"`{t['command']}`), the same detections, frames whose ids agree: {clips}; backend {t['backend']} on "
            f"{env.get('card') or 'the CPU (Numba: its CUDA simulator)'}, {env.get('date')}.", ""]


def _ingest_soak() -> list:
    """The latest run of experiments/ingest_soak.py (results/ingest_soak.json)."""
    r = _latest("ingest_soak")
    if not r:
        return []
    env, slopes = r["env"], r["slopes_mib_per_h"]
    return [f"**The ingest alone** ([results/ingest_soak.md](results/ingest_soak.md), `{r['command']}`, "
            f"{env.get('card') or 'CPU'}, {env.get('date')}): {r['cameras']} loopback cameras at {r['fps']:g} fr/s "
            f"with an outage every {r['outage_every_s']:g} s for {r['duration_s'] / 60:.0f} min, no model: "
            f"{r['samples'][-1]['frames']:,} frames; decode-process RSS slope after warm-up "
            + ", ".join(f"{v:+.2f}" for v in slopes.values()) + " MiB/h (target <= 1).", ""]


def _tracking() -> list:
    """The latest run of experiments/track_bench.py on this code (results/track_e2e.json), with the old
    checkout's run of the same call beside it where there is one."""
    runs = (_load("track_e2e") or {"runs": []})["runs"]
    new = next((r for r in reversed(runs) if not r.get("checkout") and r.get("e2e")), None)
    if not new:
        return []
    old = next((r for r in runs[runs.index(new) + 1:] if r.get("checkout")), None)
    env = new["env"]
    out = [f"**Tracking** ([results/track_e2e.md](results/track_e2e.md), `{new['command']}`, {env.get('card')}, "
           f"{env.get('date')}{'; beside ' + old['checkout'] + ' in the same call' if old else ''}): "
           f"{new['streams']} NVDEC streams end to end with `--track` over without.", "",
           "| clip | without fr/s | with fr/s | ratio of medians | each round's ratio |"
           + (f" {old['checkout']} ratio |" if old else ""), "| --- | ---: | ---: | ---: | --- |" + (" ---: |" if old else "")]
    for clip, e in new["e2e"].items():
        rounds = ", ".join(f"{w / o:.2f}" for o, w in zip(e["runs_frames_per_s"]["without"], e["runs_frames_per_s"]["with"]))
        out.append(f"| {clip} | {e['without']['frames_per_s']:,.0f} | {e['with']['frames_per_s']:,.0f} | "
                   f"{e['ratio']:.3f} | {rounds} |" + (f" {old['e2e'][clip]['ratio']:.3f} |" if old else ""))
    # the tracker's and the start-up's latest figures, from the run that measured them (a run may do e2e only)
    ours = own_runs(runs)
    tr, sr = _latest_with(ours, "tracker"), _latest_with(ours, "start")
    t, st = (tr or {}).get("tracker"), (sr or {}).get("start") or {}
    if t:
        out += ["", f"The tracker on the crowded clip ({t['people_per_frame']:.1f} detections a frame, {t['streams']} "
                f"streams x {t['frames']} frames a call): {t['ours_us_per_frame']:.1f} us a frame, "
                f"{t['over_ultralytics']:.0f}x Ultralytics' BYTETracker fed the same detections"
                + (f" ({old['checkout']}: {old['tracker']['over_ultralytics']:.1f}x)" if old and old.get("tracker") else "")
                + f" ({tr['env'].get('card')}, {tr['env'].get('date')})."]
    warm, cold = (st.get(k, {}).get("startup_s") or {} for k in ("track_warm", "track_cold"))
    if "tracker" in warm:
        out += ["", f"Start-up: the tracker's kernels add {warm['tracker']:.2f} s to a job once built (CuPy's kernel "
                f"cache), {cold.get('tracker', 0):.1f} s on a machine's first tracked job ({sr['env'].get('card')}, "
                f"{sr['env'].get('date')})."]
    return out + [""]


def _latest_with(runs: list, key: str):
    """The latest of ``runs`` (a results/<name>.json's) that holds ``key``, or None."""
    return next((r for r in reversed(runs) if r.get(key)), None)


def _heads() -> list:
    """The latest equality figures of each pose family (results/heads.json), and the latest speed rows (a GPU
    run's), each with its command."""
    runs = (_load("heads") or {"runs": []})["runs"]
    h = _latest_with(runs, "equality")
    if not h:
        return []
    env = h["env"]
    eq = "; ".join(f"{r['model']} ({r['precision']}) {r['matched']}/{r['their_detections']} matched, "
                   f"{r['our_detections'] - r['matched']} extra, keypoints within {r['keypoint_max_error_px']:.3f} px"
                   for r in h["equality"])
    out = [f"**Every pose family against predict** ([results/heads.md](results/heads.md), `{h['command']}`), "
           f"checkpoints built from the wheel's yaml files, predict on the same device in the same precision, "
           f"{h['equality'][0]['frames']} frames: {eq}; {env.get('card') or 'CPU'}, {env.get('date')}.", ""]
    s = _latest_with(runs, "post")
    if s:
        fps = {r["model"]: r["frames_per_s"] for r in s.get("pipeline", [])}
        e2e = {r["model"]: r["frames_per_s"] for r in s.get("e2e", [])}
        out += [f"Speed (`{s['command']}`, {s['env'].get('card')}, {s['env'].get('date')}):", "",
                "| model | post-processing us/frame bs64 | Ultralytics us/frame | speedup | pipeline bs64 fr/s | "
                "8 NVDEC streams fr/s |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        out += [f"| {r['model']} | {r['posefuse_us_per_frame']:.2f} | {r['ultralytics_us_per_frame']:.1f} | "
                f"{r['speedup']:.0f}x | {fps.get(r['model'], 0):,.0f} | {e2e.get(r['model'], 0):,.0f} |"
                for r in s["post"]] + [""]
    return out


def _compile() -> list:
    """The pipeline alone, off against compiled, per batch from the latest run that measured both at it (its
    pipeline or parts rows); the poses' equality (the latest run with it); the start-up of a fresh process
    (the latest run with it); each with its command (results/compile.json). Runs of an older ``checkout``
    or environment are left out."""
    runs = own_runs((_load("compile") or {"runs": []})["runs"])
    per_batch = {}  # batch -> (off, compiled, run): the latest run holding both
    for r in runs:
        rows = r.get("pipeline", []) + r.get("parts", [])
        for b in {x["batch"] for x in rows}:
            off, on = _row(rows, mode="off", batch=b), _row(rows, mode="default", batch=b)
            if off and on:
                per_batch[b] = (off, on, r)
    used, out = [], []

    def ref(run) -> int:
        """``run``'s number in the list of commands below the figures."""
        if not any(run is u for u in used):
            used.append(run)
        return next(i for i, u in enumerate(used) if u is run) + 1

    if per_batch:
        out += ["**Compiled backbone** ([results/compile.md](results/compile.md)), yolo11n-pose fp16, the pipeline "
                "alone (off and compiled measured in one run):", "",
                "| batch | off fr/s | compiled fr/s | speedup | latency p50 ms (off / compiled) | run |",
                "| ---: | ---: | ---: | ---: | --- | --- |"]
        for b in sorted(per_batch, key=lambda b: (b == 1, b)):
            off, on, r = per_batch[b]
            lat = (f"{off['latency_ms_p50']:.2f} / {on['latency_ms_p50']:.2f}" if "latency_ms_p50" in off and
                   "latency_ms_p50" in on else "-")
            out.append(f"| {b} | {off['frames_per_s']:,.0f} | {on['frames_per_s']:,.0f} | "
                       f"{on['frames_per_s'] / off['frames_per_s']:.2f}x | {lat} | {ref(r)} |")
    e = _latest_with(runs, "equal")
    if e:
        q = e["equal"]
        out += ["", f"Compiled against uncompiled poses: {q['matched']}/{q['their_detections']} matched, keypoints "
                f"within {q['keypoint_max_error_px']:.2f} px (run {ref(e)})."]
    start = _latest_with(runs, "start")
    if start:
        st = {(r["mode"], r["cache"]): r["process_wall_s"] for r in start["start"]}
        cold = st.get(("default", "cold"))
        out += ["", f"A fresh process to its first batch of 64 (run {ref(start)}): "
                f"{st.get(('off', '-'), 0):.1f} s uncompiled, "
                + (f"{cold:.1f} s compiling cold, " if cold is not None else "")
                + f"{st.get(('default', 'warm'), 0):.1f} s loading the saved artifact."]
    if used:
        out += [""] + [f"Run {i + 1}: `{r['command'].split(' --out-dir')[0]}`, {r['env'].get('card')}, "
                       f"{r['env'].get('date')}." for i, r in enumerate(used)]
    return out + [""] if out else []


def _serve() -> list:
    """The latest figure of each section of experiments/serve_bench.py (results/serve.json)."""
    d = _load("serve")
    if not d:
        return []
    latest = {sec: _latest_with(d["runs"], sec) for sec in ("wall", "jobs", "churn", "live")}
    r = {sec: run[sec] for sec, run in latest.items() if run}
    runs = {id(run): run for run in latest.values() if run}.values()
    parts = []
    if r.get("wall"):
        w = r["wall"]
        what = f"the clip's first {w['frames']} frames" if w.get("frames") else "the sample clip"
        parts.append(f"a one-clip job ({what}) takes {w['server']['median_s']:.2f} s of process wall through the "
                     f"thin client against {w['local']['median_s']:.2f} s as a local `posefuse run`")
    if r.get("jobs"):
        j = r["jobs"]
        parts.append(f"{j['jobs']} jobs of {j['frames']} frames back to back: p50 {j['latency_s']['p50']:.2f} s, "
                     f"p99 {j['latency_s']['p99']:.2f} s, resident memory "
                     f"{j['growth'].get('posefuse_resident_memory_mib', 0):+.2%} after warm-up")
    if r.get("churn"):
        c = r["churn"]
        parts.append(f"{c['seconds'] / 60:.0f} minutes of jobs and camera churn ({c['jobs']} jobs, "
                     f"{c['camera_joins']} camera joins): resident memory {c['growth_after_warmup']:+.2%} after "
                     f"warm-up ({c['slope_mib_per_h']:+.1f} MiB/h)")
    if r.get("live"):
        v = r["live"]
        added = ", ".join("none delivered" if x is None else f"{x:.1f} ms" for x in v["added_p99_ms"])
        worst = "-" if v.get("base_p99_ms_max") is None else f"{v['base_p99_ms_max']:.1f}"
        parts.append(f"{v['added']} cameras added over HTTP while {v['base']} ran at {v['fps']:.0f} fr/s: their p99 "
                     f"{added} (the running streams' worst p99 {worst} ms)")
    cmds = "; ".join(f"`{run['command']}` ({run['env'].get('card') or 'CPU'}, {run['env'].get('date')})" for run in runs)
    return ["**posefuse serve** ([results/serve.md](results/serve.md)): " + "; ".join(parts) + f". Measured by {cmds}.",
            ""]


def main():
    readme = ROOT / "README.md"
    text = readme.read_text()
    i, j = text.index(BEGIN), text.index(END) + len(END)
    readme.write_text(text[:i] + section() + text[j:])


if __name__ == "__main__":
    main()
