/* gemm.c: C = alpha * op(A) * op(B) + beta * C, row-major, for float and double.
 *
 * Compiled twice (FNN_PREC=32/64). The algorithm is the GotoBLAS/BLIS one:
 *   for jc over N in steps of NC:            B panel KC x NC packed once, shared (L3)
 *     for pc over K in steps of KC:
 *       pack B[pc:pc+KC, jc:jc+NC]            (threads split the NR-wide micro-panels)
 *       for each tile (ic block of MC rows) x (group of NR micro-panels), in parallel:
 *         pack A[ic:ic+MC, pc:pc+KC]          (into this thread's slice of the workspace)
 *         for jr in the group, for ir in MC:  micro-kernel on an MR x NR tile of C
 * Threads split independent output tiles only, so results do not depend on the thread
 * count. Products with a small output and a long K (the dW = cols^T * dY of a convolution:
 * 9 x 32 x 86528) have too few tiles to share; they take the K-split path instead: K is cut
 * into pieces (ksplit_len: a partition that depends on the shape only), threads
 * compute the pieces serially into partial products, and the partials are summed in a
 * fixed order, so results still do not depend on the thread count. A K of at most
 * FNN_BREG_MAX_K with A row-major (an im2col matrix of a 3x3 single-channel convolution:
 * 86528 x 9 x 32) goes, where the ISA has it, to a kernel that keeps B in registers and
 * streams A's rows past it (gemm_breg), the same sums.
 * The micro-kernel and blocking come from the ISA registry (gemm_kernels.c); fnn_gemm_ref
 * is the plain reference it is tested against.
 */
#include <string.h>

#include "fnn_real.h"

#if FNN_X86_KERNELS
#include <emmintrin.h> /* SSE2: every x86-64 CPU, no run-time dispatch */
#endif

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* FNN_PAR_MIN_MACS: fewer multiply-adds than this (about 25 us of one core's work) run on
 * one thread, on every path (and in the convolutions' own kernels). Two threads pay on an
 * idle machine well below it (in-place products, 128 x 128 x 10 float 4.6 -> 3.7 us, 32 x 784 x 128 42.6 -> 24.6, 128 x 1600 x 64 169 ->
 * 98), but with one other busy process on the two cores the second thread waits for its
 * core: 4.4 -> 22.5 us, 41 -> 74, 161 -> 190 (the Xeon, 2026-12-02). So, as with
 * FNN_PAR_MIN, small products stay on one thread; from about 4M multiply-adds the idle
 * gain outweighs the loaded loss. The packed path had FNN_PAR_MIN's 16M (m * n * k / 64
 * elements), which kept a CNN's dense backward on one core: 1600 x 128 x 64 with A
 * transposed (dW) took 332 us and 128 x 64 x 1600 with B transposed (dx) 357, on two
 * threads 182 and 184 (Zen 2, 2026-12-04). The convolutions' direct and implicit kernels
 * had it too until 2026-12-06, which kept LeNet-5's first layer (128 x 28 x 28 x 1 -> 6,
 * 5 x 5 "same": 15M multiply-adds) on one thread. */

/* Threads for an m x n x k product */
static int gemm_threads(int64_t m, int64_t n, int64_t k)
{
    return fnn_threads_for_macs(m * n * k);
}

/* The K block: the kernel's KC, but a K up to 5/4 KC stays one block, and a longer K is
 * cut into equal blocks (K = 288 with KC = 256 would otherwise leave a 32-deep block that
 * costs a whole extra read-modify-write pass over C). Depends on the shape only. */
static int64_t pick_kc(const kernel_t *kr, int64_t k)
{
    const int64_t KC = kr->kc;
    if (k <= KC + KC / 4)
        return k;
    const int64_t nblocks = (k + KC - 1) / KC;
    return (k + nblocks - 1) / nblocks;
}

/* An upper bound of pick_kc over every K: what K-split pieces (each with its own K) size
 * their packing buffers by. */
static int64_t kc_bound(const kernel_t *kr) { return kr->kc + kr->kc / 4; }

/* "A is small" (read in place, as one row block): m <= the kernel's MC, but never below
 * SMALL_M_MIN: a batch of 100 (the double kernel's MC is 96) was packed in two row blocks
 * and missed the column slabs; as one block in place, 100 x 4320 x 100 double ran in
 * 0.64x the time (in-process A/B, 2 threads; 128 x 1024 x 512 double: 1.03x). */
#define SMALL_M_MIN 128

static int64_t small_m(const kernel_t *kr)
{
    return kr->mc > SMALL_M_MIN ? kr->mc : SMALL_M_MIN;
}

/* The row blocks of an A read in place: small_m() rows, or as many as INPLACE_BLOCK_BYTES
 * of A's kc-long rows if that is more. Such a block packs nothing but a partial last
 * strip, so its height costs no workspace; each one handed out costs the threads an atomic
 * add and a call (86528 x 9 x 32 float in blocks of 144 rows: 601 of them, 1.4 us each),
 * and in B-outer order the block's rows of A are read once per B micro-panel, from L2.
 * In-process A/B against small_m() rows (Zen 2, 2026-12-05, 2 threads, medians of 100):
 * 86528 x 9 x 32 float 0.84-0.85x the time (128 or 512 KB blocks), 20000 x 100 x 64
 * 0.98-0.99x, 15488 x 288 x 64 0.98-1.00x. */
#define INPLACE_BLOCK_BYTES (256 * 1024)

static int64_t inplace_rows(const kernel_t *kr, int64_t kc)
{
    const int64_t rows = INPLACE_BLOCK_BYTES / (kc * (int64_t)sizeof(real));
    return rows > small_m(kr) ? rows : small_m(kr);
}

/* Elements of workspace fnn_gemm needs for an m x n x k product with the current ISA and
 * thread count: the shared B panel, one A block per thread, and alignment slack. */
#define KSPLIT 4096
#define KSPLIT_MIN 2048

/* The K-split path: small outputs (few tiles) with a long K; returns the length of its K
 * pieces (the last may be shorter), 0 for the other paths. Depends on the shape only. A K
 * of 2 KSPLIT or more goes in KSPLIT pieces; a K from KSPLIT_MIN up to that (more than 16
 * columns), in an even number of equal pieces (2 per KSPLIT_MIN), so two threads get
 * equal shares: in-process A/B against the tile split (2 threads, the Xeon, 2026-12-03),
 * 100 x 4320 x 100 double 0.97x the time, 128 x 2500 x 128 double 0.91x, 192 x 2048 x 192
 * float 0.89x, 30 x 3000 x 30 double 0.88x; 10 x 5000 x 10 float (the dot path) 1.34x, so
 * narrow products are left whole. */
static int64_t ksplit_len(int64_t m, int64_t n, int64_t k)
{
    if (m * n > 192 * 192 || k < KSPLIT_MIN)
        return 0;
    if (k >= 2 * KSPLIT)
        return KSPLIT;
    if (n <= 16) /* the dot path's products (DOT_MAX_N below) do better whole */
        return 0;
    const int64_t pieces = 2 * (k / KSPLIT_MIN);
    return round_up((k + pieces - 1) / pieces, 8);
}

static int use_ksplit(int64_t m, int64_t n, int64_t k)
{
    return ksplit_len(m, n, k) > 0;
}

/* Whether an m x n x k product takes the K-split path (contract: fnn_internal.h). */
int FNN(gemm_ksplit)(int64_t m, int64_t n, int64_t k)
{
    return use_ksplit(m, n, k);
}

static const kernel_t *gemm_kernel(int64_t m, int64_t n, int64_t k);

/* The dot-product path (the kernel's ukr_dot, fnn_internal.h) for products with a few
 * columns: B is transposed once into the workspace (copied if given transposed); rows of a
 * row-major A are read in place when 64-byte aligned, else each block of FNN_DOT_ROWS rows
 * is first copied (or transposed) to an aligned one (every vector load of an unaligned row
 * splits two cache lines: 128 x 128 x 10 float 3.5-3.9 us instead of 2.9; the copy reads A
 * once, the kernel once per group of columns). The sums do not depend on the copy (lanes go
 * by p), the alignment, m or the threads.
 * Its work goes as the pairs of columns, the in-place kernel's as the lanes it computes (n
 * rounded up to its NR). It is taken when 3 pairs cost no more than those lanes (float
 * n <= 10; double n <= 4 or 9-10), K >= DOT_MIN_K (below, a pair's tree and store cost
 * more than its FMAs), and, where it is close (more than lanes / 4 pairs: n = 9-10), K of
 * at least 8 vectors of 64 bytes (float 128, double 64).
 * Measured on the Xeon (2026-12-02, one thread, us, dot / in-place): m = 128, AVX-512,
 * float k = 128: n = 1 1.5 / 4.6, 8 3.3 / 4.5, 10 3.8 / 4.7, 12 4.4 / 4.7, 16 5.6 / 4.5;
 * double k = 128: n = 2 2.9 / 4.7, 4 4.0 / 4.6, 8 5.7 / 4.5, 10 7.1 / 7.7, 12 8.1 / 7.5;
 * AVX2 (forced), float k = 128: n = 1 1.5 / 5.8, 4 2.1 / 5.5, 8 3.6 / 5.9, 10 4.4 / 5.6;
 * double: n = 1 3.9 / 5.5, 4 5.3 / 5.4, 10 10.0 / 10.7. m = 1024, AVX-512, float n = 10:
 * k = 64 21.8 / 20.9, 72 27.0 / 21.5 (rows not 64-byte aligned: copied), 96 22.5 / 28.8,
 * 100 31.7 / 29.3, 128 28.3 / 36.9, 200 48.4 / 55.5; n = 8: k = 64 15.9 / 20.0, 72
 * 22.7 / 21.6, 100 25.8 / 29.6; double n = 10: k = 64 29.7 / 32.4, 100 43.7 / 50.1. */
