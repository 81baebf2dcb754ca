"""Tracking in a run (RunConfig.track): one ByteTrack tracker per stream (kernels.track, the CPU reference
for now), fed each stream's results in frame order where they are delivered, before the sinks, so every
pose carries its ``track_id`` into ``on_result``, the JSON lines, COCO and the annotated video. A
stream's tracker starts with the stream and starts again when the source does (FrameResult.restart: a
looping pass, a reconnected camera); frames dropped before delivery are frames the tracker never sees.
"""
from __future__ import annotations

import numpy as np

from ..kernels._common import nvtx_range
from ..kernels.track import ByteTrackReference
from .events import FrameResult


class StreamTracking:
    """A sink wrapper: sets ``r.poses.track_ids`` for each FrameResult, then calls ``downstream(r)``."""

    def __init__(self, downstream):
        self.downstream = downstream
        self.trackers: dict = {}

    def __call__(self, r: FrameResult):
        tracker = self.trackers.get(r.stream)
        if tracker is None:
            tracker = self.trackers[r.stream] = ByteTrackReference()
        elif r.restart:
            tracker.reset()
        p = r.poses
        with nvtx_range("track"):
            rows = tracker.update(p.boxes, p.scores)
        ids = np.full(len(p), -1, dtype=np.int64)
        ids[rows[:, 6].astype(np.int64)] = rows[:, 4].astype(np.int64)
        p.track_ids = ids
        self.downstream(r)
