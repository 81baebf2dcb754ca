"""Threaded runners over many sources at once: reader threads -> batcher/GPU thread -> result thread,
joined by bounded queues (backpressure: a slow stage stops the ones before it; memory stays bounded).

* ``pipelined``: fixed batches (a batch leaves when full, when the sources end, or when no frame came for
  ``idle_ms``: a source may be waiting for its frames to be released);
* ``replicas``: the same with several pipeline replicas (``pipe`` a list), each in its own GPU thread on its
  own CUDA stream, sharing the frame queue; results are put back in per-stream order;
* ``dynamic``: a dynamic batcher across all streams: a batch leaves when it holds ``batch`` frames or its
  oldest frame has waited ``max_wait_ms``; latency is measured per frame from arrival to result.

Sources share up to READERS reader threads (files and cameras apart; a camera's reads happen on a pump
thread of its own that only reads); the streams of a decode host need none: its receiving thread pushes
their frames. Every frame enters through the run's one intake: a reader's pass, or a decode host's
message, is admitted as one queue item with one accounting call; results are delivered per stream in
frame order.
A frame's latency runs from its arrival: a camera's read, a paced frame's due time (stamped by the decode host
that paced it), else its admission.
A source that fails is reported (``failed``) and the others go on. An exception in a worker stops the
run: the caller gets :class:`RunnerError` naming the stage, with the original exception as its cause,
within a few seconds; every wait is bounded, so nothing hangs and no thread is left behind.
Pacing is not done here: a paced run's streams are read in decode hosts, which release each frame at its
due time (assembly.place; sources/decodehost.py). Each GPU worker
runs on a CUDA stream of its own.
"""
from __future__ import annotations

import collections
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from .events import RunEvents, RunInterrupted, RunnerError
from .sources import Source, SourceError
from .sources.pool import POLL  # how often a blocked worker looks at the stop flag
from .batching import BatchPolicy, Waiting
from .control import RemoveSource
from .strategies import SinkError, admit_all, deliver, submit_frames

READERS = max(2, os.cpu_count() or 2)  # reader threads the sources share (a decode each at a time)
PUMP_AHEAD = 2  # parcels a camera's pump reads ahead of its reader
JOIN_TIMEOUT_S = 5.0  # how long a stopping run waits for its threads (beyond a network read's STALL_S)
_END = object()
_LATE = object()  # a frame dropped in live mode, in place of its result


@dataclass
class RunState:
    stop: threading.Event = field(default_factory=threading.Event)  # stop now (a worker failed)
    draining: threading.Event = field(default_factory=threading.Event)  # read no more frames, finish the rest
    error: tuple | None = None  # (stage, exception), the first one
    failed: dict = field(default_factory=dict)  # source name -> message
    inflight: set = field(default_factory=set)  # (stream, index) arrived and not yet delivered or dropped
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread_s: dict = field(default_factory=dict)  # seconds each kind of thread spent per activity (summed)
    source_ended: Callable | None = None  # source_ended(name, error or None): a source's last frame is queued

    def add_times(self, times: dict):
        with self.lock:
            for k, v in times.items():
                self.thread_s[k] = self.thread_s.get(k, 0.0) + v

    def enter(self, keys: list):
        with self.lock:
            self.inflight.update(keys)

    def leave(self, keys: list):
        with self.lock:
            self.inflight.difference_update(keys)

    def fail(self, stage: str, err: BaseException):
        with self.lock:
            if self.error is None:
                self.error = (stage, err)
        self.stop.set()


def _put(q: queue.Queue, item, state: RunState) -> bool:
    """Blocking put that gives up when the run stops (bounded queues must never hang a stopping run)."""
    while not state.stop.is_set():
        try:
            q.put(item, timeout=POLL)
            return True
        except queue.Full:
            continue
    return False


