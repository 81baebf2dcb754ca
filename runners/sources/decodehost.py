"""Decode hosts: spawned processes that read a run's streams, each serving many streams over one pipe, for
every decoder: NVDEC into rows of device memory shared once by CUDA IPC, OpenCV into rows of shared host
memory that this process registers as pinned (a CUDA run), so the pipeline reads the frames where the
decoder wrote them.

A run's threads then do no decoding: in the runner's interpreter a frame costs its share of one message per
decode-host pass, not a reader's release and re-take of the interpreter lock around each decoder call (16
readers serving 150 streams held the batcher up; PyNvVideoCodec holds its caller's lock ~60 us a frame:
results/DECISIONS.md). A stream's rows are made once per frame shape and announced to this process
(:class:`NewRows`: a memfd; :class:`DeviceRows`: a CUDA tensor); a frame is then a small message naming
its row, and the row goes back when the run releases the frame. A stream waits for a free row before it
reads (memory stays bounded; a camera's frames wait in its socket); an OpenCV frame of another shape (a
camera that changed resolution) travels in its message instead.

One duplex pipe per process; the messages are the dataclasses below, without slots: a slots dataclass
pickles through Python-level ``__getstate__``, ~1.3x a plain one's cost where a frame's message goes 6,000
times a second (results/DECISIONS.md). Parent -> process: OpenStream, Go (the
runner's first read: a stream reads nothing before it, so a run's clock gets no head start), Release (rows
back), StopStream, CloseProcess. Process -> parent: lists of Opened, NewRows, DeviceRows, HostFrame, Counts,
Ended and Closed; a list carries what a process's streams read since the last one. A stream's rows are unmapped
on both sides once it has ended and every row it lent is back. Pacing lives here, for every decoder: a paced
stream's files are released at their frame rate in the process by its pacer thread (:class:`_Pacer`;
``arrived``: the frame's due time) while the stream's reader decodes ahead into its free rows, cameras as
they are read (``arrived``: the read's end).

A stream is opened in its process by an opener, a module-level function called there as
``opener(rows, **kwargs) -> Source`` whose frames lie in rows the stream's :class:`StreamRows` made:
:func:`open_cpu_in_host` (OpenCV), ``nvdec.open_in_host`` (NVDEC), ``pool.simulated_in_host`` (a decoder
stand-in for the CPU tests). NVDEC streams of a device share GPU processes (``gpu_streams_per_process``
streams each, 0: all in one: each process is a CUDA context, and the GPU time-slices between contexts);
OpenCV streams spread over up to ``processes`` CPU processes.
"""
from __future__ import annotations

import collections
import contextlib
import heapq
import math
import mmap
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial

from multiprocessing.reduction import DupFd

from ..config import GPU_HOSTS, GPU_STREAMS_PER_HOST
from .frame import Feed, Frame, Source, SourceError, looping
from .pool import POLL, FramePool, HostRows

