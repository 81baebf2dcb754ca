"""A crowded clip made from the sample footage (the tracking issue's test clip): a 4x4 mosaic of the 768x432
clip started at 16 offsets spread over it, each tile 480x270, 1920x1080 at the clip's 10 fr/s (ffmpeg's
xstack); and how many people the pipeline finds in each of its frames. The clip is made where it is asked
for (never committed: it is derived footage).

    python experiments/crowd_clip.py --out /tmp/crowd.mp4 [--frames 600] [--imgsz 640 1280] [--device cpu]
                                                                         -> results/crowd.{json,md}
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

import harness

TILES = 16  # a 4x4 grid
TILE = (480, 270)  # w, h: 1920x1080 in all
FPS = 10


def offsets(clip_frames: int, frames: int) -> list[int]:
    """Start frames of the tiles, spread evenly over the part of the clip a tile can play in full."""
    span = max(1, clip_frames - frames)
    return [k * span // TILES for k in range(TILES)]


def make(out: str | Path, frames: int = 600, crf: int = 23) -> Path:
    """Write the mosaic (H.264, yuv420p, quality ``crf``) of ``frames`` frames to ``out``; returns its path."""
    clip = harness.data_path(harness.CLIP)
    starts = offsets(1394, frames)
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    for s in starts:
        cmd += ["-ss", f"{s / FPS:.3f}", "-i", clip]
    scaled = "".join(f"[{k}:v]scale={TILE[0]}:{TILE[1]},setpts=PTS-STARTPTS[v{k}];" for k in range(TILES))
    inputs = "".join(f"[v{k}]" for k in range(TILES))
    cmd += ["-filter_complex", f"{scaled}{inputs}xstack=inputs={TILES}:grid=4x4[out]", "-map", "[out]",
            "-frames:v", str(frames), "-r", str(FPS), "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", str(out)]
    subprocess.run(cmd, check=True)
    return Path(out)


def people_per_frame(path: str | Path, imgsz: int, device: str | None, frames: int) -> list[int]:
    """Detections per frame of the first ``frames`` frames with the default model at ``imgsz``."""
    from posefuse import PosePipeline

    pipe = PosePipeline(device=device, imgsz=imgsz)
    clip = harness.read_video(str(path), frames)
    counts = []
    for i in range(0, len(clip), 16):
        counts += [len(r) for r in pipe(clip[i:i + 16])]
    return counts


def markdown(runs: list) -> str:
    out = ["# The crowded clip: people per frame", "",
           "A 4x4 mosaic of the 768x432 sample clip at 16 start offsets, 1920x1080 (experiments/crowd_clip.py); "
           "people per frame as the default model (yolo11n-pose) finds them.", ""]
    for r in reversed(runs):
        out += harness.run_heading(r)
        out += ["| imgsz | frames | mean | median | max | frames with none |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c in r["counts"]:
            n = np.array(c["per_frame"])
            out.append(f"| {c['imgsz']} | {len(n)} | {n.mean():.1f} | {np.median(n):.0f} | {n.max()} | {(n == 0).sum()} |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="where the clip is written (an .mp4)")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--count-frames", type=int, default=200, help="frames whose people are counted")
    ap.add_argument("--imgsz", type=int, nargs="+", default=[640, 1280])
    ap.add_argument("--device", default=None)
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    path = make(a.out, a.frames)
    run = harness.new_run("crowd_clip.py", argv, offsets=offsets(1394, a.frames), frames=a.frames,
                          counts=[{"imgsz": s, "per_frame": people_per_frame(path, s, a.device, a.count_frames)}
                                  for s in a.imgsz])
    harness.record(a.out_dir, "crowd", run, markdown)
    print(markdown([run]))


if __name__ == "__main__":
    sys.exit(main())
