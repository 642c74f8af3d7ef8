/*
 * CPU kernels for single-sequence RWKV-7 inference.
 *
 * Decoding one token on a CPU is bound by how fast weights stream from memory, and torch's
 * bf16 matrix-vector product is slower than fp32 on CPUs without native bf16 arithmetic.
 * These kernels read bf16/fp16/fp32 weights in their stored (out, in) layout, widen them to
 * fp32 in registers, and accumulate in fp32, so bf16 weights cost half the memory traffic of
 * fp32 at fp32 accuracy of the arithmetic. Block-quantized weights (8-bit and 4-bit, one fp16
 * scale per QBLOCK inputs) cut the traffic to a half or a quarter of bf16's; their products
 * run in integers against the input rounded to 16-bit fixed point per block (see quantize_x).
 *
 * Built on first use by engine/backends/cpu_native.py and called through ctypes.
 * Every function takes its thread count explicitly; see parallel_for for why it is not OpenMP.
 */
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define RWKV_AVX2 1
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define RWKV_AVX512 1
#endif
#endif

enum { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2, DT_Q8 = 3, DT_Q4 = 4 };
static inline int is_quantized(int dtype) { return dtype == DT_Q8 || dtype == DT_Q4; }

/*
 * A block-quantized matrix (dtype DT_Q8 or DT_Q4), described by the caller:
 *   weight[r][c] = scale * d[r][c / QBLOCK] * (q[r][c] - offset)
 * DT_Q8: q int8, offset 0. DT_Q4: q one nibble, offset 8; byte k of a block's 16 holds element
 * k in its low and element k + 16 in its high nibble, so both halves unpack in column order.
 * d is fp16 relative to the matrix's fp32 scale, which keeps every block scale in fp16's
 * normal range whatever the weights' magnitude. Rows are zero-padded to stride columns.
 */
#define QBLOCK 32
#ifndef QAHEAD
#define QAHEAD 4 /* rows ahead the quantized products prefetch */
#endif
typedef struct {
    const void *q;
    const uint16_t *d;     /* [rows][stride / QBLOCK] */
    float scale;
    int64_t stride;        /* columns per row incl. padding, a multiple of QBLOCK */
} qmat_t;

static inline int64_t qrow_bytes(int dtype, int64_t stride) { return dtype == DT_Q4 ? stride / 2 : stride; }

/*
 * A caller-runs thread pool.
 *
 * OpenMP ends every parallel region with a barrier that waits for all team threads, so on a
 * busy machine (the UI thread, other programs) one descheduled thread stalls the whole region
 * for a scheduler time slice: measured 8x slower decoding on a loaded 2-core box. Here the
 * calling thread claims chunks from an atomic counter like any helper and only waits for
 * chunks a helper has actually claimed; a helper that never got the CPU costs nothing.
 */
typedef void (*range_fn)(const void *ctx, int64_t begin, int64_t end);

typedef struct {
    range_fn fn;
    const void *ctx;
    int64_t items, chunk;
    atomic_llong next, done;
    atomic_int active;
} job_t;

#define MAX_HELPERS 63
static pthread_mutex_t pool_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static job_t *volatile pool_job = NULL;
static atomic_ullong pool_generation = 0;
static int pool_helpers = 0;

static void run_chunks(job_t *job) {
    for (;;) {
        int64_t begin = atomic_fetch_add(&job->next, job->chunk);
        if (begin >= job->items) break;
        int64_t end = begin + job->chunk < job->items ? begin + job->chunk : job->items;
        job->fn(job->ctx, begin, end);
        atomic_fetch_add(&job->done, end - begin);
    }
}

static void *helper_main(void *unused) {
    (void)unused;
    unsigned long long seen = atomic_load(&pool_generation);
    for (;;) {
        /* Spin briefly: the next kernel of the same layer usually follows within microseconds. */
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        while (atomic_load(&pool_generation) == seen) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) > 50000) break;
        }
        pthread_mutex_lock(&pool_mutex);
        while (atomic_load(&pool_generation) == seen) pthread_cond_wait(&pool_wake, &pool_mutex);
        seen = atomic_load(&pool_generation);
        job_t *job = pool_job;
        if (job) atomic_fetch_add(&job->active, 1);
        pthread_mutex_unlock(&pool_mutex);
        if (job) {
            run_chunks(job);
            atomic_fetch_sub(&job->active, 1);
        }
    }
    return NULL;
}

static void parallel_for(range_fn fn, const void *ctx, int64_t items, int64_t chunk, int nthreads) {
    if (chunk < 1) chunk = 1;
    if (nthreads <= 1 || items <= chunk) {
        fn(ctx, 0, items);
        return;
    }
    job_t job;
    job.fn = fn;
    job.ctx = ctx;
    job.items = items;
    job.chunk = chunk;
    atomic_init(&job.next, 0);
    atomic_init(&job.done, 0);
    atomic_init(&job.active, 0);
    pthread_mutex_lock(&pool_mutex);
    int wanted = nthreads - 1 > MAX_HELPERS ? MAX_HELPERS : nthreads - 1;
    while (pool_helpers < wanted) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, helper_main, NULL) != 0) break;
        pthread_detach(thread);
        pool_helpers++;
    }
    pool_job = &job;
    atomic_fetch_add(&pool_generation, 1);
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_mutex);

    run_chunks(&job);
    while (atomic_load(&job.done) < items) { /* only chunks a helper claimed remain */ }

    pthread_mutex_lock(&pool_mutex);
    pool_job = NULL;
    pthread_mutex_unlock(&pool_mutex);
    while (atomic_load(&job.active) > 0) { /* a late helper is leaving */ }
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float load_weight(const void *w, int dtype, int64_t i) {
    switch (dtype) {
    case DT_BF16: return bf16_to_f32(((const uint16_t *)w)[i]);
    case DT_F16: return f16_to_f32(((const uint16_t *)w)[i]);
    default: return ((const float *)w)[i];
    }
}

#ifdef RWKV_AVX2
static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_hadd_ps(lo, lo);
    lo = _mm_hadd_ps(lo, lo);
    return _mm_cvtss_f32(lo);
}

/* Eight consecutive weights widened to fp32. For bf16 the caller passes x de-interleaved
 * (even lanes, odd lanes), which lets one 32-bit shift and one mask widen 16 weights. */
static inline __m256 load8(const void *w, int dtype, int64_t i) {
    if (dtype == DT_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    if (dtype == DT_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i))), 16));
    return _mm256_loadu_ps((const float *)w + i);
}
#endif

/*
 * The input of a quantized product, rounded to 16-bit fixed point per block of QBLOCK:
 * v = round(x / s) with s = max|x| / 32767 over the block, so each entry is off by at most
 * 2^-16 of its block's largest one (bf16 weights alone are off by 2^-9 of themselves). It lets
 * the weights meet the input in integer multiply-adds (vpmaddwd) instead of being widened to
 * fp32 one by one, which for 4-bit weights would cost more instructions than the memory
 * system leaves time for. sum[b] (the block's sum of v) serves the 4-bit offset.
 */
typedef struct {
    int16_t *v;   /* [nb * QBLOCK], zero-padded */
    float *s;     /* [nb] */
    float *sum;   /* [nb] */
    int64_t nb;
} qx_t;

