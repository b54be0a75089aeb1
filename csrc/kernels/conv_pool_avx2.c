/* conv_pool_avx2.c: a convolution's gradients from the pooled gradient of the 2x2 max
 * pooling after it (NHWC), on AVX2 + FMA lanes. Each pooled element's gradient g reaches
 * one output pixel of one filter j (its argmax): the weight gradient is the sum of g times
 * that pixel's receptive field in x, added into dw^T's row j, and the input gradient the
 * sum of g times w^T's row j, added into dx at the receptive field. A quarter of the dense
 * backward's products (the convolution's own gradient, three quarters zeros, is never
 * formed). Two kernels per image, called by conv.c (conv_pool_sparse) only after
 * fnn_cpu_max_isa() reported AVX2 and FMA; reference: the portable loops beside them in
 * conv.c (pool_dw_img_ref, pool_dx_img_ref; the tests compare both ISAs with the NumPy
 * reference). Compiled twice, FNN_PREC=32/64, with -mavx2 -mfma.
 *
 * A receptive field (and a patch row of w^T or dw^T) is R runs of L contiguous elements,
 * L a multiple of VL: run r at roff[r] from a pixel's corner in x or dx, at r * L in the
 * patch row. */
#include "fnn_real.h"
#include "vec_avx2.h"

#define NB 12 /* vectors per register block: 12 accumulators, a broadcast, a load */

/* d[0 .. NV*VL) += sum_{q < nq} gt[q] * xo[cn[q] + 0 .. NV*VL): accumulators loaded from
 * d, an FMA chain over q, stored back. NV a constant at each call. */
FNN_ALWAYS_INLINE void dw_block(int64_t nq, const real *gt, const int64_t *cn,
                                const real *xo, const int NV, real *d)
{
    vec acc[NB];
#pragma GCC unroll 12
    for (int v = 0; v < NV; v++)
        acc[v] = vload(d + v * VL);
    for (int64_t q = 0; q < nq; q++) {
        const vec gq = vset1(gt[q]);
        const real *xs = xo + cn[q];
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
 * dwt[j*R*L + r*L + e] += sum_{q < cnt[j]} gt[j*ld + q] * x[cn[j*ld + q] + roff[r] + e]
 * (gt: filter j's nonzero pooled gradients, cn: the corners of their argmax pixels). */
void FNN(pool_dw_img_avx2)(int64_t f, const int64_t *cnt, int64_t ld, const real *gt,
                           const int64_t *cn, const real *x, int64_t R, int64_t L,
                           const int64_t *roff, real *dwt)
{
    const int64_t patch = R * L, nvec = L / VL;
    for (int64_t j = 0; j < f; j++)
        for (int64_t r = 0; r < R; r++)
            for (int64_t v0 = 0; v0 < nvec && cnt[j]; v0 += NB) {
                const int nv = (int)(nvec - v0 < NB ? nvec - v0 : NB);
                const real *xo = x + roff[r] + v0 * VL;
                real *d = dwt + j * patch + r * L + v0 * VL;
#define DW_CALL(n) dw_block(cnt[j], gt + j * ld, cn + j * ld, xo, n, d)
                BLOCK_CASES(DW_CALL)
#undef DW_CALL
            }
}

/* dx (one image, padded like x), accumulated: for each window q, its pixel k < 4 (corner
 * cq[4q + k]) and run r, dx[cq[4q + k] + roff[r] + e] += sum over the filters j set in
 * mask[(4q + k)*nwords ..] of gp[q*f + j] * wt[j*R*L + r*L + e] (w^T; gp the pooled
 * gradient). Run blocks
 * outermost: w^T's columns of a block stay in L1 while the pixels go by. */
void FNN(pool_dx_img_avx2)(int64_t f, int64_t nwin, int64_t nwords, const uint64_t *mask,
                           const real *gp, const int64_t *cq, const real *wt, int64_t R,
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
#define DX_CALL(n) dx_block(nwords, m, gp + s / 4 * f, wo, patch, n, d)
                BLOCK_CASES(DX_CALL)
#undef DX_CALL
            }
        }
}
