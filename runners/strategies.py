"""Frame admission, batch submission, and the sequential runners.

* ``serial``: one frame at a time through the fused pipeline;
* ``batched``: fixed batches through the fused pipeline, the next batch queued while the last is read back;
* ``ultralytics``: Ultralytics ``predict`` frame by frame, the baseline.
The concurrent runners (``pipelined``, ``replicas``, ``dynamic``) are in concurrent.py, ``multigpu`` in
multigpu.py; all use :func:`admit`, :func:`submit_frames` and :func:`finish` below.

Every frame that enters a runner ends as a result (``on_result``) or as a recorded drop with its reason
(``events.dropped``); ``PerformanceMonitor.stop`` asserts that the two add up to the frames in.
"""
from __future__ import annotations

import time
import warnings
from typing import Callable

import torch

from ..fusion.pipeline import PoseResult
from ..fusion.tracking import TrackStep
from ..kernels._common import KernelInputError, as_tensor
from ..kernels.letterbox import FrameBatch, check_frame
from .config import SEQUENTIAL
from .events import BatchSink, FrameResult, RunEvents, RunnerError
from .sources import Frame, Source


OnResult = Callable[[FrameResult], None]


class SinkError(RuntimeError):
    """A result sink (an output, ``on_result``) raised while results were handed out; ``__cause__`` is its
    error. The frames it was given are accounted as delivered; those after them are not."""


def check(stream: str, f: Frame, device=None) -> str | None:
    """Check frame ``f`` of ``stream``, one its source did not check (``f.checked`` None): None when it can go
    into a batch (``f.checked`` then holds its tensor and image size), else why not (its stream and index
    named). ``device``: the pipeline's device; a frame must be in host memory or on that device."""
    name = f"{stream}[{f.index}]"
    try:
        t = as_tensor(f.image, name)
        hw = check_frame(t, name, f.pixel_format)
    except KernelInputError as e:
        return str(e)
    if device is not None and t.device.type != "cpu" and t.device != torch.device(device):
        return f"{name}: expected a frame in host memory or on {device}, got one on {t.device}"
    f.checked = (t, hw)
    return None


def admit(name: str, frames: list, events: RunEvents, device=None) -> list:
    """Count ``frames`` of stream ``name`` in (one arrival for all) and return the good ones, in order; a bad
    frame becomes a recorded drop naming stream, index and reason (the stream goes on)."""
    return admit_all([(name, frames)], events, device)[0]


def admit_all(parcels: list, events: RunEvents, device=None) -> list:
    """:func:`admit` for [(stream, frames)] at once (one arrival call): the good frames of each, in order.
    A frame arrives at its ``arrived`` stamp (a camera's read, a paced frame's due time), else now (stamped)."""
    now = time.perf_counter()
    keys, times = [], []
    for name, frames in parcels:
        for f in frames:
            if f.arrived is None:  # a frame its source did not stamp arrives now
                f.arrived = now
            keys.append((name, f.index))
            times.append(f.arrived)
    events.arrived(keys, times)
    goods = []
    for name, frames in parcels:
        good = []
        for f in frames:  # a decoder's rows were checked when they were made (f.checked): no call per frame
            bad = f.error or (None if f.checked is not None else check(name, f, device))
            if bad:
                f.release()
                events.dropped((name, f.index), bad)
            else:
                good.append(f)
        goods.append(good)
    return goods


def submit_frames(pipe, frames: list, streams: list | None = None, tracker=None) -> list:
    """Submit checked ``frames`` as few batches as their pixel formats and devices allow (in order); the
    current stream first waits on each frame's ``ready`` event (NVDEC). ``tracker``: a StreamTracker stepping
    the batches' poses (``streams``: each frame's stream). Returns [(frames, PendingBatch)].
    On CUDA out-of-memory a batch is split in halves and retried (with a warning), down to single frames."""
    todo: list = []
    for i, f in enumerate(frames):
        kind = (f.pixel_format, f.checked[0].device.type)
        if todo and todo[-1][0] == kind:
            todo[-1][1].append(i)
        else:
            todo.append((kind, [i]))
    waited = set()
    for f in frames:
        if f.ready is not None and id(f.ready) not in waited:
            waited.add(id(f.ready))
            torch.cuda.current_stream().wait_event(f.ready)
    out = []
    while todo:
        kind, idx = todo.pop(0)
        group = [frames[i] for i in idx]
        track = None if tracker is None else TrackStep(tracker, [streams[i] for i in idx], [f.restart for f in group])
        try:
            fb = FrameBatch.checked([f.checked[0] for f in group], [f.checked[1] for f in group], kind[0],
                                    pinned=tuple(f.pinned for f in group))
            out.append((group, pipe.submit(fb, kind[0], track)))
        except torch.cuda.OutOfMemoryError:
            if len(group) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(idx) // 2
            warnings.warn(f"CUDA out of memory for a batch of {len(idx)}: splitting into {half} + "
                          f"{len(idx) - half}", RuntimeWarning, stacklevel=2)
            todo[:0] = [(kind, idx[:half]), (kind, idx[half:])]
    return out


def finish(submitted: list, events: RunEvents | None = None):
    """Wait for submit_frames()'s batches; yields (frame, PoseResult) in order (each batch's GPU span times go
    to ``events``); the frames are released by :func:`deliver`, after their results are handed out."""
    for frames, pending in submitted:
        results = pending.result()
        if events is not None and pending.gpu_ms:
            events.gpu_spans(pending.gpu_ms)
        yield from zip(frames, results)


