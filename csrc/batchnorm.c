/* batchnorm.c: batch normalization's per-channel kernels, forward and backward (float and
 * double; compiled twice, FNN_PREC=32/64). Arrays are viewed as (outer, c, inner),
 * row-major: a Dense or NHWC input is (rows, c, 1), an NCHW one (n, c, h*w). Channel j's
 * elements are x[o, j, i] for every o and i: n = outer * inner of them (n >= 1; the
 * Python wrapper handles n == 0). Reference: fastnn/backends/numpy_backend.py
 * (batchnorm_stats, batchnorm_forward, batchnorm_backward), the same formulas with
 * NumPy's float64 sums.
 *
 * Sums: each channel's are accumulated in double (accum) from partial sums of at most
 * BN_FBLK elements in the arrays' own type, in an order that depends on the shape only,
 * so the results do not depend on the thread count: channels-last (inner == 1) by row
 * pieces that the threads share, the pieces' sums added in piece order (as the bias
 * gradient's bias_rows, epilogue.c); otherwise the threads split the channels.
 *
 * bn_pool_fwd and bn_pool_bwd: the affine step followed by 2x2 max pooling of stride 2
 * (channels-last), and its backward from the pooled gradient, without the normalized
 * array: Sequential runs BatchNormalization - (a non-decreasing activation) -
 * MaxPooling2D(2) through them (fastnn/layers/normalization.py, bn_pool_forward). */
#include "fnn_real.h"

#define BN_PIECES 8       /* row pieces of a channels-last sum, at most */
#define BN_PIECE_ROWS 64  /* rows per piece, at least */
#define BN_CBLK 64        /* channels per block of a channels-last pass (sums in L1) */
#define BN_FBLK 16        /* rows (channels-last) summed in `real` before each double add */
#define BN_RUN 128        /* elements of an inner run summed in `real` likewise */
#define BN_LANES 8        /* channels summed together in registers (sums_last) */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* f1[j] += u and f2[j] += u * w over rows [o, oe) of a channels-last pair p, q (row stride
 * c) for its first nb channels, u = p[r, j] - ps[j], w = q[r, j] - qs[j]; inlined, so a
 * constant nb keeps the sums in registers. */
FNN_ALWAYS_INLINE void add_rows(int64_t o, int64_t oe, int64_t c, int64_t nb, const real *p,
                                const real *ps, const real *q, const real *qs, real *f1,
                                real *f2)
{
    for (int64_t r = o; r < oe; r++) {
        const real *pr = p + r * c, *qr = q + r * c;
        for (int64_t j = 0; j < nb; j++) {
            const real u = pr[j] - ps[j], w = qr[j] - qs[j];
            f1[j] += u;
            f2[j] += u * w;
        }
    }
}

/* For channels [j0, j0 + nj) of a channels-last (outer, c) pair p, q: s1[j - j0] = sum over
 * rows of u and s2[j - j0] = sum of u * w, with u = p[o, j] - ps[j - j0] and w = q[o, j] -
 * qs[j - j0] (shifts of nj values); overwrites s1, s2. */
static void sums_last(int64_t outer, int64_t c, int64_t j0, int64_t nj, const real *p,
                      const real *ps, const real *q, const real *qs, accum *s1, accum *s2)
{
    int64_t pieces = outer / BN_PIECE_ROWS;
    pieces = pieces < 1 ? 1 : pieces > BN_PIECES ? BN_PIECES : pieces;
    int nt = fnn_threads_for(outer * nj);
    if (nt > pieces)
        nt = (int)pieces;
    accum part1[BN_PIECES][BN_CBLK], part2[BN_PIECES][BN_CBLK];
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t pc = 0; pc < pieces; pc++) {
        accum a1[BN_CBLK], a2[BN_CBLK];
        for (int64_t j = 0; j < nj; j++)
            a1[j] = a2[j] = 0;
        const int64_t o1 = outer * (pc + 1) / pieces;
        for (int64_t o = outer * pc / pieces; o < o1; o += BN_FBLK) {
            const int64_t oe = min64(o + BN_FBLK, o1);
            /* BN_LANES channels at a time, a constant count: their sums stay in registers
             * (nj at a time, the compiler kept them in memory: 0.58 ms for the statistics
             * of (128, 26, 26, 32) on 2 threads); each channel's additions are the same */
            for (int64_t jb = 0; jb < nj; jb += BN_LANES) {
                real f1[BN_LANES] = {0}, f2[BN_LANES] = {0};
                const int64_t nb = min64(BN_LANES, nj - jb);
                const real *pj = p + j0 + jb, *qj = q + j0 + jb;
                if (nb == BN_LANES)
                    add_rows(o, oe, c, BN_LANES, pj, ps + jb, qj, qs + jb, f1, f2);
                else
                    add_rows(o, oe, c, nb, pj, ps + jb, qj, qs + jb, f1, f2);
                for (int64_t j = 0; j < nb; j++) {
                    a1[jb + j] += f1[j];
                    a2[jb + j] += f2[j];
                }
            }
        }
        for (int64_t j = 0; j < nj; j++) {
            part1[pc][j] = a1[j];
            part2[pc][j] = a2[j];
        }
    }
    for (int64_t j = 0; j < nj; j++) {
        accum t1 = part1[0][j], t2 = part2[0][j];
        for (int64_t pc = 1; pc < pieces; pc++) {
            t1 += part1[pc][j];
            t2 += part2[pc][j];
        }
        s1[j] = t1;
        s2[j] = t2;
    }
}

