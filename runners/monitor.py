"""PerformanceMonitor: frames/s, per-frame latency (arrival -> result) percentiles, over the run and per
second, and its waits before the GPU (arrival -> queued -> batcher -> batch leaves), frame accounting, GPU time
per timed span (CUDA events), GPU utilization and memory (NVML), CPU usage and host memory (psutil); a
JSON report and a console summary."""
from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict

import numpy as np

# a stream's latency histogram's bounds, seconds (GET /metrics' posefuse_latency_seconds): around a 30 fr/s
# frame time and live mode's 50 ms default limit, up to the seconds of a backlog
LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class LatencyHistogram:
    """Latencies in log-spaced bins (1 us .. 1000 s, 1% wide): constant memory however long the run, and
    percentiles within 1%. ``cdf()`` gives the distribution for plots."""

    BINS = np.geomspace(1e-6, 1e3, int(np.log(1e9) / np.log(1.01)) + 1)

    # latencies kept in a list until then: a stream's few frames per batch cost no NumPy call, and 100
    # streams hold at most 100 x 256 floats (~0.8 MB) between folds
    FOLD = 256

    def __init__(self):
        self.counts = np.zeros(len(self.BINS) + 1, np.int64)
        self.n = 0
        self.sum = 0.0
        self.max = 0.0
        self._pending: list = []

    def add(self, seconds: float):
        self.add_many([seconds])

    def add_many(self, seconds: list):
        if not seconds:
            return
        self._pending.extend(seconds)
        self.n += len(seconds)
        self.sum += sum(seconds)
        self.max = max(self.max, max(seconds))
        if len(self._pending) >= self.FOLD:
            self._fold()

    def _fold(self):
        if self._pending:
            np.add.at(self.counts, np.searchsorted(self.BINS, self._pending), 1)
            self._pending = []

    def at_most(self, bounds: list) -> list:
        """How many values are at most each of ``bounds`` (seconds, ascending; within the bins' 1%): a
        cumulative histogram, as Prometheus's buckets count."""
        self._fold()
        c = np.cumsum(self.counts)
        return [int(c[np.searchsorted(self.BINS, b, side="right") - 1]) if b >= self.BINS[0] else 0 for b in bounds]

    def percentile(self, q: float) -> float:
        """The q-th percentile in seconds (upper edge of its bin, capped at the largest value seen)."""
        self._fold()
        if self.n == 0:
            return 0.0
        i = int(np.searchsorted(np.cumsum(self.counts), q / 100 * self.n))
        return float(min(self.BINS[min(i, len(self.BINS) - 1)], self.max))

    def cdf_points(self, points: int = 120) -> list:
        """The cdf() as at most ``points`` [ms, fraction] pairs (for reports and plots)."""
        x, y = self.cdf()
        if len(x) > points:
            idx = sorted({int(k * (len(x) - 1) / (points - 1)) for k in range(points)})
            x, y = x[idx], y[idx]
        return [[float(a), float(b)] for a, b in zip(x, y)]

    def cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """(latency_ms at bin upper edges, fraction <= it), only bins that hold values."""
        self._fold()
        c = np.cumsum(self.counts[:-1])
        keep = self.counts[:-1] > 0
        return self.BINS[keep] * 1e3, c[keep] / max(1, self.n)


class LatencyTimeline:
    """Latency per second of the run (by when results came): each second's results, p50, p99 and max in
    ms, so a tail can be placed in time (a start-up transient, a stall, a drift). Four numbers a second."""

    def __init__(self):
        self.seconds: list[list] = []  # [second, results, p50 ms, p99 ms, max ms]
        self._second, self._lat = None, []

    def add_many(self, second: int, seconds: list):
        if second != self._second:
            self._close()
            self._second = second
        self._lat.extend(seconds)

    def _close(self):
        if self._lat:
            a = np.asarray(self._lat) * 1e3
            p50, p99 = np.percentile(a, [50, 99])
            self.seconds.append([self._second, len(a), round(float(p50), 2), round(float(p99), 2),
                                 round(float(a.max()), 2)])
        self._lat = []

    def report(self) -> dict:
        self._close()
        return {"columns": ["second", "results", "p50_ms", "p99_ms", "max_ms"], "rows": list(self.seconds)}


