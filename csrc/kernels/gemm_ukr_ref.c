/* gemm_ukr_ref.c: the portable micro-kernel (any CPU; compiled twice, FNN_PREC=32/64).
 * 4 x 8 (float) or 4 x 4 (double) tile: small enough that the accumulators stay in the 16
 * SSE2 registers of baseline x86-64, written so a compiler vectorises the NR loop with
 * whatever SIMD the baseline ISA has. Contract: fnn_internal.h (full tile, beta == 0
 * overwrites). The blocking that goes with it is in gemm_kernels.c. */
#include "fnn_real.h"

#define MR 4
#if FNN_PREC == 64
#define NR 4
#else
#define NR 8
#endif

void FNN(ukr_ref)(int64_t k, const real *ap, const real *bp, real *c, int64_t ldc, real alpha,
                  real beta)
{
    real acc[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++)
            acc[i][j] = 0;
    for (int64_t p = 0; p < k; p++) {
        const real *bb = bp + p * NR;
        for (int i = 0; i < MR; i++) {
            const real av = ap[p * MR + i];
            for (int j = 0; j < NR; j++)
                acc[i][j] += av * bb[j];
        }
    }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++)
            c[i * ldc + j] = beta == 0 ? alpha * acc[i][j]
                                       : alpha * acc[i][j] + beta * c[i * ldc + j];
}

/* The portable kernel's arithmetic ceiling: one accumulator per element of its MR x NR
 * tile, acc[j] = acc[j] * a + b, iters rounds, no loads or stores (a multiply and an add:
 * no FMA in baseline x86-64); accumulator j starts at j. Returns the sum of the
 * accumulators. Benchmark probe (fnn_fma_peak, gemm_kernels.c), not a kernel. */
real FNN(fma_loop_ref)(int64_t iters, real a, real b)
{
    real acc[MR * NR];
    for (int j = 0; j < MR * NR; j++)
        acc[j] = (real)j;
    for (int64_t it = 0; it < iters; it++)
        for (int j = 0; j < MR * NR; j++)
            acc[j] = acc[j] * a + b;
    real s = 0;
    for (int j = 0; j < MR * NR; j++)
        s += acc[j];
    return s;
}
