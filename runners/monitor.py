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


class PerformanceMonitor:
    """Thread-safe: decode threads report arrivals, the result thread reports results and drops."""

    def __init__(self, usage: bool = True, progress_total: int | None = None, progress_stream=None):
        self._lock = threading.Lock()
        self.t0 = None
        self.t_end = None
        self.arrivals: dict[tuple, float] = {}
        self.latencies: list[float] = []
        self.frames_in = 0
        self.results = 0
        self.drops: Counter = Counter()
        self.detections = 0
        self.stage_ms: dict = defaultdict(float)  # summed GPU ms per stage
        self.stage_batches: Counter = Counter()
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
        self.t0 = time.perf_counter()
        if self.sampler is not None:
            self.sampler.start()

    def gpu_stages(self, ms: dict):
        """One batch's GPU time per stage (PendingBatch.gpu_ms)."""
        with self._lock:
            for k, v in ms.items():
                self.stage_ms[k] += v
                self.stage_batches[k] += 1

    def arrived(self, key, t: float | None = None):
        """A frame entered the runner (``key``: (stream, frame index); ``t``: its arrival time, default now)."""
        with self._lock:
            if self.t0 is None:
                self.start()
            self.frames_in += 1
            self.arrivals[key] = time.perf_counter() if t is None else t

    def done(self, key, n_detections: int):
        with self._lock:
            self.results += 1
            self.detections += n_detections
            self.latencies.append(time.perf_counter() - self.arrivals.pop(key))
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

    def stop(self):
        self.t_end = time.perf_counter()
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
        lat = np.array(self.latencies) * 1e3 if self.latencies else np.zeros(1)
        rep = {
            "frames_in": self.frames_in, "results": self.results, "drops": dict(self.drops),
            "detections": self.detections, "wall_s": wall,
            "frames_per_s": self.results / wall if wall > 0 else None,
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                           "p99": float(np.percentile(lat, 99)), "max": float(lat.max())},
            "gpu_stage_ms_per_batch": {k: self.stage_ms[k] / self.stage_batches[k] for k in self.stage_ms},
            "gpu_stage_ms_total": dict(self.stage_ms),
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
