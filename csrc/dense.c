/* dense.c: one training step of a stack of dense layers ending in softmax cross-entropy,
 * in one call (float and double; compiled twice, FNN_PREC=32/64). It runs the kernels the
 * Python layers call, in the same order with the same arguments (fastnn.layers.Dense,
 * the model's fused softmax loss): the results are bitwise those of the layer-by-layer
 * step, without the interpreter between the kernels (at batch 32 it cost more than the
 * arithmetic). Adam's update can run inside it too (the adam argument); other optimizers
 * run after it, in Python. Reference: the Python path (tests/test_models.py compares the
 * two, weights and optimizer state bit for bit). */
#include "fnn_real.h"

/* Workspace elements fnn_dense_step needs: the largest of its GEMMs'. */
int64_t FNN(dense_step_ws)(int64_t n, int64_t nlayers, const int64_t *dims)
{
    int64_t ws = 1;
    for (int64_t l = 0; l < nlayers; l++) {
        const int64_t in = dims[l], out = dims[l + 1];
        const int64_t sizes[3] = {FNN(gemm_ws)(n, out, in), FNN(gemm_ws)(in, out, n),
                                  FNN(gemm_ws)(n, in, out)};
        for (int s = 0; s < 3; s++)
            ws = sizes[s] > ws ? sizes[s] : ws;
    }
    return ws;
}

/* out[e] = a[e] * mask[e] for e < count: inverted dropout's product, the one NumPy's
 * x * mask makes (one rounding), so the same bits. out may be a. */
static void mul_mask(int64_t count, const real *a, const real *mask, real *out)
{
    for (int64_t e = 0; e < count; e++)
        out[e] = a[e] * mask[e];
}

/* Layer l (0 <= l < nlayers) maps n x dims[l] to n x dims[l + 1] with weights w[l]
 * (dims[l] x dims[l + 1], row-major) and bias b[l] (dims[l + 1], or NULL); act[l] is
 * relu (1) or identity (0) for a hidden layer, identity for the last (its output is the
 * logits). Forward: y[l] = act(a @ w[l] + b[l]) with a = x (n x dims[0]) for the first
 * layer; after a hidden layer with mask[l] (inverted dropout; NULL: none) its output is
 * yd[l] = y[l] * mask[l] (n x dims[l + 1]), the next layer's input, else y[l] is. Loss:
 * fnn_softmax_xent of the logits against labels (or t when labels is NULL) with scale,
 * writing probs, loss (n) and dz[last]. Backward, last layer first: dz[l] = (dx[l + 1]
 * [* mask[l]]) * act'(y[l]) with db[l] its column sums (the last layer: db from dz
 * itself), dw[l] = a^T @ dz[l], dx[l] = dz[l] @ w[l]^T (not for the first layer: dx[0] is
 * not used). Every output is overwritten: y, yd, dz, dx (n x width; dx[l + 1] is scaled
 * by mask[l] in place), dw, db, probs, loss. ws: fnn_dense_step_ws elements.
 * adam (NULL: none): Adam's step on each layer's weights and bias once their gradients
 * are complete (after dx[l], the last use of w[l]): fnn_adam_update with alpha, omb1,
 * omb2, eps and the slots of layer l at adam[6 l ...]: m, v, vhat of w[l], then of b[l]
 * (vhat NULL without AMSGrad; all three NULL without a bias). The optimizer's own kernel
 * on each whole array: the bits of Adam.apply after the step. */
void FNN(dense_step)(int64_t n, int64_t nlayers, const int64_t *dims, const int *act,
                     real *const *w, real *const *b, const real *const *mask,
                     real *const *y, real *const *yd, real *const *dz, real *const *dx,
                     real *const *dw, real *const *db, const real *x, const int64_t *labels,
                     const real *t, real scale, real *probs, real *loss,
                     real *const *adam, real alpha, real omb1, real omb2, real eps, real *ws)
{
    const int64_t last = nlayers - 1;
    for (int64_t l = 0; l < nlayers; l++) {
        const int64_t in = dims[l], out = dims[l + 1];
        const real *a = l == 0 ? x : mask[l - 1] ? yd[l - 1] : y[l - 1];
        FNN(gemm)(0, 0, n, out, in, 1, a, in, w[l], out, 0, ws, y[l], out);
        if (b[l] || act[l] != FNN_ACT_IDENTITY)
            FNN(bias_act)(n, out, 1, y[l], b[l], act[l], y[l]);
        if (l < last && mask[l])
            mul_mask(n * out, y[l], mask[l], yd[l]);
    }
    FNN(softmax_xent)(n, dims[nlayers], y[last], labels, t, scale, probs, loss, dz[last]);
    for (int64_t l = last; l >= 0; l--) {
        const int64_t in = dims[l], out = dims[l + 1];
        const real *a = l == 0 ? x : mask[l - 1] ? yd[l - 1] : y[l - 1];
        if (l == last) {
            if (db[l])
                FNN(bias_act_bwd)(n, out, 1, dz[l], dz[l], FNN_ACT_IDENTITY, dz[l], db[l]);
        } else {
            if (mask[l])
                mul_mask(n * out, dx[l + 1], mask[l], dx[l + 1]);
            FNN(bias_act_bwd)(n, out, 1, dx[l + 1], y[l], act[l], dz[l], db[l]);
        }
        FNN(gemm)(1, 0, in, out, n, 1, a, in, dz[l], out, 0, ws, dw[l], out);
        if (l > 0)
            FNN(gemm)(0, 1, n, in, out, 1, dz[l], out, w[l], out, 0, ws, dx[l], in);
        if (adam) {
            real *const *s = adam + 6 * l;
            FNN(adam_update)(in * out, w[l], dw[l], s[0], s[1], s[2], alpha, omb1, omb2, eps);
            if (b[l])
                FNN(adam_update)(out, b[l], db[l], s[3], s[4], s[5], alpha, omb1, omb2, eps);
        }
    }
}