/* Floats of scratch an input of cols entries needs, whichever form a product wants it in. */
#define SPLIT_FLOATS(cols) ((cols) + 2 * QBLOCK)

static qx_t quantize_x(const float *x, int64_t cols, float *room) {
    qx_t qx;
    qx.nb = (cols + QBLOCK - 1) / QBLOCK;
    qx.v = (int16_t *)room;
    qx.s = room + qx.nb * QBLOCK / 2;
    qx.sum = qx.s + qx.nb;
    for (int64_t b = 0; b < qx.nb; b++) {
        const int64_t c0 = b * QBLOCK, n = cols - c0 < QBLOCK ? cols - c0 : QBLOCK;
        float m = 0.0f;
        for (int64_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[c0 + i]));
        const float inv = m > 0.0f ? 32767.0f / m : 0.0f;
        int32_t sum = 0;
        for (int64_t i = 0; i < QBLOCK; i++) {
            int32_t q = 0;
            if (i < n) {
                float t = x[c0 + i] * inv;
                t = t > 32767.0f ? 32767.0f : (t < -32767.0f ? -32767.0f : t);
                q = (int32_t)lrintf(t);
            }
            qx.v[c0 + i] = (int16_t)q;
            sum += q;
        }
        qx.s[b] = m / 32767.0f;
        qx.sum[b] = (float)sum;
    }
    return qx;
}

static inline float half_to_float(uint16_t h) {
#ifdef RWKV_AVX2
    return _cvtsh_ss(h);
#else
    return f16_to_f32(h);
#endif
}

/* One row's product with a quantized input, scalar: the reference the vector paths follow. */
static float qdot_row_scalar(const qmat_t *m, int dtype, const qx_t *x, int64_t row) {
    const int64_t nb = m->stride / QBLOCK;
    const uint16_t *d = m->d + row * nb;
    float acc = 0.0f;
    if (dtype == DT_Q8) {
        const int8_t *q = (const int8_t *)m->q + row * m->stride;
        for (int64_t b = 0; b < nb; b++) {
            int32_t dot = 0;
            for (int i = 0; i < QBLOCK; i++) dot += (int32_t)q[b * QBLOCK + i] * x->v[b * QBLOCK + i];
            acc += half_to_float(d[b]) * x->s[b] * (float)dot;
        }
    } else {
        const uint8_t *q = (const uint8_t *)m->q + row * (m->stride / 2);
        for (int64_t b = 0; b < nb; b++) {
            int32_t dot = 0;
            for (int i = 0; i < QBLOCK / 2; i++) {
                const uint8_t byte = q[b * QBLOCK / 2 + i];
                dot += (int32_t)(byte & 15) * x->v[b * QBLOCK + i];
                dot += (int32_t)(byte >> 4) * x->v[b * QBLOCK + QBLOCK / 2 + i];
            }
            acc += half_to_float(d[b]) * x->s[b] * ((float)dot - 8.0f * x->sum[b]);
        }
    }
    return acc * m->scale;
}

/*
 * Per row, the combined scale d[b] * s[b] of a run of up to 16 blocks, and (4-bit) the sum of
 * those scales times the input's block sums, which carries the offset of 8.
 */
static inline void block_scales(const uint16_t *d, const qx_t *x, int64_t b0, int64_t count, float *comb,
                                float *offset_sum) {
    int64_t k = 0;
#ifdef RWKV_AVX2
    if (count == 16) {
        __m256 c0 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(d + b0))),
                                  _mm256_loadu_ps(x->s + b0));
        __m256 c1 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(d + b0 + 8))),
                                  _mm256_loadu_ps(x->s + b0 + 8));
        _mm256_storeu_ps(comb, c0);
        _mm256_storeu_ps(comb + 8, c1);
        __m256 o = _mm256_add_ps(_mm256_mul_ps(c0, _mm256_loadu_ps(x->sum + b0)),
                                 _mm256_mul_ps(c1, _mm256_loadu_ps(x->sum + b0 + 8)));
        *offset_sum += hsum256(o);
        k = 16;
    }
#endif
    for (; k < count; k++) {
        comb[k] = half_to_float(d[b0 + k]) * x->s[b0 + k];
        *offset_sum += comb[k] * x->sum[b0 + k];
    }
}

/* ROWS consecutive rows of a quantized matrix times a quantized input. */
static void qmatvec_rows(const qmat_t *m, int dtype, const qx_t *x, float *y, int64_t row0) {
    const int64_t nb = m->stride / QBLOCK, row_bytes = qrow_bytes(dtype, m->stride);
    float comb[4][16], offset[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const uint8_t *q[4];
    for (int r = 0; r < 4; r++) q[r] = (const uint8_t *)m->q + (row0 + r) * row_bytes;
#if defined(RWKV_AVX512)
    __m512 acc[4];
    for (int r = 0; r < 4; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
        const int64_t count = nb - b0 < 16 ? nb - b0 : 16;
        for (int r = 0; r < 4; r++) block_scales(m->d + (row0 + r) * nb, x, b0, count, comb[r], &offset[r]);
        if (dtype == DT_Q8) {
            for (int64_t k = 0; k < count; k++) {
                const int64_t b = b0 + k;
                const __m512i xv = _mm512_loadu_si512(x->v + b * QBLOCK);
                for (int r = 0; r < 4; r++) {
                    _mm_prefetch((const char *)(q[r] + QAHEAD * row_bytes + b * QBLOCK), _MM_HINT_T0);
                    const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q[r] + b * QBLOCK)));
                    const __m512 p = _mm512_cvtepi32_ps(_mm512_madd_epi16(w, xv));
                    acc[r] = _mm512_fmadd_ps(p, _mm512_set1_ps(comb[r][k]), acc[r]);
                }
            }
        } else {
            const __m512i low = _mm512_set1_epi16(15);
            int64_t k = 0;
            for (; k + 2 <= count; k += 2) { /* two blocks per 512-bit step: lanes 0-7 and 8-15 */
                const int16_t *xa = x->v + (b0 + k) * QBLOCK, *xb = xa + QBLOCK;
                const __m512i xlo = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xa)),
                                                       _mm256_loadu_si256((const __m256i *)xb), 1);
                const __m512i xhi = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(xa + 16))),
                                                       _mm256_loadu_si256((const __m256i *)(xb + 16)), 1);
                for (int r = 0; r < 4; r++) {
                    const uint8_t *p = q[r] + (b0 + k) * (QBLOCK / 2);
                    _mm_prefetch((const char *)(p + QAHEAD * row_bytes), _MM_HINT_T0);
                    const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)p));
                    const __m512i dot = _mm512_add_epi32(_mm512_madd_epi16(_mm512_and_si512(w, low), xlo),
                                                         _mm512_madd_epi16(_mm512_srli_epi16(w, 4), xhi));
                    const __m512 sc = _mm512_insertf32x8(_mm512_set1_ps(comb[r][k]), _mm256_set1_ps(comb[r][k + 1]), 1);
                    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc[r]);
                }
            }
            for (; k < count; k++) {
                const int16_t *xa = x->v + (b0 + k) * QBLOCK;
                const __m256i xlo = _mm256_loadu_si256((const __m256i *)xa), xhi = _mm256_loadu_si256((const __m256i *)(xa + 16));
                for (int r = 0; r < 4; r++) {
                    const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(q[r] + (b0 + k) * (QBLOCK / 2))));
                    const __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(_mm256_and_si256(w, _mm256_set1_epi16(15)), xlo),
                                                         _mm256_madd_epi16(_mm256_srli_epi16(w, 4), xhi));
                    acc[r] = _mm512_add_ps(acc[r], _mm512_zextps256_ps512(
                        _mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(comb[r][k]))));
                }
            }
        }
    }
    for (int r = 0; r < 4; r++) {
        float total = _mm512_reduce_add_ps(acc[r]);
        if (dtype == DT_Q4) total -= 8.0f * offset[r];
        y[row0 + r] = total * m->scale;
    }
