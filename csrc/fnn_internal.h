/* fnn_internal.h: declarations shared between fastnn's C files (not part of the API). */
#ifndef FNN_INTERNAL_H
#define FNN_INTERNAL_H

#include <stdint.h>

#if defined(__x86_64__) || defined(_M_X64)
#ifndef FNN_X86_KERNELS
#define FNN_X86_KERNELS 1
#endif
#else
#undef FNN_X86_KERNELS
#define FNN_X86_KERNELS 0
#endif

/* A static function the compiler must inline (the micro-kernels' register tiles: their
 * shape arguments are constants at each call); MSVC spells it __forceinline. */
#if defined(_MSC_VER) && !defined(__clang__)
#define FNN_ALWAYS_INLINE static __forceinline
#else
#define FNN_ALWAYS_INLINE static inline __attribute__((always_inline))
#endif
/* A static function kept out of its callers (so a rare case's loop does not change the
 * common case's code). */
#if defined(_MSC_VER) && !defined(__clang__)
#define FNN_NOINLINE static __declspec(noinline)
#else
#define FNN_NOINLINE static __attribute__((noinline))
#endif

/* ISA ids (fastnn.h, cpu.c's fnn_get_isa). Every id from FNN_ISA_AVX2 on runs the AVX2
 * kernels where it has none of its own: `isa >= FNN_ISA_AVX2` asks for AVX2 and FMA; the
 * AVX-512 (zmm) kernels are FNN_ISA_AVX512's, and FNN_ISA_AVX512_256 adds only GEMM
 * micro-kernels: its own (kernels/gemm_ukr256_avx512.c) and some matrix products'
 * AVX-512 ones (gemm_kernels.c) and the NCHW rows' (conv.c's wide_rows). */
enum { FNN_ISA_GENERIC = 0, FNN_ISA_AVX2 = 1, FNN_ISA_AVX512 = 2, FNN_ISA_AVX512_256 = 3 };

/* Whether ISA id `isa` runs the AVX2 kernels' tiles (6 x 16 float, 6 x 8 double) in its
 * GEMM: AVX2, and AVX512_256 (whose only kernel of its own is a pair of those tiles). */
static inline int fnn_isa_avx2_tiles(int isa)
{
    return isa == FNN_ISA_AVX2 || isa == FNN_ISA_AVX512_256;
}

/* 1 if the CPU has PRFCHW (prefetchw), else 0 (cpu.c; AMD from family 10h, Intel from
 * Broadwell). */
int fnn_cpu_prefetchw(void);

#if FNN_X86_KERNELS && defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

/* Ask for the line at p for writing: prefetchw where prfchw is set (the CPU has PRFCHW:
 * fnn_cpu_prefetchw(), or 1 in the AVX-512 files, every AVX-512 CPU having it), else a T0
 * prefetch; in any file, whatever its compile flags (GCC and Clang turn a write prefetch
 * into prefetchw only with -mprfchw: without it, in conv.c, it was a T0 prefetch). A hint:
 * never faults. A store to a line another core read or wrote last first waits for that
 * core to give it up (a round trip between the Zen 2 VM's two cores: 460 ns); a prefetchw
 * some hundreds of nanoseconds ahead takes the wait off the store, a T0 prefetch brings
 * the line shared, still not writable. */
FNN_ALWAYS_INLINE void fnn_prefetchw_line(int prfchw, const char *p)
{
#if FNN_X86_KERNELS && (defined(__GNUC__) || defined(__clang__))
#ifdef __PRFCHW__
    (void)prfchw;
    __builtin_prefetch(p, 1, 3);
#else
    if (prfchw)
        __asm__ volatile("prefetchw %a0" : : "p"(p));
    else
        __builtin_prefetch(p, 1, 3);
#endif
#elif FNN_X86_KERNELS && defined(_MSC_VER)
    if (prfchw)
        _m_prefetchw(p);
    else
        _mm_prefetch(p, _MM_HINT_T0);
#elif defined(__GNUC__) || defined(__clang__)
    (void)prfchw;
    __builtin_prefetch(p, 1, 3); /* aarch64: a prefetch for store */
#else
    (void)prfchw;
    (void)p;
#endif
}

/* fnn_prefetchw_line for each line of [p, p + bytes), bytes > 0. */
FNN_ALWAYS_INLINE void fnn_prefetch_write(int prfchw, const void *p, int64_t bytes)
{
    const char *c = (const char *)p;
    for (int64_t q = 0; q < bytes; q += 64)
        fnn_prefetchw_line(prfchw, c + q);
    fnn_prefetchw_line(prfchw, c + bytes - 1); /* the last line, where p is not aligned */
}

/* (n, r, c) -> the next position in image-major, row-major order over H x W positions per
 * image (output pixels, pooling windows): by counting, where three 64-bit divisions per
 * pooling window were a tenth of a 3x3x1 -> 32 layer's fused forward. */
FNN_ALWAYS_INLINE void fnn_next_rc(int64_t H, int64_t W, int64_t *n, int64_t *r, int64_t *c)
{
    if (++*c == W) {
        *c = 0;
        if (++*r == H) {
            *r = 0;
            ++*n;
        }
    }
}

/* The calling thread's floating-point mode with flush-to-zero and denormals-are-zero on
 * (x86: MXCSR bits 15 and 6, SSE, which every x86-64 CPU has) while `on`: results and
 * inputs below the smallest normal number count as 0, so no operation takes the CPU's
 * slow subnormal path. fnn_ftz_begin returns the mode to restore with fnn_ftz_end, on the
 * same thread (each OpenMP thread has its own mode: set it inside the parallel region).
 * Elsewhere a no-op. */
#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
static inline unsigned fnn_ftz_begin(int on)
{
    const unsigned csr = _mm_getcsr();
    if (on)
        _mm_setcsr(csr | 0x8040u);
    return csr;
}
static inline void fnn_ftz_end(int on, unsigned csr)
{
    if (on)
        _mm_setcsr(csr);
}
#else
static inline unsigned fnn_ftz_begin(int on) { (void)on; return 0; }
static inline void fnn_ftz_end(int on, unsigned csr) { (void)on, (void)csr; }
#endif

