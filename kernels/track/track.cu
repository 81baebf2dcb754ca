// ByteTrack on the device for every stream of a batch: the arithmetic and the rules of
// kernels/track/reference.py (Ultralytics 8.4.190's BYTETracker with bytetrack.yaml).
//
// Specialized by the generated #define block: PREDICT_NAME, UPDATE_NAME, COST_NAME, ASSIGN_NAME, TRACK_NAME
// (e.g. kf_predict_f64, bytetrack_f64), and the 'oks' match's constants from reference.py: OKS_DEN_INIT
// (17 doubles), AREA_FRACTION, KPT_CONF. Built with --fmad=false, so the float32 IoU costs and the Kalman
// predict are bit-equal to NumPy's.
//
// Kalman filter on (x, y, a, h) and velocities, float64, one thread per track. mean (T, 8), cov (T, 8, 8)
// row-major, in place. predict: tracked (T,) uint8; a track not tracked has its aspect velocity zeroed
// first; the motion matrix is 0/1, so F P F^T is sums of two terms, as the reference's dot products.
// update: z (M, 4) for the state rows rows (M,) int32; the 4x4 innovation system is solved by LU with
// partial pivoting, as LAPACK's gesv (numpy.linalg.solve) does.
//
// Association on padded rows: tracks (S, T, 4), dets (S, D, 4) float32 xyxy, n_tracks / n_dets (S,) int32,
// scores (S, D) float32, cost (S, T, D) float32 (entries past a stream's counts are not read or written).
// cost: one thread per (stream, track, detection): 1 - IoU, times the score where fused.
// assign: one warp per stream (a block of 32 lanes) solves lap.lapjv's problem for a cost limit L (a pair
// costs c, a row or column left unmatched L/2) as the equivalent rectangular one (a pair costs c - L, a row
// left unmatched 0; lap_one says why) by shortest augmenting paths with dual potentials (the Hungarian
// method), in float64 as lap does: the optimum is lap's wherever it is unique. The lanes share each step's
// scan over the columns; the step's minimum is a warp reduction that keeps the serial scan's first minimum,
// so the result is the serial one's (an exact method, not an auction, which is approximate). match (S, T)
// int32: each track's detection or -1.
// Scratch per stream, W = T + D + 1 entries each: u, v, minv float64; p, way int32; used uint8.
//
// oks (ByteTrackConfig.match 'oks'): 1 - OKS of the track's keypoints (those of its last detection, moved
// with its predicted center) and the detection's, over the keypoints both see, scale the predicted box area
// x AREA_FRACTION (reference.oks_cost); 1 - IoU where they see none in common.
//
// track: the whole update of ByteTrackBatch, one warp per stream looping over that stream's frames of the
// batch (a frame needs the previous one; streams are independent), so a batch is one launch. Inside a frame
// the lanes share the predicts, the cost matrices, the assignments' scans, the Kalman updates of the matched
// tracks, the duplicate check, the slot sweeps and the births (birth q takes the q-th free slot). Track slots per
// stream: K; lists of slots keep the reference's order (tracked, lost), which only ties of the assignment
// could see.

#define W_POS (1.0 / 20)
#define W_VEL (1.0 / 160)
#define BIG 1e300
#define FREE 0
#define TRACKED 1
#define LOST 2
#define REMOVED 3

