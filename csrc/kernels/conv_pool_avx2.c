/* conv_pool_avx2.c: a convolution fused with the 2x2 max pooling after it (NHWC), on AVX2
 * + FMA lanes: the forward of a 3x3 single-channel layer (conv3x3c1_pool_row_avx2, at the
 * end), and the gradients from the pooled gradient. Each pooled element's gradient g reaches
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
#include <string.h>
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

/* VL lanes of the pooled gradient at gq (lanes lm; all of them when full), relu's
 * derivative applied where yq is not NULL: yq > 0 ? g : +0 (NaN in yq: 0), as
 * fnn_bias_act_bwd selects. */
FNN_ALWAYS_INLINE vec pooled_grad(const real *gq, const real *yq, vmask lm, int full)
{
    const vec g = full ? vload(gq) : vmload(gq, lm);
    if (!yq)
        return g;
    const vec y = full ? vload(yq) : vmload(yq, lm);
#if FNN_PREC == 32
    return _mm256_and_ps(g, _mm256_cmp_ps(y, vzero(), _CMP_GT_OQ));
#else
    return _mm256_and_pd(g, _mm256_cmp_pd(y, vzero(), _CMP_GT_OQ));
#endif
}

/* Which pixel of its window each of VL filters' argmax names: e[k] all ones in lane l where
 * aq[l] - (base + l) (the argmax of filter j0 + l minus that filter's index at the
 * window's pixel 0) is pixel k's offset, 0, f, OW*f or (OW+1)*f; lanes from `lm` only.
 * Float compares the low 32 bits (exact: the caller keeps oh*ow*f below 2^31), in 8
 * int32 lanes; double compares int64. `full` (all VL lanes in lm): plain loads, where
 * Zen 2's masked loads of argmax took two thirds of pool_dw_rows_avx2's time. */
FNN_ALWAYS_INLINE void pixel_masks(const int64_t *aq, vmask lm, int full, int64_t base,
                                   int64_t f, int64_t OW, vmask e[4])
{
#if FNN_PREC == 32
    const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    __m256i lo, hi;
    if (full) {
        lo = _mm256_loadu_si256((const __m256i *)aq);
        hi = _mm256_loadu_si256((const __m256i *)(aq + 4));
    } else {
        lo = _mm256_maskload_epi64((const long long *)aq,
                                   _mm256_cvtepi32_epi64(_mm256_castsi256_si128(lm)));
        hi = _mm256_maskload_epi64((const long long *)(aq + 4),
                                   _mm256_cvtepi32_epi64(_mm256_extracti128_si256(lm, 1)));
    }
    const __m256i a32 = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm256_castsi256_si128(_mm256_permutevar8x32_epi32(lo, pick))),
        _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(hi, pick)), 1);
    const __m256i d = _mm256_sub_epi32(a32, _mm256_add_epi32(_mm256_set1_epi32((int32_t)base),
                                                             _mm256_setr_epi32(0, 1, 2, 3, 4,
                                                                               5, 6, 7)));
    e[0] = _mm256_cmpeq_epi32(d, _mm256_setzero_si256());
    e[1] = _mm256_cmpeq_epi32(d, _mm256_set1_epi32((int32_t)f));
    e[2] = _mm256_cmpeq_epi32(d, _mm256_set1_epi32((int32_t)(OW * f)));
    e[3] = _mm256_cmpeq_epi32(d, _mm256_set1_epi32((int32_t)(OW * f + f)));
#else
    const __m256i a = full ? _mm256_loadu_si256((const __m256i *)aq)
                           : _mm256_maskload_epi64((const long long *)aq, lm);
    const __m256i d =
        _mm256_sub_epi64(a, _mm256_add_epi64(_mm256_set1_epi64x(base),
                                             _mm256_setr_epi64x(0, 1, 2, 3)));
    e[0] = _mm256_cmpeq_epi64(d, _mm256_setzero_si256());
    e[1] = _mm256_cmpeq_epi64(d, _mm256_set1_epi64x(f));
    e[2] = _mm256_cmpeq_epi64(d, _mm256_set1_epi64x(OW * f));
    e[3] = _mm256_cmpeq_epi64(d, _mm256_set1_epi64x(OW * f + f));
