"""Numba CUDA Kalman filter for every track of every stream at once: one thread per track, float64, the
arithmetic of reference.kf_multi_predict / kf_update (predict is bit-equal: its motion matrix is 0/1; the
update solves the 4x4 innovation system by LU with partial pivoting, as LAPACK's gesv does)."""
from __future__ import annotations

import numpy as np

from .._common import numba_array, numba_cuda, numba_stream

cuda = numba_cuda()  # module global: the simulator swaps it for its own (NUMBA_ENABLE_CUDASIM=1)

BLOCK = 128
W_POS, W_VEL = 1.0 / 20, 1.0 / 160
_KERNELS: dict = {}


def _kernels():
    if _KERNELS:
        return _KERNELS

    @cuda.jit
    def kf_predict_f64(mean, cov, tracked):
        i = cuda.grid(1)
        if i >= mean.shape[0]:
            return
        if tracked[i] == 0:
            mean[i, 7] = 0.0
        h = mean[i, 3]
        sp = W_POS * h
        sv = W_VEL * h
        q = cuda.local.array(8, np.float64)
        q[0] = sp * sp
        q[1] = sp * sp
        q[2] = 1e-2 * 1e-2
        q[3] = sp * sp
        q[4] = sv * sv
        q[5] = sv * sv
        q[6] = 1e-5 * 1e-5
        q[7] = sv * sv
        for k in range(4):
            mean[i, k] = mean[i, k] + mean[i, k + 4]
        left = cuda.local.array((8, 8), np.float64)  # F P: rows k < 4 add row k + 4
        for r in range(8):
            for c in range(8):
                left[r, c] = cov[i, r, c] + cov[i, r + 4, c] if r < 4 else cov[i, r, c]
        for r in range(8):
            for c in range(8):
                v = left[r, c] + left[r, c + 4] if c < 4 else left[r, c]  # (F P) F^T
                cov[i, r, c] = v + q[r] if r == c else v

    @cuda.jit
    def kf_update_f64(mean, cov, z, rows):
        j = cuda.grid(1)
        if j >= rows.shape[0]:
            return
        i = rows[j]
        h = mean[i, 3]
        sp = W_POS * h
        s = cuda.local.array((4, 4), np.float64)
        for r in range(4):
            for c in range(4):
                s[r, c] = cov[i, r, c]
        s[0, 0] += sp * sp
        s[1, 1] += sp * sp
        s[2, 2] += 1e-1 * 1e-1
        s[3, 3] += sp * sp
        # solve S X = cov[:, :4]^T (4 x 8) by LU with partial pivoting; the gain K = X^T (8 x 4)
        a = cuda.local.array((4, 4), np.float64)
        x = cuda.local.array((4, 8), np.float64)
        for r in range(4):
            for c in range(4):
                a[r, c] = s[r, c]
            for c in range(8):
                x[r, c] = cov[i, c, r]
        for k in range(4):
            p = k
            for r in range(k + 1, 4):
                if abs(a[r, k]) > abs(a[p, k]):
                    p = r
            if p != k:
                for c in range(4):
                    t = a[k, c]
                    a[k, c] = a[p, c]
                    a[p, c] = t
                for c in range(8):
                    t = x[k, c]
                    x[k, c] = x[p, c]
                    x[p, c] = t
            for r in range(k + 1, 4):
                f = a[r, k] / a[k, k]
                for c in range(k, 4):
                    a[r, c] -= f * a[k, c]
                for c in range(8):
                    x[r, c] -= f * x[k, c]
        for k in range(3, -1, -1):
            for c in range(8):
                v = x[k, c]
                for r in range(k + 1, 4):
                    v -= a[k, r] * x[r, c]
                x[k, c] = v / a[k, k]
        innov = cuda.local.array(4, np.float64)
        for k in range(4):
            innov[k] = z[j, k] - mean[i, k]
        for r in range(8):
            v = 0.0
            for k in range(4):
                v += innov[k] * x[k, r]
            mean[i, r] = mean[i, r] + v
        ks = cuda.local.array((8, 4), np.float64)  # K S
        for r in range(8):
            for c in range(4):
                v = 0.0
                for k in range(4):
                    v += x[k, r] * s[k, c]
                ks[r, c] = v
        for r in range(8):
            for c in range(8):
                v = 0.0
                for k in range(4):
                    v += ks[r, k] * x[k, c]
                cov[i, r, c] = cov[i, r, c] - v

    _KERNELS.update(predict=kf_predict_f64, update=kf_update_f64)
    return _KERNELS


def predict(mean, cov, tracked) -> None:
    n = mean.shape[0]
    if n == 0:
        return
    k = _kernels()["predict"]
    k[(n + BLOCK - 1) // BLOCK, BLOCK, numba_stream(mean.device)](numba_array(mean), numba_array(cov),
                                                                  numba_array(tracked))


def update(mean, cov, z, rows) -> None:
    n = rows.shape[0]
    if n == 0:
        return
    k = _kernels()["update"]
    k[(n + BLOCK - 1) // BLOCK, BLOCK, numba_stream(mean.device)](numba_array(mean), numba_array(cov),
                                                                  numba_array(z), numba_array(rows))


__all__ = ["predict", "update"]
