"""Sources whose decoder answers in chunks into a pool of frame buffers, in this process or in a decode
process of their own.

* :class:`ChunkStream`: a decoder (``fetch(i)``: decode frames ``i..`` into free rows of ``buffers``) with its
  pool (:class:`FramePool`); ``source()`` makes it a :class:`~runners.sources.Source` whose frames are rows
  of ``buffers``, each row back in the pool once the runner releases its frame (``Frame.done()``).
* :func:`process_source`: the same decoder run in a spawned process, so its Python work (PyNvVideoCodec
  holds this process's interpreter lock for about 60 us per frame, measured by experiments/
  decode_gil_probe.py on the H100 host: 8 SimpleDecoders left the rest of the process 48% of the
  interpreter) does not compete with the runner's threads. The pool tensor is shared once at start
  (CUDA IPC, or shared memory for host tensors); after that only small messages cross: (first index,
  rows) per decoded chunk, after the decoder's copies have completed; the rows of a chunk go back once
  every frame of the chunk is released. The worker decodes only after the first frame is asked for (a
  runner's clock is not given a head start), and stays alive until every row it lent is back.
"""
from __future__ import annotations

import importlib
import threading
import time
import traceback
from dataclasses import dataclass, field

import torch

from .sources import Frame, Source, SourceError

POLL = 0.05
START_TIMEOUT_S = 300.0  # a decode process imports torch and opens its decoder before it answers
LINGER_S = 60.0  # how long a stopped decode process waits for the rows it lent to come back


class FramePool:
    """Rows ``0..size-1`` of a source's frame buffer tensor, handed out to the decoder and back as the
    consumer releases them. Thread-safe: the decode thread takes, the runner's threads give back."""

    def __init__(self, size: int, cancel: threading.Event):
        self.size, self.cancel = size, cancel
        self.free: list[int] = list(range(size))[::-1]
        self.cv = threading.Condition()

    def take(self, n: int) -> list[int]:
        """``n`` rows (fewer only when cancelled); waits for released ones while none is free."""
        got: list[int] = []
        with self.cv:
            while len(got) < n:
                if self.free:
                    k = min(len(self.free), n - len(got))
                    got += self.free[-k:]
                    del self.free[-k:]
                elif self.cancel.is_set():
                    break
                else:
                    self.cv.wait(POLL)
        return got

    def give_back(self, rows: list[int]):
        with self.cv:
            self.free += rows
            self.cv.notify_all()

    def all_free(self) -> bool:
        with self.cv:
            return len(self.free) == self.size


@dataclass
class ChunkStream:
    """A chunked decoder: ``fetch(i)`` decodes frames ``i, i+1, ...`` (as many as it gives at once) into rows
    it takes from ``pool`` and returns (rows, a CUDA event the reader waits on before reading, or None), or
    (None, None) at the end or when cancelled. ``want`` frames are expected; fewer (not cancelled) is a
    truncated stream, an error naming ``name``."""

    name: str
    buffers: torch.Tensor  # (pool size, *frame shape)
    fetch: object
    want: int
    pool: FramePool
    cancel: threading.Event
    shape: tuple  # (height, width) of the images
    pixel_format: str = "nv12"
    fps: float | None = None
    declared: int | None = None  # the container's frame count
    stats: dict = field(default_factory=dict)
    on_close: object = None

    def chunks(self):
        """Yields (first frame index, rows, ready event or None) until ``want`` frames or cancel."""
        i = 0
        while i < self.want and not self.cancel.is_set():
            rows, ready = self.fetch(i)
            if not rows:
                break
            yield i, rows, ready
            i += len(rows)
        if i < self.want and not self.cancel.is_set():
            raise SourceError(f"source {self.name}: stopped after {i} of {self.declared or self.want} frames "
                              "(truncated or corrupt file)")

    def source(self) -> Source:
        """This decoder as a Source in this process."""
        def parcels():
            for i, rows, ready in self.chunks():
                yield [Frame(i + k, self.buffers[r], self.pixel_format, ready, _Release(self.pool.give_back, [r]))
                       for k, r in enumerate(rows)]

        it = parcels()
        return Source(self.name, _flatten(it), self.fps, self.want, self.cancel, shape=self.shape,
                      pixel_format=self.pixel_format, stats=self.stats, on_close=self.on_close, chunks=it)


def _flatten(parcels):
    for p in parcels:
        yield from p


