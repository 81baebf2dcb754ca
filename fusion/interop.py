"""Zero-copy exchange between torch, CuPy and Numba (DLPack / ``__cuda_array_interface__``).

Each function returns a view of the same device memory (tests/test_fusion.py checks the data pointers).
"""
from __future__ import annotations

import torch

from ..kernels._common import as_tensor, numba_array


def to_torch(x) -> torch.Tensor:
    """Any torch / DLPack / CUDA-array-interface / NumPy array as a torch tensor, sharing memory."""
    return as_tensor(x, "x")


def to_cupy(t: torch.Tensor):
    """A torch CUDA tensor as a CuPy array on the same memory (DLPack)."""
    import cupy

    return cupy.from_dlpack(t)


def to_numba(t: torch.Tensor):
    """A torch tensor as a Numba device array on the same memory (``__cuda_array_interface__``)."""
    return numba_array(t)


def data_ptr(x) -> int:
    """The device (or host) address of an array of any of the three libraries."""
    if isinstance(x, torch.Tensor):
        return x.data_ptr()
    if hasattr(x, "__cuda_array_interface__"):
        return x.__cuda_array_interface__["data"][0]
    if hasattr(x, "__array_interface__"):
        return x.__array_interface__["data"][0]
    return as_tensor(x, "x").data_ptr()
