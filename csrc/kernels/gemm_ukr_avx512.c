/* gemm_ukr_avx512.c: AVX-512F micro-kernels. This file alone is compiled with
 * -mavx512f -mfma -mprfchw; its functions are only called after fnn_cpu_max_isa() reported
 * AVX-512.
 * Contract: fnn_internal.h (full MR x NR tile, beta == 0 overwrites C without reading it).
 * Register tile: 12 rows x NV vectors (NV = 2: 24 accumulators, 2 B vectors, 1 broadcast
 * of A, 27 of the 32 zmm registers; NV = 1, one vector per row, for products with at most
 * 16 float or 8 double columns, where a 2-vector tile would compute twice the columns
 * there are). The packed, strided (transposed A in place), direct-A (row-major A in place),
 * direct-A packing what it reads, and row-edge variants, and (two vectors only) the
 * convolutions' gather and scatter kernels. Every variant sums each element's products in the order p = 0, 1, ..., k-1
 * with one FMA each, as the AVX2 and reference kernels do (the dot-product kernel of
 * products with few columns, gemm_dot_avx512.c, sums in an order of its own).
 * Reference: kernels/gemm_ukr_ref.c. */
#include <immintrin.h>

#include "fma_loop.h"
#include "fnn_internal.h"

#define MR 12

/* Start loading the C tile (MR rows of NV * 64 bytes, perhaps straddling one more line)
 * while the k loop runs, so the store at its end does not wait for memory (as in the AVX2
 * kernels). */
FNN_ALWAYS_INLINE void prefetch_tile(int NV, const char *c, int64_t ld_bytes)
{
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        for (int v = 0; v < NV; v++)
            _mm_prefetch(c + i * ld_bytes + 64 * v, _MM_HINT_T0);
        _mm_prefetch(c + i * ld_bytes + 64 * NV - 1, _MM_HINT_T0);
    }
}

/* The in-place kernel's look-ahead on C: ask for ownership (prefetchw: every AVX-512 CPU
 * has it) of the lines of the tile PF_TILES tiles further down (rows MR*PF_TILES ..
 * MR*PF_TILES + MR - 1 below c, NV * 64 bytes each, perhaps straddling one more line),
 * where gemm.c's in-place driver goes next. A product with a short K writes C at memory
 * speed, and without it each tile's stores waited for their lines: 86528 x 9 x 32 float,
 * in-process A/B (Xeon, 2026-12-02, memory under load: a 11 MB fill ran at 3 GB/s),
 * 0.79-0.82x the time on 1 thread, 0.75x on 2; products whose C stays in cache unchanged
 * (0.99-1.02x). The same look-ahead in the packed tile below (K < 64) was 1.04-1.09x
 * slower; a T0 prefetch instead of prefetchw did nothing for the AVX2 kernel. Past the
 * end of C (or of a thread's rows) the prefetch is a hint that cannot fault. */
#define PF_TILES 4
FNN_ALWAYS_INLINE void prefetchw_ahead(int NV, const char *c, int64_t ld_bytes)
{
    const char *r = c + (int64_t)MR * PF_TILES * ld_bytes;
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++)
        fnn_prefetch_write(1, r + i * ld_bytes, 64 * NV);
}

/* Loads and stores of C or B: whole vectors, or (mk, a compile-time NULL or not) only the
 * lanes of mask mk[v] for vector v, the other lanes neither read (they load as zero) nor
 * written. */
FNN_ALWAYS_INLINE __m512 load_ps(const float *p, const __mmask16 *mk, int v)
{
    return mk ? _mm512_maskz_loadu_ps(mk[v], p) : _mm512_loadu_ps(p);
}

FNN_ALWAYS_INLINE void save_ps(float *p, const __mmask16 *mk, int v, __m512 x)
{
    if (mk)
        _mm512_mask_storeu_ps(p, mk[v], x);
    else
        _mm512_storeu_ps(p, x);
}

FNN_ALWAYS_INLINE __m512d load_pd(const double *p, const __mmask8 *mk, int v)
{
    return mk ? _mm512_maskz_loadu_pd(mk[v], p) : _mm512_loadu_pd(p);
}

FNN_ALWAYS_INLINE void save_pd(double *p, const __mmask8 *mk, int v, __m512d x)
{
    if (mk)
        _mm512_mask_storeu_pd(p, mk[v], x);
    else
        _mm512_storeu_pd(p, x);
}

