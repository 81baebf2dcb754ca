"""Regenerate README.md's results section from results/*.json (between the results markers).

    python experiments/readme_results.py
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:begin (experiments/readme_results.py) -->", "<!-- results:end -->"


def _latest(name):
    p = ROOT / "results" / f"{name}.json"
    return json.loads(p.read_text())["runs"][-1] if p.exists() else None


def _env(run):
    e = run["environment"]
    return (f"{e.get('card')}, driver {e.get('driver')}, torch {e.get('torch')}, cupy {e.get('cupy')}, "
            f"numba {e.get('numba')}, OpenCV {e.get('cv2')}, ultralytics {e.get('ultralytics')}; {e.get('date')}")


def _row(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return {}


def section() -> str:
    out = [BEGIN, ""]
    k = _latest("kernels")
    if k:
        rows = k["rows"]
        out += [f"**Kernels** ([results/kernels.md](results/kernels.md)): {_env(k)}.", "",
                "| kernel | batch | CuPy | Numba | torch / torchvision | Ultralytics (CPU cv2 / NMS) |",
                "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for b in (1, 64, 256):
            lb = {i: _row(rows, kernel="letterbox", src="768x432", batch=b, impl=i) for i in ("cupy", "numba", "torch", "ultralytics_cv2")}
            out.append(f"| letterbox 768x432 -> 640x640 fp16, frames/s | {b} | "
                       + " | ".join(f"{lb[i].get('frames_per_s', 0):,.0f}" for i in lb) + " |")
        for b in (1, 64, 256):
            dn = {i: _row(rows, kernel="decode_nms_rescale", batch=b, impl=i) for i in ("cupy", "numba", "torchvision", "ultralytics")}
            out.append(f"| decode + NMS + rescale, us/frame | {b} | "
                       + " | ".join(f"{dn[i].get('us_per_frame', 0):,.2f}" for i in dn) + " |")
        out += ["", "| target | measured | met |", "| --- | ---: | --- |"]
        out += [f"| {t['target']} | {t['measured']} | {t['met']} |" for t in k["targets"]]
        out.append("")
    p = _latest("pipeline")
    if p:
        rows = p["rows"]
        out += [f"**Fused pipeline** ([results/pipeline.md](results/pipeline.md)): yolo11n-pose fp16, 768x432 clip, "
                f"rect 384x640; {_env(p)}.", "",
                "| | frames/s | note |", "| --- | ---: | --- |"]
        for impl, b, note in (("backbone_alone", 64, "the ceiling: same module, CUDA graph"),
                              ("posefuse", 64, "GPU uint8 frames -> poses in host memory"),
                              ("backbone_alone", 256, ""), ("posefuse", 256, ""),
                              ("ultralytics_predict", 64, "predict(half=True), host frames")):
            r = _row(rows, impl=impl, batch=b)
            out.append(f"| {impl} bs{b} | {r.get('frames_per_s', 0):,.0f} | {note} |")
        lat = _row(rows, impl="posefuse", batch=1)
        ul = _row(rows, impl="ultralytics_predict", batch=1)
        out.append(f"| latency bs1 (host frame -> host results), p50 / p99 ms | {lat.get('latency_ms_p50', 0):.2f} / "
                   f"{lat.get('latency_ms_p99', 0):.2f} | Ultralytics predict: {ul.get('latency_ms_p50', 0):.2f} ms |")
        mem = [_row(rows, impl="posefuse_memory", batch=b) for b in (1, 64, 256)]
        out.append("| peak GPU memory bs1 / 64 / 256 (MiB) | " + " / ".join(f"{m.get('peak_gpu_mib', 0):,.0f}" for m in mem)
                   + f" | allocations per batch after warm-up: {', '.join(str(m.get('steady_state_allocations')) for m in mem)} |")
        out += ["", "| target | measured | met |", "| --- | ---: | --- |"]
        out += [f"| {t['target']} | {t['measured']} | {t['met']} |" for t in p["targets"]]
        out.append("")
    a = ROOT / "results" / "accuracy.json"
    if a.exists():
        acc = json.loads(a.read_text())
        out += [f"**Accuracy against Ultralytics predict** ([results/accuracy.json](results/accuracy.json)), every frame of "
                f"the sample footage and the wheel's images; {acc['device']}, {acc['date']}.", "",
                "| precision | frames | their detections | matched (IoU >= 0.98) | extra | keypoint mean error px | max score diff |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for prec, v in acc["precisions"].items():
            s = v["all"]
            out.append(f"| {prec} | {s['frames']} | {s['their_detections']} | {s['matched_fraction']:.4f} | "
                       f"{s['extra_fraction']:.4f} | {s['keypoint_mean_error_px']:.3f} | {s['max_score_diff']:.4f} |")
        out.append("")
    out.append(END)
    return "\n".join(out)


def main():
    readme = ROOT / "README.md"
    text = readme.read_text()
    i, j = text.index(BEGIN), text.index(END) + len(END)
    readme.write_text(text[:i] + section() + text[j:])


if __name__ == "__main__":
    main()