#elif defined(RWKV_AVX2)
    __m256 acc[4];
    for (int r = 0; r < 4; r++) acc[r] = _mm256_setzero_ps();
    const __m256i low = _mm256_set1_epi16(15);
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
        const int64_t count = nb - b0 < 16 ? nb - b0 : 16;
        for (int r = 0; r < 4; r++) block_scales(m->d + (row0 + r) * nb, x, b0, count, comb[r], &offset[r]);
        for (int64_t k = 0; k < count; k++) {
            const int64_t b = b0 + k;
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)(x->v + b * QBLOCK));
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(x->v + b * QBLOCK + 16));
            for (int r = 0; r < 4; r++) {
                __m256i dot;
                if (dtype == DT_Q8) {
                    const int8_t *p = (const int8_t *)q[r] + b * QBLOCK;
                    _mm_prefetch((const char *)(p + QAHEAD * row_bytes), _MM_HINT_T0);
                    dot = _mm256_add_epi32(
                        _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p)), x0),
                        _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 16))), x1));
                } else {
                    const uint8_t *p = q[r] + b * (QBLOCK / 2);
                    if ((b & 3) == 0) _mm_prefetch((const char *)(p + QAHEAD * row_bytes), _MM_HINT_T0);
                    const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
                    dot = _mm256_add_epi32(_mm256_madd_epi16(_mm256_and_si256(w, low), x0),
                                           _mm256_madd_epi16(_mm256_srli_epi16(w, 4), x1));
                }
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(comb[r][k]), acc[r]);
            }
        }
    }
    for (int r = 0; r < 4; r++) {
        float total = hsum256(acc[r]);
        if (dtype == DT_Q4) total -= 8.0f * offset[r];
        y[row0 + r] = total * m->scale;
    }
#else
    (void)comb;
    (void)offset;
    (void)q;
    (void)nb;
    for (int r = 0; r < 4; r++) y[row0 + r] = qdot_row_scalar(m, dtype, x, row0 + r);
#endif
}

/*
 * acc[0:cols] += sum over the given rows j of h[j] * W[j, 0:cols] for a quantized W: the sparse
 * FFN product. Each row's block scales fold into one coefficient h[j] * scale * d[j][b].
 */
static void qadd_rows(const qmat_t *m, int dtype, const float *h, const int64_t *rows, int64_t count,
                      int64_t cols, float *acc) {
    const int64_t nb = m->stride / QBLOCK, row_bytes = qrow_bytes(dtype, m->stride);
    const int64_t full = cols / QBLOCK; /* blocks that lie wholly inside acc */
    (void)full;
    const float offset = dtype == DT_Q4 ? 8.0f : 0.0f;
    int64_t r = 0;
#ifdef RWKV_AVX2
    for (; r + 4 <= count; r += 4) {
        const uint8_t *q[4];
        const uint16_t *d[4];
        float hs[4];
        for (int i = 0; i < 4; i++) {
            q[i] = (const uint8_t *)m->q + rows[r + i] * row_bytes;
            d[i] = m->d + rows[r + i] * nb;
            hs[i] = h[rows[r + i]] * m->scale;
        }
        const int64_t ahead = r + 8 <= count ? 4 : 0;
        for (int64_t b = 0; b < full; b++) {
            float c[4], off = 0.0f;
            for (int i = 0; i < 4; i++) {
                c[i] = hs[i] * half_to_float(d[i][b]);
                off -= offset * c[i];
            }
            if (ahead && (b * qrow_bytes(dtype, QBLOCK)) % 64 == 0)
                for (int i = 0; i < 4; i++)
                    _mm_prefetch((const char *)m->q + rows[r + ahead + i] * row_bytes + b * qrow_bytes(dtype, QBLOCK), _MM_HINT_T0);
            float *a = acc + b * QBLOCK;
#if defined(RWKV_AVX512)
            __m512 a0 = _mm512_loadu_ps(a), a1 = _mm512_loadu_ps(a + 16);
            for (int i = 0; i < 4; i++) {
                const __m512 ci = _mm512_set1_ps(c[i]);
                __m512i w0, w1;
                if (dtype == DT_Q8) {
                    w0 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q[i] + b * QBLOCK)));
                    w1 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q[i] + b * QBLOCK + 16)));
                } else {
                    const __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q[i] + b * (QBLOCK / 2))));
                    w0 = _mm512_and_si512(w, _mm512_set1_epi32(15));
                    w1 = _mm512_srli_epi32(w, 4);
                }
                a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(w0), ci, a0);
                a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(w1), ci, a1);
            }
            if (dtype == DT_Q4) {
                a0 = _mm512_add_ps(a0, _mm512_set1_ps(off));
                a1 = _mm512_add_ps(a1, _mm512_set1_ps(off));
            }
            _mm512_storeu_ps(a, a0);
            _mm512_storeu_ps(a + 16, a1);
#else
            __m256 a0 = _mm256_loadu_ps(a), a1 = _mm256_loadu_ps(a + 8);
            __m256 a2 = _mm256_loadu_ps(a + 16), a3 = _mm256_loadu_ps(a + 24);
            for (int i = 0; i < 4; i++) {
                const __m256 ci = _mm256_set1_ps(c[i]);
                __m256i w0, w1, w2, w3;
                if (dtype == DT_Q8) {
                    const int8_t *p = (const int8_t *)q[i] + b * QBLOCK;
                    w0 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
                    w1 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
                    w2 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 16)));
                    w3 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 24)));
                } else {
                    const uint8_t *p = q[i] + b * (QBLOCK / 2);
                    const __m256i lo8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
                    const __m256i hi8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
                    const __m256i nib = _mm256_set1_epi32(15);
                    w0 = _mm256_and_si256(lo8, nib);
                    w1 = _mm256_and_si256(hi8, nib);
                    w2 = _mm256_srli_epi32(lo8, 4);
                    w3 = _mm256_srli_epi32(hi8, 4);
                }
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(w0), ci, a0);
                a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(w1), ci, a1);
                a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(w2), ci, a2);
                a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(w3), ci, a3);
            }
            if (dtype == DT_Q4) {
                const __m256 o = _mm256_set1_ps(off);
                a0 = _mm256_add_ps(a0, o);
                a1 = _mm256_add_ps(a1, o);
                a2 = _mm256_add_ps(a2, o);
                a3 = _mm256_add_ps(a3, o);
            }
            _mm256_storeu_ps(a, a0);
            _mm256_storeu_ps(a + 8, a1);
            _mm256_storeu_ps(a + 16, a2);
            _mm256_storeu_ps(a + 24, a3);