/* vkeep(v): vector v stays in a register from here on (an empty asm that claims to change
 * it), so the compiler cannot fold the load that made it into every instruction using it
 * (a reload each time). A no-op where there is no GNU asm (MSVC) and in the emulated
 * AVX-512 test build (kernels/avx512_emulated.h: its vectors are not registers). */
#if defined(__GNUC__) && !defined(FNN_AVX512_SHIM)
#define vkeep(v) __asm__("" : "+v"(v))
#else
#define vkeep(v) ((void)0)
#endif

/* Work (elements touched; GEMM passes m*n*k/64) below which a kernel runs on one thread.
 * About 0.1-0.3 ms of work: below that the fork/join of a parallel region costs more than
 * it saves, and on a machine shared with other processes a region whose second thread has
 * been descheduled stalls for a time slice (measured: an MLP step at batch 32 took 46 ms
 * with 2 threads vs 2.2 ms with 1 under load, when every small kernel forked). */
#define FNN_PAR_MIN 262144

int fnn_threads_for(int64_t work);
/* Multiply-adds below which a product (a GEMM, a convolution's kernels) runs on one
 * thread: its arithmetic, not its elements, is what two threads split (gemm.c says where
 * it was measured). */
#define FNN_PAR_MIN_MACS ((int64_t)1 << 22)
int fnn_threads_for_macs(int64_t macs);
/* Threads for workspaces (the bound) and for kernels' regions now (cpu.c). */
int fnn_max_threads(void);
int fnn_kernel_threads(void);
/* Iterations per chunk of a `schedule(dynamic, chunk)` loop of n independent iterations on
 * nt threads: about 16 chunks per thread, so a thread whose core is shared with another
 * process takes fewer of them (a static split waits for its half), while the chunks stay
 * long enough that taking one (an atomic add) costs nothing measurable. */
static inline int64_t fnn_dyn_chunk(int64_t n, int nt)
{
    const int64_t c = n / (16 * (int64_t)(nt > 0 ? nt : 1));
    return c > 1 ? c : 1;
}
/* FNN_IMAGE_SPLIT (the loops marked so in conv.c): the fused convolution + pooling's
 * forward and its backward's dW pieces and image groups split their work statically
 * instead, in image order, so that thread t takes about the same images in each: the
 * activations and argmax a thread writes in the forward are in its own core's caches
 * when it reads them in the next layer and in the backward. With the dynamic split,
 * chunks interleaved, each core read much of what the other had written, and on the Zen 2
 * VM a CNN step (program 2, batch 128) took 0.3-0.9 ms longer, the first convolution's
 * forward 1.0-1.6 ms instead of 0.9 (in-fit timings of each C call, 2026-12-04). */
/* fn(ctx, tid, nth) on up to nt threads (cpu.c): a parallel region only when nt > 1; fn
 * holds no barrier (see cpu.c). */
void fnn_run(int nt, void (*fn)(const void *ctx, int tid, int nth), const void *ctx);
/* Inside a parallel region: this thread's number and the team's size (0 and 1 without
 * OpenMP). */
#ifdef _OPENMP
#include <omp.h>
static inline int fnn_thread_num(void) { return omp_get_thread_num(); }
static inline int fnn_team_size(void) { return omp_get_num_threads(); }
#else
static inline int fnn_thread_num(void) { return 0; }
static inline int fnn_team_size(void) { return 1; }
#endif

/* GEMM micro-kernel contract (one per ISA and type, kernels/gemm_ukr_*.c):
 *   C[0:MR, 0:NR] = alpha * Ap * Bp + beta * C     (beta == 0: C is overwritten, not read)
 * Ap: packed A micro-panel, k steps of MR values (column p of the MR x k block at Ap + p*MR).
 * Bp: packed B micro-panel, k steps of NR values (row p of the k x NR block at Bp + p*NR).
 * C: row-major with leading dimension ldc. Always a full MR x NR tile: the driver handles
 * edges. k >= 1. No threads inside. */
typedef void (*fnn_ukr_f32)(int64_t k, const float *ap, const float *bp, float *c,
                            int64_t ldc, float alpha, float beta);
typedef void (*fnn_ukr_f64)(int64_t k, const double *ap, const double *bp, double *c,
                            int64_t ldc, double alpha, double beta);

/* The same product with A read in place instead of packed: element (i, p) of the MR x k
 * block at a[i*lda + p] (row-major A, no transpose). For products with few columns, where
 * packing A costs as much as using it. Optional (NULL: the driver always packs). */
typedef void (*fnn_ukr_direct_f32)(int64_t k, const float *a, int64_t lda, const float *bp,
                                   float *c, int64_t ldc, float alpha, float beta);
typedef void (*fnn_ukr_direct_f64)(int64_t k, const double *a, int64_t lda, const double *bp,
                                   double *c, int64_t ldc, double alpha, double beta);

/* ukr_direct that also writes the MR x k block of A it reads, packed: ap[p*MR + i] =
 * A(i, p) (the panel pack_a would make), so the driver's later tiles of the same rows
 * read it packed without a separate packing pass over A. Same sums as ukr. Optional
 * (NULL: the driver packs A first). */
typedef void (*fnn_ukr_direct_pack_f32)(int64_t k, const float *a, int64_t lda,
                                        const float *bp, float *c, int64_t ldc, float alpha,
                                        float beta, float *ap);
typedef void (*fnn_ukr_direct_pack_f64)(int64_t k, const double *a, int64_t lda,
                                        const double *bp, double *c, int64_t ldc,
                                        double alpha, double beta, double *ap);

/* ukr_direct over whole strips: C rows [0, rows) (a multiple of MR) times npan packed
 * micro-panels of B (bp, each k x NR, one after the other), each MR x NR tile as
 * ukr_direct computes and stores it (the same bits), in one call: strip by strip, the
 * panels within each. For a short K (the driver calls it below STRIPS_MAX_K), where a
 * call per tile cost as much as the tile. stream (only read where beta == 0): store C
 * with non-temporal stores (c 32-byte aligned, ldc a multiple of 32 bytes), else C's rows
 * two strips ahead are prefetched. Optional (NULL: a call per tile). */
