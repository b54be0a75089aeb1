/* fma_loop.h: the register-only FMA loop of an ISA's GEMM micro-kernel (the benchmark's
 * ceiling, fnn_fma_peak in gemm_kernels.c), one definition for every ISA and type:
 * FNN_FMA_LOOP(name, real, vector type, set1, fmadd, first lane, rows) defines
 *     real name(int64_t iters, real a, real b)
 * which keeps the kernel's rows x 2 vector accumulators in registers and updates them by
 * FMA alone, acc = acc * a + b, iters rounds, with no loads or stores; accumulator j
 * (row-major) starts at j in every lane; it returns the sum of the accumulators' first
 * lanes. Include from a file compiled for the ISA, after <immintrin.h>. */
#ifndef FNN_FMA_LOOP_H
#define FNN_FMA_LOOP_H

#include <stdint.h>

#define FNN_FMA_LOOP(name, real, vtype, set1, fmadd, first, rows)                        \
    real name(int64_t iters, real a, real b)                                             \
    {                                                                                    \
        const vtype va = set1(a), vb = set1(b);                                          \
        vtype acc[rows][2];                                                              \
        for (int i = 0; i < (rows); i++)                                                 \
            for (int v = 0; v < 2; v++)                                                  \
                acc[i][v] = set1((real)(2 * i + v));                                     \
        for (int64_t it = 0; it < iters; it++) {                                         \
            _Pragma("GCC unroll 12") for (int i = 0; i < (rows); i++)                    \
            {                                                                            \
                acc[i][0] = fmadd(acc[i][0], va, vb);                                    \
                acc[i][1] = fmadd(acc[i][1], va, vb);                                    \
            }                                                                            \
        }                                                                                \
        real s = 0;                                                                      \
        for (int i = 0; i < (rows); i++)                                                 \
            s += first(acc[i][0]) + first(acc[i][1]);                                    \
        return s;                                                                        \
    }

#endif
