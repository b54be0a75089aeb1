/* gemm_ukr_avx2.c: AVX2+FMA micro-kernels. This file alone is compiled with -mavx2 -mfma;
 * its functions are only called after fnn_cpu_max_isa() reported AVX2 and FMA.
 * Contract: fnn_internal.h. Register tile: 6 rows x 2 vectors = 12 accumulators.
 * Reference: kernels/gemm_ukr_ref.c. */
#include <immintrin.h>

#include "fma_loop.h"
#include "fnn_internal.h"

#include "gemm_avx2_tiles.h"

/* The tile loop with A(i, p) at a[p*as + i]: the packed kernel inlines it with as = MR,
 * the strided kernel with the caller's stride. B is prefetched 1 KB ahead (the first
 * tile of each micro-panel reads it from L3) and A 16 steps ahead: in-process A/B on 2
 * threads, 1024^3 0.96-0.98x the time, 128x1600x128 0.94-0.98x, 2048^3 0.99x; the same
 * for the double kernel changed nothing, so it has none. */
static inline void body_6x16_f32(int64_t k, const float *a, int64_t as, const float *bp,
                                 float *c, int64_t ldc, float alpha, float beta)
{
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(float));
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        _mm_prefetch((const char *)(bp + 256), _MM_HINT_T0);
        _mm_prefetch((const char *)(a + 16 * as), _MM_HINT_T0);
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const __m256 av = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
        a += as;
        bp += 16;
    }
    store_6x16_f32(acc, c, ldc, alpha, beta);
}

static inline void store_6x8_f64(__m256d acc[MR][2], double *c, int64_t ldc, double alpha,
                                 double beta)
{
    const __m256d va = _mm256_set1_pd(alpha);
    if (beta == 0) {
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            _mm256_storeu_pd(c + i * ldc, _mm256_mul_pd(va, acc[i][0]));
            _mm256_storeu_pd(c + i * ldc + 4, _mm256_mul_pd(va, acc[i][1]));
        }
    } else {
        const __m256d vb = _mm256_set1_pd(beta);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            double *ci = c + i * ldc;
            _mm256_storeu_pd(ci, _mm256_fmadd_pd(vb, _mm256_loadu_pd(ci),
                                                 _mm256_mul_pd(va, acc[i][0])));
            _mm256_storeu_pd(ci + 4, _mm256_fmadd_pd(vb, _mm256_loadu_pd(ci + 4),
                                                     _mm256_mul_pd(va, acc[i][1])));
        }
    }
}

static inline void body_6x8_f64(int64_t k, const double *a, int64_t as, const double *bp,
                                double *c, int64_t ldc, double alpha, double beta)
{
    __m256d acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_pd();
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(double));
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        const __m256d b0 = _mm256_loadu_pd(bp), b1 = _mm256_loadu_pd(bp + 4);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const __m256d av = _mm256_broadcast_sd(a + i);
            acc[i][0] = _mm256_fmadd_pd(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_pd(av, b1, acc[i][1]);
        }
        a += as;
        bp += 8;
    }
    store_6x8_f64(acc, c, ldc, alpha, beta);
}

void fnn_ukr_avx2_6x16_f32(int64_t k, const float *ap, const float *bp, float *c, int64_t ldc,
                           float alpha, float beta)
{
    body_6x16_f32(k, ap, MR, bp, c, ldc, alpha, beta);
}

void fnn_ukr_avx2_6x8_f64(int64_t k, const double *ap, const double *bp, double *c,
                          int64_t ldc, double alpha, double beta)
{
    body_6x8_f64(k, ap, MR, bp, c, ldc, alpha, beta);
}

/* The packed tile on its first R (1 or 2) rows only (the edge tile of C's last rows): the
 * same accumulation per element as the full tile, into C (row stride ldc, beta = 0,
 * alpha = 1). */
FNN_ALWAYS_INLINE void rows_f32(int R, int64_t k, const float *ap, const float *bp, float *c,
                                int64_t ldc)
{
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < R; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
#pragma GCC unroll 6
        for (int i = 0; i < R; i++) {
            const __m256 av = _mm256_broadcast_ss(ap + i);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
        ap += MR;
        bp += 16;
    }
    for (int i = 0; i < R; i++) {
        _mm256_storeu_ps(c + i * ldc, acc[i][0]);
        _mm256_storeu_ps(c + i * ldc + 8, acc[i][1]);
    }
}

