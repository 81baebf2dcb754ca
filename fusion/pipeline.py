"""PosePipeline: letterbox -> torch backbone -> decode -> NMS -> rescale on one CUDA stream.

    pipe = PosePipeline()                       # yolo11n-pose, CUDA, fp16, CUDA graphs
    results = pipe(frames)                      # list of PoseResult, one per frame
    pending = pipe.submit(frames); ...; results = pending.result()   # queue the next batch first

Frames: BGR uint8 HxWx3 NumPy arrays (host), torch uint8 CUDA tensors (a list, or one (B, H, W, 3) batch),
any DLPack / CUDA-array-interface array (CuPy, Numba), or NV12 frames (``pixel_format="nv12"``, (H*3/2, W)).

How a batch runs (CUDA device):
* host frames are copied into a pinned staging buffer, then to the device with a non-blocking copy;
  device frames are read in place: the CuPy letterbox takes a table of frame pointers, which the pipeline
  rewrites per batch, so even a CUDA-graph replay reads the caller's memory (no copy);
* letterbox, backbone, head decode, NMS and rescale run on the caller's current stream, through static
  buffers; with ``cuda_graph=True`` the whole chain is captured once per input signature (batch size,
  frame shape, pixel format) and replayed for later batches of that signature;
* the padded results (one flat buffer) come back in one device-to-host copy into pinned memory on a side
  stream; ``PendingBatch.result()`` waits for that copy only.
Each signature has a ring of ``ring`` slots (buffers, graph, pinned results; 2 by default), so batch k+1 can
be queued while batch k is computed or read back. A third slot gained nothing in the 8-stream NVDEC runner
(results/e2e_probe.md: 4,914 vs 4,935 and 4,496 vs 4,468 fr/s, ring 3 vs 2; pipeline alone 8,607 vs
8,737). After warm-up a graph-mode batch allocates no device memory.

On a machine without a GPU (``device="cpu"``) the same chain runs with the CPU reference kernels and gives
the same results (fp32).
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

from kernels._common import KernelInputError, available_backends, nvtx_range
from kernels.decode import Candidates, decode, levels_for
from kernels.decode.reference import MAX_NMS
from kernels.letterbox import Layout, batch_geometry, letterbox, make_layout, normalize_frames, source_rows
from kernels.nms import Detections, nms_rescale

from .backbone import DEFAULT_MODEL, PoseBackbone, load_ultralytics

BACKENDS = ("auto", "cupy", "numba", "torch", "reference")
PRECISIONS = ("fp16", "fp32")
_CAPTURE_LOCK = threading.Lock()
RING = 2  # slots per signature: one computing or being read back while the next is queued


@dataclass
class PoseResult:
    """One frame's poses, in original-image pixels.

    boxes: (N, 4) float32 xyxy; scores: (N,) float32; keypoints: (N, 17, 3) float32 (x, y, visibility)."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


class PendingBatch:
    """A submitted batch; ``result()`` waits for its device-to-host copy and returns the PoseResults.
    Safe to read from another thread than the one that submits (the pipeline may copy the results out
    itself before it reuses the batch's buffers)."""

    def __init__(self, slot=None, n: int = 0, keepalive=None, results=None):
        self._slot, self._n, self._keepalive, self._results = slot, n, keepalive, results
        self._lock = threading.Lock()
        self.gpu_ms: dict[str, float] = {}  # GPU time per stage (CUDA events), filled when the results are read

    def done(self) -> bool:
        with self._lock:
            return self._results is not None or self._slot.event.query()

    def result(self) -> list[PoseResult]:
        self._materialize()
        return self._results

    def _materialize(self):
        with self._lock:
            if self._results is not None:
                return
            slot = self._slot
            slot.event.synchronize()
            self._results = _results_from(slot.host, self._n)
            self.gpu_ms = _stage_ms(slot.marks)
            self._keepalive = None
            if slot.pending is self:
                slot.pending = None
            self._slot = None


