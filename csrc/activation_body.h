/* activation_body.h: the elementwise activations' exp and loops, included by activation.c
 * (portable build) and kernels/activation_avx2.c (compiled for AVX2): one source, so
 * both give the same values (every operation correctly rounded, no contraction; only a
 * NaN's sign can differ, by the order the compiler gives x * NaN's operands). Include
 * after fnn_real.h. See activation.c for the functions and their formulas.
 *
 * exp here is Cephes's (S. L. Moshier): x = n ln2 + r, |r| <= ln2 / 2, exp(r) from a
 * polynomial (float) or a rational function (double), times 2^n built in the exponent
 * bits, all in arithmetic the compiler vectorises (no libm call in the loops). Measured
 * against NumPy's float64 exp and expm1 (2026-12-05): sigmoid within 2.7 ulp (float) and 3
 * (double) over the whole range, elu's expm1 near 0 within 1.3 and 3; NaN propagates,
 * exp(+inf) = inf, exp(-inf) = 0. */
#ifndef FNN_ACTIVATION_BODY_H
#define FNN_ACTIVATION_BODY_H
#include <string.h>

#if FNN_PREC == 64
typedef uint64_t ubits;
#define EXP_HI 710.0   /* exp(EXP_HI) overflows to inf */
#define EXP_LO -760.0  /* exp(EXP_LO) rounds to 0 */
#define MAGIC 6755399441055744.0 /* 1.5 * 2^52: x + MAGIC - MAGIC rounds x to an integer */
#define EXP_BIAS 1023
#define MANT_BITS 52
#define LN2_HI 6.93145751953125E-1
#define LN2_LO 1.42860682030941723212E-6
#else
typedef uint32_t ubits;
#define EXP_HI 89.0f
#define EXP_LO -110.0f
#define MAGIC 12582912.0f /* 1.5 * 2^23 */
#define EXP_BIAS 127
#define MANT_BITS 23
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#endif
#define LOG2E ((real)1.44269504088896340736)

/* The kinds (fastnn/backends/c_backend.py's _ACT_KIND) and selu's constants (Klambauer
 * et al.; fastnn.activations.SELU). */
enum {
    AK_SIGMOID = 1, AK_SILU = 2, AK_ELU = 3, AK_SELU = 4, AK_LEAKY_RELU = 5, AK_GELU = 6,
    AK_RELU6 = 7, AK_HARD_SIGMOID = 8, AK_HARD_SILU = 9, AK_CELU = 10, AK_TANH = 11
};
#define SELU_ALPHA 1.6732632423543772848170429916717
#define SELU_SCALE 1.0507009873554804934193349852946

/* 2^k for an integer-valued k with k + EXP_BIAS in [1, 2 EXP_BIAS]: k + EXP_BIAS sits in
 * the low mantissa bits of k + MAGIC + EXP_BIAS, and the shift moves it to the exponent. */
static inline real pow2i(real k)
{
    const real t = k + (real)(MAGIC + EXP_BIAS);
    ubits u;
    memcpy(&u, &t, sizeof u);
    u <<= MANT_BITS;
    real r;
    memcpy(&r, &u, sizeof r);
    return r;
}

/* exp(r) - 1 for |r| <= ln2 / 2 (no cancellation: the series' own form). */
static inline real expm1_reduced(real r)
{
#if FNN_PREC == 64
    const real rr = r * r;
    const real px = r * ((1.26177193074810590878E-4 * rr + 3.02994407707441961300E-2) * rr +
                         9.99999999999999999910E-1);
    const real qx = ((3.00198505138664455042E-6 * rr + 2.52448340349684104192E-3) * rr +
                     2.27265548208155028766E-1) * rr + 2.00000000000000000009E0;
    return 2 * px / (qx - px);
#else
    const real p = (((((1.9875691500E-4f * r + 1.3981999507E-3f) * r + 8.3334519073E-3f) * r +
                      4.1665795894E-2f) * r + 1.6666665459E-1f) * r + 5.0000001201E-1f);
    return p * r * r + r;
#endif
}

/* x = n ln2 + r: *n (an integer, as a real) and r. x is clamped to [EXP_LO, EXP_HI]
 * first (NaN passes: both compares are false). */
