"""Multi-object tracking across frames (ByteTrack): the CPU reference, equal to Ultralytics 8.4.190's
``BYTETracker`` with ``bytetrack.yaml``. The batched GPU implementations (Kalman filter, costs and
assignment for every track of every stream in one launch sequence) are the next step of this family.

    tracker = ByteTrackReference()
    rows = tracker.update(boxes_xyxy, scores)   # (M, 7): x1, y1, x2, y2, track id, score, detection index
"""
from __future__ import annotations

from .reference import ByteTrackConfig, ByteTrackReference

__all__ = ["ByteTrackConfig", "ByteTrackReference"]
