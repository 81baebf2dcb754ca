"""``posefuse serve``: one long-running process that keeps the engine warm (weights, graphs, tracker kernels)
and one live run, built through the same assembly as ``posefuse run``, steered over HTTP (aiohttp).

    posefuse serve --port 8000 --allow-root /data            # then, from anywhere on the host:
    posefuse run --server http://127.0.0.1:8000 --source /data/clip.mp4 --save-json poses.jsonl

API (JSON bodies; a bad request is a 4xx whose ``error`` names the field; with ``--token`` every request
carries ``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` for the status page):

* ``POST /jobs`` {"sources": [...], "names": [...], "max_frames": N, "save_json": path, "out": path}: files,
  folders or URLs, read as streams of the live run (the same batcher as the cameras); the response streams
  the poses as JSON lines (the format of ``--save-json``, the stream names and image ids a local run of
  the same sources gives; ``names``: the sources as the client gave them, when it sends them resolved),
  then one line {"report": {...}}. ``save_json`` and ``out`` are written on the server.
* ``POST /streams`` {"source": spec, "name": name, "max_frames": N}, ``DELETE /streams/{name}``,
  ``GET /streams``: cameras and files joining and leaving the live run, each with its counts, frame rate,
  latency, drops by reason and what its source counted (a camera's reconnects); ``GET /jobs``: the jobs
  and their state.
* ``GET /health`` (the process answers), ``GET /ready`` (engine warm, run accepting sources; 503 until
  then), ``GET /metrics`` (Prometheus text format), ``GET /`` (the status page, refreshed every second).

Safety: binds 127.0.0.1 by default; local sources and output paths must lie in an ``--allow-root`` folder
(default: the folder the server started in); request bodies over ``--max-request-kb`` are refused (413),
jobs beyond ``--max-jobs`` at once too (429). SIGTERM or Ctrl-C drains: no new frames are read, frames in
flight finish, each job's stream ends with its report, then the process exits 0.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from .config import ConfigError, RunConfig
from .outputs import IMAGE_ID_STRIDE, json_record
from .sources.network import is_network

POLL_S = 0.05  # how often a job's handler looks whether its streams are finished
JOBS_KEPT = 100  # finished jobs GET /jobs lists
DRAIN_S = 60.0  # the longest a stopping service waits for the run's frames in flight and the jobs' reports
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # /metrics' posefuse_batch_frames bounds (powers of two)


@dataclass
class ServeConfig:
    """The service: ``run`` holds the live run's options (its sources are ignored: jobs and POST /streams
    add them), the rest where and how it listens."""

    run: RunConfig = field(default_factory=lambda: RunConfig(sources=[]))
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    allow_roots: list = field(default_factory=list)  # default: the working folder
    max_jobs: int = 4
    max_request_kb: int = 64

    def checked(self) -> "ServeConfig":
        """A copy with the run's options validated and the roots resolved; ConfigError names a bad option."""
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", f"expected 0..65535, got {self.port}")
        if self.max_jobs < 1:
            raise ConfigError("max_jobs", f"expected >= 1, got {self.max_jobs}")
        if self.max_request_kb < 1:
            raise ConfigError("max_request_kb", f"expected >= 1, got {self.max_request_kb}")
        roots = [os.path.realpath(r) for r in (self.allow_roots or [os.getcwd()])]
        for r in roots:
            if not os.path.isdir(r):
                raise ConfigError("allow_roots", f"{r} is not a folder")
        run = dataclasses.replace(self.run, sources=[], progress=False, out=None, save_json=None, save_coco=None,
                                  save_video=None).validated()
        return dataclasses.replace(self, run=run, allow_roots=roots)


