/* conv.c: 2-D convolution forward and backward as im2col + GEMM, the batch lowered in
 * chunks of at most `chunk` images so the column workspace is bounded whatever n is
 * (float and double; compiled twice, FNN_PREC=32/64).
 *
 * NHWC: x (n, h, w, c), w (kh, kw, c, f) = a (kh*kw*c) x f matrix, y (n, oh, ow, f):
 *       y[rows, f] = cols[rows, patch] * w[patch, f] for a whole chunk in one GEMM.
 * NCHW: x (n, c, h, w), w (f, c, kh, kw) = an f x (c*kh*kw) matrix, y (n, f, oh, ow).
 *       Batched (every ISA but generic), in blocks of a few images sized for L2: the
 *       columns are lowered transposed, colsT (patch x rows) with rows = (n, oh, ow), and
 *       one GEMM Y (f x rows) = w * colsT gives y's (f, oh*ow) planes side by side; they
 *       are copied out with the bias and activation applied (branch-free, the operations
 *       of bias_act, so the same bits as the unfused convolution followed by bias_act).
 *       Backward: dy's planes side by side, dyT (f x rows); dw (+)= dyT * colsT^T and
 *       dcolsT (patch x rows) = w^T * dyT, then the adjoint of the lowering. With colsT
 *       every lowering step is a run of contiguous copies or adds along ow. Threads take
 *       whole blocks (each with its own buffers); dw is summed per group of blocks (a
 *       fixed number of groups, from the shape) and the groups' partial sums are added in
 *       order, so results do not depend on the thread count. A single block (or a single
 *       group in backward) runs on one thread with threaded steps instead.
 *       Direct (AVX2 and up; stride 1 along w, rows of 16 pixels or more, small patches:
 *       see use_nchw_direct): the row kernels of kernels/conv_nchw_avx2.c (_avx512.c for
 *       wide rows, see wide_rows) read runs of x straight into vectors; forward into y's
 *       planes in place, dw and db per group of
 *       images, dx (no padding) by adding each dy row's products into the dx rows they
 *       belong to; what is not direct goes by the batched path.
 *       Per image (the generic ISA's reference, and 1x1 kernels):
 *       y[n] (f x oh*ow) = w * cols[n]^T, written in place.
 * 1x1 kernels with stride 1 and no padding use x itself as the column matrix.
 * NHWC forward, on ISAs with a gather micro-kernel: implicit im2col, no column matrix. The
 * micro-kernel reads each output pixel's receptive field straight from x (a zero-padded
 * copy when there is padding) through a table of per-(kh, kw, c) offsets, against w packed
 * once into NR-wide panels; threads split the output pixels in MR-row tiles, each tile
 * computed over the whole patch in one pass with the bias and activation applied in
 * registers before the store. For patches up to 5/4 of the GEMM's KC this is the GEMM's
 * exact order of operations: the same bits as the im2col + GEMM path (the reference it is
 * tested against).
 * NHWC backward, on ISAs with a gather micro-kernel: dw without a column matrix too (the
 * same micro-kernel with the roles swapped: A(i, q) = x[corner of pixel q + offset of
 * patch element i], B = dy, in pieces of at most DW_PIECE pixels with one partial each,
 * summed in piece order); dx without one too where the channels fill whole NR panels (a
 * scatter micro-kernel adds each tile of dy * w^T into dx at the receptive fields, or
 * with padding into a padded image copied out: conv_dx_implicit), else through dcols =
 * dy * w^T and col2im.
 * Convolution + 2x2 max pooling (NHWC, the gather kernel): forward pooled in L1
 * (conv_pool_implicit); the backward from the pooled gradient and argmax, sparse (each
 * pooled gradient's products with its argmax pixel only: conv_pool_sparse, image kernels
 * in kernels/conv_pool_avx2.c), or the weight gradient alone by the gather kernel
 * (pack_pooled) where the sparse kernels would run scalar (one input channel).
 * NHWC and the per-image NCHW path: the algorithm of fastnn/backends/_conv_driver.py (the
 * NumPy/Numba path).
 *
 * Workspace (elements, from fnn_conv2d_ws):
 *   NHWC, implicit forward: [packed w][bias padded to panels][padded x chunk, with padding];
 *   NHWC, per image: [cols chunk][dcols chunk, backward][GEMM];
 *   NHWC backward, implicit dw: [dcols chunk][GEMM][pixel offsets, packed dy pieces,
 *   partials, padded x][implicit dx: packed w^T, per thread an MR x f tile] (dcols and
 *   GEMM unused when dx is implicit too);
 *   batched NCHW: [dw partials, backward][per thread: colsT, dcolsT (bwd), Y / dyT, GEMM]
 *   direct NCHW forward: [w packed by 4 filters][bias padded][padded x chunk, with padding];
 *   direct NCHW backward: [per group: dw, db partials][padded x chunk] (direct dw)[w^T
 *   packed] (direct dx)[the batched path's parts and per-thread areas] (the rest);
 *   sparse pooled backward (fnn_conv2d_pool_bwd_ws): [w^T, with dx][per group: dw^T
 *   partial][per thread: tables by filter and by pixel, padded x and dx images]
 *   (a few hundred KiB per thread for typical layers, whatever the chunk).
 */
#include <string.h>

#include "fnn_real.h"
#include "pool_lanes.h"

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* A 1x1 convolution whose pixels are x's own (x is the column matrix): stride 1, no
 * padding, and the whole output (not a top-left crop of it, see fnn_conv2d_bwd). */
static int is_pointwise(const fnn_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 &&
           g->pb == 0 && g->pl == 0 && g->pr == 0 && g->oh == g->h && g->ow == g->w;
}

/* A 3x3 single-channel convolution of unit stride and dilation (a first layer on gray
 * images): the AVX2 kernels of its fused forward and pooled dW read each window's 4x4
 * input patch once (kernels/conv_pool_avx2.c). */
static int is_3x3_single(const fnn_geom *g)
{
    return g->c == 1 && g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->dh == 1 &&
           g->dw == 1;
}
static int64_t round8(int64_t v) { return (v + 7) / 8 * 8; } /* buffers start 8 elements apart */

/* Does the fused forward take is_3x3_single's row kernel (conv3x3c1_pool_row_avx2: whole
 * vectors of filters, on AVX2 and AVX-512 CPUs)? */
static int use_3x3c1_rows(const fnn_geom *g, int64_t f)
{
    return fnn_get_isa() >= 1 && is_3x3_single(g) && f % (32 / (int64_t)sizeof(real)) == 0;
}

/* ---- implicit im2col (NHWC forward) ------------------------------------------------ */

/* Longest patch (kh*kw*c) the implicit path takes: its offset table lives on the stack and
 * each packed w panel (patch x NR) stays in L2. */
#define IMPLICIT_MAX_PATCH 2048

static int padded(const fnn_geom *g) { return g->pt || g->pb || g->pl || g->pr; }

/* Is a padded copy of an image no larger than the im2col rows it stands in for (the paths
 * that pad x into the workspace: implicit, NCHW direct, sparse pooled backward)? A padding
 * of almost a dilated kernel's extent (fastnn.ops computes the windows that reach the
 * image only: padding <= extent - 1) with a huge dilation made a 1x1 image's copy 2 GiB;
 * such geometries take im2col + GEMM, bounded by the column workspace. In double: the
 * products can pass 2^63. */
static int pad_fits(const fnn_geom *g)
{
    return !padded(g) || (double)(g->h + g->pt + g->pb) * (double)(g->w + g->pl + g->pr) <=
                             (double)g->oh * (double)g->ow * (double)(g->kh * g->kw);
}

/* Does this forward take the implicit path? */
static int use_implicit(const fnn_geom *g, int layout)
{
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    return layout == FNN_NHWC && kr->ukr_gather && !is_pointwise(g) &&
           g->kh * g->kw * g->c <= IMPLICIT_MAX_PATCH && pad_fits(g);
}

/* Workspace of the implicit path for chunks of `chunk` images: w packed, the bias padded
 * to whole panels, padded x. */
static int64_t implicit_ws(const fnn_geom *g, int64_t f, int64_t chunk)
{
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    const int64_t patch = g->kh * g->kw * g->c, fp = (f + kr->nr - 1) / kr->nr * kr->nr;
    const int64_t hp = g->h + g->pt + g->pb, wp = g->w + g->pl + g->pr;
    return round8(fp * patch) + round8(fp) + (padded(g) ? round8(chunk * hp * wp * g->c) : 0);
}

/* One NHWC image xi (h, w, c) into dst (h + pt + pb, w + pl + pr, c), zero-padded. */
static void pad_image(const fnn_geom *g, const real *xi, real *dst)
{
    const int64_t C = g->c, wp = g->w + g->pl + g->pr;
    memset(dst, 0, sizeof(real) * (size_t)((g->h + g->pt + g->pb) * wp * C));
    for (int64_t h = 0; h < g->h; h++)
        memcpy(dst + ((h + g->pt) * wp + g->pl) * C, xi + h * g->w * C,
               sizeof(real) * (size_t)(g->w * C));
}

/* pad_image's inverse: the interior of src (h + pt + pb, w + pl + pr, c) into xi (h, w, c). */
static void unpad_image(const fnn_geom *g, const real *src, real *xi)
{
    const int64_t C = g->c, wp = g->w + g->pl + g->pr;
    for (int64_t h = 0; h < g->h; h++)
        memcpy(xi + h * g->w * C, src + ((h + g->pt) * wp + g->pl) * C,
               sizeof(real) * (size_t)(g->w * C));
}

/* x itself, or (with padding) its zero-padded copy in xp (g->n images, NHWC, (h + pt + pb)
 * x (w + pl + pr) x c each): what the implicit paths read. */
static const real *padded_source(const fnn_geom *g, const real *x, real *xp, int nt)
{
    if (!padded(g))
        return x;
    const int64_t img = (g->h + g->pt + g->pb) * (g->w + g->pl + g->pr) * g->c;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t n = 0; n < g->n; n++)
        pad_image(g, x + n * g->h * g->w * g->c, xp + n * img);
    return xp;
}

/* The receptive-field offsets of the implicit paths: patch element (r, s, c) of an output
 * pixel sits at off[(r*kw + s)*c + c] from the pixel's top-left corner in the (padded) x. */
static void patch_offsets(const fnn_geom *g, int64_t *off)
{
    const int64_t C = g->c, wp = g->w + g->pl + g->pr;
    for (int64_t r = 0; r < g->kh; r++)
        for (int64_t s = 0; s < g->kw; s++)
            for (int64_t c = 0; c < C; c++)
                off[(r * g->kw + s) * C + c] = (r * g->dh * wp + s * g->dw) * C + c;
}

/* The implicit forward's operands, set up in ws (implicit_ws): off = the patch offsets, *bp
 * = w packed into NR-wide panels, *bias = b zero-padded to whole panels (zeros without b);
 * returns the x the gather kernel reads (padded_source, on nt threads). */
static const real *implicit_setup(const fnn_geom *g, int64_t f, const real *x, const real *w,
                                  const real *b, real *ws, int nt, int64_t *off, real **bp,
                                  real **bias)
{
    const int nr = KERNEL_FOR(fnn_get_isa())->nr;
    const int64_t patch = g->kh * g->kw * g->c, npanels = (f + nr - 1) / nr;
    *bp = ws;
    *bias = ws + round8(npanels * nr * patch);
    patch_offsets(g, off);
    FNN(pack_b)(patch, f, w, f, 1, nr, *bp);
    for (int64_t j = 0; j < npanels * nr; j++)
        (*bias)[j] = b && j < f ? b[j] : 0;
    return padded_source(g, x, *bias + round8(npanels * nr), nt);
}

/* y (g->n, oh, ow, f) = act(conv(x, w) + b) for a chunk of g->n images, NHWC, without a
 * column matrix; overwrites y. w is packed into ws first, b copied there zero-padded to
 * whole panels (the micro-kernel adds NR bias values per tile, with the activation, before
 * its store), and x copied zero-padded when there is padding. Output pixel q = (n, oh, ow)
 * reads x at rows[q] + off[p]. */
static void conv_fwd_implicit(const fnn_geom *g, int64_t f, const real *x, const real *w,
                              const real *b, int act, real *ws, real *y)
{
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    const int mr = kr->mr, nr = kr->nr;
    const int64_t C = g->c, patch = g->kh * g->kw * C, ohow = g->oh * g->ow;
    const int64_t hp = g->h + g->pt + g->pb, wp = g->w + g->pl + g->pr;
    const int64_t npanels = (f + nr - 1) / nr, m = g->n * ohow;
    const int relu = act == FNN_ACT_RELU;
    int64_t off[IMPLICIT_MAX_PATCH];
    real *bp, *bias;
    const int nt = fnn_threads_for_macs(m * f * patch);
    const real *src = implicit_setup(g, f, x, w, b, ws, nt, off, &bp, &bias);

    const int64_t ntiles = (m + mr - 1) / mr, chunk = fnn_dyn_chunk(ntiles, nt);
#pragma omp parallel for num_threads(nt) schedule(dynamic, chunk) if (nt > 1)
    for (int64_t t = 0; t < ntiles; t++) {
        _Alignas(64) real tmp[32 * 32]; /* edge tile (MR, NR <= 32) */
        const real *rows[32];
        const int64_t q0 = t * mr, nrows = min64(mr, m - q0);
        /* the tile's first pixel (n, oh, ow), then the next ones by counting */
        int64_t n = q0 / ohow, oh = q0 % ohow / g->ow, ow = q0 % g->ow;
        for (int i = 0; i < mr; i++) {
            /* rows past the end repeat the first: computed, never stored */
            if (i < nrows) {
                rows[i] = src + ((n * hp + oh * g->sh) * wp + ow * g->sw) * C;
                fnn_next_rc(g->oh, g->ow, &n, &oh, &ow);
            } else {
                rows[i] = rows[0];
            }
        }
        real *yt = y + q0 * f;
        for (int64_t jp = 0; jp < npanels; jp++) {
            const int64_t cols = min64(nr, f - jp * nr);
            const real *bpp = bp + jp * nr * patch;
            const real *bj = b ? bias + jp * nr : NULL;
            if (nrows == mr && cols == nr) {
                kr->ukr_gather(patch, rows, off, bpp, nr, bj, relu, 0, yt + jp * nr, f);
                continue;
            }
            kr->ukr_gather(patch, rows, off, bpp, nr, bj, relu, 0, tmp, nr);
            for (int64_t i = 0; i < nrows; i++)
                memcpy(yt + i * f + jp * nr, tmp + i * nr, sizeof(real) * (size_t)cols);
        }
    }
}