#endif
    for (int k = 0; k < 4; k++)
        e[k] = _mm256_and_si256(e[k], lm);
}

/* pixel_masks for window positions: e[k] all ones in lane l where pq[l] (one byte: the
 * argmax's pixel k = 0 .. 3 of its window, fnn_conv2d_pool_fwd's pos) is k; lanes from `lm`
 * only (`full`: all VL, read as one load; else the bytes of lm's lanes alone). */
FNN_ALWAYS_INLINE void pos_masks(const uint8_t *pq, vmask lm, int full, vmask e[4])
{
#if FNN_PREC == 32
    int64_t v = 0;
    if (full)
        memcpy(&v, pq, 8);
    else
        memcpy(&v, pq, (size_t)__builtin_popcount((unsigned)_mm256_movemask_ps(
                           _mm256_castsi256_ps(lm))));
    const __m256i k = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v));
    for (int i = 0; i < 4; i++)
        e[i] = _mm256_and_si256(_mm256_cmpeq_epi32(k, _mm256_set1_epi32(i)), lm);
#else
    int32_t v = 0;
    if (full)
        memcpy(&v, pq, 4);
    else
        memcpy(&v, pq, (size_t)__builtin_popcount((unsigned)_mm256_movemask_pd(
                           _mm256_castsi256_pd(lm))));
    const __m256i k = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(v));
    for (int i = 0; i < 4; i++)
        e[i] = _mm256_and_si256(_mm256_cmpeq_epi64(k, _mm256_set1_epi64x(i)), lm);
#endif
}

/* The masks of element i (window q's filters j0 ..: i = q * f + j0) from whichever argmax
 * the caller has: window positions pos (one byte each) unless NULL, else flat indices am
 * (pixel_masks; base: the window's pixel 0's index for filter j0). */
FNN_ALWAYS_INLINE void window_masks(const int64_t *am, const uint8_t *pos, int64_t i,
                                    vmask lm, int full, int64_t base, int64_t f, int64_t OW,
                                    vmask e[4])
{
    if (pos)
        pos_masks(pos + i, lm, full, e);
    else
        pixel_masks(am + i, lm, full, base, f, OW, e);
}

/* A later window's argmax (element i) on its way to L1 (pos: one byte each, unless NULL) */
FNN_ALWAYS_INLINE void prefetch_argmax(const int64_t *am, const uint8_t *pos, int64_t i)
{
    _mm_prefetch(pos ? (const char *)(pos + i) : (const char *)(am + i), _MM_HINT_T0);
}

/* One image's tables from its pooled gradient gp (nwin x f) and argmax: am (flat indices
 * into its oh x ow x f output), or window positions pos (one byte, 0 .. 3) where am is
 * NULL: conv.c's pool_image_tables (the reference) on AVX2 lanes,
 * VL filters at a time. For window q (its first pixel p0 = 2*(q / PW)*OW + 2*(q % PW),
 * its four pixels' corners cq[4q .. 4q+3]) and filter j, d = am - j - p0*f is 0, f, OW*f
 * or (OW+1)*f where argmax names pixel k = 0 .. 3 of the window (compared on the low 32
 * bits for float: exact, the caller keeps oh*ow*f below 2^31; or pos is k): gz = gp (relu-masked by yp
 * unless NULL: pooled_grad; 0 outside the window), cn = cq[4q + k] (int32; that of pixel
 * 0 outside), and, with need_dx, bit j of mask[(4q + k)*nwords + j/64] set where gz is not
 * 0 (NaN counts as not 0). */
