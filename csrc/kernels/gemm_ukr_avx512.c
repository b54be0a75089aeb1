/* gemm_ukr_avx512.c: AVX-512F micro-kernels. This file alone is compiled with
 * -mavx512f -mfma; its functions are only called after fnn_cpu_max_isa() reported AVX-512.
 * Contract: fnn_internal.h (full MR x NR tile, beta == 0 overwrites C without reading it).
 * Register tile: 12 rows x 2 vectors = 24 accumulators, 2 B vectors, 1 broadcast of A
 * (27 of the 32 zmm registers). The packed, strided (transposed A in place), direct-A (row-
 * major A in place) and row-edge variants; the convolutions' gather and scatter kernels are
 * AVX2 only (gemm_kernels.c). Every variant sums each element's products in the order
 * p = 0, 1, ..., k-1 with one FMA each, as the AVX2 and reference kernels do.
 * Reference: kernels/gemm_ukr_ref.c. */
#include <immintrin.h>

#include "fnn_internal.h"

#define MR 12

/* Start loading the C tile (MR rows of 128 bytes, perhaps straddling three lines) while
 * the k loop runs, so the store at its end does not wait for memory (as in the AVX2
 * kernels). */
static inline void prefetch_tile(const char *c, int64_t ld_bytes)
{
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        _mm_prefetch(c + i * ld_bytes, _MM_HINT_T0);
        _mm_prefetch(c + i * ld_bytes + 64, _MM_HINT_T0);
        _mm_prefetch(c + i * ld_bytes + 127, _MM_HINT_T0);
    }
}

/* C tile = alpha * acc + beta * C for the first R rows (beta == 0: C is not read). */
static inline void store_f32(int R, __m512 acc[MR][2], float *c, int64_t ldc, float alpha,
                             float beta)
{
    const __m512 va = _mm512_set1_ps(alpha);
    if (beta == 0) {
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            _mm512_storeu_ps(c + i * ldc, _mm512_mul_ps(va, acc[i][0]));
            _mm512_storeu_ps(c + i * ldc + 16, _mm512_mul_ps(va, acc[i][1]));
        }
    } else {
        const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            float *ci = c + i * ldc;
            _mm512_storeu_ps(ci, _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci),
                                                 _mm512_mul_ps(va, acc[i][0])));
            _mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16),
                                                      _mm512_mul_ps(va, acc[i][1])));
        }
    }
}

static inline void store_f64(int R, __m512d acc[MR][2], double *c, int64_t ldc, double alpha,
                             double beta)
{
    const __m512d va = _mm512_set1_pd(alpha);
    if (beta == 0) {
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            _mm512_storeu_pd(c + i * ldc, _mm512_mul_pd(va, acc[i][0]));
            _mm512_storeu_pd(c + i * ldc + 8, _mm512_mul_pd(va, acc[i][1]));
        }
    } else {
        const __m512d vb = _mm512_set1_pd(beta);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            double *ci = c + i * ldc;
            _mm512_storeu_pd(ci, _mm512_fmadd_pd(vb, _mm512_loadu_pd(ci),
                                                 _mm512_mul_pd(va, acc[i][0])));
            _mm512_storeu_pd(ci + 8, _mm512_fmadd_pd(vb, _mm512_loadu_pd(ci + 8),
                                                     _mm512_mul_pd(va, acc[i][1])));
        }
    }
}

/* The accumulation of R rows with A(i, p) at a[p*as + i] (as = MR: a packed panel; as =
 * lda: a transposed A read in place). B is prefetched 2 KB ahead (the first tile of each
 * micro-panel reads it from L2 or L3) and A 16 steps ahead. */
FNN_ALWAYS_INLINE void acc_f32(int R, __m512 acc[MR][2], int64_t k, const float *a,
                               int64_t as, const float *bp)
{
#pragma GCC unroll 12
    for (int i = 0; i < R; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        _mm_prefetch((const char *)(bp + 512), _MM_HINT_T0);
        _mm_prefetch((const char *)(a + 16 * as), _MM_HINT_T0);
        const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            const __m512 av = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
        }
        a += as;
        bp += 32;
    }
}

FNN_ALWAYS_INLINE void acc_f64(int R, __m512d acc[MR][2], int64_t k, const double *a,
                               int64_t as, const double *bp)
{
#pragma GCC unroll 12
    for (int i = 0; i < R; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_pd();
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        _mm_prefetch((const char *)(bp + 256), _MM_HINT_T0);
        _mm_prefetch((const char *)(a + 8 * as), _MM_HINT_T0);
        const __m512d b0 = _mm512_loadu_pd(bp), b1 = _mm512_loadu_pd(bp + 8);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            const __m512d av = _mm512_set1_pd(a[i]);
            acc[i][0] = _mm512_fmadd_pd(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_pd(av, b1, acc[i][1]);
        }
        a += as;
        bp += 16;
    }
}

