/* cpu.c: run-time ISA detection and selection, and the thread count.
 *
 * One wheel runs on every x86-64: ISA-specific kernels live in their own files compiled
 * with their own flags (kernels/gemm_ukr_avx2.c, kernels/gemm_ukr_avx512.c,
 * kernels/gemm_ukr256_avx512.c) and are only called after fnn_isa_supported() (for ids
 * 0-2: fnn_cpu_max_isa()) has confirmed the CPU and the OS support them.
 */
#include "fastnn.h"
#include "fnn_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <immintrin.h>
#include <intrin.h>
#endif
#if FNN_X86_KERNELS && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

#ifndef FNN_EMULATE_AVX512
#define FNN_EMULATE_AVX512 0
#endif

static int g_isa = -1;     /* selected ISA, -1 = not chosen yet (default_isa) */
static int g_threads = 0;  /* cap set by fnn_set_num_threads, 0 = none */

/* The highest of the ordered ISA levels this CPU and OS support: 2 AVX-512F, 1 AVX2+FMA,
 * 0 generic (id 3, avx512_256, stands beside 2: fnn_isa_supported). The emulated
 * AVX-512 test build (FNN_EMULATE_AVX512, kernels/avx512_emulated.h) runs its AVX-512
 * kernels on AVX2 + FMA. */
int fnn_cpu_max_isa(void)
{
#if FNN_X86_KERNELS && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FNN_EMULATE_AVX512 ? 2 : 1;
    return 0;
#elif FNN_X86_KERNELS && defined(_MSC_VER)
    int r[4];
    __cpuid(r, 1);
    int osxsave = (r[2] >> 27) & 1, fma = (r[2] >> 12) & 1;
    if (!osxsave)
        return 0;
    unsigned long long xcr0 = _xgetbv(0);
    __cpuidex(r, 7, 0);
    int avx2 = (r[1] >> 5) & 1, avx512f = (r[1] >> 16) & 1;
    if (avx512f && (xcr0 & 0xE6) == 0xE6)
        return 2;
    if (avx2 && fma && (xcr0 & 0x6) == 0x6)
        return 1;
    return 0;
#else
    return 0;
#endif
}

/* Whether this CPU and OS support AVX-512VL (with AVX-512F): the "avx512_256" ISA's
 * kernels use its 32 ymm registers. The emulated AVX-512 test build compiles them for AVX2
 * (kernels/gemm_ukr256_avx512.c), so there it follows fnn_cpu_max_isa. */
static int cpu_avx512vl(void)
{
    if (fnn_cpu_max_isa() < 2)
        return 0;
    if (FNN_EMULATE_AVX512)
        return 1;
#if FNN_X86_KERNELS && (defined(__GNUC__) || defined(__clang__))
    return __builtin_cpu_supports("avx512vl") != 0;
#elif FNN_X86_KERNELS && defined(_MSC_VER)
    int r[4];
    __cpuidex(r, 7, 0);
    return (r[1] >> 31) & 1;
#else
    return 0;
#endif
}

/* Whether this CPU can run ISA id `isa`: 0-2 up to fnn_cpu_max_isa, 3 (FNN_ISA_AVX512_256)
 * where it has AVX-512F and VL. */
int fnn_isa_supported(int isa)
{
    if (isa == FNN_ISA_AVX512_256)
        return cpu_avx512vl();
    return isa >= 0 && isa <= fnn_cpu_max_isa();
}

/* CPUID `leaf`, subleaf `sub`, into r[4] = eax, ebx, ecx, edx (zeros where there is no
 * CPUID, or no such leaf with GCC and Clang). */
static void cpuid(unsigned leaf, unsigned sub, unsigned r[4])
{
    r[0] = r[1] = r[2] = r[3] = 0;
#if FNN_X86_KERNELS && (defined(__GNUC__) || defined(__clang__))
    __get_cpuid_count(leaf, sub, &r[0], &r[1], &r[2], &r[3]);
#elif FNN_X86_KERNELS && defined(_MSC_VER)
    int v[4];
    __cpuidex(v, (int)leaf, (int)sub);
    for (int i = 0; i < 4; i++)
        r[i] = (unsigned)v[i];
#else
    (void)leaf;
    (void)sub;
#endif
}

/* An AMD family 19h CPU (Zen 3, Zen 4): where it has AVX-512 (Zen 4), each 512-bit
 * operation runs as two 256-bit halves, so AVX-512 adds no arithmetic throughput. */