#endif
        }
        for (int i = 0; i < 4; i++) /* the partial last block, if any */
            for (int64_t col = full * QBLOCK; col < cols; col++) {
                const float w = dtype == DT_Q8 ? (float)((const int8_t *)q[i])[col]
                                               : (float)((q[i][(col / QBLOCK) * (QBLOCK / 2) + col % (QBLOCK / 2)] >> (col % QBLOCK >= QBLOCK / 2 ? 4 : 0)) & 15);
                acc[col] += hs[i] * half_to_float(d[i][col / QBLOCK]) * (w - offset);
            }
    }
#endif
    for (; r < count; r++) {
        const uint8_t *q = (const uint8_t *)m->q + rows[r] * row_bytes;
        const uint16_t *d = m->d + rows[r] * nb;
        const float hj = h[rows[r]] * m->scale;
        for (int64_t col = 0; col < cols; col++) {
            const float w = dtype == DT_Q8 ? (float)((const int8_t *)q)[col]
                                           : (float)((q[(col / QBLOCK) * (QBLOCK / 2) + col % (QBLOCK / 2)] >> (col % QBLOCK >= QBLOCK / 2 ? 4 : 0)) & 15);
            acc[col] += hj * half_to_float(d[col / QBLOCK]) * (w - offset);
        }
    }
}

/* One row of a quantized matrix as fp32 (the embedding of a token; prefill's dequantization):
 * scale * d * level, in the reference's order of rounding. Loops per block vectorise. */
static void qdequant_row(const qmat_t *m, int dtype, int64_t row, float *out, int64_t cols) {
    const int64_t nb = m->stride / QBLOCK;
    const uint16_t *d = m->d + row * nb;
    for (int64_t b = 0; b < nb && b * QBLOCK < cols; b++) {
        const float s = half_to_float(d[b]) * m->scale;
        float *o = out + b * QBLOCK;
        const int64_t n = cols - b * QBLOCK < QBLOCK ? cols - b * QBLOCK : QBLOCK;
#ifdef RWKV_AVX2
        if (n == QBLOCK) { /* whole blocks: the compiler's own vectorisation was 4x slower */
            const __m256 sv = _mm256_set1_ps(s);
            if (dtype == DT_Q8) {
                const int8_t *q = (const int8_t *)m->q + row * m->stride + b * QBLOCK;
                for (int i = 0; i < QBLOCK; i += 8)
                    _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_cvtepi32_ps(
                        _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + i)))), sv));
            } else {
                const uint8_t *q = (const uint8_t *)m->q + row * (m->stride / 2) + b * (QBLOCK / 2);
                const __m256i eight = _mm256_set1_epi32(8), nib = _mm256_set1_epi32(15);
                for (int i = 0; i < QBLOCK / 2; i += 8) {
                    const __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + i)));
                    _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_cvtepi32_ps(
                        _mm256_sub_epi32(_mm256_and_si256(w, nib), eight)), sv));
                    _mm256_storeu_ps(o + QBLOCK / 2 + i, _mm256_mul_ps(_mm256_cvtepi32_ps(
                        _mm256_sub_epi32(_mm256_srli_epi32(w, 4), eight)), sv));
                }
            }
            continue;
        }
#endif
        if (dtype == DT_Q8) {
            const int8_t *q = (const int8_t *)m->q + row * m->stride + b * QBLOCK;
            if (n == QBLOCK) {
                for (int i = 0; i < QBLOCK; i++) o[i] = (float)q[i] * s;
            } else {
                for (int64_t i = 0; i < n; i++) o[i] = (float)q[i] * s;
            }
        } else {
            const uint8_t *q = (const uint8_t *)m->q + row * (m->stride / 2) + b * (QBLOCK / 2);
            float level[QBLOCK];
            for (int i = 0; i < QBLOCK / 2; i++) {
                level[i] = (float)((int)(q[i] & 15) - 8);
                level[i + QBLOCK / 2] = (float)((int)(q[i] >> 4) - 8);
            }
            for (int64_t i = 0; i < n; i++) o[i] = level[i] * s;
        }
    }
}

/* fp32 → fp16, rounding to nearest even (subnormals included), as torch's .half() does. */
static inline uint16_t float_to_half(float f) {
#ifdef RWKV_AVX2
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000u;
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (u > 0x7f800000u ? 0x200u : 0));
    if (u >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to infinity */
    if (u < 0x38800000u) { /* subnormal or zero in fp16 */
        float a;
        memcpy(&a, &u, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(a * 16777216.0f)); /* a / 2^-24, rounded to even */
    }
    const uint32_t mant = u & 0x1fffu, base = (u >> 13) - (112u << 10);
    const uint32_t round = mant > 0x1000u || (mant == 0x1000u && (base & 1u));
    return (uint16_t)(sign | (base + round));
#endif
}

typedef struct {
    const void *src;
    int src_dtype, dtype;
    int64_t cols, stride;
    float *block_scale; /* [rows][nb]: pass 1 writes, pass 2 reads */
    float scale;
    void *q;
    uint16_t *d;
} quantize_args;

static void block_scale_range(const void *ctx, int64_t begin, int64_t end) {
    const quantize_args *a = ctx;
    const int64_t nb = a->stride / QBLOCK;
    for (int64_t r = begin; r < end; r++)
        for (int64_t b = 0; b < nb; b++) {
            float peak = 0.0f, mag = 0.0f;
            for (int64_t c = b * QBLOCK; c < (b + 1) * QBLOCK && c < a->cols; c++) {
                const float w = load_weight(a->src, a->src_dtype, r * a->cols + c);
                if (fabsf(w) > mag || w != w) { /* first of the largest magnitude; NaN wins */
                    mag = w != w ? w : fabsf(w);
                    peak = w;
                }
            }
            a->block_scale[r * nb + b] = a->dtype == DT_Q8 ? mag / 127.0f : peak / -8.0f;
        }
}

static void quantize_range(const void *ctx, int64_t begin, int64_t end) {
    const quantize_args *a = ctx;
    const int64_t nb = a->stride / QBLOCK;
    for (int64_t r = begin; r < end; r++)
        for (int64_t b = 0; b < nb; b++) {
            const uint16_t d = float_to_half(a->block_scale[r * nb + b] / a->scale);
            a->d[r * nb + b] = d;
            const float effective = half_to_float(d) * a->scale;
            const float inverse = effective != 0.0f ? 1.0f / effective : 0.0f;
            int32_t level[QBLOCK];
            for (int64_t i = 0; i < QBLOCK; i++) {
                const int64_t c = b * QBLOCK + i;
                const float w = c < a->cols ? load_weight(a->src, a->src_dtype, r * a->cols + c) : 0.0f;
                float t = nearbyintf(w * inverse);
                if (a->dtype == DT_Q8) {
                    t = t < -127.0f ? -127.0f : (t > 127.0f ? 127.0f : t);
                } else {
                    t += 8.0f;
                    t = t < 0.0f ? 0.0f : (t > 15.0f ? 15.0f : t);
                }
                level[i] = (int32_t)t;
            }
            if (a->dtype == DT_Q8) {
                int8_t *q = (int8_t *)a->q + r * a->stride + b * QBLOCK;
                for (int i = 0; i < QBLOCK; i++) q[i] = (int8_t)level[i];
            } else {
                uint8_t *q = (uint8_t *)a->q + r * (a->stride / 2) + b * (QBLOCK / 2);
                for (int i = 0; i < QBLOCK / 2; i++) q[i] = (uint8_t)(level[i] | (level[i + QBLOCK / 2] << 4));
            }
        }
}

