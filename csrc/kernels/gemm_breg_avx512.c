/* gemm_breg_avx512.c: float products with a short K (1 .. FNN_BREG_MAX_K) with B held in
 * registers. This file alone is compiled with -mavx512f -mfma -mprfchw; its function is only
 * called on the ISA ids with AVX-512F (FNN_ISA_AVX512 and FNN_ISA_AVX512_256,
 * gemm_kernels.c). Contract: fnn_internal.h (fnn_ukr_breg_f32).
 *
 * A panel of B (k x 32 columns: 2k zmm registers, at most 20) is loaded once and stays in
 * registers while the rows of A stream past it, four at a time: per row, k broadcasts of A
 * feed 2k FMAs into two accumulators, and the row of C is stored once, finished (alpha,
 * beta, bias, relu applied in registers). A tile kernel instead reloads B every k step of
 * every tile and, with K = 9, spends as much on the tile's start and stores as on its
 * FMAs. Each element sums its products in the order p = 0, 1, ..., k - 1 with one FMA each
 * from a zeroed accumulator: the other kernels' sums, the same bits. The zmm vectors are
 * used on AMD Zen 4 too (FNN_ISA_AVX512_256, whose GEMM tiles are otherwise 256-bit): a
 * 512-bit broadcast serves twice the FMAs of a 256-bit one. In a bare harness on the Zen 4
 * VM (2026-12-06, 86528 x 9 x 32, medians of 15), 1 thread: 451-457 us (109-110 GFLOPS,
 * the FMA-only loop's 114) against 590-618 us for 6 x 16 ymm tiles with K a constant, B in
 * 18 ymm registers 480-495 us, 6 x 32 zmm tiles loading B 537-556 us; 2 threads 241-247 us
 * against 309-339 (ymm, B in registers).
 * K is a run-time value: the k loop runs to FNN_BREG_MAX_K and leaves at p == K (a
 * predictable branch per k step of four rows). One function per K (40 with the panel
 * widths and the plain finish) took 10 times the code (330 KB) and 52 s to compile under
 * the sanitizers, and measured (in-process A/B, 2 threads, medians of 41) 0.96-1.01x the
 * time at K = 9 and 10 with 32 or more columns, 0.90-0.98x with K 3 and 5, and 1.10-1.16x
 * with 16 columns, where this one runs faster.
 * Reference: kernels/gemm_ukr_ref.c's sums (gemm.c's fnn_gemm_ref in the tests). */
#include <immintrin.h>
#include <math.h>

#include "fnn_internal.h"

#define R2 4  /* rows per step on a two-vector panel (8 accumulators) */
#define R1 8  /* on a one-vector panel (n <= 16) */
/* Rows per block when B has several panels (the block's rows for each panel in turn).
 * In-process A/B on the Zen 4 VM (2026-12-06, 2 threads, medians of 41, one function per
 * K then) against 64: 32 measured 0.98-1.07x the time; 16 (C's rows 16 ahead) 0.71-0.77x
 * on 5000 x 8 x 784 but 1.03-1.21x on 2000 x 10 x 1000, 20000 x 9 x 64 and 86528 x 9 x 32;
 * about 32 KB of C per block (8 rows of 784 or 1000 columns, 128 of 64) 0.75x and
 * 1.20-1.45x on those two. */
#define RB 64
#define W_MAX 32
/* Ownership of C's lines (prefetchw) is asked this many rows ahead, in the panel being
 * written and within this call's rows (another thread's rows are not touched). A short K
 * writes C faster than the lines arrive: in a bare harness (Zen 4 VM, 2026-12-06, 2
 * threads, medians of 21), 5000 x 8 x 768 took 1243-1317 us without, 577-642 us with 32
 * rows (16: 618-770), 20000 x 4 x 128 about the same either way. */
#define PF_ROWS 32

/* What each finished row of C gets (fnn_ukr_breg_f32's arguments), as vectors: no bias is
 * a bias of -0.0 (x + -0.0 is x, -0.0 and NaN included) and the identity a relu whose
 * floor is -inf (max(-inf, x) is x), so the finish has one branch, on beta. */
typedef struct {
    __m512 alpha, beta, floor;
    int beta_nz, stream;
    const float *cbias; /* the column bias (axis 1), or NULL */
    const float *rbias; /* the row bias (axis 0) from the call's first row, or NULL */
} finish_t;

static const float neg_zero = -0.0f;