#define DOT_MAX_N 16
#define DOT_MIN_K 64

static int use_dot(const kernel_t *kr, int64_t n, int64_t k)
{
    const int64_t pairs = (n + 1) / 2, lanes = round_up(n, kr->nr);
    return kr->ukr_dot && n <= DOT_MAX_N && k >= DOT_MIN_K && 3 * pairs <= lanes &&
           (4 * pairs <= lanes || k >= 8 * WS_ALIGN);
}

/* Workspace of the dot path: B^T (n rows of k rounded up to 64 bytes) and one block of A
 * rows per thread, after alignment slack. */
static int64_t dot_ws(int64_t n, int64_t k, int64_t nt)
{
    const int64_t ldbt = round_up(k, WS_ALIGN);
    return WS_ALIGN + n * ldbt + nt * FNN_DOT_ROWS * ldbt;
}

/* Whether a threaded product on the shared-B path packs each next B block (K block, or N
 * block) while the current one's last tiles run, into a second panel buffer (gemm_bias_act):
 * more than one B block and more than one thread. The row blocks' threads meet at the end
 * of each B block; a thread done with its tiles then packs part of the next block instead
 * of waiting, pieces handed out like the tiles, so the other thread packs less. Depends on
 * the shape and the thread count nt (not on the slabs, which do not use it): with the
 * workspace query's nt, fnn_max_threads(), it holds wherever the driver's does. */
static int two_b(int64_t m, int64_t n, int64_t k, int64_t nt)
{
    const kernel_t *kr = gemm_kernel(m, n, k);
    return nt > 1 && m * n * k >= FNN_PAR_MIN_MACS && (k > pick_kc(kr, k) || n > kr->nc);
}

int64_t FNN(gemm_ws)(int64_t m, int64_t n, int64_t k)
{
    const kernel_t *kr = gemm_kernel(m, n, k);
    int64_t kc = pick_kc(kr, k < 1 ? 1 : k);
    int64_t nc = round_up(min64(kr->nc, n < 1 ? 1 : n), kr->nr);
    /* >= any packed block's MC (an A read in place packs only a partial strip) */
    int64_t mc = round_up(min64(small_m(kr), m < 1 ? 1 : m), kr->mr);
    int64_t nt = fnn_max_threads();
    if (use_ksplit(m, n, k)) {
        const int64_t len = ksplit_len(m, n, k), nsplit = (k + len - 1) / len;
        kc = kc_bound(kr); /* each piece picks its own K block */
        return nt * (kc * nc + mc * kc + 2 * WS_ALIGN) + nsplit * round_up(m * n, WS_ALIGN) +
               WS_ALIGN;
    }
    if (use_dot(kr, n, k))
        return dot_ws(n, k, nt);
    /* the B panel with NR*KC to spare per thread (the slabs' shares), a second one where
     * the next B block is packed ahead (two_b), one A block per thread */
    return kc * (nc + nt * kr->nr) + WS_ALIGN +
           (two_b(m, n, k, nt) ? kc * nc + WS_ALIGN : 0) + nt * (mc * kc + WS_ALIGN) +
           WS_ALIGN;
}

/* One full MR-row micro-panel of a row-major A (element (i, p) at src[i*rsa + p]) by 4x4
 * (float) or 2x2 (double) SSE transposes: each row read sequentially, the panel written
 * in order, 4 or 2 values per move. Returns the columns done (the rest: scalar). For
 * MR = 12 (AVX-512) the scalar scatter was 9% of a 1024^3 product (perf, 1 thread).
 * Only copies values, so the panel is the same bits. */
static int64_t pack_a_sse(int64_t kc, const real *src, int64_t rsa, int mr, real *ap)
{
#if FNN_X86_KERNELS && FNN_PREC == 32
    const int64_t kc4 = kc - kc % 4;
    if (mr == 6) {
        /* AVX2's 6 rows: rows 0-3 by a 4x4 transpose, rows 4-5 interleaved in pairs
         * (a 66 x 256 block from a 1024-wide A in a harness, Zen 2: 3.6 vs 6.2 us in
         * cache, 16.7 vs 20.8 from memory, against one value per move) */
        const real *r0 = src, *r1 = r0 + rsa, *r2 = r1 + rsa, *r3 = r2 + rsa,
                   *r4 = r3 + rsa, *r5 = r4 + rsa;
        for (int64_t p = 0; p < kc4; p += 4) {
            __m128 t0 = _mm_loadu_ps(r0 + p), t1 = _mm_loadu_ps(r1 + p),
                   t2 = _mm_loadu_ps(r2 + p), t3 = _mm_loadu_ps(r3 + p);
            const __m128 t4 = _mm_loadu_ps(r4 + p), t5 = _mm_loadu_ps(r5 + p);
            _MM_TRANSPOSE4_PS(t0, t1, t2, t3);
            const __m128 lo = _mm_unpacklo_ps(t4, t5), hi = _mm_unpackhi_ps(t4, t5);
            real *d = ap + p * 6;
            _mm_storeu_ps(d, t0);
            _mm_storel_pi((__m64 *)(d + 4), lo);
            _mm_storeu_ps(d + 6, t1);
            _mm_storeh_pi((__m64 *)(d + 10), lo);
            _mm_storeu_ps(d + 12, t2);
            _mm_storel_pi((__m64 *)(d + 16), hi);
            _mm_storeu_ps(d + 18, t3);
            _mm_storeh_pi((__m64 *)(d + 22), hi);
        }
        return kc4;
    }
    if (mr % 4)
        return 0;
    for (int g = 0; g < mr; g += 4) {
        const real *r0 = src + g * rsa, *r1 = r0 + rsa, *r2 = r1 + rsa, *r3 = r2 + rsa;
        for (int64_t p = 0; p < kc4; p += 4) {
            __m128 t0 = _mm_loadu_ps(r0 + p), t1 = _mm_loadu_ps(r1 + p),
                   t2 = _mm_loadu_ps(r2 + p), t3 = _mm_loadu_ps(r3 + p);
            _MM_TRANSPOSE4_PS(t0, t1, t2, t3);
            real *d = ap + p * mr + g;
            _mm_storeu_ps(d, t0);
            _mm_storeu_ps(d + mr, t1);
            _mm_storeu_ps(d + 2 * mr, t2);
            _mm_storeu_ps(d + 3 * mr, t3);
        }
    }
    return kc4;
#elif FNN_X86_KERNELS
    if (mr % 2)
        return 0;
    const int64_t kc2 = kc - kc % 2;
    for (int g = 0; g < mr; g += 2) {
        const real *r0 = src + g * rsa, *r1 = r0 + rsa;
        for (int64_t p = 0; p < kc2; p += 2) {
            const __m128d t0 = _mm_loadu_pd(r0 + p), t1 = _mm_loadu_pd(r1 + p);
            real *d = ap + p * mr + g;
            _mm_storeu_pd(d, _mm_unpacklo_pd(t0, t1));
            _mm_storeu_pd(d + mr, _mm_unpackhi_pd(t0, t1));
        }
    }
    return kc2;
#else
    (void)kc, (void)src, (void)rsa, (void)mr, (void)ap;
    return 0;
#endif
}

/* Pack rows [0, mc) x columns [0, kc) of op(A) (element (i, p) at a[i*rsa + p*csa]) into
 * MR-row micro-panels, zero-padding the last one: ap[(i/MR)*MR*kc + p*MR + i%MR]. */
static void pack_a(int64_t mc, int64_t kc, const real *a, int64_t rsa, int64_t csa, int mr,
                   real *ap)
{
    for (int64_t i0 = 0; i0 < mc; i0 += mr) {
        int64_t rows = min64(mr, mc - i0);
        const real *src = a + i0 * rsa;
        const int64_t done = csa == 1 && rows == mr ? pack_a_sse(kc, src, rsa, mr, ap) : 0;
        if (done) {
            for (int64_t p = done; p < kc; p++) /* the last 1-3 columns */
                for (int i = 0; i < mr; i++)
                    ap[p * mr + i] = src[i * rsa + p];
        } else if (csa == 1 && mr == 6 && rows == 6) {
            /* rows of A contiguous along p, the common MR = 6 (AVX2): read the six rows as
             * six streams and write the panel sequentially */
            const real *r0 = src, *r1 = r0 + rsa, *r2 = r1 + rsa, *r3 = r2 + rsa,
                       *r4 = r3 + rsa, *r5 = r4 + rsa;
            for (int64_t p = 0; p < kc; p++) {
                real *d = ap + p * 6;
                d[0] = r0[p];
                d[1] = r1[p];
                d[2] = r2[p];
                d[3] = r3[p];
                d[4] = r4[p];
                d[5] = r5[p];
            }
        } else if (csa == 1) {
            /* rows of A are contiguous along p: read each row once, scatter by MR. */
            for (int64_t i = 0; i < rows; i++) {
                const real *row = src + i * rsa;
                for (int64_t p = 0; p < kc; p++)
                    ap[p * mr + i] = row[p];
            }
        } else {
            for (int64_t p = 0; p < kc; p++)
                for (int64_t i = 0; i < rows; i++)
                    ap[p * mr + i] = src[i * rsa + p * csa];
        }
        for (int64_t i = rows; i < mr; i++)
            for (int64_t p = 0; p < kc; p++)
                ap[p * mr + i] = 0;
        ap += mr * kc;
    }
}