static inline real reduce(real x, real *n)
{
    const real xc = x > EXP_HI ? EXP_HI : (x < EXP_LO ? EXP_LO : x);
    const real k = (xc * LOG2E + MAGIC) - MAGIC;
    *n = k;
    return (xc - k * LN2_HI) - k * LN2_LO;
}

/* exp(x): 2^n in two factors (each a normal number over the whole clamped range), so
 * results near overflow and in the subnormal range come out right. */
static inline real exp_r(real x)
{
    real k;
    const real r = reduce(x, &k);
    const real k1 = (k * (real)0.5 + MAGIC) - MAGIC;
    return (1 + expm1_reduced(r)) * pow2i(k1) * pow2i(k - k1);
}

/* exp(x) - 1 for x <= 0 (elu): the reduced form where n == 0 (|x| <= ln2 / 2), else
 * exp(x) - 1, which loses at most a few ulp there (exp(x) <= 0.71). */
static inline real expm1_neg(real x)
{
    real k;
    const real r = reduce(x, &k);
    const real q = expm1_reduced(r);
    const real k1 = (k * (real)0.5 + MAGIC) - MAGIC;
    const real e = (1 + q) * pow2i(k1) * pow2i(k - k1) - 1;
    return k == 0 ? q : e;
}

/* erfc(z) for z >= 0 by Chebyshev's series (Numerical Recipes, 3rd ed., 6.2.2), as the
 * reference's _erfc_nonneg: t exp(S(y) - z^2), t = 2 / (2 + z), S the series over
 * T_j(y), y = 2t - 1, its first ERFC_TERMS coefficients. */
#if FNN_PREC == 32
/* float: the first 13 terms (the rest sum to under 1e-8 in exp's argument) as a
 * polynomial in y (numpy's cheb2poly, in double; well conditioned: its coefficients'
 * magnitudes sum to 1.46), evaluated by Estrin's scheme, 8 operations deep where
 * Clenshaw's recurrence was 36 (gelu's AVX2 forward took 2.2 ns per element). Over y in
 * [-1, 1] the sum is within 3.2e-7 of the full series' (the recurrence's: 1.9e-7), erfc
 * within 1.2e-6 relative for z <= 3 (beyond, z * z's rounding dominates: 7.7e-6 at z =
 * 9), in a float32 emulation against math.erfc. */
static const float erfc_poly[13] = {
    -0.6717940851517215f,   0.672643154774543f,     0.04734341752106748f,
    -0.04689364055996255f,  -0.009874534918291385f, 0.008808825369385823f,
    0.0017706661186299203f, -0.002288765238592896f, -0.000182782141716608f,
    0.0005737663720051199f, -3.2113772311552e-05f,  -8.728381021696e-05f,
    1.3371503491072e-05f};

static inline real erfc_nonneg(real z)
{
    const real t = 2 / (2 + z), y = 2 * t - 1, y2 = y * y, y4 = y2 * y2, y8 = y4 * y4;
    const float *a = erfc_poly;
    const real r0 = (a[0] + a[1] * y) + (a[2] + a[3] * y) * y2;
    const real r1 = (a[4] + a[5] * y) + (a[6] + a[7] * y) * y2;
    const real r2 = (a[8] + a[9] * y) + (a[10] + a[11] * y) * y2;
    const real s = (r0 + r1 * y4) + (r2 + a[12] * y4) * y8;
    return t * exp_r(s - z * z);
}
#else
/* double: all 28 terms by Clenshaw's recurrence (each coefficient rounded to real) */
static const double erfc_cof[28] = {
    -1.3026537197817094, 6.4196979235649026e-1, 1.9476473204185836e-2,
    -9.561514786808631e-3, -9.46595344482036e-4, 3.66839497852761e-4,
    4.2523324806907e-5, -2.0278578112534e-5, -1.624290004647e-6,
    1.303655835580e-6, 1.5626441722e-8, -8.5238095915e-8, 6.529054439e-9,
    5.059343495e-9, -9.91364156e-10, -2.27365122e-10, 9.6467911e-11,
    2.394038e-12, -6.886027e-12, 8.94487e-13, 3.13092e-13, -1.12708e-13,
    3.81e-16, 7.106e-15, -1.523e-15, -9.4e-17, 1.21e-16, -2.8e-17};
#define ERFC_TERMS 28

