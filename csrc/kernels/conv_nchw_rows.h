/* conv_nchw_rows.h: the body of the direct NCHW convolution row kernels (see
 * conv_nchw_avx2.c for what they compute), written in the lane vocabulary of a vec_*.h
 * header: kernels/conv_nchw_avx2.c and kernels/conv_nchw_avx512.c each include fnn_real.h,
 * their vec header (VL, vec, vmask, the loads and stores, VFN naming the functions for
 * their ISA) and then this file. Not a header to include anywhere else. */

/* Row kernels: weight rows per register tile (filters, patch elements) */
#if VREGS >= 32
#define FW_F FNN_ROW_F_AVX512
#else
#define FW_F FNN_ROW_F_AVX2
#endif
#define FW_V 3 /* row kernels: vectors of pixels per register tile */
/* Every loop over a register tile's rows or vectors is unrolled whole ("unroll 8" is at
 * least FW_F, FW_V, DW_F, DW_P and DB_F): one left partly rolled indexes the accumulator
 * array at run time, so GCC keeps it in memory. With "unroll 4" and AVX-512's 5-row tile the
 * forward's bias-and-store loop did that: the book's first convolution (float64) ran its
 * forward at 55 GFLOPS on one Xeon core, 98 unrolled (L2-resident, one image); in-process
 * A/B of the whole call (ab_builds.py dlfs, 2026-12-04): 0.87x the time on 1 thread, 0.90x
 * on 2; the backward 0.95x and 0.96x. */

/* The row kernels' register tile: acc[j][v] = sum_p wp[p*FW_F + j] * x[off[p] + v*VL +
 * lane] (an FMA chain over p from zero) for NV vectors (a constant at each call), the last
 * one loaded masked by m if masked (nothing past its lanes read). One mask register at
 * most: a masked tile of 3 vectors x 4 rows kept its accumulators on the stack. */
FNN_ALWAYS_INLINE void
row_tile(int64_t k, const real *x, const int64_t *off, const real *wp, const int NV,
         int masked, vmask m, vec acc[FW_F][FW_V])
{
#pragma GCC unroll 8
    for (int j = 0; j < FW_F; j++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++)
            acc[j][v] = vzero();
    for (int64_t p = 0; p < k; p++) {
        const real *xp = x + off[p];
        vec xv[FW_V];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++)
            xv[v] = masked && v == NV - 1 ? vmload(xp + v * VL, m) : vload(xp + v * VL);
#pragma GCC unroll 8
        for (int j = 0; j < FW_F; j++) {
            const vec wj = vset1(wp[p * FW_F + j]);
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++)
                acc[j][v] = vfma(wj, xv[v], acc[j][v]);
        }
    }
}

/* One block of a row kernel: NV vectors of pixels (a constant at each call), the last
 * one's first `last` lanes only (VL: all; masked loads and stores), written into rows
 * dst[j] + o0 for j < nrows: stored with the bias and relu applied (add = 0; bias NULL:
 * none), or added to what is there (add = 1). */
FNN_ALWAYS_INLINE void
row_block(int64_t k, const real *x, const int64_t *off, const real *wp, const int NV,
          int64_t last, int nrows, const real *bias, int relu, const int add,
          real *const dst[FW_F], int64_t o0)
{
    vec acc[FW_F][FW_V];
    const int masked = last < VL;
    const vmask m = lanes_below(last);
    row_tile(k, x, off, wp, NV, masked, m, acc);
#pragma GCC unroll 8
    for (int j = 0; j < FW_F; j++) {
        if (j >= nrows)
            break;
        const vec bj = bias ? vset1(bias[j]) : vzero();
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) {
            real *o = dst[j] + o0 + v * VL;
            const int part = masked && v == NV - 1;
            vec r = acc[j][v];
            if (add)
                r = vadd(part ? vmload(o, m) : vload(o), r);
            if (bias)
                r = vadd(r, bj);
            if (relu)
                r = vrelu(r);
            if (part)
                vmstore(o, m, r);
            else
                vstore(o, r);
        }
    }
}

/* A row kernel over pixels [0, ow_n): blocks of FW_V vectors, then the last pixels one
 * vector at a time (row_block's arguments). */
FNN_ALWAYS_INLINE void
row_blocks(int64_t k, const real *x, const int64_t *off, const real *wp, int nrows,
           const real *bias, int relu, const int add, real *const dst[FW_F], int64_t ow_n)
{
    int64_t ow = 0;
    for (; ow + FW_V * VL <= ow_n; ow += FW_V * VL)
        row_block(k, x + ow, off, wp, FW_V, VL, nrows, bias, relu, add, dst, ow);
    for (; ow + VL <= ow_n; ow += VL)
        row_block(k, x + ow, off, wp, 1, VL, nrows, bias, relu, add, dst, ow);
    if (ow < ow_n)
        row_block(k, x + ow, off, wp, 1, ow_n - ow, nrows, bias, relu, add, dst, ow);
}

