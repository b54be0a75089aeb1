"""In-process A/B of two builds of fastnn's C kernels: both builds' ``fnn_*`` functions are
loaded into one process (ctypes) and called alternately, rep by rep, so a shared machine's
changing load falls on both alike; prints each build's median and the median of the paired
ratios B/A (two identical builds give about 0.95-1.05 on a busy 2-core VM: the noise floor).

Usage (each directory holds a ``fastnn/`` package with its compiled ``_cfastnn*.so``, e.g. a
copy of the source tree's ``fastnn/`` taken before and after a change)::

    python bench/ab_builds.py OLD NEW gemm 1024x1024x1024 86528x9x32 100x4320x100d
    python bench/ab_builds.py OLD NEW conv --threads 1 --reps 40
    python bench/ab_builds.py OLD NEW dlfs
    python bench/ab_builds.py OLD NEW lenet

GEMM shapes are MxKxN, float32 unless suffixed ``d``, op(A) transposed when prefixed
``ta``, op(B) ``tb``, both ``tab`` (``ta4320x100x100d``: A stored as 100 x 4320);
``conv`` runs the fused convolution + 2x2 max pooling forward and backward at the two
convolutions of the CNN (program 2); ``dense`` the dense NHWC backward (no pooling:
BatchNormalization's CNN, a VGG block, LeNet-5's second convolution); ``bn``
BatchNormalization's statistics and backward, channels-last; ``dlfs`` the first
convolution of ``bench_dlfs.py``'s net (NCHW float64) forward and backward; ``lenet``
single-channel NHWC float32 first layers with few filters (LeNet's) forward and their
weight gradient. The outputs of the two builds are compared (GEMM to float rounding;
conv, dense and bn bit for bit or to float rounding as each says; dlfs to 1e-12).
"""
from __future__ import annotations

import argparse
import ctypes as ct
import glob
import os
import re
import time

import numpy as np

P = ct.c_void_p


class _Geom(ct.Structure):
    _fields_ = [(f, ct.c_int64) for f in
                "n h w c kh kw sh sw pt pb pl pr dh dw oh ow".split()]


def _load(directory: str, threads: int, isa: int | None) -> ct.CDLL:
    found = glob.glob(os.path.join(directory, "fastnn", "_cfastnn*.so"))
    if not found:
        raise SystemExit(f"{directory}: no fastnn/_cfastnn*.so (build it first)")
    lib = ct.CDLL(found[0])
    lib.fnn_set_num_threads(threads)
    if isa is not None and lib.fnn_set_isa(isa) != 0:
        raise SystemExit(f"ISA {isa} is not supported by this CPU")
    return lib


def _ab(name: str, call, reps: int, check) -> None:
    for i in (0, 1):
        call(i)
        call(i)
    t = [[], []]
    for r in range(reps):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            call(i)
            t[i].append(time.perf_counter() - t0)
    check()
    a, b = np.array(t[0]), np.array(t[1])
    print(f"{name}: A {np.median(a) * 1e3:.3f} ms  B {np.median(b) * 1e3:.3f} ms  "
          f"B/A paired median {np.median(b / a):.3f}")


def _aligned(shape, dt) -> np.ndarray:
    """An uninitialised C-contiguous array starting on a 64-byte boundary, as ops.matmul
    allocates its outputs (a large C so placed is what takes non-temporal stores)."""
    nbytes = int(np.prod(shape)) * np.dtype(dt).itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes].view(dt).reshape(shape)


