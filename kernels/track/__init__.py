"""Multi-object tracking across frames (ByteTrack).

    tracker = ByteTrackBatch(streams=8, device="cuda")      # every stream's state in device arrays
    ids = tracker.update(dets.boxes, dets.scores, dets.counts, stream)   # one launch per batch

    tracker = ByteTrackReference()              # one stream on the CPU: the reference
    rows = tracker.update(boxes_xyxy, scores)   # (M, 7): x1, y1, x2, y2, track id, score, detection index

Its steps, batched, for other trackers to build on:

    kalman_predict(mean, cov, tracked, backend="auto")     # every track of every stream, in place
    kalman_update(mean, cov, z, rows, backend="auto")      # the matched tracks' rows take measurements z

    cost = iou_costs(tracks, n_tracks, dets, scores, n_dets, fuse=True)   # (S, T, D) every stream at once
    match = assign(cost, n_tracks, n_dets, limit=0.8)                     # (S, T) detection per track, or -1

``ByteTrackReference`` is the CPU reference, equal to Ultralytics 8.4.190's ``BYTETracker`` with
``bytetrack.yaml``; ``ByteTrackBatch`` runs its update rule for rule on the device. The batched steps run on the device for all tracks of all streams at once: ``mean``
(T, 8) and ``cov`` (T, 8, 8) float64 state of (x, y, a, h) and velocities, ``tracked`` (T,) uint8 (1:
currently tracked; 0: its aspect velocity is zeroed before predicting), ``z`` (M, 4) float64 (x, y, a, h)
measurements for ``rows`` (M,) int32 of the state. The association works on each stream's padded rows:
``tracks`` (S, T, 4) and ``dets`` (S, D, 4) float32 xyxy, ``n_tracks`` / ``n_dets`` (S,) int32 rows in use,
``scores`` (S, D) float32; entries past a stream's counts are ignored (and left unwritten in ``cost``).
``assign`` is lap.lapjv with ``extend_cost=True, cost_limit=limit`` (as Ultralytics' linear_assignment),
solved exactly per stream (track.cu says how). Backends: 'cupy' (track.cu) and 'numba' (the
CUDA simulator on the CPU), on the caller's current stream, and 'reference' (CPU tensors, the reference's
NumPy and lap).
"""
from __future__ import annotations

import numpy as np
import torch

from .._common import KernelInputError, check_tensor, nvtx_range, resolve_backend
from . import reference
from .reference import ByteTrackConfig, ByteTrackReference, kf_predict_tracks, kf_update

__all__ = ["ByteTrackBatch", "ByteTrackConfig", "ByteTrackReference", "kalman_predict", "kalman_update",
           "iou_costs", "assign", "BACKENDS"]

CAPACITY = 256  # track slots per stream (tracked, lost and born this frame); a stream that needs more fails
# ByteTrackBatch's state and scratch arrays, in the tracker kernels' argument order
STATE = ("id", "state", "activated", "score", "idx", "frame", "start", "mean", "cov", "tracked", "n_tracked",
         "lost", "n_lost", "frame_id", "next_id", "overflow", "kpts", "kpts_center", "removed_at")
# the assignment's scratch per stream, T + D + 1 entries each (track.cu: u, v, minv, p, way, used)
LAP_WORK = {"u": torch.float64, "v": torch.float64, "minv": torch.float64, "p": torch.int32, "way": torch.int32,
            "used": torch.uint8}
SCRATCH = ("hi", "lo", "dxyxy", "dxyah", "dscore", "pool", "rest", "unconf", "dleft", "acts", "refs", "lost_new",
           "new_tracked", "new_lost", "mark", "rowsol", "cost", "u", "v", "minv", "p", "way", "used")

BACKENDS = ("cupy", "numba", "reference")


def _impl(backend: str):
    """The module of a device backend, imported alone: importing numba takes seconds a CuPy run need not pay."""
    if backend == "cupy":
        from . import cupy_impl

        return cupy_impl
    from . import numba_impl

    return numba_impl