/* Channel j of an (outer, c, inner > 1) pair: *s1 = sum of u, *s2 = sum of u * w over
 * its n elements, u = p - ps, w = q - qs; runs of BN_RUN elements summed in `real`. */
static void sums_inner(int64_t outer, int64_t c, int64_t inner, int64_t j, const real *p,
                       real ps, const real *q, real qs, accum *s1, accum *s2)
{
    accum a1 = 0, a2 = 0;
    for (int64_t o = 0; o < outer; o++) {
        const real *pr = p + (o * c + j) * inner, *qr = q + (o * c + j) * inner;
        for (int64_t i0 = 0; i0 < inner; i0 += BN_RUN) {
            const int64_t i1 = min64(i0 + BN_RUN, inner);
            real f1 = 0, f2 = 0;
            for (int64_t i = i0; i < i1; i++) {
                const real u = pr[i] - ps, w = qr[i] - qs;
                f1 += u;
                f2 += u * w;
            }
            a1 += f1;
            a2 += f2;
        }
    }
    *s1 = a1;
    *s2 = a2;
}

/* A channel's shift for its sums: its first element, or 0 where that is not finite (an
 * infinite channel's mean then stays infinite). */
static inline real shift_of(real v) { return v - v == 0 ? v : 0; }

/* Per-channel batch statistics: mean[j] and the biased variance var[j] = mean of (x -
 * mean)^2 over channel j's n elements; overwrites mean and var (c values each). One pass:
 * the sums of d = x - s and of d^2 (s = shift_of(x[0, j, 0]): the shift keeps the
 * variance exact to double rounding when |mean| >> its spread); var = sum(d^2) / n -
 * (sum(d) / n)^2, at least 0. NaN in a channel makes its mean and variance NaN. */
void FNN(bn_stats)(int64_t outer, int64_t c, int64_t inner, const real *x, real *mean,
                   real *var)
{
    const accum n = (accum)(outer * inner);
    if (inner == 1) {
        for (int64_t jb = 0; jb < c; jb += BN_CBLK) {
            const int64_t nj = min64(BN_CBLK, c - jb);
            accum s1[BN_CBLK], s2[BN_CBLK];
            real s[BN_CBLK];
            for (int64_t j = 0; j < nj; j++)
                s[j] = shift_of(x[jb + j]);
            sums_last(outer, c, jb, nj, x, s, x, s, s1, s2);
            for (int64_t j = 0; j < nj; j++) {
                const accum m = s1[j] / n, v = s2[j] / n - m * m;
                mean[jb + j] = (real)(m + s[j]);
                var[jb + j] = (real)(v > 0 || v != v ? v : 0);
            }
        }
        return;
    }
    const int nt = c >= 2 ? fnn_threads_for(outer * c * inner) : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t j = 0; j < c; j++) {
        const real s = shift_of(x[j * inner]);
        accum s1, s2;
        sums_inner(outer, c, inner, j, x, s, x, s, &s1, &s2);
        const accum m = s1 / n, v = s2 / n - m * m;
        mean[j] = (real)(m + s);
        var[j] = (real)(v > 0 || v != v ? v : 0);
    }
}

/* y[o, j, i] = (x[o, j, i] - mean[j]) * (inv_std[j] * gamma[j]) + beta[j], each operation
 * rounded to `real` in that order (gamma NULL: 1, beta NULL: no add); overwrites y, which
 * may be x. Threads over outer. */
