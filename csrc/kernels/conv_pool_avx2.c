/* conv_pool_avx2.c: a convolution's gradients from the pooled gradient of the 2x2 max
 * pooling after it (NHWC), on AVX2 + FMA lanes. Each pooled element's gradient g reaches
 * one output pixel of one filter j (its argmax): the weight gradient is the sum of g times
 * that pixel's receptive field in x, added into dw^T's row j, and the input gradient the
 * sum of g times w^T's row j, added into dx at the receptive field. A quarter of the dense
 * backward's products (the convolution's own gradient, three quarters zeros, is never
 * formed). Per image: its tables (which window pixel each argmax names), then its dw and
 * dx, called by conv.c (conv_pool_sparse) only after fnn_cpu_max_isa() reported AVX2 and
 * FMA; reference: the portable loops in conv.c (pool_image_tables, pool_dw_img_ref,
 * pool_dx_img_ref; the tests compare both ISAs with the NumPy reference). Compiled twice,
 * FNN_PREC=32/64, with -mavx2 -mfma.
 *
 * A receptive field (and a patch row of w^T or dw^T) is R runs of L contiguous elements,
 * L a multiple of VL: run r at roff[r] from a pixel's corner in x or dx, at r * L in the
 * patch row. */
#include "fnn_real.h"
#include "vec_avx2.h"

#define NB 12 /* vectors per register block: 12 accumulators, a broadcast, a load */

/* d[0 .. NV*VL) += sum_{q < nq} gz[q*f] * xo[cn[q*f] + 0 .. NV*VL): accumulators loaded
 * from d, an FMA chain over q, stored back. NV a constant at each call. */
FNN_ALWAYS_INLINE void dw_block(int64_t nq, int64_t f, const real *gz, const int32_t *cn,
                                const real *xo, const int NV, real *d)
{
    vec acc[NB];
#pragma GCC unroll 12
    for (int v = 0; v < NV; v++)
        acc[v] = vload(d + v * VL);
    for (int64_t q = 0; q < nq; q++) {
        const vec gq = vset1(gz[q * f]);
        const real *xs = xo + cn[q * f];
#pragma GCC unroll 12
        for (int v = 0; v < NV; v++)
            acc[v] = vfma(gq, vload(xs + v * VL), acc[v]);
    }
#pragma GCC unroll 12
    for (int v = 0; v < NV; v++)
        vstore(d + v * VL, acc[v]);
}

/* d[0 .. NV*VL) += sum over the set bits j of m[0 .. nwords) of gq[j] * wo[j*ld + 0 ..
 * NV*VL): the sum formed in registers from zero (an FMA chain in filter order), then
 * added to d. */
FNN_ALWAYS_INLINE void dx_block(int64_t nwords, const uint64_t *m, const real *gq,
                                const real *wo, int64_t ld, const int NV, real *d)
{
    vec acc[NB];
#pragma GCC unroll 12
    for (int v = 0; v < NV; v++)
        acc[v] = vzero();
    for (int64_t w0 = 0; w0 < nwords; w0++)
        for (uint64_t bits = m[w0]; bits; bits &= bits - 1) {
            const int64_t j = w0 * 64 + __builtin_ctzll(bits);
            const vec gj = vset1(gq[j]);
            const real *ws = wo + j * ld;
#pragma GCC unroll 12
            for (int v = 0; v < NV; v++)
                acc[v] = vfma(gj, vload(ws + v * VL), acc[v]);
        }
#pragma GCC unroll 12
    for (int v = 0; v < NV; v++)
        vstore(d + v * VL, vadd(vload(d + v * VL), acc[v]));
}

/* The block call for nv vectors (1 .. NB): one constant-size instance each. */
#define BLOCK_CASES(CALL)                                                                   \
    switch (nv) {                                                                           \
    case 1: CALL(1); break;                                                                 \
    case 2: CALL(2); break;                                                                 \
    case 3: CALL(3); break;                                                                 \
    case 4: CALL(4); break;                                                                 \
    case 5: CALL(5); break;                                                                 \
    case 6: CALL(6); break;                                                                 \
    case 7: CALL(7); break;                                                                 \
    case 8: CALL(8); break;                                                                 \
    case 9: CALL(9); break;                                                                 \
    case 10: CALL(10); break;                                                               \
    case 11: CALL(11); break;                                                               \
    default: CALL(12); break;                                                               \
    }

