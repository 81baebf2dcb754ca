"""Compile every CUDA C specialization with NVRTC (as CuPy does), no GPU needed: catches what nvcc's host
headers would hide (e.g. macros NVRTC lacks) before device time is spent.

    python experiments/nvrtc_check.py [path/to/libnvrtc.so]
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys
from pathlib import Path

import torch

from posefuse.kernels.decode import HEADS
from posefuse.kernels.decode import cupy_impl as decode_cu
from posefuse.kernels.nms import cupy_impl as nms_cu
from posefuse.kernels.track.cupy_impl import DEFINES as TRACK_DEFINES  # with the reference's OKS constants

ROOT = Path(__file__).resolve().parents[1]
SPECS = [
    *(("kernels/letterbox/letterbox.cu", {"KNAME": f"letterbox_{fmt}_{out}_{order}", "NV12": str(int(fmt == "nv12")),
                                          "OUT_F16": str(int(out == "f16")), "NHWC": str(int(order == "nhwc"))}, [])
      for fmt in ("bgr", "nv12") for out in ("f16", "f32") for order in ("nchw", "nhwc")),
    *(("kernels/decode/decode.cu", dict(decode_cu.defines(head, dtype)), []) for head in HEADS
      for dtype in (torch.float16, torch.float32)),
    *(("kernels/nms/nms.cu", dict(nms_cu.defines(suppress)), list(nms_cu.OPTIONS)) for suppress in (True, False)),
    ("kernels/track/track.cu", dict(TRACK_DEFINES), ["--fmad=false"]),
]


def find_nvrtc():
    import site

    for d in site.getsitepackages():
        hits = glob.glob(os.path.join(d, "nvidia", "*", "lib", "libnvrtc.so*")) + glob.glob(os.path.join(d, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*"))
        if hits:
            return hits[0]
    return "libnvrtc.so"


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else find_nvrtc()
    for b in glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*")):
        ctypes.CDLL(b, mode=ctypes.RTLD_GLOBAL)  # NVRTC dlopens it by name; make it resolvable
    lib = ctypes.CDLL(path)
    bad = 0
    for path, defines, opts in SPECS:
        src = "".join(f"#define {k} {v}\n" for k, v in defines.items()) + (ROOT / path).read_text()
        prog = ctypes.c_void_p()
        assert lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), path.encode(), 0, None, None) == 0
        options = [b"-std=c++17", b"--gpu-architecture=sm_90"] + [o.encode() for o in opts]
        arr = (ctypes.c_char_p * len(options))(*options)
        res = lib.nvrtcCompileProgram(prog, len(options), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        print(f"{'ok  ' if res == 0 else 'FAIL'} {', '.join(v for k, v in defines.items() if k.endswith('NAME'))}\n{log.value.decode().strip()}".rstrip())
        bad += res != 0
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
