/*
 * Calls every entry point of cuda/rwkv7.h on the CPU emulator with buffers allocated at
 * exactly the sizes the interface documents, so that valgrind's memcheck reports any kernel
 * access outside them (on a GPU that would be silent corruption or a crash). Shapes are
 * chosen to hit the edges: LoRA ranks that are not multiples of 8 (scalar GEMV path), an FFN
 * width that is not a multiple of 32 (partial chunks), a vocabulary that is not a multiple of
 * a GEMV block, a batch of two sequences with a gap between their states.
 * Exit status 0 when every call succeeded and every output is finite.
 */
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "rwkv7.h"

extern "C" const char *rwkv7_emu_take_error(void);

namespace {

std::mt19937 rng(12345);
std::vector<void *> allocations;

void *allocate(size_t bytes) {
    void *p = std::malloc(bytes ? bytes : 1);
    allocations.push_back(p);
    return p;
}

float *floats(size_t n, float scale = 1.0f, float shift = 0.0f) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    float *p = static_cast<float *>(allocate(n * sizeof(float)));
    for (size_t i = 0; i < n; i++) p[i] = shift + scale * normal(rng);
    return p;
}

float *uniform(size_t n, float low, float high) {
    std::uniform_real_distribution<float> u(low, high);
    float *p = static_cast<float *>(allocate(n * sizeof(float)));
    for (size_t i = 0; i < n; i++) p[i] = u(rng);
    return p;
}

size_t element_size(rwkv7_dtype dtype) { return dtype == RWKV7_F32 ? 4 : 2; }

/* n values of the run dtype, normal(0, scale) */
void *values(rwkv7_dtype dtype, size_t n, float scale) {
    std::normal_distribution<float> normal(0.0f, scale);
    void *p = allocate(n * element_size(dtype));
    for (size_t i = 0; i < n; i++) {
        const float x = normal(rng);
        if (dtype == RWKV7_F32) static_cast<float *>(p)[i] = x;
        else if (dtype == RWKV7_F16) static_cast<__half *>(p)[i] = __float2half_rn(x);
        else static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(x);
    }
    return p;
}

bool finite(const float *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!std::isfinite(p[i])) return false;
    }
    return true;
}

int failures = 0;

void check(cudaError_t err, const char *what) {
    if (err != cudaSuccess) {
        std::fprintf(stderr, "%s failed: error %d %s\n", what, (int)err, rwkv7_emu_take_error());
        failures++;
    }
}

void expect_finite(const float *p, size_t n, const char *what) {
    if (!finite(p, n)) {
        std::fprintf(stderr, "%s: non-finite output\n", what);
        failures++;
    }
}

void decode(rwkv7_dtype dt, int sm_count) {
    const int L = 2, C = 128, H = 2, N = 64, F = 456, Dw = 24, Da = 20, Dg = 40, Dv = 32, V = 300;
    std::vector<rwkv7_layer> layers(L);
    for (int l = 0; l < L; l++) {
        rwkv7_layer &w = layers[l];
        const int rows = 3 * C + Dw + Da + Dg + (l > 0 ? Dv : 0);
        const float s = 1.0f / std::sqrt((float)C);
        w.att_in = values(dt, (size_t)rows * C, s);
        w.w2t = values(dt, (size_t)C * Dw, 0.1f);
        w.a2t = values(dt, (size_t)C * Da, 0.1f);
        w.g2t = values(dt, (size_t)C * Dg, 0.1f);
        w.v2t = l > 0 ? values(dt, (size_t)C * Dv, 0.1f) : nullptr;
        w.att_out = values(dt, (size_t)C * C, s);
        w.ffn_key = values(dt, (size_t)F * C, s);
        w.ffn_value_t = values(dt, (size_t)F * C, 1.0f / std::sqrt((float)F));
        w.ln1_w = floats(C, 0.1f, 1.0f); w.ln1_b = floats(C, 0.1f);
        w.ln2_w = floats(C, 0.1f, 1.0f); w.ln2_b = floats(C, 0.1f);
        w.att_mix = uniform(6 * (size_t)C, 0.0f, 1.0f);
        w.w0 = floats(C, 1.0f, -0.5f); w.a0 = floats(C, 0.5f);
        w.v0 = l > 0 ? floats(C, 0.5f, 0.5f) : nullptr;
        w.k_k = floats(C, 0.1f, 0.85f); w.k_a = floats(C, 0.1f, 1.0f); w.r_k = floats(C, 0.3f);
        w.lnx_w = floats(C, 0.1f, 1.0f); w.lnx_b = floats(C, 0.1f);
        w.ffn_mix = uniform(C, 0.0f, 1.0f);
    }
    rwkv7_decode_plan p;
    std::memset(&p, 0, sizeof p);
    p.dtype = dt;
    p.n_layer = L; p.C = C; p.H = H; p.N = N; p.F = F;
    p.Dw = Dw; p.Da = Da; p.Dg = Dg; p.Dv = Dv; p.vocab = V;
    p.layers = layers.data();
    p.emb = values(dt, (size_t)V * C, 1.0f);
    p.head = values(dt, (size_t)V * C, 2.0f / std::sqrt((float)C));
    p.ln0_w = floats(C, 0.1f, 1.0f); p.ln0_b = floats(C, 0.1f);
    p.ln_out_w = floats(C, 0.1f, 1.0f); p.ln_out_b = floats(C, 0.1f);
    p.x = floats(C); p.mixed = floats(6 * (size_t)C); p.proj = floats(3 * C + Dw + Da + Dg + Dv);
    p.lora = floats(4 * (size_t)C); p.v_first = floats(C); p.att_y = floats(C); p.ffn_h = floats(F);
    p.partial = floats(rwkv7_decode_partial_floats(C, F, sm_count));
    const size_t counters = rwkv7_decode_counter_count(C, F, sm_count);
    p.counters = static_cast<unsigned int *>(allocate(counters * sizeof(unsigned int)));
    std::memset(p.counters, 0, counters * sizeof(unsigned int));
    p.logits = floats(V);
    p.sm_count = sm_count;

    const size_t shift = (size_t)L * C, wkv = (size_t)L * H * N * N;
    float *att_in = floats(shift), *att_out = floats(shift), *wkv_in = floats(wkv, 0.5f);
    float *wkv_out = floats(wkv), *ffn_in = floats(shift), *ffn_out = floats(shift);
    rwkv7_step_io *io = static_cast<rwkv7_step_io *>(allocate(sizeof(rwkv7_step_io)));
    io->token = V - 1;
    io->att_x_in = (long long)att_in; io->att_x_out = (long long)att_out;
    io->wkv_in = (long long)wkv_in; io->wkv_out = (long long)wkv_out;
    io->ffn_x_in = (long long)ffn_in; io->ffn_x_out = (long long)ffn_out;
    p.io = io;

    for (int step = 0; step < 2; step++) {
        check(rwkv7_decode_step(&p, nullptr), "rwkv7_decode_step");
        expect_finite(p.logits, V, "decode logits");
        expect_finite(wkv_out, wkv, "decode wkv state");
        expect_finite(att_out, shift, "decode att_x");
        expect_finite(ffn_out, shift, "decode ffn_x");
    }
    for (size_t i = 0; i < counters; i++) {
        if (p.counters[i] != 0) {
            std::fprintf(stderr, "counter %zu left at %u\n", i, p.counters[i]);
            failures++;
        }
    }
}