def _check_state(mean: torch.Tensor, cov: torch.Tensor):
    check_tensor(mean, "mean", dtypes=(torch.float64,), ndim=2)
    check_tensor(cov, "cov", dtypes=(torch.float64,), ndim=3, device=mean.device)
    if mean.shape[1] != 8 or tuple(cov.shape) != (mean.shape[0], 8, 8):
        raise KernelInputError(f"mean, cov: expected (T, 8) and (T, 8, 8), got {tuple(mean.shape)} and {tuple(cov.shape)}")


def kalman_predict(mean: torch.Tensor, cov: torch.Tensor, tracked: torch.Tensor, backend: str = "auto") -> None:
    """Predict every track one frame ahead, in place (see the module docstring)."""
    _check_state(mean, cov)
    check_tensor(tracked, "tracked", dtypes=(torch.uint8,), ndim=1, device=mean.device)
    if tracked.shape[0] != mean.shape[0]:
        raise KernelInputError(f"tracked: expected {mean.shape[0]} flags (one per track), got {tracked.shape[0]}")
    back = resolve_backend(backend, mean.device, BACKENDS)
    with nvtx_range("track"):
        if back in ("cupy", "numba"):
            _impl(back).predict(mean, cov, tracked)
            return
        if len(mean):
            m, v = kf_predict_tracks(mean.numpy(), cov.numpy(), tracked.numpy())
            mean.copy_(torch.from_numpy(m))
            cov.copy_(torch.from_numpy(v))


def kalman_update(mean: torch.Tensor, cov: torch.Tensor, z: torch.Tensor, rows: torch.Tensor,
                  backend: str = "auto") -> None:
    """Rows ``rows`` of the state take the measurements ``z``, in place (see the module docstring)."""
    _check_state(mean, cov)
    check_tensor(z, "z", dtypes=(torch.float64,), ndim=2, device=mean.device)
    check_tensor(rows, "rows", dtypes=(torch.int32,), ndim=1, device=mean.device)
    if z.shape[1] != 4 or z.shape[0] != rows.shape[0]:
        raise KernelInputError(f"z: expected ({rows.shape[0]}, 4) measurements, got {tuple(z.shape)}")
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= mean.shape[0]):
        raise KernelInputError(f"rows: expected indices in [0, {mean.shape[0]}), got {int(rows.min())}..{int(rows.max())}")
    back = resolve_backend(backend, mean.device, BACKENDS)
    with nvtx_range("track"):
        if back in ("cupy", "numba"):
            _impl(back).update(mean, cov, z, rows)
            return
        for j, i in enumerate(rows.tolist()):
            m, v = kf_update(mean[i].numpy(), cov[i].numpy(), z[j].numpy())
            mean[i].copy_(torch.from_numpy(m))
            cov[i].copy_(torch.from_numpy(v))


def _check_counts(counts: torch.Tensor, name: str, S: int, most: int, device):
    check_tensor(counts, name, dtypes=(torch.int32,), ndim=1, device=device)
    if counts.shape[0] != S:
        raise KernelInputError(f"{name}: expected {S} counts (one per stream), got {counts.shape[0]}")
    if S and (int(counts.min()) < 0 or int(counts.max()) > most):
        raise KernelInputError(f"{name}: expected counts in [0, {most}], got {int(counts.min())}..{int(counts.max())}")


