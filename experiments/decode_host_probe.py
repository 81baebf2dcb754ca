"""NVDEC through the decode machinery alone: 8 NVDEC sources of a clip (the production path,
``open_source(..., decoder='nvdec')``), each read on a thread of its own and every frame released at once;
prints the frames/s, the CPU seconds per frame of this process and of its decode children (psutil), the
decoders' own stats per frame (time in the decoder calls, waiting for a free row), and each stream's time in
its decoder calls beside when its first and last frames came (a stream that ends late either decoded
slower or was delivered late).

    python experiments/decode_host_probe.py new CLIP [--per N] [--chunk 64]     # this checkout's DecodeHosts
    PYTHONPATH=.old python experiments/decode_host_probe.py old CLIP            # an old checkout's default

``--per``: NVDEC streams per GPU decode host (0: one host for all; default: the checkout's default).
``--seconds``: each stream loops its clip for that long (this checkout only), a run long enough to profile.
``--gpu-load``: while the streams are read, a process of its own replays the pose pipeline on a batch of
the clip's frames without pause (as a run's GPU worker does, in a CUDA context beside the decode hosts');
prints the pipeline's frames/s beside the decoders'. The decoders' rate with the load against without it
says how much of the end-to-end loss is the GPU's sharing between the contexts rather than the machinery.
Figures: results/decode_hosts.md.
"""
from __future__ import annotations

import argparse
import os
import time

import harness


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", choices=("new", "old"))
    ap.add_argument("clip")
    ap.add_argument("--per", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--gpu-load", action="store_true", help="replay the pose pipeline in this process meanwhile")
    ap.add_argument("--batch", type=int, default=64, help="--gpu-load: the pipeline's batch")
    a = ap.parse_args(argv)
    if a.seconds is not None and a.which == "old":
        ap.error("--seconds: the old checkout's sources do not loop")
    import psutil

    from posefuse.runners.sources import open_source
    from runners_bench import read_released

    load = GpuLoad(a.clip, a.batch) if a.gpu_load else None
    kw = {}
    if a.which == "new" and a.per is not None:
        from posefuse.runners.sources.decodehost import DecodeHosts

        kw["decode_hosts"] = DecodeHosts(gpu_streams_per_process=a.per)
    if a.seconds is None:
        srcs = [open_source(a.clip, decoder="nvdec", chunk=a.chunk, **kw) for _ in range(a.streams)]
    else:
        from posefuse.runners.sources.nvdec import open_nvdec

        srcs = [open_nvdec(a.clip, chunk=a.chunk, loop=True, duration_s=a.seconds, **kw) for _ in range(a.streams)]
    me = psutil.Process()
    kids = [k for k in harness.decode_hosts() if load is None or k.pid != load.proc.pid]  # not the load
    c0, p0 = harness.cpu_seconds(kids), harness.cpu_seconds([me])
    if load is not None:
        load.start()
    r = read_released(srcs)
    c1, p1 = harness.cpu_seconds(kids), harness.cpu_seconds([me])
    pipe_fps = load.stop() if load is not None else None
    n, wall = r["frames"], r["wall_s"]
    print(f"{a.which} per={a.per} chunk={a.chunk} {os.path.basename(a.clip)}: {n} frames {n / wall:.0f} fr/s; "
          f"children {len(kids)} cpu {(c1 - c0) / n * 1e6:.1f} us/frame ({(c1 - c0) / wall:.2f} cores); "
          f"parent {(p1 - p0) / n * 1e6:.1f} us/frame"
          + ("" if pipe_fps is None else f"; beside the pipeline replayed at {pipe_fps:.0f} fr/s (batch {a.batch})"),
          flush=True)
    print("  streams' first and last frame, ms after the start: "
          + ", ".join(f"{1e3 * a_:.0f}-{1e3 * b_:.0f}" for a_, b_ in r["spans_s"]), flush=True)
    time.sleep(0.5)  # the streams' ends (and their stats) come in
    stats: dict = {}
    for s in srcs:
        for k, v in s.stats.items():
            if isinstance(v, (int, float)):
                stats[k] = stats.get(k, 0.0) + v
    print("  decoder stats, us per frame (summed over streams): "
          + ", ".join(f"{k.split('.')[-1]} {v / n * 1e6:.1f}" for k, v in sorted(stats.items())), flush=True)
    print("  each stream's seconds in its decoder calls: "
          + ", ".join(f"{s.stats.get('video_decode.decoder', 0.0):.3f}" for s in srcs), flush=True)
    for s in srcs:
        s.close()
    os._exit(0)  # the decode children end with this process


class GpuLoad:
    """The pose pipeline replayed without pause in a process of its own: a batch of the clip's NV12 frames
    (decoded once, kept on the GPU), as runners_bench.pipeline_alone measures it (its
    :func:`~runners_bench.replay`), built and captured before the clock. A process, not a thread: its own
    CUDA context beside the decode hosts', as a run's pipeline is, and its own GIL (on a thread of this
    process the 8 readers' loops held the GIL and the replay ran at 59-357 fr/s, results/decode_hosts.md)."""

    def __init__(self, clip: str, batch: int):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.ready, self.go, self.halt, self.out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_replay_process, args=(clip, batch, self.ready, self.go, self.halt, self.out),
                                daemon=True)
        self.proc.start()
        if not self.ready.wait(180):
            raise SystemExit("--gpu-load: the pipeline's process did not capture its graph within 180 s")

    def start(self):
        self.go.set()

    def stop(self) -> float:
        """Ends the load; its frames/s while it ran."""
        self.halt.set()
        n, wall = self.out.get(timeout=60)
        self.proc.join(10)
        return n / max(wall, 1e-9)


def _replay_process(clip: str, batch: int, ready, go, halt, out):
    """GpuLoad's process: capture, say so, wait for the start, replay until halted, send (frames, wall s)."""
    from runners_bench import captured_batch, replay

    pipe, frames = captured_batch(clip, batch)
    ready.set()
    go.wait()
    out.put(replay(pipe, frames, lambda _: not halt.is_set()))


if __name__ == "__main__":
    main()