FNN_ALWAYS_INLINE void rows_f64(int R, int64_t k, const double *ap, const double *bp,
                                double *c, int64_t ldc)
{
    __m256d acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < R; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_pd();
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        const __m256d b0 = _mm256_loadu_pd(bp), b1 = _mm256_loadu_pd(bp + 4);
#pragma GCC unroll 6
        for (int i = 0; i < R; i++) {
            const __m256d av = _mm256_broadcast_sd(ap + i);
            acc[i][0] = _mm256_fmadd_pd(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_pd(av, b1, acc[i][1]);
        }
        ap += MR;
        bp += 8;
    }
    for (int i = 0; i < R; i++) {
        _mm256_storeu_pd(c + i * ldc, acc[i][0]);
        _mm256_storeu_pd(c + i * ldc + 4, acc[i][1]);
    }
}

/* The row-edge variants (contract: fnn_internal.h): 1 or 2 rows with a constant row count
 * per case, so the accumulators stay in registers; 3-5 rows as the full tile (3-5 rows
 * this way were slower than the full tile: 34 x 784 x 128 float 1.07-1.10x time,
 * 35 x 784 x 128 1.15x; 1 and 2 rows 0.94-0.95x). */
void fnn_ukr_avx2_rows_6x16_f32(int rows, int64_t k, const float *ap, const float *bp,
                                float *c, int64_t ldc)
{
    if (rows == 1)
        rows_f32(1, k, ap, bp, c, ldc);
    else if (rows == 2)
        rows_f32(2, k, ap, bp, c, ldc);
    else
        body_6x16_f32(k, ap, MR, bp, c, ldc, 1, 0);
}

void fnn_ukr_avx2_rows_6x8_f64(int rows, int64_t k, const double *ap, const double *bp,
                               double *c, int64_t ldc)
{
    if (rows == 1)
        rows_f64(1, k, ap, bp, c, ldc);
    else if (rows == 2)
        rows_f64(2, k, ap, bp, c, ldc);
    else
        body_6x8_f64(k, ap, MR, bp, c, ldc, 1, 0);
}

/* The strided variants (contract: fnn_internal.h): a transposed A read in place. */
void fnn_ukr_avx2_strided_6x16_f32(int64_t k, const float *a, int64_t as, const float *bp,
                                   float *c, int64_t ldc, float alpha, float beta)
{
    body_6x16_f32(k, a, as, bp, c, ldc, alpha, beta);
}

void fnn_ukr_avx2_strided_6x8_f64(int64_t k, const double *a, int64_t as, const double *bp,
                                  double *c, int64_t ldc, double alpha, double beta)
{
    body_6x8_f64(k, a, as, bp, c, ldc, alpha, beta);
}

/* The double tile of direct_acc_f32 (gemm_avx2_tiles.h): one panel, no `next` 2; with pk
 * (NULL: none) each A value also stored at pk[p*MR + i]. */
FNN_ALWAYS_INLINE void direct_acc_6x8_f64(__m256d acc[MR][2], int64_t k, const double *a,
                                          int64_t lda, const double *bp, int next, double *pk)
{
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_pd();
    const double *a0 = a, *a1 = a + lda, *a2 = a1 + lda, *a3 = a2 + lda, *a4 = a3 + lda,
                 *a5 = a4 + lda;
    /* next == 1: the next strip's 6 * lda values (see NEXT_MIN_K) */
    const char *pf = (const char *)(a + MR * lda);
    const int64_t stride = next == 1 ? next_stride(k, lda * (int64_t)sizeof(double)) : 0;
    if (next == 1 && !stride)
        pf = (const char *)bp;
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        if (next == 1) {
            _mm_prefetch(pf, _MM_HINT_T0);
            pf += stride;
        }
        const __m256d b0 = _mm256_loadu_pd(bp), b1 = _mm256_loadu_pd(bp + 4);
        const double *rows[MR] = {a0 + p, a1 + p, a2 + p, a3 + p, a4 + p, a5 + p};
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const __m256d av = _mm256_broadcast_sd(rows[i]);
            if (pk)
                _mm_store_sd(pk + p * MR + i, _mm256_castpd256_pd128(av));
            acc[i][0] = _mm256_fmadd_pd(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_pd(av, b1, acc[i][1]);
        }
        bp += 8;
    }
}