/* C tile = alpha * acc + beta * C for the first R rows of NV vectors each (beta == 0: C
 * is not read), all lanes or those of mk (see load_ps). */
FNN_ALWAYS_INLINE void store_f32(int R, int NV, __m512 acc[MR][2], float *c, int64_t ldc,
                                 float alpha, float beta, const __mmask16 *mk)
{
    const __m512 va = _mm512_set1_ps(alpha);
    if (beta == 0) {
#pragma GCC unroll 12
        for (int i = 0; i < R; i++)
            for (int v = 0; v < NV; v++)
                save_ps(c + i * ldc + 16 * v, mk, v, _mm512_mul_ps(va, acc[i][v]));
    } else {
        const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++)
            for (int v = 0; v < NV; v++) {
                float *ci = c + i * ldc + 16 * v;
                save_ps(ci, mk, v,
                        _mm512_fmadd_ps(vb, load_ps(ci, mk, v), _mm512_mul_ps(va, acc[i][v])));
            }
    }
}

FNN_ALWAYS_INLINE void store_f64(int R, int NV, __m512d acc[MR][2], double *c, int64_t ldc,
                                 double alpha, double beta, const __mmask8 *mk)
{
    const __m512d va = _mm512_set1_pd(alpha);
    if (beta == 0) {
#pragma GCC unroll 12
        for (int i = 0; i < R; i++)
            for (int v = 0; v < NV; v++)
                save_pd(c + i * ldc + 8 * v, mk, v, _mm512_mul_pd(va, acc[i][v]));
    } else {
        const __m512d vb = _mm512_set1_pd(beta);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++)
            for (int v = 0; v < NV; v++) {
                double *ci = c + i * ldc + 8 * v;
                save_pd(ci, mk, v,
                        _mm512_fmadd_pd(vb, load_pd(ci, mk, v), _mm512_mul_pd(va, acc[i][v])));
            }
    }
}

/* The accumulation of R rows x NV vectors with A(i, p) at a[p*as + i] (as = MR: a packed
 * panel; as = lda: a transposed A read in place), or, with `rows`, at a[i*as + p] (a
 * row-major A read in place, as four groups of three sequential streams: each row a base
 * pointer plus 0, 1 or 2 times lda, which x86 addressing reaches from one index register
 * each. Two groups of six needed eleven row offsets in registers, and GCC moved some of
 * them through the stack and a vector register at every step: 15488 x 288 x 64 float,
 * one core, a C harness, 201 -> 209 GFLOPS). Row p of B at
 * bp + p*ldb: a packed micro-panel (ldb = NV vectors, mk NULL), prefetched 2 KB ahead, each
 * of the row's NV lines (the first tile of each micro-panel reads it from L2 or L3; one
 * prefetch per row, every other line of a 2-vector panel, was 2-4% slower on one thread:
 * 2048^3 float 156-159 vs 160-170 GFLOPS, 1024^3 double 74-75 vs 75-80, alternating
 * processes on the Xeon); or B read in place (mk: the lanes of its columns, see load_ps),
 * prefetched 8 rows ahead. A packed A is prefetched 16 steps ahead. With pk (direct-A
 * only; NULL: none) each A value is also stored at pk[p*MR + i], the packed panel. */
FNN_ALWAYS_INLINE void acc_f32(int R, int NV, int rows, __m512 acc[MR][2], int64_t k,
                               const float *a, int64_t as, const float *bp, int64_t ldb,
                               const __mmask16 *mk, float *pk)
{
#pragma GCC unroll 12
    for (int i = 0; i < R; i++)
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm512_setzero_ps();
    /* direct-A: row i at q[i / 3] + (i % 3) * as, four bases and two multiples of the
     * stride (x86 addressing: base + index * 1 or 2) */
    const float *q[4];
    for (int g = 0; g < 4; g++)
        q[g] = rows && R > 3 * g ? a + 3 * g * as : a;
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        if (mk)
            for (int v = 0; v < NV; v++)
                _mm_prefetch((const char *)(bp + 8 * ldb + 16 * v), _MM_HINT_T0);
        else
            for (int v = 0; v < NV; v++)
                _mm_prefetch((const char *)(bp + 512 + 16 * v), _MM_HINT_T0);
        if (!rows)
            _mm_prefetch((const char *)(a + 16 * as), _MM_HINT_T0);
        __m512 b[2];
        for (int v = 0; v < NV; v++)
            b[v] = load_ps(bp + 16 * v, mk, v);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            const float *ai = rows ? q[i / 3] + (i % 3) * as + p : a + i;
            const __m512 av = _mm512_set1_ps(*ai);
            if (pk) /* the broadcast's low lane: a store, no shuffle */
                _mm_store_ss(pk + p * MR + i, _mm512_castps512_ps128(av));
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm512_fmadd_ps(av, b[v], acc[i][v]);
        }
        if (!rows)
            a += as;
        bp += ldb;
    }
}

