/*
 * Fused element-wise stages of the time-mix (rwkv7-engine.md section 2.2), computed in fp32:
 *   - mix_rows: the six token-shift mixes of a prefill chunk in one pass;
 *   - prep_rows: decay, in-context learning rate, kk normalisation, key rescale and value
 *     residual, producing exactly the WKV kernel's inputs;
 *   - gate_rows: GroupNorm, the r_k bonus and the output gate;
 *   - tmix_decode: all of the above plus the WKV step for one token in one launch, so a decoded
 *     token's time-mix costs one kernel between its projections.
 * Head-wise stages use one block per (head, row) with one thread per channel.
 */
#include "rwkv7_internal.cuh"

namespace rwkv7 {

/* ---------------------------------------------------------------- token-shift mixes */

template <typename T>
__global__ void __launch_bounds__(256)
mix_rows_kernel(int T_, int C, int M, const float *__restrict__ xn, const float *__restrict__ prev,
                const float *__restrict__ mix, T *__restrict__ out, float *__restrict__ last) {
    const size_t n = (size_t)T_ * C;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(idx / C), c = (int)(idx % C);
        const float x = xn[idx];
        const float delta = (t > 0 ? xn[idx - C] : prev[c]) - x;
        for (int m = 0; m < M; m++) out[(size_t)m * n + idx] = from_float<T>(x + delta * mix[(size_t)m * C + c]);
        if (t == T_ - 1) last[c] = x;
    }
}

template <typename T>
static cudaError_t launch_mix_rows(int T_, int C, int M, const float *xn, const float *prev,
                                   const float *mix, void *out, float *last, cudaStream_t stream) {
    const size_t n = (size_t)T_ * C;
    const int threads = 256;
    const int blocks = (int)((n + threads - 1) / threads < 8192 ? (n + threads - 1) / threads : 8192);
    auto kernel = mix_rows_kernel<T>;
    RWKV7_LAUNCH(kernel, dim3(blocks), dim3(threads), stream, T_, C, M, xn, prev, mix,
                 static_cast<T *>(out), last);
    return cudaGetLastError();
}

/* ---------------------------------------------------------------- shared per-channel math */

/* The decay multiplier from its pre-activation z, exactly as the CPU backend computes it. */
__device__ __forceinline__ float decay_from_logit(float z) { return expf(-kDecayScale * sigmoid(z)); }

struct PreparedChannel {
    float w, k, v, a, b; /* WKV inputs of this channel (a = -kk, b = kk * iclr) */
};

/*
 * Per-channel preparation; must be called by all N threads of the head's block (it reduces
 * kk over the head). k_raw is the key projection, iclr the in-context learning rate.
 */
__device__ __forceinline__ PreparedChannel prepare_channel(float k_raw, float v, float z, float iclr,
                                                          float k_k, float k_a, float *scratch) {
    PreparedChannel p;
    p.w = decay_from_logit(z);
    const float kk_raw = k_raw * k_k;
    const float norm = sqrtf(block_sum(kk_raw * kk_raw, scratch));
    const float kk = kk_raw / fmaxf(norm, kL2NormEps);
    p.a = -kk;
    p.b = kk * iclr;
    p.k = k_raw * (1.0f + (iclr - 1.0f) * k_a);
    p.v = v;
    return p;
}

/* GroupNorm of y over the head, plus bonus * v, times the gate. All N threads must call it. */
__device__ __forceinline__ float gate_channel(float y, float r, float k, float v, float g, float r_k,
                                              float lnx_w, float lnx_b, int N, float *scratch) {
    const float mean = block_sum(y, scratch) / (float)N;
    const float d = y - mean;
    const float rstd = 1.0f / sqrtf(block_sum(d * d, scratch) / (float)N + kGroupNormEps);
    const float bonus = block_sum(r * k * r_k, scratch);
    return (d * rstd * lnx_w + lnx_b + bonus * v) * g;
}

/* ---------------------------------------------------------------- prefill stages */

