"""Shared test helpers: the experiments' harness (sample data, frame readers), NV12 conversion, comparisons."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_experiment(name: str):
    """The module experiments/<name>.py, loaded by path (its sibling ``harness`` first, as a script sees it)."""
    if name != "harness" and "harness" not in sys.modules:
        load_experiment("harness")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


harness = load_experiment("harness")
data_dir, data_path, read_video, read_gif, asset_images = (harness.data_dir, harness.data_path, harness.read_video,
                                                           harness.read_gif, harness.asset_images)


def per_call(benchmark, fn, calls: int, rounds: int, warmup_rounds: int = 1, end_round=None) -> float:
    """Time ``fn`` with pytest-benchmark, ``calls`` calls per round, so that its table reads time per call:
    ``end_round`` (default: a device synchronize) runs after the last call of each round, inside the timed
    span. Returns the median seconds per call."""
    import torch

    end_round = end_round or torch.cuda.synchronize
    count = [0]

    def target():
        fn()
        count[0] += 1
        if count[0] % calls == 0:
            end_round()

    benchmark.pedantic(target, rounds=rounds, warmup_rounds=warmup_rounds, iterations=calls)
    return benchmark.stats.stats.median


def on_frame(fn):
    """An on_result callback (FrameResult) calling ``fn(stream, index, image, poses)``."""
    return lambda r: fn(r.stream, r.index, r.image, r.poses)


def bgr_to_nv12(bgr: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR (even H, W) -> (H*3/2, W) NV12 through OpenCV's I420, UV interleaved."""
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    y = i420[:h]
    u = i420[h : h + h // 4].reshape(h // 2, w // 2)
    v = i420[h + h // 4 :].reshape(h // 2, w // 2)
    uv = np.stack((u, v), -1).reshape(h // 2, w)
    return np.ascontiguousarray(np.concatenate((y, uv), 0))


def assert_letterbox_close(got: np.ndarray, ref: np.ndarray, max_levels: float = 2.0, mean_levels: float = 0.25):
    """Kernel letterbox vs the cv2 reference: max |diff| <= 2/255, mean <= 0.25/255 (fixed-point cv2 vs float)."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.isfinite(got).all(), "unwritten (NaN-poisoned) or non-finite output values"
    d = np.abs(got.astype(np.float64) - ref.astype(np.float64)) * 255
    assert d.max() <= max_levels + 1e-3, f"max diff {d.max():.3f} levels"
    assert d.mean() <= mean_levels, f"mean diff {d.mean():.4f} levels"


def assert_letterbox_exact(got: np.ndarray, ref: np.ndarray):
    """Kernel letterbox == the cv2 reference bit for bit (fp16 output: the reference rounded to fp16)."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    ref = ref.astype(got.dtype)
    bad = got != ref
    assert not bad.any(), f"{int(bad.sum())} of {bad.size} values differ, max {np.abs(got.astype(np.float64) - ref).max() * 255:.3f} levels"


HOST_PRELUDE = """#include <math.h>
#include <stddef.h>
struct Dim3 { unsigned x, y, z; };
static Dim3 blockIdx, threadIdx, blockDim;
extern "C" void set_thread(unsigned block, unsigned block_dim, unsigned thread) {
    blockIdx.x = block; blockDim.x = block_dim; threadIdx.x = thread;
}
#define __global__
#define __device__
#define __constant__ static const
#define __restrict__ __restrict
"""


def host_build(cu: str, defines: dict, out_dir, prelude: str = ""):
    """A .cu file's kernels built for the host with g++ (no FMA contraction, IEEE float and double), so the
    CUDA C logic runs on a CPU: call ``set_thread(block, block_dim, thread)``, then a kernel, per thread.
    ``prelude``: host stand-ins for the CUDA built-ins a file uses beyond HOST_PRELUDE's."""
    import ctypes
    import subprocess

    src = Path(out_dir) / (Path(cu).stem + "_host.cpp")
    src.write_text(HOST_PRELUDE + prelude + "".join(f"#define {k} {v}\n" for k, v in defines.items())
                   + Path(cu).read_text())
    lib = Path(out_dir) / (Path(cu).stem + "_host.so")
    subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-ffp-contract=off", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


def ultralytics_tracker():
    """Ultralytics' BYTETracker with its bytetrack.yaml (the tracking reference)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import ROOT

    return BYTETracker(get_cfg(ROOT / "cfg/trackers/bytetrack.yaml"))