static int amd_family_19h(void)
{
    unsigned r[4];
    cpuid(0, 0, r);
    if (r[1] != 0x68747541u || r[3] != 0x69746e65u || r[2] != 0x444d4163u) /* AuthenticAMD */
        return 0;
    cpuid(1, 0, r);
    unsigned family = (r[0] >> 8) & 0xF;
    if (family == 0xF)
        family += (r[0] >> 20) & 0xFF;
    return family == 0x19;
}

/* A value computed once and cached in *p (0 = not yet) by whichever thread gets there
 * first: the same value whoever computes it, so relaxed atomics (volatile with MSVC) only
 * keep the race defined. */
static int cached_load(const int *p)
{
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_load_n(p, __ATOMIC_RELAXED);
#else
    return *(const volatile int *)p;
#endif
}

static void cached_store(int *p, int v)
{
#if defined(__GNUC__) || defined(__clang__)
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
#else
    *(volatile int *)p = v;
#endif
}

/* PRFCHW: CPUID 0x80000001, ecx bit 8, where the CPU has that leaf (contract:
 * fnn_internal.h). Asked once: cached as 1 + the answer. */
int fnn_cpu_prefetchw(void)
{
    static int cached = 0;
    int v = cached_load(&cached);
    if (v == 0) {
        unsigned r[4];
        cpuid(0x80000000u, 0, r);
        const unsigned top = r[0];
        r[2] = 0; /* leaf 0x80000000's ecx is part of the vendor string */
        if (top >= 0x80000001u)
            cpuid(0x80000001u, 0, r);
        v = 1 + (int)((r[2] >> 8) & 1);
        cached_store(&cached, v);
    }
    return v - 1;
}

/* The L3 cache's size in bytes as CPUID describes it (contract: fastnn.h): the
 * deterministic cache parameters, leaf 4 on Intel and others, 0x8000001D on AMD and Hygon
 * with TOPOEXT; 0 where they do not tell. Not AMD's leaf 0x80000006: on the Zen 4 VM it
 * reports 320 MB (the socket's) where 0x8000001D and /sys report 32 MB (the cores'
 * complex's). Asked once: cached in KB, as 1 + the size. */
int64_t fnn_cpu_l3_bytes(void)
{
    static int cached = 0;
    int v = cached_load(&cached);
    if (v == 0) {
        unsigned r[4], top, ext;
        int64_t bytes = 0;
        cpuid(0, 0, r);
        top = r[0];
        /* "Auth"enticAMD, "Hygo"nGenuine (whose leaf 4 is reserved) */
        const int amd = r[1] == 0x68747541u || r[1] == 0x6f677948u;
        cpuid(0x80000000u, 0, r);
        ext = r[0];
        unsigned leaf = 4;
        if (amd) {
            cpuid(0x80000001u, 0, r);
            leaf = ext >= 0x8000001Du && (r[2] >> 22 & 1) ? 0x8000001Du : 0;
        } else if (top < 4) {
            leaf = 0;
        }
        for (unsigned sub = 0; leaf && sub < 16; sub++) {
            cpuid(leaf, sub, r);
            if ((r[0] & 0x1F) == 0) /* no more caches */
                break;
            if ((r[0] >> 5 & 7) == 3)
                bytes = (int64_t)((r[1] >> 22) + 1) * ((r[1] >> 12 & 0x3FF) + 1) *
                        ((r[1] & 0xFFF) + 1) * ((int64_t)r[2] + 1);
        }
        v = 1 + (int)(bytes >> 10 < (1 << 30) ? bytes >> 10 : 0);
        cached_store(&cached, v);
    }
    return (int64_t)(v - 1) << 10;
}

/* The ISA used unless fnn_set_isa chose another: the best available, except on AMD Zen 4
 * (AVX-512 in two 256-bit halves): avx512_256, the AVX2 kernels with a 32-register direct-A
 * pair kernel (kernels/gemm_ukr256_avx512.c: 15488x288x64 0.98x the time of AVX2, the CNN's
 * epoch level, 3.26 vs 3.24 s, 2026-12-05), as AVX2 before it, whose GEMM kernel ran 5-12%
 * faster than the AVX-512 one (2026-12-02,
 * in-process A/B, 1024^3 float 1 thread 91 vs 81 GFLOPS, 2 threads 150-162 vs 137-142,
 * double 79-81 vs 67-74, 2048^3 float 157 vs 149). Again on 2026-12-05 (2 threads, the
 * two ISAs alternating in one process, medians of 15): the large products level (AVX-512
 * 0.99x the time at 1024^3 and 2048^3 float, 1.00x double), 15488x288x64 1.17x,
 * 86528x9x32 1.06x, 128x128x10 1.07x; the CNN's epoch 3.40 s against 3.33. */