/*
 * Quantize src[rows][cols] (fp32/bf16/fp16) into q and d (the layout of qmat_t), exactly as the
 * reference in engine/quant.py does. block_scale: rows * stride / QBLOCK floats of scratch.
 * Returns the matrix scale (0 when every weight is zero: the caller stores 1), or NaN/inf when
 * a weight is not finite.
 */
float rwkv_quantize(const void *src, int src_dtype, int dtype, int64_t rows, int64_t cols, int64_t stride,
                    void *q, uint16_t *d, float *block_scale, int nthreads) {
    quantize_args args = {src, src_dtype, dtype, cols, stride, block_scale, 0.0f, q, d};
    parallel_for(block_scale_range, &args, rows, 16, nthreads);
    float scale = 0.0f;
    const int64_t n = rows * (stride / QBLOCK);
    for (int64_t i = 0; i < n; i++) {
        const float s = fabsf(block_scale[i]);
        if (s != s) return s; /* a NaN weight */
        if (s > scale) scale = s;
    }
    if (!isfinite(scale)) return scale;
    args.scale = scale > 0.0f ? scale : 1.0f;
    parallel_for(quantize_range, &args, rows, 16, nthreads);
    return scale;
}

typedef struct {
    const qmat_t *m;
    int dtype;
    float *out;
    int64_t cols;
} dequant_args;

static void dequant_range(const void *ctx, int64_t begin, int64_t end) {
    const dequant_args *a = ctx;
    for (int64_t r = begin; r < end; r++) qdequant_row(a->m, a->dtype, r, a->out + r * a->cols, a->cols);
}

/* out[rows][cols] = the fp32 values of a quantized matrix (prefill multiplies them by many tokens). */
void rwkv_dequantize(const qmat_t *m, int dtype, float *out, int64_t rows, int64_t cols, int nthreads) {
    dequant_args args = {m, dtype, out, cols};
    parallel_for(dequant_range, &args, rows, 64, nthreads);
}

#define ROWS 4

/* One block of ROWS output rows of y = W x, W stored (rows, cols) row-major. */
static void matvec_block(const void *w, int dtype, const float *x, const float *x_even,
                         const float *x_odd, float *y, int64_t row0, int64_t nrows, int64_t cols) {
    int64_t done = 0;
#ifdef RWKV_AVX2
    if (nrows == ROWS && cols % 16 == 0) {
        __m256 acc[ROWS];
        for (int r = 0; r < ROWS; r++) acc[r] = _mm256_setzero_ps();
        if (dtype == DT_BF16) {
            const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u);
            for (int64_t i = 0; i < cols; i += 16) {
                __m256 xe = _mm256_loadu_ps(x_even + i / 2), xo = _mm256_loadu_ps(x_odd + i / 2);
                for (int r = 0; r < ROWS; r++) {
                    const uint16_t *p = (const uint16_t *)w + (row0 + r) * cols + i;
                    _mm_prefetch((const char *)(p + ROWS * cols), _MM_HINT_T0);
                    __m256i v = _mm256_loadu_si256((const __m256i *)p);
                    acc[r] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), xe, acc[r]);
                    acc[r] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, high)), xo, acc[r]);
                }
            }
        } else {
            const int64_t elem = dtype == DT_F32 ? 4 : 2;
            for (int64_t i = 0; i < cols; i += 16) {
                __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
                for (int r = 0; r < ROWS; r++) {
                    int64_t base = (row0 + r) * cols + i;
                    _mm_prefetch((const char *)w + (base + ROWS * cols) * elem, _MM_HINT_T0);
                    if (elem == 4)
                        _mm_prefetch((const char *)w + (base + ROWS * cols + 8) * elem, _MM_HINT_T0);
                    acc[r] = _mm256_fmadd_ps(load8(w, dtype, base), x0, acc[r]);
                    acc[r] = _mm256_fmadd_ps(load8(w, dtype, base + 8), x1, acc[r]);
                }
            }
        }
        for (int r = 0; r < ROWS; r++) y[row0 + r] = hsum256(acc[r]);
        done = ROWS;
    }
#else
    (void)x_even;
    (void)x_odd;
#endif
    for (int64_t r = done; r < nrows; r++) {
        float acc = 0.0f;
        const int64_t base = (row0 + r) * cols;
        for (int64_t i = 0; i < cols; i++) acc += load_weight(w, dtype, base + i) * x[i];
        y[row0 + r] = acc;
    }
}

typedef struct {
    const void *w;        /* the weights, or for a quantized dtype its qmat_t */
    int dtype;
    const float *x, *x_even, *x_odd;
    qx_t qx;              /* x rounded for a quantized product */
    float *y;
    int64_t rows, cols;
    int64_t chunk_blocks, first_chunk;
} mv_task;

typedef struct {
    const mv_task *tasks;
    int count;
} mv_job;

static void mv_job_range(const void *ctx, int64_t begin, int64_t end) {
    const mv_job *job = ctx;
    int t = 0;
    for (int64_t c = begin; c < end; c++) {
        while (t + 1 < job->count && job->tasks[t + 1].first_chunk <= c) t++;
        const mv_task *task = &job->tasks[t];
        const int64_t blocks = (task->rows + ROWS - 1) / ROWS;
        const int64_t b0 = (c - task->first_chunk) * task->chunk_blocks;
        const int64_t b1 = b0 + task->chunk_blocks < blocks ? b0 + task->chunk_blocks : blocks;
        for (int64_t b = b0; b < b1; b++) {
            const int64_t row0 = b * ROWS;
            const int64_t n = task->rows - row0 < ROWS ? task->rows - row0 : ROWS;
            if (is_quantized(task->dtype)) {
                if (n == ROWS) {
                    qmatvec_rows(task->w, task->dtype, &task->qx, task->y, row0);
                } else {
                    for (int64_t r = row0; r < row0 + n; r++)
                        task->y[r] = qdot_row_scalar(task->w, task->dtype, &task->qx, r);
                }
            } else {
                matvec_block(task->w, task->dtype, task->x, task->x_even, task->x_odd, task->y, row0, n,
                             task->cols);
            }
        }
    }
}

/* Every task's product in one parallel job, cut into ~128 KB pieces of weights: big enough to
 * amortise claiming a piece, small enough to balance the threads. */
static void run_matvecs(mv_task *tasks, int count, int nthreads) {
    int64_t chunks = 0;
    for (int i = 0; i < count; i++) {
        mv_task *task = &tasks[i];
        int64_t row_bytes = task->cols * (task->dtype == DT_F32 ? 4 : 2);
        if (is_quantized(task->dtype)) row_bytes = qrow_bytes(task->dtype, ((const qmat_t *)task->w)->stride);
        const int64_t blocks = (task->rows + ROWS - 1) / ROWS;
        int64_t per_chunk = 131072 / row_bytes / ROWS;
        task->chunk_blocks = per_chunk < 1 ? 1 : per_chunk;
        task->first_chunk = chunks;
        chunks += (blocks + task->chunk_blocks - 1) / task->chunk_blocks;
    }
    mv_job job = {tasks, count};
    parallel_for(mv_job_range, &job, chunks, 1, nthreads);
}

/*
 * A product task. x is prepared once here for every row: split into even/odd lanes for bf16
 * weights with a vectorised width, rounded to fixed point for quantized ones.
 * split: SPLIT_FLOATS(cols) floats.
 */