typedef void (*fnn_ukr_direct_strips_f32)(int64_t k, int64_t rows, const float *a,
                                          int64_t lda, const float *bp, int64_t npan,
                                          float *c, int64_t ldc, float alpha, float beta,
                                          int stream);
typedef void (*fnn_ukr_direct_strips_f64)(int64_t k, int64_t rows, const double *a,
                                          int64_t lda, const double *bp, int64_t npan,
                                          double *c, int64_t ldc, double alpha, double beta,
                                          int stream);

/* The packed product with A's stride given: A(i, p) at a[p*as + i] (as = MR: a packed
 * panel; as = lda: a transposed A read in place, whose MR values per p are contiguous).
 * Optional (NULL: the driver always packs a transposed A). */
typedef void (*fnn_ukr_strided_f32)(int64_t k, const float *a, int64_t as, const float *bp,
                                    float *c, int64_t ldc, float alpha, float beta);
typedef void (*fnn_ukr_strided_f64)(int64_t k, const double *a, int64_t as, const double *bp,
                                    double *c, int64_t ldc, double alpha, double beta);

/* The implicit-im2col product (a convolution without its column matrix):
 *   C[0:MR, 0:NR] = act(A * Bp + bias) + beta * C   with A(i, p) = rows[i][off[p]]
 * (beta == 0: C is overwritten, not read; bias and relu are only used with beta == 0)
 * rows: MR row pointers (one per output pixel: its receptive field's corner in the input),
 * off: k element offsets (one per (kh, kw, c) of the patch); B: k rows of NR values, row p
 * at bp + p*ldb (ldb = NR: a packed micro-panel; wider: B read in place).
 * bias: NR values, one per column (NULL: none); relu: act is relu (v < 0 ? 0 : v, which
 * keeps NaN and -0.0), else identity. The epilogue runs on the registers before the
 * store: the operations of fnn_bias_act_block, the same bits.
 * Optional (NULL: convolutions lower to columns). */
typedef void (*fnn_ukr_gather_f32)(int64_t k, const float *const *rows, const int64_t *off,
                                   const float *bp, int64_t ldb, const float *bias, int relu,
                                   float beta, float *c, int64_t ldc);
typedef void (*fnn_ukr_gather_f64)(int64_t k, const double *const *rows, const int64_t *off,
                                   const double *bp, int64_t ldb, const double *bias, int relu,
                                   double beta, double *c, int64_t ldc);

/* The packed product on the first rows (1 .. MR-1) of the tile, the edge of C's last
 * rows: C[0:rows, 0:NR] = Ap * Bp (overwrites C; alpha = 1, beta = 0), Ap a packed panel
 * (zero rows past rows). Each element the same accumulation as the full tile, so the same
 * bits, without the work of the missing rows where the kernel has a form for that row
 * count (a batch of 32 leaves 2 rows of a 6-row tile, 8 of a 12-row one); without one it
 * may compute the full tile, so C has room for MR rows. Optional (NULL: the full tile into
 * a scratch tile). */
typedef void (*fnn_ukr_rows_f32)(int rows, int64_t k, const float *ap, const float *bp,
                                 float *c, int64_t ldc);
typedef void (*fnn_ukr_rows_f64)(int rows, int64_t k, const double *ap, const double *bp,
                                 double *c, int64_t ldc);

/* The direct-A product added into rows of C found through pointers (a convolution's dx:
 * col2im without its column matrix): crow[i][0:NR] += A(i, :) * Bp for i < MR, with A as
 * for ukr_direct (MR rows of k values at a + i*lda) and Bp a packed micro-panel; the rows
 * may lie anywhere (distinct). Optional (NULL: products into a tile, then added). */
typedef void (*fnn_ukr_scatter_f32)(int64_t k, const float *a, int64_t lda, const float *bp,
                                    float *const *crow);
typedef void (*fnn_ukr_scatter_f64)(int64_t k, const double *a, int64_t lda,
                                    const double *bp, double *const *crow);
/* The product with both operands read in place, row-major, no transposes, on the first
 * rows (1 .. MR) and cols (1 .. NR) of the tile:
 *   C[0:rows, 0:cols] = alpha * A * B + beta * C     (beta == 0: C is not read)
 * A(i, p) at a[i*lda + p], B(p, j) at b[p*ldb + j]; nothing outside those rows and
 * columns of A, B and C is read or written. For small products, where packing B costs
 * more than it saves. The accumulation of ukr_direct. Optional (NULL: B is packed). */
typedef void (*fnn_ukr_inplace_f32)(int rows, int cols, int64_t k, const float *a,
                                    int64_t lda, const float *b, int64_t ldb, float *c,
                                    int64_t ldc, float alpha, float beta);
typedef void (*fnn_ukr_inplace_f64)(int rows, int cols, int64_t k, const double *a,
                                    int64_t lda, const double *b, int64_t ldb, double *c,
                                    int64_t ldc, double alpha, double beta);

/* The dot-product kernel, for products with few columns (gemm.c: at most DOT_MAX_N):
 *   C[0:rows, 0:n] = alpha * A * B + beta * C     (beta == 0: C is not read)
 * for 1 .. FNN_DOT_ROWS rows of a row-major A (A(i, p) at a[i*lda + p]) and B given
 * transposed (B(p, j) at bt[j*ldbt + p]). Each element is summed along k in the lanes of
 * one vector (lane p mod the vector's length, one FMA each, in the order of p), then
 * across the lanes by a fixed tree: the same bits for a row of A and a column of B
 * whatever the other rows, their count, alignment or threads. All lanes work whatever n
 * (the in-place kernel's vectors run along n: 10 columns leave 6 of 16 float lanes idle,
 * and its 12 broadcasts per 12 FMAs bound it by loads). dot_pack writes bt (n x ldbt) =
 * B^T from B (k x n, ldb), moving values only. Optional (NULL: the in-place kernel). */
