/* epilogue.c: fused bias + activation, forward and backward (float and double; compiled
 * twice, FNN_PREC=32/64). Arrays are viewed as (outer, c, inner), row-major: a Dense or
 * NHWC output is (rows, c, 1), an NCHW output is (n, c, h*w). */
#include "fnn_real.h"

/* out[o, j, i] = act(y[o, j, i] + b[j]) (b may be NULL: y unchanged, -0.0 kept); overwrites
 * out, which may be y. relu keeps NaN (v < 0 ? 0 : v). Threads over outer. */
void FNN(bias_act)(int64_t outer, int64_t c, int64_t inner, const real *y, const real *b,
                   int act, real *out)
{
    const int nt = fnn_threads_for(outer * c * inner);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t o = 0; o < outer; o++) {
        const real *yo = y + o * c * inner;
        real *oo = out + o * c * inner;
        if (inner == 1) {
            for (int64_t j = 0; j < c; j++) {
                const real v = b ? yo[j] + b[j] : yo[j];
                oo[j] = (act == FNN_ACT_RELU && v < 0) ? 0 : v;
            }
            continue;
        }
        for (int64_t j = 0; j < c; j++) {
            const real *yj = yo + j * inner;
            real *oj = oo + j * inner;
            if (b) {
                const real bj = b[j];
                for (int64_t i = 0; i < inner; i++) {
                    const real v = yj[i] + bj;
                    oj[i] = (act == FNN_ACT_RELU && v < 0) ? 0 : v;
                }
            } else {
                for (int64_t i = 0; i < inner; i++) {
                    const real v = yj[i];
                    oj[i] = (act == FNN_ACT_RELU && v < 0) ? 0 : v;
                }
            }
        }
    }
}

/* Bias + activation on a rows x cols block (contract: fnn_internal.h). The branches are
 * hoisted out of the element loops, which then vectorise. */
void FNN(bias_act_block)(const real *bias, int axis, int act, int64_t rows, int64_t cols,
                         int64_t i0, int64_t j0, real *c, int64_t ldc)
{
    const int relu = act == FNN_ACT_RELU;
    for (int64_t i = 0; i < rows; i++) {
        real *ci = c + i * ldc;
        if (bias && axis == 1) {
            const real *b = bias + j0;
            if (relu)
                for (int64_t j = 0; j < cols; j++) {
                    const real v = ci[j] + b[j];
                    ci[j] = v < 0 ? 0 : v;
                }
            else
                for (int64_t j = 0; j < cols; j++)
                    ci[j] = ci[j] + b[j];
        } else if (bias) {
            const real bi = bias[i0 + i];
            if (relu)
                for (int64_t j = 0; j < cols; j++) {
                    const real v = ci[j] + bi;
                    ci[j] = v < 0 ? 0 : v;
                }
            else
                for (int64_t j = 0; j < cols; j++)
                    ci[j] = ci[j] + bi;
        } else if (relu) {
            for (int64_t j = 0; j < cols; j++)
                ci[j] = ci[j] < 0 ? 0 : ci[j];
        }
    }
}

/* Partial sums per channel in bias_grad's (outer, c, inner > 1) case. */
#define BIAS_LANES 8

/* Channels-last sums (inner == 1): the rows are cut into row pieces, at most BIAS_PIECES
 * of at least BIAS_PIECE_ROWS rows, a count that depends on the row count only; each
 * piece sums its rows in order (in double) and the pieces' sums are added in piece
 * order, so the bits do not depend on the thread count. Threads take whole pieces, so
 * they share every row however few channels it has (split by channels, a thread's share
 * of a 32-float row was under the 128 bytes the prefetchers fetch together, and a (128,
 * 13, 13, 32) gradient took 281 us on two threads, 143 on one). Channels in blocks of
 * BIAS_CBLK (the partial sums stay in registers or L1). */
#define BIAS_PIECES 8
#define BIAS_PIECE_ROWS 64
#define BIAS_CBLK 64

