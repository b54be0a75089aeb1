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
 * place; g is read only (see optim_body.h for the operations). On AVX2 CPUs the same loop
 * compiled for AVX2 runs instead (kernels/optim_avx2.c): the divide and square root are
 * correctly rounded at every vector width, so the bits do not change. */
void FNN(adam_update)(int64_t n, real *p, const real *g, real *m, real *v, real *vhat,
                      real alpha, real omb1, real omb2, real eps)
{
#if FNN_X86_KERNELS
    if (fnn_get_isa() >= 1) {
        FNN(adam_update_avx2)(n, p, g, m, v, vhat, alpha, omb1, omb2, eps);
        return;
    }
#endif
    /* elementwise: threads split the index range, the result does not depend on their
     * number */
    const int nt = fnn_threads_for(n);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++)
        adam_elem(i, p, g, m, v, vhat, alpha, omb1, omb2, eps);
}
