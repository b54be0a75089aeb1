/* gemm_dot_body.h: the ISA-generic part of the dot-product kernel (contract:
 * fnn_internal.h, fnn_ukr_dot), included last by kernels/gemm_dot_avx2.c and
 * kernels/gemm_dot_avx512.c, each compiled twice (FNN_PREC=32/64). They define the lane
 * vocabulary (vec_*.h); PASS (2 * PASS accumulators: a pass is 2 PASS / C rows x C columns
 * of C, C = 4 or 2); DOT_QUADS (1: C = 4 where it can, below; 0: C = 2 only); and
 * lane_sums(x, s), the 2 * PASS accumulators to 2 * PASS / VL vectors of sums, lane l of
 * vector h the sum of x[h VL + l]'s lanes, by a fixed tree (the same for every
 * accumulator); store_pairs(s, c, ldc) and (with DOT_QUADS) store_quads(s, c, ldc),
 * VL / 2 rows x 2 columns or VL / 4 rows x 4 columns of C from a vector of sums (lane
 * C r + c: row r, column c); offsets, row_offsets(ldb) and gather_col(b, idx), a column's
 * VL elements by one gather.
 * Each element of C: a dot product along k in the VL lanes (lane p mod VL, one FMA each,
 * in the order of p), then across them by the tree: its bits do not depend on C, the pass
 * or the other rows and columns.
 * With DOT_QUADS, four columns a pass where there are four (or a last three), else two:
 * each A vector loaded feeds C FMAs, so four columns load A half as often. AVX-512 (the
 * Xeon, 2026-12-04, one thread, a C harness calling fnn_gemm_lwork, m = k = 128 float, A
 * aligned, us, pairs only / fours first): n = 3 1.32 / 1.21, 4 1.34 / 1.13, 7 2.25 / 2.08,
 * 8 2.24 / 2.04, 10 2.69 / 2.63, n = 1, 2, 5, 6, 9 within 2%. */

#if PASS > FNN_DOT_ROWS || FNN_DOT_ROWS % PASS
#error "a call's FNN_DOT_ROWS rows go in whole passes"
#endif

/* acc[C r + c] = the lane-wise sums of A(r, p) * B(p, j + c) over k, for R rows and C
 * columns (2 or 4) of B^T from b, ldbt apart (the first `cols` exist; the others repeat
 * the last that does): whole vectors, then the tail's lanes (masked: the rest load as
 * zero). Each A vector is loaded once (vkeep) for its C FMAs. */
FNN_ALWAYS_INLINE void dot_acc(int R, int C, int cols, int64_t k, const real *a, int64_t lda,
                               const real *b, int64_t ldbt, vec acc[2 * PASS])
{
    const real *bc[4];
#pragma GCC unroll 4
    for (int c = 0; c < C; c++)
        bc[c] = b + (c < cols ? c : cols - 1) * ldbt;
#pragma GCC unroll 16
    for (int i = 0; i < 2 * PASS; i++) /* (all: the tree reads every accumulator) */
        acc[i] = vzero();
    const int64_t kv = k - k % VL;
    for (int64_t p = 0; p < kv; p += VL) {
        vec v[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            v[c] = vload(bc[c] + p);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            vec av = vload(a + r * lda + p);
            vkeep(av);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++)
                acc[C * r + c] = vfma(av, v[c], acc[C * r + c]);
        }
    }
    if (kv < k) {
        const vmask mk = lanes_below(k - kv);
        vec v[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            v[c] = vmload(bc[c] + kv, mk);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            vec av = vmload(a + r * lda + kv, mk);
            vkeep(av);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++)
                acc[C * r + c] = vfma(av, v[c], acc[C * r + c]);
        }
    }
}

/* VL / C rows x C columns of C from s (lane C r + c: row r, column c). */
FNN_ALWAYS_INLINE void store_rows(int C, vec s, real *c, int64_t ldc)
{
#if DOT_QUADS
    if (C == 4) {
        store_quads(s, c, ldc);
        return;
    }
#else
    (void)C;
#endif
    store_pairs(s, c, ldc);
}

/* The first min(R, VL / C) rows and `cols` columns of C from s (alpha applied; lane
 * C r + c: row r, column c): a full block with beta == 0 straight from the register
 * (store_rows), else element by element, C = beta * C + s. */
