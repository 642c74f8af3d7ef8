/*
 * WKV-7 state-passing recurrence over a sequence (prefill), batch >= 1.
 *
 * One block per (head, sequence), one thread per value row i of the head's N x N state, which
 * stays in registers for the whole sequence. Per step every thread publishes its channel's
 * r, w, k, a, b to shared memory, then updates its row with the old state:
 *   sa = sum_j a[j] S[i][j];  S[i][j] = S[i][j] w[j] + sa b[j] + v[i] k[j];  y[i] = sum_j S[i][j] r[j]
 * (rwkv7-engine.md section 2.2 step 9). The next step's inputs are loaded before the current
 * step is computed so their memory latency hides behind the arithmetic. state_in and
 * state_out may alias: each thread reads its row before the loop and writes it after.
 */
#include "rwkv7_device.cuh"

namespace rwkv7 {

template <typename T, int N>
__global__ void __launch_bounds__(N)
wkv_seq_kernel(int T_, int C, const float *state_in, float *state_out,
               long long state_batch_stride, const T *__restrict__ r, const float *__restrict__ w,
               const T *__restrict__ k, const T *__restrict__ v, const T *__restrict__ a,
               const T *__restrict__ b, float *__restrict__ y) {
    const int h = blockIdx.x, e = blockIdx.y, i = threadIdx.x;
    const size_t row = (size_t)e * state_batch_stride + ((size_t)h * N + i) * N;

    float s[N];
#pragma unroll
    for (int j = 0; j < N; j += 4) {
        const float4 q = *reinterpret_cast<const float4 *>(state_in + row + j);
        s[j] = q.x; s[j + 1] = q.y; s[j + 2] = q.z; s[j + 3] = q.w;
    }

    __shared__ float4 sh_r[N / 4], sh_w[N / 4], sh_k[N / 4], sh_a[N / 4], sh_b[N / 4];
    float *fr = reinterpret_cast<float *>(sh_r), *fw = reinterpret_cast<float *>(sh_w);
    float *fk = reinterpret_cast<float *>(sh_k), *fa = reinterpret_cast<float *>(sh_a);
    float *fb = reinterpret_cast<float *>(sh_b);

    const size_t base = (size_t)e * T_ * C + (size_t)h * N + i;
    float nr = 0.f, nw = 0.f, nk = 0.f, nv = 0.f, na = 0.f, nb = 0.f;
    if (T_ > 0) {
        nr = to_float(r[base]); nw = w[base]; nk = to_float(k[base]);
        nv = to_float(v[base]); na = to_float(a[base]); nb = to_float(b[base]);
    }
    for (int t = 0; t < T_; t++) {
        __syncthreads(); /* everyone has finished reading the previous step's inputs */
        fr[i] = nr; fw[i] = nw; fk[i] = nk; fa[i] = na; fb[i] = nb;
        const float vi = nv;
        __syncthreads();
        if (t + 1 < T_) {
            const size_t next = base + (size_t)(t + 1) * C;
            nr = to_float(r[next]); nw = w[next]; nk = to_float(k[next]);
            nv = to_float(v[next]); na = to_float(a[next]); nb = to_float(b[next]);
        }
        y[base + (size_t)t * C] = wkv_row_step<N>(s, sh_r, sh_w, sh_k, sh_a, sh_b, vi);
    }

    float *dst = state_out + row;
#pragma unroll
    for (int j = 0; j < N; j += 4) {
        *reinterpret_cast<float4 *>(dst + j) = make_float4(s[j], s[j + 1], s[j + 2], s[j + 3]);
    }
}

template <typename T>
static cudaError_t launch_wkv_seq(int B, int T_, int H, const float *state_in, float *state_out,
                                  long long stride, const void *r, const float *w, const void *k,
                                  const void *v, const void *a, const void *b, float *y,
                                  cudaStream_t stream) {
    constexpr int N = RWKV7_HEAD_SIZE;
    auto kernel = wkv_seq_kernel<T, N>;
    const dim3 grid(H, B), block(N);
    RWKV7_LAUNCH(kernel, grid, block, stream, T_, H * N, state_in, state_out, stride,
                 static_cast<const T *>(r), w, static_cast<const T *>(k), static_cast<const T *>(v),
                 static_cast<const T *>(a), static_cast<const T *>(b), y);
    return cudaGetLastError();
}

}  // namespace rwkv7

extern "C" cudaError_t rwkv7_wkv_seq(rwkv7_dtype dtype, int B, int T, int H, int N,
                                     const float *state_in, float *state_out,
                                     long long state_batch_stride, const void *r, const float *w,
                                     const void *k, const void *v, const void *a, const void *b,
                                     float *y, cudaStream_t stream) {
    using namespace rwkv7;
    if (N != RWKV7_HEAD_SIZE || B < 1 || H < 1 || T < 0) return cudaErrorInvalidValue;
    if (T == 0 && state_in == state_out) return cudaSuccess;
    switch (dtype) {
    case RWKV7_F32:
        return launch_wkv_seq<float>(B, T, H, state_in, state_out, state_batch_stride, r, w, k, v, a, b, y, stream);
    case RWKV7_F16:
        return launch_wkv_seq<__half>(B, T, H, state_in, state_out, state_batch_stride, r, w, k, v, a, b, y, stream);
    case RWKV7_BF16:
        return launch_wkv_seq<__nv_bfloat16>(B, T, H, state_in, state_out, state_batch_stride, r, w, k, v, a, b, y, stream);
    }
    return cudaErrorInvalidValue;
}
