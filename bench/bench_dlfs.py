"""The book's conv net trained with its own NumPy layers and with fastnn.compat.dlfs.

    python bench/bench_dlfs.py [--steps 90] [--batch 100] [--block 30] [--threads 2]
                               [--backend c]

"Deep Learning from Scratch"'s SimpleConvNet -- Convolution (30 filters 5x5) - Relu -
Pooling 2x2 stride 2 - Affine 100 - Relu - Affine 10 - SoftmaxWithLoss, Adam, float64 --
trained on the Fashion-MNIST sample shipped with fastnn (images reshaped to (N, 1, 28, 28)
and divided by 255), once with the NumPy transcription of the book's layers and optimizer
(tests/dlfs_original.py) and once with the drop-in ones, from the same initial weights on
the same batches. A step is forward + backward + Adam update. The two runs take turns in
blocks of ``--block`` steps (default 30), so that load on the machine affects both alike
while each net's steps follow one another as in a training loop. A block starts slow: the
book's step runs mostly on one thread, and the second core, idle for most of its block,
takes some steps to come back up to speed (on the 2-core Xeon VM, 2026-12-04, the drop-in's
steps after 10 of the book's, by position in the block, medians of 10 blocks: 10.6, 8.9,
8.2, 8.1, 7.9, 8.0, 7.9, 7.9, 7.6, 7.7 ms; after 0.5 s of sleep 16.6, 15.8, 14.4, 12.0,
8.6 ms, then 8.2-8.4), so blocks of 10 measured that transient more than the training
loop: median 8.2-8.5 ms where blocks of 60 gave 7.5. Taking turns every step
(``--block 1``) starts each step right after the other net's (its ~200 MB of array traffic,
NumPy's BLAS threads), with the step's own arrays pushed out of the caches: measured on the
2-core Xeon (2026-12-03, 40 steps), the drop-in's step 11.7 ms that way, 9.9 ms in blocks of
10; the book's 90.7 and 90.9 ms. Unless the environment sets
it, OPENBLAS_THREAD_TIMEOUT=4 is set before NumPy loads: NumPy's OpenBLAS threads would
otherwise spin for about 0.1 s after the book's last np.dot, into the drop-in's step, and on
a 2-core machine a spinning thread takes a core from fastnn's threads (measured: 47.8 ms per
drop-in step with the default, 37.9 ms with the short timeout; the book's step took 141-143
ms either way). A program that uses only one of the two never has that interference. Prints the loss of both at
every step, the largest loss difference, the median wall-clock and CPU time per step (CPU
time counts every thread, NumPy's BLAS threads included; on a loaded machine it is the
steadier of the two) and the speedups. Speed is measured here, never asserted in tests.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

# before NumPy loads OpenBLAS (see the docstring)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
try:
    import fastnn
except ImportError:          # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
    import fastnn
from fastnn.bench import cpu_model, positive_int, thread_count
from fastnn.compat import dlfs
from fastnn.datasets import fashion_mnist


def load_original():
    """tests/dlfs_original.py, imported by path."""
    path = ROOT / "tests" / "dlfs_original.py"
    spec = importlib.util.spec_from_file_location("dlfs_original", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=positive_int, default=90,
                    help="training steps (default 90: three blocks of 30)")
    ap.add_argument("--batch", type=positive_int, default=100, help="batch size (default 100)")
    ap.add_argument("--threads", type=thread_count, default=None,
                    help="fastnn threads (default: fastnn's default)")
    ap.add_argument("--backend", default=None, choices=("c", "numba", "numpy"),
                    help="fastnn backend (default: the active one)")
    ap.add_argument("--blas-threads", type=positive_int, default=None,
                    help="limit NumPy's BLAS threads (used by the book's np.dot) with "
                         "threadpoolctl (default: NumPy's default)")
    ap.add_argument("--block", type=positive_int, default=30,
                    help="steps each net runs before the other's turn (default 30; 1: "
                         "alternate every step)")
    ap.add_argument("--seed", type=int, default=0, help="(>= 0, default 0)")
    ap.add_argument("--show", type=int, default=5,
                    help="steps shown at the start and at the end (default 5)")
    args = ap.parse_args()
    if args.seed < 0 or args.show < 0:
        ap.error(f"--seed and --show must be >= 0, received {args.seed} and {args.show}")
    if args.backend:
        fastnn.set_backend(args.backend)
    if args.threads:
        fastnn.set_num_threads(args.threads)
    blas = "default"
    if args.blas_threads:
        from threadpoolctl import threadpool_limits   # a test dependency of fastnn
        args.blas_limiter = threadpool_limits(limits=args.blas_threads, user_api="blas")
        blas = str(args.blas_threads)
    O = load_original()

    (x_train, t_train), _ = fashion_mnist.load_data(sample=True)
    x_train = x_train.reshape(-1, 1, 28, 28) / 255.0           # float64, as the book's data
    t_train = t_train.astype(np.int64)
    rng = np.random.default_rng(args.seed)
    params = O.SimpleConvNet.init_params(rng)                   # the book's init, std 0.01
    p_orig = {k: v.copy() for k, v in params.items()}
    p_fast = {k: v.copy() for k, v in params.items()}
    net_orig, net_fast = O.SimpleConvNet(O, p_orig), O.SimpleConvNet(dlfs, p_fast)
    opt_orig, opt_fast = O.Adam(lr=0.001), dlfs.Adam(lr=0.001)
    batches = [rng.choice(len(x_train), args.batch, replace=False) for _ in range(args.steps)]

    # warm-up (first-call costs, Numba's cache) on throwaway copies: the runs start cold-free
    for mod in (O, dlfs):
        warm = O.SimpleConvNet(mod, {k: v.copy() for k, v in params.items()})
        warm.gradient(x_train[batches[0]], t_train[batches[0]])

    info = fastnn.backend_info()
    print(f"date {datetime.date.today()}, CPU {cpu_model()}, backend {info['active']}, "
          f"ISA {info['isa']}, fastnn threads {fastnn.get_num_threads()}, BLAS threads "
          f"{blas} (OPENBLAS_THREAD_TIMEOUT {os.environ.get('OPENBLAS_THREAD_TIMEOUT')}), "
          f"numpy {np.__version__}, batch {args.batch}, {args.steps} steps in blocks of "
          f"{args.block}, float64\n")

    def run(net, opt, params, idx):
        """One step; returns (loss, wall-clock seconds, CPU seconds)."""
        x, t = x_train[idx], t_train[idx]
        t0, c0 = time.perf_counter(), time.process_time()
        loss, grads = net.gradient(x, t)
        opt.update(params, grads)
        return float(loss), time.perf_counter() - t0, time.process_time() - c0

    rows = []
    for s0 in range(0, args.steps, args.block):
        block = range(s0, min(s0 + args.block, args.steps))
        orig = [run(net_orig, opt_orig, p_orig, batches[s]) for s in block]
        fast = [run(net_fast, opt_fast, p_fast, batches[s]) for s in block]
        rows += [(s, lo, lf, to, tf, co, cf)
                 for s, (lo, to, co), (lf, tf, cf) in zip(block, orig, fast)]

    print("| step | loss, book's layers | loss, fastnn.compat.dlfs | abs diff | book ms | "
          "dlfs ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    shown = rows if len(rows) <= 2 * args.show else rows[:args.show] + [None] + rows[-args.show:]
    for r in shown:
        if r is None:
            print("| ... | | | | | |")
            continue
        step, lo, lf, to, tf = r[:5]
        print(f"| {step} | {lo:.15f} | {lf:.15f} | {abs(lo - lf):.1e} | {to * 1e3:.1f} | "
              f"{tf * 1e3:.1f} |")
    med_o = statistics.median(r[3] for r in rows)
    med_f = statistics.median(r[4] for r in rows)
    max_diff = max(abs(r[1] - r[2]) for r in rows)
    max_param = max(float(np.max(np.abs(p_orig[k] - p_fast[k]))) for k in params)
    print()
    print("| | book's layers | fastnn.compat.dlfs |")
    print("|---|---:|---:|")
    cpu_o = statistics.median(r[5] for r in rows)
    cpu_f = statistics.median(r[6] for r in rows)
    print(f"| median time per step (wall clock) | {med_o * 1e3:.1f} ms | {med_f * 1e3:.1f} ms |")
    print(f"| speedup (wall clock) | | {med_o / med_f:.1f}x |")
    print(f"| median CPU time per step (all threads) | {cpu_o * 1e3:.1f} ms | "
          f"{cpu_f * 1e3:.1f} ms |")
    print(f"| speedup (CPU time) | | {cpu_o / cpu_f:.1f}x |")
    print(f"| loss at first / last step | {rows[0][1]:.6f} / {rows[-1][1]:.6f} | "
          f"{rows[0][2]:.6f} / {rows[-1][2]:.6f} |")
    print(f"| max abs loss difference over {len(rows)} steps | | {max_diff:.1e} |")
    print(f"| max abs weight difference after the last step | | {max_param:.1e} |")


if __name__ == "__main__":
    main()