/* The panels of a row-major B (csb == 1), row by row: each row of B is read once, in
 * order, and cut into the panels. For a B that comes from L3 or memory, one sequential
 * pass instead of one strided pass per panel (perf: packing was a quarter of a
 * 100 x 4320 x 100 double product; 0.79-0.86x time with this, 1 thread). Each piece is a
 * memcpy: libc's is AVX where the CPU has it (inlined SSE moves were 1.15x slower for a
 * 32 x 784 x 128 float product). */
static void pack_rows(int64_t kc, int64_t cols, const real *b, int64_t rsb, int nr, real *bp)
{
    const int64_t full = cols / nr, rest = cols - full * nr, pstride = nr * kc;
    const size_t row = sizeof(real) * (size_t)nr;
    int64_t first = 0; /* whole panels done below */
#if FNN_X86_KERNELS
    /* The AVX2 kernels' 64-byte panel rows: four rows of B at a time (measured on Zen 2;
     * AVX-512's 128-byte rows keep the memcpy, not measured on an AVX-512 CPU). */
    if (row == 64 && full > 0 && fnn_isa_avx2_tiles(fnn_get_isa())) {
        fnn_pack_rows64_avx2(kc, full, b, rsb * (int64_t)sizeof(real), bp,
                             pstride * (int64_t)sizeof(real));
        first = full;
    }
#endif
    for (int64_t p = 0; p < kc; p++) {
        const real *src = b + p * rsb;
        real *dst = bp + p * nr;
        for (int64_t jp = first; jp < full; jp++)
            memcpy(dst + jp * pstride, src + jp * nr, row);
        if (rest) {
            real *d = dst + full * pstride;
            for (int64_t j = 0; j < nr; j++)
                d[j] = j < rest ? src[full * nr + j] : 0;
        }
    }
}

/* A row-major B whose kc rows span at least this many bytes is packed row by row
 * (pack_rows); a smaller one, likely still in L2 from the last call, panel by panel (one
 * write stream instead of one per panel). */
#define PACK_ROWS_MIN_BYTES (128 * 1024)

/* Pack the NR-wide micro-panels of B (contract: fnn_internal.h). */
void FNN(pack_b)(int64_t kc, int64_t cols, const real *b, int64_t rsb, int64_t csb, int nr,
                 real *bp)
{
    if (csb == 1 && (size_t)(kc * rsb) * sizeof(real) < PACK_ROWS_MIN_BYTES) {
        for (int64_t j0 = 0; j0 < cols; j0 += nr, bp += nr * kc) {
            if (cols - j0 >= nr) /* a full panel: a row of it per memcpy */
                for (int64_t p = 0; p < kc; p++)
                    memcpy(bp + p * nr, b + p * rsb + j0, sizeof(real) * (size_t)nr);
            else
                pack_rows(kc, cols - j0, b + j0, rsb, nr, bp);
        }
        return;
    }
    if (csb == 1) {
        pack_rows(kc, cols, b, rsb, nr, bp);
        return;
    }
    /* op(B) = B^T: its panels are pack_a's panels of B^T's rows (element (j, p) at
     * b[j*csb + p*rsb]), zero-padded the same way, with pack_a's SSE transposes where a
     * row of B^T is contiguous (rsb == 1). (The element-by-element gather this replaces
     * ran as fast: 100 x 100 x 4320 double with B transposed, 816-832 vs 839-840 us, 2
     * threads; the packing reads B from L3 either way.) */
    pack_a(cols, kc, b, csb, rsb, nr, bp);
}

/* The fused epilogue, applied to finished elements of C: c = act(c + bias), the bias
 * indexed by column (axis 1: Dense, NHWC conv) or row (axis 0: NCHW conv); no bias leaves
 * c as it is. Same operations as epilogue.c's bias_act, so fusing changes no bit. */
typedef struct {
    const real *bias;
    int axis, act;
} epilogue_t;

/* Apply the epilogue to the rows x cols block of C at (i0, j0) (global indices). */
static inline void epilogue(const epilogue_t *ep, int64_t rows, int64_t cols, int64_t i0,
                            int64_t j0, real *cij, int64_t ldc)
{
    FNN(bias_act_block)(ep->bias, ep->axis, ep->act, rows, cols, i0, j0, cij, ldc);
}

/* The rows x cols corner of an edge tile computed into tmp (row stride nr) goes to C:
 * C = tmp + beta * C (beta == 0: C is not read). */
static inline void store_edge(const real *tmp, int nr, int64_t rows, int64_t cols, real beta,
                              real *cij, int64_t ldc)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            const real v = tmp[i * nr + j];
            real *o = cij + i * ldc + j;
            *o = beta == 0 ? v : v + beta * *o;
        }
}

/* Multiply one MR x NR micro-tile (rows x cols of it land in C) with a packed B panel,
 * through a scratch tile at the edges of C. A(i, p) is at a[i*as + p] when a_rows (A read
 * in place, row-major: the direct-A kernel) and at a[p*as + i] otherwise (as = MR: packed;
 * as = lda: a transposed A read in place). A read in place always covers a full MR rows,
 * and with pk (a_rows only; NULL: none) the kernel also packs them there (MR x kc). */
static inline void tile(const kernel_t *kr, int64_t kc, const real *a, int64_t as, int a_rows,
                        const real *bp, int64_t rows, int64_t cols, real alpha, real beta,
                        real *cij, int64_t ldc, real *tmp, real *pk)
{
    const int mr = kr->mr, nr = kr->nr;
    const int edge = rows != mr || cols != nr;
    real *dst = edge ? tmp : cij;
    const int64_t ldd = edge ? nr : ldc;
    const real beta_d = edge ? 0 : beta;
    if (a_rows && pk)
        kr->ukr_direct_pack(kc, a, as, bp, dst, ldd, alpha, beta_d, pk);
    else if (a_rows)
        kr->ukr_direct(kc, a, as, bp, dst, ldd, alpha, beta_d);
    else if (as == mr && rows < mr && kr->ukr_rows && alpha == 1)
        kr->ukr_rows((int)rows, kc, a, bp, dst, ldd); /* the edge rows, into tmp */
    else if (as == mr)
        kr->ukr(kc, a, bp, dst, ldd, alpha, beta_d);
    else
        kr->ukr_strided(kc, a, as, bp, dst, ldd, alpha, beta_d);
    if (edge)
        store_edge(tmp, nr, rows, cols, beta, cij, ldc);
}

/* When A is read in place instead of packed (the ISA has a direct-A kernel for a row-major
 * A, a strided one for a transposed A): when each packed A block would serve only a few B
 * micro-panels (n <= DIRECT_A_MAX_N, or a K up to DIRECT_A_SHORT_K with n at most twice
 * that, or with whole micro-panels of a row-major A whatever n: see below), packing it
 * costs as much as using it (perf: pack_a was 30% of a 128 x 1600 x 64 product); and when
 * A is small (m <= small_m(): a Dense layer's batch). A wide n with a long K
 * keeps packing: 1024 x 128 x 1024 with a transposed A in place was 25% slower. */
#define DIRECT_A_MAX_N 64
/* A short K: up to this, a row-major A with whole micro-panels of n is read in place
 * whatever n (a_in_place): its MR-row strips (MR x K, a few cache lines per row) are as cheap to read where they
 * are as packed, and each packed block was reused by few tiles of K steps. In-process A/B
 * on Zen 4 (2026-12-06, medians of 21-31, against a_in_place's n bound; the AVX2 kernels,
 * avx512_256), 2 threads: 25088 x 32 x 288 (B transposed: a padded convolution's dcols =
 * dy * w^T) 0.77-0.82x the time, 4096 x 32 x 512 0.84x, 4096 x 32 x 2048 0.79x, 1024 x 16
 * x 4096 0.59-0.82x, 4096 x 64 x 1024 0.90-0.93x, 12800 x 64 x 1024 0.91x; 1 thread: 25088
 * x 32 x 288 0.87x, 1024 x 16 x 4096 0.72-0.77x, 12800 x 16 x 160 0.95x. With a partial
 * last panel 1 thread lost (12800 x 16 x 150, LeNet-5's dcols, 1.26-1.38x; 12800 x 32 x
 * 150 1.24x) and 2 threads measured 0.67-1.27x on a busy machine: such n keep the bound.
 * The AVX-512 kernels measured level (0.89-1.01x). A transposed A keeps it too (strided
 * in place, 4096 x 32 x 512: 1.52x). */
#define DIRECT_A_SHORT_K 64

static int a_in_place(const kernel_t *kr, int64_t m, int64_t n, int64_t k, int64_t csa)
{
    const int rows_whole = kr->ukr_direct && csa == 1 && n % kr->nr == 0;
    return n <= DIRECT_A_MAX_N || m <= small_m(kr) ||
           (k <= DIRECT_A_SHORT_K && (n <= 2 * DIRECT_A_MAX_N || rows_whole));
}