static mv_task make_task(const void *w, int dtype, const float *x, float *split, float *y,
                         int64_t rows, int64_t cols) {
    mv_task task = {w, dtype, x, x, x, {NULL, NULL, NULL, 0}, y, rows, cols, 0, 0};
    if (is_quantized(dtype)) {
        task.qx = quantize_x(x, cols, split);
    } else if (dtype == DT_BF16 && cols % 16 == 0) {
        for (int64_t i = 0; i < cols / 2; i++) {
            split[i] = x[2 * i];
            split[cols / 2 + i] = x[2 * i + 1];
        }
        task.x_even = split;
        task.x_odd = split + cols / 2;
    }
    return task;
}

/* y[rows] = W[rows, cols] · x[cols]; split: SPLIT_FLOATS(cols) floats of room to prepare x in.
 * For a quantized dtype, w is a qmat_t. */
void rwkv_matvec(const void *w, int dtype, const float *x, float *split, float *y, int64_t rows,
                 int64_t cols, int nthreads) {
    mv_task task = make_task(w, dtype, x, split, y, rows, cols);
    run_matvecs(&task, 1, nthreads);
}

/*
 * y[cols] = h[inner] · Wt[inner, cols], skipping rows where h is zero.
 * The channel-mix of RWKV-7 squares a ReLU, so most of h is exactly zero and the rows of the
 * value matrix they would select need never be read. The selected rows are cut into at most
 * SPARSE_CHUNKS runs; each run is summed into its own partial vector while streaming whole
 * contiguous rows, and the partials are added in run order, so the result does not depend on
 * which thread took which run.
 */
#define SPARSE_CHUNKS 32
#define SPARSE_MIN_ROWS 8

typedef struct {
    const void *wt;
    int dtype;
    const float *h;
    const int64_t *index;
    int64_t cols, nnz, rows_per_chunk;
    float *partials; /* [chunks][cols] */
} sparse_args;

/* acc[0:n] += sum over the given rows of h[row] * Wt[row, 0:n] */
static void add_rows(const void *wt, int dtype, const float *h, const int64_t *rows, int64_t count,
                     int64_t cols, float *acc) {
    if (is_quantized(dtype)) {
        qadd_rows(wt, dtype, h, rows, count, cols, acc);
        return;
    }
    int64_t r = 0;
#ifdef RWKV_AVX2
    if (cols % 8 == 0) {
        for (; r + 4 <= count; r += 4) {
            const int64_t j0 = rows[r], j1 = rows[r + 1], j2 = rows[r + 2], j3 = rows[r + 3];
            const __m256 h0 = _mm256_set1_ps(h[j0]), h1 = _mm256_set1_ps(h[j1]);
            const __m256 h2 = _mm256_set1_ps(h[j2]), h3 = _mm256_set1_ps(h[j3]);
            /* the rows are scattered, so fetch the next group's while summing this one */
            const int64_t ahead = r + 8 <= count ? 4 : 0;
            const int64_t p0 = rows[r + ahead] * cols, p1 = rows[r + ahead + 1] * cols;
            const int64_t p2 = rows[r + ahead + 2] * cols, p3 = rows[r + ahead + 3] * cols;
            const int64_t elem = dtype == DT_F32 ? 4 : 2;
            for (int64_t i = 0; i < cols; i += 8) {
                if (ahead && (i * elem) % 64 == 0) {
                    _mm_prefetch((const char *)wt + (p0 + i) * elem, _MM_HINT_T0);
                    _mm_prefetch((const char *)wt + (p1 + i) * elem, _MM_HINT_T0);
                    _mm_prefetch((const char *)wt + (p2 + i) * elem, _MM_HINT_T0);
                    _mm_prefetch((const char *)wt + (p3 + i) * elem, _MM_HINT_T0);
                }
                __m256 a = _mm256_loadu_ps(acc + i);
                a = _mm256_fmadd_ps(load8(wt, dtype, j0 * cols + i), h0, a);
                a = _mm256_fmadd_ps(load8(wt, dtype, j1 * cols + i), h1, a);
                a = _mm256_fmadd_ps(load8(wt, dtype, j2 * cols + i), h2, a);
                a = _mm256_fmadd_ps(load8(wt, dtype, j3 * cols + i), h3, a);
                _mm256_storeu_ps(acc + i, a);
            }
        }
    }
#endif
    for (; r < count; r++) {
        const int64_t j = rows[r];
        const float hj = h[j];
        for (int64_t i = 0; i < cols; i++) acc[i] += hj * load_weight(wt, dtype, j * cols + i);
    }
}

static void sparse_range(const void *ctx, int64_t begin, int64_t end) {
    const sparse_args *a = ctx;
    for (int64_t c = begin; c < end; c++) {
        const int64_t first = c * a->rows_per_chunk;
        const int64_t count = first + a->rows_per_chunk < a->nnz ? a->rows_per_chunk : a->nnz - first;
        float *acc = a->partials + c * a->cols;
        memset(acc, 0, (size_t)a->cols * sizeof(float));
        add_rows(a->wt, a->dtype, a->h, a->index + first, count, a->cols, acc);
    }
}

/* Floats of partial sums sparse_vecmat needs for a given number of columns. */
static int64_t sparse_partial_floats(int64_t cols) { return SPARSE_CHUNKS * cols; }

/* index: the non-zero positions of h, nnz of them; partials: sparse_partial_floats(cols). */
static void sparse_vecmat(const void *wt, int dtype, const float *h, const int64_t *index, int64_t nnz,
                          int64_t cols, float *y, float *partials, int nthreads) {
    int64_t rows_per_chunk = (nnz + SPARSE_CHUNKS - 1) / SPARSE_CHUNKS;
    if (rows_per_chunk < SPARSE_MIN_ROWS) rows_per_chunk = SPARSE_MIN_ROWS;
    const int64_t chunks = (nnz + rows_per_chunk - 1) / rows_per_chunk;
    sparse_args args = {wt, dtype, h, index, cols, nnz, rows_per_chunk, partials};
    parallel_for(sparse_range, &args, chunks, 1, nthreads);
    memset(y, 0, (size_t)cols * sizeof(float));
    for (int64_t c = 0; c < chunks; c++)
        for (int64_t i = 0; i < cols; i++) y[i] += partials[c * cols + i];
}

/* scratch: int64[inner] for the index, then float[SPARSE_CHUNKS * cols] of partial sums.
 * For a quantized dtype, wt is a qmat_t. */
void rwkv_sparse_vecmat(const void *wt, int dtype, const float *h, float *y, int64_t inner,
                        int64_t cols, int64_t *scratch, int nthreads) {
    int64_t nnz = 0;
    for (int64_t j = 0; j < inner; j++)
        if (h[j] != 0.0f) scratch[nnz++] = j;
    sparse_vecmat(wt, dtype, h, scratch, nnz, cols, y, (float *)(scratch + inner), nthreads);
}

int64_t rwkv_sparse_scratch_bytes(int64_t inner, int64_t cols) {
    return inner * (int64_t)sizeof(int64_t) + sparse_partial_floats(cols) * (int64_t)sizeof(float);
}

