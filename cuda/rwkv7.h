/*
 * rwkv-tui CUDA kernels for RWKV-7 ("x070") inference: the C interface.
 *
 * Everything here is plain C with raw device pointers and an explicit cudaStream_t, so the
 * kernels compile with `nvcc -c` alone (no torch headers) and every launch goes to the stream
 * the caller names: torch's current stream, which makes the work capturable in a CUDA graph.
 * The torch binding (rwkv7_binding.cpp) is a thin layer that checks tensors and calls these.
 *
 * Conventions shared by every function:
 *   - C = H * N channels; head h owns channels [h*N, (h+1)*N). N (head size) must be 64.
 *   - "run dtype" tensors (weights, most activations) are fp32, fp16 or bf16 (rwkv7_dtype);
 *     the residual stream, the state, reductions and every accumulation are fp32.
 *   - WKV state layout is [B][H][N(value i)][N(key j)], fp32, rows contiguous.
 *   - Decay: w is the per-channel multiplier itself, w = exp(-exp(-1/2) * sigmoid(z)), always
 *     fp32 (the CPU backend's convention). Rounding a number this close to 1 to 16 bits would
 *     shorten long memories, so it never travels in the run dtype.
 *   - WKV inputs a and b are the reference's a = -kk and b = kk * iclr.
 * Each function returns cudaSuccess or the launch error (cudaGetLastError after launching).
 */
#ifndef RWKV7_H
#define RWKV7_H

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { RWKV7_F32 = 0, RWKV7_F16 = 1, RWKV7_BF16 = 2 } rwkv7_dtype;

/* Head size every kernel is compiled for. */
#define RWKV7_HEAD_SIZE 64
/* Most segments one batched matrix-vector launch can carry. */
#define RWKV7_MAX_SEGMENTS 8

/*
 * WKV-7 recurrence over T steps for B sequences (prefill), one block per (head, sequence).
 * r, k, v, a, b: [B][T][C] run dtype; w: [B][T][C] fp32; y: [B][T][C] fp32 (S_t r_t).
 * state_in/state_out: [B][H][N][N] fp32 with `state_batch_stride` floats between sequences;
 * they may be the same buffer (updated in place).
 */
cudaError_t rwkv7_wkv_seq(rwkv7_dtype dtype, int B, int T, int H, int N,
                          const float *state_in, float *state_out, long long state_batch_stride,
                          const void *r, const float *w, const void *k, const void *v,
                          const void *a, const void *b, float *y, cudaStream_t stream);

/*
 * Token-shift mixes for T rows: out[m][t][c] = xn[t][c] + (prev_t[c] - xn[t][c]) * mix[m][c],
 * where prev_0 = prev (the state's vector) and prev_t = xn[t-1]. Also copies xn[T-1] to last.
 * xn: [T][C] fp32; prev, last: [C] fp32; mix: [M][C] fp32; out: [M][T][C] run dtype.
 */
cudaError_t rwkv7_mix_rows(rwkv7_dtype dtype, int T, int C, int M, const float *xn,
                           const float *prev, const float *mix, void *out, float *last,
                           cudaStream_t stream);

/*
 * Time-mix preparation for T rows (prefill), everything computed in fp32:
 *   w   = exp(-exp(-1/2) * sigmoid(w0 + zraw))           -> w_out (fp32)
 *   iclr = sigmoid(a0 + araw)
 *   kk  = L2-normalise per head (k * k_k);  a_out = -kk;  b_out = kk * iclr
 *   k_out = k * (1 + (iclr - 1) * k_a)
 *   layer 0 (vraw == NULL): v_out = v and v_first = v;
 *   else v_out = v + (v_first - v) * sigmoid(v0 + vraw)
 * Inputs k, v, zraw, araw, vraw, v_first and outputs k_out, v_out, a_out, b_out: [T][C] run
 * dtype; w0, a0, v0, k_k, k_a: [C] fp32.
 */
typedef struct {
    int T, H, N;
    const void *k, *v, *zraw, *araw, *vraw;
    const float *w0, *a0, *v0, *k_k, *k_a;
    void *v_first;
    float *w_out;
    void *k_out, *v_out, *a_out, *b_out;
} rwkv7_prep_rows_args;
cudaError_t rwkv7_prep_rows(rwkv7_dtype dtype, const rwkv7_prep_rows_args *args, cudaStream_t stream);