def _gemm(libs, shape: str, reps: int) -> None:
    dt = np.float64 if shape.endswith("d") else np.float32
    spec = shape.rstrip("fd")
    ta, tb = spec.startswith(("ta", "tab")), spec.startswith(("tb", "tab"))
    m, k, n = map(int, spec.lstrip("tab").split("x"))
    sfx, real = ("f64", ct.c_double) if dt == np.float64 else ("f32", ct.c_float)
    rng = np.random.default_rng(0)
    # op(a) is m x k and op(b) k x n; a transposed operand is stored as its transpose
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dt)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dt)
    fns, ws_len = [], 0
    for lib in libs:
        ws_fn, fn = getattr(lib, f"fnn_gemm_ws_{sfx}"), getattr(lib, f"fnn_gemm_{sfx}")
        ws_fn.restype, ws_fn.argtypes = ct.c_int64, [ct.c_int64] * 3
        fn.argtypes = [ct.c_int, ct.c_int, ct.c_int64, ct.c_int64, ct.c_int64, real, P,
                       ct.c_int64, P, ct.c_int64, real, P, P, ct.c_int64]
        fns.append(fn)
        ws_len = max(ws_len, ws_fn(m, n, k) + 64)
    # Two sets of output and workspace, each build taking them in turn call by call: where
    # an array's pages fall in the caches is luck of the allocation, and with a set per
    # build that luck made whichever build came second 3-5% slower (1024^3 float on Zen 2,
    # either order, 300 reps; the same build twice: 1.006)
    sets = [(_aligned((m, n), dt), np.empty(ws_len, dt)) for _ in libs]
    calls = [0, 0]

    def call(i):
        c, ws = sets[(i + calls[i]) % 2]
        calls[i] += 1
        fns[i](int(ta), int(tb), m, n, k, 1.0, a.ctypes.data, a.shape[1], b.ctypes.data,
               b.shape[1], 0.0, ws.ctypes.data, c.ctypes.data, n)

    def check():
        # each build's last output (both sets hold a product of the same a and b)
        tol = 1e-10 if dt == np.float64 else 1e-4
        c0, c1 = (sets[(i + calls[i] - 1) % 2][0] for i in (0, 1))
        np.testing.assert_allclose(c0, c1, rtol=tol, atol=tol * np.sqrt(k))

    _ab(f"gemm {shape}", call, reps, check)


def _close_f32(*outputs):
    """A check that each output (the two builds' float32 arrays) agrees to float rounding."""
    def check():
        for arrays in outputs:
            np.testing.assert_allclose(arrays[0], arrays[1], rtol=1e-5,
                                       atol=1e-5 * np.abs(arrays[0]).max())
    return check


def _conv(libs, reps: int) -> None:
    rng = np.random.default_rng(0)
    for lib in libs:
        for nm in ("fnn_conv2d_ws_f32", "fnn_conv2d_pool_bwd_ws_f32"):
            fn = getattr(lib, nm)
            fn.restype = ct.c_int64
            fn.argtypes = [ct.POINTER(_Geom), ct.c_int, ct.c_int64, ct.c_int64, ct.c_int]
        # (the signatures since window positions, pos: builds before them cannot be
        # compared here)
        lib.fnn_conv2d_pool_fwd_f32.argtypes = [ct.POINTER(_Geom), ct.c_int, ct.c_int64, P, P,
                                                P, ct.c_int, ct.c_int64, P, P, P, P]
        lib.fnn_conv2d_pool_bwd_f32.argtypes = [ct.POINTER(_Geom), ct.c_int, ct.c_int64, P, P,
                                                P, P, P, P, ct.c_int64, P, P, P, P]
    for n, h, c, f in ((128, 28, 1, 32), (128, 13, 32, 64)):
        g = _Geom(n, h, h, c, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, h - 2, h - 2)
        x = rng.random((n, h, h, c), dtype=np.float32)
        w = rng.standard_normal((3, 3, c, f)).astype(np.float32)
        b = np.zeros(f, np.float32)
        ph, need_dx = (h - 2) // 2, c > 1
        y = [np.empty((n, ph, ph, f), np.float32) for _ in libs]
        am = [np.empty((n, ph, ph, f), np.int64) for _ in libs]
        dy = rng.standard_normal((n, ph, ph, f)).astype(np.float32)
        dx = [np.empty_like(x) for _ in libs]
        dw = [np.empty_like(w) for _ in libs]
        db = [np.empty_like(b) for _ in libs]
        ws = [np.empty(max(lib.fnn_conv2d_ws_f32(ct.byref(g), 0, f, n, 0),
                           lib.fnn_conv2d_pool_bwd_ws_f32(ct.byref(g), 0, f, n, int(need_dx)))
                       + 64, np.float32) for lib in libs]

        def fwd(i, g=g, f=f, x=x, w=w, b=b, y=y, am=am, ws=ws, n=n):
            libs[i].fnn_conv2d_pool_fwd_f32(ct.byref(g), 0, f, x.ctypes.data, w.ctypes.data,
                                            b.ctypes.data, 1, n, ws[i].ctypes.data,
                                            y[i].ctypes.data, am[i].ctypes.data, None)

        def bwd(i, g=g, f=f, x=x, w=w, dy=dy, am=am, ws=ws, dx=dx, dw=dw, db=db, n=n,
                need_dx=need_dx):
            libs[i].fnn_conv2d_pool_bwd_f32(ct.byref(g), 0, f, dy.ctypes.data, None,
                                            am[0].ctypes.data, None, x.ctypes.data,
                                            w.ctypes.data, n, ws[i].ctypes.data,
                                            dx[i].ctypes.data if need_dx else None,
                                            dw[i].ctypes.data, db[i].ctypes.data)

        def same(*outputs):  # each output: the two builds' arrays
            def check():
                for arrays in outputs:
                    np.testing.assert_array_equal(arrays[0], arrays[1])
            return check

        _ab(f"conv+pool forward {c}->{f}", fwd, reps, same(y, am))
        _ab(f"conv+pool backward {c}->{f}", bwd, reps,
            same(dw, db, *((dx,) if need_dx else ())))


