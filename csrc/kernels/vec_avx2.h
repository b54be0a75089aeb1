/* vec_avx2.h: the AVX2 + FMA lane vocabulary of the type-generic kernels (the kernels/ files
 * compiled with FNN_PREC=32/64, -mavx2 -mfma): VL lanes of `real` per vector, loads,
 * stores, masked forms, FMA, relu, horizontal sum. Include after fnn_real.h. */
#ifndef FNN_VEC_AVX2_H
#define FNN_VEC_AVX2_H

#include <immintrin.h>

/* VFN(name): a kernel's name for this ISA and type, fnn_<name>_avx2_<f32|f64>. */
#define VFN(name) FNN_CAT(FNN_CAT(FNN_CAT(fnn_, name), _avx2), FNN_SFX)
#define VREGS 16 /* vector registers */
#define vnomask _mm256_setzero_si256 /* a mask argument that is not used */

#if FNN_PREC == 32
#define VL 8
typedef __m256 vec;
typedef __m256i vmask;
#define vzero _mm256_setzero_ps
#define vset1 _mm256_set1_ps
#define vload _mm256_loadu_ps
#define vstore _mm256_storeu_ps
#define vmload _mm256_maskload_ps
#define vmstore _mm256_maskstore_ps
#define vfma _mm256_fmadd_ps
#define vadd _mm256_add_ps
#define vsub _mm256_sub_ps
#define vmul _mm256_mul_ps
#define vrelu(v) _mm256_blendv_ps(v, vzero(), _mm256_cmp_ps(v, vzero(), _CMP_LT_OQ))
static inline vmask lanes_below(int64_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline real hsum(vec v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/* Max pooling's lanes (pool_avx2.c, conv_pool_avx2.c): index lanes at lane_idx's width
 * (int32 for float, int64 for double) and their store as int64 (indices >= 0: widened
 * with zeros); the pooling rule's mask, v beats the best where !(v <= best) (true when
 * either is NaN) and the best is not NaN, and the selects it drives. */
typedef __m256i vidx;
#define idx_set1(v) _mm256_set1_epi32((int32_t)(v))
#define idx_lanes() _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
#define idx_add(a, b) _mm256_add_epi32(a, b)
static inline vmask vbeats(vec v, vec best)
{
    return _mm256_castps_si256(_mm256_and_ps(_mm256_cmp_ps(v, best, _CMP_NLE_UQ),
                                             _mm256_cmp_ps(best, best, _CMP_ORD_Q)));
}
static inline vec vblend(vec a, vec b, vmask t)
{
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(t));
}
static inline vidx idx_blend(vidx a, vidx b, vmask t)
{
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a),
                                                _mm256_castsi256_ps(b), _mm256_castsi256_ps(t)));
}
static inline void store_idx(int64_t *a, vidx i)
{
    _mm256_storeu_si256((__m256i *)a, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(i)));
    _mm256_storeu_si256((__m256i *)(a + 4),
                        _mm256_cvtepu32_epi64(_mm256_extracti128_si256(i, 1)));
}
#else
#define VL 4
typedef __m256d vec;
typedef __m256i vmask;
#define vzero _mm256_setzero_pd
#define vset1 _mm256_set1_pd
#define vload _mm256_loadu_pd
#define vstore _mm256_storeu_pd
#define vmload _mm256_maskload_pd
#define vmstore _mm256_maskstore_pd
#define vfma _mm256_fmadd_pd
#define vadd _mm256_add_pd
#define vsub _mm256_sub_pd
#define vmul _mm256_mul_pd
#define vrelu(v) _mm256_blendv_pd(v, vzero(), _mm256_cmp_pd(v, vzero(), _CMP_LT_OQ))
static inline vmask lanes_below(int64_t n)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
static inline real hsum(vec v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
/* Max pooling's lanes: as for float above. */
typedef __m256i vidx;
#define idx_set1(v) _mm256_set1_epi64x(v)
#define idx_lanes() _mm256_setr_epi64x(0, 1, 2, 3)
#define idx_add(a, b) _mm256_add_epi64(a, b)
static inline vmask vbeats(vec v, vec best)
{
    return _mm256_castpd_si256(_mm256_and_pd(_mm256_cmp_pd(v, best, _CMP_NLE_UQ),
                                             _mm256_cmp_pd(best, best, _CMP_ORD_Q)));
}
static inline vec vblend(vec a, vec b, vmask t)
{
    return _mm256_blendv_pd(a, b, _mm256_castsi256_pd(t));
}
static inline vidx idx_blend(vidx a, vidx b, vmask t)
{
    return _mm256_castpd_si256(_mm256_blendv_pd(_mm256_castsi256_pd(a),
                                                _mm256_castsi256_pd(b), _mm256_castsi256_pd(t)));
}
static inline void store_idx(int64_t *a, vidx i) { _mm256_storeu_si256((__m256i *)a, i); }
#endif

#endif
