/* gemm_dot_avx512.c: the dot-product kernel of gemm.c's dot path (contract: fnn_internal.h,
 * fnn_ukr_dot) on AVX-512 lanes, for products with few columns: each element of C a dot
 * product along k in the VL = 16 float or 8 double lanes (lane p mod VL, one FMA each, in
 * the order of p), then across the lanes by a fixed tree; 8 rows x 2 columns of C per pass
 * (16 accumulators, 8 A and 2 B vectors per 16 FMAs). Its B^T comes from dot_pack (one
 * gather per VL rows of a column). Called by gemm.c only after fnn_cpu_max_isa() reported
 * AVX-512. Compiled twice, FNN_PREC=32/64, with -mavx512f. Reference: fnn_gemm_ref (the
 * same product; its sums in the order of p, so the tests compare to a tolerance). */
#include "fnn_real.h"
#include "vec_avx512.h"

#define RPV (VL / 2) /* rows of C per vector of sums (lane 2r + c: row r, column c) */
#if FNN_DOT_ROWS != 8
#error "the pass below is 8 rows x 2 columns: 16 accumulators"
#endif

/* Beyond vec_avx512.h's vocabulary: the tree across lanes, the store of a vector of sums,
 * the gather of a column. */
#if FNN_PREC == 32
/* The 16 accumulators to one vector: lane l the sum of x[l]'s 16 lanes (pairs of lanes,
 * then of pairs, then of the four 128-bit blocks). */
FNN_ALWAYS_INLINE void lane_sums(const vec x[16], vec s[2])
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

/* RPV rows x 2 columns from s: 128-bit block b holds rows 2b and 2b + 1. */
FNN_ALWAYS_INLINE void store_pairs(vec s, real *c, int64_t ldc)
{
#pragma GCC unroll 4
    for (int b = 0; b < 4; b++) {
        const __m128 x = _mm512_extractf32x4_ps(s, b);
        _mm_storel_pi((__m64 *)(c + 2 * b * ldc), x);
        _mm_storeh_pi((__m64 *)(c + (2 * b + 1) * ldc), x);
    }
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
FNN_ALWAYS_INLINE void lane_sums(const vec x[16], vec s[2])
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

/* RPV rows x 2 columns from s: 128-bit block b holds row b. */
FNN_ALWAYS_INLINE void store_pairs(vec s, real *c, int64_t ldc)
{
#pragma GCC unroll 4
    for (int b = 0; b < 4; b++)
        _mm_storeu_pd(c + b * ldc,
                      _mm_castps_pd(_mm512_extractf32x4_ps(_mm512_castpd_ps(s), b)));
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

/* acc[2r + c] = the lane-wise sums of A(r, p) * B(p, j + c) over k, for R rows and the
 * columns at b0 and b1 (b1 repeats b0 when column j + 1 does not exist): whole vectors,
 * then the tail's lanes (masked: the rest load as zero). Each A vector is loaded once
 * (vkeep) for both FMAs. */
FNN_ALWAYS_INLINE void dot_acc(int R, int64_t k, const real *a, int64_t lda, const real *b0,
                               const real *b1, vec acc[16])
{
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        acc[i] = vzero();
    const int64_t kv = k - k % VL;
    for (int64_t p = 0; p < kv; p += VL) {
        const vec v0 = vload(b0 + p), v1 = vload(b1 + p);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            vec av = vload(a + r * lda + p);
            vkeep(av);
            acc[2 * r] = vfma(av, v0, acc[2 * r]);
            acc[2 * r + 1] = vfma(av, v1, acc[2 * r + 1]);
        }
    }
    if (kv < k) {
        const vmask mk = lanes_below(k - kv);
        const vec v0 = vmload(b0 + kv, mk), v1 = vmload(b1 + kv, mk);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            vec av = vmload(a + r * lda + kv, mk);
            vkeep(av);
            acc[2 * r] = vfma(av, v0, acc[2 * r]);
            acc[2 * r + 1] = vfma(av, v1, acc[2 * r + 1]);
        }
    }
}

/* R (at most RPV) rows and `cols` columns of C from s (alpha applied): a full RPV x 2
 * block with beta == 0 straight from the register, else element by element,
 * C = beta * C + s. */
FNN_ALWAYS_INLINE void dot_store(int R, int cols, vec s, real *c, int64_t ldc, real beta)
{
    if (R >= RPV && cols == 2 && beta == 0) {
        store_pairs(s, c, ldc);
        return;
    }
    real t[VL];
    vstore(t, s);
    for (int r = 0; r < R && r < RPV; r++)
        for (int j = 0; j < cols; j++) {
            real *cj = c + r * ldc + j;
            *cj = beta == 0 ? t[2 * r + j] : beta * *cj + t[2 * r + j];
        }
}

FNN_ALWAYS_INLINE void dot(int R, int64_t n, int64_t k, const real *a, int64_t lda,
                           const real *bt, int64_t ldbt, real *c, int64_t ldc, real alpha,
                           real beta)
{
    const vec va = vset1(alpha);
    for (int64_t j = 0; j < n; j += 2) {
        const int cols = n - j < 2 ? 1 : 2;
        const real *b0 = bt + j * ldbt;
        vec acc[16], s[2];
        dot_acc(R, k, a, lda, b0, cols == 2 ? b0 + ldbt : b0, acc);
        lane_sums(acc, s);
        for (int h = 0; h * RPV < R; h++)
            dot_store(R - h * RPV, cols, vmul(va, s[h]), c + h * RPV * ldc + j, ldc, beta);
    }
}

void VFN(dot)(int rows, int64_t n, int64_t k, const real *a, int64_t lda, const real *bt,
              int64_t ldbt, real *c, int64_t ldc, real alpha, real beta)
{
    switch (rows) { /* a constant row count per case: the accumulators stay in registers */
    case 1: dot(1, n, k, a, lda, bt, ldbt, c, ldc, alpha, beta); break;
    case 2: dot(2, n, k, a, lda, bt, ldbt, c, ldc, alpha, beta); break;
    case 3: dot(3, n, k, a, lda, bt, ldbt, c, ldc, alpha, beta); break;
    case 4: dot(4, n, k, a, lda, bt, ldbt, c, ldc, alpha, beta); break;
    case 5: dot(5, n, k, a, lda, bt, ldbt, c, ldc, alpha, beta); break;
    case 6: dot(6, n, k, a, lda, bt, ldbt, c, ldc, alpha, beta); break;
    case 7: dot(7, n, k, a, lda, bt, ldbt, c, ldc, alpha, beta); break;
    default: dot(8, n, k, a, lda, bt, ldbt, c, ldc, alpha, beta); break;
    }
}

/* bt (n x ldbt) = B^T for B k x n (ldb): VL rows of a column per gather (15 * ldb must fit
 * the gather's 32-bit offsets, else element by element). Only moves values. */
void VFN(dot_pack)(int64_t k, int64_t n, const real *b, int64_t ldb, real *bt, int64_t ldbt)
{
    int64_t p = 0;
    if (ldb <= ((int64_t)1 << 26)) {
        const offsets idx = row_offsets(ldb);
        for (; p + VL <= k; p += VL)
            for (int64_t j = 0; j < n; j++)
                vstore(bt + j * ldbt + p, gather_col(b + p * ldb + j, idx));
    }
    for (; p < k; p++)
        for (int64_t j = 0; j < n; j++)
            bt[j * ldbt + p] = b[p * ldb + j];
}