@dataclass
class Parcel:
    """Consecutive frames of one stream from a reader's pass to the GPU workers: ``seq`` is the place of the
    first in the stream's queue order (the result thread delivers each stream's frames in that order);
    ``queued``: when the intake queued them (perf_counter seconds)."""

    stream: str
    seq: int
    frames: list
    queued: float = 0.0


class _ReaderEntry:
    """One source as its reader serves it: its iterator. A camera (Source.camera) is read by a pump thread
    of its own into ``inbox`` (None at its end; ``error`` why)."""

    __slots__ = ("src", "it", "inbox", "error", "room")

    def __init__(self, src: Source):
        self.src, self.it = src, iter(src)
        self.inbox, self.error = (collections.deque(), None) if src.camera else (None, None)
        self.room = threading.Event()  # the reader took the inbox's parcels: the pump may read on


class _Reader:
    """A reader thread serving a number of sources in turn. Each pass takes every source's next parcel (a
    decoder's chunk, or one frame) and hands the runner what the pass got as one queue item with one
    accounting call, so the cost per frame falls with the streams a reader serves. A source that ends puts
    its _END; the reader ends with its last source. ``add`` gives it another source (False once it has
    ended)."""

    def __init__(self, name: str, intake: "_Intake", state: RunState, spawn=None):
        self.intake, self.state = intake, state
        self.spawn = spawn  # spawn(thread): start a pump thread as one of the run's threads
        self.lock = threading.Lock()
        self.slots: list[_ReaderEntry] = []
        self.ending: list[_ReaderEntry] = []  # sources that ended in a pass, ended once its frames are queued
        self.new: list[_ReaderEntry] = []
        self.ended = False
        self.wake = threading.Event()  # a parcel was put in an inbox
        self.ready: collections.deque = collections.deque()  # the slots whose inbox got a parcel since the last pass
        self.times = {"read.source": 0.0}
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def add(self, src: Source) -> bool:
        with self.lock:
            if self.ended:
                return False
            self.new.append(_ReaderEntry(src))
            return True

    def load(self) -> int:
        with self.lock:
            return len(self.slots) + len(self.new)

    def _run(self):
        state = self.state
        try:
            while not (state.stop.is_set() or state.draining.is_set()):
                with self.lock:
                    for slot in self.new:
                        if slot.inbox is not None:
                            self.spawn(threading.Thread(target=self._pump, args=(slot,), daemon=True,
                                                        name="posefuse-pump"))
                    self.slots += self.new
                    self.new = []
                    if not self.slots:
                        self.ended = True
                        return
                self.wake.clear()  # before the inboxes are looked at: a parcel put after it wakes the wait
                group = self._pass()  # sources that ended in it wait in self.ending for the hand-off
                if group and not self.intake.hand([(slot.src, frames) for slot, frames in group]):
                    return  # the run stopped: its frames become drops
                # a source's end goes after its last frames: were its _END queued first, the GPU worker could
                # see every source ended and the queue empty, and stop before the pass's frames came
                for slot in self.ending:
                    self._end(slot)
                self.ending = []
                if not group and any(slot.inbox is not None for slot in self.slots):
                    self.wake.wait(POLL)
        except BaseException as e:  # noqa: BLE001 - any error but a source's own stops the run, with its stage
            state.fail("read", e)
        finally:
            with self.lock:
                self.ended = True
                self.slots += self.new
                self.new = []
            for slot in self.ending + self.slots:
                self._end(slot)
            state.add_times(self.times)

    def _signal(self, slot: _ReaderEntry):
        """``slot``'s inbox got a parcel (on its pump's thread): the next pass takes it."""
        self.ready.append(slot)
        if not self.wake.is_set():  # set() on a set Event still takes its lock and notifies
            self.wake.set()

    def _pass(self) -> list:
        """[(slot, frames)] over the sources: each pulled source's next parcel; of the sources with an inbox,
        what came to those that got a parcel since the last pass."""
        group = []
        # the slots signalled before this pass, each once: a signal that comes during the pass stays in
        # ``ready`` for the next one (skipping it as seen would leave its parcel, and its pump, waiting)
        signalled = {}
        for _ in range(len(self.ready)):
            slot = self.ready.popleft()
            signalled[id(slot)] = slot
        for slot in signalled.values():  # a camera: what came, at once (an ended one: none)
            frames, end = [], False
            while slot.inbox:
                parcel = slot.inbox.popleft()
                if parcel is None:
                    end = True
                    break
                frames += parcel
            slot.room.set()  # its pump may read on
            if frames:
                group.append((slot, frames))
            if end:
                if isinstance(slot.error, BaseException):  # not the source's own error: the run stops
                    raise slot.error
                if slot.error:
                    with self.state.lock:
                        self.state.failed[slot.src.name] = slot.error
                self.slots.remove(slot)
                self.ending.append(slot)
        for slot in list(self.slots):
            if slot.inbox is not None:
                continue
            t0 = time.perf_counter()
            try:
                parcel = next(slot.it, None)
            except SourceError as e:  # this source is over; the others go on
                with self.state.lock:
                    self.state.failed[slot.src.name] = str(e)
                parcel = None
            self.times["read.source"] += time.perf_counter() - t0
            if parcel is None:
                self.slots.remove(slot)
                self.ending.append(slot)
            elif parcel:
                group.append((slot, parcel))
        return group

    def _pump(self, slot: _ReaderEntry):
        """A camera's thread: reads its parcels into the slot's inbox, wakes the reader, and puts None at the
        end (the source's error in ``slot.error``). It does nothing else, so a read that waits for the
        camera's next frame holds up no other stream, and the reader hands many cameras' frames on at once."""
        t_read, cancel = 0.0, slot.src.cancel
        try:
            it = slot.it
            while True:
                t0 = time.perf_counter()
                parcel = next(it, None)
                t1 = time.perf_counter()
                t_read += t1 - t0
                if parcel is None:
                    break
                for f in parcel:  # a camera's frame arrives when its read ends
                    f.arrived = t1
                slot.room.clear()
                slot.inbox.append(parcel)
                self._signal(slot)
                # at most PUMP_AHEAD parcels wait: a reader held up by a full queue holds the camera up too (its
                # frames wait in the socket, as with one reader per camera), so frames in flight stay bounded
                while len(slot.inbox) >= PUMP_AHEAD and not (cancel.is_set() or self.state.stop.is_set()):
                    slot.room.wait(POLL)
        except SourceError as e:
            slot.error = str(e)
        except BaseException as e:  # noqa: BLE001 - handed to the reader, which stops the run with it
            slot.error = e
        finally:
            slot.inbox.append(None)
            self._signal(slot)
            self.state.add_times({"read.source": t_read})

    def _end(self, slot: _ReaderEntry):
        while slot.inbox:  # a camera's frames read but not handed on (a pump still reading puts more: unread)
            for f in slot.inbox.popleft() or ():
                f.release()
        self.intake.end(slot.src, None)  # its error, if any, is in state.failed already


