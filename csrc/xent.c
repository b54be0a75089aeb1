/* xent.c: softmax cross-entropy from logits, value and gradient in one pass (float and
 * double; compiled twice, FNN_PREC=32/64). Reference: fastnn/backends/numpy_backend.py,
 * softmax_xent (the same operations, with NumPy's own exp, log and sums). */
#include "fnn_real.h"

/* One row of k logits z: probs = softmax(z), its cross-entropy with the target, and the
 * gradient. With s = z - max(z), total = sum(exp(s)) (summed in order j = 0..k-1):
 *   probs[j] = exp(s[j]) / total
 *   label >= 0 (sparse):  loss = log(total) - s[label]
 *                         dz[j] = (probs[j] - (j == label)) * scale
 *   t (dense targets):    loss = sum_j t[j] * (log(total) - s[j])
 *                         dz[j] = (probs[j] * sum_j t[j] - t[j]) * scale
 * NaN in z makes the whole row NaN (the max takes it). */
static void xent_row(int64_t k, const real *z, int64_t label, const real *t, real scale,
                     real *probs, real *loss, real *dz)
{
    real mx = z[0];
    for (int64_t j = 1; j < k; j++)
        if (z[j] > mx || z[j] != z[j]) /* a NaN stays: nothing compares above it */
            mx = z[j];
    real total = 0;
    for (int64_t j = 0; j < k; j++) {
        const real e = FNN_EXP(z[j] - mx);
        probs[j] = e;
        total += e;
    }
    for (int64_t j = 0; j < k; j++)
        probs[j] /= total;
    const real lt = FNN_LOG(total);
    if (t == NULL) {
        *loss = lt - (z[label] - mx);
        for (int64_t j = 0; j < k; j++)
            dz[j] = (j == label ? probs[j] - 1 : probs[j]) * scale;
        return;
    }
    real l = 0, tsum = 0;
    for (int64_t j = 0; j < k; j++) {
        l += t[j] * (lt - (z[j] - mx));
        tsum += t[j];
    }
    *loss = l;
    for (int64_t j = 0; j < k; j++)
        dz[j] = (probs[j] * tsum - t[j]) * scale;
}

/* Softmax cross-entropy of n rows of k >= 1 logits (z: n x k, row-major) against labels (n
 * class indices; a label outside [0, k) makes its row's loss and gradient NaN) or, when
 * labels is NULL, against t (n x k, e.g. one-hot rows). Overwrites probs (n x k, the
 * softmax), loss (n, each row's cross-entropy) and dz (n x k, the gradient of
 * scale * sum(loss) with respect to z); none may overlap z or t. Threads over rows. */
void FNN(softmax_xent)(int64_t n, int64_t k, const real *z, const int64_t *labels,
                       const real *t, real scale, real *probs, real *loss, real *dz)
{
    const int nt = fnn_threads_for(n * k * 8); /* exp and log: a few ops per element */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++) {
        const int64_t off = i * k;
        if (labels && (labels[i] < 0 || labels[i] >= k)) {
            const real nan = (real)NAN;
            loss[i] = nan;
            for (int64_t j = 0; j < k; j++)
                probs[off + j] = dz[off + j] = nan;
            continue;
        }
        xent_row(k, z + off, labels ? labels[i] : -1, labels ? NULL : t + off, scale,
                 probs + off, loss + i, dz + off);
    }
}