def bucket_size(n: int) -> int:
    """The batch size a graph-mode batch of ``n`` frames runs at: the next power of two up to 64, then the
    next multiple of 64. A dynamic batcher's sizes vary from 1 to its maximum; each size would cost a graph
    capture (and cuDNN autotuning) of its own; bucketing bounds that to 7 sizes up to 64, for at most 2x
    the work on the padded part."""
    if n <= 64:
        return 1 << (n - 1).bit_length()
    return -(-n // 64) * 64


def _stage_ms(marks: dict) -> dict[str, float]:
    """GPU milliseconds between consecutive recorded events: {stage: ms} (stages in recording order)."""
    marks = marks or {}
    names = list(marks)
    return {b: marks[a].elapsed_time(marks[b]) for a, b in zip(names, names[1:])}


def _results_from(host: Detections, n: int) -> list[PoseResult]:
    counts = host.counts[:n].tolist()
    b, s, k = host.boxes.numpy(), host.scores.numpy(), host.keypoints.numpy()
    return [PoseResult(b[i, :c].copy(), s[i, :c].copy(), k[i, :c].copy()) for i, c in enumerate(counts)]


@dataclass
class _Slot:
    """Static buffers for one input signature (one of RING)."""

    layout: Layout | None = None
    src_pinned: torch.Tensor | None = None  # host mirror of layout.src (device-frame pointer table)
    in_host: torch.Tensor | None = None  # pinned staging for host frames
    in_dev: torch.Tensor | None = None  # device input buffer (host frames, or copies for non-CuPy graphs)
    lb_out: torch.Tensor | None = None
    raw: torch.Tensor | None = None
    cands: Candidates | None = None
    dets: Detections | None = None
    host: Detections | None = None
    in_dev_list: list | None = None  # per-frame device buffers (host frames of mixed shapes)
    orig_hw: torch.Tensor | None = None
    shapes: list | None = None
    graph: torch.cuda.CUDAGraph | None = None
    event: torch.cuda.Event | None = None  # recorded after the device-to-host copy
    marks: dict | None = None  # this batch's timing events, {stage: event recorded at its end}, "start" first
    timers: dict = field(default_factory=dict)  # the slot's timing events, by stage
    pending: PendingBatch | None = None
    runs: int = 0


class PosePipeline:
    """See the module docstring. Not thread-safe: use one pipeline per thread (or per stream)."""

    def __init__(self, model=DEFAULT_MODEL, device="cuda", backend: str = "auto", precision: str = "fp16",
                 imgsz=640, conf: float = 0.25, iou: float = 0.7, max_det: int = 300, rect: bool = True,
                 cuda_graph: bool = True, compile: bool = False, channels_last: bool = True,
                 max_nms: int = MAX_NMS, strides=None, timing: bool = True, buckets: bool = True, ring: int = RING):
        self.device = torch.device(device)
        if int(ring) < 1:
            raise KernelInputError(f"ring: expected >= 1 slots per input signature, got {ring}")
        self.ring = int(ring)  # batches of one signature in flight before submit() waits for the oldest
        self.ring_wait_s = 0.0  # host seconds submit() spent waiting for a ring slot (the GPU is behind)
        self.timing = bool(timing)  # CUDA events per stage -> PendingBatch.gpu_ms
        self.buckets = bool(buckets)  # graph mode: batches padded to bucket_size() (dynamic batching)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device: CUDA was asked for but no CUDA device is available (use device='cpu')")
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if backend not in BACKENDS:
            raise KernelInputError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise KernelInputError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
        if not (0 <= conf <= 1) or not (0 <= iou <= 1) or max_det < 1:
            raise KernelInputError(f"conf/iou/max_det: expected conf, iou in [0, 1] and max_det >= 1, got {conf}, {iou}, {max_det}")
        avail = available_backends(self.device)
        self.backend = (avail[0] if self.device.type == "cuda" else "reference") if backend == "auto" else backend
        if self.backend not in avail:
            raise KernelInputError(f"backend: {self.backend!r} cannot run on {self.device} here (available: {avail})")
        on_gpu = self.device.type == "cuda"
        self.precision = precision if on_gpu else "fp32"
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.imgsz, self.conf, self.iou, self.max_det, self.rect = imgsz, float(conf), float(iou), int(max_det), rect
        self.max_nms = int(max_nms)
        # CUDA graphs need the capturable (sync-free) kernels: CuPy or Numba
        self.cuda_graph = bool(cuda_graph) and on_gpu and self.backend in ("cupy", "numba")
        self.graph_errors: list[str] = []
        self.backbone, self.strides = self._make_backbone(model, strides)
        self.backbone = self.backbone.to(self.device).eval().requires_grad_(False)
        if self.dtype == torch.float16:
            self.backbone = self.backbone.half()
        if channels_last and on_gpu:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        if compile:
            self.backbone = torch.compile(self.backbone)
        if on_gpu:
            torch.backends.cudnn.benchmark = True
        self._slots: dict[tuple, list[_Slot]] = {}
        self._turn: dict[tuple, int] = {}
        self._copy_stream = torch.cuda.Stream(self.device) if on_gpu else None
        self._graph_pool = torch.cuda.graph_pool_handle() if self.cuda_graph else None

    # ------------------------------------------------------------------ model
    @staticmethod
    def _make_backbone(model, strides):
        if isinstance(model, str):
            net = load_ultralytics(model).model
            net = net.float().fuse() if hasattr(net, "fuse") else net.float()
            bb = PoseBackbone(net.eval())
            return bb, bb.strides
        if hasattr(model, "predictor") and hasattr(model, "model") and not isinstance(model, nn.Module):
            model = model.model  # an ultralytics.YOLO
        if isinstance(model, nn.Module) and hasattr(model, "model") and hasattr(model, "save"):
            bb = PoseBackbone(model.float().eval())  # an Ultralytics PoseModel
            return bb, bb.strides
        if isinstance(model, PoseBackbone):
            return model, model.strides
        if isinstance(model, nn.Module):  # any module returning raw head maps
            return _RawHeadModule(model), tuple(strides or getattr(model, "strides", (8, 16, 32)))
        raise KernelInputError(f"model: expected a model name, checkpoint path or torch module, got {type(model).__name__}")

    def replica(self) -> "PosePipeline":
        """A pipeline sharing this one's backbone (weights in memory once) with buffers, graphs and streams
        of its own: one per thread or CUDA stream (the ``streams`` runner)."""
        twin = copy.copy(self)
        twin._slots, twin._turn, twin.graph_errors, twin.ring_wait_s = {}, {}, [], 0.0
        twin._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        twin._graph_pool = torch.cuda.graph_pool_handle() if self.cuda_graph else None
        return twin

    # ------------------------------------------------------------------ public API
    def __call__(self, frames, pixel_format: str = "bgr") -> list[PoseResult]:
        return self.submit(frames, pixel_format).result()

    def submit(self, frames, pixel_format: str = "bgr") -> PendingBatch:
        """Queue one batch; returns at once (GPU) with a handle whose ``result()`` waits for it."""
        items, batch, src_device, shapes = normalize_frames(frames, pixel_format)
        if self.device.type == "cpu":
            return PendingBatch(results=self._run_cpu(items, batch, shapes, pixel_format))
        host = src_device.type == "cpu"
        if not host and src_device != self.device:
            raise KernelInputError(f"frames: expected frames on {self.device} or in host memory, got {src_device}")
        same = len(set(shapes)) == 1
        n_real = len(shapes)
        if self.cuda_graph and same and self.buckets:
            nb = bucket_size(n_real)
            if nb > n_real:  # pad with repeats of the last frame: one graph per bucket, not per batch size
                items = list(items if items is not None else batch.unbind(0))
                items += [items[-1]] * (nb - n_real)
                batch, shapes = None, shapes + [shapes[-1]] * (nb - n_real)
        sig = (len(shapes), tuple(shapes) if not same else shapes[0], pixel_format, "host" if host else "device")
        slot = self._next_slot(sig)
        stream = torch.cuda.current_stream(self.device)
        slot.marks = {} if self.timing else None
        self._mark(slot, "start", stream)
        if host:
            self._stage_host(slot, items, batch, same)
            src = slot.in_dev if same else slot.in_dev_list
            self._mark(slot, "h2d", stream)
        else:
            src = batch if batch is not None else items
        if self.cuda_graph and same:
            self._run_graph(slot, sig, src, host, shapes, pixel_format)
            self._mark(slot, "graph", stream)
        else:
            self._run_eager(slot, src, shapes, pixel_format)
        with nvtx_range("d2h"):
            self._copy_stream.wait_stream(stream)
            with torch.cuda.stream(self._copy_stream):
                slot.host.flat.copy_(slot.dets.flat, non_blocking=True)
                self._mark(slot, "d2h", self._copy_stream)  # before slot.event: complete when it is
                slot.event.record(self._copy_stream)
        slot.runs += 1
        pend = PendingBatch(slot, n_real, keepalive=(None if host else (frames, batch, items)))
        slot.pending = pend
        return pend

    def warmup(self, shape, batch: int = 1, pixel_format: str = "bgr", device_frames: bool = False,
               all_buckets: bool = True):
        """Build (and capture) the buffers for batches of frames of ``shape`` (H, W) ahead of time, for host
        frames or (``device_frames``) frames already on the device, as NVDEC gives. ``all_buckets``: every
        batch size a dynamic batcher can produce up to ``batch`` (graph mode: each bucket_size(); eager: the
        same sizes, for cuDNN's autotuning). Each new batch size otherwise costs a capture and cuDNN
        autotuning in the middle of a run: about 0.5 s each, measured as multi-second p99 latencies and a
        5x lower throughput in short runs (second GPU session, results/runners.json)."""
        if self.device.type == "cpu":  # nothing to capture or autotune
            return
        h, w = shape
        if pixel_format == "nv12":
            frame = np.full((h * 3 // 2, w), 128, np.uint8)
        else:
            frame = np.full((h, w, 3), 114, np.uint8)
        if device_frames and self.device.type == "cuda":
            frame = torch.from_numpy(frame).to(self.device)
        sizes = [batch]
        if all_buckets:
            top = bucket_size(batch)
            sizes = sorted({min(1 << k, top) for k in range(top.bit_length())} | {top})
        for n in sizes:
            for _ in range(self.ring + 1):  # every slot of the ring captured, then one replay
                self([frame] * n, pixel_format)

    # ------------------------------------------------------------------ internals
    def _next_slot(self, sig) -> _Slot:
        ring = self._slots.get(sig)
        if ring is None:
            ring = self._slots[sig] = [_Slot(event=torch.cuda.Event()) for _ in range(self.ring)]
            self._turn[sig] = 0
        i = self._turn[sig]
        self._turn[sig] = (i + 1) % self.ring
        slot = ring[i]
        t0 = time.perf_counter()
        if slot.pending is not None:  # its results were not read yet: keep them before reusing the buffers
            slot.pending._materialize()
        slot.event.synchronize()
        self.ring_wait_s += time.perf_counter() - t0
        return slot

    def _stage_host(self, slot: _Slot, frames, batch, same: bool):
        """Host frames -> pinned staging -> device (non-blocking); allocated once per slot."""
        if same:
            shape = tuple(batch.shape) if batch is not None else (len(frames),) + tuple(frames[0].shape)
            if slot.in_host is None:
                slot.in_host = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
                slot.in_dev = torch.empty(slot.in_host.shape, dtype=torch.uint8, device=self.device)
            if batch is not None:
                slot.in_host.copy_(batch)
            else:
                for i, f in enumerate(frames):
                    slot.in_host[i].copy_(f)
            slot.in_dev.copy_(slot.in_host, non_blocking=True)
        else:
            if slot.in_host is None:
                slot.in_host = [torch.empty(f.shape, dtype=torch.uint8, pin_memory=True) for f in frames]
                slot.in_dev_list = [torch.empty(f.shape, dtype=torch.uint8, device=self.device) for f in frames]
            for hbuf, dbuf, f in zip(slot.in_host, slot.in_dev_list, frames):
                hbuf.copy_(f)
                dbuf.copy_(hbuf, non_blocking=True)

    def _ensure_outputs(self, slot: _Slot, b: int, shapes):
        if slot.dets is None:
            slot.dets = Detections.empty(b, self.max_det, self.device)
            slot.host = Detections.empty(b, self.max_det, "cpu", pin_memory=True)
            slot.orig_hw = torch.tensor([list(s) for s in shapes], dtype=torch.int32, device=self.device)

    def _mark(self, slot: _Slot, stage: str, stream=None):
        """Record the end of ``stage`` (a timing event) unless timing is off or a graph is being captured."""
        if slot.marks is None or self.device.type != "cuda" or torch.cuda.is_current_stream_capturing():
            return
        ev = slot.timers.get(stage)
        if ev is None:  # created once per slot and stage, reused by later batches
            ev = slot.timers[stage] = torch.cuda.Event(enable_timing=True)
        ev.record(stream)
        slot.marks[stage] = ev

    def _stages(self, slot: _Slot, src, shapes, pixel_format: str, lb_out=None):
        """letterbox -> backbone -> head_decode -> nms -> rescale on the current stream (static buffers)."""
        b = len(shapes)
        lb, ratio_pad = letterbox(src, self.imgsz, rect=self.rect, dtype=self.dtype, pixel_format=pixel_format,
                                  backend=self.backend, out=lb_out)
        self._mark(slot, "letterbox")
        with nvtx_range("backbone"), torch.inference_mode():
            raw = self.backbone(lb)
        self._mark(slot, "backbone")
        levels = levels_for(lb.shape[2], lb.shape[3], self.strides)
        if slot.cands is None:
            slot.cands = Candidates.empty(b, min(raw.shape[2], self.max_nms), self.device)
        decode(raw, levels, self.conf, self.max_nms, backend=self.backend, out=slot.cands)
        nms_rescale(slot.cands, ratio_pad, slot.orig_hw, self.iou, self.max_det, backend=self.backend, out=slot.dets)
        self._mark(slot, "decode_nms")
        return lb, raw

    def _run_eager(self, slot: _Slot, src, shapes, pixel_format):
        self._ensure_outputs(slot, len(shapes), shapes)
        slot.lb_out, slot.raw = self._stages(slot, src, shapes, pixel_format, lb_out=slot.lb_out)

    def _run_graph(self, slot: _Slot, sig, src, host: bool, shapes, pixel_format):
        b = len(shapes)
        self._ensure_outputs(slot, b, shapes)
        if slot.graph is None and slot.layout is None:
            self._build_graph_slot(slot, src, host, shapes, pixel_format)
        if slot.graph is None:  # capture failed earlier: run eagerly on the static buffers
            self._run_eager(slot, src, shapes, pixel_format)
            return
        self._bind_input(slot, src, host, pixel_format)
        slot.graph.replay()

    def _bind_input(self, slot: _Slot, src, host: bool, pixel_format):
        """Point the graph at this batch's frames: host frames are already in slot.in_dev; device frames
        are read in place through the pointer table (CuPy) or copied into slot.in_dev (Numba)."""
        if host:
            return
        if self.backend == "cupy":
            frames = src if isinstance(src, list) else None
            batch = src if isinstance(src, torch.Tensor) else None
            rows = source_rows(frames, batch, slot.shapes, pixel_format == "nv12")
            slot.src_pinned.numpy()[:] = rows
            slot.layout.src.copy_(slot.src_pinned, non_blocking=True)
        else:
            if isinstance(src, torch.Tensor):
                slot.in_dev.copy_(src)
            else:
                for i, f in enumerate(src):
                    slot.in_dev[i].copy_(f)

    def _build_graph_slot(self, slot: _Slot, src, host: bool, shapes, pixel_format):
        b = len(shapes)
        nv12 = pixel_format == "nv12"
        slot.shapes = list(shapes)
        if not host and self.backend != "cupy":
            slot.in_dev = torch.empty((b,) + tuple(src[0].shape), dtype=torch.uint8, device=self.device)
        geo = batch_geometry(shapes, self.imgsz, self.rect)
        slot.lb_out = torch.empty((b, 3, geo.out_h, geo.out_w), dtype=self.dtype, device=self.device)
        if self.backend == "cupy":
            # a layout of our own: its pointer table is rewritten per batch, the graph reads it
            base = slot.in_dev if host else src
            rows = source_rows(None if isinstance(base, torch.Tensor) else base,
                             base if isinstance(base, torch.Tensor) else None, shapes, nv12)
            slot.src_pinned = torch.from_numpy(rows).pin_memory()
            slot.layout = make_layout(geo, rows, self.device)
            graph_src = None
        else:
            slot.layout = make_layout(geo, None, self.device)
            graph_src = slot.in_dev
            if not host:
                self._bind_input(slot, src, host, pixel_format)

        def run():
            if self.backend == "cupy":
                from kernels.letterbox import cupy_impl

                with nvtx_range("letterbox"):
                    cupy_impl.run(slot.layout, slot.lb_out, nv12)
                with nvtx_range("backbone"), torch.inference_mode():
                    raw = self.backbone(slot.lb_out)
                levels = levels_for(slot.lb_out.shape[2], slot.lb_out.shape[3], self.strides)
                if slot.cands is None:
                    slot.cands = Candidates.empty(b, min(raw.shape[2], self.max_nms), self.device)
                decode(raw, levels, self.conf, self.max_nms, backend=self.backend, out=slot.cands)
                nms_rescale(slot.cands, slot.layout.ratio_pad, slot.orig_hw, self.iou, self.max_det,
                            backend=self.backend, out=slot.dets)
                return raw
            return self._stages(slot, graph_src, shapes, pixel_format, lb_out=slot.lb_out)[1]

        stream = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        marks, slot.marks = slot.marks, None  # no timing events inside warm-up or capture
        # one capture at a time per process; "thread_local": other threads (pipeline replicas on their own
        # streams) may keep launching and allocating while this thread captures
        with _CAPTURE_LOCK:
            side.wait_stream(stream)
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: cudnn autotuning, module loads, JIT compiles
                    run()
            stream.wait_stream(side)
            try:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=self._graph_pool, stream=side, capture_error_mode="thread_local"):
                    slot.raw = run()
                slot.graph = g
            except Exception as e:  # pragma: no cover - depends on the backbone (e.g. torch.compile graph breaks)
                torch.cuda.synchronize(self.device)
                self.graph_errors.append(f"{type(e).__name__}: {e}")
                warnings.warn(f"cuda_graph: capture failed ({type(e).__name__}: {e}); running eagerly", RuntimeWarning,
                              stacklevel=2)
                slot.graph = None
        slot.marks = marks
        stream.wait_stream(side)

    def _run_cpu(self, items, batch, shapes, pixel_format) -> list[PoseResult]:
        frames = items if items is not None else list(batch.unbind(0))
        slot = _Slot()
        slot.dets = Detections.empty(len(shapes), self.max_det, "cpu")
        slot.orig_hw = torch.tensor([list(s) for s in shapes], dtype=torch.int32)
        self._stages(slot, frames, shapes, pixel_format)
        return _results_from(slot.dets, len(shapes))


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
