/* conv_nchw_avx512.c: the direct NCHW convolution rows of conv_nchw_avx2.c (same kernels,
 * same arguments, conv_nchw_rows.h's body) on AVX-512 lanes: 16 float or 8 double pixels
 * per vector, so the forward's register tile covers 48 or 24 pixels of a row. Called by
 * conv.c only after fnn_cpu_max_isa() reported AVX-512. Compiled twice, FNN_PREC=32/64,
 * with -mavx512f -mfma. Per output element the same FMA chains as the AVX2 kernels; the
 * weight gradient's lane sums are split over 16 or 8 lanes instead of 8 or 4, so its last
 * bits differ from the AVX2 kernel's (the same whatever the threads). */
#include "fnn_real.h"
#include "vec_avx512.h"
#include "conv_nchw_rows.h"