/* The kernel of an m x n product of depth k: the ISA's matrix-product kernel for it
 * (gemm_kernels.c). Depends on the shape and the ISA only, so the workspace query and the
 * product agree. */
static const kernel_t *gemm_kernel(int64_t m, int64_t n, int64_t k)
{
    return KERNEL_MATMUL_FOR(fnn_get_isa(), m, n, k);
}

/* How A is read: packed, or in place (see a_in_place) through the direct-A kernel
 * (row-major A) or the strided one (transposed A). */
enum { A_PACKED, A_ROWS, A_COLS };

static int a_mode(const kernel_t *kr, int64_t m, int64_t n, int64_t k, int64_t rsa,
                  int64_t csa)
{
    if (!a_in_place(kr, m, n, k, csa))
        return A_PACKED;
    if (kr->ukr_direct && csa == 1)
        return A_ROWS;
    if (kr->ukr_strided && rsa == 1)
        return A_COLS;
    return A_PACKED;
}

#define TAIL_BLOCKS 2
#define TAIL_SPLIT 4
/* Pieces per thread of a B block packed ahead (two_b) */
#define PACK_PIECES 4

/* Column slabs: with a small A read in place (m <= SLAB_MAX_M), each thread takes a
 * contiguous range of each N block's B micro-panels and runs every K block on it alone,
 * packing only its own panels: no barrier at all, also across N blocks, since each
 * thread has its own share of the panel buffer. Otherwise B is packed by all threads and
 * shared, with two barriers per K block; for a 100 x 100 x 4320 product the barriers cost
 * more than the arithmetic (2 threads slower than 1); slabs across N blocks too: 0.73-0.93x
 * there, 64 x 576 x 15488 float 0.76-0.90x (in-process A/B). Either way every element of C
 * sums the same products in the same order. (Slabs with a packed A, each thread packing
 * all of it: no faster, measured on 100 x 4320 x 100 double.) */
#define SLAB_MAX_M 256

static int use_slabs(const kernel_t *kr, int64_t m, int64_t n, int mode, int nt)
{
    return nt > 1 && mode != A_PACKED && m <= SLAB_MAX_M &&
           (n + kr->nr - 1) / kr->nr >= nt;
}

/* The MR x NR tile of a block at row i0 and micro-panel jp (see multiply_block). */
static inline void block_tile(const kernel_t *kr, int mode, int64_t full, int64_t mc,
                              int64_t kc, int64_t nc, const real *a, int64_t rsa, int64_t csa,
                              const real *bp, int64_t i0, int64_t jp, real alpha, real beta,
                              const real *ap, real *c, int64_t ldc, real *tmp)
{
    const int mr = kr->mr, nr = kr->nr;
    const int64_t j0 = jp * nr, cols = min64(nr, nc - j0), rows = min64(mr, mc - i0);
    const real *bpp = bp + jp * nr * kc;
    real *cij = c + i0 * ldc + j0;
    if (i0 < full && mode == A_ROWS)
        tile(kr, kc, a + i0 * rsa, rsa, 1, bpp, rows, cols, alpha, beta, cij, ldc, tmp, NULL);
    else if (i0 < full)
        tile(kr, kc, a + i0, csa, 0, bpp, rows, cols, alpha, beta, cij, ldc, tmp, NULL);
    else /* packed: A's rows from `full` on, at the start of ap (see multiply_block) */
        tile(kr, kc, ap + (i0 - full) * kc, mr, 0, bpp, rows, cols, alpha, beta, cij, ldc,
             tmp, NULL);
}

/* Micro-panels jp and jp + 1 of block_tile's, both whole, on a strip of rows read in place
 * (i0 < full), in one call of the kernel's ukr_direct_pair where it has one (the same bits
 * as two tiles): 1 if done, else 0 (the caller takes them one by one). */
static inline int block_pair(const kernel_t *kr, int mode, int64_t full, int64_t kc,
                             int64_t nc, const real *a, int64_t rsa, const real *bp,
                             int64_t i0, int64_t jp, real alpha, real beta, real *c,
                             int64_t ldc)
{
    const int nr = kr->nr;
    if (!kr->ukr_direct_pair || mode != A_ROWS || i0 >= full || (jp + 2) * nr > nc)
        return 0;
    kr->ukr_direct_pair(kc, a + i0 * rsa, rsa, bp + jp * nr * kc, c + i0 * ldc + jp * nr, ldc,
                        alpha, beta);
    return 1;
}

/* A block whose B micro-panels are too large to stay in L1 (over L1_B_PANEL bytes) and
 * has at least A_OUTER_MIN_PANELS of them runs A micro-panel by A micro-panel: each MR x KC
 * panel of A stays in L1 while the B panels stream from L2 (the BLIS order; the kernel's
 * NC sizes the B block for L2). Otherwise B panel by B panel, each reused down the rows
 * from L1. AVX-512's 384 x 32 float B micro-panels are 48 KB, an Xeon's whole L1: with
 * this order and NC 1024 (float) / 512 (double), in-process A/B on 2 threads (2026-12-02,
 * medians of 11): 1024^3 float 343-362 vs 327-346 GFLOPS, 2048^3 342-353 vs 331-332,
 * double 160 vs 158-161, 128x1024x1024 275 vs 269, 500^3 280 vs 284, 4096x256x256 and
 * 256x4096x256 equal. A B panel of over half of L1 (L1_B_PANEL; 32 KB was the bound until
 * 2026-12-05) does not stay there either while A's panels stream past it: the AVX2
 * panels of a 512-deep K block (32 KB, float and double: 1024^3, 2048^3) in A order,
 * against B order, on Zen 4 (2 threads, in-process A/B, medians of 15-31): 1024^3 float
 * 0.95x the time, 1536^3 0.95x, 512x1024x1024 0.95x, 1000^3 0.98x, 2048^3 1.00x,
 * 4096x1024x256 1.00x; double 1024^3 0.93-0.96x, 2048^3 0.90-0.93x, 1000^3 0.96-0.97x,
 * 600^3 1.00x; on 1 thread 1.00x (not measured on Zen 2). With A read in place by rows
 * (rows_a_outer, AVX2) also below the bound: each strip's C rows are then written whole,
 * one after the other, and A's strip is read once (with K = 9 the tile order was worth
 * 1.3x in a harness on Zen 2: C's write-back, not the arithmetic, paces such a
 * product). */
#define A_OUTER_MIN_PANELS 4
#define L1_B_PANEL (16 * 1024)

/* Below this K, a block read in place by rows runs its whole strips and panels through
 * the kernel's ukr_direct_strips, one call (fnn_internal.h); from it on, a call per tile
 * costs little next to the tile, and the direct kernel's A prefetch (NEXT_MIN_K, the
 * AVX2 kernels) pays. */
#define STRIPS_MAX_K 64
/* A C written whole (beta == 0, no epilogue) and aligned goes to memory with
 * non-temporal stores on that path when it has at least half as many bytes as the L3
 * (fnn_cpu_l3_bytes), and at least STREAM_MIN_BYTES: a C that large leaves the caches
 * before it is read again, and a normal store reads each line first. Smaller, it stays
 * in L3, and a normal store finds it there. 86528 x 9 x 32 float (11 MB), in-process A/B,
 * 2 threads, medians of 41: on the Zen 2 VM (16 MB L3, 2026-12-04) the non-temporal
 * stores took 0.63x the time; on the Zen 4 VM (32 MB, 2026-12-05) 1.19-1.20x (412 vs
 * 340-344 us; 1 thread 0.90x). There, 11 MB written by two threads took 85 us with
 * normal stores into a buffer in L3 and 396 us with non-temporal ones, which go to memory
 * (28 GB/s); into 8 such buffers in turn (88 MB: none in L3) 387 and 388 us. An Intel
 * CPU reports its socket's L3 (shared by every core): not measured there, whose default
 * AVX-512 kernels have no strips. */
#define STREAM_MIN_BYTES ((int64_t)8 << 20)

/* big_c: whether an m x n C is large enough for non-temporal stores (STREAM_MIN_BYTES).
 * stream_c: whether the short-K strips store an m x n product's C (c, ldc) so: a big C,
 * beta == 0, no epilogue, a single K block (k < STRIPS_MAX_K), C and its rows 32-byte
 * aligned. (gemm_breg streams a big C with beta == 0, its kernel checking the alignment.) */
static int big_c(int64_t m, int64_t n)
{
    const int64_t half_l3 = fnn_cpu_l3_bytes() / 2;
    const int64_t min_bytes = half_l3 > STREAM_MIN_BYTES ? half_l3 : STREAM_MIN_BYTES;
    return m * n * (int64_t)sizeof(real) >= min_bytes;
}

static int stream_c(int64_t m, int64_t n, int64_t k, real beta, const epilogue_t *ep,
                    const real *c, int64_t ldc)
{
    return beta == 0 && !ep && k < STRIPS_MAX_K && big_c(m, n) && (uintptr_t)c % 32 == 0 &&
           (ldc * (int64_t)sizeof(real)) % 32 == 0;
}

/* One block: rows [0, mc) of op(A) (a: element (ic, pc), strides rsa, csa) times the packed
 * B micro-panels [jp0, jp1) of a kc x nc panel, into C (c: element (ic, jc)). A is packed
 * into ap, or read in place (mode) with only a partial last micro-panel packed. The
 * epilogue (NULL: none) runs on finished parts of C still in cache, but never on a tile
 * just stored (reading a tile right after the micro-kernel's wide stores stalls on
 * store-to-load forwarding; measured: the epilogue then cost more than the GEMM of a K = 9
 * convolution): B panel by B panel, on each finished mc x NR column block; A panel by A
 * panel, on each MR-row strip once the next strip is done. */
