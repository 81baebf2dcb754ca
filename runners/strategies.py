"""Execution strategies (the optimization plan's phases), each selectable by name.

* ``serial``: one frame at a time through the fused pipeline (the status quo's shape);
* ``batched``: fixed batches through the fused pipeline, the next batch queued while the last is read back;
* ``ultralytics``: Ultralytics ``predict`` frame by frame, the baseline;
* ``pipelined`` / ``streams`` / ``dynamic``: all sources at once through threads and bounded queues
  (runners/concurrent.py); ``multigpu``: one worker process per GPU (runners/multigpu.py).

Every frame that enters a runner ends as a result (``on_result``) or as a recorded drop with its reason
(``monitor.dropped``); ``PerformanceMonitor.stop`` asserts that the two add up to the frames in.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from fusion.pipeline import PoseResult
from kernels._common import KernelInputError, as_tensor
from kernels.letterbox import check_frame

from .monitor import PerformanceMonitor
from .sources import Source, SourceError

RUNNERS = ("serial", "batched", "ultralytics", "pipelined", "streams", "dynamic", "multigpu")
CONCURRENT = ("pipelined", "streams", "dynamic")  # all sources at once (runners/concurrent.py)

# on_result(stream, frame index, image, poses): ``image`` is the BGR frame, or None for an NV12 (NVDEC) frame,
# whose buffer the source has reused by then
OnResult = Callable[[str, int, object, PoseResult], None]


def frame_problem(stream: str, index: int, image, pixel_format: str = "bgr", device=None) -> str | None:
    """Why a frame cannot go into a batch (its stream and index named), or None when it is fine.
    ``device``: the pipeline's device; a frame must be in host memory or on that device."""
    name = f"{stream}[{index}]"
    try:
        t = as_tensor(image, name)
        check_frame(t, name, pixel_format)
    except KernelInputError as e:
        return str(e)
    if device is not None and t.device.type != "cpu" and t.device != torch.device(device):
        return f"{name}: expected a frame in host memory or on {device}, got one on {t.device}"
    return None


def pipe_device(pipe):
    """The device frames go to (the first replica's), or None when the engine does not say."""
    p = pipe[0] if isinstance(pipe, (list, tuple)) else pipe
    return getattr(p, "device", None)


def submit_frames(pipe, frames: list) -> list:
    """Submit ``frames`` (sources.Frame) as few batches as their pixel formats allow (in order); the current
    stream first waits on each frame's ``ready`` event (NVDEC). Returns [(frames, parts)] where ``parts``
    are submit_split()'s PendingBatches."""
    groups: list = []
    for f in frames:
        if groups and groups[-1][0] == f.pixel_format:
            groups[-1][1].append(f)
        else:
            groups.append((f.pixel_format, [f]))
    waited = set()
    for f in frames:
        if f.ready is not None and id(f.ready) not in waited:
            waited.add(id(f.ready))
            torch.cuda.current_stream().wait_event(f.ready)
    return [(g, submit_split(pipe, [f.image for f in g], fmt)) for fmt, g in groups]


def submit_split(pipe, images: list, pixel_format: str = "bgr") -> list:
    """``pipe.submit(images)``; on CUDA out-of-memory the batch is split in halves and retried (with a
    warning), down to single frames. Returns the PendingBatches covering ``images``, in order."""
    try:
        return [pipe.submit(images, pixel_format)]
    except torch.cuda.OutOfMemoryError:
        if len(images) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(images) // 2
        warnings.warn(f"CUDA out of memory for a batch of {len(images)}: splitting into {half} + {len(images) - half}",
                      RuntimeWarning, stacklevel=2)
        return submit_split(pipe, images[:half], pixel_format) + submit_split(pipe, images[half:], pixel_format)


def results_of(parts: list, monitor: PerformanceMonitor | None = None) -> list:
    """The PoseResults of a submit_split() answer, in frame order (each batch's GPU stage times go to
    ``monitor``)."""
    out = []
    for p in parts:
        out.extend(p.result())
        if monitor is not None and p.gpu_ms:
            monitor.gpu_stages(p.gpu_ms)
    return out


