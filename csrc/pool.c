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
#include "pool_lanes.h"

static inline int64_t lo_clamp(int64_t v) { return v < 0 ? 0 : v; }
static inline int64_t hi_clamp(int64_t v, int64_t hi) { return v > hi ? hi : v; }

/* The in-bounds input range [win_lo, win_hi) of output o's window along one axis
 * (stride s, leading pad p, window k, input size n): the one window rule of this file. */
static inline int64_t win_lo(int64_t o, int64_t s, int64_t p) { return lo_clamp(o * s - p); }
static inline int64_t win_hi(int64_t o, int64_t s, int64_t p, int64_t k, int64_t n)
{
    return hi_clamp(o * s - p + k, n);
}

/* One NHWC output row (n, oh) of max pooling, the plain way: a branch per element.
 * The reference for maxpool_row_nhwc below, and the path for samples too large for its
 * 32-bit lane indices. y/argmax rows overwritten. */
static void maxpool_row_nhwc_ref(const fnn_geom *g, const real *xn, int64_t oh, real *yrow,
                                 int64_t *arow)
{
    const int64_t W = g->w, C = g->c;
    const int64_t h0 = win_lo(oh, g->sh, g->pt);
    const int64_t h1 = win_hi(oh, g->sh, g->pt, g->kh, g->h);
    for (int64_t ow = 0; ow < g->ow; ow++) {
        const int64_t w0 = win_lo(ow, g->sw, g->pl);
        const int64_t w1 = win_hi(ow, g->sw, g->pl, g->kw, W);
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
                    if (fnn_beats(xv[ch], yo[ch])) {
                        yo[ch] = xv[ch];
                        ao[ch] = base + ch;
                    }
            }
    }
}

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
    const int64_t h0 = win_lo(oh, g->sh, g->pt);
    const int64_t h1 = win_hi(oh, g->sh, g->pt, g->kh, g->h);
    for (int64_t ow = 0; ow < g->ow; ow++) {
        const int64_t w0 = win_lo(ow, g->sw, g->pl);
        const int64_t w1 = win_hi(ow, g->sw, g->pl, g->kw, W);
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

/* ---- NCHW, branch-free over output columns ------------------------------------------
 * Per (n, c) plane and output row, a block of up to POOL_OWB outputs keeps its running
 * values in arrays; the loops run over the window offsets (input row ih, kernel column s)
 * outside and the output column ow inside, so the inner loop is a straight compare/select
 * (or add) over contiguous (sw = 1) or strided input, no per-element bounds test: for each
 * s only the columns whose input column ow*sw - pl + s is inside the image take part
 * (padded positions never win, never count). Each window still sees its elements in
 * row-major order, so ties, NaN and sums come out as in the reference loops. */
#define POOL_OWB 256
#define POOL_KWMAX 32 /* wider windows take the reference loops */

/* Per kernel column s: the output columns ow in [lo[s], hi[s]) whose input column
 * ow*sw - pl + s is inside the image. Computed once per call (divisions). */
typedef struct {
    int64_t lo[POOL_KWMAX], hi[POOL_KWMAX];
} col_plan;

static void make_col_plan(const fnn_geom *g, col_plan *p)
{
    for (int64_t s = 0; s < g->kw; s++) {
        const int64_t off = s - g->pl, st = g->sw;
        int64_t a = off >= 0 ? 0 : (-off + st - 1) / st;
        int64_t b = off < g->w ? (g->w - 1 - off) / st + 1 : 0;
        if (b > g->ow)
            b = g->ow;
        if (a > b)
            a = b;
        p->lo[s] = a;
        p->hi[s] = b;
    }
}

/* The part [*lo, *hi) of kernel column s's range inside the block [ob, ob + nb), relative
 * to ob; empty when *lo >= *hi. */
static inline void block_range(const col_plan *p, int64_t s, int64_t ob, int64_t nb,
                               int64_t *lo, int64_t *hi)
{
    *lo = p->lo[s] > ob ? p->lo[s] - ob : 0;
    *hi = p->hi[s] < ob + nb ? p->hi[s] - ob : nb;
}

/* best/at[0:n] take src[o*sw] (index first + o*sw) where it beats them: larger, or the
 * first NaN. sw is a constant at the call sites below (1, 2, or the general case). */
static inline void max_run(int64_t n, const real *restrict src, int64_t sw, lane_idx first,
                           real *restrict best, lane_idx *restrict at)
{
    int64_t o = 0;
#if defined(POOL_SSE2) && FNN_PREC == 64
    __m128i idx = _mm_set_epi64x(first + sw, first);
    const __m128i step = _mm_set1_epi64x(2 * sw);
    for (; o + 2 <= n; o += 2) {
        /* sw = 2: [x0 x1], [x1 x2] -> [x0 x2], reading nothing past the last element */
        const __m128d v = sw == 1   ? _mm_loadu_pd(src + o)
                          : sw == 2 ? _mm_shuffle_pd(_mm_loadu_pd(src + 2 * o),
                                                     _mm_loadu_pd(src + 2 * o + 1), 2)
                                    : _mm_set_pd(src[(o + 1) * sw], src[o * sw]);
        const __m128d b = _mm_loadu_pd(best + o);
        const __m128d take = _mm_or_pd(_mm_cmpgt_pd(v, b),
                                       _mm_and_pd(_mm_cmpunord_pd(v, v), _mm_cmpord_pd(b, b)));
        _mm_storeu_pd(best + o, _mm_or_pd(_mm_and_pd(take, v), _mm_andnot_pd(take, b)));
        const __m128i t = _mm_castpd_si128(take);
        const __m128i old = _mm_loadu_si128((const __m128i *)(at + o));
        _mm_storeu_si128((__m128i *)(at + o),
                         _mm_or_si128(_mm_and_si128(t, idx), _mm_andnot_si128(t, old)));
        idx = _mm_add_epi64(idx, step);
    }
#elif defined(POOL_SSE2)
    /* lanes past n are never stored: computed in 64 bits, no int32 overflow */
    __m128i idx = _mm_set_epi32((lane_idx)(first + 3 * sw), (lane_idx)(first + 2 * sw),
                                (lane_idx)(first + sw), first);
    const __m128i step = _mm_set1_epi32((lane_idx)(4 * sw));
    for (; o + 4 <= n; o += 4) {
        __m128 v;
        if (sw == 1) {
            v = _mm_loadu_ps(src + o);
        } else if (sw == 2) {
            /* [x0 x1 x2 x3], [x3 x4 x5 x6] -> [x0 x2 x4 x6], nothing past the last */
            const __m128 lo = _mm_loadu_ps(src + 2 * o), hi = _mm_loadu_ps(src + 2 * o + 3);
            v = _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 2, 0));
        } else {
            v = _mm_set_ps(src[(o + 3) * sw], src[(o + 2) * sw], src[(o + 1) * sw],
                           src[o * sw]);
        }
        const __m128 b = _mm_loadu_ps(best + o);
        const __m128 take = _mm_or_ps(_mm_cmpgt_ps(v, b),
                                      _mm_and_ps(_mm_cmpunord_ps(v, v), _mm_cmpord_ps(b, b)));
        _mm_storeu_ps(best + o, _mm_or_ps(_mm_and_ps(take, v), _mm_andnot_ps(take, b)));
        const __m128i t = _mm_castps_si128(take);
        const __m128i old = _mm_loadu_si128((const __m128i *)(at + o));
        _mm_storeu_si128((__m128i *)(at + o),
                         _mm_or_si128(_mm_and_si128(t, idx), _mm_andnot_si128(t, old)));
        idx = _mm_add_epi32(idx, step);
    }