__device__ void kf_predict_row(double* m, double* P, int tracked) {
    if (!tracked) m[7] = 0.0;
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

__device__ void kf_update_row(double* m, double* P, const double z[4]) {
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
    for (int k = 0; k < 4; ++k) innov[k] = z[k] - m[k];
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

// 1 - IoU of two float32 xyxy boxes in reference.iou_cost's order of operations
__device__ float iou_cost_one(const float* a, const float* b) {
    const float iw = fmaxf(fminf(a[2], b[2]) - fmaxf(a[0], b[0]), 0.0f);
    const float ih = fmaxf(fminf(a[3], b[3]) - fmaxf(a[1], b[1]), 0.0f);
    const float inter = iw * ih;
    const float area = (b[2] - b[0]) * (b[3] - b[1]) + (a[2] - a[0]) * (a[3] - a[1]) - inter;
    return 1.0f - inter / (area + 1e-7f);
}

// ------------------------------------------------------------------ one warp per stream
// The assignment and the tracker run one stream on blockDim.x lanes (32 on the GPU: a warp per stream; 1 in the
// tests' host build, where every loop below is the serial algorithm). Counts and list lengths are alike in every
// lane; lists are built in order by a warp ballot (append_if), so they keep the reference's order; a lane writes
// only its own entries between two __syncwarp()s.
#define ALL_LANES 0xffffffffu

// dst[at..]: value(q) for each q < n (in order) with keep(q); returns the list's new length (in every lane)
template <class Keep, class Value>
__device__ int append_if(int* dst, int at, int n, Keep keep, Value value) {
    const int lanes = blockDim.x, l = threadIdx.x;
    for (int base = 0; base < n; base += lanes) {
        const int q = base + l;
        const bool k = q < n && keep(q);
        const int x = k ? value(q) : 0;  // read before any lane writes (dst may be the source, compacted)
        const unsigned mask = __ballot_sync(ALL_LANES, k);
        if (k) dst[at + __popc(mask & ((1u << l) - 1u))] = x;
        at += __popc(mask);
    }
    __syncwarp();
    return at;
}

// the smallest (d, j) of the lanes, ties to the smaller j (the serial loop's first minimum), in every lane
__device__ void lanes_argmin(double& d, int& j) {
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        const double od = __shfl_xor_sync(ALL_LANES, d, o);
        const int oj = __shfl_xor_sync(ALL_LANES, j, o);
        if (od < d || (od == d && oj < j)) d = od, j = oj;
    }
}

// The assignment's scratch of one stream, W entries each (u, v, minv float64; p, way, rk, ck int32; used
// uint8): in the block's dynamic shared memory on the GPU, W * 41 bytes (every step of the scan reads what
// other lanes wrote in the step before: shared memory keeps that inside the SM instead of a round trip
// through L2); in the arguments' global rows in the tests' host build (rk and ck: arrays of its own).
struct LapWork {
    double *u, *v, *minv;
    int *p, *way, *rk, *ck;
    unsigned char* used;
};

__device__ LapWork lap_work(double* u, double* v, double* minv, int* p, int* way, unsigned char* used, size_t W) {
#ifdef __CUDACC__
    extern __shared__ double lap_shared[];
    double* d = lap_shared;
    int* i = (int*)(d + 3 * W);
    return {d, d + W, d + 2 * W, i, i + W, i + 2 * W, i + 3 * W, (unsigned char*)(i + 4 * W)};
#else
    static int rk[1 << 16], ck[1 << 16];
    return {u, v, minv, p, way, rk, ck, used};
#endif
}

// lap.lapjv(c[:n, :m], extend_cost=True, cost_limit=limit), c row-major with row stride ld:
// rowsol[r] = the column of row r, or -1.
// A solution pays c for each pair it matches and limit / 2 for each row and column it leaves unmatched, so
// it pays limit * (n + m) / 2 plus (c - limit) for each pair: the same optima as the smallest sum of c - limit
// over any set of pairs. First the problem shrinks, exactly: a pair with c > limit is never in an optimum, and
// a row or column with no entry <= limit is unmatched in every optimum; only the rows and columns with such an
// entry (rk, ck) stay (in a crowd most tracks are lost ones far from every detection). Then the rectangular
// problem is solved with the smaller side as its a rows, against the other side's b columns plus a columns of
// cost 0 (a row left unmatched), by shortest augmenting paths with dual potentials (the Hungarian method): a
// augmentations over a + b columns, where the square problem of lap's extended matrix takes a + b.
// The lanes share each step's scan over the columns (a column's minv, way and v belong to one lane) and take
// the step's minimum by lanes_argmin, so every value is the serial loop's, bit for bit; lane 0 walks the
// augmenting path.
__device__ void lap_one(const float* c, int ld, int n, int m, double limit, double* u, double* v, double* minv,
                        int* p, int* way, unsigned char* used, int* rk, int* ck, int* rowsol) {
    const int lanes = blockDim.x, l = threadIdx.x;
    for (int r = l; r < n; r += lanes) rowsol[r] = -1;
    __syncwarp();
    if (n == 0 || m == 0) return;
    auto same = [](int q) { return q; };
    const int n0 = n;
    n = append_if(rk, 0, n0, [&](int r) {
        for (int q = 0; q < m; ++q)
            if ((double)c[(size_t)r * ld + q] <= limit) return true;
        return false;
    }, same);
    m = append_if(ck, 0, m, [&](int q) {
        for (int r = 0; r < n; ++r)
            if ((double)c[(size_t)rk[r] * ld + q] <= limit) return true;
        return false;
    }, same);
    if (n == 0 || m == 0) return;
    const bool flip = n > m;  // rows: the kept detections when they are fewer than the kept tracks
    const int a = flip ? m : n, b = flip ? n : m, N = a + b;
    for (int j = l; j <= N; j += lanes) u[j] = v[j] = 0.0, p[j] = way[j] = 0;
    for (int i = 1; i <= a; ++i) {  // rows 1..a, columns 1..N; p[j]: the row holding column j (0: none)
        __syncwarp();
        if (l == 0) p[0] = i;
        int j0 = 0;
        for (int j = l; j <= N; j += lanes) minv[j] = BIG, used[j] = 0;
        __syncwarp();
        do {
            if (l == 0) used[j0] = 1;
            __syncwarp();
            const int i0 = p[j0], r = i0 - 1;
            double delta = BIG;
            int j1 = 0;
            for (int j = 1 + l; j <= N; j += lanes) {
                if (used[j]) continue;
                const int q = j - 1;
                const size_t at = q >= b ? 0 : flip ? (size_t)rk[q] * ld + ck[r] : (size_t)rk[r] * ld + ck[q];
                const double cij = q < b ? (double)c[at] - limit : 0.0;  // q >= b: a row left unmatched
                const double cur = cij - u[i0] - v[j];
                if (cur < minv[j]) minv[j] = cur, way[j] = j0;
                if (minv[j] < delta) delta = minv[j], j1 = j;
            }
            lanes_argmin(delta, j1);
            __syncwarp();  // u[i0] read by every lane before a lane adds to it
            for (int j = l; j <= N; j += lanes) {
                if (used[j]) u[p[j]] += delta, v[j] -= delta;
                else minv[j] -= delta;
            }
            __syncwarp();
            j0 = j1;
        } while (p[j0] != 0);
        if (l == 0) do {
            const int j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
        } while (j0);
    }
    __syncwarp();
    for (int j = 1 + l; j <= b; j += lanes)
        if (p[j] >= 1) {
            if (flip) rowsol[rk[j - 1]] = ck[p[j] - 1];
            else rowsol[rk[p[j] - 1]] = ck[j - 1];
        }
    __syncwarp();
}

extern "C" __global__ void PREDICT_NAME(double* __restrict__ mean, double* __restrict__ cov,
                                        const unsigned char* __restrict__ tracked, int T) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < T) kf_predict_row(mean + (size_t)i * 8, cov + (size_t)i * 64, tracked[i]);
}

