"""Plots in results/, drawn from the recorded JSON (no GPU needed):

    python experiments/plots.py [--results results]

* phase_table.png       throughput per phase (log scale, speed-up over the baseline)
* latency_cdf.png       per-frame latency CDFs (arrival -> result) per phase/runner
* roofline.png          each letterbox implementation's achieved bandwidth against the measured copy bandwidth
* stage_breakdown.png   where a frame's time goes per phase (Ultralytics' own pre/inference/post timers for the
                        predict rows; CUDA-event stage times per batch divided by the batch size for ours)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOMINAL_BATCH = {"phase2": 32, "phase3": 64}  # the phase table's batch sizes (experiments/phase_table.py)


def latency_cdf(phase: dict, out: Path):
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, pts in phase["latency_cdf_ms"].items():
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlabel("latency, arrival -> result (ms, log)")
    ax.set_ylabel("fraction of frames")
    ax.axvline(50, color="gray", ls=":", lw=0.8)
    ax.legend(fontsize=8)
    ax.set_title(f"latency CDF per phase — {phase['env'].get('card', 'CPU')}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def roofline(kernels: dict, out: Path):
    rows = [r for r in kernels["rows"] if r["kernel"] == "letterbox" and r.get("gb_per_s")]
    bw = max(r["copy_bandwidth_gbs"] for r in rows)
    fig, ax = plt.subplots(figsize=(7, 4))
    for impl in sorted({r["impl"] for r in rows}):
        for src in sorted({r["src"] for r in rows}):
            rs = sorted((r for r in rows if r["impl"] == impl and r["src"] == src), key=lambda r: r["batch"])
            if rs:
                ax.plot([r["batch"] for r in rs], [r["gb_per_s"] for r in rs], marker="o", label=f"{impl} {src}")
            g = [r for r in rs if r.get("graph_fraction_of_copy_bw")]
            if impl == "cupy" and g:
                ax.plot([r["batch"] for r in g], [r["graph_fraction_of_copy_bw"] * r["copy_bandwidth_gbs"] for r in g],
                        ls="--", marker="x", label=f"{impl} {src} (CUDA graph)")
    ax.axhline(bw, color="k", lw=1)
    ax.annotate(f"measured copy bandwidth {bw:,.0f} GB/s (read + write)", (1, bw), va="bottom", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel("achieved GB/s (bytes read + written, log)")
    ax.set_title(f"letterbox: bandwidth vs the copy roof — {kernels['environment'].get('card')}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def stage_breakdown(phase: dict, out: Path):
    names, parts = [], []
    for r in phase["rows"]:
        if r.get("ultralytics_ms_per_image"):
            parts.append({f"ultralytics {k}": v for k, v in r["ultralytics_ms_per_image"].items()})
        elif r.get("stage_ms_per_batch"):
            n = NOMINAL_BATCH.get(r["phase"], 64)
            parts.append({k: v / n for k, v in r["stage_ms_per_batch"].items()})
        else:
            continue
        names.append(r["phase"])
    keys = list(dict.fromkeys(k for p in parts for k in p))
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(names)
    for k in keys:
        vals = [p.get(k, 0.0) for p in parts]
        ax.bar(names, vals, bottom=bottom, label=k)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_yscale("log")
    ax.set_ylabel("ms per frame (log)")
    ax.set_title("stage time per frame by phase (GPU stages: CUDA events / batch size)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def phase_bars(doc: dict, path: Path):
    """The phase table's frames/s per phase (log scale), with the speed-up over the baseline."""
    rows = doc["rows"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    names = [r["phase"] for r in rows]
    fps = [r["frames_per_s"] for r in rows]
    bars = ax.bar(names, fps, color="#4477aa")
    for b, r in zip(bars, rows):
        ax.annotate(f"{r['frames_per_s']:.0f}\n{r['speedup']:.1f}x", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("frames/s (log)")
    ax.set_title(f"yolo11n-pose video pipeline by phase — {doc['env'].get('card', 'CPU')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=str(ROOT / "results"))
    a = ap.parse_args(argv)
    res = Path(a.results)
    made = []
    pt = res / "phase_table.json"
    if pt.exists():
        phase = json.loads(pt.read_text())
        phase_bars(phase, res / "phase_table.png")
        latency_cdf(phase, res / "latency_cdf.png")
        stage_breakdown(phase, res / "stage_breakdown.png")
        made += ["phase_table.png", "latency_cdf.png", "stage_breakdown.png"]
    kj = res / "kernels.json"
    if kj.exists():
        roofline(json.loads(kj.read_text())["runs"][-1], res / "roofline.png")
        made.append("roofline.png")
    print("wrote", ", ".join(made))
    return made


if __name__ == "__main__":
    main()