/* The fused convolution + 2x2 max pooling (stride 2, no padding) for a chunk of g->n
 * images, NHWC: y (g->n, oh/2, ow/2, f) and argmax (flat indices into each image's
 * (oh, ow, f) convolution output, as fnn_maxpool_fwd gives) overwritten, or where pos is not
 * NULL (argmax then is) pos, each window position 0 .. 3 (one byte); the convolution's
 * output is never written, and its pixels past 2*(oh/2) x 2*(ow/2), which no window reads,
 * are never computed. The gather kernel's rows are the pixels of whole windows, window
 * after window ((0, 0), (0, 1), (1, 0), (1, 1) each); a group of FUSE_ROWS rows (whole MR
 * tiles) is computed into L1, up to FUSE_COLS channels (whole NR panels) at a time, and
 * pooled there by max4_window (the rule of fnn_maxpool_fwd), one call per window and pass
 * (per window and panel, the 3x3x1 -> 32 layer took 1.11x the time: A/B, both orders).
 * Each pixel is the same product as in conv_fwd_implicit (the
 * same kernel over the same patch), so the same bits as convolving and then pooling. */
#define FUSE_ROWS 12 /* lcm(MR, 4) for MR = 6 (AVX2); other MR: the fused path is off */
#define FUSE_COLS 64 /* channels per pooling pass, at most (whole NR panels) */
/* Each group first asks for the output lines (y, argmax or pos) of the group this many
 * ahead, for writing (fnn_prefetch_write): in a training step the layer after reads the
 * pooled output on both cores (the Dense layer's column slabs), so every line this
 * forward writes was the other core's too. The 3x3x32 -> 64 layer of program 2, 2 threads,
 * Zen 2 VM (2026-12-05): 2.66 -> 2.51 ms called after its backward (2.49 without it); 4.6
 * us of work per group a thread, so 4 groups cover the 460 ns round trip many times. (A
 * thread's first 4 groups go without, and its last 4 ask for the next thread's first
 * lines: 8 groups of its hundreds.) */
#define FUSE_AHEAD 4

static void conv_pool_implicit(const fnn_geom *g, int64_t f, const real *x, const real *w,
                               const real *b, int act, real *ws, real *y, int64_t *argmax,
                               uint8_t *pos)
{
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    const int mr = kr->mr, nr = kr->nr;
    const int64_t C = g->c, patch = g->kh * g->kw * C, OW = g->ow;
    const int64_t hp = g->h + g->pt + g->pb, wp = g->w + g->pl + g->pr;
    const int64_t PH = g->oh / 2, PW = g->ow / 2, wins = g->n * PH * PW;
    const int64_t npanels = (f + nr - 1) / nr, per_group = FUSE_ROWS / 4;
    const int64_t pass = FUSE_COLS / nr; /* panels per pooling pass (NR <= 32) */
    const int relu = act == FNN_ACT_RELU, avx2 = fnn_get_isa() >= 1;
    int64_t off[IMPLICIT_MAX_PATCH];
    real *bp, *bias;
    const int nt = fnn_threads_for_macs(wins * 4 * f * patch);
    const real *src = implicit_setup(g, f, x, w, b, ws, nt, off, &bp, &bias);
#if FNN_X86_KERNELS
    /* is_3x3_single, on AVX2 and AVX-512 CPUs: pooled row by pooled row, its weights in
     * registers (conv3x3c1_pool_row_avx2: the same bits). With the AVX-512 ISA too, where
     * the 12 x 32 gather kernel took 0.720 ms for 128 x 28 x 28 x 1 -> 32 and this one
     * 0.501 (Zen 4 with FASTNN_ISA=avx512, 2026-12-05, in-process A/B, 2 threads, medians
     * of 21; not measured on an Intel CPU) */
    if (use_3x3c1_rows(g, f)) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) /* FNN_IMAGE_SPLIT */
        for (int64_t r = 0; r < g->n * PH; r++) {
            const int64_t n = r / PH, ph = r % PH;
            FNN(conv3x3c1_pool_row_avx2)(PW, f, src + (n * hp + 2 * ph) * wp, wp, w, b, relu,
                                         2 * ph * OW * f, OW, y + r * PW * f,
                                         pos ? NULL : argmax + r * PW * f,
                                         pos ? pos + r * PW * f : NULL);
        }
        return;
    }
#endif

    const int64_t ngroups = (wins + per_group - 1) / per_group;
    const int prfchw = fnn_cpu_prefetchw();
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) /* FNN_IMAGE_SPLIT */
    for (int64_t grp = 0; grp < ngroups; grp++) {
        _Alignas(64) real tmp[FUSE_ROWS * FUSE_COLS]; /* the group's rows, a pass's panels */
        const real *rows[FUSE_ROWS] = {0}; /* (set before use: GCC cannot tell) */
        int64_t base[FUSE_ROWS / 4] = {0}; /* each window's first pixel in argmax's indexing */
        const int64_t w0 = grp * per_group, nw = min64(per_group, wins - w0);
        const int64_t wa = w0 + FUSE_AHEAD * per_group; /* the group ahead's windows */
        if (wa < wins) {
            const int64_t na = min64(per_group, wins - wa) * f;
            fnn_prefetch_write(prfchw, y + wa * f, na * (int64_t)sizeof(real));
            if (pos)
                fnn_prefetch_write(prfchw, pos + wa * f, na);
            else
                fnn_prefetch_write(prfchw, argmax + wa * f, na * (int64_t)sizeof(int64_t));
        }
        /* the group's first window (n, ph, pw), then the next ones by counting */
        int64_t n = w0 / (PH * PW), ph = w0 % (PH * PW) / PW, pw = w0 % PW;
        for (int64_t s = 0; s < per_group; s++) {
            if (s >= nw) { /* windows past the end: repeat the first */
                for (int k = 0; k < 4; k++)
                    rows[4 * s + k] = rows[k];
                base[s] = base[0];
                continue;
            }
            for (int k = 0; k < 4; k++) {
                const int64_t oh = 2 * ph + k / 2, ow = 2 * pw + k % 2;
                rows[4 * s + k] = src + ((n * hp + oh * g->sh) * wp + ow * g->sw) * C;
            }
            base[s] = (2 * ph * OW + 2 * pw) * f;
            fnn_next_rc(PH, PW, &n, &ph, &pw);
        }
        /* passes of up to FUSE_COLS channels (whole panels): the passes' panels into tmp,
         * then each window pooled over all of them in one max4_window call */
        for (int64_t jp0 = 0; jp0 < npanels; jp0 += pass) {
            const int64_t j0 = jp0 * nr, jp1 = min64(npanels, jp0 + pass);
            const int64_t cols = min64(jp1 * nr, f) - j0, ld = (jp1 - jp0) * nr;
            for (int64_t jp = jp0; jp < jp1; jp++)
                for (int t = 0; t < FUSE_ROWS / mr; t++)
                    kr->ukr_gather(patch, rows + t * mr, off, bp + jp * nr * patch, nr,
                                   b ? bias + jp * nr : NULL, relu, 0,
                                   tmp + t * mr * ld + (jp - jp0) * nr, ld);
            for (int64_t s = 0; s < nw; s++) {
                const real *t0 = tmp + 4 * s * ld;
                real *yo = y + (w0 + s) * f + j0;
                const real *p[4] = {t0, t0 + ld, t0 + 2 * ld, t0 + 3 * ld};
                if (pos) { /* positions k + j, then k alone as bytes */
                    const lane_idx e[4] = {0, 1, 2, 3};
                    int64_t at[FUSE_COLS];
                    max4_window(avx2, cols, p, e, yo, at);
                    for (int64_t j = 0; j < cols; j++)
                        pos[(w0 + s) * f + j0 + j] = (uint8_t)(at[j] - j);
                    continue;
                }
                const lane_idx e[4] = {(lane_idx)(base[s] + j0), (lane_idx)(base[s] + j0 + f),
                                       (lane_idx)(base[s] + j0 + OW * f),
                                       (lane_idx)(base[s] + j0 + OW * f + f)};
                max4_window(avx2, cols, p, e, yo, argmax + (w0 + s) * f + j0);
            }
        }
    }
}

/* Output pixels per piece of the implicit dW, at most: each piece's dy rows are packed
 * (DW_PIECE x NR per panel, L2) and multiplied into the piece's own partial dw. More than
 * one piece: a multiple of DW_SPLIT pieces of equal length (up to 1), so that 2 or 4
 * threads get equal shares (13 pieces of 1024 on 2 threads took the time of 14; the
 * pieces depend on the pixel count only, not on the threads, nor then the sums). */
#define DW_PIECE 1024
#define DW_SPLIT 4
#define DW_RUN 128
/* Elements of dw per share of the threads' sum of the pieces' partials */
#define DW_SUM_BLOCK 1024

/* Length of the implicit dW's pieces over `rows` pixels (their count: ceil(rows / len)) */
static int64_t dw_piece_len(int64_t rows)
{
    int64_t pieces = (rows + DW_PIECE - 1) / DW_PIECE;
    if (pieces > 1)
        pieces = (pieces + DW_SPLIT - 1) / DW_SPLIT * DW_SPLIT;
    return rows ? (rows + pieces - 1) / pieces : 1;
}

/* Workspace of the implicit dW for chunks of `chunk` images: pixel offsets (int64), one
 * packed dy piece per thread, the pieces' partials, padded x. */
static int64_t implicit_dw_ws(const fnn_geom *g, int64_t f, int64_t chunk)
{
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    const int64_t rows = chunk * g->oh * g->ow, patch = g->kh * g->kw * g->c;
    const int64_t pieces = (rows + dw_piece_len(rows) - 1) / dw_piece_len(rows);
    const int64_t fp = (f + kr->nr - 1) / kr->nr * kr->nr;
    const int64_t hp = g->h + g->pt + g->pb, wp = g->w + g->pl + g->pr;
    return round8(rows * (int64_t)(sizeof(int64_t) / sizeof(real) + 1)) +
           fnn_max_threads() * round8(DW_PIECE * fp) + pieces * round8(patch * f) +
           (padded(g) ? round8(chunk * hp * wp * g->c) : 0);
}

/* The gradient of a 2x2 max pooling (stride 2) of the convolution's output, as dW's B:
 * dyp (n, oh/2, ow/2, f) the pooled gradient, argmax flat indices into each image's
 * (oh, ow, f) output (fnn_maxpool_fwd's) or, argmax NULL, pos the window positions
 * (fnn_conv2d_pool_fwd's). dW's pixels are then taken window after window,
 * the four of each in the order (0, 0), (0, 1), (1, 0), (1, 1). */
typedef struct {
    const real *dyp;
    const real *ypool; /* NULL, or the pooled relu output: relu's derivative applied */
    const int64_t *argmax; /* flat indices, or NULL: */
    const uint8_t *pos;    /* window positions 0 .. 3 (fnn_conv2d_pool_fwd's pos) */
} pooled_dy;

/* B's panels for pixels q0 .. q0 + len of the window order (bp[jp * nr * len + i * nr + j],
 * i = q - q0, channel jp * nr + j; overwritten): the channels whose argmax pixel q is take
 * the pooled gradient, every other element is 0 (the dense dy the pooling's backward
 * scatters, never written whole). A window's four rows are written together, by compares
 * and selects that vectorise (a zeroed panel and one store per channel did not: as slow
 * as the pooling's own scatter; four passes, one per row, read argmax four times); the
 * compare is on the low 32 bits of argmax minus the element's own index (exact: their
 * difference is below 2 * ow * f for a valid argmax; another argmax gives other values,
 * never other addresses), or on the window position itself (pos; one above 3 matches no
 * row). */
static void pack_pooled(const fnn_geom *g, int64_t f, const pooled_dy *pd, int64_t q0,
                        int64_t len, int nr, real *bp)
{
    const int64_t PH = g->oh / 2, PW = g->ow / 2, rowf = g->ow * f;
    const int64_t npanels = (f + nr - 1) / nr;
    /* d: argmax minus the element's index at pixel 0, or its window position */
    const int32_t o1 = pd->pos ? 1 : (int32_t)f, o2 = pd->pos ? 2 : (int32_t)rowf;
    const int32_t o3 = pd->pos ? 3 : (int32_t)(rowf + f);
    _Alignas(64) real spare[4 * 32]; /* the rows of a window outside the piece */
    /* the first window's (ph, pw), then the next ones' by counting (n: not needed) */
    int64_t n = 0, ph = q0 / 4 % (PH * PW) / PW, pw = q0 / 4 % PW;
    for (int64_t win = q0 / 4; win * 4 < q0 + len; win++) {
        const int64_t base = (2 * ph * g->ow + 2 * pw) * f; /* (0, 0)'s index, channel 0 */
        const int64_t i0 = win * 4 - q0; /* the window's first row in the piece */
        for (int64_t jp = 0; jp < npanels; jp++) {
            const int64_t c0 = jp * nr, cols = min64(nr, f - c0);
            const real *gr = pd->dyp + win * f + c0;
            const real *yr = pd->ypool ? pd->ypool + win * f + c0 : NULL;
            const int64_t *ar = pd->pos ? NULL : pd->argmax + win * f + c0;
            const uint8_t *kp = pd->pos ? pd->pos + win * f + c0 : NULL;
            real *panel = bp + jp * nr * len, *r[4];
            for (int k = 0; k < 4; k++)
                r[k] = i0 + k >= 0 && i0 + k < len ? panel + (i0 + k) * nr : spare + k * nr;
            real *restrict r0 = r[0], *restrict r1 = r[1], *restrict r2 = r[2],
                 *restrict r3 = r[3];
            for (int64_t j = 0; j < cols; j++) {
                const int32_t d = kp ? (int32_t)kp[j] : (int32_t)(ar[j] - base - c0) - (int32_t)j;
                real v = gr[j]; /* loaded unconditionally: the selects vectorise */
                if (yr)
                    v = yr[j] > 0 ? v : 0;
                r0[j] = d == 0 ? v : 0;
                r1[j] = d == o1 ? v : 0;
                r2[j] = d == o2 ? v : 0;
                r3[j] = d == o3 ? v : 0;
            }
            for (int64_t j = cols; j < nr; j++)
                r0[j] = r1[j] = r2[j] = r3[j] = 0;
        }
        fnn_next_rc(PH, PW, &n, &ph, &pw);
    }
}

/* dw (patch x f) = (first ? 0 : dw) + sum over the chunk's output pixels q of
 * x[q's corner + off[i]] * dy[q, j]: a convolution's weight gradient without a column
 * matrix, NHWC; dy dense, or (pd not NULL) the pooled gradient (pooled_dy: the pixels of
 * whole windows only). The gather micro-kernel reads A(i, q) = rows[i][pix[q]] with
 * rows[i] = x + off[i] (the patch offsets) and pix[q] the pixel's corner; B is dy (or
 * built from the pooled gradient, pack_pooled), packed per piece of
 * at most DW_PIECE pixels (dw_piece_len). On AVX2 the pooled gradient's product skips the
 * packing: pool_dw_rows_avx2 reads the gradient and argmax where they are and runs the
 * same FMA chains (the same bits; a 3x3x1 -> 32 layer's dW 1.40 -> 1.05 ms on Zen 2,
 * where packing had cost more than the product). Threads take whole pieces; each piece has its
 * own partial, summed into dw in piece order, so results do not depend on the thread
 * count. */
