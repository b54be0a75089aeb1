/* dense.c: one training step of a stack of dense layers ending in softmax cross-entropy,
 * in one call (float and double; compiled twice, FNN_PREC=32/64). It runs the kernels the
 * Python layers call, in the same order with the same arguments (fastnn.layers.Dense,
 * the model's fused softmax loss): the results are bitwise those of the layer-by-layer
 * step, without the interpreter between the kernels (at batch 32 it cost more than the
 * arithmetic). Adam's or SGD's update can run inside it too (opt); other optimizers
 * run after it, in Python. Reference: the Python path (tests/test_models.py compares the
 * two, weights and optimizer state bit for bit). */
#include <string.h>

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

/* SGD (fastnn.optimizers.SGD's NumPy steps, element by element, the same roundings):
 * lr_g = g * lr; without momentum slot (m NULL) p -= lr_g; else m = m * momentum - lr_g,
 * stored as 0 below the smallest normal number in magnitude (fnn_adam_update says why),
 * and p += m, or with Nesterov p += m * momentum - lr_g. In place. */
static void sgd_update(int64_t n, real *p, const real *g, real *m, real lr, real momentum,
                       int nesterov)
{
    for (int64_t i = 0; i < n; i++) {
        const real lr_g = g[i] * lr;
        if (!m) {
            p[i] -= lr_g;
            continue;
        }
        real mi = m[i] * momentum;
        mi -= lr_g;
        mi = fnn_flush(mi, FNN_REAL_MIN);
        m[i] = mi;
        if (nesterov) {
            real step = mi * momentum;
            step -= lr_g;
            p[i] += step;
        } else {
            p[i] += mi;
        }
    }
}

/* The optimizer's step on count elements of p with gradient g and slots s[0..2], as
 * fastnn.optimizers does it (subnormal moments flushed):
 * FNN_OPT_ADAM fnn_adam_update (m, v, vhat; kc: alpha, 1 - beta_1, 1 - beta_2, epsilon),
 * FNN_OPT_SGD sgd_update (momentum or NULL; kc: learning rate, momentum, nesterov). */
static void opt_update(int opt, int64_t count, real *p, const real *g, real *const *s,
                       const real *kc)
{
    if (opt == FNN_OPT_ADAM)
        FNN(adam_update)(count, p, g, s[0], s[1], s[2], kc[0], kc[1], kc[2], kc[3], 1);
    else if (opt == FNN_OPT_SGD)
        sgd_update(count, p, g, s[0], kc[0], kc[1], kc[2] != 0);
}

/* Layer l (0 <= l < nlayers) maps n x dims[l] to n x dims[l + 1] with weights w[l]
 * (dims[l] x dims[l + 1], row-major) and bias b[l] (dims[l + 1], or NULL); act[l] is
 * relu (1) or identity (0) for a hidden layer, or FNN_DENSE_ACT_KIND + sigmoid's or tanh's
 * kind (fnn_act_fwd's kernels, after the product and bias: the layer path's ops, the same
 * bits), identity for the last (its output is the
 * logits). Forward: y[l] = act(a @ w[l] + b[l]) with a = x (n x dims[0]) for the first
 * layer; after a hidden layer with mask[l] (inverted dropout; NULL: none) its output is
 * yd[l] = y[l] * mask[l] (n x dims[l + 1]), the next layer's input, else y[l] is. Loss:
 * fnn_softmax_xent of the logits against labels (or t when labels is NULL) with scale,
 * writing probs, loss (n) and dz[last]. Backward, last layer first: dz[l] = (dx[l + 1]
 * [* mask[l]]) * act'(y[l]) with db[l] its column sums (the last layer: db from dz
 * itself), dw[l] = a^T @ dz[l], dx[l] = dz[l] @ w[l]^T (not for the first layer: dx[0] is
 * not used). Every output is overwritten: y, yd, dz, dx (n x width; dx[l + 1] is scaled
 * by mask[l] in place), dw, db, probs, loss. ws: fnn_dense_step_ws elements.
 * opt (FNN_OPT_NONE: none): the optimizer's step on each layer's weights and bias once
 * their gradients are complete (after dx[l], the last use of w[l]), with the slots of
 * layer l at slots[6 l ...] (three for w[l], then three for b[l]; NULL where absent) and
 * the constants k0..k3: opt_update. The bits of the optimizer's apply after the step. */
