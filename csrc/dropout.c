/* dropout.c: inverted dropout's mask and product (float and double; compiled twice,
 * FNN_PREC=32/64), on Philox4x32-10 random words (dropout_body.h: the generator, the
 * element-to-word order and the loops). On AVX2 CPUs the same loops compiled for AVX2 run
 * instead (kernels/dropout_avx2.c: the same bits). Reference:
 * fastnn/backends/numpy_backend.py (dropout). */
#include "fnn_real.h"

#include "dropout_body.h"

/* mask[i] = (word i >= t) ? scale : 0 and, when x is not NULL, y[i] = x[i] * mask[i],
 * for i < n: word i is element i's Philox4x32-10 word under the key seed
 * (dropout_body.h). Flat arrays; mask and y overwritten (y unused when x is NULL; none of
 * x, mask and y overlap). An element is dropped with probability t / 2^32. */
void FNN(dropout)(int64_t n, uint64_t seed, uint32_t t, real scale, const real *x, real *mask,
                  real *y)
{
#if FNN_X86_KERNELS
    if (fnn_get_isa() >= 1) {
        FNN(dropout_avx2)(n, seed, t, scale, x, mask, y);
        return;
    }
#endif
    DROPOUT_LOOP(n, seed, t, scale, x, mask, y);
}
