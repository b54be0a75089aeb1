/* activation.c: elementwise activations built on exp, forward and backward (float and
 * double; compiled twice, FNN_PREC=32/64): sigmoid, silu, elu, selu, leaky_relu, gelu,
 * relu6, hard_sigmoid, hard_silu, celu, tanh. Flat
 * arrays of n elements; threads over blocks. Reference: fastnn/backends/numpy_backend.py
 * (activation, activation_backward), the same formulas on NumPy's exp and expm1. The exp
 * and the loops are in activation_body.h; on AVX2 CPUs the same loops compiled for AVX2
 * run instead (kernels/activation_avx2.c: the same values; a NaN's sign may differ). */
#include "fnn_real.h"

#include "activation_body.h"

/* y = f(x) over n elements, f by kind (AK_*; alpha: elu's and celu's alpha,
 * leaky_relu's negative_slope, unused otherwise):
 *   sigmoid     pos = 1 / (1 + e) for x >= 0, else e * pos, e = exp(-|x|)
 *   silu        x * sigmoid(x)
 *   elu         x > 0 ? x : alpha * expm1(min(x, 0))
 *   selu        x > 0 ? scale * x : (scale * alpha_selu) * expm1(min(x, 0))
 *   leaky_relu  x > 0 ? x : x * alpha
 *   gelu        x * Phi(x), Phi the standard normal CDF (erfc's Chebyshev series)
 *   relu6       clip(x, 0, 6)
 *   hard_sigmoid  clip(x / 6 + 0.5, 0, 1)
 *   hard_silu   x * hard_sigmoid(x)
 *   celu        x > 0 ? x : alpha * expm1(min(x, 0) / alpha)   (alpha != 0)
 *   tanh        sign(x) * (-e / (2 + e)), e = expm1(-2 |x|)
 * Overwrites y, which may be x. */
void FNN(act_fwd)(int64_t n, int kind, real alpha, const real *x, real *y)
{
#if FNN_X86_KERNELS
    if (fnn_get_isa() >= 1) {
        FNN(act_fwd_avx2)(n, kind, alpha, x, y);
        return;
    }
#endif
    ACT_FWD_LOOP(n, kind, alpha, x, y);
}

/* dx = dy * f'(x), f by kind as in act_fwd, y = f(x) its output:
 *   sigmoid     dy * y * (1 - y)
 *   silu        dy * (s * (1 + x * (1 - s))), s = sigmoid(x)
 *   elu         x > 0 ? dy : dy * (y + alpha)
 *   selu        dy * (x > 0 ? scale : (scale * alpha_selu) * exp(min(x, 0)))
 *   leaky_relu  x > 0 ? dy : dy * alpha
 *   gelu        dy * (Phi(x) + x * exp(-x^2 / 2) / sqrt(2 pi)), Phi(x) = y / x
 *   relu6       0 < x < 6 ? dy : 0
 *   hard_sigmoid  -3 < x < 3 ? dy / 6 : 0
 *   hard_silu   dy * (x >= 3 ? 1 : x > -3 ? (2 x + 3) / 6 : 0)
 *   celu        x > 0 ? dy : dy * exp(min(x, 0) / alpha)
 *   tanh        dy * (1 - y * y)
 * Overwrites dx, which may be dy. */
void FNN(act_bwd)(int64_t n, int kind, real alpha, const real *dy, const real *x,
                  const real *y, real *dx)
{
#if FNN_X86_KERNELS
    if (fnn_get_isa() >= 1) {
        FNN(act_bwd_avx2)(n, kind, alpha, dy, x, y, dx);
        return;
    }
#endif
    ACT_BWD_LOOP(n, kind, alpha, dy, x, y, dx);
}