#define FNN_DOT_ROWS 8
typedef void (*fnn_ukr_dot_f32)(int rows, int64_t n, int64_t k, const float *a, int64_t lda,
                                const float *bt, int64_t ldbt, float *c, int64_t ldc,
                                float alpha, float beta);
typedef void (*fnn_ukr_dot_f64)(int rows, int64_t n, int64_t k, const double *a,
                                int64_t lda, const double *bt, int64_t ldbt, double *c,
                                int64_t ldc, double alpha, double beta);
typedef void (*fnn_dot_pack_f32)(int64_t k, int64_t n, const float *b, int64_t ldb,
                                 float *bt, int64_t ldbt);
typedef void (*fnn_dot_pack_f64)(int64_t k, int64_t n, const double *b, int64_t ldb,
                                 double *bt, int64_t ldbt);

/* Products with a short K (gemm.c calls it for 1 <= k <= FNN_BREG_MAX_K, A row-major read
 * in place) with B held in registers: C's rows [0, rows) x [0, n) (c, ldc) = alpha * A * B
 * (+ beta * C) (+ bias) (relu), A rows x k (a, lda), B's element (p, j) at b[p*rsb +
 * j*csb], bias NULL or indexed by column (axis 1: bias[j]) or by row (axis 0: bias[i],
 * the rows' own from bias[0]), relu nonzero for relu. The sums and operations of the tile
 * kernels followed by the epilogue (fnn_bias_act_block), in their order: the same bits.
 * beta == 0: C is not read. stream: non-temporal stores where C and ldc are 64-byte
 * aligned. No threads. */
#define FNN_BREG_MAX_K 10
typedef void (*fnn_ukr_breg_f32)(int64_t rows, int64_t n, int64_t k, float alpha,
                                 const float *a, int64_t lda, const float *b, int64_t rsb,
                                 int64_t csb, float beta, const float *bias, int axis,
                                 int relu, int stream, float *c, int64_t ldc);
typedef void (*fnn_ukr_breg_f64)(int64_t rows, int64_t n, int64_t k, double alpha,
                                 const double *a, int64_t lda, const double *b, int64_t rsb,
                                 int64_t csb, double beta, const double *bias, int axis,
                                 int relu, int stream, double *c, int64_t ldc);

/* A micro-kernel and the blocking it wants: MR x NR register tile, MC x KC block of A
 * (per thread, L2), KC x NC panel of B (shared, L3); ukr_direct, ukr_strided, ukr_gather,
 * ukr_rows, ukr_scatter, ukr_inplace, ukr_dot (with dot_pack) and ukr_direct_pack as above
 * or NULL; rows_a_outer: a block whose A is read in place by the direct-A kernel runs
 * A-outer from two B micro-panels on (gemm.c's multiply_block), not only when B's panels
 * outgrow L1; ukr_direct_pair: ukr_direct over two adjacent packed micro-panels at once
 * (bp, then bp + NR*k) into an MR x 2NR tile of C, each half the same sums as
 * ukr_direct's (the same bits), or NULL (gemm.c's A-outer blocks call it on pairs of whole
 * tiles of rows read in place); ukr_breg: the short-K products' kernel (above) or NULL. */
typedef struct {
    int mr, nr, mc, kc, nc;
    fnn_ukr_f32 ukr;
    fnn_ukr_direct_f32 ukr_direct;
    fnn_ukr_strided_f32 ukr_strided;
    fnn_ukr_gather_f32 ukr_gather;
    fnn_ukr_rows_f32 ukr_rows;
    fnn_ukr_scatter_f32 ukr_scatter;
    fnn_ukr_inplace_f32 ukr_inplace;
    fnn_ukr_dot_f32 ukr_dot;
    fnn_dot_pack_f32 dot_pack;
    fnn_ukr_direct_pack_f32 ukr_direct_pack;
    fnn_ukr_direct_strips_f32 ukr_direct_strips;
    int rows_a_outer;
    fnn_ukr_direct_f32 ukr_direct_pair;
    fnn_ukr_breg_f32 ukr_breg;
} fnn_gemm_kernel_f32;
typedef struct {
    int mr, nr, mc, kc, nc;
    fnn_ukr_f64 ukr;
    fnn_ukr_direct_f64 ukr_direct;
    fnn_ukr_strided_f64 ukr_strided;
    fnn_ukr_gather_f64 ukr_gather;
    fnn_ukr_rows_f64 ukr_rows;
    fnn_ukr_scatter_f64 ukr_scatter;
    fnn_ukr_inplace_f64 ukr_inplace;
    fnn_ukr_dot_f64 ukr_dot;
    fnn_dot_pack_f64 dot_pack;
    fnn_ukr_direct_pack_f64 ukr_direct_pack;
    fnn_ukr_direct_strips_f64 ukr_direct_strips;
    int rows_a_outer;
    fnn_ukr_direct_f64 ukr_direct_pair;
    fnn_ukr_breg_f64 ukr_breg;
} fnn_gemm_kernel_f64;

/* Pack rows [0, kc) x columns [0, cols) of op(B) (element (p, j) at b[p*rsb + j*csb]) into
 * ceil(cols / NR) micro-panels (gemm.c): element (p, j) at bp[(j/NR)*NR*kc + p*NR + j%NR],
 * the last panel zero-padded to NR columns. Overwrites bp. */
void fnn_pack_b_f32(int64_t kc, int64_t cols, const float *b, int64_t rsb, int64_t csb, int nr,
                    float *bp);
void fnn_pack_b_f64(int64_t kc, int64_t cols, const double *b, int64_t rsb, int64_t csb,
                    int nr, double *bp);

/* Bias + activation on a rows x cols block of C at global position (i0, j0), row stride
 * ldc, in place, one thread (epilogue.c): c = act(c + bias), the bias indexed by column
 * (axis 1) or row (axis 0), NULL for none; the operations of fnn_bias_act, so the same
 * bits. The epilogue of GEMM tiles (the gather micro-kernels apply the same operations to
 * their registers). */