class _Intake:
    """The run's one way in for frames (a sources.Feed): a reader hands each pass's parcels, a decode host's
    receiving thread each message's (the sources that push); what comes in one call is admitted (arrivals
    counted, bad frames dropped) and queued for the GPU workers as one item, each stream's frames placed in
    its queue order. A source's end puts its _END after its last frames. Frames of a source that has ended,
    or that come after the run stopped or began draining, are released unread (they never arrived)."""

    def __init__(self, frames_q: queue.Queue, events: RunEvents, state: RunState, device=None):
        self.frames_q, self.events, self.state, self.device = frames_q, events, state, device
        self.lock = threading.Lock()  # one hand-off at a time: a stream's places follow its queue order
        self.open: dict = {}  # id(source) -> [source, place of its next frame]
        self.started = False
        self.queue_full_wait_s = 0.0
        self.queued_frames = 0  # frames queued so far

    def add(self, src: Source):
        """Takes ``src`` in; one that pushes starts pushing here once the run has started."""
        with self.lock:
            self.open[id(src)] = [src, 0]
        if src.push is not None and self.started:
            src.push(self)

    def start(self):
        """The run started: the sources that push start now (a stream reads nothing before: no head start)."""
        with self.lock:
            self.started = True
            pushing = [src for src, _ in self.open.values() if src.push is not None]
        for src in pushing:
            src.push(self)

    def hand(self, parcels: list) -> bool:
        """[(source, frames)] that arrived together, admitted and queued as one item; False when the run has
        stopped (the frames in flight then become drops)."""
        state = self.state
        try:
            with self.lock:
                group, item = [], []
                for src, frames in parcels:
                    entry = self.open.get(id(src))
                    if entry is None or state.draining.is_set() or state.stop.is_set():
                        for f in frames:
                            f.release()
                    else:
                        group.append((entry, frames))
                goods = admit_all([(e[0].name, frames) for e, frames in group], self.events, self.device)
                for (entry, _), good in zip(group, goods):
                    if good:
                        item.append(Parcel(entry[0].name, entry[1], good))
                        entry[1] += len(good)
                if not item:
                    return not state.stop.is_set()
                state.enter([(p.stream, f.index) for p in item for f in p.frames])
                t0 = time.perf_counter()
                for p in item:
                    p.queued = t0
                put = _put(self.frames_q, item, state)
                self.queue_full_wait_s += time.perf_counter() - t0
                if put:
                    self.queued_frames += sum(len(p.frames) for p in item)
                return put
        except BaseException as e:  # noqa: BLE001 - on a pushing thread: the run stops with its stage
            state.fail("read", e)
            return False

    def end(self, src: Source, error: str | None):
        """``src`` ended (``error``: why it failed, or None): closed, its stats counted, its _END queued, and
        the run's control told. A second end of the same source does nothing."""
        state = self.state
        with self.lock:  # a hand-off of its frames under way finishes first; none is taken after this
            if self.open.pop(id(src), None) is None:
                return
        if error:
            with state.lock:
                state.failed[src.name] = error
        src.close()
        state.add_times(src.stats)
        self.events.stream_ended(src.name)
        _put(self.frames_q, _END, state)
        if state.source_ended is not None:
            with state.lock:
                error = state.failed.get(src.name)
            state.source_ended(src.name, error)

    def drain(self):
        """The run drains: the sources that push end now (their frames from here on are released unread)."""
        with self.lock:
            pushing = [src for src, _ in self.open.values() if src.push is not None]
        for src in pushing:
            self.end(src, None)


