/* pool_lanes.h: max pooling's compare/select on SSE2 lanes, shared by pool.c and the fused
 * convolution + pooling of conv.c. Include after fnn_real.h (one precision per build). */
#ifndef FNN_POOL_LANES_H
#define FNN_POOL_LANES_H

/* Lane index type matching real's width, so the compare/select loops vectorise (float
 * lanes with int32 indices, double lanes with int64). */
#if FNN_PREC == 32
typedef int32_t lane_idx;
#define LANE_IDX_MAX INT32_MAX
#else
typedef int64_t lane_idx;
#define LANE_IDX_MAX INT64_MAX
#endif

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
/* GCC does not vectorise the double compare/select for baseline x86-64 (no 64-bit integer
 * select it will use with SSE2) and handles the float one with much overhead for the short
 * runs pooling has (or as branches, which mispredict), so both are written out: masks from
 * the compares select the values and the indices (int64 lanes for double, int32 for
 * float). */
#define POOL_SSE2 1
#endif

#ifdef POOL_SSE2
/* One compare/select step of the max-pooling rule on SSE2 lanes: where v beats the best
 * (larger, or the first NaN), take v and its index vi. */
#if FNN_PREC == 64
typedef __m128d vreal;
#define VLANES 2
static inline void take_lanes(vreal v, __m128i vi, vreal *bv, __m128i *bi)
{
    const __m128d t = _mm_or_pd(_mm_cmpgt_pd(v, *bv),
                                _mm_and_pd(_mm_cmpunord_pd(v, v), _mm_cmpord_pd(*bv, *bv)));
    const __m128i ti = _mm_castpd_si128(t);
    *bv = _mm_or_pd(_mm_and_pd(t, v), _mm_andnot_pd(t, *bv));
    *bi = _mm_or_si128(_mm_and_si128(ti, vi), _mm_andnot_si128(ti, *bi));
}
#else
typedef __m128 vreal;
#define VLANES 4
static inline void take_lanes(vreal v, __m128i vi, vreal *bv, __m128i *bi)
{
    const __m128 t = _mm_or_ps(_mm_cmpgt_ps(v, *bv),
                               _mm_and_ps(_mm_cmpunord_ps(v, v), _mm_cmpord_ps(*bv, *bv)));
    const __m128i ti = _mm_castps_si128(t);
    *bv = _mm_or_ps(_mm_and_ps(t, v), _mm_andnot_ps(t, *bv));
    *bi = _mm_or_si128(_mm_and_si128(ti, vi), _mm_andnot_si128(ti, *bi));
}
#endif

/* Lane-index vector arithmetic at lane_idx's width; loads and stores of vreal; and the
 * store of VLANES consecutive argmax entries: lane l gets bi[l] + c + l, as int64. */
#if FNN_PREC == 64
static inline __m128i idx_splat(lane_idx v) { return _mm_set1_epi64x(v); }
static inline __m128i idx_add(__m128i a, __m128i b) { return _mm_add_epi64(a, b); }
static inline vreal vload(const real *p) { return _mm_loadu_pd(p); }
static inline void vstore(real *p, vreal v) { _mm_storeu_pd(p, v); }
/* p[0], p[2], ... into *even and p[1], p[3], ... into *odd (2 * VLANES elements read) */
static inline void vload_pairs(const real *p, vreal *even, vreal *odd)
{
    const __m128d a = _mm_loadu_pd(p), b = _mm_loadu_pd(p + 2);
    *even = _mm_unpacklo_pd(a, b);
    *odd = _mm_unpackhi_pd(a, b);
}
static inline void store_argmax(int64_t *a, __m128i bi, int64_t c)
{
    _mm_storeu_si128((__m128i *)a, _mm_add_epi64(bi, _mm_set_epi64x(c + 1, c)));
}
#else
static inline __m128i idx_splat(lane_idx v) { return _mm_set1_epi32(v); }
static inline __m128i idx_add(__m128i a, __m128i b) { return _mm_add_epi32(a, b); }
static inline vreal vload(const real *p) { return _mm_loadu_ps(p); }
static inline void vstore(real *p, vreal v) { _mm_storeu_ps(p, v); }
static inline void vload_pairs(const real *p, vreal *even, vreal *odd)
{
    const __m128 a = _mm_loadu_ps(p), b = _mm_loadu_ps(p + 4);
    *even = _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    *odd = _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
}
static inline void store_argmax(int64_t *a, __m128i bi, int64_t c)
{
    /* indices are in [0, LANE_IDX_MAX]: widen with zeros */
    const __m128i v = _mm_add_epi32(bi, _mm_add_epi32(_mm_set1_epi32((int32_t)c),
                                                      _mm_set_epi32(3, 2, 1, 0)));
    const __m128i z = _mm_setzero_si128();
    _mm_storeu_si128((__m128i *)a, _mm_unpacklo_epi32(v, z));
    _mm_storeu_si128((__m128i *)(a + 2), _mm_unpackhi_epi32(v, z));
}
#endif
#endif

/* One 2x2 window on n channels: y[c] = the first of p[0][c], ..., p[3][c] that no later
 * one beats (fnn_beats: larger, or the first NaN), argmax[c] = its e[k] + c; VLANES
 * channels at a time on SSE2. */
static inline void max4_lanes(int64_t n, const real *const p[4], const lane_idx e[4],
                              real *y, int64_t *argmax)
{
    int64_t c = 0;
#ifdef POOL_SSE2
    for (; c + VLANES <= n; c += VLANES) {
        vreal bv = vload(p[0] + c);
        __m128i bi = idx_splat(e[0]);
        take_lanes(vload(p[1] + c), idx_splat(e[1]), &bv, &bi);
        take_lanes(vload(p[2] + c), idx_splat(e[2]), &bv, &bi);
        take_lanes(vload(p[3] + c), idx_splat(e[3]), &bv, &bi);
        vstore(y + c, bv);
        store_argmax(argmax + c, bi, c);
    }
#endif
    for (; c < n; c++) {
        real b = p[0][c];
        lane_idx a = e[0];
        for (int k = 1; k < 4; k++)
            if (fnn_beats(p[k][c], b)) {
                b = p[k][c];
                a = e[k];
            }
        y[c] = b;
        argmax[c] = (int64_t)a + c;
    }
}

/* max4_lanes, or its AVX2 build (kernels/pool_avx2.c: the same results, 8 float lanes)
 * where avx2 (the caller's fnn_get_isa() >= 1, looked up once). */
static inline void max4_window(int avx2, int64_t n, const real *const p[4],
                               const lane_idx e[4], real *y, int64_t *argmax)
{
#if FNN_X86_KERNELS
    if (avx2) {
        FNN(max4_avx2)(n, p, e, y, argmax);
        return;
    }
#endif
    (void)avx2;
    max4_lanes(n, p, e, y, argmax);
}

#endif