FNN_DIRECT_KERNEL_F32(fnn_ukr_avx2_direct_6x16_f32, 1)

/* The C rows of the strip `ahead` strips on (rows i0 + ahead*MR ..), npan micro-panels
 * wide, on their way to L1 while this strip's tiles run: the direct-A strips below. */
#define STRIPS_AHEAD 2
static inline void prefetch_strip(const char *c, int64_t ld_bytes, int64_t bytes)
{
    for (int i = 0; i < MR; i++)
        for (int64_t off = 0; off < bytes; off += 64)
            _mm_prefetch(c + i * ld_bytes + off, _MM_HINT_T0);
}

/* One strip of ukr_direct_strips: its MR rows times the npan panels, each tile stored
 * with beta == 0 (store_6x16_f32's values): non-temporal stores (nt), and alpha == 1
 * (one) without the product by alpha, x * 1 being x. Row by row through a pointer moved
 * by ldc (not ct + i * ldc, which kept five multiples of ldc in registers the k loop
 * needed: in-process A/B, Zen 4, 2026-12-05, 2 threads, medians of 41, with the case of
 * 32 columns below: 86528 x 9 x 32 0.966-0.974x the time, 20000 x 9 x 64 0.955-0.958x,
 * 20000 x 25 x 32 0.99x; 1 thread 0.959x, 0.945x, 0.997x; for double the same change
 * measured 0.98-1.02x and was not made). */
FNN_ALWAYS_INLINE void strip_6x16_f32(int64_t k, const float *a, int64_t lda, const float *bp,
                                      int64_t npan, float *c, int64_t ldc, __m256 va, int nt,
                                      int one)
{
    for (int64_t jp = 0; jp < npan; jp++) {
        __m256 acc[MR][2];
        float *ct = c + jp * 16;
        direct_acc_6x16_f32(acc, k, a, lda, bp + jp * 16 * k, 0);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const __m256 v0 = one ? acc[i][0] : _mm256_mul_ps(va, acc[i][0]);
            const __m256 v1 = one ? acc[i][1] : _mm256_mul_ps(va, acc[i][1]);
            if (nt) {
                _mm256_stream_ps(ct, v0);
                _mm256_stream_ps(ct + 8, v1);
            } else {
                _mm256_storeu_ps(ct, v0);
                _mm256_storeu_ps(ct + 8, v1);
            }
            ct += ldc;
        }
    }
}

/* ukr_direct_strips (contract: fnn_internal.h) for float: each tile as the direct kernel
 * computes it (without its A prefetch, off below NEXT_MIN_K anyway) and stores it, in
 * loops of their own for non-temporal stores, for alpha == 1 and for beta != 0 (one loop
 * testing each per tile kept GCC from holding the strip's addresses in registers: with
 * the loops apart, 86528 x 9 x 32 float 0.92x the time, 1 and 2 threads, Zen 4,
 * 2026-12-05, in-process A/B, medians of 41). On Zen 2 (2026-12-04, in-process A/B
 * against a call per tile, medians of 40, 2 threads): 86528 x 9 x 32 float 0.81-0.84x
 * the time with the prefetch two strips ahead (0.91x without), and 0.63x with
 * non-temporal stores into an aligned C (a C of 11 MB, which each product writes fresh:
 * written through the caches, each line was read first; see STREAM_MIN_BYTES, gemm.c).
 * Two panels into a C of 32 columns (a layer of 32 filters, C's rows contiguous) have a
 * case of their own, with the panels and C's row stride constants: against the loop for
 * any npan and ldc, 86528 x 9 x 32 0.977x the time, 20000 x 9 x 32 0.980x (2 threads;
 * 1 thread 0.953x, 0.973x; Zen 4, in-process A/B, medians of 31-41). */