class _Readers:
    """The run's reader threads: up to READERS shared by the files and up to READERS by the cameras (the
    least loaded takes a new source). A camera (Source.camera: a read waits for its next frame) is read by
    a pump thread of its own into its reader's inbox, so a stalled camera holds up no other stream, while
    the reader hands its cameras' frames on together; files and cameras never share a reader, so a file's
    decode never delays a camera's frames. A source that pushes (a decode host's stream) needs no reader:
    its frames go to the intake on the pushing thread."""

    def __init__(self, make, intake: _Intake, threads: list):
        self.make, self.intake, self.threads = make, intake, threads  # make(name, spawn) -> _Reader
        self.shared: dict[bool, list[_Reader]] = {False: [], True: []}  # by Source.camera
        self.n = 0

    def spawn(self, t: threading.Thread):
        self.threads.append(t)
        t.start()

    def add(self, src: Source, start: bool = True):
        self.intake.add(src)
        if src.push is not None:
            return
        shared = self.shared[src.camera] = [r for r in self.shared[src.camera] if not r.ended]
        if len(shared) >= READERS:
            for r in sorted(shared, key=_Reader.load):
                if r.add(src):
                    return
        shared.append(self._new(src, start))

    def _new(self, src: Source, start: bool) -> _Reader:
        """A new reader serving ``src`` (started now, or with the run's threads)."""
        r = self.make(f"posefuse-read-{self.n}", self.spawn)
        self.n += 1
        r.add(src)
        self.threads.append(r.thread)
        if start:
            r.thread.start()
        return r