/*
 * The RWKV-7 WKV recurrence over T tokens for every head, fp32 throughout.
 * state: [H][N value][N key], read from state_in and written to state_out (may alias).
 * r, w, k, v, a, b, y: [T][H*N]; w is the decay multiplier itself (in (0, 1)).
 *   S ← S·diag(w) + (S·a) bᵀ + v kᵀ;  y = S·r   (rows: value index, columns: key index)
 */
typedef struct {
    int64_t T, H, N;
    const float *state_in;
    float *state_out;
    const float *r, *w, *k, *v, *a, *b;
    float *y;
} wkv_args;

static void wkv_range(const void *ctx, int64_t begin, int64_t end) {
    const wkv_args *p = ctx;
    const int64_t T = p->T, N = p->N, C = p->H * p->N;
    const float *state_in = p->state_in, *r = p->r, *w = p->w, *k = p->k, *v = p->v, *a = p->a, *b = p->b;
    float *state_out = p->state_out, *y = p->y;
    for (int64_t h = begin; h < end; h++) {
        float *S = state_out + h * N * N;
        if (state_out != state_in) memcpy(S, state_in + h * N * N, (size_t)(N * N) * sizeof(float));
        for (int64_t t = 0; t < T; t++) {
            const int64_t o = t * C + h * N;
            const float *rt = r + o, *wt = w + o, *kt = k + o, *at = a + o, *bt = b + o;
            for (int64_t i = 0; i < N; i++) {
                float *row = S + i * N;
                float sa = 0.0f;
#pragma omp simd reduction(+ : sa)
                for (int64_t j = 0; j < N; j++) sa += row[j] * at[j];
                const float vi = v[o + i];
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t j = 0; j < N; j++) {
                    float s = row[j] * wt[j] + sa * bt[j] + vi * kt[j];
                    row[j] = s;
                    acc += s * rt[j];
                }
                y[o + i] = acc;
            }
        }
    }
}

void rwkv_wkv7(int64_t T, int64_t H, int64_t N, const float *state_in, float *state_out,
               const float *r, const float *w, const float *k, const float *v, const float *a,
               const float *b, float *y, int nthreads) {
    wkv_args args = {T, H, N, state_in, state_out, r, w, k, v, a, b, y};
    parallel_for(wkv_range, &args, H, 1, nthreads);
}


/*
 * One-token decoding of the whole model in one call.
 *
 * Decoding a token costs a few dozen large matrix-vector products, which the kernels above
 * stream at memory speed, and several hundred tiny vector operations (norms, mixes,
 * activations, LoRA chains), which cost microseconds each as separate torch calls: together
 * those took 40 % of a 0.1B decode step. Here they are plain loops between the products, and
 * independent products of a layer share one parallel job, so a layer waits on its helpers
 * six times instead of once per operation.
 */
typedef struct {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    const float *mix;                      /* (6, C): token-shift coefficients r, w, k, v, a, g */
    const float *w0, *a0, *v0;             /* (C); v0 is NULL on layer 0 */
    const void *w1t, *a1t, *v1t, *g1t;     /* LoRA down projections, stored (rank, C) */
    const void *w2t, *a2t, *v2t, *g2t;     /* LoRA up projections, stored (C, rank) */
    const float *k_k, *k_a, *r_k;
    const void *receptance, *key, *value, *output; /* (C, C) */
    const float *lnx_w, *lnx_b;
    const float *ffn_mix;
    const void *ffn_key;                   /* (F, C) */
    const void *ffn_value_t;               /* (F, C): the value matrix transposed */
} decode_layer_t;

typedef struct {
    int64_t n_layer, C, H, N, F, vocab, dw, da, dv, dg;
    int dtype;                             /* of head and the (C, C) / (F, C) matrices */
    int lora_dtype;
    int emb_dtype;                         /* quantized weights are qmat_t descriptors */
    const void *emb;                       /* (vocab, C) */
    const float *ln0_w, *ln0_b, *ln_out_w, *ln_out_b;
    const void *head;                      /* (vocab, C) */
    const decode_layer_t *layers;
} decode_model_t;

static void layer_norm(const float *x, const float *w, const float *b, float *y, int64_t n, float eps) {
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
    const float inv = (float)(1.0 / sqrt(var / (double)n + eps)), m = (float)mean;
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) * inv * w[i] + b[i];
}

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Floats of scratch rwkv_decode needs (its int64 index included). */
int64_t rwkv_decode_scratch_floats(const decode_model_t *m) {
    const int64_t C = m->C;
    const int64_t ranks = m->dw + m->da + m->dv + m->dg;
    return 19 * C + 7 * SPLIT_FLOATS(C) + 2 * ranks + 4 * SPLIT_FLOATS(0) + 4 * m->F +
           sparse_partial_floats(C) + 64;
}

#define DECAY_SCALE 0.6065306597126334f /* exp(-0.5) */

/*
 * Logits of one token and the state after it. The state is read from *_in and written to
 * *_out, which must not alias them (a forward pass never mutates the state it was given).
 */
