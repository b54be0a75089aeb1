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

/* Keras's Adam step on n elements, updating p, m, v (and vhat when not NULL: AMSGrad) in
 * place; g is read only:
 *   m += (g - m) * omb1;  v += (g*g - v) * omb2;  [vhat = max(vhat, v); use vhat for v]
 *   p -= (m * alpha) / (sqrt(v) + eps)
 * omb1 = 1 - beta_1, omb2 = 1 - beta_2, alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t).
 * NaN in g propagates to p. */
void FNN(adam_update)(int64_t n, real *p, const real *g, real *m, real *v, real *vhat,
                      real alpha, real omb1, real omb2, real eps)
{
    const int nt = fnn_threads_for(n);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++) {
        const real gi = g[i];
        real mi = m[i], vi = v[i];
        mi += (gi - mi) * omb1;
        vi += (gi * gi - vi) * omb2;
        m[i] = mi;
        v[i] = vi;
        if (vhat) {
            const real h = vhat[i];
            /* np.maximum propagates NaN from either side */
            vi = (h != h || h > vi) ? h : vi;
            vhat[i] = vi;
        }
        p[i] -= (mi * alpha) / (FNN_SQRT(vi) + eps);
    }
}
