/* gemm_kernels.c: the registry of GEMM micro-kernels: which kernel (and blocking) serves
 * which ISA. Adding an ISA = one micro-kernel file + one row here (and its FMA-only loop,
 * the benchmark's ceiling, in fnn_fma_peak at the end). */
#include <stddef.h>

#include "fastnn.h"
#include "fnn_internal.h"

/* Fields: mr, nr, mc, kc, nc, then the micro-kernels: packed, direct-A, strided, gather,
 * row edge, scatter, in-place, dot product and its B transpose, direct-A packing what it
 * reads, direct-A over whole strips (NULL: not available for that ISA), then rows_a_outer
 * (fnn_internal.h): set for AVX2, where it was measured (Zen 2, 2026-12-04, in-process
 * A/B, medians of 40, 1 and 2 threads: 86528x9x32 float 0.89-0.92x the time, 10000x784x64
 * 0.90-0.95x, 15488x288x64 0.94-1.01x, 4096x64x128 0.99x); not for AVX-512, not measured
 * on an AVX-512 CPU; then the direct-A pair and the short-K products' kernel holding B in
 * registers (fnn_internal.h), that one on both AVX-512 ISAs (kernels/gemm_breg_avx512.c:
 * its zmm vectors on Zen 4 too). */
static const fnn_gemm_kernel_f32 k32_ref = {4, 8, 128, 256, 2048, fnn_ukr_ref_f32,
                                            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                            NULL, NULL, 0, NULL, NULL};
static const fnn_gemm_kernel_f64 k64_ref = {4, 4, 128, 256, 1024, fnn_ukr_ref_f64,
                                            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                            NULL, NULL, 0, NULL, NULL};
#if FNN_X86_KERNELS
/* AVX2's KC: 640 float, 512 double, so a K up to 800 / 640 is one block (gemm.c's
 * pick_kc) and 1024 two: each K block costs a pass over C and its threads meet at its end.
 * The B micro-panels (40 / 32 KB) then stream from L2, not L1, which the kernels' B
 * prefetch covers. Measured on Zen 2 (512 KB L2; 2026-12-05, in-process A/B, 2 threads,
 * medians of 40-100, against KC 256 both): float 1024^3 0.96x the time, 2048^3 0.99x,
 * 768^3 0.97x, 500x784x128 0.85x, 128x784x128 0.89x, 10000x784x64 0.83x, 1000x1000x60
 * 0.95x, 288x15488x64 0.96x, the rest equal (1 thread: 1024^3 0.99x, 10000x784x64 0.83x);
 * double 1024^3 0.98x, 500x784x128 0.95x, 10000x784x64 0.86x. Larger blocks lost where
 * an A block outgrew L2: float KC 1024, 2048^3 1.03x against 640 (MC x KC = 512 KB);
 * double 640, 500x784x128 1.01-1.03x against 512. */
#define K32_AVX2_VARIANTS                                                                   \
    fnn_ukr_avx2_6x16_f32, fnn_ukr_avx2_direct_6x16_f32, fnn_ukr_avx2_strided_6x16_f32,      \
        fnn_ukr_avx2_gather_6x16_f32, fnn_ukr_avx2_rows_6x16_f32,                            \
        fnn_ukr_avx2_scatter_6x16_f32, fnn_ukr_avx2_inplace_6x16_f32, fnn_dot_avx2_f32,      \
        fnn_dot_pack_avx2_f32, NULL, fnn_ukr_avx2_direct_strips_6x16_f32, 1
static const fnn_gemm_kernel_f32 k32_avx2 = {6, 16, 144, 640, 4096, K32_AVX2_VARIANTS, NULL,
                                             NULL};
static const fnn_gemm_kernel_f64 k64_avx2 = {6, 8, 96, 512, 2048, fnn_ukr_avx2_6x8_f64,
                                             fnn_ukr_avx2_direct_6x8_f64,
                                             fnn_ukr_avx2_strided_6x8_f64,
                                             fnn_ukr_avx2_gather_6x8_f64,
                                             fnn_ukr_avx2_rows_6x8_f64,
                                             fnn_ukr_avx2_scatter_6x8_f64,
                                             fnn_ukr_avx2_inplace_6x8_f64,
                                             fnn_dot_avx2_f64, fnn_dot_pack_avx2_f64,
                                             fnn_ukr_avx2_direct_pack_6x8_f64,
                                             fnn_ukr_avx2_direct_strips_6x8_f64, 1, NULL,
                                             NULL};
