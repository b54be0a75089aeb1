/* fastnn.h: the C API of fastnn's kernels (plain C11, no Python).
 *
 * Conventions (BLAS-style):
 *  - every array is dense row-major (C order) unless a leading dimension says otherwise;
 *  - dimensions and strides are explicit; inputs come first, outputs last;
 *  - kernels never allocate: the caller passes any workspace (sizes from the *_ws functions,
 *    which include the room for the GEMM and convolutions to align it to 64 bytes);
 *  - each function says whether it overwrites or accumulates into its output;
 *  - layout: 0 = NHWC (channels last), 1 = NCHW (channels first);
 *  - act: 0 = identity, 1 = relu.
 * Every function exists for float (_f32) and double (_f64). Arguments are validated by the
 * Python wrapper (fastnn.ops) before any call: these functions trust them.
 *
 * The block between the CDEF markers is read verbatim by the cffi build (tools/cffi_build.py):
 * keep it free of preprocessor directives.
 */
#ifndef FASTNN_H
#define FASTNN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CDEF-BEGIN */
/* Geometry of a 2-D sliding window (see fastnn/ops/_geometry.py): input n x h x w x c,
   window kh x kw, stride sh x sw, padding top/bottom/left/right, dilation dh x dw,
   output oh x ow. Input row of output row oh, kernel row r: oh*sh - pt + r*dh. The
   convolutions also take oh, ow below the full output's: they then compute (forward) or
   read the gradient of (backward) only its top-left oh x ow pixels, the rest of dy taken
   as zero. */
typedef struct fnn_geom {
    int64_t n, h, w, c, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, oh, ow;
} fnn_geom;

/* ISA and threads (cpu.c). ISA ids: 0 generic C, 1 AVX2+FMA, 2 AVX-512F, 3 "avx512_256":
   the AVX2 kernels with GEMM micro-kernels of 256-bit vectors in AVX-512VL's 32
   registers (AVX-512F + VL; not above 2 but beside it, so fnn_isa_supported, not
   fnn_cpu_max_isa, says whether it runs here). */
int fnn_cpu_max_isa(void);
int fnn_isa_supported(int isa);
int fnn_get_isa(void);
int fnn_set_isa(int isa);
const char *fnn_isa_name(int isa);
int fnn_isa_emulated(void);
/* The L3 cache's size in bytes as CPUID reports it (in a virtual machine, what the
   hypervisor reports: the whole L3 of the cores' complex, shared with other tenants); 0
   where the CPU does not say, and off x86. */
int64_t fnn_cpu_l3_bytes(void);
void fnn_set_num_threads(int n);
int fnn_get_num_threads(void);
/* Benchmark probe (gemm_kernels.c): the selected ISA's register-only FMA loop -- its GEMM
   micro-kernel's accumulators, acc = acc * a + b, no loads or stores; a multiply and an
   add on the generic ISA -- iters rounds on every thread a kernel would use now.
   out[t] (t < nout, overwritten) = thread t's sum of its accumulators' first lanes, which
   start at 0, 1, 2, ...; returns the floating-point operations done by all threads (2 per
   lane per round). Its rate is the GEMM's ceiling on this machine. */
int64_t fnn_fma_peak_f32(int64_t iters, float a, float b, float *out, int64_t nout);
int64_t fnn_fma_peak_f64(int64_t iters, double a, double b, double *out, int64_t nout);

/* GEMM (gemm.c) */
int64_t fnn_gemm_ws_f32(int64_t m, int64_t n, int64_t k);
int64_t fnn_gemm_ws_f64(int64_t m, int64_t n, int64_t k);
void fnn_gemm_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                  float *ws, float *c, int64_t ldc);
void fnn_gemm_f64(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                  const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                  double *ws, double *c, int64_t ldc);
/* fnn_gemm with the workspace's length (LAPACK's lwork): returns 0 after computing C when
   lwork >= fnn_gemm_ws(m, n, k), else that length, touching nothing; -1, touching nothing,
   when m, n, k > 0 and a, b or c is misaligned for the type or C's memory span meets A's or
   B's. */