void FNN(pool_tables_avx2)(int64_t f, int64_t nwin, int64_t PW, int64_t OW, const real *gp,
                           const real *yp, const int64_t *am, const uint8_t *pos,
                           const int64_t *cq, int need_dx, real *gz, int32_t *cn,
                           uint64_t *mask)
{
    const int64_t nwords = (f + 63) / 64;
    for (int64_t q = 0; q < nwin; q++) {
        const int64_t base = (2 * (q / PW) * OW + 2 * (q % PW)) * f;
        const real *gq = gp + q * f;
        uint64_t m[4] = {0, 0, 0, 0};
        for (int64_t j0 = 0; j0 < f; j0 += VL) {
            const int64_t lanes = f - j0 < VL ? f - j0 : VL;
            const vmask lm = lanes_below(lanes);
            const int full = lanes == VL; /* plain loads and stores (pixel_masks) */
            const vec g = pooled_grad(gq + j0, yp ? yp + q * f + j0 : NULL, lm, full);
            vmask e[4];
            window_masks(am, pos, q * f + j0, lm, full, base + j0, f, OW, e);
            const __m256i in =
                _mm256_or_si256(_mm256_or_si256(e[0], e[1]), _mm256_or_si256(e[2], e[3]));
#if FNN_PREC == 32
            __m256i c = _mm256_set1_epi32((int32_t)cq[4 * q]);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi32((int32_t)cq[4 * q + 1]), e[1]);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi32((int32_t)cq[4 * q + 2]), e[2]);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi32((int32_t)cq[4 * q + 3]), e[3]);
            if (full)
                _mm256_storeu_si256((__m256i *)(cn + q * f + j0), c);
            else
                _mm256_maskstore_epi32((int *)(cn + q * f + j0), lm, c);
            const vec gin = _mm256_and_ps(g, _mm256_castsi256_ps(in));
            const __m256i keep = _mm256_and_si256(
                in, _mm256_castps_si256(_mm256_cmp_ps(g, vzero(), _CMP_NEQ_UQ)));
#define LANE_BITS(e)                                                                        \
    (uint64_t) _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_and_si256(e, keep)))