/* Row i's vector v (columns j .. j + 15 of the panel) of C at cp: alpha * acc (+ beta * C)
 * (+ bias) (relu), the operations of gemm.c's store and epilogue in their order, then
 * stored (masked to the panel's columns unless full; non-temporal if o->stream). plain:
 * alpha 1, beta 0, no bias, no relu (known at compile time): acc as it is. bias: the
 * column bias (-0.0 for none) and the row's. */
FNN_ALWAYS_INLINE void put(int plain, __m512 acc, float *cp, __mmask16 m, int full,
                           const finish_t *o, __m512 cbias, __m512 rbias)
{
    __m512 v = acc;
    if (!plain) {
        v = _mm512_mul_ps(o->alpha, v);
        if (o->beta_nz)
            v = _mm512_fmadd_ps(o->beta,
                                full ? _mm512_loadu_ps(cp) : _mm512_maskz_loadu_ps(m, cp), v);
        v = _mm512_add_ps(_mm512_add_ps(v, cbias), rbias);
        /* floor > v ? floor : v: relu (floor 0) keeps NaN and -0.0, as epilogue.c's
         * v < 0 ? 0 : v */
        v = _mm512_max_ps(o->floor, v);
    }
    if (!full)
        _mm512_mask_storeu_ps(cp, m, v);
    else if (o->stream)
        _mm512_stream_ps(cp, v);
    else
        _mm512_storeu_ps(cp, v);
}

/* RR rows of A (a, row stride lda) times the panel bv[K][NV] into C's rows (c, ldc); cb0,
 * cb1 the panel's column bias, rb the rows' row bias (rb_step 1) or one -0.0 (rb_step 0). */
