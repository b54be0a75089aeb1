/* conv_nchw_avx2.c: direct NCHW convolution rows on AVX2 + FMA lanes, for stride-1 columns:
 * the output pixels of one row (oh, ow = 0..OW-1) read input columns ow + offset, so a run
 * of pixels is a contiguous run of x and a vector load needs no column matrix. Called by
 * conv.c (the direct NCHW path) only after fnn_cpu_max_isa() reported AVX2 and FMA.
 * Compiled twice, FNN_PREC=32/64, with -mavx2 -mfma. Three kernels: an output row of up to
 * 4 filters (forward; FNN_ROW_F_AVX2, 5 on AVX-512), a dy row's input gradient added into up
 * to 4 dx rows (the same register tile, row_tile), one image's weight and bias gradient (dot
 * products along the rows, added into partials). Reference: the im2col + GEMM NCHW path of
 * conv.c (the tests compare both with the NumPy reference); per output element the forward
 * is the GEMM's order of operations for patches of one KC block (an FMA chain over the
 * patch from zero, then the bias, then relu), so the same bits.
 *
 * x: one image's input rows, element (row, col) at x[row * xrs + col]; off[p]: patch
 * element p = (c, r, s) at off[p] = c*plane + r*dh*xrs + s*dw from a pixel's corner. */
#include "fnn_real.h"
#include "vec_avx2.h"
#include "conv_nchw_rows.h"