#endif
    for (; o < n; o++) {
        const real v = src[o * sw], b = best[o];
        const int take = (v > b) | ((v != v) & (b == b));
        best[o] = take ? v : b;
        at[o] = take ? first + (lane_idx)(o * sw) : at[o];
    }
}

/* best[0:n] = src[o*sw], at[0:n] = first + o*sw. */
static inline void copy_run(int64_t n, const real *restrict src, int64_t sw, lane_idx first,
                            real *restrict best, lane_idx *restrict at)
{
    for (int64_t o = 0; o < n; o++) {
        best[o] = src[o * sw];
        at[o] = first + (lane_idx)(o * sw);
    }
}

/* best/at[o] for o in [o0, o1) = the first in-bounds element of output (oh, ob + o)'s
 * window, as the reference loop takes it (row h0, column max(0, ow*sw - pl)). */
static inline void window_starts(const fnn_geom *g, const real *xp, int64_t h0, int64_t ob,
                                 int64_t o0, int64_t o1, real *best, lane_idx *at)
{
    for (int64_t o = o0; o < o1; o++) {
        const int64_t i0 = h0 * g->w + win_lo((ob + o), g->sw, g->pl);
        best[o] = xp[i0];
        at[o] = (lane_idx)i0;
    }
}

/* One NCHW plane of max pooling: y/argmax planes overwritten, argmax = abase + in-plane
 * index. Needs H*W <= LANE_IDX_MAX and kw <= POOL_KWMAX. */
