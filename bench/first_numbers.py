"""First numbers for fastnn.ops: GEMM GFLOPS per backend beside numpy.matmul, and conv
forward+backward times of the small CNN's two convolutions.

    python bench/first_numbers.py [--reps 7] [--threads 2] [--backends c,numba,numpy]

Prints medians (and the machine, date and thread count) as Markdown tables. Speed is
measured here, never asserted in tests.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import time

import numpy as np

import fastnn
from fastnn import ops
from fastnn.bench import cpu_model

GEMM_SHAPES = [(128, 128, 128), (512, 512, 512), (1024, 1024, 1024),
               (86528, 9, 32), (15488, 288, 64)]
CONV_CASES = [((128, 28, 28, 1), 32), ((128, 13, 13, 32), 64)]


def median_time(fn, reps: int) -> float:
    fn()  # warm-up (JIT compile, workspace)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", default=",".join(fastnn.backend_info()["available"]))
    args = ap.parse_args()
    fastnn.set_num_threads(args.threads)
    backends = args.backends.split(",")
    rng = np.random.default_rng(0)
    info = fastnn.backend_info()
    print(f"date {datetime.date.today()}, CPU {cpu_model()}, threads {args.threads}, "
          f"ISA {info['isa']}, numpy {np.__version__}, median of {args.reps}\n")

    print("| M x K x N | " + " | ".join(f"{b} GFLOPS" for b in backends) +
          " | numpy.matmul GFLOPS | c / numpy |")
    print("|---" * (len(backends) + 3) + "|")
    for m, k, n in GEMM_SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((m, n), np.float32)
        flops = 2.0 * m * n * k
        reps = args.reps if m * n * k <= 512 ** 3 else max(3, args.reps // 2)
        row, gf = [], {}
        for be in backends:
            with fastnn.use_backend(be):
                t = median_time(lambda: ops.matmul(a, b, out=c), reps)
            gf[be] = flops / t / 1e9
            row.append(f"{gf[be]:.1f}")
        t_np = median_time(lambda: np.matmul(a, b, out=c), reps)
        g_np = flops / t_np / 1e9
        ratio = f"{gf['c'] / g_np:.2f}" if "c" in gf else "-"
        print(f"| {m} x {k} x {n} | " + " | ".join(row) + f" | {g_np:.1f} | {ratio} |")

    print("\n| conv (NHWC, float32, 3x3 valid) | " +
          " | ".join(f"{b} fwd ms | {b} bwd ms" for b in backends) + " |")
    print("|---" * (2 * len(backends) + 1) + "|")
    for shape, f in CONV_CASES:
        x = rng.standard_normal(shape, dtype=np.float32)
        w = rng.standard_normal((3, 3, shape[3], f), dtype=np.float32) * 0.1
        bias = np.zeros(f, np.float32)
        y = ops.conv2d_forward(x, w, bias)
        dy = rng.standard_normal(y.shape, dtype=np.float32)
        row = []
        for be in backends:
            with fastnn.use_backend(be):
                tf = median_time(lambda: ops.conv2d_forward(x, w, bias, activation="relu"),
                                 args.reps)
                tb = median_time(lambda: ops.conv2d_backward(dy, x, w), args.reps)
            row += [f"{tf * 1e3:.2f}", f"{tb * 1e3:.2f}"]
        print(f"| x {shape}, {f} filters | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