int64_t fnn_gemm_lwork_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                           float alpha, const float *a, int64_t lda, const float *b,
                           int64_t ldb, float beta, float *ws, int64_t lwork, float *c,
                           int64_t ldc);
int64_t fnn_gemm_lwork_f64(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                           double alpha, const double *a, int64_t lda, const double *b,
                           int64_t ldb, double beta, double *ws, int64_t lwork, double *c,
                           int64_t ldc);
void fnn_gemm_bias_act_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                           float alpha, const float *a, int64_t lda, const float *b,
                           int64_t ldb, float beta, const float *bias, int bias_axis, int act,
                           float *ws, float *c, int64_t ldc);
void fnn_gemm_bias_act_f64(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                           double alpha, const double *a, int64_t lda, const double *b,
                           int64_t ldb, double beta, const double *bias, int bias_axis,
                           int act, double *ws, double *c, int64_t ldc);
void fnn_gemm_ref_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                      const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                      float *c, int64_t ldc);
void fnn_gemm_ref_f64(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                      const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                      double *c, int64_t ldc);

/* im2col / col2im (im2col.c) */
void fnn_im2col_f32(const fnn_geom *g, int layout, const float *x, float *cols);
void fnn_im2col_f64(const fnn_geom *g, int layout, const double *x, double *cols);
void fnn_col2im_f32(const fnn_geom *g, int layout, const float *cols, float *x);
void fnn_col2im_f64(const fnn_geom *g, int layout, const double *cols, double *x);

/* Bias + activation epilogue (epilogue.c) */
void fnn_bias_act_f32(int64_t outer, int64_t c, int64_t inner, const float *y, const float *b,
                      int act, float *out);
void fnn_bias_act_f64(int64_t outer, int64_t c, int64_t inner, const double *y, const double *b,
                      int act, double *out);
void fnn_bias_act_bwd_f32(int64_t outer, int64_t c, int64_t inner, const float *dy,
                          const float *y, int act, float *dx, float *db);
void fnn_bias_act_bwd_f64(int64_t outer, int64_t c, int64_t inner, const double *dy,
                          const double *y, int act, double *dx, double *db);
void fnn_relu_mask_f32(int64_t n, const float *x, float *y, uint8_t *mask);
void fnn_relu_mask_f64(int64_t n, const double *x, double *y, uint8_t *mask);
void fnn_relu_mask_bwd_f32(int64_t n, const float *dy, const uint8_t *mask, float *dx);
void fnn_relu_mask_bwd_f64(int64_t n, const double *dy, const uint8_t *mask, double *dx);

/* Batch normalization (batchnorm.c): (outer, c, inner) arrays, per-channel statistics */
void fnn_bn_stats_f32(int64_t outer, int64_t c, int64_t inner, const float *x, float *mean,
                      float *var);
void fnn_bn_stats_f64(int64_t outer, int64_t c, int64_t inner, const double *x, double *mean,
                      double *var);
void fnn_bn_apply_f32(int64_t outer, int64_t c, int64_t inner, const float *x,
                      const float *mean, const float *inv_std, const float *gamma,
                      const float *beta, float *y);
void fnn_bn_apply_f64(int64_t outer, int64_t c, int64_t inner, const double *x,
                      const double *mean, const double *inv_std, const double *gamma,
                      const double *beta, double *y);
void fnn_bn_bwd_f32(int64_t outer, int64_t c, int64_t inner, const float *dy, const float *x,
                    const float *mean, const float *inv_std, const float *gamma, int training,
                    float *dx, float *dgamma, float *dbeta);
void fnn_bn_bwd_f64(int64_t outer, int64_t c, int64_t inner, const double *dy,
                    const double *x, const double *mean, const double *inv_std,
                    const double *gamma, int training, double *dx, double *dgamma,
                    double *dbeta);
/* The affine step then 2x2 max pooling of stride 2, channels-last (n, h, w, c) -> (n, h/2,
 * w/2, c), with one-byte window positions and x at each maximum, and its backward from the
 * pooled gradient (returns 0 where a position is over 3) */