static int default_isa(void)
{
    const int best = fnn_cpu_max_isa();
    /* the emulated AVX-512 test build tests its AVX-512 kernels by default on Zen 4 too */
    if (best == 2 && amd_family_19h() && !FNN_EMULATE_AVX512)
        return cpu_avx512vl() ? FNN_ISA_AVX512_256 : 1;
    return best;
}

/* The ISA in use (default_isa unless fnn_set_isa chose another). */
int fnn_get_isa(void)
{
    if (g_isa < 0)
        g_isa = default_isa();
    return g_isa;
}

/* Select an ISA; returns 0, or -1 (and changes nothing) if this CPU cannot run it. */
int fnn_set_isa(int isa)
{
    if (!fnn_isa_supported(isa))
        return -1;
    g_isa = isa;
    return 0;
}

/* 1 in the emulated AVX-512 test build (its "avx512" is SIMDe on AVX2: slow), else 0. */
int fnn_isa_emulated(void)
{
    return FNN_EMULATE_AVX512;
}

const char *fnn_isa_name(int isa)
{
    switch (isa) {
    case 0: return "generic";
    case 1: return "avx2";
    case 2: return "avx512";
    case 3: return "avx512_256";
    default: return "unknown";
    }
}

/* More threads than this is a mistake (OMP_NUM_THREADS=100000 asked for a workspace per
 * thread: 36 GiB for a 300 x 300 product); fastnn.set_num_threads refuses it likewise. */
#define FNN_MAX_THREADS 1024

/* Cap the threads of every kernel at n, 1 <= n <= FNN_MAX_THREADS (also sets the OpenMP
 * default of this thread). */
