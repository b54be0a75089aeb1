/* conv.c: 2-D convolution forward and backward as im2col + GEMM, the batch lowered in
 * chunks of at most `chunk` images so the column workspace is bounded whatever n is
 * (float and double; compiled twice, FNN_PREC=32/64).
 *
 * NHWC: x (n, h, w, c), w (kh, kw, c, f) = a (kh*kw*c) x f matrix, y (n, oh, ow, f):
 *       y[rows, f] = cols[rows, patch] * w[patch, f] for a whole chunk in one GEMM.
 * NCHW: x (n, c, h, w), w (f, c, kh, kw) = an f x (c*kh*kw) matrix, y (n, f, oh, ow):
 *       per image, y[n] (f x oh*ow) = w * cols[n]^T, written in place.
 * 1x1 kernels with stride 1 and no padding use x itself as the column matrix.
 * Same algorithm as fastnn/backends/_conv_driver.py (the NumPy/Numba path).
 *
 * Workspace (elements, from fnn_conv2d_ws): [cols chunk][dcols chunk, backward][GEMM].
 */
#include <string.h>

#include "fnn_real.h"

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static int is_pointwise(const fnn_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 &&
           g->pb == 0 && g->pl == 0 && g->pr == 0;
}

static int64_t gemm_ws_max(const fnn_geom *g, int layout, int64_t f, int64_t chunk,
                           int backward)
{
    const int64_t ohow = g->oh * g->ow, patch = g->kh * g->kw * g->c, rows = chunk * ohow;
    int64_t ws;
    if (layout == FNN_NHWC) {
        ws = FNN(gemm_ws)(rows, f, patch);
        if (backward)
            ws = max64(max64(ws, FNN(gemm_ws)(patch, f, rows)), FNN(gemm_ws)(rows, patch, f));
    } else {
        ws = FNN(gemm_ws)(f, ohow, patch);
        if (backward)
            ws = max64(max64(ws, FNN(gemm_ws)(f, patch, ohow)), FNN(gemm_ws)(ohow, patch, f));
    }
    return ws;
}

/* Workspace elements for fnn_conv2d_fwd (backward = 0) or fnn_conv2d_bwd (backward = 1)
 * with chunks of `chunk` images and f filters. */
int64_t FNN(conv2d_ws)(const fnn_geom *g, int layout, int64_t f, int64_t chunk, int backward)
{
    const int64_t cols = is_pointwise(g) ? 0 : chunk * g->oh * g->ow * g->kh * g->kw * g->c;
    return cols * (backward ? 2 : 1) + gemm_ws_max(g, layout, f, chunk, backward);
}

/* y = act(conv(x, w) + b); overwrites y. b may be NULL. Shapes: see the file comment.
 * The bias and activation run in the GEMM's epilogue, on each tile while it is in L1. */
void FNN(conv2d_fwd)(const fnn_geom *g, int layout, int64_t f, const real *x, const real *w,
                     const real *b, int act, int64_t chunk, real *ws, real *y)
{
    const int64_t ohow = g->oh * g->ow, patch = g->kh * g->kw * g->c;
    const int64_t xs = g->h * g->w * g->c, ys = ohow * f;
    const int pw = is_pointwise(g);
    real *cols = ws;
    real *gws = ws + (pw ? 0 : chunk * ohow * patch);
    fnn_geom gc = *g;
    for (int64_t n0 = 0; n0 < g->n; n0 += chunk) {
        const int64_t nb = g->n - n0 < chunk ? g->n - n0 : chunk;
        const real *xc = x + n0 * xs;
        real *yc = y + n0 * ys;
        gc.n = nb;
        if (layout == FNN_NHWC) {
            const real *a = xc;
            if (!pw) {
                FNN(im2col)(&gc, layout, xc, cols);
                a = cols;
            }
            /* bias + activation fused into the GEMM's tiles */
            FNN(gemm_bias_act)(0, 0, nb * ohow, f, patch, 1, a, patch, w, f, 0, b, 1, act,
                               gws, yc, f);
        } else {
            if (!pw)
                FNN(im2col)(&gc, layout, xc, cols);
            for (int64_t i = 0; i < nb; i++) {
                /* bias (one per row = filter) + activation fused into the GEMM */
                if (pw) /* y[n] (f x hw) = w (f x c) * x[n] (c x hw) */
                    FNN(gemm_bias_act)(0, 0, f, ohow, patch, 1, w, patch, xc + i * xs, ohow,
                                       0, b, 0, act, gws, yc + i * ys, ohow);
                else
                    FNN(gemm_bias_act)(0, 1, f, ohow, patch, 1, w, patch,
                                       cols + i * ohow * patch, patch, 0, b, 0, act, gws,
                                       yc + i * ys, ohow);
            }
        }
    }
}