#else
            __m256i c = _mm256_set1_epi64x(cq[4 * q]);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi64x(cq[4 * q + 1]), e[1]);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi64x(cq[4 * q + 2]), e[2]);
            c = _mm256_blendv_epi8(c, _mm256_set1_epi64x(cq[4 * q + 3]), e[3]);
            const __m128i c32 = _mm256_castsi256_si128(
                _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
            const __m128i lm32 = _mm256_castsi256_si128(
                _mm256_permutevar8x32_epi32(lm, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
            if (full)
                _mm_storeu_si128((__m128i *)(cn + q * f + j0), c32);
            else
                _mm_maskstore_epi32((int *)(cn + q * f + j0), lm32, c32);
            const vec gin = _mm256_and_pd(g, _mm256_castsi256_pd(in));
            const __m256i keep = _mm256_and_si256(
                in, _mm256_castpd_si256(_mm256_cmp_pd(g, vzero(), _CMP_NEQ_UQ)));
#define LANE_BITS(e)                                                                        \
    (uint64_t) _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_and_si256(e, keep)))
#endif
            if (full)
                vstore(gz + q * f + j0, gin);
            else
                vmstore(gz + q * f + j0, lm, gin);
            if (!need_dx)
                continue;
            const int sh = (int)(j0 % 64);
            for (int k = 0; k < 4; k++)
                m[k] |= LANE_BITS(e[k]) << sh;
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

#define PB 9 /* patch elements per register block: 9 accumulators, 4 masked gradients, a
              * broadcast */
#define DW_ROWS_AHEAD 8 /* windows ahead, the prefetch of pool_dw_rows_avx2 */

/* g where the lanes of e are set, else +0 */
FNN_ALWAYS_INLINE vec vand_mask(vec g, vmask e)
{
#if FNN_PREC == 32
    return _mm256_and_ps(g, _mm256_castsi256_ps(e));
#else
    return _mm256_and_pd(g, _mm256_castsi256_pd(e));
#endif
}

/* acc[v] += xs[o[v]] * (g where lanes e, else +0), v < NP: one pixel row of
 * pool_dw_rows_avx2. */
FNN_ALWAYS_INLINE void dw_rows_pixel(vec g, vmask e, const real *xs, const int64_t *o,
                                     const int NP, vec *acc)
{
    const vec gk = vand_mask(g, e);
#pragma GCC unroll 9
    for (int v = 0; v < NP; v++)
        acc[v] = vfma(vset1(xs[o[v]]), gk, acc[v]);
}

/* One register block of pool_dw_rows_avx2: patch elements p0 .. p0 + NP, filters j0 ..
 * j0 + VL (lanes lm). NP a constant at each call. */
FNN_ALWAYS_INLINE void dw_rows_block(int64_t f, int64_t q0, int64_t len, int64_t PH,
                                     int64_t PW, int64_t OW, const real *gp, const real *yp,
                                     const int64_t *am, const uint8_t *pos,
                                     const int64_t *pix, const real *x, const int64_t *off,
                                     int beta, int64_t j0, vmask lm, int full, const int NP,
                                     real *part)
{
    vec acc[PB];
    int64_t o[PB];
#pragma GCC unroll 9
    for (int v = 0; v < NP; v++) {
        acc[v] = vzero();
        o[v] = off[v];
    }
    int64_t w = q0 / 4, n = 0, ph = w % (PH * PW) / PW, pw = w % PW; /* (n: not needed) */
    const int64_t wend = (q0 + len + 3) / 4;
    for (; w < wend; w++) {
        /* the window's pixels among rows q0 .. q0 + len (all four but at the ends) */
        const int64_t klo = q0 > 4 * w ? q0 - 4 * w : 0;
        const int64_t khi = q0 + len - 4 * w < 4 ? q0 + len - 4 * w : 4;
        /* a later window's argmax and gradient on their way to L1: a piece's argmax rows
         * outgrow it, and each of the VL-filter passes reads them again */
        if (w + DW_ROWS_AHEAD < wend) { /* (no pointer past the arrays) */
            prefetch_argmax(am, pos, (w + DW_ROWS_AHEAD) * f + j0);
            _mm_prefetch((const char *)(gp + (w + DW_ROWS_AHEAD) * f + j0), _MM_HINT_T0);
        }
        vmask e[4];
        window_masks(am, pos, w * f + j0, lm, full, (2 * ph * OW + 2 * pw) * f + j0, f, OW,
                     e);
        const vec g = pooled_grad(gp + w * f + j0, yp ? yp + w * f + j0 : NULL, lm, full);
        if (klo == 0 && khi == 4) { /* unrolled, the four masked gradients first */
            vec gk[4];
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++)
                gk[k] = vand_mask(g, e[k]);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const real *xs = x + pix[4 * w + k];
#pragma GCC unroll 9
                for (int v = 0; v < NP; v++)
                    acc[v] = vfma(vset1(xs[o[v]]), gk[k], acc[v]);
            }
        } else {
            for (int64_t k = klo; k < khi; k++)
                dw_rows_pixel(g, e[k], x + pix[4 * w + k], o, NP, acc);
        }
        fnn_next_rc(PH, PW, &n, &ph, &pw);
    }
#pragma GCC unroll 9
    for (int v = 0; v < NP; v++) {
        real *d = part + v * f + j0;
        vmstore(d, lm, beta ? vadd(vmload(d, lm), acc[v]) : acc[v]);
    }
}

/* dw_rows_block for a 3 x 3 single-channel convolution of unit stride and dilation (P = 9,
 * off[3 * dy + dx] = dy * ld + dx, a window's pixel k = 2 * ky + kx at ky * ld + kx from its
 * pixel 0): the four pixels' receptive fields are then one 4 x 4 patch of x, whose 16
 * elements are broadcast once each into the FMAs of the (pixel, patch element) pairs that
 * read it, instead of 36 broadcasts (the loads, and the offsets spilled to the stack,
 * paced dw_rows_block there). Each accumulator still takes its window's pixels in the
 * order 0 .. 3 (element (r, c) of the 4 x 4 patch is pixel (r - dy, c - dx) of patch
 * element (dy, dx): row-major in (r, c) is row-major in the pixel): the same bits.
 * pix[w]: window w's corner (its pixel 0's), not each pixel's. A function of its own, not
 * a branch in dw_rows_block: merged (the 3x3 path a branch on a constant elsewhere), the
 * other blocks ran slower, a 3x3x3 -> 32 pooled dW 2.72-2.78 -> 2.75-2.90 ms. */