static void conv_dw_implicit(const fnn_geom *g, int64_t f, const real *x, const real *dy,
                             const pooled_dy *pd, int first, real *ws, real *dw)
{
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    const int mr = kr->mr, nr = kr->nr;
    const int64_t C = g->c, patch = g->kh * g->kw * C, ohow = g->oh * g->ow;
    const int64_t PH = g->oh / 2, PW = g->ow / 2;
    const int64_t rows = pd ? g->n * PH * PW * 4 : g->n * ohow, plen = dw_piece_len(rows);
    const int64_t pieces = (rows + plen - 1) / plen;
    const int64_t hp = g->h + g->pt + g->pb, wp = g->w + g->pl + g->pr;
    const int64_t npanels = (f + nr - 1) / nr, fp = npanels * nr, pf = round8(patch * f);
    int64_t *pix = (int64_t *)ws;
    real *bufs = ws + round8(rows * (int64_t)(sizeof(int64_t) / sizeof(real) + 1));
    real *parts = bufs + fnn_max_threads() * round8(DW_PIECE * fp);
    real *xp = parts + pieces * pf;
    int64_t off[IMPLICIT_MAX_PATCH];
    patch_offsets(g, off);

    const int nt = fnn_threads_for_macs(rows * f * patch);
    const real *src = padded_source(g, x, xp, nt);
    /* The pooled gradient's B without packing, on AVX2 (the same bits): pool_dw_rows_avx2;
     * with the AVX-512 ISA only for is_3x3_single, where it took 0.546 ms against the
     * packed B's 0.680 (128 x 28 x 28 x 1 -> 32, its whole pooled backward; Zen 4, as
     * conv_pool_implicit's); 3 x 3 x 32 -> 64 measured the same either way there (1.80 vs
     * 1.84 ms), so it keeps the packed B, measured best on the Xeon */
    const int rows_kernel = pd && FNN_X86_KERNELS &&
                            (fnn_isa_avx2_tiles(fnn_get_isa()) ||
                             (fnn_get_isa() == FNN_ISA_AVX512 && is_3x3_single(g)));
    /* is_3x3_single: its windows' 4 x 4 input patches broadcast once per element
     * (pool_dw_rows_avx2's ld3: x's row stride; pix then holds the windows' corners only) */
    const int64_t ld3 = rows_kernel && is_3x3_single(g) ? wp : 0;

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        /* the pixels' corners, image by image (filled by one thread they took a tenth of a
         * 3x3x1 -> 32 dW); with ld3, the windows' only (their pixels' follow) */
#pragma omp for schedule(static)
        for (int64_t n = 0; n < g->n; n++) {
            int64_t q = n * (rows / g->n);
            if (pd && ld3)
                for (int64_t oh = 0, w = q / 4; oh < 2 * PH; oh += 2)
                    for (int64_t ow = 0; ow < 2 * PW; ow += 2)
                        pix[w++] = (n * hp + oh) * wp + ow;
            else if (pd)
                for (int64_t oh = 0; oh < 2 * PH; oh += 2)
                    for (int64_t ow = 0; ow < 2 * PW; ow += 2)
                        for (int k = 0; k < 4; k++)
                            pix[q++] = ((n * hp + (oh + k / 2) * g->sh) * wp +
                                        (ow + k % 2) * g->sw) * C;
            else
                for (int64_t oh = 0; oh < g->oh; oh++)
                    for (int64_t ow = 0; ow < g->ow; ow++)
                        pix[q++] = ((n * hp + oh * g->sh) * wp + ow * g->sw) * C;
        }
        /* implicit barrier: every corner is in place */
        real *bp = bufs + fnn_thread_num() * round8(DW_PIECE * fp);
        _Alignas(64) real tmp[32 * 32]; /* edge tile (MR, NR <= 32) */
        const real *arow[32];
#pragma omp for schedule(static) /* FNN_IMAGE_SPLIT */
        for (int64_t s = 0; s < pieces; s++) {
            const int64_t q0 = s * plen, len = min64(plen, rows - q0);
            real *part = parts + s * pf;
            /* dy's rows are B's: read in place when they are one or two whole panels wide
             * and a short patch (at most two row tiles) reads them only once or twice:
             * packing copied 64 bytes per pixel and panel (3 x 3 x 1 -> 32: 0.80x time in
             * place). Else packed: rows far apart share few of L1's sets, and every row
             * tile reads them again (3 x 3 x 32 -> 64 in place: 1.14x, 3 x 3 x 16 -> 32:
             * 1.02-1.05x) */
            const int in_place = !pd && f % nr == 0 && f <= 2 * nr && patch <= 2 * mr;
            if (pd) {
                if (!rows_kernel)
                    pack_pooled(g, f, pd, q0, len, nr, bp);
            } else if (!in_place) {
                FNN(pack_b)(len, f, dy + q0 * f, f, 1, nr, bp);
            }
            /* With at least 4 panels and 3 row tiles, in runs of DW_RUN pixels, each
             * through every tile: the run's dy panels and x rows are reused from L1 (one
             * pass over the whole piece per tile streamed both from L2: the gather kernel
             * waited on its loads). In-process A/B, 1-2 threads: 3 x 3 x 32 -> 64 0.81-0.91x
             * time, 3 x 3 x 64 -> 128 0.76-0.81x; 3 x 3 x 16 -> 32 (2 panels) 1.03-1.08x:
             * there the tiles' extra loads and stores of C cost more than the reuse gains. */
            const int64_t step = npanels >= 4 && patch > 2 * mr ? DW_RUN : len;
            for (int64_t q1 = 0; q1 < len; q1 += step) {
                const int64_t run = min64(step, len - q1);
                const real beta = q1 == 0 ? 0 : 1;
#if FNN_X86_KERNELS
                if (rows_kernel) {
                    FNN(pool_dw_rows_avx2)(f, q0 + q1, run, PH, PW, g->ow, pd->dyp, pd->ypool,
                                           pd->argmax, pd->pos, pix, src, patch, off, ld3,
                                           q1 != 0, part);
                    continue;
                }
#endif
                for (int64_t i0 = 0; i0 < patch; i0 += mr) {
                    const int64_t nrows = min64(mr, patch - i0);
                    for (int i = 0; i < mr; i++) /* rows past the end repeat the first */
                        arow[i] = src + off[i0 + (i < nrows ? i : 0)];
                    for (int64_t jp = 0; jp < npanels; jp++) {
                        const int64_t cols = min64(nr, f - jp * nr);
                        const real *bj = in_place ? dy + (q0 + q1) * f + jp * nr
                                                  : bp + jp * nr * len + q1 * nr;
                        const int64_t ldb = in_place ? f : nr;
                        real *ct = part + i0 * f + jp * nr;
                        if (nrows == mr && cols == nr) {
                            kr->ukr_gather(run, arow, pix + q0 + q1, bj, ldb, NULL, 0, beta,
                                           ct, f);
                            continue;
                        }
                        kr->ukr_gather(run, arow, pix + q0 + q1, bj, ldb, NULL, 0, 0, tmp,
                                       nr);
                        for (int64_t i = 0; i < nrows; i++)
                            for (int64_t j = 0; j < cols; j++)
                                ct[i * f + j] = beta == 0 ? tmp[i * nr + j]
                                                          : ct[i * f + j] + tmp[i * nr + j];
                    }
                }
            }
        }
        /* implicit barrier: every partial is complete */
#pragma omp for schedule(static)
        for (int64_t e0 = 0; e0 < patch * f; e0 += DW_SUM_BLOCK)
            fnn_add_partials(min64(DW_SUM_BLOCK, patch * f - e0), parts + e0, pieces, pf, first,
                             dw + e0);
    }
}

/* Does the NHWC backward take dx without dcols (conv_dx_implicit)? The implicit path, a
 * scatter micro-kernel, and whole NR-wide panels of channels (each panel's elements
 * contiguous in dx). */
static int use_implicit_dx(const fnn_geom *g, int layout)
{
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    return use_implicit(g, layout) && kr->ukr_scatter && g->c % kr->nr == 0;
}

/* Workspace of conv_dx_implicit: w^T packed into NR-wide panels of patch elements, then
 * per thread an MR x f tile for the last rows of dy and, with padding, a padded image. */
static int64_t implicit_dx_ws(const fnn_geom *g, int64_t f)
{
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    const int64_t image = padded(g) ? round8((g->h + g->pt + g->pb) *
                                             (g->w + g->pl + g->pr) * g->c)
                                    : 0;
    return round8((g->kh * g->kw * g->c + kr->nr - 1) / kr->nr * kr->nr * f) +
           fnn_max_threads() * (round8(kr->mr * f) + image);
}

/* conv_dx_implicit's tiles over pixels [lo, hi) of the batch (on the grid of MR pixels
 * from q0's), scattered into images: pixel q of image n = q / ohow lands in img + (n - n0)
 * * img_stride at its receptive field's corner, rows `row` elements apart (an image of
 * rows of `row` pixels, C channels each). A tile's rows outside [lo, hi) go to spare. */
static void dx_tiles(const kernel_t *kr, const fnn_geom *g, int64_t f, const real *dy,
                     const real *bp, const int64_t *off, int64_t q0, int64_t lo, int64_t hi,
                     real *img, int64_t n0, int64_t img_stride, int64_t row, real *edge,
                     real *spare)
{
    const int mr = kr->mr, nr = kr->nr;
    const int64_t C = g->c, ohow = g->oh * g->ow, npanels = g->kh * g->kw * C / nr;
    for (int64_t t = lo - (q0 + lo) % mr; t < hi; t += mr) {
        const int64_t r0 = max64(t, lo), r1 = min64(t + mr, hi); /* rows of ours */
        const real *a = edge;
        if (r0 == t && r1 == t + mr) {
            a = dy + t * f;
        } else { /* the micro-kernel reads MR rows: copy ours */
            memset(edge, 0, sizeof(real) * (size_t)(mr * f));
            memcpy(edge + (r0 - t) * f, dy + r0 * f, sizeof(real) * (size_t)((r1 - r0) * f));
        }
        real *corner[32], *crow[32];
        for (int64_t i = 0; i < mr; i++) {
            const int64_t q = t + i, n = q / ohow, oh = q % ohow / g->ow, ow = q % g->ow;
            corner[i] = q >= r0 && q < r1
                            ? img + (n - n0) * img_stride + (oh * g->sh * row + ow * g->sw) * C
                            : NULL;
        }
        for (int64_t jp = 0; jp < npanels; jp++) {
            for (int64_t i = 0; i < mr; i++)
                crow[i] = corner[i] ? corner[i] + off[jp * nr] : spare + i * nr;
            kr->ukr_scatter(f, a, f, bp + jp * nr * f, crow);
        }
    }
}

/* dx (n, h, w, c), overwritten = col2im(dy * w^T), NHWC, without the dcols
 * matrix: each MR x NR tile of dcols (MR output pixels, NR channels of one (kh, kw)) is
 * computed by the scatter micro-kernel (dy's rows read in place against w^T packed once,
 * K = f) and added in registers into dx at the pixels' receptive fields. Threads take
 * whole images, whose dx they alone write; tiles run in pixel order, each through every
 * panel (its receptive fields stay in L1). The tiles lie on a grid of MR pixels counted
 * from the batch's first (q0: this chunk's first pixel in it), whatever the threads and
 * chunks: a tile across a thread's or chunk's edge is computed on both sides, each adding
 * its own rows, so every dx element sums the same terms in the same order (the same
 * bits). In-process against dcols + col2im: 0.88-0.93x time for the CNN's (128, 13, 13,
 * 32) -> 64 backward (dx and dW), 0.72-0.84x for (32, 16, 16, 16) -> 32. With padding,
 * image by image through a padded image (the thread's own, in ws), whose interior is
 * copied to dx: in-process A/B against dcols + col2im (Zen 4 VM, 2026-12-06, medians of
 * 21, bench/ab_builds.py dense), "same" 3x3 backward with dx, dw and db, 128 x 16 x 16 x
 * 32 -> 32 0.87x the time on 2 threads, 0.89x on 1; 128 x 8 x 8 x 64 -> 64 0.90x, 0.92x. */
static void conv_dx_implicit(const fnn_geom *g, int64_t f, const real *dy, const real *w,
                             int64_t q0, real *ws, real *dx)
{
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    const int mr = kr->mr, nr = kr->nr;
    const int64_t C = g->c, patch = g->kh * g->kw * C, ohow = g->oh * g->ow;
    const int64_t xs = g->h * g->w * C, npanels = patch / nr; /* C % nr == 0 */
    const int64_t hp = g->h + g->pt + g->pb, wp = g->w + g->pl + g->pr;
    const int64_t image = padded(g) ? round8(hp * wp * C) : 0;
    int64_t off[IMPLICIT_MAX_PATCH];
    patch_offsets(g, off);
    real *bp = ws, *per_thread = ws + round8(npanels * nr * f);
    FNN(pack_b)(f, patch, w, 1, f, nr, bp); /* B(k, j) = w[j, k]: w^T, f x patch */
    const int nt = fnn_threads_for_macs(g->n * ohow * patch * f);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int tid = fnn_thread_num(), nth = fnn_team_size();
        _Alignas(64) real spare[32 * 32]; /* the rows of a tile outside the thread's */
        /* such a tile's dy rows, zero-padded; with padding, the padded image */
        real *edge = per_thread + tid * (round8(mr * f) + image);
        real *pimg = edge + round8(mr * f);
        const int64_t n0 = g->n * tid / nth, n1 = g->n * (tid + 1) / nth;
        if (!image) { /* straight into dx, the thread's images at once */
            memset(dx + n0 * xs, 0, sizeof(real) * (size_t)((n1 - n0) * xs));
            dx_tiles(kr, g, f, dy, bp, off, q0, n0 * ohow, n1 * ohow, dx, 0, xs, g->w, edge,
                     spare);
        }
        /* Padded: image by image into the padded image (a tile across two images is
         * computed for each, its other rows to spare), whose interior is dx's image: each
         * dx element sums the same terms in the same order, whatever the threads. */
        for (int64_t n = n0; image && n < n1; n++) {
            memset(pimg, 0, sizeof(real) * (size_t)(hp * wp * C));
            dx_tiles(kr, g, f, dy, bp, off, q0, n * ohow, (n + 1) * ohow, pimg, n, 0, wp,
                     edge, spare);
            unpad_image(g, pimg, dx + n * xs);
        }
    }
}

/* Batched NCHW blocks: the images of a block keep their colsT, Y / dyT (and dcolsT) within
 * about NCHW_BLOCK_BYTES (L2), but a block has at least NCHW_BLOCK_MIN_ROWS GEMM rows
 * (small feature maps) and at most the chunk. Shape-only, like NCHW_GROUPS below. */
#define NCHW_BLOCK_BYTES (512 * 1024)
#define NCHW_BLOCK_MIN_ROWS 512
/* Backward: blocks are split into at most this many groups, each summing its blocks' dw
 * into its own partial (f x patch), unless the partials would exceed NCHW_PARTIALS_MAX
 * elements (then fewer groups, down to 1: dw accumulated block after block). */
#define NCHW_GROUPS 8
#define NCHW_PARTIALS_MAX ((int64_t)1 << 21)

