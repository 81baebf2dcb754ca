"""NVDEC video source (PyNvVideoCodec ``SimpleDecoder``), in this process or a decode process: frames are decoded into GPU memory as NV12 and go
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

The interpreter lock: PyNvVideoCodec's calls hold this process's GIL for about 60 us per frame
(experiments/decode_gil_probe.py, H100 host, 8 decoders at 8,120 frames/s left a probe thread 48% of the
interpreter). ``process=True`` runs the decoder in a decode process of its own (runners/chunked.py): the
pool is shared once (CUDA IPC), the decode process waits for each chunk's copies before it hands the rows
over, and the runner's threads keep this interpreter. ``process="shared"`` runs every such stream's decoder
in one decode process per device instead. Measured (results/runners.md, 23:59, H100, 8 streams, median of
3): 768x432 6,684 fr/s shared, 6,511 in-process (6,163-6,575, p99 429 ms), 5,697 a process per stream;
1080p 3,824 shared, 3,523 in-process, 4,154 a process per stream. A CUDA context of its own costs: the
GPU time-slices between contexts, and the pipeline's graph takes 8.6 ms per batch of 64 beside one decode
context and 10.1-11.4 ms beside eight, against 7.3 ms alone (e2e_probe, H200).

Session start: PyNvVideoCodec starts a decoder session lazily in the first decode call. ``prime_decoder``
starts it at open (see there): in the first e2e trace, 5 of 8 sessions started 0.8 s late under load.

ThreadedDecoder (decoding ahead in a C++ thread) is not used: frames it returned changed while held, before
any later call could have released them (the same probe: 16 of 16 held frames changed after the next
call), so a copy queued behind other work on the GPU could read a later frame.
"""
from __future__ import annotations

import os
import threading
import time

import torch

from .chunked import ChunkStream, FramePool, process_source
from .sources import Source, SourceError

CHUNK = 16  # frames per get_batch_frames call
# The decoder's CUDA stream (PyNvVideoCodec's block-linear -> NV12 conversion kernels and the copies into the
# pool run on it) is of high priority, so the pipeline's graphs in the same context do not hold those small
# kernels back. Measured (results/e2e_probe.md, 23:46, H100, 8 in-process streams, two runs each): 768x432
# 6,894 / 6,417 fr/s high against 6,656 / 5,889 default; 1080p 3,535 / 2,548 against 3,001 / 3,586: within
# the run-to-run spread of in-process decoding, so no proven gain; kept as the safer order. 0: default.
DECODER_STREAM_PRIORITY = -1


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
               pool: int | None = None, process: bool | str = False, copy: str = "kernel") -> Source:
    """An NVDEC source for a video file (see the module docstring). ``chunk``: frames per decoder call;
    ``pool``: frame buffers of the source's own (default 4 x chunk); ``process``: True, the decoder runs in a
    decode process of its own (runners/chunked.py), its frames shared with this one; 'shared': in the one
    decode process this process keeps for all its NVDEC streams on that device (a thread each); ``copy``:
    how a chunk goes into the pool, 'kernel' (one multi-tensor copy kernel) or 'dma' (a cudaMemcpyAsync per
    frame, on the copy engines: no compute work in the decoder's context). Raises SourceError naming the
    file when it cannot be opened (missing, empty, not a video, a codec NVDEC does not decode)."""
    if chunk < 1:
        raise ValueError(f"chunk: expected >= 1, got {chunk}")
    if copy not in ("kernel", "dma"):
        raise ValueError(f"copy: expected 'kernel' or 'dma', got {copy!r}")
    if process not in (False, True, "shared"):
        raise ValueError(f"process: expected False, True or 'shared', got {process!r}")
    why = nvdec_available()
    if why:
        raise SourceError(f"source {path}: NVDEC is not available: {why}")
    if "://" not in path:
        if not os.path.exists(path):
            raise SourceError(f"source {path}: no such file or folder")
        if os.path.getsize(path) == 0:
            raise SourceError(f"source {path}: the file is empty")
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    kw = {"path": path, "device": str(dev), "max_frames": max_frames, "chunk": chunk, "pool": pool, "copy": copy}
    if process:
        return process_source("runners.nvdec:nvdec_stream", kw, path, dev, shared=process == "shared")
    return nvdec_stream(**kw).source()


