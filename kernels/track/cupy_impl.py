"""CuPy RawKernels of the tracker (CUDA C in track.cu), the same arguments as numba_impl. Compiled without
FMA contraction (``--fmad=false``), so predict and the IoU costs stay bit-equal to the reference."""
from __future__ import annotations

import numpy as np
import torch

from .._common import KERNEL_DIR, KernelInputError, cupy_launch, cupy_module, ptr, shared_memory_per_block
from . import LAP_WORK, SCRATCH, STATE
from .reference import AREA_FRACTION, KPT_CONF, OKS_DEN

CU = str(KERNEL_DIR / "track" / "track.cu")
BLOCK = 128
LANES = 32  # the assignment and the tracker: one warp per stream (a block each), track.cu says how
NO_WORK = (np.uint64(0),) * len(LAP_WORK)  # the LAP_WORK arguments: the scratch is in shared memory (lap_work)


DEFINES = (("PREDICT_NAME", "kf_predict_f64"), ("UPDATE_NAME", "kf_update_f64"), ("COST_NAME", "iou_cost_f32"),
           ("ASSIGN_NAME", "lap_f64"), ("TRACK_NAME", "bytetrack_f64"),
           ("OKS_DEN_INIT", "{" + ", ".join(repr(float(x)) for x in OKS_DEN) + "}"),
           ("AREA_FRACTION", repr(AREA_FRACTION)), ("KPT_CONF", f"{KPT_CONF!r}f"))


def _lap_shared(W: int, device: torch.device, names: str) -> int:
    """Bytes of shared memory for the assignment's scratch of W entries (track.cu: lap_work), checked."""
    need = W * (3 * 8 + 4 * 4 + 1)
    have = shared_memory_per_block(device)
    if need > have:
        raise KernelInputError(f"{names}: the assignment's scratch of {W} entries needs {need} bytes of shared memory "
                               f"per block, the device gives {have}; use fewer")
    return need


def _module(device: torch.device):
    return cupy_module(CU, DEFINES, ("--fmad=false",),
                       device.index if device.index is not None else torch.cuda.current_device())


def predict(mean: torch.Tensor, cov: torch.Tensor, tracked: torch.Tensor) -> None:
    n = mean.shape[0]
    if n:
        k = _module(mean.device).get_function("kf_predict_f64")
        cupy_launch(k, ((n + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1), (ptr(mean), ptr(cov), ptr(tracked), np.int32(n)),
                    mean.device)


def update(mean: torch.Tensor, cov: torch.Tensor, z: torch.Tensor, rows: torch.Tensor) -> None:
    n = rows.shape[0]
    if n:
        k = _module(mean.device).get_function("kf_update_f64")
        cupy_launch(k, ((n + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1), (ptr(mean), ptr(cov), ptr(z), ptr(rows), np.int32(n)),
                    mean.device)


def iou_cost(tracks, n_tracks, dets, scores, n_dets, cost, fuse: bool) -> None:
    S, T, D = cost.shape
    total = S * T * D
    if total:
        k = _module(cost.device).get_function("iou_cost_f32")
        cupy_launch(k, ((total + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1),
                    (ptr(tracks), ptr(n_tracks), ptr(dets), ptr(scores), ptr(n_dets), ptr(cost), np.int32(S),
                     np.int32(T), np.int32(D), np.int32(fuse)), cost.device)


def assign(cost, n_tracks, n_dets, match, work: None, limit: float) -> None:
    S, T, D = cost.shape
    if S:
        k = _module(cost.device).get_function("lap_f64")
        cupy_launch(k, (S, 1, 1), (LANES, 1, 1),
                    (ptr(cost), ptr(n_tracks), ptr(n_dets), ptr(match),
                     *NO_WORK,
                     np.int32(S), np.int32(T), np.int32(D), np.float64(limit)), cost.device,
                    shared_mem=_lap_shared(T + D + 1, cost.device, "cost: tracks + detections"))


def track(boxes, scores, counts, order, n_frames, restart, ids, keypoints, state: dict, scratch: dict, cfg) -> None:
    S, F = order.shape
    K, M = state["id"].shape[1], boxes.shape[1]
    if S:
        k = _module(boxes.device).get_function("bytetrack_f64")
        cupy_launch(k, (S, 1, 1), (LANES, 1, 1),
                    (ptr(boxes), ptr(scores), ptr(counts), ptr(order), ptr(n_frames), ptr(restart), ptr(ids),
                     ptr(keypoints),
                     *(ptr(state[k]) for k in STATE), *(ptr(scratch[k]) for k in SCRATCH if k not in LAP_WORK), *NO_WORK,
                     np.int32(S), np.int32(K), np.int32(M), np.int32(F), np.float32(cfg.track_high_thresh),
                     np.float32(cfg.track_low_thresh), np.float32(cfg.new_track_thresh), np.int32(cfg.track_buffer),
                     np.float64(cfg.match_thresh), np.int32(cfg.fuse_score), np.int32(cfg.match == "oks")),
                    boxes.device, shared_mem=_lap_shared(K + M + 1, boxes.device, "capacity + max_det"))
