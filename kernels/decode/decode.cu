// Pose head decode + threshold + stream compaction, one launch per batch.
//
// Specialized by the generated #define block: KNAME (e.g. pose_decode_f16, pose26_e2e_decode_f32), IN_F16
// (1: half raw input), REG_MAX (box bins per side; 1: distances regressed directly, no DFL), KPT26 (1: the
// YOLO26 keypoint decode (v + anchor) * stride; 0: (v * 2 + anchor - 0.5) * stride), E2E (1: an end-to-end
// head's boxes, xyxy from the distances; 0: via centre and size, as the NMS heads compute them).
// raw: (B, 4 * REG_MAX + 1 + 51, A): per anchor the box values, 1 class logit, 17 x 3 keypoint raws.
// One thread per (anchor, image). A non-candidate reads 1 value (the class logit, coalesced) and exits;
// a candidate reads its values and writes 4 + 1 + 51 floats + its anchor index into the next free slot
// of its image (device-side counter, atomicAdd). counts[b] must be zero before the launch.
//
// lvl: (nl, 4) int32 rows (h, w, stride, first anchor index).
// kth: (B,) per-image class-logit floor, only when A > cap (then the cap keeps the top scores), else null.

#define NKV 51
#define C_CLS (4 * REG_MAX)
#define C_KPT (4 * REG_MAX + 1)

#if IN_F16
typedef unsigned short in_t;  // fp16 bits
__device__ __forceinline__ float ld(const in_t* p) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(*p));
    return f;
}
#else
typedef float in_t;
__device__ __forceinline__ float ld(const in_t* p) { return *p; }
#endif

extern "C" __global__ void KNAME(
    const in_t* __restrict__ raw, int A, const int* __restrict__ lvl, int nl, float conf, const float* __restrict__ kth,
    int* __restrict__ ties, int cap,
    float* __restrict__ boxes, float* __restrict__ scores, float* __restrict__ kpts,
    int* __restrict__ anchors, int* __restrict__ counts) {
    const int b = blockIdx.y;
    const int a = blockIdx.x * blockDim.x + threadIdx.x;
    if (a >= A) return;
    const size_t base = (size_t)b * (C_KPT + NKV) * A + a;

    const float logit = ld(raw + base + (size_t)C_CLS * A);
    const float score = 1.0f / (1.0f + expf(-logit));
    if (!(score > conf) || !isfinite(logit)) return;  // strict >, as Ultralytics; NaN never passes
    if (kth != nullptr) {  // the top-cap cut (kernels.decode.top_cut): an anchor tied at it only while a place is left
        if (!(logit >= kth[b])) return;
        if (logit == kth[b] && atomicAdd(ties + 2 * b + 1, 1) >= ties[2 * b]) return;
    }

    int l = 0;
    while (l + 1 < nl && a >= lvl[4 * (l + 1) + 3]) ++l;
    const int lw = lvl[4 * l + 1], cell = a - lvl[4 * l + 3];
    const float stride = (float)lvl[4 * l + 2];
    const float ax = (float)(cell % lw) + 0.5f;
    const float ay = (float)(cell / lw) + 0.5f;

    bool ok = true;
    float d[4];
#if REG_MAX > 1
    // DFL: softmax over the bins, expectation of the bin index, per side (l, t, r, b).
#pragma unroll
    for (int s = 0; s < 4; ++s) {
        float v[REG_MAX];
        float m = __int_as_float(0xff800000);  // -inf (NVRTC has no INFINITY macro)
#pragma unroll
        for (int j = 0; j < REG_MAX; ++j) {
            v[j] = ld(raw + base + (size_t)(s * REG_MAX + j) * A);
            ok = ok && isfinite(v[j]);
            m = fmaxf(m, v[j]);
        }
        float se = 0.f, sj = 0.f;
#pragma unroll
        for (int j = 0; j < REG_MAX; ++j) {
            const float e = expf(v[j] - m);
            se += e;
            sj += e * (float)j;
        }
        d[s] = sj / se;
    }
#else
#pragma unroll
    for (int s = 0; s < 4; ++s) {  // the distances themselves (Ultralytics: dfl is Identity)
        d[s] = ld(raw + base + (size_t)s * A);
        ok = ok && isfinite(d[s]);
    }
#endif
    float kv[NKV];
#pragma unroll
    for (int k = 0; k < NKV; ++k) {
        kv[k] = ld(raw + base + (size_t)(C_KPT + k) * A);
        ok = ok && isfinite(kv[k]);
    }
    if (!ok) return;  // NaN/inf anywhere in the anchor's outputs: never a candidate

    const int slot = atomicAdd(counts + b, 1);
    if (slot >= cap) return;  // never more than cap (= min(A, max_nms)) candidates per image
    const size_t o = (size_t)b * cap + slot;
    const float x1 = ax - d[0], y1 = ay - d[1], x2 = ax + d[2], y2 = ay + d[3];
#if E2E
    // Ultralytics, end-to-end: xyxy in grid units times stride
    float4 bx = make_float4(x1 * stride, y1 * stride, x2 * stride, y2 * stride);
#else
    // Ultralytics: centre/size in grid units times stride, then xywh -> xyxy.
    const float cx = (x1 + x2) / 2 * stride, cy = (y1 + y2) / 2 * stride;
    const float w = (x2 - x1) * stride, hh = (y2 - y1) * stride;
    float4 bx = make_float4(cx - w / 2, cy - hh / 2, cx + w / 2, cy + hh / 2);
#endif
    *reinterpret_cast<float4*>(boxes + 4 * o) = bx;
    scores[o] = score;
    anchors[o] = a;
    float* kp = kpts + NKV * o;
#pragma unroll
    for (int k = 0; k < 17; ++k) {
#if KPT26
        kp[3 * k + 0] = (kv[3 * k + 0] + ax) * stride;
        kp[3 * k + 1] = (kv[3 * k + 1] + ay) * stride;
#else
        kp[3 * k + 0] = (kv[3 * k + 0] * 2.0f + (ax - 0.5f)) * stride;
        kp[3 * k + 1] = (kv[3 * k + 1] * 2.0f + (ay - 0.5f)) * stride;
#endif
        kp[3 * k + 2] = 1.0f / (1.0f + expf(-kv[3 * k + 2]));
    }
}