static void multiply_block(const kernel_t *kr, int mode, int64_t mc, int64_t kc, int64_t nc,
                           const real *a, int64_t rsa, int64_t csa, const real *bp,
                           int64_t jp0, int64_t jp1, real alpha, real beta,
                           const epilogue_t *ep, int64_t ic, int64_t jc, real *ap, real *c,
                           int64_t ldc, real *tmp, int stream)
{
    const int mr = kr->mr, nr = kr->nr;
    const int64_t full = mode == A_PACKED ? 0 : mc - mc % mr;
    const int a_outer =
        (jp1 - jp0 >= A_OUTER_MIN_PANELS && kc * nr * (int64_t)sizeof(real) > L1_B_PANEL) ||
        (kr->rows_a_outer && mode == A_ROWS && jp1 - jp0 >= 2);
    /* A packed, row-major, A-outer: each strip's first tile reads its MR rows in place and
     * packs them as it goes (ukr_direct_pack), so only a partial last strip is packed
     * here. The first tile reads A from L3 either way; packing it in a pass of its own
     * was 4.7% of a 2048^3 float product on one thread, at L3's speed. */
    const int64_t in_tile = a_outer && mode == A_PACKED && csa == 1 && kr->ukr_direct_pack
                                ? mc - mc % mr : 0;
    /* ap holds the block's packed rows from `full` on (all of them with A packed, the
     * partial last strip of an A read in place: MR x KC, whatever the block's height) */
    pack_a(mc - full - in_tile, kc, a + (full + in_tile) * rsa, rsa, csa, mr,
           ap + in_tile * kc);
    if (a_outer) {
        const int64_t j0 = jp0 * nr, cols = min64(jp1 * nr, nc) - j0;
        /* whole strips in one call where every panel is whole (with a partial last panel
         * done tile by tile after them, 20000 x 9 x 40 took 1.11x the time: A and C's rows
         * twice over); the rest tile by tile */
        int64_t i_first = 0;
        if (mode == A_ROWS && !ep && kc < STRIPS_MAX_K && kr->ukr_direct_strips &&
            cols % nr == 0 && full > 0) {
            kr->ukr_direct_strips(kc, full, a, rsa, bp + jp0 * nr * kc, jp1 - jp0, c + j0,
                                  ldc, alpha, beta, stream);
            i_first = full;
        }
        for (int64_t i0 = i_first; i0 < mc; i0 += mr) {
            int64_t jp = jp0;
            if (i0 < in_tile) {
                tile(kr, kc, a + i0 * rsa, rsa, 1, bp + jp0 * nr * kc, mr,
                     min64(nr, nc - j0), alpha, beta, c + i0 * ldc + j0, ldc, tmp,
                     ap + i0 * kc);
                jp++;
            }
            for (; jp < jp1; jp++) {
                if (jp + 1 < jp1 && block_pair(kr, mode, full, kc, nc, a, rsa, bp, i0, jp,
                                               alpha, beta, c, ldc)) {
                    jp++;
                    continue;
                }
                block_tile(kr, mode, full, mc, kc, nc, a, rsa, csa, bp, i0, jp, alpha, beta,
                           ap, c, ldc, tmp);
            }
            if (ep && i0 > 0) /* the strip before this one */
                epilogue(ep, mr, cols, ic + i0 - mr, jc + j0, c + (i0 - mr) * ldc + j0, ldc);
        }
        if (ep) {
            const int64_t last = (mc - 1) / mr * mr;
            epilogue(ep, mc - last, cols, ic + last, jc + j0, c + last * ldc + j0, ldc);
        }
        return;
    }
    for (int64_t jp = jp0; jp < jp1; jp++) {
        for (int64_t i0 = 0; i0 < mc; i0 += mr)
            block_tile(kr, mode, full, mc, kc, nc, a, rsa, csa, bp, i0, jp, alpha, beta, ap,
                       c, ldc, tmp);
        if (ep) {
            const int64_t j0 = jp * nr;
            epilogue(ep, mc, min64(nr, nc - j0), ic, jc + j0, c + j0, ldc);
        }
    }
}

/* One thread: C (m x n) = alpha * op(A) * op(B) + beta * C with packing buffers ap
 * (MC x KC) and bp (KC x NC). Same loops as the threaded driver below. */
static void gemm_serial(const kernel_t *kr, int64_t m, int64_t n, int64_t k, real alpha,
                        const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb,
                        int64_t csb, real beta, real *ap, real *bp, real *c, int64_t ldc)
{
    const int mr = kr->mr, nr = kr->nr;
    const int64_t KC = pick_kc(kr, k);
    const int64_t NC = round_up(min64(kr->nc, n), nr);
    const int64_t MC = round_up(min64(kr->mc, m), mr);
    const int mode = a_mode(kr, m, n, k, rsa, csa);
    _Alignas(64) real tmp[32 * 32];
    for (int64_t jc = 0; jc < n; jc += NC) {
        const int64_t nc = min64(NC, n - jc);
        for (int64_t pc = 0; pc < k; pc += KC) {
            const int64_t kc = min64(KC, k - pc);
            const real beta_p = pc == 0 ? beta : (real)1;
            FNN(pack_b)(kc, nc, b + pc * rsb + jc * csb, rsb, csb, nr, bp);
            for (int64_t ic = 0; ic < m; ic += MC)
                multiply_block(kr, mode, min64(MC, m - ic), kc, nc, a + ic * rsa + pc * csa,
                               rsa, csa, bp, 0, (nc + nr - 1) / nr, alpha, beta_p, NULL, ic,
                               jc, ap, c + ic * ldc + jc, ldc, tmp, 0);
        }
    }
}

/* The in-place path: a product with both operands row-major and a short A (m <=
 * INPLACE_MAX_M rows) or a narrow B (one NR-wide micro-panel) runs the in-place kernel on
 * each MR x NR tile of C, reading A and B where they are: no packing, no workspace, no
 * scratch tile at the edges, and with threads no barrier (each takes the same contiguous
 * run of tiles, B micro-panel by micro-panel, in every K block). Packing B pays only when
 * many rows of A reuse it. A B whose rows are over INPLACE_MAX_LDB bytes apart keeps
 * packing: each row of a micro-panel on its own page missed the TLB (16 x 1024 x 4096
 * float 1.2x slower in place). The loops run over the K blocks of pick_kc, as the packed
 * path's do, so each element sums its products in the same order. Measured on the AVX-512
 * Xeon, 2 threads, 2026-12-02, raw C calls, medians of 9, packed -> in place (us):
 * 128x128x10 float 6.6 -> 3.7, 32x784x128 55.8 -> 23.6, 128x1600x64 172 -> 100,
 * 256x256x256 169 -> 112, 64x288x484 143 -> 74, 1000x128x10 33.9 -> 17.0, 86528x9x32
 * (one panel) about 400 -> 290-320, 100x4320x100 double 919 -> 884, 256x1024x1024 equal;
 * with m up to 1024: 512^3 841 -> 963 and 500x784x128 355 -> 426 (slower), and all m for
 * two panels: 15488x288x64 1766 -> 2054 (slower). The AVX2 kernels (6 x 16 float, 6 x 8
 * double, forced on the same Xeon): 128x128x10 6.5 -> 4.2, 32x784x128 72 -> 34.5,
 * 128x1600x64 239 -> 160, 256^3 217 -> 171, 64x288x484 196 -> 98, 86528x9x32 520 -> 425. */
#define INPLACE_MAX_M 256
#define INPLACE_MAX_LDB 4096

static int use_inplace(const kernel_t *kr, int64_t m, int64_t n, int64_t csa, int64_t rsb,
                       int64_t csb)
{
    return kr->ukr_inplace && csa == 1 && csb == 1 && (m <= INPLACE_MAX_M || n <= kr->nr) &&
           rsb * (int64_t)sizeof(real) <= INPLACE_MAX_LDB;
}

/* gemm_inplace's arguments, for its threads. */
typedef struct {
    const kernel_t *kr, *narrow;
    int64_t m, n, k, lda, ldb, ldc;
    real alpha, beta;
    const real *a, *b;
    const epilogue_t *ep;
    real *c;
} inplace_job;

/* The work of gemm_inplace's tasks: task t is row tile t % ntr of column panel t / ntr; a
 * task's multiply-adds go as its rows (mr, the last tile's fewer) times its kernel's
 * vectors (2, the last panel's wlast). */
typedef struct {
    int64_t m, mr, ntr, np, wlast;
} inplace_work;

/* The work of tasks 0 .. t - 1 (t <= ntr * np): whole panels, then t % ntr full tiles. */
static int64_t work_before(const inplace_work *w, int64_t t)
{
    const int64_t p = t / w->ntr, r = t % w->ntr;
    const int64_t panels = p < w->np ? 2 * p : 2 * (w->np - 1) + w->wlast;
    return w->m * panels + r * w->mr * (p == w->np - 1 ? w->wlast : 2);
}

/* The first task t in [0, ntasks) whose work before it reaches share / nth (work_before(t)
 * * nth >= share), or ntasks: a binary search (work_before only grows), where a scan of
 * the 7211 tasks of an 86528 x 9 x 32 product took 5% of its time. */