ROWS = 8  # OpenCV rows per stream and shape: a 30 fr/s stream at 50 ms holds 2-3 in flight, one read ahead
START_TIMEOUT_S = 300.0  # a decode host imports torch and opens its first stream before it answers
END_WAIT_S = 5.0  # how long close() waits for closed streams to end (a camera's read ends within its STALL_S)
TICK_S = 0.002  # a frame waits at most this long for its message (counted in its latency: 50 ms budget)
# An ended stream's decoder waits at most this long for its host's other streams to stop reading, and as long
# again for the host's outbox to send what they lent, before its teardown (StreamRows.keep): the streams of one
# job end within it; a host that keeps reading (a live run) holds an ended decoder's GPU memory about this long
TEARDOWN_WAIT_S = 2.0
RETIRE_GAP_S = 0.1  # one retired stream's rows dropped per this gap while a run goes on (results/DECISIONS.md)
# While a run's threads are up, the GIL changes hands every 1 ms, not every 5 ms (Python's default), so one
# busy thread holds the others, and every frame in flight, for at most that long (results/DECISIONS.md);
# the run (assembly.run_settings) and its decode hosts both use it
SWITCH_INTERVAL_S = 0.001
BLOCKED = "network.blocked_s"  # seconds a camera waited for the run to release a row (backpressure, not a stall)
COUNTS_EVERY_S = 1.0  # a running stream's counts reach the run at most this often (a service's live view of it)
PER_PROCESS = 4  # cores per CPU decode host: HOST_PROCESSES = cores // PER_PROCESS
HOST_PROCESSES = max(1, (os.cpu_count() or 1) // PER_PROCESS)


@dataclass
class OpenStream:
    """Open a stream: ``opener(rows, **kwargs)`` in the process (the spec, looping, limits, its name);
    ``paced``: its frames are released at its frame rate."""
    sid: int
    opener: object
    kwargs: dict
    paced: bool


@dataclass
class Go:
    """The runner reads the stream for the first time: it starts reading."""
    sid: int


@dataclass
class Release:
    """Rows the run has finished with: [(sid, key, row)]."""
    rows: list


@dataclass
class StopStream:
    """The stream stops reading and ends (the run closed its Source)."""
    sid: int


@dataclass
class CloseProcess:
    """The process ends (once its streams have)."""


@dataclass
class Opened:
    """A stream opened: what its Source says of itself."""
    sid: int
    fps: float | None
    count: int | None
    shape: tuple | None
    camera: bool
    pixel_format: str


@dataclass
class NewRows:
    """A stream's ``n`` rows for frames of ``shape`` (of ``pixel_format``): a memfd the parent maps (and
    registers as pinned) as ``key``."""
    sid: int
    key: int
    fd: object  # multiprocessing.reduction.DupFd
    shape: tuple
    n: int
    pixel_format: str


@dataclass
class DeviceRows:
    """A stream's rows in device memory (``buffers`` (n, *shape), a CUDA tensor: its IPC handle), as ``key``."""
    sid: int
    key: int
    buffers: object
    pixel_format: str


@dataclass
class HostFrame:
    """A frame: in row ``image`` of the stream's rows ``key``, or (key None: a frame of another shape) the
    image itself; ``arrived``: its read's end, or its due time when paced."""
    sid: int
    index: int
    key: int | None
    image: object
    timestamp: float | None
    restart: bool
    arrived: float


@dataclass
class Counts:
    """What a stream's source has counted so far (a camera's reconnects, its gaps, the seconds the run held it
    back), sent while it runs when they changed, at most every COUNTS_EVERY_S."""
    sid: int
    counts: dict


@dataclass
class Ended:
    """A stream's end: what its source counted, its stats, and its error (None: it ended well)."""
    sid: int
    counts: dict
    stats: dict
    error: str | None


@dataclass
class Closed:
    """The process's last message (after CloseProcess): its streams are closed and it exits now, its output
    let go; its exit (the CUDA context's teardown) is not waited for."""


def _shared_rows(shape: tuple, n: int, fd: int | None = None) -> tuple:
    """(fd, an (n, *shape) uint8 tensor over shared memory): a new memfd (``fd`` None; the caller closes
    it), or the one ``fd`` names, mapped here. A memfd, not /dev/shm: a container's /dev/shm is often
    64 MB, and rows take ROWS frames per stream. Every page is touched here (written in a new memfd, read
    in a mapped one), so the rows are resident in each process from the start: a stream uses its last
    freed row first, and the rows a burst first reaches later would add to the process's RSS then, a
    staircase a soak reads as growth (results/DECISIONS.md)."""
    import numpy as np
    import torch

    nbytes = n * int(np.prod(shape))
    new = fd is None
    if new:
        fd = os.memfd_create("posefuse-rows")
        os.ftruncate(fd, nbytes)
    mem = mmap.mmap(fd, nbytes)  # the mapping outlives the fd; the tensor keeps it
    t = torch.frombuffer(mem, dtype=torch.uint8)
    if new:
        t.zero_()
    else:
        int(t[::mmap.PAGESIZE].sum())  # one byte a page: each page mapped here
    return fd, t.view(n, *shape)


def _register(t) -> bool:
    """Pin ``t``'s memory for the device's copy engine (cudaHostRegister); False where no CUDA is up."""
    import torch

    if not torch.cuda.is_available():
        return False
    # cudaHostRegisterPortable: pinned for every context; cudart() brings CUDA up if the run has not yet
    err = torch.cuda.cudart().cudaHostRegister(t.data_ptr(), t.numel() * t.element_size(), 1)
    if int(err) != 0:
        raise SourceError(f"decode host: cudaHostRegister of {t.numel() >> 20} MiB failed (error {int(err)})")
    return True


def _unregister(t):
    import torch

    torch.cuda.cudart().cudaHostUnregister(t.data_ptr())


def _drop(rows: tuple):
    """A retired entry of _ParentStream.rows: unregistered where pinned; the caller drops the last reference."""
    if rows[2]:
        _unregister(rows[0])


class _ParentStream:
    """This process's side of one stream: its rows as mapped here, and where its parcels go (the run's Feed
    once it pushes, its queue until then)."""

    def __init__(self, proc: "_HostProcess", sid: int, name: str):
        self.proc, self.sid, self.name = proc, sid, name
        self.opened = threading.Event()
        self.meta: Opened | None = None
        self.error: str | None = None
        self.rows: dict = {}  # key -> (tensor, [rows], pinned, [(row tensor, (h, w))]: each checked once, format)
        self.lent = 0  # frames handed on and not released
        self.ended = False
        self.lock = threading.Lock()
        self.counts: dict = {}
        self.stats: dict = {}
        self.queue: collections.deque = collections.deque()  # parcels while nobody pushes (a Source iterated)
        self.cv = threading.Condition()
        self.src: Source | None = None  # the Source open() made of it
        self.feed: Feed | None = None  # the runner's intake, once it pushes

    def push(self, feed: Feed):
        """Source.push: the parcels queued so far go to ``feed`` now, under the lock, so none handed on
        later overtakes them; from here the receiving thread hands them on itself."""
        with self.cv:
            self.feed = feed
            for parcel, error in self.queue:
                if parcel is None:
                    feed.end(self.src, error)
                else:
                    feed.hand([(self.src, parcel)])
            self.queue.clear()
        self.proc.send(Go(self.sid))

    def queued(self, parcel, error=None) -> Feed | None:
        """The stream's feed, or (none yet) None with ``parcel`` (None: its end) queued."""
        with self.cv:
            if self.feed is None:
                self.queue.append((parcel, error))
                self.cv.notify()
            return self.feed

    def parcels(self, cancel: threading.Event):
        """The parcels for a consumer that iterates (no push)."""
        self.proc.send(Go(self.sid))
        while True:
            with self.cv:
                while not self.queue:
                    if cancel.is_set():
                        return
                    self.cv.wait(POLL)
                parcel, error = self.queue.popleft()
            if parcel is None:
                if error:
                    raise SourceError(error)
                return
            yield parcel

    def release(self, key, row):
        self.proc.release(self.sid, key, row)
        with self.lock:
            self.lent -= 1
            done = self.ended and self.lent == 0
        if done:
            self.unmap()

    def end(self, error: str | None):
        """The stream ended (``error``: why it failed, or None): its end goes after its last parcel, and its
        rows go once every frame it lent is back."""
        self.error = error
        self.opened.set()
        with self.lock:
            self.ended = True
            done = self.lent == 0
        if done:
            self.unmap()
        feed = self.queued(None, error)
        if feed is not None:
            feed.end(self.src, error)

    def unmap(self):
        """The stream's rows go: pinned host rows (cudaHostUnregister) and device rows (the close of their IPC
        mapping, the last reference here) on the hub's sending thread, not here (the result or receiving
        thread, whose every stream waits meanwhile: when a run's streams end together, each one's
        cudaHostUnregister would hold up the last frames of all; device rows: the same predicted, not
        measured)."""
        rows, self.rows = self.rows, {}
        slow = [r for r in rows.values() if r[2] or r[0].is_cuda]
        if slow:
            self.proc.hub.retire(slow)


class _HostProcess:
    """One decode host: its pipe and its streams; ``device``: the CUDA device its NVDEC streams decode on
    (None: a CPU host). Its messages are taken by the receiving thread of its DecodeHosts, which serves
    every process."""

    def __init__(self, device: str | None, pin: bool, hub: "DecodeHosts"):
        ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, device), name="posefuse-decode-host", daemon=True)
        self.proc.start()
        child.close()
        self.device, self.pin, self.hub = device, pin, hub
        self.streams: dict[int, _ParentStream] = {}
        self.send_lock = threading.Lock()
        # a GPU host opens one decoder at a time (decoder sessions opened side by side in one process have
        # not run); GPU hosts open theirs side by side
        self.opening = threading.Lock() if device is not None else contextlib.nullcontext()
        self.gone = threading.Event()  # its pipe ended, or it said Closed: its streams have ended
        self.said_closed = False  # its last message came: it exits on its own

    def send(self, m) -> bool:
        with self.send_lock:
            try:
                self.conn.send(m)
                return True
            except (OSError, ValueError):  # the process is gone: its streams end through the receiver
                return False

    def release(self, sid, key, row):
        self.hub.release(self, sid, key, row)

    def take(self, msg):
        """One message of the process: a list of what its streams read since the last one. The frames of
        the streams a runner pushes go to its feed as one hand-off, before the streams' ends."""
        parcels: dict = {}  # _ParentStream -> [Frame]
        lent: dict = {}  # _ParentStream -> frames of its rows among them
        ended = []
        for m in msg:
            if isinstance(m, Closed):
                self.said_closed = True
                continue
            st = self.streams.get(m.sid)
            if st is None:
                continue
            if isinstance(m, HostFrame):  # the frame: its row as mapped here, or the image the message carries
                key, row = m.key, m.image
                if key is None:
                    f = Frame(m.index, row, timestamp=m.timestamp, restart=m.restart, arrived=m.arrived)
                else:
                    _, arrays, pinned, checked, fmt = st.rows[key]
                    f = Frame(m.index, arrays[row], fmt, timestamp=m.timestamp, restart=m.restart, arrived=m.arrived,
                              pinned=pinned, on_release=partial(st.release, key, row), checked=checked[row])
                    lent[st] = lent.get(st, 0) + 1
                parcels.setdefault(st, []).append(f)
            elif isinstance(m, NewRows):
                fd = m.fd.detach()
                try:
                    _, t = _shared_rows(m.shape, m.n, fd)
                finally:
                    os.close(fd)
                pinned = self.pin and _register(t)
                rows = list(t.numpy()) if m.pixel_format == "bgr" else list(t.unbind(0))
                st.rows[m.key] = (t, rows, pinned, _checked(t, m.pixel_format), m.pixel_format)
            elif isinstance(m, DeviceRows):
                t = m.buffers
                st.rows[m.key] = (t, list(t.unbind(0)), False, _checked(t, m.pixel_format), m.pixel_format)
            elif isinstance(m, Opened):
                st.meta = m
                st.opened.set()
            elif isinstance(m, Counts):
                st.counts.update(m.counts)
            elif isinstance(m, Ended):
                del self.streams[m.sid]
                ended.append((st, m))
        for st, n in lent.items():  # counted before any of them can be released
            with st.lock:
                st.lent += n
        feeds: dict = {}  # the feed -> [(source, frames)] of its streams; a stream without one queues them
        for st, frames in parcels.items():
            feed = st.queued(frames)
            if feed is not None:
                feeds.setdefault(feed, []).append((st.src, frames))
        for feed, group in feeds.items():
            feed.hand(group)
        for st, m in ended:  # after their last frames
            st.counts.update(m.counts)
            st.stats.update(m.stats)
            st.end(m.error)

    def end(self, why: str | None):
        """The pipe ended (the process ended or died; ``why``: a message this side could not take) or the
        process said Closed (it exits on its own, not waited for): the streams still open fail with it."""
        with self.send_lock:
            self.conn.close()
        if why is None and not self.said_closed:
            self.proc.join(1.0)  # its pipe closed as it exited: the exit code says how (-9: killed)
        code = self.proc.exitcode
        streams, self.streams = list(self.streams.values()), {}
        for st in streams:
            st.end(f"source {st.name}: its decode host closed before the stream ended" if self.said_closed
                   else f"source {st.name}: the decode host ended (exit code {code})" if why is None
                   else f"source {st.name}: its decode host's message failed here ({why})")
        self.gone.set()

    def close(self):
        """The process ends (its pipe is closed once the receiver has seen the process's end)."""
        self.send(CloseProcess())  # a close() here would not wake the receiver's blocked read