FNN_ALWAYS_INLINE void acc_f64(int R, int NV, int rows, __m512d acc[MR][2], int64_t k,
                               const double *a, int64_t as, const double *bp, int64_t ldb,
                               const __mmask8 *mk, double *pk)
{
#pragma GCC unroll 12
    for (int i = 0; i < R; i++)
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm512_setzero_pd();
    /* direct-A: row i at q[i / 3] + (i % 3) * as, four bases and two multiples of the
     * stride (x86 addressing: base + index * 1 or 2) */
    const double *q[4];
    for (int g = 0; g < 4; g++)
        q[g] = rows && R > 3 * g ? a + 3 * g * as : a;
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        if (mk)
            for (int v = 0; v < NV; v++)
                _mm_prefetch((const char *)(bp + 8 * ldb + 8 * v), _MM_HINT_T0);
        else
            for (int v = 0; v < NV; v++)
                _mm_prefetch((const char *)(bp + 256 + 8 * v), _MM_HINT_T0);
        if (!rows)
            _mm_prefetch((const char *)(a + 8 * as), _MM_HINT_T0);
        __m512d b[2];
        for (int v = 0; v < NV; v++)
            b[v] = load_pd(bp + 8 * v, mk, v);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            const double *ai = rows ? q[i / 3] + (i % 3) * as + p : a + i;
            const __m512d av = _mm512_set1_pd(*ai);
            if (pk) /* the broadcast's low lane: a store, no shuffle */
                _mm_store_sd(pk + p * MR + i, _mm512_castpd512_pd128(av));
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm512_fmadd_pd(av, b[v], acc[i][v]);
        }
        if (!rows)
            a += as;
        bp += ldb;
    }
}

/* Full tiles (contract: fnn_internal.h): packed (as = MR) and strided (a transposed A in
 * place) through `as`, direct-A (a row-major A in place) with `rows`. */
FNN_ALWAYS_INLINE void tile_f32(int NV, int rows, int64_t k, const float *a, int64_t as,
                                const float *bp, float *c, int64_t ldc, float alpha,
                                float beta, float *pk)
{
    __m512 acc[MR][2];
    prefetch_tile(NV, (const char *)c, ldc * (int64_t)sizeof(float));
    acc_f32(MR, NV, rows, acc, k, a, as, bp, 16 * NV, NULL, pk);
    store_f32(MR, NV, acc, c, ldc, alpha, beta, NULL);
}

FNN_ALWAYS_INLINE void tile_f64(int NV, int rows, int64_t k, const double *a, int64_t as,
                                const double *bp, double *c, int64_t ldc, double alpha,
                                double beta, double *pk)
{
    __m512d acc[MR][2];
    prefetch_tile(NV, (const char *)c, ldc * (int64_t)sizeof(double));
    acc_f64(MR, NV, rows, acc, k, a, as, bp, 8 * NV, NULL, pk);
    store_f64(MR, NV, acc, c, ldc, alpha, beta, NULL);
}

/* The row-edge variants (contract: fnn_internal.h): the first 1 .. 11 rows of a packed
 * tile, a constant row count per case so the accumulators stay in registers (EDGE_CASES
 * takes 1 .. MR: the in-place kernels below use the full count too). */
#define EDGE_CASES(ACC, STORE)                                                              \
    switch (rows) {                                                                         \
    case 1: ACC(1); STORE(1); break;                                                        \
    case 2: ACC(2); STORE(2); break;                                                        \
    case 3: ACC(3); STORE(3); break;                                                        \
    case 4: ACC(4); STORE(4); break;                                                        \
    case 5: ACC(5); STORE(5); break;                                                        \
    case 6: ACC(6); STORE(6); break;                                                        \
    case 7: ACC(7); STORE(7); break;                                                        \
    case 8: ACC(8); STORE(8); break;                                                        \
    case 9: ACC(9); STORE(9); break;                                                        \
    case 10: ACC(10); STORE(10); break;                                                     \
    case 11: ACC(11); STORE(11); break;                                                     \
    default: ACC(12); STORE(12); break;                                                     \
    }

