/* relu_avx2.c: epilogue.c's relu_mask (the from-scratch idiom `mask = x <= 0;
 * y = x.copy(); y[mask] = 0`) for double on AVX2 lanes, 16 elements a step in one pass:
 * the compares give all-ones lanes, y is x with them cleared (+0.0), and their sign bits
 * (movemask) are spread to the 16 mask bytes, 0 or 1. The portable loop compiles the
 * double mask to a scalar compare and byte store per element. Called by epilogue.c, block
 * by block, on AVX2 and AVX-512 CPUs (fnn_get_isa() >= 1). In-process, 1.73 M elements (bench_dlfs.py's first
 * Relu), medians of 60 calls interleaved (2026-12-02): 0.83x the portable loop's time on 2
 * threads, 0.82-0.88x on 1. Not used for float, whose portable loops vectorise: this one
 * took 0.94-1.07x their time. An AVX-512 version (k-mask compares, vpmovdb mask bytes) took
 * 0.94-0.95x for double (1.15-1.31x for float). Compiled with FNN_PREC=64 (the file is
 * empty for 32), -mavx2 -mfma. Reference: relu_mask's portable loop (FASTNN_ISA=generic):
 * the same bits (a select, no arithmetic). */
#include "fnn_real.h"

#if FNN_PREC == 64
#include "vec_avx2.h"

/* The 16 bits of b as 16 bytes, 0 or 1, bit i in byte i. */
static inline __m128i bits_to_bytes(int b)
{
    const __m128i spread = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m128i bit = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64,
                                      -128);
    const __m128i v = _mm_shuffle_epi8(_mm_set1_epi16((short)b), spread);
    return _mm_min_epu8(_mm_and_si128(v, bit), _mm_set1_epi8(1));
}

/* One block of relu_mask (epilogue.c's contract, which threads over the blocks): len
 * elements of y (which may be x) and mask (which overlaps neither) overwritten; the last
 * len % 16 done one by one, as the portable loop does them. x <= 0 is _CMP_LE_OQ (NaN
 * false). */
void VFN(relu_mask_block)(int64_t len, const real *x, real *y, uint8_t *restrict mask)
{
    /* The lines of the next block's y and mask, fetched while this one runs (a thread's
     * blocks are consecutive; past the end a prefetch is a harmless hint). y and mask are
     * written only, and their lines came from memory before each store: bench_dlfs.py's
     * first Relu (1.73 M doubles) in the training step, 600 steps alternating with and
     * without it in one process (Xeon, 2026-12-02): 0.81x the time, the step 0.975x; a
     * prefetchw did the same, non-temporal stores of y nothing. */
    for (int64_t q = 0; q < len; q += 64 / (int64_t)sizeof(real))
        _mm_prefetch((const char *)(y + len + q), _MM_HINT_T0);
    for (int64_t q = 0; q < len; q += 64)
        _mm_prefetch((const char *)(mask + len + q), _MM_HINT_T0);
    int64_t e = 0;
    for (; e + 16 <= len; e += 16) {
        int bits = 0;
        for (int j = 0; j < 16; j += VL) {
            const vec v = vload(x + e + j), c = _mm256_cmp_pd(v, vzero(), _CMP_LE_OQ);
            vstore(y + e + j, _mm256_andnot_pd(c, v));
            bits |= _mm256_movemask_pd(c) << j;
        }
        _mm_storeu_si128((__m128i *)(mask + e), bits_to_bytes(bits));
    }
    for (; e < len; e++) {
        const real v = x[e];
        mask[e] = v <= 0;
        y[e] = v <= 0 ? (real)0 : v;
    }
}
#endif