void fnn_ukr_avx512_12x32_f32(int64_t k, const float *ap, const float *bp, float *c,
                              int64_t ldc, float alpha, float beta)
{
    __m512 acc[MR][2];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(float));
    acc_f32(MR, acc, k, ap, MR, bp);
    store_f32(MR, acc, c, ldc, alpha, beta);
}

void fnn_ukr_avx512_12x16_f64(int64_t k, const double *ap, const double *bp, double *c,
                              int64_t ldc, double alpha, double beta)
{
    __m512d acc[MR][2];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(double));
    acc_f64(MR, acc, k, ap, MR, bp);
    store_f64(MR, acc, c, ldc, alpha, beta);
}

/* The strided variants (contract: fnn_internal.h): a transposed A read in place. */
void fnn_ukr_avx512_strided_12x32_f32(int64_t k, const float *a, int64_t as, const float *bp,
                                      float *c, int64_t ldc, float alpha, float beta)
{
    __m512 acc[MR][2];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(float));
    acc_f32(MR, acc, k, a, as, bp);
    store_f32(MR, acc, c, ldc, alpha, beta);
}

void fnn_ukr_avx512_strided_12x16_f64(int64_t k, const double *a, int64_t as,
                                      const double *bp, double *c, int64_t ldc, double alpha,
                                      double beta)
{
    __m512d acc[MR][2];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(double));
    acc_f64(MR, acc, k, a, as, bp);
    store_f64(MR, acc, c, ldc, alpha, beta);
}

/* The row-edge variants (contract: fnn_internal.h): the first 1 or 2 rows of a packed
 * tile, a constant row count per case so the accumulators stay in registers. */
void fnn_ukr_avx512_rows_12x32_f32(int rows, int64_t k, const float *ap, const float *bp,
                                   float *c, int64_t ldc)
{
    __m512 acc[MR][2];
    if (rows == 1) {
        acc_f32(1, acc, k, ap, MR, bp);
        store_f32(1, acc, c, ldc, 1, 0);
    } else {
        acc_f32(2, acc, k, ap, MR, bp);
        store_f32(2, acc, c, ldc, 1, 0);
    }
}

void fnn_ukr_avx512_rows_12x16_f64(int rows, int64_t k, const double *ap, const double *bp,
                                   double *c, int64_t ldc)
{
    __m512d acc[MR][2];
    if (rows == 1) {
        acc_f64(1, acc, k, ap, MR, bp);
        store_f64(1, acc, c, ldc, 1, 0);
    } else {
        acc_f64(2, acc, k, ap, MR, bp);
        store_f64(2, acc, c, ldc, 1, 0);
    }
}

/* The direct-A variants (contract: fnn_internal.h): A's twelve rows read in place, as two
 * groups of six sequential streams (a and a + 6*lda, each row at a multiple of lda that
 * x86 addressing reaches from a few registers). */
void fnn_ukr_avx512_direct_12x32_f32(int64_t k, const float *a, int64_t lda, const float *bp,
                                     float *c, int64_t ldc, float alpha, float beta)
{
    __m512 acc[MR][2];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(float));
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const float *lo = a, *hi = a + 6 * lda;
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        _mm_prefetch((const char *)(bp + 512), _MM_HINT_T0);
        const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const float *row = (i < 6 ? lo + i * lda : hi + (i - 6) * lda) + p;
            const __m512 av = _mm512_set1_ps(*row);
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
        }
        bp += 32;
    }
    store_f32(MR, acc, c, ldc, alpha, beta);
}

void fnn_ukr_avx512_direct_12x16_f64(int64_t k, const double *a, int64_t lda,
                                     const double *bp, double *c, int64_t ldc, double alpha,
                                     double beta)
{
    __m512d acc[MR][2];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(double));
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_pd();
    const double *lo = a, *hi = a + 6 * lda;
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        _mm_prefetch((const char *)(bp + 256), _MM_HINT_T0);
        const __m512d b0 = _mm512_loadu_pd(bp), b1 = _mm512_loadu_pd(bp + 8);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const double *row = (i < 6 ? lo + i * lda : hi + (i - 6) * lda) + p;
            const __m512d av = _mm512_set1_pd(*row);
            acc[i][0] = _mm512_fmadd_pd(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_pd(av, b1, acc[i][1]);
        }
        bp += 16;
    }
    store_f64(MR, acc, c, ldc, alpha, beta);
}
