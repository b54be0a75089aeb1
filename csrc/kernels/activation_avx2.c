/* activation_avx2.c: the elementwise activations' loops (activation_body.h) compiled with
 * -mavx2 (no FMA: the build forbids contraction anyway), called by activation.c only
 * after fnn_get_isa() reported AVX2 or better. Compiled twice, FNN_PREC=32/64. Reference:
 * the same loops in activation.c's portable build (FASTNN_ISA=generic). */
#include "fnn_real.h"

#include "../activation_body.h"

void FNN(act_fwd_avx2)(int64_t n, int kind, real alpha, const real *x, real *y)
{
    ACT_FWD_LOOP(n, kind, alpha, x, y);
}

void FNN(act_bwd_avx2)(int64_t n, int kind, real alpha, const real *dy, const real *x,
                       const real *y, real *dx)
{
    ACT_BWD_LOOP(n, kind, alpha, dy, x, y, dx);
}