void FNN(bn_apply)(int64_t outer, int64_t c, int64_t inner, const real *x, const real *mean,
                   const real *inv_std, const real *gamma, const real *beta, real *y)
{
    const int nt = fnn_threads_for(outer * c * inner);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t o = 0; o < outer; o++) {
        const real *xo = x + o * c * inner;
        real *yo = y + o * c * inner;
        if (inner == 1) {
            if (gamma && beta)
                for (int64_t j = 0; j < c; j++)
                    yo[j] = (xo[j] - mean[j]) * (inv_std[j] * gamma[j]) + beta[j];
            else
                for (int64_t j = 0; j < c; j++) {
                    const real v = (xo[j] - mean[j]) * (gamma ? inv_std[j] * gamma[j]
                                                              : inv_std[j]);
                    yo[j] = beta ? v + beta[j] : v;
                }
            continue;
        }
        for (int64_t j = 0; j < c; j++) {
            const real m = mean[j], a = gamma ? inv_std[j] * gamma[j] : inv_std[j];
            const real *xj = xo + j * inner;
            real *yj = yo + j * inner;
            if (beta) {
                const real b = beta[j];
                for (int64_t i = 0; i < inner; i++)
                    yj[i] = (xj[i] - m) * a + b;
            } else {
                for (int64_t i = 0; i < inner; i++)
                    yj[i] = (xj[i] - m) * a;
            }
        }
    }
}

/* bn_bwd's coefficients for channels [jb, jb + nj) from their sums s1, s2 over n elements
 * (see bn_bwd): ka, km, kk (nj each) overwritten, and dbeta, dgamma where not NULL. */
static void bwd_coefficients(int64_t jb, int64_t nj, accum n, const accum *s1,
                             const accum *s2, const real *inv_std, const real *gamma,
                             int training, real *ka, real *km, real *kk, real *dgamma,
                             real *dbeta)
{
    for (int64_t j = 0; j < nj; j++) {
        const accum is = inv_std[jb + j], g = gamma ? gamma[jb + j] : 1;
        ka[j] = (real)(g * is);
        km[j] = training ? (real)(s1[j] / n) : 0;
        kk[j] = training ? (real)(g * is * is * is * s2[j] / n) : 0;
        if (dbeta)
            dbeta[jb + j] = (real)s1[j];
        if (dgamma)
            dgamma[jb + j] = (real)(s2[j] * is);
    }
}

/* The backward of y = (x - mean) * inv_std * gamma + beta, given dy. With the channel sums
 * s1 = sum(dy) and s2 = sum(dy * (x - mean)) (double), a = gamma * inv_std:
 *   dbeta = s1, dgamma = s2 * inv_std (each overwritten when not NULL);
 *   training (mean and inv_std are the batch's, so depend on x):
 *     dx = a * (dy - s1 / n) - k * (x - mean), k = gamma * inv_std^3 * s2 / n
 *     (the coefficients in double, then rounded);
 *   else (moving statistics, constants): dx = a * dy.
 * dx overwritten; it may be dy. gamma NULL: 1. Channels-last: a block of channels has its
 * sums taken, then its dx written (rows twice, the block's sums in L1). */
void FNN(bn_bwd)(int64_t outer, int64_t c, int64_t inner, const real *dy, const real *x,
                 const real *mean, const real *inv_std, const real *gamma, int training,
                 real *dx, real *dgamma, real *dbeta)
{
    const accum n = (accum)(outer * inner);
    const int sums = training || dgamma || dbeta;
    if (inner == 1) {
        const int nt = fnn_threads_for(outer * c);
        for (int64_t jb = 0; jb < c; jb += BN_CBLK) {
            const int64_t nj = min64(BN_CBLK, c - jb);
            accum s1[BN_CBLK] = {0}, s2[BN_CBLK] = {0};
            real zero[BN_CBLK] = {0}, ka[BN_CBLK], km[BN_CBLK], kk[BN_CBLK];
            if (sums)
                sums_last(outer, c, jb, nj, dy, zero, x, mean + jb, s1, s2);
            bwd_coefficients(jb, nj, n, s1, s2, inv_std, gamma, training, ka, km, kk, dgamma,
                             dbeta);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
            for (int64_t o = 0; o < outer; o++) {
                const real *g = dy + o * c + jb, *xo = x + o * c + jb, *m = mean + jb;
                real *d = dx + o * c + jb;
                if (training)
                    for (int64_t j = 0; j < nj; j++)
                        d[j] = ka[j] * (g[j] - km[j]) - kk[j] * (xo[j] - m[j]);
                else
                    for (int64_t j = 0; j < nj; j++)
                        d[j] = ka[j] * g[j];
            }
        }
        return;
    }
    const int nt = c >= 2 ? fnn_threads_for(outer * c * inner) : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t j = 0; j < c; j++) {
        const real m = mean[j];
        accum s1 = 0, s2 = 0;
        if (sums)
            sums_inner(outer, c, inner, j, dy, 0, x, m, &s1, &s2);
        const accum is = inv_std[j], gj = gamma ? gamma[j] : 1;
        const real ka = (real)(gj * is), km = training ? (real)(s1 / n) : 0,
                   kk = training ? (real)(gj * is * is * is * s2 / n) : 0;
        if (dbeta)
            dbeta[j] = (real)s1;
        if (dgamma)
            dgamma[j] = (real)(s2 * is);
        for (int64_t o = 0; o < outer; o++) {
            const real *g = dy + (o * c + j) * inner, *xo = x + (o * c + j) * inner;
            real *d = dx + (o * c + j) * inner;
            if (training)
                for (int64_t i = 0; i < inner; i++)
                    d[i] = ka * (g[i] - km) - kk * (xo[i] - m);
            else
                for (int64_t i = 0; i < inner; i++)
                    d[i] = ka * g[i];
        }
    }
}