class RequestError(Exception):
    """A request the service refuses: the HTTP ``status`` and a message naming the field."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    """One POST /jobs: its streams as [(spec, the name a local run gives it, the live run's name)], the
    records of its results and, per stream, how many the handler has sent on; its options."""

    id: int
    streams: list
    options: dict
    t0: float = field(default_factory=time.perf_counter)
    records: object = None  # an asyncio.Queue of (live stream name, record), fed from the run's result thread
    sent: dict = field(default_factory=dict)  # live stream name -> records sent to the client
    state: str = "running"  # running, done, cancelled
    report: dict | None = None  # once done


class Service:
    """The warm engine and its one live run (``run()`` with a RunControl on a thread of its own)."""

    def __init__(self, cfg: ServeConfig):
        from .control import RunControl

        self.cfg = cfg
        self.control = RunControl()
        self.report = None  # the live run's Report, once it ended
        self.jobs: dict[int, Job] = {}
        self._job_of: dict[str, tuple] = {}  # live stream name -> (its job, its place in the job)
        self._specs: dict[str, str] = {}  # live stream name -> spec (streams added with POST /streams)
        self._lock = threading.Lock()
        self._ids = 0
        self.loop = None  # the event loop the jobs' queues belong to
        self._usage = None  # a UsageSampler, made on the first scrape (NVML, psutil)
        self._usage_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="posefuse-serve-run", daemon=True)

    # ------------------------------------------------------------------ the run
    def start(self, loop):
        self.loop = loop
        self.thread.start()

    def _run(self):
        from .run import run

        try:
            self.report = run(self.cfg.run, on_result=self._on_result, control=self.control)
        except BaseException:  # noqa: BLE001 - the control holds it; /ready says so
            pass

    def _on_result(self, r):
        """The run's result thread: a job's result goes to its queue (in the event loop's thread)."""
        job, k = self._job_of.get(r.stream, (None, 0))
        if job is None or job.state != "running":
            return
        rec = json_record(r, k * IMAGE_ID_STRIDE + r.index, stream=job.streams[k][1])
        self.loop.call_soon_threadsafe(job.records.put_nowait, (r.stream, rec))

    def ready(self) -> tuple[bool, str]:
        c = self.control
        if c.error is not None:
            return False, f"the run failed: {type(c.error).__name__}: {c.error}"
        if c.stopped.is_set():
            return False, "draining: the service is stopping"
        if not c.started.is_set():
            return False, "warming up: the engine loads and captures its graphs"
        return True, "ready"

    def stop(self, timeout: float = 60.0):
        """Drain: no new frames are read, frames in flight finish; wait for the run to end."""
        self.control.stop()
        self.thread.join(timeout)

    # ------------------------------------------------------------------ requests
    def check_source(self, spec, name: str) -> str | None:
        """``spec`` if the service may read it: a URL, the embedded clip, or a path inside an allowed root."""
        if spec is None or spec == "default":
            return None
        if not isinstance(spec, str) or not spec:
            raise RequestError(400, f"{name}: expected a file, folder or URL, got {spec!r}")
        if is_network(spec):
            return spec
        # a file:// URL is a local path (as a local run reads it): the path is what the roots limit
        self.check_path(unquote(urlparse(spec).path) if spec.startswith("file://") else spec, name)
        return spec

    def check_path(self, path: str, name: str):
        real = os.path.realpath(path)
        if not any(real == r or real.startswith(r + os.sep) for r in self.cfg.allow_roots):
            raise RequestError(403, f"{name}: {path} is outside the folders this server may use "
                                    f"(--allow-root: {', '.join(self.cfg.allow_roots)})")

    def _require_ready(self):
        ok, why = self.ready()
        if not ok:
            raise RequestError(503, f"service: {why}")

    def add_stream(self, body: dict) -> dict:
        _fields(body, {"source": (str, type(None)), "name": (str,), "max_frames": (int,)}, required=("source",))
        self._require_ready()
        spec = self.check_source(body["source"], "source")
        name = body.get("name") or spec or "default"
        if name.startswith("job"):
            raise RequestError(400, f"name: {name!r}: names starting with 'job' belong to jobs")
        max_frames = _positive(body, "max_frames")
        try:
            self.control.add_source(spec, name, max_frames)
        except ValueError as e:
            raise RequestError(409, str(e)) from None
        except RuntimeError as e:
            raise RequestError(503, str(e)) from None
        self._specs[name] = spec
        return {"name": name}

    def remove_stream(self, name: str):
        if name not in self._specs:
            raise RequestError(404, f"name: no stream {name!r} (streams: {sorted(self._specs)})")
        if name not in self.control.ended_streams:
            self.control.remove_source(name)

    def streams(self) -> list:
        ended = dict(self.control.ended_streams)  # before the figures, as in job_finished
        figs = self.control.figures()
        out = []
        for name, spec in list(self._specs.items()):
            f = figs.get(name, {})
            if name not in ended:
                state = "running"
            elif f.get("in_flight"):
                state = "ending"  # its source ended; its frames in flight finish
            else:
                state = "failed" if ended[name] else "ended"
            out.append({"name": name, "source": spec, "state": state, "error": ended.get(name),
                        **{k: f.get(k, 0) for k in ("frames_in", "results", "detections", "in_flight",
                                                    "frames_per_s")},
                        "drops": f.get("drops", {}), "latency_ms": f.get("latency_ms", {"p50": 0.0, "p99": 0.0}),
                        "source_counts": f.get("source", {})})
        return out

    def new_job(self, body: dict) -> Job:
        _fields(body, {"sources": (list,), "names": (list,), "max_frames": (int,), "save_json": (str,),
                       "out": (str,)}, required=("sources",))
        self._require_ready()
        specs = body["sources"]
        if not specs:
            raise RequestError(400, "sources: expected at least one source")
        names = body.get("names", specs)
        if len(names) != len(specs) or not all(n is None or isinstance(n, str) for n in names):
            raise RequestError(400, f"names: expected {len(specs)} names (strings), one per source")
        checked = [self.check_source(s, f"sources[{k}]") for k, s in enumerate(specs)]
        for opt in ("save_json", "out"):
            if body.get(opt):
                self.check_path(body[opt], opt)
                if not os.path.isdir(os.path.dirname(os.path.realpath(body[opt]))):
                    raise RequestError(400, f"{opt}: the folder of {body[opt]} does not exist")
        max_frames = _positive(body, "max_frames")
        self._sweep()
        with self._lock:
            running = sum(j.state == "running" for j in self.jobs.values())
            if running >= self.cfg.max_jobs:
                raise RequestError(429, f"jobs: {running} jobs run already, the most at once (--max-jobs)")
            self._ids += 1
            jid = self._ids
            local = [name for _, name in RunConfig(sources=names).streams()]  # what a local run calls them
            job = Job(jid, [(spec, name, f"job{jid}:{k}:{name}") for k, (spec, name) in enumerate(zip(checked, local))],
                      {k: body[k] for k in ("max_frames", "save_json", "out") if k in body})
            job.records = asyncio.Queue()
            self.jobs[jid] = job
            for k, (_, _, live) in enumerate(job.streams):
                self._job_of[live] = (job, k)
        for spec, _, live in job.streams:
            self.control.add_source(spec, live, max_frames)
        return job

    def job_finished(self, job: Job) -> bool:
        """Every stream of ``job`` ended, nothing of it in flight, every result sent on."""
        # ends first: a stream's frames arrive before its source ends, so figures taken after the ends hold
        # every frame of each ended stream (taken before, a stream could end, with frames, in between)
        ended = dict(self.control.ended_streams)
        run_over = self.thread.ident is not None and not self.thread.is_alive()  # a stream never opened is over
        figs = self.control.figures()
        for _, _, live in job.streams:
            if live not in ended and not run_over:
                return False
            f = figs.get(live)
            if f is not None and (f["in_flight"] or job.sent.get(live, 0) < f["results"]):
                return False
        return True

    def forget_job(self, job: Job):
        """A finished job: its report is taken from the figures first, then the run lets go of its streams
        (figures, sources) and the service keeps the last JOBS_KEPT jobs for GET /jobs."""
        job.report = self.job_report(job)
        self.control.forget([live for _, _, live in job.streams])
        with self._lock:
            done = [j for j in self.jobs.values() if j.state != "running"]
            for j in done[:max(0, len(done) - JOBS_KEPT)]:
                del self.jobs[j.id]

    def _sweep(self):
        """Cancelled jobs whose streams have finished are let go of, as finished ones are."""
        for job in [j for j in self.jobs.values() if j.state == "cancelled" and j.report is None]:
            if self.job_finished(job):
                self.forget_job(job)

    def cancel_job(self, job: Job):
        """The client went away: its streams end, the service goes on."""
        job.state = "cancelled"
        for _, _, live in job.streams:
            if live not in self.control.ended_streams:
                try:
                    self.control.remove_source(live)
                except (ValueError, RuntimeError):
                    pass

    def job_report(self, job: Job) -> dict:
        """The job's report: per stream (under the names a local run gives) its counts, drops and latency, the
        overall counts and job frames per second, the sources that failed, and the exit code."""
        ended = dict(self.control.ended_streams)
        figs = self.control.figures()
        streams, failed = {}, {}
        for spec, name, live in job.streams:
            streams[name] = figs.get(live, {"frames_in": 0, "results": 0, "drops": {}, "detections": 0})
            if ended.get(live):
                failed[name] = ended[live]
        wall = time.perf_counter() - job.t0
        total = {k: sum(s.get(k, 0) for s in streams.values()) for k in ("frames_in", "results", "detections")}
        drops: dict = {}
        for s in streams.values():
            for reason, n in s.get("drops", {}).items():
                drops[reason] = drops.get(reason, 0) + n
        overall = {**total, "drops": drops, "wall_s": wall,
                   "frames_per_s": total["results"] / wall if wall > 0 else None}
        return {"job": job.id, "config": {"sources": [s[0] for s in job.streams], **job.options},
                "ran": {"server": True, **self._ran()}, "overall": overall, "streams": streams, "failed": failed,
                "interrupted": job.state == "cancelled" or self.control.stopped.is_set(),
                "exit_code": 1 if failed else 0}

    def _ran(self) -> dict:
        """What the live run runs (its Report.ran: device, runner, decoder, backend, precision, CUDA graphs,
        compile) and the model options it was given."""
        c = self.cfg.run
        return {"device": c.device, "runner": c.runner, "decoder": c.decoder, **self.control.ran, "model": c.model,
                "end2end": c.end2end, "track": c.track}

    def metrics(self) -> bytes:
        """The Prometheus text format: frames, results, detections and drops by stream and reason, frames
        in flight, latency p50/p99 and its histogram by stream, the run's waits before the GPU by stage, the
        frames queued before the GPU now, the frames per batch (a histogram), the decode hosts running and
        the streams they serve, streams and jobs by state, readiness; GPU utilization and memory (NVML), the
        process's CPU and resident memory with its decode hosts' part (psutil)."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        from .gpuinfo import UsageSampler

        figs, waited, run_state = self.control.figures(), self.control.waits(), self.control.state()
        svc = self
        with self._usage_lock:
            if self._usage is None:
                self._usage = UsageSampler()
            usage = self._usage.sample()

        class Figures:
            def collect(self):
                counters = {k: CounterMetricFamily(f"posefuse_{k}", f"{k.replace('_', ' ')} per stream", labels=["stream"])
                            for k in ("frames_in", "results", "detections")}
                drops = CounterMetricFamily("posefuse_drops", "frames dropped, by stream and reason",
                                            labels=["stream", "reason"])
                inflight = GaugeMetricFamily("posefuse_in_flight", "frames in flight", labels=["stream"])
                lat = GaugeMetricFamily("posefuse_latency_ms", "latency arrival -> result, ms",
                                        labels=["stream", "quantile"])
                hist = HistogramMetricFamily("posefuse_latency_seconds", "latency arrival -> result, seconds",
                                             labels=["stream"])
                for name, f in figs.items():
                    for k, m in counters.items():
                        m.add_metric([name], f[k])
                    for reason, n in f["drops"].items():
                        drops.add_metric([name, reason], n)
                    inflight.add_metric([name], f["in_flight"])
                    lat.add_metric([name, "0.5"], f["latency_ms"]["p50"])
                    lat.add_metric([name, "0.99"], f["latency_ms"]["p99"])
                    if "latency_buckets" in f:
                        hist.add_metric([name], [(_le(b), n) for b, n in f["latency_buckets"]], f["latency_sum_s"])
                waits = GaugeMetricFamily("posefuse_wait_ms", "a frame's waits before the GPU, ms, since the run "
                                          "started: intake (arrival -> queued), queue, batch (-> its batch left)",
                                          labels=["stage", "quantile"])
                for stage, w in waited.items():
                    for q, k in (("0.5", "p50"), ("0.99", "p99"), ("1", "max")):
                        waits.add_metric([stage, q], w[k])
                yield from counters.values()
                yield from (drops, inflight, lat, hist, waits)
                if "queued_frames" in run_state:
                    q = GaugeMetricFamily("posefuse_queued_frames", "frames waiting before the GPU now: queue (handed "
                                          "in, not yet taken by a batcher), batcher (not yet in a batch)",
                                          labels=["stage"])
                    for stage, n in run_state["queued_frames"].items():
                        q.add_metric([stage], n)
                    yield q
                if "batch_frames" in run_state:
                    sizes = run_state["batch_frames"]
                    b = HistogramMetricFamily("posefuse_batch_frames", "frames each batch ran")
                    b.add_metric([], [(_le(x), sum(k for s, k in sizes.items() if s <= x)) for x in BATCH_BUCKETS]
                                 + [("+Inf", sum(sizes.values()))], sum(s * k for s, k in sizes.items()))
                    yield b
                if "decode_hosts" in run_state:
                    alive = GaugeMetricFamily("posefuse_decode_hosts", "decode host processes running, by device "
                                              "(cpu: OpenCV)", labels=["device"])
                    served = GaugeMetricFamily("posefuse_decode_host_streams", "streams the decode hosts serve, by "
                                               "device", labels=["device"])
                    for device, d in run_state["decode_hosts"].items():
                        alive.add_metric([device], d["alive"])
                        served.add_metric([device], d["streams"])
                    yield from (alive, served)
                jobs = GaugeMetricFamily("posefuse_jobs", "jobs by state", labels=["state"])
                for state in ("running", "done", "cancelled"):
                    jobs.add_metric([state], sum(j.state == state for j in svc.jobs.values()))
                yield jobs
                streams = GaugeMetricFamily("posefuse_streams", "streams added over HTTP, by state", labels=["state"])
                for state in ("running", "ending", "ended", "failed"):
                    streams.add_metric([state], sum(s["state"] == state for s in svc.streams()))
                yield streams
                yield GaugeMetricFamily("posefuse_ready", "1: engine warm, run accepting sources", value=int(svc.ready()[0]))
                for key, name, doc in (("gpu_util", "posefuse_gpu_utilization_percent", "GPU utilization, %"),
                                       ("gpu_mem_mib", "posefuse_gpu_memory_used_mib", "GPU memory used, MiB")):
                    if key in usage:
                        g = GaugeMetricFamily(name, doc, labels=["gpu"])
                        for i, v in enumerate(usage[key]):
                            g.add_metric([str(i)], v)
                        yield g
                for key, name, doc in (("cpu_percent", "posefuse_cpu_percent", "CPU, % of one core (decode "
                                                                                "hosts included)"),
                                       ("rss_mib", "posefuse_resident_memory_mib", "resident memory, MiB (decode "
                                                                                   "hosts included)"),
                                       ("rss_children_mib", "posefuse_decode_hosts_memory_mib",
                                        "resident memory of the decode hosts, MiB")):
                    if key in usage:
                        yield GaugeMetricFamily(name, doc, value=usage[key])

        reg = CollectorRegistry()
        reg.register(Figures())
        return generate_latest(reg)


def _le(bound: float) -> str:
    """A Prometheus bucket's bound as text ('+Inf' for infinity)."""
    return "+Inf" if bound == float("inf") else f"{bound:g}"


def _fields(body, types: dict, required=()):
    """The request body is a JSON object of known fields with the types asked for."""
    if not isinstance(body, dict):
        raise RequestError(400, "body: expected a JSON object")
    for k in body:
        if k not in types:
            raise RequestError(400, f"{k}: not a field of this request (fields: {', '.join(types)})")
    for k in required:
        if k not in body:
            raise RequestError(400, f"{k}: required")
    for k, v in body.items():
        if not isinstance(v, types[k]) or (isinstance(v, bool) and bool not in types[k]):
            raise RequestError(400, f"{k}: expected {' or '.join(t.__name__ for t in types[k])}, got {v!r}")


def _positive(body: dict, name: str):
    v = body.get(name)
    if v is not None and v < 1:
        raise RequestError(400, f"{name}: expected >= 1, got {v}")
    return v


# ---------------------------------------------------------------------------------------------- HTTP
def make_app(service: Service):
    from aiohttp import web

    token = service.cfg.token

    @web.middleware
    async def guard(request, handler):
        """The token on every request; a refused or failing request is one JSON error, never a traceback."""
        try:
            if token is not None:
                given = request.headers.get("Authorization", "")
                if given != f"Bearer {token}" and request.query.get("token") != token:
                    raise RequestError(401, "token: missing or wrong (Authorization: Bearer TOKEN)")
            return await handler(request)
        except RequestError as e:
            return web.json_response({"error": str(e)}, status=e.status)
        except web.HTTPException as e:
            if e.status == 413:
                return web.json_response({"error": f"body: larger than {service.cfg.max_request_kb} KiB "
                                                   f"(--max-request-kb)"}, status=413)
            return web.json_response({"error": f"{request.path}: {e.reason}"}, status=e.status)
        except Exception as e:  # noqa: BLE001 - the server goes on
            return web.json_response({"error": f"internal: {type(e).__name__}: {e}"}, status=500)

    async def body(request):
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError(400, "body: expected JSON") from None

    async def health(request):
        return web.json_response({"status": "alive"})

    async def ready(request):
        ok, why = service.ready()
        return web.json_response({"ready": ok, "why": why}, status=200 if ok else 503)

    async def metrics(request):
        return web.Response(body=service.metrics(), content_type="text/plain", charset="utf-8")

    async def streams(request):
        return web.json_response({"streams": service.streams(), "waits_ms": service.control.waits()})

    async def add_stream(request):
        return web.json_response(service.add_stream(await body(request)), status=201)

    async def remove_stream(request):
        service.remove_stream(request.match_info["name"])
        return web.json_response({"removed": request.match_info["name"]})

    async def jobs(request):
        return web.json_response({"jobs": [{"id": j.id, "state": j.state, "sources": [s[0] for s in j.streams],
                                            "results": sum(j.sent.values())} for j in service.jobs.values()]})

    async def post_job(request):
        job = service.new_job(await body(request))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        save = open(job.options["save_json"], "w") if job.options.get("save_json") else None
        try:
            while True:
                try:
                    live, rec = await asyncio.wait_for(job.records.get(), POLL_S)
                except asyncio.TimeoutError:
                    if job.records.empty() and service.job_finished(job):
                        break
                    continue
                job.sent[live] = job.sent.get(live, 0) + 1
                line = json.dumps(rec) + "\n"
                if save is not None:
                    save.write(line)
                await resp.write(line.encode())
            job.state = "done"
            service.forget_job(job)
            if save is not None:  # complete on disk before the client reads the end of the job
                save.close()
                save = None
            report = job.report
            if job.options.get("out"):
                Path(job.options["out"]).write_text(json.dumps(report, indent=1))
            await resp.write((json.dumps({"report": report}) + "\n").encode())
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):  # the client went away: the service goes on
            service.cancel_job(job)
            raise
        finally:
            if save is not None:
                save.close()
            with service._lock:
                for _, _, live in job.streams:
                    service._job_of.pop(live, None)
        return resp

    async def page(request):
        return web.Response(text=STATUS_PAGE, content_type="text/html")

    app = web.Application(middlewares=[guard], client_max_size=service.cfg.max_request_kb * 1024)
    app.add_routes([web.get("/", page), web.get("/health", health), web.get("/ready", ready),
                    web.get("/metrics", metrics), web.get("/streams", streams), web.post("/streams", add_stream),
                    web.delete("/streams/{name}", remove_stream), web.get("/jobs", jobs),
                    web.post("/jobs", post_job)])
    return app


def serve(cfg: ServeConfig, on_listening=None) -> int:
    """Start the service and answer requests until SIGTERM or Ctrl-C, then drain: new jobs and streams are
    refused, the run reads no new frames and finishes those in flight, each job's response ends with its
    report; then the server closes. ``on_listening(port)`` is called once it listens. Returns 0; raises
    what the run raised when its engine could not start (a ConfigError for a model it cannot run)."""
    import signal

    from aiohttp import web

    from .mps import resolved

    cfg = dataclasses.replace(cfg, run=resolved(cfg.run)).checked()  # MPS joined or not before CUDA starts here
    service = Service(cfg)
    app = make_app(service)

    async def main():
        loop = asyncio.get_running_loop()
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, cfg.host, cfg.port, shutdown_timeout=DRAIN_S)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # the one asked for, or the free one port 0 got
        service.start(loop)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"[serve] http://{cfg.host}:{port} (device {cfg.run.device}, model {cfg.run.model}); "
              f"sources under {', '.join(cfg.allow_roots)}", flush=True)
        if on_listening is not None:
            on_listening(port)
        warm = loop.run_in_executor(None, service.control.wait_started)
        await asyncio.wait([warm, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if warm.done() and warm.exception() is not None:  # the engine did not start: no service to give
            await runner.cleanup()
            raise service.control.error
        await stop.wait()
        await loop.run_in_executor(None, service.stop, DRAIN_S)  # the run drains and ends
        deadline = time.perf_counter() + DRAIN_S
        while any(j.state == "running" for j in service.jobs.values()) and time.perf_counter() < deadline:
            await asyncio.sleep(POLL_S)  # each job's handler sends the rest and its report
        await runner.cleanup()
        print(f"[serve] stopped: {sum(j.state == 'done' for j in service.jobs.values())} jobs done", flush=True)

    asyncio.run(main())
    return 0


STATUS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>posefuse</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:4px 10px;
border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}</style></head>
<body><h1>posefuse</h1><p id="ready">...</p>
<h2>Streams</h2><table id="streams"><thead><tr><th>stream</th><th>state</th><th>frames</th><th>results</th>
<th>frames/s</th><th>p99 ms</th><th>drops</th></tr></thead><tbody></tbody></table>
<h2>Jobs</h2><table id="jobs"><thead><tr><th>job</th><th>state</th><th>results</th><th>sources</th></tr></thead>
<tbody></tbody></table>
<script>
const q = location.search;
function cell(v) { const td = document.createElement("td"); td.textContent = v; return td; }
async function refresh() {
  try {
    const r = await fetch("/ready" + q); const ready = await r.json();
    document.getElementById("ready").textContent = ready.why;
    const s = await (await fetch("/streams" + q)).json();
    const body = document.querySelector("#streams tbody"); body.replaceChildren();
    for (const x of s.streams) {
      const tr = document.createElement("tr"); tr.dataset.stream = x.name;
      const drops = Object.values(x.drops).reduce((a, b) => a + b, 0);
      for (const v of [x.name, x.state, x.frames_in, x.results, x.frames_per_s.toFixed(1),
                       x.latency_ms.p99.toFixed(1), drops]) tr.appendChild(cell(v));
      tr.children[3].className = "results"; body.appendChild(tr);
    }
    const j = await (await fetch("/jobs" + q)).json();
    const jb = document.querySelector("#jobs tbody"); jb.replaceChildren();
    for (const x of j.jobs) {
      const tr = document.createElement("tr");
      for (const v of [x.id, x.state, x.results, x.sources.join(" ")]) tr.appendChild(cell(v));
      jb.appendChild(tr);
    }
  } catch (e) { document.getElementById("ready").textContent = "server unreachable"; }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
