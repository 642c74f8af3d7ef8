/*
 * Host-side launch helpers shared between the kernel files and the decode driver (decode.cu).
 * C++ linkage: these are not part of the public C interface in rwkv7.h.
 */
#ifndef RWKV7_INTERNAL_CUH
#define RWKV7_INTERNAL_CUH

#include "rwkv7_device.cuh"

namespace rwkv7 {

enum Activation { ACT_NONE = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_RELU_SQUARED = 3 };

/* One matrix-vector product y = residual + act(bias + W x) of a batched launch. */
struct GemvSegment {
    const void *weight; /* [rows][K] row-major, run dtype */
    const float *x;     /* [K] */
    float *y;           /* [rows] */
    const float *bias;  /* [rows] or NULL */
    const float *residual; /* [rows] or NULL; may alias y (each row is read, then written, by one lane) */
    int rows, K, act;
    int vectorized;  /* K and both pointers allow 16-byte loads */
    int first_block; /* filled in by launch_gemv */
};

/* Which token-shift vector of the step's state a LayerNorm epilogue reads and writes. */
enum ShiftState { SHIFT_NONE = -1, SHIFT_ATT = 0, SHIFT_FFN = 1 };

/*
 * LayerNorm of the fp32 row x followed by token-shift mixes (ln_mix_row), where the previous
 * vector and the new token-shift state are found at run time through the step table `io`
 * (layer `layer` of att_x or ffn_x); with SHIFT_NONE the normalised row goes to xn_dst and no
 * mixes are made (the final LayerNorm before the head).
 * As a grid epilogue it is run by the grid's last block once every block has finished, which
 * saves a kernel launch per use: launches, not bytes, bound small models at batch 1.
 */
struct LnEpilogue {
    unsigned int *counter; /* NULL: no epilogue. Zero on entry, zero again on exit. */
    const float *x, *ln_w, *ln_b, *mix;
    float *out;    /* [M][C] mixes */
    float *xn_dst; /* SHIFT_NONE only */
    const rwkv7_step_io *io;
    int shift, layer, C, M;
};

__device__ __forceinline__ void run_ln_mix(const LnEpilogue &e, float *scratch) {
    const float *prev = nullptr;
    float *xn_out = e.xn_dst;
    if (e.shift == SHIFT_ATT) {
        prev = reinterpret_cast<const float *>(e.io->att_x_in) + (size_t)e.layer * e.C;
        xn_out = reinterpret_cast<float *>(e.io->att_x_out) + (size_t)e.layer * e.C;
    } else if (e.shift == SHIFT_FFN) {
        prev = reinterpret_cast<const float *>(e.io->ffn_x_in) + (size_t)e.layer * e.C;
        xn_out = reinterpret_cast<float *>(e.io->ffn_x_out) + (size_t)e.layer * e.C;
    }
    ln_mix_row(e.x, e.ln_w, e.ln_b, e.C, prev, xn_out, e.mix, e.shift == SHIFT_NONE ? 0 : e.M,
               e.out, scratch);
}

/*
 * Called by every thread of every block at the end of a kernel: the block that finishes last
 * (counted with an atomic after a fence, so it sees every other block's writes) runs the
 * epilogue and re-arms the counter. Returns whether this block was the last.
 */
__device__ __forceinline__ bool last_block_done(unsigned int *counter, unsigned int blocks) {
    __shared__ int is_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        is_last = atomicAdd(counter, 1u) == blocks - 1u;
        if (is_last) *counter = 0u;
    }
    __syncthreads();
    if (is_last) __threadfence();
    return is_last != 0;
}

struct GemvBatch {
    GemvSegment seg[RWKV7_MAX_SEGMENTS];
    int count;
    LnEpilogue epilogue;
};

void gemv_add(GemvBatch &batch, rwkv7_dtype dtype, const void *weight, int rows, int K,
              const float *x, float *y, int act, const float *bias, const float *residual);
cudaError_t launch_gemv(rwkv7_dtype dtype, GemvBatch &batch, cudaStream_t stream);

/*
 * Sparse FFN value product for one token: x += h^T Vt, skipping the rows of Vt ([F][C]) whose
 * activation h is zero. The F rows are split into chunks across blocks; per column tile the
 * last block sums the chunk partials in chunk order (deterministic), and the very last block
 * runs `epilogue` (the next LayerNorm) on the finished x.
 */
struct SparseFfnArgs {
    const void *value_t; /* [F][C] */
    const float *h;      /* [F] */
    float *x;            /* [C], updated in place */
    float *partial;      /* [chunks][C] */
    unsigned int *tile_counters; /* [tiles], zero */
    unsigned int *done_counter;  /* zero */
    int F, C;
    LnEpilogue epilogue; /* its counter field is unused: done_counter serves */
};
struct SparseFfnShape { int threads, tiles, chunks, chunk_rows; };
SparseFfnShape sparse_ffn_shape(rwkv7_dtype dtype, int C, int F, int sm_count);
cudaError_t launch_sparse_ffn(rwkv7_dtype dtype, const SparseFfnArgs &args, int sm_count,
                              cudaStream_t stream);

/*
 * Whole time-mix of one token after the projections (prep, WKV step, GroupNorm, bonus, gate),
 * one block per head. Reads r, k, v from proj and z, iclr, gate, value gate from lora.
 */
struct TmixDecodeArgs {
    int H, N, layer;
    const float *proj, *lora;
    float *v_first; /* written by layer 0, read by the others */
    const float *k_k, *k_a, *r_k, *lnx_w, *lnx_b;
    const rwkv7_step_io *io; /* WKV state addresses (device) */
    float *out;              /* [C] input of the output projection */
};
cudaError_t launch_tmix_decode(const TmixDecodeArgs &args, cudaStream_t stream);

}  // namespace rwkv7

#endif /* RWKV7_INTERNAL_CUH */
