/* gemm_ukr256_avx512.c: the "avx512_256" ISA's own micro-kernel: AVX2-width (256-bit)
 * vectors in AVX-512VL's 32 registers, for CPUs that run each 512-bit operation as two
 * 256-bit halves (AMD Zen 4), where the AVX-512 kernels' zmm tiles ran slower than the AVX2
 * kernels (cpu.c, default_isa). This file alone is compiled with -mavx2 -mfma -mavx512f
 * -mavx512vl (for the 32 registers; no 512-bit operation is written here); its function is
 * only called after fnn_isa_supported(FNN_ISA_AVX512_256) reported AVX-512F and VL. In the
 * emulated AVX-512 test build it is compiled for AVX2 (16 registers: spills, the same
 * results). Everything else of that ISA is the AVX2 kernels' (gemm_kernels.c).
 * Contract: fnn_internal.h's ukr_direct_pair: a 6 x 32 tile of A read in place by rows
 * over two adjacent 16-column micro-panels, 24 accumulators, each half summed as AVX2's
 * 6 x 16 direct kernel sums it (the same code, kernels/gemm_avx2_tiles.h with np = 2), so
 * the same bits. Per k step 4 B loads and 6 broadcasts feed 24 FMAs, where two 6 x 16
 * tiles take 4 and 12, and each tile's prefetches and stores serve twice the FMAs. On the
 * Zen 4 VM (2026-12-05, in-process A/B against AVX2, medians of 31-41): 15488 x 288 x 64
 * float 0.978-0.989x the time on 2 threads, 0.975-0.980x on 1 (in a bare harness, 1
 * thread: 113-114 GFLOPS against 109-110, the FMA-only loop's 111-114); 10000 x 784 x 64
 * 0.948-0.985x; 1024^3 (packed A) 0.99-1.00x. Tried and not kept: the packed kernel on
 * two panels (1024^3 1.009x the time on 1 thread, 80 KB of B streaming per tile); the
 * short-K strips on two panels (86528 x 9 x 32 1.10x, 20000 x 9 x 64 1.15x). */
#include <immintrin.h>

#include "fnn_internal.h"

#include "gemm_avx2_tiles.h"

FNN_DIRECT_KERNEL_F32(fnn_ukr_avx512_256_direct_6x32_f32, 2)
