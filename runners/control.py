"""RunControl: steer a running run from another thread: add sources, remove them, stop.

    control = RunControl()
    worker = threading.Thread(target=lambda: reports.append(posefuse.run(cfg, on_result, control=control)))
    worker.start()
    control.wait_started()
    name = control.add_source("rtsp://cam7/stream")   # joins the batcher; no restart
    control.remove_source(name)                       # it ends; its counts stay in the report
    control.stop()                                    # frames in flight finish, then run() returns
    worker.join()

A run given a control is a service: it goes on when its sources end, until :meth:`stop`. It needs a runner
of config.CONCURRENT. The run's main thread carries out the commands within runners.concurrent.POLL
seconds. A source that cannot be opened is reported in the run's ``failed`` and in :attr:`failed`. A new
frame shape is captured by the GPU worker when its first batch comes (seconds, once per shape).

While it runs, the control also tells what a service shows: :meth:`figures` (each stream's counts,
drops by reason, latency so far) and :attr:`ended_streams` (each stream whose source ended, with its
error); a stream is finished once it has ended and its ``in_flight`` is 0.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class AddSource:
    """Open ``spec`` as stream ``name`` of the running run, reading at most ``max_frames`` (None: all)."""

    spec: str | None
    name: str
    max_frames: int | None = None


@dataclass(frozen=True)
class RemoveSource:
    """End stream ``name``: it reads no more frames, its frames in flight finish."""

    name: str


class RunControl:
    def __init__(self):
        self.started = threading.Event()  # the run's clock started: sources may be added
        self.stopped = threading.Event()
        self.ended = threading.Event()  # run() returned or raised
        self.error: BaseException | None = None  # what run() raised, if it did
        self._woken = threading.Event()  # started or ended
        self.failed: dict = {}  # stream name -> why it could not be opened
        self._cmds: queue.Queue = queue.Queue()
        self._names: set = set()
        self._lock = threading.Lock()
        self.ended_streams: dict = {}  # stream name -> None (its source ended) or why it failed
        self._figures = self._forget = self._waits = None  # the run's figures, forgetting, waits (bind_figures)
        self._state: dict = {}  # part of state() -> the function giving it now (bind_state)
        self.ran: dict = {}  # what the run runs (Report.ran: device, runner, backend, precision, ...), once bound

    def add_source(self, spec: str | None, name: str | None = None, max_frames: int | None = None) -> str:
        """Open ``spec`` (any source spec, as RunConfig.sources) as a new stream of the running run, reading
        at most ``max_frames``; returns its stream name (``name``, else the spec). Raises ValueError for a
        name the run already has and RuntimeError once the run has stopped."""
        name = name or spec or "default"
        with self._lock:
            if self.stopped.is_set():
                raise RuntimeError("control: the run has stopped; start another")
            if name in self._names:
                raise ValueError(f"name: {name!r} is already a stream of this run (give another name)")
            self._names.add(name)
        self._cmds.put(AddSource(spec, name, max_frames))
        return name

    def remove_source(self, name: str):
        """End stream ``name``: it reads no more frames, its frames in flight finish."""
        with self._lock:
            if name not in self._names:
                raise ValueError(f"name: {name!r} is not a stream of this run (streams: {sorted(self._names)})")
        self._cmds.put(RemoveSource(name))

    def stop(self):
        """End the run as Ctrl-C would: no new frames are read, the frames in flight finish."""
        with self._lock:
            self.stopped.set()

    def wait_started(self, timeout: float | None = None) -> bool:
        """Wait for the run's clock to start (model loaded, graphs captured); False on timeout or when the run
        ended before it started. Raises RuntimeError, with run()'s error as its cause, when the run failed
        before its clock started (a bad option, a model that does not load)."""
        self._woken.wait(timeout)
        if not self.started.is_set() and self.error is not None:
            raise RuntimeError(f"control: the run failed before it started: {type(self.error).__name__}: "
                               f"{self.error}") from self.error
        return self.started.is_set()

    def figures(self) -> dict:
        """{stream: its figures so far} (PerformanceMonitor.snapshot: frames_in, results, drops by reason,
        in_flight, frames_per_s, latency_ms p50/p99; ``source``: what the source counted of itself, a
        network source's reconnects); empty before the run binds them."""
        fn = self._figures
        return fn() if fn is not None else {}

    def waits(self) -> dict:
        """Where the run's frames have waited before the GPU so far, ms (Report's ``waits_ms``: 'intake',
        'queue', 'batch', each p50, p99 and max); empty before the run binds it or reports a wait."""
        fn = self._waits
        return fn() if fn is not None else {}

    def state(self) -> dict:
        """The run's state now, each part once the run binds it: 'queued_frames' (frames waiting before the GPU:
        'queue', handed in and not yet taken by a batcher; 'batcher', taken and not yet in a batch that left),
        'batch_frames' ({frames a batch ran: batches} so far), 'decode_hosts' ({device ('cpu': OpenCV):
        {'alive': processes, 'streams': streams}})."""
        return {part: fn() for part, fn in list(self._state.items())}

    def forget(self, names):
        """Drop what the run keeps of the finished streams ``names`` (their figures, their end, their
        source): a service's jobs come and go all day, and each stream's figures would stay otherwise (a
        latency histogram of 16 KiB each). Their names are not given out again."""
        names = list(names)
        with self._lock:
            for n in names:
                self.ended_streams.pop(n, None)
        fn = self._forget
        if fn is not None:
            fn(names)

    # ---------------------------------------------------------------- the run's side
    def bind_figures(self, fn, forget=None, ran: dict | None = None, waits=None):
        """``fn()`` gives the run's figures per stream (see :meth:`figures`); ``forget(names)`` drops what
        the run keeps of finished streams (see :meth:`forget`); ``ran``: the run's Report.ran (filled in as
        the engine loads); ``waits()``: the run's waits so far (see :meth:`waits`)."""
        self._figures, self._forget, self._waits = fn, forget, waits
        self.ran = ran if ran is not None else {}

    def bind_state(self, part: str, fn):
        """``fn()`` gives ``part`` of :meth:`state` (one of the parts it names)."""
        if part not in ("queued_frames", "batch_frames", "decode_hosts"):
            raise ValueError(f"part: expected 'queued_frames', 'batch_frames' or 'decode_hosts', got {part!r}")
        self._state[part] = fn

    def stream_ended(self, name: str, error: str | None = None):
        """Stream ``name``'s source ended (``error``: why, when it failed or could not be opened)."""
        with self._lock:
            self.ended_streams[name] = error

    def mark_started(self):
        """The run's clock started."""
        self.started.set()
        self._woken.set()

    def mark_ended(self, error: BaseException | None = None):
        """run() returned (``error`` None) or raised ``error``; no command is taken after it."""
        with self._lock:
            self.error = error
            self.stopped.set()
            self.ended.set()
        self._woken.set()

    def bind(self, names):
        """The run's own streams (their names are taken)."""
        with self._lock:
            self._names.update(names)

    def commands(self) -> list:
        """The commands given since the last call: AddSource or RemoveSource, in order."""
        out = []
        while True:
            try:
                out.append(self._cmds.get_nowait())
            except queue.Empty:
                return out
