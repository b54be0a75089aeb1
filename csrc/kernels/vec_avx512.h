/* vec_avx512.h: the AVX-512F lane vocabulary of the type-generic kernels, the same names as
 * vec_avx2.h with 16 float or 8 double lanes and k-register masks (masked-off lanes are
 * neither read, loading as zero, nor written). Include after fnn_real.h, in a file compiled
 * with -mavx512f -mfma. */
#ifndef FNN_VEC_AVX512_H
#define FNN_VEC_AVX512_H

#include <immintrin.h>

/* VFN(name): a kernel's name for this ISA and type, fnn_<name>_avx512_<f32|f64>. */
#define VFN(name) FNN_CAT(FNN_CAT(FNN_CAT(fnn_, name), _avx512), FNN_SFX)
#define VREGS 32 /* vector registers */

#if FNN_PREC == 32
#define VL 16
typedef __m512 vec;
typedef __mmask16 vmask;
#define vzero _mm512_setzero_ps
#define vset1 _mm512_set1_ps
#define vload _mm512_loadu_ps
#define vstore _mm512_storeu_ps
#define vmload(p, m) _mm512_maskz_loadu_ps(m, p)
#define vmstore(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define vfma _mm512_fmadd_ps
#define vadd _mm512_add_ps
#define vmul _mm512_mul_ps
/* v < 0 ? +0.0 : v (NaN and -0.0 kept), as vec_avx2.h's blend */
#define vrelu(v) _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, vzero(), _CMP_LT_OQ), vzero())
#define hsum _mm512_reduce_add_ps
#else
#define VL 8
typedef __m512d vec;
typedef __mmask8 vmask;
#define vzero _mm512_setzero_pd
#define vset1 _mm512_set1_pd
#define vload _mm512_loadu_pd
#define vstore _mm512_storeu_pd
#define vmload(p, m) _mm512_maskz_loadu_pd(m, p)
#define vmstore(p, m, v) _mm512_mask_storeu_pd(p, m, v)
#define vfma _mm512_fmadd_pd
#define vadd _mm512_add_pd
#define vmul _mm512_mul_pd
#define vrelu(v) _mm512_mask_mov_pd(v, _mm512_cmp_pd_mask(v, vzero(), _CMP_LT_OQ), vzero())
#define hsum _mm512_reduce_add_pd
#endif

/* The first n lanes (all of them for n >= VL). */
static inline vmask lanes_below(int64_t n)
{
    return n >= VL ? (vmask)~(vmask)0 : (vmask)((1u << n) - 1);
}

static inline vmask vnomask(void) { return 0; } /* a mask argument that is not used */

#endif