def _conv_signatures(libs, sfx: str) -> None:
    """ctypes signatures of fnn_conv2d_ws / _fwd / _bwd for the dtype suffix ``sfx``."""
    for lib in libs:
        ws, fwd, bwd = (getattr(lib, f"fnn_conv2d_{nm}_{sfx}") for nm in ("ws", "fwd", "bwd"))
        ws.restype = ct.c_int64
        ws.argtypes = [ct.POINTER(_Geom), ct.c_int, ct.c_int64, ct.c_int64, ct.c_int]
        fwd.argtypes = [ct.POINTER(_Geom), ct.c_int, ct.c_int64, P, P, P, ct.c_int, ct.c_int64,
                        P, P]
        bwd.argtypes = [ct.POINTER(_Geom), ct.c_int, ct.c_int64, P, P, P, ct.c_int64, P, P, P,
                        P]


def _dlfs(libs, reps: int) -> None:
    """The first convolution of bench_dlfs.py's net: NCHW float64, 100 x 1 x 28 x 28, 30
    filters 5 x 5, forward (bias, no activation) and backward (dx, dw, db)."""
    rng = np.random.default_rng(0)
    _conv_signatures(libs, "f64")
    n, h, c, f, k = 100, 28, 1, 30, 5
    o = h - k + 1
    g = _Geom(n, h, h, c, k, k, 1, 1, 0, 0, 0, 0, 1, 1, o, o)
    x = rng.standard_normal((n, c, h, h))
    w = rng.standard_normal((f, c, k, k))
    b = rng.standard_normal(f)
    dy = rng.standard_normal((n, f, o, o))
    y = [np.empty((n, f, o, o)) for _ in libs]
    dx = [np.empty_like(x) for _ in libs]
    dw = [np.empty_like(w) for _ in libs]
    db = [np.empty_like(b) for _ in libs]
    ws = [np.empty(max(lib.fnn_conv2d_ws_f64(ct.byref(g), 1, f, n, bw) for bw in (0, 1))
                   + 64) for lib in libs]

    def fwd(i):
        libs[i].fnn_conv2d_fwd_f64(ct.byref(g), 1, f, x.ctypes.data, w.ctypes.data,
                                   b.ctypes.data, 0, n, ws[i].ctypes.data, y[i].ctypes.data)

    def bwd(i):
        libs[i].fnn_conv2d_bwd_f64(ct.byref(g), 1, f, dy.ctypes.data, x.ctypes.data,
                                   w.ctypes.data, n, ws[i].ctypes.data, dx[i].ctypes.data,
                                   dw[i].ctypes.data, db[i].ctypes.data)

    def close(*outputs):  # each output: the two builds' arrays
        def check():
            for arrays in outputs:
                np.testing.assert_allclose(arrays[0], arrays[1], rtol=1e-12,
                                           atol=1e-12 * np.abs(arrays[0]).max())
        return check

    _ab("dlfs conv forward 1->30 5x5 float64", fwd, reps, close(y))
    _ab("dlfs conv backward 1->30 5x5 float64 (dx, dw, db)", bwd, reps, close(dx, dw, db))