/* AVX512_256 (AMD Zen 4's default, cpu.c): the AVX2 row with a direct-A pair kernel, 6 x
 * 32 tiles of 256-bit vectors in AVX-512VL's 32 registers (kernels/gemm_ukr256_avx512.c,
 * which says what it gained and what was not kept); doubles run the AVX2 row. Larger
 * matrix products of both types run the AVX-512 rows (fnn_gemm_kernel_matmul_for_*). */
static const fnn_gemm_kernel_f32 k32_avx512_256 = {6, 16, 144, 640, 4096, K32_AVX2_VARIANTS,
                                                   fnn_ukr_avx512_256_direct_6x32_f32,
                                                   fnn_breg_avx512_f32};
/* AVX-512: every variant, the convolutions' gather and scatter included (on this Xeon,
 * against the AVX2 row they replaced there, 2026-12-02, alternating processes: conv 32->64
 * forward + relu + pool 2.39-2.54 -> 1.52-1.74 ms, its backward 5.89-6.27 -> 4.08-4.38 ms,
 * the CNN epoch 4.23-4.29 -> 3.69-3.76 s). Products with few columns take the one-vector
 * rows below (fnn_gemm_kernel_matmul_for). NC (1024 float, 512 double: a 1.5 MB B block)
 * sizes the B block for L2, where gemm.c's A-outer order streams it from. KC 384 and MC
 * 144 (both types) measured best on an AVX-512 Xeon (2 MB L2, 48 KB L1; 2 threads,
 * 2026-12-02, against KC 128-1024 and MC 48-288: 1024^3 float 346-354 GFLOPS vs 324-343
 * at KC 256, 2048^3 360-375 vs 357-366; 1024^3 double at MC 96: 159-170 vs 145-146). */
static const fnn_gemm_kernel_f32 k32_avx512 = {12, 32, 144, 384, 1024,
                                               fnn_ukr_avx512_12x32_f32,
                                               fnn_ukr_avx512_direct_12x32_f32,
                                               fnn_ukr_avx512_strided_12x32_f32,
                                               fnn_ukr_avx512_gather_12x32_f32,
                                               fnn_ukr_avx512_rows_12x32_f32,
                                               fnn_ukr_avx512_scatter_12x32_f32,
                                               fnn_ukr_avx512_inplace_12x32_f32,
                                               fnn_dot_avx512_f32,
                                               fnn_dot_pack_avx512_f32,
                                               fnn_ukr_avx512_direct_pack_12x32_f32, NULL, 0,
                                               NULL, fnn_breg_avx512_f32};
static const fnn_gemm_kernel_f64 k64_avx512 = {12, 16, 144, 384, 512,
                                               fnn_ukr_avx512_12x16_f64,
                                               fnn_ukr_avx512_direct_12x16_f64,
                                               fnn_ukr_avx512_strided_12x16_f64,
                                               fnn_ukr_avx512_gather_12x16_f64,
                                               fnn_ukr_avx512_rows_12x16_f64,
                                               fnn_ukr_avx512_scatter_12x16_f64,
                                               fnn_ukr_avx512_inplace_12x16_f64,
                                               fnn_dot_avx512_f64,
                                               fnn_dot_pack_avx512_f64,
                                               fnn_ukr_avx512_direct_pack_12x16_f64, NULL, 0,
                                               NULL, NULL};
/* One vector per row, for n <= 16 float or 8 double columns: 128 x 128 x 10 float took
 * 11.9 us on the 32-wide tile, 9.3 on the AVX2 kernel's 16-wide one. */
static const fnn_gemm_kernel_f32 k32_avx512_n16 = {12, 16, 144, 384, 4096,
                                                   fnn_ukr_avx512_12x16_f32,
                                                   fnn_ukr_avx512_direct_12x16_f32,
                                                   fnn_ukr_avx512_strided_12x16_f32, NULL,
                                                   fnn_ukr_avx512_rows_12x16_f32, NULL,
                                                   fnn_ukr_avx512_inplace_12x16_f32,
                                                   fnn_dot_avx512_f32,
                                                   fnn_dot_pack_avx512_f32, NULL, NULL, 0,
                                                   NULL, fnn_breg_avx512_f32};
