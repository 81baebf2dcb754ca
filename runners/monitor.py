"""PerformanceMonitor: frames/s, per-frame latency (arrival -> result) percentiles, frame accounting,
per-stage GPU time (CUDA events), GPU memory (torch and NVML), GPU utilization (NVML), CPU usage and host
memory (psutil); a JSON report, a console summary and a progress line."""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter, defaultdict

import numpy as np
import torch


class LatencyHistogram:
    """Latencies in log-spaced bins (1 us .. 1000 s, 1% wide): constant memory however long the run, and
    percentiles within 1%. ``cdf()`` gives the distribution for plots."""

    BINS = np.geomspace(1e-6, 1e3, int(np.log(1e9) / np.log(1.01)) + 1)

    def __init__(self):
        self.counts = np.zeros(len(self.BINS) + 1, np.int64)
        self.n = 0
        self.max = 0.0

    def add(self, seconds: float):
        self.add_many([seconds])

    def add_many(self, seconds: list):
        if not seconds:
            return
        np.add.at(self.counts, np.searchsorted(self.BINS, seconds), 1)
        self.n += len(seconds)
        self.max = max(self.max, max(seconds))

    def percentile(self, q: float) -> float:
        """The q-th percentile in seconds (upper edge of its bin, capped at the largest value seen)."""
        if self.n == 0:
            return 0.0
        i = int(np.searchsorted(np.cumsum(self.counts), q / 100 * self.n))
        return float(min(self.BINS[min(i, len(self.BINS) - 1)], self.max))

    def cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """(latency_ms at bin upper edges, fraction <= it), only bins that hold values."""
        c = np.cumsum(self.counts[:-1])
        keep = self.counts[:-1] > 0
        return self.BINS[keep] * 1e3, c[keep] / max(1, self.n)