FNN_ALWAYS_INLINE void dot_store(int R, int C, int cols, vec s, real *c, int64_t ldc,
                                 real beta)
{
    if (R >= VL / C && cols == C && beta == 0) {
        store_rows(C, s, c, ldc);
        return;
    }
    real t[VL];
    vstore(t, s);
    for (int r = 0; r < R && r < VL / C; r++) {
        real *cr = c + r * ldc;
        const real *tr = t + C * r;
        /* (no loop over the columns: GCC made each row's short run a memcpy call) */
        cr[0] = beta == 0 ? tr[0] : beta * cr[0] + tr[0];
        if (cols > 1)
            cr[1] = beta == 0 ? tr[1] : beta * cr[1] + tr[1];
        if (C > 2 && cols > 2)
            cr[2] = beta == 0 ? tr[2] : beta * cr[2] + tr[2];
        if (C > 3 && cols > 3)
            cr[3] = beta == 0 ? tr[3] : beta * cr[3] + tr[3];
    }
}

/* R rows (at most 2 PASS / C) and columns j0 .. n - 1 of C, C columns at a time. */
FNN_ALWAYS_INLINE void dot(int R, int C, int64_t j0, int64_t n, int64_t k, const real *a,
                           int64_t lda, const real *bt, int64_t ldbt, real *c, int64_t ldc,
                           real alpha, real beta)
{
    const vec va = vset1(alpha);
    for (int64_t j = j0; j < n; j += C) {
        const int cols = n - j < C ? (int)(n - j) : C;
        vec acc[2 * PASS], s[2];
        dot_acc(R, C, cols, k, a, lda, bt + j * ldbt, ldbt, acc);
        lane_sums(acc, s);
        for (int h = 0; h * (VL / C) < R; h++)
            dot_store(R - h * (VL / C), C, cols, vmul(va, s[h]), c + h * (VL / C) * ldc + j,
                      ldc, beta);
    }
}

/* Rows 0 .. rows - 1 (at most FNN_DOT_ROWS) and columns j0 .. n - 1 of C, in passes of
 * P = 2 PASS / C rows (the accumulators of one call to dot): 4 or 8 (AVX-512 quads 4, pairs
 * 8; AVX2 pairs 4). */
FNN_ALWAYS_INLINE void dot_passes(int C, int rows, int64_t j0, int64_t n, int64_t k,
                                  const real *a, int64_t lda, const real *bt, int64_t ldbt,
                                  real *c, int64_t ldc, real alpha, real beta)
{
    const int P = 2 * PASS / C;
    for (int r0 = 0; r0 < rows; r0 += P) {
        const real *ar = a + r0 * lda;
        real *cr = c + r0 * ldc;
        /* a constant row count per case: accumulators in registers */
#define DOT_CASE(r)                                                                       \
    case r: dot(r, C, j0, n, k, ar, lda, bt, ldbt, cr, ldc, alpha, beta); break;
        if (P == 4) {
            switch (rows - r0) {
                DOT_CASE(1) DOT_CASE(2) DOT_CASE(3)
            default: dot(P, C, j0, n, k, ar, lda, bt, ldbt, cr, ldc, alpha, beta); break;
            }
        } else {
            switch (rows - r0) {
                DOT_CASE(1) DOT_CASE(2) DOT_CASE(3) DOT_CASE(4) DOT_CASE(5) DOT_CASE(6)
                DOT_CASE(7)
            default: dot(P, C, j0, n, k, ar, lda, bt, ldbt, cr, ldc, alpha, beta); break;
            }
        }
#undef DOT_CASE
    }
}

/* Columns in groups of four while there are four (or three) left, each A vector feeding
 * four FMAs; the last one or two in a pair (a group of four would do twice their FMAs). */
void VFN(dot)(int rows, int64_t n, int64_t k, const real *a, int64_t lda, const real *bt,
              int64_t ldbt, real *c, int64_t ldc, real alpha, real beta)
{
    const int64_t nq = !DOT_QUADS ? 0 : n % 4 == 3 ? n : n - n % 4;
    if (nq > 0)
        dot_passes(4, rows, 0, nq, k, a, lda, bt, ldbt, c, ldc, alpha, beta);
    if (nq < n)
        dot_passes(2, rows, nq, n, k, a, lda, bt, ldbt, c, ldc, alpha, beta);
}

/* bt (n x ldbt) = B^T for B k x n (ldb): VL rows of a column per gather (15 * ldb must fit
 * the gather's 32-bit offsets, else element by element). Only moves values. */
void VFN(dot_pack)(int64_t k, int64_t n, const real *b, int64_t ldb, real *bt, int64_t ldbt)
{
    int64_t p = 0;
    if (ldb <= ((int64_t)1 << 26)) {
        const offsets idx = row_offsets(ldb);
        for (; p + VL <= k; p += VL)
            for (int64_t j = 0; j < n; j++)
                vstore(bt + j * ldbt + p, gather_col(b + p * ldb + j, idx));
    }
    for (; p < k; p++)
        for (int64_t j = 0; j < n; j++)
            bt[j * ldbt + p] = b[p * ldb + j];
}