void rwkv_decode(const decode_model_t *m, int64_t token, const float *att_in, const float *wkv_in,
                 const float *ffn_in, float *att_out, float *wkv_out, float *ffn_out, float *logits,
                 float *scratch, int nthreads) {
    const int64_t C = m->C, H = m->H, N = m->N, F = m->F;
    const int64_t S = SPLIT_FLOATS(C), ranks = m->dw + m->da + m->dv + m->dg;
    float *x = scratch, *xn = x + C, *mixed = xn + C, *split = mixed + 6 * C;
    float *r = split + 7 * S, *k = r + C, *v = k + C, *uw = v + C, *ua = uw + C, *uv = ua + C;
    float *ug = uv + C, *kk = ug + C, *v_first = kk + C, *y = v_first + C, *out = y + C;
    float *down = out + C, *down_split = down + ranks;
    float *hidden = down_split + ranks + 4 * SPLIT_FLOATS(0);
    int64_t *index = (int64_t *)(hidden + F + ((hidden - scratch + F) & 1));
    float *partials = (float *)(index + F);
    float *dw = down, *da = dw + m->dw, *dv = da + m->da, *dg = dv + m->dv;
    float *dw_s = down_split, *da_s = dw_s + SPLIT_FLOATS(m->dw), *dv_s = da_s + SPLIT_FLOATS(m->da);
    float *dg_s = dv_s + SPLIT_FLOATS(m->dv);
    float *xr = mixed, *xw = mixed + C, *xk = mixed + 2 * C, *xv = mixed + 3 * C;
    float *xa = mixed + 4 * C, *xg = mixed + 5 * C;
    mv_task tasks[8];

    if (is_quantized(m->emb_dtype)) {
        qdequant_row(m->emb, m->emb_dtype, token, x, C);
    } else {
        for (int64_t i = 0; i < C; i++) x[i] = load_weight(m->emb, m->emb_dtype, token * C + i);
    }
    layer_norm(x, m->ln0_w, m->ln0_b, x, C, 1e-5f);

    for (int64_t l = 0; l < m->n_layer; l++) {
        const decode_layer_t *L = &m->layers[l];
        const int residual = L->v0 != NULL;

        /* time mix: token shift, then every product that depends only on the shifted inputs */
        layer_norm(x, L->ln1_w, L->ln1_b, xn, C, 1e-5f);
        const float *prev = att_in + l * C;
        for (int j = 0; j < 6; j++)
            for (int64_t i = 0; i < C; i++) mixed[j * C + i] = xn[i] + (prev[i] - xn[i]) * L->mix[j * C + i];
        memcpy(att_out + l * C, xn, (size_t)C * sizeof(float));
        int n = 0;
        tasks[n++] = make_task(L->receptance, m->dtype, xr, split, r, C, C);
        tasks[n++] = make_task(L->key, m->dtype, xk, split + 2 * S, k, C, C);
        tasks[n++] = make_task(L->value, m->dtype, xv, split + 3 * S, v, C, C);
        tasks[n++] = make_task(L->w1t, m->lora_dtype, xw, split + S, dw, m->dw, C);
        tasks[n++] = make_task(L->a1t, m->lora_dtype, xa, split + 4 * S, da, m->da, C);
        tasks[n++] = make_task(L->g1t, m->lora_dtype, xg, split + 5 * S, dg, m->dg, C);
        if (residual)
            tasks[n++] = make_task(L->v1t, m->lora_dtype, xv, split + 6 * S, dv, m->dv, C);
        run_matvecs(tasks, n, nthreads);

        for (int64_t i = 0; i < m->dw; i++) dw[i] = tanhf(dw[i]);
        for (int64_t i = 0; i < m->dg; i++) dg[i] = sigmoidf(dg[i]);
        n = 0;
        tasks[n++] = make_task(L->w2t, m->lora_dtype, dw, dw_s, uw, C, m->dw);
        tasks[n++] = make_task(L->a2t, m->lora_dtype, da, da_s, ua, C, m->da);
        tasks[n++] = make_task(L->g2t, m->lora_dtype, dg, dg_s, ug, C, m->dg);
        if (residual) tasks[n++] = make_task(L->v2t, m->lora_dtype, dv, dv_s, uv, C, m->dv);
        run_matvecs(tasks, n, nthreads);

        /* decay w (into uw), in-context learning rate a (into ua), key removal kk, new k and v */
        for (int64_t i = 0; i < C; i++) {
            uw[i] = expf(-DECAY_SCALE * sigmoidf(L->w0[i] + uw[i]));
            ua[i] = sigmoidf(L->a0[i] + ua[i]);
            kk[i] = k[i] * L->k_k[i];
        }
        for (int64_t h = 0; h < H; h++) {
            double sum = 0.0;
            for (int64_t j = 0; j < N; j++) sum += (double)kk[h * N + j] * kk[h * N + j];
            float norm = (float)sqrt(sum);
            const float scale = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
            for (int64_t j = 0; j < N; j++) kk[h * N + j] *= scale;
        }
        for (int64_t i = 0; i < C; i++) k[i] *= 1.0f + (ua[i] - 1.0f) * L->k_a[i];
        if (!residual) {
            memcpy(v_first, v, (size_t)C * sizeof(float));
        } else {
            for (int64_t i = 0; i < C; i++) v[i] += (v_first[i] - v[i]) * sigmoidf(L->v0[i] + uv[i]);
        }

        /* the WKV recurrence with a = -kk, b = kk * iclr; reuse xw/xa (no longer needed) */
        for (int64_t i = 0; i < C; i++) {
            xw[i] = -kk[i];
            xa[i] = kk[i] * ua[i];
        }
        wkv_args wargs = {1, H, N, wkv_in + l * H * N * N, wkv_out + l * H * N * N, r, uw, k, v, xw, xa, y};
        parallel_for(wkv_range, &wargs, H, 1, H * N * N >= 32768 ? nthreads : 1);

        /* per-head group norm, the bonus term r·(k∘r_k)·v, and the gate */
        for (int64_t h = 0; h < H; h++) {
            float *yh = y + h * N;
            double mean = 0.0, var = 0.0, bonus = 0.0;
            for (int64_t j = 0; j < N; j++) mean += yh[j];
            mean /= (double)N;
            for (int64_t j = 0; j < N; j++) var += ((double)yh[j] - mean) * ((double)yh[j] - mean);
            const float inv = (float)(1.0 / sqrt(var / (double)N + 64e-5)), mu = (float)mean;
            for (int64_t j = 0; j < N; j++) bonus += (double)r[h * N + j] * k[h * N + j] * L->r_k[h * N + j];
            for (int64_t j = 0; j < N; j++) {
                const int64_t i = h * N + j;
                yh[j] = ((yh[j] - mu) * inv * L->lnx_w[i] + L->lnx_b[i] + (float)bonus * v[i]) * ug[i];
            }
        }
        tasks[0] = make_task(L->output, m->dtype, y, split, out, C, C);
        run_matvecs(tasks, 1, nthreads);
        for (int64_t i = 0; i < C; i++) x[i] += out[i];

        /* channel mix: squared-ReLU key, then only the value rows its non-zero outputs select */
        layer_norm(x, L->ln2_w, L->ln2_b, xn, C, 1e-5f);
        const float *fprev = ffn_in + l * C;
        for (int64_t i = 0; i < C; i++) mixed[i] = xn[i] + (fprev[i] - xn[i]) * L->ffn_mix[i];
        memcpy(ffn_out + l * C, xn, (size_t)C * sizeof(float));
        tasks[0] = make_task(L->ffn_key, m->dtype, mixed, split, hidden, F, C);
        run_matvecs(tasks, 1, nthreads);
        int64_t nnz = 0;
        for (int64_t j = 0; j < F; j++) {
            const float hj = hidden[j] > 0.0f ? hidden[j] * hidden[j] : 0.0f;
            hidden[j] = hj;
            if (hj != 0.0f) index[nnz++] = j;
        }
        sparse_vecmat(L->ffn_value_t, m->dtype, hidden, index, nnz, C, out, partials, nthreads);
        for (int64_t i = 0; i < C; i++) x[i] += out[i];
    }

    layer_norm(x, m->ln_out_w, m->ln_out_b, xn, C, 1e-5f);
    tasks[0] = make_task(m->head, m->dtype, xn, split, logits, m->vocab, C);
    run_matvecs(tasks, 1, nthreads);
}

/*
 * Per layer of a WKV state: the sum of squares of cur and of cur - prev, in one pass.
 * The state inspector follows how much the state moves on every generated token; as three
 * torch reductions over the 2.3 MB state of a 0.1B model that cost 6 % of a decode step.
 * Partial sums are fp32 over runs of 1024 values, then added in double.
 */
void rwkv_layer_change(const float *cur, const float *prev, int64_t layers, int64_t per_layer,
                       double *cur_squares, double *delta_squares) {
    for (int64_t l = 0; l < layers; l++) {
        const float *c = cur + l * per_layer, *p = prev + l * per_layer;
        double total_c = 0.0, total_d = 0.0;
        for (int64_t start = 0; start < per_layer; start += 1024) {
            const int64_t end = start + 1024 < per_layer ? start + 1024 : per_layer;
            float sum_c = 0.0f, sum_d = 0.0f;
#pragma omp simd reduction(+ : sum_c, sum_d)
            for (int64_t i = start; i < end; i++) {
                const float d = c[i] - p[i];
                sum_c += c[i] * c[i];
                sum_d += d * d;
            }
            total_c += sum_c;
            total_d += sum_d;
        }
        cur_squares[l] = total_c;
        delta_squares[l] = total_d;
    }
}

/* Version tag checked by the loader so a stale cached library is never used. */
int rwkv_native_abi(void) { return 9; }
