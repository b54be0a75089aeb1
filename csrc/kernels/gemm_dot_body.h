/* gemm_dot_body.h: the ISA-generic part of the dot-product kernel (contract:
 * fnn_internal.h, fnn_ukr_dot), included last by kernels/gemm_dot_avx2.c and
 * kernels/gemm_dot_avx512.c, each compiled twice (FNN_PREC=32/64). They define the lane
 * vocabulary (vec_*.h) and PASS, the rows of C per pass (2 * PASS accumulators, one per row
 * and column of a pair), and: lane_sums(x, s), the 2 * PASS accumulators to 2 * PASS / VL
 * vectors of sums, lane 2r + c of vector h the sum of x[2 (h VL / 2 + r) + c]'s lanes, by a
 * fixed tree; store_pairs(s, c, ldc), VL / 2 rows x 2 columns of C from a vector of sums;
 * offsets, row_offsets(ldb) and gather_col(b, idx), a column's VL elements by one gather.
 * Each element of C: a dot product along k in the VL lanes (lane p mod VL, one FMA each,
 * in the order of p), then across them by the tree. */

#define RPV (VL / 2) /* rows of C per vector of sums (lane 2r + c: row r, column c) */
#if PASS > FNN_DOT_ROWS || FNN_DOT_ROWS % PASS
#error "a call's FNN_DOT_ROWS rows go in whole passes"
#endif

/* acc[2r + c] = the lane-wise sums of A(r, p) * B(p, j + c) over k, for R rows and the
 * columns at b0 and b1 (b1 repeats b0 when column j + 1 does not exist): whole vectors,
 * then the tail's lanes (masked: the rest load as zero). Each A vector is loaded once
 * (vkeep) for both FMAs. */
FNN_ALWAYS_INLINE void dot_acc(int R, int64_t k, const real *a, int64_t lda, const real *b0,
                               const real *b1, vec acc[2 * PASS])
{
#pragma GCC unroll 16
    for (int i = 0; i < 2 * PASS; i++)
        acc[i] = vzero();
    const int64_t kv = k - k % VL;
    for (int64_t p = 0; p < kv; p += VL) {
        const vec v0 = vload(b0 + p), v1 = vload(b1 + p);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            vec av = vload(a + r * lda + p);
            vkeep(av);
            acc[2 * r] = vfma(av, v0, acc[2 * r]);
            acc[2 * r + 1] = vfma(av, v1, acc[2 * r + 1]);
        }
    }
    if (kv < k) {
        const vmask mk = lanes_below(k - kv);
        const vec v0 = vmload(b0 + kv, mk), v1 = vmload(b1 + kv, mk);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            vec av = vmload(a + r * lda + kv, mk);
            vkeep(av);
            acc[2 * r] = vfma(av, v0, acc[2 * r]);
            acc[2 * r + 1] = vfma(av, v1, acc[2 * r + 1]);
        }
    }
}

/* The first min(R, RPV) rows and `cols` columns of C from s (alpha applied): a full
 * RPV x 2 block with beta == 0 straight from the register, else element by element,
 * C = beta * C + s. */
FNN_ALWAYS_INLINE void dot_store(int R, int cols, vec s, real *c, int64_t ldc, real beta)
{
    if (R >= RPV && cols == 2 && beta == 0) {
        store_pairs(s, c, ldc);
        return;
    }
    real t[VL];
    vstore(t, s);
    for (int r = 0; r < R && r < RPV; r++)
        for (int j = 0; j < cols; j++) {
            real *cj = c + r * ldc + j;
            *cj = beta == 0 ? t[2 * r + j] : beta * *cj + t[2 * r + j];
        }
}

FNN_ALWAYS_INLINE void dot(int R, int64_t n, int64_t k, const real *a, int64_t lda,
                           const real *bt, int64_t ldbt, real *c, int64_t ldc, real alpha,
                           real beta)
{
    const vec va = vset1(alpha);
    for (int64_t j = 0; j < n; j += 2) {
        const int cols = n - j < 2 ? 1 : 2;
        const real *b0 = bt + j * ldbt;
        vec acc[2 * PASS], s[2];
        dot_acc(R, k, a, lda, b0, cols == 2 ? b0 + ldbt : b0, acc);
        lane_sums(acc, s);
        for (int h = 0; h * RPV < R; h++)
            dot_store(R - h * RPV, cols, vmul(va, s[h]), c + h * RPV * ldc + j, ldc, beta);
    }
}

void VFN(dot)(int rows, int64_t n, int64_t k, const real *a, int64_t lda, const real *bt,
              int64_t ldbt, real *c, int64_t ldc, real alpha, real beta)
{
    for (int r0 = 0; r0 < rows; r0 += PASS) {
        const real *ar = a + r0 * lda;
        real *cr = c + r0 * ldc;
        switch (rows - r0) { /* a constant row count per case: accumulators in registers */
        case 1: dot(1, n, k, ar, lda, bt, ldbt, cr, ldc, alpha, beta); break;
        case 2: dot(2, n, k, ar, lda, bt, ldbt, cr, ldc, alpha, beta); break;
        case 3: dot(3, n, k, ar, lda, bt, ldbt, cr, ldc, alpha, beta); break;
#if PASS == 8
        case 4: dot(4, n, k, ar, lda, bt, ldbt, cr, ldc, alpha, beta); break;
        case 5: dot(5, n, k, ar, lda, bt, ldbt, cr, ldc, alpha, beta); break;
        case 6: dot(6, n, k, ar, lda, bt, ldbt, cr, ldc, alpha, beta); break;
        case 7: dot(7, n, k, ar, lda, bt, ldbt, cr, ldc, alpha, beta); break;
#endif
        default: dot(PASS, n, k, ar, lda, bt, ldbt, cr, ldc, alpha, beta); break;
        }
    }
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
