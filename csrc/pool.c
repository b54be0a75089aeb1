/* pool.c: 2-D max and average pooling, forward and backward (float and double; compiled
 * twice, FNN_PREC=32/64). x is NHWC (n, h, w, c) or NCHW (n, c, h, w); y is
 * (n, oh, ow, c) or (n, c, oh, ow). Windows: input row oh*sh - pt + r (no dilation).
 *
 * argmax holds, per output, the flat index of the chosen element within its sample
 * (into x[n] as a flat array). Padded positions never win; ties go to the first element
 * in row-major window order; NaN counts as larger than any number (first NaN wins).
 * Average pooling divides by the number of in-bounds elements (padding not counted).
 */
#include <string.h>

#include "fnn_real.h"

/* Does v replace the current best? Larger, or the first NaN. */
static inline int beats(real v, real best) { return v > best || (v != v && best == best); }

static inline int64_t lo_clamp(int64_t v) { return v < 0 ? 0 : v; }
static inline int64_t hi_clamp(int64_t v, int64_t hi) { return v > hi ? hi : v; }

/* One NHWC output row (n, oh) of max pooling, the plain way: a branch per element.
 * The reference for maxpool_row_nhwc below, and the path for samples too large for its
 * 32-bit lane indices. y/argmax rows overwritten. */
static void maxpool_row_nhwc_ref(const fnn_geom *g, const real *xn, int64_t oh, real *yrow,
                                 int64_t *arow)
{
    const int64_t W = g->w, C = g->c;
    const int64_t h0 = lo_clamp(oh * g->sh - g->pt);
    const int64_t h1 = hi_clamp(oh * g->sh - g->pt + g->kh, g->h);
    for (int64_t ow = 0; ow < g->ow; ow++) {
        const int64_t w0 = lo_clamp(ow * g->sw - g->pl);
        const int64_t w1 = hi_clamp(ow * g->sw - g->pl + g->kw, W);
        real *yo = yrow + ow * C;
        int64_t *ao = arow + ow * C;
        const int64_t first = (h0 * W + w0) * C;
        memcpy(yo, xn + first, sizeof(real) * (size_t)C);
        for (int64_t ch = 0; ch < C; ch++)
            ao[ch] = first + ch;
        for (int64_t ih = h0; ih < h1; ih++)
            for (int64_t iw = (ih == h0 ? w0 + 1 : w0); iw < w1; iw++) {
                const int64_t base = (ih * W + iw) * C;
                const real *xv = xn + base;
                for (int64_t ch = 0; ch < C; ch++)
                    if (beats(xv[ch], yo[ch])) {
                        yo[ch] = xv[ch];
                        ao[ch] = base + ch;
                    }
            }
    }
}

/* Lane index type matching real's width, so the compare/select loop below vectorises
 * (float lanes with int32 indices, double lanes with int64). */
#if FNN_PREC == 32
typedef int32_t lane_idx;
#define LANE_IDX_MAX INT32_MAX
#else
typedef int64_t lane_idx;
#define LANE_IDX_MAX INT64_MAX
#endif
#define POOL_CB 64 /* channels per block: best values and indices stay in registers/L1 */

/* The same row as maxpool_row_nhwc_ref, branch-free over channel blocks: per window
 * element, take = (v > best) | (v is NaN and best is not); select value and the
 * element's base offset. Same results, ties and NaN rule as the reference. Needs
 * H*W*C <= LANE_IDX_MAX. The generic ISA path (FASTNN_ISA=generic) runs the reference
 * instead, so the test suite checks both. */