static int64_t nchw_block(const fnn_geom *g, int64_t f, int64_t chunk, int backward)
{
    const int64_t ohow = g->oh * g->ow, patch = g->kh * g->kw * g->c;
    const int64_t per_image =
        ohow * (patch * (backward ? 2 : 1) + f) * (int64_t)sizeof(real);
    int64_t b = max64(NCHW_BLOCK_BYTES / max64(per_image, 1),
                      (NCHW_BLOCK_MIN_ROWS + ohow - 1) / max64(ohow, 1));
    return max64(1, min64(b, chunk));
}

/* Groups for nblk blocks of the backward. */
static int64_t nchw_groups(int64_t f, int64_t patch, int64_t nblk)
{
    const int64_t cap = NCHW_PARTIALS_MAX / max64(f * patch, 1);
    return max64(1, min64(min64(NCHW_GROUPS, nblk), cap));
}

/* The lengths (images) of the blocks that a call over g->n images, in chunks of `chunk`
 * and blocks of b images, meets: a full block, the last block of a full chunk, and the
 * last chunk's two; into len, returning how many (at most 4). A GEMM's workspace is not
 * monotone in its dimensions (a shorter block can take another path, which needs more:
 * double 16 x 72 x 441 asks 52944 elements where 16 x 72 x 539 asks 32424, and sizing for
 * the full block alone overran the workspace), so workspaces are sized for each. */
static int block_lengths(const fnn_geom *g, int64_t chunk, int64_t b, int64_t *len)
{
    const int64_t n = max64(g->n, 1), full = min64(max64(chunk, 1), n), last = n % full;
    const int64_t bb = max64(b, 1);
    const int64_t cand[4] = {min64(bb, full), full % bb, last ? min64(bb, last) : 0,
                             last % bb};
    int k = 0;
    for (int i = 0; i < 4; i++)
        if (cand[i] > 0)
            len[k++] = cand[i];
    return k;
}

/* Elements of one thread's area in the batched path: colsT, dcolsT (backward), Y / dyT,
 * GEMM workspace for the block's products (each block length the call meets). */
static int64_t nchw_area(const fnn_geom *g, int64_t f, int64_t chunk, int64_t b,
                         int backward)
{
    const int64_t ohow = g->oh * g->ow, patch = g->kh * g->kw * g->c, rows = b * ohow;
    int64_t len[4], gws = 0;
    const int nl = block_lengths(g, chunk, b, len);
    for (int i = 0; i < nl; i++) {
        const int64_t r = len[i] * ohow;
        gws = max64(gws, backward ? max64(FNN(gemm_ws)(f, patch, r), FNN(gemm_ws)(patch, r, f))
                                  : FNN(gemm_ws)(f, r, patch));
    }
    return round8(rows * patch) * (backward ? 2 : 1) + round8(rows * f) + round8(gws);
}

static int64_t gemm_ws_max(const fnn_geom *g, int layout, int64_t f, int64_t chunk,
                           int backward)
{
    const int64_t ohow = g->oh * g->ow, patch = g->kh * g->kw * g->c;
    int64_t ws = 0;
    if (layout == FNN_NHWC) {   /* for each chunk length the call meets (block_lengths) */
        int64_t len[4];
        const int nl = block_lengths(g, chunk, chunk, len);
        for (int i = 0; i < nl; i++) {
            const int64_t rows = len[i] * ohow;
            ws = max64(ws, FNN(gemm_ws)(rows, f, patch));
            if (backward)
                ws = max64(max64(ws, FNN(gemm_ws)(patch, f, rows)),
                           FNN(gemm_ws)(rows, patch, f));
        }
    } else {
        ws = FNN(gemm_ws)(f, ohow, patch);
        if (backward) {
            /* dw (f x patch x ohow); dx: dcols (ohow x patch x f), or for a pointwise
             * convolution dx itself (patch x ohow x f): gemm_ws is not symmetric in m and
             * n (its B panel grows with n), and sizing for the first alone let the 1x1
             * backward overrun its workspace (2 channels of 32 x 32, 256 filters: 18448
             * elements asked, 284736 needed on AVX-512) */
            ws = max64(max64(ws, FNN(gemm_ws)(f, patch, ohow)), FNN(gemm_ws)(ohow, patch, f));
            if (is_pointwise(g))
                ws = max64(ws, FNN(gemm_ws)(patch, ohow, f));
        }
    }
    return ws;
}

/* ---- the direct NCHW path -------------------------------------------------------------
 * Stride 1 along w (any stride along h, dilation, padding): the pixels of an output row
 * read contiguous runs of each input row, so the AVX2 row kernels (kernels/
 * conv_nchw_avx2.c) load x straight into vectors: no colsT, no packing, y's planes written
 * in place. Forward: threads over (image, output row). Weight and bias gradient: images in
 * NCHW_GROUPS fixed groups (from the shape: the same sums whatever the threads), each into
 * its own partial, the partials added in group order; dx with them where there is no
 * padding (use_nchw_direct_dx), else by the batched path.
 * Taken for small patches over wide rows, where the batched path's lowering and packing
 * cost more than its products. In-process A/B against the batched path, 2 threads, f32 /
 * f64 time ratios: forward 1x28x28 -> 30 5x5 0.51 / 0.68, 3x32x32 -> 32 3x3 pad 1 0.70 /
 * 0.77, 2x28x28 -> 16 3x3 pad 1 1.08 / 0.60; dw + db 0.41 / 0.54, 0.35 / 0.51, 0.67 / 0.46,
 * 16x28x28 -> 16 3x3 0.54 / 0.56 (forward 1.01 / 1.01: the bound below). With bigger
 * patches or narrower rows the GEMM's efficiency wins (earlier measurements: forward
 * 16x28x28 1.14x slower in f32, 32x14x14 1.85x; dw 32x13x13 -> 64 1.58x, 64x7x7 1.72x). */
#define DIRECT_FWD_MAX_PATCH 32
#define DIRECT_DW_MAX_PATCH 160
#define DIRECT_MIN_OW 16
/* dx direct: single precision only for small patches, where the batched GEMM's is slower
 * (f32, 2 threads, dx alone: 1x28x28 -> 30 5x5 0.8x, 3x32x32 -> 32 3x3 0.83x the batched
 * path's time, but 16x28x28 -> 16 3x3 1.15x and 6x24x24 -> 16 5x5 1.27x slower; f64: 0.58x,
 * 0.8x, 0.74x, 0.73x). */
#if FNN_PREC == 32
#define DIRECT_DX_MAX_PATCH 32
#else
#define DIRECT_DX_MAX_PATCH 160
#endif

/* Does the forward (backward = 0) or the weight gradient (1) take the direct path? */
static int use_nchw_direct(const fnn_geom *g, int layout, int backward)
{
    const int64_t patch = g->kh * g->kw * g->c;
    return FNN_X86_KERNELS && layout == FNN_NCHW && fnn_get_isa() >= 1 && g->sw == 1 &&
           !is_pointwise(g) && g->ow >= DIRECT_MIN_OW && pad_fits(g) &&
           patch <= (backward ? DIRECT_DW_MAX_PATCH : DIRECT_FWD_MAX_PATCH);
}

#if FNN_X86_KERNELS
/* The row kernels for rows of ow pixels: AVX-512's (kernels/conv_nchw_avx512.c) where the
 * CPU runs them and a row fills their 3-vector tile (48 float or 24 double pixels), else
 * AVX2's (conv_nchw_avx2.c); the same arguments. With fewer pixels the AVX-512 tiles are
 * one vector of 4 FMA chains, latency-bound: the book's first convolution in float32 (24
 * pixels) took 0.74-0.79 ms forward and 2.0-2.1 ms backward on them, 0.59-0.63 and
 * 1.45-1.47 on AVX2; in float64 (3 full vectors) 0.85-0.94 against 1.06-1.13 forward and
 * the same backward (alternating processes on the Xeon, 2026-12-02). On Zen 4 (the
 * avx512_256 ISA, whose CPUs run these kernels) the float64 rows took 0.58-0.59x the AVX2
 * rows' time forward and 0.76-0.85x backward (bench/ab_builds.py dlfs, 1 and 2 threads,
 * medians of 21, 2026-12-06). */
static int wide_rows(int64_t ow)
{
    const int isa = fnn_get_isa();
    return (isa == FNN_ISA_AVX512 || isa == FNN_ISA_AVX512_256) &&
           ow >= 3 * (int64_t)(64 / sizeof(real));
}

/* The row kernel `name` (nchw_fwd_row, nchw_dx_row, nchw_dw_img) for wide or other rows. */
#define ROW_KERNEL(wide, name) ((wide) ? FNN(name##_avx512) : FNN(name##_avx2))
#endif

/* The rows of the row kernels' register tile (filters forward, patch elements for dx):
 * the blocks conv.c packs w into for them. */
static int64_t row_f(int wide) { return wide ? FNN_ROW_F_AVX512 : FNN_ROW_F_AVX2; }

/* The input the row kernels read: x, or its zero-padded copy in xp (n*c planes of
 * (h + pt + pb) x (w + pl + pr), padded_source on single-channel images). */
static const real *direct_source(const fnn_geom *g, const real *x, real *xp, int nt)
{
    fnn_geom planes = *g;
    planes.n = g->n * g->c;
    planes.c = 1;
    return padded_source(&planes, x, xp, nt);
}

static int64_t direct_xp_ws(const fnn_geom *g, int64_t chunk)
{
    const int64_t hp = g->h + g->pt + g->pb, wp = g->w + g->pl + g->pr;
    return padded(g) ? round8(chunk * g->c * hp * wp) : 0;
}

/* Patch element (c, r, s) of an output pixel at off[(c*kh + r)*kw + s] from its corner in
 * the (padded) input: w's (f, c, kh, kw) order. */
static void direct_offsets(const fnn_geom *g, int64_t *off)
{
    const int64_t hp = g->h + g->pt + g->pb, wp = g->w + g->pl + g->pr;
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t r = 0; r < g->kh; r++)
            for (int64_t s = 0; s < g->kw; s++)
                off[(c * g->kh + r) * g->kw + s] = c * hp * wp + r * g->dh * wp + s * g->dw;
}

/* Forward workspace: [w packed by blocks of row_f filters][bias, padded][padded x]. */
static int64_t direct_fwd_ws(const fnn_geom *g, int64_t f, int64_t chunk)
{
    const int64_t fp = f + FNN_ROW_F_MAX - 1; /* f rounded up to a multiple of row_f */
    return round8(fp * g->kh * g->kw * g->c) + round8(fp) + direct_xp_ws(g, chunk);
}

/* y (g->n, f, oh, ow) = act(conv(x, w) + b) for a chunk of g->n images, NCHW; overwrites y.
 * w (f x patch) is packed block by block (element p of filter j0 + j at wq[(j0*patch + p)
 * * rf + j], rf = row_f, zeros past f). */
static void nchw_fwd_direct(const fnn_geom *g, int64_t f, const real *x, const real *w,
                            const real *b, int act, real *ws, real *y)
{
#if FNN_X86_KERNELS
    const int64_t patch = g->kh * g->kw * g->c, ohow = g->oh * g->ow;
    const int64_t hp = g->h + g->pt + g->pb, wp = g->w + g->pl + g->pr;
    const int wide = wide_rows(g->ow);
    const int64_t rf = row_f(wide), nfb = (f + rf - 1) / rf, tasks = g->n * g->oh;
    real *wq = ws, *bias = ws + round8(nfb * rf * patch);
    int64_t off[IMPLICIT_MAX_PATCH];
    const int nt = fnn_threads_for_macs(g->n * ohow * f * patch);
    direct_offsets(g, off);
    for (int64_t j = 0; j < nfb * rf; j++) {
        for (int64_t p = 0; p < patch; p++)
            wq[((j / rf) * patch + p) * rf + j % rf] =
                j < f ? w[j * patch + p] : 0;
        bias[j] = b && j < f ? b[j] : 0;
    }
    const real *src = direct_source(g, x, bias + round8(nfb * rf), nt);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t n = t / g->oh, oh = t % g->oh;
        const real *xr = src + n * g->c * hp * wp + oh * g->sh * wp;
        for (int64_t fb = 0; fb < nfb; fb++) {
            const int64_t j0 = fb * rf;
            const int nf = (int)min64(rf, f - j0);
            ROW_KERNEL(wide, nchw_fwd_row)(patch, xr, off, wq + j0 * patch,
                                           b ? bias + j0 : NULL, act == FNN_ACT_RELU, nf,
                                           g->ow, y + (n * f + j0) * ohow + oh * g->ow,
                                           ohow);
        }
    }
#else
    (void)g, (void)f, (void)x, (void)w, (void)b, (void)act, (void)ws, (void)y;
#endif
}

/* Groups of images of the direct weight gradient, from the chunk's length only. */
static int64_t direct_groups(int64_t nb) { return max64(1, min64(NCHW_GROUPS, nb)); }

/* Weight-gradient workspace: [per group: dw partial, db partial][padded x]. */
static int64_t direct_dw_ws(const fnn_geom *g, int64_t f, int64_t chunk)
{
    const int64_t part = round8(f * g->kh * g->kw * g->c + f);
    return direct_groups(chunk) * part + direct_xp_ws(g, chunk);
}

/* The input gradient, direct (stride 1 along w, no padding, wide rows, small patches; only
 * with the direct dw): for each dy row, the products w^T * dy[:, oh, :] of row_f patch
 * elements at a time are added straight into the dx rows they belong to
 * (nchw_dx_row_avx2): col2im without dcolsT. Image by image, each right after its dw, while
 * its dy is in L2: in a training step dy comes from memory (the layer above wrote it),
 * and is read once for both (13.8 MB for the book's first convolution in float64). Per
 * image, dy rows in order: each dx element sums its terms in the same order whatever the
 * threads. Patch elements go row_f at a time in (c, s, r) order: the rows a call adds
 * into are mostly distinct. */
static int use_nchw_direct_dx(const fnn_geom *g, int layout, int64_t f)
{
    return use_nchw_direct(g, layout, 1) && !padded(g) &&
           g->kh * g->kw * g->c <= DIRECT_DX_MAX_PATCH && f <= IMPLICIT_MAX_PATCH;
}

/* Workspace: w^T packed, row_f patch elements per filter. */
static int64_t direct_dx_ws(const fnn_geom *g, int64_t f)
{
    return round8((g->kh * g->kw * g->c + FNN_ROW_F_MAX - 1) * f); /* patch rounded up */
}

/* The direct dx's operands: wq = w^T packed by rf patch elements in (c, s, r) order
 * (zeros past the patch), doff[e] = where ordered element e's dx row starts from its
 * output row's, planes[j] = dy's plane j's offset. */
