"""The batching policy alone: no threads, no GPU, times given by the test."""
from __future__ import annotations

import pytest

from posefuse.runners.batching import BatchPolicy, Waiting

A, B = (384, 640), (640, 640)  # two canvases


def frames(stream: str, n: int, t: float = 0.0, canvas=A, first: int = 0) -> list:
    return [Waiting(stream, first + k, f"{stream}{first + k}", t, canvas) for k in range(n)]


def names(batch) -> list:
    return [w.frame for w in batch.run]


def test_dynamic_full_batch_leaves_at_once_and_the_rest_waits():
    p = BatchPolicy(4, max_wait=0.010)
    p.offer(frames("a", 6), now=0.0)
    assert names(p.take(0.0)) == ["a0", "a1", "a2", "a3"]
    assert p.take(0.005) is None and len(p) == 2
    assert p.deadline() == pytest.approx(0.010)
    assert names(p.take(0.010)) == ["a4", "a5"]  # the partial batch, once its oldest waited max_wait
    assert p.take(1.0) is None and p.deadline() is None and len(p) == 0
    assert p.n_offered == 6  # every frame offered so far (a service's queue depth: handed in - offered)


def test_dynamic_wait_counts_from_the_oldest_frame_offered():
    p = BatchPolicy(8, max_wait=0.010)
    p.offer(frames("a", 1), now=0.0)
    p.offer(frames("b", 1), now=0.008)
    assert p.take(0.009) is None
    assert names(p.take(0.010)) == ["a0", "b0"]


def test_a_batch_holds_one_canvas_and_the_oldest_canvas_goes_first():
    p = BatchPolicy(4, max_wait=0.010)
    p.offer(frames("hd", 2, canvas=B), now=0.0)
    p.offer(frames("sd", 4, canvas=A), now=0.001)
    assert names(p.take(0.001)) == ["sd0", "sd1", "sd2", "sd3"]  # full: leaves before the older partial one
    assert p.take(0.005) is None
    assert names(p.take(0.011)) == ["hd0", "hd1"]
    p.offer(frames("hd", 1, canvas=B, first=2) + frames("sd", 1, canvas=A, first=4), now=0.02)
    first, second = p.take(0.04), p.take(0.04)
    assert {w.canvas for w in first.run} != {w.canvas for w in second.run}
    assert len({w.canvas for w in first.run}) == len({w.canvas for w in second.run}) == 1


def test_fairness_streams_interleaved_in_order_offered():
    p = BatchPolicy(4, max_wait=0.010)
    for k in range(3):  # three reader passes, each one frame of each stream
        p.offer(frames("a", 1, first=k) + frames("b", 1, first=k), now=0.001 * k)
    assert names(p.take(0.002)) == ["a0", "b0", "a1", "b1"]
    assert names(p.take(0.02)) == ["a2", "b2"]


def test_fixed_batches_leave_full_when_idle_or_at_the_end():
    p = BatchPolicy(4, max_wait=None, idle=0.2)
    p.offer(frames("a", 5), now=0.0)
    assert names(p.take(0.0)) == ["a0", "a1", "a2", "a3"]
    assert p.take(0.1) is None  # fixed: no max_wait
    assert p.deadline() == pytest.approx(0.2)
    p.offer(frames("a", 1, first=5), now=0.15)  # a new frame resets the idle clock
    assert p.take(0.3) is None
    assert names(p.take(0.36)) == ["a4", "a5"]
    p.offer(frames("a", 1, first=6), now=0.4)
    assert names(p.take(0.4, ended=True)) == ["a6"]  # sources ended: whatever waits leaves


def test_late_frames_are_returned_apart_not_run():
    p = BatchPolicy(4, max_wait=0.010, late=0.050)
    old = [Waiting("a", 0, "a0", -0.1, A)]  # arrived 100 ms before it was offered (a stalled stage)
    p.offer(old + frames("b", 2, t=0.0), now=0.0)
    batch = p.take(0.02)
    assert names(batch) == ["b0", "b1"] and [w.frame for w in batch.late] == ["a0"]
    assert len(p) == 0
    p = BatchPolicy(4, max_wait=0.010)  # archive: nothing is late
    p.offer(old, now=0.0)
    assert names(p.take(0.02)) == ["a0"]


def test_partial_batches_and_size_one():
    p = BatchPolicy(1, max_wait=0.0)
    p.offer(frames("a", 3), now=0.0)
    assert [names(p.take(0.0)) for _ in range(3)] == [["a0"], ["a1"], ["a2"]]
    assert p.take(0.0) is None


@pytest.mark.parametrize("kw, msg", [(dict(size=0), "size"), (dict(size=2, max_wait=-1), "max_wait"),
                                     (dict(size=2, late=-0.1), "late")])
def test_bad_knobs_name_themselves(kw, msg):
    with pytest.raises(ValueError, match=msg):
        BatchPolicy(**kw)