static int64_t first_task(const inplace_work *w, int64_t ntasks, int64_t share, int nth)
{
    int64_t lo = 0, hi = ntasks;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (work_before(w, mid) * nth >= share)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* This thread's share of gemm_inplace's tasks (tiles, column panel major). */
static void inplace_part(const void *arg, int tid, int nth)
{
    const inplace_job *j = arg;
    const kernel_t *kr = j->kr, *narrow = j->narrow;
    const int mr = kr->mr, nr = kr->nr;
    const int64_t m = j->m, n = j->n, k = j->k, lda = j->lda, ldb = j->ldb, ldc = j->ldc;
    const real *a = j->a, *b = j->b;
    real *c = j->c;
    const epilogue_t *ep = j->ep;
    const int64_t KC = pick_kc(kr, k);
    const int64_t ntr = (m + mr - 1) / mr, np = (n + nr - 1) / nr, ntasks = ntr * np;
    /* Tasks t0 <= t < t1, contiguous, about equal in work: a task's multiply-adds go as its
     * rows times its kernel's vectors (the narrow kernel's one, a short last tile's rows):
     * a split by count left the thread with the narrow panel idle. */
    const int64_t wlast = narrow != kr && n - (np - 1) * nr <= narrow->nr ? 1 : 2;
    const inplace_work w = {m, mr, ntr, np, wlast};
    const int64_t total = m * (2 * np - 2 + wlast);
    int64_t t0 = 0, t1 = ntasks;
    if (nth > 1) {
        t1 = first_task(&w, ntasks, total * (tid + 1), nth);
        t0 = first_task(&w, ntasks, total * tid, nth);
        if (t0 > t1)
            t0 = t1;
    }
    for (int64_t pc = 0; pc < k; pc += KC) {
        const int64_t kc = min64(KC, k - pc);
        const int last = pc + kc >= k;
        for (int64_t t = t0; t <= t1; t++) {
            if (ep && last && t > t0) { /* the tile before, not the one just stored */
                const int64_t i0 = (t - 1) % ntr * mr, j0 = (t - 1) / ntr * nr;
                epilogue(ep, min64(mr, m - i0), min64(nr, n - j0), i0, j0, c + i0 * ldc + j0,
                         ldc);
            }
            if (t == t1)
                break;
            const int64_t i0 = t % ntr * mr, j0 = t / ntr * nr;
            const int cols = (int)min64(nr, n - j0);
            (cols <= narrow->nr ? narrow : kr)
                ->ukr_inplace((int)min64(mr, m - i0), cols, kc, a + i0 * lda + pc, lda,
                              b + pc * ldb + j0, ldb, c + i0 * ldc + j0, ldc, j->alpha,
                              pc == 0 ? j->beta : (real)1);
        }
    }
}

/* gemm_inplace's job for C (m x n, ldc) = alpha * A * B + beta * C (see gemm_inplace). */
static inplace_job inplace_job_for(const kernel_t *kr, int64_t m, int64_t n, int64_t k,
                                   real alpha, const real *a, int64_t lda, const real *b,
                                   int64_t ldb, real beta, const epilogue_t *ep, real *c,
                                   int64_t ldc)
{
    /* A last micro-panel of at most half the kernel's columns goes to the ISA's one-vector
     * kernel (its tiles are as tall, and sum each element the same way): half the work of
     * the two-vector tile on masked-off lanes. */
    const kernel_t *narrow = KERNEL_MATMUL_FOR(fnn_get_isa(), m, kr->nr / 2, k);
    if (narrow->nr != kr->nr / 2 || narrow->mr != kr->mr || !narrow->ukr_inplace)
        narrow = kr;
    const inplace_job job = {.kr = kr, .narrow = narrow, .m = m, .n = n, .k = k,
                             .lda = lda, .ldb = ldb, .ldc = ldc, .alpha = alpha,
                             .beta = beta, .a = a, .b = b, .ep = ep, .c = c};
    return job;
}

/* C (m x n, ldc) = alpha * A * B + beta * C with A (m x k, lda) and B (k x n, ldb) both
 * row-major, read in place; beta == 0 overwrites C; the epilogue (NULL: none) follows each
 * tile's last K block, one tile behind. */
static void gemm_inplace(const kernel_t *kr, int64_t m, int64_t n, int64_t k, real alpha,
                         const real *a, int64_t lda, const real *b, int64_t ldb, real beta,
                         const epilogue_t *ep, real *c, int64_t ldc)
{
    const int64_t ntasks = (m + kr->mr - 1) / kr->mr * ((n + kr->nr - 1) / kr->nr);
    int nt = gemm_threads(m, n, k);
    if (nt > ntasks)
        nt = (int)ntasks;
    const inplace_job job = inplace_job_for(kr, m, n, k, alpha, a, lda, b, ldb, beta, ep, c,
                                            ldc);
    fnn_run(nt, inplace_part, &job);
}

/* gemm_breg's arguments, for its threads. */
typedef struct {
    const kernel_t *kr;
    int64_t m, n, k, lda, rsb, csb, ldc;
    real alpha, beta;
    const real *a, *b;
    const epilogue_t *ep;
    int stream;
    real *c;
} breg_job;

/* This thread's rows of gemm_breg's product: an equal share, in multiples of 8 rows (the
 * kernel's steps). */
static void breg_part(const void *arg, int tid, int nth)
{
    const breg_job *j = arg;
    const int64_t units = (j->m + 7) / 8;
    const int64_t r0 = min64(units * tid / nth * 8, j->m);
    const int64_t r1 = min64(units * (tid + 1) / nth * 8, j->m);
    if (r0 >= r1)
        return;
    const epilogue_t *ep = j->ep;
    const real *bias = ep ? ep->bias : NULL;
    const int axis = ep ? ep->axis : 1;
    if (bias && axis == 0)
        bias += r0;
    j->kr->ukr_breg(r1 - r0, j->n, j->k, j->alpha, j->a + r0 * j->lda, j->lda, j->b, j->rsb,
                    j->csb, j->beta, bias, axis, ep && ep->act == FNN_ACT_RELU, j->stream,
                    j->c + r0 * j->ldc, j->ldc);
}

/* C (m x n, ldc) = alpha * A * B + beta * C, then the epilogue (NULL: none), for k <=
 * FNN_BREG_MAX_K with A row-major (lda), on the kernel's ukr_breg: B (element (p, j) at
 * b[p*rsb + j*csb]) stays in registers while the threads' rows stream past it, each row of
 * C written once, finished. */
static void gemm_breg(const kernel_t *kr, int64_t m, int64_t n, int64_t k, real alpha,
                      const real *a, int64_t lda, const real *b, int64_t rsb, int64_t csb,
                      real beta, const epilogue_t *ep, real *c, int64_t ldc)
{
    const breg_job job = {.kr = kr, .m = m, .n = n, .k = k, .lda = lda, .rsb = rsb,
                          .csb = csb, .ldc = ldc, .alpha = alpha, .beta = beta, .a = a,
                          .b = b, .ep = ep, .stream = beta == 0 && big_c(m, n), .c = c};
    fnn_run(gemm_threads(m, n, k), breg_part, &job);
}

/* The K-split path (see the file comment): partial products of fixed K pieces, computed in
 * parallel, then summed in piece order into C. */
static void gemm_ksplit(const kernel_t *kr, int64_t m, int64_t n, int64_t k, real alpha,
                        const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb,
                        int64_t csb, real beta, const epilogue_t *ep, real *ws, real *c,
                        int64_t ldc)
{
    const int64_t KC = kc_bound(kr); /* each piece picks its own K block, at most this */
    const int64_t NC = round_up(min64(kr->nc, n), kr->nr);
    const int64_t MC = round_up(min64(kr->mc, m), kr->mr);
    const int64_t len = ksplit_len(m, n, k), nsplit = (k + len - 1) / len;
    const int64_t pstride = round_up(m * n, WS_ALIGN);
    const int64_t tstride = round_up(KC * NC, WS_ALIGN) + round_up(MC * KC, WS_ALIGN);
    const int nt = fnn_kernel_threads();
    const int inplace = use_inplace(kr, m, n, csa, rsb, csb);
    real *partial = fnn_align_ws(ws);
    real *thread_ws = partial + nsplit * pstride;

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int tid = fnn_thread_num();
        real *bp = thread_ws + tid * tstride;
        real *ap = bp + round_up(KC * NC, WS_ALIGN);
#pragma omp for schedule(static)
        for (int64_t s = 0; s < nsplit; s++) {
            const int64_t k0 = s * len, kl = min64(len, k - k0);
            if (inplace) { /* as the whole would go, without threads */
                const inplace_job job = inplace_job_for(kr, m, n, kl, 1, a + k0, rsa,
                                                        b + k0 * rsb, rsb, 0, NULL,
                                                        partial + s * pstride, n);
                inplace_part(&job, 0, 1);
            } else {
                gemm_serial(kr, m, n, kl, 1, a + k0 * csa, rsa, csa, b + k0 * rsb, rsb, csb, 0,
                            ap, bp, partial + s * pstride, n);
            }
        }
        /* implicit barrier: every partial is complete */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                const real acc = fnn_sum_partials(partial + i * n + j, nsplit, pstride);
                real *o = c + i * ldc + j;
                *o = beta == 0 ? alpha * acc : alpha * acc + beta * *o;
            }
        if (ep) {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < m; i++)
                epilogue(ep, 1, n, i, 0, c + i * ldc, ldc);
        }
    }
}

