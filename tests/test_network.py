"""Network sources against real servers on loopback: ffmpeg serving the sample clip as a live MPEG-TS
stream over HTTP (killed and restarted mid-read), Python HTTP servers returning 404 or garbage, and one that
stalls. CI installs ffmpeg from Debian's packages (.ci/run)."""
from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time

import pytest

import helpers

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (.ci/run installs it)")

CLIP = "one-by-one-person-detection.mp4"  # 10 fr/s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCamera:
    """ffmpeg serving a clip in a loop at its own rate (-re) as MPEG-TS over HTTP on loopback."""

    def __init__(self, clip: str):
        self.clip, self.port = clip, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
                                      "-i", self.clip, "-c", "copy", "-f", "mpegts", "-listen", "1", self.url],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def camera():
    cam = LoopbackCamera(helpers.data_path(CLIP)).start()
    yield cam
    cam.kill()


def test_camera_killed_and_restarted_the_source_reconnects_and_counts_the_gap(camera):
    from posefuse.runners.sources import open_source

    src = open_source(camera.url, reconnect_s=30)
    assert src.fps == 10 and src.shape == (432, 768)
    it = src.frames()
    frames = [next(it) for _ in range(15)]
    # a 1 s outage while the source reads on (it sees it once the frames FFmpeg had buffered are read)
    threading.Thread(target=lambda: (camera.kill(), time.sleep(1.0), camera.start()), daemon=True).start()
    frames += [next(it) for _ in range(15)]
    src.close()
    got = [f.index for f in frames]
    assert got == list(range(30))  # delivered frames keep consecutive indices over the reconnect
    assert sum(f.restart for f in frames) == 1  # the first frame after the reconnect
    st = src.counts
    assert st["network.reconnects"] >= 1 and st["network.disconnected_s"] >= 0.5
    # 10 fr/s over the gap (rounded once per reconnect)
    assert abs(st["network.frames_missed"] - st["network.disconnected_s"] * 10) <= st["network.reconnects"]


def test_a_25_fps_cameras_rate_is_25(tmp_path):
    """A 25 fr/s H.264 stream over MPEG-TS: the camera's rate is the one FFmpeg's open estimates from its
    frames (not the stream's field rate, 50)."""
    from posefuse.runners.sources.network import open_network

    clip = tmp_path / "c25.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", helpers.data_path(CLIP), "-t", "4", "-r",
                    "25", "-c:v", "libx264", "-g", "50", str(clip)], check=True)
    cam = LoopbackCamera(str(clip)).start()
    try:
        src = open_network(cam.url, reconnect_s=10)
        assert src.fps == 25 and src.shape == (432, 768)
        assert [f.index for f, _ in zip(src.frames(), range(3))] == [0, 1, 2]
        src.close()
    finally:
        cam.kill()


def test_unreachable_camera_is_a_named_error_after_the_reconnect_time():
    from posefuse.runners.sources import SourceError, open_source

    url = f"http://127.0.0.1:{free_port()}/cam"
    t0 = time.perf_counter()
    with pytest.raises(SourceError, match=f"source {url}: could not open it in 1 s"):
        open_source(url, reconnect_s=1.0)
    assert time.perf_counter() - t0 < 10


class _Files(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 - the handler's name in http.server
        if self.path != "/garbage.ts":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


@pytest.mark.parametrize("path", ["/missing.ts", "/garbage.ts"])
def test_404_and_garbage_are_named_errors(path):
    import numpy as np

    from posefuse.runners.sources import SourceError, open_source

    _Files.body = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        with pytest.raises(SourceError, match=f"source {url}: could not open it"):
            open_source(url, reconnect_s=1.0)
    finally:
        server.shutdown()


def _stalling_server(tmp_path) -> tuple[str, list]:
    """A server that answers one client with 3 s of the clip as MPEG-TS, then nothing, the connection kept
    open; later connections are refused. Returns (url, [the held connection])."""
    ts = tmp_path / "head.ts"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-t", "3", "-i", helpers.data_path(CLIP),
                    "-c", "copy", "-f", "mpegts", str(ts)], check=True)
    head = ts.read_bytes()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    url = f"http://127.0.0.1:{lsock.getsockname()[1]}/cam"
    held: list = []

    def serve_once():
        conn, _ = lsock.accept()
        lsock.close()  # later attempts are refused
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n" + head)
        held.append(conn)  # open, silent

    threading.Thread(target=serve_once, daemon=True).start()
    return url, held