/* dwt (f x R*L, row j = filter j's patch in run order), accumulated:
 * dwt[j*R*L + r*L + e] += sum_{q < nwin} gz[q*f + j] * x[cn[q*f + j] + roff[r] + e]
 * (pool_tables_avx2's gz and cn). */
void FNN(pool_dw_img_avx2)(int64_t f, int64_t nwin, const real *gz, const int32_t *cn,
                           const real *x, int64_t R, int64_t L, const int64_t *roff,
                           real *dwt)
{
    const int64_t patch = R * L, nvec = L / VL;
    for (int64_t j = 0; j < f; j++)
        for (int64_t r = 0; r < R; r++)
            for (int64_t v0 = 0; v0 < nvec; v0 += NB) {
                const int nv = (int)(nvec - v0 < NB ? nvec - v0 : NB);
                const real *xo = x + roff[r] + v0 * VL;
                real *d = dwt + j * patch + r * L + v0 * VL;
#define DW_CALL(n) dw_block(nwin, f, gz + j, cn + j, xo, n, d)
                BLOCK_CASES(DW_CALL)
#undef DW_CALL
            }
}

/* dx (one image, padded like x), accumulated: for each window q, its pixel k < 4 (corner
 * cq[4q + k]) and run r, dx[cq[4q + k] + roff[r] + e] += sum over the filters j set in
 * mask[(4q + k)*nwords ..] of gz[q*f + j] * wt[j*R*L + r*L + e] (w^T; pool_tables_avx2's
 * gz and mask). Run blocks
 * outermost: w^T's columns of a block stay in L1 while the pixels go by. */
void FNN(pool_dx_img_avx2)(int64_t f, int64_t nwin, int64_t nwords, const uint64_t *mask,
                           const real *gz, const int64_t *cq, const real *wt, int64_t R,
                           int64_t L, const int64_t *roff, real *dx)
{
    const int64_t patch = R * L, nvec = L / VL;
    for (int64_t r = 0; r < R; r++)
        for (int64_t v0 = 0; v0 < nvec; v0 += NB) {
            const int nv = (int)(nvec - v0 < NB ? nvec - v0 : NB);
            const real *wo = wt + r * L + v0 * VL;
            for (int64_t s = 0; s < 4 * nwin; s++) {
                const uint64_t *m = mask + s * nwords;
                int any = 0;
                for (int64_t w0 = 0; w0 < nwords; w0++)
                    any |= m[w0] != 0;
                if (!any)
                    continue;
                real *d = dx + cq[s] + roff[r] + v0 * VL;
#define DX_CALL(n) dx_block(nwords, m, gz + s / 4 * f, wo, patch, n, d)
                BLOCK_CASES(DX_CALL)
#undef DX_CALL
            }
        }
}

/* One image's tables from its pooled gradient gp (nwin x f) and argmax am (flat indices
 * into its oh x ow x f output): conv.c's pool_image_tables (the reference) on AVX2 lanes,
 * VL filters at a time. For window q (its first pixel p0 = 2*(q / PW)*OW + 2*(q % PW),
 * its four pixels' corners cq[4q .. 4q+3]) and filter j, d = am - j - p0*f is 0, f, OW*f
 * or (OW+1)*f where argmax names pixel k = 0 .. 3 of the window (compared on the low 32
 * bits for float: exact, the caller keeps oh*ow*f below 2^31): gz = gp (0 outside the
 * window), cn = cq[4q + k] (int32; that of pixel 0 outside), and, with need_dx, bit j of
 * mask[(4q + k)*nwords + j/64] set where gz is not 0 (NaN counts as not 0). */