extern "C" __global__ void UPDATE_NAME(double* __restrict__ mean, double* __restrict__ cov,
                                       const double* __restrict__ z, const int* __restrict__ rows, int M) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < M) kf_update_row(mean + (size_t)rows[j] * 8, cov + (size_t)rows[j] * 64, z + (size_t)j * 4);
}

extern "C" __global__ void COST_NAME(const float* __restrict__ tracks, const int* __restrict__ n_tracks,
                                     const float* __restrict__ dets, const float* __restrict__ scores,
                                     const int* __restrict__ n_dets, float* __restrict__ cost,
                                     int S, int T, int D, int fuse) {
    const long k = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (long)S * T * D) return;
    const int s = (int)(k / ((long)T * D)), i = (int)(k / D % T), j = (int)(k % D);
    if (i >= n_tracks[s] || j >= n_dets[s]) return;
    float c = iou_cost_one(tracks + ((size_t)s * T + i) * 4, dets + ((size_t)s * D + j) * 4);
    if (fuse) c = 1.0f - (1.0f - c) * scores[(size_t)s * D + j];
    cost[((size_t)s * T + i) * D + j] = c;
}

extern "C" __global__ void ASSIGN_NAME(const float* __restrict__ cost, const int* __restrict__ n_tracks,
                                       const int* __restrict__ n_dets, int* __restrict__ match,
                                       double* __restrict__ u, double* __restrict__ v, double* __restrict__ minv,
                                       int* __restrict__ p, int* __restrict__ way, unsigned char* __restrict__ used,
                                       int S, int T, int D, double limit) {
    const int s = blockIdx.x;  // one stream per block of blockDim.x lanes
    if (s >= S) return;
    const size_t W = (size_t)T + D + 1, o = (size_t)s * W;
    const LapWork w = lap_work(u + o, v + o, minv + o, p + o, way + o, used + o, W);
    for (int i = threadIdx.x; i < T; i += blockDim.x) match[(size_t)s * T + i] = -1;
    __syncwarp();
    lap_one(cost + (size_t)s * T * D, D, n_tracks[s], n_dets[s], limit, w.u, w.v, w.minv, w.p, w.way, w.used, w.rk,
            w.ck, match + (size_t)s * T);
}