def _lenet(libs, reps: int) -> None:
    """Single-channel NHWC float32 first layers with few filters, 128 x 28 x 28 x 1 images:
    LeNet's Conv2D(6, 5, padding="same"), a valid 5 x 5 with 6 filters and a 3 x 3 with 8;
    forward (bias, no activation) and the weight and bias gradients (no dx: a first
    layer)."""
    rng = np.random.default_rng(0)
    _conv_signatures(libs, "f32")
    n, h = 128, 28
    x = rng.standard_normal((n, h, h, 1)).astype(np.float32)
    for k, f, pad in ((5, 6, 2), (5, 6, 0), (3, 8, 0)):
        o = h + 2 * pad - k + 1
        g = _Geom(n, h, h, 1, k, k, 1, 1, pad, pad, pad, pad, 1, 1, o, o)
        w = rng.standard_normal((k, k, 1, f)).astype(np.float32)
        b = rng.standard_normal(f).astype(np.float32)
        dy = rng.standard_normal((n, o, o, f)).astype(np.float32)
        y = [np.empty((n, o, o, f), np.float32) for _ in libs]
        dw = [np.empty_like(w) for _ in libs]
        db = [np.empty_like(b) for _ in libs]
        ws = [_aligned((max(lib.fnn_conv2d_ws_f32(ct.byref(g), 0, f, n, bw)
                            for bw in (0, 1)),), np.float32) for lib in libs]

        def fwd(i, g=g, f=f, w=w, b=b, y=y, ws=ws):
            libs[i].fnn_conv2d_fwd_f32(ct.byref(g), 0, f, x.ctypes.data, w.ctypes.data,
                                       b.ctypes.data, 0, n, ws[i].ctypes.data,
                                       y[i].ctypes.data)

        def bwd(i, g=g, f=f, w=w, dy=dy, dw=dw, db=db, ws=ws):
            libs[i].fnn_conv2d_bwd_f32(ct.byref(g), 0, f, dy.ctypes.data, x.ctypes.data,
                                       w.ctypes.data, n, ws[i].ctypes.data, None,
                                       dw[i].ctypes.data, db[i].ctypes.data)

        name = f"1->{f} {k}x{k} pad {pad}"
        _ab(f"{name} forward", fwd, reps, _close_f32(y))
        _ab(f"{name} dw, db", bwd, reps, _close_f32(dw, db))


def _dense(libs, reps: int) -> None:
    """The dense NHWC float32 backward (no pooling after it: BatchNormalization's CNN) at
    program 2's second convolution, 128 x 13 x 13 x 32 -> 64 3x3 valid, VGG blocks'
    128 x 16 x 16 x 32 -> 32 and 128 x 8 x 8 x 64 -> 64 3x3 "same" and LeNet-5's 128 x 14
    x 14 x 6 -> 16 5x5 valid:
    the weight and bias gradients alone (a layer's dx not needed) and with dx."""
    rng = np.random.default_rng(0)
    _conv_signatures(libs, "f32")
    for n, h, c, f, k, pad in ((128, 13, 32, 64, 3, 0), (128, 16, 32, 32, 3, 1),
                               (128, 8, 64, 64, 3, 1), (128, 14, 6, 16, 5, 0)):
        o = h + 2 * pad - k + 1
        g = _Geom(n, h, h, c, k, k, 1, 1, pad, pad, pad, pad, 1, 1, o, o)
        x = rng.standard_normal((n, h, h, c)).astype(np.float32)
        w = rng.standard_normal((k, k, c, f)).astype(np.float32)
        dy = rng.standard_normal((n, o, o, f)).astype(np.float32)
        dx = [np.empty_like(x) for _ in libs]
        dw = [np.empty_like(w) for _ in libs]
        db = [np.empty(f, np.float32) for _ in libs]
        ws = [_aligned((lib.fnn_conv2d_ws_f32(ct.byref(g), 0, f, n, 1),), np.float32)
              for lib in libs]

        def bwd(i, with_dx, g=g, f=f, x=x, w=w, dy=dy, dx=dx, dw=dw, db=db, ws=ws, n=n):
            libs[i].fnn_conv2d_bwd_f32(ct.byref(g), 0, f, dy.ctypes.data, x.ctypes.data,
                                       w.ctypes.data, n, ws[i].ctypes.data,
                                       dx[i].ctypes.data if with_dx else None,
                                       dw[i].ctypes.data, db[i].ctypes.data)

        name = f"dense {c}->{f} {k}x{k} on {h}x{h}{' same' if pad else ''}"
        _ab(f"{name} dw, db", lambda i: bwd(i, False), reps, _close_f32(dw, db))
        _ab(f"{name} dx, dw, db", lambda i: bwd(i, True), reps, _close_f32(dx, dw, db))