class Arrivals:
    """The streams of a run that open while it runs (a job's streams: their opens, seconds for many NVDEC
    streams, overlap its start instead of preceding it): the opener puts each source as it opens, or None
    for a stream that could not be opened (its error recorded where it was opened); the run takes them in as
    they come and does not end before the last has come."""

    def __init__(self, expected: int):
        self.expected = expected  # streams to come
        self._q: queue.Queue = queue.Queue()

    def put(self, src: Source | None):
        self._q.put(src)

    def take(self) -> tuple[list, int]:
        """The sources opened since the last call, and how many streams came meanwhile (failed ones too)."""
        got, n = [], 0
        while True:
            try:
                src = self._q.get_nowait()
            except queue.Empty:
                return got, n
            n += 1
            if src is not None:
                got.append(src)


@dataclass
class Submitted:
    """A batch from a GPU worker to the result thread: the frames run (:class:`Waiting`, in the order given
    to the pipeline), their pending results (submit_frames), the frames dropped as late instead, and when
    the batch left the policy (perf_counter seconds)."""

    run: list
    pending: list
    late: list
    left: float


def _batcher(frames_q, results_q, pipe, state: RunState, policy: BatchPolicy, ended: dict, tracker=None):
    """One GPU worker: offers the readers' frames to ``policy`` and submits each batch it lets leave to
    ``pipe`` on a CUDA stream of its own. A batch's key is its frames' signature (image size, pixel format,
    memory): one letterbox canvas and one CUDA graph, padded to the run's batch size, so a frame runs
    through the same graph whatever streams share its batch (results/DECISIONS.md). Several may share one
    queue (the ``replicas`` runner). ``ended``: {"n": sources ended, "of": sources} shared by the workers.
    ``tracker``: a StreamTracker the pipeline steps with each batch (one worker: a stream's frames in order).
    Late frames are released here and recorded as drops by the result thread."""
    times = {"gpu.frames_wait": 0.0, "gpu.submit": 0.0, "gpu.ring_wait": 0.0, "gpu.results_full_wait": 0.0}

    def all_ended():
        with state.lock:
            return ended["n"] >= ended["of"] and not ended.get("open")

    try:
        stream = torch.cuda.Stream(pipe.device) if pipe.device.type == "cuda" else None
        with torch.cuda.stream(stream):
            while not state.stop.is_set():
                wake = policy.deadline()
                t0 = time.perf_counter()
                timeout = POLL if wake is None else max(0.0, min(POLL, wake - t0))
                try:
                    item = frames_q.get(timeout=timeout)
                except queue.Empty:
                    item = None
                now = time.perf_counter()
                times["gpu.frames_wait"] += now - t0
                if item is _END:
                    with state.lock:
                        ended["n"] += 1
                elif item is not None:  # a reader's pass: a Parcel per stream
                    policy.offer([Waiting(p.stream, p.seq + k, f, f.arrived, (f.checked[1], f.pixel_format,
                                                                              f.checked[0].device.type), p.queued)
                                  for p in item for k, f in enumerate(p.frames)], now)
                done = (item is None or (item is _END and frames_q.empty())) and all_ended()
                while not state.stop.is_set() and (batch := policy.take(now, ended=done)) is not None:
                    left = now
                    for w in batch.late:
                        w.frame.release()
                    w0 = pipe.ring_wait_s
                    pending = submit_frames(pipe, [w.frame for w in batch.run], [w.stream for w in batch.run],
                                            tracker) if batch.run else []
                    t1 = time.perf_counter()
                    _put(results_q, Submitted(batch.run, pending, batch.late, left), state)
                    ring_wait = pipe.ring_wait_s - w0  # waiting for the GPU, inside submit
                    times["gpu.submit"] += t1 - now - ring_wait
                    times["gpu.ring_wait"] += ring_wait
                    now = time.perf_counter()
                    times["gpu.results_full_wait"] += now - t1
                if done and not len(policy):
                    break
    except BaseException as e:  # noqa: BLE001
        state.fail("gpu", e)
    finally:
        _put(results_q, _END, state)
        state.add_times(times)