FNN_ALWAYS_INLINE void rows_step(int K, int NV, int plain, int RR, const float *a,
                                 int64_t lda, const __m512 bv[][2], float *c, int64_t ldc,
                                 __mmask16 m0, __mmask16 m1, int full, const finish_t *o,
                                 __m512 cb0, __m512 cb1, const float *rb, int64_t rb_step)
{
    __m512 acc[R1][2];
#pragma GCC unroll 8
    for (int i = 0; i < RR; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
#pragma GCC unroll 10
    for (int p = 0; p < FNN_BREG_MAX_K; p++) {
        if (p == K)
            break;
#pragma GCC unroll 8
        for (int i = 0; i < RR; i++) {
            const __m512 av = _mm512_set1_ps(a[i * lda + p]);
            acc[i][0] = _mm512_fmadd_ps(av, bv[p][0], acc[i][0]);
            if (NV == 2)
                acc[i][1] = _mm512_fmadd_ps(av, bv[p][1], acc[i][1]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < RR; i++) {
        const __m512 rbias = plain ? cb0 : _mm512_set1_ps(rb[i * rb_step]);
        put(plain, acc[i][0], c + i * ldc, m0, full, o, cb0, rbias);
        if (NV == 2)
            put(plain, acc[i][1], c + i * ldc + 16, m1, full, o, cb1, rbias);
    }
}

/* C's rows [0, rows) x columns [0, n) (fnn_ukr_breg_f32) on panels of NV vectors (NV and
 * plain known at compile time, K at run time). */
FNN_ALWAYS_INLINE void breg_body(int K, int NV, int plain, int64_t rows, int64_t n,
                                 const float *a, int64_t lda, const float *b, int64_t rsb,
                                 int64_t csb, const finish_t *opt, float *c, int64_t ldc)
{
    const int W = 16 * NV;
    const int64_t npan = (n + W - 1) / W;
    const finish_t fin = *opt; /* a copy the stores to C cannot change: kept in registers */
    const finish_t *o = &fin;
    const int64_t rb_rows = npan == 1 ? rows : RB;
    _Alignas(64) float packed[FNN_BREG_MAX_K * W_MAX]; /* a panel of a transposed B */
    for (int64_t r0 = 0; r0 < rows; r0 += rb_rows) {
        const int64_t nrows = rows - r0 < rb_rows ? rows - r0 : rb_rows;
        const float *ar = a + r0 * lda;
        for (int64_t jp = 0; jp < npan; jp++) {
            const int64_t j0 = jp * W;
            const int w = (int)(n - j0 < W ? n - j0 : W), full = w == W;
            const __mmask16 m0 = (__mmask16)(w >= 16 ? 0xFFFF : (1u << w) - 1);
            const __mmask16 m1 = (__mmask16)(w >= 32 ? 0xFFFF : w > 16 ? (1u << (w - 16)) - 1
                                                                        : 0);
            if (csb != 1)
                for (int p = 0; p < K; p++)
                    for (int j = 0; j < w; j++)
                        packed[p * W + j] = b[p * rsb + (j0 + j) * csb];
            /* B's rows K .. FNN_BREG_MAX_K - 1: zeros, not read (an empty mask), not used;
             * every index a constant, so the panel lives in registers */
            __m512 bv[FNN_BREG_MAX_K][2];
#pragma GCC unroll 10
            for (int p = 0; p < FNN_BREG_MAX_K; p++) {
                const float *bp = p >= K ? b : csb == 1 ? b + p * rsb + j0 : packed + p * W;
                bv[p][0] = _mm512_maskz_loadu_ps(p < K ? m0 : 0, bp);
                bv[p][1] = NV == 2 ? _mm512_maskz_loadu_ps(p < K ? m1 : 0, bp + 16) : bv[p][0];
            }
            __m512 cb0 = _mm512_set1_ps(-0.0f), cb1 = cb0;
            if (!plain && o->cbias) {
                cb0 = _mm512_maskz_loadu_ps(m0, o->cbias + j0);
                if (NV == 2)
                    cb1 = _mm512_maskz_loadu_ps(m1, o->cbias + j0 + 16);
            }
            const float *rb = o->rbias ? o->rbias + r0 : &neg_zero;
            const int64_t rb_step = o->rbias ? 1 : 0;
            float *cr = c + r0 * ldc + j0;
            const int RR = NV == 2 ? R2 : R1;
            /* rows of this block whose rows PF_ROWS further down are still this call's */
            const int64_t pf_end = o->stream ? 0 : rows - r0 - PF_ROWS;
            int64_t i = 0;
            for (; i + RR <= nrows; i += RR) {
                if (i + RR <= pf_end)
#pragma GCC unroll 8
                    for (int r = 0; r < RR; r++)
                        fnn_prefetch_write(1, cr + (i + PF_ROWS + r) * ldc, 4 * W);
                rows_step(K, NV, plain, RR, ar + i * lda, lda, bv, cr + i * ldc, ldc, m0, m1,
                          full, o, cb0, cb1, rb + i * rb_step, rb_step);
            }
            for (; i < nrows; i++)
                rows_step(K, NV, plain, 1, ar + i * lda, lda, bv, cr + i * ldc, ldc, m0, m1,
                          full, o, cb0, cb1, rb + i * rb_step, rb_step);
        }
    }
}

typedef void (*body_fn)(int K, int64_t rows, int64_t n, const float *a, int64_t lda,
                        const float *b, int64_t rsb, int64_t csb, const finish_t *o, float *c,
                        int64_t ldc);

/* One function per panel width and plain. */
#define BREG_FN(NV, plain)                                                                 \
    static void breg_##NV##_##plain(int K, int64_t rows, int64_t n, const float *a,        \
                                    int64_t lda, const float *b, int64_t rsb, int64_t csb, \
                                    const finish_t *o, float *c, int64_t ldc)              \
    {                                                                                      \
        breg_body(K, NV, plain, rows, n, a, lda, b, rsb, csb, o, c, ldc);                  \
    }
BREG_FN(1, 0)
BREG_FN(1, 1)
BREG_FN(2, 0)
BREG_FN(2, 1)
/* [2 * (NV - 1) + plain] */
static const body_fn bodies[4] = {breg_1_0, breg_1_1, breg_2_0, breg_2_1};

/* fnn_ukr_breg_f32 (contract: fnn_internal.h): panels of 16 columns for n <= 16, else 32
 * (a last narrower panel masked). */
void fnn_breg_avx512_f32(int64_t rows, int64_t n, int64_t k, float alpha, const float *a,
                         int64_t lda, const float *b, int64_t rsb, int64_t csb, float beta,
                         const float *bias, int axis, int relu, int stream, float *c,
                         int64_t ldc)
{
    if (rows <= 0 || n <= 0 || k < 1 || k > FNN_BREG_MAX_K)
        return;
    const finish_t o = {.alpha = _mm512_set1_ps(alpha),
                        .beta = _mm512_set1_ps(beta),
                        .floor = _mm512_set1_ps(relu ? 0.0f : -INFINITY),
                        .beta_nz = beta != 0,
                        .stream = stream && (uintptr_t)c % 64 == 0 && ldc % 16 == 0,
                        .cbias = axis == 1 ? bias : NULL,
                        .rbias = axis == 1 ? NULL : bias};
    const int plain = alpha == 1 && beta == 0 && !bias && !relu;
    const int nv = n <= 16 ? 1 : 2;
    bodies[2 * (nv - 1) + plain]((int)k, rows, n, a, lda, b, rsb, csb, &o, c, ldc);
    if (o.stream)
        _mm_sfence();
}
