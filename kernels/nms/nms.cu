// Per-image greedy NMS + rescale to original-image pixels, one block per image, no host synchronization.
//
// Specialized by the generated #define block: KNAME (nms_rescale_f32). Compiled with --fmad=false so the
// IoU arithmetic is torchvision's CPU float32 arithmetic, operation for operation.
//
// 1. rank sort: each candidate's position = number of candidates with a higher score (ties: lower anchor
//    index first); O(n^2 / threads), n is tens on real video, and stays correct for any n <= cap.
// 2. greedy sweep over the sorted list: each kept box removes, in parallel, every later box with
//    IoU > thr (compared in double, as torchvision); stops at max_det kept. One barrier per kept box.
// 3. rescale kept rows ((v - pad) / gain, clipped to the image) and zero-fill the rest of the padded
//    outputs (every output element is written every call).
// Shared memory: cap bytes (removed flags) + max_det ints (kept candidate rows).

extern "C" __global__ void KNAME(const float* __restrict__ boxes, const float* __restrict__ scores,
                                 const float* __restrict__ kpts, const int* __restrict__ anchors,
                                 const int* __restrict__ counts, int cap, const float* __restrict__ ratio_pad,
                                 const int* __restrict__ orig_hw, double iou_thr, int max_det,
                                 int* __restrict__ order, float* __restrict__ oboxes, float* __restrict__ oscores,
                                 float* __restrict__ okpts, int* __restrict__ ocounts) {
    extern __shared__ unsigned char smem[];
    int* keep = reinterpret_cast<int*>(smem);           // max_det ints
    unsigned char* removed = smem + 4 * max_det;        // cap bytes

    const int b = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
    const int n = min(counts[b], cap);
    const float* bx = boxes + (size_t)b * cap * 4;
    const float* sc = scores + (size_t)b * cap;
    const int* an = anchors + (size_t)b * cap;
    int* ord = order + (size_t)b * cap;

    for (int i = tid; i < n; i += nt) {
        const float si = sc[i];
        const int ai = an[i];
        int r = 0;
        for (int j = 0; j < n; ++j) {
            const float sj = sc[j];
            r += (sj > si) || (sj == si && an[j] < ai);
        }
        ord[r] = i;
        removed[i] = 0;
    }
    __syncthreads();

    int kept = 0;  // uniform across the block
    for (int i = 0; i < n && kept < max_det; ++i) {
        if (removed[i]) continue;
        const int ci = ord[i];
        const float ix1 = bx[4 * ci], iy1 = bx[4 * ci + 1], ix2 = bx[4 * ci + 2], iy2 = bx[4 * ci + 3];
        const float iarea = (ix2 - ix1) * (iy2 - iy1);
        if (tid == 0) keep[kept] = ci;
        ++kept;
        if (kept == max_det) break;
        for (int j = i + 1 + tid; j < n; j += nt) {
            if (removed[j]) continue;
            const int cj = ord[j];
            const float x1 = bx[4 * cj], y1 = bx[4 * cj + 1], x2 = bx[4 * cj + 2], y2 = bx[4 * cj + 3];
            const float area = (x2 - x1) * (y2 - y1);
            const float w = fmaxf(0.0f, fminf(ix2, x2) - fmaxf(ix1, x1));
            const float h = fmaxf(0.0f, fminf(iy2, y2) - fmaxf(iy1, y1));
            const float inter = w * h;
            const float ovr = inter / (iarea + area - inter);
            if ((double)ovr > iou_thr) removed[j] = 1;
        }
        __syncthreads();
    }
    __syncthreads();

    const float gx = ratio_pad[4 * b], gy = ratio_pad[4 * b + 1], px = ratio_pad[4 * b + 2], py = ratio_pad[4 * b + 3];
    const float H = (float)orig_hw[2 * b], W = (float)orig_hw[2 * b + 1];
    float* ob = oboxes + (size_t)b * max_det * 4;
    float* os = oscores + (size_t)b * max_det;
    float* ok = okpts + (size_t)b * max_det * 51;
    for (int k = tid; k < max_det; k += nt) {
        if (k < kept) {
            const int ci = keep[k];
            ob[4 * k + 0] = fminf(fmaxf((bx[4 * ci + 0] - px) / gx, 0.0f), W);
            ob[4 * k + 1] = fminf(fmaxf((bx[4 * ci + 1] - py) / gy, 0.0f), H);
            ob[4 * k + 2] = fminf(fmaxf((bx[4 * ci + 2] - px) / gx, 0.0f), W);
            ob[4 * k + 3] = fminf(fmaxf((bx[4 * ci + 3] - py) / gy, 0.0f), H);
            os[k] = sc[ci];
            const float* kp = kpts + ((size_t)b * cap + ci) * 51;
            for (int q = 0; q < 17; ++q) {
                ok[51 * k + 3 * q + 0] = fminf(fmaxf((kp[3 * q + 0] - px) / gx, 0.0f), W);
                ok[51 * k + 3 * q + 1] = fminf(fmaxf((kp[3 * q + 1] - py) / gy, 0.0f), H);
                ok[51 * k + 3 * q + 2] = kp[3 * q + 2];
            }
        } else {
            ob[4 * k + 0] = ob[4 * k + 1] = ob[4 * k + 2] = ob[4 * k + 3] = 0.0f;
            os[k] = 0.0f;
            for (int q = 0; q < 51; ++q) ok[51 * k + q] = 0.0f;
        }
    }
    if (tid == 0) ocounts[b] = kept;
}
