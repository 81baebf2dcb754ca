"""Two questions about PyNvVideoCodec's SimpleDecoder that the NVDEC source (runners/sources/nvdec.py) rests on.

    python experiments/nvdec_probe.py [--chunk 16] [--calls 4]

Buffer reuse: does it reuse the memory of frames it returned once it is asked for more? Decodes ``calls``
chunks, holding every frame; after each call, checks whether frames of earlier chunks changed (content
against a clone taken when they were returned) and whether their device pointers were handed out again.

Frames: are the frames of ``get_batch_frames(n)`` frames k, k+1, ..., from frame 0 and after
``seek_to_index(k)``? Calls of 8 and of 1 and ``get_batch_frames_by_index`` are compared with a fresh
decoder's frames read one per call from frame 0, for starts on and between keyframes. Prints a JSON verdict
for each.
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
    out["seek"] = seek_probe(nvc, torch, helpers)
    print(json.dumps(out, indent=1))


def seek_probe(nvc, torch, helpers, n: int = 24) -> dict:
    """{clip: {start: {way: [frames wrong as (index, the video's frames it equals)]}}} and a verdict per way:
    from frame 0 or after ``seek_to_index(k)``, in ``get_batch_frames`` calls of 8 or of 1, or by
    ``get_batch_frames_by_index``, each against a fresh decoder's frames read one per call."""
    from posefuse.runners.sources.nvdec import nv12_view

    def decoder():
        s = torch.cuda.Stream()
        return nvc.SimpleDecoder(path, gpu_id=0, cuda_stream=s.cuda_stream, use_device_memory=True,
                                 output_color_type=nvc.OutputColorType.NATIVE), s

    def take(frames, s):
        s.synchronize()
        out = [nv12_view(f).clone() for f in frames]
        torch.cuda.synchronize()  # cloned before the decoder's next call
        return out

    def calls_of(size):
        def way(start):
            dec, s = decoder()
            if start:
                dec.seek_to_index(start)
            got = []
            while len(got) < n:
                got += take(dec.get_batch_frames(min(size, n - len(got))), s)
            return got
        return way

    def by_index(start):
        dec, s = decoder()
        return take(dec.get_batch_frames_by_index(list(range(start, start + n))), s)

    ways = {"get_batch_frames(8)": calls_of(8), "get_batch_frames(1)": calls_of(1),
            "get_batch_frames_by_index": by_index}
    out, right = {}, {w: True for w in ways}
    for clip, starts in ((helpers.CLIP, (0, 1, 5, 150, 155, 190)), (helpers.CLIP_1080, (0, 80, 100))):
        path = helpers.data_path(clip)
        dec, s = decoder()
        truth = [take(dec.get_batch_frames(1), s)[0] for _ in range(max(starts) + n)]
        out[clip] = {}
        for start in starts:
            row = {}
            for w, fn in ways.items():
                got = fn(start)
                row[w] = [(start + i, [j for j, t in enumerate(truth) if torch.equal(t, g)])
                          for i, g in enumerate(got) if not torch.equal(g, truth[start + i])]
                right[w] &= not row[w]
            out[clip][str(start)] = row
    out["verdict"] = {w: "frames k, k+1, ... exactly" if ok else "wrong frames" for w, ok in right.items()}
    return out

if __name__ == "__main__":
    main()