/*
 * Time-mix output for T rows: out = (GroupNorm_H(y) * lnx_w + lnx_b + bonus * v) * g with
 * bonus = sum over the head of r * k * r_k (eps 64e-5). y: [T][C] fp32; r, k, v, g, out:
 * [T][C] run dtype; r_k, lnx_w, lnx_b: [C] fp32.
 */
typedef struct {
    int T, H, N;
    const float *y;
    const void *r, *k, *v, *g;
    const float *r_k, *lnx_w, *lnx_b;
    void *out;
} rwkv7_gate_rows_args;
cudaError_t rwkv7_gate_rows(rwkv7_dtype dtype, const rwkv7_gate_rows_args *args, cudaStream_t stream);

/* y[rows] = weight[rows][K] . x[K] with fp32 x, y and accumulation (the prefill logits head). */
cudaError_t rwkv7_gemv(rwkv7_dtype dtype, int rows, int K, const void *weight, const float *x,
                       float *y, cudaStream_t stream);

/*
 * ---- Batch-1 decoding: one call launches every kernel of one token (6 per layer + 2). ----
 *
 * Weights of one layer as the decode kernels want them (all [out][in] row-major, run dtype
 * unless fp32 is said):
 *   att_in:  [3C + Dw + Da + Dg + Dv][C]: receptance, key, value, then w1^T, a1^T, g1^T, v1^T
 *            (no v1 rows in layer 0), so one launch makes every projection of the mixed inputs.
 *   w2t, a2t, g2t: [C][D*] transposed LoRA-up matrices; v2t too from layer 1 on (else NULL).
 *   att_out: [C][C]; ffn_key: [F][C]; ffn_value_t: [F][C] (transposed, so the rows that the
 *            squared-ReLU activation zeroes are never read).
 *   att_mix: [6][C] fp32 in the order r, k, v, w, a, g; the other vectors [C] fp32.
 */
typedef struct {
    const void *att_in, *w2t, *a2t, *g2t, *v2t, *att_out, *ffn_key, *ffn_value_t;
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b, *att_mix;
    const float *w0, *a0, *v0, *k_k, *k_a, *r_k, *lnx_w, *lnx_b, *ffn_mix;
} rwkv7_layer;

/*
 * What changes from one decoded token to the next, read by the kernels from device memory at
 * run time so that a captured graph can be replayed with new inputs and a fresh output state:
 * the token id and the addresses of the input and output state tensors ([L][C], [L][H][N][N],
 * [L][C] fp32). All fields are 64-bit so the table is a plain int64[8] tensor on the torch side.
 */
typedef struct {
    long long token;
    long long att_x_in, att_x_out, wkv_in, wkv_out, ffn_x_in, ffn_x_out;
    long long reserved;
} rwkv7_step_io;

typedef struct {
    rwkv7_dtype dtype;
    int n_layer, C, H, N, F, Dw, Da, Dg, Dv, vocab;
    const rwkv7_layer *layers; /* host array of n_layer entries */
    const void *emb, *head;    /* [vocab][C] run dtype */
    const float *ln0_w, *ln0_b, *ln_out_w, *ln_out_b;
    const rwkv7_step_io *io; /* device pointer */
    /* device scratch, sizes from rwkv7_decode_scratch_floats */
    float *x;        /* [C] residual stream */
    float *mixed;    /* [6][C] token-shift mixes (r, k, v, w, a, g); [0] doubles as the FFN input */
    float *proj;     /* [3C + Dw + Da + Dg + Dv] outputs of att_in */
    float *lora;     /* [4][C] decay logit z, iclr, gate, value-residual gate */
    float *v_first;  /* [C] layer 0's value */
    float *att_y;    /* [C] input of the output projection */
    float *ffn_h;    /* [F] squared-ReLU activations */
    float *partial;  /* [chunks][C] split-F partial sums of the sparse value product */
    unsigned int *counters; /* zero-initialised; every kernel leaves them zero */
    float *logits;   /* [vocab] */
    int sm_count;    /* multiprocessors of the device, to size the split-F grid */
} rwkv7_decode_plan;

/* Scratch sizes a plan needs (floats for `partial`, unsigned ints for `counters`). */
size_t rwkv7_decode_partial_floats(int C, int F, int sm_count);
size_t rwkv7_decode_counter_count(int C, int F, int sm_count);

/* Launch one token: reads plan->io, writes the output state named there and plan->logits. */
cudaError_t rwkv7_decode_step(const rwkv7_decode_plan *plan, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* RWKV7_H */