void fnn_bias_act_block_f32(const float *bias, int axis, int act, int64_t rows, int64_t cols,
                            int64_t i0, int64_t j0, float *c, int64_t ldc);
void fnn_bias_act_block_f64(const double *bias, int axis, int act, int64_t rows, int64_t cols,
                            int64_t i0, int64_t j0, double *c, int64_t ldc);

/* Whether fnn_gemm sums an m x n x k product by the K-split path (gemm.c): then each
 * element of C sums fixed K pieces, another order than the other path's. A caller cutting
 * a product into pieces keeps the bits only if the pieces take the path the whole takes. */
int fnn_gemm_ksplit_f32(int64_t m, int64_t n, int64_t k);
int fnn_gemm_ksplit_f64(int64_t m, int64_t n, int64_t k);

/* The registry (gemm_kernels.c): the kernel with every variant serving an ISA id (what the
 * convolutions use), and the one for an m x n matrix product of depth k (fnn_gemm: the
 * widest ISA's, with the packed, direct-A, strided and row-edge variants, perhaps without
 * gather and scatter). */
const fnn_gemm_kernel_f32 *fnn_gemm_kernel_for_f32(int isa);
const fnn_gemm_kernel_f64 *fnn_gemm_kernel_for_f64(int isa);
const fnn_gemm_kernel_f32 *fnn_gemm_kernel_matmul_for_f32(int isa, int64_t m, int64_t n,
                                                          int64_t k);
const fnn_gemm_kernel_f64 *fnn_gemm_kernel_matmul_for_f64(int isa, int64_t m, int64_t n,
                                                          int64_t k);

/* Micro-kernels. */
void fnn_ukr_ref_f32(int64_t k, const float *ap, const float *bp, float *c, int64_t ldc,
                     float alpha, float beta);
void fnn_ukr_ref_f64(int64_t k, const double *ap, const double *bp, double *c, int64_t ldc,
                     double alpha, double beta);
/* Register-only FMA loops (the benchmark's ceiling, fnn_fma_peak): each ISA's with its
 * micro-kernel's accumulators, one lane per element of its MR x NR tile (the portable
 * one: MR x NR scalars, 8 SSE2 vectors). */
float fnn_fma_loop_ref_f32(int64_t iters, float a, float b);
double fnn_fma_loop_ref_f64(int64_t iters, double a, double b);
#if FNN_X86_KERNELS
/* B's 64-byte-row micro-panels from a row-major B, four rows at a time (gemm.c's
 * pack_rows on AVX2; kernels/gemm_ukr_avx2.c). */
void fnn_pack_rows64_avx2(int64_t kc, int64_t npan, const void *b, int64_t rsb_bytes,
                          void *bp, int64_t pan_bytes);
float fnn_fma_loop_avx2_f32(int64_t iters, float a, float b);
double fnn_fma_loop_avx2_f64(int64_t iters, double a, double b);
float fnn_fma_loop_avx512_f32(int64_t iters, float a, float b);
double fnn_fma_loop_avx512_f64(int64_t iters, double a, double b);
#endif
#if FNN_X86_KERNELS
void fnn_ukr_avx2_direct_strips_6x16_f32(int64_t k, int64_t rows, const float *a,
                                         int64_t lda, const float *bp, int64_t npan,
                                         float *c, int64_t ldc, float alpha, float beta,
                                         int stream);
void fnn_ukr_avx2_direct_strips_6x8_f64(int64_t k, int64_t rows, const double *a,
                                        int64_t lda, const double *bp, int64_t npan,
                                        double *c, int64_t ldc, double alpha, double beta,
                                        int stream);
void fnn_ukr_avx2_direct_6x16_f32(int64_t k, const float *a, int64_t lda, const float *bp,
                                  float *c, int64_t ldc, float alpha, float beta);
void fnn_ukr_avx2_direct_6x8_f64(int64_t k, const double *a, int64_t lda, const double *bp,
                                 double *c, int64_t ldc, double alpha, double beta);
void fnn_ukr_avx2_direct_pack_6x8_f64(int64_t k, const double *a, int64_t lda,
                                      const double *bp, double *c, int64_t ldc, double alpha,
                                      double beta, double *ap);
void fnn_ukr_avx2_strided_6x16_f32(int64_t k, const float *a, int64_t as, const float *bp,
                                   float *c, int64_t ldc, float alpha, float beta);
void fnn_ukr_avx2_strided_6x8_f64(int64_t k, const double *a, int64_t as, const double *bp,
                                  double *c, int64_t ldc, double alpha, double beta);
void fnn_adam_update_avx2_f32(int64_t n, float *p, const float *g, float *m, float *v,
                              float *vhat, float alpha, float omb1, float omb2, float eps,
                              int flush);
void fnn_adam_update_avx2_f64(int64_t n, double *p, const double *g, double *m, double *v,
                              double *vhat, double alpha, double omb1, double omb2,
                              double eps, int flush);
/* activation.c's loops compiled for AVX2 (kernels/activation_avx2.c). */
void fnn_act_fwd_avx2_f32(int64_t n, int kind, float alpha, const float *x, float *y);
void fnn_act_fwd_avx2_f64(int64_t n, int kind, double alpha, const double *x, double *y);
void fnn_act_bwd_avx2_f32(int64_t n, int kind, float alpha, const float *dy, const float *x,
                          const float *y, float *dx);
void fnn_act_bwd_avx2_f64(int64_t n, int kind, double alpha, const double *dy,
                          const double *x, const double *y, double *dx);
/* dropout.c's loops compiled for AVX2 (kernels/dropout_avx2.c). */
void fnn_dropout_avx2_f32(int64_t n, uint64_t seed, uint32_t t, float scale, const float *x,
                          float *mask, float *y);
void fnn_dropout_avx2_f64(int64_t n, uint64_t seed, uint32_t t, double scale,
                          const double *x, double *mask, double *y);
