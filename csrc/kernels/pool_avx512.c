/* pool_avx512.c: the NCHW 2x2 stride-2 max-pooling plane of pool.c (maxpool_plane_2x2) on
 * AVX-512 lanes, VL = 16 float or 8 double outputs at a time: a row pair's 2*VL inputs are
 * split into the even and odd columns of both rows (the four elements of VL windows, in
 * window order) and compared with pool_avx2.c's rule; a row's last outputs are masked.
 * Called by pool.c only after fnn_cpu_max_isa() reported AVX-512. Compiled twice,
 * FNN_PREC=32/64, with -mavx512f. Reference: maxpool_plane_2x2 (FASTNN_ISA=avx2 and below):
 * the same rule and order, so the same results bit for bit (the tests compare every ISA
 * with the NumPy reference, NaN and ties). */
#include "fnn_real.h"
#include "vec_avx512.h"

/* Beyond vec_avx512.h's vocabulary: lanes of a and b picked by idx; the max-pooling rule
 * (v beats the best where !(v <= best), true when either is NaN, and the best is not NaN);
 * v taken where t. */
#if FNN_PREC == 32
#define vsplit(a, idx, b) _mm512_permutex2var_ps(a, idx, b)
#define beats(v, bv) \
    (_mm512_cmp_ps_mask(v, bv, _CMP_NLE_UQ) & _mm512_cmp_ps_mask(bv, bv, _CMP_ORD_Q))
#define vtake(bv, t, v) _mm512_mask_mov_ps(bv, t, v)
#else
#define vsplit(a, idx, b) _mm512_permutex2var_pd(a, idx, b)
#define beats(v, bv) \
    (_mm512_cmp_pd_mask(v, bv, _CMP_NLE_UQ) & _mm512_cmp_pd_mask(bv, bv, _CMP_ORD_Q))
#define vtake(bv, t, v) _mm512_mask_mov_pd(bv, t, v)
#endif

/* One plane: yp (OH x OW) and ap (abase + the in-plane index of each output's chosen
 * element) overwritten, from xp (rows of W elements; 2*OH <= its rows, 2*OW <= W). Output
 * (oh, ow)'s window is xp[2oh*W + 2ow + {0, 1, W, W + 1}], taken in that order, each later
 * one where it beats the best (larger, or the first NaN). */
void VFN(max2x2_plane)(int64_t W, int64_t OH, int64_t OW, const real *xp, int64_t abase,
                        real *yp, int64_t *ap)
{
    const __m512i lane2 = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14); /* int64 lanes */
#if FNN_PREC == 32
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                           26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
#else
    const __m512i even = lane2, odd = _mm512_add_epi64(even, _mm512_set1_epi64(1));
#endif
    for (int64_t oh = 0; oh < OH; oh++) {
        const real *r0 = xp + 2 * oh * W, *r1 = r0 + W;
        for (int64_t o = 0; o < OW; o += VL) {
            const int64_t n = OW - o < VL ? OW - o : VL;
            const vmask m = lanes_below(n), mlo = lanes_below(2 * n),
                        mhi = lanes_below(2 * n > VL ? 2 * n - VL : 0);
            const vec a0 = vmload(r0 + 2 * o, mlo), a1 = vmload(r0 + 2 * o + VL, mhi);
            const vec b0 = vmload(r1 + 2 * o, mlo), b1 = vmload(r1 + 2 * o + VL, mhi);
            const vec v[4] = {vsplit(a0, even, a1), vsplit(a0, odd, a1),
                              vsplit(b0, even, b1), vsplit(b0, odd, b1)};
            const int64_t first = 2 * oh * W + 2 * o, off[4] = {0, 1, W, W + 1};
            vec bv = v[0];
            vmask t[4] = {0, 0, 0, 0};
            for (int k = 1; k < 4; k++) {
                t[k] = beats(v[k], bv);
                bv = vtake(bv, t[k], v[k]);
            }
            vmstore(yp + oh * OW + o, m, bv);
            /* lane j's index: its window's start (first + 2j) plus the offset of the last
             * element that beat the best (the one kept) */
#if FNN_PREC == 32
            for (int h = 0; h < 2; h++) {                     /* int64 lanes: 8 at a time */
                const __mmask8 mh = (__mmask8)(m >> (8 * h));
                if (!mh)
                    break;
                __m512i taken = _mm512_setzero_si512();
                for (int k = 1; k < 4; k++)
                    taken = _mm512_mask_mov_epi64(taken, (__mmask8)(t[k] >> (8 * h)),
                                                  _mm512_set1_epi64(off[k]));
                const __m512i start =
                    _mm512_add_epi64(_mm512_set1_epi64(abase + first + 16 * h), lane2);
                _mm512_mask_storeu_epi64(ap + oh * OW + o + 8 * h, mh,
                                         _mm512_add_epi64(start, taken));
            }
#else
            __m512i taken = _mm512_setzero_si512();
            for (int k = 1; k < 4; k++)
                taken = _mm512_mask_mov_epi64(taken, t[k], _mm512_set1_epi64(off[k]));
            const __m512i start = _mm512_add_epi64(_mm512_set1_epi64(abase + first), lane2);
            _mm512_mask_storeu_epi64(ap + oh * OW + o, m, _mm512_add_epi64(start, taken));
#endif
        }
    }
}
