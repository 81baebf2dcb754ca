"""Clips made from the sample footage (ffmpeg; never committed: derived footage), where they are asked for:
mosaics of the 768x432 clip, each tile the clip from its own start offset (spread over it), at the clip's
10 fr/s (ffmpeg's xstack): the crowded clip of the tracking issue, 4x4 tiles of 480x270 (1920x1080, ~12
people a frame), and the ingest issue's 720p clip, 2x2 tiles of 640x360 (1280x720); and the sample
re-encoded with two B-frames between references (the exact-frame NVDEC test's third clip). Counts how many
people the pipeline finds in each frame of a mosaic.

    python experiments/crowd_clip.py [--mosaic NAME] [--out PATH] [--frames 600] [--imgsz 640 1280] [--device cpu]
                                                                         -> results/crowd.{json,md}
    python experiments/crowd_clip.py --make-all      # every derived clip into the data folder (a GPU
                                                     # machine has no ffmpeg: carry them there)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

import harness

FPS = 10
# name in the data folder -> (tiles a side, tile w, h, H.264 crf): each small enough to travel to a GPU machine
MOSAICS = {"crowd-mosaic-1080p.mp4": (4, 480, 270, 28), "mosaic-720p.mp4": (2, 640, 360, 26)}


def offsets(clip_frames: int, frames: int, tiles: int = 16) -> list[int]:
    """Start frames of ``tiles`` tiles, spread evenly over the part of the clip a tile can play in full."""
    span = max(1, clip_frames - frames)
    return [k * span // tiles for k in range(tiles)]


BFRAMES = "bframes-768x432.mp4"


def bframes(out: str | Path) -> Path:
    """Write the sample clip re-encoded with two B-frames between references (H.264, GOP 48) to ``out``."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", harness.data_path(harness.CLIP), "-c:v", "libx264", "-bf",
                    "2", "-g", "48", "-crf", "30", "-preset", "veryfast", "-an", str(out)], check=True)
    return Path(out)


def mosaic_path(name: str, frames: int = 600) -> str:
    """The data folder's mosaic ``name`` (one of MOSAICS), made there first where it is missing (needs ffmpeg)."""
    p = Path(harness.data_path(name))
    if not p.exists():
        make_mosaic(name, p, frames)
    return str(p)


def make_mosaic(name: str, out: str | Path, frames: int = 600) -> Path:
    """Mosaic ``name`` of MOSAICS (its grid, tile size and quality), ``frames`` frames, written to ``out``."""
    side, w, h, crf = MOSAICS[name]
    return make(out, frames, crf=crf, side=side, tile=(w, h))


def make(out: str | Path, frames: int = 600, crf: int = 23, side: int = 4, tile: tuple = (480, 270)) -> Path:
    """Write the ``side`` x ``side`` mosaic of ``tile`` (w, h) tiles (H.264, yuv420p, quality ``crf``) of
    ``frames`` frames to ``out``; returns its path. The defaults make the crowded clip."""
    clip = harness.data_path(harness.CLIP)
    tiles = side * side
    starts = offsets(1394, frames, tiles)
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    for s in starts:
        cmd += ["-ss", f"{s / FPS:.3f}", "-i", clip]
    scaled = "".join(f"[{k}:v]scale={tile[0]}:{tile[1]},setpts=PTS-STARTPTS[v{k}];" for k in range(tiles))
    inputs = "".join(f"[v{k}]" for k in range(tiles))
    cmd += ["-filter_complex", f"{scaled}{inputs}xstack=inputs={tiles}:grid={side}x{side}[out]", "-map", "[out]",
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
    out = ["# The mosaics: people per frame", "",
           "Mosaics of the 768x432 sample clip, each tile from its own start offset (experiments/crowd_clip.py); "
           "people per frame as the default model (yolo11n-pose) finds them.", ""]
    for r in reversed(runs):
        out += harness.run_heading(r)
        side, w, h, _ = MOSAICS[r.get("mosaic", "crowd-mosaic-1080p.mp4")]
        out += [f"{r.get('mosaic', 'crowd-mosaic-1080p.mp4')}: {side}x{side} tiles of {w}x{h}, "
                f"{side * w}x{side * h}.", ""]
        out += ["| imgsz | frames | mean | median | max | frames with none |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c in r["counts"]:
            n = np.array(c["per_frame"])
            out.append(f"| {c['imgsz']} | {len(n)} | {n.mean():.1f} | {np.median(n):.0f} | {n.max()} | {(n == 0).sum()} |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-all", action="store_true", help="make every derived clip missing from the data folder")
    ap.add_argument("--mosaic", default="crowd-mosaic-1080p.mp4", choices=tuple(MOSAICS))
    ap.add_argument("--out", default=None, help="where the clip is written (default: the data folder, made there "
                                                "only where it is missing)")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--count-frames", type=int, default=200, help="frames whose people are counted")
    ap.add_argument("--imgsz", type=int, nargs="+", default=[640, 1280])
    ap.add_argument("--device", default=None)
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    if a.make_all:
        made = [mosaic_path(name, a.frames) for name in MOSAICS]
        p = Path(harness.data_path(BFRAMES))
        made.append(str(p if p.exists() else bframes(p)))
        print("\n".join(made))
        return 0
    side = MOSAICS[a.mosaic][0]
    path = mosaic_path(a.mosaic, a.frames) if a.out is None else make_mosaic(a.mosaic, a.out, a.frames)
    run = harness.new_run("crowd_clip.py", argv, mosaic=a.mosaic, offsets=offsets(1394, a.frames, side * side),
                          frames=a.frames,
                          counts=[{"imgsz": s, "per_frame": people_per_frame(path, s, a.device, a.count_frames)}
                                  for s in a.imgsz])
    harness.record(a.out_dir, "crowd", run, markdown)
    print(markdown([run]))


if __name__ == "__main__":
    sys.exit(main())
