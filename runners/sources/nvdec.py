"""NVDEC video source (PyNvVideoCodec ``SimpleDecoder``): frames are decoded into GPU memory as NV12 and
go to the NV12 letterbox kernel as CUDA tensors. No frame crosses the host. The decoder runs in a GPU decode
host (``decodehost.DecodeHosts``), its rows shared with the runner once by CUDA IPC.

The decoder writes new frames where frames it returned lie: on its next call, and within one
``get_batch_frames(n)`` call over frames that call returns earlier (results/DECISIONS.md). So it is asked
for one frame per call, and each frame is copied, on the decoder's stream, into a row of the source's own
pool before the next call (one device-to-device copy, about 1% of the copy bandwidth at the pipeline's
rate). The stream orders each copy before the decoder's next work on it, so the host waits for the copies
once per chunk, before it lends the chunk, not once per frame: beside the run's CUDA context every wait is
a turn of the GPU's time slicing (end to end 1.31x at 768x432, 1.14x at 1080p: results/DECISIONS.md).
The decoder's returned frames are held until then. A chunk of frames goes to the runner at once; the
decoder runs ahead of the GPU by up to ``pool`` frames; a chunk's rows return to the pool once the runner
has released each of its frames (``Frame.release()``, once the GPU work reading it has completed). The
stream's rows are made once (``StreamRows.chunked``), so a looping stream's passes share them.

PyNvVideoCodec starts a decoder session lazily, in the first decode call; :func:`prime_decoder` starts it
at open instead, so a runner's streams start together.
"""
from __future__ import annotations

import threading
import time

import torch

from ...kernels._common import nvtx_range
from ..gpuinfo import nvdec_available
from .frame import Source, SourceError, check_file, looping
from .pool import ChunkStream, chunk_source

CHUNK = 16  # frames handed to the runner at once (a runner asks for its batch size)


def nv12_view(decoded) -> torch.Tensor:
    """A frame ``SimpleDecoder`` returned as a (h * 3 / 2, w) uint8 CUDA tensor: a DLPack view of the
    decoder's memory, valid until its next call (some versions add a trailing axis of 1)."""
    t = torch.from_dlpack(decoded)
    return t[..., 0] if t.ndim == 3 and t.shape[-1] == 1 else t


def open_nvdec(path: str, device=None, max_frames: int | None = None, chunk: int | None = None,
               decode_hosts=None, pool: int | None = None, start: int = 0, loop: bool = False,
               duration_s: float | None = None, fps: float | None = None, paced: bool = False) -> Source:
    """An NVDEC source for a video file or URL, decoded in a GPU host of ``decode_hosts`` (default: the
    process-wide ``decodehost.default_decode_hosts()``). ``chunk``: frames handed on at once; ``pool``: frame
    buffers of the stream's own (default 4 x chunk); ``start``: the first frame (the decoder seeks to it;
    frame indices are the video's own); ``loop``, ``duration_s``, ``fps``: as sources.looping; ``paced``:
    released at its frame rate. Raises SourceError naming the file when it cannot be opened (missing,
    empty, not a video, a codec NVDEC does not decode, ``start`` past its end)."""
    chunk = CHUNK if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk: expected >= 1, got {chunk}")
    if start < 0:
        raise ValueError(f"start: expected a frame index >= 0, got {start}")
    check_file(path)
    why = nvdec_available()
    if why:
        raise SourceError(f"source {path}: NVDEC is not available: {why}")
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if decode_hosts is None:
        from .decodehost import default_decode_hosts

        decode_hosts = default_decode_hosts()
    return decode_hosts.open(path, open_in_host, str(dev), paced, path=path, max_frames=max_frames, chunk=chunk,
                             pool=pool, start=start, loop=loop, duration_s=duration_s, fps=fps)


def open_in_host(rows, path: str, name: str, max_frames: int | None = None, chunk: int = CHUNK,
                 pool: int | None = None, start: int = 0, loop: bool = False, duration_s: float | None = None,
                 fps: float | None = None) -> Source:
    """The NVDEC opener of a decode host (decodehost.DecodeHosts.open): ``path`` decoded on the host's device
    into the stream's rows, looping, timed or with its frame rate replaced as a run asks."""
    return looping(lambda first: chunk_source(nvdec_stream(path, rows, max_frames, chunk, pool, first)), name, loop,
                   duration_s, fps, start)