void fnn_set_num_threads(int n)
{
    if (n < 1)
        n = 1;
    if (n > FNN_MAX_THREADS)
        n = FNN_MAX_THREADS;
    g_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

/* OpenMP's default thread count for this thread (OMP_NUM_THREADS, threadpoolctl; 1
 * without OpenMP), capped at FNN_MAX_THREADS. */
static int omp_default(void)
{
#ifdef _OPENMP
    const int n = omp_get_max_threads();
#else
    const int n = 1;
#endif
    return n < 1 ? 1 : n > FNN_MAX_THREADS ? FNN_MAX_THREADS : n;
}

/* Threads a kernel may use now, as reported to Python: omp_default(), capped by
 * fnn_set_num_threads (kernels' regions also cap it at the processors:
 * fnn_kernel_threads). */
int fnn_get_num_threads(void)
{
    const int n = omp_default();
    return g_threads > 0 && g_threads < n ? g_threads : n;
}

/* Processors this process may run on (affinity-aware; 1 without OpenMP), read once:
 * libgomp's omp_get_num_procs asks the kernel for the affinity mask on every call (a
 * system call: read per kernel call, ops.matmul of 128 x 128 x 10 floats took 7.9-8.0 us
 * instead of 7.0). Threads racing to fill it store the same value. */
static int procs(void)
{
    static int cached = 0;
    int p = cached_load(&cached);
    if (p == 0) {
#ifdef _OPENMP
        p = omp_get_num_procs();
#endif
        p = p < 1 ? 1 : p;
        cached_store(&cached, p);
    }
    return p;
}

/* The most threads a kernel called from this OS thread can use: OpenMP's default for this
 * thread, capped at the processors and FNN_MAX_THREADS. Workspaces are sized for it and
 * laid out by it, never by fnn_get_num_threads(): another thread's fnn_set_num_threads
 * can raise that between a workspace's sizing and its use (a NHWC convolution's backward
 * wrote past its workspace, sized for 1 thread and run on 2, when another Python thread
 * switched the count between 1 and 2: a segfault), but it only changes the OpenMP default
 * of its own thread. */
int fnn_max_threads(void)
{
    const int n = omp_default(), p = procs();
    return n < p ? n : p;
}

/* Threads a kernel's region uses now: fnn_get_num_threads() capped at fnn_max_threads()
 * (more threads than processors only wait for each other; fastnn.set_num_threads(1024) on
 * 2 CPUs asked a 39 GiB workspace of a 64 x 16 x 16 x 16 convolution). */
int fnn_kernel_threads(void)
{
    const int n = fnn_get_num_threads(), b = fnn_max_threads();
    return n < b ? n : b;
}

/* The end of fnn_run's region for one of its nth threads, which began its work at t0
 * (omp_get_wtime); *arrived (shared, 0 at the start) counts the threads done. A thread done
 * before the others spins until they all are, for at most a quarter of its own work time
 * and JOIN_MAX_S, and then goes on to the region's closing barrier, where libgomp sleeps
 * after about 11 us (GOMP_SPINCOUNT=1000, c_backend.py) and waking it takes tens of
 * microseconds: in-process A/B, 2 threads, the Xeon, 2026-12-03, an 86528 x 9 x 32 float
 * product (fnn_run's in-place path) 0.86-0.89x the time. (The same join before every
 * barrier of the GEMM's main path, the convolution, pooling and elementwise kernels: 1024^3
 * 1.02x, 2048^3 0.99x, the drop-in's step unchanged; not kept.)
 * A spin that runs out means the late thread is not running (another process has its
 * core), and spinning on would keep it off this one: then the next joins, 1, 2, 4 ... 256
 * of them (doubling while spins keep running out, reset by one that does not), do not
 * spin: with a busy process beside it (load 3 on the 2 cores), A/B 0.99-1.01, where
 * spinning every time was 1.03-1.06. (The counters are shared by all threads without
 * locks: a lost update only changes how many joins skip.) */
#define JOIN_MAX_S 100e-6
#define JOIN_MAX_SKIP 256

#if defined(_OPENMP) && (defined(__GNUC__) || defined(__clang__))
static int g_join_skip = 0, g_join_backoff = 0;

static void join(int *arrived, int nth, double t0)
{
    if (__atomic_add_fetch(arrived, 1, __ATOMIC_ACQ_REL) >= nth)
        return;
    if (__atomic_load_n(&g_join_skip, __ATOMIC_RELAXED) > 0) {
        __atomic_sub_fetch(&g_join_skip, 1, __ATOMIC_RELAXED);
        return;
    }
    const double start = omp_get_wtime();
    double limit = (start - t0) * 0.25;
    if (limit > JOIN_MAX_S)
        limit = JOIN_MAX_S;
    for (unsigned i = 1;; i++) {
        if (__atomic_load_n(arrived, __ATOMIC_ACQUIRE) >= nth) {
            __atomic_store_n(&g_join_backoff, 0, __ATOMIC_RELAXED);
            return;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (i % 64 == 0 && omp_get_wtime() - start > limit) {
            int skip = __atomic_load_n(&g_join_backoff, __ATOMIC_RELAXED);
            skip = skip ? 2 * skip : 1;
            if (skip > JOIN_MAX_SKIP)
                skip = JOIN_MAX_SKIP;
            __atomic_store_n(&g_join_backoff, skip, __ATOMIC_RELAXED);
            __atomic_store_n(&g_join_skip, skip, __ATOMIC_RELAXED);
            return;
        }
    }
}
#define HAVE_JOIN 1
#endif

/* fn(ctx, tid, nth) on up to nt threads, tid = 0 .. nth - 1: in a parallel region when
 * nt > 1 (a team of one when nested in another region), else called directly: entering
 * even an inactive region (`if (nt > 1)`) costs libgomp a team of one, 0.2 us in a loop of
 * its own and 0.3-0.8 us per small product in fastnn (raw C calls, one thread, the Xeon,
 * 2026-12-02: 8 x 64 x 2 float 0.72 -> 0.43 us, 128 x 128 x 10 4.1 -> 3.75). For kernels
 * whose one-thread calls can take a few microseconds (the small products' paths); where
 * a call's work dwarfs that, `#pragma omp parallel ... if (nt > 1)` stays. fn must hold no
 * barrier or other construct that binds to a region: called directly inside another
 * team's region (dense.c's), it would bind to that team and wait for threads that never
 * come. */
void fnn_run(int nt, void (*fn)(const void *ctx, int tid, int nth), const void *ctx)
{
    if (nt <= 1) {
        fn(ctx, 0, 1);
        return;
    }
#ifdef HAVE_JOIN
    int arrived = 0;
#pragma omp parallel num_threads(nt)
    {
        const int nth = fnn_team_size();
        const double t0 = nth > 1 ? omp_get_wtime() : 0;
        fn(ctx, fnn_thread_num(), nth);
        if (nth > 1)
            join(&arrived, nth, t0);
    }
#else
#pragma omp parallel num_threads(nt)
    fn(ctx, fnn_thread_num(), fnn_team_size());
#endif
}

/* Threads for a kernel touching `work` elements: 1 when it is too small to split. */
int fnn_threads_for(int64_t work)
{
    return work < FNN_PAR_MIN ? 1 : fnn_kernel_threads();
}

/* Threads for a product of `macs` multiply-adds: 1 when it is too small to split. */
int fnn_threads_for_macs(int64_t macs)
{
    return macs < FNN_PAR_MIN_MACS ? 1 : fnn_kernel_threads();
}