def iou_costs(tracks: torch.Tensor, n_tracks: torch.Tensor, dets: torch.Tensor, scores: torch.Tensor,
              n_dets: torch.Tensor, fuse: bool = True, backend: str = "auto") -> torch.Tensor:
    """(S, T, D) float32: 1 - IoU of each stream's tracks and detections, fused with the detection scores
    (1 - IoU * score) where ``fuse`` (see the module docstring)."""
    check_tensor(tracks, "tracks", dtypes=(torch.float32,), ndim=3)
    check_tensor(dets, "dets", dtypes=(torch.float32,), ndim=3, device=tracks.device)
    S, T, D = tracks.shape[0], tracks.shape[1], dets.shape[1]
    if tracks.shape[2] != 4 or dets.shape[0] != S or dets.shape[2] != 4:
        raise KernelInputError(f"tracks, dets: expected (S, T, 4) and (S, D, 4), got {tuple(tracks.shape)} and "
                               f"{tuple(dets.shape)}")
    check_tensor(scores, "scores", dtypes=(torch.float32,), ndim=2, device=tracks.device)
    if tuple(scores.shape) != (S, D):
        raise KernelInputError(f"scores: expected ({S}, {D}), got {tuple(scores.shape)}")
    _check_counts(n_tracks, "n_tracks", S, T, tracks.device)
    _check_counts(n_dets, "n_dets", S, D, tracks.device)
    back = resolve_backend(backend, tracks.device, BACKENDS)
    cost = torch.zeros((S, T, D), dtype=torch.float32, device=tracks.device)
    with nvtx_range("track"):
        if back in ("cupy", "numba"):
            _impl(back).iou_cost(tracks, n_tracks, dets, scores, n_dets, cost, fuse)
            return cost
        for s, (n, m) in enumerate(zip(n_tracks.tolist(), n_dets.tolist())):
            c = reference.iou_cost(tracks[s, :n].numpy(), dets[s, :m].numpy())
            if fuse and c.size:
                c = 1 - (1 - c) * scores[s, :m].numpy()[None]
            cost[s, :n, :m] = torch.from_numpy(np.asarray(c, dtype=np.float32))
    return cost


def assign(cost: torch.Tensor, n_tracks: torch.Tensor, n_dets: torch.Tensor, limit: float,
           backend: str = "auto") -> torch.Tensor:
    """(S, T) int32: the detection each track of each stream is matched to, or -1 (see the module docstring)."""
    check_tensor(cost, "cost", dtypes=(torch.float32,), ndim=3)
    S, T, D = cost.shape
    _check_counts(n_tracks, "n_tracks", S, T, cost.device)
    _check_counts(n_dets, "n_dets", S, D, cost.device)
    if not limit > 0:
        raise KernelInputError(f"limit: expected a cost limit > 0, got {limit}")
    back = resolve_backend(backend, cost.device, BACKENDS)
    match = torch.full((S, T), -1, dtype=torch.int32, device=cost.device)
    with nvtx_range("track"):
        if back in ("cupy", "numba"):
            work = {k: torch.empty((S, T + D + 1), dtype=dt, device=cost.device) for k, dt in LAP_WORK.items()} \
                if back == "numba" else None  # CuPy's scratch is in shared memory
            _impl(back).assign(cost, n_tracks, n_dets, match, work, float(limit))
            return match
        for s, (n, m) in enumerate(zip(n_tracks.tolist(), n_dets.tolist())):
            pairs, _, _ = reference.assign(cost[s, :n, :m].numpy(), limit)
            for i, j in pairs:
                match[s, i] = j
    return match


