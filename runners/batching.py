"""The batching policy: when a batch leaves and which frames it holds. Pure: no threads, no GPU, no clock of
its own (the caller passes ``now``), so every rule is tested by offering frames and asking at given times.

    policy = BatchPolicy(size=64, max_wait=0.010)         # dynamic: full, or the oldest waited 10 ms
    policy.offer([Waiting(stream, seq, frame, frame.arrived, canvas)], now)
    batch = policy.take(now, ended=False)                  # a Batch, or None: nothing leaves yet
    wake = policy.deadline()                               # when take() may give one without new frames

Rules (DeepStream's nvstreammux has the same two knobs: batch size and the batched-push timeout):
* one batch holds frames of one ``canvas`` key (any hashable; the run passes the frame's image size, pixel
  format and memory: one letterbox canvas, one CUDA graph), so each frame is letterboxed as it is alone
  and its poses depend on the frame only;
* dynamic (``max_wait`` seconds): a canvas's frames leave when ``size`` of them wait, or when the oldest has
  waited ``max_wait`` since it was offered;
* fixed (``max_wait`` None): they leave when ``size`` wait; a partial batch leaves when no frame was offered
  for ``idle`` seconds (a source waiting for its frames to be released) or when the sources have ended;
* fairness: of the canvases that may leave, the one whose oldest frame came first goes first; within a
  canvas frames leave in the order offered, so every stream's frames keep their order and no stream waits
  behind a later one;
* late (``late`` seconds, live): a frame that arrived more than ``late`` before its batch leaves is not run
  but returned in ``Batch.late``, to be recorded as a drop (reason 'late').
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass(slots=True)
class Waiting:
    """A frame waiting for its batch: its stream, its place in the stream's queue order, the frame, when it
    arrived (perf_counter seconds: the start of its latency), its canvas (the batch key), when the run
    queued it for the batcher (``queued``, the caller's) and when it was offered here (``offered``)."""

    stream: str
    seq: int
    frame: object
    arrived: float
    canvas: object
    queued: float = 0.0
    offered: float = 0.0


@dataclass
class Batch:
    """What leaves: ``run``, the frames to run (one canvas, in the order offered); ``late``, frames dropped as
    late instead (live)."""

    run: list = field(default_factory=list)
    late: list = field(default_factory=list)


class BatchPolicy:
    """See the module docstring. ``size``: frames per batch (>= 1); ``max_wait``: dynamic's longest wait of a
    frame, seconds (None: fixed batches); ``idle``: fixed batches: a partial batch leaves after this many
    seconds without a new frame; ``late``: live mode's limit, seconds (None: nothing is dropped)."""

    def __init__(self, size: int, max_wait: float | None = None, idle: float = 0.2, late: float | None = None):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size: expected a whole number >= 1, got {size!r}")
        for name, v in (("max_wait", max_wait), ("idle", idle), ("late", late)):
            if v is not None and not v >= 0:
                raise ValueError(f"{name}: expected seconds >= 0, got {v!r}")
        self.size, self.max_wait, self.idle, self.late = size, max_wait, idle, late
        self._groups: dict = {}  # canvas -> deque of Waiting, in the order offered
        self._n = 0
        self.n_offered = 0  # frames offered so far
        self._last_offer: float | None = None

    def __len__(self) -> int:
        return self._n

    def offer(self, items: list, now: float):
        """Frames to batch (:class:`Waiting`), offered at ``now``."""
        for w in items:
            w.offered = now
            q = self._groups.get(w.canvas)
            if q is None:
                q = self._groups[w.canvas] = collections.deque()
            q.append(w)
        self._n += len(items)
        self.n_offered += len(items)
        if items:
            self._last_offer = now

    def _may_leave(self, q, now: float, ended: bool) -> bool:
        if len(q) >= self.size or ended:
            return True
        if self.max_wait is not None:
            return now - q[0].offered >= self.max_wait
        return self._last_offer is not None and now - self._last_offer >= self.idle

    def take(self, now: float, ended: bool = False) -> Batch | None:
        """The next batch that leaves at ``now`` (``ended``: no frame will be offered any more), or None."""
        due = [(k, q) for k, q in self._groups.items() if self._may_leave(q, now, ended)]
        if not due:
            return None
        key, q = min(due, key=lambda kq: kq[1][0].offered)
        out = Batch()
        for _ in range(min(self.size, len(q))):
            w = q.popleft()
            (out.late if self.late is not None and now - w.arrived > self.late else out.run).append(w)
        self._n -= len(out.run) + len(out.late)
        if not q:
            del self._groups[key]
        return out

    def deadline(self) -> float | None:
        """The time at which :meth:`take` gives a batch without new frames (None: only a new frame, or the
        end of the sources, can make one leave)."""
        if not self._n:
            return None
        if self.max_wait is not None:
            return min(q[0].offered for q in self._groups.values()) + self.max_wait
        return self._last_offer + self.idle