def _checked(t, pixel_format: str) -> list:
    """[(row tensor, (h, w))] of rows ``t`` (n, *shape): each row checked once, when it is mapped."""
    shape = tuple(t.shape[1:])
    hw = (shape[0] * 2 // 3, shape[1]) if pixel_format == "nv12" else shape[:2]
    return [(r, hw) for r in t.unbind(0)]


class DecodeHosts:
    """A run's decode hosts, started as streams open: CPU hosts for OpenCV streams (up to ``processes``:
    a new one for each stream until all are up, then the least loaded serves it) and, per device, hosts
    for the chunked decoders that decode there (NVDEC on a CUDA device; ``gpu_streams_per_process`` streams
    each, 0: one host for all: the hosts' Python work and the decoders' waits take about two cores a host;
    at most ``gpu_processes`` hosts per device, the least loaded serving the streams beyond).
    ``pin``: host rows are registered as pinned (a CUDA run). One thread here receives every process's
    messages and one sends the rows released here back, in groups (and unregisters the pinned rows of
    ended streams): the run's other threads contend with two threads for its interpreter lock, however
    many processes decode; a message's frames go to the run in one hand-off (Feed.hand), on the
    receiving thread. A stream's rows are mapped (and registered) on the receiving thread as they come (at
    the stream's open), so a stream added to a running run holds the others' frames up while its rows'
    pages are pinned."""

    def __init__(self, pin: bool = False, processes: int = HOST_PROCESSES,
                 gpu_streams_per_process: int = GPU_STREAMS_PER_HOST, gpu_processes: int = GPU_HOSTS):
        if processes < 1:
            raise ValueError(f"processes: expected >= 1 decode hosts, got {processes}")
        if gpu_streams_per_process < 0:
            raise ValueError(f"gpu_streams_per_process: expected >= 0 streams per GPU decode host (0: all), "
                             f"got {gpu_streams_per_process}")
        if gpu_processes < 1:
            raise ValueError(f"gpu_processes: expected >= 1 decode hosts per GPU, got {gpu_processes}")
        self.pin, self.processes, self.gpu_streams_per_process = pin, processes, gpu_streams_per_process
        self.gpu_processes = gpu_processes
        self._procs: list[_HostProcess] = []
        self._receiving: list[_HostProcess] = []  # the processes whose pipes are open (the receiver's)
        self._lock = threading.Lock()
        self._sid = 0
        self._frees: dict = {}  # process -> [(sid, key, row)] released here, not yet sent
        self._retired: list = []  # pinned rows of ended streams, not yet unregistered
        self._free_lock = threading.Lock()
        self._free_wake = threading.Event()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    def _spawn(self, device: str | None) -> _HostProcess:
        """A new host (under the lock); the receiving and sending threads start with the first."""
        p = _HostProcess(device, self.pin, self)
        self._procs.append(p)
        self._receiving.append(p)
        if not self._threads:
            self._threads = [threading.Thread(target=self._receive, name="posefuse-host-recv", daemon=True),
                             threading.Thread(target=self._send_releases, name="posefuse-host-release",
                                              daemon=True)]
            for t in self._threads:
                t.start()
        return p

    def start(self, device: str | None = None, streams: int = 1):
        """Starts the hosts that ``streams`` streams on ``device`` (None: OpenCV streams) will use, side by
        side, now (each imports torch, seconds, while the caller goes on); open() then uses them."""
        if device is None:
            want = min(self.processes, streams)
        else:
            per = self.gpu_streams_per_process
            want = min(math.ceil(streams / per), self.gpu_processes) if per else 1
        with self._lock:
            self._procs = [p for p in self._procs if p.proc.is_alive()]
            have = sum(p.device == device for p in self._procs)
            for _ in range(want - have):
                self._spawn(device)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def alive(self, device: str | None = None) -> int:
        """How many hosts for ``device`` (None: OpenCV streams) are running."""
        with self._lock:
            return sum(p.device == device and p.proc.is_alive() for p in self._procs)

    def state(self) -> dict:
        """{device ('cpu': the OpenCV hosts): {'alive': hosts running, 'streams': streams they serve}}."""
        out: dict = {}
        with self._lock:
            for p in self._procs:
                d = out.setdefault(p.device or "cpu", {"alive": 0, "streams": 0})
                if p.proc.is_alive():
                    d["alive"] += 1
                    d["streams"] += len(p.streams)
        return out

    def _add(self, name: str, device: str | None) -> _ParentStream:
        """A new stream on the least loaded host of its kind (a new host while fewer than the kind allows are
        up and each has streams), counted there at once: streams opened side by side spread over them."""
        with self._lock:
            if self._closed.is_set():
                raise SourceError(f"source {name}: the run's decode hosts are closed")
            self._procs = [p for p in self._procs if p.proc.is_alive()]
            mine = [p for p in self._procs if p.device == device]
            if device is None:
                new = len(mine) < self.processes and all(p.streams for p in mine)
            else:
                per = self.gpu_streams_per_process
                new = not mine or (bool(per) and len(mine) < self.gpu_processes
                                   and all(len(p.streams) >= per for p in mine))
            if new:
                mine.append(self._spawn(device))
            proc = min(mine, key=lambda p: len(p.streams))
            self._sid += 1
            st = proc.streams[self._sid] = _ParentStream(proc, self._sid, name)
            return st

    def release(self, proc: _HostProcess, sid, key, row):
        with self._free_lock:
            self._frees.setdefault(proc, []).append((sid, key, row))
        if not self._free_wake.is_set():  # set() on a set Event still takes its lock and notifies
            self._free_wake.set()

    def retire(self, rows: list):
        """Rows of an ended stream (its entries of _ParentStream.rows) to be unregistered where pinned and
        dropped, on the sending thread."""
        with self._free_lock:
            self._retired += rows
        if not self._free_wake.is_set():
            self._free_wake.set()

    def _send_releases(self):
        """Sends the released rows back to their processes. While the run goes on, it drops a retired
        stream's rows at most once per RETIRE_GAP_S, after sending the rows released meanwhile:
        cudaHostUnregister holds the run's other CUDA calls, so the rows of many streams ending together,
        unregistered back to back, would hold the frames of the streams still running. At close (every
        stream ended), the rest, so none is left registered or mapped. A turn waits TICK_S after its first
        row, so a message carries the rows released meanwhile: a host takes each message on a thread that
        shares its interpreter lock with the decoders (predicted to pay, not measured alone:
        results/DECISIONS.md)."""

        def send():
            with self._free_lock:
                frees, self._frees = self._frees, {}
            for proc, rows in frees.items():
                proc.send(Release(rows))

        next_retire = 0.0
        while True:
            closed = self._closed.is_set()
            if self._free_wake.wait(0 if closed else POLL) and not closed:
                time.sleep(TICK_S)
            self._free_wake.clear()
            send()
            if closed:
                with self._free_lock:
                    retired, self._retired = self._retired, []
                while retired:
                    _drop(retired.pop())
                return
            if self._retired and time.perf_counter() >= next_retire:
                with self._free_lock:
                    rows = self._retired.pop(0)
                _drop(rows)
                del rows  # the last reference: a device mapping closes here
                next_retire = time.perf_counter() + RETIRE_GAP_S
                send()

    def _receive(self):
        """Every process's messages, as they come; a process whose pipe ends leaves the wait (a new one
        joins it within POLL)."""
        from multiprocessing.connection import wait

        while True:
            with self._lock:
                procs = {p.conn: p for p in self._receiving}
            if not procs:
                if self._closed.is_set():
                    return
                time.sleep(POLL)
                continue
            for conn in wait(list(procs), POLL):
                p = procs[conn]
                why = None
                try:
                    p.take(conn.recv())
                    if not p.said_closed:
                        continue
                except (EOFError, OSError):  # the process ended or died
                    pass
                except BaseException as e:  # noqa: BLE001 - a message this side could not take: its streams fail
                    why = f"{type(e).__name__}: {e}"
                with self._lock:
                    self._receiving.remove(p)
                p.end(why)

    def open(self, name: str, opener=None, device: str | None = None, paced: bool = False, **kwargs) -> Source:
        """The stream ``opener(rows, name=name, **kwargs)`` opens (default :func:`open_cpu_in_host`: OpenCV),
        read in a host for ``device`` (the CUDA device an NVDEC stream decodes on; None: a CPU host), as a
        Source named ``name``; ``paced``: its frames are released at its frame rate. Raises SourceError (the
        host's message) when it cannot be opened."""
        st = self._add(name, None if device is None else str(device))
        proc, sid = st.proc, st.sid
        with proc.opening:
            proc.send(OpenStream(sid, opener or open_cpu_in_host, {**kwargs, "name": name}, paced))
            deadline = time.perf_counter() + START_TIMEOUT_S + (kwargs.get("reconnect_s") or 0)
            while not st.opened.wait(POLL):
                if not proc.proc.is_alive() or time.perf_counter() > deadline:
                    proc.streams.pop(sid, None)
                    raise SourceError(f"source {name}: the decode host did not open it "
                                      f"(exit code {proc.proc.exitcode})")
        if st.meta is None:
            raise SourceError(st.error or f"source {name}: the decode host could not open it")
        m = st.meta
        cancel = threading.Event()
        st.src = Source(name, st.parcels(cancel), m.fps, m.count, m.shape, m.pixel_format, st.stats, cancel,
                        lambda: proc.send(StopStream(sid)), st.counts, m.camera, push=st.push)
        return st.src

    def close(self) -> dict:
        """Ends the processes once their streams have ended (their counts are in; at most END_WAIT_S).
        Each process says Closed and exits on its own: its exit (the CUDA context's teardown) is not waited
        for; one that says nothing within END_WAIT_S is killed. The wait for the Closed still holds what a
        process does before it (results/DECISIONS.md). Returns the seconds of each step: 'streams' (their
        last streams' ends), 'closed' (every process's Closed), 'unmap' (the rows still registered or mapped
        here dropped)."""
        with self._lock:
            procs, self._procs = self._procs, []
        t0 = time.perf_counter()
        deadline = t0 + END_WAIT_S
        for p in procs:
            while p.streams and p.proc.is_alive() and time.perf_counter() < deadline:
                time.sleep(POLL / 5)
            p.close()
        t1 = time.perf_counter()
        for p in procs:
            if not p.gone.wait(END_WAIT_S):
                p.proc.kill()
                p.gone.wait(1.0)
        t2 = time.perf_counter()
        self._closed.set()
        for t in self._threads:
            t.join(END_WAIT_S)  # the sending thread unregisters the rows still registered
        return {"streams": t1 - t0, "closed": t2 - t1, "unmap": time.perf_counter() - t2}


_DEFAULT = None


def default_decode_hosts() -> DecodeHosts:
    """The decode hosts of this process for sources opened without a run's own (closed at exit; new ones
    after a close)."""
    global _DEFAULT
    if _DEFAULT is None:
        import atexit

        atexit.register(lambda: _DEFAULT.close())
    if _DEFAULT is None or _DEFAULT.closed:
        _DEFAULT = DecodeHosts(pin=False)
    return _DEFAULT


def open_cpu_in_host(rows: "StreamRows", spec: str | None, name: str, max_frames=None, reconnect_s=None,
                     start: int = 0, threads: int = 0, loop: bool = False, duration_s=None, fps=None) -> Source:
    """The CPU opener: the stream a decode host reads (a video file or URL with OpenCV, from frame ``start``,
    its frames in ``rows.host``; an image folder or the embedded clip, its frames sent in their messages),
    looping, timed or with its frame rate replaced as a run asks."""
    from ..config import RECONNECT_S
    from .cpu import open_cpu

    return looping(lambda first: open_cpu(spec, max_frames, start=first, threads=threads, row_pool=rows.host,
                                          reconnect_s=reconnect_s or RECONNECT_S), name, loop, duration_s, fps, start)


# ---------------------------------------------------------------------------------------- the process
class _Outbox:
    """What the process's streams read, sent as one message per turn of its sender thread: a turn waits
    TICK_S after its first item, so a message carries many streams' frames."""

    def __init__(self, conn):
        lock = threading.Lock()
        self.conn, self.items, self.cv = conn, [], threading.Condition(lock)  # the sender waits for items
        self.done = threading.Condition(lock)  # sent() waits for a send
        self.put_n = self.sent_n = 0  # items put and items sent so far (sent() compares them)
        threading.Thread(target=self._run, daemon=True).start()

    def put(self, item):
        with self.cv:
            self.items.append(item)
            self.put_n += 1
            self.cv.notify()

    def put_all(self, items: list):
        with self.cv:
            self.items += items
            self.put_n += len(items)
            self.cv.notify()

    def sent(self, timeout: float):
        """Waits until everything put before this call has been sent (at most ``timeout`` seconds), however
        much the other streams put meanwhile."""
        with self.done:
            mark = self.put_n
            self.done.wait_for(lambda: self.sent_n >= mark, timeout)

    def _run(self):
        while True:
            with self.cv:
                while not self.items:
                    self.cv.wait()
            time.sleep(TICK_S)  # what the other streams read meanwhile goes in the same message
            with self.cv:
                items, self.items = self.items, []
            try:
                self.conn.send(items)
            except (OSError, ValueError):  # the parent is gone: the process ends through its receiving loop
                return
            with self.done:
                self.sent_n += len(items)
                self.done.notify_all()


class ChunkRows:
    """A chunked decoder's rows (``buffers`` (n, *shape) uint8, on the host's device or in shared host memory)
    and the pool that lends them (pool.FramePool): made once per stream and shape, so a looping stream's
    passes share them and a row still lent from the last pass is never written."""

    def __init__(self, buffers, cancel: threading.Event):
        self.buffers = buffers
        self.pool = FramePool(buffers.shape[0], cancel)
        self._base, self._size = buffers.data_ptr(), buffers[0].numel()  # a row's place: one call per frame
        self._span = self._size * buffers.shape[0]

    def index(self, image) -> int | None:
        """The row ``image`` (a whole row of ``buffers``, as the decoder hands it on) is, or None when it is
        not one of these rows."""
        ptr = getattr(image, "data_ptr", None)
        if ptr is None:  # an array: not a chunked decoder's frame
            return None
        off = ptr() - self._base
        return off // self._size if 0 <= off < self._span and off % self._size == 0 else None


class StreamRows:
    """What an opener gets in a decode host (``opener(rows, **kwargs)``): the stream's rows, made and
    announced to the run once per frame shape. :meth:`host` for an OpenCV reader (``row_pool``),
    :meth:`chunked` for a chunked decoder (NVDEC, or the CPU tests' stand-in)."""

    def __init__(self, sid: int, out: "_Outbox", device: str | None, cancel: threading.Event):
        self.sid, self.out, self.device, self.cancel = sid, out, device, cancel
        self.pools: dict = {}  # ("host", shape) or ("chunked", n, shape) -> (key, HostRows or ChunkRows)
        self.decoder = None  # see keep

    def keep(self, decoder):
        """Holds ``decoder``, the stream's decoder (a later pass's replaces it), so that its teardown is the
        host's to time: an NVDEC session's teardown holds back the host's other streams' decoder calls and the
        sending of what they read (results/decode_hosts.md), so an ended stream's decoder goes once none of
        its host's streams reads and the host's outbox has sent what they lent (each wait at most
        TEARDOWN_WAIT_S)."""
        self.decoder = decoder

    def _key(self) -> int:
        return len(self.pools)

    def _shared(self, key: int, shape: tuple, n: int, pixel_format: str):
        """``n`` rows of shared host memory for frames of ``shape``, announced to the run as ``key``."""
        fd, t = _shared_rows(shape, n)
        self.out.put(NewRows(self.sid, key, DupFd(fd), shape, n, pixel_format))
        os.close(fd)  # DupFd holds a duplicate until the parent has taken it
        return t

    def host(self, shape: tuple) -> HostRows:
        """ROWS rows of shared memory for BGR frames of ``shape`` (the parent maps them, pinned on a CUDA run)."""
        got = self.pools.get(("host", shape))
        if got is None:
            key = self._key()
            rows = HostRows(shape, ROWS, memory=self._shared(key, shape, ROWS, "bgr"))
            got = self.pools[("host", shape)] = (key, rows)
        return got[1]

    def chunked(self, n: int, shape: tuple, pixel_format: str = "nv12") -> ChunkRows:
        """``n`` rows for frames of ``shape`` (uint8, ``pixel_format``): device memory shared by CUDA IPC on a
        GPU host, shared host memory otherwise."""
        got = self.pools.get(("chunked", n, shape))
        if got is None:
            key = self._key()
            if self.device is not None and self.device.startswith("cuda"):
                import torch

                rows = ChunkRows(torch.empty((n, *shape), dtype=torch.uint8, device=self.device), self.cancel)
                self.out.put(DeviceRows(self.sid, key, rows.buffers, pixel_format))
            else:
                rows = ChunkRows(self._shared(key, shape, n, pixel_format), self.cancel)
            got = self.pools[("chunked", n, shape)] = (key, rows)
        return got[1]

    def locate(self, image) -> int | None:
        """(key, row) of ``image`` among the stream's rows, or None (a frame in an array of its own)."""
        for key, rows in self.pools.values():
            row = rows.index(image)
            if row is not None:
                return key, row
        return None

    def first_host_rows(self) -> HostRows | None:
        """The OpenCV rows of the stream's first shape: a reader waits for a free one before it reads."""
        return next((r for (kind, *_), (_, r) in self.pools.items() if kind == "host"), None)


class _Reading:
    """How many of a decode host's streams are reading."""

    def __init__(self):
        self.n, self.cv = 0, threading.Condition()

    def add(self, k: int):
        with self.cv:
            self.n += k
            if self.n == 0:
                self.cv.notify_all()

    def wait_none(self, timeout: float):
        """Waits until no stream reads, at most ``timeout`` seconds."""
        with self.cv:
            self.cv.wait_for(lambda: self.n == 0, timeout)


class _Pacer:
    """A decode host's paced frames: a paced stream's reader hands it each parcel's frames with their due
    times and goes back to its decoder, and one thread lends every frame at its due time (a stream's frames
    due by then in one outbox put). So a chunked decoder decodes the next chunk while this one is released,
    as far ahead as its rows allow, instead of after the chunk's last frame: a 64-frame NVDEC chunk is 2.1 s
    of a 30 fr/s stream, and its decode came on top of that (250 paced NVDEC streams delivered 46% of their
    frames: results/runners.md, 2026-12-07 02:27)."""

    def __init__(self):
        self.cv = threading.Condition()
        self.heap: list = []  # (due, seq, stream, frame)
        self.queued: collections.Counter = collections.Counter()  # stream -> its frames here (heap or lending)
        self.seq = 0
        self.thread: threading.Thread | None = None

    def add(self, stream: "_ChildStream", frames: list):
        """[(frame, due)] of ``stream``, lent at their due times (perf_counter seconds)."""
        with self.cv:
            for f, due in frames:
                heapq.heappush(self.heap, (due, self.seq, stream, f))
                self.seq += 1
            self.queued[stream] += len(frames)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="posefuse-pacer", daemon=True)
                self.thread.start()
            self.cv.notify_all()

    def drain(self, stream: "_ChildStream"):
        """Returns once none of ``stream``'s frames is here: each lent at its time (in the outbox), or, once
        the stream is stopped, released unlent."""
        with self.cv:
            while self.queued[stream]:
                if stream.stop.is_set():
                    self._discard(stream)
                    if not self.queued[stream]:
                        break
                self.cv.wait(POLL)  # frames still waiting for their time, or being lent
            del self.queued[stream]

    def _discard(self, stream: "_ChildStream"):
        """Releases ``stream``'s frames still in the heap (under the lock); those the pacer took out are
        counted out by it."""
        keep = []
        for item in self.heap:
            if item[2] is stream:
                item[3].release()
                self.queued[stream] -= 1
            else:
                keep.append(item)
        heapq.heapify(keep)
        self.heap = keep

    def _run(self):
        while True:
            with self.cv:
                while not self.heap or self.heap[0][0] > time.perf_counter():
                    self.cv.wait(self.heap[0][0] - time.perf_counter() if self.heap else None)
                now, due = time.perf_counter(), {}
                while self.heap and self.heap[0][0] <= now:
                    t, _, stream, f = heapq.heappop(self.heap)
                    due.setdefault(stream, []).append((f, t))
            for stream, frames in due.items():
                if stream.stop.is_set():  # stopped meanwhile: its frames go back, unlent
                    for f, _ in frames:
                        f.release()
                else:
                    stream.lend(frames)
            with self.cv:  # counted out once in the outbox: a drained stream's end comes after its frames
                for stream, frames in due.items():
                    self.queued[stream] -= len(frames)
                self.cv.notify_all()


