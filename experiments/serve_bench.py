"""``posefuse serve`` measured as a user meets it: a real server process, real clients.

    python experiments/serve_bench.py [--device cpu|cuda] [--only wall jobs churn live] [--repeats 3]
        [--wall-frames N] [--jobs 100] [--frames 64] [--churn-s 1800] [--live-base 200] [--live-added 4]
        [--live-s 30] [--live-spread-s 0] [--live-hold-s 0] [--profile-dir DIR --profile-s 20] [--out-dir results]
                                                                            -> results/serve.{json,md}

* wall: the process wall of the thin client's one-clip job (``posefuse run --server URL --source CLIP``)
  beside a local ``posefuse run`` of the same job (fresh processes, the sample clip, or its first
  --wall-frames frames; medians of --repeats).
* jobs: --jobs jobs of --frames frames back to back over HTTP: job latency p50 and p99; the server's
  resident memory (its decode hosts included) and GPU memory (its /metrics) after the first tenth of
  the jobs (warm-up) and at the end.
* live: a server in live mode; --live-base loopback ffmpeg cameras (30 fr/s) join over HTTP, then
  --live-added more; after --live-s seconds their figures (GET /streams): the added streams' p99 latency,
  the base streams' p99, frames/s, drops by reason.
  With --profile-dir, py-spy samples the server and its decode hosts (collapsed stacks, every thread)
  for --profile-s seconds from the base cameras' POSTs and again from the added ones':
  DIR/serve_profile_{start,window}.txt.
* churn: for --churn-s seconds, jobs back to back while a loopback ffmpeg camera joins and leaves every
  20 s: the server's resident memory every 10 s (and its decode hosts' part), its slope after the
  first tenth (MiB/h) and its growth.

Targets (the service issue): the client's wall <= 1.5 s (GPU); memory growth <= 1% after warm-up; the
added live streams' p99 <= 50 ms beside 200 running ones (GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np

import harness

SECTIONS = ("wall", "jobs", "churn", "live")


class Server:
    """``posefuse serve`` in a process of its own, listening on a free loopback port; ``url`` once it listens,
    ready (``/ready`` 200) when the constructor returns."""

    def __init__(self, roots: list, *args, token: str | None = None, timeout: float = 300.0):
        cmd = [sys.executable, "-m", "posefuse.runners.cli", "serve", "--port", "0", "--allow-root",
               *map(str, roots), *args] + (["--token", token] if token else [])
        self.token = token
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "YOLO_OFFLINE": "1"})
        self.url = None
        t0 = time.monotonic()
        for line in self.proc.stdout:  # its first line names the port
            if line.startswith("[serve] http://"):
                self.url = line.split()[1]
                break
            if time.monotonic() - t0 > timeout:
                break
        if not self.url:
            self.proc.kill()
            raise RuntimeError(f"the server did not start: {line}")
        while time.monotonic() - t0 < timeout and request(self.url, "/ready", token=token)[0] != 200:
            time.sleep(0.2)

    def metrics(self) -> dict:
        """{metric name (without labels): value} of the gauges without labels, and GPU memory summed."""
        out: dict = {}
        for line in request(self.url, "/metrics", token=self.token)[1].splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            key = name.split("{")[0]
            if key == "posefuse_gpu_memory_used_mib" or "{" not in name:
                out[key] = out.get(key, 0.0) + float(value)
        return out

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)


def request(url: str, path: str, body=None, method=None, token: str | None = None, raw: bytes | None = None):
    """(status, decoded JSON or text) of one HTTP request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            text, status = r.read().decode(), r.status
    except urllib.error.HTTPError as e:
        text, status = e.read().decode(), e.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def job(url: str, source: str, frames: int | None) -> dict:
    """One job over HTTP; its report (a response of the report alone is decoded whole by request())."""
    status, text = request(url, "/jobs", {"sources": [source], **({"max_frames": frames} if frames else {})})
    if status != 200:
        raise RuntimeError(f"job refused ({status}): {text}")
    last = text if isinstance(text, dict) else json.loads(text.splitlines()[-1])
    return last["report"]


