"""posefuse vs Ultralytics predict, same weights and settings, on every frame of the sample footage
(768x432 clip, 1080p clip, GIF) and the images in the ultralytics wheel; fp32 and fp16.

    python experiments/accuracy.py [--device cuda] [--max-frames N] [--out results/accuracy.json]

Same-shape frames go in batches of 32 to both (rect letterbox, as predict uses for same-shape batches).
Targets (fused-pipeline issue): fp32 >= 99.5% matched (box IoU >= 0.98), keypoint mean error <= 0.5 px,
|score diff| <= 0.005, extra detections <= 0.5%; fp16 >= 99% matched, keypoint mean error <= 1.5 px.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import harness as helpers


TARGETS = {"fp32": {"matched_fraction": 0.995, "keypoint_mean_error_px": 0.5, "max_score_diff": 0.005,
                    "extra_fraction": 0.005},
           "fp16": {"matched_fraction": 0.99, "keypoint_mean_error_px": 1.5}}


def sources(max_frames: int | None):
    n = max_frames or 10**6
    yield "one-by-one-person-detection.mp4", helpers.read_video(helpers.data_path("one-by-one-person-detection.mp4"), n)
    yield "one-by-one-person-1080p.mp4", helpers.read_video(helpers.data_path("one-by-one-person-1080p.mp4"), n)
    yield "face-demographics-walking.gif", helpers.read_gif(helpers.data_path("face-demographics-walking.gif"))[:n]
    yield "ultralytics-assets", helpers.asset_images()


def check(summary: dict, precision: str) -> dict:
    t = TARGETS[precision]
    out = {}
    for k, v in t.items():
        out[k] = summary[k] >= v if k == "matched_fraction" else summary[k] <= v
    return out


def run(device: str, max_frames: int | None, batch: int = 32) -> dict:
    import torch

    from posefuse.fusion import PosePipeline
    from posefuse.fusion.accuracy import AccuracyTally, ultralytics_results
    from posefuse.fusion.backbone import load_ultralytics

    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
              "command": "python experiments/accuracy.py" + (f" --max-frames {max_frames}" if max_frames else ""),
              "settings": {"conf": 0.25, "iou": 0.7, "imgsz": 640, "batch": batch}, "precisions": {}}
    yolo = load_ultralytics()
    for precision in (("fp32", "fp16") if device == "cuda" else ("fp32",)):
        half = precision == "fp16"
        pipe = PosePipeline(device=device, precision=precision)
        per_source, total = {}, AccuracyTally()
        for name, frames in sources(max_frames):
            tally = AccuracyTally()
            groups = [frames[i : i + batch] for i in range(0, len(frames), batch)] if name != "ultralytics-assets" \
                else [[f] for f in frames]
            for g in groups:
                ours = pipe(list(g))
                theirs = ultralytics_results(yolo.predict(list(g), verbose=False, conf=0.25, iou=0.7, quantize=16 if half else None,
                                                          device=0 if device == "cuda" else "cpu"))
                for o, t in zip(ours, theirs):
                    tally.add(o, t)
                    total.add(o, t)
            per_source[name] = tally.summary()
        s = total.summary()
        report["precisions"][precision] = {"backend": pipe.backend, "cuda_graph": pipe.cuda_graph, "all": s,
                                           "targets": TARGETS[precision], "met": check(s, precision),
                                           "per_source": per_source}
        print(precision, json.dumps(s), check(s, precision))
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--out", default=str(helpers.RESULTS / "accuracy.json"))
    a = ap.parse_args()
    rep = run(a.device, a.max_frames)
    Path(a.out).write_text(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
