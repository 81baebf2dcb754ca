"""CUDA MPS for a run: the run's process and its decode hosts as clients of one MPS server.

Each NVDEC decode host is a process with a CUDA context of its own, and a GPU gives separate contexts
turns (time slicing), so the pipeline runs slower beside the hosts than alone; under one MPS server the
contexts' work shares the GPU at once. That is why RunConfig.mps 'auto' joins MPS for a run that reads
video files with NVDEC (results/runners.md, results/startup.md: 8 streams end to end and 64 clips as one
job, with and without).

A process joins MPS when CUDA is first initialized in it, so :func:`resolved` runs before anything here
asks torch for a GPU; the decode hosts, spawned later, inherit the environment that points at the server.
An MPS control daemon already serving this user (``CUDA_MPS_PIPE_DIRECTORY``, else the driver's default
folder) is joined as it is; otherwise one is started for this process, in a folder of its own, and told to
quit once the process has ended, however it ends (:func:`watch_exit`; the daemon then waits for its
remaining clients, the decode hosts, to end).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .config import AUTO, ConfigError, job_reads_cpu, no_shared_gpu

CONTROL = "nvidia-cuda-mps-control"
DEFAULT_PIPE = "/tmp/nvidia-mps"  # the driver's folder for the daemon's pipes when the environment names none
START_S = 5.0  # the longest a new daemon takes to open its control pipe


@dataclass(frozen=True)
class Mps:
    """The MPS daemon this process is a client of: its pipe folder and whether this process started it."""

    pipe: str
    started: bool

    def _ask(self, command: str) -> str:
        r = subprocess.run([CONTROL], input=command + "\n", capture_output=True, text=True, timeout=10,
                           env={**os.environ, "CUDA_MPS_PIPE_DIRECTORY": self.pipe})
        return r.stdout

    def clients(self) -> set:
        """The process ids of the daemon's servers' clients."""
        pids: set = set()
        for server in self._ask("get_server_list").split():
            pids.update(int(p) for p in self._ask(f"get_client_list {server}").split() if p.isdigit())
        return pids

    def describe(self) -> str:
        """What the report says: whether this process is a client (it is once its CUDA context exists)."""
        how = "started for this process" if self.started else "already running"
        if os.getpid() in self.clients():
            return f"client of the MPS daemon at {self.pipe} ({how})"
        return (f"not among the clients of the MPS daemon at {self.pipe} ({how}): CUDA was initialized here before "
                f"it joined, or the daemon lists no clients to this user")


_JOINED: Mps | None = None
_WATCHERS: list = []  # watch_exit's processes: each holds a pipe from this one until this one ends
# a watcher: waits for the end of its stdin (the process that started it has ended, however), then runs argv[1:]
# with 'quit' on its stdin
_WATCH = ("import subprocess, sys\n"
          "sys.stdin.buffer.read()\n"
          "subprocess.run(sys.argv[1:], input=b'quit\\n', capture_output=True, timeout=10)\n")


def watch_exit(command: list, env: dict) -> subprocess.Popen:
    """A process, in a session of its own, that runs ``command`` with 'quit' on its stdin once this process
    has ended, however it ends (SIGKILL and the OOM killer too, where exit handlers do not run): it reads
    a pipe whose other end only this process holds, to its end. join() starts one for a daemon it starts,
    so that no daemon outlives the process it was started for."""
    w = subprocess.Popen([sys.executable, "-c", _WATCH, *command], stdin=subprocess.PIPE, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _WATCHERS.append(w)
    return w


def join() -> Mps:
    """Make this process (and the processes it spawns from now on) a client of an MPS daemon: the one
    already serving, else a new one of its own. Raises ConfigError (option 'mps') when CUDA is already
    initialized here or the daemon cannot be found or started."""
    global _JOINED
    if _JOINED is not None:
        return _JOINED
    import torch

    if torch.cuda.is_initialized():
        raise ConfigError("mps", "CUDA is already initialized in this process, so it cannot become an MPS client "
                                 "(use --mps on the command line, or run before any CUDA work)")
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or DEFAULT_PIPE
    if (Path(pipe) / "control").exists():
        _JOINED = Mps(pipe, started=False)
        return _JOINED
    exe = shutil.which(CONTROL)
    if exe is None:
        raise ConfigError("mps", f"{CONTROL} (the NVIDIA driver's MPS daemon) is not on PATH")
    root = Path(tempfile.mkdtemp(prefix="posefuse-mps-"))
    env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(root / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(root / "log")}
    for d in ("pipe", "log"):
        (root / d).mkdir()
    r = subprocess.run([exe, "-d"], env=env, capture_output=True, text=True, timeout=10)
    deadline = time.monotonic() + START_S
    while not (root / "pipe" / "control").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if r.returncode != 0 or not (root / "pipe" / "control").exists():
        shutil.rmtree(root, ignore_errors=True)
        raise ConfigError("mps", f"{CONTROL} -d did not start (exit code {r.returncode}: "
                                 f"{(r.stderr or r.stdout).strip()[:200] or 'no message'})")
    os.environ["CUDA_MPS_PIPE_DIRECTORY"] = env["CUDA_MPS_PIPE_DIRECTORY"]
    os.environ["CUDA_MPS_LOG_DIRECTORY"] = env["CUDA_MPS_LOG_DIRECTORY"]
    _JOINED = Mps(str(root / "pipe"), started=True)
    watch_exit([exe], env)  # told to quit once this process has ended, however it ends
    return _JOINED


def resolved(config):
    """RunConfig ``config`` with its ``mps`` resolved to 'on' (this process joined: :func:`join`) or 'off',
    its option rules checked first, so that a bad combination is named before any daemon starts. 'on'
    raises join's ConfigError; 'auto' joins where :func:`declines` finds no reason not to and the daemon
    can be joined or started, and says why in the copy's ``chosen['mps']``. Called before anything
    initializes CUDA in this process: by the command line and the service before they validate options,
    by ``run()`` before it does (a config resolved before passes through; the daemon stays joined)."""
    config.check()
    if config.mps == "on":
        join()
    if config.mps != AUTO:
        return config
    why = declines(config)
    if why is None:
        try:
            join()
        except ConfigError as e:
            why = e.message
    return dataclasses.replace(config, mps="off" if why else "on", chosen={
        **config.chosen, "mps": why or "the run reads video files with NVDEC in decode hosts, whose CUDA contexts "
                                       "would otherwise take turns with the pipeline's (results/runners.md)"})


def declines(config) -> str | None:
    """Why mps 'auto' leaves RunConfig ``config`` (checked) off MPS, or None where the run reads video files
    with NVDEC in decode hosts on one GPU: read from the options and the job alone, asking nothing of CUDA
    (a process joins only before CUDA starts in it)."""
    from .sources import nvdec_file

    where = no_shared_gpu(config) or ("the ultralytics runner" if config.runner == "ultralytics" else None)
    if where:
        return f"{where}: no decode host shares one GPU with the pipeline"
    if config.decoder == "cpu":
        return "decoder cpu: no NVDEC decode host"
    if not any(nvdec_file(spec) for spec, _ in config.streams()):
        return "no video file among the sources: no NVDEC decode host"
    if config.decoder == AUTO:
        why = job_reads_cpu(config) or (None if importlib.util.find_spec("PyNvVideoCodec") else
                                        "PyNvVideoCodec is not installed")
        if why:
            return f"decoder auto reads this job with OpenCV ({why})"
    if _JOINED is not None:  # a client since an earlier run of this process
        return None
    import torch

    if torch.cuda.is_initialized():
        return "CUDA is already initialized in this process, which can no longer become an MPS client"
    return None