static void dx_setup(const fnn_geom *g, int64_t f, int64_t rf, const real *w, real *wq,
                     int64_t *doff, int64_t *planes)
{
    const int64_t C = g->c, KH = g->kh, KW = g->kw, patch = C * KH * KW;
    const int64_t nqb = (patch + rf - 1) / rf;
    int64_t q_of[DIRECT_DW_MAX_PATCH + FNN_ROW_F_MAX], e = 0;
    for (int64_t j = 0; j < f; j++)
        planes[j] = j * g->oh * g->ow;
    for (int64_t c = 0; c < C; c++)
        for (int64_t s = 0; s < KW; s++)
            for (int64_t r = 0; r < KH; r++, e++) {
                q_of[e] = (c * KH + r) * KW + s;
                doff[e] = c * g->h * g->w + r * g->dh * g->w + s * g->dw;
            }
    for (int64_t qb = 0; qb < nqb; qb++)
        for (int64_t j = 0; j < f; j++)
            for (int64_t q = 0; q < rf; q++) {
                e = qb * rf + q;
                wq[(qb * f + j) * rf + q] = e < patch ? w[j * patch + q_of[e]] : 0;
            }
}

/* One image's dx (c, h, w), overwritten, from its dy (f, oh, ow). */
static void dx_image(const fnn_geom *g, int64_t f, const real *wq, const int64_t *doff,
                     const int64_t *planes, const real *dyn, real *dxn)
{
    const int wide = wide_rows(g->ow);
    const int64_t patch = g->kh * g->kw * g->c, rf = row_f(wide), nqb = (patch + rf - 1) / rf;
    memset(dxn, 0, sizeof(real) * (size_t)(g->c * g->h * g->w));
    for (int64_t oh = 0; oh < g->oh; oh++)
        for (int64_t qb = 0; qb < nqb; qb++) {
            const int nq = (int)min64(rf, patch - qb * rf);
            real *dst[FNN_ROW_F_MAX];
            for (int q = 0; q < rf; q++)
                dst[q] = dxn + oh * g->sh * g->w + doff[qb * rf + (q < nq ? q : 0)];
            ROW_KERNEL(wide, nchw_dx_row)(f, dyn + oh * g->ow, planes,
                                          wq + qb * f * rf, nq, g->ow, dst,
                                          qb == 0 && oh + 1 < g->oh ? g->ow : 0);
        }
}

/* dw (f x patch) and db (f, or NULL) of a chunk of g->n images, NCHW: overwritten if first,
 * else added to; and dx (overwritten) unless NULL, where use_nchw_direct_dx (dx_ws: its
 * workspace). */
static void nchw_bwd_direct(const fnn_geom *g, int64_t f, const real *x, const real *dy,
                            const real *w, int first, real *ws, real *dw, real *db,
                            real *dx_ws, real *dx)
{
#if FNN_X86_KERNELS
    const int64_t patch = g->kh * g->kw * g->c, fp = f * patch, ohow = g->oh * g->ow;
    const int64_t hp = g->h + g->pt + g->pb, wp = g->w + g->pl + g->pr;
    const int64_t ng = direct_groups(g->n), per = (g->n + ng - 1) / ng, part = round8(fp + f);
    int64_t off[DIRECT_DW_MAX_PATCH], doff[DIRECT_DW_MAX_PATCH + FNN_ROW_F_MAX];
    int64_t planes[IMPLICIT_MAX_PATCH];
    int nt = fnn_threads_for_macs(g->n * ohow * fp);
    const int wide = wide_rows(g->ow);
    direct_offsets(g, off);
    if (dx)
        dx_setup(g, f, row_f(wide), w, dx_ws, doff, planes);
    const real *src = direct_source(g, x, ws + ng * part, nt);
    if (nt > ng)
        nt = (int)ng;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t gi = 0; gi < ng; gi++) {
        real *pw = ws + gi * part;
        memset(pw, 0, sizeof(real) * (size_t)(fp + f));
        for (int64_t n = gi * per; n < min64(g->n, (gi + 1) * per); n++) {
            ROW_KERNEL(wide, nchw_dw_img)(patch, f, g->oh, g->ow, dy + n * f * ohow,
                                          src + n * g->c * hp * wp, g->sh * wp, off, pw,
                                          db ? pw + fp : NULL,
                                          n + 1 < min64(g->n, (gi + 1) * per)
                                              ? dy + (n + 1) * f * ohow
                                              : NULL); /* the group's next image */
            if (dx)
                dx_image(g, f, dx_ws, doff, planes, dy + n * f * ohow,
                         dx + n * g->c * g->h * g->w);
        }
    }
    fnn_add_partials(fp, ws, ng, part, first, dw);
    if (db)
        fnn_add_partials(f, ws + fp, ng, part, first, db);
#else
    (void)g, (void)f, (void)x, (void)dy, (void)w, (void)first, (void)ws, (void)dw, (void)db,
        (void)dx_ws, (void)dx;
#endif
}

/* ---- single-channel NHWC on the direct NCHW kernels -----------------------------------
 * A one-channel image is its own NCHW layout, so a first layer on gray images with few
 * filters (LeNet's Conv2D(6, 5)) runs on the direct row kernels, which vectorise along
 * each output row, where the implicit path's NR-wide tiles hold f of their lanes (6 of 16
 * floats, and with f = 6 every tile went through the edge copy). Forward: the chunk's
 * output planes (f, oh, ow) into the workspace, transposed to pixels (oh, ow, f); the
 * weight gradient (no dx wanted: a first layer): dy transposed to planes, the direct dw^T
 * (f x patch) summed over the chunks, transposed into dw (patch x f); db stays NHWC's.
 * In-process against the implicit path (bench/ab_builds.py lenet: Zen 4 VM, 2 threads,
 * float, 128 x 28 x 28 x 1 images, medians of 41): 5 x 5 "same" -> 6 forward 0.58x the
 * time, dw + db 0.48x; 5 x 5 valid -> 6 0.43x, 0.37x; 3 x 3 -> 8 0.65x, 0.53x. With 16
 * filters the implicit tiles are full and it loses (forward 0.65 ms vs 0.57 with the
 * planes' transpose still to do), hence at most C1_MAX_F filters; a whole chunk's planes
 * at once (in blocks of 16 or 32 images, to transpose from L2: 1.07-1.20x the time). */
#define C1_MAX_F 8

/* Does a forward (backward = 0) or a weight gradient (1) of this call go that way? */
static int use_c1_direct(const fnn_geom *g, int layout, int64_t f, int backward)
{
    return layout == FNN_NHWC && g->c == 1 && f <= C1_MAX_F &&
           use_nchw_direct(g, FNN_NCHW, backward);
}

/* Its workspace: [w^T or dw^T (f x patch)][planes (chunk, f, oh, ow)][the direct path's] */
static int64_t c1_ws(const fnn_geom *g, int64_t f, int64_t chunk, int backward)
{
    return round8(f * g->kh * g->kw) + round8(chunk * f * g->oh * g->ow) +
           (backward ? direct_dw_ws(g, f, chunk) : direct_fwd_ws(g, f, chunk));
}

/* dst (n, cols, rows) = src (n, rows, cols), each image transposed; threads over images */
static void transpose_images(int64_t n, int64_t rows, int64_t cols, const real *src,
                             real *dst)
{
    const int nt = fnn_threads_for(n * rows * cols * 4);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++) {
        const real *s = src + i * rows * cols;
        real *d = dst + i * rows * cols;
        for (int64_t c = 0; c < cols; c++)
            for (int64_t r = 0; r < rows; r++)
                d[c * rows + r] = s[r * cols + c];
    }
}

/* The planes (g->n, f, oh, ow) in use_c1_direct's workspace ws */
static real *c1_planes(const fnn_geom *g, int64_t f, real *ws)
{
    return ws + round8(f * g->kh * g->kw);
}

/* The planes (c1_planes, overwritten) = act(conv(x, w) + b) of a chunk of g->n images, for
 * use_c1_direct's forward; w NHWC's (patch x f), transposed into ws first. Returns them. */
static real *c1_fwd_planes(const fnn_geom *g, int64_t f, const real *x, const real *w,
                           const real *b, int act, real *ws)
{
    real *planes = c1_planes(g, f, ws), *rest = planes + round8(g->n * f * g->oh * g->ow);
    transpose_images(1, g->kh * g->kw, f, w, ws);
    nchw_fwd_direct(g, f, x, ws, b, act, rest, planes);
    return planes;
}

/* y (g->n, oh, ow, f) = act(conv(x, w) + b), overwritten, for use_c1_direct's forward */
static void c1_fwd(const fnn_geom *g, int64_t f, const real *x, const real *w, const real *b,
                   int act, real *ws, real *y)
{
    transpose_images(g->n, f, g->oh * g->ow, c1_fwd_planes(g, f, x, w, b, act, ws), y);
}

/* dw^T (f x patch, at ws) of a chunk of g->n images from their dy planes (c1_planes),
 * overwritten if first, else added to, for use_c1_direct's backward */
static void c1_dw(const fnn_geom *g, int64_t f, const real *x, int first, real *ws)
{
    real *planes = c1_planes(g, f, ws), *rest = planes + round8(g->n * f * g->oh * g->ow);
    nchw_bwd_direct(g, f, x, planes, NULL, first, rest, ws, NULL, NULL, NULL);
}

/* ---- the same with 2x2 max pooling (fnn_conv2d_pool_fwd / _bwd) -----------------------
 * Forward: the chunk's output planes as above, each pooled row read from them and written
 * as pixels (ph, pw, f). Weight gradient: the pooled gradient put back into dy planes (its
 * windows' other pixels zero), then the direct dw as above. In place of the implicit
 * path's 16-wide tiles holding 6 filters (LeNet's Conv2D(6, 5) + MaxPooling2D). Not
 * where that path has its 3 x 3 row kernel (use_3x3c1_rows): 3 x 3 -> 8 float took 0.28-0.40
 * ms forward and 0.32-0.45 backward there, 0.69-0.75 and 0.68-0.73 here. */
static int use_c1_pooled(const fnn_geom *g, int layout, int64_t f, int backward)
{
    return use_c1_direct(g, layout, f, backward) && g->oh >= 2 && g->ow >= 2 &&
           !use_3x3c1_rows(g, f);
}

/* Pooled pixels of a row per pass of pool_planes (its buffers: C1_MAX_F x PLANES_PASS) */
#define PLANES_PASS 64

/* y (g->n, oh/2, ow/2, f), and argmax or pos (fnn_conv2d_pool_fwd's), overwritten: 2x2
 * max pooling (fnn_maxpool_fwd's rules: in each window the first of its four, in row
 * order, that no later one beats) of planes (g->n, f, oh, ow), f <= C1_MAX_F; threads
 * over pooled rows. A window row of one plane goes VLANES windows at a time (its two
 * input rows split into even and odd columns) into buffers, which are transposed to
 * pixels after each pass. */
static void pool_planes(const fnn_geom *g, int64_t f, const real *planes, real *y,
                        int64_t *argmax, uint8_t *pos)
{
    const int64_t OW = g->ow, ohow = g->oh * OW, PH = g->oh / 2, PW = OW / 2;
    const int nt = fnn_threads_for(g->n * ohow * f);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) /* FNN_IMAGE_SPLIT */
    for (int64_t r = 0; r < g->n * PH; r++) {
        const int64_t n = r / PH, ph = r % PH;
        for (int64_t q0 = 0; q0 < PW; q0 += PLANES_PASS) {
            const int64_t nq = min64(PLANES_PASS, PW - q0);
            _Alignas(16) real best[C1_MAX_F][PLANES_PASS];
            _Alignas(16) lane_idx at[C1_MAX_F][PLANES_PASS];
            for (int64_t j = 0; j < f; j++) {
                const real *r0 = planes + (n * f + j) * ohow + 2 * ph * OW + 2 * q0;
                const real *r1 = r0 + OW;
                int64_t q = 0;
#ifdef POOL_SSE2
                for (; q + VLANES <= nq; q += VLANES) {
                    vreal v0, v1, v2, v3;
                    vload_pairs(r0 + 2 * q, &v0, &v1);
                    vload_pairs(r1 + 2 * q, &v2, &v3);
                    __m128i k = idx_splat(0);
                    take_lanes(v1, idx_splat(1), &v0, &k);
                    take_lanes(v2, idx_splat(2), &v0, &k);
                    take_lanes(v3, idx_splat(3), &v0, &k);
                    vstore(best[j] + q, v0);
                    _mm_store_si128((__m128i *)(at[j] + q), k);
                }
#endif
                for (; q < nq; q++) {
                    const real v[4] = {r0[2 * q], r0[2 * q + 1], r1[2 * q], r1[2 * q + 1]};
                    int k = 0;
                    for (int e = 1; e < 4; e++)
                        if (fnn_beats(v[e], v[k]))
                            k = e;
                    best[j][q] = v[k];
                    at[j][q] = k;
                }
            }
            for (int64_t q = 0; q < nq; q++) {
                const int64_t o = (r * PW + q0 + q) * f, pw = q0 + q;
                for (int64_t j = 0; j < f; j++) {
                    const int64_t k = at[j][q];
                    y[o + j] = best[j][q];
                    if (pos)
                        pos[o + j] = (uint8_t)k;
                    else
                        argmax[o + j] = ((2 * ph + k / 2) * OW + 2 * pw + k % 2) * f + j;
                }
            }
        }
    }
}

/* use_c1_pooled's forward of a chunk: y and argmax or pos as fnn_conv2d_pool_fwd's */
static void c1_pool_fwd(const fnn_geom *g, int64_t f, const real *x, const real *w,
                        const real *b, int act, real *ws, real *y, int64_t *argmax,
                        uint8_t *pos)
{
    pool_planes(g, f, c1_fwd_planes(g, f, x, w, b, act, ws), y, argmax, pos);
}

/* dy planes (g->n, f, oh, ow), overwritten, of a convolution whose 2x2 max pooling got
 * the gradient pd (fnn_conv2d_pool_bwd's operands, this chunk's): each pooled gradient
 * at the pixel its argmax or pos names (relu's derivative applied where pd->ypool; a pos
 * above 3 or an argmax outside its window drops it), zeros elsewhere; threads over
 * images. g: the windows' geometry (oh and ow even); ow_am: the output width argmax
 * indexes (g->ow, or one more where the convolution's last column is cropped). */
static void unpool_planes(const fnn_geom *g, int64_t f, const pooled_dy *pd, int64_t ow_am,
                          real *planes)
{
    const int64_t OW = g->ow, ohow = g->oh * OW, PH = g->oh / 2, PW = OW / 2;
    const int nt = fnn_threads_for(g->n * ohow * f);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) /* FNN_IMAGE_SPLIT */
    for (int64_t n = 0; n < g->n; n++) {
        real *pl = planes + n * f * ohow;
        memset(pl, 0, sizeof(real) * (size_t)(f * ohow));
        int64_t e = n * PH * PW * f; /* pooled element (n, ph, pw, j) */
        for (int64_t ph = 0; ph < PH; ph++)
            for (int64_t pw = 0; pw < PW; pw++)
                for (int64_t j = 0; j < f; j++, e++) {
                    if (pd->ypool && !(pd->ypool[e] > 0))
                        continue;
                    int k; /* the window position */
                    if (pd->pos) {
                        k = pd->pos[e];
                    } else {
                        const int64_t A = ow_am * f; /* argmax's row length */
                        const int64_t d = pd->argmax[e] - (2 * ph * A + 2 * pw * f + j);
                        k = d == 0 ? 0 : d == f ? 1 : d == A ? 2 : d == A + f ? 3 : 4;
                    }
                    if (k > 3)
                        continue;
                    pl[j * ohow + (2 * ph + (k >> 1)) * OW + 2 * pw + (k & 1)] = pd->dyp[e];
                }
    }
}

