/*
 * Matrix-vector products for batch-1 decoding, where every weight byte is read once per token
 * and memory bandwidth is the limit.
 *
 * gemv_kernel: several products y = residual + act(bias + W x) in one launch ("segments"),
 * weights in [out][in] layout. A group of `lanes` threads (a power of two up to 32, sized to
 * the row length) owns one row and streams it with 16-byte loads, several in flight per
 * thread; the group's partial sums meet in a fixed shuffle tree, so results are deterministic.
 *
 * sparse_ffn_kernel: the FFN value product h^T Vt with Vt in [F][C] layout, reading only the
 * rows whose squared-ReLU activation is non-zero (typically most are zero in trained models).
 * Blocks split F into chunks; each block compacts its chunk's non-zero rows in row order,
 * accumulates a partial sum for its column tile, and the last block of a tile adds the
 * partials in chunk order to the residual stream.
 */
#include "rwkv7_internal.cuh"

namespace rwkv7 {

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvUnroll = 4;

constexpr int kSparseMaxThreads = 256;
constexpr int kSparseMaxChunks = 64;
constexpr int kSparseMaxChunkRows = 1024;
constexpr int kSparseUnroll = 8;

__host__ __device__ __forceinline__ int gemv_lanes_per_row(int K, int vec) {
    const int pieces = (K + vec - 1) / vec;
    int lanes = 1;
    while (lanes < 32 && lanes < pieces) lanes <<= 1;
    return lanes;
}

__host__ __device__ __forceinline__ int gemv_rows_per_block(int K, int vec) {
    return kGemvWarps * (32 / gemv_lanes_per_row(K, vec));
}

static inline int vec_elements(rwkv7_dtype dtype) { return dtype == RWKV7_F32 ? 4 : 8; }

__device__ __forceinline__ float activate(float v, int act) {
    switch (act) {
    case ACT_TANH: return tanhf(v);
    case ACT_SIGMOID: return sigmoid(v);
    case ACT_RELU_SQUARED: {
        const float r = fmaxf(v, 0.0f);
        return r * r;
    }
    default: return v;
    }
}

/* This lane's share of row `row` of the segment: pieces sub, sub + lanes, sub + 2 lanes, ... */
template <typename T>
__device__ __forceinline__ float gemv_partial(const GemvSegment &g, int row, int sub, int lanes) {
    constexpr int VEC = Vec16<T>::N;
    const T *w = static_cast<const T *>(g.weight) + (size_t)row * g.K;
    float acc = 0.0f;
    if (g.vectorized) {
        const int pieces = g.K / VEC;
        for (int first = sub; first < pieces; first += kGemvUnroll * lanes) {
            uint4 raw[kGemvUnroll];
#pragma unroll
            for (int u = 0; u < kGemvUnroll; u++) {
                const int piece = first + u * lanes;
                raw[u] = piece < pieces ? load16(w + (size_t)piece * VEC) : make_uint4(0u, 0u, 0u, 0u);
            }
#pragma unroll
            for (int u = 0; u < kGemvUnroll; u++) {
                const int piece = first + u * lanes;
                if (piece < pieces) {
                    float wf[VEC];
                    widen<T>(raw[u], wf);
                    const float4 *xv = reinterpret_cast<const float4 *>(g.x + (size_t)piece * VEC);
#pragma unroll
                    for (int q = 0; q < VEC / 4; q++) {
                        const float4 xq = __ldg(xv + q);
                        acc += wf[4 * q] * xq.x + wf[4 * q + 1] * xq.y + wf[4 * q + 2] * xq.z +
                               wf[4 * q + 3] * xq.w;
                    }
                }
            }
        }
    } else {
        for (int i = sub; i < g.K; i += lanes) acc += to_float(w[i]) * g.x[i];
    }
    return acc;
}

template <typename T>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const GemvBatch batch) {
    __shared__ float scratch[32];
    /* Pick this block's segment with constant indices only, so the parameter block is never
     * copied to local memory. */
    GemvSegment g = batch.seg[0];
#pragma unroll
    for (int s = 1; s < RWKV7_MAX_SEGMENTS; s++) {
        if (s < batch.count && (int)blockIdx.x >= batch.seg[s].first_block) g = batch.seg[s];
    }
    constexpr int VEC = Vec16<T>::N;
    const int lanes = gemv_lanes_per_row(g.K, VEC);
    const int groups = 32 / lanes;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = ((int)blockIdx.x - g.first_block) * kGemvWarps * groups + warp * groups + lane / lanes;
    const int sub = lane & (lanes - 1);

    float acc = row < g.rows ? gemv_partial<T>(g, row, sub, lanes) : 0.0f;
    for (int offset = lanes >> 1; offset > 0; offset >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
    if (sub == 0 && row < g.rows) {
        float value = acc;
        if (g.bias) value += g.bias[row];
        value = activate(value, g.act);
        if (g.residual) value += g.residual[row];
        g.y[row] = value;
    }

    if (batch.epilogue.counter && last_block_done(batch.epilogue.counter, gridDim.x)) {
        run_ln_mix(batch.epilogue, scratch);
    }
}

void gemv_add(GemvBatch &batch, rwkv7_dtype dtype, const void *weight, int rows, int K,
              const float *x, float *y, int act, const float *bias, const float *residual) {
    GemvSegment &g = batch.seg[batch.count++];
    g.weight = weight;
    g.x = x;
    g.y = y;
    g.bias = bias;
    g.residual = residual;
    g.rows = rows;
    g.K = K;
    g.act = act;
    const int vec = vec_elements(dtype);
    g.vectorized = K % vec == 0 && reinterpret_cast<uintptr_t>(weight) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(x) % 16 == 0;
    g.first_block = 0;
}

template <typename T>
static cudaError_t launch_gemv_typed(const GemvBatch &batch, int blocks, cudaStream_t stream) {
    auto kernel = gemv_kernel<T>;
    RWKV7_LAUNCH(kernel, dim3(blocks), dim3(kGemvThreads), stream, batch);
    return cudaGetLastError();
}

cudaError_t launch_gemv(rwkv7_dtype dtype, GemvBatch &batch, cudaStream_t stream) {
    if (batch.count < 1 || batch.count > RWKV7_MAX_SEGMENTS) return cudaErrorInvalidValue;
    int blocks = 0;
    for (int s = 0; s < batch.count; s++) {
        GemvSegment &g = batch.seg[s];
        if (g.rows < 1 || g.K < 1) return cudaErrorInvalidValue;
        g.first_block = blocks;
        const int per_block = gemv_rows_per_block(g.K, vec_elements(dtype));
        blocks += (g.rows + per_block - 1) / per_block;
    }
    switch (dtype) {
    case RWKV7_F32: return launch_gemv_typed<float>(batch, blocks, stream);
    case RWKV7_F16: return launch_gemv_typed<__half>(batch, blocks, stream);
    case RWKV7_BF16: return launch_gemv_typed<__nv_bfloat16>(batch, blocks, stream);
    }
    return cudaErrorInvalidValue;
}

/* ---------------------------------------------------------------- sparse FFN value product */

SparseFfnShape sparse_ffn_shape(rwkv7_dtype dtype, int C, int F, int sm_count) {
    SparseFfnShape shape;
    const int column_threads = C / vec_elements(dtype);
    const int rounded = (column_threads + 31) / 32 * 32;
    shape.threads = rounded < kSparseMaxThreads ? rounded : kSparseMaxThreads;
    shape.tiles = (column_threads + shape.threads - 1) / shape.threads;
    /* About two blocks per multiprocessor, within the limits of the shared-memory row list
     * and of the final reduction (which reads one partial per chunk). */
    int chunks = 2 * (sm_count > 0 ? sm_count : 1) / shape.tiles;
    const int fewest = (F + kSparseMaxChunkRows - 1) / kSparseMaxChunkRows;
    if (chunks < fewest) chunks = fewest;
    if (chunks > kSparseMaxChunks) chunks = kSparseMaxChunks;
    if (chunks > F) chunks = F;
    if (chunks < 1) chunks = 1;
    shape.chunk_rows = (F + chunks - 1) / chunks;
    shape.chunks = (F + shape.chunk_rows - 1) / shape.chunk_rows;
    return shape;
}

template <typename T>
__global__ void __launch_bounds__(kSparseMaxThreads)
sparse_ffn_kernel(const SparseFfnArgs args, int chunk_rows, int tiles, int chunks) {
    __shared__ int nz_row[kSparseMaxChunkRows];
    __shared__ float nz_h[kSparseMaxChunkRows];
    __shared__ int nz_count;
    __shared__ float scratch[32];
    constexpr int VEC = Vec16<T>::N;
    const int tile = blockIdx.x, chunk = blockIdx.y;
    const int f0 = chunk * chunk_rows;
    const int f1 = f0 + chunk_rows < args.F ? f0 + chunk_rows : args.F;

    /* Warp 0 lists the chunk's non-zero activations in row order. */
    if (threadIdx.x < 32) {
        int count = 0;
        for (int first = f0; first < f1; first += 32) {
            const int f = first + threadIdx.x;
            const float hv = f < f1 ? args.h[f] : 0.0f;
            const unsigned int mask = __ballot_sync(0xffffffffu, hv != 0.0f);
            if (hv != 0.0f) {
                const int pos = count + __popc(mask & ((1u << threadIdx.x) - 1u));
                nz_row[pos] = f;
                nz_h[pos] = hv;
            }
            count += __popc(mask);
        }
        if (threadIdx.x == 0) nz_count = count;
    }
    __syncthreads();

    const int col = (tile * blockDim.x + threadIdx.x) * VEC;
    if (col < args.C) {
        float acc[VEC];
#pragma unroll
        for (int e = 0; e < VEC; e++) acc[e] = 0.0f;
        const T *base = static_cast<const T *>(args.value_t) + col;
        const int n = nz_count;
        for (int i = 0; i < n; i += kSparseUnroll) {
            uint4 raw[kSparseUnroll];
#pragma unroll
            for (int u = 0; u < kSparseUnroll; u++) {
                raw[u] = i + u < n ? load16(base + (size_t)nz_row[i + u] * args.C) : make_uint4(0u, 0u, 0u, 0u);
            }
#pragma unroll
            for (int u = 0; u < kSparseUnroll; u++) {
                if (i + u < n) {
                    float wf[VEC];
                    widen<T>(raw[u], wf);
                    const float hv = nz_h[i + u];
#pragma unroll
                    for (int e = 0; e < VEC; e++) acc[e] += hv * wf[e];
                }
            }
        }
        float4 *dst = reinterpret_cast<float4 *>(args.partial + (size_t)chunk * args.C + col);
#pragma unroll
        for (int q = 0; q < VEC / 4; q++) dst[q] = make_float4(acc[4 * q], acc[4 * q + 1], acc[4 * q + 2], acc[4 * q + 3]);
    }

    if (!last_block_done(args.tile_counters + tile, (unsigned int)chunks)) return;
    if (col < args.C) {
        float sum[VEC];
#pragma unroll
        for (int e = 0; e < VEC; e++) sum[e] = 0.0f;
#pragma unroll 8
        for (int ch = 0; ch < chunks; ch++) {
            const float4 *src = reinterpret_cast<const float4 *>(args.partial + (size_t)ch * args.C + col);
#pragma unroll
            for (int q = 0; q < VEC / 4; q++) {
                const float4 p = __ldcg(src + q);
                sum[4 * q] += p.x; sum[4 * q + 1] += p.y; sum[4 * q + 2] += p.z; sum[4 * q + 3] += p.w;
            }
        }
#pragma unroll
        for (int e = 0; e < VEC; e++) args.x[col + e] = __ldcg(args.x + col + e) + sum[e];
    }
    if (!last_block_done(args.done_counter, (unsigned int)tiles)) return;
    run_ln_mix(args.epilogue, scratch);
}

template <typename T>
static cudaError_t launch_sparse_typed(const SparseFfnArgs &args, const SparseFfnShape &shape,
                                       cudaStream_t stream) {
    auto kernel = sparse_ffn_kernel<T>;
    RWKV7_LAUNCH(kernel, dim3(shape.tiles, shape.chunks), dim3(shape.threads), stream, args,
                 shape.chunk_rows, shape.tiles, shape.chunks);
    return cudaGetLastError();
}

cudaError_t launch_sparse_ffn(rwkv7_dtype dtype, const SparseFfnArgs &args, int sm_count,
                              cudaStream_t stream) {
    if (args.C % 64 != 0 || args.F < 1) return cudaErrorInvalidValue;
    const SparseFfnShape shape = sparse_ffn_shape(dtype, args.C, args.F, sm_count);
    switch (dtype) {
    case RWKV7_F32: return launch_sparse_typed<float>(args, shape, stream);
    case RWKV7_F16: return launch_sparse_typed<__half>(args, shape, stream);
    case RWKV7_BF16: return launch_sparse_typed<__nv_bfloat16>(args, shape, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace rwkv7

extern "C" cudaError_t rwkv7_gemv(rwkv7_dtype dtype, int rows, int K, const void *weight,
                                  const float *x, float *y, cudaStream_t stream) {
    using namespace rwkv7;
    GemvBatch batch = {};
    gemv_add(batch, dtype, weight, rows, K, x, y, ACT_NONE, nullptr, nullptr);
    return launch_gemv(dtype, batch, stream);
}

extern "C" size_t rwkv7_decode_partial_floats(int C, int F, int sm_count) {
    /* The shape depends on the dtype only through the tile count, which never raises the
     * number of chunks above kSparseMaxChunks: size for the largest. */
    (void)sm_count;
    (void)F;
    return (size_t)rwkv7::kSparseMaxChunks * (size_t)C;
}

extern "C" size_t rwkv7_decode_counter_count(int C, int F, int sm_count) {
    (void)F;
    (void)sm_count;
    /* gemv epilogue + sparse done counter + one per column tile (at most C / 4 / 32 tiles) */
    return 2 + (size_t)(C / 4 + 31) / 32;
}