static const fnn_gemm_kernel_f64 k64_avx512_n8 = {12, 8, 144, 384, 2048,
                                                  fnn_ukr_avx512_12x8_f64,
                                                  fnn_ukr_avx512_direct_12x8_f64,
                                                  fnn_ukr_avx512_strided_12x8_f64, NULL,
                                                  fnn_ukr_avx512_rows_12x8_f64, NULL,
                                                  fnn_ukr_avx512_inplace_12x8_f64,
                                                  fnn_dot_avx512_f64,
                                                  fnn_dot_pack_avx512_f64, NULL, NULL, 0,
                                                  NULL, NULL};
#endif

/* The complete kernel (every variant, the convolutions' too) for an ISA id. */
const fnn_gemm_kernel_f32 *fnn_gemm_kernel_for_f32(int isa)
{
#if FNN_X86_KERNELS
    if (isa == FNN_ISA_AVX512)
        return &k32_avx512;
    if (isa == FNN_ISA_AVX512_256)
        return &k32_avx512_256;
    if (isa >= FNN_ISA_AVX2)
        return &k32_avx2;
#endif
    (void)isa;
    return &k32_ref;
}

const fnn_gemm_kernel_f64 *fnn_gemm_kernel_for_f64(int isa)
{
#if FNN_X86_KERNELS
    if (isa == FNN_ISA_AVX512)
        return &k64_avx512;
    if (isa >= FNN_ISA_AVX2) /* AVX512_256's too (its products: see below) */
        return &k64_avx2;
#endif
    (void)isa;
    return &k64_ref;
}

/* Float products on avx512_256 (AMD Zen 4) with m over ZEN4_ZMM_MIN_M and n and k over
 * ZEN4_ZMM_MIN_NK, whose A the AVX2 kernels pack (gemm.c's a_in_place), run the AVX-512
 * ISA's 12 x 32 zmm kernels: half the instructions and half of B's traffic per FLOP
 * (12-row strips), which held up better when the host was busy. In-process A/B on the Zen
 * 4 VM (2026-12-06, 2 threads, medians of 15, against AVX2's): on a busy host 1024^3 0.95-0.96x
 * the time, 1000^3 0.93x, 4096 x 256 x 256 0.92x, 2048^3 0.97-1.01x, 500 x 784 x 128
 * 0.96-1.00x; quiet, 1024^3 1.00x, 2048^3 1.01x, 4096 x 256 x 256 0.97x, 4096 x 128 x 256
 * 1.01x. A read in place stays on AVX2's direct-A pair kernels: n = 64 lost 1.22-1.29x
 * (15488 x 288 x 64, 10000 x 784 x 64), m = 128 1.04-1.05x (128 x 784 x 128). */
#define ZEN4_ZMM_MIN_M 256
#define ZEN4_ZMM_MIN_NK 64

/* The kernel of an m x n matrix product of depth k (fnn_gemm): the widest ISA's, with the
 * packed, direct-A, strided and row-edge variants (it may lack the convolutions' gather
 * and scatter), as narrow as n allows. */
const fnn_gemm_kernel_f32 *fnn_gemm_kernel_matmul_for_f32(int isa, int64_t m, int64_t n,
                                                          int64_t k)
{
#if FNN_X86_KERNELS
    if (isa == FNN_ISA_AVX512)
        return n <= k32_avx512_n16.nr ? &k32_avx512_n16 : &k32_avx512;
    if (isa == FNN_ISA_AVX512_256 && m > ZEN4_ZMM_MIN_M && n > ZEN4_ZMM_MIN_NK &&
        k > ZEN4_ZMM_MIN_NK)
        return &k32_avx512;
#endif
    (void)m, (void)n, (void)k;
    return fnn_gemm_kernel_for_f32(isa);
}