/* A block of relu_mask (epilogue.c) for double on AVX2 lanes (kernels/relu_avx2.c). */
void fnn_relu_mask_block_avx2_f64(int64_t len, const double *x, double *y,
                                  uint8_t *restrict mask);
/* The 2x2 max-pooling window (pool_lanes.h's max4_lanes) on AVX2 lanes (kernels/
 * pool_avx2.c); e: lane_idx, int32 for float, int64 for double. */
void fnn_max4_avx2_f32(int64_t n, const float *const p[4], const int32_t e[4], float *y,
                       int64_t *argmax);
void fnn_max4_avx2_f64(int64_t n, const double *const p[4], const int64_t e[4], double *y,
                       int64_t *argmax);
/* batchnorm.c's bn_pool_fwd window on AVX2 lanes (kernels/pool_avx2.c): the channels
 * done, whole vectors */
int64_t fnn_bn_max4_avx2_f32(int64_t n, const float *const p[4], const float *m,
                             const float *a, const float *b, float *y, uint8_t *pos,
                             float *xm);
int64_t fnn_bn_max4_avx2_f64(int64_t n, const double *const p[4], const double *m,
                             const double *a, const double *b, double *y, uint8_t *pos,
                             double *xm);
/* An NCHW plane of 2x2 stride-2 max pooling (pool.c's maxpool_plane_2x2) on AVX-512 lanes
 * (kernels/pool_avx512.c). */
void fnn_max2x2_plane_avx512_f32(int64_t W, int64_t OH, int64_t OW, const float *xp,
                                 int64_t abase, float *yp, int64_t *ap);
void fnn_max2x2_plane_avx512_f64(int64_t W, int64_t OH, int64_t OW, const double *xp,
                                 int64_t abase, double *yp, int64_t *ap);
/* Direct NCHW convolution rows for stride-1 columns (kernels/conv_nchw_avx2.c): one output
 * row of up to FNN_ROW_F filters (forward), one dy row's input gradient into up to
 * FNN_ROW_F dx rows (added), one image's weight and bias gradient (added). FNN_ROW_F: the
 * rows of their register tile, 4 on AVX2's 16 vector registers, 5 on AVX-512's 32. */
#define FNN_ROW_F_AVX2 4
#define FNN_ROW_F_AVX512 5
#define FNN_ROW_F_MAX FNN_ROW_F_AVX512
void fnn_nchw_fwd_row_avx2_f32(int64_t k, const float *x, const int64_t *off, const float *wp,
                               const float *bias, int relu, int nf, int64_t ow_n, float *y,
                               int64_t ys);
void fnn_nchw_fwd_row_avx2_f64(int64_t k, const double *x, const int64_t *off,
                               const double *wp, const double *bias, int relu, int nf,
                               int64_t ow_n, double *y, int64_t ys);
void fnn_nchw_dx_row_avx2_f32(int64_t k, const float *d, const int64_t *off, const float *wp,
                              int nq, int64_t ow_n, float *const dst[FNN_ROW_F_MAX],
                              int64_t ahead);
void fnn_nchw_dx_row_avx2_f64(int64_t k, const double *d, const int64_t *off,
                              const double *wp, int nq, int64_t ow_n,
                              double *const dst[FNN_ROW_F_MAX], int64_t ahead);
void fnn_nchw_dw_img_avx2_f32(int64_t k, int64_t f, int64_t OH, int64_t OW, const float *dy,
                              const float *x, int64_t xrs, const int64_t *off, float *part,
                              float *db, const float *next);
void fnn_nchw_dw_img_avx2_f64(int64_t k, int64_t f, int64_t OH, int64_t OW, const double *dy,
                              const double *x, int64_t xrs, const int64_t *off, double *part,
                              double *db, const double *next);
/* The same on AVX-512 lanes (kernels/conv_nchw_avx512.c). */
void fnn_nchw_fwd_row_avx512_f32(int64_t k, const float *x, const int64_t *off,
                                 const float *wp, const float *bias, int relu, int nf,
                                 int64_t ow_n, float *y, int64_t ys);
void fnn_nchw_fwd_row_avx512_f64(int64_t k, const double *x, const int64_t *off,
                                 const double *wp, const double *bias, int relu, int nf,
                                 int64_t ow_n, double *y, int64_t ys);
void fnn_nchw_dx_row_avx512_f32(int64_t k, const float *d, const int64_t *off,
                                const float *wp, int nq, int64_t ow_n,
                                float *const dst[FNN_ROW_F_MAX], int64_t ahead);
void fnn_nchw_dx_row_avx512_f64(int64_t k, const double *d, const int64_t *off,
                                const double *wp, int nq, int64_t ow_n,
                                double *const dst[FNN_ROW_F_MAX], int64_t ahead);
void fnn_nchw_dw_img_avx512_f32(int64_t k, int64_t f, int64_t OH, int64_t OW,
                                const float *dy, const float *x, int64_t xrs,
                                const int64_t *off, float *part, float *db,
                                const float *next);
void fnn_nchw_dw_img_avx512_f64(int64_t k, int64_t f, int64_t OH, int64_t OW,
                                const double *dy, const double *x, int64_t xrs,
                                const int64_t *off, double *part, double *db,
                                const double *next);
/* A convolution's gradients from the pooled gradient of the 2x2 max pooling after it
 * (kernels/conv_pool_avx2.c): one image's weight gradient (added into dw^T) and input
 * gradient (added into dx), receptive fields as R runs of L contiguous elements. yp (NULL:
 * none), the pooled relu output: the gradient read is yp > 0 ? gp : 0. */
void fnn_pool_dw_img_avx2_f32(int64_t f, int64_t nwin, const float *gz, const int32_t *cn,
                              const float *x, int64_t R, int64_t L, const int64_t *roff,
                              float *dwt);
void fnn_pool_dw_img_avx2_f64(int64_t f, int64_t nwin, const double *gz, const int32_t *cn,
                              const double *x, int64_t R, int64_t L, const int64_t *roff,
                              double *dwt);
