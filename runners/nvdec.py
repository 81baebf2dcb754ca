"""NVDEC video source (PyNvVideoCodec ``SimpleDecoder``): frames are decoded into GPU memory as NV12 and go
to the NV12 letterbox kernel as CUDA tensors (DLPack), on the consumer's stream after an event.

Decoder buffer reuse, measured (experiments/nvdec_probe.py, H100, PyNvVideoCodec 2.2.4): the memory of
the frames a ``get_batch_frames`` call returns is reused by the next call (the 768x432 clip: 13 of 16
pointers handed out again, the held frames' content changed). Two ways to protect held frames:

* ``zero_copy=True``: the letterbox reads the decoder's own buffers. The source asks for the next chunk
  only after every frame of the previous one was released (``Frame.done()``, called by the runner once the
  GPU work reading it completed) or dropped; so each decoder idles while its chunk is in flight.
  Chunks are capped at ``ZERO_COPY_MAX_CHUNK``: larger ones crashed the consumer with an illegal address
  (first GPU run, chunk 32 and 64), which points at the decoder reallocating its output pool when one call
  asks for more frames than the pool holds.
* ``zero_copy=False`` (default): each decoded frame is copied on the decoder's stream into a buffer of the
  source's own pool (one device-to-device copy: 0.5 MB per 768x432 frame, under 1% of the card's copy
  bandwidth at 8,000 frames/s), and the decoder's buffers are free again before the next call. The decoder
  runs ahead of the GPU by up to ``pool`` frames; a frame's pool buffer returns when it is released.

Streams: the decoder runs on a CUDA stream of the source's own; after each chunk an event is recorded on it
and the consumer stream waits on that event (``Frame.ready``) before its kernels read the frames.
"""
from __future__ import annotations

import os
import threading

import torch

from .sources import Frame, Source, SourceError

CHUNK = 16  # frames per get_batch_frames call
ZERO_COPY_MAX_CHUNK = 16  # see the module docstring