void fnn_bn_pool_fwd_f32(int64_t n, int64_t h, int64_t w, int64_t c, const float *x,
                         const float *mean, const float *inv_std, const float *gamma,
                         const float *beta, float *y, uint8_t *pos, float *xm);
void fnn_bn_pool_fwd_f64(int64_t n, int64_t h, int64_t w, int64_t c, const double *x,
                         const double *mean, const double *inv_std, const double *gamma,
                         const double *beta, double *y, uint8_t *pos, double *xm);
int fnn_bn_pool_bwd_f32(int64_t n, int64_t h, int64_t w, int64_t c, const float *dy,
                        const uint8_t *pos, const float *xm, const float *x,
                        const float *mean, const float *inv_std, const float *gamma,
                        int training, float *dx, float *dgamma, float *dbeta);
int fnn_bn_pool_bwd_f64(int64_t n, int64_t h, int64_t w, int64_t c, const double *dy,
                        const uint8_t *pos, const double *xm, const double *x,
                        const double *mean, const double *inv_std, const double *gamma,
                        int training, double *dx, double *dgamma, double *dbeta);

/* Elementwise activations on exp (activation.c): kind 1 sigmoid, 2 silu, 3 elu, 4 selu,
 * 5 leaky_relu, 6 gelu, 7 relu6, 8 hard_sigmoid, 9 hard_silu, 10 celu (alpha != 0), 11 tanh; alpha:
 * elu's and celu's alpha, leaky_relu's negative_slope */
void fnn_act_fwd_f32(int64_t n, int kind, float alpha, const float *x, float *y);
void fnn_act_fwd_f64(int64_t n, int kind, double alpha, const double *x, double *y);
void fnn_act_bwd_f32(int64_t n, int kind, float alpha, const float *dy, const float *x,
                     const float *y, float *dx);
void fnn_act_bwd_f64(int64_t n, int kind, double alpha, const double *dy, const double *x,
                     const double *y, double *dx);

/* Inverted dropout (dropout.c): mask[i] = (Philox4x32-10 word i of key seed >= t) ? scale : 0,
 * y[i] = x[i] * mask[i] when x is not NULL; dropped with probability t / 2^32 */
void fnn_dropout_f32(int64_t n, uint64_t seed, uint32_t t, float scale, const float *x,
                     float *mask, float *y);
void fnn_dropout_f64(int64_t n, uint64_t seed, uint32_t t, double scale, const double *x,
                     double *mask, double *y);

/* Fused optimizer updates (optim.c) */
void fnn_adam_update_f32(int64_t n, float *p, const float *g, float *m, float *v, float *vhat,
                         float alpha, float omb1, float omb2, float eps, int flush);
void fnn_adam_update_f64(int64_t n, double *p, const double *g, double *m, double *v,
                         double *vhat, double alpha, double omb1, double omb2, double eps,
                         int flush);

/* Softmax cross-entropy, value and gradient (xent.c) */
void fnn_softmax_xent_f32(int64_t n, int64_t k, const float *z, const int64_t *labels,
                          const float *t, float scale, float *probs, float *loss, float *dz);
void fnn_softmax_xent_f64(int64_t n, int64_t k, const double *z, const int64_t *labels,
                          const double *t, double scale, double *probs, double *loss,
                          double *dz);

/* One training step of a stack of dense layers with softmax cross-entropy (dense.c); the
 * optimizer inside it (opt); a hidden layer's act: FNN_ACT_IDENTITY, FNN_ACT_RELU, or
 * FNN_DENSE_ACT_KIND + an activation kind of fnn_act_fwd whose derivative is a function
 * of its output (1 sigmoid, 11 tanh): */
enum { FNN_OPT_NONE = 0, FNN_OPT_ADAM = 1, FNN_OPT_SGD = 2 };
enum { FNN_DENSE_ACT_KIND = 16 };
int64_t fnn_dense_step_ws_f32(int64_t n, int64_t nlayers, const int64_t *dims);
int64_t fnn_dense_step_ws_f64(int64_t n, int64_t nlayers, const int64_t *dims);
void fnn_dense_step_f32(int64_t n, int64_t nlayers, const int64_t *dims, const int *act,
                        float *const *w, float *const *b, const float *const *mask,
                        float *const *y, float *const *yd, float *const *dz, float *const *dx,
                        float *const *dw, float *const *db, const float *x,
                        const int64_t *labels, const float *t, float scale, float *probs,
                        float *loss, int opt, float *const *slots, float k0, float k1,
                        float k2, float k3, float *ws);