/* ---------------------------------------------------------------- two threads, one run
 * A run of steps (fnn_dense_steps) can keep a second thread through all of it: at batch
 * 32 each product takes ~50-100 us, and waking a sleeping OpenMP thread for each cost as
 * much (40-120 us measured on a shared VM), so the helper spins on a flag between jobs
 * instead, for the length of the run only. Each job is split in two parts, one per
 * thread, computed by the same kernels as the whole: a GEMM by columns or rows at
 * multiples of every micro-kernel's tile (32 columns, 12 rows: each element of C is the
 * same accumulation in the same tile position), Adam by elements. So the bits are those
 * of the one-thread step (tests/test_models.py compares them), whichever thread computes
 * a part: on a busy machine the helper may not be running, so the first thread takes
 * part 1 itself when the helper has not claimed it, the idle helper yields its core, and
 * a run whose helper kept it waiting (TEAM_SLOW_S) finishes on one thread. */
#if defined(_OPENMP) && !defined(_MSC_VER) && !defined(__STDC_NO_ATOMICS__)
#define FNN_TEAM 1
#include <omp.h>
#include <sched.h>
#include <stdatomic.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SPIN_PAUSE() _mm_pause()
#else
#define SPIN_PAUSE() ((void)0)
#endif
#else
#define FNN_TEAM 0
#endif

/* A wait this long for the helper's part (a few us to ~30 us when it runs) means it was
 * descheduled: more threads than free cores. The run then goes on without it, as a
 * spinning helper on a busy machine made the run slower than one thread (measured: 804
 * against 545 us per step beside a busy process). */
#define TEAM_SLOW_S 3e-4

enum { JOB_GEMM, JOB_UPDATE };

/* One job for the two threads. GEMM: c = op(a) @ op(b) (m x n, K = k), then the bias and
 * activation (bias NULL and act identity: none), split by rows (split 0) or columns.
 * UPDATE: opt_update on count elements. */
typedef struct {
    int kind, ta, tb, split, act;
    int64_t m, n, k, lda, ldb, ldc, count;
    const real *a, *b, *bias, *g;
    real *c, *p, *s[3];
    int opt;
    real kc[4];
    real *ws[2];                 /* each thread's GEMM workspace */
#if FNN_TEAM
    /* jobs are numbered 1, 2, ...: the last posted, the last whose part 1 a thread took,
     * the last the helper finished; quit: the run is over */
    atomic_int posted, claimed, done, quit;
    int slow;                    /* the first thread once waited over TEAM_SLOW_S */
#endif
} team_t;

/* Where a GEMM job's range of len rows (split 0) or columns is cut: at a multiple of every
 * micro-kernel's tile (12 rows, 32 columns), about half way. */
static int64_t team_cut(int64_t len, int split)
{
    const int64_t unit = split ? 32 : 12;
    return (len / 2) / unit * unit;
}

/* Thread tid's part of the job: the first or the second piece of the split range. */
static void team_part(const team_t *j, int tid)
{
    if (j->kind == JOB_UPDATE) {
        const int64_t half = (j->count / 2) / 16 * 16;
        const int64_t lo = tid ? half : 0, hi = tid ? j->count : half;
        real *s[3];
        for (int i = 0; i < 3; i++)
            s[i] = j->s[i] ? j->s[i] + lo : NULL;
        if (hi > lo)
            opt_update(j->opt, hi - lo, j->p + lo, j->g + lo, s, j->kc);
        return;
    }
    const int64_t len = j->split ? j->n : j->m, half = team_cut(len, j->split);
    const int64_t lo = tid ? half : 0, hi = tid ? len : half;
    if (hi <= lo)
        return;
    const real *a = j->a, *b = j->b;
    real *c = j->c;
    int64_t m = j->m, n = j->n;
    if (j->split) {
        b += j->tb ? lo * j->ldb : lo;
        c += lo;
        n = hi - lo;
    } else {
        a += j->ta ? lo : lo * j->lda;
        c += lo * j->ldc;
        m = hi - lo;
    }
    FNN(gemm)(j->ta, j->tb, m, n, j->k, 1, a, j->lda, b, j->ldb, 0, j->ws[tid], c, j->ldc);
    if (j->bias || j->act != FNN_ACT_IDENTITY)
        FNN(bias_act_block)(j->bias, 1, j->act, m, n, 0, j->split ? lo : 0, c, j->ldc);
}

/* Run job j: with a helper, post it, do part 0, then part 1 too if the helper has not
 * taken it yet (it may not be running: a machine with more threads than cores), else wait
 * for it; without one (team NULL), both parts here. */
