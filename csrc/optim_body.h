/* optim_body.h: the element steps of the fused optimizer updates, included by optim.c (portable
 * build) and kernels/optim_avx2.c (compiled for AVX2): one source, so both give the same
 * bits. Include after fnn_real.h. */
#ifndef FNN_OPTIM_BODY_H
#define FNN_OPTIM_BODY_H

/* Adam on element i, in place:
 *   m += (g - m) * omb1;  v += (g*g - v) * omb2;  m, v below lim (in magnitude) -> 0
 *   [vhat = max(vhat, v), below lim -> 0; use vhat for v]
 *   p -= (m * alpha) / (sqrt(v) + eps)
 * omb1 = 1 - beta_1, omb2 = 1 - beta_2, alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t);
 * lim: the smallest normal number to flush subnormal moments, 0 to keep them (see
 * fnn_adam_update). NaN in g propagates to p. Each caller loops over i in its own
 * (parallel) loop, so the loops keep distinct names in the binary (the portability check
 * tells them apart). */
static inline void adam_elem(int64_t i, real *p, const real *g, real *m, real *v, real *vhat,
                             real alpha, real omb1, real omb2, real eps, real lim)
{
    const real gi = g[i];
    real mi = m[i], vi = v[i];
    mi += (gi - mi) * omb1;
    vi += (gi * gi - vi) * omb2;
    mi = fnn_flush(mi, lim);
    vi = fnn_flush(vi, lim);
    m[i] = mi;
    v[i] = vi;
    if (vhat) {
        const real h = vhat[i];
        /* np.maximum propagates NaN from either side */
        vi = (h != h || h > vi) ? h : vi;
        vi = fnn_flush(vi, lim);
        vhat[i] = vi;
    }
    p[i] -= (mi * alpha) / (FNN_SQRT(vi) + eps);
}

/* Whether the flushing Adam step may run in flush-to-zero mode: not when one of its
 * scalars is itself subnormal (denormals-are-zero would read it as 0: epsilon = 1e-40 in
 * float gave 0 / 0 = NaN where v is 0). */
static inline int adam_ftz(int flush, real alpha, real omb1, real omb2, real eps)
{
    const real s[4] = {alpha, omb1, omb2, eps};
    for (int i = 0; i < 4; i++)
        if (s[i] != 0 && FNN_FABS(s[i]) < FNN_REAL_MIN)
            return 0;
    return flush;
}

#endif