void fnn_ukr_avx2_direct_strips_6x16_f32(int64_t k, int64_t rows, const float *a,
                                         int64_t lda, const float *bp, int64_t npan,
                                         float *c, int64_t ldc, float alpha, float beta,
                                         int stream)
{
    const int64_t ld_bytes = ldc * (int64_t)sizeof(float);
    const __m256 va = _mm256_set1_ps(alpha);
    if (beta != 0) {
        for (int64_t i0 = 0; i0 < rows; i0 += MR) {
            if (i0 + STRIPS_AHEAD * MR < rows)
                prefetch_strip((const char *)(c + (i0 + STRIPS_AHEAD * MR) * ldc), ld_bytes,
                               npan * 16 * (int64_t)sizeof(float));
            for (int64_t jp = 0; jp < npan; jp++) {
                __m256 acc[MR][2];
                direct_acc_6x16_f32(acc, k, a + i0 * lda, lda, bp + jp * 16 * k, 0);
                store_6x16_f32(acc, c + i0 * ldc + jp * 16, ldc, alpha, beta);
            }
        }
        return;
    }
    if (stream) {
        for (int64_t i0 = 0; i0 < rows; i0 += MR)
            strip_6x16_f32(k, a + i0 * lda, lda, bp, npan, c + i0 * ldc, ldc, va, 1, 0);
        _mm_sfence();
        return;
    }
    for (int64_t i0 = 0; i0 < rows; i0 += MR) {
        if (i0 + STRIPS_AHEAD * MR < rows)
            prefetch_strip((const char *)(c + (i0 + STRIPS_AHEAD * MR) * ldc), ld_bytes,
                           npan * 16 * (int64_t)sizeof(float));
        if (alpha == 1 && npan == 2 && ldc == 32)
            strip_6x16_f32(k, a + i0 * lda, lda, bp, 2, c + i0 * 32, 32, va, 0, 1);
        else if (alpha == 1)
            strip_6x16_f32(k, a + i0 * lda, lda, bp, npan, c + i0 * ldc, ldc, va, 0, 1);
        else
            strip_6x16_f32(k, a + i0 * lda, lda, bp, npan, c + i0 * ldc, ldc, va, 0, 0);
    }
}

/* The same for double (6 x 8 tiles). */
FNN_ALWAYS_INLINE void strip_6x8_f64(int64_t k, const double *a, int64_t lda, const double *bp,
                                     int64_t npan, double *c, int64_t ldc, __m256d va, int nt,
                                     int one)
{
    for (int64_t jp = 0; jp < npan; jp++) {
        __m256d acc[MR][2];
        double *ct = c + jp * 8;
        direct_acc_6x8_f64(acc, k, a, lda, bp + jp * 8 * k, 0, NULL);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const __m256d v0 = one ? acc[i][0] : _mm256_mul_pd(va, acc[i][0]);
            const __m256d v1 = one ? acc[i][1] : _mm256_mul_pd(va, acc[i][1]);
            if (nt) {
                _mm256_stream_pd(ct + i * ldc, v0);
                _mm256_stream_pd(ct + i * ldc + 4, v1);
            } else {
                _mm256_storeu_pd(ct + i * ldc, v0);
                _mm256_storeu_pd(ct + i * ldc + 4, v1);
            }
        }
    }
}

