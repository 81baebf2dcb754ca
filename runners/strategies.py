"""Execution strategies (the optimization plan's phases), each selectable by name.

* ``serial``: one frame at a time through the fused pipeline (the status quo's shape);
* ``batched``: fixed batches through the fused pipeline, the next batch queued while the last is read back;
* ``ultralytics``: Ultralytics ``predict`` frame by frame, the baseline;
* ``pipelined`` / ``dynamic``: all sources at once through threads and bounded queues (runners/concurrent.py).

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

RUNNERS = ("serial", "batched", "ultralytics", "pipelined", "dynamic")
CONCURRENT = ("pipelined", "dynamic")  # all sources at once (runners/concurrent.py)

OnResult = Callable[[str, int, object, PoseResult], None]


def frame_problem(stream: str, index: int, image) -> str | None:
    """Why a frame cannot go into a batch (its stream and index named), or None when it is fine."""
    try:
        check_frame(as_tensor(image, f"{stream}[{index}]"), f"{stream}[{index}]", "bgr")
    except KernelInputError as e:
        return str(e)
    return None


def submit_split(pipe, images: list) -> list:
    """``pipe.submit(images)``; on CUDA out-of-memory the batch is split in halves and retried (with a
    warning), down to single frames. Returns the PendingBatches covering ``images``, in order."""
    try:
        return [pipe.submit(images)]
    except torch.cuda.OutOfMemoryError:
        if len(images) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(images) // 2
        warnings.warn(f"CUDA out of memory for a batch of {len(images)}: splitting into {half} + {len(images) - half}",
                      RuntimeWarning, stacklevel=2)
        return submit_split(pipe, images[:half]) + submit_split(pipe, images[half:])


def results_of(parts: list) -> list:
    """The PoseResults of a submit_split() answer, in frame order."""
    return [r for p in parts for r in p.result()]


def _deliver(src: Source, frames, results, monitor: PerformanceMonitor, on_result: OnResult | None):
    for f, r in zip(frames, results):
        monitor.done((src.name, f.index), len(r))
        if on_result is not None:
            on_result(src.name, f.index, f.image, r)


def _drop(src: Source, frames, monitor: PerformanceMonitor, reason: str):
    for f in frames:
        monitor.dropped((src.name, f.index), reason)


def run_serial(src: Source, pipe, monitor: PerformanceMonitor, on_result: OnResult | None = None):
    for f in src.frames:
        monitor.arrived((src.name, f.index))
        bad = frame_problem(src.name, f.index, f.image)
        if bad:  # a bad frame: recorded, the stream goes on
            _drop(src, [f], monitor, bad)
            continue
        _deliver(src, [f], results_of(submit_split(pipe, [f.image])), monitor, on_result)


def run_batched(src: Source, pipe, monitor: PerformanceMonitor, on_result: OnResult | None = None, batch: int = 32):
    pending = None  # (frames, PendingBatch): read back while the next batch is staged and queued
    buf = []

    def flush(frames):
        nonlocal pending
        p = submit_split(pipe, [f.image for f in frames])
        if pending is not None:
            _deliver(src, pending[0], results_of(pending[1]), monitor, on_result)
        pending = (frames, p)

    try:
        for f in src.frames:
            monitor.arrived((src.name, f.index))
            bad = frame_problem(src.name, f.index, f.image)
            if bad:
                _drop(src, [f], monitor, bad)
                continue
            buf.append(f)
            if len(buf) == batch:
                flush(buf)
                buf = []
    finally:  # also when the source fails mid-stream: frames already in are finished, then the error goes on
        if buf:
            flush(buf)
        if pending is not None:
            _deliver(src, pending[0], results_of(pending[1]), monitor, on_result)


def run_ultralytics(src: Source, yolo, monitor: PerformanceMonitor, on_result: OnResult | None = None, **predict_kw):
    for f in src.frames:
        monitor.arrived((src.name, f.index))
        r = yolo.predict(f.image, verbose=False, **predict_kw)[0]
        res = PoseResult(r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(),
                         r.keypoints.data.cpu().numpy().reshape(-1, 17, 3))
        _deliver(src, [f], [res], monitor, on_result)


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