class _ChildStream:
    """One stream in a decode host: its source, its rows and the frames lent to the parent. ``reading``:
    the host's count of streams reading (an ended stream's decoder is dropped once it is 0 and the outbox
    has sent what was lent before, each wait at most TEARDOWN_WAIT_S: StreamRows.keep)."""

    def __init__(self, m: OpenStream, out: _Outbox, device: str | None, reading: _Reading, pacer: _Pacer):
        self.sid, self.opener, self.kwargs, self.out, self.paced = m.sid, m.opener, m.kwargs, out, m.paced
        self.reading, self.pacer = reading, pacer
        self.go, self.stop = threading.Event(), threading.Event()
        self.rows = StreamRows(m.sid, out, device, self.stop)
        self.lent: dict = {}  # (key, row) -> Frame
        self.src: Source | None = None
        self.lock = threading.Lock()
        self.ended = threading.Event()  # its end is sent; it is dropped once every lent row is back
        threading.Thread(target=self._run, daemon=True).start()

    def done(self) -> bool:
        with self.lock:
            return self.ended.is_set() and not self.lent

    def lend(self, frames: list):
        """[(frame, arrived)] to the run: a message each naming its row (lent until the run releases it), or
        carrying the image where it lies in no row of the stream."""
        lent, msgs = [], []
        for f, arrived in frames:
            at = self.rows.locate(f.image)
            if at is not None:
                lent.append((at, f))
                msgs.append(HostFrame(self.sid, f.index, at[0], at[1], f.timestamp, f.restart, arrived))
            else:
                msgs.append(HostFrame(self.sid, f.index, None, f.image, f.timestamp, f.restart, arrived))
        with self.lock:
            self.lent.update(lent)
        self.out.put_all(msgs)

    def release(self, key, row):
        with self.lock:
            f = self.lent.pop((key, row), None)
        if f is not None:
            f.release()

    def close(self):
        self.stop.set()
        self.go.set()
        if self.src is not None:
            self.src.close()

    def _run(self):
        sid, out = self.sid, self.out
        name = self.kwargs.get("name")
        try:
            src = self.opener(self.rows, **self.kwargs)
        except SourceError as e:
            out.put(Ended(sid, {}, {}, str(e)))
            self.ended.set()
            return
        except BaseException as e:  # noqa: BLE001 - the source's error, reported to the parent
            out.put(Ended(sid, {}, {}, f"source {name}: the decode host failed to open it ({type(e).__name__}: {e})"))
            self.ended.set()
            return
        self.src = src
        out.put(Opened(sid, src.fps, src.count, src.shape, src.camera, src.pixel_format))
        self.go.wait()
        error, blocked = None, 0.0
        pace = src.fps if self.paced and not src.camera else None
        t0 = first = end = None
        told, tell_at = {}, 0.0  # the counts last sent to the run (Counts), and when they may go again
        self.reading.add(1)
        try:
            if self.stop.is_set():
                src.close()
            it = iter(src)
            own = self.rows.first_host_rows()
            while not self.stop.is_set():
                if own is not None:  # a free row before the next read: the run behind holds the stream back
                    t = time.perf_counter()
                    own.wait_free(self.stop)
                    blocked += time.perf_counter() - t
                parcel = next(it, None)
                if parcel is None:
                    break
                now = time.perf_counter()
                if now >= tell_at:
                    counts = self._counts(src, blocked)
                    if counts != told:
                        out.put(Counts(sid, counts))
                        told = counts
                    tell_at = now + COUNTS_EVERY_S
                if not pace:  # the parcel at once: one lock and one outbox put, no wait
                    self.lend([(f, now) for f in parcel])
                    continue
                if t0 is None:  # paced: each frame at its due time, lent by the host's pacer
                    t0, first = now, parcel[0].index
                    end = t0 + self.kwargs["duration_s"] if self.kwargs.get("duration_s") else math.inf
                timed = [(f, t0 + (f.index - first) / pace) for f in parcel]
                for f, due in timed:
                    if due >= end:  # past the stream's duration (read ahead of its time): not lent
                        f.release()
                self.pacer.add(self, [(f, due) for f, due in timed if due < end])
                if timed[-1][1] >= end:
                    break
        except SourceError as e:
            error = str(e)
        except BaseException as e:  # noqa: BLE001
            error = f"source {name}: the decode host failed ({type(e).__name__}: {e})"
        finally:
            self.reading.add(-1)
            src.close()
            if pace:
                self.pacer.drain(self)  # its last frames lent (or, stopped, released) before its end
        decoder, self.rows.decoder = self.rows.decoder, None
        out.put(Ended(sid, self._counts(src, blocked), dict(src.stats), error))
        self.ended.set()
        if decoder is not None:  # its teardown holds the host back: not while a stream reads or frames wait
            self.reading.wait_none(TEARDOWN_WAIT_S)
            out.sent(TEARDOWN_WAIT_S)
            del decoder

    @staticmethod
    def _counts(src: Source, blocked: float) -> dict:
        """What the source counted, and for a camera the seconds the run held it back (its frames wait in its
        socket meanwhile: never a stall, no reconnect)."""
        counts = dict(src.counts)
        if src.camera:
            counts[BLOCKED] = round(blocked, 3)
        return counts


