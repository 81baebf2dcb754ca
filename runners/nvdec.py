"""NVDEC video source (PyNvVideoCodec ``SimpleDecoder``): frames are decoded into GPU memory as NV12 and go
to the NV12 letterbox kernel in place (DLPack, no copy).

Buffer reuse: the decoder owns the frames' memory and may reuse it once it is asked for more frames, so
the source hands out frames in chunks (``get_batch_frames(chunk)``) and asks for the next chunk only after
every frame of the previous one was released (``Frame.done()``, called by the runner once the GPU work that
reads the frame has completed) or dropped. ``depth`` chunks may be outstanding at once only where the
decoder is known not to reuse them; the default, 1, is always safe.

Streams: the decoder runs on a CUDA stream of our own; after each chunk an event is recorded on it, and the
consumer stream waits on that event (``Frame.ready``) before its kernels read the frames.
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


def open_nvdec(path: str, device=None, max_frames: int | None = None, chunk: int = CHUNK, depth: int = 1) -> Source:
    """An NVDEC source for a video file (see the module docstring). Raises SourceError naming the file when
    it cannot be opened (missing, empty, not a video, a codec NVDEC does not decode)."""
    why = nvdec_available()
    if why:
        raise SourceError(f"source {path}: NVDEC is not available: {why}")
    if "://" not in path:
        if not os.path.exists(path):
            raise SourceError(f"source {path}: no such file or folder")
        if os.path.getsize(path) == 0:
            raise SourceError(f"source {path}: the file is empty")
    if chunk < 1 or depth < 1:
        raise ValueError(f"chunk/depth: expected >= 1, got {chunk}, {depth}")
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

    def gen():
        leases: list[_Lease] = []
        i = 0
        with torch.cuda.device(dev):
            while i < want and not cancel.is_set():
                while len(leases) >= depth:  # the decoder may reuse these buffers: wait until they are free
                    if not leases[0].wait(cancel):
                        return
                    leases.pop(0)
                try:
                    frames = dec.get_batch_frames(min(chunk, want - i))
                except Exception as e:
                    raise SourceError(f"source {path}: NVDEC failed at frame {i} ({type(e).__name__}: {e})") from e
                if not frames:
                    break
                ready = torch.cuda.Event()
                ready.record(stream)  # everything the decoder queued for this chunk
                lease = _Lease(len(frames))
                lease.owners = frames  # the decoder's frame objects stay alive until the chunk is released
                leases.append(lease)
                for fr in frames:
                    t = torch.from_dlpack(fr)
                    if t.ndim == 3 and t.shape[-1] == 1:  # some versions add a channel axis
                        t = t[..., 0]
                    yield Frame(i, t, "nv12", ready, lease.release)
                    i += 1
        if i < want and not cancel.is_set():
            raise SourceError(f"source {path}: stopped after {i} of {declared} frames (truncated or corrupt file)")

    fps = float(getattr(meta, "average_fps", 0) or 0) or None
    return Source(path, gen(), fps, want, cancel, shape=(int(meta.height), int(meta.width)), pixel_format="nv12")

