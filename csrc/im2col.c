/* im2col.c: lower image patches to a column matrix, and its adjoint (float and double;
 * compiled twice, FNN_PREC=32/64).
 *
 * cols is (n*oh*ow) x patch, row-major; row (n, oh, ow); the column order within a row is
 * (kh, kw, c) for NHWC and (c, kh, kw) for NCHW. Input row of output row oh and kernel
 * row r is oh*sh - pt + r*dh (likewise for columns); out-of-range positions read as 0.
 */
#include <string.h>

#include "fnn_real.h"

/* dst[0:len] = src[0:len], or zeros when src is NULL. Short runs (small channel counts,
 * e.g. C = 1 for the first layer of a CNN) are copied inline, not by a libc call. */
static inline void copy_or_zero(real *dst, const real *src, int64_t len)
{
    if (len >= 32) {
        if (src)
            memcpy(dst, src, sizeof(real) * (size_t)len);
        else
            memset(dst, 0, sizeof(real) * (size_t)len);
    } else if (src) {
        for (int64_t i = 0; i < len; i++)
            dst[i] = src[i];
    } else {
        for (int64_t i = 0; i < len; i++)
            dst[i] = 0;
    }
}

/* count runs of len elements: dst[i*dstride + j] = src[i*sstride + j] (src NULL: zeros).
 * Short runs (a kernel row of a few channels, e.g. 3 for a 3x3 kernel on one channel) get
 * loops of a constant length, which compile to a few moves per run instead of a loop. */
#define RUNS(L)                                                                            \
    for (int64_t i = 0; i < count; i++)                                                    \
        for (int64_t j = 0; j < (L); j++)                                                  \
            dst[i * dstride + j] = src ? src[i * sstride + j] : 0;                         \
    return
static void copy_runs(real *dst, int64_t dstride, const real *src, int64_t sstride,
                      int64_t count, int64_t len)
{
    switch (len) {
    case 1: RUNS(1);
    case 2: RUNS(2);
    case 3: RUNS(3);
    case 4: RUNS(4);
    case 6: RUNS(6);
    case 8: RUNS(8);
    default:
        for (int64_t i = 0; i < count; i++)
            copy_or_zero(dst + i * dstride, src ? src + i * sstride : NULL, len);
    }
}
#undef RUNS

/* Lower rows [0, g->n*g->oh) ... of x into cols (overwrites every element of cols).
 * x: NHWC (n, h, w, c) or NCHW (n, c, h, w), dense. Threads over (n, oh). */
void FNN(im2col)(const fnn_geom *g, int layout, const real *x, real *cols)
{
    const int64_t N = g->n, H = g->h, W = g->w, C = g->c, KH = g->kh, KW = g->kw;
    const int64_t OH = g->oh, OW = g->ow, patch = KH * KW * C;
    const int nt = fnn_threads_for(N * OH * OW * patch);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t t = 0; t < N * OH; t++) {
        const int64_t n = t / OH, oh = t % OH;
        if (layout == FNN_NHWC && g->dw == 1 && g->pl == 0 && (OW - 1) * g->sw + KW <= W) {
            /* every kernel row of this output row reads KW*C contiguous elements inside the
             * image horizontally: per kernel row, OW runs of KW*C (the common case) */
            real *dst = cols + (n * OH + oh) * OW * patch;
            for (int64_t r = 0; r < KH; r++) {
                const int64_t ih = oh * g->sh - g->pt + r * g->dh;
                const real *src = ih >= 0 && ih < H ? x + (n * H + ih) * W * C : NULL;
                copy_runs(dst + r * KW * C, patch, src, g->sw * C, OW, KW * C);
            }
            continue;
        }
        for (int64_t ow = 0; ow < OW; ow++) {
            real *dst = cols + ((n * OH + oh) * OW + ow) * patch;
            if (layout == FNN_NHWC) {
                const int64_t iw0 = ow * g->sw - g->pl;
                /* a kernel row reads KW*C contiguous elements when it is undilated and
                 * inside the image horizontally: one copy instead of KW */
                const int row_dense = g->dw == 1 && iw0 >= 0 && iw0 + KW <= W;
                for (int64_t r = 0; r < KH; r++) {
                    const int64_t ih = oh * g->sh - g->pt + r * g->dh;
                    if (ih < 0 || ih >= H) {
                        copy_or_zero(dst, NULL, KW * C);
                        dst += KW * C;
                    } else if (row_dense) {
                        copy_or_zero(dst, x + ((n * H + ih) * W + iw0) * C, KW * C);
                        dst += KW * C;
                    } else {
                        for (int64_t s = 0; s < KW; s++, dst += C) {
                            const int64_t iw = iw0 + s * g->dw;
                            const int in = iw >= 0 && iw < W;
                            copy_or_zero(dst, in ? x + ((n * H + ih) * W + iw) * C : NULL, C);
                        }
                    }
                }
            } else {
                for (int64_t ch = 0; ch < C; ch++) {
                    const real *plane = x + (n * C + ch) * H * W;
                    for (int64_t r = 0; r < KH; r++) {
                        const int64_t ih = oh * g->sh - g->pt + r * g->dh;
                        const int row_ok = ih >= 0 && ih < H;
                        for (int64_t s = 0; s < KW; s++) {
                            const int64_t iw = ow * g->sw - g->pl + s * g->dw;
                            *dst++ = (row_ok && iw >= 0 && iw < W) ? plane[ih * W + iw] : 0;
                        }
                    }
                }
            }
        }
    }
}

