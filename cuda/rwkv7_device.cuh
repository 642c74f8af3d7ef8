/*
 * Device helpers shared by the kernels: dtype conversion, 16-byte vector loads, deterministic
 * reductions, and the LayerNorm + token-shift routine that several kernels run in one block.
 *
 * Reductions always combine partial sums in the same order, so a kernel gives bit-identical
 * results on every run, with or without CUDA-graph replay (tests compare the two exactly).
 */
#ifndef RWKV7_DEVICE_CUH
#define RWKV7_DEVICE_CUH

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include "rwkv7.h"

/* Kernels are launched through a function pointer so template arguments need no parentheses;
 * a CPU emulator used by the tests supplies its own RWKV7_LAUNCH. */
#ifndef RWKV7_LAUNCH
#define RWKV7_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

namespace rwkv7 {

constexpr float kDecayScale = 0.6065306597126334f; /* exp(-1/2) */
constexpr float kLayerNormEps = 1e-5f;
constexpr float kGroupNormEps = 64e-5f;
constexpr float kL2NormEps = 1e-12f;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

/* Elements of T in one 16-byte load. */
template <typename T> struct Vec16 { static constexpr int N = 16 / sizeof(T); };

/* Widen 16 raw bytes holding Vec16<T>::N elements of T to fp32. */
__device__ __forceinline__ void widen(const uint4 &raw, float *out, float *) {
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void widen(const uint4 &raw, float *out, __half *) {
    const __half2 *h = reinterpret_cast<const __half2 *>(&raw);
#pragma unroll
    for (int q = 0; q < 4; q++) {
        float2 f = __half22float2(h[q]);
        out[2 * q] = f.x;
        out[2 * q + 1] = f.y;
    }
}
__device__ __forceinline__ void widen(const uint4 &raw, float *out, __nv_bfloat16 *) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
    for (int q = 0; q < 4; q++) {
        float2 f = __bfloat1622float2(h[q]);
        out[2 * q] = f.x;
        out[2 * q + 1] = f.y;
    }
}
template <typename T> __device__ __forceinline__ void widen(const uint4 &raw, float *out) {
    widen(raw, out, static_cast<T *>(nullptr));
}

/* Weights never change while a kernel runs: read them through the read-only path. */
__device__ __forceinline__ uint4 load16(const void *p) { return __ldg(reinterpret_cast<const uint4 *>(p)); }

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Sum over the 32 lanes of a warp; every lane gets the result. */
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

/*
 * Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
 * same value. `scratch` is 32 floats of shared memory; it may be reused right after the call.
 */
__device__ __forceinline__ float block_sum(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* the previous call's readers are done with scratch */
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < warps; i++) total += scratch[i];
    return total;
}

/*
 * LayerNorm one fp32 row of C values with the whole block, then form token-shift mixes:
 *   xn = LN(x) * w + b;  xn_out = xn (the new token-shift state, if not NULL);
 *   out[m][c] = xn + (prev[c] - xn) * mix[m][c]  for m < M.
 * x is read through L2 (__ldcg) because other blocks of the same grid may have just written
 * it (the last-block epilogues); prev and xn_out are distinct buffers.
 */
__device__ __forceinline__ void ln_mix_row(const float *x, const float *w, const float *b, int C,
                                           const float *prev, float *xn_out, const float *mix,
                                           int M, float *out, float *scratch) {
    float sum = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) sum += __ldcg(x + c);
    const float mean = block_sum(sum, scratch) / (float)C;
    float squares = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float d = __ldcg(x + c) - mean;
        squares += d * d;
    }
    const float rstd = 1.0f / sqrtf(block_sum(squares, scratch) / (float)C + kLayerNormEps);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float xn = (__ldcg(x + c) - mean) * rstd * w[c] + b[c];
        if (xn_out) xn_out[c] = xn;
        if (M > 0) {
            const float delta = prev[c] - xn;
            for (int m = 0; m < M; m++) out[(size_t)m * C + c] = xn + delta * mix[(size_t)m * C + c];
        }
    }
}

/*
 * One WKV-7 step of one value row i of a head's N x N state, the row held in registers as s:
 *   sa = sum_j a[j] s[j];  s[j] = s[j] w[j] + sa b[j] + v_i k[j];  returns y_i = sum_j s[j] r[j]
 * (rwkv7-engine.md section 2.2 step 9). r, w, k, a, b are the head's N channels in shared
 * memory, packed as float4. Four independent accumulators per dot product: the dot products
 * are the recurrence's serial path, and a single accumulator would make every FMA wait for the
 * previous one. Shared by the sequence (prefill) and the one-token (decode) kernels.
 */
template <int N>
__device__ __forceinline__ float wkv_row_step(float (&s)[N], const float4 *sh_r, const float4 *sh_w,
                                              const float4 *sh_k, const float4 *sh_a,
                                              const float4 *sh_b, float v_i) {
    float sa0 = 0.0f, sa1 = 0.0f, sa2 = 0.0f, sa3 = 0.0f;
#pragma unroll
    for (int j = 0; j < N / 4; j++) {
        const float4 q = sh_a[j];
        sa0 = fmaf(s[4 * j], q.x, sa0);
        sa1 = fmaf(s[4 * j + 1], q.y, sa1);
        sa2 = fmaf(s[4 * j + 2], q.z, sa2);
        sa3 = fmaf(s[4 * j + 3], q.w, sa3);
    }
    const float sa = (sa0 + sa1) + (sa2 + sa3);
    float y0 = 0.0f, y1 = 0.0f, y2 = 0.0f, y3 = 0.0f;
#pragma unroll
    for (int j = 0; j < N / 4; j++) {
        const float4 qw = sh_w[j], qk = sh_k[j], qb = sh_b[j], qr = sh_r[j];
        s[4 * j] = s[4 * j] * qw.x + sa * qb.x + v_i * qk.x;
        s[4 * j + 1] = s[4 * j + 1] * qw.y + sa * qb.y + v_i * qk.y;
        s[4 * j + 2] = s[4 * j + 2] * qw.z + sa * qb.z + v_i * qk.z;
        s[4 * j + 3] = s[4 * j + 3] * qw.w + sa * qb.w + v_i * qk.w;
        y0 = fmaf(s[4 * j], qr.x, y0);
        y1 = fmaf(s[4 * j + 1], qr.y, y1);
        y2 = fmaf(s[4 * j + 2], qr.z, y2);
        y3 = fmaf(s[4 * j + 3], qr.w, y3);
    }
    return (y0 + y1) + (y2 + y3);
}

}  // namespace rwkv7

#endif /* RWKV7_DEVICE_CUH */