/* gemm_dot's arguments, for its threads (abuf: one block of A rows per thread). */
typedef struct {
    const kernel_t *kr;
    int64_t m, n, k, rsa, csa, ldbt, ldc;
    int in_place;
    real alpha, beta;
    const real *a, *bt;
    real *abuf, *c;
    const epilogue_t *ep;
} dot_job;

/* This thread's share of gemm_dot's blocks of FNN_DOT_ROWS rows (contiguous). */
static void dot_part(const void *arg, int tid, int nth)
{
    const dot_job *j = arg;
    const int64_t ldbt = j->ldbt, rsa = j->rsa, csa = j->csa, k = j->k;
    const int64_t nblk = (j->m + FNN_DOT_ROWS - 1) / FNN_DOT_ROWS;
    for (int64_t blk = nblk * tid / nth; blk < nblk * (tid + 1) / nth; blk++) {
        const int64_t i0 = blk * FNN_DOT_ROWS;
        const int rows = (int)min64(FNN_DOT_ROWS, j->m - i0);
        const real *ai = j->a + i0 * rsa;
        int64_t as = rsa;
        if (!j->in_place) { /* the block's rows, aligned */
            real *buf = j->abuf + tid * FNN_DOT_ROWS * ldbt;
            if (csa == 1)
                for (int r = 0; r < rows; r++)
                    memcpy(buf + r * ldbt, ai + r * rsa, (size_t)k * sizeof(real));
            else /* A transposed: its columns i0 .. are the rows */
                j->kr->dot_pack(k, rows, ai, csa, buf, ldbt);
            ai = buf;
            as = ldbt;
        }
        real *ci = j->c + i0 * j->ldc;
        j->kr->ukr_dot(rows, j->n, k, ai, as, j->bt, ldbt, ci, j->ldc, j->alpha, j->beta);
        if (j->ep)
            epilogue(j->ep, rows, j->n, i0, 0, ci, j->ldc);
    }
}

/* C (m x n, ldc) = alpha * op(A) * op(B) + beta * C on the dot path (see DOT_MAX_N), A(i, p)
 * at a[i*rsa + p*csa], B(p, j) at b[p*rsb + j*csb], one of each pair of strides 1;
 * beta == 0 overwrites C; the epilogue (NULL: none) follows each block of rows.
 * ws: dot_ws(n, k, threads) elements. */
static void gemm_dot(const kernel_t *kr, int64_t m, int64_t n, int64_t k, real alpha,
                     const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb,
                     int64_t csb, real beta, const epilogue_t *ep, real *ws, real *c,
                     int64_t ldc)
{
    const int64_t ldbt = round_up(k, WS_ALIGN), nblk = (m + FNN_DOT_ROWS - 1) / FNN_DOT_ROWS;
    real *bt = fnn_align_ws(ws);
    if (csb == 1)
        kr->dot_pack(k, n, b, rsb, bt, ldbt);
    else /* B transposed: its rows are B^T's */
        for (int64_t j = 0; j < n; j++)
            memcpy(bt + j * ldbt, b + j * csb, (size_t)k * sizeof(real));
    int nt = gemm_threads(m, n, k);
    if (nt > nblk)
        nt = (int)nblk;
    const dot_job job = {.kr = kr, .m = m, .n = n, .k = k, .rsa = rsa, .csa = csa,
                         .ldbt = ldbt, .ldc = ldc, .alpha = alpha, .beta = beta, .a = a,
                         .bt = bt, .abuf = bt + n * ldbt, .c = c, .ep = ep,
                         .in_place = csa == 1 && (uintptr_t)a % 64 == 0 &&
                                     rsa % WS_ALIGN == 0};
    fnn_run(nt, dot_part, &job);
}

/* C (m x n, ldc) = act(alpha * op(A) * op(B) + beta * C + bias); overwrites C when
 * beta == 0 (never reads it, so NaN there does not propagate). op(A) is m x k: A is m x k
 * (lda) or, with trans_a, k x m (lda); likewise op(B) is k x n. bias (NULL: none) has n
 * elements when bias_axis is 1 (one per column) or m when 0 (one per row); act is
 * FNN_ACT_IDENTITY or FNN_ACT_RELU. The epilogue runs on each tile of C as it is
 * finished. ws: fnn_gemm_ws(m, n, k) elements. */