def test_stalled_camera_reconnects_then_fails_naming_the_url(tmp_path):
    """A server that sends 3 s of stream, then nothing while keeping the connection open, once: the read
    stalls, the source reconnects (refused: the server is gone) and fails after reconnect_s."""
    from posefuse.runners.sources import SourceError
    from posefuse.runners.sources.network import BEFORE_START, open_network

    url, held = _stalling_server(tmp_path)
    src = open_network(url, reconnect_s=1.5, stall_s=1.0)
    n = 0
    t0 = time.perf_counter()
    with pytest.raises(SourceError, match=f"source {url}: disconnected after frame .* not back in 1.5 s"):
        for f in src.frames():
            assert f.index == n
            n += 1
    # the 3 s (30 frames) sent: read, or discarded before the first read (the frame rate's, the preroll's)
    assert n + src.counts[BEFORE_START] >= 25 and n >= 10 and time.perf_counter() - t0 < 15
    for c in held:
        c.close()


def test_a_camera_outage_mid_run_stalls_no_other_stream(camera):
    """run(): a file stream and a loopback camera; the camera is killed and restarted while the run is live.
    The file's frames all arrive, the camera's stream reconnects and its counts are in its report."""
    from posefuse import RunConfig, run

    got: dict = {}
    restarted = threading.Event()

    def on_result(r):
        got.setdefault(r.stream, []).append(r.index)
        if r.stream == camera.url and len(got[r.stream]) == 5 and not restarted.is_set():
            restarted.set()
            threading.Thread(target=lambda: (camera.kill(), time.sleep(1.0), camera.start()), daemon=True).start()

    clip = helpers.data_path(CLIP)
    rep = run(RunConfig(sources=[clip, camera.url], max_frames=60, runner="dynamic", batch=4, imgsz=320,
                        device="cpu", progress=False, reconnect_s=30), on_result=on_result)
    assert rep.exit_code == 0, rep.failed
    assert got[clip] == list(range(60)) and got[camera.url] == list(range(60))
    net = rep.streams[camera.url]["source"]
    assert net["network.reconnects"] >= 1 and net["network.disconnected_s"] > 0.5
    assert rep.streams[camera.url]["drops"] == {}


def test_sources_added_and_removed_while_the_run_is_live(camera):
    """A live run steered by a RunControl: a file stream from the start, a loopback camera added once the
    run is up and removed after 10 of its results, a bad source added (a named failure, the others go on);
    the run lasts until stop(), and every stream's counts are in the report."""
    from posefuse import RunConfig, RunControl, run

    clip = helpers.data_path(CLIP)
    control = RunControl()
    got: dict = {}
    removed = threading.Event()

    def on_result(r):
        got.setdefault(r.stream, []).append(r.index)
        if r.stream == "cam" and len(got["cam"]) == 10 and not removed.is_set():
            removed.set()
            control.remove_source("cam")

    reports = []
    worker = threading.Thread(target=lambda: reports.append(run(
        RunConfig(sources=[clip], max_frames=40, runner="dynamic", batch=4, imgsz=320, device="cpu", progress=False,
                  reconnect_s=5), on_result=on_result, control=control)), daemon=True)
    worker.start()
    try:
        _steer(control, camera, clip, got, removed, worker)
    finally:
        control.stop()
        worker.join(60)
    rep = reports[0]
    assert not worker.is_alive() and not rep.interrupted
    assert got["cam"] == list(range(len(got["cam"]))) and rep.streams["cam"]["results"] == len(got["cam"])
    assert "bad" in rep.failed and "bad" in control.failed and "no such file" in rep.failed["bad"]
    with pytest.raises(RuntimeError, match="has stopped"):
        control.add_source(clip, name="late")


