/* gemm_dot_avx2.c: the dot-product kernel of gemm.c's dot path (contract: fnn_internal.h,
 * fnn_ukr_dot) on AVX2 lanes: gemm_dot_body.h's loops (see gemm_dot_avx512.c) with VL = 8
 * float or 4 double lanes and 4 rows x 2 columns of C per pass (8 accumulators, 4 A and 2
 * B vectors per 8 FMAs: 11 of the 16 registers; passes of 2 rows x 4 columns were 4-24%
 * slower, m = k = 128 float, n = 1-10, 2026-12-04). Called by gemm.c only after
 * fnn_cpu_max_isa() reported AVX2 and FMA. Compiled twice, FNN_PREC=32/64, with -mavx2
 * -mfma. Reference: fnn_gemm_ref (the same product; its sums in the order of p, so the tests
 * compare to a tolerance). */
#include "fnn_real.h"
#include "vec_avx2.h"

#define PASS 4 /* rows per pass: 8 accumulators */
#define DOT_QUADS 0 /* pairs of columns only */

/* What gemm_dot_body.h asks of an ISA beyond vec_avx2.h: the tree across lanes, the store
 * of a vector of sums, the gather of a column. */
#if FNN_PREC == 32
/* The 8 accumulators to one vector: lane l the sum of x[l]'s 8 lanes (pairs of lanes, then
 * of pairs, then the two 128-bit halves). */
FNN_ALWAYS_INLINE void lane_sums(const vec x[2 * PASS], vec s[2])
{
    vec t[4], u[2];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        t[i] = vadd(_mm256_unpacklo_ps(x[2 * i], x[2 * i + 1]),
                    _mm256_unpackhi_ps(x[2 * i], x[2 * i + 1]));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++)
        u[i] = vadd(_mm256_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44),
                    _mm256_shuffle_ps(t[2 * i], t[2 * i + 1], 0xEE));
    s[0] = vadd(_mm256_permute2f128_ps(u[0], u[1], 0x20),
                _mm256_permute2f128_ps(u[0], u[1], 0x31));
}

/* VL / 2 rows x 2 columns from s: 128-bit half h holds rows 2h and 2h + 1. */
FNN_ALWAYS_INLINE void store_pairs(vec s, real *c, int64_t ldc)
{
    const __m128 lo = _mm256_castps256_ps128(s), hi = _mm256_extractf128_ps(s, 1);
    _mm_storel_pi((__m64 *)c, lo);
    _mm_storeh_pi((__m64 *)(c + ldc), lo);
    _mm_storel_pi((__m64 *)(c + 2 * ldc), hi);
    _mm_storeh_pi((__m64 *)(c + 3 * ldc), hi);
}

/* A column's VL elements from b down, at offsets idx (row * ldb). */
typedef __m256i offsets;
FNN_ALWAYS_INLINE vec gather_col(const real *b, offsets idx)
{
    return _mm256_i32gather_ps(b, idx, (int)sizeof(real));
}

FNN_ALWAYS_INLINE offsets row_offsets(int64_t ldb)
{
    return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                              _mm256_set1_epi32((int)ldb));
}
#else
/* The 8 accumulators to two vectors, the same tree on 4 lanes: s[0] from x[0..3] (rows 0
 * and 1), s[1] from x[4..7] (rows 2 and 3). */
FNN_ALWAYS_INLINE void lane_sums(const vec x[2 * PASS], vec s[2])
{
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const vec *y = x + 4 * h;
        const vec t0 = vadd(_mm256_unpacklo_pd(y[0], y[1]), _mm256_unpackhi_pd(y[0], y[1]));
        const vec t1 = vadd(_mm256_unpacklo_pd(y[2], y[3]), _mm256_unpackhi_pd(y[2], y[3]));
        s[h] = vadd(_mm256_permute2f128_pd(t0, t1, 0x20), _mm256_permute2f128_pd(t0, t1, 0x31));
    }
}

/* VL / 2 rows x 2 columns from s: 128-bit half h holds row h. */
FNN_ALWAYS_INLINE void store_pairs(vec s, real *c, int64_t ldc)
{
    _mm_storeu_pd(c, _mm256_castpd256_pd128(s));
    _mm_storeu_pd(c + ldc, _mm256_extractf128_pd(s, 1));
}

typedef __m128i offsets;
FNN_ALWAYS_INLINE vec gather_col(const real *b, offsets idx)
{
    return _mm256_i32gather_pd(b, idx, (int)sizeof(real));
}

FNN_ALWAYS_INLINE offsets row_offsets(int64_t ldb)
{
    return _mm_mullo_epi32(_mm_setr_epi32(0, 1, 2, 3), _mm_set1_epi32((int)ldb));
}
#endif

#include "gemm_dot_body.h"
