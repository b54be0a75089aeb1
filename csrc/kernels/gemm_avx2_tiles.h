/* gemm_avx2_tiles.h: the float direct-A tile of the AVX2-width micro-kernels (6 rows of
 * 8-float vectors over np = 1 or 2 micro-panels of 16 columns side by side) and what it
 * shares with the other AVX2 kernels, included by kernels/gemm_ukr_avx2.c (np = 1: 12
 * accumulators, AVX2's 16 registers) and kernels/gemm_ukr256_avx512.c (np = 2: 24
 * accumulators, AVX-512VL's 32 ymm registers). np is a constant in every caller, so each
 * loop compiles to one tile (the AVX2 kernels' code and speed unchanged: in-process A/B
 * against the file before, 15488 x 288 x 64, 10000 x 784 x 64, 128 x 1600 x 64, 86528 x 9
 * x 32, 1024^3, 0.994-1.003x the time). The includer provides <immintrin.h> and
 * fnn_internal.h. */
#ifndef FNN_GEMM_AVX2_TILES_H
#define FNN_GEMM_AVX2_TILES_H

#define MR 6

/* Start loading the C tile (MR rows of 64 bytes, perhaps straddling two lines) while the
 * k loop runs, so the store at its end does not wait for memory. Every kernel below does
 * this and unrolls its k loop 4 times; in-process A/B, 1 thread, 1024^3: float 0.77x the
 * time, double 0.83x (the prefetch alone: 0.85x, 0.88x). */
static inline void prefetch_tile(const char *c, int64_t ld_bytes)
{
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        _mm_prefetch(c + i * ld_bytes, _MM_HINT_T0);
        _mm_prefetch(c + i * ld_bytes + 63, _MM_HINT_T0);
    }
}

/* C tile = alpha * acc + beta * C (beta == 0: C is not read), shared by the packed and
 * direct-A kernels below. */
static inline void store_6x16_f32(__m256 acc[MR][2], float *c, int64_t ldc, float alpha,
                                  float beta)
{
    const __m256 va = _mm256_set1_ps(alpha);
    if (beta == 0) {
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            _mm256_storeu_ps(c + i * ldc, _mm256_mul_ps(va, acc[i][0]));
            _mm256_storeu_ps(c + i * ldc + 8, _mm256_mul_ps(va, acc[i][1]));
        }
    } else {
        const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            float *ci = c + i * ldc;
            _mm256_storeu_ps(ci, _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci),
                                                 _mm256_mul_ps(va, acc[i][0])));
            _mm256_storeu_ps(ci + 8, _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8),
                                                     _mm256_mul_ps(va, acc[i][1])));
        }
    }
}

/* The direct-A variants (contract: fnn_internal.h): the same tiles, A's six rows read in
 * place (six sequential streams) instead of from a packed panel; the product into the
 * accumulators, then stored into a tile (direct) or added into rows anywhere (scatter).
 * The direct kernels prefetch the next strip (the six rows after these) into L1, where K
 * >= NEXT_MIN_K: `next` 1, a K block that is (about) A's whole rows: the next 6 * lda
 * values, contiguous, a prefetch every step (next_stride); `next` 2 (float, A's rows under
 * SEG_MAX_ROW_BYTES): row by row, this block's k values of each, two lines every four
 * steps. Measured on
 * Zen 2 (AMD EPYC, 2026-12-04, in-process A/B, 2 threads, medians of 30-60): 15488 x 288
 * x 64 float 0.77-0.80x the time with `next` 1 (86528 x 9 x 32 the same: hence no prefetch
 * below NEXT_MIN_K), double 0.926-0.936x; K blocks with `next` 2, float: 10000 x 784 x 64
 * 0.85-0.89x, 20000 x 512 x 48 0.90x, against no prefetch (or, as until 2026-12-04 23:4x,
 * 6 * lda contiguous values: whole rows, mostly other blocks' values), but with rows of 4
 * KB or more 1.02-1.08x (4096 x 1024 x 64, 2000 x 2048 x 64, 1000 x 1000 x 60), and double
 * 1.04-1.10x there (no double row under 4 KB was measured): those get none. The scatter
 * kernel (conv backward 32 -> 64) gained nothing measurable, so it has none. */
#define NEXT_MIN_K 64
#define SEG_MAX_ROW_BYTES 4096

/* `next` 1's prefetch: one every step, this many bytes apart, so the next strip's MR rows
 * (ld_bytes apart) are covered in the k steps; 0 below NEXT_MIN_K (none). Against two
 * every four steps behind a test (its branches were a fifth of the loop's instructions):
 * 15488 x 288 x 64 float 0.967-0.969x the time, 4096 x 256 x 64 0.970-0.976x, 20000 x 100
 * x 64 0.936-0.947x, double 15488 x 288 x 64 0.989x, 4096 x 256 x 64 0.983x (Zen 2,
 * 2026-12-05, in-process A/B, 2 threads, medians of 100; 1 thread 0.97x). */
static inline int64_t next_stride(int64_t k, int64_t ld_bytes)
{
    return k >= NEXT_MIN_K ? (MR * ld_bytes + k - 1) / k : 0;
}

/* The product of MR rows of A read in place (a, row stride lda) and np packed micro-panels
 * (bp; the second at bp + 16 * k) into acc (and acc2, np == 2), with the next strip's
 * prefetch `next` (above). Overwrites the accumulators. */