void fnn_ukr_avx2_direct_strips_6x8_f64(int64_t k, int64_t rows, const double *a,
                                        int64_t lda, const double *bp, int64_t npan,
                                        double *c, int64_t ldc, double alpha, double beta,
                                        int stream)
{
    const int64_t ld_bytes = ldc * (int64_t)sizeof(double);
    const __m256d va = _mm256_set1_pd(alpha);
    if (beta != 0) {
        for (int64_t i0 = 0; i0 < rows; i0 += MR) {
            if (i0 + STRIPS_AHEAD * MR < rows)
                prefetch_strip((const char *)(c + (i0 + STRIPS_AHEAD * MR) * ldc), ld_bytes,
                               npan * 8 * (int64_t)sizeof(double));
            for (int64_t jp = 0; jp < npan; jp++) {
                __m256d acc[MR][2];
                direct_acc_6x8_f64(acc, k, a + i0 * lda, lda, bp + jp * 8 * k, 0, NULL);
                store_6x8_f64(acc, c + i0 * ldc + jp * 8, ldc, alpha, beta);
            }
        }
        return;
    }
    if (stream) {
        for (int64_t i0 = 0; i0 < rows; i0 += MR)
            strip_6x8_f64(k, a + i0 * lda, lda, bp, npan, c + i0 * ldc, ldc, va, 1, 0);
        _mm_sfence();
        return;
    }
    for (int64_t i0 = 0; i0 < rows; i0 += MR) {
        if (i0 + STRIPS_AHEAD * MR < rows)
            prefetch_strip((const char *)(c + (i0 + STRIPS_AHEAD * MR) * ldc), ld_bytes,
                           npan * 8 * (int64_t)sizeof(double));
        if (alpha == 1)
            strip_6x8_f64(k, a + i0 * lda, lda, bp, npan, c + i0 * ldc, ldc, va, 0, 1);
        else
            strip_6x8_f64(k, a + i0 * lda, lda, bp, npan, c + i0 * ldc, ldc, va, 0, 0);
    }
}

/* fnn_ukr_avx2_direct_6x8_f64 for a K block shorter than A's rows (no prefetch: see
 * NEXT_MIN_K), its own function as for float. */
FNN_NOINLINE void direct_6x8_f64_blocked(int64_t k, const double *a, int64_t lda,
                                         const double *bp, double *c, int64_t ldc,
                                         double alpha, double beta)
{
    __m256d acc[MR][2];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(double));
    direct_acc_6x8_f64(acc, k, a, lda, bp, 0, NULL);
    store_6x8_f64(acc, c, ldc, alpha, beta);
}

void fnn_ukr_avx2_direct_6x8_f64(int64_t k, const double *a, int64_t lda, const double *bp,
                                 double *c, int64_t ldc, double alpha, double beta)
{
    if (k + 8 < lda) {
        direct_6x8_f64_blocked(k, a, lda, bp, c, ldc, alpha, beta);
        return;
    }
    __m256d acc[MR][2];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(double));
    direct_acc_6x8_f64(acc, k, a, lda, bp, 1, NULL);
    store_6x8_f64(acc, c, ldc, alpha, beta);
}

/* The direct-A packing kernel (ukr_direct_pack, fnn_internal.h): the direct tile without
 * the next strip's prefetch (gemm.c calls it on a strip's first tile, the strip's other
 * tiles reading the panel it packs), each A value also stored at ap[p*MR + i]. In-process
 * A/B against a packing pass (Zen 4 VM with the AVX2 kernels, 2026-12-06, medians of
 * 15-21): double 500 x 784 x 128 0.95x the time on 2 threads, 0.93x on 1, 1024^3 and
 * 2048^3 0.99x; the same for float (6 x 16) gained nothing (1024^3 0.99-1.00x, 500 x 784
 * x 128 1.01-1.03x), so float keeps its SSE-transposing packing pass. */
void fnn_ukr_avx2_direct_pack_6x8_f64(int64_t k, const double *a, int64_t lda,
                                      const double *bp, double *c, int64_t ldc, double alpha,
                                      double beta, double *ap)
{
    __m256d acc[MR][2];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(double));
    direct_acc_6x8_f64(acc, k, a, lda, bp, 0, ap);
    store_6x8_f64(acc, c, ldc, alpha, beta);
}

/* The in-place variants (contract: fnn_internal.h): A and B both read in place, the first
 * R rows and `cols` columns of the tile, B's and C's other columns masked off (vmaskmov:
 * masked-off lanes are neither read nor written). The accumulation of the direct-A
 * kernel; R is a constant per case, so the accumulators stay in registers. FULL (all NR
 * columns, a constant per case too) reads and writes with plain moves: on Zen 2 the masked
 * ones cost 1.4-1.5x the time of a whole product (in-process A/B, 1 thread, 2026-12-04:
 * 32x784x128 float 143 -> 104 us, 128x784x128 504 -> 330 us). */