class PerformanceMonitor:
    """The figures of a run (implements events.RunEvents). Thread-safe: decode threads report arrivals,
    the result thread results and drops. ``usage``: sample NVML and psutil while the clock runs;
    ``on_count(n)``: called with the number of frames each result or drop call finishes (a progress bar);
    ``timeline``: keep the latency per second (a run's total; a stream's monitor leaves it out)."""

    def __init__(self, usage: bool = True, on_count=None, timeline: bool = True):
        self._lock = threading.Lock()
        self.t0 = None
        self.t_end = None
        self.t_first = None  # the first result
        self.t_in, self.results_in = None, 0  # when every stream was in (streams_in), the results by then
        self.t_out, self.results_out = None, 0  # when the first stream ended (stream_ended), the results by then
        self.arrivals: dict[tuple, float] = {}
        self.latency = LatencyHistogram()
        self.waited = {k: LatencyHistogram() for k in ("intake", "queue", "batch")}  # RunEvents.waits
        self.timeline = LatencyTimeline() if timeline else None
        self.frames_in = 0
        self.results = 0
        self.drops: Counter = Counter()
        self.detections = 0
        self.span_ms: dict = defaultdict(float)  # summed GPU ms per timed span
        self.span_batches: Counter = Counter()
        self.batch_frames: Counter = Counter()  # frames a batch ran -> batches (RunEvents.waits)
        self.thread_s: dict = {}
        self.on_count = on_count
        self.sampler = None
        if usage:
            from .gpuinfo import UsageSampler

            self.sampler = UsageSampler()

    def start(self):
        self.t0, self.t_end = time.perf_counter(), None
        if self.sampler is not None:
            self.sampler.start()

    def thread_seconds(self, seconds: dict):
        with self._lock:
            for k, v in seconds.items():
                self.thread_s[k] = self.thread_s.get(k, 0.0) + v

    def gpu_spans(self, ms: dict):
        with self._lock:
            for k, v in ms.items():
                self.span_ms[k] += v
                self.span_batches[k] += 1

    def waits(self, intake: list, queue: list, batch: list, ran: int):
        with self._lock:
            for h, v in zip(self.waited.values(), (intake, queue, batch)):
                h.add_many(v)
            self.batch_frames[ran] += 1

    def batch_sizes(self) -> dict:
        """{frames a batch ran: batches} so far (a concurrent runner's)."""
        with self._lock:
            return dict(self.batch_frames)

    def waits_ms(self) -> dict:
        """The waits so far (:meth:`waits`), ms: {'intake'|'queue'|'batch': {'p50', 'p99', 'max'}}; empty
        before a concurrent runner has reported one."""
        with self._lock:
            if not self.waited["intake"].n:
                return {}
            return {name: {"p50": h.percentile(50) * 1e3, "p99": h.percentile(99) * 1e3, "max": h.max * 1e3}
                    for name, h in self.waited.items()}

    def arrived(self, keys: list, t: float | list | None = None):
        """``t``: one arrival time for all keys, one per key (a list), or None (now)."""
        t = time.perf_counter() if t is None else t
        with self._lock:
            if self.t0 is None:
                self.start()
            self.frames_in += len(keys)
            self.arrivals.update(zip(keys, t) if isinstance(t, list) else dict.fromkeys(keys, t))

    def delivered(self, results: list):
        now = time.perf_counter()
        with self._lock:
            lat = [now - self.arrivals.pop(key) for key, _ in results]
            if self.t_first is None:
                self.t_first = now
            self.results += len(results)
            self.detections += sum(n for _, n in results)
            self.latency.add_many(lat)
            if self.timeline is not None and self.t0 is not None:
                self.timeline.add_many(int(now - self.t0), lat)
        if self.on_count is not None:
            self.on_count(len(results))

    def dropped(self, key, reason: str):
        with self._lock:
            self.drops[reason] += 1
            self.arrivals.pop(key, None)
        if self.on_count is not None:
            self.on_count(1)

    def unfinished(self) -> list:
        """Keys of frames that arrived and have neither a result nor a recorded drop."""
        with self._lock:
            return list(self.arrivals)

    def streams_in(self):
        with self._lock:
            if self.t_in is None:
                self.t_in, self.results_in = time.perf_counter(), self.results

    def stream_ended(self, name: str):
        with self._lock:
            if self.t_out is None:
                self.t_out, self.results_out = time.perf_counter(), self.results

    def end_clock(self):
        if self.t_end is None:
            self.t_end = time.perf_counter()

    def stop(self):
        """Ends the clock and the sampler; raises AssertionError when a frame is unaccounted for."""
        self.end_clock()
        if self.sampler is not None:
            self.sampler.stop()
        lost = self.frames_in - self.results - sum(self.drops.values())
        if lost:
            raise AssertionError(f"accounting: {self.frames_in} frames in, {self.results} results, "
                                 f"{sum(self.drops.values())} recorded drops: {lost} frames unaccounted for")

    def snapshot(self) -> dict:
        """The figures so far, while the run goes on (a service's live view): counts, drops by reason,
        frames in flight, results per second since the first arrival, latency p50 and p99 in ms, and the
        latencies as a cumulative histogram (``latency_buckets``: [[bound s, results at most it]] over
        LATENCY_BUCKETS_S, then [inf, all]; ``latency_sum_s``)."""
        with self._lock:
            wall = time.perf_counter() - self.t0 if self.t0 is not None else 0.0
            lat = self.latency
            return {"frames_in": self.frames_in, "results": self.results, "drops": dict(self.drops),
                    "detections": self.detections, "in_flight": len(self.arrivals),
                    "frames_per_s": self.results / wall if wall > 0 else 0.0,
                    "latency_ms": {"p50": lat.percentile(50) * 1e3, "p99": lat.percentile(99) * 1e3},
                    "latency_buckets": [list(x) for x in zip(LATENCY_BUCKETS_S, lat.at_most(LATENCY_BUCKETS_S))]
                    + [[math.inf, lat.n]], "latency_sum_s": lat.sum}

    def _steady(self) -> dict:
        """Where the run says when every stream was in (streams_in): that moment (``streams_in_s``, seconds
        after the clock's start), the seconds from it until the first stream ended (``steady_s``) and the
        results per second meanwhile (``steady_frames_per_s``), every stream running: the rate of N streams
        at once, which a job's streams joining as they open (or ending apart) leave out of its overall
        figure. Both None where a stream ended before the last was in."""
        if self.t_in is None or self.t0 is None:
            return {}
        t_in = max(self.t_in, self.t0)
        t_out = self.t_out if self.t_out is not None else (self.t_end or time.perf_counter())
        results_out = self.results_out if self.t_out is not None else self.results
        if t_out <= t_in:
            return {"streams_in_s": t_in - self.t0, "steady_s": None, "steady_frames_per_s": None}
        return {"streams_in_s": t_in - self.t0, "steady_s": t_out - t_in,
                "steady_frames_per_s": (results_out - self.results_in) / (t_out - t_in)}

    def report(self) -> dict:
        wall = (self.t_end or time.perf_counter()) - (self.t0 or time.perf_counter())
        lat = self.latency
        rep = {
            "frames_in": self.frames_in, "results": self.results, "drops": dict(self.drops),
            "detections": self.detections, "wall_s": wall,
            "first_result_s": None if self.t_first is None or self.t0 is None else self.t_first - self.t0,
            "frames_per_s": self.results / wall if wall > 0 else None,
            **self._steady(),
            "latency_ms": {"p50": lat.percentile(50) * 1e3, "p95": lat.percentile(95) * 1e3,
                           "p99": lat.percentile(99) * 1e3, "max": lat.max * 1e3},
            "latency_cdf_ms": lat.cdf_points(),
            "gpu_ms_per_batch": {k: self.span_ms[k] / self.span_batches[k] for k in self.span_ms},
            "gpu_ms_total": dict(self.span_ms),
            "runner_thread_s": dict(self.thread_s),
        }
        waits = self.waits_ms()
        if waits:  # where a frame's latency goes before the GPU (a concurrent runner's)
            rep["waits_ms"] = waits
        if self.timeline is not None:
            rep["latency_per_second"] = self.timeline.report()
        if self.sampler is not None:
            rep["usage"] = self.sampler.summary()
        return rep
