"""Decode processes: chunked decoders (pool.ChunkStream) run in spawned processes, each serving a number
of streams, so their Python work leaves the runner's interpreter (PyNvVideoCodec holds its caller's GIL
for about 60 us per frame: results/DECISIONS.md).

Each stream is a thread of its decode process with a pipe of its own. The stream's pool tensor is shared
once at open (CUDA IPC, or shared memory for host tensors); after that only small messages cross: a
:class:`Chunk` (first index, rows) per decoded chunk, after the decoder's copies have completed, and a
:class:`Free` for the rows of a chunk once every frame of it is released. A stream decodes only after the
runner asks for its first frame (:class:`Go`), so a runner's clock gets no head start, and its thread stays
until every row it lent is back. ``DecodeProcesses(per_process)`` puts up to ``per_process`` streams in a
process (0: all of them in one process per device): each process is a CUDA context of its own, and the GPU
time-slices between contexts, so fewer processes leave the pipeline more of the GPU.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from .frame import Frame, Source, SourceError
from .pool import POLL, ChunkStream, Release

START_TIMEOUT_S = 300.0  # a decode process (NVDEC or host) imports torch and opens its first stream before it answers
LINGER_S = 60.0  # how long a stopped stream waits for the rows it lent to come back


# Messages. Parent -> decode process (control pipe): OpenStream. Parent -> stream: Go, Free, Stop.
# Stream -> parent: Opened, then Chunk..., then End or StreamFailed.
@dataclass(frozen=True)
class OpenStream:
    conn: object  # the stream's end of its pipe
    factory: Callable[..., ChunkStream]
    kwargs: dict


@dataclass(frozen=True)
class Opened:
    buffers: object
    fps: float | None
    want: int
    shape: tuple
    pixel_format: str


@dataclass(frozen=True)
class Chunk:
    first: int
    rows: list


@dataclass(frozen=True)
class End:
    stats: dict


@dataclass(frozen=True)
class StreamFailed:
    message: str
    stats: dict


@dataclass(frozen=True)
class Go:
    pass


@dataclass(frozen=True)
class Free:
    rows: list


@dataclass(frozen=True)
class Stop:
    pass


class _Process:
    """One decode process and the number of streams it was given."""

    def __init__(self, device: str | None):
        ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
        self.ctl, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_process, args=(child, device), name="posefuse-decode", daemon=True)
        self.proc.start()
        child.close()
        self.streams = 0
        self.lock = threading.Lock()

    def open(self, conn, factory, kwargs):
        with self.lock:
            self.ctl.send(OpenStream(conn, factory, kwargs))
            self.streams += 1

    def close(self):
        try:
            self.ctl.close()  # the control loop ends; its streams stay until their rows are back
        except OSError:
            pass


class DecodeProcesses:
    """The decode processes of this process: per device, each serving up to ``per_process`` streams
    (0: every stream of that device in one process)."""

    def __init__(self, per_process: int = 0):
        if per_process < 0:
            raise ValueError(f"per_process: expected >= 0 streams per decode process (0: all), got {per_process}")
        self.per_process = per_process
        self._procs: dict = {}  # device -> [_Process]
        self._lock = threading.Lock()

    def _process(self, device: str | None, new_stream: bool = True) -> _Process:
        with self._lock:
            procs = self._procs.setdefault(device, [])
            procs[:] = [p for p in procs if p.proc.is_alive()]
            for p in procs:
                if not self.per_process or p.streams < self.per_process or not new_stream:
                    return p
            p = _Process(device)
            procs.append(p)
            return p

    def start(self, device=None):
        """Start a decode process for ``device`` now, if none is up (it imports torch and creates its CUDA
        context, seconds, while the caller goes on); open() then uses it."""
        self._process(None if device is None else str(device), new_stream=False)

    def open(self, factory: Callable[..., ChunkStream], kwargs: dict, name: str, device=None) -> Source:
        """The ChunkStream ``factory(**kwargs)`` (a module-level function, so the decode process can import
        it) decoded in one of these processes; ``device``: the CUDA device it decodes on. Raises SourceError
        (the decode process's message) when the stream cannot be opened there."""
        import torch.multiprocessing  # noqa: F401 - registers the CUDA IPC / shared-memory tensor reductions

        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe()
        dev = None if device is None else str(device)
        worker = self._process(dev)
        worker.open(child, factory, kwargs)  # the connection itself goes over the control pipe
        child.close()
        proc = worker.proc
        deadline = time.perf_counter() + START_TIMEOUT_S
        while not conn.poll(POLL):
            if not proc.is_alive() or time.perf_counter() > deadline:
                proc.kill()  # a decode process that does not answer is of no use to its other streams either
                raise SourceError(f"source {name}: the decode process exited before it opened the stream "
                                  f"(exit code {proc.exitcode})")
        msg = conn.recv()
        if isinstance(msg, StreamFailed):
            raise SourceError(msg.message)
        return _parent_source(name, conn, proc, msg)

    def close(self):
        """Ends the decode processes once their streams are over (each waits for its lent rows)."""
        with self._lock:
            procs, self._procs = [p for ps in self._procs.values() for p in ps], {}
        for p in procs:
            p.close()
        for p in procs:
            p.proc.join(LINGER_S + 5)

    def alive(self) -> int:
        with self._lock:
            return sum(p.proc.is_alive() for ps in self._procs.values() for p in ps)


_DEFAULT: DecodeProcesses | None = None


def default_decode_processes() -> DecodeProcesses:
    """The decode processes sources use when none are given: all streams of a device in one process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = DecodeProcesses(0)
        atexit.register(_DEFAULT.close)
    return _DEFAULT


def _parent_source(name: str, conn, proc, meta: Opened) -> Source:
    """This process's side of a stream: frames are rows of the shared buffers, released back as Free."""
    send_lock = threading.Lock()
    cancel = threading.Event()
    stats: dict = {}
    fps = meta.fps

    def send(m) -> bool:
        with send_lock:
            try:
                conn.send(m)
                return True
            except (OSError, ValueError):  # the decode process is gone (it reported why, or died)
                return False

    def parcels():
        send(Go())
        while not cancel.is_set():
            if not conn.poll(POLL):
                if not proc.is_alive():
                    raise SourceError(f"source {name}: the decode process died (exit code {proc.exitcode})")
                continue
            m = conn.recv()
            if isinstance(m, Chunk):
                release = Release(lambda r: send(Free(r)), m.rows)
                yield [Frame(m.first + k, meta.buffers[r], meta.pixel_format, (m.first + k) / fps if fps else None,
                             on_release=release) for k, r in enumerate(m.rows)]
            elif isinstance(m, End):
                stats.update(m.stats)
                return
            else:  # StreamFailed
                stats.update(m.stats)
                raise SourceError(m.message)

    def close():
        cancel.set()
        send(Stop())

    return Source(name, parcels(), fps, meta.want, meta.shape, meta.pixel_format, stats, cancel, close)


def _serve_process(ctl, device):
    """A decode process: each OpenStream becomes a thread serving that stream on its own pipe, until the
    control pipe closes."""
    import torch

    if device is not None and device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    threads = []
    try:
        while True:
            m = ctl.recv()
            t = threading.Thread(target=_serve_stream, args=(m.conn, m.factory, m.kwargs), daemon=True)
            t.start()
            threads.append(t)
    except (EOFError, OSError):  # the parent closed the control pipe, or is gone
        pass
    for t in threads:
        t.join(LINGER_S + 5)
    # Its streams are answered and it writes nothing: the interpreter's and CUDA's teardown (most of a
    # second, which the parent's close waits for) has nothing to do here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve_stream(conn, factory, kwargs: dict):
    """One stream in a decode process: open it, share its buffers, decode on demand, lend rows, take them back."""
    import torch.multiprocessing  # noqa: F401

    try:
        cs = factory(**kwargs)
    except SourceError as e:
        conn.send(StreamFailed(str(e), {}))
        return
    except BaseException as e:  # noqa: BLE001 - reported to the parent as this source's error
        conn.send(StreamFailed(f"source {kwargs.get('path', kwargs.get('name'))}: the decode process failed to open it "
                         f"({type(e).__name__}: {e})", {}))
        return
    conn.send(Opened(cs.buffers, cs.fps, cs.want, cs.shape, cs.pixel_format))
    go, stopped = threading.Event(), threading.Event()

    def listen():
        try:
            while True:
                m = conn.recv()
                if isinstance(m, Free):
                    cs.pool.release(m.rows)
                elif isinstance(m, Go):
                    go.set()
                elif isinstance(m, Stop):
                    stopped.set()
                    cs.cancel.set()
                    go.set()
        except (EOFError, OSError):  # the parent is gone
            stopped.set()
            cs.cancel.set()
            go.set()

    threading.Thread(target=listen, daemon=True).start()
    go.wait()
    try:
        t_sync = 0.0
        for i, rows, ready in cs.chunks():
            if ready is not None:
                t0 = time.perf_counter()
                ready.synchronize()  # the rows are complete before the parent may read them
                t_sync += time.perf_counter() - t0
            conn.send(Chunk(i, rows))
        cs.stats["video_decode.copy_sync"] = t_sync
        conn.send(End(cs.stats))
    except (BrokenPipeError, ConnectionResetError):  # the parent closed the stream (its run ended): nobody to tell
        stopped.set()
    except SourceError as e:
        conn.send(StreamFailed(str(e), cs.stats))
    except BaseException as e:  # noqa: BLE001
        conn.send(StreamFailed(f"source {cs.name}: the decode process failed ({type(e).__name__}: {e})\n"
                         + "".join(traceback.format_exception(e)), cs.stats))
    finally:
        deadline = time.perf_counter() + LINGER_S
        while not (stopped.is_set() and cs.pool.all_free()) and time.perf_counter() < deadline:
            time.sleep(POLL)  # the parent still reads rows lent to it: they must stay mapped
        if cs.on_close is not None:
            cs.on_close()