static void team_do(team_t *team, team_t *j)
{
#if FNN_TEAM
    if (team) {
        const int seq = atomic_load_explicit(&team->posted, memory_order_relaxed) + 1;
        int expect = seq - 1;
        atomic_store_explicit(&team->posted, seq, memory_order_release);
        team_part(j, 0);
        if (atomic_compare_exchange_strong_explicit(&team->claimed, &expect, seq,
                                                    memory_order_acq_rel,
                                                    memory_order_acquire)) {
            team_part(j, 1);
            return;
        }
        double t0 = 0;
        for (unsigned spins = 1; atomic_load_explicit(&team->done, memory_order_acquire)
                                 != seq; spins++) {
            SPIN_PAUSE();
            if (spins % 1024 == 0) {   /* ~20-60 us of pauses */
                const double t = omp_get_wtime();
                if (t0 == 0)
                    t0 = t;
                else if (t - t0 > TEAM_SLOW_S)
                    team->slow = 1;
            }
        }
        return;
    }
#endif
    (void)team;
    team_part(j, 0);
    team_part(j, 1);
}

#if FNN_TEAM
/* The helper: spins until a job is posted, takes its part 1 unless the first thread
 * already has, does it and says so; until quit. */
static void team_helper(team_t *team)
{
    int seen = 0;
    for (;;) {
        int seq;
        for (unsigned spins = 1;
             (seq = atomic_load_explicit(&team->posted, memory_order_acquire)) == seen;
             spins++) {
            if (atomic_load_explicit(&team->quit, memory_order_acquire))
                return;
            SPIN_PAUSE();
            if (spins > 256)   /* idle a while: let another thread have the core */
                sched_yield();
        }
        seen = seq;
        int expect = seq - 1;
        if (!atomic_compare_exchange_strong_explicit(&team->claimed, &expect, seq,
                                                     memory_order_acq_rel,
                                                     memory_order_acquire))
            continue;
        team_part(team, 1);
        atomic_store_explicit(&team->done, seq, memory_order_release);
    }
}
#endif

/* With more than two threads allowed, runs whose largest product has more multiply-adds
 * than this (~0.1 ms on one core) go without a helper: all threads on each product. */
#define TEAM_MAX_FLOPS ((int64_t)1 << 23)

/* Products of at least this many multiply-adds, and Adam on at least this many elements,
 * are split between the two threads of a run; smaller ones run on the first. */
#define TEAM_MIN_FLOPS 65536
#define TEAM_MIN_ELEMS 16384

/* c = op(a) @ op(b) [then bias, act], on the team when it is worth it. split: the axis to
 * cut (0 rows, 1 columns), if long enough for two pieces. */
static void step_gemm(team_t *team, int ta, int tb, int64_t m, int64_t n, int64_t k,
                      const real *a, int64_t lda, const real *b, int64_t ldb, real *c,
                      int64_t ldc, const real *bias, int act, int split, real *ws)
{
    /* the smaller piece (the first) must sum in the whole's order, see gemm_ksplit */
    const int64_t m0 = split ? m : team_cut(m, 0), n0 = split ? team_cut(n, 1) : n;
    if (team && m * n * k >= TEAM_MIN_FLOPS && (split ? n >= 64 : m >= 24)
        && FNN(gemm_ksplit)(m0, n0, k) == FNN(gemm_ksplit)(m, n, k)) {
        team->kind = JOB_GEMM;
        team->ta = ta, team->tb = tb, team->m = m, team->n = n, team->k = k;
        team->a = a, team->lda = lda, team->b = b, team->ldb = ldb, team->c = c;
        team->ldc = ldc, team->bias = bias, team->act = act, team->split = split;
        team_do(team, team);
        return;
    }
    FNN(gemm)(ta, tb, m, n, k, 1, a, lda, b, ldb, 0, ws, c, ldc);
    if (bias || act != FNN_ACT_IDENTITY)
        FNN(bias_act)(m, n, 1, c, bias, act, c);
}

static void step_update(team_t *team, int opt, int64_t count, real *p, const real *g,
                        real *const *s, const real *kc)
{
    if (team && count >= TEAM_MIN_ELEMS) {
        team->kind = JOB_UPDATE;
        team->opt = opt, team->count = count, team->p = p, team->g = g;
        for (int i = 0; i < 3; i++)
            team->s[i] = s[i];
        for (int i = 0; i < 4; i++)
            team->kc[i] = kc[i];
        team_do(team, team);
        return;
    }
    opt_update(opt, count, p, g, s, kc);
}

