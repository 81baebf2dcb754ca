// Kalman filter on (x, y, a, h) and velocities for every track of every stream, one thread per track,
// float64: the arithmetic of kernels/track/reference.py (kf_multi_predict, kf_update).
//
// Specialized by the generated #define block: PREDICT_NAME, UPDATE_NAME (e.g. kf_predict_f64).
// mean: (T, 8), cov: (T, 8, 8) row-major, updated in place.
// predict: tracked (T,) uint8; a track not tracked has its aspect velocity zeroed first. The motion
//   matrix is 0/1, so F P F^T is sums of two terms: equal, bit for bit, to the reference's dot products.
// update: z (M, 4) measurements for the state rows rows (M,) int32; the 4x4 innovation system is solved by
//   LU with partial pivoting, as LAPACK's gesv (numpy.linalg.solve) does.

#define W_POS (1.0 / 20)
#define W_VEL (1.0 / 160)

extern "C" __global__ void PREDICT_NAME(double* __restrict__ mean, double* __restrict__ cov,
                                        const unsigned char* __restrict__ tracked, int T) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T) return;
    double* m = mean + (size_t)i * 8;
    double* P = cov + (size_t)i * 64;
    if (!tracked[i]) m[7] = 0.0;
    const double sp = W_POS * m[3], sv = W_VEL * m[3];
    const double q[8] = {sp * sp, sp * sp, 1e-2 * 1e-2, sp * sp, sv * sv, sv * sv, 1e-5 * 1e-5, sv * sv};
    for (int k = 0; k < 4; ++k) m[k] = m[k] + m[k + 4];
    double left[64];  // F P: rows r < 4 add row r + 4
    for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 8; ++c) left[r * 8 + c] = r < 4 ? P[r * 8 + c] + P[(r + 4) * 8 + c] : P[r * 8 + c];
    for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 8; ++c) {
            const double v = c < 4 ? left[r * 8 + c] + left[r * 8 + c + 4] : left[r * 8 + c];  // (F P) F^T
            P[r * 8 + c] = r == c ? v + q[r] : v;
        }
}

extern "C" __global__ void UPDATE_NAME(double* __restrict__ mean, double* __restrict__ cov,
                                       const double* __restrict__ z, const int* __restrict__ rows, int M) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    const int i = rows[j];
    double* m = mean + (size_t)i * 8;
    double* P = cov + (size_t)i * 64;
    const double sp = W_POS * m[3];
    double s[16], a[16], x[32];  // S = H P H^T + R (4 x 4); X = S^-1 (P H^T)^T (4 x 8): the gain's transpose
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) s[r * 4 + c] = P[r * 8 + c];
    s[0] += sp * sp;
    s[5] += sp * sp;
    s[10] += 1e-1 * 1e-1;
    s[15] += sp * sp;
    for (int r = 0; r < 4; ++r) {
        for (int c = 0; c < 4; ++c) a[r * 4 + c] = s[r * 4 + c];
        for (int c = 0; c < 8; ++c) x[r * 8 + c] = P[c * 8 + r];
    }
    for (int k = 0; k < 4; ++k) {
        int p = k;
        for (int r = k + 1; r < 4; ++r)
            if (fabs(a[r * 4 + k]) > fabs(a[p * 4 + k])) p = r;
        if (p != k) {
            for (int c = 0; c < 4; ++c) { const double t = a[k * 4 + c]; a[k * 4 + c] = a[p * 4 + c]; a[p * 4 + c] = t; }
            for (int c = 0; c < 8; ++c) { const double t = x[k * 8 + c]; x[k * 8 + c] = x[p * 8 + c]; x[p * 8 + c] = t; }
        }
        for (int r = k + 1; r < 4; ++r) {
            const double f = a[r * 4 + k] / a[k * 4 + k];
            for (int c = k; c < 4; ++c) a[r * 4 + c] -= f * a[k * 4 + c];
            for (int c = 0; c < 8; ++c) x[r * 8 + c] -= f * x[k * 8 + c];
        }
    }
    for (int k = 3; k >= 0; --k)
        for (int c = 0; c < 8; ++c) {
            double v = x[k * 8 + c];
            for (int r = k + 1; r < 4; ++r) v -= a[k * 4 + r] * x[r * 8 + c];
            x[k * 8 + c] = v / a[k * 4 + k];
        }
    double innov[4];
    for (int k = 0; k < 4; ++k) innov[k] = z[(size_t)j * 4 + k] - m[k];
    for (int r = 0; r < 8; ++r) {
        double v = 0.0;
        for (int k = 0; k < 4; ++k) v += innov[k] * x[k * 8 + r];
        m[r] = m[r] + v;
    }
    double ks[32];  // K S (8 x 4)
    for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 4; ++c) {
            double v = 0.0;
            for (int k = 0; k < 4; ++k) v += x[k * 8 + r] * s[k * 4 + c];
            ks[r * 4 + c] = v;
        }
    for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 8; ++c) {
            double v = 0.0;
            for (int k = 0; k < 4; ++k) v += ks[r * 4 + k] * x[k * 8 + c];
            P[r * 8 + c] = P[r * 8 + c] - v;
        }
}
