/* gemm.c: C = alpha * op(A) * op(B) + beta * C, row-major, for float and double.
 *
 * Compiled twice (FNN_PREC=32/64). The algorithm is the GotoBLAS/BLIS one:
 *   for jc over N in steps of NC:            B panel KC x NC packed once, shared (L3)
 *     for pc over K in steps of KC:
 *       pack B[pc:pc+KC, jc:jc+NC]            (threads split the NR-wide micro-panels)
 *       for each tile (ic block of MC rows) x (group of NR micro-panels), in parallel:
 *         pack A[ic:ic+MC, pc:pc+KC]          (into this thread's slice of the workspace)
 *         for jr in the group, for ir in MC:  micro-kernel on an MR x NR tile of C
 * Threads split independent output tiles only, never the K reduction, so results do not
 * depend on the thread count. The micro-kernel and blocking come from the ISA registry
 * (gemm_kernels.c); fnn_gemm_ref is the plain reference it is tested against.
 */
#include <string.h>

#include "fnn_real.h"

#ifdef _OPENMP
#include <omp.h>
#endif

typedef FNN_CAT(fnn_gemm_kernel, FNN_SFX) kernel_t;
#define KERNEL_FOR FNN_CAT(fnn_gemm_kernel_for, FNN_SFX)

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Workspace alignment: 64 bytes, expressed in elements. */
#define WS_ALIGN ((int64_t)(64 / sizeof(real)))

static real *align_ws(real *ws)
{
    uintptr_t p = (uintptr_t)ws;
    return (real *)((p + 63) & ~(uintptr_t)63);
}

/* Elements of workspace fnn_gemm needs for an m x n x k product with the current ISA and
 * thread count: the shared B panel, one A block per thread, and alignment slack. */
int64_t FNN(gemm_ws)(int64_t m, int64_t n, int64_t k)
{
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    int64_t kc = min64(kr->kc, k < 1 ? 1 : k);
    int64_t nc = round_up(min64(kr->nc, n < 1 ? 1 : n), kr->nr);
    int64_t mc = round_up(min64(kr->mc, m < 1 ? 1 : m), kr->mr);
    int64_t nt = fnn_get_num_threads();
    return kc * nc + WS_ALIGN + nt * (mc * kc + WS_ALIGN) + WS_ALIGN;
}

/* Pack rows [0, mc) x columns [0, kc) of op(A) (element (i, p) at a[i*rsa + p*csa]) into
 * MR-row micro-panels, zero-padding the last one: ap[(i/MR)*MR*kc + p*MR + i%MR]. */
static void pack_a(int64_t mc, int64_t kc, const real *a, int64_t rsa, int64_t csa, int mr,
                   real *ap)
{
    for (int64_t i0 = 0; i0 < mc; i0 += mr) {
        int64_t rows = min64(mr, mc - i0);
        const real *src = a + i0 * rsa;
        if (csa == 1) {
            /* rows of A are contiguous along p: read each row once, scatter by MR. */
            for (int64_t i = 0; i < rows; i++) {
                const real *row = src + i * rsa;
                for (int64_t p = 0; p < kc; p++)
                    ap[p * mr + i] = row[p];
            }
        } else {
            for (int64_t p = 0; p < kc; p++)
                for (int64_t i = 0; i < rows; i++)
                    ap[p * mr + i] = src[i * rsa + p * csa];
        }
        for (int64_t i = rows; i < mr; i++)
            for (int64_t p = 0; p < kc; p++)
                ap[p * mr + i] = 0;
        ap += mr * kc;
    }
}

/* Pack one NR-wide micro-panel: rows [0, kc) x columns [0, cols) of op(B) (element (p, j)
 * at b[p*rsb + j*csb]) into bp[p*NR + j], zero-padding columns [cols, NR). */
static void pack_b_panel(int64_t kc, int64_t cols, const real *b, int64_t rsb, int64_t csb,
                         int nr, real *bp)
{
    if (csb == 1 && cols == nr) {
        for (int64_t p = 0; p < kc; p++)
            memcpy(bp + p * nr, b + p * rsb, sizeof(real) * (size_t)nr);
        return;
    }
    for (int64_t p = 0; p < kc; p++) {
        real *dst = bp + p * nr;
        int64_t j = 0;
        for (; j < cols; j++)
            dst[j] = b[p * rsb + j * csb];
        for (; j < nr; j++)
            dst[j] = 0;
    }
}

/* C (m x n, ldc) = alpha * op(A) * op(B) + beta * C; overwrites C when beta == 0 (never
 * reads it, so NaN there does not propagate). op(A) is m x k: A is m x k (lda) or, with
 * trans_a, k x m (lda); likewise op(B) is k x n. ws: fnn_gemm_ws(m, n, k) elements. */