class _Release:
    """Gives ``rows`` back (``give_back(rows)``) once it has been called ``len(rows)`` times: one per frame."""

    __slots__ = ("give_back", "left", "lock", "rows")

    def __init__(self, give_back, rows: list[int]):
        self.give_back, self.rows, self.left = give_back, rows, len(rows)
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.left -= 1
            last = self.left == 0
        if last:
            self.give_back(self.rows)


def _make(factory: str, kwargs: dict) -> ChunkStream:
    mod, fn = factory.split(":")
    return getattr(importlib.import_module(mod), fn)(**kwargs)


class _SharedWorker:
    """One decode process serving many streams (``process_source(..., shared=True)``): each stream is a
    thread of that process with a pipe of its own (the same protocol as a process per stream), so the
    streams' decoders share one interpreter and one CUDA context there, apart from the runner's."""

    _lock = threading.Lock()
    _workers: dict = {}  # device -> _SharedWorker

    def __init__(self, device):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.ctl, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_shared, args=(child, device), name="posefuse-decode-shared",
                                daemon=True)
        self.proc.start()
        child.close()
        self.send_lock = threading.Lock()

    @classmethod
    def get(cls, device) -> "_SharedWorker":
        with cls._lock:
            w = cls._workers.get(device)
            if w is None or not w.proc.is_alive():
                w = cls._workers[device] = cls(device)
            return w

    def open(self, conn, factory: str, kwargs: dict):
        with self.send_lock:
            self.ctl.send(("open", conn, factory, kwargs))

    @classmethod
    def shutdown(cls):
        with cls._lock:
            workers, cls._workers = list(cls._workers.values()), {}
        for w in workers:
            try:
                w.ctl.close()  # the worker's control loop ends; its streams linger until their rows are back
            except OSError:
                pass
            w.proc.join(LINGER_S + 5)


def shutdown_shared_decoders():
    """Ends the shared decode processes (``nvdec-shared``) of this process, once their streams are over."""
    _SharedWorker.shutdown()


def _serve_shared(ctl, device):
    """The shared decode process: each ("open", conn, factory, kwargs) becomes a thread serving that stream
    (``_serve``) on its own pipe, until the control pipe closes."""
    import torch.multiprocessing  # noqa: F401

    if device is not None and device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    threads = []
    try:
        while True:
            m = ctl.recv()
            if m[0] == "open":
                t = threading.Thread(target=_serve, args=(m[1], m[2], m[3], None), daemon=True)
                t.start()
                threads.append(t)
    except (EOFError, OSError):  # the parent closed the control pipe, or is gone
        pass
    for t in threads:
        t.join(LINGER_S + 5)


def process_source(factory: str, kwargs: dict, name: str, device=None, shared: bool = False) -> Source:
    """The ChunkStream ``factory(**kwargs)`` ('module:function', importable in a fresh interpreter) run in a
    spawned decode process (see the module docstring); ``device``: the CUDA device it decodes on;
    ``shared``: in the one decode process this process keeps per device for all such streams (a thread
    each there), instead of a process of its own. Raises SourceError (the worker's message) when the
    stream cannot be opened there."""
    import multiprocessing as mp

    import torch.multiprocessing  # noqa: F401 - registers the CUDA IPC / shared-memory tensor reductions

    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    dev = None if device is None else str(device)
    if shared:
        worker = _SharedWorker.get(dev)
        proc = worker.proc
        worker.open(child, factory, kwargs)  # the connection itself goes over the control pipe
    else:
        proc = ctx.Process(target=_serve, args=(child, factory, kwargs, dev), name=f"posefuse-decode-{name}",
                           daemon=True)
        proc.start()
    child.close()
    deadline = time.perf_counter() + START_TIMEOUT_S
    while not conn.poll(POLL):
        if not proc.is_alive() or time.perf_counter() > deadline:
            proc.kill()  # a shared worker that does not answer is of no use to its other streams either
            raise SourceError(f"source {name}: the decode process exited before it opened the stream "
                              f"(exit code {proc.exitcode})")
    msg = conn.recv()
    if msg[0] == "error":
        if not shared:
            proc.join(5)
        raise SourceError(msg[1])
    _, buffers, fps, want, shape, pixel_format = msg
    send_lock = threading.Lock()
    cancel = threading.Event()
    stats: dict = {}

    def send(m) -> bool:
        with send_lock:
            try:
                conn.send(m)
                return True
            except (OSError, ValueError):  # the worker is gone (it reported why, or died)
                return False

    def parcels():
        send(("go",))
        while not cancel.is_set():
            if not conn.poll(POLL):
                if not proc.is_alive():
                    raise SourceError(f"source {name}: the decode process died (exit code {proc.exitcode})")
                continue
            m = conn.recv()
            if m[0] == "chunk":
                _, i, rows = m
                release = _Release(lambda r: send(("free", r)), rows)
                yield [Frame(i + k, buffers[r], pixel_format, None, release) for k, r in enumerate(rows)]
            elif m[0] == "end":
                stats.update(m[1])
                return
            else:  # "error"
                stats.update(m[2])
                raise SourceError(m[1])

    def close():
        cancel.set()
        send(("stop",))

    it = parcels()
    return Source(name, _flatten(it), fps, want, cancel, shape=shape, pixel_format=pixel_format, stats=stats,
                  on_close=close, chunks=it)


