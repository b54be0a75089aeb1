/* pool_avx2.c: the 2x2 max-pooling window of pool_lanes.h (max4_lanes) on AVX2 lanes, 8
 * floats (int32 indices) or 4 doubles (int64 indices) at a time, called by pool.c and
 * conv.c only after fnn_cpu_max_isa() reported AVX2. Compiled twice, FNN_PREC=32/64, with
 * -mavx2. Reference: max4_lanes itself (FASTNN_ISA=generic); the same rule, so the same
 * results bit for bit (the tests compare both ISAs with the reference, NaN and ties). */
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