template <typename T>
__global__ void __launch_bounds__(RWKV7_HEAD_SIZE) prep_rows_kernel(const rwkv7_prep_rows_args args) {
    __shared__ float scratch[32];
    const int N = args.N, C = args.H * N;
    const int c = blockIdx.x * N + threadIdx.x;
    const size_t idx = (size_t)blockIdx.y * C + c;
    const float k = to_float(static_cast<const T *>(args.k)[idx]);
    float v = to_float(static_cast<const T *>(args.v)[idx]);
    const float z = args.w0[c] + to_float(static_cast<const T *>(args.zraw)[idx]);
    const float iclr = sigmoid(args.a0[c] + to_float(static_cast<const T *>(args.araw)[idx]));
    T *v_first = static_cast<T *>(args.v_first);
    if (args.vraw == nullptr) {
        v_first[idx] = static_cast<const T *>(args.v)[idx];
    } else {
        const float gate = sigmoid(args.v0[c] + to_float(static_cast<const T *>(args.vraw)[idx]));
        v = v + (to_float(v_first[idx]) - v) * gate;
    }
    const PreparedChannel p = prepare_channel(k, v, z, iclr, args.k_k[c], args.k_a[c], scratch);
    args.w_out[idx] = p.w;
    static_cast<T *>(args.k_out)[idx] = from_float<T>(p.k);
    static_cast<T *>(args.v_out)[idx] = from_float<T>(p.v);
    static_cast<T *>(args.a_out)[idx] = from_float<T>(p.a);
    static_cast<T *>(args.b_out)[idx] = from_float<T>(p.b);
}

template <typename T>
__global__ void __launch_bounds__(RWKV7_HEAD_SIZE) gate_rows_kernel(const rwkv7_gate_rows_args args) {
    __shared__ float scratch[32];
    const int N = args.N, C = args.H * N;
    const int c = blockIdx.x * N + threadIdx.x;
    const size_t idx = (size_t)blockIdx.y * C + c;
    const float out = gate_channel(args.y[idx], to_float(static_cast<const T *>(args.r)[idx]),
                                   to_float(static_cast<const T *>(args.k)[idx]),
                                   to_float(static_cast<const T *>(args.v)[idx]),
                                   to_float(static_cast<const T *>(args.g)[idx]), args.r_k[c],
                                   args.lnx_w[c], args.lnx_b[c], N, scratch);
    static_cast<T *>(args.out)[idx] = from_float<T>(out);
}

template <typename T>
static cudaError_t launch_prep_rows(const rwkv7_prep_rows_args &args, cudaStream_t stream) {
    auto kernel = prep_rows_kernel<T>;
    RWKV7_LAUNCH(kernel, dim3(args.H, args.T), dim3(args.N), stream, args);
    return cudaGetLastError();
}

template <typename T>
static cudaError_t launch_gate_rows(const rwkv7_gate_rows_args &args, cudaStream_t stream) {
    auto kernel = gate_rows_kernel<T>;
    RWKV7_LAUNCH(kernel, dim3(args.H, args.T), dim3(args.N), stream, args);
    return cudaGetLastError();
}

/* ---------------------------------------------------------------- one decoded token */