def _results(results_q, events: RunEvents, on_result, state: RunState, n_workers: int):
    """Reads batches back in submission order and delivers each stream's frames in their queue order
    (with several GPU workers a later frame of a stream can finish first: it waits in ``held``)."""
    next_seq: dict = {}
    held: dict = {}  # (stream, seq) -> (frame, result)
    ended = 0
    times = {"result.batches_wait": 0.0, "result.gpu_wait_and_deliver": 0.0}
    try:
        while not state.stop.is_set() and ended < n_workers:
            t0 = time.perf_counter()
            try:
                item = results_q.get(timeout=POLL)
            except queue.Empty:
                continue
            finally:
                t1 = time.perf_counter()
                times["result.batches_wait"] += t1 - t0
            if item is _END:
                ended += 1
                continue
            ready = []  # (stream, frame, result) deliverable now, in each stream's order
            late = []  # (stream, index) dropped as late, in turn
            results = []
            for _, pending in item.pending:  # waits for each batch's copy to the host
                results += pending.result()
                if pending.gpu_ms:
                    events.gpu_spans(pending.gpu_ms)
            waited = item.run + item.late
            events.waits([w.queued - w.arrived for w in waited], [w.offered - w.queued for w in waited],
                         [item.left - w.offered for w in waited], len(item.run))
            done = list(zip(item.run, results)) + [(w, _LATE) for w in item.late]
            for w, r in done:
                name = w.stream
                held[(name, w.seq)] = (w.frame, r)
                n = next_seq.get(name, 0)
                while (name, n) in held:
                    g, res = held.pop((name, n))
                    if res is _LATE:
                        late.append((name, g.index))
                    else:
                        ready.append((name, g, res))
                    n += 1
                next_seq[name] = n
            for key in late:
                events.dropped(key, "late")
            state.leave(late)
            deliver(ready, events, on_result, state.leave)  # the batch's accounting at once, then the results
            times["result.gpu_wait_and_deliver"] += time.perf_counter() - t1
    except SinkError as e:  # an output or on_result failed: the run stops with its error
        state.fail("result", e.__cause__)
    except BaseException as e:  # noqa: BLE001
        state.fail("result", e)
    finally:
        for f, _ in held.values():  # a stopped run's frames that waited for an earlier one of their stream
            f.release()
        state.add_times(times)


def signatures(sources: list[Source]) -> set:
    """{(frame shape, pixel format)} the sources announce (those that know their shape ahead)."""
    return {(s.shape, s.pixel_format) for s in sources if s.shape}


def warm_up(pipes: list, signatures: set, batch: int):
    """Capture every batch size the runner can produce, for each (frame shape, pixel format) of
    ``signatures``, before the clock starts (PosePipeline.warmup); NV12 frames are on the device."""
    pipes = list(pipes) if isinstance(pipes, (list, tuple)) else [pipes]
    for shape, fmt in signatures:
        for p in pipes:
            p.warmup(shape, batch, fmt, device_frames=fmt == "nv12")


