"""Decode hosts (runners/sources/decodehost.py): streams read in spawned processes into shared rows. OpenCV
on the real sample clip: the frames equal OpenCV's in this process; a paced stream is released at its frame
rate with each frame stamped at its due time; rows lent out bound what a stream reads ahead; a stream that
cannot open fails naming its source; a closed stream ends with its counts. Chunked decoders (NVDEC's
machinery, with pool.simulated_in_host standing in for the decoder on the CPU): frames in order with their
own content, rows reused only after release, a truncated stream an error naming it, GPU hosts shared."""
from __future__ import annotations

import time

import numpy as np
import pytest

import helpers

CLIP = "one-by-one-person-detection.mp4"  # 768x432 at 10 fr/s


@pytest.fixture
def processes():
    from posefuse.runners.sources.decodehost import DecodeHosts

    made = []

    def make(**kw):
        hp = DecodeHosts(**kw)
        made.append(hp)
        return hp

    yield make
    for hp in made:
        hp.close()


def test_frames_read_in_a_process_equal_opencv_here(processes):
    from posefuse.runners.sources import open_source

    clip = helpers.data_path(CLIP)
    src = processes(processes=2).open("cam", spec=clip, max_frames=40)
    assert (src.fps, src.count, src.shape, src.camera) == (10.0, 40, (432, 768), False)
    want = [f.image.copy() for f in open_source(clip, 40).frames()]
    got = []
    for f in src.frames():
        got.append((f.index, f.image.copy(), f.pinned))
        f.release()
    assert [i for i, _, _ in got] == list(range(40))
    assert all(np.array_equal(g, w) for (_, g, _), w in zip(got, want))
    assert not any(p for _, _, p in got)  # no CUDA run: rows are shared, not pinned
    assert src.counts == {"host_rows.new_arrays": 0}


def test_a_paced_stream_is_released_at_its_rate_each_frame_stamped_at_its_due_time(processes):
    src = processes(processes=1).open("cam", paced=True, spec=helpers.data_path(CLIP), max_frames=12, fps=20.0)
    got = []
    for f in src.frames():
        got.append((f.arrived, time.perf_counter()))
        f.release()
    due = np.array([a for a, _ in got])
    np.testing.assert_allclose(np.diff(due), 1 / 20, atol=1e-6)  # the stamps: the stream's own clock
    seen = np.array([t for _, t in got])
    assert (seen >= due - 1e-3).all() and seen[-1] - seen[0] > 0.5  # none before its time; 11 frame times


def test_rows_lent_out_bound_what_a_stream_reads_ahead(processes):
    from posefuse.runners.sources.decodehost import ROWS

    src = processes(processes=1).open("cam", spec=helpers.data_path(CLIP), max_frames=ROWS + 4)
    it = src.frames()
    held = [next(it) for _ in range(ROWS)]
    got = []

    def read_one():
        got.append(next(it))

    import threading

    t = threading.Thread(target=read_one, daemon=True)
    t.start()
    t.join(1.0)
    assert not got  # every row is out: the stream waits
    held[0].release()
    t.join(10.0)
    assert [f.index for f in got] == [ROWS]
    assert got[0].image is held[0].image or np.shares_memory(got[0].image, held[0].image)  # the row came back
    for f in held[1:] + got:
        f.release()
    src.close()


