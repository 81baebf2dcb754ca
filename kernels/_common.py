"""Shared plumbing for the kernel families: array interop, streams, argument checks, backend discovery.

Every public kernel function takes and returns torch tensors. Anything that speaks DLPack or
``__cuda_array_interface__`` (CuPy, Numba device arrays, NVDEC frames) is wrapped as a torch tensor
without a copy (:func:`as_tensor`); the CuPy kernels receive raw device pointers and the Numba kernels
receive the same memory through ``__cuda_array_interface__``, so no stage copies its inputs.
Kernels launch on the caller's current torch stream (:func:`cupy_stream`, :func:`numba_stream`).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

KERNEL_DIR = Path(__file__).resolve().parent


class KernelInputError(ValueError):
    """Raised for a bad argument; the message names the argument and what was found."""


# ----------------------------------------------------------------------------------------------
# Backend discovery
# ----------------------------------------------------------------------------------------------
def cuda_available() -> bool:
    return torch.cuda.is_available()


def numba_simulator() -> bool:
    """True when Numba runs its CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): kernels run on the CPU."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


@functools.lru_cache(maxsize=None)
def numba_cuda():
    """Import ``numba.cuda`` (works with both numba's bundled target and the numba-cuda package).

    numba-cuda uses ``np.row_stack``, which NumPy 2.5 removed; it is the same function as ``np.vstack``.
    """
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
    from numba import cuda

    return cuda


@functools.lru_cache(maxsize=None)
def have_cupy() -> bool:
    if not cuda_available():
        return False
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # pragma: no cover - depends on the machine
        return False


@functools.lru_cache(maxsize=None)
def have_numba() -> bool:
    try:
        cuda = numba_cuda()
    except Exception:  # pragma: no cover - depends on the machine
        return False
    return numba_simulator() or bool(cuda.is_available())


def available_backends(device: torch.device) -> list[str]:
    """Backends that can run on ``device``, fastest first (order measured in results/kernels.md)."""
    if device.type == "cuda":
        out = []
        if have_cupy():
            out.append("cupy")
        if have_numba() and not numba_simulator():
            out.append("numba")
        out.append("torch")
        return out
    out = ["reference", "torch"]
    if numba_simulator():
        out.append("numba")
    return out


@functools.lru_cache(maxsize=None)
def shared_memory_per_block(device: torch.device) -> int:
    """Bytes of shared memory a block may use on ``device`` without opting in (the device attribute)."""
    return int(torch.cuda.get_device_properties(device).shared_memory_per_block)


def resolve_backend(backend: str, device: torch.device, allowed: tuple[str, ...]) -> str:
    if backend not in allowed + ("auto",):
        raise KernelInputError(f"backend: expected one of {('auto',) + allowed}, got {backend!r}")
    avail = [b for b in available_backends(device) if b in allowed]
    if backend == "auto":
        if not avail:
            raise KernelInputError(f"backend: no backend among {allowed} runs on device {device}")
        return avail[0]
    if backend not in avail:
        raise KernelInputError(
            f"backend: {backend!r} cannot run on device {device} here (available: {avail})"
        )
    return backend


# ----------------------------------------------------------------------------------------------
# Array interop
# ----------------------------------------------------------------------------------------------
def as_tensor(x, name: str) -> torch.Tensor:
    """Wrap ``x`` as a torch tensor sharing its memory (torch, DLPack, CUDA array interface, NumPy)."""
    if isinstance(x, torch.Tensor):
        return x
    if x is None:
        raise KernelInputError(f"{name}: expected an array, got None")
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if hasattr(x, "__cuda_array_interface__"):
        return torch.as_tensor(x, device="cuda")
    if hasattr(x, "__dlpack__"):
        return torch.from_dlpack(x)
    raise KernelInputError(f"{name}: expected a torch tensor or a DLPack/CUDA-array-interface array, got {type(x).__name__}")