/* fnn_dense_step with layer l's dropout mask at mask[l] + step n dims[l + 1] (mask[l]
 * holds the masks of several steps; this step's n x dims[l + 1] block is used), its large
 * products and updates shared with team's helper (NULL: none). */
static void dense_step_at(team_t *team, int64_t step, int64_t n, int64_t nlayers,
                          const int64_t *dims, const int *act, real *const *w,
                          real *const *b, const real *const *mask_all, real *const *y,
                          real *const *yd, real *const *dz, real *const *dx,
                          real *const *dw, real *const *db, const real *x,
                          const int64_t *labels, const real *t, real scale, real *probs,
                          real *loss, int opt, real *const *slots, const real *kc,
                          real *ws)
{
    const int64_t last = nlayers - 1;
#define MASK(l) (mask_all[l] ? mask_all[l] + step * n * dims[(l) + 1] : NULL)
    for (int64_t l = 0; l < nlayers; l++) {
        const int64_t in = dims[l], out = dims[l + 1];
        const real *a = l == 0 ? x : mask_all[l - 1] ? yd[l - 1] : y[l - 1];
        const int kind = act[l] >= FNN_DENSE_ACT_KIND ? act[l] - FNN_DENSE_ACT_KIND : 0;
        step_gemm(team, 0, 0, n, out, in, a, in, w[l], out, y[l], out, b[l],
                  kind ? FNN_ACT_IDENTITY : act[l], out >= 64, ws);
        if (kind) /* (inside a run the kernels keep to this thread: fnn_dense_steps) */
            FNN(act_fwd)(n * out, kind, 0, y[l], y[l]);
        if (l < last && mask_all[l])
            mul_mask(n * out, y[l], MASK(l), yd[l]);
    }
    FNN(softmax_xent)(n, dims[nlayers], y[last], labels, t, scale, probs, loss, dz[last]);
    for (int64_t l = last; l >= 0; l--) {
        const int64_t in = dims[l], out = dims[l + 1];
        const real *a = l == 0 ? x : mask_all[l - 1] ? yd[l - 1] : y[l - 1];
        if (l == last) {
            if (db[l])
                FNN(bias_act_bwd)(n, out, 1, dz[l], dz[l], FNN_ACT_IDENTITY, dz[l], db[l]);
        } else {
            if (mask_all[l])
                mul_mask(n * out, dx[l + 1], MASK(l), dx[l + 1]);
            if (act[l] >= FNN_DENSE_ACT_KIND) { /* the derivative from y, then db from dz */
                FNN(act_bwd)(n * out, act[l] - FNN_DENSE_ACT_KIND, 0, dx[l + 1], y[l], y[l],
                             dz[l]);
                if (db[l])
                    FNN(bias_act_bwd)(n, out, 1, dz[l], dz[l], FNN_ACT_IDENTITY, dz[l], db[l]);
            } else {
                FNN(bias_act_bwd)(n, out, 1, dx[l + 1], y[l], act[l], dz[l], db[l]);
            }
        }
        step_gemm(team, 1, 0, in, out, n, a, in, dz[l], out, dw[l], out, NULL,
                  FNN_ACT_IDENTITY, in < 24, ws);
        if (l > 0)
            step_gemm(team, 0, 1, n, in, out, dz[l], out, w[l], out, dx[l], in, NULL,
                      FNN_ACT_IDENTITY, 1, ws);
        if (opt != FNN_OPT_NONE) {
            real *const *s = slots + 6 * l;
            step_update(team, opt, in * out, w[l], dw[l], s, kc);
            if (b[l])
                step_update(team, opt, out, b[l], db[l], s + 3, kc);
        }
    }
#undef MASK
}

void FNN(dense_step)(int64_t n, int64_t nlayers, const int64_t *dims, const int *act,
                     real *const *w, real *const *b, const real *const *mask,
                     real *const *y, real *const *yd, real *const *dz, real *const *dx,
                     real *const *dw, real *const *db, const real *x, const int64_t *labels,
                     const real *t, real scale, real *probs, real *loss,
                     int opt, real *const *slots, real k0, real k1, real k2, real k3,
                     real *ws)
{
    const real kc[4] = {k0, k1, k2, k3};
    dense_step_at(NULL, 0, n, nlayers, dims, act, w, b, mask, y, yd, dz, dx, dw, db, x,
                  labels, t, scale, probs, loss, opt, slots, kc, ws);
}