/* Gradients of conv(x, w) + b given dy: dw (shaped like w) and db (f) overwritten; dx
 * (shaped like x) overwritten unless NULL. */
void FNN(conv2d_bwd)(const fnn_geom *g, int layout, int64_t f, const real *dy, const real *x,
                     const real *w, int64_t chunk, real *ws, real *dx, real *dw, real *db)
{
    const int64_t ohow = g->oh * g->ow, patch = g->kh * g->kw * g->c;
    const int64_t xs = g->h * g->w * g->c, ys = ohow * f;
    const int pw = is_pointwise(g);
    const int64_t colsz = pw ? 0 : chunk * ohow * patch;
    real *cols = ws, *dcols = ws + colsz, *gws = ws + 2 * colsz;
    fnn_geom gc = *g;

    if (layout == FNN_NHWC)
        FNN(bias_grad)(g->n * ohow, f, 1, dy, db);
    else
        FNN(bias_grad)(g->n, f, ohow, dy, db);

    for (int64_t n0 = 0; n0 < g->n; n0 += chunk) {
        const int64_t nb = g->n - n0 < chunk ? g->n - n0 : chunk;
        const real *xc = x + n0 * xs, *dyc = dy + n0 * ys;
        real *dxc = dx ? dx + n0 * xs : NULL;
        const real beta = n0 == 0 ? 0 : 1;
        gc.n = nb;
        if (layout == FNN_NHWC) {
            const real *a = xc;
            if (!pw) {
                FNN(im2col)(&gc, layout, xc, cols);
                a = cols;
            }
            /* dw (patch x f) += cols^T (patch x rows) * dy (rows x f) */
            FNN(gemm)(1, 0, patch, f, nb * ohow, 1, a, patch, dyc, f, beta, gws, dw, f);
            if (dxc) {
                /* dcols (rows x patch) = dy (rows x f) * w^T (f x patch) */
                real *target = pw ? dxc : dcols;
                FNN(gemm)(0, 1, nb * ohow, patch, f, 1, dyc, f, w, f, 0, gws, target, patch);
                if (!pw)
                    FNN(col2im)(&gc, layout, dcols, dxc);
            }
        } else {
            if (!pw)
                FNN(im2col)(&gc, layout, xc, cols);
            for (int64_t i = 0; i < nb; i++) {
                const real *dyi = dyc + i * ys;
                const real bi = (n0 == 0 && i == 0) ? 0 : 1;
                if (pw) {
                    /* dw (f x c) += dy[n] (f x hw) * x[n]^T (hw x c) */
                    FNN(gemm)(0, 1, f, patch, ohow, 1, dyi, ohow, xc + i * xs, ohow, bi, gws,
                              dw, patch);
                    /* dx[n] (c x hw) = w^T (c x f) * dy[n] (f x hw) */
                    if (dxc)
                        FNN(gemm)(1, 0, patch, ohow, f, 1, w, patch, dyi, ohow, 0, gws,
                                  dxc + i * xs, ohow);
                } else {
                    /* dw (f x patch) += dy[n] (f x ohow) * cols[n] (ohow x patch) */
                    FNN(gemm)(0, 0, f, patch, ohow, 1, dyi, ohow, cols + i * ohow * patch,
                              patch, bi, gws, dw, patch);
                    /* dcols[n] (ohow x patch) = dy[n]^T (ohow x f) * w (f x patch) */
                    if (dxc)
                        FNN(gemm)(1, 0, ohow, patch, f, 1, dyi, ohow, w, patch, 0, gws,
                                  dcols + i * ohow * patch, patch);
                }
            }
            if (dxc && !pw)
                FNN(col2im)(&gc, layout, dcols, dxc);
        }
    }
}