/* Double products on avx512_256 (AMD Zen 4) with K over ZEN4_ZMM_MIN_NK run the
 * AVX-512 ISA's zmm kernels (the same bits as that ISA); a shorter K, and the convolutions'
 * own kernels, AVX2's 6 x 8 tiles. In-process A/B on the Zen 4 VM (2026-12-06, medians of
 * 11-15, bench/ab_builds.py, the zmm kernels against AVX2's), 2 threads: 1024^3 0.973x the
 * time, 2048^3 0.968x, 1000^3 0.98x, 500 x 784 x 128 0.952x, 128 x 784 x 128 0.756x,
 * 10000 x 784 x 64 0.915x, 100 x 4320 x 100 0.785x (B transposed 0.80x, A transposed
 * 1.01x), 4096 x 128 x 256 0.95x, 4096 x 256 x 256 0.87x, 1000 x 1000 x 8 0.83x; 1 thread
 * 1024^3 1.00x, 500 x 784 x 128 0.94x, 10000 x 784 x 64 0.96x. On a busier host earlier
 * that day (the two ISAs alternating, medians of 9-11): 1024^3 0.91-0.94x on 1 and 2
 * threads, 2048^3 0.93x. But short K lost: 4096 x 64 x 256 1.04-1.11x, 4096 x 32 x 256
 * 1.14x, 4096 x 64 x 64 1.08x, 20000 x 9 x 64 1.26x. */
const fnn_gemm_kernel_f64 *fnn_gemm_kernel_matmul_for_f64(int isa, int64_t m, int64_t n,
                                                          int64_t k)
{
#if FNN_X86_KERNELS
    if (isa == FNN_ISA_AVX512 || (isa == FNN_ISA_AVX512_256 && k > ZEN4_ZMM_MIN_NK))
        return n <= k64_avx512_n8.nr ? &k64_avx512_n8 : &k64_avx512;
#endif
    (void)m, (void)n, (void)k;
    return fnn_gemm_kernel_for_f64(isa);
}

/* fnn_fma_peak: the selected ISA's register-only FMA loop on every thread of a region. */
typedef struct {
    int64_t iters;
    double a, b;
    int isa, prec;
    void *out;
    int64_t nout;
    int *nth;
} peak_ctx;

static void peak_thread(const void *vctx, int tid, int nth)
{
    const peak_ctx *p = vctx;
    double s;
    if (p->prec == 32) {
        const float a = (float)p->a, b = (float)p->b;
#if FNN_X86_KERNELS
        s = p->isa == FNN_ISA_AVX512 ? fnn_fma_loop_avx512_f32(p->iters, a, b)
            : p->isa >= 1 ? fnn_fma_loop_avx2_f32(p->iters, a, b)
                          : fnn_fma_loop_ref_f32(p->iters, a, b);
#else
        s = fnn_fma_loop_ref_f32(p->iters, a, b);
#endif
        if (tid < p->nout)
            ((float *)p->out)[tid] = (float)s;
    } else {
#if FNN_X86_KERNELS
        s = p->isa == FNN_ISA_AVX512 ? fnn_fma_loop_avx512_f64(p->iters, p->a, p->b)
            : p->isa >= 1 ? fnn_fma_loop_avx2_f64(p->iters, p->a, p->b)
                          : fnn_fma_loop_ref_f64(p->iters, p->a, p->b);
#else
        s = fnn_fma_loop_ref_f64(p->iters, p->a, p->b);
#endif
        if (tid < p->nout)
            ((double *)p->out)[tid] = s;
    }
    if (tid == 0)
        *p->nth = nth;
}

/* Floating-point operations of one round of the loop on one thread: 2 per FMA lane, one
 * lane per element of the ISA's MR x NR tile (the loops keep the micro-kernel's
 * accumulators). */
static int64_t peak_round_flops(int isa, int prec)
{
    if (prec == 32) {
        const fnn_gemm_kernel_f32 *kr = fnn_gemm_kernel_for_f32(isa);
        return 2 * (int64_t)kr->mr * kr->nr;
    }
    const fnn_gemm_kernel_f64 *kr = fnn_gemm_kernel_for_f64(isa);
    return 2 * (int64_t)kr->mr * kr->nr;
}

static int64_t fma_peak(int prec, int64_t iters, double a, double b, void *out, int64_t nout)
{
    int nth = 1;
    const peak_ctx ctx = {iters, a, b, fnn_get_isa(), prec, out, nout, &nth};
    fnn_run(fnn_kernel_threads(), peak_thread, &ctx);
    return (int64_t)nth * iters * peak_round_flops(ctx.isa, prec);
}

int64_t fnn_fma_peak_f32(int64_t iters, float a, float b, float *out, int64_t nout)
{
    return fma_peak(32, iters, a, b, out, nout);
}

int64_t fnn_fma_peak_f64(int64_t iters, double a, double b, double *out, int64_t nout)
{
    return fma_peak(64, iters, a, b, out, nout);
}
