/* dropout_avx2.c: the dropout kernel (dropout_body.h) for AVX2: the Philox4x32-10 rounds
 * of a group's eight blocks on AVX2 vectors (philox_group_avx2: each word of the counter
 * one vector of eight lanes), the loops of dropout_body.h compiled with -mavx2 around it.
 * Called by dropout.c only after fnn_get_isa() reported AVX2 or better. Compiled twice,
 * FNN_PREC=32/64. Reference: dropout_body.h's philox_group in dropout.c's portable build
 * (FASTNN_ISA=generic): integer arithmetic, so the same bits. */
#include <immintrin.h>

#include "fnn_real.h"

/* hi and lo (*lo) 32 bits of the eight 64-bit products a[l] * m, lane by lane: the even
 * lanes' from one _mm256_mul_epu32, the odd lanes' from another on a shifted down */
static inline __m256i mulhilo(__m256i a, __m256i m, __m256i *lo)
{
    const __m256i pe = _mm256_mul_epu32(a, m);
    const __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    return _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}

static inline void philox_group_avx2(uint64_t g, uint32_t k0, uint32_t k1, uint32_t out[32]);
#define PHILOX_GROUP philox_group_avx2
#include "../dropout_body.h"

/* dropout_body.h's philox_group on vectors: lane l is block 8 g + l (8 g's low word is a
 * multiple of 8: adding l never carries into the high word) */
static inline void philox_group_avx2(uint64_t g, uint32_t k0, uint32_t k1, uint32_t out[32])
{
    const uint64_t b0 = g * DROP_LANES;
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0), m1 = _mm256_set1_epi32((int)PHILOX_M1);
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)b0),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i c1 = _mm256_set1_epi32((int)(uint32_t)(b0 >> 32));
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    for (uint32_t r = 0; r < 10; r++) {
        const __m256i ka = _mm256_set1_epi32((int)(k0 + r * PHILOX_W0));
        const __m256i kb = _mm256_set1_epi32((int)(k1 + r * PHILOX_W1));
        __m256i lo0, lo1;
        const __m256i hi0 = mulhilo(c0, m0, &lo0), hi1 = mulhilo(c2, m1, &lo1);
        c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), ka);
        c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), kb);
        c1 = lo1;
        c3 = lo0;
    }
    _mm256_storeu_si256((__m256i *)out, c0);
    _mm256_storeu_si256((__m256i *)(out + 8), c1);
    _mm256_storeu_si256((__m256i *)(out + 16), c2);
    _mm256_storeu_si256((__m256i *)(out + 24), c3);
}

void FNN(dropout_avx2)(int64_t n, uint64_t seed, uint32_t t, real scale, const real *x,
                       real *mask, real *y)
{
    DROPOUT_LOOP(n, seed, t, scale, x, mask, y);
}
