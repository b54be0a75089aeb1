/* pool_avx2.c: the 2x2 max-pooling window of pool_lanes.h (max4_lanes) on AVX2 lanes, 8
 * floats (int32 indices) or 4 doubles (int64 indices) at a time, called by pool.c and
 * conv.c only after fnn_cpu_max_isa() reported AVX2. Compiled twice, FNN_PREC=32/64, with
 * -mavx2. Reference: max4_lanes itself (FASTNN_ISA=generic); the same rule, so the same
 * results bit for bit (the tests compare both ISAs with the reference, NaN and ties).
 * bn_max4_avx2: the window of batchnorm.c's bn_pool_fwd (reference: its bn_window). */
#include <immintrin.h>

#include "fnn_real.h"
#include "pool_lanes.h"
#include "vec_avx2.h"

/* y[c], argmax[c] for c < n: the first of p[0][c], ..., p[3][c] that no later one beats
 * (larger, or the first NaN), and its e[k] + c. In lanes, vec_avx2.h's vbeats: one
 * compare fewer than take_lanes' (v > best) | (isnan(v) & !isnan(best)), the same mask. */
void FNN(max4_avx2)(int64_t n, const real *const p[4], const lane_idx e[4], real *y,
                    int64_t *argmax)
{
    int64_t c = 0;
    for (; c + VL <= n; c += VL) {
        vec bv = vload(p[0] + c);
        vidx bi = idx_set1(e[0]);
        for (int k = 1; k < 4; k++) {
            const vec v = vload(p[k] + c);
            const vmask t = vbeats(v, bv);
            bv = vblend(bv, v, t);
            bi = idx_blend(bi, idx_set1(e[k]), t);
        }
        vstore(y + c, bv);
        store_idx(argmax + c, idx_add(bi, idx_add(idx_set1(c), idx_lanes())));
    }
    if (c < n) { /* the last channels: the portable rule */
        const real *q[4] = {p[0] + c, p[1] + c, p[2] + c, p[3] + c};
        const lane_idx f[4] = {e[0], e[1], e[2], e[3]};
        max4_lanes(n - c, q, f, y + c, argmax + c);
        for (int64_t j = c; j < n; j++)
            argmax[j] += c;
    }
}

/* bn_pool_fwd's window (batchnorm.c) on whole vectors of its n channels: v_k = (p[k][c] -
 * m[c]) * a[c], + b[c] where b is not NULL (each operation rounded as bn_apply's: this
 * file has no contraction either), pooled by the rule above: y[c] = the winner, pos[c] =
 * its k, xm[c] = its p[k][c]. Returns the channels done (a multiple of VL); bn_window
 * (the reference) does the rest. */
int64_t FNN(bn_max4_avx2)(int64_t n, const real *const p[4], const real *m, const real *a,
                          const real *b, real *y, uint8_t *pos, real *xm)
{
    int64_t c = 0;
    for (; c + VL <= n; c += VL) {
        const vec mc = vload(m + c), ac = vload(a + c);
        vec u[4], v[4];
        for (int k = 0; k < 4; k++) {
            u[k] = vload(p[k] + c);
            v[k] = vmul(vsub(u[k], mc), ac);
            if (b)
                v[k] = vadd(v[k], vload(b + c));
        }
        vec bv = v[0], bx = u[0];
        vidx bi = idx_set1(0);
        for (int k = 1; k < 4; k++) {
            const vmask t = vbeats(v[k], bv);
            bv = vblend(bv, v[k], t);
            bx = vblend(bx, u[k], t);
            bi = idx_blend(bi, idx_set1(k), t);
        }
        vstore(y + c, bv);
        vstore(xm + c, bx);
        int64_t at[VL];
        store_idx(at, bi);
        for (int j = 0; j < VL; j++)
            pos[c + j] = (uint8_t)at[j];
    }
    return c;
}
