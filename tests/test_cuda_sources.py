"""Every CUDA C specialization compiles with NVRTC (the compiler CuPy uses), on CPU-only machines too."""
import glob
import os
import subprocess
import sys
import pytest

import helpers

ROOT = helpers.ROOT


def test_cuda_sources_compile_with_nvrtc():
    nvrtc_check = helpers.load_experiment("nvrtc_check")

    lib = nvrtc_check.find_nvrtc()
    if not os.path.isabs(lib) or not glob.glob(lib):
        pytest.skip("no libnvrtc in this environment")
    r = subprocess.run([sys.executable, str(ROOT / "experiments" / "nvrtc_check.py"), lib], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok ") == len(nvrtc_check.SPECS)