void FNN(gemm_bias_act)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                        real alpha, const real *a, int64_t lda, const real *b, int64_t ldb,
                        real beta, const real *bias, int bias_axis, int act, real *ws,
                        real *c, int64_t ldc)
{
    if (m <= 0 || n <= 0)
        return;
    const epilogue_t epi = {bias, bias_axis, act};
    const epilogue_t *ep = (bias || act != FNN_ACT_IDENTITY) ? &epi : NULL;
    if (k <= 0) {
        for (int64_t i = 0; i < m; i++) {
            for (int64_t j = 0; j < n; j++)
                c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];
            if (ep)
                epilogue(ep, 1, n, i, 0, c + i * ldc, ldc);
        }
        return;
    }
    const kernel_t *kr = gemm_kernel(m, n, k);
    const int mr = kr->mr, nr = kr->nr;
    const int64_t rsa = trans_a ? 1 : lda, csa = trans_a ? lda : 1;
    const int64_t rsb = trans_b ? 1 : ldb, csb = trans_b ? ldb : 1;
    if (kr->ukr_breg && k <= FNN_BREG_MAX_K && csa == 1) {
        gemm_breg(kr, m, n, k, alpha, a, rsa, b, rsb, csb, beta, ep, c, ldc);
        return;
    }
    if (use_ksplit(m, n, k)) {
        gemm_ksplit(kr, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, ep, ws, c, ldc);
        return;
    }
    if (use_dot(kr, n, k)) {
        gemm_dot(kr, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, ep, ws, c, ldc);
        return;
    }
    if (use_inplace(kr, m, n, csa, rsb, csb)) {
        gemm_inplace(kr, m, n, k, alpha, a, rsa, b, rsb, beta, ep, c, ldc);
        return;
    }
    const int64_t NC = round_up(min64(kr->nc, n), nr);
    const int mode = a_mode(kr, m, n, k, rsa, csa);
    const int64_t KC = pick_kc(kr, k);
    const int nt = gemm_threads(m, n, k);
    const int slabs = use_slabs(kr, m, n, mode, nt);
    /* A packed: blocks of the kernel's MC rows; A in place: blocks of inplace_rows (a
     * small A is one block) */
    int64_t MC = round_up(min64(mode == A_PACKED ? kr->mc : inplace_rows(kr, KC), m), mr);
    if (nt > 1 && !slabs) {
        /* Row blocks of about equal height, at least 8 per thread (as far as the row tiles
         * go) and a multiple of the thread count, handed out one at a time (dynamic
         * schedule): a thread whose core is shared with another process takes fewer
         * blocks instead of holding up the others (with a busy process pinned to one of
         * the 2 cores, in-process A/B against the static schedule of 4 blocks per thread,
         * 2026-12-02: 1024^3 float 0.90x the time, 2048^3 0.77x; with both cores free
         * 0.95-1.03x over 11 shapes). Never larger than MC above, which a packed A's
         * workspace is sized for. The row blocking does not change any sum: results stay
         * independent of the thread count. */
        int64_t nblk = (m + MC - 1) / MC;
        if (nblk < 8 * nt)
            nblk = min64(8 * nt, (m + mr - 1) / mr);
        nblk = (nblk + nt - 1) / nt * nt;
        MC = round_up((m + nblk - 1) / nblk, mr);
    }
    /* Row block ib is C's row tiles [ntr * ib / nblk, ntr * (ib + 1) / nblk): whole
     * micro-tiles as evenly as they go, at most MC rows each (ntr <= nblk * MC / MR). With
     * equal MC-row blocks 1024 rows in 12-row tiles went 7 x 132 + 100, 528 rows for one
     * thread and 496 for the other; so 516 and 508.
     * A K block's threads meet at its end: the one that takes the last block finishes up to
     * a whole block after the other. So the last TAIL_BLOCKS blocks per thread are handed
     * out in TAIL_SPLIT pieces each (with at least 4 blocks per thread; pieces of the same
     * rows, so no sum changes). In-process A/B against whole blocks (2 threads, the Xeon,
     * 2026-12-03, medians of 15): 1024^3 float 0.95x the time, 512^3 0.87x, 768^3 0.97x,
     * 1024^3 double 0.97x, 4096x256x256 0.95x, 15488x288x64 0.97x, 2048^3 1.00x; the last 2
     * blocks in halves: 0.94, 0.94, 1.02, 0.95, 1.01, 0.98, 1.01; the last 4 in quarters:
     * as 2 in quarters. */
    const int64_t ntr = (m + mr - 1) / mr, nblk = (m + MC - 1) / MC;
    const int stream = stream_c(m, n, k, beta, ep, c, ldc);

    /* B's panel buffers: bp_buf[0], and bp_buf[1] for packing ahead (two_b) */
    const int ahead = !slabs && two_b(m, n, k, nt);
    real *bp_buf[2];
    bp_buf[0] = fnn_align_ws(ws);
    bp_buf[1] = ahead ? fnn_align_ws(bp_buf[0] + KC * (NC + nt * nr)) : bp_buf[0];
    real *ap_all = fnn_align_ws(ahead ? bp_buf[1] + KC * NC : bp_buf[0] + KC * (NC + nt * nr));
    /* a thread's packed rows of A: a whole block, or an in-place block's partial strip */
    const int64_t ap_stride = round_up((mode == A_PACKED ? MC : mr) * KC, WS_ALIGN);

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int tid = fnn_thread_num(), nth = fnn_team_size();
        real *ap = ap_all + tid * ap_stride;
        _Alignas(64) real tmp[32 * 32]; /* edge tile (MR, NR <= 32) */

        int64_t blk = 0;     /* B blocks done */
        int packed = 0;      /* this B block already packed (ahead, by the last loop) */
        for (int64_t jc = 0; jc < n; jc += NC) {
            const int64_t nc = min64(NC, n - jc);
            const int64_t npanels = (nc + nr - 1) / nr;
            for (int64_t pc = 0; pc < k; pc += KC, blk++) {
                const int64_t kc = min64(KC, k - pc);
                const real beta_p = pc == 0 ? beta : (real)1;
                const epilogue_t *ep_p = pc + kc >= k ? ep : NULL; /* last K block */
                real *bp = bp_buf[blk & 1];

                if (slabs) {
                    /* this thread's own micro-panels, read by nobody else: no barrier. They
                     * live in the thread's fixed share of the panel buffer (room for
                     * ceil(NC / NR / nth) panels, at KC, not kc, apart), so neither a
                     * shorter last K block nor a narrower last N block can move them onto
                     * a neighbour's panels still in use */
                    const int64_t jp0 = npanels * tid / nth, jp1 = npanels * (tid + 1) / nth;
                    const int64_t share = (NC / nr + nth - 1) / nth;
                    real *own = bp + tid * share * nr * KC;
                    if (jp0 < jp1)
                        FNN(pack_b)(kc, min64(jp1 * nr, nc) - jp0 * nr,
                                     b + pc * rsb + (jc + jp0 * nr) * csb, rsb, csb, nr, own);
                    /* multiply_block finds panel jp at bp + jp*nr*kc */
                    const real *bp_t = own - jp0 * nr * kc;
                    for (int64_t ic = 0; ic < m && jp0 < jp1; ic += MC)
                        multiply_block(kr, mode, min64(MC, m - ic), kc, nc,
                                       a + ic * rsa + pc * csa, rsa, csa, bp_t, jp0, jp1,
                                       alpha, beta_p, ep_p, ic, jc, ap, c + ic * ldc + jc, ldc,
                                       tmp, stream);
                    continue;
                }

                if (!packed) {
                    /* each thread packs a contiguous range of panels, in one call (so a
                     * large B is read row by row: see pack_b) */
                    const int64_t jp0 = npanels * tid / nth, jp1 = npanels * (tid + 1) / nth;
                    if (jp0 < jp1)
                        FNN(pack_b)(kc, min64(jp1 * nr, nc) - jp0 * nr,
                                     b + pc * rsb + (jc + jp0 * nr) * csb, rsb, csb, nr,
                                     bp + jp0 * nr * kc);
#pragma omp barrier
                }
                /* the B panel is complete */

                /* the next B block (K block, else N block), packed ahead in PACK_PIECES
                 * pieces per thread after this block's tiles */
                const int64_t pn = pc + kc < k ? pc + kc : 0, jn = pc + kc < k ? jc : jc + NC;
                const int64_t kcn = min64(KC, k - pn), ncn = min64(NC, n - jn);
                const int64_t npn = ahead && jn < n ? (ncn + nr - 1) / nr : 0;
                const int64_t npieces = min64(npn, PACK_PIECES * nth);
                real *bpn = bp_buf[(blk + 1) & 1];

                /* Tiles: MC-row blocks of C times groups of micro-panels. With few row
                 * blocks (small m) the panels are split so every thread has work. */
                int64_t ngrp = 1;
                if (nblk < 2 * nth)
                    ngrp = min64(npanels, (2 * nth + nblk - 1) / nblk);
                const int64_t per_grp = (npanels + ngrp - 1) / ngrp;
                /* the last TAIL_BLOCKS row blocks per thread go in TAIL_SPLIT pieces each:
                 * the threads' finishing times differ by a small piece, not by a block */
                const int64_t tailb =
                    (nth > 1 && ngrp == 1 && nblk >= 4 * nth) ? TAIL_BLOCKS * nth : 0;
                const int64_t head = nblk - tailb;
                const int64_t nsub = head + tailb * TAIL_SPLIT; /* row pieces */
                const int64_t ntiles = nsub * ngrp;

#pragma omp for schedule(dynamic, 1)
                for (int64_t t = 0; t < ntiles + npieces; t++) {
                    if (t >= ntiles) { /* a piece of the next B block */
                        const int64_t q = t - ntiles, q0 = npn * q / npieces,
                                      q1 = npn * (q + 1) / npieces;
                        FNN(pack_b)(kcn, min64(q1 * nr, ncn) - q0 * nr,
                                     b + pn * rsb + (jn + q0 * nr) * csb, rsb, csb, nr,
                                     bpn + q0 * nr * kcn);
                        continue;
                    }
                    const int64_t sb = t / ngrp, gi = t % ngrp;
                    /* piece `part` of `parts` of row block ib */
                    const int64_t parts = sb < head ? 1 : TAIL_SPLIT;
                    const int64_t ib = sb < head ? sb : head + (sb - head) / TAIL_SPLIT,
                                  part = sb < head ? 0 : (sb - head) % TAIL_SPLIT;
                    const int64_t b0 = ntr * ib / nblk, b1 = ntr * (ib + 1) / nblk;
                    const int64_t r0 = b0 + (b1 - b0) * part / parts,
                                  r1 = b0 + (b1 - b0) * (part + 1) / parts;
                    if (r0 >= r1)
                        continue;
                    const int64_t ic = r0 * mr, mc = min64(r1 * mr, m) - ic;
                    const int64_t jp0 = gi * per_grp, jp1 = min64(npanels, jp0 + per_grp);
                    if (jp0 >= jp1)
                        continue;
                    multiply_block(kr, mode, mc, kc, nc, a + ic * rsa + pc * csa, rsa, csa, bp,
                                   jp0, jp1, alpha, beta_p, ep_p, ic, jc, ap,
                                   c + ic * ldc + jc, ldc, tmp, stream);
                }
                /* implicit barrier: nobody repacks B while others still read it, and the
                 * next block is packed */
                packed = npieces > 0;
            }
        }
    }
}

/* C = alpha * op(A) * op(B) + beta * C: gemm_bias_act without the epilogue. */
void FNN(gemm)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, real alpha,
               const real *a, int64_t lda, const real *b, int64_t ldb, real beta, real *ws,
               real *c, int64_t ldc)
{
    FNN(gemm_bias_act)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, NULL, 1,
                       FNN_ACT_IDENTITY, ws, c, ldc);
}

/* Whether the rows x cols row-major matrix at x (leading dimension ldx) and C (m x n, ldc)
 * share an address: their spans of memory, first to last element, are compared (a
 * superset of the elements they share). */
static int overlaps_c(const real *x, int64_t rows, int64_t cols, int64_t ldx, const real *c,
                      int64_t m, int64_t n, int64_t ldc)
{
    const uintptr_t x0 = (uintptr_t)x, c0 = (uintptr_t)c;
    const uintptr_t x1 = x0 + (uintptr_t)((rows - 1) * ldx + cols) * sizeof(real);
    const uintptr_t c1 = c0 + (uintptr_t)((m - 1) * ldc + n) * sizeof(real);
    return x0 < c1 && c0 < x1;
}

/* fnn_gemm with the workspace's length lwork: computes C and returns 0 when lwork covers
 * fnn_gemm_ws(m, n, k) now, else returns that length and touches nothing. One call where a
 * caller keeping one workspace would make two (the Python backend: each C call costs it
 * 0.3-0.5 us, ~5% of a 128 x 128 x 10 float product). Returns -1, touching nothing, when
 * the product cannot be computed as asked (m, n, k > 0): a, b or c not aligned to the
 * element size, or C's span of memory meeting A's or B's (the kernels read A and B while
 * they write C). So a caller may pass arrays it has not checked for either and copy only
 * when told to. */
int64_t FNN(gemm_lwork)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                        real alpha, const real *a, int64_t lda, const real *b, int64_t ldb,
                        real beta, real *ws, int64_t lwork, real *c, int64_t ldc)
{
    if (m > 0 && n > 0 && k > 0 &&
        (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) % sizeof(real) ||
         overlaps_c(a, trans_a ? k : m, trans_a ? m : k, lda, c, m, n, ldc) ||
         overlaps_c(b, trans_b ? n : k, trans_b ? k : n, ldb, c, m, n, ldc)))
        return -1;
    const int64_t need = FNN(gemm_ws)(m, n, k);
    if (lwork < need)
        return need;
    FNN(gemm)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, ws, c, ldc);
    return 0;
}

/* Reference: the plain triple loop with the same semantics (for tests). */
void FNN(gemm_ref)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, real alpha,
                   const real *a, int64_t lda, const real *b, int64_t ldb, real beta, real *c,
                   int64_t ldc)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            real s = 0;
            for (int64_t p = 0; p < k; p++)
                s += (trans_a ? a[p * lda + i] : a[i * lda + p]) *
                     (trans_b ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = beta == 0 ? alpha * s : alpha * s + beta * c[i * ldc + j];
        }
}
