"""Multi-object tracking across frames (ByteTrack).

    tracker = ByteTrackReference()
    rows = tracker.update(boxes_xyxy, scores)   # (M, 7): x1, y1, x2, y2, track id, score, detection index

    kalman_predict(mean, cov, tracked, backend="auto")     # every track of every stream, in place
    kalman_update(mean, cov, z, rows, backend="auto")      # the matched tracks' rows take measurements z

``ByteTrackReference`` is the CPU reference, equal to Ultralytics 8.4.190's ``BYTETracker`` with
``bytetrack.yaml``. The batched steps run on the device for all tracks at once: ``mean`` (T, 8) and
``cov`` (T, 8, 8) float64 state of (x, y, a, h) and velocities, ``tracked`` (T,) uint8 (1: currently
tracked; 0: its aspect velocity is zeroed before predicting), ``z`` (M, 4) float64 (x, y, a, h)
measurements for ``rows`` (M,) int32 of the state. Backends: 'cupy' (kalman.cu) and 'numba' (one thread
per track; the CUDA simulator on the CPU), on the caller's current stream, and 'reference' (CPU tensors,
the reference's NumPy). The batched costs and the assignment on the device are the next steps.
"""
from __future__ import annotations

import torch

from .._common import KernelInputError, check_tensor, nvtx_range, resolve_backend
from .reference import ByteTrackConfig, ByteTrackReference, kf_predict_tracks, kf_update

__all__ = ["ByteTrackConfig", "ByteTrackReference", "kalman_predict", "kalman_update", "BACKENDS"]

BACKENDS = ("cupy", "numba", "reference")


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
            from . import cupy_impl, numba_impl

            (cupy_impl if back == "cupy" else numba_impl).predict(mean, cov, tracked)
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
            from . import cupy_impl, numba_impl

            (cupy_impl if back == "cupy" else numba_impl).update(mean, cov, z, rows)
            return
        for j, i in enumerate(rows.tolist()):
            m, v = kf_update(mean[i].numpy(), cov[i].numpy(), z[j].numpy())
            mean[i].copy_(torch.from_numpy(m))
            cov[i].copy_(torch.from_numpy(v))
