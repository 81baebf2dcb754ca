"""A short eager run of the pipeline for profilers: every stage inside its NVTX range (posefuse domain).

    python experiments/profile_stages.py [--batches 3] [--batch 8] [--backend cupy]

Eager (cuda_graph=False) so each kernel launch sits inside its stage's range; see experiments/profile.sh.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--backend", default="cupy")
    a = ap.parse_args()
    import torch

    from fusion import PosePipeline
    from fusion.nvtx import nvtx_enabled
    from tests import helpers

    frames = helpers.read_video(helpers.data_path("one-by-one-person-detection.mp4"), 200)[150 : 150 + a.batch]
    pipe = PosePipeline(backend=a.backend, cuda_graph=False)
    for _ in range(a.batches):
        res = pipe(frames)
    torch.cuda.synchronize()
    print(f"nvtx ranges: {'on' if nvtx_enabled() else 'OFF (install nvtx)'}; {sum(len(r) for r in res)} poses in last batch")


if __name__ == "__main__":
    main()