// ------------------------------------------------------------------ the tracker: one warp per stream
__constant__ double OKS_DEN[17] = OKS_DEN_INIT;

// reference.oks_cost for one pair: m the track's mean, tk / tc its keypoints (17 x 3) and their center,
// dk the detection's keypoints; -1 where no keypoint is seen by both
__device__ float oks_one(const double* m, const float* tk, const double* tc, const float* dk) {
    const double area = m[2] * m[3] * m[3] * AREA_FRACTION, sx = m[0] - tc[0], sy = m[1] - tc[1];
    double acc = 0.0;
    int n = 0;
    for (int k = 0; k < 17; ++k)
        if (tk[k * 3 + 2] > KPT_CONF && dk[k * 3 + 2] > KPT_CONF) {
            const double dx = ((double)tk[k * 3] + sx) - (double)dk[k * 3];
            const double dy = ((double)tk[k * 3 + 1] + sy) - (double)dk[k * 3 + 1];
            acc += exp(-((dx * dx + dy * dy) / (OKS_DEN[k] * (area + 1e-7))));
            ++n;
        }
    return n ? (float)(1.0 - acc / n) : -1.0f;
}

struct Stream {  // one stream's rows of the state and scratch arrays
    int *id, *st, *act, *idx, *frame, *start;
    float* score;
    double *mean, *cov;
    int *trk, *lst;
    float *dxyxy, *dxyah, *dscore;
    int *hi, *lo, *pool, *rest, *unconf, *dleft, *acts, *refs, *lost_new, *new_trk, *new_lst, *mark, *rowsol;
    float* cost;
    double *u, *v, *minv;
    int *p, *way;
    unsigned char* used;
    int *rk, *ck;      // the assignment's kept rows and columns
    float* tkp;        // track keypoints (K, 17, 3), 'oks'
    double* tkc;       // their center (K, 2)
    int* rm_at;        // the frame a track was first removed at (0: never)
    const float* dkp;  // the frame's detection keypoints (M, 17, 3)
    int K, M, oks;
};

__device__ void track_xyxy(const double* m, float out[4]) {  // reference _Track.xyxy (float64), as float32
    const double w = m[2] * m[3], x1 = m[0] - w / 2, y1 = m[1] - m[3] / 2;
    out[0] = (float)x1;
    out[1] = (float)y1;
    out[2] = (float)(x1 + w);
    out[3] = (float)(y1 + m[3]);
}