FNN_ALWAYS_INLINE void direct_acc_f32(int np, __m256 acc[MR][2], __m256 acc2[MR][2],
                                      int64_t k, const float *a, int64_t lda,
                                      const float *bp, int next)
{
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        if (np == 2)
            acc2[i][0] = acc2[i][1] = _mm256_setzero_ps();
    }
    const float *a0 = a, *a1 = a + lda, *a2 = a1 + lda, *a3 = a2 + lda, *a4 = a3 + lda,
                *a5 = a4 + lda;
    const float *bq = np == 2 ? bp + 16 * k : bp; /* the second panel (np == 2 only) */
    /* next == 1: the six rows' 6 * lda values from a + 6 * lda (the rows are this K
     * block); next == 2: row by row, this K block's k values of each, from
     * a + (MR + r) * lda (off bytes in, up to a line past the segment's end) */
    const int64_t ld_bytes = lda * (int64_t)sizeof(float), seg = k * (int64_t)sizeof(float);
    const char *pf = (const char *)(a + MR * lda);
    const int64_t stride = next == 1 ? next_stride(k, ld_bytes) : 0;
    if (next == 1 && !stride)
        pf = (const char *)bp; /* in L1 already: a prefetch that does nothing */
    int r = next == 2 && k >= NEXT_MIN_K ? 0 : MR;
    int64_t off = 0;
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        if (next == 1) {
            _mm_prefetch(pf, _MM_HINT_T0);
            pf += stride;
        }
        if (next == 2 && (p & 3) == 0 && r < MR) {
            _mm_prefetch(pf + off, _MM_HINT_T0);
            _mm_prefetch(pf + off + 64, _MM_HINT_T0);
            off += 128;
            if (off >= seg + 63) {
                off = 0;
                pf += ld_bytes;
                r++;
            }
        }
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
        const __m256 b2 = np == 2 ? _mm256_loadu_ps(bq) : b0;
        const __m256 b3 = np == 2 ? _mm256_loadu_ps(bq + 8) : b1;
        const float *rows[MR] = {a0 + p, a1 + p, a2 + p, a3 + p, a4 + p, a5 + p};
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const __m256 av = _mm256_broadcast_ss(rows[i]);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
            if (np == 2) {
                acc2[i][0] = _mm256_fmadd_ps(av, b2, acc2[i][0]);
                acc2[i][1] = _mm256_fmadd_ps(av, b3, acc2[i][1]);
            }
        }
        bp += 16;
        if (np == 2)
            bq += 16;
    }
}

FNN_ALWAYS_INLINE void direct_acc_6x16_f32(__m256 acc[MR][2], int64_t k, const float *a,
                                           int64_t lda, const float *bp, int next)
{
    direct_acc_f32(1, acc, acc, k, a, lda, bp, next);
}

/* The direct-A tile (fnn_internal.h's ukr_direct contract) over np micro-panels: C's MR x
 * 16 * np tile = alpha * A's rows times the panels + beta * C, with the prefetch `next`. */
FNN_ALWAYS_INLINE void direct_tile_f32(int np, int next, int64_t k, const float *a,
                                       int64_t lda, const float *bp, float *c, int64_t ldc,
                                       float alpha, float beta)
{
    __m256 acc[MR][2], acc2[MR][2];
    prefetch_tile((const char *)c, ldc * (int64_t)sizeof(float));
    if (np == 2)
        prefetch_tile((const char *)(c + 16), ldc * (int64_t)sizeof(float));
    direct_acc_f32(np, acc, acc2, k, a, lda, bp, next);
    store_6x16_f32(acc, c, ldc, alpha, beta);
    if (np == 2)
        store_6x16_f32(acc2, c + 16, ldc, alpha, beta);
}

/* The direct-A kernel `name` (ukr_direct, fnn_internal.h) over np panels: a K block that is
 * (about) A's whole rows prefetches the next strip (`next` 1); a shorter one goes to
 * name##_blocked, a function of its own so the common case's code stays as it was (inlined
 * in one function, the two loops ran 15488 x 288 x 64 1.5-2% slower), which prefetches
 * the next rows' segments (`next` 2) where A's rows are under SEG_MAX_ROW_BYTES. */
#define FNN_DIRECT_KERNEL_F32(name, np)                                                     \
    FNN_NOINLINE void name##_blocked(int64_t k, const float *a, int64_t lda,                \
                                     const float *bp, float *c, int64_t ldc, float alpha,   \
                                     float beta)                                           \
    {                                                                                       \
        if (lda * (int64_t)sizeof(float) < SEG_MAX_ROW_BYTES)                               \
            direct_tile_f32(np, 2, k, a, lda, bp, c, ldc, alpha, beta);                     \
        else                                                                                \
            direct_tile_f32(np, 0, k, a, lda, bp, c, ldc, alpha, beta);                     \
    }                                                                                       \
    void name(int64_t k, const float *a, int64_t lda, const float *bp, float *c,            \
              int64_t ldc, float alpha, float beta)                                         \
    {                                                                                       \
        if (k + 16 < lda) {                                                                 \
            name##_blocked(k, a, lda, bp, c, ldc, alpha, beta);                             \
            return;                                                                         \
        }                                                                                   \
        direct_tile_f32(np, 1, k, a, lda, bp, c, ldc, alpha, beta);                         \
    }

#endif