FNN_ALWAYS_INLINE void dw_rows_block_3x3(int64_t f, int64_t q0, int64_t len, int64_t PH,
                                         int64_t PW, int64_t OW, const real *gp,
                                         const real *yp, const int64_t *am,
                                         const uint8_t *pos, const int64_t *pix,
                                         const real *x, const int64_t *off,
                                         int64_t ld, int beta, int64_t j0, vmask lm, int full,
                                         real *part)
{
    vec acc[9];
#pragma GCC unroll 9
    for (int v = 0; v < 9; v++)
        acc[v] = vzero();
    int64_t w = q0 / 4, n = 0, ph = w % (PH * PW) / PW, pw = w % PW; /* (n: not needed) */
    const int64_t wend = (q0 + len + 3) / 4;
    for (; w < wend; w++) {
        const int64_t klo = q0 > 4 * w ? q0 - 4 * w : 0;
        const int64_t khi = q0 + len - 4 * w < 4 ? q0 + len - 4 * w : 4;
        if (w + DW_ROWS_AHEAD < wend) {
            prefetch_argmax(am, pos, (w + DW_ROWS_AHEAD) * f + j0);
            _mm_prefetch((const char *)(gp + (w + DW_ROWS_AHEAD) * f + j0), _MM_HINT_T0);
        }
        vmask e[4];
        window_masks(am, pos, w * f + j0, lm, full, (2 * ph * OW + 2 * pw) * f + j0, f, OW,
                     e);
        const vec g = pooled_grad(gp + w * f + j0, yp ? yp + w * f + j0 : NULL, lm, full);
        const real *x0 = x + pix[w];
        if (klo == 0 && khi == 4) {
            vec gk[4];
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++)
                gk[k] = vand_mask(g, e[k]);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++) {
                    const vec b = vset1(x0[r * ld + c]);
#pragma GCC unroll 2
                    for (int ky = 0; ky < 2; ky++)
#pragma GCC unroll 2
                        for (int kx = 0; kx < 2; kx++) {
                            const int dy = r - ky, dx = c - kx;
                            if (dy >= 0 && dy < 3 && dx >= 0 && dx < 3)
                                acc[3 * dy + dx] = vfma(b, gk[2 * ky + kx], acc[3 * dy + dx]);
                        }
                }
        } else {
            for (int64_t k = klo; k < khi; k++)
                dw_rows_pixel(g, e[k], x0 + k / 2 * ld + k % 2, off, 9, acc);
        }
        fnn_next_rc(PH, PW, &n, &ph, &pw);
    }
#pragma GCC unroll 9
    for (int v = 0; v < 9; v++) {
        real *d = part + v * f + j0;
        vmstore(d, lm, beta ? vadd(vmload(d, lm), acc[v]) : acc[v]);
    }
}

/* The pooled implicit dW's product over rows q0 .. q0 + len of its window order, without
 * packing (conv.c's conv_dw_implicit, where pack_pooled and the gather kernel cost 1.5
 * ms for a 3x3x1 -> 32 layer's 128 images, the packing more than the product): row q is
 * pixel q % 4 ((0, 0), (0, 1), (1, 0), (1, 1)) of window q / 4 (image-major, PH x PW
 * windows per image, chunk-relative), its corner pix[q] in x (padded). Over P patch
 * elements at off[p] from a corner and f filters: part[p*f + j] = (beta ? part[p*f + j] :
 * 0) + the sum over those rows in order of x[pix[q] + off[p]] * B(q, j), B(q, j) = gp[q/4
 * * f + j] (pooled_grad: relu-masked by yp unless NULL) where am[q/4 * f + j] (a flat
 * index into the image's oh x ow x f output, OW pixels per row) names pixel q % 4 of
 * window q / 4 (or, am NULL, where the window position pos[q/4 * f + j] is q % 4), else
 * +0. That is the gather kernel's FMA chain over pack_pooled's panels, element by
 * element, so the same bits.
 * Filters VL at a time (masked tail), patch elements PB at a time; ld3 not 0: a 3 x 3
 * single-channel convolution of unit stride and dilation, x's rows ld3 apart, and pix
 * the windows' corners (dw_rows_block_3x3). */