// cost[:n, :m]: track slots rows[] x detections cols[] (indices of the frame's detections), a pair per lane
__device__ void costs(const Stream& z, const int* rows, int n, const int* cols, int m, int fuse) {
    float a[4];
    for (int k = threadIdx.x; k < n * m; k += blockDim.x) {
        const int r = k / m, q = k % m, j = cols[q], t = rows[r];
        track_xyxy(z.mean + (size_t)t * 8, a);
        float c = z.oks ? oks_one(z.mean + (size_t)t * 8, z.tkp + (size_t)t * 51, z.tkc + (size_t)t * 2,
                                  z.dkp + (size_t)j * 51) : -1.0f;
        if (c < 0.0f) c = iou_cost_one(a, z.dxyxy + (size_t)j * 4);
        if (fuse) c = 1.0f - (1.0f - c) * z.dscore[j];
        z.cost[(size_t)r * z.M + q] = c;
    }
    __syncwarp();
}

__device__ void lap_stream(const Stream& z, int n, int m, double limit) {
    lap_one(z.cost, z.M, n, m, limit, z.u, z.v, z.minv, z.p, z.way, z.used, z.rk, z.ck, z.rowsol);
}

// 'oks': track t keeps detection j's keypoints and center
__device__ void keep_kpts(const Stream& z, int t, int j) {
    for (int c = 0; c < 51; ++c) z.tkp[(size_t)t * 51 + c] = z.dkp[(size_t)j * 51 + c];
    z.tkc[(size_t)t * 2] = (double)z.dxyah[(size_t)j * 4];
    z.tkc[(size_t)t * 2 + 1] = (double)z.dxyah[(size_t)j * 4 + 1];
}

// reference _Track.take: the filter takes detection j; the track is tracked and confirmed
__device__ void take(const Stream& z, int t, int j, int fid) {
    if (z.oks) keep_kpts(z, t, j);
    double m[4];
    for (int c = 0; c < 4; ++c) m[c] = (double)z.dxyah[(size_t)j * 4 + c];
    kf_update_row(z.mean + (size_t)t * 8, z.cov + (size_t)t * 64, m);
    z.st[t] = TRACKED;
    z.act[t] = 1;
    z.frame[t] = fid;
    z.score[t] = z.dscore[j];
    z.idx[t] = j;
}

