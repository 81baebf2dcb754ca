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
               pool: int | None = None) -> Source:
    """An NVDEC source for a video file (see the module docstring). ``chunk``: frames per decoder call;
    ``pool``: frame buffers of the source's own (default 2 x chunk). Raises SourceError naming the file when it cannot be opened (missing, empty, not a video,
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
        for fr in frames:  # DLPack views of the decoder's buffers (valid until its next call)
            t = torch.from_dlpack(fr)
            if t.ndim == 3 and t.shape[-1] == 1:  # some versions add a channel axis
                t = t[..., 0]
            out.append(t)
        return frames, out

    # The generator switches device and stream only inside fetch(), never across a ``yield``: a
    # ``with torch.cuda.stream(...)`` left open at a yield would change the consumer thread's current stream.
    free: list[torch.Tensor] = []  # the pool
    n_alloc = 0
    cv = threading.Condition()

    def give_back(buf):
        def release():
            with cv:
                free.append(buf)
                cv.notify()
        return release

    def take(n: int):
        """``n`` pool buffers (fewer only on cancel): allocated up to ``pool``, then reused as released."""
        nonlocal n_alloc
        got = []
        with cv:
            while len(got) < n:
                if free:
                    k = min(len(free), n - len(got))
                    got += free[-k:]
                    del free[-k:]
                elif n_alloc < pool:
                    k = min(pool - n_alloc, n - len(got))
                    n_alloc += k
                    got += [torch.empty((h * 3 // 2, w), dtype=torch.uint8, device=dev) for _ in range(k)]
                elif cancel.is_set():
                    break
                else:
                    cv.wait(0.05)
        return got

    def fetch(i, last_copied):
        with torch.cuda.device(dev), torch.cuda.stream(stream):
            if last_copied is not None:
                last_copied.synchronize()  # the last chunk's copies are done: its decoder buffers may be reused
            _frames, tensors = decode(i)
            if not tensors:
                return None, None
            for k, t in enumerate(tensors):
                if tuple(t.shape) != (h * 3 // 2, w):
                    raise SourceError(f"source {path}: NVDEC frame {i + k} has shape {tuple(t.shape)}, "
                                      f"expected {(h * 3 // 2, w)} (a resolution change mid-stream)")
            bufs = take(len(tensors))
            if len(bufs) < len(tensors):  # cancelled
                return None, None
            # one multi-tensor launch for the chunk (not one copy per frame), on the decoder's stream
            torch._foreach_copy_(bufs, tensors, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(stream)
        return bufs, copied

    def gen():
        i = 0
        copied = None
        while i < want and not cancel.is_set():
            bufs, copied = fetch(i, copied)
            if not bufs:
                break
            for buf in bufs:
                yield Frame(i, buf, "nv12", copied, give_back(buf))
                i += 1
        if i < want and not cancel.is_set():
            raise SourceError(f"source {path}: stopped after {i} of {declared} frames (truncated or corrupt file)")

    fps = float(getattr(meta, "average_fps", 0) or 0) or None
    return Source(path, gen(), fps, want, cancel, shape=(h, w), pixel_format="nv12")
