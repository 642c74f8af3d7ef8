/*
 * CPU kernels for single-sequence RWKV-7 inference.
 *
 * Decoding one token on a CPU is bound by how fast weights stream from memory, and torch's
 * bf16 matrix-vector product is slower than fp32 on CPUs without native bf16 arithmetic.
 * These kernels read bf16/fp16/fp32 weights in their stored (out, in) layout, widen them to
 * fp32 in registers, and accumulate in fp32, so bf16 weights cost half the memory traffic of
 * fp32 at fp32 accuracy of the arithmetic.
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
#endif

enum { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2 };

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
    const void *w;
    int dtype;
    const float *x, *x_even, *x_odd;
    float *y;
    int64_t rows, cols;
} matvec_args;

static void matvec_range(const void *ctx, int64_t begin, int64_t end) {
    const matvec_args *a = ctx;
    for (int64_t b = begin; b < end; b++) {
        int64_t row0 = b * ROWS;
        int64_t n = a->rows - row0 < ROWS ? a->rows - row0 : ROWS;
        matvec_block(a->w, a->dtype, a->x, a->x_even, a->x_odd, a->y, row0, n, a->cols);
    }
}

/* y[rows] = W[rows, cols] · x[cols]. x_even/x_odd: x[0::2] and x[1::2] (used for bf16). */
void rwkv_matvec(const void *w, int dtype, const float *x, const float *x_even, const float *x_odd,
                 float *y, int64_t rows, int64_t cols, int nthreads) {
    matvec_args args = {w, dtype, x, x_even, x_odd, y, rows, cols};
    const int64_t blocks = (rows + ROWS - 1) / ROWS;
    /* About 128 KB of weights per chunk: big enough to amortise claiming, small enough to balance. */
    int64_t chunk = (131072 / (cols * (dtype == DT_F32 ? 4 : 2))) / ROWS;
    parallel_for(matvec_range, &args, blocks, chunk, nthreads);
}

/*
 * y[cols] = h[inner] · Wt[inner, cols], skipping rows where h is zero.
 * The channel-mix of RWKV-7 squares a ReLU, so most of h is exactly zero and the rows of the
 * value matrix they would select need never be read. Threads split the output columns so no
 * reduction between threads is needed.
 */
typedef struct {
    const void *wt;
    int dtype;
    const float *h;
    float *y;
    int64_t cols, nnz;
    const int64_t *index;
} sparse_args;

static void sparse_range(const void *ctx, int64_t begin, int64_t end) {
    const sparse_args *args = ctx;
    const void *wt = args->wt;
    const int dtype = args->dtype;
    const float *h = args->h;
    const int64_t cols = args->cols, nnz = args->nnz;
    const int64_t *scratch_index = args->index;
    float *y = args->y;
    for (int64_t c = begin; c < end; c++) {
        const int64_t c0 = c * 64, c1 = c0 + 64 < cols ? c0 + 64 : cols;
        float acc[64];
        for (int64_t i = 0; i < c1 - c0; i++) acc[i] = 0.0f;
        for (int64_t n = 0; n < nnz; n++) {
            const int64_t j = scratch_index[n];
            const float hj = h[j];
            const int64_t base = j * cols + c0;
#ifdef RWKV_AVX2
            if (c1 - c0 == 64) {
                __m256 hv = _mm256_set1_ps(hj);
                for (int64_t i = 0; i < 64; i += 8) {
                    __m256 a = _mm256_loadu_ps(acc + i);
                    _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(load8(wt, dtype, base + i), hv, a));
                }
                continue;
            }
#endif
            for (int64_t i = 0; i < c1 - c0; i++) acc[i] += hj * load_weight(wt, dtype, base + i);
        }
        memcpy(y + c0, acc, (size_t)(c1 - c0) * sizeof(float));
    }
}

void rwkv_sparse_vecmat(const void *wt, int dtype, const float *h, float *y, int64_t inner,
                        int64_t cols, int64_t *scratch_index, int nthreads) {
    int64_t nnz = 0;
    for (int64_t j = 0; j < inner; j++)
        if (h[j] != 0.0f) scratch_index[nnz++] = j;
    sparse_args args = {wt, dtype, h, y, cols, nnz, scratch_index};
    parallel_for(sparse_range, &args, (cols + 63) / 64, 1, nthreads);
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

/* Version tag checked by the loader so a stale cached library is never used. */
int rwkv_native_abi(void) { return 4; }
