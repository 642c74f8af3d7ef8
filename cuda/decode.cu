/*
 * Batch-1 decoding driver: the kernel sequence of one token.
 *
 * Per layer: projections of the six mixes (one launch), LoRA up-projections (one launch), the
 * fused time-mix (one launch), output projection + residual with LayerNorm 2 as its last-block
 * epilogue, FFN key + squared ReLU, sparse FFN value + residual with the next LayerNorm as
 * epilogue. Plus the embedding (with LayerNorm 0 and layer 0's LayerNorm 1) and the head:
 * 6 L + 2 launches. Everything goes to one stream, nothing is allocated and nothing is read
 * back, so the sequence can be captured in a CUDA graph once and replayed for every token;
 * the per-token inputs (token id, state addresses) are read from plan->io at run time.
 */
#include "rwkv7_internal.cuh"

namespace rwkv7 {

constexpr int kEmbedThreads = 256;

/* x = LayerNorm0(emb[token]); then layer 0's LayerNorm 1 and token-shift mixes. */
template <typename T>
__global__ void __launch_bounds__(kEmbedThreads)
embed_kernel(const T *__restrict__ emb, const float *__restrict__ ln0_w, const float *__restrict__ ln0_b,
             float *x, const LnEpilogue first) {
    __shared__ float scratch[32];
    const int C = first.C;
    const T *row = emb + (size_t)first.io->token * C;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) sum += to_float(row[c]);
    const float mean = block_sum(sum, scratch) / (float)C;
    float squares = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float d = to_float(row[c]) - mean;
        squares += d * d;
    }
    const float rstd = 1.0f / sqrtf(block_sum(squares, scratch) / (float)C + kLayerNormEps);
    for (int c = threadIdx.x; c < C; c += blockDim.x) x[c] = (to_float(row[c]) - mean) * rstd * ln0_w[c] + ln0_b[c];
    __syncthreads();
    run_ln_mix(first, scratch);
}

template <typename T>
static cudaError_t launch_embed(const rwkv7_decode_plan *p, const LnEpilogue &first, cudaStream_t stream) {
    auto kernel = embed_kernel<T>;
    RWKV7_LAUNCH(kernel, dim3(1), dim3(kEmbedThreads), stream, static_cast<const T *>(p->emb),
                 p->ln0_w, p->ln0_b, p->x, first);
    return cudaGetLastError();
}

static size_t element_size(rwkv7_dtype dtype) { return dtype == RWKV7_F32 ? 4 : 2; }

static LnEpilogue ln_epilogue(const rwkv7_decode_plan *p, unsigned int *counter, const float *w,
                              const float *b, const float *mix, int shift, int layer, int M) {
    LnEpilogue e;
    e.counter = counter;
    e.x = p->x;
    e.ln_w = w;
    e.ln_b = b;
    e.mix = mix;
    e.out = p->mixed;
    e.xn_dst = shift == SHIFT_NONE ? p->mixed : nullptr;
    e.io = p->io;
    e.shift = shift;
    e.layer = layer;
    e.C = p->C;
    e.M = M;
    return e;
}

static cudaError_t validate(const rwkv7_decode_plan *p) {
    if (p->N != RWKV7_HEAD_SIZE || p->C != p->H * p->N || p->C % 64 != 0) return cudaErrorInvalidValue;
    if (p->n_layer < 1 || p->F < 1 || p->vocab < 1 || !p->layers || !p->io) return cudaErrorInvalidValue;
    if (p->Dw < 1 || p->Da < 1 || p->Dg < 1 || (p->n_layer > 1 && p->Dv < 1)) return cudaErrorInvalidValue;
    if (p->dtype != RWKV7_F32 && p->dtype != RWKV7_F16 && p->dtype != RWKV7_BF16) return cudaErrorInvalidValue;
    return cudaSuccess;
}

#define RWKV7_TRY(expr)                                                                          \
    do {                                                                                         \
        const cudaError_t rwkv7_err_ = (expr);                                                   \
        if (rwkv7_err_ != cudaSuccess) return rwkv7_err_;                                        \
    } while (0)