/* One output row of nf <= FW_F filters: y[j*ys + ow] (overwritten) = act(sum_p
 * wp[p*FW_F + j] * x[off[p] + ow] + bias[j]) for j < nf, ow < ow_n. wp: the filters'
 * weights packed patch element by element, FW_F per element (zeros past nf); bias: FW_F
 * values or NULL; relu as the gather micro-kernels (v < 0 ? 0 : v, which keeps NaN and
 * -0.0). */
void VFN(nchw_fwd_row)(int64_t k, const real *x, const int64_t *off, const real *wp,
                            const real *bias, int relu, int nf, int64_t ow_n, real *y,
                            int64_t ys)
{
    real *dst[FW_F];
    for (int j = 0; j < FW_F; j++)
        dst[j] = y + (j < nf) * j * ys; /* rows past nf: never written */
#if VREGS >= 32
    /* AVX-512: ask for the lines of each row's successor in its plane (the next output
     * row's task, oh + 1) while this one computes, so their stores find them owned: the
     * book's first convolution (float64, 30 planes of 24 x 24, bench_dlfs.py), in-process
     * A/B (ab_builds.py dlfs, Xeon, 2026-12-02): 0.85-0.93x the time on 1 thread,
     * 0.88-0.98x on 2. */
    for (int j = 0; j < nf; j++)
        fnn_prefetch_write(1, y + j * ys + ow_n, ow_n * (int64_t)sizeof(real));
#endif
    if (bias && relu)
        row_blocks(k, x, off, wp, nf, bias, 1, 0, dst, ow_n);
    else if (bias)
        row_blocks(k, x, off, wp, nf, bias, 0, 0, dst, ow_n);
    else
        row_blocks(k, x, off, wp, nf, NULL, relu, 0, dst, ow_n);
}

/* The input gradient of a stride-1 (along w) convolution without padding, one dy row at
 * a time: dst[q][ow] += sum_j wp[j*FW_F + q] * d[off[j] + ow] for q < nq, ow < ow_n (the
 * row's products for nq <= FW_F patch elements, each added into the dx row its element reads
 * from, at its column shift: col2im without the column matrix). d: dy's row in its first
 * plane, off[j]: plane j's offset; wp: w^T packed, FW_F patch elements per filter j (zeros
 * past nq). The dst rows of one call may overlap (the adds run one row after the other).
 * ahead: if not 0, the rows at d + off[j] + ahead (the caller's next) are prefetched. */
void VFN(nchw_dx_row)(int64_t k, const real *d, const int64_t *off, const real *wp,
                           int nq, int64_t ow_n, real *const dst[FNN_ROW_F_MAX], int64_t ahead)
{
    if (ahead) /* k streams: too many for the hardware prefetcher */
        for (int64_t j = 0; j < k; j++)
            for (int64_t e = 0; e < ow_n; e += 64 / (int64_t)sizeof(real))
                _mm_prefetch((const char *)(d + off[j] + ahead + e), _MM_HINT_T0);
    row_blocks(k, d, off, wp, nq, NULL, 0, 1, dst, ow_n);
}

/* Weight gradient register tile: DW_F filters x DW_P patch elements, one accumulator
 * each, fed per vector of pixels by DW_F dy loads and DW_P x loads (VREGS: the ISA's vector
 * registers; 5 x 5 fills AVX-512's 32, 3 x 3 AVX2's 16). */
#if VREGS >= 32
#define DW_F 5
#define DW_P 5
#else
#define DW_F 3
#define DW_P 3
#endif

/* acc[j][q] += dy[jo[j] + 0:VL] * x[o[q] + 0:VL], loads masked by m if masked. Each x
 * vector is loaded once and kept in a register (vkeep): folded into the FMAs as memory
 * operands, GCC loaded each DW_F times, mostly across cache lines (x's rows are not
 * aligned), and the loads, not the FMAs, set the pace. */
FNN_ALWAYS_INLINE void
dw_step(const real *d, const int64_t *jo, const real *xr, const int64_t *o,
        vec acc[DW_F][DW_P], int masked, vmask m)
{
    vec dv[DW_F];
#pragma GCC unroll 8
    for (int j = 0; j < DW_F; j++)
        dv[j] = masked ? vmload(d + jo[j], m) : vload(d + jo[j]);
#pragma GCC unroll 8
    for (int q = 0; q < DW_P; q++) {
        vec xv = masked ? vmload(xr + o[q], m) : vload(xr + o[q]);
        vkeep(xv);
#pragma GCC unroll 8
        for (int j = 0; j < DW_F; j++)
            acc[j][q] = vfma(dv[j], xv, acc[j][q]);
    }
}

#define DB_F 4 /* bias gradient: planes summed side by side */

/* db[j] += the sum of plane j (ohow elements from d + j*ohow) for j < nj (a constant at
 * each call): VL lane sums in element order, then across lanes. nj planes side by side, so
 * nj independent add chains instead of one (the same order per plane: the same bits). */
