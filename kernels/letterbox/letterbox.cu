// Letterbox: a batch of BGR uint8 HxWx3 frames (or NV12 frames) of any sizes -> RGB canvas in [0, 1],
// resized exactly as cv2.resize(INTER_LINEAR) resizes uint8 images (same fixed-point arithmetic, bit for
// bit), padded with 114, in one launch: the same tensor Ultralytics' LetterBox + preprocess make.
//
// Specialized by the generated #define block (see kernels/_common.cupy_module):
//   KNAME   kernel name, e.g. letterbox_bgr_f16_nhwc OUT_F16  1: half output, 0: float output
//   NV12    1: frames are NV12 (Y plane + interleaved UV plane), converted as cv2.COLOR_YUV2BGR_NV12
//   NHWC    1: the canvas (B, 3, H, W) is laid out channels-last (memory B, H, W, 3), as the backbone's weights
//           are; 0: planar (B, 3, H, W)
//
// Work: one thread makes PX=4 adjacent output pixels of one row, all 3 channels, and stores them with one
// 8-byte (f16) or 16-byte (f32) store per plane (planar), or three such stores of its 12 contiguous values
// (channels-last). Bytes: reads ~src_h*src_w*3 (BGR) or 1.5 (NV12) per frame
// (taps overlap in L1/L2), writes 3*out_h*out_w*sizeof(out) per frame.
//
// Per-frame descriptors (device tables, built once per batch layout on the host):
//   src[b] = {plane0 pointer, plane0 pitch in bytes, plane1 pointer (UV, NV12 only), plane1 pitch}
//   geo[b] = {src_h, src_w, new_h, new_w, top, left, column-table offset, row-table offset}

#define PX 4

__device__ __forceinline__ unsigned short f32_to_f16_bits(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}


__device__ __forceinline__ unsigned char sat_u8(int v) { return (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v)); }

// One source pixel as (b, g, r) in 0..255.
__device__ __forceinline__ void fetch(const unsigned char* __restrict__ p0, long long pitch0,
                                      const unsigned char* __restrict__ p1, long long pitch1,
                                      int y, int x, int& b, int& g, int& r) {
#if NV12
    // OpenCV's YUV420sp -> BGR, BT.601 limited range, 20-bit fixed point (ITUR_BT_601_* constants).
    const int yv = (int)p0[(long long)y * pitch0 + x];
    const unsigned char* uv = p1 + (long long)(y >> 1) * pitch1 + (x & ~1);
    const int u = (int)uv[0] - 128, v = (int)uv[1] - 128;
    const int half = 1 << 19;
    const int ruv = half + 1673527 * v;
    const int guv = half - 852492 * v - 409993 * u;
    const int buv = half + 2116026 * u;
    const int yy = max(0, yv - 16) * 1220542;
    r = sat_u8((yy + ruv) >> 20);
    g = sat_u8((yy + guv) >> 20);
    b = sat_u8((yy + buv) >> 20);
#else
    const unsigned char* q = p0 + (long long)y * pitch0 + 3 * x;
    b = q[0];
    g = q[1];
    r = q[2];
#endif
}

// cv2.resize INTER_LINEAR on uint8, bit for bit, from OpenCV's fixed-point coefficients, which the host
// computes once per layout (geometry.resize_coefficients): per output column x0, x1, a0, a1 (11-bit weights),
// per output row y0, y1, b0, b1. Horizontal pass D = S[x0]*a0 + S[x1]*a1 (exact integers), then OpenCV's
// SIMD vertical step ((D0 >> 4) * b0 >> 16) + ((D1 >> 4) * b1 >> 16) + 2 >> 2, saturated to uint8.
__device__ __forceinline__ int vresize(int d0, int d1, int b0, int b1) {
    return min(255, max(0, ((((d0 >> 4) * b0) >> 16) + (((d1 >> 4) * b1) >> 16) + 2) >> 2));
}