void fnn_pool_dx_img_avx2_f32(int64_t f, int64_t nwin, int64_t nwords, const uint64_t *mask,
                              const float *gz, const int64_t *cq, const float *wt, int64_t R,
                              int64_t L, const int64_t *roff, float *dx);
void fnn_pool_dx_img_avx2_f64(int64_t f, int64_t nwin, int64_t nwords, const uint64_t *mask,
                              const double *gz, const int64_t *cq, const double *wt,
                              int64_t R, int64_t L, const int64_t *roff, double *dx);
void fnn_pool_tables_avx2_f32(int64_t f, int64_t nwin, int64_t PW, int64_t OW,
                              const float *gp, const float *yp, const int64_t *am,
                              const uint8_t *pos, const int64_t *cq, int need_dx, float *gz,
                              int32_t *cn, uint64_t *mask);
void fnn_pool_tables_avx2_f64(int64_t f, int64_t nwin, int64_t PW, int64_t OW,
                              const double *gp, const double *yp, const int64_t *am,
                              const uint8_t *pos, const int64_t *cq, int need_dx, double *gz,
                              int32_t *cn, uint64_t *mask);
/* One pooled row of a 3x3 single-channel convolution with its relu and 2x2 max pooling
 * (kernels/conv_pool_avx2.c; conv.c's conv_pool_implicit). */
void fnn_conv3x3c1_pool_row_avx2_f32(int64_t nwin, int64_t f, const float *x, int64_t ldx,
                                     const float *w, const float *b, int relu, int64_t e0,
                                     int64_t ow, float *y, int64_t *argmax, uint8_t *pos);
void fnn_conv3x3c1_pool_row_avx2_f64(int64_t nwin, int64_t f, const double *x, int64_t ldx,
                                     const double *w, const double *b, int relu, int64_t e0,
                                     int64_t ow, double *y, int64_t *argmax, uint8_t *pos);
/* The pooled implicit dW's product over a run of its window-ordered pixel rows without
 * packing B (kernels/conv_pool_avx2.c; conv.c's conv_dw_implicit). */
void fnn_pool_dw_rows_avx2_f32(int64_t f, int64_t q0, int64_t len, int64_t PH, int64_t PW,
                               int64_t OW, const float *gp, const float *yp,
                               const int64_t *am, const uint8_t *pos, const int64_t *pix,
                               const float *x,
                               int64_t P, const int64_t *off, int64_t ld3, int beta,
                               float *part);
void fnn_pool_dw_rows_avx2_f64(int64_t f, int64_t q0, int64_t len, int64_t PH, int64_t PW,
                               int64_t OW, const double *gp, const double *yp,
                               const int64_t *am, const uint8_t *pos, const int64_t *pix,
                               const double *x,
                               int64_t P, const int64_t *off, int64_t ld3, int beta,
                               double *part);
void fnn_ukr_avx2_rows_6x16_f32(int rows, int64_t k, const float *ap, const float *bp,
                                float *c, int64_t ldc);
void fnn_ukr_avx2_rows_6x8_f64(int rows, int64_t k, const double *ap, const double *bp,
                               double *c, int64_t ldc);
void fnn_ukr_avx2_scatter_6x16_f32(int64_t k, const float *a, int64_t lda, const float *bp,
                                   float *const *crow);
void fnn_ukr_avx2_scatter_6x8_f64(int64_t k, const double *a, int64_t lda, const double *bp,
                                  double *const *crow);
void fnn_ukr_avx2_gather_6x16_f32(int64_t k, const float *const *rows, const int64_t *off,
                                  const float *bp, int64_t ldb, const float *bias, int relu,
                                  float beta, float *c, int64_t ldc);
void fnn_ukr_avx2_gather_6x8_f64(int64_t k, const double *const *rows, const int64_t *off,
                                 const double *bp, int64_t ldb, const double *bias, int relu,
                                 double beta, double *c, int64_t ldc);
void fnn_ukr_avx2_inplace_6x16_f32(int rows, int cols, int64_t k, const float *a, int64_t lda,
                                   const float *b, int64_t ldb, float *c, int64_t ldc,
                                   float alpha, float beta);
void fnn_ukr_avx2_inplace_6x8_f64(int rows, int cols, int64_t k, const double *a, int64_t lda,
                                  const double *b, int64_t ldb, double *c, int64_t ldc,
                                  double alpha, double beta);
void fnn_ukr_avx2_6x16_f32(int64_t k, const float *ap, const float *bp, float *c, int64_t ldc,
                           float alpha, float beta);
void fnn_ukr_avx512_256_direct_6x32_f32(int64_t k, const float *a, int64_t lda,
                                        const float *bp, float *c, int64_t ldc, float alpha,
                                        float beta);
void fnn_breg_avx512_f32(int64_t rows, int64_t n, int64_t k, float alpha, const float *a,
                         int64_t lda, const float *b, int64_t rsb, int64_t csb, float beta,
                         const float *bias, int axis, int relu, int stream, float *c,
                         int64_t ldc);
void fnn_ukr_avx2_6x8_f64(int64_t k, const double *ap, const double *bp, double *c,
                          int64_t ldc, double alpha, double beta);
void fnn_ukr_avx512_12x32_f32(int64_t k, const float *ap, const float *bp, float *c,
                              int64_t ldc, float alpha, float beta);
void fnn_ukr_avx512_12x16_f64(int64_t k, const double *ap, const double *bp, double *c,
                              int64_t ldc, double alpha, double beta);
void fnn_ukr_avx512_strided_12x32_f32(int64_t k, const float *a, int64_t as, const float *bp,
                                      float *c, int64_t ldc, float alpha, float beta);
void fnn_ukr_avx512_strided_12x16_f64(int64_t k, const double *a, int64_t as,
                                      const double *bp, double *c, int64_t ldc, double alpha,
                                      double beta);
void fnn_ukr_avx512_direct_12x32_f32(int64_t k, const float *a, int64_t lda, const float *bp,
                                     float *c, int64_t ldc, float alpha, float beta);
void fnn_ukr_avx512_direct_12x16_f64(int64_t k, const double *a, int64_t lda,
                                     const double *bp, double *c, int64_t ldc, double alpha,
                                     double beta);
