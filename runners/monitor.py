"""PerformanceMonitor: frames/s, per-frame latency (arrival -> result) percentiles, frame accounting, GPU
memory (torch), CPU usage (psutil, when installed); a JSON report and a console summary."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter

import numpy as np
import torch


class PerformanceMonitor:
    """Thread-safe: decode threads report arrivals, the result thread reports results and drops."""

    def __init__(self):
        self._lock = threading.Lock()
        self.t0 = None
        self.t_end = None
        self.arrivals: dict[tuple, float] = {}
        self.latencies: list[float] = []
        self.frames_in = 0
        self.results = 0
        self.drops: Counter = Counter()
        self.detections = 0
        self._cpu = None
        try:
            import psutil

            self._cpu = psutil.Process()
            self._cpu.cpu_percent(None)
        except Exception:  # psutil is optional
            self._cpu = None
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def start(self):
        self.t0 = time.perf_counter()

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
            "cpu_percent": self._cpu.cpu_percent(None) if self._cpu else None,
        }
        if torch.cuda.is_available():
            rep["gpu_peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
            rep["gpu"] = torch.cuda.get_device_name(0)
        return rep

    def summary(self) -> str:
        r = self.report()
        fps = f"{r['frames_per_s']:.1f}" if r["frames_per_s"] else "-"
        return (f"{r['results']}/{r['frames_in']} frames, {fps} frames/s, latency p50 {r['latency_ms']['p50']:.1f} ms "
                f"p99 {r['latency_ms']['p99']:.1f} ms, {r['detections']} poses, drops {r['drops'] or 0}")

    def write(self, path: str, extra: dict | None = None):
        with open(path, "w") as f:
            json.dump({**(extra or {}), **self.report()}, f, indent=1)