def finish(submitted: list, monitor: PerformanceMonitor | None = None):
    """Wait for submit_frames()'s batches; yields (frame, PoseResult) in order, each frame released."""
    for frames, parts in submitted:
        for f, r in zip(frames, results_of(parts, monitor)):
            f.done()
            yield f, r


def _deliver(name: str, done, monitor: PerformanceMonitor, on_result: OnResult | None):
    """``done``: (frame, PoseResult) pairs in order (strategies.finish)."""
    for f, r in done:
        monitor.done((name, f.index), len(r))
        if on_result is not None:  # an NV12 frame's buffer is back in its source's pool by now
            on_result(name, f.index, f.image if f.pixel_format == "bgr" else None, r)


def admit(name: str, frames: list, monitor: PerformanceMonitor, device=None) -> list:
    """Count ``frames`` of stream ``name`` in (one arrival for all) and return the good ones, in order; a bad
    frame becomes a recorded drop naming stream, index and reason (the stream goes on)."""
    keys = [(name, f.index) for f in frames]
    monitor.arrived_many(keys)
    good = []
    for f, key in zip(frames, keys):
        bad = frame_problem(name, f.index, f.image, f.pixel_format, device)
        if bad:
            f.done()
            monitor.dropped(key, bad)
        else:
            good.append(f)
    return good


def _arrive(src: Source, f, monitor: PerformanceMonitor, device=None) -> bool:
    """Count the frame in; a bad frame becomes a recorded drop (and False)."""
    return bool(admit(src.name, [f], monitor, device))


def run_serial(src: Source, pipe, monitor: PerformanceMonitor, on_result: OnResult | None = None):
    for f in src.frames:
        if _arrive(src, f, monitor, pipe_device(pipe)):
            _deliver(src.name, finish(submit_frames(pipe, [f]), monitor), monitor, on_result)


def run_batched(src: Source, pipe, monitor: PerformanceMonitor, on_result: OnResult | None = None, batch: int = 32):
    pending = None  # the last batch's submitted parts: read back while the next batch is staged and queued
    buf = []

    def flush(frames):
        nonlocal pending
        p = submit_frames(pipe, frames)
        if pending is not None:
            _deliver(src.name, finish(pending, monitor), monitor, on_result)
        pending = p

    try:
        for f in src.frames:
            if not _arrive(src, f, monitor, pipe_device(pipe)):
                continue
            buf.append(f)
            if len(buf) == batch:
                flush(buf)
                buf = []
    finally:  # also when the source fails mid-stream: frames already in are finished, then the error goes on
        if buf:
            flush(buf)
        if pending is not None:
            _deliver(src.name, finish(pending, monitor), monitor, on_result)


def run_ultralytics(src: Source, yolo, monitor: PerformanceMonitor, on_result: OnResult | None = None, **predict_kw):
    for f in src.frames:
        monitor.arrived((src.name, f.index))
        r = yolo.predict(f.image, verbose=False, **predict_kw)[0]
        res = PoseResult(r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(),
                         r.keypoints.data.cpu().numpy().reshape(-1, 17, 3))
        _deliver(src.name, [(f, res)], monitor, on_result)


def run_source(src: Source, runner: str, engine, monitor: PerformanceMonitor, on_result: OnResult | None = None,
               batch: int = 32, predict_kw: dict | None = None):
    """Run one source with one strategy. A source that fails mid-stream raises SourceError (the frames it
    delivered before are already accounted for)."""
    if runner == "serial":
        run_serial(src, engine, monitor, on_result)
    elif runner == "batched":
        run_batched(src, engine, monitor, on_result, batch)
    elif runner == "ultralytics":
        run_ultralytics(src, engine, monitor, on_result, **(predict_kw or {}))
    else:
        raise ValueError(f"runner: expected one of {RUNNERS}, got {runner!r}")


__all__ = ["RUNNERS", "CONCURRENT", "run_source", "run_serial", "run_batched", "run_ultralytics", "SourceError"]