void fnn_ukr_avx512_direct_pack_12x32_f32(int64_t k, const float *a, int64_t lda,
                                          const float *bp, float *c, int64_t ldc, float alpha,
                                          float beta, float *ap);
void fnn_ukr_avx512_direct_pack_12x16_f64(int64_t k, const double *a, int64_t lda,
                                          const double *bp, double *c, int64_t ldc,
                                          double alpha, double beta, double *ap);
void fnn_ukr_avx512_rows_12x32_f32(int rows, int64_t k, const float *ap, const float *bp,
                                   float *c, int64_t ldc);
void fnn_ukr_avx512_rows_12x16_f64(int rows, int64_t k, const double *ap, const double *bp,
                                   double *c, int64_t ldc);
void fnn_ukr_avx512_gather_12x32_f32(int64_t k, const float *const *rows, const int64_t *off,
                                     const float *bp, int64_t ldb, const float *bias, int relu,
                                     float beta, float *c, int64_t ldc);
void fnn_ukr_avx512_scatter_12x32_f32(int64_t k, const float *a, int64_t lda, const float *bp,
                                      float *const *crow);
void fnn_ukr_avx512_gather_12x16_f64(int64_t k, const double *const *rows, const int64_t *off,
                                     const double *bp, int64_t ldb, const double *bias, int relu,
                                     double beta, double *c, int64_t ldc);
void fnn_ukr_avx512_scatter_12x16_f64(int64_t k, const double *a, int64_t lda, const double *bp,
                                      double *const *crow);
void fnn_ukr_avx512_inplace_12x32_f32(int rows, int cols, int64_t k, const float *a, int64_t lda,
                                      const float *b, int64_t ldb, float *c, int64_t ldc,
                                      float alpha, float beta);
void fnn_ukr_avx512_inplace_12x16_f64(int rows, int cols, int64_t k, const double *a,
                                      int64_t lda, const double *b, int64_t ldb, double *c,
                                      int64_t ldc, double alpha, double beta);
/* The same with one vector per row, for products with at most 16 float or 8 double
 * columns. */
void fnn_ukr_avx512_12x16_f32(int64_t k, const float *ap, const float *bp, float *c, int64_t ldc,
                              float alpha, float beta);
void fnn_ukr_avx512_strided_12x16_f32(int64_t k, const float *a, int64_t as, const float *bp, float *c,
                                      int64_t ldc, float alpha, float beta);
void fnn_ukr_avx512_direct_12x16_f32(int64_t k, const float *a, int64_t lda, const float *bp, float *c,
                                     int64_t ldc, float alpha, float beta);
void fnn_ukr_avx512_rows_12x16_f32(int rows, int64_t k, const float *ap, const float *bp, float *c,
                                   int64_t ldc);
void fnn_ukr_avx512_12x8_f64(int64_t k, const double *ap, const double *bp, double *c, int64_t ldc,
                              double alpha, double beta);
void fnn_ukr_avx512_strided_12x8_f64(int64_t k, const double *a, int64_t as, const double *bp, double *c,
                                      int64_t ldc, double alpha, double beta);
void fnn_ukr_avx512_direct_12x8_f64(int64_t k, const double *a, int64_t lda, const double *bp, double *c,
                                     int64_t ldc, double alpha, double beta);
void fnn_ukr_avx512_rows_12x8_f64(int rows, int64_t k, const double *ap, const double *bp, double *c,
                                   int64_t ldc);
void fnn_ukr_avx512_inplace_12x16_f32(int rows, int cols, int64_t k, const float *a, int64_t lda,
                                      const float *b, int64_t ldb, float *c, int64_t ldc,
                                      float alpha, float beta);
void fnn_ukr_avx512_inplace_12x8_f64(int rows, int cols, int64_t k, const double *a,
                                     int64_t lda, const double *b, int64_t ldb, double *c,
                                     int64_t ldc, double alpha, double beta);
void fnn_dot_avx512_f32(int rows, int64_t n, int64_t k, const float *a, int64_t lda,
                        const float *bt, int64_t ldbt, float *c, int64_t ldc, float alpha,
                        float beta);
void fnn_dot_avx512_f64(int rows, int64_t n, int64_t k, const double *a, int64_t lda,
                        const double *bt, int64_t ldbt, double *c, int64_t ldc, double alpha,
                        double beta);
void fnn_dot_pack_avx512_f32(int64_t k, int64_t n, const float *b, int64_t ldb, float *bt,
                             int64_t ldbt);
void fnn_dot_pack_avx512_f64(int64_t k, int64_t n, const double *b, int64_t ldb, double *bt,
                             int64_t ldbt);
void fnn_dot_avx2_f32(int rows, int64_t n, int64_t k, const float *a, int64_t lda,
                      const float *bt, int64_t ldbt, float *c, int64_t ldc, float alpha,
                      float beta);
void fnn_dot_avx2_f64(int rows, int64_t n, int64_t k, const double *a, int64_t lda,
                      const double *bt, int64_t ldbt, double *c, int64_t ldc, double alpha,
                      double beta);
void fnn_dot_pack_avx2_f32(int64_t k, int64_t n, const float *b, int64_t ldb, float *bt,
                           int64_t ldbt);
void fnn_dot_pack_avx2_f64(int64_t k, int64_t n, const double *b, int64_t ldb, double *bt,
                           int64_t ldbt);
#endif

/* Bias gradient: db[c] = sum over outer, inner of dy[o, c, i] (overwrites db). */
void fnn_bias_grad_f32(int64_t outer, int64_t c, int64_t inner, const float *dy, float *db);
void fnn_bias_grad_f64(int64_t outer, int64_t c, int64_t inner, const double *dy, double *db);
void fnn_relu_bias_grad_f32(int64_t outer, int64_t c, const float *dy, const float *y,
                            float *db);
void fnn_relu_bias_grad_f64(int64_t outer, int64_t c, const double *dy, const double *y,
                            double *db);

#endif
