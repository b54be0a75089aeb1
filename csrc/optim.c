/* optim.c: fused optimizer updates (float and double; compiled twice, FNN_PREC=32/64).
 *
 * One pass over the parameter instead of the ten array passes the NumPy formulation makes.
 * Every operation is done in `real`, in the same order as the NumPy reference
 * (fastnn/backends/numpy_backend.py, adam_update), with no contraction into FMA (the build
 * passes -ffp-contract=off; MSVC does not contract by default), so the result is bitwise
 * the reference's. Elementwise, so threads split the index range and the
 * result does not depend on the thread count.
 */
#include "fnn_real.h"

#include "optim_body.h"

/* Keras's Adam step on n elements, updating p, m, v (and vhat when not NULL: AMSGrad) in
 * place; g is read only (see optim_body.h for the operations). flush != 0: m and v of
 * magnitude below the smallest normal number are stored as 0, and the step runs in the
 * flush-to-zero mode (fnn_ftz_begin: intermediate results and inputs below it count as 0,
 * as in TensorFlow's threads). Without it a weight whose gradient stays 0 (a dead ReLU
 * unit, an always-black pixel's input weight) has m decay into the subnormal range and
 * stick there (0.9 m rounds back to m below ~1e-44), and every later step does its
 * arithmetic on subnormals: 17x slower (stuck m), 33x (m and v) for 100k floats on a
 * Xeon; and with only the stored moments flushed, (g*g - v) * (1 - beta_2) stays
 * subnormal for the ~7000 steps v takes to decay from 1e-35 to 1e-38 (the MLP of
 * program 4 ran its second and third epochs 2x slower). On AVX2
 * CPUs the same loop compiled for AVX2 runs instead (kernels/optim_avx2.c): the divide and
 * square root are correctly rounded at every vector width, so the bits do not change. */
void FNN(adam_update)(int64_t n, real *p, const real *g, real *m, real *v, real *vhat,
                      real alpha, real omb1, real omb2, real eps, int flush)
{
#if FNN_X86_KERNELS
    if (fnn_get_isa() >= 1) {
        FNN(adam_update_avx2)(n, p, g, m, v, vhat, alpha, omb1, omb2, eps, flush);
        return;
    }
#endif
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