FNN_ALWAYS_INLINE void edge_f32(int NV, int rows, int64_t k, const float *ap, const float *bp,
                                float *c, int64_t ldc)
{
    __m512 acc[MR][2];
#define E_ACC(R) acc_f32(R, NV, 0, acc, k, ap, MR, bp, 16 * NV, NULL, NULL)
#define E_STORE(R) store_f32(R, NV, acc, c, ldc, 1, 0, NULL)
    EDGE_CASES(E_ACC, E_STORE)
#undef E_ACC
#undef E_STORE
}

FNN_ALWAYS_INLINE void edge_f64(int NV, int rows, int64_t k, const double *ap,
                                const double *bp, double *c, int64_t ldc)
{
    __m512d acc[MR][2];
#define E_ACC(R) acc_f64(R, NV, 0, acc, k, ap, MR, bp, 8 * NV, NULL, NULL)
#define E_STORE(R) store_f64(R, NV, acc, c, ldc, 1, 0, NULL)
    EDGE_CASES(E_ACC, E_STORE)
#undef E_ACC
#undef E_STORE
}

/* The in-place variants (contract: fnn_internal.h): A and B both read in place, row-major,
 * the first `rows` rows and `cols` columns of the tile (B's and C's columns past cols
 * masked off), so a small product needs no packing and no scratch tile. The same
 * accumulation as the direct-A kernel. */
FNN_ALWAYS_INLINE void inplace_f32(int NV, int rows, int cols, int64_t k, const float *a,
                                   int64_t lda, const float *b, int64_t ldb, float *c,
                                   int64_t ldc, float alpha, float beta)
{
    __m512 acc[MR][2];
    __mmask16 mk[2];
    for (int v = 0; v < NV; v++) {
        const int n = cols - 16 * v;
        mk[v] = n >= 16 ? (__mmask16)0xFFFF : n > 0 ? (__mmask16)((1u << n) - 1) : 0;
    }
    prefetchw_ahead(NV, (const char *)c, ldc * (int64_t)sizeof(float));
#define E_ACC(R) acc_f32(R, NV, 1, acc, k, a, lda, b, ldb, mk, NULL)
#define E_STORE(R) store_f32(R, NV, acc, c, ldc, alpha, beta, mk)
    EDGE_CASES(E_ACC, E_STORE)
#undef E_ACC
#undef E_STORE
}

FNN_ALWAYS_INLINE void inplace_f64(int NV, int rows, int cols, int64_t k, const double *a,
                                   int64_t lda, const double *b, int64_t ldb, double *c,
                                   int64_t ldc, double alpha, double beta)
{
    __m512d acc[MR][2];
    __mmask8 mk[2];
    for (int v = 0; v < NV; v++) {
        const int n = cols - 8 * v;
        mk[v] = n >= 8 ? (__mmask8)0xFF : n > 0 ? (__mmask8)((1u << n) - 1) : 0;
    }
    prefetchw_ahead(NV, (const char *)c, ldc * (int64_t)sizeof(double));
#define E_ACC(R) acc_f64(R, NV, 1, acc, k, a, lda, b, ldb, mk, NULL)
#define E_STORE(R) store_f64(R, NV, acc, c, ldc, alpha, beta, mk)
    EDGE_CASES(E_ACC, E_STORE)
#undef E_ACC
#undef E_STORE
}

/* The gather variants (contract: fnn_internal.h): A(i, p) = rows[i][off[p]], an implicit
 * im2col, B row p at bp + p*ldb; then the epilogue on the registers, the operations of
 * fnn_bias_act_block (v + b, then v < 0 ? +0.0 : v by a compare mask, which keeps NaN and
 * -0.0), and the store. The same accumulation order as the packed kernel. */
