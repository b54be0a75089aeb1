/* dropout_body.h: the dropout kernel's loops, included by dropout.c (portable build) and
 * kernels/dropout_avx2.c (the same loops compiled for AVX2), after fnn_real.h.
 *
 * The random words are Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random
 * numbers: as easy as 1, 2, 3", SC 2011; the generator of Random123, and of PyTorch's and
 * JAX's counter-based streams): a counter of four 32-bit words and a key of two, ten
 * rounds of two 32 x 32 -> 64-bit products. Element i of an array takes word w = (i % 32)
 * / 8 of the block b = 8 * (i / 32) + i % 8 (counter (b mod 2^32, b / 2^32, 0, 0), key
 * (seed mod 2^32, seed / 2^32)): each group of 32 elements is eight blocks side by side,
 * so the eight lanes of every round and every store are contiguous (they vectorise). An
 * element's word depends on its index and the seed only: the same for any thread count.
 * Reference: fastnn/backends/numpy_backend.py (philox4x32_10, dropout_words), checked
 * there against Random123's known-answer vectors. */
#ifndef FNN_DROPOUT_BODY_H
#define FNN_DROPOUT_BODY_H

#include <stdint.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define DROP_LANES 8                  /* Philox blocks per group */
#define DROP_GROUP (4 * DROP_LANES)   /* elements per group */
#define DROP_CHUNK 4096               /* elements per thread's piece (a multiple of 32) */

/* The 32 words of group g (elements 32 g .. 32 g + 31, in element order) into out.
 * (These functions are always inlined: an outlined copy would carry the same name in the
 * portable and the AVX2 objects, which tools/wheel_smoke.py cannot tell apart.) */
FNN_ALWAYS_INLINE void philox_group(uint64_t g, uint32_t k0, uint32_t k1,
                                    uint32_t out[DROP_GROUP])
{
    uint32_t c0[DROP_LANES], c1[DROP_LANES], c2[DROP_LANES], c3[DROP_LANES];
    for (int l = 0; l < DROP_LANES; l++) {
        const uint64_t b = g * DROP_LANES + (uint64_t)l;
        c0[l] = (uint32_t)b;
        c1[l] = (uint32_t)(b >> 32);
        c2[l] = 0;
        c3[l] = 0;
    }
    for (uint32_t r = 0; r < 10; r++) {
        const uint32_t ka = k0 + r * PHILOX_W0, kb = k1 + r * PHILOX_W1; /* key bumped r times */
        for (int l = 0; l < DROP_LANES; l++) {
            const uint64_t p0 = (uint64_t)PHILOX_M0 * c0[l], p1 = (uint64_t)PHILOX_M1 * c2[l];
            c0[l] = (uint32_t)(p1 >> 32) ^ c1[l] ^ ka;
            c1[l] = (uint32_t)p1;
            c2[l] = (uint32_t)(p0 >> 32) ^ c3[l] ^ kb;
            c3[l] = (uint32_t)p0;
        }
    }
    for (int l = 0; l < DROP_LANES; l++) {
        out[l] = c0[l];
        out[DROP_LANES + l] = c1[l];
        out[2 * DROP_LANES + l] = c2[l];
        out[3 * DROP_LANES + l] = c3[l];
    }
}

/* The group generator drop_range calls: philox_group, or an includer's own (the same
 * words; kernels/dropout_avx2.c's on AVX2 vectors) */
#ifndef PHILOX_GROUP
#define PHILOX_GROUP philox_group
#endif

/* Elements i0 .. i1 (i0 a multiple of 32) of dropout_loop's mask and y. */
FNN_ALWAYS_INLINE void drop_range(int64_t i0, int64_t i1, uint32_t k0, uint32_t k1,
                                  uint32_t t, real scale, const real *restrict x,
                                  real *restrict mask, real *restrict y)
{
    for (int64_t i = i0; i < i1; i += DROP_GROUP) {
        uint32_t wd[DROP_GROUP];
        PHILOX_GROUP((uint64_t)i / DROP_GROUP, k0, k1, wd);
        real m[DROP_GROUP];
        for (int j = 0; j < DROP_GROUP; j++)
            m[j] = wd[j] >= t ? scale : (real)0;
        const int64_t len = i1 - i < DROP_GROUP ? i1 - i : DROP_GROUP;
        if (len == DROP_GROUP) {
            for (int j = 0; j < DROP_GROUP; j++)
                mask[i + j] = m[j];
            if (x)
                for (int j = 0; j < DROP_GROUP; j++)
                    y[i + j] = x[i + j] * m[j];
        } else {
            for (int64_t j = 0; j < len; j++)
                mask[i + j] = m[j];
            if (x)
                for (int64_t j = 0; j < len; j++)
                    y[i + j] = x[i + j] * m[j];
        }
    }
}

/* dropout over n elements, threads over pieces of DROP_CHUNK (see dropout.c) */
#define DROPOUT_LOOP(n, seed, t, scale, x, mask, y)                                        \
    do {                                                                                   \
        const int64_t nblk_ = ((n) + DROP_CHUNK - 1) / DROP_CHUNK;                         \
        const uint32_t k0_ = (uint32_t)(seed), k1_ = (uint32_t)((seed) >> 32);             \
        const int nt_ = fnn_threads_for((n) * 32);                                         \
        _Pragma("omp parallel for num_threads(nt_) schedule(static) if (nt_ > 1)")         \
        for (int64_t b_ = 0; b_ < nblk_; b_++)                                             \
            drop_range(b_ * DROP_CHUNK,                                                    \
                       b_ * DROP_CHUNK + DROP_CHUNK < (n) ? b_ * DROP_CHUNK + DROP_CHUNK   \
                                                          : (n),                           \
                       k0_, k1_, t, scale, x, mask, y);                                    \
    } while (0)

#endif