#define BNP_CBLK 64 /* channels per window pass of bn_pool_fwd (their a = inv_std * gamma) */

/* One 2x2 window on n channels (bn_pool_fwd's reference, and its AVX2 kernel's last
 * channels): the four values v_k = (x_k - m) * a, + b where b is not NULL (bn_apply's
 * operations), then fnn_beats' rule from the first (larger, or the first NaN): y = the
 * winner, pos = its k, xm = its x. */
static void bn_window(int64_t n, const real *const xs[4], const real *m, const real *a,
                      const real *b, real *y, uint8_t *pos, real *xm)
{
    for (int64_t j = 0; j < n; j++) {
        real best = 0, xb = 0;
        int kb = 0;
        for (int k = 0; k < 4; k++) {
            const real u = xs[k][j], v = b ? (u - m[j]) * a[j] + b[j] : (u - m[j]) * a[j];
            if (k == 0 || fnn_beats(v, best)) {
                best = v;
                kb = k;
                xb = u;
            }
        }
        y[j] = best;
        pos[j] = (uint8_t)kb;
        xm[j] = xb;
    }
}

/* Batch normalization's affine step, then 2x2 max pooling of stride 2, channels-last, the
 * normalized array never written: x (n, h, w, c); y (n, h/2, w/2, c) = each window's
 * maximum of (x - mean) * (inv_std * gamma) + beta, pos (same shape, one byte) its position
 * 0 .. 3 in the window ((0, 0), (0, 1), (1, 0), (1, 1)) and xm (same shape) x there, for
 * the backward's sums. Each value is bn_apply's (the same operations, no contraction)
 * and each window is pooled by the rule of fnn_maxpool_fwd (the first maximum, or the
 * first NaN): y is bn_apply's output pooled, bit for bit. bn_window, or its AVX2 kernel
 * (kernels/pool_avx2.c) where fnn_get_isa() >= 1. The last row or column of an odd h or
 * w is read by no window. y, pos and xm overwritten; gamma NULL: 1, beta NULL: no add.
 * Threads over pooled rows. */
void FNN(bn_pool_fwd)(int64_t n, int64_t h, int64_t w, int64_t c, const real *x,
                      const real *mean, const real *inv_std, const real *gamma,
                      const real *beta, real *y, uint8_t *pos, real *xm)
{
    const int64_t ph = h / 2, pw = w / 2;
    const int avx2 = fnn_get_isa() >= 1;
    const int nt = fnn_threads_for(n * ph * pw * 4 * c);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t r = 0; r < n * ph; r++) {
        const real *x0 = x + ((r / ph) * h + 2 * (r % ph)) * w * c; /* the window rows */
        for (int64_t q = 0; q < pw; q++) {
            const real *px[4] = {x0 + 2 * q * c, x0 + (2 * q + 1) * c, x0 + (w + 2 * q) * c,
                                 x0 + (w + 2 * q + 1) * c};
            const int64_t o = (r * pw + q) * c;
            for (int64_t j0 = 0; j0 < c; j0 += BNP_CBLK) {
                const int64_t nj = min64(BNP_CBLK, c - j0);
                real a[BNP_CBLK];
                for (int64_t j = 0; j < nj; j++)
                    a[j] = gamma ? inv_std[j0 + j] * gamma[j0 + j] : inv_std[j0 + j];
                const real *xs[4] = {px[0] + j0, px[1] + j0, px[2] + j0, px[3] + j0};
                const real *m = mean + j0, *b = beta ? beta + j0 : NULL;
                real *yo = y + o + j0, *xo = xm + o + j0;
                uint8_t *po = pos + o + j0;
                int64_t done = 0;
#if FNN_X86_KERNELS
                if (avx2)
                    done = FNN(bn_max4_avx2)(nj, xs, m, a, b, yo, po, xo);
#endif
                if (done < nj) {
                    const real *rest[4] = {xs[0] + done, xs[1] + done, xs[2] + done,
                                           xs[3] + done};
                    bn_window(nj - done, rest, m + done, a + done, b ? b + done : NULL,
                              yo + done, po + done, xo + done);
                }
            }
        }
    }
}