static void maxpool_plane_nchw(const fnn_geom *g, const col_plan *p, const real *xp,
                               int64_t abase, real *yp, int64_t *ap)
{
    const int64_t H = g->h, W = g->w, OH = g->oh, OW = g->ow, sw = g->sw;
    real best[POOL_OWB];
    lane_idx at[POOL_OWB];
    for (int64_t oh = 0; oh < OH; oh++) {
        const int64_t h0 = win_lo(oh, g->sh, g->pt);
        const int64_t h1 = win_hi(oh, g->sh, g->pt, g->kh, H);
        for (int64_t ob = 0; ob < OW; ob += POOL_OWB) {
            const int64_t nb = OW - ob < POOL_OWB ? OW - ob : POOL_OWB;
            int64_t lo, hi;
            /* Start from each window's first in-bounds element: kernel column 0 of row
             * h0 where that is inside the image (a copy; the passes below then skip it),
             * else (left padding) the image's column 0, which the passes below visit
             * again without effect (not larger; a NaN does not replace a NaN). Every
             * window has an in-bounds element, so [hi, nb) is empty (but handled as the
             * reference does). */
            block_range(p, 0, ob, nb, &lo, &hi);
            if (lo >= hi)
                lo = hi = nb;
            window_starts(g, xp, h0, ob, 0, lo, best, at);
            if (lo < hi) {
                const int64_t i0 = h0 * W + (ob + lo) * sw - g->pl;
                copy_run(hi - lo, xp + i0, sw, (lane_idx)i0, best + lo, at + lo);
            }
            window_starts(g, xp, h0, ob, hi, nb, best, at);
            for (int64_t ih = h0; ih < h1; ih++)
                for (int64_t s = ih == h0 ? 1 : 0; s < g->kw; s++) {
                    block_range(p, s, ob, nb, &lo, &hi);
                    if (lo >= hi)
                        continue;
                    const int64_t i0 = ih * W + (ob + lo) * sw + s - g->pl;
                    if (sw == 1)
                        max_run(hi - lo, xp + i0, 1, (lane_idx)i0, best + lo, at + lo);
                    else if (sw == 2)
                        max_run(hi - lo, xp + i0, 2, (lane_idx)i0, best + lo, at + lo);
                    else
                        max_run(hi - lo, xp + i0, sw, (lane_idx)i0, best + lo, at + lo);
                }
            for (int64_t o = 0; o < nb; o++) {
                yp[oh * OW + ob + o] = best[o];
                ap[oh * OW + ob + o] = abase + (int64_t)at[o];
            }
        }
    }
}

/* 2x2 windows, stride 2, inside the image (the usual pooling layer): best/at[0:n] for n
 * consecutive outputs whose windows start at r0[0] (index i0) and cover r0[0:2n] and
 * r1[0:2n] (the next input row, W further). Each window's four elements in row-major
 * order, the first taken, the others by the fnn_beats() rule: the results of
 * maxpool_plane_nchw in one pass, without its per-kernel-column runs (which cost more
 * than the comparisons on 12-wide rows). */
