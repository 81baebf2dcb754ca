"""NVDEC video source (PyNvVideoCodec ``SimpleDecoder``): frames are decoded into GPU memory as NV12 and go
to the NV12 letterbox kernel as CUDA tensors, on the consumer's stream after an event. No frame crosses
the host.

Decoder buffer reuse, measured (experiments/nvdec_probe.py, H100, PyNvVideoCodec 2.2.4): the memory of the
frames one ``get_batch_frames`` call returns is handed out again by the next call (768x432 clip, chunks of
16: 13 of 16 pointers reused, the held frames' content changed). So held frames must be protected.
Each decoded frame is copied, on the decoder's stream, into a buffer of the source's own pool (one
device-to-device copy: 0.5 MB per 768x432 frame, under 1% of the card's copy bandwidth at 8,000 frames/s),
and the source waits for those copies before its next decoder call. The decoder runs ahead of the GPU by
up to ``pool`` frames; a frame's pool buffer returns to the pool when the runner releases the frame
(``Frame.done()``, once the GPU work reading it has completed).

Zero-copy (the letterbox reading the decoder's buffers, the decoder waiting until a chunk is released) was
built and measured first: it ended in illegal-address faults in the letterbox with 8 streams (chunks of
16, 32 and 64; GPU sessions 1 and 2, tests/test_runners_scale.py at that commit), while single-stream
reads of held frames were correct. The cause was not found (a decoder freeing surfaces it reallocates is
the suspect); the copy above costs less than 1% and is what ships.

Streams: the decoder runs on a CUDA stream of the source's own; after each chunk's copies an event is
recorded on it and the consumer stream waits on that event (``Frame.ready``) before its kernels read.
"""
from __future__ import annotations

import os
import threading
import time

import torch

from .sources import Frame, Source, SourceError

CHUNK = 16  # frames per get_batch_frames call