def prime_decoder(dec, stream) -> float:
    """Starts ``dec``'s decoder session now: decodes frame 0, then seeks back to it, so the next
    ``get_batch_frames`` starts at frame 0 of a session already running. Returns the seconds it took.

    PyNvVideoCodec creates a decoder session lazily, in the first decode call (NVIDIA's decode_perf sample
    subtracts ``GetSessionInitTime`` for that reason). Under a busy GPU the sessions of 8 streams started
    over 0.9 s: 3 decoders began at 0.38-0.54 s into an e2e run and 5 at 1.12-1.28 s (CUDA trace of the
    runner, experiments/e2e_probe.py, H100), while the pipeline waited for their frames. Opened this way,
    the session starts with the source, before a runner's clock."""
    t0 = time.perf_counter()
    dec.get_batch_frames(1)
    dec.seek_to_index(0)
    stream.synchronize()
    return time.perf_counter() - t0


def nvdec_stream(path: str, device: str, max_frames: int | None, chunk: int, pool: int | None,
                 copy: str = "kernel") -> ChunkStream:
    """The NVDEC decoder of ``path`` as a ChunkStream (frames copied into its own pool; see the module
    docstring). open_nvdec checks the arguments."""
    pool = max(pool or 4 * chunk, chunk)
    import PyNvVideoCodec as nvc

    dev = torch.device(device)
    stream = torch.cuda.Stream(dev, priority=DECODER_STREAM_PRIORITY)
    try:
        kw = {"gpu_id": dev.index, "cuda_stream": stream.cuda_stream, "use_device_memory": True,
              "output_color_type": nvc.OutputColorType.NATIVE}
        with torch.cuda.device(dev):
            dec = nvc.SimpleDecoder(path, **kw)
        meta = dec.get_stream_metadata()
        declared = len(dec)
    except Exception as e:  # PyNvVideoCodec raises its own exception types (unsupported codec, demux error...)
        raise SourceError(f"source {path}: NVDEC could not open it ({type(e).__name__}: {e})") from e
    want = declared if max_frames is None else min(declared, max_frames)
    try:
        with torch.cuda.device(dev):
            init_s = prime_decoder(dec, stream)
    except Exception as e:
        raise SourceError(f"source {path}: NVDEC could not decode its first frame ({type(e).__name__}: {e})") from e
    cancel = threading.Event()
    h, w = int(meta.height), int(meta.width)
    buffers = torch.empty((pool, h * 3 // 2, w), dtype=torch.uint8, device=dev)
    frame_pool = FramePool(pool, cancel)

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
    last = [None]  # the last chunk's copy event
    stats = {"decode.nvdec.decoder": 0.0, "decode.nvdec.pool_wait": 0.0, "decode.nvdec.copy": 0.0,
             "open.nvdec.session_init": init_s}

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
            rows = frame_pool.take(len(tensors))
            t2 = time.perf_counter()
            stats["decode.nvdec.pool_wait"] += t2 - t1
            if len(rows) < len(tensors):  # cancelled
                return None, None
            if copy == "dma":  # cudaMemcpyAsync per frame (contiguous, same dtype): the copy engines
                for r, t in zip(rows, tensors):
                    buffers[r].copy_(t, non_blocking=True)
            else:  # one multi-tensor launch for the chunk (not one copy per frame), on the decoder's stream
                torch._foreach_copy_([buffers[r] for r in rows], tensors, non_blocking=True)
            copied = last[0] = torch.cuda.Event()
            copied.record(stream)
            stats["decode.nvdec.copy"] += time.perf_counter() - t2
        return rows, copied

    fps = float(getattr(meta, "average_fps", 0) or 0) or None
    return ChunkStream(path, buffers, fetch, want, frame_pool, cancel, (h, w), "nv12", fps, declared, stats)