def _steer(control, camera, clip, got, removed, worker):
    assert control.wait_started(120)
    assert control.add_source(camera.url, name="cam") == "cam"
    control.add_source("/no/such/file.mp4", name="bad")
    with pytest.raises(ValueError, match="already a stream"):
        control.add_source(clip, name="cam")
    assert removed.wait(60)
    counts = []  # removed: its frames in flight finish (a few batches), then no more come
    for _ in range(40):
        time.sleep(0.5)
        counts.append(len(got["cam"]))
        if len(counts) >= 5 and len(set(counts[-5:])) == 1:
            break
    # at most what was in flight: the frame queue (2 x batch), the batcher's buffer and batch, the result
    # queue (2 batches) and the frame the reader held
    assert len(set(counts[-5:])) == 1 and counts[-1] <= 10 + 8 + 4 + 4 + 8 + 1
    deadline = time.monotonic() + 60
    while len(got.get(clip, [])) < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert got[clip] == list(range(40))  # its source ended; the run goes on (a service) until stop()
    time.sleep(0.5)
    assert worker.is_alive()


def test_a_stream_still_opening_holds_no_stream_added_after_it(camera):
    """Streams a RunControl adds open side by side: a camera that does not answer (its open retries until
    reconnect_s) holds back neither the camera added after it, whose results come while the first is still
    opening, nor the run's stop; the dead one's failure is in the report."""
    from posefuse import RunConfig, RunControl, run

    with socket.socket() as s:  # a port nothing listens on: every connection is refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/cam"
    control, got, reports = RunControl(), {}, []
    worker = threading.Thread(target=lambda: reports.append(run(
        RunConfig(sources=[], runner="dynamic", batch=4, imgsz=320, device="cpu", progress=False, reconnect_s=12,
                  mode="live"), on_result=lambda r: got.setdefault(r.stream, []).append(r.index), control=control)),
        daemon=True)
    worker.start()
    try:
        assert control.wait_started(120)
        control.add_source(dead, name="dead")
        control.add_source(camera.url, name="cam")
        deadline = time.monotonic() + 60
        while len(got.get("cam", [])) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(got.get("cam", [])) >= 5 and "dead" not in control.ended_streams  # still opening
        deadline = time.monotonic() + 60
        while "dead" not in control.ended_streams and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        control.stop()
        worker.join(60)
    rep = reports[0]
    assert not worker.is_alive() and rep.run_error is None
    assert "dead" in rep.failed and dead in rep.failed["dead"], rep.failed
    cam = rep.streams["cam"]
    assert cam["results"] == len(got["cam"]) and got["cam"] == sorted(set(got["cam"]))  # in order, once each
    # a live run drops a frame that waited too long (2 busy cores): every index skipped is a recorded drop
    assert got["cam"][-1] + 1 - len(got["cam"]) <= sum(cam["drops"].values()), cam["drops"]


