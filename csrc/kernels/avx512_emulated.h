/* avx512_emulated.h: a TEST build's stand-in for AVX-512F on a CPU without it (cmake
 * -DFASTNN_EMULATE_AVX512=ON, tools/avx512_emulated.sh). Force-included (-include) before
 * each AVX-512 kernel file (kernels/..._avx512.c), then compiled with -mavx2 -mfma: the
 * _mm512_* intrinsics become SIMDe's portable versions (https://github.com/simd-everywhere/simde,
 * Debian's libsimde-dev), so the AVX-512 kernels run, bit for bit in their order of
 * operations, on an AVX2 machine and the test suite checks them there. SIMDe 0.7.4 lacks
 * the 12 functions below and two aliases; they follow Intel's definitions lane by lane (a
 * masked load reads only the lanes its mask enables, as the instruction's fault
 * suppression allows; the reduction adds in the order of GCC's _mm512_reduce_add_*), and
 * each name is #undef'd first, for a SIMDe that defines it. Never in a release build: it
 * is slow. */
#ifndef FNN_AVX512_EMULATED_H
#define FNN_AVX512_EMULATED_H
#define FNN_AVX512_SHIM 1

#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

static inline simde__m512 emu_maskz_loadu_ps(simde__mmask16 k, const void *p)
{
    simde__m512_private r;
    for (int i = 0; i < 16; i++)
        r.f32[i] = (k >> i) & 1 ? ((const float *)p)[i] : 0.0f;
    return simde__m512_from_private(r);
}
static inline simde__m512d emu_maskz_loadu_pd(simde__mmask8 k, const void *p)
{
    simde__m512d_private r;
    for (int i = 0; i < 8; i++)
        r.f64[i] = (k >> i) & 1 ? ((const double *)p)[i] : 0.0;
    return simde__m512d_from_private(r);
}
static inline void emu_mask_storeu_ps(void *p, simde__mmask16 k, simde__m512 a)
{
    simde__m512_private v = simde__m512_to_private(a);
    for (int i = 0; i < 16; i++)
        if ((k >> i) & 1)
            ((float *)p)[i] = v.f32[i];
}
static inline void emu_mask_storeu_pd(void *p, simde__mmask8 k, simde__m512d a)
{
    simde__m512d_private v = simde__m512d_to_private(a);
    for (int i = 0; i < 8; i++)
        if ((k >> i) & 1)
            ((double *)p)[i] = v.f64[i];
}
static inline void emu_mask_storeu_epi64(void *p, simde__mmask8 k, simde__m512i a)
{
    simde__m512i_private v = simde__m512i_to_private(a);
    for (int i = 0; i < 8; i++)
        if ((k >> i) & 1)
            ((int64_t *)p)[i] = v.i64[i];
}
/* a non-temporal store: a plain one, on the address the instruction requires (64-byte
 * aligned: a misaligned one traps, as the instruction faults) */
static inline void emu_stream_ps(void *p, simde__m512 a)
{
    if ((uintptr_t)p % 64)
        __builtin_trap();
    simde_mm512_storeu_ps(p, a);
}
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps emu_maskz_loadu_ps
#undef _mm512_stream_ps
#define _mm512_stream_ps emu_stream_ps
#undef _mm512_maskz_loadu_pd
#define _mm512_maskz_loadu_pd emu_maskz_loadu_pd
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps emu_mask_storeu_ps
#undef _mm512_mask_storeu_pd
#define _mm512_mask_storeu_pd emu_mask_storeu_pd
#undef _mm512_mask_storeu_epi64
#define _mm512_mask_storeu_epi64 emu_mask_storeu_epi64
/* SIMDe has these two, without their _mm512_ aliases */
#undef _mm512_shuffle_f32x4
#define _mm512_shuffle_f32x4 simde_mm512_shuffle_f32x4
#undef _mm512_shuffle_f64x2
#define _mm512_shuffle_f64x2 simde_mm512_shuffle_f64x2
static inline float emu_cvtss_f32(simde__m512 a) { return simde__m512_to_private(a).f32[0]; }
static inline double emu_cvtsd_f64(simde__m512d a) { return simde__m512d_to_private(a).f64[0]; }
/* the order of GCC's _mm512_reduce_add_*: halves, quarters, then pairs */
static inline float emu_reduce_add_ps(simde__m512 a)
{
    simde__m512_private x = simde__m512_to_private(a);
    float h[8], q[4];
    for (int i = 0; i < 8; i++)
        h[i] = x.f32[i + 8] + x.f32[i];
    for (int i = 0; i < 4; i++)
        q[i] = h[i + 4] + h[i];
    return (q[0] + q[2]) + (q[1] + q[3]);
}
static inline double emu_reduce_add_pd(simde__m512d a)
{
    simde__m512d_private x = simde__m512d_to_private(a);
    double h[4];
    for (int i = 0; i < 4; i++)
        h[i] = x.f64[i + 4] + x.f64[i];
    return (h[0] + h[2]) + (h[1] + h[3]);
}
static inline simde__m512 emu_i32gather_ps(simde__m512i idx, const void *base, int scale)
{
    simde__m512i_private ix = simde__m512i_to_private(idx);
    simde__m512_private r;
    for (int i = 0; i < 16; i++)
        memcpy(&r.f32[i], (const char *)base + (int64_t)ix.i32[i] * scale, 4);
    return simde__m512_from_private(r);
}
static inline simde__m512d emu_i32gather_pd(simde__m256i idx, const void *base, int scale)
{
    simde__m256i_private ix = simde__m256i_to_private(idx);
    simde__m512d_private r;
    for (int i = 0; i < 8; i++)
        memcpy(&r.f64[i], (const char *)base + (int64_t)ix.i32[i] * scale, 8);
    return simde__m512d_from_private(r);
}
#undef _mm512_cvtss_f32
#define _mm512_cvtss_f32 emu_cvtss_f32
#undef _mm512_cvtsd_f64
#define _mm512_cvtsd_f64 emu_cvtsd_f64
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps emu_reduce_add_ps
#undef _mm512_reduce_add_pd
#define _mm512_reduce_add_pd emu_reduce_add_pd
#undef _mm512_i32gather_ps
#define _mm512_i32gather_ps emu_i32gather_ps
#undef _mm512_i32gather_pd
#define _mm512_i32gather_pd emu_i32gather_pd

#endif /* FNN_AVX512_EMULATED_H */