static inline real erfc_nonneg(real z)
{
    const real t = 2 / (2 + z), ty = 4 * t - 2;
    real d = 0, dd = 0;
#pragma GCC unroll 28 /* (unrolled, the callers' loops over elements vectorise) */
    for (int j = ERFC_TERMS - 1; j > 0; j--) {
        const real nx = ty * d - dd + (real)erfc_cof[j];
        dd = d;
        d = nx;
    }
    return t * exp_r(((ty * d + (real)erfc_cof[0]) * (real)0.5 - dd) - z * z);
}
#endif

/* The standard normal CDF: erfc(-x / sqrt(2)) / 2, each side from erfc of |z| (no
 * cancellation in the left tail). */
static inline real normal_cdf(real x)
{
    const real z = x * (real)0.70710678118654752440, e = erfc_nonneg(FNN_FABS(z)) * (real)0.5;
    const real right = 1 - e;
    return z < 0 ? e : right;
}

/* clip(x / 6 + 0.5, 0, 1) (NaN passes: both compares false) */
static inline real hard_sigmoid_r(real x)
{
    const real h = x / 6 + (real)0.5;
    return h < 0 ? 0 : (h > 1 ? 1 : h);
}

/* tanh(x) = -e / (2 + e) with e = expm1(-2 |x|) (no cancellation near 0), given x's sign;
 * +-0 returned as given, NaN passes */
static inline real tanh_r(real x)
{
    const real e = expm1_neg(-2 * FNN_FABS(x)), t = FNN_FABS(e / (2 + e));
    return x == 0 ? x : (x < 0 ? -t : t);
}

static inline real sigmoid_r(real x)
{
    const real e = exp_r(-FNN_FABS(x)), pos = 1 / (1 + e), neg = e * pos;
    return x >= 0 ? pos : neg;
}

/* Elements [e0, e1) of act_fwd (activation.c). */
static inline void act_fwd_range(int kind, real alpha, const real *x, real *y, int64_t e0,
                                 int64_t e1)
{
    const real sa = (real)(SELU_SCALE * SELU_ALPHA), sc = (real)SELU_SCALE;
    switch (kind) {
    case AK_SIGMOID:
        for (int64_t e = e0; e < e1; e++)
            y[e] = sigmoid_r(x[e]);
        break;
    case AK_SILU:
        for (int64_t e = e0; e < e1; e++)
            y[e] = x[e] * sigmoid_r(x[e]);
        break;
    case AK_TANH:
        for (int64_t e = e0; e < e1; e++)
            y[e] = tanh_r(x[e]);
        break;
    case AK_ELU:
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e], neg = alpha * expm1_neg(v > 0 ? 0 : v); /* NaN passes */
            y[e] = v > 0 ? v : neg;
        }
        break;
    case AK_SELU:
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e], pos = sc * v, neg = sa * expm1_neg(v > 0 ? 0 : v);
            y[e] = v > 0 ? pos : neg;
        }
        break;
    case AK_GELU:
        for (int64_t e = e0; e < e1; e++)
            y[e] = x[e] * normal_cdf(x[e]);
        break;
    case AK_RELU6: /* clip(x, 0, 6), NaN passes */
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e];
            y[e] = v < 0 ? 0 : (v > 6 ? 6 : v);
        }
        break;
    case AK_HARD_SIGMOID:
        for (int64_t e = e0; e < e1; e++)
            y[e] = hard_sigmoid_r(x[e]);
        break;
    case AK_HARD_SILU:
        for (int64_t e = e0; e < e1; e++)
            y[e] = x[e] * hard_sigmoid_r(x[e]);
        break;
    case AK_CELU: /* alpha != 0 (the wrapper checks) */
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e], neg = alpha * expm1_neg((v > 0 ? 0 : v) / alpha);
            y[e] = v > 0 ? v : neg;
        }
        break;
    default: /* AK_LEAKY_RELU */
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e], neg = v * alpha;
            y[e] = v > 0 ? v : neg;
        }
    }
}