def nvdec_available() -> str | None:
    """None when NVDEC decoding can run here, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import PyNvVideoCodec  # noqa: F401
    except Exception as e:  # not installed, or its CUDA libraries do not load
        return f"PyNvVideoCodec cannot be imported ({type(e).__name__}: {e}); install the 'video' extra"
    return None


def open_nvdec(path: str, device=None, max_frames: int | None = None, chunk: int = CHUNK,
               pool: int | None = None, threaded: bool = False) -> Source:
    """An NVDEC source for a video file (see the module docstring). ``chunk``: frames per decoder call;
    ``pool``: frame buffers of the source's own (default 2 x chunk); ``threaded``: PyNvVideoCodec's
    ThreadedDecoder (decoding runs ahead in a C++ thread of its own, ``2 x chunk`` frames deep) instead of
    SimpleDecoder (decoding runs inside each call). Raises SourceError naming the file when it cannot be
    opened (missing, empty, not a video, a codec NVDEC does not decode)."""
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
    pool = max(pool or 2 * chunk, chunk)
    import PyNvVideoCodec as nvc

    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    stream = torch.cuda.Stream(dev)
    try:
        kw = dict(gpu_id=dev.index, cuda_stream=stream.cuda_stream, use_device_memory=True,
                  output_color_type=nvc.OutputColorType.NATIVE)
        with torch.cuda.device(dev):
            dec = nvc.ThreadedDecoder(path, 2 * chunk, **kw) if threaded else nvc.SimpleDecoder(path, **kw)
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
        for fr in frames:  # DLPack views of the decoder's buffers (valid until its next call)
            t = torch.from_dlpack(fr)
            if t.ndim == 3 and t.shape[-1] == 1:  # some versions add a channel axis
                t = t[..., 0]
            out.append(t)
        return frames, out

    # fetch() switches device and stream only inside itself, never across a ``yield``: a
    # ``with torch.cuda.stream(...)`` left open at a yield would change the consumer thread's current stream.
    frame_pool = FramePool(lambda: torch.empty((h * 3 // 2, w), dtype=torch.uint8, device=dev), pool, cancel)
    last = [None]  # the last chunk's copy event

    stats = {"decode.nvdec.decoder": 0.0, "decode.nvdec.pool_wait": 0.0, "decode.nvdec.copy": 0.0}

    def fetch(i):
        with torch.cuda.device(dev), torch.cuda.stream(stream):
            t0 = time.perf_counter()
            if last[0] is not None:
                last[0].synchronize()  # the last chunk's copies are done: its decoder buffers may be reused
            _frames, tensors = decode(i)
            t1 = time.perf_counter()
            stats["decode.nvdec.decoder"] += t1 - t0
            if not tensors:
                return None, None
            for k, t in enumerate(tensors):
                if tuple(t.shape) != (h * 3 // 2, w):
                    raise SourceError(f"source {path}: NVDEC frame {i + k} has shape {tuple(t.shape)}, "
                                      f"expected {(h * 3 // 2, w)} (a resolution change mid-stream)")
            bufs = frame_pool.take(len(tensors))
            t2 = time.perf_counter()
            stats["decode.nvdec.pool_wait"] += t2 - t1
            if len(bufs) < len(tensors):  # cancelled
                return None, None
            # one multi-tensor launch for the chunk (not one copy per frame), on the decoder's stream
            torch._foreach_copy_(bufs, tensors, non_blocking=True)
            copied = last[0] = torch.cuda.Event()
            copied.record(stream)
            stats["decode.nvdec.copy"] += time.perf_counter() - t2
        return bufs, copied

    fps = float(getattr(meta, "average_fps", 0) or 0) or None
    frames = chunked_frames(fetch, want, cancel, frame_pool, "nv12", path, declared)
    return Source(path, frames, fps, want, cancel, shape=(h, w), pixel_format="nv12", stats=stats,
                  on_close=dec.end if threaded else None)


class FramePool:
    """Frame buffers of a source's own, made by ``alloc()`` up to ``size``, then reused as the consumer
    releases them. Thread-safe: the decode thread takes, the runner's threads give back."""

    def __init__(self, alloc, size: int, cancel: threading.Event):
        self.alloc, self.size, self.cancel = alloc, size, cancel
        self.free: list = []
        self.n_alloc = 0
        self.cv = threading.Condition()

    def take(self, n: int) -> list:
        """``n`` buffers (fewer only when cancelled); waits for released ones once ``size`` are out."""
        got: list = []
        with self.cv:
            while len(got) < n:
                if self.free:
                    k = min(len(self.free), n - len(got))
                    got += self.free[-k:]
                    del self.free[-k:]
                elif self.n_alloc < self.size:
                    k = min(self.size - self.n_alloc, n - len(got))
                    self.n_alloc += k
                    got += [self.alloc() for _ in range(k)]
                elif self.cancel.is_set():
                    break
                else:
                    self.cv.wait(0.05)
        return got

    def give_back(self, bufs: list):
        with self.cv:
            self.free += bufs
            self.cv.notify()

    def releaser(self, buf):
        """A Frame.release callback returning ``buf`` to the pool."""
        return lambda: self.give_back([buf])


def chunked_frames(fetch, want: int, cancel: threading.Event, pool: FramePool, pixel_format: str, name: str,
                   declared: int | None = None):
    """Frames from a decoder that answers in chunks: ``fetch(i)`` -> (buffers of frames i.., a CUDA event
    the consumer waits on before reading them, or None) or (None, None) at the end. Each frame's buffer goes
    back to ``pool`` when the consumer calls ``Frame.done()``. A stream that ends before ``want`` frames
    (and was not cancelled) raises SourceError naming ``name``."""
    i = 0
    while i < want and not cancel.is_set():
        bufs, ready = fetch(i)
        if not bufs:
            break
        for buf in bufs:
            yield Frame(i, buf, pixel_format, ready, pool.releaser(buf))
            i += 1
    if i < want and not cancel.is_set():
        raise SourceError(f"source {name}: stopped after {i} of {declared or want} frames (truncated or corrupt file)")