void prefill(rwkv7_dtype dt) {
    const int T = 5, H = 2, N = 64, C = H * N, B = 2;
    const size_t n = (size_t)T * C;

    float *xn = floats(n), *prev = floats(C), *mix = uniform(6 * (size_t)C, 0.0f, 1.0f), *last = floats(C);
    void *mixed = values(dt, 6 * n, 1.0f);
    check(rwkv7_mix_rows(dt, T, C, 6, xn, prev, mix, mixed, last, nullptr), "rwkv7_mix_rows");

    for (int layer = 0; layer < 2; layer++) {
        rwkv7_prep_rows_args a;
        a.T = T; a.H = H; a.N = N;
        a.k = values(dt, n, 1.0f); a.v = values(dt, n, 1.0f);
        a.zraw = values(dt, n, 1.0f); a.araw = values(dt, n, 1.0f);
        a.vraw = layer ? values(dt, n, 1.0f) : nullptr;
        a.w0 = floats(C); a.a0 = floats(C); a.v0 = layer ? floats(C) : nullptr;
        a.k_k = floats(C, 0.1f, 0.85f); a.k_a = floats(C, 0.1f, 1.0f);
        a.v_first = values(dt, n, 1.0f);
        a.w_out = floats(n);
        a.k_out = values(dt, n, 1.0f); a.v_out = values(dt, n, 1.0f);
        a.a_out = values(dt, n, 1.0f); a.b_out = values(dt, n, 1.0f);
        check(rwkv7_prep_rows(dt, &a, nullptr), "rwkv7_prep_rows");
        expect_finite(a.w_out, n, "prep w");
    }

    /* Two sequences whose states are one spare head apart. */
    const long long stride = (long long)(H + 1) * N * N;
    const size_t state_floats = (size_t)(B - 1) * stride + (size_t)H * N * N; /* no slack after the last */
    float *state_in = floats(state_floats), *state_out = floats(state_floats);
    const size_t bn = (size_t)B * n;
    float *y = floats(bn);
    check(rwkv7_wkv_seq(dt, B, T, H, N, state_in, state_out, stride, values(dt, bn, 1.0f),
                        uniform(bn, 0.55f, 1.0f), values(dt, bn, 0.3f), values(dt, bn, 1.0f),
                        values(dt, bn, 0.1f), values(dt, bn, 0.1f), y, nullptr),
          "rwkv7_wkv_seq");
    expect_finite(y, bn, "wkv y");

    rwkv7_gate_rows_args g;
    g.T = T; g.H = H; g.N = N;
    g.y = floats(n);
    g.r = values(dt, n, 1.0f); g.k = values(dt, n, 1.0f); g.v = values(dt, n, 1.0f); g.g = values(dt, n, 1.0f);
    g.r_k = floats(C); g.lnx_w = floats(C); g.lnx_b = floats(C);
    g.out = values(dt, n, 1.0f);
    check(rwkv7_gate_rows(dt, &g, nullptr), "rwkv7_gate_rows");

    for (int K : {C, 20, 456}) {
        const int rows = 300;
        float *out = floats(rows);
        check(rwkv7_gemv(dt, rows, K, values(dt, (size_t)rows * K, 0.1f), floats(K), out, nullptr), "rwkv7_gemv");
        expect_finite(out, rows, "gemv");
    }
}

}  // namespace

int main() {
    for (rwkv7_dtype dt : {RWKV7_F32, RWKV7_F16, RWKV7_BF16}) {
        for (int sm_count : {1, 132}) decode(dt, sm_count);
        prefill(dt);
    }
    for (void *p : allocations) std::free(p);
    if (failures) std::fprintf(stderr, "%d failures\n", failures);
    return failures ? 1 : 0;
}