def test_a_stream_that_cannot_open_fails_naming_its_source(processes, tmp_path):
    from posefuse.runners.sources import SourceError

    hp = processes(processes=1)
    with pytest.raises(SourceError, match="no such file"):
        hp.open("gone", spec=str(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(SourceError, match="junk.mp4"):
        hp.open("junk", spec=str(junk))
    src = hp.open("cam", spec=helpers.data_path(CLIP), max_frames=3)  # the process serves the next one
    assert [f.index for f in src.frames()] == [0, 1, 2]


def test_a_stream_closed_while_it_is_read_ends_and_the_processes_close(processes):
    hp = processes(processes=2)
    a = hp.open("a", paced=True, spec=helpers.data_path(CLIP), loop=True, fps=30.0)
    b = hp.open("b", paced=True, spec=helpers.data_path(CLIP), loop=True, fps=30.0)
    ia, ib = a.frames(), b.frames()
    for _ in range(5):
        next(ia).release()
        next(ib).release()
    a.close()
    b.close()
    assert list(ia) == [] and list(ib) == []
    t = time.perf_counter()
    hp.close()
    assert time.perf_counter() - t < 3.0
    assert a.counts["host_rows.new_arrays"] == 0


def test_a_paced_run_reads_its_videos_in_decode_hosts():
    """Through run(): every frame of three paced streams is a result, in order, stamped at its due time
    (latency counted from it), and the run closed its decode hosts."""
    from posefuse import RunConfig, run

    got: dict = {}
    rep = run(RunConfig(sources=[helpers.data_path(CLIP)], repeat=3, runner="dynamic", device="cpu", decoder="cpu",
                        batch=8, max_wait_ms=10, paced=True, fps=10.0, max_frames=12, progress=False),
              on_result=lambda r: got.setdefault(r.stream, []).append(r.index))
    assert rep.failed == {} and rep.overall["results"] == 36
    assert all(v == list(range(12)) for v in got.values()) and len(got) == 3
    steps = [rep.shutdown_s[f"decode_hosts.{k}"] for k in ("streams", "closed", "unmap")]
    assert min(steps) >= 0 and sum(steps) <= rep.shutdown_s["decode_hosts"]
    assert all(st["source"] == {"host_rows.new_arrays": 0} for st in rep.streams.values())


def test_close_waits_for_each_hosts_closed_and_the_host_exits_on_its_own(processes):
    """close() returns once every host said Closed, its streams' counts in, not once it exited (a GPU host's
    exit is its CUDA teardown: results/DECISIONS.md); the host then exits by itself, cleanly."""
    import multiprocessing as mp

    hosts = processes(processes=1)
    src = hosts.open("cam", spec=helpers.data_path(CLIP), max_frames=5)
    got = []
    for f in src.frames():
        got.append(f.index)
        f.release()
    (proc,) = [p for p in mp.active_children() if p.name == "posefuse-decode-host"]
    steps = hosts.close()
    assert set(steps) == {"streams", "closed", "unmap"} and min(steps.values()) >= 0
    assert got == list(range(5)) and src.counts is not None
    proc.join(10.0)
    assert proc.exitcode == 0  # exited by itself, not killed (-9)


def test_a_paced_runs_looping_copies_start_spread_over_their_video():
    """Through run(): two looping copies of one video start at frames 0 and n // 2, and each stream's
    frames come in order without a gap."""
    from posefuse import RunConfig, run

    got: dict = {}
    rep = run(RunConfig(sources=[helpers.data_path(CLIP)], repeat=2, runner="dynamic", device="cpu", decoder="cpu",
                        batch=8, max_wait_ms=10, paced=True, fps=10.0, loop=True, duration_s=0.6, imgsz=320,
                        progress=False),
              on_result=lambda r: got.setdefault(r.stream, []).append(r.index))
    assert rep.failed == {} and sorted(got) == [f"{helpers.data_path(CLIP)}#{k}" for k in range(2)]
    for (name, idx), first in zip(sorted(got.items()), (0, 697)):
        assert idx[0] == first and idx == list(range(first, first + len(idx))) and len(idx) >= 3, (name, idx)


def test_a_stream_closed_after_its_end_leaves_its_process_serving_the_next(processes):
    """An ended stream whose rows are all back is dropped in its process; a stop that comes after (a run
    closes every source at its end) is ignored there, and the process opens and serves the next stream."""
    hp = processes(processes=1)
    a = hp.open("a", spec=helpers.data_path(CLIP), max_frames=5)
    for f in a.frames():
        f.release()
    time.sleep(0.3)  # the frees reach the process; its next message drops the stream
    b = hp.open("b", spec=helpers.data_path(CLIP), max_frames=3)  # a free of b's rows also drops a
    a.close()
    got = []
    for f in b.frames():
        got.append(f.index)
        f.release()
    c = hp.open("c", spec=helpers.data_path(CLIP), max_frames=2)
    assert got == [0, 1, 2] and [f.index for f in c.frames()] == [0, 1]


def test_streams_opened_side_by_side_spread_over_the_processes(processes):
    """A run opens its sources on many threads at once: each stream is counted on its process as soon as
    it is placed, so eight streams opened together land two on each of four processes."""
    from concurrent.futures import ThreadPoolExecutor

    hp = processes(processes=4)
    with ThreadPoolExecutor(8) as pool:
        srcs = list(pool.map(lambda k: hp.open(f"s{k}", spec=helpers.data_path(CLIP), max_frames=2), range(8)))
    assert sorted(len(p.streams) for p in hp._procs) == [2, 2, 2, 2]
    for s in srcs:
        assert [f.index for f in s.frames()] == [0, 1]


def _memfd_rss_kib(pid: int) -> int:
    """Resident KiB of the posefuse-rows memfd mappings of process ``pid`` (/proc/<pid>/smaps)."""
    rss, ours = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                ours = "posefuse-rows" in line
            elif ours and first == "Rss:":
                rss += int(line.split()[1])
    return rss


def test_a_streams_rows_are_resident_from_its_first_frame_in_both_processes(processes):
    """A stream reuses its last freed row, so the rows a later burst first reaches would otherwise become
    resident then: a staircase in RSS that a soak reads as growth."""
    import multiprocessing
    import os

    from posefuse.runners.sources.decodehost import ROWS

    src = processes(processes=1).open("cam", spec=helpers.data_path(CLIP), max_frames=20)
    it = src.frames()
    next(it).release()  # one row used: a stream that is never behind
    want = ROWS * 432 * 768 * 3 // 1024
    (child,) = multiprocessing.active_children()
    assert _memfd_rss_kib(child.pid) >= want
    assert _memfd_rss_kib(os.getpid()) >= want
    src.close()


# ------------------------------------------------------------------ chunked decoders (NVDEC's machinery)
def _sim(**kw) -> dict:
    from posefuse.runners.sources.pool import simulated_in_host

    return {"opener": simulated_in_host, "device": "cpu", "fps": 1e4, "shape": (2, 2), **kw}


def _indices(src) -> list:
    """The frame indices of ``src``, each frame released (its row goes back to the decode host)."""
    out = []
    for f in src.frames():
        out.append(f.index)
        f.release()
    return out


def test_an_ended_streams_decoder_is_torn_down_once_no_stream_of_its_host_reads(processes, tmp_path):
    """An NVDEC decoder's teardown holds its host's other streams back (results/decode_hosts.md), so the decoders of
    two short streams wait for the long stream of their host to stop reading: every teardown comes after
    the long stream's frames half-way through it reached the run (before the wait: at the short streams' ends)."""
    import threading
    import time

    log = tmp_path / "teardown.log"
    hp = processes(gpu_streams_per_process=0)
    lengths = (8, 8, 300)
    srcs = [hp.open(f"s{k}", **_sim(frames=n, chunk=4, fps=1e3, teardown_log=str(log))) for k, n in enumerate(lengths)]
    half = [None]
    got = [[] for _ in srcs]

    def read(k):
        for f in srcs[k].frames():
            got[k].append(f.index)
            if k == 2 and f.index == lengths[2] // 2:
                half[0] = time.time()
            f.release()

    threads = [threading.Thread(target=read, args=(k,)) for k in range(len(srcs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    deadline = time.time() + 10
    while time.time() < deadline and (not log.exists() or len(log.read_text().split()) < len(srcs)):
        time.sleep(0.05)
    assert got == [list(range(n)) for n in lengths]
    teardowns = [float(x) for x in log.read_text().split()]
    assert len(teardowns) == len(srcs) and min(teardowns) > half[0]
    for s in srcs:
        s.close()


def test_the_outbox_says_sent_only_once_everything_put_is_in_the_pipe():
    """An ended decoder's teardown waits for ``_Outbox.sent`` (the teardown holds the host back: the last
    frames its streams lent must be on their way first): when it returns, every item put is in the pipe."""
    import multiprocessing as mp

    from posefuse.runners.sources.decodehost import TICK_S, _Outbox

    here, there = mp.Pipe()
    out = _Outbox(there)
    for k in range(5):
        out.put(("frame", k))
        out.put_all([("frame", 10 + k), ("frame", 20 + k)])
    t0 = time.perf_counter()
    out.sent(10.0)
    assert time.perf_counter() - t0 >= TICK_S  # it waited for the sender's turn
    got = []
    while here.poll(0):  # already in the pipe: no wait
        got += here.recv()
    assert sorted(got) == sorted([("frame", k + d) for k in range(5) for d in (0, 10, 20)])
    out.sent(1.0)  # nothing left: returns at once
    here.close()


@pytest.mark.parametrize("per_process", [1, 0], ids=["a-process-per-stream", "one-process"])
def test_a_chunked_stream_gives_its_frames_in_order_rows_back_on_release_and_truncation_named(processes,
                                                                                            per_process):
    """A chunked decoder in a decode host: frames in order with their own content, rows reused only after
    release, and a stream that breaks off is an error naming it after the frames it gave."""
    from posefuse.runners.sources import SourceError

    hp = processes(gpu_streams_per_process=per_process)
    src = hp.open("clip.mp4", **_sim(frames=10, chunk=4, shape=(4, 6), pool=4, truncate_at=7, mark=True))
    assert src.count == 10 and src.shape == (4, 6) and src.pixel_format == "nv12"
    seen = []
    with pytest.raises(SourceError, match=r"clip\.mp4: stopped after 7 of 10"):
        for f in src.frames():
            assert tuple(f.image.shape) == (6, 6) and int(f.image[0, 0]) == f.index  # its own content
            assert f.checked is not None and f.checked[1] == (4, 6)  # checked once, when the rows were mapped
            seen.append(f.index)
            f.release()
            f.release()  # idempotent: the row goes back once
    src.close()
    assert seen == list(range(7))
    assert src.stats["video_decode.decoder"] > 0


def test_a_chunked_stream_holds_rows_until_released_and_reports_open_errors(processes):
    from posefuse.runners.sources import SourceError

    hp = processes(gpu_streams_per_process=1)
    kw = _sim(frames=12, chunk=4, pool=8, mark=True)
    src = hp.open("cam", **kw)
    it = iter(src.frames())
    held = [next(it) for _ in range(8)]  # the whole pool lent out, nothing released
    assert [int(f.image[0, 0]) for f in held] == list(range(8))
    for f in held[:4]:  # one chunk back: the decoder may fill those rows with frames 8..11
        f.release()
    rest = [next(it) for _ in range(4)]
    assert [f.index for f in rest] == [8, 9, 10, 11]
    assert [int(f.image[0, 0]) for f in held[4:]] == [4, 5, 6, 7]  # unreleased rows kept their frames
    assert next(it, None) is None
    for f in held[4:] + rest:
        f.release()
    src.close()
    with pytest.raises(SourceError, match="unexpected keyword argument 'bogus'"):
        hp.open("x", **kw, bogus=1)


def test_one_host_serves_chunked_streams_side_by_side_and_survives_a_bad_open(processes):
    """Streams of one device's host: each its own frames, in order, read interleaved; a stream that cannot
    be opened there is that stream's error, and the host goes on serving the others."""
    from posefuse.runners.sources import SourceError

    hp = processes(gpu_streams_per_process=0)
    srcs = [hp.open(f"cam{k}", **_sim(frames=9, chunk=3, pool=3, mark=True)) for k in range(2)]
    with pytest.raises(SourceError, match="unexpected keyword argument"):
        hp.open("x", **_sim(frames=1, chunk=1), bogus=1)
    assert hp.alive("cpu") == 1
    its = [iter(s.frames()) for s in srcs]
    got = {0: [], 1: []}
    for _ in range(9):  # alternate: both streams' decoders run in the one host at once
        for k, it in enumerate(its):
            f = next(it)
            got[k].append((f.index, int(f.image[0, 0])))
            f.release()
    for k, it in enumerate(its):
        assert next(it, None) is None
        assert got[k] == [(i, i) for i in range(9)]
        srcs[k].close()
    assert hp.alive("cpu") == 1 and hp.alive(None) == 0  # one device host for both; no OpenCV host


def test_gpu_streams_per_process_sets_the_number_of_device_hosts(processes):
    from posefuse.runners.sources.decodehost import DecodeHosts

    hp = processes(gpu_streams_per_process=2)
    srcs = [hp.open(f"c{k}", **_sim(frames=2, chunk=2)) for k in range(3)]
    assert hp.alive("cpu") == 2  # 2 + 1 streams
    for s in srcs:
        assert _indices(s) == [0, 1]
        s.close()
    with pytest.raises(ValueError, match="gpu_streams_per_process: expected >= 0"):
        DecodeHosts(gpu_streams_per_process=-1)
    with pytest.raises(ValueError, match="gpu_processes: expected >= 1"):
        DecodeHosts(gpu_processes=0)


def test_a_device_has_at_most_gpu_processes_hosts_the_streams_beyond_spread_over_them(processes):
    hp = processes(gpu_streams_per_process=1, gpu_processes=2)
    hp.start("cpu", 5)
    assert hp.alive("cpu") == 2
    srcs = [hp.open(f"c{k}", **_sim(frames=2, chunk=2)) for k in range(5)]
    assert hp.alive("cpu") == 2 and sorted(d["streams"] for d in hp.state().values()) == [5]
    assert [_indices(s) for s in srcs] == [[0, 1]] * 5


def test_a_gpu_host_opens_one_stream_at_a_time_and_gpu_hosts_open_side_by_side(processes, tmp_path):
    """NVDEC decoder sessions opened side by side in one process have not run: a GPU host's opens take
    turns, while its hosts open theirs at once (a job of 64 clips waited for 64 opens in a row)."""
    from concurrent.futures import ThreadPoolExecutor

    log = tmp_path / "opens.log"
    hp = processes(gpu_streams_per_process=2)
    hp.start("cpu", 4)
    with ThreadPoolExecutor(4) as pool:
        srcs = list(pool.map(lambda k: hp.open(f"c{k}", **_sim(frames=2, chunk=2, open_s=0.5, open_log=str(log))),
                             range(4)))
    opens = [line.split() for line in log.read_text().splitlines()]
    assert len(opens) == 4 and len({pid for pid, _, _ in opens}) == 2
    overlaps = {(pid, pid2) for i, (pid, start, end) in enumerate(opens) for pid2, start2, end2 in opens[i + 1:]
                if float(start) < float(end2) and float(start2) < float(end)}
    assert overlaps and all(a != b for a, b in overlaps), opens  # in turn within a host; side by side across
    assert [_indices(s) for s in srcs] == [[0, 1]] * 4


def test_hosts_started_ahead_side_by_side_serve_the_next_streams(processes):
    """start() spawns the hosts a run's streams will use, all at once (their imports overlap the caller's and
    each other's); the next opens use them."""
    hp = processes(gpu_streams_per_process=2)
    hp.start("cpu", 4)
    hp.start("cpu", 4)  # they are up: no more
    assert hp.alive("cpu") == 2
    srcs = [hp.open(f"c{k}", **_sim(frames=3, chunk=2)) for k in range(4)]
    assert hp.alive("cpu") == 2
    assert [_indices(s) for s in srcs] == [[0, 1, 2]] * 4


def test_a_looping_chunked_stream_reuses_its_rows_across_passes(processes):
    """A looping stream's passes decode into the same rows (made once per shape): frames count on across
    the wrap, the first of each pass marked restart, and a row lent from the last pass is not written."""
    hp = processes()
    src = hp.open("loop", **_sim(frames=4, chunk=2, pool=4, mark=True), loop=True, duration_s=None)
    it = src.frames()
    held = [next(it) for _ in range(2)]  # frames 0 and 1 of pass 1 stay lent across the wrap
    got = []
    for _ in range(8):
        f = next(it)
        got.append((f.index, f.restart, int(f.image[0, 0])))
        f.release()
    assert [i for i, _, _ in got] == list(range(2, 10))
    assert [i for i, r, _ in got if r] == [4, 8]
    assert [v for _, _, v in got] == [2, 3, 0, 1, 2, 3, 0, 1]  # each frame's own content (its index in the pass)
    assert [int(f.image[0, 0]) for f in held] == [0, 1]  # untouched while lent
    for f in held:
        f.release()
    src.close()


def test_a_paced_chunked_stream_is_released_at_its_rate_in_the_host(processes):
    """Pacing lives in the host for every decoder: a chunked (NVDEC-like) stream decoded far faster than its
    rate is released frame by frame at its due time, each frame stamped with it."""
    src = processes().open("cam", paced=True, **_sim(frames=12, chunk=4, pool=8), rate=25.0)
    got = []
    for f in src.frames():
        got.append((f.arrived, time.perf_counter()))
        f.release()
    due = np.array([a for a, _ in got])
    np.testing.assert_allclose(np.diff(due), 1 / 25, atol=1e-6)
    seen = np.array([t for _, t in got])
    assert len(got) == 12 and (seen >= due - 1e-3).all() and seen[-1] - seen[0] > 0.35


def test_a_paced_chunked_stream_decodes_its_next_chunk_while_this_one_is_released(processes):
    """A chunk that takes its decoder longer than a frame's interval (8 frames at 30 fr/s: 0.27 s) is
    decoded while the chunk before it is released at 20 fr/s, so no frame is late: decoding a chunk only
    after the last one was released made each chunk's first frame late by its decode time."""
    src = processes().open("cam", paced=True, **_sim(frames=32, fps=30.0, chunk=8, pool=32), rate=20.0)
    late = []
    for f in src.frames():
        late.append(time.perf_counter() - f.arrived)
        f.release()
    assert len(late) == 32 and max(late[8:]) < 0.1, [round(x, 3) for x in late]


def test_a_paced_streams_duration_counts_its_frames_not_its_read_ahead(processes):
    """A looping paced stream of 1 s at 20 fr/s gives 20 frames, however far ahead its decoder reads."""
    src = processes().open("cam", paced=True, **_sim(frames=16, fps=1e3, chunk=8, pool=32, loop=True, duration_s=1.0),
                           rate=20.0)
    got = []
    for f in src.frames():
        got.append(f.arrived)
        f.release()
    assert len(got) == 20 and got[-1] - got[0] == pytest.approx(19 / 20)


def _host_pids() -> list:
    import multiprocessing as mp

    return [p.pid for p in mp.active_children() if p.name == "posefuse-decode-host"]


def test_a_decode_host_that_dies_fails_each_of_its_streams_naming_it(processes):
    """A host killed mid-read: each of its streams ends with an error naming the stream and the host's end
    (the receiving thread sees the pipe close), nothing waits for ever."""
    import os
    import signal

    from posefuse.runners.sources import SourceError

    hp = processes(gpu_streams_per_process=0)
    srcs = [hp.open(f"cam{k}", **_sim(frames=100_000, chunk=4, pool=8)) for k in range(2)]
    its = [iter(s.frames()) for s in srcs]
    for it in its:
        next(it).release()
    (pid,) = _host_pids()
    os.kill(pid, signal.SIGKILL)
    for k, it in enumerate(its):
        with pytest.raises(SourceError, match=rf"source cam{k}: the decode host ended \(exit code -9\)"):
            for f in it:
                f.release()


def test_a_run_whose_decode_host_dies_reports_its_streams_failed_and_every_frame_accounted():
    """Through run(): the paced streams' host is killed after the first result; the run ends (no hang) with
    both streams in ``failed`` naming the host's end, and the run's accounting holds (every frame that
    arrived is a result or a recorded drop)."""
    import os
    import signal

    from posefuse import RunConfig, run

    killed = []

    def on(r):
        if not killed:
            killed.extend(_host_pids())
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    rep = run(RunConfig(sources=[helpers.data_path(CLIP)], repeat=2, runner="dynamic", device="cpu", decoder="cpu",
                        batch=4, max_wait_ms=10, paced=True, fps=20.0, max_frames=400, imgsz=320, progress=False),
              on_result=on)
    assert killed
    assert sorted(rep.failed) == [f"{helpers.data_path(CLIP)}#{k}" for k in range(2)]
    assert all("the decode host ended" in why for why in rep.failed.values())
    o = rep.overall
    assert 0 < o["results"] < 800 and o["frames_in"] == o["results"] + sum(o["drops"].values())


@pytest.mark.parametrize("what", ["folder", "default"])
def test_an_image_folder_and_the_embedded_clip_are_paced_in_a_host(processes, tmp_path, what):
    """The CPU opener reads every kind of source: an image folder (its frames travel in their messages) and
    the embedded clip, released at the asked rate, each frame stamped at its due time."""
    import cv2

    from posefuse.runners.sources import synthesized_clip

    spec = None
    if what == "folder":
        for i, img in enumerate(synthesized_clip(8)):
            cv2.imwrite(str(tmp_path / f"{i:02d}.png"), img[::4, ::4])
        spec = str(tmp_path)
    src = processes(processes=1).open(what, paced=True, spec=spec, max_frames=8, fps=25.0)
    got = []
    for f in src.frames():
        got.append((f.index, f.arrived, time.perf_counter(), f.image.shape))
        f.release()
    assert [i for i, _, _, _ in got] == list(range(8))
    due = np.array([a for _, a, _, _ in got])
    np.testing.assert_allclose(np.diff(due), 1 / 25, atol=1e-6)
    assert all(t >= a - 1e-3 for _, a, t, _ in got)  # none before its time
    if what == "folder":
        assert all(shape == (108, 192, 3) for *_, shape in got)


def test_messages_are_dataclasses_that_cross_a_pipe_whole():
    """Every message between a run and its decode hosts is a dataclass (declared fields, no positions) and
    comes out of a multiprocessing pipe's pickling equal to what went in."""
    import dataclasses
    import pickle
    from multiprocessing.reduction import ForkingPickler

    from posefuse.runners.sources import decodehost as dh

    sent = [dh.OpenStream(1, dh.open_cpu_in_host, {"spec": "a.mp4", "name": "a"}, True), dh.Go(1),
            dh.Release([(1, 0, 3)]), dh.StopStream(1), dh.CloseProcess(),
            dh.Opened(1, 30.0, None, (432, 768), True, "bgr"), dh.Counts(1, {"network.reconnects": 2}),
            dh.HostFrame(1, 7, 0, 3, 0.25, True, 12.5), dh.Ended(1, {}, {"read": 0.5}, "source a: gone"), dh.Closed()]
    assert all(dataclasses.is_dataclass(m) for m in sent)
    assert pickle.loads(bytes(ForkingPickler.dumps(sent))) == sent