/* nsteps steps of fnn_dense_step, one per batch of n rows of a training set, as a training
 * loop would call it: step s gathers rows idx[s n + i] (i < n) of xall (rows of dims[0]
 * elements, row-major) into xb (n x dims[0], overwritten) and their labels from
 * labels_all into lb (n, overwritten), or without labels their rows of tall (k =
 * dims[nlayers] wide) into tb (n x k), then runs the step with mask[l] + s n dims[l + 1]
 * as layer l's dropout mask (mask[l]: nsteps blocks of n x dims[l + 1]), the optimizer
 * constant k0[s] (Adam's alpha or SGD's learning rate of step s, rounded to real as a
 * scalar argument is; k1..k3 as fnn_dense_step's) and writes its probs at probs + s n k
 * and its per-sample losses at loss + s n. Every other argument is fnn_dense_step's,
 * except ws: 2 fnn_dense_step_ws elements (one per thread). The weights, slots and
 * gradients end bit for bit as nsteps calls of fnn_dense_step leave them. With two threads or more allowed,
 * a second thread shares the large products and updates, spinning between them until
 * the run ends (see team_t). idx entries must be valid rows (the caller checks). */
void FNN(dense_steps)(int64_t nsteps, const int64_t *idx, const real *xall,
                      const int64_t *labels_all, const real *tall, real *xb, int64_t *lb,
                      real *tb, int64_t n, int64_t nlayers, const int64_t *dims,
                      const int *act, real *const *w, real *const *b,
                      const real *const *mask, real *const *y, real *const *yd,
                      real *const *dz, real *const *dx, real *const *dw, real *const *db,
                      real scale, real *probs, real *loss, int opt,
                      real *const *slots, const double *k0, real k1, real k2, real k3,
                      real *ws)
{
    const int64_t d = dims[0], k = dims[nlayers];
    team_t team = {0};
    team.ws[0] = ws;
    team.ws[1] = ws + FNN(dense_step_ws)(n, nlayers, dims);
    int use_team = 0;
#if FNN_TEAM
    /* A helper is one more thread: with more allowed, products too large for it (their
     * wake-up worth paying) keep every thread, one kernel call at a time. */
    int64_t most = 0;
    for (int64_t l = 0; l < nlayers; l++)
        most = n * dims[l] * dims[l + 1] > most ? n * dims[l] * dims[l + 1] : most;
    const int nt = fnn_kernel_threads();
    use_team = nt > 1 && (nt == 2 || most <= TEAM_MAX_FLOPS) && nsteps > 1 &&
               !omp_in_parallel();
    atomic_init(&team.posted, 0);
    atomic_init(&team.claimed, 0);
    atomic_init(&team.done, 0);
    atomic_init(&team.quit, 0);
#pragma omp parallel num_threads(2) if (use_team)
#endif
    {
        team_t *tm = NULL;   /* the helper's team, while it helps */
        int helper = 0;
#if FNN_TEAM
        if (omp_get_num_threads() > 1) {
            /* the kernels' own parallel regions stay on their thread (this thread's
             * default; the kernels ask fnn_kernel_threads) */
            omp_set_num_threads(1);
            helper = omp_get_thread_num() == 1;
            tm = &team;
        }
        if (helper)
            team_helper(&team);
#endif
        for (int64_t s = 0; s < nsteps && !helper; s++) {
            const int64_t *rows = idx + s * n;
#if FNN_TEAM
            if (tm && tm->slow) {   /* no job in flight: let the helper go */
                atomic_store_explicit(&tm->quit, 1, memory_order_release);
                tm = NULL;
            }
#endif
            for (int64_t i = 0; i < n; i++) {
                memcpy(xb + i * d, xall + rows[i] * d, (size_t)d * sizeof(real));
                if (labels_all)
                    lb[i] = labels_all[rows[i]];
                else
                    memcpy(tb + i * k, tall + rows[i] * k, (size_t)k * sizeof(real));
            }
            const real kc[4] = {opt != FNN_OPT_NONE ? (real)k0[s] : 0, k1, k2, k3};
            dense_step_at(tm, s, n, nlayers, dims, act, w, b, mask, y, yd, dz, dx, dw, db,
                          xb, labels_all ? lb : NULL, labels_all ? NULL : tb, scale,
                          probs + s * n * k, loss + s * n, opt, slots, kc, ws);
        }
#if FNN_TEAM
        if (tm && !helper)
            atomic_store_explicit(&tm->quit, 1, memory_order_release);
#endif
    }
    (void)use_team;
}