def deliver(ready, events: RunEvents, on_result: OnResult | None, accounted=None):
    """Account for and hand out results: ``ready`` is (stream, frame, PoseResult) triples, each stream's in
    frame order; one ``delivered`` call for all, then ``accounted(keys)`` (a runner's in-flight set), then
    ``on_result`` per frame (a BatchSink: once, with all of them), so a failing callback leaves no
    delivered frame counted as in flight. Each frame is released once ``on_result`` has returned (its
    FrameResult.image may be a decoder's reused row)."""
    ready = list(ready)
    if not ready:
        return
    keys = [(name, f.index) for name, f, _ in ready]
    events.delivered([(k, len(r)) for k, (_, _, r) in zip(keys, ready)])
    if accounted is not None:
        accounted(keys)
    try:
        if on_result is not None:  # a FrameResult's image only for a BGR frame in host memory
            results = [FrameResult(name, f.index, r, tuple(f.checked[1]), f.timestamp, f.file,
                                   f.image if f.pixel_format == "bgr" and f.checked[0].device.type == "cpu" else None,
                                   f.restart) for name, f, r in ready]
            try:
                if isinstance(on_result, BatchSink):
                    on_result.batch(results)
                else:
                    for fr in results:
                        on_result(fr)
            except Exception as e:  # noqa: BLE001 - the sink's error, with the sink named by its message
                raise SinkError(str(e)) from e
    finally:
        for _, f, _ in ready:
            f.release()


def _finished(name: str, submitted: list, events: RunEvents):
    """finish()'s pairs as deliver()'s triples for stream ``name``."""
    return ((name, f, r) for f, r in finish(submitted, events))


def _stop(name: str, frames: list, events: RunEvents, err: BaseException):
    """A sequential runner's sink failed: ``frames`` of stream ``name`` not yet delivered become drops naming
    the failure, and the run stops with it (RunnerError, stage 'result'), as the threaded runners stop."""
    reason = f"run stopped: result stage failed: {type(err).__name__}: {err}"
    for f in frames:
        f.release()
        events.dropped((name, f.index), reason)
    raise RunnerError("result", err) from err


def run_serial(src: Source, pipe, events: RunEvents, on_result: OnResult | None = None, tracker=None):
    for parcel in src:
        good = admit(src.name, parcel, events, pipe.device)
        for k, f in enumerate(good):
            try:
                deliver(_finished(src.name, submit_frames(pipe, [f], [src.name], tracker), events), events, on_result)
            except SinkError as e:
                _stop(src.name, good[k + 1:], events, e.__cause__)


def run_batched(src: Source, pipe, events: RunEvents, on_result: OnResult | None = None, batch: int = 32,
                tracker=None):
    """Fixed batches of ``src``; the next batch is queued while the last is read back. A source that fails
    mid-stream: the frames already in are finished, then its error goes on; a sink that fails: the frames
    not delivered become drops and the run stops (RunnerError)."""
    pending = None  # the last batch's submitted parts: read back while the next batch is staged and queued
    buf: list = []

    def flush(frames):
        nonlocal pending
        done, pending = pending, (submit_frames(pipe, frames, [src.name] * len(frames), tracker) if frames else None)
        if done is not None:
            deliver(_finished(src.name, done, events), events, on_result)

    def finish():  # what is in: the frames not yet batched, then the batch in flight
        nonlocal buf
        frames, buf = buf, []
        flush(frames)
        flush([])

    try:
        try:
            for parcel in src:
                for f in admit(src.name, parcel, events, pipe.device):
                    buf.append(f)
                    if len(buf) == batch:
                        frames, buf = buf, []
                        flush(frames)
        except SinkError:
            raise  # the sink failed: nothing more goes to it
        except BaseException:  # the source failed: what is in is finished, then its error goes on
            finish()
            raise
        finish()
    except SinkError as e:
        left = buf + [f for frames, _ in (pending or ()) for f in frames]
        _stop(src.name, left, events, e.__cause__)


def run_ultralytics(src: Source, yolo, events: RunEvents, on_result: OnResult | None = None, **predict_kw):
    for parcel in src:
        good = admit(src.name, parcel, events)
        for k, f in enumerate(good):
            r = yolo.predict(f.image, verbose=False, **predict_kw)[0]
            res = PoseResult(r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(),
                             r.keypoints.data.cpu().numpy().reshape(-1, 17, 3))
            try:
                deliver([(src.name, f, res)], events, on_result)
            except SinkError as e:
                _stop(src.name, good[k + 1:], events, e.__cause__)


def run_source(src: Source, runner: str, engine, events: RunEvents, on_result: OnResult | None = None,
               batch: int = 32, predict_kw: dict | None = None, tracker=None):
    """Run one source with a sequential runner (``engine``: a PosePipeline, or an ultralytics YOLO for
    'ultralytics'; ``tracker``: a StreamTracker for the pipeline's poses). A source that fails mid-stream
    raises SourceError (the frames it delivered before are accounted for)."""
    if runner == "serial":
        run_serial(src, engine, events, on_result, tracker)
    elif runner == "batched":
        run_batched(src, engine, events, on_result, batch, tracker)
    elif runner == "ultralytics":
        run_ultralytics(src, engine, events, on_result, **(predict_kw or {}))
    else:
        raise ValueError(f"runner: expected one of {SEQUENTIAL}, got {runner!r}")