/* Does this call take the batched NCHW path? */
static int nchw_batched(const fnn_geom *g, int layout)
{
    return layout == FNN_NCHW && !is_pointwise(g) && fnn_get_isa() > 0;
}

/* The implicit NHWC backward's workspace, [dcols chunk][GEMM][implicit dW][implicit dx]:
 * where its parts start (elements) and its size; fnn_conv2d_ws, fnn_conv2d_bwd and
 * fnn_conv2d_pool_bwd all lay it out through this. */
typedef struct {
    int64_t gemm, dw, dx, size;
} bwd_parts;

static bwd_parts implicit_bwd_parts(const fnn_geom *g, int layout, int64_t f, int64_t chunk)
{
    bwd_parts p;
    p.gemm = round8(chunk * g->oh * g->ow * g->kh * g->kw * g->c);
    p.dw = p.gemm + round8(gemm_ws_max(g, layout, f, chunk, 1));
    p.dx = p.dw + round8(implicit_dw_ws(g, f, chunk));
    p.size = p.dx + (use_implicit_dx(g, layout) ? implicit_dx_ws(g, f) : 0);
    return p;
}

/* Workspace elements for fnn_conv2d_fwd (backward = 0) or fnn_conv2d_bwd (backward = 1)
 * with chunks of `chunk` images and f filters, for the current ISA and number of threads
 * (like fnn_gemm_ws: ask right before the call). */
static int64_t conv_ws_paths(const fnn_geom *g, int layout, int64_t f, int64_t chunk,
                             int backward)
{
    const int64_t patch = g->kh * g->kw * g->c;
    if (use_nchw_direct(g, layout, 0) && !backward)
        return direct_fwd_ws(g, f, chunk);
    if (nchw_batched(g, layout)) {
        const int64_t b = nchw_block(g, f, chunk, backward), nblk = (chunk + b - 1) / b;
        const int64_t parts = backward ? nchw_groups(f, patch, nblk) * round8(f * patch) : 0;
        const int64_t areas = fnn_max_threads() * nchw_area(g, f, chunk, b, backward);
        if (backward && use_nchw_direct_dx(g, layout, f)) /* [direct dw][direct dx] */
            return direct_dw_ws(g, f, chunk) + direct_dx_ws(g, f);
        if (backward && use_nchw_direct(g, layout, 1)) /* [direct dw][the batched dx's] */
            return direct_dw_ws(g, f, chunk) + areas;
        return parts + areas;
    }
    if (!backward && use_implicit(g, layout))
        return implicit_ws(g, f, chunk);
    const int64_t cols = is_pointwise(g) ? 0 : chunk * g->oh * g->ow * patch;
    if (backward && use_implicit(g, layout))
        return implicit_bwd_parts(g, layout, f, chunk).size;
    return cols * (backward ? 2 : 1) + gemm_ws_max(g, layout, f, chunk, backward);
}

/* conv_ws_paths, or use_c1_direct's (its forward; its weight gradient goes without dx,
 * which the call does not say here: the larger of the two) */
static int64_t conv_ws(const fnn_geom *g, int layout, int64_t f, int64_t chunk, int backward)
{
    if (!use_c1_direct(g, layout, f, backward))
        return conv_ws_paths(g, layout, f, chunk, backward);
    if (!backward)
        return c1_ws(g, f, chunk, 0);
    return max64(c1_ws(g, f, chunk, 1), conv_ws_paths(g, layout, f, chunk, 1));
}

/* The public query: conv_ws and the room to align the workspace, which each public
 * convolution below moves to a 64-byte boundary first. The Python workspace is NumPy's,
 * 16 bytes past one: the sparse pooled backward's vector loads straddled cache lines, and
 * conv + pool backward 32 -> 64 took 1.16-1.20x the time of an aligned workspace (Zen 2,
 * 2026-12-04, in-process A/B of one build, medians of 30). */
int64_t FNN(conv2d_ws)(const fnn_geom *g, int layout, int64_t f, int64_t chunk, int backward)
{
    return conv_ws(g, layout, f, chunk, backward) + WS_ALIGN;
}

/* ---- the batched NCHW path ------------------------------------------------------------
 * Columns lowered transposed (Caffe's layout): colsT (patch x rows) for a block of sb
 * images, row (c, r, s), column (n, oh, ow): the lowering and its adjoint are runs of
 * contiguous copies / adds along ow (vectorised, no per-element bounds test), and the GEMM
 * outputs are (f x rows) matrices whose rows are y's planes back to back. */

/* Output columns ow in [*lo, *hi) read input column ow*stride + off inside [0, len). */
static void valid_range(int64_t off, int64_t stride, int64_t len, int64_t out, int64_t *lo,
                        int64_t *hi)
{
    int64_t a = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t b = off < len ? (len - 1 - off) / stride + 1 : 0;
    if (b > out)
        b = out;
    if (a > b)
        a = b;
    *lo = a;
    *hi = b;
}

/* colsT (patch x ld) columns [0, sb*ohow): colsT[(c, r, s), (n, oh, ow)] =
 * x[n, c, oh*sh - pt + r*dh, ow*sw - pl + s*dw], 0 outside the image. Every element
 * written. Threads over (patch row, image) if par (all the helpers below: par = 0 when
 * the caller's threads take whole blocks). */
static void im2col_t(const fnn_geom *g, int64_t sb, const real *x, real *colsT, int64_t ld,
                     int par)
{
    const int64_t H = g->h, W = g->w, C = g->c, KH = g->kh, KW = g->kw;
    const int64_t OH = g->oh, OW = g->ow, ohow = OH * OW, patch = C * KH * KW;
    const int nt = par ? fnn_threads_for(sb * ohow * patch) : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t t = 0; t < patch * sb; t++) {
        const int64_t pr = t / sb, n = t % sb;
        const int64_t ch = pr / (KH * KW), r = (pr / KW) % KH, s = pr % KW;
        const real *plane = x + (n * C + ch) * H * W;
        real *dst = colsT + pr * ld + n * ohow;
        const int64_t iw0 = s * g->dw - g->pl;
        int64_t lo, hi;
        valid_range(iw0, g->sw, W, OW, &lo, &hi);
        for (int64_t oh = 0; oh < OH; oh++, dst += OW) {
            const int64_t ih = oh * g->sh - g->pt + r * g->dh;
            if (ih < 0 || ih >= H) {
                for (int64_t ow = 0; ow < OW; ow++)
                    dst[ow] = 0;
                continue;
            }
            /* input column of ow = lo, the first inside the image */
            const real *src = plane + ih * W + iw0 + lo * g->sw;
            for (int64_t ow = 0; ow < lo; ow++)
                dst[ow] = 0;
            if (g->sw == 1)
                for (int64_t o = 0; o < hi - lo; o++)
                    dst[lo + o] = src[o];
            else
                for (int64_t o = 0; o < hi - lo; o++)
                    dst[lo + o] = src[o * g->sw];
            for (int64_t ow = hi; ow < OW; ow++)
                dst[ow] = 0;
        }
    }
}

/* The adjoint: dx (sb images, overwritten) = sum of the dcolsT (patch x ld) entries read
 * from each element, added in (r, s, oh) order. Threads over (image, channel) planes:
 * disjoint writes. */
static void col2im_t(const fnn_geom *g, int64_t sb, const real *dcolsT, int64_t ld, real *dx,
                     int par)
{
    const int64_t H = g->h, W = g->w, C = g->c, KH = g->kh, KW = g->kw;
    const int64_t OH = g->oh, OW = g->ow, ohow = OH * OW;
    const int nt = par ? fnn_threads_for(sb * ohow * C * KH * KW) : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t t = 0; t < sb * C; t++) {
        const int64_t n = t / C, ch = t % C;
        real *plane = dx + t * H * W;
        memset(plane, 0, sizeof(real) * (size_t)(H * W));
        for (int64_t r = 0; r < KH; r++)
            for (int64_t s = 0; s < KW; s++) {
                const real *src = dcolsT + ((ch * KH + r) * KW + s) * ld + n * ohow;
                const int64_t iw0 = s * g->dw - g->pl;
                int64_t lo, hi;
                valid_range(iw0, g->sw, W, OW, &lo, &hi);
                for (int64_t oh = 0; oh < OH; oh++) {
                    const int64_t ih = oh * g->sh - g->pt + r * g->dh;
                    if (ih < 0 || ih >= H)
                        continue;
                    real *d = plane + ih * W + iw0 + lo * g->sw; /* column of ow = lo */
                    const real *so = src + oh * OW + lo;
                    if (g->sw == 1)
                        for (int64_t o = 0; o < hi - lo; o++)
                            d[o] += so[o];
                    else
                        for (int64_t o = 0; o < hi - lo; o++)
                            d[o * g->sw] += so[o];
                }
            }
    }
}

/* y[n, j, :] = act(Y[j, n*ohow : (n+1)*ohow] + b[j]) for n < sb: Y (f x ld); in place
 * when Y is y (one image, ld = ohow). No bias: act only (-0.0 kept). The operations of
 * bias_act (v < 0 ? 0 : v keeps NaN and -0.0), so the fused result has the bits of the
 * unfused one. The flags are constants at each call site below, so every variant is a
 * straight, vectorised loop. */
static inline void planes_out_t(int64_t ohow, const real *src, real bj, int has_b, int relu,
                                real *dst)
{
    for (int64_t o = 0; o < ohow; o++) {
        real v = src[o];
        if (has_b)
            v += bj;
        if (relu)
            v = v < 0 ? 0 : v;
        dst[o] = v;
    }
}

static void planes_out(int64_t sb, int64_t f, int64_t ohow, const real *Y, int64_t ld,
                       const real *b, int act, real *y, int par)
{
    const int relu = act == FNN_ACT_RELU;
    const int nt = par ? fnn_threads_for(sb * f * ohow) : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t t = 0; t < sb * f; t++) {
        const int64_t n = t / f, j = t % f;
        const real *src = Y + j * ld + n * ohow;
        real *dst = y + t * ohow;
        if (b && relu)
            planes_out_t(ohow, src, b[j], 1, 1, dst);
        else if (b)
            planes_out_t(ohow, src, b[j], 1, 0, dst);
        else if (relu)
            planes_out_t(ohow, src, 0, 0, 1, dst);
        else if (dst != src)
            memcpy(dst, src, sizeof(real) * (size_t)ohow);
    }
}

/* dyT (f x ld) columns [0, sb*ohow): dyT[j, (n, o)] = dy[n, j, o]. */
static void planes_in(int64_t sb, int64_t f, int64_t ohow, const real *dy, real *dyT,
                      int64_t ld, int par)
{
    const int nt = par ? fnn_threads_for(sb * f * ohow) : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t t = 0; t < sb * f; t++) {
        const int64_t n = t / f, j = t % f;
        memcpy(dyT + j * ld + n * ohow, dy + t * ohow, sizeof(real) * (size_t)ohow);
    }
}

/* The calling thread's area of the batched path's workspace. */
static real *thread_area(real *base, int64_t area)
{
    return base + fnn_thread_num() * area;
}

/* Batched NCHW forward of one chunk (nb images), in blocks of bs images, each: colsT =
 * lowered x, Y (f x rows) = w (f x patch) * colsT, y = act(Y + b) plane by plane. Blocks
 * are independent: threads take whole blocks when there are several. */
static void nchw_fwd_batched(const fnn_geom *g, int64_t f, int64_t nb, int64_t bs,
                             const real *xc, const real *w, const real *b, int act,
                             real *ws, int64_t area, real *yc)
{
    const int64_t ohow = g->oh * g->ow, patch = g->kh * g->kw * g->c;
    const int64_t xs = g->h * g->w * g->c, ys = ohow * f, nblk = (nb + bs - 1) / bs;
    int ntb = nblk > 1 ? fnn_threads_for(nb * ohow * (patch + f)) : 1;
    if (ntb > nblk)
        ntb = (int)nblk;
#pragma omp parallel for num_threads(ntb) schedule(static) if (ntb > 1)
    for (int64_t blk = 0; blk < nblk; blk++) {
        const int64_t i0 = blk * bs, sb = min64(bs, nb - i0), rows = sb * ohow;
        real *colsT = thread_area(ws, area), *Y = colsT + round8(bs * ohow * patch);
        real *gws = Y + round8(bs * ohow * f);
        if (sb == 1) /* Y (f x ohow) is y[n] itself */
            Y = yc + i0 * ys;
        im2col_t(g, sb, xc + i0 * xs, colsT, rows, ntb == 1);
        FNN(gemm)(0, 0, f, rows, patch, 1, w, patch, colsT, rows, 0, gws, Y, rows);
        planes_out(sb, f, ohow, Y, rows, b, act, yc + i0 * ys, ntb == 1);
    }
}

/* Batched NCHW backward of one chunk (nb images), in blocks of bs images, each: dyT
 * (f x rows) = dy's planes, dw_part (f x patch) (+)= dyT * colsT^T and, if dxc, dcolsT
 * (patch x rows) = w^T * dyT, dx = col2im(dcolsT). The blocks form ng groups of
 * consecutive blocks; a group sums its blocks into its partial (or, with one group,
 * straight into dw), and the partials are added to dw in group order. first: dw is
 * overwritten (the chunk's first), else accumulated. */
static void nchw_bwd_batched(const fnn_geom *g, int64_t f, int64_t nb, int64_t bs,
                             const real *dyc, const real *xc, const real *w, int first,
                             real *ws, int64_t area, real *dxc, real *dw)
{
    const int64_t ohow = g->oh * g->ow, patch = g->kh * g->kw * g->c, fp = f * patch;
    const int64_t xs = g->h * g->w * g->c, ys = ohow * f, nblk = (nb + bs - 1) / bs;
    const int64_t ng0 = nchw_groups(f, patch, nblk), per = (nblk + ng0 - 1) / ng0;
    const int64_t ng = (nblk + per - 1) / per; /* no empty group */
    real *parts = ws, *areas = ws + (ng > 1 && dw ? ng * round8(fp) : 0);
    int ntb = ng > 1 ? fnn_threads_for(nb * ohow * (2 * patch + f)) : 1;
    if (ntb > ng)
        ntb = (int)ng;
#pragma omp parallel for num_threads(ntb) schedule(static) if (ntb > 1)
    for (int64_t gi = 0; gi < ng; gi++) {
        real *colsT = thread_area(areas, area), *dcolsT = colsT + round8(bs * ohow * patch);
        real *dyT = dcolsT + round8(bs * ohow * patch), *gws = dyT + round8(bs * ohow * f);
        real *target = ng > 1 ? parts + gi * round8(fp) : dw;
        const int64_t blk1 = min64(nblk, (gi + 1) * per);
        for (int64_t blk = gi * per; blk < blk1; blk++) {
            const int64_t i0 = blk * bs, sb = min64(bs, nb - i0), rows = sb * ohow;
            const real beta = blk == gi * per && (ng > 1 || first) ? 0 : 1;
            /* one image: dyT (f x ohow) is dy[n] itself */
            const real *dyb = sb == 1 ? dyc + i0 * ys : dyT;
            if (sb > 1)
                planes_in(sb, f, ohow, dyc + i0 * ys, dyT, rows, ntb == 1);
            if (dw) {
                im2col_t(g, sb, xc + i0 * xs, colsT, rows, ntb == 1);
                FNN(gemm)(0, 1, f, patch, rows, 1, dyb, rows, colsT, rows, beta, gws, target,
                          patch);
            }
            if (dxc) {
                FNN(gemm)(1, 0, patch, rows, f, 1, w, patch, dyb, rows, 0, gws, dcolsT,
                          rows);
                col2im_t(g, sb, dcolsT, rows, dxc + i0 * xs, ntb == 1);
            }
        }
    }
    if (ng > 1 && dw)
        fnn_add_partials(fp, parts, ng, round8(fp), first, dw);
}

