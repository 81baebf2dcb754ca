"""Does PyNvVideoCodec's SimpleDecoder reuse the memory of frames it returned once it is asked for more?
The NVDEC source's copy into its own frame pool (runners/sources/nvdec.py) rests on the answer.

    python experiments/nvdec_probe.py [--chunk 16] [--calls 4]

Decodes ``calls`` chunks, holding every frame; after each call, checks whether frames of earlier chunks
changed (content against a clone taken when they were returned) and whether their device pointers were
handed out again. Prints a JSON verdict.
"""
from __future__ import annotations

import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--calls", type=int, default=4)
    a = ap.parse_args()
    import PyNvVideoCodec as nvc
    import torch

    import harness as helpers

    out = {}
    for clip in ("one-by-one-person-detection.mp4", "one-by-one-person-1080p.mp4"):
        s = torch.cuda.Stream()
        dec = nvc.SimpleDecoder(helpers.data_path(clip), gpu_id=0, cuda_stream=s.cuda_stream, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.NATIVE)
        held, clones, ptrs, changed, reused = [], [], [], [], []
        for c in range(a.calls):
            frames = dec.get_batch_frames(a.chunk)
            s.synchronize()
            ts = [torch.from_dlpack(f) for f in frames]
            new_ptrs = [t.data_ptr() for t in ts]
            reused.append(len(set(new_ptrs) & set(ptrs)))
            changed.append(sum(int(not torch.equal(t, cl)) for t, cl in zip(held, clones)))
            held += ts
            clones += [t.clone() for t in ts]
            ptrs += new_ptrs
        out[clip] = {"frames_held": len(held), "changed_after_each_call": changed, "pointers_reused_each_call": reused,
                     "shape": list(held[0].shape), "stride": list(held[0].stride()), "dtype": str(held[0].dtype),
                     "distinct_pointers": len(set(ptrs))}
    out["verdict"] = ("held frames stay valid across calls" if all(
        not any(v["changed_after_each_call"]) and not any(v["pointers_reused_each_call"])
        for k, v in out.items() if isinstance(v, dict)) else "the decoder reuses returned frames' memory")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