/* db[j] = sum over o of v(o, j), v = dy[o, j] (y NULL) or relu's y[o, j] > 0 ? dy[o, j] :
 * 0 (y given), over an (outer, c) row-major dy; dx[o, j] = v overwritten when dx is not
 * NULL (dx may be dy; with y only); db overwritten. The order: bias_rows' comment above. */
static void bias_rows(int64_t outer, int64_t c, const real *dy, const real *y, real *dx,
                      real *db)
{
    int64_t pieces = outer / BIAS_PIECE_ROWS;
    pieces = pieces < 1 ? 1 : pieces > BIAS_PIECES ? BIAS_PIECES : pieces;
    int nt = fnn_threads_for(outer * c);
    if (nt > pieces)
        nt = (int)pieces;
    accum part[BIAS_PIECES][BIAS_CBLK];
    for (int64_t jb = 0; jb < c; jb += BIAS_CBLK) {
        const int64_t nj = c - jb < BIAS_CBLK ? c - jb : BIAS_CBLK;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t q = 0; q < pieces; q++) {
            accum acc[BIAS_CBLK];
            for (int64_t j = 0; j < nj; j++)
                acc[j] = 0;
            const int64_t o1 = outer * (q + 1) / pieces;
            for (int64_t o = outer * q / pieces; o < o1; o++) {
                const real *g = dy + o * c + jb;
                real row[BIAS_CBLK]; /* the selected row, when dx is NULL */
                if (y) { /* the select first, then the sum from L1: one loop of both was
                          * neither vectorised nor branch-free (2.4 ms for the gradient
                          * above, from random signs) */
                    const real *yo = y + o * c + jb;
                    real *d = dx ? dx + o * c + jb : row;
                    for (int64_t j = 0; j < nj; j++) {
                        const real v = g[j]; /* loaded always: the select vectorises */
                        d[j] = yo[j] > 0 ? v : 0;
                    }
                    g = d;
                }
                for (int64_t j = 0; j < nj; j++)
                    acc[j] += g[j];
            }
            for (int64_t j = 0; j < nj; j++)
                part[q][j] = acc[j];
        }
        for (int64_t j = 0; j < nj; j++) {
            accum s = part[0][j];
            for (int64_t q = 1; q < pieces; q++)
                s += part[q][j];
            db[jb + j] = (real)s;
        }
    }
}

/* db[j] = sum over o of (y[o, j] > 0 ? dy[o, j] : 0) over (outer, c) row-major dy and y
 * (a relu layer's channels-last output gradient and output): fnn_bias_act_bwd's bias
 * gradient, bit for bit, without writing the selected gradient; db overwritten. */
void FNN(relu_bias_grad)(int64_t outer, int64_t c, const real *dy, const real *y, real *db)
{
    bias_rows(outer, c, dy, y, NULL, db);
}

/* db[j] = sum over o, i of dy[o, j, i]; overwrites db. Each channel is summed in an order
 * that depends on the shape only (in double), so results do not depend on the thread
 * count: channels-last by row pieces (bias_rows), else threads split the channels. */
void FNN(bias_grad)(int64_t outer, int64_t c, int64_t inner, const real *dy, real *db)
{
    if (inner == 1) {
        bias_rows(outer, c, dy, NULL, NULL, db);
        return;
    }
    const int nt = c >= 8 ? fnn_threads_for(outer * c * inner) : 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int tid = fnn_thread_num(), nth = fnn_team_size();
        const int64_t j0 = c * tid / nth, j1 = c * (tid + 1) / nth;
        /* BIAS_LANES interleaved partial sums per channel (lane l takes the elements
         * with i % BIAS_LANES == l of each (o, j) row; the row's tail goes to its own
         * sum), added up in a fixed tree at the end. The lanes vectorise and their
         * adds overlap; one serial sum was bound by the add latency (4 cycles per
         * element: 2.3 ms for a 100 x 30 x 576 dy). The order depends on the shape
         * only. */
        for (int64_t j = j0; j < j1; j++) {
            accum lane[BIAS_LANES] = {0}, tail = 0;
            for (int64_t o = 0; o < outer; o++) {
                const real *p = dy + (o * c + j) * inner;
                int64_t i = 0;
                for (; i + BIAS_LANES <= inner; i += BIAS_LANES)
                    for (int l = 0; l < BIAS_LANES; l++)
                        lane[l] += p[i + l];
                for (; i < inner; i++)
                    tail += p[i];
            }
            for (int w = BIAS_LANES / 2; w >= 1; w /= 2)
                for (int l = 0; l < w; l++)
                    lane[l] += lane[l + w];
            db[j] = (real)(lane[0] + tail);
        }
    }
}

