"""A short eager run of the pipeline for profilers: every stage inside its NVTX range (posefuse domain).

    python experiments/profile_stages.py [--batches 3] [--batch 8] [--backend cupy]

Eager (cuda_graph=False) so each kernel launch sits inside its stage's range; see experiments/profile.sh.
"""
import argparse


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--backend", default="cupy")
    a = ap.parse_args()
    import torch

    from posefuse.fusion import PosePipeline
    from posefuse.fusion.stages import nvtx_enabled
    import harness as helpers

    frames = helpers.read_video(helpers.data_path("one-by-one-person-detection.mp4"), 200)[150 : 150 + a.batch]
    pipe = PosePipeline(backend=a.backend, cuda_graph=False)
    for _ in range(a.batches):
        res = pipe(frames)
    torch.cuda.synchronize()
    print(f"nvtx ranges: {'on' if nvtx_enabled() else 'OFF (install nvtx)'}; {sum(len(r) for r in res)} poses in last batch")


if __name__ == "__main__":
    main()