static inline void max2x2_run(int64_t n, const real *restrict r0, const real *restrict r1,
                              lane_idx i0, lane_idx W, real *restrict best,
                              lane_idx *restrict at)
{
    int64_t o = 0;
#if defined(POOL_SSE2) && FNN_PREC == 64
    for (; o + 2 <= n; o += 2) {
        const __m128d a = _mm_loadu_pd(r0 + 2 * o), b = _mm_loadu_pd(r0 + 2 * o + 2);
        const __m128d c = _mm_loadu_pd(r1 + 2 * o), d = _mm_loadu_pd(r1 + 2 * o + 2);
        const __m128i base = _mm_set_epi64x(i0 + 2 * o + 2, i0 + 2 * o);
        __m128d bv = _mm_unpacklo_pd(a, b);
        __m128i bi = base;
        take_lanes(_mm_unpackhi_pd(a, b), idx_add(base, idx_splat(1)), &bv, &bi);
        take_lanes(_mm_unpacklo_pd(c, d), idx_add(base, idx_splat(W)), &bv, &bi);
        take_lanes(_mm_unpackhi_pd(c, d), idx_add(base, idx_splat(W + 1)), &bv, &bi);
        _mm_storeu_pd(best + o, bv);
        _mm_storeu_si128((__m128i *)(at + o), bi);
    }
#elif defined(POOL_SSE2)
    for (; o + 4 <= n; o += 4) {
        const __m128 a = _mm_loadu_ps(r0 + 2 * o), b = _mm_loadu_ps(r0 + 2 * o + 4);
        const __m128 c = _mm_loadu_ps(r1 + 2 * o), d = _mm_loadu_ps(r1 + 2 * o + 4);
        const __m128i base =
            idx_add(idx_splat(i0 + (lane_idx)(2 * o)), _mm_set_epi32(6, 4, 2, 0));
        __m128 bv = _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        __m128i bi = base;
        take_lanes(_mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)), idx_add(base, idx_splat(1)),
                   &bv, &bi);
        take_lanes(_mm_shuffle_ps(c, d, _MM_SHUFFLE(2, 0, 2, 0)), idx_add(base, idx_splat(W)),
                   &bv, &bi);
        take_lanes(_mm_shuffle_ps(c, d, _MM_SHUFFLE(3, 1, 3, 1)),
                   idx_add(base, idx_splat(W + 1)), &bv, &bi);
        _mm_storeu_ps(best + o, bv);
        _mm_storeu_si128((__m128i *)(at + o), bi);
    }
#endif
    for (; o < n; o++) {
        const lane_idx j = i0 + (lane_idx)(2 * o);
        const real v[4] = {r0[2 * o], r0[2 * o + 1], r1[2 * o], r1[2 * o + 1]};
        const lane_idx off[4] = {0, 1, W, W + 1};
        real b = v[0];
        lane_idx a = j;
        for (int e = 1; e < 4; e++)
            if (fnn_beats(v[e], b)) {
                b = v[e];
                a = j + off[e];
            }
        best[o] = b;
        at[o] = a;
    }
}

/* Does maxpool_plane_2x2 serve this geometry? 2x2 windows, stride 2, all inside. */
static int is_2x2_inside(const fnn_geom *g)
{
    return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->pt == 0 &&
           g->pl == 0 && 2 * g->oh <= g->h && 2 * g->ow <= g->w;
}

/* maxpool_row_nhwc for is_2x2_inside geometries: each output pixel's four window
 * elements compared by max4_lanes: the same results, without the general loop's window
 * bounds and per-block buffers (1 thread: (128,26,26,32) float in about half the time). */
static void maxpool_row_nhwc_2x2(const fnn_geom *g, const real *xn, int64_t oh, real *yrow,
                                 int64_t *arow, int avx2)
{
    const int64_t W = g->w, C = g->c;
    for (int64_t ow = 0; ow < g->ow; ow++) {
        const lane_idx e[4] = {(lane_idx)((2 * oh * W + 2 * ow) * C),
                               (lane_idx)((2 * oh * W + 2 * ow + 1) * C),
                               (lane_idx)(((2 * oh + 1) * W + 2 * ow) * C),
                               (lane_idx)(((2 * oh + 1) * W + 2 * ow + 1) * C)};
        const real *p[4] = {xn + e[0], xn + e[1], xn + e[2], xn + e[3]};
        max4_window(avx2, C, p, e, yrow + ow * C, arow + ow * C);
    }
}