def prime_decoder(dec, stream) -> float:
    """Starts ``dec``'s decoder session now: decodes frame 0, then seeks back to it, so the next
    ``get_batch_frames`` starts at frame 0 of a session already running. Returns the seconds it took."""
    t0 = time.perf_counter()
    dec.get_batch_frames(1)
    dec.seek_to_index(0)
    stream.synchronize()
    return time.perf_counter() - t0


def nvdec_stream(path: str, rows, max_frames: int | None, chunk: int, pool: int | None,
                 start: int = 0) -> ChunkStream:
    """The NVDEC decoder of ``path`` from frame ``start`` as a ChunkStream, its frames copied into the rows
    ``rows.chunked`` gives on the device of ``rows`` (a decode host's StreamRows; see the module
    docstring). open_nvdec checks the arguments."""
    pool = max(pool or 4 * chunk, chunk)
    import PyNvVideoCodec as nvc

    dev = torch.device(rows.device)
    stream = torch.cuda.Stream(dev)
    try:
        kw = {"gpu_id": dev.index, "cuda_stream": stream.cuda_stream, "use_device_memory": True,
              "output_color_type": nvc.OutputColorType.NATIVE}
        with torch.cuda.device(dev):
            dec = nvc.SimpleDecoder(path, **kw)
        rows.keep(dec)  # its teardown is the host's to time (decodehost.StreamRows.keep)
        meta = dec.get_stream_metadata()
        declared = len(dec)
    except Exception as e:  # PyNvVideoCodec raises its own exception types (unsupported codec, demux error...)
        raise SourceError(f"source {path}: NVDEC could not open it ({type(e).__name__}: {e})") from e
    if start >= declared:
        raise SourceError(f"source {path}: start frame {start} is past its last frame ({declared} frames)")
    want = declared - start if max_frames is None else min(declared - start, max_frames)
    try:
        with torch.cuda.device(dev):
            init_s = prime_decoder(dec, stream)
            if start:
                dec.seek_to_index(start)  # frame-accurate: results/DECISIONS.md
    except Exception as e:
        raise SourceError(f"source {path}: NVDEC could not decode its first frame ({type(e).__name__}: {e})") from e
    cancel = threading.Event()
    h, w = int(meta.height), int(meta.width)
    shared = rows.chunked(pool, (h * 3 // 2, w))
    buffers, frame_pool = shared.buffers, shared.pool
    stats = {"video_decode.decoder": 0.0, "video_decode.pool_wait": 0.0, "video_decode.session_init": init_s}

    def fetch(i):
        # device and stream are switched only inside this call, never across a yield of the caller
        n = min(chunk, want - i)
        with torch.cuda.device(dev), torch.cuda.stream(stream):
            t0 = time.perf_counter()
            rows = frame_pool.take(n)
            t1 = time.perf_counter()
            stats["video_decode.pool_wait"] += t1 - t0
            if len(rows) < n:  # cancelled
                frame_pool.release(rows)
                return None, None
            got, held = 0, []  # the decoder's frames, kept until the chunk's copies are done
            with nvtx_range("video_decode"):
                while got < n:
                    try:
                        frames = dec.get_batch_frames(1)
                    except Exception as e:
                        raise SourceError(f"source {path}: NVDEC failed at frame {start + i + got} "
                                          f"({type(e).__name__}: {e})") from e
                    if not frames:
                        break
                    t = nv12_view(frames[0])
                    if tuple(t.shape) != (h * 3 // 2, w):
                        raise SourceError(f"source {path}: NVDEC frame {start + i + got} has shape {tuple(t.shape)}, "
                                          f"expected {(h * 3 // 2, w)} (a resolution change mid-stream)")
                    buffers[rows[got]].copy_(t, non_blocking=True)  # on the decoder's stream: before its next call
                    held.append(frames)
                    got += 1
                stream.synchronize()  # the chunk's copies, done before its rows are lent
                del held
            stats["video_decode.decoder"] += time.perf_counter() - t1
            if got < n:
                frame_pool.release(rows[got:])
                rows = rows[:got]
            if not rows:
                return None, None
        return rows, None

    fps = float(getattr(meta, "average_fps", 0) or 0) or None
    return ChunkStream(path, buffers, fetch, want, frame_pool, cancel, (h, w), "nv12", fps, declared, stats,
                       start=start)
