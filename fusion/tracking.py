"""Tracking inside the pipeline: ByteTrack for named streams, stepped where the poses are.

    tracker = StreamTracker("cuda", max_det=300)
    pending = pipe.submit(frames, track=TrackStep(tracker, streams=["cam0", "cam1", ...], restart=[...]))
    pending.result()[i].track_ids              # (N,) int64, -1: no confirmed track

On a GPU the step is a stage of the pipeline: after NMS and rescale, on a CUDA stream of its own, one launch of
kernels.track.ByteTrackBatch for the batch's streams reads the detections in device memory and writes each
pose's id beside it (Detections.track_ids), so the ids travel to the host in the batch's one device-to-host
copy; the next batch's stages run meanwhile (the tracker takes a warp per stream, a few SMs). The step never
waits for the device: a stream that runs out of track slots is found when the batch's results are read
(:meth:`StreamTracker.check`). On the CPU the reference tracker steps the batch's host results.

Each stream is a row of a ByteTrackBatch of STREAMS_PER_TRACKER rows (more streams take another); its tracks
start with the stream and start again where its source does (``restart``: a looping pass, a reconnected
camera). A stream's frames must be stepped in their order, so the batches of a run are submitted by one
thread (RunConfig refuses ``track`` with the replicas runner); frames dropped before submission are frames
the tracker never sees.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from ..kernels.track import ByteTrackBatch

STREAMS_PER_TRACKER = 64  # streams a ByteTrackBatch holds; more streams take another one


@dataclass
class TrackStep:
    """One submitted batch's tracking: the stream of each of its frames, in order, and whether the frame is
    the first after its source started over."""

    tracker: StreamTracker
    streams: list
    restart: list

    def subset(self, idx: list) -> TrackStep:
        return TrackStep(self.tracker, [self.streams[i] for i in idx], [self.restart[i] for i in idx])


class StreamTracker:
    """ByteTrack for every stream of a run on ``device`` (cuda: the CuPy tracker, a launch per batch; cpu: the
    reference); ``max_det``: the most poses a frame has (the pipeline's)."""

    def __init__(self, device="cuda", max_det: int = 300):
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.max_det = max_det
        self.backend = "reference" if self.device.type == "cpu" else "auto"
        self.index: dict = {}  # stream name -> its row among the trackers' streams
        self.trackers: list[ByteTrackBatch] = []
        self.free: list = []  # rows of forgotten streams, taken again before a new row is made
        self.fresh: set = set()  # rows taken again: their next frame starts them over
        self._lock = threading.Lock()  # forget() comes from a service's thread, step() from the run's

    def warm_up(self):
        """One update of a throwaway one-stream tracker on an empty frame, so its kernels are built (NVRTC, or
        CuPy's on-disk kernel cache) before a run's clock starts rather than in its first batch."""
        tracker = ByteTrackBatch(1, self.max_det, self.device, backend=self.backend)
        z = torch.zeros
        tracker.update(z(1, self.max_det, 4, device=self.device), z(1, self.max_det, device=self.device),
                       z(1, dtype=torch.int32, device=self.device), [0], [False])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self, boxes: torch.Tensor, scores: torch.Tensor, counts: torch.Tensor, ids: torch.Tensor,
             streams: list, restart: list):
        """Track one batch: ``boxes`` (n, max_det, 4), ``scores`` (n, max_det), ``counts`` (n,) of the frames of
        ``streams`` (n names, each stream's frames in order); writes ``ids`` (n, max_det) int32 (0: no
        track), on the current stream, without waiting for the device."""
        with self._lock:
            rows = np.array([self._row(s) for s in streams], np.int64)
            if self.fresh:  # a row a forgotten stream held: its new stream's first frame starts it over
                restart = list(restart)
                for i, r in enumerate(rows.tolist()):
                    if r in self.fresh:
                        restart[i] = True
                        self.fresh.discard(r)
        for k, tracker in enumerate(self.trackers):
            mine = np.flatnonzero(rows // STREAMS_PER_TRACKER == k)
            if not len(mine):
                continue
            whole = len(mine) == len(rows)
            if whole:
                tracker.update(boxes, scores, counts, rows % STREAMS_PER_TRACKER, restart, out=ids)
                continue
            # this tracker's frames of the batch: gathered, tracked, scattered back (a copy that does not wait)
            idx = torch.from_numpy(mine)
            idx = idx.pin_memory().to(ids.device, non_blocking=True) if ids.device.type == "cuda" else idx
            got = torch.empty((len(mine), ids.shape[1]), dtype=ids.dtype, device=ids.device)
            tracker.update(boxes[idx], scores[idx], counts[idx], rows[mine] % STREAMS_PER_TRACKER,
                           [restart[i] for i in mine], out=got)
            ids[idx] = got

    def check(self):
        """Raises KernelInputError when a stream ran out of track slots in a step the device has finished."""
        for tracker in self.trackers:
            tracker.check()

    def track_results(self, results: list, streams: list, restart: list):
        """Sets ``track_ids`` of host PoseResults (frames whose poses were not made on this tracker's
        device: the CPU pipeline)."""
        n, M = len(results), self.max_det
        boxes, scores = torch.zeros((n, M, 4)), torch.zeros((n, M))
        counts, ids = torch.zeros(n, dtype=torch.int32), torch.zeros((n, M), dtype=torch.int32)
        for b, r in enumerate(results):
            k = min(len(r), M)
            boxes[b, :k], scores[b, :k] = torch.from_numpy(r.boxes[:k]), torch.from_numpy(r.scores[:k])
            counts[b] = k
        dev = lambda t: t.to(self.device)  # noqa: E731
        got = ids.to(self.device)
        self.step(dev(boxes), dev(scores), dev(counts), got, streams, restart)
        got = got.cpu().numpy()
        self.check()
        for r, row in zip(results, got):
            r.track_ids = track_ids(row[:len(r)])

    def forget(self, streams):
        """Finished streams (a service's churn): their rows go to the next new streams, which start them over,
        so the trackers' memory stays that of the streams running at once."""
        with self._lock:
            for s in streams:
                row = self.index.pop(s, None)
                if row is not None:
                    self.free.append(row)
                    self.fresh.add(row)

    def _row(self, stream: str) -> int:
        row = self.index.get(stream)
        if row is None and self.free:
            row = self.index[stream] = self.free.pop()
        elif row is None:
            row = self.index[stream] = len(self.index) + len(self.free)
            if row // STREAMS_PER_TRACKER == len(self.trackers):
                self.trackers.append(ByteTrackBatch(STREAMS_PER_TRACKER, self.max_det, self.device,
                                                    backend=self.backend))
        return row


def track_ids(row: np.ndarray) -> np.ndarray:
    """A frame's ids as PoseResult.track_ids: int64, -1 where a pose has no confirmed track."""
    return np.where(row > 0, row, -1).astype(np.int64)


__all__ = ["StreamTracker", "TrackStep", "STREAMS_PER_TRACKER", "track_ids"]