void fnn_dense_step_f64(int64_t n, int64_t nlayers, const int64_t *dims, const int *act,
                        double *const *w, double *const *b, const double *const *mask,
                        double *const *y, double *const *yd, double *const *dz,
                        double *const *dx, double *const *dw, double *const *db,
                        const double *x, const int64_t *labels, const double *t,
                        double scale, double *probs, double *loss, int opt,
                        double *const *slots, double k0, double k1, double k2, double k3,
                        double *ws);

void fnn_dense_steps_f32(int64_t nsteps, const int64_t *idx, const float *xall,
                         const int64_t *labels_all, const float *tall, float *xb, int64_t *lb,
                         float *tb, int64_t n, int64_t nlayers, const int64_t *dims,
                         const int *act, float *const *w, float *const *b,
                         const float *const *mask, float *const *y, float *const *yd,
                         float *const *dz, float *const *dx, float *const *dw,
                         float *const *db, float scale, float *probs, float *loss, int opt,
                         float *const *slots, const double *k0, float k1, float k2, float k3,
                         float *ws);
void fnn_dense_steps_f64(int64_t nsteps, const int64_t *idx, const double *xall,
                         const int64_t *labels_all, const double *tall, double *xb,
                         int64_t *lb, double *tb, int64_t n, int64_t nlayers,
                         const int64_t *dims, const int *act, double *const *w,
                         double *const *b, const double *const *mask, double *const *y,
                         double *const *yd, double *const *dz, double *const *dx,
                         double *const *dw, double *const *db, double scale, double *probs,
                         double *loss, int opt, double *const *slots, const double *k0,
                         double k1, double k2, double k3, double *ws);

/* Convolution (conv.c) */
int64_t fnn_conv2d_ws_f32(const fnn_geom *g, int layout, int64_t f, int64_t chunk, int backward);
int64_t fnn_conv2d_ws_f64(const fnn_geom *g, int layout, int64_t f, int64_t chunk, int backward);
void fnn_conv2d_fwd_f32(const fnn_geom *g, int layout, int64_t f, const float *x,
                        const float *w, const float *b, int act, int64_t chunk, float *ws,
                        float *y);
void fnn_conv2d_fwd_f64(const fnn_geom *g, int layout, int64_t f, const double *x,
                        const double *w, const double *b, int act, int64_t chunk, double *ws,
                        double *y);
void fnn_conv2d_bwd_f32(const fnn_geom *g, int layout, int64_t f, const float *dy,
                        const float *x, const float *w, int64_t chunk, float *ws, float *dx,
                        float *dw, float *db);
void fnn_conv2d_bwd_f64(const fnn_geom *g, int layout, int64_t f, const double *dy,
                        const double *x, const double *w, int64_t chunk, double *ws, double *dx,
                        double *dw, double *db);

/* y (n, oh/2, ow/2, f) and argmax = 2x2 max pooling (stride 2, no padding; the rules of
 * fnn_maxpool_fwd) of act(conv(x, w) + b), NHWC, without writing the convolution's
 * output; argmax (int64, flat indices into each image's oh x ow x f output) or, with
 * argmax NULL, pos (one byte per pooled element: the position of its maximum in its
 * window, 0 .. 3 for (0, 0), (0, 1), (1, 0), (1, 1)): returns 1, or 0 (nothing written)
 * where the fused path does not apply (then convolve and pool; fnn_conv2d_pool_ok says
 * which beforehand) or not exactly one of argmax and pos is NULL. ws: fnn_conv2d_ws(g,
 * layout, f, chunk, 0) elements. */
