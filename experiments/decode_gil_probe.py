"""How much of the Python interpreter (the GIL) do NVDEC decoders take, and does ThreadedDecoder free it?

    python experiments/decode_gil_probe.py [--streams 8] [--chunk 64] [--seconds 3]

The end-to-end runner shares one interpreter between the decoders and its own threads. For each decoder
kind (PyNvVideoCodec SimpleDecoder, one thread per stream calling get_batch_frames; ThreadedDecoder, whose
decoding runs in a C++ thread and whose get_batch_frames hands out decoded frames) and clip, it measures,
with ``streams`` decoders looping over the clip:

* decoded frames/s and process CPU seconds per frame;
* the share of the interpreter left to others: a probe thread runs small pure-Python steps; its step rate
  with the decoders running over its rate alone (1.0: the decoders never hold the GIL);
* seconds per get_batch_frames call;
* for ThreadedDecoder: whether frames it returned change or are handed out again while held (the held
  frames are cloned when returned and compared after later calls).

Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time


CLIPS = {"768x432": "one-by-one-person-detection.mp4", "1080p": "one-by-one-person-1080p.mp4"}


def gil_probe(stop: threading.Event, out: list):
    n = 0
    t0 = time.perf_counter()
    while not stop.is_set():
        for _ in range(200):
            pass
        n += 1
    out.append(n / (time.perf_counter() - t0))


def probe_alone(seconds: float) -> float:
    stop, out = threading.Event(), []
    t = threading.Thread(target=gil_probe, args=(stop, out))
    t.start()
    time.sleep(seconds)
    stop.set()
    t.join()
    return out[0]


def make(kind: str, path: str, chunk: int):
    import PyNvVideoCodec as nvc
    import torch

    s = torch.cuda.Stream()
    kw = dict(gpu_id=torch.cuda.current_device(), cuda_stream=s.cuda_stream, use_device_memory=True,
              output_color_type=nvc.OutputColorType.NATIVE)
    if kind == "simple":
        return nvc.SimpleDecoder(path, **kw), s
    return nvc.ThreadedDecoder(path, 2 * chunk, **kw), s


def decoders(kind: str, path: str, streams: int, chunk: int, seconds: float, alone_rate: float) -> dict:
    import torch

    decs = [make(kind, path, chunk) for _ in range(streams)]
    frames = [0] * streams
    calls = [[0, 0.0] for _ in range(streams)]
    stop = threading.Event()

    def run(k):
        dec, s = decs[k]
        while not stop.is_set():
            t0 = time.perf_counter()
            got = dec.get_batch_frames(chunk)
            calls[k][0] += 1
            calls[k][1] += time.perf_counter() - t0
            if not got:  # end of the clip: start over
                dec, s = decs[k] = make(kind, path, chunk)
                continue
            frames[k] += len(got)
        s.synchronize()

    probe_out: list = []
    pstop = threading.Event()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(streams)]
    probe = threading.Thread(target=gil_probe, args=(pstop, probe_out))
    time.sleep(0.5)  # ThreadedDecoder: let its buffers fill, as a pipeline's warm-up would
    cpu0, t0 = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    probe.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    pstop.set()
    probe.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = sum(frames)
    torch.cuda.synchronize()
    return {"frames_per_s": n / wall, "cpu_us_per_frame": cpu / max(1, n) * 1e6, "cpu_cores": cpu / wall,
            "gil_left_to_others": probe_out[0] / alone_rate,
            "ms_per_call": 1e3 * sum(c[1] for c in calls) / max(1, sum(c[0] for c in calls)),
            "frames": n, "wall_s": wall}


def threaded_reuse(path: str, chunk: int, calls: int = 4) -> dict:
    import torch

    dec, s = make("threaded", path, chunk)
    time.sleep(0.3)
    held, clones, ptrs, changed, reused = [], [], [], [], []
    for _ in range(calls):
        got = dec.get_batch_frames(chunk)
        s.synchronize()
        ts = [torch.from_dlpack(f) for f in got]
        new = [t.data_ptr() for t in ts]
        reused.append(len(set(new) & set(ptrs)))
        time.sleep(0.05)  # the background thread decodes on meanwhile
        changed.append(sum(int(not torch.equal(t, c)) for t, c in zip(held, clones)))
        held += ts
        clones += [t.clone() for t in ts]
        ptrs += new
    return {"changed_after_each_call": changed, "pointers_reused_each_call": reused, "shape": list(held[0].shape),
            "stride": list(held[0].stride())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    import harness as helpers

    out = {"probe_steps_per_s_alone": probe_alone(1.0), "streams": a.streams, "chunk": a.chunk}
    for label, clip in CLIPS.items():
        path = helpers.data_path(clip)
        for kind in ("simple", "threaded"):
            try:
                out[f"{label}/{kind}"] = decoders(kind, path, a.streams, a.chunk, a.seconds,
                                                  out["probe_steps_per_s_alone"])
            except Exception as e:  # noqa: BLE001 - a probe: record what failed and go on
                out[f"{label}/{kind}"] = {"error": f"{type(e).__name__}: {e}"}
            print(label, kind, out[f"{label}/{kind}"], file=sys.stderr, flush=True)
        try:
            out[f"{label}/threaded_reuse"] = threaded_reuse(path, 16)
        except Exception as e:  # noqa: BLE001
            out[f"{label}/threaded_reuse"] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