/* dx = dy * act'(y) where y is the forward OUTPUT (relu: y > 0); overwrites dx, which may
 * be dy. If db is not NULL it is overwritten with the bias gradient (sum of dx); relu
 * channels-last (inner == 1) does both in one pass (bias_rows), else db is summed from
 * dx afterwards. */
void FNN(bias_act_bwd)(int64_t outer, int64_t c, int64_t inner, const real *dy, const real *y,
                       int act, real *dx, real *db)
{
    const int64_t total = outer * c * inner;
    const int nt = fnn_threads_for(total);
    if (act == FNN_ACT_RELU && db && inner == 1) {
        bias_rows(outer, c, dy, y, dx, db);
        return;
    }
    if (act == FNN_ACT_RELU) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t e = 0; e < total; e++) {
            const real g = dy[e]; /* loaded unconditionally: the select vectorises */
            dx[e] = y[e] > 0 ? g : 0;
        }
    } else if (dx != dy) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t e = 0; e < total; e++)
            dx[e] = dy[e];
    }
    if (db)
        FNN(bias_grad)(outer, c, inner, dx, db);
}

/* Elements per block of the relu_mask loops (a multiple of the AVX2 kernel's 16): each
 * block is read twice (mask, then y) while it is in L1. */
#define RELU_BLOCK 1024

/* The mask form of relu, the from-scratch idiom `mask = x <= 0; y = x.copy(); y[mask] = 0`,
 * in one pass over n elements: mask[e] = x[e] <= 0 (1 or 0) and y[e] = mask[e] ? +0.0 : x[e],
 * so NaN passes (NaN <= 0 is false) and -0.0 becomes +0.0. Overwrites y (which may be x)
 * and mask (which overlaps neither). Each block's mask is taken before its y is written,
 * in two select loops the compiler vectorises (one loop with a byte store and a branch
 * did not: 6 ns per element on random signs). Threads over blocks. For double the mask
 * loop stays scalar here (a compare and a byte store per element: GCC finds no SSE2
 * narrowing for it): on AVX2 and AVX-512 CPUs a one-pass AVX2 block runs instead
 * (kernels/relu_avx2.c, the same bits; for float it was no faster, see there). */
void FNN(relu_mask)(int64_t n, const real *x, real *y, uint8_t *restrict mask)
{
    const int64_t nblk = (n + RELU_BLOCK - 1) / RELU_BLOCK;
    const int nt = fnn_threads_for(n);
#if FNN_X86_KERNELS && FNN_PREC == 64
    const int avx2 = fnn_get_isa() >= 1;
#endif
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t blk = 0; blk < nblk; blk++) {
        const int64_t e0 = blk * RELU_BLOCK, e1 = e0 + RELU_BLOCK < n ? e0 + RELU_BLOCK : n;
#if FNN_X86_KERNELS && FNN_PREC == 64
        if (avx2) {
            fnn_relu_mask_block_avx2_f64(e1 - e0, x + e0, y + e0, mask + e0);
            continue;
        }
#endif
        for (int64_t e = e0; e < e1; e++)
            mask[e] = x[e] <= 0;
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e];
            y[e] = v <= 0 ? (real)0 : v;
        }
    }
}

/* Its backward, the idiom `dout[mask] = 0`: dx[e] = mask[e] ? +0.0 : dy[e] over n elements;
 * overwrites dx, which may be dy. dy is loaded unconditionally, so the select vectorises. */
void FNN(relu_mask_bwd)(int64_t n, const real *dy, const uint8_t *restrict mask, real *dx)
{
    const int nt = fnn_threads_for(n);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t e = 0; e < n; e++) {
        const real g = dy[e];
        dx[e] = mask[e] ? (real)0 : g;
    }
}