def nvdec_available() -> str | None:
    """None when NVDEC decoding can run here, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import PyNvVideoCodec  # noqa: F401
    except Exception as e:  # not installed, or its CUDA libraries do not load
        return f"PyNvVideoCodec cannot be imported ({type(e).__name__}: {e}); install the 'video' extra"
    return None


class _Lease:
    """Counts the frames of one chunk still in use; ``wait`` returns when all are released (or on cancel)."""

    def __init__(self, n: int):
        self._n = n
        self.owners = None
        self._lock = threading.Lock()
        self.free = threading.Event()
        if n == 0:
            self.free.set()

    def release(self):
        with self._lock:
            self._n -= 1
            if self._n <= 0:
                self.owners = None
                self.free.set()

    def wait(self, cancel: threading.Event, poll: float = 0.05) -> bool:
        while not self.free.wait(poll):
            if cancel.is_set():
                return False
        return True


def open_nvdec(path: str, device=None, max_frames: int | None = None, chunk: int = CHUNK, zero_copy: bool = False,
               pool: int | None = None) -> Source:
    """An NVDEC source for a video file (see the module docstring). ``pool``: copy mode's buffers (default
    2 x chunk). Raises SourceError naming the file when it cannot be opened (missing, empty, not a video,
    a codec NVDEC does not decode)."""
    why = nvdec_available()
    if why:
        raise SourceError(f"source {path}: NVDEC is not available: {why}")
    if "://" not in path:
        if not os.path.exists(path):
            raise SourceError(f"source {path}: no such file or folder")
        if os.path.getsize(path) == 0:
            raise SourceError(f"source {path}: the file is empty")
    if chunk < 1:
        raise ValueError(f"chunk: expected >= 1, got {chunk}")
    if zero_copy:
        chunk = min(chunk, ZERO_COPY_MAX_CHUNK)
    pool = max(pool or 2 * chunk, chunk)
    import PyNvVideoCodec as nvc

    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    stream = torch.cuda.Stream(dev)
    try:
        with torch.cuda.device(dev):
            dec = nvc.SimpleDecoder(path, gpu_id=dev.index, cuda_stream=stream.cuda_stream, use_device_memory=True,
                                    output_color_type=nvc.OutputColorType.NATIVE)
        meta = dec.get_stream_metadata()
    except Exception as e:  # PyNvVideoCodec raises its own exception types (unsupported codec, demux error...)
        raise SourceError(f"source {path}: NVDEC could not open it ({type(e).__name__}: {e})") from e
    declared = len(dec)
    want = declared if max_frames is None else min(declared, max_frames)
    cancel = threading.Event()
    h, w = int(meta.height), int(meta.width)

    def decode(i):
        try:
            frames = dec.get_batch_frames(min(chunk, want - i))
        except Exception as e:
            raise SourceError(f"source {path}: NVDEC failed at frame {i} ({type(e).__name__}: {e})") from e
        out = []
        for fr in frames:
            t = torch.from_dlpack(fr)
            if t.ndim == 3 and t.shape[-1] == 1:  # some versions add a channel axis
                t = t[..., 0]
            out.append(t)
        return frames, out

    # The generators switch device and stream only inside these helpers, never across a ``yield``: a
    # ``with torch.cuda.stream(...)`` left open at a yield would change the consumer thread's current stream.
    def fetch_zero_copy(i):
        with torch.cuda.device(dev):
            frames, tensors = decode(i)
            ready = torch.cuda.Event()
            ready.record(stream)  # everything the decoder queued for this chunk
        return frames, tensors, ready

    def gen_zero_copy():
        i = 0
        lease = None
        while i < want and not cancel.is_set():
            if lease is not None and not lease.wait(cancel):  # the decoder reuses these buffers next call
                return
            frames, tensors, ready = fetch_zero_copy(i)
            if not tensors:
                break
            lease = _Lease(len(tensors))
            lease.owners = frames  # the decoder's frame objects stay alive until the chunk is released
            for t in tensors:
                yield Frame(i, t, "nv12", ready, lease.release)
                i += 1
        if i < want and not cancel.is_set():
            raise SourceError(f"source {path}: stopped after {i} of {declared} frames (truncated or corrupt file)")

    free: list[torch.Tensor] = []  # copy mode's pool
    n_alloc = 0
    cv = threading.Condition()

    def give_back(buf):
        def release():
            with cv:
                free.append(buf)
                cv.notify()
        return release

    def take():
        nonlocal n_alloc
        with cv:
            while not free:
                if n_alloc < pool:
                    n_alloc += 1
                    return torch.empty((h * 3 // 2, w), dtype=torch.uint8, device=dev)
                if cancel.is_set():
                    return None
                cv.wait(0.05)
            return free.pop()

    def fetch_copy(i, last_copied):
        with torch.cuda.device(dev), torch.cuda.stream(stream):
            if last_copied is not None:
                last_copied.synchronize()  # the last chunk's copies are done: its decoder buffers may be reused
            _frames, tensors = decode(i)
            bufs = []
            for t in tensors:
                buf = take()
                if buf is None:
                    return None, None
                if tuple(t.shape) != tuple(buf.shape):
                    raise SourceError(f"source {path}: NVDEC frame {i + len(bufs)} has shape {tuple(t.shape)}, "
                                      f"expected {tuple(buf.shape)} (a resolution change mid-stream)")
                buf.copy_(t, non_blocking=True)  # on the decoder's stream, after its own work
                bufs.append(buf)
            copied = torch.cuda.Event()
            copied.record(stream)
        return bufs, copied

    def gen_copy():
        i = 0
        copied = None
        while i < want and not cancel.is_set():
            bufs, copied = fetch_copy(i, copied)
            if not bufs:
                break
            for buf in bufs:
                yield Frame(i, buf, "nv12", copied, give_back(buf))
                i += 1
        if i < want and not cancel.is_set():
            raise SourceError(f"source {path}: stopped after {i} of {declared} frames (truncated or corrupt file)")

    fps = float(getattr(meta, "average_fps", 0) or 0) or None
    gen = gen_zero_copy if zero_copy else gen_copy
    return Source(path, gen(), fps, want, cancel, shape=(h, w), pixel_format="nv12")