extern "C" __global__ void KNAME(const long long* __restrict__ src, const int* __restrict__ geo,
                                 const int4* __restrict__ cols, const int4* __restrict__ rows,
#if OUT_F16
                                 unsigned short* __restrict__ out,
#else
                                 float* __restrict__ out,
#endif
                                 int out_h, int out_w) {
    const int b = blockIdx.z;
    const int oy = blockIdx.y * blockDim.y + threadIdx.y;
    const int ox0 = (blockIdx.x * blockDim.x + threadIdx.x) * PX;
    if (oy >= out_h || ox0 >= out_w) return;

    const int* gb = geo + 8 * b;  // src_h, src_w, new_h, new_w, top, left, column offset, row offset
    const int new_h = gb[2], new_w = gb[3], top = gb[4], left = gb[5];
    const int4* col = cols + gb[6];
    const unsigned char* p0 = (const unsigned char*)src[4 * b + 0];
    const long long pitch0 = src[4 * b + 1];
    const unsigned char* p1 = (const unsigned char*)src[4 * b + 2];
    const long long pitch1 = src[4 * b + 3];

    const float pad = 114.0f / 255.0f;
    float vr[PX], vg[PX], vb[PX];

    const int dy = oy - top;
    const bool row_in = dy >= 0 && dy < new_h;
    const int4 rw = row_in ? rows[gb[7] + dy] : make_int4(0, 0, 0, 0);  // y0, y1, b0, b1

#pragma unroll
    for (int k = 0; k < PX; ++k) {
        const int dx = ox0 + k - left;
        if (!row_in || dx < 0 || dx >= new_w) {
            vr[k] = vg[k] = vb[k] = pad;
            continue;
        }
        const int4 c = col[dx];  // x0, x1, a0, a1
        int b00, g00, r00, b01, g01, r01, b10, g10, r10, b11, g11, r11;
        fetch(p0, pitch0, p1, pitch1, rw.x, c.x, b00, g00, r00);
        fetch(p0, pitch0, p1, pitch1, rw.x, c.y, b01, g01, r01);
        fetch(p0, pitch0, p1, pitch1, rw.y, c.x, b10, g10, r10);
        fetch(p0, pitch0, p1, pitch1, rw.y, c.y, b11, g11, r11);
        // uint8 level / 255 in float32 (a division, as the reference's / 255); fp16 rounds once from it
        vr[k] = (float)vresize(r00 * c.z + r01 * c.w, r10 * c.z + r11 * c.w, rw.z, rw.w) / 255.0f;
        vg[k] = (float)vresize(g00 * c.z + g01 * c.w, g10 * c.z + g11 * c.w, rw.z, rw.w) / 255.0f;
        vb[k] = (float)vresize(b00 * c.z + b01 * c.w, b10 * c.z + b11 * c.w, rw.z, rw.w) / 255.0f;
    }

#if NHWC
    // the 12 values r0 g0 b0 r1 g1 b1 ... b3 are contiguous: (row * out_w + ox0) * 3, a multiple of 12 elements
    const size_t o = (((size_t)b * out_h + oy) * out_w + ox0) * 3;
    const float v[3 * PX] = {vr[0], vg[0], vb[0], vr[1], vg[1], vb[1], vr[2], vg[2], vb[2], vr[3], vg[3], vb[3]};
#if OUT_F16
    uint2 w;
#pragma unroll
    for (int q = 0; q < 3; ++q) {
        w.x = f32_to_f16_bits(v[4 * q]) | ((unsigned)f32_to_f16_bits(v[4 * q + 1]) << 16);
        w.y = f32_to_f16_bits(v[4 * q + 2]) | ((unsigned)f32_to_f16_bits(v[4 * q + 3]) << 16);
        *reinterpret_cast<uint2*>(out + o + 4 * q) = w;
    }
#else
#pragma unroll
    for (int q = 0; q < 3; ++q)
        *reinterpret_cast<float4*>(out + o + 4 * q) = make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
#endif
#else
    const size_t plane = (size_t)out_h * out_w;
    const size_t o = (size_t)b * 3 * plane + (size_t)oy * out_w + ox0;  // out_w % PX == 0 (checked on host)
#if OUT_F16
    uint2 w;
    w.x = f32_to_f16_bits(vr[0]) | ((unsigned)f32_to_f16_bits(vr[1]) << 16);
    w.y = f32_to_f16_bits(vr[2]) | ((unsigned)f32_to_f16_bits(vr[3]) << 16);
    *reinterpret_cast<uint2*>(out + o) = w;
    w.x = f32_to_f16_bits(vg[0]) | ((unsigned)f32_to_f16_bits(vg[1]) << 16);
    w.y = f32_to_f16_bits(vg[2]) | ((unsigned)f32_to_f16_bits(vg[3]) << 16);
    *reinterpret_cast<uint2*>(out + o + plane) = w;
    w.x = f32_to_f16_bits(vb[0]) | ((unsigned)f32_to_f16_bits(vb[1]) << 16);
    w.y = f32_to_f16_bits(vb[2]) | ((unsigned)f32_to_f16_bits(vb[3]) << 16);
    *reinterpret_cast<uint2*>(out + o + 2 * plane) = w;
#else
    *reinterpret_cast<float4*>(out + o) = make_float4(vr[0], vr[1], vr[2], vr[3]);
    *reinterpret_cast<float4*>(out + o + plane) = make_float4(vg[0], vg[1], vg[2], vg[3]);
    *reinterpret_cast<float4*>(out + o + 2 * plane) = make_float4(vb[0], vb[1], vb[2], vb[3]);
#endif
#endif
}
