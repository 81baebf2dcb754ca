"""What the card's memory holds per NVDEC stream and per decode host: why 250 paced NVDEC streams fail to open.

    python experiments/nvdec_memory.py [--decoders 64] [--processes 8] [--clip one-by-one-person-detection.mp4]
        -> results/nvdec_memory.{json,md}

Decoders: in this process, ``decoders`` SimpleDecoders opened one after another as runners/sources/nvdec.py
opens them (own CUDA stream, device memory, NV12), each decoding its first frame; the card's free memory
(cudaMemGetInfo) after each. Processes: ``processes`` spawned processes that each import torch, initialize
CUDA and open one decoder, as a decode host does; the card's free memory after each has reported. Prints a
JSON line and records it: MiB per decoder and per process (medians of the steps), the first failure where
one failed.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics


def _free_mib() -> float:
    import torch

    return torch.cuda.mem_get_info()[0] / 2**20


def _open(path: str):
    import PyNvVideoCodec as nvc
    import torch

    s = torch.cuda.Stream()
    dec = nvc.SimpleDecoder(path, gpu_id=0, cuda_stream=s.cuda_stream, use_device_memory=True,
                            output_color_type=nvc.OutputColorType.NATIVE)
    dec.get_batch_frames(1)
    s.synchronize()
    return dec, s


def _host(path: str, ready, done):
    import torch

    torch.cuda.init()
    torch.zeros(1, device="cuda")
    held = _open(path)
    ready.put(True)
    done.wait()  # the decoder held until the parent has measured
    return held


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decoders", type=int, default=64)
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--clip", default="one-by-one-person-detection.mp4")
    ap.add_argument("--out-dir", default=None, help="default: results/")
    a = ap.parse_args(argv)
    import torch

    import harness

    path = harness.data_path(a.clip)
    torch.zeros(1, device="cuda")
    out = {"clip": a.clip, "card": torch.cuda.get_device_name(0), "free_mib_start": _free_mib()}
    steps, held, failed = [], [], None
    before = _free_mib()
    for i in range(a.decoders):
        try:
            held.append(_open(path))
        except Exception as e:  # noqa: BLE001 - the failure is the finding
            failed = f"decoder {i + 1}: {type(e).__name__}: {e}"
            break
        now = _free_mib()
        steps.append(before - now)
        before = now
    out.update(decoders=len(held), decoder_mib_median=statistics.median(steps) if steps else None,
               decoder_mib_first=steps[0] if steps else None, decoders_mib_total=sum(steps), decoder_failed=failed)
    held.clear()
    torch.cuda.synchronize()
    ctx = mp.get_context("spawn")
    done, ready, procs, psteps = ctx.Event(), ctx.Queue(), [], []
    before = _free_mib()
    pfailed = None
    for i in range(a.processes):
        p = ctx.Process(target=_host, args=(path, ready, done), daemon=True)
        p.start()
        procs.append(p)
        try:
            ready.get(timeout=120)
        except Exception as e:  # noqa: BLE001 - a process that did not report (it died or hung) ends the count
            pfailed = f"process {i + 1}: {type(e).__name__}, exit code {p.exitcode}"
            break
        now = _free_mib()
        psteps.append(before - now)
        before = now
    done.set()
    for p in procs:
        p.join(30)
    out.update(processes=len(psteps), process_mib_median=statistics.median(psteps) if psteps else None,
               process_mib_steps=[round(x) for x in psteps], process_failed=pfailed)
    print(json.dumps(out), flush=True)
    run = harness.new_run("nvdec_memory.py", argv, **out)
    harness.record(a.out_dir or harness.RESULTS, "nvdec_memory", run, markdown)


def markdown(runs: list) -> str:
    import harness

    lines = ["# GPU memory per NVDEC decoder and per decode host", "",
             "Free memory (cudaMemGetInfo) after each decoder opened in one process, and after each spawned process "
             "that imports torch, initializes CUDA and opens one decoder, as a decode host does. Each run below is one "
             "command.", ""]
    for r in reversed(runs):
        lines += harness.run_heading(r)
        lines += ["| clip | decoders | MiB per decoder (median; first) | processes | MiB per process (median) "
                  "| failed |",
                  "|---|---:|---:|---:|---:|---|",
                  f"| {r['clip']} | {r['decoders']} | {r['decoder_mib_median']:.1f}; {r['decoder_mib_first']:.1f} | "
                  f"{r['processes']} | {r['process_mib_median']:.0f} | "
                  f"{r.get('decoder_failed') or r.get('process_failed') or '-'} |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
