/* gemm_dot_avx512.c: the dot-product kernel of gemm.c's dot path (contract: fnn_internal.h,
 * fnn_ukr_dot) on AVX-512 lanes, for products with few columns: each element of C a dot
 * product along k in the VL = 16 float or 8 double lanes (lane p mod VL, one FMA each, in
 * the order of p), then across the lanes by a fixed tree; 4 rows x 4 columns or 8 rows x 2
 * columns of C per pass (16 accumulators; 4 A and 4 B, or 8 A and 2 B vectors per 16
 * FMAs). Its B^T comes from dot_pack (one
 * gather per VL rows of a column). The loops are gemm_dot_body.h's (shared with
 * gemm_dot_avx2.c); this file gives the ISA's parts. Called by gemm.c only after
 * fnn_cpu_max_isa() reported AVX-512. Compiled twice, FNN_PREC=32/64, with -mavx512f.
 * Reference: fnn_gemm_ref (the same product; its sums in the order of p, so the tests
 * compare to a tolerance). */
#include "fnn_real.h"
#include "vec_avx512.h"

#define PASS 8 /* rows per pass: 16 accumulators of the 32 registers */
#define DOT_QUADS 1 /* passes of 4 columns first (gemm_dot_body.h) */

/* What gemm_dot_body.h asks of an ISA beyond vec_avx512.h: the tree across lanes, the
 * store of a vector of sums, the gather of a column. */
#if FNN_PREC == 32
/* The 16 accumulators to one vector: lane l the sum of x[l]'s 16 lanes (pairs of lanes,
 * then of pairs, then of the four 128-bit blocks). */
FNN_ALWAYS_INLINE void lane_sums(const vec x[2 * PASS], vec s[2])
{
    vec t[8], u[4], q[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        t[i] = vadd(_mm512_unpacklo_ps(x[2 * i], x[2 * i + 1]),
                    _mm512_unpackhi_ps(x[2 * i], x[2 * i + 1]));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        u[i] = vadd(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44),
                    _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0xEE));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++)
        q[i] = vadd(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0x88),
                    _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0xDD));
    s[0] = vadd(_mm512_shuffle_f32x4(q[0], q[1], 0x88), _mm512_shuffle_f32x4(q[0], q[1], 0xDD));
}

/* VL / 2 rows x 2 columns from s: 128-bit block b holds rows 2b and 2b + 1. */
FNN_ALWAYS_INLINE void store_pairs(vec s, real *c, int64_t ldc)
{
    /* (the block index must be a constant: a loop variable is one only once unrolled,
     * and an -O0 build does not compile) */
    const __m128 x[4] = {_mm512_extractf32x4_ps(s, 0), _mm512_extractf32x4_ps(s, 1),
                         _mm512_extractf32x4_ps(s, 2), _mm512_extractf32x4_ps(s, 3)};
#pragma GCC unroll 4
    for (int b = 0; b < 4; b++) {
        _mm_storel_pi((__m64 *)(c + 2 * b * ldc), x[b]);
        _mm_storeh_pi((__m64 *)(c + (2 * b + 1) * ldc), x[b]);
    }
}

/* VL / 4 rows x 4 columns from s: 128-bit block b holds row b. */
FNN_ALWAYS_INLINE void store_quads(vec s, real *c, int64_t ldc)
{
    _mm_storeu_ps(c, _mm512_extractf32x4_ps(s, 0));
    _mm_storeu_ps(c + ldc, _mm512_extractf32x4_ps(s, 1));
    _mm_storeu_ps(c + 2 * ldc, _mm512_extractf32x4_ps(s, 2));
    _mm_storeu_ps(c + 3 * ldc, _mm512_extractf32x4_ps(s, 3));
}

/* A column's VL elements from b down, at offsets idx (row * ldb). */
typedef __m512i offsets;
FNN_ALWAYS_INLINE vec gather_col(const real *b, offsets idx)
{
    return _mm512_i32gather_ps(idx, b, (int)sizeof(real));
}

FNN_ALWAYS_INLINE offsets row_offsets(int64_t ldb)
{
    return _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32((int)ldb));
}
#else
/* The 16 accumulators to two vectors, the same tree on 8 lanes: s[0] from x[0..7] (rows
 * 0-3), s[1] from x[8..15] (rows 4-7). */
FNN_ALWAYS_INLINE void lane_sums(const vec x[2 * PASS], vec s[2])
{
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const vec *y = x + 8 * h;
        vec t[4], q[2];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            t[i] = vadd(_mm512_unpacklo_pd(y[2 * i], y[2 * i + 1]),
                        _mm512_unpackhi_pd(y[2 * i], y[2 * i + 1]));
#pragma GCC unroll 2
        for (int i = 0; i < 2; i++)
            q[i] = vadd(_mm512_shuffle_f64x2(t[2 * i], t[2 * i + 1], 0x88),
                        _mm512_shuffle_f64x2(t[2 * i], t[2 * i + 1], 0xDD));
        s[h] = vadd(_mm512_shuffle_f64x2(q[0], q[1], 0x88),
                    _mm512_shuffle_f64x2(q[0], q[1], 0xDD));
    }
}

/* VL / 2 rows x 2 columns from s: 128-bit block b holds row b. */
FNN_ALWAYS_INLINE void store_pairs(vec s, real *c, int64_t ldc)
{
    const __m512 f = _mm512_castpd_ps(s);   /* (constant block indices: see the float one) */
    const __m128 x[4] = {_mm512_extractf32x4_ps(f, 0), _mm512_extractf32x4_ps(f, 1),
                         _mm512_extractf32x4_ps(f, 2), _mm512_extractf32x4_ps(f, 3)};
#pragma GCC unroll 4
    for (int b = 0; b < 4; b++)
        _mm_storeu_pd(c + b * ldc, _mm_castps_pd(x[b]));
}

/* VL / 4 rows x 4 columns from s: 256-bit half h holds row h. */
FNN_ALWAYS_INLINE void store_quads(vec s, real *c, int64_t ldc)
{
    _mm256_storeu_pd(c, _mm512_castpd512_pd256(s));
    _mm256_storeu_pd(c + ldc, _mm512_extractf64x4_pd(s, 1));
}

typedef __m256i offsets;
FNN_ALWAYS_INLINE vec gather_col(const real *b, offsets idx)
{
    return _mm512_i32gather_pd(idx, b, (int)sizeof(real));
}

FNN_ALWAYS_INLINE offsets row_offsets(int64_t ldb)
{
    return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                              _mm256_set1_epi32((int)ldb));
}
#endif

#include "gemm_dot_body.h"