def _serve(conn, device: str | None):
    """A decode host: opens each stream it is sent on a thread of its own, until the pipe closes; a GPU
    host (``device``) makes its CUDA context there first. Its interpreter lock changes hands as often as
    the run's (SWITCH_INTERVAL_S): a paced frame due now waits for it behind its process's other streams.
    A Ctrl-C at the terminal is the run's to handle (it drains, then closes its sources and this process),
    so it is ignored here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if device is not None and device.startswith("cuda"):
        import torch
        import torch.multiprocessing  # noqa: F401 - CUDA tensors cross the pipe as IPC handles

        torch.cuda.set_device(torch.device(device))

    out = _Outbox(conn)
    reading, pacer = _Reading(), _Pacer()
    streams: dict[int, _ChildStream] = {}
    try:
        while True:
            m = conn.recv()
            if isinstance(m, OpenStream):
                streams[m.sid] = _ChildStream(m, out, device, reading, pacer)
            elif isinstance(m, Release):
                for sid, key, row in m.rows:
                    streams[sid].release(key, row)  # a stream stays while it has rows lent
                for sid in [sid for sid, st in streams.items() if st.done()]:  # its rows unmapped with it
                    del streams[sid]
            elif isinstance(m, CloseProcess):
                break
            elif isinstance(m, Go) and m.sid in streams:  # a stream already dropped has ended
                streams[m.sid].go.set()
            elif isinstance(m, StopStream) and m.sid in streams:
                streams[m.sid].close()
    except (EOFError, OSError):  # the parent is gone
        conn = None
    for st in streams.values():
        st.close()
    sys.stdout.flush()
    sys.stderr.flush()
    if conn is not None:  # told to close: say so, then let the run's output go (a reader of its pipe, the
        # shell's or a caller's, is not held by this process's teardown), and exit without the run waiting
        out.put(Closed())
        out.sent(TEARDOWN_WAIT_S)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
    os._exit(0)
