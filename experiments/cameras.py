"""Live cameras on loopback for the experiments: ffmpeg serving a clip in a loop as MPEG-TS over HTTP, at a
frame rate of our choosing, one process per camera; and the outages a soak puts them through.

    cams = Cameras(clip, n=100, fps=30.0).start()     # cams.urls: http://127.0.0.1:PORT, one per camera
    with Outages(cams, every_s=60.0):                 # one camera killed and restarted, one stalled, each minute
        ...
    cams.stop()

ffmpeg is the one on PATH, else imageio-ffmpeg's (the device image has neither ffmpeg nor a package index:
the offline bundle carries imageio-ffmpeg's wheel). A camera serves one client (``-listen 1``) and exits when
it leaves; :class:`Outages` restarts any camera whose process has ended, as a camera comes back after a reboot.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time

import cv2


def ffmpeg_exe() -> str:
    """The ffmpeg binary: on PATH, else imageio-ffmpeg's; RuntimeError naming both when there is none."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # noqa: BLE001 - either way there is no ffmpeg
        raise RuntimeError(f"ffmpeg: not on PATH and imageio-ffmpeg has none ({type(e).__name__}: {e})") from e


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on loopback (all held open while they are chosen, so none is chosen twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Camera:
    """One ffmpeg process serving ``clip`` looping at ``fps`` frames/s (``-readrate``: the clip's own rate
    scaled) as MPEG-TS over HTTP on a port of its own."""

    def __init__(self, exe: str, clip: str, rate: float, port: int):
        self.exe, self.clip, self.rate = exe, clip, rate
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Camera":
        self.proc = subprocess.Popen([self.exe, "-hide_banner", "-loglevel", "error", "-readrate", f"{self.rate:g}",
                                      "-stream_loop", "-1", "-i", self.clip, "-c", "copy", "-f", "mpegts",
                                      "-listen", "1", self.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def pause(self, on: bool):
        """Stop (SIGSTOP) or resume (SIGCONT) the camera: a stall, the connection kept open."""
        if self.alive():
            self.proc.send_signal(signal.SIGSTOP if on else signal.SIGCONT)


class Cameras:
    """``n`` cameras of ``clip`` at ``fps`` frames/s each."""

    def __init__(self, clip: str, n: int, fps: float = 30.0):
        cap = cv2.VideoCapture(clip)
        own = cap.get(cv2.CAP_PROP_FPS) or fps
        cap.release()
        exe = ffmpeg_exe()
        self.cams = [Camera(exe, clip, fps / own, port) for port in _free_ports(n)]
        self.fps = fps

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.cams]

    def start(self, settle_s: float = 1.0) -> "Cameras":
        """Start every camera and give them ``settle_s`` to listen (a source that comes early retries)."""
        for c in self.cams:
            c.start()
        time.sleep(settle_s)
        return self

    def stop(self):
        for c in self.cams:
            c.pause(False)
            c.kill()


class Outages:
    """While open: every ``every_s`` seconds one camera is killed (restarted ``down_s`` later) and the next one
    is stalled for ``stall_s`` (SIGSTOP, then SIGCONT), moving on by one camera each time; a camera whose
    process ended (its client left, as a stalled one's does once its client gave up) is restarted. ``log``: (time from start, camera index, event) of every outage."""

    def __init__(self, cams: Cameras, every_s: float = 60.0, down_s: float = 5.0, stall_s: float = 10.0,
                 first_s: float | None = None):
        if not (0 < down_s < every_s and 0 < stall_s < every_s):
            raise ValueError(f"down_s {down_s:g} and stall_s {stall_s:g}: expected each > 0 and < every_s {every_s:g}")
        self.cams, self.every_s, self.down_s, self.stall_s = cams, every_s, down_s, stall_s
        self.first_s = every_s if first_s is None else first_s
        self.log: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outages", daemon=True)

    def __enter__(self):
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def _note(self, k: int, event: str):
        self.log.append((round(time.monotonic() - self.t0, 2), k, event))

    def _run(self):
        cams, n, turn = self.cams.cams, len(self.cams.cams), 0
        next_at = self.t0 + self.first_s
        events: list = []  # (when, action, camera)
        while not self._stop.wait(0.1):
            now = time.monotonic()
            if now >= next_at and n >= 2:
                kill, stall = turn % n, (turn + 1) % n
                cams[kill].kill()
                self._note(kill, "killed")
                events.append((now + self.down_s, "restart", kill))
                cams[stall].pause(True)
                self._note(stall, "stalled")
                events.append((now + self.stall_s, "resume", stall))
                turn, next_at = turn + 1, next_at + self.every_s
            for ev in [e for e in events if e[0] <= now]:
                events.remove(ev)
                _, action, k = ev
                if action == "restart":
                    cams[k].start()
                    self._note(k, "restarted")
                else:
                    cams[k].pause(False)
                    self._note(k, "resumed")
            pending = {k for _, _, k in events}
            for k, c in enumerate(cams):  # a camera whose client left exits: it comes back
                if k not in pending and not c.alive():
                    c.start()
        for _, action, k in events:
            if action == "resume":
                cams[k].pause(False)