/* Elements [e0, e1) of act_bwd (activation.c). */
static inline void act_bwd_range(int kind, real alpha, const real *dy, const real *x,
                                 const real *y, real *dx, int64_t e0, int64_t e1)
{
    const real sa = (real)(SELU_SCALE * SELU_ALPHA), sc = (real)SELU_SCALE;
    switch (kind) {
    case AK_SIGMOID:
        for (int64_t e = e0; e < e1; e++)
            dx[e] = dy[e] * y[e] * (1 - y[e]);
        break;
    case AK_TANH:
        for (int64_t e = e0; e < e1; e++)
            dx[e] = dy[e] * (1 - y[e] * y[e]);
        break;
    case AK_SILU:
        for (int64_t e = e0; e < e1; e++) {
            const real s = sigmoid_r(x[e]);
            dx[e] = dy[e] * (s * (1 + x[e] * (1 - s)));
        }
        break;
    case AK_ELU:
        for (int64_t e = e0; e < e1; e++) {
            const real g = dy[e], neg = g * (y[e] + alpha);
            dx[e] = x[e] > 0 ? g : neg;
        }
        break;
    case AK_SELU:
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e], neg = sa * exp_r(v), d = v > 0 ? sc : neg;
            dx[e] = dy[e] * d;
        }
        break;
    case AK_GELU: /* Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi): Phi(x) from the
                   * forward's output, y / x (within a few ulp while y is a normal
                   * number), for |x| < 2^-20 its series 1/2 + x phi(0) (the next term,
                   * x^3 phi(0) / 6, below 1e-19) */
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e], phi = exp_r(((real)-0.5 * v) * v) * (real)0.39894228040143267794;
            const real small = (real)0.5 + v * (real)0.39894228040143267794, ratio = y[e] / v;
            const real cdf = FNN_FABS(v) < (real)9.5367431640625e-7 ? small : ratio;
            dx[e] = dy[e] * (cdf + v * phi);
        }
        break;
    case AK_RELU6:
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e], g = dy[e];
            dx[e] = v > 0 && v < 6 ? g : 0;
        }
        break;
    case AK_HARD_SIGMOID:
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e], g = dy[e] / 6;
            dx[e] = v > -3 && v < 3 ? g : 0;
        }
        break;
    case AK_HARD_SILU:
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e], mid = (2 * v + 3) / 6;
            const real d = v >= 3 ? 1 : (v > -3 ? mid : 0);
            dx[e] = dy[e] * d;
        }
        break;
    case AK_CELU:
        for (int64_t e = e0; e < e1; e++) {
            const real v = x[e], g = dy[e], neg = g * exp_r((v > 0 ? 0 : v) / alpha);
            dx[e] = v > 0 ? g : neg;
        }
        break;
    default: /* AK_LEAKY_RELU */
        for (int64_t e = e0; e < e1; e++) {
            const real g = dy[e], neg = g * alpha;
            dx[e] = x[e] > 0 ? g : neg;
        }
    }
}

/* Elements per block (a thread's unit of work). */
#define ACT_BLOCK 4096

/* The threaded loops over blocks, for each build: elementwise, so the result does not
 * depend on the thread count. */
#define ACT_FWD_LOOP(n, kind, alpha, x, y)                                                 \
    do {                                                                                   \
        const int64_t nblk_ = ((n) + ACT_BLOCK - 1) / ACT_BLOCK;                           \
        const int nt_ = fnn_threads_for((n) * 8);                                          \
        _Pragma("omp parallel for num_threads(nt_) schedule(static) if (nt_ > 1)")         \
        for (int64_t b_ = 0; b_ < nblk_; b_++)                                             \
            act_fwd_range(kind, alpha, x, y, b_ * ACT_BLOCK,                               \
                          b_ * ACT_BLOCK + ACT_BLOCK < (n) ? b_ * ACT_BLOCK + ACT_BLOCK    \
                                                           : (n));                         \
    } while (0)
#define ACT_BWD_LOOP(n, kind, alpha, dy, x, y, dx)                                         \
    do {                                                                                   \
        const int64_t nblk_ = ((n) + ACT_BLOCK - 1) / ACT_BLOCK;                           \
        const int nt_ = fnn_threads_for((n) * 8);                                          \
        _Pragma("omp parallel for num_threads(nt_) schedule(static) if (nt_ > 1)")         \
        for (int64_t b_ = 0; b_ < nblk_; b_++)                                             \
            act_bwd_range(kind, alpha, dy, x, y, dx, b_ * ACT_BLOCK,                       \
                          b_ * ACT_BLOCK + ACT_BLOCK < (n) ? b_ * ACT_BLOCK + ACT_BLOCK    \
                                                           : (n));                         \
    } while (0)

#endif