def check_tensor(t: torch.Tensor, name: str, *, dtypes=None, ndim=None, device=None, contiguous=True):
    """Validate once at the Python boundary; errors name the argument and what was found."""
    if dtypes is not None and t.dtype not in dtypes:
        want = "/".join(str(d).replace("torch.", "") for d in dtypes)
        raise KernelInputError(f"{name}: expected dtype {want}, got {str(t.dtype).replace('torch.', '')} {tuple(t.shape)}")
    if ndim is not None and t.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise KernelInputError(f"{name}: expected {ndim} dimensions, got {t.ndim} with shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise KernelInputError(f"{name}: expected a tensor on {device}, got one on {t.device}")
    if contiguous and not t.is_contiguous():
        raise KernelInputError(f"{name}: expected a contiguous tensor, got strides {t.stride()} for shape {tuple(t.shape)}")
    return t


def same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    ia = a.index if a.index is not None else torch.cuda.current_device()
    ib = b.index if b.index is not None else torch.cuda.current_device()
    return ia == ib


# ----------------------------------------------------------------------------------------------
# CuPy: memoized modules, launches on the caller's torch stream
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def cupy_module(cu_path: str, defines: tuple[tuple[str, str], ...], options: tuple[str, ...], device_id: int):
    """Build (once per device and specialization) a ``cupy.RawModule`` from a ``.cu`` file.

    The specialization is a generated ``#define`` block prepended to the source; it also names the kernels
    (``letterbox_u8_f16``), so profiler traces read well. Compilation never happens on the hot path.
    """
    import cupy

    src = "".join(f"#define {k} {v}\n" for k, v in defines) + Path(cu_path).read_text()
    with cupy.cuda.Device(device_id):
        mod = cupy.RawModule(code=src, options=("-std=c++17",) + options)
        mod.compile()
    return mod


@functools.lru_cache(maxsize=64)
def _external_stream(handle: int, device_id: int):
    import cupy

    return cupy.cuda.ExternalStream(handle, device_id)


def cupy_stream(device: torch.device):
    """The caller's current torch stream on ``device`` as a CuPy stream (no synchronization)."""
    handle = torch.cuda.current_stream(device).cuda_stream
    return _external_stream(handle, device.index if device.index is not None else torch.cuda.current_device())


def cupy_launch(kernel, grid, block, args, device: torch.device, shared_mem: int = 0):
    import cupy

    dev_id = device.index if device.index is not None else torch.cuda.current_device()
    with cupy.cuda.Device(dev_id), cupy_stream(device):
        kernel(grid, block, args, shared_mem=shared_mem)


def ptr(t: torch.Tensor | None) -> np.uint64:
    """A device pointer as the kernel's ``unsigned long long`` argument (0 for None)."""
    return np.uint64(0 if t is None else t.data_ptr())


# ----------------------------------------------------------------------------------------------
# Numba: arrays and streams
# ----------------------------------------------------------------------------------------------
def numba_array(t: torch.Tensor):
    """The tensor's memory as a Numba device array (zero copy); a NumPy view under the simulator."""
    if numba_simulator() or t.device.type == "cpu":
        return t.detach().numpy()
    return numba_cuda().as_cuda_array(t.detach())


def numba_stream(device: torch.device):
    """The caller's current torch stream for a Numba launch (0, the default, under the simulator)."""
    if numba_simulator() or device.type != "cuda":
        return 0
    return numba_cuda().external_stream(torch.cuda.current_stream(device).cuda_stream)



# ----------------------------------------------------------------------------------------------
# NVTX: one domain for the package, one range per stage; no-ops without the nvtx package
# ----------------------------------------------------------------------------------------------
NVTX_DOMAIN = "posefuse"
# The one stage vocabulary: NVTX ranges, the pipeline's GPU timing spans and the reports all use these names.
# video_decode: a source's decoder call (NVDEC or OpenCV); h2d: host frames to the device; head_decode: the
# pose head's boxes and keypoints into candidates; nms, or topk for an end-to-end head (its best scores, no
# NMS); d2h: one batch's results to host memory.
STAGES = ("video_decode", "h2d", "letterbox", "backbone", "head_decode", "nms", "topk", "rescale", "track", "d2h")
try:  # pragma: no cover - depends on the install
    import nvtx as _nvtx

    _DOMAIN = _nvtx.get_domain(NVTX_DOMAIN)
except Exception:  # ImportError, or a build without the C extension
    _nvtx = None
    _DOMAIN = None


class _NullRange:
    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NULL = _NullRange()
_ATTRS: dict = {}


class _Range:
    """A push/pop range in the posefuse domain (same thread; use start/end ranges across threads)."""

    __slots__ = ("attrs",)

    def __init__(self, attrs):
        self.attrs = attrs

    def __enter__(self):
        _DOMAIN.push_range(self.attrs)
        return self

    def __exit__(self, *exc):
        _DOMAIN.pop_range()
        return False


def nvtx_range(name: str):
    """``with nvtx_range("letterbox"): ...``: an NVTX range ``posefuse@letterbox`` (a no-op without nvtx).
    ``name``: one of STAGES."""
    if _DOMAIN is None:
        return _NULL
    attrs = _ATTRS.get(name)
    if attrs is None:
        if name not in STAGES:
            raise KernelInputError(f"name: expected one of {STAGES}, got {name!r}")
        attrs = _ATTRS[name] = _DOMAIN.get_event_attributes(message=name)
    return _Range(attrs)


def nvtx_enabled() -> bool:
    return _DOMAIN is not None