void FNN(pool_dw_rows_avx2)(int64_t f, int64_t q0, int64_t len, int64_t PH, int64_t PW,
                            int64_t OW, const real *gp, const real *yp, const int64_t *am,
                            const uint8_t *pos, const int64_t *pix, const real *x, int64_t P,
                            const int64_t *off, int64_t ld3, int beta, real *part)
{
    for (int64_t j0 = 0; j0 < f; j0 += VL) {
        const int64_t lanes = f - j0 < VL ? f - j0 : VL;
        const vmask lm = lanes_below(lanes);
        if (ld3) {
            dw_rows_block_3x3(f, q0, len, PH, PW, OW, gp, yp, am, pos, pix, x, off, ld3, beta,
                              j0, lm, lanes == VL, part);
            continue;
        }
        for (int64_t p0 = 0; p0 < P; p0 += PB) {
            const int64_t np = P - p0 < PB ? P - p0 : PB;
            real *d = part + p0 * f;
#define ROWS_CALL(n)                                                                        \
    dw_rows_block(f, q0, len, PH, PW, OW, gp, yp, am, pos, pix, x, off + p0, beta, j0, lm,\
                  lanes == VL, n, d)
            switch (np) {
            case 1: ROWS_CALL(1); break;
            case 2: ROWS_CALL(2); break;
            case 3: ROWS_CALL(3); break;
            case 4: ROWS_CALL(4); break;
            case 5: ROWS_CALL(5); break;
            case 6: ROWS_CALL(6); break;
            case 7: ROWS_CALL(7); break;
            case 8: ROWS_CALL(8); break;
            default: ROWS_CALL(9); break;
            }
#undef ROWS_CALL
        }
    }
}

/* Windows per group of conv3x3c1_pool_row_avx2 (c3_windows: 4 FMA chains each; Zen 2's two
 * FMA pipes of latency 5 keep 10 busy): a 3x3x1 -> 32 layer's 128 images, 0.92 ms with the
 * gather kernel, 0.79 with 1 window, 0.70 with 2, 0.635 with 3, no faster with 4. */
#define C3_NW 3

