// ByteTrack's association for every stream of a batch at once: the IoU cost matrices (fused with the
// detection scores) and the linear assignment with a cost limit, equal to kernels/track/reference.py
// (iou_cost, fused as BYTETracker.get_dists does; assign = lap.lapjv(extend_cost=True, cost_limit)).
//
// Specialized by the generated #define block: COST_NAME, ASSIGN_NAME (e.g. iou_cost_f32, lap_f64).
// Per-stream padded layout: tracks (S, T, 4) and dets (S, D, 4) float32 xyxy, n_tracks / n_dets (S,) int32,
// scores (S, D) float32, cost (S, T, D) float32; entries past a stream's counts are not read or written.
//
// cost: one thread per (stream, track, detection), float32 in the reference's order of operations; built
// with --fmad=false, so it is bit-equal to NumPy's.
// assign: one thread per stream solves the square problem lap builds for a cost limit L: n + m rows and
// columns, the cost block, L/2 for a row or a column left unmatched, 0 between two padding entries; by
// shortest augmenting paths with dual potentials (the Hungarian method, O((n + m)^3)), in float64 as lap
// does. The optimum is lap's wherever it is unique. match (S, T) int32: the detection of each track, or -1.
// Scratch per stream (N = T + D + 1 entries each): u, v, minv float64; p, way int32; used uint8.

extern "C" __global__ void COST_NAME(const float* __restrict__ tracks, const int* __restrict__ n_tracks,
                                     const float* __restrict__ dets, const float* __restrict__ scores,
                                     const int* __restrict__ n_dets, float* __restrict__ cost,
                                     int S, int T, int D, int fuse) {
    const long k = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (long)S * T * D) return;
    const int s = (int)(k / ((long)T * D)), i = (int)(k / D % T), j = (int)(k % D);
    if (i >= n_tracks[s] || j >= n_dets[s]) return;
    const float* a = tracks + ((size_t)s * T + i) * 4;
    const float* b = dets + ((size_t)s * D + j) * 4;
    const float iw = fmaxf(fminf(a[2], b[2]) - fmaxf(a[0], b[0]), 0.0f);
    const float ih = fmaxf(fminf(a[3], b[3]) - fmaxf(a[1], b[1]), 0.0f);
    const float inter = iw * ih;
    const float area = (b[2] - b[0]) * (b[3] - b[1]) + (a[2] - a[0]) * (a[3] - a[1]) - inter;
    float c = 1.0f - inter / (area + 1e-7f);
    if (fuse) c = 1.0f - (1.0f - c) * scores[(size_t)s * D + j];
    cost[((size_t)s * T + i) * D + j] = c;
}

#define BIG 1e300

extern "C" __global__ void ASSIGN_NAME(const float* __restrict__ cost, const int* __restrict__ n_tracks,
                                       const int* __restrict__ n_dets, int* __restrict__ match,
                                       double* __restrict__ u_all, double* __restrict__ v_all,
                                       double* __restrict__ minv_all, int* __restrict__ p_all,
                                       int* __restrict__ way_all, unsigned char* __restrict__ used_all,
                                       int S, int T, int D, double limit) {
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= S) return;
    const int n = n_tracks[s], m = n_dets[s], N = n + m, W = T + D + 1;
    double *u = u_all + (size_t)s * W, *v = v_all + (size_t)s * W, *minv = minv_all + (size_t)s * W;
    int *p = p_all + (size_t)s * W, *way = way_all + (size_t)s * W;
    unsigned char* used = used_all + (size_t)s * W;
    const float* c = cost + (size_t)s * T * D;
    for (int i = 0; i < T; ++i) match[(size_t)s * T + i] = -1;
    if (n == 0 || m == 0) return;
    for (int j = 0; j <= N; ++j) u[j] = v[j] = 0.0, p[j] = way[j] = 0;
    for (int i = 1; i <= N; ++i) {  // rows and columns 1..N; p[j]: the row holding column j (0: none)
        p[0] = i;
        int j0 = 0;
        for (int j = 0; j <= N; ++j) minv[j] = BIG, used[j] = 0;
        do {
            used[j0] = 1;
            const int i0 = p[j0];
            double delta = BIG;
            int j1 = 0;
            for (int j = 1; j <= N; ++j) {
                if (used[j]) continue;
                const int r = i0 - 1, q = j - 1;
                const double cij = r < n ? (q < m ? (double)c[(size_t)r * D + q] : 0.5 * limit)
                                         : (q < m ? 0.5 * limit : 0.0);
                const double cur = cij - u[i0] - v[j];
                if (cur < minv[j]) minv[j] = cur, way[j] = j0;
                if (minv[j] < delta) delta = minv[j], j1 = j;
            }
            for (int j = 0; j <= N; ++j) {
                if (used[j]) u[p[j]] += delta, v[j] -= delta;
                else minv[j] -= delta;
            }
            j0 = j1;
        } while (p[j0] != 0);
        do {
            const int j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
        } while (j0);
    }
    for (int j = 1; j <= m; ++j)
        if (p[j] >= 1 && p[j] <= n) match[(size_t)s * T + p[j] - 1] = j - 1;
}