class PerformanceMonitor:
    """Thread-safe: decode threads report arrivals, the result thread reports results and drops."""

    def __init__(self, usage: bool = True, progress_total: int | None = None, progress_stream=None):
        self._lock = threading.Lock()
        self.t0 = None
        self.t_end = None
        self.arrivals: dict[tuple, float] = {}
        self.latency = LatencyHistogram()
        self.frames_in = 0
        self.results = 0
        self.drops: Counter = Counter()
        self.detections = 0
        self.stage_ms: dict = defaultdict(float)  # summed GPU ms per stage
        self.stage_batches: Counter = Counter()
        self.thread_s: dict = {}
        self.sampler = None
        if usage:
            from .gpuinfo import UsageSampler

            self.sampler = UsageSampler()
        self.progress_total = progress_total  # frames expected (file sources): a progress line on stderr
        self._progress_out = progress_stream or sys.stderr
        self._progress_t = 0.0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def start(self):
        self.t0, self.t_end = time.perf_counter(), None
        if self.sampler is not None:
            self.sampler.start()

    def runner_times(self, seconds: dict):
        """Seconds the runner's threads spent per activity, summed over threads of a kind (concurrent.py)."""
        with self._lock:
            for k, v in seconds.items():
                self.thread_s[k] = self.thread_s.get(k, 0.0) + v

    def gpu_stages(self, ms: dict):
        """One batch's GPU time per stage (PendingBatch.gpu_ms)."""
        with self._lock:
            for k, v in ms.items():
                self.stage_ms[k] += v
                self.stage_batches[k] += 1

    def arrived(self, key, t: float | None = None):
        """A frame entered the runner (``key``: (stream, frame index); ``t``: its arrival time, default now)."""
        self.arrived_many([key], t)

    def arrived_many(self, keys: list, t: float | None = None):
        """Frames that entered together (a decoder's chunk): one lock, one clock reading."""
        t = time.perf_counter() if t is None else t
        with self._lock:
            if self.t0 is None:
                self.start()
            self.frames_in += len(keys)
            self.arrivals.update(dict.fromkeys(keys, t))

    def done(self, key, n_detections: int):
        self.done_many([(key, n_detections)])

    def done_many(self, done: list):
        """Results of several frames: ``done`` is [(key, detections)]."""
        now = time.perf_counter()
        with self._lock:
            lat = [now - self.arrivals.pop(key) for key, _ in done]
            self.results += len(done)
            self.detections += sum(n for _, n in done)
            self.latency.add_many(lat)
        if self.progress_total:
            self._progress()

    def _progress(self, final: bool = False):
        now = time.perf_counter()
        if not final and now - self._progress_t < 0.5:
            return
        self._progress_t = now
        n, total = self.results + sum(self.drops.values()), self.progress_total
        wall = now - (self.t0 or now)
        rate = self.results / wall if wall > 0 else 0.0
        width = 30
        filled = int(width * min(1.0, n / total)) if total else 0
        eta = (total - n) / rate if rate > 0 and total and n < total else 0.0
        self._progress_out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {n}/{total} frames "
                                 f"{rate:7.1f} fr/s eta {eta:5.1f} s" + ("\n" if final else ""))
        self._progress_out.flush()

    def dropped(self, key, reason: str):
        with self._lock:
            self.drops[reason] += 1
            self.arrivals.pop(key, None)

    def unfinished(self) -> list:
        """Keys of frames that arrived and have neither a result nor a recorded drop."""
        with self._lock:
            return list(self.arrivals)

    def end_clock(self):
        """The run's last result is in: the clock (wall_s, frames/s) ends now, not at stop() (the multigpu
        runner calls it when its last worker reports the end, before the worker processes are joined)."""
        if self.t_end is None:
            self.t_end = time.perf_counter()

    def stop(self):
        self.end_clock()
        if self.sampler is not None:
            self.sampler.stop()
        if self.progress_total:
            self._progress(final=True)
        lost = self.frames_in - self.results - sum(self.drops.values())
        if lost:
            raise AssertionError(f"accounting: {self.frames_in} frames in, {self.results} results, "
                                 f"{sum(self.drops.values())} recorded drops: {lost} frames unaccounted for")

    def report(self) -> dict:
        wall = (self.t_end or time.perf_counter()) - (self.t0 or time.perf_counter())
        lat = self.latency
        rep = {
            "frames_in": self.frames_in, "results": self.results, "drops": dict(self.drops),
            "detections": self.detections, "wall_s": wall,
            "frames_per_s": self.results / wall if wall > 0 else None,
            "latency_ms": {"p50": lat.percentile(50) * 1e3, "p95": lat.percentile(95) * 1e3,
                           "p99": lat.percentile(99) * 1e3, "max": lat.max * 1e3},
            "gpu_stage_ms_per_batch": {k: self.stage_ms[k] / self.stage_batches[k] for k in self.stage_ms},
            "gpu_stage_ms_total": dict(self.stage_ms),
            "runner_thread_s": dict(self.thread_s),
        }
        if self.sampler is not None:
            rep["usage"] = self.sampler.summary()
        if torch.cuda.is_available():
            rep["gpu_peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20  # torch allocator, this process
            rep["gpu"] = torch.cuda.get_device_name(0)
        return rep

    def summary(self) -> str:
        r = self.report()
        fps = f"{r['frames_per_s']:.1f}" if r["frames_per_s"] else "-"
        u = r.get("usage") or {}
        gpu = (u.get("gpu_util_percent") or {}).get("mean")
        cpu = (u.get("cpu_percent") or {}).get("mean")
        extra = (f", GPU util {gpu:.0f}%" if gpu is not None else "") + (f", CPU {cpu:.0f}%" if cpu is not None else "")
        return (f"{r['results']}/{r['frames_in']} frames, {fps} frames/s, latency p50 {r['latency_ms']['p50']:.1f} ms "
                f"p99 {r['latency_ms']['p99']:.1f} ms, {r['detections']} poses, drops {r['drops'] or 0}{extra}")

    def write(self, path: str, extra: dict | None = None):
        with open(path, "w") as f:
            json.dump({**(extra or {}), **self.report()}, f, indent=1)