def _serve(conn, factory: str, kwargs: dict, device):
    """The decode process: open the stream, share its buffers, decode on demand, lend rows, take them back."""
    import torch.multiprocessing  # noqa: F401

    if device is not None and device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    try:
        cs = _make(factory, kwargs)
    except SourceError as e:
        conn.send(("error", str(e)))
        return
    except BaseException as e:  # noqa: BLE001 - reported to the parent as this source's error
        conn.send(("error", f"source {kwargs.get('path', factory)}: the decode process failed to open it "
                            f"({type(e).__name__}: {e})"))
        return
    conn.send(("meta", cs.buffers, cs.fps, cs.want, cs.shape, cs.pixel_format))
    go, stopped = threading.Event(), threading.Event()

    def listen():
        try:
            while True:
                m = conn.recv()
                if m[0] == "free":
                    cs.pool.give_back(m[1])
                elif m[0] == "go":
                    go.set()
                elif m[0] == "stop":
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
            conn.send(("chunk", i, rows))
        cs.stats["decode.process.copy_sync"] = t_sync
        conn.send(("end", cs.stats))
    except SourceError as e:
        conn.send(("error", str(e), cs.stats))
    except BaseException as e:  # noqa: BLE001
        conn.send(("error", f"source {cs.name}: the decode process failed ({type(e).__name__}: {e})\n"
                            + "".join(traceback.format_exception(e)), cs.stats))
    finally:
        deadline = time.perf_counter() + LINGER_S
        while not (stopped.is_set() and cs.pool.all_free()) and time.perf_counter() < deadline:
            time.sleep(POLL)  # the parent still reads rows lent to it: they must stay mapped
        if cs.on_close is not None:
            cs.on_close()


def simulated_stream(name: str, frames: int, fps: float, chunk: int, shape=(432, 768), pool: int | None = None,
                     truncate_at: int | None = None, mark: bool = False) -> ChunkStream:
    """A decoder stand-in (tests, experiments/host_overhead.py): ``frames`` NV12 frames of ``shape`` in host
    memory, ``chunk`` per call at ``fps`` frames/s with the interpreter lock released (as NVDEC's calls
    release it); ``mark``: each frame's first luma pixel holds its index (mod 256). ``truncate_at``: the
    stream breaks off there (a truncated file)."""
    h, w = shape
    size = max(pool or 2 * chunk, chunk)
    buffers = torch.zeros((size, h * 3 // 2, w), dtype=torch.uint8)
    cancel = threading.Event()
    fp = FramePool(size, cancel)
    stats = {"decode.nvdec.decoder": 0.0, "decode.nvdec.pool_wait": 0.0}
    end = frames if truncate_at is None else truncate_at

    def fetch(i: int):
        k = min(chunk, end - i)
        if k <= 0:
            return None, None
        t0 = time.perf_counter()
        time.sleep(k / fps)
        t1 = time.perf_counter()
        rows = fp.take(k)
        stats["decode.nvdec.decoder"] += t1 - t0
        stats["decode.nvdec.pool_wait"] += time.perf_counter() - t1
        if len(rows) < k:  # cancelled
            return None, None
        if mark:
            for j, r in enumerate(rows):
                buffers[r, 0, 0] = (i + j) % 256
        return rows, None

    return ChunkStream(name, buffers, fetch, frames, fp, cancel, (h, w), "nv12", None, frames, stats)