template <int N>
__global__ void __launch_bounds__(N) tmix_decode_kernel(const TmixDecodeArgs args) {
    __shared__ float scratch[32];
    __shared__ float4 sh_r[N / 4], sh_w[N / 4], sh_k[N / 4], sh_a[N / 4], sh_b[N / 4];
    const int h = blockIdx.x, i = threadIdx.x, C = args.H * N, c = h * N + i;

    /* This thread's state row, read from the input state and written to the output state.
     * Loaded first so the loads are in flight while the channel preparation runs. */
    const size_t row = (size_t)args.layer * C * N + ((size_t)h * N + i) * N;
    const float *src = reinterpret_cast<const float *>(args.io->wkv_in) + row;
    float *dst = reinterpret_cast<float *>(args.io->wkv_out) + row;
    float s[N];
#pragma unroll
    for (int j = 0; j < N; j += 4) {
        const float4 q = *reinterpret_cast<const float4 *>(src + j);
        s[j] = q.x; s[j + 1] = q.y; s[j + 2] = q.z; s[j + 3] = q.w;
    }

    const float r = args.proj[c], k_raw = args.proj[C + c];
    float v = args.proj[2 * C + c];
    const float z = args.lora[c], iclr = args.lora[C + c], g = args.lora[2 * C + c];
    if (args.layer == 0) {
        args.v_first[c] = v;
    } else {
        v = v + (args.v_first[c] - v) * args.lora[3 * C + c];
    }
    const PreparedChannel p = prepare_channel(k_raw, v, z, iclr, args.k_k[c], args.k_a[c], scratch);

    reinterpret_cast<float *>(sh_r)[i] = r;
    reinterpret_cast<float *>(sh_w)[i] = p.w;
    reinterpret_cast<float *>(sh_k)[i] = p.k;
    reinterpret_cast<float *>(sh_a)[i] = p.a;
    reinterpret_cast<float *>(sh_b)[i] = p.b;

    __syncthreads();

    const float y = wkv_row_step<N>(s, sh_r, sh_w, sh_k, sh_a, sh_b, p.v);
#pragma unroll
    for (int j = 0; j < N; j += 4) {
        *reinterpret_cast<float4 *>(dst + j) = make_float4(s[j], s[j + 1], s[j + 2], s[j + 3]);
    }

    args.out[c] = gate_channel(y, r, p.k, p.v, g, args.r_k[c], args.lnx_w[c], args.lnx_b[c], N, scratch);
}

cudaError_t launch_tmix_decode(const TmixDecodeArgs &args, cudaStream_t stream) {
    if (args.N != RWKV7_HEAD_SIZE) return cudaErrorInvalidValue;
    auto kernel = tmix_decode_kernel<RWKV7_HEAD_SIZE>;
    RWKV7_LAUNCH(kernel, dim3(args.H), dim3(RWKV7_HEAD_SIZE), stream, args);
    return cudaGetLastError();
}

}  // namespace rwkv7

/* ---------------------------------------------------------------- C interface */

#define RWKV7_DISPATCH(dtype, fn, ...)                                                          \
    switch (dtype) {                                                                           \
    case RWKV7_F32: return fn<float>(__VA_ARGS__);                                             \
    case RWKV7_F16: return fn<__half>(__VA_ARGS__);                                            \
    case RWKV7_BF16: return fn<__nv_bfloat16>(__VA_ARGS__);                                    \
    }                                                                                          \
    return cudaErrorInvalidValue;

extern "C" cudaError_t rwkv7_mix_rows(rwkv7_dtype dtype, int T, int C, int M, const float *xn,
                                      const float *prev, const float *mix, void *out, float *last,
                                      cudaStream_t stream) {
    using namespace rwkv7;
    if (T < 1 || C < 1 || M < 1) return cudaErrorInvalidValue;
    RWKV7_DISPATCH(dtype, launch_mix_rows, T, C, M, xn, prev, mix, out, last, stream)
}

extern "C" cudaError_t rwkv7_prep_rows(rwkv7_dtype dtype, const rwkv7_prep_rows_args *args,
                                       cudaStream_t stream) {
    using namespace rwkv7;
    if (args->N != RWKV7_HEAD_SIZE || args->T < 1 || args->H < 1) return cudaErrorInvalidValue;
    RWKV7_DISPATCH(dtype, launch_prep_rows, *args, stream)
}

extern "C" cudaError_t rwkv7_gate_rows(rwkv7_dtype dtype, const rwkv7_gate_rows_args *args,
                                       cudaStream_t stream) {
    using namespace rwkv7;
    if (args->N != RWKV7_HEAD_SIZE || args->T < 1 || args->H < 1) return cudaErrorInvalidValue;
    RWKV7_DISPATCH(dtype, launch_gate_rows, *args, stream)
}