FNN_ALWAYS_INLINE void inplace_f32(int R, int FULL, int64_t k, const float *a, int64_t lda,
                                   const float *b, int64_t ldb, const __m256i mk[2], float *c,
                                   int64_t ldc, float alpha, float beta)
{
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < R; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(float));
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        _mm_prefetch((const char *)(b + 8 * ldb), _MM_HINT_T0);
        const __m256 b0 = FULL ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, mk[0]);
        const __m256 b1 = FULL ? _mm256_loadu_ps(b + 8) : _mm256_maskload_ps(b + 8, mk[1]);
#pragma GCC unroll 6
        for (int i = 0; i < R; i++) {
            const __m256 av = _mm256_broadcast_ss(a + i * lda + p);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
        b += ldb;
    }
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < R; i++)
        for (int v = 0; v < 2; v++) {
            float *ci = c + i * ldc + 8 * v;
            __m256 r = _mm256_mul_ps(va, acc[i][v]);
            if (beta != 0) {
                const __m256 cv = FULL ? _mm256_loadu_ps(ci) : _mm256_maskload_ps(ci, mk[v]);
                r = _mm256_fmadd_ps(vb, cv, r);
            }
            if (FULL)
                _mm256_storeu_ps(ci, r);
            else
                _mm256_maskstore_ps(ci, mk[v], r);
        }
}

FNN_ALWAYS_INLINE void inplace_f64(int R, int FULL, int64_t k, const double *a, int64_t lda,
                                   const double *b, int64_t ldb, const __m256i mk[2],
                                   double *c, int64_t ldc, double alpha, double beta)
{
    __m256d acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < R; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_pd();
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(double));
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        _mm_prefetch((const char *)(b + 8 * ldb), _MM_HINT_T0);
        const __m256d b0 = FULL ? _mm256_loadu_pd(b) : _mm256_maskload_pd(b, mk[0]);
        const __m256d b1 = FULL ? _mm256_loadu_pd(b + 4) : _mm256_maskload_pd(b + 4, mk[1]);
#pragma GCC unroll 6
        for (int i = 0; i < R; i++) {
            const __m256d av = _mm256_broadcast_sd(a + i * lda + p);
            acc[i][0] = _mm256_fmadd_pd(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_pd(av, b1, acc[i][1]);
        }
        b += ldb;
    }
    const __m256d va = _mm256_set1_pd(alpha), vb = _mm256_set1_pd(beta);
#pragma GCC unroll 6
    for (int i = 0; i < R; i++)
        for (int v = 0; v < 2; v++) {
            double *ci = c + i * ldc + 4 * v;
            __m256d r = _mm256_mul_pd(va, acc[i][v]);
            if (beta != 0) {
                const __m256d cv = FULL ? _mm256_loadu_pd(ci) : _mm256_maskload_pd(ci, mk[v]);
                r = _mm256_fmadd_pd(vb, cv, r);
            }
            if (FULL)
                _mm256_storeu_pd(ci, r);
            else
                _mm256_maskstore_pd(ci, mk[v], r);
        }
}

#define INPLACE_CASES(F)                                                                    \
    switch (rows) {                                                                         \
    case 1: F(1); break;                                                                    \
    case 2: F(2); break;                                                                    \
    case 3: F(3); break;                                                                    \
    case 4: F(4); break;                                                                    \
    case 5: F(5); break;                                                                    \
    default: F(6); break;                                                                   \
    }

void fnn_ukr_avx2_inplace_6x16_f32(int rows, int cols, int64_t k, const float *a, int64_t lda,
                                   const float *b, int64_t ldb, float *c, int64_t ldc,
                                   float alpha, float beta)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mk[2] = {_mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lane),
                           _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - 8), lane)};
#define F(R)                                                                                \
    if (cols == 16)                                                                         \
        inplace_f32(R, 1, k, a, lda, b, ldb, mk, c, ldc, alpha, beta);                      \
    else                                                                                    \
        inplace_f32(R, 0, k, a, lda, b, ldb, mk, c, ldc, alpha, beta)
    INPLACE_CASES(F)
#undef F
}