void FNN(pool_tables_avx2)(int64_t f, int64_t nwin, int64_t PW, int64_t OW, const real *gp,
                           const int64_t *am, const int64_t *cq, int need_dx, real *gz,
                           int32_t *cn, uint64_t *mask)
{
    const int64_t nwords = (f + 63) / 64;
    for (int64_t q = 0; q < nwin; q++) {
        const int64_t base = (2 * (q / PW) * OW + 2 * (q % PW)) * f;
        const real *gq = gp + q * f;
        const int64_t *aq = am + q * f;
        uint64_t m[4] = {0, 0, 0, 0};
        for (int64_t j0 = 0; j0 < f; j0 += VL) {
            const int64_t lanes = f - j0 < VL ? f - j0 : VL;
            const vmask lm = lanes_below(lanes);
            const vec g = vmload(gq + j0, lm);
#if FNN_PREC == 32
            const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
            const __m256i lo = _mm256_maskload_epi64(
                (const long long *)(aq + j0),
                _mm256_cvtepi32_epi64(_mm256_castsi256_si128(lm)));
            const __m256i hi = _mm256_maskload_epi64(
                (const long long *)(aq + j0 + 4),
                _mm256_cvtepi32_epi64(_mm256_extracti128_si256(lm, 1)));
            const __m256i a32 = _mm256_inserti128_si256(
                _mm256_castsi128_si256(
                    _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(lo, pick))),
                _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(hi, pick)), 1);
            const __m256i d = _mm256_sub_epi32(
                a32, _mm256_add_epi32(_mm256_set1_epi32((int32_t)(base + j0)),
                                      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
            const __m256i e0 = _mm256_cmpeq_epi32(d, _mm256_setzero_si256());
            const __m256i e1 = _mm256_cmpeq_epi32(d, _mm256_set1_epi32((int32_t)f));
            const __m256i e2 = _mm256_cmpeq_epi32(d, _mm256_set1_epi32((int32_t)(OW * f)));
            const __m256i e3 = _mm256_cmpeq_epi32(d, _mm256_set1_epi32((int32_t)(OW * f + f)));
            const __m256i in = _mm256_and_si256(
                lm, _mm256_or_si256(_mm256_or_si256(e0, e1), _mm256_or_si256(e2, e3)));
            __m256i c = _mm256_set1_epi32((int32_t)cq[4 * q]);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi32((int32_t)cq[4 * q + 1]), e1);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi32((int32_t)cq[4 * q + 2]), e2);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi32((int32_t)cq[4 * q + 3]), e3);
            _mm256_maskstore_epi32((int *)(cn + q * f + j0), lm, c);
            const vec gin = _mm256_and_ps(g, _mm256_castsi256_ps(in));
            const __m256i keep = _mm256_and_si256(
                in, _mm256_castps_si256(_mm256_cmp_ps(g, vzero(), _CMP_NEQ_UQ)));
#define LANE_BITS(e)                                                                        \
    (uint64_t) _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_and_si256(e, keep)))
#else
            const __m256i a = _mm256_maskload_epi64((const long long *)(aq + j0), lm);
            const __m256i d = _mm256_sub_epi64(
                a, _mm256_add_epi64(_mm256_set1_epi64x(base + j0),
                                    _mm256_setr_epi64x(0, 1, 2, 3)));
            const __m256i e0 = _mm256_cmpeq_epi64(d, _mm256_setzero_si256());
            const __m256i e1 = _mm256_cmpeq_epi64(d, _mm256_set1_epi64x(f));
            const __m256i e2 = _mm256_cmpeq_epi64(d, _mm256_set1_epi64x(OW * f));
            const __m256i e3 = _mm256_cmpeq_epi64(d, _mm256_set1_epi64x(OW * f + f));
            const __m256i in = _mm256_and_si256(
                lm, _mm256_or_si256(_mm256_or_si256(e0, e1), _mm256_or_si256(e2, e3)));
            __m256i c = _mm256_set1_epi64x(cq[4 * q]);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi64x(cq[4 * q + 1]), e1);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi64x(cq[4 * q + 2]), e2);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi64x(cq[4 * q + 3]), e3);
            const __m128i c32 = _mm256_castsi256_si128(
                _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
            const __m128i lm32 = _mm256_castsi256_si128(
                _mm256_permutevar8x32_epi32(lm, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
            _mm_maskstore_epi32((int *)(cn + q * f + j0), lm32, c32);
            const vec gin = _mm256_and_pd(g, _mm256_castsi256_pd(in));
            const __m256i keep = _mm256_and_si256(
                in, _mm256_castpd_si256(_mm256_cmp_pd(g, vzero(), _CMP_NEQ_UQ)));
#define LANE_BITS(e)                                                                        \
    (uint64_t) _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_and_si256(e, keep)))
#endif
            vmstore(gz + q * f + j0, lm, gin);
            if (!need_dx)
                continue;
            const int sh = (int)(j0 % 64);
            m[0] |= LANE_BITS(e0) << sh;
            m[1] |= LANE_BITS(e1) << sh;
            m[2] |= LANE_BITS(e2) << sh;
            m[3] |= LANE_BITS(e3) << sh;
#undef LANE_BITS
            if (sh + VL == 64 || j0 + VL >= f) { /* a word complete */
                for (int k = 0; k < 4; k++) {
                    mask[(4 * q + k) * nwords + j0 / 64] = m[k];
                    m[k] = 0;
                }
            }
        }
    }
}
