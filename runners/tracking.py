"""Tracking in a run (RunConfig.track): ByteTrack for every stream, fed each delivered batch's results where
they are delivered, before the sinks, so every pose carries its ``track_id`` into ``on_result``, the JSON
lines, COCO and the annotated video. On a GPU run the streams of a batch are tracked together on the device
(kernels.track.ByteTrackBatch: one launch per batch); on the CPU by the reference. A stream's tracks start
with the stream and start again when the source does (FrameResult.restart: a looping pass, a reconnected
camera); frames dropped before delivery are frames the tracker never sees.
"""
from __future__ import annotations

import numpy as np
import torch

from ..kernels.track import ByteTrackBatch
from .events import BatchSink

STREAMS_PER_TRACKER = 64  # streams a ByteTrackBatch holds; more streams take another one


class StreamTracking(BatchSink):
    """A sink wrapper: sets ``r.poses.track_ids`` for each FrameResult of a batch, then calls
    ``downstream(r)`` per result. ``device``: the run's device (cuda: the CuPy tracker; cpu: the
    reference); ``max_det``: the most poses a frame can have (the pipeline's)."""

    def __init__(self, downstream, device: str = "cpu", max_det: int = 300):
        self.downstream, self.max_det = downstream, max_det
        self.device = torch.device(device)
        self.backend = "reference" if self.device.type == "cpu" else "auto"
        self.index: dict = {}  # stream name -> its row among the trackers' streams
        self.trackers: list[ByteTrackBatch] = []

    def warm_up(self):
        """One update of a throwaway one-stream tracker on an empty frame, so the kernels are built (NVRTC,
        or loaded from CuPy's on-disk cache) before the run's clock starts rather than in its first batch.
        Why: results/DECISIONS.md, the tracker's warm-up."""
        tracker = ByteTrackBatch(1, self.max_det, self.device, backend=self.backend)
        z = torch.zeros
        tracker.update(z(1, self.max_det, 4, device=self.device), z(1, self.max_det, device=self.device),
                       z(1, dtype=torch.int32, device=self.device), [0], [False])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def batch(self, results: list):
        rows = [self._row(r.stream) for r in results]
        ids = np.zeros((len(results), self.max_det), np.int64)
        for k, tracker in enumerate(self.trackers):
            mine = [i for i, row in enumerate(rows) if row // STREAMS_PER_TRACKER == k]
            if mine:
                ids[mine] = self._track(tracker, [results[i] for i in mine],
                                        [rows[i] % STREAMS_PER_TRACKER for i in mine])
        for r, row in zip(results, ids):
            n = len(r.poses)
            r.poses.track_ids = np.where(row[:n] > 0, row[:n], -1)
            self.downstream(r)

    def _row(self, stream: str) -> int:
        row = self.index.get(stream)
        if row is None:
            row = self.index[stream] = len(self.index)
            if row // STREAMS_PER_TRACKER == len(self.trackers):
                self.trackers.append(ByteTrackBatch(STREAMS_PER_TRACKER, self.max_det, self.device,
                                                    backend=self.backend))
        return row

    def _track(self, tracker: ByteTrackBatch, results: list, stream: list) -> np.ndarray:
        B, M = len(results), self.max_det
        boxes, scores = np.zeros((B, M, 4), np.float32), np.zeros((B, M), np.float32)
        counts = np.zeros(B, np.int32)
        for b, r in enumerate(results):
            n = min(len(r.poses), M)
            boxes[b, :n], scores[b, :n], counts[b] = r.poses.boxes[:n], r.poses.scores[:n], n
        to = (lambda x: torch.from_numpy(x).to(self.device, non_blocking=False))
        ids = tracker.update(to(boxes), to(scores), to(counts), stream, [r.restart for r in results])
        return ids.cpu().numpy()