/* Output index o with o*s - p + r*d == i for kernel offset r, or -1 if none. */
static inline int64_t src_index(int64_t i, int64_t r, int64_t s, int64_t p, int64_t d,
                                int64_t out)
{
    int64_t t = i + p - r * d;
    if (t < 0 || t % s != 0)
        return -1;
    t /= s;
    return t < out ? t : -1;
}

/* dst[0:len] += src[0:len] */
static inline void add_to(real *dst, const real *src, int64_t len)
{
    for (int64_t i = 0; i < len; i++)
        dst[i] += src[i];
}

/* NHWC col2im as a scatter: walk cols in its own order (the mirror of im2col) and add each
 * row segment into its image, KW*C contiguous elements at a time where im2col copied them
 * so. Threads over n: an image's rows only touch that image. x overwritten. */
static void col2im_nhwc_scatter(const fnn_geom *g, const real *cols, real *x)
{
    const int64_t N = g->n, H = g->h, W = g->w, C = g->c, KH = g->kh, KW = g->kw;
    const int64_t OH = g->oh, OW = g->ow, patch = KH * KW * C;
    const int nt = fnn_threads_for(N * OH * OW * patch);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t n = 0; n < N; n++) {
        real *xn = x + n * H * W * C;
        memset(xn, 0, sizeof(real) * (size_t)(H * W * C));
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                const real *src = cols + ((n * OH + oh) * OW + ow) * patch;
                const int64_t iw0 = ow * g->sw - g->pl;
                const int row_dense = g->dw == 1 && iw0 >= 0 && iw0 + KW <= W;
                for (int64_t r = 0; r < KH; r++, src += KW * C) {
                    const int64_t ih = oh * g->sh - g->pt + r * g->dh;
                    if (ih < 0 || ih >= H)
                        continue;
                    if (row_dense) {
                        add_to(xn + (ih * W + iw0) * C, src, KW * C);
                        continue;
                    }
                    for (int64_t s = 0; s < KW; s++) {
                        const int64_t iw = iw0 + s * g->dw;
                        if (iw >= 0 && iw < W)
                            add_to(xn + (ih * W + iw) * C, src + s * C, C);
                    }
                }
            }
    }
}

/* Adjoint of im2col: x (overwritten) = sum of every cols entry read from each element.
 * NHWC: the scatter above, except on the generic ISA path (FASTNN_ISA=generic), which runs
 * the plain gather below as its reference (so the tests check both). The gather has each x
 * element sum its contributions, so threads over (n, ih) or (n, c, ih) never write the
 * same element. */
void FNN(col2im)(const fnn_geom *g, int layout, const real *cols, real *x)
{
    const int64_t N = g->n, H = g->h, W = g->w, C = g->c, KH = g->kh, KW = g->kw;
    const int64_t OH = g->oh, OW = g->ow, patch = KH * KW * C;
    const int nt = fnn_threads_for(N * OH * OW * patch);
    if (layout == FNN_NHWC && fnn_get_isa() > 0) {
        col2im_nhwc_scatter(g, cols, x);
    } else if (layout == FNN_NHWC) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * H; t++) {
            const int64_t n = t / H, ih = t % H;
            real *xrow = x + t * W * C;
            memset(xrow, 0, sizeof(real) * (size_t)(W * C));
            for (int64_t r = 0; r < KH; r++) {
                const int64_t oh = src_index(ih, r, g->sh, g->pt, g->dh, OH);
                if (oh < 0)
                    continue;
                for (int64_t iw = 0; iw < W; iw++) {
                    real *xe = xrow + iw * C;
                    for (int64_t s = 0; s < KW; s++) {
                        const int64_t ow = src_index(iw, s, g->sw, g->pl, g->dw, OW);
                        if (ow < 0)
                            continue;
                        const real *src = cols + ((n * OH + oh) * OW + ow) * patch + (r * KW + s) * C;
                        for (int64_t ch = 0; ch < C; ch++)
                            xe[ch] += src[ch];
                    }
                }
            }
        }
    } else {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * C * H; t++) {
            const int64_t ih = t % H, ch = (t / H) % C, n = t / (H * C);
            real *xrow = x + t * W;
            for (int64_t iw = 0; iw < W; iw++)
                xrow[iw] = 0;
            for (int64_t r = 0; r < KH; r++) {
                const int64_t oh = src_index(ih, r, g->sh, g->pt, g->dh, OH);
                if (oh < 0)
                    continue;
                for (int64_t iw = 0; iw < W; iw++) {
                    real acc = 0;
                    for (int64_t s = 0; s < KW; s++) {
                        const int64_t ow = src_index(iw, s, g->sw, g->pl, g->dw, OW);
                        if (ow >= 0)
                            acc += cols[((n * OH + oh) * OW + ow) * patch + (ch * KH + r) * KW + s];
                    }
                    xrow[iw] += acc;
                }
            }
        }
    }
}
