"""GPU and host usage sampling for the PerformanceMonitor: NVML (``nvidia-ml-py``) utilization, NVDEC
engine utilization and memory per GPU, psutil CPU and resident memory of this process. Both are optional:
without them the fields are None.

A background thread samples every ``period`` seconds; ``summary()`` gives mean/max per quantity.
"""
from __future__ import annotations

import datetime
import platform
import subprocess
import threading
import time


def _nvml_handles(indices):
    try:
        import pynvml

        pynvml.nvmlInit()
        n = pynvml.nvmlDeviceGetCount()
        idx = list(range(n)) if indices is None else [i for i in indices if 0 <= i < n]
        return pynvml, [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in idx]
    except Exception:  # no NVML library, no driver, or nvidia-ml-py not installed
        return None, []


def gpu_indices_in_use() -> list[int] | None:
    """NVML indices of the GPUs this process may use (CUDA_VISIBLE_DEVICES, when it lists indices)."""
    import os

    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is None or vis == "":
        return None
    try:
        return [int(v) for v in vis.split(",")]
    except ValueError:  # UUIDs: sample every GPU
        return None


class UsageSampler:
    """Samples GPU utilization (%), NVDEC engine utilization (%: the video decoders' busy share, what
    says whether an NVDEC run is decoder-bound; none where the GPU does not report it), GPU memory used
    (MiB, whole device, NVML), CPU (% of one core) and resident memory (MiB; ``rss_children_mib`` the
    children's part) of this process and its child processes (the decode hosts; shared rows count in each
    process that maps them) every ``period`` seconds in a daemon thread, folded into a count, sum and
    maximum per quantity as they come: constant memory however long the run (a day's samples kept as dicts
    would be ~170 MB)."""

    QUANTITIES = {"gpu_util": lambda v: sum(v) / len(v), "nvdec_util": lambda v: sum(v) / len(v),
                  "gpu_mem_mib": sum, "cpu_percent": float, "rss_mib": float}

    def __init__(self, period: float = 0.25, gpus: list[int] | None = None):
        self.period = period
        self.folded: dict[str, list] = {}  # quantity -> [samples, sum, max]
        self.count = 0
        self._fold_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._nvml, self._handles = _nvml_handles(gpus if gpus is not None else gpu_indices_in_use())
        try:
            import psutil

            self._proc = psutil.Process()
            self._proc.cpu_percent(None)
        except Exception:  # psutil is optional
            self._proc = None
        self._children: dict = {}  # pid -> (psutil.Process, ours), kept so cpu_percent measures since the last sample

    def sample(self) -> dict:
        s = {"t": time.perf_counter()}
        if self._handles:
            util, dec, mem = [], [], []
            for _i, h in self._handles:
                try:
                    u = self._nvml.nvmlDeviceGetUtilizationRates(h).gpu
                    m = self._nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
                except Exception:  # a transient NVML error: skip this GPU's sample
                    continue
                util.append(u)
                mem.append(m)
                try:
                    dec.append(self._nvml.nvmlDeviceGetDecoderUtilization(h)[0])  # (percent, sampling period us)
                except Exception:  # not reported (a GPU without NVDEC, a MIG slice) or a transient error
                    pass
            s["gpu_util"] = util
            s["nvdec_util"] = dec
            s["gpu_mem_mib"] = mem
        if self._proc is not None:
            try:
                cpu, rss = self._proc.cpu_percent(None), self._proc.memory_info().rss
                cpu_c, rss_c = self._sample_children()
                s["cpu_percent"], s["rss_mib"] = cpu + cpu_c, (rss + rss_c) / 2**20
                s["rss_children_mib"] = rss_c / 2**20
            except Exception:
                pass
        return s

    def _sample_children(self) -> tuple[float, int]:
        """(CPU %, resident bytes) of the child processes this package spawned (multiprocessing's: decode
        processes; not, say, a benchmark's ffmpeg cameras); a child's first sample starts its CPU clock."""
        cpu, rss, alive = 0.0, 0, {}
        for c in self._proc.children(recursive=True):
            try:
                known = self._children.get(c.pid)
                if known is None:
                    ours = "multiprocessing" in " ".join(c.cmdline())
                    if ours:
                        c.cpu_percent(None)
                    known = (c, ours)
                elif known[1]:
                    cpu += known[0].cpu_percent(None)
                if known[1]:
                    rss += known[0].memory_info().rss
                alive[c.pid] = known
            except Exception:  # it ended meanwhile
                continue
        self._children = alive
        return cpu, rss

    def fold(self, s: dict):
        """Adds one sample to the aggregates (each GPU quantity reduced over the GPUs first)."""
        with self._fold_lock:
            self.count += 1
            for key, reduce in self.QUANTITIES.items():
                if s.get(key) is not None and s[key] != []:  # a 0% sample counts; no GPU sampled does not
                    v = reduce(s[key])
                    agg = self.folded.setdefault(key, [0, 0.0, v])
                    agg[0] += 1
                    agg[1] += v
                    agg[2] = max(agg[2], v)

    def _loop(self):
        while not self._stop.wait(self.period):
            self.fold(self.sample())

    def start(self):
        if self._thread is None and (self._handles or self._proc is not None):
            self._thread = threading.Thread(target=self._loop, name="posefuse-usage", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * self.period + 1)

    def summary(self) -> dict:
        """Means and maxima over the samples so far (None where nothing was sampled)."""
        with self._fold_lock:
            folded = {k: list(v) for k, v in self.folded.items()}
            count = self.count

        def agg(key):
            n, total, top = folded.get(key, (0, 0.0, None))
            return {"mean": total / n if n else None, "max": top}

        return {"samples": count, "gpu_util_percent": agg("gpu_util"), "nvdec_util_percent": agg("nvdec_util"),
                "gpu_mem_used_mib": agg("gpu_mem_mib"),
                "gpus_sampled": [i for i, _ in self._handles], "cpu_percent": agg("cpu_percent"),
                "rss_mib": agg("rss_mib")}


def environment() -> dict:
    """Card, driver, library versions and date: written beside every recorded figure."""
    import torch

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "torch": torch.__version__}
    for mod in ("cupy", "numba", "cv2", "ultralytics", "torchvision", "PyNvVideoCodec"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:
            env[mod] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpus=torch.cuda.device_count(), card=p.name, sm_count=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2**30, 1), cuda_runtime=torch.version.cuda)
        try:  # nvidia-smi prints one line per GPU; the driver is the same for all
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
            env["driver"] = out.splitlines()[0] if out else None
        except Exception:
            env["driver"] = None
    return env


def nvdec_available() -> str | None:
    """None when NVDEC decoding can run here, else why not."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import PyNvVideoCodec  # noqa: F401
    except Exception as e:  # not installed, or its CUDA libraries do not load
        return f"PyNvVideoCodec cannot be imported ({type(e).__name__}: {e}); install the 'video' extra"
    return None