extern "C" __global__ void TRACK_NAME(
    const float* __restrict__ boxes, const float* __restrict__ scores, const int* __restrict__ counts,
    const int* __restrict__ order, const int* __restrict__ n_frames, const int* __restrict__ restart,
    int* __restrict__ ids, const float* __restrict__ kpts_in,
    int* id, int* st, int* act, float* score, int* idx, int* frame, int* start, double* mean, double* cov,
    int* trk, int* ntrk, int* lst, int* nlst, int* fids, int* next_id, int* overflow, float* tkp, double* tkc,
    int* rm_at,
    int* hi, int* lo, float* dxyxy, float* dxyah, float* dscore, int* pool, int* rest, int* unconf, int* dleft,
    int* acts, int* refs, int* lost_new, int* new_trk, int* new_lst, int* mark, int* rowsol, float* cost,
    double* u, double* v, double* minv, int* p, int* way, unsigned char* used,
    int S, int K, int M, int F, float high, float low, float new_thresh, int buffer, double match_thresh,
    int fuse, int oks) {
    const int s = blockIdx.x, lanes = blockDim.x, l = threadIdx.x;  // one stream per block
    if (s >= S) return;
    const size_t sK = (size_t)s * K, sM = (size_t)s * M, W = (size_t)K + M + 1, KM = K > M ? K : M;
    Stream z = {id + sK, st + sK, act + sK, idx + sK, frame + sK, start + sK, score + sK, mean + sK * 8,
                cov + sK * 64, trk + sK, lst + sK, dxyxy + sM * 4, dxyah + sM * 4, dscore + sM, hi + sM, lo + sM,
                pool + sK, rest + sK, unconf + sK, dleft + sM, acts + sK, refs + sK, lost_new + sK, new_trk + sK,
                new_lst + sK, mark + (size_t)s * KM, rowsol + sK, cost + sK * M, nullptr, nullptr, nullptr,
                nullptr, nullptr, nullptr, nullptr, nullptr, tkp + sK * 51, tkc + sK * 2, rm_at + sK, kpts_in, K, M, oks};
    const LapWork w = lap_work(u + s * W, v + s * W, minv + s * W, p + s * W, way + s * W, used + s * W, W);
    z.u = w.u, z.v = w.v, z.minv = w.minv, z.p = w.p, z.way = w.way, z.used = w.used, z.rk = w.rk, z.ck = w.ck;
    // the stream's counters, alike in every lane; lane 0 stores them at the end
    int n_trk = ntrk[s], n_lst = nlst[s], fid = fids[s], next = next_id[s];
    const int* sorder = order + (size_t)s * F;
    auto gone_before = [&](int t) { return z.rm_at[t] > 0 && z.rm_at[t] < fid; };  // removed on an earlier frame
    for (int f = 0; f < n_frames[s]; ++f) {
        const int b = sorder[f];
        if (restart[b]) {
            for (int t = l; t < K; t += lanes) z.st[t] = FREE;
            n_trk = n_lst = fid = next = 0;
        }
        ++fid;
        if (oks) z.dkp = kpts_in + (size_t)b * M * 51;
        int* out = ids + (size_t)b * M;
        for (int j = l; j < M; j += lanes) out[j] = 0;
        // detections: tlwh through the original's dtypes (float32 xywh, float64 ltwh, float32), split by score
        const int nd = counts[b];
        const float* bxs = boxes + (size_t)b * M * 4;
        for (int j = l; j < nd; j += lanes) {
            const float* bx = bxs + (size_t)j * 4;
            const float cx = (bx[0] + bx[2]) / 2.0f, cy = (bx[1] + bx[3]) / 2.0f;
            const float w = bx[2] - bx[0], h = bx[3] - bx[1];
            const float x1 = (float)((double)cx - (double)w / 2), y1 = (float)((double)cy - (double)h / 2);
            float* dx = z.dxyxy + (size_t)j * 4;
            float* da = z.dxyah + (size_t)j * 4;
            dx[0] = x1, dx[1] = y1, dx[2] = x1 + w, dx[3] = y1 + h;
            da[0] = x1 + w / 2.0f, da[1] = y1 + h / 2.0f, da[2] = h != 0.0f ? w / h : 0.0f, da[3] = h;
            z.dscore[j] = scores[(size_t)b * M + j];
        }
        __syncwarp();
        auto sized = [&](int j) { const float* bx = bxs + (size_t)j * 4; return bx[2] - bx[0] > 0.0f && bx[3] - bx[1] > 0.0f; };
        auto same = [](int q) { return q; };
        const int nhi = append_if(z.hi, 0, nd, [&](int j) { return sized(j) && z.dscore[j] >= high; }, same);
        const int nlo = append_if(z.lo, 0, nd, [&](int j) { return sized(j) && z.dscore[j] < high && z.dscore[j] > low; },
                                  same);
        // the pool: confirmed tracked tracks, then the lost ones; predicted
        auto trk_at = [&](int q) { return z.trk[q]; };
        int npool = append_if(z.pool, 0, n_trk, [&](int q) { return z.act[z.trk[q]] != 0; }, trk_at);
        const int nunc = append_if(z.unconf, 0, n_trk, [&](int q) { return z.act[z.trk[q]] == 0; }, trk_at);
        npool = append_if(z.pool, npool, n_lst, [](int) { return true; }, [&](int q) { return z.lst[q]; });
        for (int q = l; q < npool; q += lanes) {
            const int t = z.pool[q];
            kf_predict_row(z.mean + (size_t)t * 8, z.cov + (size_t)t * 64, z.st[t] == TRACKED);
        }
        __syncwarp();
        // first association: the pool vs the high detections (fused), limit match_thresh
        costs(z, z.pool, npool, z.hi, nhi, fuse);
        lap_stream(z, npool, nhi, match_thresh);
        for (int j = l; j < nhi; j += lanes) z.mark[j] = 0;
        __syncwarp();
        auto pool_at = [&](int q) { return z.pool[q]; };
        int nact = append_if(z.acts, 0, npool, [&](int q) { return z.rowsol[q] >= 0 && z.st[z.pool[q]] == TRACKED; },
                             pool_at);
        const int nref = append_if(z.refs, 0, npool,
                                   [&](int q) { return z.rowsol[q] >= 0 && z.st[z.pool[q]] != TRACKED; }, pool_at);
        const int nrest = append_if(z.rest, 0, npool,
                                    [&](int q) { return z.rowsol[q] < 0 && z.st[z.pool[q]] == TRACKED; }, pool_at);
        for (int q = l; q < npool; q += lanes) {
            const int j = z.rowsol[q];
            if (j >= 0) {
                z.mark[j] = 1;
                take(z, z.pool[q], z.hi[j], fid);
            }
        }
        __syncwarp();
        const int nleft = append_if(z.dleft, 0, nhi, [&](int j) { return !z.mark[j]; }, [&](int j) { return z.hi[j]; });
        // second association: the tracked tracks left vs the low detections (IoU), limit 0.5
        if (nrest && nlo) {
            costs(z, z.rest, nrest, z.lo, nlo, 0);
            lap_stream(z, nrest, nlo, 0.5);
        } else {
            for (int q = l; q < nrest; q += lanes) z.rowsol[q] = -1;
            __syncwarp();
        }
        auto rest_at = [&](int q) { return z.rest[q]; };
        nact = append_if(z.acts, nact, nrest, [&](int q) { return z.rowsol[q] >= 0; }, rest_at);
        const int nlost = append_if(z.lost_new, 0, nrest, [&](int q) { return z.rowsol[q] < 0; }, rest_at);
        for (int q = l; q < nrest; q += lanes) {
            const int t = z.rest[q];
            if (z.rowsol[q] >= 0) take(z, t, z.lo[z.rowsol[q]], fid);
            else z.st[t] = LOST;
        }
        __syncwarp();
        // unconfirmed tracks vs the high detections left (fused), limit 0.7; the rest are removed
        int nbirth = nleft;
        if (nunc) {
            costs(z, z.unconf, nunc, z.dleft, nleft, fuse);
            lap_stream(z, nunc, nleft, 0.7);
            for (int q = l; q < nleft; q += lanes) z.mark[q] = 0;
            __syncwarp();
            nact = append_if(z.acts, nact, nunc, [&](int q) { return z.rowsol[q] >= 0; }, [&](int q) { return z.unconf[q]; });
            for (int q = l; q < nunc; q += lanes) {
                const int t = z.unconf[q], j = z.rowsol[q];
                if (j >= 0) {
                    z.mark[j] = 1;
                    take(z, t, z.dleft[j], fid);
                } else {
                    z.st[t] = REMOVED;
                    z.rm_at[t] = fid;
                }
            }
            __syncwarp();
            nbirth = append_if(z.dleft, 0, nleft, [&](int q) { return !z.mark[q]; }, [&](int q) { return z.dleft[q]; });
        }
        // births: the high detections left with score >= new_thresh (confirmed at once on frame 1 only), in
        // order; the reference hands each the first free slot and the next id, so birth q takes the q-th free
        // slot and id next + 1 + q, a birth per lane (the hi and pool lists are free by now)
        const int nb = append_if(z.hi, 0, nbirth, [&](int q) { return z.dscore[z.dleft[q]] >= new_thresh; },
                                 [&](int q) { return z.dleft[q]; });
        const int nfree = append_if(z.pool, 0, K, [&](int t) { return z.st[t] == FREE; }, same);
        const int nborn = nb < nfree ? nb : nfree;
        if (nb > nfree && l == 0) overflow[s] = 1;
        for (int q = l; q < nborn; q += lanes) {
            const int t = z.pool[q], j = z.hi[q];
            z.id[t] = next + 1 + q;
            double* m = z.mean + (size_t)t * 8;
            double* P = z.cov + (size_t)t * 64;
            const double hh = (double)z.dxyah[(size_t)j * 4 + 3];
            for (int c = 0; c < 4; ++c) m[c] = (double)z.dxyah[(size_t)j * 4 + c], m[c + 4] = 0.0;
            for (int c = 0; c < 64; ++c) P[c] = 0.0;
            const double sp = 2 * W_POS * hh, sv = 10 * W_VEL * hh;
            P[0] = P[9] = P[27] = sp * sp;
            P[18] = 1e-2 * 1e-2;
            P[36] = P[45] = P[63] = sv * sv;
            P[54] = 1e-5 * 1e-5;
            z.st[t] = TRACKED;
            z.act[t] = fid == 1;
            z.frame[t] = z.start[t] = fid;
            z.score[t] = z.dscore[j];
            z.idx[t] = j;
            z.rm_at[t] = 0;
            if (oks) keep_kpts(z, t, j);
            z.acts[nact + q] = t;
        }
        nact += nborn;
        next += nborn;
        __syncwarp();
        // lost tracks past the buffer are removed; as in Ultralytics, one removed now stays among the lost (it
        // can be re-found) until the next frame's merge, which drops every track removed before
        for (int q = l; q < n_lst; q += lanes) {
            const int t = z.lst[q];
            if (fid - z.frame[t] > buffer) {
                z.st[t] = REMOVED;
                if (!z.rm_at[t]) z.rm_at[t] = fid;
            }
        }
        for (int t = l; t < K; t += lanes) z.mark[t] = 0;
        __syncwarp();
        // merge (reference _merge): tracked = old tracked still tracked + activated + refound, in order (the
        // three are disjoint: a track is matched once a frame)
        int n1 = append_if(z.new_trk, 0, n_trk, [&](int q) { return z.st[z.trk[q]] == TRACKED; }, trk_at);
        for (int q = l; q < n1; q += lanes) z.mark[z.new_trk[q]] = 1;
        __syncwarp();
        const int kept = n1;
        n1 = append_if(z.new_trk, n1, nact, [&](int q) { return !z.mark[z.acts[q]]; }, [&](int q) { return z.acts[q]; });
        n1 = append_if(z.new_trk, n1, nref, [&](int q) { return !z.mark[z.refs[q]]; }, [&](int q) { return z.refs[q]; });
        for (int q = kept + l; q < n1; q += lanes) z.mark[z.new_trk[q]] = 1;
        __syncwarp();
        int n2 = append_if(z.new_lst, 0, n_lst, [&](int q) { return !z.mark[z.lst[q]] && !gone_before(z.lst[q]); },
                           [&](int q) { return z.lst[q]; });
        n2 = append_if(z.new_lst, n2, nlost, [&](int q) { return !gone_before(z.lost_new[q]); },
                       [&](int q) { return z.lost_new[q]; });
        // duplicates: a tracked and a lost track with 1 - IoU < 0.15: the younger goes (mark 2), a pair per lane
        for (int k2 = l; k2 < n1 * n2; k2 += lanes) {
            float a[4], c[4];
            const int tp = z.new_trk[k2 / n2], tq = z.new_lst[k2 % n2];
            track_xyxy(z.mean + (size_t)tp * 8, a);
            track_xyxy(z.mean + (size_t)tq * 8, c);
            if (iou_cost_one(a, c) < 0.15f) {
                if (z.frame[tp] - z.start[tp] > z.frame[tq] - z.start[tq]) z.mark[tq] = 2;
                else z.mark[tp] = 2;
            }
        }
        __syncwarp();
        n_trk = append_if(z.trk, 0, n1, [&](int q) { return z.mark[z.new_trk[q]] != 2; }, [&](int q) { return z.new_trk[q]; });
        n_lst = append_if(z.lst, 0, n2, [&](int q) { return z.mark[z.new_lst[q]] != 2; }, [&](int q) { return z.new_lst[q]; });
        for (int t = l; t < K; t += lanes) z.mark[t] = 0;
        __syncwarp();
        for (int q = l; q < n_trk; q += lanes) {
            const int t = z.trk[q];
            z.mark[t] = 1;
            if (z.act[t]) out[z.idx[t]] = z.id[t];
        }
        for (int q = l; q < n_lst; q += lanes) z.mark[z.lst[q]] = 1;
        __syncwarp();
        for (int t = l; t < K; t += lanes)
            if (!z.mark[t]) z.st[t] = FREE;
        __syncwarp();
    }
    if (l == 0) ntrk[s] = n_trk, nlst[s] = n_lst, fids[s] = fid, next_id[s] = next;
}
