/* gemm_ukr_avx512.c: AVX-512F micro-kernels. This file alone is compiled with
 * -mavx512f -mfma; its functions are only called after fnn_cpu_max_isa() reported AVX-512.
 * Contract: fnn_internal.h (full MR x NR tile, packed Ap/Bp, beta == 0 overwrites).
 * Register tile: 12 rows x 2 vectors = 24 accumulators, 2 B vectors, 1 broadcast of A.
 * Reference: kernels/gemm_ukr_ref.c. */
#include <immintrin.h>

#include "fnn_internal.h"

#define MR 12

void fnn_ukr_avx512_12x32_f32(int64_t k, const float *ap, const float *bp, float *c,
                              int64_t ldc, float alpha, float beta)
{
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; p++) {
        const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const __m512 av = _mm512_set1_ps(ap[i]);
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
        }
        ap += MR;
        bp += 32;
    }
    const __m512 va = _mm512_set1_ps(alpha);
    if (beta == 0) {
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            _mm512_storeu_ps(c + i * ldc, _mm512_mul_ps(va, acc[i][0]));
            _mm512_storeu_ps(c + i * ldc + 16, _mm512_mul_ps(va, acc[i][1]));
        }
    } else {
        const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            float *ci = c + i * ldc;
            _mm512_storeu_ps(ci, _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci),
                                                 _mm512_mul_ps(va, acc[i][0])));
            _mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16),
                                                      _mm512_mul_ps(va, acc[i][1])));
        }
    }
}

void fnn_ukr_avx512_12x16_f64(int64_t k, const double *ap, const double *bp, double *c,
                              int64_t ldc, double alpha, double beta)
{
    __m512d acc[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_pd();
    for (int64_t p = 0; p < k; p++) {
        const __m512d b0 = _mm512_loadu_pd(bp), b1 = _mm512_loadu_pd(bp + 8);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const __m512d av = _mm512_set1_pd(ap[i]);
            acc[i][0] = _mm512_fmadd_pd(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_pd(av, b1, acc[i][1]);
        }
        ap += MR;
        bp += 16;
    }
    const __m512d va = _mm512_set1_pd(alpha);
    if (beta == 0) {
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            _mm512_storeu_pd(c + i * ldc, _mm512_mul_pd(va, acc[i][0]));
            _mm512_storeu_pd(c + i * ldc + 8, _mm512_mul_pd(va, acc[i][1]));
        }
    } else {
        const __m512d vb = _mm512_set1_pd(beta);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            double *ci = c + i * ldc;
            _mm512_storeu_pd(ci, _mm512_fmadd_pd(vb, _mm512_loadu_pd(ci),
                                                 _mm512_mul_pd(va, acc[i][0])));
            _mm512_storeu_pd(ci + 8, _mm512_fmadd_pd(vb, _mm512_loadu_pd(ci + 8),
                                                     _mm512_mul_pd(va, acc[i][1])));
        }
    }
}