def _bn(libs, reps: int) -> None:
    """BatchNormalization's channels-last kernels at the BatchNormalization CNN's two
    shapes, (128, 26, 26, 32) and (128, 11, 11, 64) float32: the batch statistics, and the
    backward in training (dx, dgamma, dbeta); the two builds' results compared bit for bit."""
    rng = np.random.default_rng(0)
    for lib in libs:
        lib.fnn_bn_stats_f32.argtypes = [ct.c_int64] * 3 + [P] * 3
        lib.fnn_bn_bwd_f32.argtypes = [ct.c_int64] * 3 + [P] * 5 + [ct.c_int] + [P] * 3
    for shape in ((128, 26, 26, 32), (128, 11, 11, 64)):
        c = shape[-1]
        outer = int(np.prod(shape[:-1]))
        x = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        gamma = (1 + 0.1 * rng.standard_normal(c)).astype(np.float32)
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
        inv = (1 / np.sqrt(var + 1e-3)).astype(np.float32)
        mean = mean.astype(np.float32)
        outs = [[np.empty(c, np.float32) for _ in range(2)] for _ in libs]
        grads = [[np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)]
                 for _ in libs]

        def stats(i):
            libs[i].fnn_bn_stats_f32(outer, c, 1, x.ctypes.data, outs[i][0].ctypes.data,
                                     outs[i][1].ctypes.data)

        def bwd(i):
            libs[i].fnn_bn_bwd_f32(outer, c, 1, dy.ctypes.data, x.ctypes.data,
                                   mean.ctypes.data, inv.ctypes.data, gamma.ctypes.data, 1,
                                   *(a.ctypes.data for a in grads[i]))

        def same(arrays):
            def check():
                for a, b in zip(*arrays):
                    np.testing.assert_array_equal(a, b)
            return check

        _ab(f"batchnorm stats {shape}", stats, reps, same(outs))
        _ab(f"batchnorm backward {shape}", bwd, reps, same(grads))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="directory of build A (holding fastnn/_cfastnn*.so)")
    p.add_argument("b", help="directory of build B")
    p.add_argument("what", choices=["gemm", "conv", "dense", "bn", "dlfs", "lenet"])
    p.add_argument("shapes", nargs="*", default=["1024x1024x1024"],
                   help="GEMM shapes MxKxN[d] (default 1024x1024x1024)")
    p.add_argument("--threads", type=int, default=2, help="threads (>= 1, default 2)")
    p.add_argument("--reps", type=int, default=20, help="reps per build (>= 1, default 20)")
    p.add_argument("--isa", type=int, default=None, choices=[0, 1, 2, 3],
                   help="force an ISA in both builds: 0 generic, 1 AVX2, 2 AVX-512, "
                        "3 avx512_256")
    args = p.parse_args(argv)
    if args.threads < 1 or args.reps < 1:
        p.error(f"--threads and --reps must be >= 1, received {args.threads} and {args.reps}")
    for s in args.shapes if args.what == "gemm" else ():
        if not re.fullmatch(r"(ta|tb|tab)?[1-9][0-9]*x[1-9][0-9]*x[1-9][0-9]*[fd]?", s):
            p.error(f"GEMM shapes are MxKxN with an optional ta/tb/tab prefix and f/d "
                    f"suffix (e.g. 1024x1024x1024, ta4320x100x100d), received {s!r}")
    libs = [_load(d, args.threads, args.isa) for d in (args.a, args.b)]
    print(f"threads {args.threads}, {args.reps} reps, A = {args.a}, B = {args.b}")
    if args.what == "gemm":
        for s in args.shapes:
            _gemm(libs, s, args.reps)
    elif args.what == "conv":
        _conv(libs, args.reps)
    elif args.what == "lenet":
        _lenet(libs, args.reps)
    elif args.what == "dense":
        _dense(libs, args.reps)
    elif args.what == "bn":
        _bn(libs, args.reps)
    else:
        _dlfs(libs, args.reps)


if __name__ == "__main__":
    main()