void FNN(gemm)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, real alpha,
               const real *a, int64_t lda, const real *b, int64_t ldb, real beta, real *ws,
               real *c, int64_t ldc)
{
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];
        return;
    }
    const kernel_t *kr = KERNEL_FOR(fnn_get_isa());
    const int mr = kr->mr, nr = kr->nr;
    const int64_t rsa = trans_a ? 1 : lda, csa = trans_a ? lda : 1;
    const int64_t rsb = trans_b ? 1 : ldb, csb = trans_b ? ldb : 1;
    const int64_t KC = min64(kr->kc, k);
    const int64_t NC = round_up(min64(kr->nc, n), nr);
    const int64_t MC = round_up(min64(kr->mc, m), mr);
    int nt = fnn_threads_for(m * n * k / 64);
    if (nt > fnn_get_num_threads())
        nt = fnn_get_num_threads();

    real *bp = align_ws(ws);
    real *ap_all = align_ws(bp + KC * NC);
    const int64_t ap_stride = round_up(MC * KC, WS_ALIGN);

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num();
        const int nth = omp_get_num_threads();
#else
        const int tid = 0, nth = 1;
#endif
        real *ap = ap_all + tid * ap_stride;
        _Alignas(64) real tmp[32 * 32]; /* edge tile (MR, NR <= 32) */

        for (int64_t jc = 0; jc < n; jc += NC) {
            const int64_t nc = min64(NC, n - jc);
            const int64_t npanels = (nc + nr - 1) / nr;
            for (int64_t pc = 0; pc < k; pc += KC) {
                const int64_t kc = min64(KC, k - pc);
                const real beta_p = pc == 0 ? beta : (real)1;

#pragma omp for schedule(static)
                for (int64_t jp = 0; jp < npanels; jp++) {
                    int64_t j0 = jp * nr;
                    pack_b_panel(kc, min64(nr, nc - j0), b + pc * rsb + (jc + j0) * csb,
                                 rsb, csb, nr, bp + jp * nr * kc);
                }
                /* implicit barrier: the B panel is complete */

                /* Tiles: MC-row blocks of C times groups of micro-panels. With few row
                 * blocks (small m) the panels are split so every thread has work. */
                const int64_t nblk = (m + MC - 1) / MC;
                int64_t ngrp = 1;
                if (nblk < 2 * nth)
                    ngrp = min64(npanels, (2 * nth + nblk - 1) / nblk);
                const int64_t per_grp = (npanels + ngrp - 1) / ngrp;
                const int64_t ntiles = nblk * ngrp;

#pragma omp for schedule(static)
                for (int64_t t = 0; t < ntiles; t++) {
                    const int64_t ib = t / ngrp, gi = t % ngrp;
                    const int64_t ic = ib * MC, mc = min64(MC, m - ic);
                    const int64_t jp0 = gi * per_grp, jp1 = min64(npanels, jp0 + per_grp);
                    if (jp0 >= jp1)
                        continue;
                    pack_a(mc, kc, a + ic * rsa + pc * csa, rsa, csa, mr, ap);
                    for (int64_t jp = jp0; jp < jp1; jp++) {
                        const int64_t j0 = jp * nr, cols = min64(nr, nc - j0);
                        const real *bpp = bp + jp * nr * kc;
                        for (int64_t i0 = 0; i0 < mc; i0 += mr) {
                            const int64_t rows = min64(mr, mc - i0);
                            real *cij = c + (ic + i0) * ldc + jc + j0;
                            const real *app = ap + i0 * kc;
                            if (rows == mr && cols == nr) {
                                kr->ukr(kc, app, bpp, cij, ldc, alpha, beta_p);
                            } else {
                                kr->ukr(kc, app, bpp, tmp, nr, alpha, 0);
                                for (int64_t i = 0; i < rows; i++)
                                    for (int64_t j = 0; j < cols; j++) {
                                        real v = tmp[i * nr + j];
                                        real *o = cij + i * ldc + j;
                                        *o = beta_p == 0 ? v : v + beta_p * *o;
                                    }
                            }
                        }
                    }
                }
                /* implicit barrier: nobody repacks B while others still read it */
            }
        }
    }
}

/* Reference: the plain triple loop with the same semantics (for tests). */
void FNN(gemm_ref)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, real alpha,
                   const real *a, int64_t lda, const real *b, int64_t ldb, real beta, real *c,
                   int64_t ldc)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            real s = 0;
            for (int64_t p = 0; p < k; p++)
                s += (trans_a ? a[p * lda + i] : a[i * lda + p]) *
                     (trans_b ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = beta == 0 ? alpha * s : alpha * s + beta * c[i * ldc + j];
        }
}