void fnn_ukr_avx2_inplace_6x8_f64(int rows, int cols, int64_t k, const double *a, int64_t lda,
                                  const double *b, int64_t ldb, double *c, int64_t ldc,
                                  double alpha, double beta)
{
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    const __m256i mk[2] = {_mm256_cmpgt_epi64(_mm256_set1_epi64x(cols), lane),
                           _mm256_cmpgt_epi64(_mm256_set1_epi64x(cols - 4), lane)};
#define F(R)                                                                                \
    if (cols == 8)                                                                          \
        inplace_f64(R, 1, k, a, lda, b, ldb, mk, c, ldc, alpha, beta);                      \
    else                                                                                    \
        inplace_f64(R, 0, k, a, lda, b, ldb, mk, c, ldc, alpha, beta)
    INPLACE_CASES(F)
#undef F
}

void fnn_ukr_avx2_scatter_6x16_f32(int64_t k, const float *a, int64_t lda, const float *bp,
                                   float *const *crow)
{
    __m256 acc[MR][2];
    direct_acc_6x16_f32(acc, k, a, lda, bp, 0);
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        float *ci = crow[i];
        _mm256_storeu_ps(ci, _mm256_add_ps(_mm256_loadu_ps(ci), acc[i][0]));
        _mm256_storeu_ps(ci + 8, _mm256_add_ps(_mm256_loadu_ps(ci + 8), acc[i][1]));
    }
}

void fnn_ukr_avx2_scatter_6x8_f64(int64_t k, const double *a, int64_t lda, const double *bp,
                                  double *const *crow)
{
    __m256d acc[MR][2];
    direct_acc_6x8_f64(acc, k, a, lda, bp, 0, NULL);
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        double *ci = crow[i];
        _mm256_storeu_pd(ci, _mm256_add_pd(_mm256_loadu_pd(ci), acc[i][0]));
        _mm256_storeu_pd(ci + 4, _mm256_add_pd(_mm256_loadu_pd(ci + 4), acc[i][1]));
    }
}

/* The gather kernels' epilogue on the accumulators: acc = act(acc + bias), v + b then
 * (relu) v < 0 ? 0 : v as a mask (NaN and -0.0 compare false: kept), the operations of
 * fnn_bias_act_block. In registers, before the store: applied afterwards, it read the
 * tile back through the store buffer and cost as much as the product for a 3x3x1
 * convolution (perf: 28% in bias_act_block). */
static inline void epilogue_6x16_f32(__m256 acc[MR][2], const float *bias, int relu)
{
    if (bias) {
        const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            acc[i][0] = _mm256_add_ps(acc[i][0], b0);
            acc[i][1] = _mm256_add_ps(acc[i][1], b1);
        }
    }
    if (relu) {
        const __m256 z = _mm256_setzero_ps();
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++)
            for (int h = 0; h < 2; h++)
                acc[i][h] =
                    _mm256_andnot_ps(_mm256_cmp_ps(acc[i][h], z, _CMP_LT_OQ), acc[i][h]);
    }
}

static inline void epilogue_6x8_f64(__m256d acc[MR][2], const double *bias, int relu)
{
    if (bias) {
        const __m256d b0 = _mm256_loadu_pd(bias), b1 = _mm256_loadu_pd(bias + 4);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            acc[i][0] = _mm256_add_pd(acc[i][0], b0);
            acc[i][1] = _mm256_add_pd(acc[i][1], b1);
        }
    }
    if (relu) {
        const __m256d z = _mm256_setzero_pd();
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++)
            for (int h = 0; h < 2; h++)
                acc[i][h] =
                    _mm256_andnot_pd(_mm256_cmp_pd(acc[i][h], z, _CMP_LT_OQ), acc[i][h]);
    }
}

/* The gather variants (contract: fnn_internal.h): A(i, p) = rows[i][off[p]], an implicit
 * im2col; the same accumulation order as the packed kernel, so the same bits. */
void fnn_ukr_avx2_gather_6x16_f32(int64_t k, const float *const *rows, const int64_t *off,
                                  const float *bp, int64_t ldb, const float *bias, int relu,
                                  float beta, float *c, int64_t ldc)
{
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4],
                *r5 = rows[5];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(float));
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        const int64_t o = off[p];
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
        const float *src[MR] = {r0 + o, r1 + o, r2 + o, r3 + o, r4 + o, r5 + o};
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const __m256 av = _mm256_broadcast_ss(src[i]);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
        bp += ldb;
    }
    epilogue_6x16_f32(acc, bias, relu);
    store_6x16_f32(acc, c, ldc, 1, beta);
}