static cudaError_t decode_step(const rwkv7_decode_plan *p, cudaStream_t stream) {
    RWKV7_TRY(validate(p));
    const rwkv7_dtype dt = p->dtype;
    const int C = p->C, L = p->n_layer;
    const size_t elt = element_size(dt);
    unsigned int *gemv_counter = p->counters, *done_counter = p->counters + 1, *tile_counters = p->counters + 2;
    float *const xr = p->mixed, *const xk = p->mixed + C, *const xv = p->mixed + 2 * C;
    float *const xw = p->mixed + 3 * C, *const xa = p->mixed + 4 * C, *const xg = p->mixed + 5 * C;
    /* proj: r, k, v, then the LoRA-down activations */
    float *const hw = p->proj + 3 * C, *const ha = hw + p->Dw, *const hg = ha + p->Da, *const hv = hg + p->Dg;

    const LnEpilogue first = ln_epilogue(p, nullptr, p->layers[0].ln1_w, p->layers[0].ln1_b,
                                         p->layers[0].att_mix, SHIFT_ATT, 0, 6);
    switch (dt) {
    case RWKV7_F32: RWKV7_TRY(launch_embed<float>(p, first, stream)); break;
    case RWKV7_F16: RWKV7_TRY(launch_embed<__half>(p, first, stream)); break;
    case RWKV7_BF16: RWKV7_TRY(launch_embed<__nv_bfloat16>(p, first, stream)); break;
    }

    for (int l = 0; l < L; l++) {
        const rwkv7_layer &w = p->layers[l];
        const bool residual_value = l > 0;

        GemvBatch in = {};
        const char *att_in = static_cast<const char *>(w.att_in);
        size_t row = 0;
        gemv_add(in, dt, att_in + row * C * elt, C, C, xr, p->proj, ACT_NONE, nullptr, nullptr);
        row += C;
        gemv_add(in, dt, att_in + row * C * elt, C, C, xk, p->proj + C, ACT_NONE, nullptr, nullptr);
        row += C;
        gemv_add(in, dt, att_in + row * C * elt, C, C, xv, p->proj + 2 * C, ACT_NONE, nullptr, nullptr);
        row += C;
        gemv_add(in, dt, att_in + row * C * elt, p->Dw, C, xw, hw, ACT_TANH, nullptr, nullptr);
        row += p->Dw;
        gemv_add(in, dt, att_in + row * C * elt, p->Da, C, xa, ha, ACT_NONE, nullptr, nullptr);
        row += p->Da;
        gemv_add(in, dt, att_in + row * C * elt, p->Dg, C, xg, hg, ACT_SIGMOID, nullptr, nullptr);
        row += p->Dg;
        if (residual_value) gemv_add(in, dt, att_in + row * C * elt, p->Dv, C, xv, hv, ACT_NONE, nullptr, nullptr);
        RWKV7_TRY(launch_gemv(dt, in, stream));

        GemvBatch up = {};
        gemv_add(up, dt, w.w2t, C, p->Dw, hw, p->lora, ACT_NONE, w.w0, nullptr);
        gemv_add(up, dt, w.a2t, C, p->Da, ha, p->lora + C, ACT_SIGMOID, w.a0, nullptr);
        gemv_add(up, dt, w.g2t, C, p->Dg, hg, p->lora + 2 * C, ACT_NONE, nullptr, nullptr);
        if (residual_value) gemv_add(up, dt, w.v2t, C, p->Dv, hv, p->lora + 3 * C, ACT_SIGMOID, w.v0, nullptr);
        RWKV7_TRY(launch_gemv(dt, up, stream));

        TmixDecodeArgs tm;
        tm.H = p->H;
        tm.N = p->N;
        tm.layer = l;
        tm.proj = p->proj;
        tm.lora = p->lora;
        tm.v_first = p->v_first;
        tm.k_k = w.k_k;
        tm.k_a = w.k_a;
        tm.r_k = w.r_k;
        tm.lnx_w = w.lnx_w;
        tm.lnx_b = w.lnx_b;
        tm.io = p->io;
        tm.out = p->att_y;
        RWKV7_TRY(launch_tmix_decode(tm, stream));

        GemvBatch out = {};
        gemv_add(out, dt, w.att_out, C, C, p->att_y, p->x, ACT_NONE, nullptr, p->x);
        out.epilogue = ln_epilogue(p, gemv_counter, w.ln2_w, w.ln2_b, w.ffn_mix, SHIFT_FFN, l, 1);
        RWKV7_TRY(launch_gemv(dt, out, stream));

        GemvBatch key = {};
        gemv_add(key, dt, w.ffn_key, p->F, C, p->mixed, p->ffn_h, ACT_RELU_SQUARED, nullptr, nullptr);
        RWKV7_TRY(launch_gemv(dt, key, stream));

        SparseFfnArgs ffn;
        ffn.value_t = w.ffn_value_t;
        ffn.h = p->ffn_h;
        ffn.x = p->x;
        ffn.partial = p->partial;
        ffn.tile_counters = tile_counters;
        ffn.done_counter = done_counter;
        ffn.F = p->F;
        ffn.C = C;
        if (l + 1 < L) {
            const rwkv7_layer &next = p->layers[l + 1];
            ffn.epilogue = ln_epilogue(p, nullptr, next.ln1_w, next.ln1_b, next.att_mix, SHIFT_ATT, l + 1, 6);
        } else {
            ffn.epilogue = ln_epilogue(p, nullptr, p->ln_out_w, p->ln_out_b, nullptr, SHIFT_NONE, 0, 0);
        }
        RWKV7_TRY(launch_sparse_ffn(dt, ffn, p->sm_count, stream));
    }

    GemvBatch head = {};
    gemv_add(head, dt, p->head, p->vocab, C, p->mixed, p->logits, ACT_NONE, nullptr, nullptr);
    return launch_gemv(dt, head, stream);
}

}  // namespace rwkv7

extern "C" cudaError_t rwkv7_decode_step(const rwkv7_decode_plan *plan, cudaStream_t stream) {
    return rwkv7::decode_step(plan, stream);
}