/* The backward of bn_pool_fwd: dy (n, h/2, w/2, c) the gradient of its y, pos and xm its
 * positions and x there. The normalized array's gradient g is dy at each window's position
 * and 0 elsewhere (the rows and columns no window reads too), and bn_bwd's formulas follow
 * with it: s1 = sum(g), s2 = sum(g * (x - mean)), summed over the pooled elements only
 * (dy and xm: the zeros add nothing; sums_last's order, so thread-independent, not bn_bwd's
 * bits), then dx = a * (g - s1 / n) - k * (x - mean) over all n * h * w elements
 * (training), else a * g. dx (n, h, w, c) overwritten, dgamma and dbeta as bn_bwd's.
 * Returns 1, or 0 where a position is over 3 (its gradient is dropped from dx, never an
 * address; the rest written). */
int FNN(bn_pool_bwd)(int64_t n, int64_t h, int64_t w, int64_t c, const real *dy,
                     const uint8_t *pos, const real *xm, const real *x, const real *mean,
                     const real *inv_std, const real *gamma, int training, real *dx,
                     real *dgamma, real *dbeta)
{
    const int64_t ph = h / 2, pw = w / 2, pooled = n * ph * pw;
    const accum cnt = (accum)(n * h * w);
    const int sums = training || dgamma || dbeta;
    const int nt = fnn_threads_for(n * h * w * c);
    int bad = 0;
    for (int64_t jb = 0; jb < c; jb += BN_CBLK) {
        const int64_t nj = min64(BN_CBLK, c - jb);
        accum s1[BN_CBLK] = {0}, s2[BN_CBLK] = {0};
        real zero[BN_CBLK] = {0}, ka[BN_CBLK], km[BN_CBLK], kk[BN_CBLK];
        if (sums && pooled)
            sums_last(pooled, c, jb, nj, dy, zero, xm, mean + jb, s1, s2);
        bwd_coefficients(jb, nj, cnt, s1, s2, inv_std, gamma, training, ka, km, kk, dgamma,
                         dbeta);
        /* by pairs of input rows (the windows' rows), then an odd last row; each window's
         * positions as floats (the loops then vectorise) */
        const int64_t rows = ph + (h & 1);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) reduction(| : bad)
        for (int64_t t = 0; t < n * rows; t++) {
            const int64_t img = t / rows, i = t % rows;
            const int64_t ih = i < ph ? 2 * i : h - 1, nrow = i < ph ? 2 : 1;
            const real *m = mean + jb;
            uint8_t top = 0;
            for (int64_t iw = 0; iw < w; iw += 2) {
                const int64_t npix = iw + 1 < w ? 2 : 1;
                const int win = i < ph && iw + 1 < w;
                real pf[BN_CBLK], gy[BN_CBLK];
                if (win) { /* a window: its positions and gradient */
                    const int64_t o = ((img * ph + i) * pw + iw / 2) * c + jb;
                    for (int64_t j = 0; j < nj; j++) {
                        top |= pos[o + j];
                        pf[j] = pos[o + j];
                        gy[j] = dy[o + j];
                    }
                }
                for (int64_t k = 0; k < 2 * nrow; k++) {
                    if ((k & 1) >= npix)
                        continue;
                    const int64_t e = ((img * h + ih + k / 2) * w + iw + (k & 1)) * c + jb;
                    const real *xo = x + e, kf = (real)k;
                    real *restrict d = dx + e;
                    if (win && training)
                        for (int64_t j = 0; j < nj; j++) {
                            const real g = pf[j] == kf ? gy[j] : 0;
                            d[j] = ka[j] * (g - km[j]) - kk[j] * (xo[j] - m[j]);
                        }
                    else if (training)
                        for (int64_t j = 0; j < nj; j++)
                            d[j] = ka[j] * (0 - km[j]) - kk[j] * (xo[j] - m[j]);
                    else /* bn_bwd's a * dy (x not read: an infinite x gives no NaN) */
                        for (int64_t j = 0; j < nj; j++)
                            d[j] = ka[j] * (win && pf[j] == kf ? gy[j] : 0);
                }
            }
            bad |= top > 3;
        }
    }
    return !bad;
}