int fnn_conv2d_pool_ok_f32(const fnn_geom *g, int layout, int64_t f);
int fnn_conv2d_pool_ok_f64(const fnn_geom *g, int layout, int64_t f);
int fnn_conv2d_pool_fwd_f32(const fnn_geom *g, int layout, int64_t f, const float *x,
                            const float *w, const float *b, int act, int64_t chunk,
                            float *ws, float *y, int64_t *argmax, uint8_t *pos);
int fnn_conv2d_pool_fwd_f64(const fnn_geom *g, int layout, int64_t f, const double *x,
                            const double *w, const double *b, int act, int64_t chunk,
                            double *ws, double *y, int64_t *argmax, uint8_t *pos);

/* dw (shaped like w), db (f, unless NULL) and dx (shaped like x, unless NULL) of a
 * convolution followed by 2x2 max pooling (stride 2, no padding), NHWC, from the pooled
 * gradient dyp (n, oh/2, ow/2, f) and the pooling's argmax (flat indices into each image's
 * oh x ow x f output, each in [0, oh*ow*f)) or, with argmax NULL, its window positions pos
 * (fnn_conv2d_pool_fwd's; a value above 3 drops its gradient), without the convolution's
 * own gradient; all
 * overwritten. ypool (NULL: none): the pooled output of a relu convolution, shaped like
 * dyp: the gradient taken is then relu's derivative applied to dyp (ypool > 0 ? dyp : 0,
 * as fnn_bias_act_bwd gives it), in the kernels that read dyp, and db its sum, bit for bit
 * fnn_bias_act_bwd's. Returns 1, or 0 (nothing written) where this does not apply
 * (fnn_conv2d_pool_bwd_ok(g, layout, f, dx != NULL); then scatter and call
 * fnn_conv2d_bwd). ws: fnn_conv2d_pool_bwd_ws(g, layout, f, chunk, dx != NULL) elements. */
int fnn_conv2d_pool_bwd_ok_f32(const fnn_geom *g, int layout, int64_t f, int need_dx);
int fnn_conv2d_pool_bwd_ok_f64(const fnn_geom *g, int layout, int64_t f, int need_dx);
int64_t fnn_conv2d_pool_bwd_ws_f32(const fnn_geom *g, int layout, int64_t f, int64_t chunk,
                                   int need_dx);
int64_t fnn_conv2d_pool_bwd_ws_f64(const fnn_geom *g, int layout, int64_t f, int64_t chunk,
                                   int need_dx);
int fnn_conv2d_pool_bwd_f32(const fnn_geom *g, int layout, int64_t f, const float *dyp,
                            const float *ypool, const int64_t *argmax, const uint8_t *pos,
                            const float *x, const float *w, int64_t chunk, float *ws,
                            float *dx, float *dw, float *db);
int fnn_conv2d_pool_bwd_f64(const fnn_geom *g, int layout, int64_t f, const double *dyp,
                            const double *ypool, const int64_t *argmax, const uint8_t *pos,
                            const double *x, const double *w, int64_t chunk, double *ws,
                            double *dx, double *dw, double *db);

/* Pooling (pool.c) */
void fnn_maxpool_fwd_f32(const fnn_geom *g, int layout, const float *x, float *y,
                         int64_t *argmax);
void fnn_maxpool_fwd_f64(const fnn_geom *g, int layout, const double *x, double *y,
                         int64_t *argmax);
/* returns 1, or 0 where an argmax was outside its sample (skipped) */
int fnn_maxpool_bwd_f32(const fnn_geom *g, int layout, const float *dy, const int64_t *argmax,
                        float *dx);
int fnn_maxpool_bwd_f64(const fnn_geom *g, int layout, const double *dy, const int64_t *argmax,
                        double *dx);
void fnn_avgpool_fwd_f32(const fnn_geom *g, int layout, const float *x, float *y);
void fnn_avgpool_fwd_f64(const fnn_geom *g, int layout, const double *x, double *y);
void fnn_avgpool_bwd_f32(const fnn_geom *g, int layout, const float *dy, float *dx);
void fnn_avgpool_bwd_f64(const fnn_geom *g, int layout, const double *dy, double *dx);
/* CDEF-END */

#ifdef __cplusplus
}
#endif
#endif /* FASTNN_H */