static void maxpool_row_nhwc(const fnn_geom *g, const real *xn, int64_t oh, real *yrow,
                             int64_t *arow)
{
    const int64_t W = g->w, C = g->c;
    const int64_t h0 = lo_clamp(oh * g->sh - g->pt);
    const int64_t h1 = hi_clamp(oh * g->sh - g->pt + g->kh, g->h);
    for (int64_t ow = 0; ow < g->ow; ow++) {
        const int64_t w0 = lo_clamp(ow * g->sw - g->pl);
        const int64_t w1 = hi_clamp(ow * g->sw - g->pl + g->kw, W);
        for (int64_t c0 = 0; c0 < C; c0 += POOL_CB) {
            const int64_t cb = C - c0 < POOL_CB ? C - c0 : POOL_CB;
            real best[POOL_CB];
            lane_idx at[POOL_CB];
            const lane_idx first = (lane_idx)((h0 * W + w0) * C);
            for (int64_t ch = 0; ch < cb; ch++) {
                best[ch] = xn[first + c0 + ch];
                at[ch] = first;
            }
            for (int64_t ih = h0; ih < h1; ih++)
                for (int64_t iw = (ih == h0 ? w0 + 1 : w0); iw < w1; iw++) {
                    const lane_idx base = (lane_idx)((ih * W + iw) * C);
                    const real *xv = xn + base + c0;
                    for (int64_t ch = 0; ch < cb; ch++) {
                        const real v = xv[ch], b = best[ch];
                        const int take = (v > b) | ((v != v) & (b == b));
                        best[ch] = take ? v : b;
                        at[ch] = take ? base : at[ch];
                    }
                }
            real *yo = yrow + ow * C + c0;
            int64_t *ao = arow + ow * C + c0;
            for (int64_t ch = 0; ch < cb; ch++) {
                yo[ch] = best[ch];
                ao[ch] = (int64_t)at[ch] + c0 + ch;
            }
        }
    }
}

/* y, argmax overwritten. Threads over (n, oh) for NHWC, (n, c) for NCHW. */
void FNN(maxpool_fwd)(const fnn_geom *g, int layout, const real *x, real *y, int64_t *argmax)
{
    const int64_t N = g->n, H = g->h, W = g->w, C = g->c, OH = g->oh, OW = g->ow;
    const int nt = fnn_threads_for(N * OH * OW * C * g->kh * g->kw);
    if (layout == FNN_NHWC) {
        const int lanes = H * W * C <= (int64_t)LANE_IDX_MAX && fnn_get_isa() > 0;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * OH; t++) {
            const real *xn = x + (t / OH) * H * W * C;
            if (lanes)
                maxpool_row_nhwc(g, xn, t % OH, y + t * OW * C, argmax + t * OW * C);
            else
                maxpool_row_nhwc_ref(g, xn, t % OH, y + t * OW * C, argmax + t * OW * C);
        }
    } else {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * C; t++) {
            const int64_t ch = t % C;
            const real *xp = x + t * H * W;
            for (int64_t oh = 0; oh < OH; oh++) {
                const int64_t h0 = lo_clamp(oh * g->sh - g->pt);
                const int64_t h1 = hi_clamp(oh * g->sh - g->pt + g->kh, H);
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t w0 = lo_clamp(ow * g->sw - g->pl);
                    const int64_t w1 = hi_clamp(ow * g->sw - g->pl + g->kw, W);
                    int64_t bi = h0 * W + w0;
                    real best = xp[bi];
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            if (beats(xp[ih * W + iw], best)) {
                                best = xp[ih * W + iw];
                                bi = ih * W + iw;
                            }
                    y[(t * OH + oh) * OW + ow] = best;
                    argmax[(t * OH + oh) * OW + ow] = ch * H * W + bi;
                }
            }
        }
    }
}

/* dx (overwritten) = 0 except dx[n][argmax] += dy. Threads over n: argmax stays within
 * its sample, so no two threads write one element. */
void FNN(maxpool_bwd)(const fnn_geom *g, int layout, const real *dy, const int64_t *argmax,
                      real *dx)
{
    const int64_t N = g->n, xs = g->h * g->w * g->c, ys = g->oh * g->ow * g->c;
    const int nt = fnn_threads_for(N * (xs + ys));
    (void)layout; /* argmax is already a flat index in the sample's own layout */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t n = 0; n < N; n++) {
        real *dxn = dx + n * xs;
        const real *dyn = dy + n * ys;
        const int64_t *an = argmax + n * ys;
        memset(dxn, 0, sizeof(real) * (size_t)xs);
        for (int64_t e = 0; e < ys; e++)
            dxn[an[e]] += dyn[e];
    }
}