void fnn_ukr_avx2_gather_6x8_f64(int64_t k, const double *const *rows, const int64_t *off,
                                 const double *bp, int64_t ldb, const double *bias, int relu,
                                 double beta, double *c, int64_t ldc)
{
    __m256d acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_pd();
    const double *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4],
                 *r5 = rows[5];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(double));
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        const int64_t o = off[p];
        const __m256d b0 = _mm256_loadu_pd(bp), b1 = _mm256_loadu_pd(bp + 4);
        const double *src[MR] = {r0 + o, r1 + o, r2 + o, r3 + o, r4 + o, r5 + o};
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const __m256d av = _mm256_broadcast_sd(src[i]);
            acc[i][0] = _mm256_fmadd_pd(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_pd(av, b1, acc[i][1]);
        }
        bp += ldb;
    }
    epilogue_6x8_f64(acc, bias, relu);
    store_6x8_f64(acc, c, ldc, 1, beta);
}

/* The micro-kernel's arithmetic ceiling: its 12 accumulators (6 rows x 2 vectors), FMA
 * alone (fma_loop.h). Benchmark probe (fnn_fma_peak, gemm_kernels.c), not a kernel. */
FNN_FMA_LOOP(fnn_fma_loop_avx2_f32, float, __m256, _mm256_set1_ps, _mm256_fmadd_ps,
             _mm256_cvtss_f32, MR)
FNN_FMA_LOOP(fnn_fma_loop_avx2_f64, double, __m256d, _mm256_set1_pd, _mm256_fmadd_pd,
             _mm256_cvtsd_f64, MR)

/* B's micro-panels from a row-major B whose panel rows are 64 bytes (NR = 16 float, 8
 * double: the AVX2 kernels' panels): npan whole panels of kc rows, row p of panel jp from
 * b + p * rsb_bytes + 64 * jp to bp + jp * pan_bytes + 64 * p (overwritten; a copy, so
 * the same bits in either precision). Four rows of B at a time, so each panel receives 256
 * contiguous bytes per visit, and the next four rows' lines prefetched. Against
 * pack_rows' memcpy per row piece (a harness packing 256 x 512 floats of a 1024-wide B, 1
 * thread, Zen 2, medians of 40): 16.5-17 vs 41.6-47 us with B in cache, 77-81 vs 147 us
 * from memory. (Two rows at a time, the panels one after the other, or prefetching 8-16
 * rows ahead: slower.) */
void fnn_pack_rows64_avx2(int64_t kc, int64_t npan, const void *b, int64_t rsb_bytes,
                          void *bp, int64_t pan_bytes)
{
    const char *src = b;
    char *dst = bp;
    const int64_t kc4 = kc - kc % 4;
    for (int64_t p = 0; p < kc4; p += 4) {
        const char *s = src + p * rsb_bytes;
        for (int64_t jp = 0; jp < npan; jp++) {
            char *d = dst + jp * pan_bytes + p * 64;
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                const char *sr = s + r * rsb_bytes + jp * 64;
                _mm_prefetch(sr + 4 * rsb_bytes, _MM_HINT_T0);
                const __m256 x = _mm256_loadu_ps((const float *)sr),
                             y = _mm256_loadu_ps((const float *)(sr + 32));
                _mm256_storeu_ps((float *)(d + r * 64), x);
                _mm256_storeu_ps((float *)(d + r * 64 + 32), y);
            }
        }
    }
    for (int64_t p = kc4; p < kc; p++) {
        const char *s = src + p * rsb_bytes;
        for (int64_t jp = 0; jp < npan; jp++) {
            char *d = dst + jp * pan_bytes + p * 64;
            _mm256_storeu_ps((float *)d, _mm256_loadu_ps((const float *)(s + jp * 64)));
            _mm256_storeu_ps((float *)(d + 32), _mm256_loadu_ps((const float *)(s + jp * 64 + 32)));
        }
    }
}
