"""Host decode processes (runners/sources/hostproc.py): OpenCV streams read in spawned processes into shared
rows, on the real sample clip. The frames equal OpenCV's in this process; a paced stream is released at
its frame rate with each frame stamped at its due time; rows lent out bound what a stream reads ahead; a
stream that cannot open fails naming its source; a closed stream ends with its counts."""
from __future__ import annotations

import time

import numpy as np
import pytest

import helpers

CLIP = "one-by-one-person-detection.mp4"  # 768x432 at 10 fr/s


@pytest.fixture
def processes():
    from posefuse.runners.sources.hostproc import HostDecodeProcesses

    made = []

    def make(**kw):
        hp = HostDecodeProcesses(**kw)
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
    src = processes(paced=True, processes=1).open("cam", spec=helpers.data_path(CLIP), max_frames=12, fps=20.0)
    got = []
    for f in src.frames():
        got.append((f.arrived, time.perf_counter()))
        f.release()
    due = np.array([a for a, _ in got])
    np.testing.assert_allclose(np.diff(due), 1 / 20, atol=1e-6)  # the stamps: the stream's own clock
    seen = np.array([t for _, t in got])
    assert (seen >= due - 1e-3).all() and seen[-1] - seen[0] > 0.5  # none before its time; 11 frame times


def test_rows_lent_out_bound_what_a_stream_reads_ahead(processes):
    from posefuse.runners.sources.hostproc import ROWS

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
    hp = processes(paced=True, processes=2)
    a = hp.open("a", spec=helpers.data_path(CLIP), loop=True, fps=30.0)
    b = hp.open("b", spec=helpers.data_path(CLIP), loop=True, fps=30.0)
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


def test_a_paced_run_reads_its_videos_in_host_decode_processes():
    """Through run(): every frame of three paced streams is a result, in order, stamped at its due time
    (latency counted from it), and the run closed its host decode processes."""
    from posefuse import RunConfig, run

    got: dict = {}
    rep = run(RunConfig(sources=[helpers.data_path(CLIP)], repeat=3, runner="dynamic", device="cpu", decoder="cpu",
                        batch=8, max_wait_ms=10, paced=True, fps=10.0, max_frames=12, progress=False),
              on_result=lambda r: got.setdefault(r.stream, []).append(r.index))
    assert rep.failed == {} and rep.overall["results"] == 36
    assert all(v == list(range(12)) for v in got.values()) and len(got) == 3
    assert "host_decode_processes" in rep.shutdown_s
    assert all(st["source"] == {"host_rows.new_arrays": 0} for st in rep.streams.values())


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

    from posefuse.runners.sources.hostproc import ROWS

    src = processes(processes=1).open("cam", spec=helpers.data_path(CLIP), max_frames=20)
    it = src.frames()
    next(it).release()  # one row used: a stream that is never behind
    want = ROWS * 432 * 768 * 3 // 1024
    (child,) = multiprocessing.active_children()
    assert _memfd_rss_kib(child.pid) >= want
    assert _memfd_rss_kib(os.getpid()) >= want
    src.close()