def run_concurrent(sources: list[Source], pipes: list, events: RunEvents, on_result=None, *, batch: int = 32,
                   max_wait_ms: float | None = None, idle_ms: float = 200.0,
                   late_ms: float | None = None, control=None, open_stream=None, openers: int = 1,
                   tracker=None, arrivals: Arrivals | None = None) -> dict:
    """Run all ``sources`` at once (see the module docstring). ``pipes``: a PosePipeline or a list of them,
    one GPU worker thread each (several: the ``replicas`` runner). ``max_wait_ms=None``: fixed batches
    (``pipelined``); a number: the ``dynamic`` batcher. ``idle_ms``: fixed batches: a partial batch leaves
    when no frame came for this long. ``late_ms`` (live mode): a frame that waited longer than this by the
    time its batch leaves is dropped as 'late' instead of run; None (archive mode): nothing is dropped.
    ``on_result(FrameResult)``. ``control``: a RunControl (control.py) steering the run, with
    ``open_stream(spec, name, max_frames) -> Source`` opening what it adds, up to ``openers`` at once on
    threads of their own (a camera's open probes the stream for most of a second: one after another, 200
    cameras took minutes to join and held every stream added after them back); the run then lasts until
    control.stop().
    ``tracker``: a StreamTracker for the poses (one pipeline only: a stream's frames are tracked in order).
    ``arrivals``: sources that join as they open, besides ``sources``; the run ends after the last.
    Returns {source name: error} for the sources that failed; raises RunnerError when a worker failed."""
    pipes = list(pipes) if isinstance(pipes, (list, tuple)) else [pipes]
    if not pipes:
        raise ValueError("pipes: expected at least one pipeline, got none")
    if tracker is not None and len(pipes) > 1:
        raise ValueError("tracker: a stream's frames are tracked in order, by one pipeline; got several")
    state = RunState(source_ended=control.stream_ended if control is not None else None)
    frames_q: queue.Queue = queue.Queue(maxsize=2 * batch * len(pipes))  # frames in flight stay bounded
    results_q: queue.Queue = queue.Queue(maxsize=2 * len(pipes))  # read back while the next batches compute
    max_wait = None if max_wait_ms is None else max_wait_ms / 1e3
    coming = arrivals.expected if arrivals is not None else 0  # streams still to arrive
    # open: sources may still be added (a control's, or arrivals to come)
    ended = {"n": 0, "of": len(sources), "open": control is not None or coming > 0}
    device = pipes[0].device

    threads: list = []
    intake = _Intake(frames_q, events, state, device)
    readers = _Readers(lambda name, spawn: _Reader(name, intake, state, spawn), intake, threads)
    for s in sources:
        readers.add(s, start=False)
    policies = [BatchPolicy(batch, max_wait, idle_ms / 1e3, None if late_ms is None else late_ms / 1e3) for _ in pipes]
    for i, (p, policy) in enumerate(zip(pipes, policies)):
        threads.append(threading.Thread(target=_batcher, name=f"posefuse-gpu-{i}", daemon=True,
                                        args=(frames_q, results_q, p, state, policy, ended, tracker)))
    if control is not None:  # read from the control's thread: counters and lengths, no lock taken
        control.bind_state("queued_frames", lambda: {
            "queue": max(0, intake.queued_frames - sum(p.n_offered for p in policies)),
            "batcher": sum(len(p) for p in policies)})
    threads.append(threading.Thread(target=_results, name="posefuse-result", daemon=True,
                                    args=(results_q, events, on_result, state, len(pipes))))
    if not sources and control is None and not coming:
        return {}
    sources = list(sources)

    def arrive(start: bool):
        """The arrivals opened since the last call join the run (``start``: their readers start now, else
        with the run's threads); once the last has come, the run may end."""
        nonlocal coming
        got, n = arrivals.take()
        for src in got:
            with state.lock:
                ended["of"] += 1
            sources.append(src)
            readers.add(src, start=start)
        coming -= n
        if not coming and control is None:
            events.streams_in()
            with state.lock:
                ended["open"] = False

    opening: list = []  # [(AddSource, Future)]: streams being opened by the opener threads
    removed: set = set()  # names removed while they were being opened: closed as soon as they open
    opener = ThreadPoolExecutor(max(1, openers), thread_name_prefix="posefuse-open") if control is not None else None

    def joined(cmd, fut):
        """An added stream's open ended: it joins the run (closed at once if removed meanwhile), or its
        failure is recorded."""
        if fut.cancelled():
            err = "the run stopped before it was opened"
        else:
            try:
                src, err = fut.result(), None
            except SourceError as e:
                err = str(e)
        if err is not None:
            removed.discard(cmd.name)
            with state.lock:
                state.failed[cmd.name] = control.failed[cmd.name] = err
            control.stream_ended(cmd.name, err)
            return
        with state.lock:
            ended["of"] += 1
        sources.append(src)
        readers.add(src)
        if cmd.name in removed:
            removed.discard(cmd.name)
            src.close()

    def join_opened(wait: bool):
        """The added streams whose opens ended join (``wait``: wait for those opening, cancel those not
        begun: the run is ending)."""
        if wait and opener is not None:
            opener.shutdown(wait=True, cancel_futures=True)
        for item in [x for x in opening if x[1].done()]:
            opening.remove(item)
            joined(*item)

    def steer():
        """Carry out the control's commands (the run's main thread, every POLL): streams to add are opened on
        the opener threads and join as their opens end; let go of the sources and threads that ended (a
        service adds sources all day)."""
        sources[:] = [s for s in sources if not s.cancel.is_set()]  # an ended source is closed
        for t in [t for t in threads if t.ident is not None and not t.is_alive()]:
            threads.remove(t)  # one at a time: a reader may append a pump thread meanwhile
        for cmd in control.commands():
            if isinstance(cmd, RemoveSource):
                if any(c.name == cmd.name for c, _ in opening):
                    removed.add(cmd.name)
                for s in sources:
                    if s.name == cmd.name:
                        s.close()
                continue
            opening.append((cmd, opener.submit(open_stream, cmd.spec, cmd.name, cmd.max_frames)))
        join_opened(wait=False)

    def drain():  # read no more, finish what is in flight (a service's sources too)
        state.draining.set()
        with state.lock:
            ended["open"] = False
        join_opened(wait=True)
        for s in sources:
            s.close()
        intake.drain()

    if coming:
        arrive(start=False)
    elif control is None:  # a service's streams come and go: it has no "every stream in"
        events.streams_in()
    for t in list(threads):  # the readers add their pump threads to ``threads`` as they start them
        t.start()
    intake.start()
    if control is not None:
        control.mark_started()

    interrupted = served = False  # served: control.stop() ended the run (a normal end, not an interrupt)
    while any(t.is_alive() for t in threads) and not state.stop.is_set():
        try:
            time.sleep(POLL)
            if coming and not (interrupted or state.draining.is_set()):
                arrive(start=True)
            if control is not None and not (interrupted or served):
                steer()
                if control.stopped.is_set():
                    served = True
                    drain()
        except KeyboardInterrupt as e:
            if interrupted:  # a second Ctrl-C: stop now
                state.fail("interrupt", e)
            interrupted = True
            drain()  # first Ctrl-C / SIGTERM
    join_opened(wait=True)  # no opener thread is left behind (a failed run's late opens are closed below)
    for s in sources:  # a source blocked on its consumer (NVDEC) returns
        if state.stop.is_set():
            s.close()
    deadline = time.perf_counter() + JOIN_TIMEOUT_S
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    alive = [t.name for t in threads if t.is_alive()]
    state.add_times({"read.queue_full_wait": intake.queue_full_wait_s})
    events.thread_seconds(state.thread_s)  # where the threads spent their time: which stage limits
    if state.error is not None:
        stage, err = state.error
        with state.lock:  # every frame that arrived but got no result becomes a recorded drop
            unfinished, state.inflight = list(state.inflight), set()
        for key in unfinished:
            events.dropped(key, f"run stopped: {stage} stage failed")
        if isinstance(err, KeyboardInterrupt):
            raise err
        raise RunnerError(stage, err) from err
    if alive:
        raise RuntimeError(f"runner: threads still running after {JOIN_TIMEOUT_S} s: {alive}")
    if interrupted:
        raise RunInterrupted("interrupted: in-flight frames finished, no new frames read")
    return dict(state.failed)