/* maxpool_plane_nchw for is_2x2_inside geometries: the same y/argmax planes. */
static void maxpool_plane_2x2(const fnn_geom *g, const real *xp, int64_t abase, real *yp,
                              int64_t *ap)
{
    const int64_t W = g->w, OH = g->oh, OW = g->ow;
    real best[POOL_OWB];
    lane_idx at[POOL_OWB];
    for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ob = 0; ob < OW; ob += POOL_OWB) {
            const int64_t nb = OW - ob < POOL_OWB ? OW - ob : POOL_OWB;
            const int64_t i0 = 2 * oh * W + 2 * ob;
            max2x2_run(nb, xp + i0, xp + i0 + W, (lane_idx)i0, (lane_idx)W, best, at);
            for (int64_t o = 0; o < nb; o++) {
                yp[oh * OW + ob + o] = best[o];
                ap[oh * OW + ob + o] = abase + (int64_t)at[o];
            }
        }
}

/* acc[0:n] += src[o*sw]. */
static inline void add_run(int64_t n, const real *restrict src, int64_t sw,
                           real *restrict acc)
{
    for (int64_t o = 0; o < n; o++)
        acc[o] += src[o * sw];
}

/* One NCHW plane of average pooling, each window summed in row-major order from 0 and
 * divided by its in-bounds count: the reference's operations, the same bits. */
static void avgpool_plane_nchw(const fnn_geom *g, const col_plan *p, const real *xp,
                               real *yp)
{
    const int64_t H = g->h, W = g->w, OH = g->oh, OW = g->ow, sw = g->sw;
    real acc[POOL_OWB];
    for (int64_t oh = 0; oh < OH; oh++) {
        const int64_t h0 = win_lo(oh, g->sh, g->pt);
        const int64_t h1 = win_hi(oh, g->sh, g->pt, g->kh, H);
        for (int64_t ob = 0; ob < OW; ob += POOL_OWB) {
            const int64_t nb = OW - ob < POOL_OWB ? OW - ob : POOL_OWB;
            for (int64_t o = 0; o < nb; o++)
                acc[o] = 0;
            for (int64_t ih = h0; ih < h1; ih++)
                for (int64_t s = 0; s < g->kw; s++) {
                    int64_t lo, hi;
                    block_range(p, s, ob, nb, &lo, &hi);
                    if (lo >= hi)
                        continue;
                    const real *src = xp + ih * W + (ob + lo) * sw + s - g->pl;
                    if (sw == 1)
                        add_run(hi - lo, src, 1, acc + lo);
                    else if (sw == 2)
                        add_run(hi - lo, src, 2, acc + lo);
                    else
                        add_run(hi - lo, src, sw, acc + lo);
                }
            for (int64_t o = 0; o < nb; o++) {
                const int64_t ow = ob + o;
                const int64_t w0 = win_lo(ow, sw, g->pl);
                const int64_t w1 = win_hi(ow, sw, g->pl, g->kw, W);
                yp[oh * OW + ow] = acc[o] / (real)((h1 - h0) * (w1 - w0));
            }
        }
    }
}

/* dst[o*sw] += v[o]. */
static inline void scatter_run(int64_t n, const real *restrict v, int64_t sw,
                               real *restrict dst)
{
    for (int64_t o = 0; o < n; o++)
        dst[o * sw] += v[o];
}

/* One NCHW plane of the average-pooling backward (dx plane overwritten). Kernel columns
 * run from last to first so that every dx element receives its windows' shares in
 * increasing (oh, ow) order, as in the reference loop: the same bits. */