/* The VL window positions in the lanes of at (each 0 .. 3) as bytes: p[0 .. VL) */
FNN_ALWAYS_INLINE void store_pos(uint8_t *p, vidx at)
{
#if FNN_PREC == 32 /* byte 0 of each int32 lane */
    const __m256i b = _mm256_shuffle_epi8(
        at, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0,
                             4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
    const uint32_t v[2] = {(uint32_t)_mm_cvtsi128_si32(_mm256_castsi256_si128(b)),
                           (uint32_t)_mm_cvtsi128_si32(_mm256_extracti128_si256(b, 1))};
    memcpy(p, v, 8);
#else /* byte 0 of each int64 lane */
    const __m256i b = _mm256_shuffle_epi8(
        at, _mm256_setr_epi8(0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0,
                             8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
    const uint16_t v[2] = {(uint16_t)_mm_cvtsi128_si32(_mm256_castsi256_si128(b)),
                           (uint16_t)_mm_cvtsi128_si32(_mm256_extracti128_si256(b, 1))};
    memcpy(p, v, 4);
#endif
}

/* NW windows from window s of conv3x3c1_pool_row_avx2's pass over filters j0 .. j0 + VL
 * (wv: their weight vectors, first: the index lanes of window 0's pixel 0): NW x 4
 * independent FMA chains (one window's 4, 9 FMAs deep, waited on the FMA latency). */
FNN_ALWAYS_INLINE void c3_windows(const int NW, int64_t s, int64_t f, int64_t j0,
                                  const real *x, int64_t ldx, const vec wv[9], const real *b,
                                  int relu, vidx first, const vidx off[4], real *y,
                                  int64_t *argmax, uint8_t *pos)
{
    vec acc[3][4];
#pragma GCC unroll 3
    for (int u = 0; u < NW; u++)
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            acc[u][k] = vzero();
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
#pragma GCC unroll 3
            for (int u = 0; u < NW; u++) {
                const vec xv = vset1(x[2 * (s + u) + r * ldx + c]);
#pragma GCC unroll 2
                for (int ky = 0; ky < 2; ky++)
#pragma GCC unroll 2
                    for (int kx = 0; kx < 2; kx++) {
                        const int dy = r - ky, dx = c - kx;
                        if (dy >= 0 && dy < 3 && dx >= 0 && dx < 3)
                            acc[u][2 * ky + kx] =
                                vfma(xv, wv[3 * dy + dx], acc[u][2 * ky + kx]);
                    }
            }
#pragma GCC unroll 3
    for (int u = 0; u < NW; u++) {
        if (b) {
            const vec bv = vload(b + j0);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++)
                acc[u][k] = vadd(acc[u][k], bv);
        }
        if (relu)
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++)
                acc[u][k] = vrelu(acc[u][k]); /* v < 0 ? +0 : v */
        vec best = acc[u][0];
        vidx at = off[0];
#pragma GCC unroll 3
        for (int k = 1; k < 4; k++) {
            const vmask t = vbeats(acc[u][k], best);
            best = vblend(best, acc[u][k], t);
            at = _mm256_blendv_epi8(at, off[k], t);
        }
        vstore(y + (s + u) * f + j0, best);
        if (pos) /* off: the positions themselves */
            store_pos(pos + (s + u) * f + j0, at);
        else
            store_idx(argmax + (s + u) * f + j0,
                      idx_add(at, idx_add(first, idx_set1(2 * (s + u) * f))));
    }
}

/* One pooled row of a 3x3 single-channel convolution of unit stride and dilation, its
 * activation and the 2x2 max pooling after it (conv.c's conv_pool_implicit): window s <
 * nwin reads the 4x4 input patch at x + 2*s (rows ldx apart); w (9 x f, row-major: patch
 * element (dy, dx) in row 3*dy + dx), b (f) or NULL, f a multiple of VL. Pixel k = 2*ky +
 * kx of a window gets, per filter j, act(sum over the patch of x(ky + dy, kx + dx) *
 * w[(3*dy + dx)*f + j] + b[j]): FMAs from 0 in patch order, then the bias, then relu (v <
 * 0 ? +0 : v) where relu, the gather kernel's operations, so its bits; y[s*f + j] = the
 * first pixel's value that no later one beats (larger, or the first NaN: max4_avx2's
 * rule) and argmax[s*f + j] = e0 + 2*s*f + (0, f, ow*f, ow*f + f)[k] + j, the flat index
 * of that pixel in the image's (oh, ow, f) output (overwritten; the caller keeps it below
 * LANE_IDX_MAX); or, where pos is not NULL (argmax then is), pos[s*f + j] = k, the
 * window position alone (one byte). A pass of VL filters keeps their 9 weight vectors
 * (registers, L1) over the row's windows, each window's 16 inputs broadcast once into the
 * 36 FMAs that read them (the 6 x 16 gather kernel, 54 broadcasts per 108 FMAs with its
 * bias, relu, store and reload, ran a 3x3x1 -> 32 layer's 128 images at about 100
 * GFLOPS). */
void FNN(conv3x3c1_pool_row_avx2)(int64_t nwin, int64_t f, const real *x, int64_t ldx,
                                   const real *w, const real *b, int relu, int64_t e0,
                                   int64_t ow, real *y, int64_t *argmax, uint8_t *pos)
{
    const vidx off[4] = {_mm256_setzero_si256(), idx_set1(pos ? 1 : f),
                         idx_set1(pos ? 2 : ow * f), idx_set1(pos ? 3 : ow * f + f)};
    for (int64_t j0 = 0; j0 < f; j0 += VL) {
        vec wv[9];
#pragma GCC unroll 9
        for (int p = 0; p < 9; p++)
            wv[p] = vload(w + p * f + j0);
        const vidx first = idx_add(idx_set1(e0 + j0), idx_lanes());
        int64_t s = 0;
        for (; s + C3_NW <= nwin; s += C3_NW)
            c3_windows(C3_NW, s, f, j0, x, ldx, wv, b, relu, first, off, y, argmax, pos);
        for (; s < nwin; s++)
            c3_windows(1, s, f, j0, x, ldx, wv, b, relu, first, off, y, argmax, pos);
    }
}
