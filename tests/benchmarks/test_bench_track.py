"""Tracker benchmark (``pytest tests/benchmarks --benchmark-only``): ByteTrack over a batch of STREAMS
streams x FRAMES frames of real detections (the GPU pipeline on the sample clips: 8 segments of the
768x432 clip and the walking GIF, a stream each), per call one batch: ByteTrackBatch on CuPy and on Numba
(the whole update for every stream in one launch), the CPU reference, and Ultralytics' BYTETracker frame
by frame (the anchor). Each call continues the streams' tracks (a batch after the last).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import helpers

pytestmark = pytest.mark.gpu

STREAMS, FRAMES, MAX_DET = 8, 64, 300


@pytest.fixture(scope="module")
def track_batch(clip_frames, gif_frames):
    """(boxes, scores, counts) on the GPU for STREAMS x FRAMES rows (row f * STREAMS + s: frame f of stream
    s, as a batcher interleaves them), the stream of each row, and the rows as host (boxes, scores)."""
    from posefuse import PosePipeline

    pipe = PosePipeline(device="cuda")
    clip = helpers.read_video(helpers.data_path("one-by-one-person-detection.mp4"), 7 * FRAMES + 150)[150:]
    seqs = [clip[s * FRAMES:(s + 1) * FRAMES] for s in range(STREAMS - 1)]
    seqs.append([gif_frames[i % len(gif_frames)] for i in range(FRAMES)])
    rows = [seqs[s][f] for f in range(FRAMES) for s in range(STREAMS)]
    boxes = torch.zeros(len(rows), MAX_DET, 4, device="cuda")
    scores = torch.zeros(len(rows), MAX_DET, device="cuda")
    counts = torch.zeros(len(rows), dtype=torch.int32, device="cuda")
    host = []
    for i in range(0, len(rows), 64):
        for b, r in enumerate(pipe(rows[i:i + 64]), start=i):
            bx, sc = np.asarray(r.boxes, np.float32), np.asarray(r.scores, np.float32)
            boxes[b, :len(bx)], scores[b, :len(sc)], counts[b] = torch.from_numpy(bx), torch.from_numpy(sc), len(bx)
            host.append((bx, sc))
    stream = [s for _ in range(FRAMES) for s in range(STREAMS)]
    assert sum(len(b) for b, _ in host) > len(rows) // 2  # people in most frames (494 detections in 512 rows)
    return boxes, scores, counts, stream, host


@pytest.mark.parametrize("impl", ["cupy", "numba", "reference", "ultralytics"])
def test_track(benchmark, impl, track_batch, env_info):
    boxes, scores, counts, stream, host = track_batch
    n = len(stream)
    benchmark.group = f"track {STREAMS} streams x {FRAMES} frames"
    extra = dict(kernel="track", impl=impl, streams=STREAMS, frames=FRAMES, batch=n, env=env_info,
                 input="yolo11n-pose detections of the sample clips (GPU pipeline), bytetrack.yaml")
    if impl in ("cupy", "numba", "reference"):
        from posefuse.kernels.track import ByteTrackBatch

        dev = "cpu" if impl == "reference" else "cuda"
        tracker = ByteTrackBatch(STREAMS, MAX_DET, dev, backend=impl)
        args = (boxes, scores, counts) if dev == "cuda" else (boxes.cpu(), scores.cpu(), counts.cpu())

        def fn():
            tracker.update(*args, stream)
    else:
        from ultralytics.engine.results import Boxes

        trackers = [helpers.ultralytics_tracker() for _ in range(STREAMS)]
        data = [Boxes(np.c_[b, s, np.zeros(len(s))].astype(np.float32).reshape(-1, 6), (432, 768)) for b, s in host]

        def fn():
            for s, d in zip(stream, data):
                trackers[s].update(d)
    calls, rounds = (1, 3) if impl in ("reference", "ultralytics") else (5, 10)
    sec = helpers.per_call(benchmark, fn, calls, rounds, warmup_rounds=1)
    benchmark.extra_info.update(extra, ms_per_batch=sec * 1e3, frames_per_s=n / sec, us_per_frame=sec / n * 1e6)