static void avgpool_bwd_plane_nchw(const fnn_geom *g, const col_plan *p, const real *dyp,
                                   real *dxp)
{
    const int64_t H = g->h, W = g->w, OH = g->oh, OW = g->ow, sw = g->sw;
    real v[POOL_OWB];
    memset(dxp, 0, sizeof(real) * (size_t)(H * W));
    for (int64_t oh = 0; oh < OH; oh++) {
        const int64_t h0 = win_lo(oh, g->sh, g->pt);
        const int64_t h1 = win_hi(oh, g->sh, g->pt, g->kh, H);
        for (int64_t ob = 0; ob < OW; ob += POOL_OWB) {
            const int64_t nb = OW - ob < POOL_OWB ? OW - ob : POOL_OWB;
            for (int64_t o = 0; o < nb; o++) {
                const int64_t ow = ob + o;
                const int64_t w0 = win_lo(ow, sw, g->pl);
                const int64_t w1 = win_hi(ow, sw, g->pl, g->kw, W);
                v[o] = dyp[oh * OW + ow] / (real)((h1 - h0) * (w1 - w0));
            }
            for (int64_t ih = h0; ih < h1; ih++)
                for (int64_t s = g->kw - 1; s >= 0; s--) {
                    int64_t lo, hi;
                    block_range(p, s, ob, nb, &lo, &hi);
                    if (lo >= hi)
                        continue;
                    real *dst = dxp + ih * W + (ob + lo) * sw + s - g->pl;
                    if (sw == 1)
                        scatter_run(hi - lo, v + lo, 1, dst);
                    else if (sw == 2)
                        scatter_run(hi - lo, v + lo, 2, dst);
                    else
                        scatter_run(hi - lo, v + lo, sw, dst);
                }
        }
    }
}

/* y, argmax overwritten. Threads over (n, oh) for NHWC, (n, c) for NCHW (2x2 windows of
 * stride 2 on AVX-512: kernels/pool_avx512.c, the same results as maxpool_plane_2x2). */