/* y = act(conv(x, w) + b); overwrites y. b may be NULL. Shapes: see the file comment.
 * The bias and activation run in the GEMM's epilogue, on each tile while it is in L1
 * (batched NCHW: in the copy out of the GEMM's (f x rows) result). */
void FNN(conv2d_fwd)(const fnn_geom *g, int layout, int64_t f, const real *x, const real *w,
                     const real *b, int act, int64_t chunk, real *ws, real *y)
{
    ws = fnn_align_ws(ws);
    const int64_t ohow = g->oh * g->ow, patch = g->kh * g->kw * g->c;
    const int64_t xs = g->h * g->w * g->c, ys = ohow * f;
    const int pw = is_pointwise(g);
    const int batched = nchw_batched(g, layout);
    const int implicit = use_implicit(g, layout), direct = use_nchw_direct(g, layout, 0);
    const int c1 = use_c1_direct(g, layout, f, 0);
    const int64_t bs = batched ? nchw_block(g, f, chunk, 0) : 0;
    const int64_t area = batched ? nchw_area(g, f, chunk, bs, 0) : 0;
    real *cols = ws;
    real *gws = ws + (pw ? 0 : chunk * ohow * patch);
    fnn_geom gc = *g;
    for (int64_t n0 = 0; n0 < g->n; n0 += chunk) {
        const int64_t nb = g->n - n0 < chunk ? g->n - n0 : chunk;
        const real *xc = x + n0 * xs;
        real *yc = y + n0 * ys;
        gc.n = nb;
        if (c1) {
            c1_fwd(&gc, f, xc, w, b, act, ws, yc);
        } else if (direct) {
            nchw_fwd_direct(&gc, f, xc, w, b, act, ws, yc);
        } else if (implicit) {
            conv_fwd_implicit(&gc, f, xc, w, b, act, ws, yc);
        } else if (layout == FNN_NHWC) {
            const real *a = xc;
            if (!pw) {
                FNN(im2col)(&gc, layout, xc, cols);
                a = cols;
            }
            /* bias + activation fused into the GEMM's tiles */
            FNN(gemm_bias_act)(0, 0, nb * ohow, f, patch, 1, a, patch, w, f, 0, b, 1, act,
                               gws, yc, f);
        } else if (batched) {
            nchw_fwd_batched(g, f, nb, bs, xc, w, b, act, ws, area, yc);
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

/* Does fnn_conv2d_pool_fwd apply: the implicit NHWC path, with an MR that tiles whole
 * windows, and argmax indices (into an image's oh x ow x f output) that fit lane_idx? */
int FNN(conv2d_pool_ok)(const fnn_geom *g, int layout, int64_t f)
{
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    return use_c1_pooled(g, layout, f, 0) ||
           (use_implicit(g, layout) && FUSE_ROWS % kr->mr == 0 && kr->nr <= 32 &&
            g->oh >= 2 && g->ow >= 2 && g->oh * g->ow * f <= (int64_t)LANE_IDX_MAX);
}

/* Fused convolution + 2x2 max pooling (fastnn.h), in chunks of at most `chunk` images,
 * where fnn_conv2d_pool_ok and exactly one of argmax and pos is not NULL (fastnn.h); else
 * 0, nothing written. */
int FNN(conv2d_pool_fwd)(const fnn_geom *g, int layout, int64_t f, const real *x,
                         const real *w, const real *b, int act, int64_t chunk, real *ws,
                         real *y, int64_t *argmax, uint8_t *pos)
{
    if (!FNN(conv2d_pool_ok)(g, layout, f) || !argmax == !pos)
        return 0;
    ws = fnn_align_ws(ws);
    const int64_t xs = g->h * g->w * g->c, ys = (g->oh / 2) * (g->ow / 2) * f;
    const int c1 = use_c1_pooled(g, layout, f, 0);
    fnn_geom gc = *g;
    for (int64_t n0 = 0; n0 < g->n; n0 += chunk) {
        gc.n = g->n - n0 < chunk ? g->n - n0 : chunk;
        int64_t *am = pos ? NULL : argmax + n0 * ys;
        uint8_t *ps = pos ? pos + n0 * ys : NULL;
        if (c1)
            c1_pool_fwd(&gc, f, x + n0 * xs, w, b, act, ws, y + n0 * ys, am, ps);
        else
            conv_pool_implicit(&gc, f, x + n0 * xs, w, b, act, ws, y + n0 * ys, am, ps);
    }
    return 1;
}

/* Gradients of conv(x, w) + b given dy: dw (shaped like w) overwritten; db (f) and dx
 * (shaped like x) overwritten unless NULL (not wanted). */
void FNN(conv2d_bwd)(const fnn_geom *g, int layout, int64_t f, const real *dy, const real *x,
                     const real *w, int64_t chunk, real *ws, real *dx, real *dw, real *db)
{
    ws = fnn_align_ws(ws);
    const int64_t ohow = g->oh * g->ow, patch = g->kh * g->kw * g->c;
    const int64_t xs = g->h * g->w * g->c, ys = ohow * f;
    const int pw = is_pointwise(g);
    const int batched = nchw_batched(g, layout);
    const int64_t bs = batched ? nchw_block(g, f, chunk, 1) : 0;
    const int64_t area = batched ? nchw_area(g, f, chunk, bs, 1) : 0;
    const int64_t colsz = pw ? 0 : chunk * ohow * patch;
    const int implicit = use_implicit(g, layout); /* dw without cols: implicit_bwd_parts */
    real *cols = ws, *dcols = ws + colsz, *gws = ws + 2 * colsz;
    const int implicit_dx = use_implicit_dx(g, layout); /* dx without dcols */
    const int direct = use_nchw_direct(g, layout, 1);   /* dw and db without colsT */
    const int direct_dx = use_nchw_direct_dx(g, layout, f); /* dx without dcolsT */
    const int c1 = !dx && use_c1_direct(g, layout, f, 1);  /* dw^T at ws, see c1_dw */
    real *dw_ws = NULL, *dx_ws = NULL;
    if (implicit && !c1) {
        const bwd_parts parts = implicit_bwd_parts(g, layout, f, chunk);
        dcols = ws;
        gws = ws + parts.gemm;
        dw_ws = ws + parts.dw;
        dx_ws = ws + parts.dx;
    }
    fnn_geom gc = *g;

    if (db && layout == FNN_NHWC)
        FNN(bias_grad)(g->n * ohow, f, 1, dy, db);
    else if (db && !direct)
        FNN(bias_grad)(g->n, f, ohow, dy, db);

    for (int64_t n0 = 0; n0 < g->n; n0 += chunk) {
        const int64_t nb = g->n - n0 < chunk ? g->n - n0 : chunk;
        const real *xc = x + n0 * xs, *dyc = dy + n0 * ys;
        real *dxc = dx ? dx + n0 * xs : NULL;
        const real beta = n0 == 0 ? 0 : 1;
        gc.n = nb;
        if (layout == FNN_NHWC) {
            if (c1) {
                transpose_images(nb, ohow, f, dyc, c1_planes(&gc, f, ws));
                c1_dw(&gc, f, xc, n0 == 0, ws);
            } else if (implicit) {
                conv_dw_implicit(&gc, f, xc, dyc, NULL, n0 == 0, dw_ws, dw);
            } else {
                const real *a = xc;
                if (!pw) {
                    FNN(im2col)(&gc, layout, xc, cols);
                    a = cols;
                }
                /* dw (patch x f) += cols^T (patch x rows) * dy (rows x f) */
                FNN(gemm)(1, 0, patch, f, nb * ohow, 1, a, patch, dyc, f, beta, gws, dw, f);
            }
            if (dxc && implicit_dx) {
                conv_dx_implicit(&gc, f, dyc, w, n0 * ohow, dx_ws, dxc);
            } else if (dxc) {
                /* dcols (rows x patch) = dy (rows x f) * w^T (f x patch) */
                real *target = pw ? dxc : dcols;
                FNN(gemm)(0, 1, nb * ohow, patch, f, 1, dyc, f, w, f, 0, gws, target, patch);
                if (!pw)
                    FNN(col2im)(&gc, layout, dcols, dxc);
            }
        } else if (direct) { /* dx by the batched path unless direct too */
            real *rest = ws + direct_dw_ws(g, f, chunk);
            nchw_bwd_direct(&gc, f, xc, dyc, w, n0 == 0, ws, dw, db, rest,
                            direct_dx ? dxc : NULL);
            if (dxc && !direct_dx)
                nchw_bwd_batched(g, f, nb, bs, dyc, xc, w, 0, rest, area, dxc, NULL);
        } else if (batched) {
            nchw_bwd_batched(g, f, nb, bs, dyc, xc, w, n0 == 0, ws, area, dxc, dw);
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
    if (c1) /* dw (patch x f) = the chunks' summed dw^T */
        transpose_images(1, f, g->kh * g->kw, ws, dw);
}

/* ---- convolution + 2x2 max pooling, backward from the pooled gradient ----------------
 * Sparse (conv_pool_sparse): each pooled element's gradient g (filter j) reaches the one
 * output pixel its argmax names, so dw^T's row j gains g times that pixel's receptive
 * field and dx's receptive field gains g times w^T's row j: a quarter of the dense
 * backward's products (dx: none with a zero gradient, relu's) and no convolution gradient
 * formed. Per image: a table of the gradients and their pixels' corners, and per window
 * pixel a mask of the filters whose nonzero gradient it takes, then the dw and dx image
 * kernels (AVX2 where the receptive field's runs are whole vectors, with the tables too;
 * else the portable ones below). Images in fixed groups, each group summing its own dw^T
 * partial, the partials added in group order: the same bits whatever the threads; each
 * image's dx is written by the thread of its group alone. In-process, alternating, against
 * the scatter + dense backward, the CNN's (128, 13, 13, 32) -> 64 with 94% of dy nonzero:
 * float 4.7-5.0 vs 9.1-10.1 ms, double 10.4-10.8 vs 18.3-18.8 ms (medians, 2 threads).
 * Else, dw only: the implicit dW with B built from the pooled gradient (pack_pooled). */
#define POOL_MAX_RUNS 256
/* Corners and argmax offsets within one image are int32 (tables, compares) below this. */
#define POOL_MAX_INDEX ((int64_t)1 << 30)

/* A receptive field as R runs of *L contiguous elements at roff[r] (unless roff is NULL)
 * from the pixel's corner in the (padded, row length wp) image; returns R, 0 past
 * POOL_MAX_RUNS runs. Whole rows of the patch (kw * c elements) where columns are not
 * dilated, else one run per (kh, kw). */
static int64_t pool_runs(const fnn_geom *g, int64_t *roff, int64_t *L)
{
    const int64_t C = g->c, wp = g->w + g->pl + g->pr;
    const int rows = g->dw == 1 || g->kw == 1;
    const int64_t R = rows ? g->kh : g->kh * g->kw;
    if (R > POOL_MAX_RUNS)
        return 0;
    *L = rows ? g->kw * C : C;
    for (int64_t r = 0; roff && r < R; r++)
        roff[r] = rows ? r * g->dh * wp * C
                       : ((r / g->kw) * g->dh * wp + (r % g->kw) * g->dw) * C;
    return R;
}

/* Are the AVX2 image kernels usable (runs of whole vectors)? */
static int pool_avx2(const fnn_geom *g)
{
    int64_t L = 0;
    return FNN_X86_KERNELS && fnn_get_isa() >= 1 && pool_runs(g, NULL, &L) &&
           L % (int64_t)(32 / sizeof(real)) == 0;
}

/* Does the pooled backward take the sparse path? Whole windows (oh, ow >= 2), NHWC, and
 * the AVX2 image kernels (runs of whole vectors), or the generic ISA (the portable ones:
 * 0.4x the dense backward's time for (128, 13, 13, 32) -> 64). Not the portable kernels on
 * an AVX2 machine: for one input channel they took 6x the implicit dW's time. */
static int use_pool_sparse(const fnn_geom *g, int layout, int64_t f)
{
    int64_t L = 0;
    const int64_t img = (g->h + g->pt + g->pb) * (g->w + g->pl + g->pr) * g->c;
    if (layout != FNN_NHWC || g->oh < 2 || g->ow < 2 || !pad_fits(g) || !pool_runs(g, NULL, &L) ||
        img >= POOL_MAX_INDEX || g->oh * g->ow * f >= POOL_MAX_INDEX)
        return 0;
    return fnn_get_isa() == 0 || pool_avx2(g);
}

/* The portable dw image kernel: pool_dw_img_avx2's operation (kernels/conv_pool_avx2.c). */
static void pool_dw_img_ref(int64_t f, int64_t nwin, const real *gz, const int32_t *cn,
                            const real *x, int64_t R, int64_t L, const int64_t *roff,
                            real *dwt)
{
    for (int64_t j = 0; j < f; j++)
        for (int64_t q = 0; q < nwin; q++) {
            const real gq = gz[q * f + j];
            const real *xq = x + cn[q * f + j];
            real *d = dwt + j * R * L;
            for (int64_t r = 0; r < R; r++)
                for (int64_t e = 0; e < L; e++)
                    d[r * L + e] += gq * xq[roff[r] + e];
        }
}

/* The portable dx image kernel: pool_dx_img_avx2's operation, each product added to dx
 * (the AVX2 kernel sums a pixel's products first). */
static void pool_dx_img_ref(int64_t f, int64_t nwin, int64_t nwords, const uint64_t *mask,
                            const real *gz, const int64_t *cq, const real *wt, int64_t R,
                            int64_t L, const int64_t *roff, real *dx)
{
    for (int64_t s = 0; s < 4 * nwin; s++)
        for (int64_t j = 0; j < f; j++) {
            if (!(mask[s * nwords + j / 64] >> (j % 64) & 1))
                continue;
            const real gj = gz[s / 4 * f + j];
            for (int64_t r = 0; r < R; r++)
                for (int64_t e = 0; e < L; e++)
                    dx[cq[s] + roff[r] + e] += gj * wt[j * R * L + r * L + e];
        }
}

/* One thread's tables and scratch: for every pooled element (window q, filter j), its
 * gradient gz (0 where argmax is outside the window) and its argmax pixel's corner cn
 * (int32); each window's four pixels' corners cq and, with dx, the masks of the filters
 * whose nonzero gradient each of them takes (nwords 64-bit words per pixel); a padded x
 * image and dx image (with padding). */
typedef struct {
    real *gz, *xp, *dxp;
    int32_t *cn;
    int64_t *cq;
    uint64_t *mask;
} pool_tables;

static int64_t pool_tables_ws(const fnn_geom *g, int64_t f, int need_dx, pool_tables *t,
                              real *base)
{
    const int64_t I = (int64_t)(sizeof(int64_t) / sizeof(real));
    const int64_t nwin = (g->oh / 2) * (g->ow / 2), nwf = nwin * f, nwords = (f + 63) / 64;
    const int64_t img = (g->h + g->pt + g->pb) * (g->w + g->pl + g->pr) * g->c;
    const int64_t sizes[6] = {round8(nwf), round8((nwf + 1) / 2 * I), round8(4 * nwin * I),
                              need_dx ? round8(4 * nwin * nwords * I) : 0,
                              padded(g) ? round8(img) : 0,
                              padded(g) && need_dx ? round8(img) : 0};
    int64_t at[6], total = 0;
    for (int k = 0; k < 6; k++) {
        at[k] = total;
        total += sizes[k];
    }
    if (t) {
        t->gz = base + at[0];
        t->cn = (int32_t *)(base + at[1]);
        t->cq = (int64_t *)(base + at[2]);
        t->mask = (uint64_t *)(base + at[3]);
        t->xp = base + at[4];
        t->dxp = base + at[5];
    }
    return total;
}

/* Workspace: [w^T, with dx][per group: dw^T partial][per thread: pool_tables]. */
static int64_t pool_sparse_ws(const fnn_geom *g, int64_t f, int need_dx)
{
    const int64_t fp = round8(f * g->kh * g->kw * g->c);
    return (need_dx ? fp : 0) + direct_groups(g->n) * fp +
           fnn_max_threads() * pool_tables_ws(g, f, need_dx, NULL, NULL);
}

/* cq[4q + k]: the corner of pixel k = (0, 0), (0, 1), (1, 0), (1, 1) of window q in the
 * (padded) image, for every window (the same for every image). */
static void pool_corners(const fnn_geom *g, int64_t *cq)
{
    const int64_t PW = g->ow / 2, nwin = (g->oh / 2) * PW;
    const int64_t wp = g->w + g->pl + g->pr, C = g->c, OW = g->ow;
    for (int64_t q = 0; q < nwin; q++) {
        const int64_t p0 = 2 * (q / PW) * OW + 2 * (q % PW);
        const int64_t c0 = ((p0 / OW) * g->sh * wp + (p0 % OW) * g->sw) * C;
        cq[4 * q] = c0;
        cq[4 * q + 1] = c0 + g->sw * C;
        cq[4 * q + 2] = c0 + g->sh * wp * C;
        cq[4 * q + 3] = c0 + (g->sh * wp + g->sw) * C;
    }
}

/* One image's tables from its pooled gradient gp (nwin x f; relu's derivative applied where
 * yp, the pooled relu output, is not NULL) and argmax (flat indices into its oh x ow x f
 * output), or window positions pos (0 .. 3) where am is NULL (t->cq: pool_corners): which
 * of its window's four pixels each argmax names, by compares (no division, no branch to
 * mispredict); an argmax outside its window (never from the forward), or a position
 * above 3, is ignored, as pack_pooled does. This loop
 * is the reference of pool_tables_avx2 (kernels/conv_pool_avx2.c), which AVX2 machines
 * run instead: here the loop took about 7 ns per element, a third of an image's time. */
static void pool_image_tables(const fnn_geom *g, int64_t f, const real *restrict gp,
                              const real *restrict yp, const int64_t *restrict am,
                              const uint8_t *restrict pos, int need_dx, const pool_tables *t)
{
    const int64_t PW = g->ow / 2, nwin = (g->oh / 2) * PW, nwords = (f + 63) / 64;
    /* d: argmax minus the element's index at pixel 0, or its window position */
    const int64_t OW = g->ow, d1 = pos ? 1 : f, d2 = pos ? 2 : OW * f;
    const int64_t d3 = pos ? 3 : (OW + 1) * f;
#if FNN_X86_KERNELS
    if (fnn_get_isa() >= 1) {
        FNN(pool_tables_avx2)(f, nwin, PW, OW, gp, yp, am, pos, t->cq, need_dx, t->gz,
                              t->cn, t->mask);
        return;
    }
#endif
    for (int64_t q = 0; q < nwin; q++) {
        const int64_t base = (2 * (q / PW) * OW + 2 * (q % PW)) * f;
        const int64_t *cq = t->cq + 4 * q;
        const real *gq = gp + q * f;
        for (int64_t w0 = 0; w0 < nwords; w0++) {
            uint64_t m[4] = {0, 0, 0, 0};
            for (int64_t j = w0 * 64; j < f && j < w0 * 64 + 64; j++) {
                const int64_t d = pos ? pos[q * f + j] : am[q * f + j] - j - base;
                const int64_t e0 = d == 0, e1 = d == d1, e2 = d == d2, e3 = d == d3;
                const real gj = yp && !(yp[q * f + j] > 0) ? 0 : gq[j]; /* relu'd */
                const int64_t in = e0 | e1 | e2 | e3, keep = in & (gj != 0);
                const uint64_t bit = (uint64_t)1 << (j % 64);
                t->gz[q * f + j] = in ? gj : 0;
                t->cn[q * f + j] = (int32_t)(e1 ? cq[1] : e2 ? cq[2] : e3 ? cq[3] : cq[0]);
                m[0] |= bit & (0 - (uint64_t)(e0 & keep));
                m[1] |= bit & (0 - (uint64_t)(e1 & keep));
                m[2] |= bit & (0 - (uint64_t)(e2 & keep));
                m[3] |= bit & (0 - (uint64_t)(e3 & keep));
            }
            if (need_dx)
                for (int k = 0; k < 4; k++)
                    t->mask[(4 * q + k) * nwords + w0] = m[k];
        }
    }
}

/* dw (patch x f, overwritten) and dx (overwritten, unless NULL) of the whole batch g->n,
 * NHWC, from the pooled gradient dyp (n, oh/2, ow/2, f; relu's derivative applied where
 * ypool, the pooled relu output, is not NULL) and argmax (the pooling's, flat indices into
 * each image's oh x ow x f output) or, where argmax is NULL, window positions pos.
 * ws: pool_sparse_ws. */
static void conv_pool_sparse(const fnn_geom *g, int64_t f, const real *dyp,
                             const real *ypool, const int64_t *argmax, const uint8_t *pos,
                             const real *x, const real *w, real *ws, real *dx, real *dw)
{
    const int64_t C = g->c, patch = g->kh * g->kw * C, fp = round8(f * patch);
    const int64_t nwin = (g->oh / 2) * (g->ow / 2), nwf = nwin * f, xs = g->h * g->w * C;
    const int64_t hp = g->h + g->pt + g->pb, wp = g->w + g->pl + g->pr;
    const int64_t ng = direct_groups(g->n), per = (g->n + ng - 1) / ng, nwords = (f + 63) / 64;
    const int need_dx = dx != NULL, avx2 = pool_avx2(g), pad = padded(g);
    int64_t roff[POOL_MAX_RUNS], L = 0;
    const int64_t R = pool_runs(g, roff, &L);
    real *wt = ws, *parts = ws + (need_dx ? fp : 0), *tws = parts + ng * fp;
    const int64_t tsize = pool_tables_ws(g, f, need_dx, NULL, NULL);
    if (need_dx)
        for (int64_t i = 0; i < patch; i++)
            for (int64_t j = 0; j < f; j++)
                wt[j * patch + i] = w[i * f + j];
    int nt = fnn_threads_for_macs(g->n * nwf * patch);
    if (nt > ng)
        nt = (int)ng;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        pool_tables t;
        pool_tables_ws(g, f, need_dx, &t, tws + fnn_thread_num() * tsize);
        pool_corners(g, t.cq);
#pragma omp for schedule(static) /* FNN_IMAGE_SPLIT */
        for (int64_t gi = 0; gi < ng; gi++) {
            real *dwt = parts + gi * fp;
            memset(dwt, 0, sizeof(real) * (size_t)(f * patch));
            for (int64_t n = gi * per; n < min64(g->n, (gi + 1) * per); n++) {
                const real *xi = x + n * xs;
                real *dxi = need_dx ? (pad ? t.dxp : dx + n * xs) : NULL;
                pool_image_tables(g, f, dyp + n * nwf, ypool ? ypool + n * nwf : NULL,
                                  argmax ? argmax + n * nwf : NULL, pos ? pos + n * nwf : NULL,
                                  need_dx, &t);
                if (pad) {
                    pad_image(g, xi, t.xp);
                    xi = t.xp;
                }
                if (dxi)
                    memset(dxi, 0, sizeof(real) * (size_t)(pad ? hp * wp * C : xs));
#if FNN_X86_KERNELS
                if (avx2) {
                    FNN(pool_dw_img_avx2)(f, nwin, t.gz, t.cn, xi, R, L, roff, dwt);
                    if (dxi)
                        FNN(pool_dx_img_avx2)(f, nwin, nwords, t.mask, t.gz, t.cq, wt, R, L,
                                              roff, dxi);
                }
#endif
                if (!avx2) {
                    pool_dw_img_ref(f, nwin, t.gz, t.cn, xi, R, L, roff, dwt);
                    if (dxi)
                        pool_dx_img_ref(f, nwin, nwords, t.mask, t.gz, t.cq, wt, R, L, roff,
                                        dxi);
                }
                if (dxi && pad)
                    unpad_image(g, dxi, dx + n * xs);
            }
        }
        /* implicit barrier: every partial is complete; dw = their sum, transposed */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < patch; i++)
            for (int64_t j = 0; j < f; j++)
                dw[i * f + j] = fnn_sum_partials(parts + j * patch + i, ng, fp);
    }
}

/* Does fnn_conv2d_pool_bwd apply (need_dx: with the input gradient)? */
int FNN(conv2d_pool_bwd_ok)(const fnn_geom *g, int layout, int64_t f, int need_dx)
{
    return use_pool_sparse(g, layout, f) ||
           (!need_dx && (use_c1_pooled(g, layout, f, 1) ||
                         (use_implicit(g, layout) && g->oh >= 2 && g->ow >= 2)));
}

/* Workspace elements of fnn_conv2d_pool_bwd (as fnn_conv2d_ws: ask right before). */
int64_t FNN(conv2d_pool_bwd_ws)(const fnn_geom *g, int layout, int64_t f, int64_t chunk,
                                int need_dx)
{
    if (use_pool_sparse(g, layout, f))
        return pool_sparse_ws(g, f, need_dx) + WS_ALIGN;
    if (!need_dx && use_c1_pooled(g, layout, f, 1))
        return c1_ws(g, f, chunk, 1) + WS_ALIGN; /* (the cropped geometry needs no more) */
    return implicit_bwd_parts(g, layout, f, chunk).size + WS_ALIGN;
}

/* dw (shaped like w, overwritten), db (f, overwritten unless NULL) and dx (overwritten
 * unless NULL) of a convolution followed by 2x2 max pooling (stride 2, no padding), NHWC,
 * from the pooled gradient dyp (n, oh/2, ow/2, f) and the pooling's argmax (same shape,
 * flat indices into each image's oh x ow x f output, in range) or, where argmax is NULL,
 * its window positions pos (fnn_conv2d_pool_fwd's), without the convolution's own
 * gradient: sparse (conv_pool_sparse), or for dw alone the implicit dW in chunks of at
 * most `chunk` images (pack_pooled). ypool (NULL: none): a relu convolution's pooled
 * output, relu's derivative applied to dyp (fastnn.h). Returns 1, or 0 (nothing written)
 * where fnn_conv2d_pool_bwd_ok is false or not exactly one of argmax and pos is NULL. ws:
 * fnn_conv2d_pool_bwd_ws(g, layout, f, chunk, dx != NULL) elements. */
int FNN(conv2d_pool_bwd)(const fnn_geom *g, int layout, int64_t f, const real *dyp,
                         const real *ypool, const int64_t *argmax, const uint8_t *pos,
                         const real *x, const real *w, int64_t chunk, real *ws, real *dx,
                         real *dw, real *db)
{
    if (!FNN(conv2d_pool_bwd_ok)(g, layout, f, dx != NULL) || !argmax == !pos)
        return 0;
    ws = fnn_align_ws(ws);
    const int64_t xs = g->h * g->w * g->c, ps = (g->oh / 2) * (g->ow / 2) * f;
    if (db && ypool) /* relu's derivative taken in the kernels that read dyp; db as
                      * fnn_bias_act_bwd sums it */
        FNN(relu_bias_grad)(g->n * ps / f, f, dyp, ypool, db);
    else if (db)
        FNN(bias_grad)(g->n * ps / f, f, 1, dyp, db);
    if (use_pool_sparse(g, layout, f)) {
        conv_pool_sparse(g, f, dyp, ypool, argmax, pos, x, w, ws, dx, dw);
        return 1;
    }
    fnn_geom gc = *g;
    if (!dx && use_c1_pooled(g, layout, f, 1)) {
        /* the windows' pixels only: an odd last row or column, which no window reads, is
         * neither formed nor multiplied (an inf in x read by it alone leaves dw finite) */
        gc.oh = g->oh / 2 * 2;
        gc.ow = g->ow / 2 * 2;
        for (int64_t n0 = 0; n0 < g->n; n0 += chunk) {
            gc.n = g->n - n0 < chunk ? g->n - n0 : chunk;
            const pooled_dy pd = {dyp + n0 * ps, ypool ? ypool + n0 * ps : NULL,
                                  argmax ? argmax + n0 * ps : NULL, pos ? pos + n0 * ps : NULL};
            unpool_planes(&gc, f, &pd, g->ow, c1_planes(&gc, f, ws));
            c1_dw(&gc, f, x + n0 * xs, n0 == 0, ws);
        }
        transpose_images(1, f, g->kh * g->kw, ws, dw); /* dw (patch x f) from dw^T */
        return 1;
    }
    real *dw_ws = ws + implicit_bwd_parts(g, layout, f, chunk).dw;
    for (int64_t n0 = 0; n0 < g->n; n0 += chunk) {
        gc.n = g->n - n0 < chunk ? g->n - n0 : chunk;
        const pooled_dy pd = {dyp + n0 * ps, ypool ? ypool + n0 * ps : NULL,
                              argmax ? argmax + n0 * ps : NULL, pos ? pos + n0 * ps : NULL};
        conv_dw_implicit(&gc, f, x + n0 * xs, NULL, &pd, n0 == 0, dw_ws, dw);
    }
    return 1;
}