def wall(url: str, device: str, repeats: int, frames: int | None) -> dict:
    clip = harness.data_path(harness.CLIP)
    cut = ["--max-frames", str(frames)] if frames else []
    out = {"frames": frames}
    cli = [sys.executable, "-m", "posefuse.runners.cli"]  # the `posefuse` script's module, wherever it is installed
    for label, cmd in (("server", [*cli, "run", "--server", url, "--source", clip, *cut]),
                       ("local", [*cli, "run", "--source", clip, *cut, "--device", device, "--no-progress"])):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"})
            times.append(time.perf_counter() - t)
            if r.returncode:
                raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr[-500:]}")
        out[label] = {"process_wall_s": times, "median_s": statistics.median(times)}
        print(label, out[label], flush=True)
    return out


def jobs(server: Server, n: int, frames: int) -> dict:
    clip = harness.data_path(harness.CLIP)
    lat, mem = [], []
    for k in range(n):
        t = time.perf_counter()
        rep = job(server.url, clip, frames)
        lat.append(time.perf_counter() - t)
        assert rep["overall"]["results"] == frames, rep["overall"]
        if k == max(1, n // 10) - 1 or k == n - 1:
            mem.append(server.metrics())
    grow = {k: (mem[-1][k] - mem[0][k]) / mem[0][k] for k in ("posefuse_resident_memory_mib",
                                                               "posefuse_gpu_memory_used_mib") if k in mem[0]}
    r = {"jobs": n, "frames": frames, "latency_s": {"p50": float(np.percentile(lat, 50)),
                                                      "p99": float(np.percentile(lat, 99))},
         "memory_after_warmup": mem[0], "memory_at_end": mem[-1], "growth": grow}
    print(r, flush=True)
    return r


def churn(server: Server, seconds: float, frames: int) -> dict:
    cameras = __import__("cameras")
    cams = cameras.Cameras(harness.data_path(harness.CLIP), n=1, fps=10.0).start()
    clip = harness.data_path(harness.CLIP)
    t0 = time.perf_counter()
    samples, n_jobs, joins, next_sample, next_flip, current, short, cam_results = [], 0, 0, t0, t0, None, [], []
    try:
        while time.perf_counter() - t0 < seconds:
            now = time.perf_counter()
            if now >= next_flip:  # the camera joins (under a new name: a run's names are never reused), or leaves
                if current is not None:
                    streams = request(server.url, "/streams", token=server.token)[1]["streams"]
                    cam_results.append(next(x["results"] for x in streams if x["name"] == current))
                    request(server.url, f"/streams/{current}", method="DELETE", token=server.token)
                    current = None
                else:
                    if not cams.cams[0].alive():  # a camera serves one client and exits when it leaves
                        cams.cams[0].start()
                        time.sleep(0.5)
                    current = f"cam{joins}"
                    request(server.url, "/streams", {"source": cams.urls[0], "name": current}, method="POST",
                            token=server.token)
                    joins += 1
                next_flip = now + 20.0
            if now >= next_sample:
                m = server.metrics()  # the whole and the decode hosts' part, to place a growth
                samples.append([now - t0, m.get("posefuse_resident_memory_mib", 0.0),
                                m.get("posefuse_decode_hosts_memory_mib", 0.0)])
                next_sample = now + 10.0
            rep = job(server.url, clip, frames)
            n_jobs += 1
            if rep["overall"]["results"] != frames:  # recorded, not hidden: every job should have them all
                short.append({"t": now - t0, "overall": rep["overall"], "failed": rep["failed"]})
                print("short job", short[-1], flush=True)
    finally:
        cams.stop()
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    keep = t >= seconds / 10
    slope = float(np.polyfit(t[keep], rss[keep], 1)[0] * 3600) if keep.sum() >= 2 else None
    r = {"seconds": seconds, "jobs": n_jobs, "short_jobs": short, "camera_joins": joins,
         "camera_results_per_join": cam_results, "rss_mib": samples,
         "slope_mib_per_h": slope,
         "growth_after_warmup": float((rss[keep][-1] - rss[keep][0]) / rss[keep][0]) if keep.sum() >= 2 else None}
    print({k: v for k, v in r.items() if k != "rss_mib"}, flush=True)
    return r


class Profiles:
    """py-spy (``record --pid --subprocesses``, collapsed stacks of every thread, idle ones included) on a
    process for ``seconds`` from each :meth:`span`, into ``out_dir``/serve_profile_<span>.txt; nothing
    without ``out_dir``. A py-spy that cannot attach leaves its message beside it (<file>.log): the bench goes on."""

    def __init__(self, pid: int, out_dir: str | None, seconds: float):
        self.pid, self.out_dir, self.seconds, self.procs = pid, out_dir, seconds, []
        self.exe = shutil.which("py-spy") or next(
            (p for d in sys.path if os.path.isfile(p := os.path.join(d, "bin", "py-spy"))), None)
        if out_dir and not self.exe:
            raise RuntimeError("--profile-dir: py-spy is neither on PATH nor in a bin/ beside the imported packages")

    def span(self, name: str):
        if not self.out_dir:
            return
        os.makedirs(self.out_dir, exist_ok=True)
        out = os.path.join(self.out_dir, f"serve_profile_{name}.txt")
        log = open(out + ".log", "w")
        self.procs.append((subprocess.Popen(
            [self.exe, "record", "--pid", str(self.pid), "--subprocesses", "--idle", "--threads", "--nonblocking",
             "--format", "raw", "--rate", "100", "--duration", f"{self.seconds:g}", "-o", out],
            stdout=log, stderr=subprocess.STDOUT), log))

    def wait(self):
        for proc, log in self.procs:
            try:
                proc.wait(self.seconds + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def live(url: str, token: str | None, base: int, added: int, seconds: float, fps: float = 30.0,
         spread_s: float = 0.0, hold_s: float = 0.0, profiles: Profiles | None = None) -> dict:
    """``base`` loopback cameras of the sample clip at ``fps`` join a live server over HTTP; once they all
    deliver, ``added`` more join; ``seconds`` later the streams' figures (GET /streams): the added streams'
    p99 latency, the base streams' p99 (median and worst), frames/s and drops by reason. A loopback camera
    paces its frames from its client's connection, so cameras POSTed together send theirs in phase (each
    frame time brings one frame of every camera at once); ``spread_s`` > 0 POSTs the base cameras at
    random moments over that many seconds instead, as cameras with clocks of their own are out of phase.
    ``hold_s``: how long the base cameras run on after they all deliver before the added ones join. The
    base streams' results, drops and source counts (a camera's reconnects, the seconds the run held it back)
    over the measured seconds alone are reported beside the totals.
    ``profiles``: spans 'start' (from the base POSTs) and 'window' (from the added POSTs)."""
    cameras = __import__("cameras")
    cams = cameras.Cameras(harness.data_path(harness.CLIP), n=base + added, fps=fps).start()
    names = [f"base{k}" for k in range(base)] + [f"added{k}" for k in range(added)]
    at = sorted(random.Random(0).uniform(0, spread_s) for _ in range(base))  # each base POST's moment
    try:
        t_post = time.monotonic()
        if profiles is not None:
            profiles.span("start")
        for name, u, t in zip(names[:base], cams.urls[:base], at):
            time.sleep(max(0.0, t_post + t - time.monotonic()))
            request(url, "/streams", {"source": u, "name": name}, method="POST", token=token)
        t0, settled = time.monotonic(), False
        while time.monotonic() - t0 < 120 and not settled:  # every base camera delivers
            got = {x["name"]: x for x in request(url, "/streams", token=token)[1]["streams"]}
            settled = all(got.get(n, {}).get("results", 0) > 0 for n in names[:base])
            time.sleep(0 if settled else 0.5)
        settle_s = time.monotonic() - t0
        time.sleep(hold_s)
        before = {x["name"]: x for x in request(url, "/streams", token=token)[1]["streams"]}
        t_add = time.monotonic()
        if profiles is not None:
            profiles.span("window")
        for name, u in zip(names[base:], cams.urls[base:]):
            request(url, "/streams", {"source": u, "name": name}, method="POST", token=token)
        first: dict = {}  # added stream -> seconds from the first POST to its first result
        while time.monotonic() - t_add < seconds:
            time.sleep(0.5)
            if len(first) < added:
                got = {x["name"]: x for x in request(url, "/streams", token=token)[1]["streams"]}
                first.update({n: time.monotonic() - t_add for n in names[base:]
                              if n not in first and got.get(n, {}).get("results", 0) > 0})
        answer = request(url, "/streams", token=token)[1]
        got = {x["name"]: x for x in answer["streams"]}
        waits = answer.get("waits_ms", {})  # the run's, since the server started (a server before it: none)
        for name in names:
            request(url, f"/streams/{name}", method="DELETE", token=token)
    finally:
        cams.stop()
    rows = [got.get(n, {}) for n in names]
    p99 = [r.get("latency_ms", {}).get("p99") if r.get("results") else None for r in rows]  # None: nothing delivered
    base_p99 = [x for x in p99[:base] if x is not None]
    window = {"results": 0, "drops": {}, "source_counts": {}}  # the base streams' over the measured seconds
    counts: dict = {}  # the base streams' source counts summed (reconnects, seconds held back, ...), in all
    for n in names[:base]:
        a, b = before.get(n, {}), got.get(n, {})
        window["results"] += b.get("results", 0) - a.get("results", 0)
        for why, k in b.get("drops", {}).items():
            window["drops"][why] = window["drops"].get(why, 0) + k - a.get("drops", {}).get(why, 0)
        for key, v in b.get("source_counts", {}).items():
            counts[key] = counts.get(key, 0) + v
            window["source_counts"][key] = (window["source_counts"].get(key, 0) + v
                                            - a.get("source_counts", {}).get(key, 0))
    drops: dict = {}
    for r in rows:
        for why, n in r.get("drops", {}).items():
            drops[why] = drops.get(why, 0) + n
    r = {"base": base, "added": added, "fps": fps, "seconds": seconds, "spread_s": spread_s, "settle_s": settle_s,
         "settled": settled, "hold_s": hold_s, "base_window": window,
         "added_p99_ms": p99[base:], "added_results": [r.get("results", 0) for r in rows[base:]],
         "added_first_result_s": [first.get(n) for n in names[base:]],
         "base_p99_ms_median": float(np.median(base_p99)) if base_p99 else None,
         "base_p99_ms_max": max(base_p99) if base_p99 else None,
         "base_without_results": sum(x is None for x in p99[:base]),
         "frames_per_s": sum(x.get("frames_per_s", 0.0) for x in rows),
         "results": sum(x.get("results", 0) for x in rows), "drops": drops,
         "states": {n: x.get("state") for n, x in zip(names, rows) if x.get("state") != "running"},
         "base_source_counts": {k: round(v, 3) for k, v in counts.items()},
         "waits_ms": waits}
    print(r, flush=True)
    return r


def markdown(runs: list) -> str:
    out = ["# posefuse serve", "", "Each run below is one command; its card and versions are in its heading.", ""]
    for r in reversed(runs):
        out += harness.run_heading(r)
        if r.get("wall"):
            w = r["wall"]
            what = f"its first {w['frames']} frames" if w.get("frames") else "the whole clip"
            out += [f"One-clip job ({what}), process wall, median of {len(w['server']['process_wall_s'])}: thin client "
                    f"{w['server']['median_s']:.2f} s, local `posefuse run` {w['local']['median_s']:.2f} s.", ""]
        if r.get("jobs"):
            j = r["jobs"]
            out += [f"{j['jobs']} jobs of {j['frames']} frames back to back: latency p50 {j['latency_s']['p50']:.2f} s, "
                    f"p99 {j['latency_s']['p99']:.2f} s; growth after warm-up: "
                    + ", ".join(f"{k} {v:+.2%}" for k, v in j["growth"].items()), ""]
        if r.get("churn"):
            c = r["churn"]
            out += [f"Churn, {c['seconds']:.0f} s: {c['jobs']} jobs ({len(c.get('short_jobs', []))} with fewer results than "
                    f"frames), a camera joined {c['camera_joins']} times (results per join: "
                    f"{min(c.get('camera_results_per_join') or [0])}-{max(c.get('camera_results_per_join') or [0])}); "
                    f"resident memory slope after warm-up {c['slope_mib_per_h']:+.1f} MiB/h, growth "
                    f"{c['growth_after_warmup']:+.2%}.", ""]
        if r.get("live"):
            v = r["live"]
            joined = ("" if not v.get("added_first_result_s") else " (first result "
                      + ", ".join("none" if x is None else f"{x:.1f}" for x in v["added_first_result_s"])
                      + " s after the first POST; results " + ", ".join(f"{x:,}" for x in v["added_results"])
                      + f" of {v['seconds'] * v['fps']:,.0f} due)")
            settled = v.get("settled", v["settle_s"] < 120)  # runs before the flag: the wait ran out at 120 s
            settle = (f"each delivering {v['settle_s']:.1f} s after their POSTs" if settled
                      else f"not all delivering {v['settle_s']:.0f} s after their POSTs")
            phase = ("" if "spread_s" not in v else f"POSTed at random over {v['spread_s']:g} s, out of phase; "
                     if v["spread_s"] else "POSTed together, in phase; ")
            hold = f", then {v['hold_s']:g} s more" if v.get("hold_s") else ""
            out += [f"Live: {v['base']} cameras at {v['fps']:.0f} fr/s ({phase}{settle}{hold}), then {v['added']} "
                    f"added over HTTP, {v['seconds']:.0f} s: the added streams' p99 "
                    + ", ".join("none delivered" if x is None else f"{x:.1f} ms" for x in v["added_p99_ms"]) + joined
                    + "; the base streams' p99 median "
                    + ("-" if v["base_p99_ms_median"] is None else f"{v['base_p99_ms_median']:.1f}") + " ms, worst "
                    + ("-" if v["base_p99_ms_max"] is None else f"{v['base_p99_ms_max']:.1f}") + " ms"
                    + (f" ({v['base_without_results']} delivered nothing)" if v.get("base_without_results") else "")
                    + f"; {v['frames_per_s']:,.0f} fr/s in all; drops {v['drops'] or 'none'}"
                    + ("" if "base_window" not in v else f"; over the {v['seconds']:.0f} s the base streams' results "
                       f"{v['base_window']['results']:,}, drops {v['base_window']['drops'] or 'none'}")
                    + ("" if not v.get("base_source_counts") else "; their sources counted, in all: " + ", ".join(
                        f"{k} {x:,}" if isinstance(x, int) else f"{k} {x:,.1f}"
                        for k, x in sorted(v["base_source_counts"].items())))
                    + ("" if not v.get("waits_ms") else "; the run's waits before the GPU since the server started, "
                       "p50/p99 ms: " + ", ".join(f"{k} {w['p50']:.1f}/{w['p99']:.1f}"
                                                  for k, w in v["waits_ms"].items()))
                    + ".", ""]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--wall-frames", type=int, default=None, help="wall: the clip's first N frames (default: all)")
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--churn-s", type=float, default=1800.0)
    ap.add_argument("--live-base", type=int, default=200, help="live: cameras running before the added ones")
    ap.add_argument("--live-added", type=int, default=4, help="live: cameras added over HTTP while they run")
    ap.add_argument("--live-s", type=float, default=30.0, help="live: seconds measured after the added join")
    ap.add_argument("--live-spread-s", type=float, default=0.0,
                    help="live: POST the base cameras at random moments over this many seconds (out of phase); "
                         "0: together (in phase)")
    ap.add_argument("--live-hold-s", type=float, default=0.0,
                    help="live: seconds the base cameras run after they all deliver, before the added ones join")
    ap.add_argument("--profile-dir", default=None,
                    help="live: py-spy's samples of the server and its decode hosts go here (see the module docstring)")
    ap.add_argument("--profile-s", type=float, default=20.0, help="live: seconds of each py-spy span")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    run = harness.new_run("serve_bench.py", argv, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server([harness.data_dir(), tmp], "--device", device)
        try:
            if "wall" in a.only:
                run["wall"] = wall(server.url, device, a.repeats, a.wall_frames)
            if "jobs" in a.only:
                run["jobs"] = jobs(server, a.jobs, a.frames)
            if "churn" in a.only:
                run["churn"] = churn(server, a.churn_s, a.frames)
        finally:
            run["server_exit"] = server.stop()
        if "live" in a.only:  # a server of its own, in live mode: a frame later than --late-ms is dropped
            server = Server([harness.data_dir(), tmp], "--device", device, "--mode", "live")
            profiles = Profiles(server.proc.pid, a.profile_dir, a.profile_s)
            try:
                run["live"] = live(server.url, server.token, a.live_base, a.live_added, a.live_s,
                                   spread_s=a.live_spread_s, hold_s=a.live_hold_s, profiles=profiles)
            finally:
                profiles.wait()
                run["live_server_exit"] = server.stop()
    harness.record(a.out_dir, "serve", run, markdown)


if __name__ == "__main__":
    sys.exit(main())