void FNN(maxpool_fwd)(const fnn_geom *g, int layout, const real *x, real *y, int64_t *argmax)
{
    const int64_t N = g->n, H = g->h, W = g->w, C = g->c, OH = g->oh, OW = g->ow;
    const int nt = fnn_threads_for(N * OH * OW * C * g->kh * g->kw);
    if (layout == FNN_NHWC) {
        const int lanes = H * W * C <= (int64_t)LANE_IDX_MAX && fnn_get_isa() > 0;
        const int two = lanes && is_2x2_inside(g), avx2 = fnn_get_isa() >= 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * OH; t++) {
            const real *xn = x + (t / OH) * H * W * C;
            if (two)
                maxpool_row_nhwc_2x2(g, xn, t % OH, y + t * OW * C, argmax + t * OW * C,
                                     avx2);
            else if (lanes)
                maxpool_row_nhwc(g, xn, t % OH, y + t * OW * C, argmax + t * OW * C);
            else
                maxpool_row_nhwc_ref(g, xn, t % OH, y + t * OW * C, argmax + t * OW * C);
        }
    } else if (H * W <= (int64_t)LANE_IDX_MAX && g->kw <= POOL_KWMAX && fnn_get_isa() > 0) {
        col_plan p;
        make_col_plan(g, &p);
        const int two = is_2x2_inside(g), avx512 = FNN_X86_KERNELS && fnn_get_isa() == FNN_ISA_AVX512;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * C; t++) {
#if FNN_X86_KERNELS
            if (two && avx512) {
                FNN(max2x2_plane_avx512)(W, OH, OW, x + t * H * W, (t % C) * H * W,
                                         y + t * OH * OW, argmax + t * OH * OW);
                continue;
            }
#endif
            if (two)
                maxpool_plane_2x2(g, x + t * H * W, (t % C) * H * W, y + t * OH * OW,
                                  argmax + t * OH * OW);
            else
                maxpool_plane_nchw(g, &p, x + t * H * W, (t % C) * H * W, y + t * OH * OW,
                                   argmax + t * OH * OW);
        }
    } else {
        /* the plain loop: the reference (generic ISA), planes too large for lane_idx and
         * windows wider than POOL_KWMAX */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * C; t++) {
            const int64_t ch = t % C;
            const real *xp = x + t * H * W;
            for (int64_t oh = 0; oh < OH; oh++) {
                const int64_t h0 = win_lo(oh, g->sh, g->pt);
                const int64_t h1 = win_hi(oh, g->sh, g->pt, g->kh, H);
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t w0 = win_lo(ow, g->sw, g->pl);
                    const int64_t w1 = win_hi(ow, g->sw, g->pl, g->kw, W);
                    int64_t bi = h0 * W + w0;
                    real best = xp[bi];
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            if (fnn_beats(xp[ih * W + iw], best)) {
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
 * its sample, so no two threads write one element. Returns 1, or 0 where an argmax is
 * outside its sample, [0, h*w*c): that one is skipped (never an address), the rest done.
 * The ops' range check (fastnn.ops.maxpool2d_backward), fused: as a scan of argmax before
 * the call it took 190-300 us of 0.9-1.3 ms (a (128, 26, 26, 32) float batch; Zen 2). */
int FNN(maxpool_bwd)(const fnn_geom *g, int layout, const real *dy, const int64_t *argmax,
                     real *dx)
{
    const int64_t N = g->n, xs = g->h * g->w * g->c, ys = g->oh * g->ow * g->c;
    const int nt = fnn_threads_for(N * (xs + ys));
    int bad = 0;
    (void)layout; /* argmax is already a flat index in the sample's own layout */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) reduction(| : bad)
    for (int64_t n = 0; n < N; n++) {
        real *dxn = dx + n * xs;
        const real *dyn = dy + n * ys;
        const int64_t *an = argmax + n * ys;
        memset(dxn, 0, sizeof(real) * (size_t)xs);
        for (int64_t e = 0; e < ys; e++) {
            const uint64_t a = (uint64_t)an[e]; /* a negative index: >= 2^63 */
            if (a < (uint64_t)xs)
                dxn[a] += dyn[e];
            else
                bad = 1;
        }
    }
    return !bad;
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
            const int64_t h0 = win_lo(oh, g->sh, g->pt);
            const int64_t h1 = win_hi(oh, g->sh, g->pt, g->kh, H);
            for (int64_t ow = 0; ow < OW; ow++) {
                const int64_t w0 = win_lo(ow, g->sw, g->pl);
                const int64_t w1 = win_hi(ow, g->sw, g->pl, g->kw, W);
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
    } else if (g->kw <= POOL_KWMAX && fnn_get_isa() > 0) {
        col_plan p;
        make_col_plan(g, &p);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * C; t++)
            avgpool_plane_nchw(g, &p, x + t * H * W, y + t * OH * OW);
    } else {
        /* the plain loop: the reference (generic ISA), windows wider than POOL_KWMAX */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * C; t++) {
            const real *xp = x + t * H * W;
            for (int64_t oh = 0; oh < OH; oh++) {
                const int64_t h0 = win_lo(oh, g->sh, g->pt);
                const int64_t h1 = win_hi(oh, g->sh, g->pt, g->kh, H);
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t w0 = win_lo(ow, g->sw, g->pl);
                    const int64_t w1 = win_hi(ow, g->sw, g->pl, g->kw, W);
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
                const int64_t h0 = win_lo(oh, g->sh, g->pt);
                const int64_t h1 = win_hi(oh, g->sh, g->pt, g->kh, H);
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t w0 = win_lo(ow, g->sw, g->pl);
                    const int64_t w1 = win_hi(ow, g->sw, g->pl, g->kw, W);
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
    } else if (g->kw <= POOL_KWMAX && fnn_get_isa() > 0) {
        col_plan p;
        make_col_plan(g, &p);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * C; t++)
            avgpool_bwd_plane_nchw(g, &p, dy + t * OH * OW, dx + t * H * W);
    } else {
        /* the plain loop: the reference (generic ISA), windows wider than POOL_KWMAX */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t t = 0; t < N * C; t++) {
            real *dxp = dx + t * H * W;
            const real *dyp = dy + t * OH * OW;
            memset(dxp, 0, sizeof(real) * (size_t)(H * W));
            for (int64_t oh = 0; oh < OH; oh++) {
                const int64_t h0 = win_lo(oh, g->sh, g->pt);
                const int64_t h1 = win_hi(oh, g->sh, g->pt, g->kh, H);
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t w0 = win_lo(ow, g->sw, g->pl);
                    const int64_t w1 = win_hi(ow, g->sw, g->pl, g->kw, W);
                    const real v = dyp[oh * OW + ow] / (real)((h1 - h0) * (w1 - w0));
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            dxp[ih * W + iw] += v;
                }
            }
        }
    }
}
