/* fnn_real.h: the type macro. Each type-generic kernel file is compiled twice, with
 * FNN_PREC=32 (float, names *_f32) and FNN_PREC=64 (double, names *_f64). */
#ifndef FNN_REAL_H
#define FNN_REAL_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "fastnn.h"
#include "fnn_internal.h"

#ifndef FNN_PREC
#error "compile with -DFNN_PREC=32 or -DFNN_PREC=64"
#endif

#define FNN_CAT_(a, b) a##b
#define FNN_CAT(a, b) FNN_CAT_(a, b)
#if FNN_PREC == 64
typedef double real;
typedef double accum; /* accumulator for long reductions */
#define FNN_SFX _f64
#define FNN_SQRT sqrt
#define FNN_FABS fabs
#define FNN_REAL_MIN DBL_MIN /* the smallest normal number */
#define FNN_EXP exp
#define FNN_LOG log
#else
typedef float real;
typedef double accum; /* float reductions (bias gradients) accumulate in double */
#define FNN_SFX _f32
#define FNN_SQRT sqrtf
#define FNN_FABS fabsf
#define FNN_REAL_MIN FLT_MIN
#define FNN_EXP expf
#define FNN_LOG logf
#endif
/* FNN(gemm) -> fnn_gemm_f32 / fnn_gemm_f64 */
#define FNN(name) FNN_CAT(FNN_CAT(fnn_, name), FNN_SFX)

/* This precision's GEMM micro-kernel entry and the registry lookup (gemm_kernels.c). */
typedef FNN_CAT(fnn_gemm_kernel, FNN_SFX) kernel_t;
#define KERNEL_FOR FNN_CAT(fnn_gemm_kernel_for, FNN_SFX)
#define KERNEL_MATMUL_FOR FNN_CAT(fnn_gemm_kernel_matmul_for, FNN_SFX)

enum { FNN_NHWC = 0, FNN_NCHW = 1 };
enum { FNN_ACT_IDENTITY = 0, FNN_ACT_RELU = 1 };

/* Max pooling's rule (pool.c, and the fused convolution + pooling in conv.c): does v
 * replace the current best? Larger, or the first NaN. */
static inline int fnn_beats(real v, real best) { return v > best || (v != v && best == best); }

/* x, or +0 where |x| < lim (lim: FNN_REAL_MIN to flush subnormals, 0 to keep them; NaN
 * stays): the optimizers' slot flush (optim_body.h, dense.c). A select: vectorises. */
static inline real fnn_flush(real x, real lim) { return FNN_FABS(x) < lim ? (real)0 : x; }

/* Workspace alignment: 64 bytes, expressed in elements. A function that aligns its
 * caller's workspace (fnn_align_ws) asks WS_ALIGN elements more in its workspace query. */
#define WS_ALIGN ((int64_t)(64 / sizeof(real)))

/* ws rounded up to the next 64-byte boundary (at most WS_ALIGN - 1 elements on). */
static inline real *fnn_align_ws(real *ws)
{
    const uintptr_t p = (uintptr_t)ws;
    return (real *)((p + 63) & ~(uintptr_t)63);
}

/* p[0] + p[stride] + ... + p[(n - 1) * stride], added in that order: partial results of
 * pieces fixed by the shape (the GEMM's K split, the pooled backward's image groups)
 * summed so that the result does not depend on the thread count. n >= 1. */
static inline real fnn_sum_partials(const real *p, int64_t n, int64_t stride)
{
    real acc = p[0];
    for (int64_t s = 1; s < n; s++)
        acc += p[s * stride];
    return acc;
}

/* dst[e] = (first ? 0 : dst[e]) + fnn_sum_partials(p + e, n, stride), e < len (dst apart
 * from the partials): the same additions in the same order, a block of elements at a
 * time, so that they vectorise (element by element, with the partials 72 KB apart, the
 * sum took 5% of a 3x3x32 -> 64 weight gradient). n >= 1. */
static inline void fnn_add_partials(int64_t len, const real *p, int64_t n, int64_t stride,
                                    int first, real *dst)
{
    enum { BLOCK = 256 };
    for (int64_t e0 = 0; e0 < len; e0 += BLOCK) {
        const int64_t m = len - e0 < BLOCK ? len - e0 : BLOCK;
        real acc[BLOCK];
        for (int64_t e = 0; e < m; e++)
            acc[e] = p[e0 + e];
        for (int64_t s = 1; s < n; s++) {
            const real *q = p + s * stride + e0;
            for (int64_t e = 0; e < m; e++)
                acc[e] += q[e];
        }
        for (int64_t e = 0; e < m; e++)
            dst[e0 + e] = first ? acc[e] : dst[e0 + e] + acc[e];
    }
}




#endif
