/* optim_avx2.c: the fused optimizer loops (optim_body.h) compiled with -mavx2 (no FMA:
 * the build forbids contraction anyway), called by optim.c only after fnn_cpu_max_isa()
 * reported AVX2. Compiled twice, FNN_PREC=32/64. Reference: the same loop in optim.c's
 * portable build (FASTNN_ISA=generic). */
#include "fnn_real.h"

#include "optim_body.h"

void FNN(adam_update_avx2)(int64_t n, real *p, const real *g, real *m, real *v, real *vhat,
                           real alpha, real omb1, real omb2, real eps, int flush)
{
    const real lim = flush ? FNN_REAL_MIN : 0;
    const int ftz = adam_ftz(flush, alpha, omb1, omb2, eps);
    /* elementwise: threads split the index range, the result does not depend on their
     * number */
    const int nt = fnn_threads_for(n);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const unsigned mode = fnn_ftz_begin(ftz);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++)
            adam_elem(i, p, g, m, v, vhat, alpha, omb1, omb2, eps, lim);
        fnn_ftz_end(ftz, mode);
    }
}