FNN_ALWAYS_INLINE void gather_f32(int NV, int64_t k, const float *const *rows,
                                  const int64_t *off, const float *bp, int64_t ldb,
                                  const float *bias, int relu, float beta, float *c,
                                  int64_t ldc)
{
    __m512 acc[MR][2];
    const float *r[MR];
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        r[i] = rows[i];
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm512_setzero_ps();
    }
    prefetch_tile(NV, (const char *)c, ldc * (int64_t)sizeof(float));
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        const int64_t o = off[p];
        __m512 b[2];
        for (int v = 0; v < NV; v++)
            b[v] = _mm512_loadu_ps(bp + 16 * v);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const __m512 av = _mm512_set1_ps(r[i][o]);
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm512_fmadd_ps(av, b[v], acc[i][v]);
        }
        bp += ldb;
    }
    const __m512 z = _mm512_setzero_ps();
    for (int v = 0; v < NV; v++) {
        const __m512 bv = bias ? _mm512_loadu_ps(bias + 16 * v) : z;
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            if (bias)
                acc[i][v] = _mm512_add_ps(acc[i][v], bv);
            if (relu)
                acc[i][v] = _mm512_mask_mov_ps(
                    acc[i][v], _mm512_cmp_ps_mask(acc[i][v], z, _CMP_LT_OQ), z);
        }
    }
    store_f32(MR, NV, acc, c, ldc, 1, beta, NULL);
}

FNN_ALWAYS_INLINE void gather_f64(int NV, int64_t k, const double *const *rows,
                                  const int64_t *off, const double *bp, int64_t ldb,
                                  const double *bias, int relu, double beta, double *c,
                                  int64_t ldc)
{
    __m512d acc[MR][2];
    const double *r[MR];
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        r[i] = rows[i];
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm512_setzero_pd();
    }
    prefetch_tile(NV, (const char *)c, ldc * (int64_t)sizeof(double));
#pragma GCC unroll 4
    for (int64_t p = 0; p < k; p++) {
        const int64_t o = off[p];
        __m512d b[2];
        for (int v = 0; v < NV; v++)
            b[v] = _mm512_loadu_pd(bp + 8 * v);
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const __m512d av = _mm512_set1_pd(r[i][o]);
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm512_fmadd_pd(av, b[v], acc[i][v]);
        }
        bp += ldb;
    }
    const __m512d z = _mm512_setzero_pd();
    for (int v = 0; v < NV; v++) {
        const __m512d bv = bias ? _mm512_loadu_pd(bias + 8 * v) : z;
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            if (bias)
                acc[i][v] = _mm512_add_pd(acc[i][v], bv);
            if (relu)
                acc[i][v] = _mm512_mask_mov_pd(
                    acc[i][v], _mm512_cmp_pd_mask(acc[i][v], z, _CMP_LT_OQ), z);
        }
    }
    store_f64(MR, NV, acc, c, ldc, 1, beta, NULL);
}

/* The scatter variants (contract: fnn_internal.h): the direct-A product added into rows
 * of C anywhere (a convolution's dx without its column matrix). */
FNN_ALWAYS_INLINE void scatter_f32(int NV, int64_t k, const float *a, int64_t lda,
                                   const float *bp, float *const *crow)
{
    __m512 acc[MR][2];
    acc_f32(MR, NV, 1, acc, k, a, lda, bp, 16 * NV, NULL, NULL);
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) {
            float *ci = crow[i] + 16 * v;
            _mm512_storeu_ps(ci, _mm512_add_ps(_mm512_loadu_ps(ci), acc[i][v]));
        }
}

FNN_ALWAYS_INLINE void scatter_f64(int NV, int64_t k, const double *a, int64_t lda,
                                   const double *bp, double *const *crow)
{
    __m512d acc[MR][2];
    acc_f64(MR, NV, 1, acc, k, a, lda, bp, 8 * NV, NULL, NULL);
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) {
            double *ci = crow[i] + 8 * v;
            _mm512_storeu_pd(ci, _mm512_add_pd(_mm512_loadu_pd(ci), acc[i][v]));
        }
}

/* The entry points: 12 x 32 and 12 x 16 float, 12 x 16 and 12 x 8 double; in the
 * two-vector shapes only, the direct-A packing kernel (gemm.c's A-outer order needs at
 * least four micro-panels, more columns than a one-vector row serves) and the
 * convolutions' gather and scatter kernels. */