def test_a_live_run_with_a_stalled_camera_stops_cleanly(tmp_path):
    """stop() while a camera's read is stalled: the reader returns within the read timeout and the run ends
    without a thread left behind."""
    from posefuse import RunConfig, RunControl, run

    url, held = _stalling_server(tmp_path)
    control, got, reports = RunControl(), {}, []
    worker = threading.Thread(target=lambda: reports.append(run(
        RunConfig(sources=[helpers.data_path(CLIP), url], max_frames=40, runner="dynamic", batch=4, imgsz=320,
                  device="cpu", progress=False, reconnect_s=60),
        on_result=lambda r: got.setdefault(r.stream, []).append(r.index), control=control)), daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(got.get(helpers.data_path(CLIP), [])) < 40:
            time.sleep(0.2)
        time.sleep(4.0)  # the camera's 3 s of stream are over: its read stalls
    finally:
        control.stop()
        worker.join(30)
    assert not worker.is_alive() and reports and reports[0].run_error is None, reports and reports[0].failed
    # its 3 s (30 frames): results, or read before the run started (the start-up outlasted them)
    counts = reports[0].streams[url]["source"]
    assert len(got.get(url, [])) + counts["network.frames_before_start"] >= 25
    for c in held:
        c.close()


def test_a_timed_camera_ends_on_time_while_it_reconnects(camera):
    """A run's duration ends a camera's stream even while the camera is down and the source waits to
    reconnect (it would otherwise hold the run for reconnect_s)."""
    from posefuse.runners.sources import looping
    from posefuse.runners.sources.network import open_network

    src = looping(lambda start: open_network(camera.url, reconnect_s=30.0), camera.url, False, 3.0)
    t0 = time.monotonic()
    n = 0
    for parcel in src:
        n += len(parcel)
        for f in parcel:
            f.release()
        if n == 5:
            camera.kill()  # down for good: the source reconnects with backoff until the duration ends it
    assert n >= 5 and time.monotonic() - t0 < 8.0


def test_a_camera_read_late_starts_live_its_earlier_frames_counted_not_queued(camera):
    """Frames a camera sends between the source's open and its first read (a run's start-up) are read and
    discarded, counted: the first frames the run gets come at the camera's pace, not as a backlog burst."""
    import threading

    from posefuse.runners.sources import open_source
    from posefuse.runners.sources.network import BEFORE_START

    src = open_source(camera.url, reconnect_s=30)
    time.sleep(2.0)  # the run's start-up: 20 frames at 10 fr/s
    it = src.frames()
    next(it)
    t0 = time.perf_counter()
    for _ in range(8):
        next(it)
    took = time.perf_counter() - t0  # 8 frame times at 10 fr/s when live; a backlog would come at once
    src.close()
    assert src.counts[BEFORE_START] >= 10 and took >= 0.5

    camera.kill()  # ffmpeg's -listen 1 serves one client: a new camera for the next one
    camera.start()
    closed = open_source(camera.url, reconnect_s=30)  # closed before its first read: its grabbing ends
    closed.close()
    deadline = time.monotonic() + 5.0
    while any(t.name == "posefuse-preroll" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "posefuse-preroll" for t in threading.enumerate())


def test_a_camera_the_run_holds_back_is_blocked_not_stalled(camera):
    """Backpressure (the run holds every row for longer than a stall) never reconnects: the camera's frames
    wait in its socket and the time is counted apart ('network.blocked_s'); a stall (the camera silent:
    test_camera_killed_and_restarted_...) reconnects and counts its gap."""
    from posefuse.runners.sources.decodehost import BLOCKED, ROWS, DecodeHosts
    from posefuse.runners.sources.network import STALL_S

    hp = DecodeHosts(processes=1)
    try:
        src = hp.open("cam", spec=camera.url, reconnect_s=30)
        it = src.frames()
        held = [next(it) for _ in range(ROWS)]  # every row out: the stream waits for the run
        time.sleep(STALL_S + 1.5)
        for f in held:
            f.release()
        more = []
        for _ in range(10):  # each released as it comes: holding ROWS of them would block the stream again
            more.append(next(it))
            more[-1].release()
        assert [f.index for f in held + more] == list(range(ROWS + 10))  # nothing lost, no restart
        assert not any(f.restart for f in more)
        src.close()
        list(it)
        hp.close()  # the stream's counts are in once the processes are closed
        assert src.counts.get("network.reconnects", 0) == 0
        assert src.counts[BLOCKED] >= STALL_S
    finally:
        hp.close()


def test_a_decode_hosts_camera_reports_its_reconnect_while_it_runs(camera):
    """A camera read in a decode host, killed and restarted mid-read: its reconnect and gap reach the run's
    side of the source while the stream goes on (a service's GET /streams shows them), not only at its end."""
    from posefuse.runners.sources.decodehost import BLOCKED, COUNTS_EVERY_S, DecodeHosts

    hp = DecodeHosts(processes=1)
    try:
        src = hp.open("cam", spec=camera.url, reconnect_s=30)
        it = src.frames()
        for _ in range(5):
            next(it).release()
        threading.Thread(target=lambda: (camera.kill(), time.sleep(1.0), camera.start()), daemon=True).start()
        deadline = time.monotonic() + 30
        while not src.counts.get("network.reconnects") and time.monotonic() < deadline:
            next(it).release()  # the frames after the reconnect bring its counts, within COUNTS_EVERY_S
        assert src.counts["network.reconnects"] >= 1 and src.counts["network.disconnected_s"] > 0.5
        assert BLOCKED in src.counts
        t_seen = time.monotonic()
        f = next(it)  # the stream goes on
        f.release()
        assert f.restart is False and time.monotonic() - t_seen < COUNTS_EVERY_S + 5
        src.close()
        list(it)
    finally:
        hp.close()
