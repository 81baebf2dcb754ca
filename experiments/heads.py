"""Every pose family beside each other: YOLOv8 and YOLO11 (``Pose``), YOLO26 (``Pose26``) with NMS and end to
end, on checkpoints built from the ultralytics wheel's yaml files (experiments/pose_models.py; the trained
yolo11n-pose weights too, where --trained).

    python experiments/heads.py [--device cpu|cuda] [--only equality post pipeline e2e] [--frames N]
        [--out-dir results]                                         -> results/heads.{json,md}

* equality: posefuse against Ultralytics ``predict`` with the same options, on the same device and in the
  same precision (fp32 without TF32; fp16 is predict's half=True), on every 10th of the first 10 N frames
  of the 768x432 clip (one person walking in most) and the first 8 of the 1080p one: the fraction of their
  detections we match at IoU >= 0.98, our extra detections, the largest keypoint and score differences
  (fp32; fp16 on a GPU).
* post (GPU): post-processing per frame at batch 64 on the same fp16 head maps: posefuse's decode + NMS
  (end to end: top-k) + rescale against Ultralytics' own (``non_max_suppression``, end to end
  ``Detect.postprocess`` then its end-to-end branch, then ``scale_boxes``/``scale_coords``), Ultralytics
  given the head's decoded output for free, as in tests/benchmarks/test_bench_kernels.py.
* pipeline (GPU): the pipeline alone, frames on the GPU -> poses in host memory, batch 64, two in flight.
* e2e (GPU): ``posefuse.run`` of 8 streams of the clip (the run's defaults), frames/s.

Targets (issue 34): every predict detection matched (IoU >= 0.98), keypoints within 0.5 px (fp32), no extra
detection; YOLO26 end-to-end post-processing >= 50x Ultralytics'.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np

import harness
import pose_models

FAMILIES = (("yolov8n-pose", False), ("yolo11n-pose", False), ("yolo26n-pose", False), ("yolo26n-pose", True))
SECTIONS = ("equality", "post", "pipeline", "e2e")


def label(arch: str, end2end: bool) -> str:
    return arch + (" end2end" if end2end else "")


def equality(models: dict, device: str, precision: str, n: int) -> list:
    from ultralytics import YOLO

    from posefuse import PosePipeline
    from posefuse.fusion.accuracy import AccuracyTally, ultralytics_results

    import torch

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"  # fp32 is fp32
    frames = harness.read_video(harness.data_path(harness.CLIP), 10 * n)[::10] + harness.read_video(
        harness.data_path(harness.CLIP_1080), 8)
    rows = []
    for arch, e2e in FAMILIES:
        yolo = YOLO(str(models[arch]))
        pipe = PosePipeline(str(models[arch]), device=device, precision=precision, end2end=e2e or None)
        tally = AccuracyTally()
        for i in range(0, len(frames), 16):
            batch = frames[i:i + 16]
            for f, ours in zip(batch, pipe(batch)):
                tally.add(ours, ultralytics_results(yolo.predict(f, verbose=False, conf=0.25, iou=0.7, device=device,
                                                                 half=precision == "fp16",
                                                                 nms=False if e2e else None))[0])
        rows.append({"model": label(arch, e2e), "head": pipe.head.variant, "device": device,
                     "precision": pipe.precision, **tally.summary()})
        print(rows[-1], flush=True)
    return rows


def _head_maps(path: str, e2e: bool, frames):
    import torch

    from posefuse.fusion.backbone import PoseBackbone, fused, load_ultralytics
    from posefuse.kernels.letterbox import letterbox

    bb = PoseBackbone(fused(load_ultralytics(path).model, e2e or None), e2e or None).cuda().half()
    with torch.no_grad():
        x, rp = letterbox(frames, 640, rect=True, backend="torch")
        return bb, bb(x.half()), rp, tuple(x.shape[2:])


def post(models: dict, batch: int = 64) -> list:
    import torch
    from ultralytics.nn.modules.head import Detect
    from ultralytics.utils import nms as ul_nms
    from ultralytics.utils import ops

    from posefuse.kernels.decode import Candidates, decode, levels_for
    from posefuse.kernels.decode.reference import MAX_NMS, decode_dense_reference
    from posefuse.kernels.nms import Detections, nms_rescale, topk_rescale

    clip = harness.read_video(harness.data_path(harness.CLIP), batch)
    frames = torch.from_numpy(np.stack(clip)).cuda()
    hw = torch.tensor([[432, 768]] * batch, dtype=torch.int32, device="cuda")
    rows = []
    for arch, e2e in FAMILIES:
        bb, raw, rp, shape = _head_maps(str(models[arch]), e2e, frames)
        lv = levels_for(*shape, bb.strides)
        cap = min(raw.shape[2], 300 if e2e else MAX_NMS)
        cands, dets = Candidates.empty(batch, cap, "cuda"), Detections.empty(batch, 300, "cuda")

        def ours():
            decode(raw, lv, 0.25, cap, head=bb.head, backend="cupy", out=cands)
            if e2e:
                topk_rescale(cands, rp, hw, 300, backend="cupy", out=dets)
            else:
                nms_rescale(cands, rp, hw, 0.7, 300, backend="cupy", out=dets)

        dense = decode_dense_reference(raw, lv, bb.head).half()  # the head's own decoded output
        head = Detect(nc=1, ch=(16,))
        head.max_det = 300

        def theirs():
            if e2e:  # Detect.postprocess (top-k) on (B, A, C), then predict's end-to-end branch
                preds = ul_nms.non_max_suppression(head.postprocess(dense.permute(0, 2, 1)), 0.25, 0.7, max_det=300,
                                                   end2end=True)
            else:
                preds = ul_nms.non_max_suppression(dense, 0.25, 0.7, max_det=300, nc=1)
            for p in preds:
                p[:, :4] = ops.scale_boxes(shape, p[:, :4], (432, 768))
                ops.scale_coords(shape, p[:, 6:].view(p.shape[0], 17, 3), (432, 768))
            torch.cuda.synchronize()

        ours_us = harness.cuda_median_ms(ours) * 1e3 / batch
        theirs()
        t, reps = time.perf_counter(), 5
        for _ in range(reps):
            theirs()
        theirs_us = (time.perf_counter() - t) / reps * 1e6 / batch
        rows.append({"model": label(arch, e2e), "batch": batch, "posefuse_us_per_frame": ours_us,
                     "ultralytics_us_per_frame": theirs_us, "speedup": theirs_us / ours_us,
                     "detections_per_frame": float(dets.counts.float().mean())})
        print(rows[-1], flush=True)
    return rows


def pipeline(models: dict, batch: int = 64, calls: int = 20) -> list:
    import torch

    from posefuse import PosePipeline

    clip = harness.read_video(harness.data_path(harness.CLIP), 256)
    frames = torch.from_numpy(np.stack(clip)).cuda()
    rows = []
    for arch, e2e in FAMILIES:
        pipe = PosePipeline(str(models[arch]), device="cuda", backend="cupy", precision="fp16", end2end=e2e or None,
                            batch_sizes=(batch,))
        sets = [frames[i:i + batch] for i in range(0, 256, batch)]
        pipe.warmup((432, 768), batch, device_frames=True)
        for s in sets:
            pipe(s)
        torch.cuda.synchronize()
        rows.append({"model": label(arch, e2e), "batch": batch,
                     "frames_per_s": harness.pipeline_frames_per_s(pipe, sets, calls)})
        print(rows[-1], flush=True)
    return rows


def e2e(models: dict, streams: int = 8) -> list:
    from posefuse import RunConfig, run

    rows = []
    for arch, end2end in FAMILIES:
        # NVDEC as in the earlier runs: decoder auto reads so short a job with OpenCV (STREAMS_NVDEC_MEGAPIXEL_FRAMES)
        rep = run(RunConfig(sources=[harness.data_path(harness.CLIP)], repeat=streams, model=str(models[arch]),
                            end2end=end2end, decoder="nvdec", progress=False))
        rows.append({"model": label(arch, end2end), "streams": streams, "frames": rep.overall["results"],
                     "frames_per_s": rep.overall["frames_per_s"], "ran": rep.ran})
        print(rows[-1], flush=True)
    return rows


def markdown(runs: list) -> str:
    out = ["# Pose families: YOLOv8, YOLO11, YOLO26 (NMS and end to end)", "",
           "Checkpoints built from the ultralytics wheel's yaml files (experiments/pose_models.py). Each run "
           "below is one command; its card and versions are in its heading.", ""]
    for r in reversed(runs):
        out += harness.run_heading(r)
        for sec, cols in (("equality", ("model", "head", "precision", "frames", "their_detections",
                                        "matched_fraction", "extra_fraction", "keypoint_max_error_px",
                                        "max_score_diff")),
                          ("post", ("model", "batch", "posefuse_us_per_frame", "ultralytics_us_per_frame", "speedup",
                                    "detections_per_frame")),
                          ("pipeline", ("model", "batch", "frames_per_s")),
                          ("e2e", ("model", "streams", "frames", "frames_per_s"))):
            rows = r.get(sec)
            if not rows:
                continue
            out += [f"### {sec}", "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
            for row in rows:
                out.append("| " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
            out.append("")
    return "\n".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=None)
    ap.add_argument("--frames", type=int, default=None, help="frames of the 768x432 clip compared (default 64 on "
                                                               "a GPU, 16 on the CPU)")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sections = a.only or (SECTIONS if device == "cuda" else ("equality",))
    run = harness.new_run("heads.py", argv, device=device)
    calib = harness.read_video(harness.data_path(harness.CLIP), 161)[160]
    with tempfile.TemporaryDirectory() as tmp:
        models = {arch: pose_models.make(arch, tmp, calib) for arch in pose_models.ARCHS}
        if "equality" in sections:
            n = a.frames or (64 if device == "cuda" else 16)
            run["equality"] = [row for p in (("fp32", "fp16") if device == "cuda" else ("fp32",))
                               for row in equality(models, device, p, n)]
        if "post" in sections:
            run["post"] = post(models)
        if "pipeline" in sections:
            run["pipeline"] = pipeline(models)
        if "e2e" in sections:
            run["e2e"] = e2e(models)
    harness.record(a.out_dir, "heads", run, markdown)


if __name__ == "__main__":
    sys.exit(main())