FNN_ALWAYS_INLINE void
db_planes(int64_t ohow, const real *d, const int nj, real *db)
{
    vec s[DB_F];
#pragma GCC unroll 8
    for (int j = 0; j < nj; j++)
        s[j] = vzero();
    int64_t i = 0;
    for (; i + VL <= ohow; i += VL)
#pragma GCC unroll 8
        for (int j = 0; j < nj; j++)
            s[j] = vadd(s[j], vload(d + j * ohow + i));
    if (i < ohow)
#pragma GCC unroll 8
        for (int j = 0; j < nj; j++)
            s[j] = vadd(s[j], vmload(d + j * ohow + i, lanes_below(ohow - i)));
#pragma GCC unroll 8
    for (int j = 0; j < nj; j++)
        db[j] += hsum(s[j]);
}

/* One image's weight and bias gradient, added: part[j*k + p] += sum over oh < OH, ow < OW of
 * dy[j*ohow + oh*OW + ow] * x[oh*xrs + off[p] + ow] (xrs: x's row stride times the stride
 * along h) for j < f, p < k, and db[j] += the sum of dy[j*ohow ...] over the plane (db may
 * be NULL). Per (j, p): VL lane sums over the pixels in (oh, ow) order, then added across
 * lanes; the same order whatever the caller's threads.
 * next: the dy of the image this thread computes next (prefetched during the last block of
 * filters), or NULL. While the passes over one block of DW_F planes run from L1, the next
 * block's planes (or next's first) are prefetched into L2, spread over the passes: the
 * first pass over a block otherwise waited for its planes from memory (dy of the book's
 * first convolution is 13.8 MB, written by the layer above; its 23 KB per block arrive at a
 * few bytes per cycle, a quarter of what the block's FMAs consume; with the prefetch the
 * whole backward, dx included, took 0.96-0.97x the time on 1 and 2 threads: ab_builds.py
 * dlfs, 2026-12-04). */
void VFN(nchw_dw_img)(int64_t k, int64_t f, int64_t OH, int64_t OW, const real *dy,
                           const real *x, int64_t xrs, const int64_t *off, real *part,
                           real *db, const real *next)
{
    const int64_t ohow = OH * OW, tail = OW % VL, body = OW - tail;
    const int64_t npass = (k + DW_P - 1) / DW_P, line = 64 / (int64_t)sizeof(real);
    for (int64_t j0 = 0; j0 < f; j0 += DW_F) {
        const int nj = f - j0 < DW_F ? (int)(f - j0) : DW_F;
        /* the planes to prefetch during this block: [pf, pf + pf_n) */
        const real *pf = j0 + DW_F < f ? dy + (j0 + DW_F) * ohow : next;
        const int64_t pf_n = !pf ? 0
                             : (j0 + DW_F < f ? (f - j0 - DW_F < DW_F ? f - j0 - DW_F : DW_F)
                                              : (f < DW_F ? f : DW_F)) * ohow;
        const int64_t per_row = (pf_n + npass * OH * line - 1) / (npass * OH * line);
        int64_t pf_at = 0;
        for (int64_t p0 = 0; p0 < k; p0 += DW_P) {
            const int np = k - p0 < DW_P ? (int)(k - p0) : DW_P;
            int64_t o[DW_P];
            int64_t jo[DW_F];
            for (int q = 0; q < DW_P; q++) /* missing elements/filters repeat the first */
                o[q] = off[p0 + (q < np ? q : 0)];
            for (int j = 0; j < DW_F; j++)
                jo[j] = (j0 + (j < nj ? j : 0)) * ohow;
            vec acc[DW_F][DW_P];
            for (int j = 0; j < DW_F; j++)
                for (int q = 0; q < DW_P; q++)
                    acc[j][q] = vzero();
            for (int64_t oh = 0; oh < OH; oh++) {
                const real *d = dy + oh * OW, *xr = x + oh * xrs;
                for (int64_t e = 0; e < per_row && pf_at < pf_n; e++, pf_at += line)
                    _mm_prefetch((const char *)(pf + pf_at), _MM_HINT_T1);
                for (int64_t ow = 0; ow < body; ow += VL)
                    dw_step(d + ow, jo, xr + ow, o, acc, 0, vnomask());
            }
            if (tail) { /* the last columns, masked (nothing read past OW) */
                for (int64_t oh = 0; oh < OH; oh++)
                    dw_step(dy + oh * OW + body, jo, x + oh * xrs + body, o, acc, 1,
                            lanes_below(tail));
            }
            for (int j = 0; j < nj; j++)
                for (int q = 0; q < np; q++)
                    part[(j0 + j) * k + p0 + q] += hsum(acc[j][q]);
        }
    }
    if (!db)
        return;
    int64_t j = 0;
    for (; j + DB_F <= f; j += DB_F)
        db_planes(ohow, dy + j * ohow, DB_F, db + j);
    for (; j < f; j++)
        db_planes(ohow, dy + j * ohow, 1, db + j);
}
