"""The tracker's assignment, counted: steps of the shortest-augmenting-path (Hungarian) method on the square
problem lap.lapjv builds for a cost limit (extend_cost) against the equivalent rectangular one that track.cu
solves (a pair costs c - limit, a row left unmatched 0, the smaller side as rows), on association problems
made from a clip's detections; both solutions against lap.lapjv's.

    python experiments/lap_iterations.py [--clip crowd-mosaic-1080p.mp4] [--frames 120] [--device cpu]

A problem per frame t: the detections of frame t - 1 and of frame t - 10 (stand-ins for tracked and lost
tracks) against those of frame t, cost 1 - IoU times the detection's score, limit 0.8 (bytetrack.yaml's
match_thresh); rows and columns without an entry under the limit are dropped first, as track.cu does. A step
is one scan over the columns (the loop the GPU's lanes share), so the step counts are the serial chain the
warp of a stream walks. The figures are counts, the same on any machine: no time is measured.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import harness

BIG = 1e300


def hungarian(cost, rows: int, cols: int):
    """Shortest augmenting paths over ``rows`` <= ``cols`` (cost(r, q)): (column of each row or -1, steps)."""
    u, v = np.zeros(rows + 1), np.zeros(cols + 1)
    p, way, steps = [0] * (cols + 1), [0] * (cols + 1), 0
    for i in range(1, rows + 1):
        p[0], j0 = i, 0
        minv, used = [BIG] * (cols + 1), [False] * (cols + 1)
        while True:
            steps += 1
            used[j0] = True
            i0, delta, j1 = p[j0], BIG, 0
            for j in range(1, cols + 1):
                if not used[j]:
                    cur = cost(i0 - 1, j - 1) - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(cols + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    sol = [-1] * rows
    for j in range(1, cols + 1):
        if p[j]:
            sol[p[j] - 1] = j - 1
    return sol, steps


def extended(c: np.ndarray, limit: float):
    """lap's square problem of n + m: costs, limit / 2 for a row or a column left unmatched, 0 between those."""
    n, m = c.shape
    half = limit / 2

    def cost(r, q):
        if r < n:
            return float(c[r, q]) if q < m else half
        return half if q < m else 0.0

    sol, steps = hungarian(cost, n + m, n + m)
    return [q if q < m else -1 for q in sol[:n]], steps


def rectangular(c: np.ndarray, limit: float):
    """track.cu's form: the smaller side as rows against the other side plus a zero-cost column per row."""
    flip = c.shape[0] > c.shape[1]
    cc = c.T if flip else c
    a, b = cc.shape
    sol, steps = hungarian(lambda r, q: float(cc[r, q]) - limit if q < b else 0.0, a, a + b)
    sol = [q if q < b else -1 for q in sol]
    if not flip:
        return sol, steps
    out = [-1] * c.shape[0]
    for r, q in enumerate(sol):
        if q >= 0:
            out[q] = r
    return out, steps


def costs(tracks: np.ndarray, dets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ByteTrack's fused first-association cost of xyxy boxes: 1 - IoU x the detection's score (float32)."""
    x1 = np.maximum(tracks[:, None, 0], dets[None, :, 0])
    y1 = np.maximum(tracks[:, None, 1], dets[None, :, 1])
    x2 = np.minimum(tracks[:, None, 2], dets[None, :, 2])
    y2 = np.minimum(tracks[:, None, 3], dets[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    iou = inter / (area(tracks)[:, None] + area(dets)[None, :] - inter + 1e-7)
    return (1 - iou * scores[None, :]).astype(np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default="crowd-mosaic-1080p.mp4", help="a clip in the data folder, or a path")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--limit", type=float, default=0.8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out-dir", default=str(harness.RESULTS))
    a = ap.parse_args(argv)
    import lap

    from posefuse import PosePipeline

    path = a.clip if os.path.isfile(a.clip) else harness.data_path(a.clip)
    frames = harness.read_video(path, a.frames)
    pipe = PosePipeline(device=a.device)
    dets = []
    for i in range(0, len(frames), 16):
        dets += [(np.asarray(r.boxes, np.float32), np.asarray(r.scores, np.float32)) for r in pipe(frames[i:i + 16])]
    totals = {"extended": 0, "rectangular": 0}
    sizes, same_as_lap, problems = [], {"extended": 0, "rectangular": 0}, 0
    for t in range(10, len(dets)):
        tracks = np.concatenate([dets[t - 1][0], dets[t - 10][0]])
        boxes, scores = dets[t]
        c = costs(tracks, boxes, scores)
        rows = [r for r in range(c.shape[0]) if (c[r] <= a.limit).any()]
        cols = [q for q in range(c.shape[1]) if rows and (c[rows, q] <= a.limit).any()]
        if not rows or not cols:
            continue
        kept = c[np.ix_(rows, cols)]
        _, x, _ = lap.lapjv(kept, extend_cost=True, cost_limit=a.limit)
        want = [int(q) for q in x]
        problems += 1
        sizes.append((len(tracks), len(boxes), len(rows), len(cols)))
        for name, solve in (("extended", extended), ("rectangular", rectangular)):
            sol, steps = solve(kept, a.limit)
            totals[name] += steps
            same_as_lap[name] += sol == want
    s = np.array(sizes)
    run = harness.new_run("lap_iterations.py", argv, clip=os.path.basename(path), frames=len(frames), limit=a.limit,
                          problems=problems,
                          mean_tracks_dets_kept=[round(float(x), 2) for x in s.mean(axis=0)] if len(s) else [],
                          steps=totals, steps_per_problem={k: v / max(1, problems) for k, v in totals.items()},
                          same_as_lap=same_as_lap)
    print(run)
    harness.record(a.out_dir, "lap_iterations", run, markdown)


def markdown(runs: list) -> str:
    lines = ["# The tracker's assignment, in steps", "",
             "experiments/lap_iterations.py: shortest-augmenting-path steps (one scan over the columns each, the "
             "chain a stream's warp walks) on lap's square extended problem against track.cu's rectangular form, "
             "on association problems made from a clip's detections; both solutions against lap.lapjv's.", ""]
    for run in reversed(runs):
        lines += harness.run_heading(run) + [
            f"{run['problems']} problems from {run['frames']} frames of {run['clip']} (limit {run['limit']}); "
            f"mean tracks, detections, kept rows, kept columns: {run['mean_tracks_dets_kept']}.", "",
            "| form | steps | steps a problem | solutions equal to lap.lapjv's |", "| --- | ---: | ---: | ---: |"]
        for k in ("extended", "rectangular"):
            lines.append(f"| {k} | {run['steps'][k]:,} | {run['steps_per_problem'][k]:.1f} | "
                         f"{run['same_as_lap'][k]} of {run['problems']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
