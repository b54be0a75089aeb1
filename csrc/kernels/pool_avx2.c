/* pool_avx2.c: the 2x2 max-pooling window of pool_lanes.h (max4_lanes) on AVX2 lanes, 8
 * floats (int32 indices) or 4 doubles (int64 indices) at a time, called by pool.c and
 * conv.c only after fnn_cpu_max_isa() reported AVX2. Compiled twice, FNN_PREC=32/64, with
 * -mavx2. Reference: max4_lanes itself (FASTNN_ISA=generic); the same rule, so the same
 * results bit for bit (the tests compare both ISAs with the reference, NaN and ties). */
#include <immintrin.h>

#include "fnn_real.h"
#include "pool_lanes.h"

/* y[c], argmax[c] for c < n: the first of p[0][c], ..., p[3][c] that no later one beats
 * (larger, or the first NaN), and its e[k] + c. In lanes: v beats the best where !(v <=
 * best) (true when either is NaN) and the best is not NaN: one compare fewer than
 * take_lanes' (v > best) | (isnan(v) & !isnan(best)), the same mask. */
void FNN(max4_avx2)(int64_t n, const real *const p[4], const lane_idx e[4], real *y,
                    int64_t *argmax)
{
    int64_t c = 0;
#if FNN_PREC == 32
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (; c + 8 <= n; c += 8) {
        __m256 bv = _mm256_loadu_ps(p[0] + c);
        __m256 bi = _mm256_castsi256_ps(_mm256_set1_epi32(e[0]));
        for (int k = 1; k < 4; k++) {
            const __m256 v = _mm256_loadu_ps(p[k] + c);
            const __m256 t = _mm256_and_ps(_mm256_cmp_ps(v, bv, _CMP_NLE_UQ),
                                           _mm256_cmp_ps(bv, bv, _CMP_ORD_Q));
            bv = _mm256_blendv_ps(bv, v, t);
            bi = _mm256_blendv_ps(bi, _mm256_castsi256_ps(_mm256_set1_epi32(e[k])), t);
        }
        _mm256_storeu_ps(y + c, bv);
        /* indices are in [0, LANE_IDX_MAX]: widen with zeros */
        const __m256i idx = _mm256_add_epi32(_mm256_castps_si256(bi),
                                             _mm256_add_epi32(_mm256_set1_epi32((int)c), lane));
        _mm256_storeu_si256((__m256i *)(argmax + c),
                            _mm256_cvtepu32_epi64(_mm256_castsi256_si128(idx)));
        _mm256_storeu_si256((__m256i *)(argmax + c + 4),
                            _mm256_cvtepu32_epi64(_mm256_extracti128_si256(idx, 1)));
    }
#else
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    for (; c + 4 <= n; c += 4) {
        __m256d bv = _mm256_loadu_pd(p[0] + c);
        __m256d bi = _mm256_castsi256_pd(_mm256_set1_epi64x(e[0]));
        for (int k = 1; k < 4; k++) {
            const __m256d v = _mm256_loadu_pd(p[k] + c);
            const __m256d t = _mm256_and_pd(_mm256_cmp_pd(v, bv, _CMP_NLE_UQ),
                                            _mm256_cmp_pd(bv, bv, _CMP_ORD_Q));
            bv = _mm256_blendv_pd(bv, v, t);
            bi = _mm256_blendv_pd(bi, _mm256_castsi256_pd(_mm256_set1_epi64x(e[k])), t);
        }
        _mm256_storeu_pd(y + c, bv);
        _mm256_storeu_si256((__m256i *)(argmax + c),
                            _mm256_add_epi64(_mm256_castpd_si256(bi),
                                             _mm256_add_epi64(_mm256_set1_epi64x(c), lane)));
    }
#endif
    if (c < n) { /* the last channels: the portable rule */
        const real *q[4] = {p[0] + c, p[1] + c, p[2] + c, p[3] + c};
        const lane_idx f[4] = {e[0], e[1], e[2], e[3]};
        max4_lanes(n - c, q, f, y + c, argmax + c);
        for (int64_t j = c; j < n; j++)
            argmax[j] += c;
    }
}
