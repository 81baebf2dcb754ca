// Per-image greedy NMS, then rescale to original-image pixels: two kernels, no host synchronization.
//
// Specialized by the generated #define block: KNAME (nms_f32, or topk_f32), RNAME (rescale_f32), SUPPRESS
// (1: NMS; 0: top-k, an end-to-end head's selection: the sorted candidates' first max_det, nothing
// suppressed, no shared memory). Compiled with --fmad=false so the IoU arithmetic is torchvision's CPU
// float32 arithmetic, operation for operation.
//
// KNAME, one block per image:
// 1. rank sort: each candidate's position = number of candidates with a higher score (ties: lower anchor
//    index first); O(n^2 / threads): n is tens on real video, and the sort stays correct for any n <= cap.
// 2. greedy sweep over the sorted list: each kept box removes, in parallel, every later box with
//    IoU > thr (compared in double, as torchvision); stops at max_det kept. One barrier per kept box.
//    Writes the kept candidate rows, best first, to keep[b, :kept] and kept to counts[b].
//    Shared memory: cap bytes (removed flags).
// RNAME, one thread per output row (B * max_det): rows < counts[b] get the kept candidate's box and
// keypoints as (v - pad) / gain, clipped to the image, and its score; the other rows are zero-filled, so
// every output element is written every call.

extern "C" __global__ void KNAME(const float* __restrict__ boxes, const float* __restrict__ scores,
                                 const int* __restrict__ anchors, const int* __restrict__ counts, int cap,
                                 double iou_thr, int max_det, int* __restrict__ order, int* __restrict__ keep,
                                 int* __restrict__ ocounts) {
    extern __shared__ unsigned char removed[];  // cap bytes

    const int b = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
    const int n = min(counts[b], cap);
    const float* sc = scores + (long long)b * cap;
    const int* an = anchors + (long long)b * cap;
    int* ord = order + (long long)b * cap;
    int* kp = keep + (long long)b * max_det;

    for (int i = tid; i < n; i += nt) {
        const float si = sc[i];
        const int ai = an[i];
        int r = 0;
        for (int j = 0; j < n; ++j) {
            const float sj = sc[j];
            r += (sj > si) || (sj == si && an[j] < ai);
        }
        ord[r] = i;
#if SUPPRESS
        removed[i] = 0;
#endif
    }
    __syncthreads();
#if !SUPPRESS
    const int top = min(n, max_det);
    for (int i = tid; i < top; i += nt) kp[i] = ord[i];
    if (tid == 0) ocounts[b] = top;
#else
    const float* bx = boxes + (long long)b * cap * 4;

    int kept = 0;  // uniform across the block
    for (int i = 0; i < n && kept < max_det; ++i) {
        if (removed[i]) continue;
        const int ci = ord[i];
        if (tid == 0) kp[kept] = ci;
        if (++kept == max_det) break;
        const float ix1 = bx[4 * ci], iy1 = bx[4 * ci + 1], ix2 = bx[4 * ci + 2], iy2 = bx[4 * ci + 3];
        const float iarea = (ix2 - ix1) * (iy2 - iy1);
        for (int j = i + 1 + tid; j < n; j += nt) {
            if (removed[j]) continue;
            const int cj = ord[j];
            const float x1 = bx[4 * cj], y1 = bx[4 * cj + 1], x2 = bx[4 * cj + 2], y2 = bx[4 * cj + 3];
            const float area = (x2 - x1) * (y2 - y1);
            const float w = fmaxf(0.0f, fminf(ix2, x2) - fmaxf(ix1, x1));
            const float h = fmaxf(0.0f, fminf(iy2, y2) - fmaxf(iy1, y1));
            const float inter = w * h;
            const float ovr = inter / (iarea + area - inter);  // 0/0 = NaN for zero-area pairs: never > thr
            if ((double)ovr > iou_thr) removed[j] = 1;
        }
        __syncthreads();
    }
    if (tid == 0) ocounts[b] = kept;
#endif
}

extern "C" __global__ void RNAME(const float* __restrict__ boxes, const float* __restrict__ scores,
                                 const float* __restrict__ kpts, int cap, const int* __restrict__ keep,
                                 const int* __restrict__ counts, const float* __restrict__ ratio_pad,
                                 const int* __restrict__ orig_hw, int batch, int max_det,
                                 float* __restrict__ oboxes, float* __restrict__ oscores, float* __restrict__ okpts) {
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= batch * max_det) return;
    const int b = row / max_det, k = row - b * max_det;
    float* ob = oboxes + 4LL * row;
    float* ok = okpts + 51LL * row;
    if (k >= counts[b]) {
        ob[0] = ob[1] = ob[2] = ob[3] = 0.0f;
        oscores[row] = 0.0f;
        for (int q = 0; q < 51; ++q) ok[q] = 0.0f;
        return;
    }
    const long long ci = (long long)b * cap + keep[row];
    const float gx = ratio_pad[4 * b], gy = ratio_pad[4 * b + 1], px = ratio_pad[4 * b + 2], py = ratio_pad[4 * b + 3];
    const float H = (float)orig_hw[2 * b], W = (float)orig_hw[2 * b + 1];
    const float* cb = boxes + 4 * ci;
    // Ultralytics scale_boxes / scale_coords: subtract the pad, divide by the gain, clamp to [0, size].
    ob[0] = fminf(fmaxf((cb[0] - px) / gx, 0.0f), W);
    ob[1] = fminf(fmaxf((cb[1] - py) / gy, 0.0f), H);
    ob[2] = fminf(fmaxf((cb[2] - px) / gx, 0.0f), W);
    ob[3] = fminf(fmaxf((cb[3] - py) / gy, 0.0f), H);
    oscores[row] = scores[ci];
    const float* ck = kpts + 51 * ci;
    for (int q = 0; q < 17; ++q) {
        ok[3 * q + 0] = fminf(fmaxf((ck[3 * q + 0] - px) / gx, 0.0f), W);
        ok[3 * q + 1] = fminf(fmaxf((ck[3 * q + 1] - py) / gy, 0.0f), H);
        ok[3 * q + 2] = ck[3 * q + 2];
    }
}