#define FNN_AVX512_KERNELS(T, SHAPE, NV)                                                      \
    void fnn_ukr_avx512_##SHAPE(int64_t k, const T *ap, const T *bp, T *c, int64_t ldc,      \
                                T alpha, T beta)                                            \
    {                                                                                         \
        TILE(NV, 0, k, ap, MR, bp, c, ldc, alpha, beta, NULL);                                \
    }                                                                                         \
    void fnn_ukr_avx512_strided_##SHAPE(int64_t k, const T *a, int64_t as, const T *bp,      \
                                        T *c, int64_t ldc, T alpha, T beta)                 \
    {                                                                                         \
        TILE(NV, 0, k, a, as, bp, c, ldc, alpha, beta, NULL);                                 \
    }                                                                                         \
    void fnn_ukr_avx512_direct_##SHAPE(int64_t k, const T *a, int64_t lda, const T *bp,      \
                                       T *c, int64_t ldc, T alpha, T beta)                  \
    {                                                                                         \
        TILE(NV, 1, k, a, lda, bp, c, ldc, alpha, beta, NULL);                                \
    }                                                                                         \
    void fnn_ukr_avx512_rows_##SHAPE(int rows, int64_t k, const T *ap, const T *bp, T *c,    \
                                     int64_t ldc)                                           \
    {                                                                                         \
        EDGE(NV, rows, k, ap, bp, c, ldc);                                                    \
    }                                                                                         \
    void fnn_ukr_avx512_inplace_##SHAPE(int rows, int cols, int64_t k, const T *a,           \
                                        int64_t lda, const T *b, int64_t ldb, T *c,          \
                                        int64_t ldc, T alpha, T beta)                        \
    {                                                                                         \
        INPLACE(NV, rows, cols, k, a, lda, b, ldb, c, ldc, alpha, beta);                      \
    }

#define FNN_AVX512_WIDE_KERNELS(T, SHAPE, NV)                                                 \
    void fnn_ukr_avx512_direct_pack_##SHAPE(int64_t k, const T *a, int64_t lda, const T *bp, \
                                            T *c, int64_t ldc, T alpha, T beta, T *ap)      \
    {                                                                                         \
        TILE(NV, 1, k, a, lda, bp, c, ldc, alpha, beta, ap);                                  \
    }                                                                                         \
    void fnn_ukr_avx512_gather_##SHAPE(int64_t k, const T *const *rows, const int64_t *off,  \
                                       const T *bp, int64_t ldb, const T *bias, int relu,    \
                                       T beta, T *c, int64_t ldc)                            \
    {                                                                                         \
        GATHER(NV, k, rows, off, bp, ldb, bias, relu, beta, c, ldc);                          \
    }                                                                                         \
    void fnn_ukr_avx512_scatter_##SHAPE(int64_t k, const T *a, int64_t lda, const T *bp,     \
                                        T *const *crow)                                      \
    {                                                                                         \
        SCATTER(NV, k, a, lda, bp, crow);                                                     \
    }

#define TILE tile_f32
#define EDGE edge_f32
#define INPLACE inplace_f32
#define GATHER gather_f32
#define SCATTER scatter_f32
FNN_AVX512_KERNELS(float, 12x32_f32, 2)
FNN_AVX512_KERNELS(float, 12x16_f32, 1)
FNN_AVX512_WIDE_KERNELS(float, 12x32_f32, 2)
#undef TILE
#undef EDGE
#undef INPLACE
#undef GATHER
#undef SCATTER
#define TILE tile_f64
#define EDGE edge_f64
#define INPLACE inplace_f64
#define GATHER gather_f64
#define SCATTER scatter_f64
FNN_AVX512_KERNELS(double, 12x16_f64, 2)
FNN_AVX512_KERNELS(double, 12x8_f64, 1)
FNN_AVX512_WIDE_KERNELS(double, 12x16_f64, 2)

/* The micro-kernel's arithmetic ceiling: its 24 accumulators (12 rows x 2 vectors), FMA
 * alone (fma_loop.h). Benchmark probe (fnn_fma_peak, gemm_kernels.c), not a kernel. */
FNN_FMA_LOOP(fnn_fma_loop_avx512_f32, float, __m512, _mm512_set1_ps, _mm512_fmadd_ps,
             _mm512_cvtss_f32, MR)
FNN_FMA_LOOP(fnn_fma_loop_avx512_f64, double, __m512d, _mm512_set1_pd, _mm512_fmadd_pd,
             _mm512_cvtsd_f64, MR)
