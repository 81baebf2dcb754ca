"""The concurrent runner's host-side ceiling, without a GPU: the runner's real threads, queues, accounting
and result path, around a simulated decoder and a simulated GPU.

    python experiments/host_overhead.py [--streams 8] [--frames 1400] [--decoder-fps 1140] [--gpu-fps 8667]
                                        [--batch 64] [--chunk 64] [--max-wait-ms 5] [--profile]

* Each stream's decoder hands out ``chunk`` NV12 frames per call after ``chunk / decoder_fps`` seconds with
  the GIL released, into a frame pool of its own (runners.chunked.simulated_stream: the NVDEC source's
  ChunkStream and FramePool, the same code), so a stream waits when its frames are not released;
  ``--process``: each decoder in a decode process (runners.chunked.process_source).
* The simulated GPU runs batches back to back at ``gpu_fps``; ``submit`` does what PosePipeline.submit does
  on the host for device frames in graph mode (frame checks, bucket padding, the pointer table), waits for
  its ring slot like the pipeline does (two slots), and ``result()`` sleeps until the batch is done, then
  unpacks a results buffer with two poses per frame as PosePipeline does.

The defaults are the H100 figures of results/runners.json (768x432 clip, 8 streams): NVDEC alone 9,120
frames/s (1,140 per stream), the fused pipeline alone 8,667 frames/s. The report gives the end-to-end rate
over min(decoders, GPU) (the runners issue's ratio) and where the threads spent their time; ``--profile``
adds the functions that held each thread the longest (cProfile per thread).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusion.pipeline import PendingBatch, _results_from, bucket_size
from kernels.letterbox import normalize_frames, source_rows
from kernels.nms import Detections
from runners.chunked import process_source, simulated_stream
from runners.sources import Source


def sim_source(name: str, n: int, fps: float, chunk: int, process: bool = False) -> Source:
    """``n`` NV12 frames from a simulated decoder (runners.chunked.simulated_stream), in this process or in a
    decode process of its own."""
    kw = {"name": name, "frames": n, "fps": fps, "chunk": chunk}
    if process:
        return process_source("runners.chunked:simulated_stream", kw, name)
    return simulated_stream(**kw).source()


class SimPipe:
    """PosePipeline's host side for device frames in graph mode, with a simulated GPU (see module docstring)."""

    device = torch.device("cpu")

    def __init__(self, gpu_fps: float, max_det: int = 300, poses: int = 2):
        self.frame_s = 1.0 / gpu_fps
        self.gpu_free = 0.0
        self.ring: dict = {}
        self.host = Detections.empty(64, max_det, "cpu")
        self.host.counts[:] = poses

    def submit(self, frames, pixel_format: str = "bgr"):
        items, batch, _dev, shapes = normalize_frames(frames, pixel_format)
        n_real = len(shapes)
        nb = bucket_size(n_real)
        if nb > n_real:
            items = list(items if items is not None else batch.unbind(0))
            items += [items[-1]] * (nb - n_real)
            shapes = shapes + [shapes[-1]] * (nb - n_real)
        source_rows(items, None, shapes, pixel_format == "nv12")
        ring = self.ring.setdefault(nb, [0.0, 0.0])
        now = time.perf_counter()
        wait = ring[0] - now  # the slot two batches back must be done (PosePipeline._next_slot)
        if wait > 0:
            time.sleep(wait)
            now = time.perf_counter()
        t_done = self.gpu_free = max(now, self.gpu_free) + nb * self.frame_s
        ring.pop(0)
        ring.append(t_done)
        return _SimPending(self.host, n_real, t_done)

    def warmup(self, *a, **k):
        pass


class _SimPending(PendingBatch):
    def __init__(self, host, n, t_done):
        super().__init__(results=None)
        self._host, self._n, self._t_done = host, n, t_done

    def done(self) -> bool:
        return time.perf_counter() >= self._t_done

    def _materialize(self):
        with self._lock:
            if self._results is None:
                wait = self._t_done - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                self._results = _results_from(self._host, self._n)


def run(streams: int, frames: int, decoder_fps: float, gpu_fps: float, batch: int, chunk: int,
        max_wait_ms: float | None, profile: bool = False, process: bool = False) -> dict:
    from runners.concurrent import run_concurrent
    from runners.monitor import PerformanceMonitor

    sources = [sim_source(f"s{k}", frames, decoder_fps, chunk, process) for k in range(streams)]
    pipe = SimPipe(gpu_fps)
    profiles = []
    if profile:
        _profile_threads(profiles)
    mon = PerformanceMonitor(usage=False)
    cpu0 = time.process_time()
    mon.start()
    failed = run_concurrent(sources, pipe, mon, batch=batch, max_wait_ms=max_wait_ms)
    mon.stop()
    cpu = time.process_time() - cpu0
    rep = mon.report()
    bound = min(streams * decoder_fps, gpu_fps)
    out = {"streams": streams, "decode_process": process, "frames": rep["results"], "frames_per_s": rep["frames_per_s"],
           "bound_frames_per_s": bound, "over_bound": rep["frames_per_s"] / bound,
           "cpu_us_per_frame": cpu / max(1, rep["results"]) * 1e6, "latency_ms": rep["latency_ms"],
           "runner_thread_s": rep["runner_thread_s"], "failed": failed}
    if profile:
        threading.Thread.run = _ORIG_RUN
        out["profile"] = _merge(profiles)
    return out


_ORIG_RUN = threading.Thread.run


def _profile_threads(sink: list):
    def run(self):
        p = cProfile.Profile()
        p.enable()
        try:
            _ORIG_RUN(self)
        finally:
            p.disable()
            sink.append((self.name.rsplit("-", 1)[0], p))

    threading.Thread.run = run


def _merge(profiles, top: int = 18) -> dict:
    by_kind: dict = {}
    for kind, p in profiles:
        by_kind.setdefault(kind, []).append(p)
    out = {}
    for kind, ps in by_kind.items():
        s = io.StringIO()
        st = pstats.Stats(ps[0], stream=s)
        for p in ps[1:]:
            st.add(p)
        st.sort_stats("tottime").print_stats(top)
        out[kind] = s.getvalue()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--frames", type=int, default=1400, help="frames per stream")
    ap.add_argument("--decoder-fps", type=float, default=1140.0, help="per stream")
    ap.add_argument("--gpu-fps", type=float, default=8667.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="dynamic batcher; negative: pipelined")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--process", action="store_true", help="each simulated decoder in a decode process")
    ap.add_argument("--json", help="write the report here")
    a = ap.parse_args(argv)
    wait = None if a.max_wait_ms < 0 else a.max_wait_ms
    r = run(a.streams, a.frames, a.decoder_fps, a.gpu_fps, a.batch, a.chunk, wait, a.profile, a.process)
    for kind, text in (r.pop("profile", None) or {}).items():
        print(f"==== {kind}\n{text}")
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
    return r


if __name__ == "__main__":
    main()