class ByteTrackBatch:
    """ByteTrack for ``streams`` streams at once, its state in device arrays: one launch per batch runs the
    whole update (reference ByteTrackReference, rule for rule) for every stream, over each stream's frames of
    the batch in order: a warp per stream on CuPy (track.cu), a thread per stream on Numba.

        tracker = ByteTrackBatch(streams=8, device="cuda")
        ids = tracker.update(dets.boxes, dets.scores, dets.counts, stream)   # (B, max_det) int32, 0: none

    ``stream`` (B,): the stream index of each batch row (host ints); a stream's rows are its frames in
    order. ``restart`` (B,) bool: the stream starts over at that row (a looping pass, a reconnect). A track
    id belongs to a detection row where the reference outputs that track for the frame. ``cfg.match``
    'oks' associates on keypoint similarity (reference.oks_cost) instead of IoU. Backends: 'cupy'
    (track.cu), 'numba' (the simulator on the CPU) and 'reference' (a ByteTrackReference per stream, CPU
    tensors)."""

    BACKENDS = BACKENDS

    def __init__(self, streams: int, max_det: int = 300, device="cuda", cfg: ByteTrackConfig = ByteTrackConfig(),
                 capacity: int = CAPACITY, backend: str = "auto"):
        if streams < 1:
            raise KernelInputError(f"streams: expected >= 1, got {streams}")
        if cfg.match not in ("iou", "oks"):
            raise KernelInputError(f"cfg.match: expected 'iou' or 'oks', got {cfg.match!r}")
        if max_det < 1 or capacity < 1:
            raise KernelInputError(f"max_det, capacity: expected >= 1, got {max_det} and {capacity}")
        dev = torch.device(device)
        self.device = torch.device("cuda", torch.cuda.current_device()) if dev.type == "cuda" and dev.index is None \
            else dev
        self.streams, self.max_det, self.capacity, self.cfg = streams, max_det, capacity, cfg
        self.backend = resolve_backend(backend, self.device, self.BACKENDS)
        self._overflow = None  # the device's overflow flags as last copied (pinned), for check()
        if self.backend == "reference":
            self.refs = [ByteTrackReference(cfg) for _ in range(streams)]
            return
        shapes = self.shapes(streams, capacity, max_det)
        zeros = lambda k: torch.zeros(shapes[k][0], dtype=shapes[k][1], device=self.device)  # noqa: E731
        self.state = {k: zeros(k) for k in STATE}
        # the assignment's scratch rows (LAP_WORK) are Numba's only: CuPy's is in shared memory
        self.scratch = {k: zeros(k) for k in SCRATCH if self.backend == "numba" or k not in LAP_WORK}

    @staticmethod
    def shapes(S: int, K: int, M: int) -> dict:
        """{name: (shape, dtype)} of the tracker kernel's state and scratch arrays (STATE,
        SCRATCH) for S streams of K track slots and M detections per frame."""
        i32, f32, f64 = torch.int32, torch.float32, torch.float64
        out = {k: ((S, K), i32) for k in STATE + SCRATCH}
        out.update({k: ((S,), i32) for k in ("n_tracked", "n_lost", "frame_id", "next_id", "overflow")})
        out.update({"mean": ((S, K, 8), f64), "cov": ((S, K, 8, 8), f64), "score": ((S, K), f32),
                    "kpts": ((S, K, 17, 3), f32), "kpts_center": ((S, K, 2), f64),
                    "hi": ((S, M), i32), "lo": ((S, M), i32), "dxyxy": ((S, M, 4), f32), "dxyah": ((S, M, 4), f32),
                    "dscore": ((S, M), f32), "dleft": ((S, M), i32), "mark": ((S, max(K, M)), i32),
                    "cost": ((S, K, M), f32)})
        out.update({k: ((S, K + M + 1), dt) for k, dt in LAP_WORK.items()})
        return out

    @staticmethod
    def order(stream: np.ndarray, S: int) -> tuple[np.ndarray, np.ndarray]:
        """(S, F) int32 batch rows of each stream in order (-1 past its frames) and (S,) its frame counts."""
        n_frames = np.bincount(stream, minlength=S).astype(np.int32)
        order = np.full((S, max(1, int(n_frames.max()) if len(stream) else 1)), -1, np.int32)
        seen = np.zeros(S, np.int64)
        for b, s in enumerate(stream.tolist()):
            order[s, seen[s]] = b
            seen[s] += 1
        return order, n_frames

    def reset(self):
        """Every stream starts over (no tracks, ids from 1)."""
        if self.backend == "reference":
            for r in self.refs:
                r.reset()
            return
        for t in self.state.values():
            t.zero_()

    def update(self, boxes: torch.Tensor, scores: torch.Tensor, counts: torch.Tensor, stream, restart=None,
               keypoints: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """(B, max_det) int32 track ids of the batch's detections (0: no track); see the class docstring.
        ``keypoints`` (B, max_det, 17, 3) float32: for ``cfg.match == 'oks'``. ``out`` (B, max_det) int32:
        the ids are written there, and the update does not wait for the device: the counts' values are
        not checked (a pipeline's own) and a stream out of track slots is reported by :meth:`check` once
        the caller has synchronized."""
        check_tensor(boxes, "boxes", dtypes=(torch.float32,), ndim=3, device=self.device)
        B = boxes.shape[0]
        if tuple(boxes.shape[1:]) != (self.max_det, 4):
            raise KernelInputError(f"boxes: expected (B, {self.max_det}, 4), got {tuple(boxes.shape)}")
        check_tensor(scores, "scores", dtypes=(torch.float32,), ndim=2, device=self.device)
        if tuple(scores.shape) != (B, self.max_det):
            raise KernelInputError(f"scores: expected ({B}, {self.max_det}), got {tuple(scores.shape)}")
        if out is None:
            _check_counts(counts, "counts", B, self.max_det, self.device)
        else:
            check_tensor(counts, "counts", dtypes=(torch.int32,), ndim=1, device=self.device)
            check_tensor(out, "out", dtypes=(torch.int32,), ndim=2, device=self.device)
            if counts.shape[0] != B or tuple(out.shape) != (B, self.max_det):
                raise KernelInputError(f"counts, out: expected ({B},) and ({B}, {self.max_det}), got "
                                       f"{tuple(counts.shape)} and {tuple(out.shape)}")
        stream = np.asarray(stream, dtype=np.int64).reshape(-1)
        if len(stream) != B or (B and (stream.min() < 0 or stream.max() >= self.streams)):
            raise KernelInputError(f"stream: expected {B} stream indices in [0, {self.streams}), got "
                                   f"{stream.tolist()[:8]}{'...' if len(stream) > 8 else ''}")
        restart = np.zeros(B, np.int32) if restart is None else np.asarray(restart, dtype=np.int32).reshape(-1)
        if len(restart) != B:
            raise KernelInputError(f"restart: expected {B} flags, got {len(restart)}")
        oks = self.cfg.match == "oks"
        if oks:
            if keypoints is None:
                raise KernelInputError("keypoints: the 'oks' match needs (B, max_det, 17, 3) keypoints, got None")
            check_tensor(keypoints, "keypoints", dtypes=(torch.float32,), ndim=4, device=self.device)
            if tuple(keypoints.shape) != (B, self.max_det, 17, 3):
                raise KernelInputError(f"keypoints: expected ({B}, {self.max_det}, 17, 3), got {tuple(keypoints.shape)}")
        else:
            keypoints = torch.zeros((1, 1, 17, 3), dtype=torch.float32, device=self.device)
        ids = torch.zeros((B, self.max_det), dtype=torch.int32, device=self.device) if out is None else out
        with nvtx_range("track"):
            if self.backend == "reference":
                ids.zero_()
                n = counts.tolist()
                for b, s in enumerate(stream.tolist()):
                    if restart[b]:
                        self.refs[s].reset()
                    rows = self.refs[s].update(boxes[b, :n[b]].numpy(), scores[b, :n[b]].numpy(),
                                               keypoints[b, :n[b]].numpy() if oks else None)
                    ids[b, torch.from_numpy(rows[:, 6].astype(np.int64))] = torch.from_numpy(rows[:, 4].astype(np.int32))
                return ids
            order, n_frames = self.order(stream, self.streams)
            S, F = order.shape
            # the launch's index arrays in one pinned buffer and one copy that does not wait for the device
            host = np.concatenate([order.ravel(), n_frames, restart])
            dev = torch.from_numpy(host).pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" \
                else torch.from_numpy(host)
            _impl(self.backend).track(boxes, scores, counts, dev[:S * F].view(S, F), dev[S * F:S * F + S],
                                      dev[S * F + S:], ids, keypoints, self.state, self.scratch,
                                      self.cfg)
            if self.device.type == "cuda":
                if self._overflow is None:
                    self._overflow = torch.zeros(self.streams, dtype=torch.int32, pin_memory=True)
                self._overflow.copy_(self.state["overflow"], non_blocking=True)
            else:
                self._overflow = self.state["overflow"]
            if out is None:
                if self.device.type == "cuda":
                    torch.cuda.current_stream(self.device).synchronize()
                self.check()
        return ids

    def check(self):
        """Raises KernelInputError when a stream ran out of track slots (in an update the device has finished:
        the caller synchronizes first after an update with ``out``)."""
        if self._overflow is not None and int(self._overflow.max()):
            full = torch.nonzero(self._overflow).flatten().tolist()
            raise KernelInputError(f"capacity: streams {full} need more than {self.capacity} track slots "
                                   "(tracked, lost and born in one frame); give ByteTrackBatch a larger capacity")