/* y (overwritten) = mean of the in-bounds elements of each window. */
void FNN(avgpool_fwd)(const fnn_geom *g, int layout, const real *x, real *y)
{
    const int64_t N = g->n, H = g->h, W = g->w, C = g->c, OH = g->oh, OW = g->ow;
    const int nt = fnn_threads_for(N * OH * OW * C * g->kh * g->kw);
    if (layout == FNN_NHWC) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * OH; t++) {
            const int64_t n = t / OH, oh = t % OH;
            const real *xn = x + n * H * W * C;
            const int64_t h0 = lo_clamp(oh * g->sh - g->pt);
            const int64_t h1 = hi_clamp(oh * g->sh - g->pt + g->kh, H);
            for (int64_t ow = 0; ow < OW; ow++) {
                const int64_t w0 = lo_clamp(ow * g->sw - g->pl);
                const int64_t w1 = hi_clamp(ow * g->sw - g->pl + g->kw, W);
                real *yo = y + (t * OW + ow) * C;
                const real inv = (real)1 / (real)((h1 - h0) * (w1 - w0));
                memset(yo, 0, sizeof(real) * (size_t)C);
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) {
                        const real *xv = xn + (ih * W + iw) * C;
                        for (int64_t ch = 0; ch < C; ch++)
                            yo[ch] += xv[ch];
                    }
                for (int64_t ch = 0; ch < C; ch++)
                    yo[ch] *= inv;
            }
        }
    } else {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * C; t++) {
            const real *xp = x + t * H * W;
            for (int64_t oh = 0; oh < OH; oh++) {
                const int64_t h0 = lo_clamp(oh * g->sh - g->pt);
                const int64_t h1 = hi_clamp(oh * g->sh - g->pt + g->kh, H);
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t w0 = lo_clamp(ow * g->sw - g->pl);
                    const int64_t w1 = hi_clamp(ow * g->sw - g->pl + g->kw, W);
                    real s = 0;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            s += xp[ih * W + iw];
                    y[(t * OH + oh) * OW + ow] = s / (real)((h1 - h0) * (w1 - w0));
                }
            }
        }
    }
}

/* dx (overwritten): each dy spread evenly over its window's in-bounds elements; overlapping
 * windows accumulate. Threads over n (NHWC) or (n, c) planes (NCHW): disjoint writes. */
void FNN(avgpool_bwd)(const fnn_geom *g, int layout, const real *dy, real *dx)
{
    const int64_t N = g->n, H = g->h, W = g->w, C = g->c, OH = g->oh, OW = g->ow;
    const int nt = fnn_threads_for(N * OH * OW * C * g->kh * g->kw);
    if (layout == FNN_NHWC) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t n = 0; n < N; n++) {
            real *dxn = dx + n * H * W * C;
            memset(dxn, 0, sizeof(real) * (size_t)(H * W * C));
            for (int64_t oh = 0; oh < OH; oh++) {
                const int64_t h0 = lo_clamp(oh * g->sh - g->pt);
                const int64_t h1 = hi_clamp(oh * g->sh - g->pt + g->kh, H);
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t w0 = lo_clamp(ow * g->sw - g->pl);
                    const int64_t w1 = hi_clamp(ow * g->sw - g->pl + g->kw, W);
                    const real *dyo = dy + ((n * OH + oh) * OW + ow) * C;
                    const real inv = (real)1 / (real)((h1 - h0) * (w1 - w0));
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) {
                            real *dv = dxn + (ih * W + iw) * C;
                            for (int64_t ch = 0; ch < C; ch++)
                                dv[ch] += dyo[ch] * inv;
                        }
                }
            }
        }
    } else {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * C; t++) {
            real *dxp = dx + t * H * W;
            const real *dyp = dy + t * OH * OW;
            memset(dxp, 0, sizeof(real) * (size_t)(H * W));
            for (int64_t oh = 0; oh < OH; oh++) {
                const int64_t h0 = lo_clamp(oh * g->sh - g->pt);
                const int64_t h1 = hi_clamp(oh * g->sh - g->pt + g->kh, H);
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t w0 = lo_clamp(ow * g->sw - g->pl);
                    const int64_t w1 = hi_clamp(ow * g->sw - g->pl + g->kw, W);
                    const real v = dyp[oh * OW + ow] / (real)((h1 - h0) * (w1 - w0));
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            dxp[ih * W + iw] += v;
                }
            }
        }
    }
}
