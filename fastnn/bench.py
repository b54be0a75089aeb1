"""``fastnn bench``: fastnn against the NumPy reference and PyTorch, kernels and training.

Two suites:

``kernels``
    Every case runs in *this* process: float32 GEMM at 1024^3, 2048^3, the CNN's skinny
    im2col shapes (86528, 9, 32) and (15488, 288, 64) and the small (128, 128, 10), plus
    float64 1024^3 (fastnn's C backend vs ``numpy.matmul`` vs ``torch.mm``; fastnn's numpy
    backend *is* ``numpy.matmul`` there, so it is not repeated); the CNN's two
    convolutions forward (with bias and fused ReLU) and backward (NHWC, 3x3, valid; the
    first layer's backward skips ``dx`` like the model does), its 2x2 max poolings
    forward and backward, batch normalization of its two convolution outputs in training
    (forward and backward), and the first convolution and pooling of Deep Learning from
    Scratch's conv net in float64 NCHW (fastnn C vs fastnn's NumPy reference backend vs
    ``torch.nn.functional.conv2d`` / ``torch.ops.aten.convolution_backward`` /
    ``max_pool2d(return_indices=True)`` / ``max_pool2d_with_indices_backward`` /
    ``native_batch_norm`` / ``native_batch_norm_backward`` on NCHW tensors; layouts are converted before timing, only the op is timed). Each case is
    warmed up once, then timed ``--reps`` times, its implementations side by side: rep r
    of each runs before rep r + 1 of any, so a burst of load from other tenants of the
    machine falls on all of them alike, and each rep follows 0.3 s of untimed calls of the
    same implementation (the previous library's spinning threads die down, this one's wake
    up); calls faster than about a millisecond are repeated inside a rep (``inner`` in the
    JSON) and the per-call time is kept. The larger products also time fastnn's
    register-only FMA loop (:data:`FMA_IMPL`, C backend) doing the same FLOPs in the same
    alternation: the table's "fastnn / FMA loop" is the fraction of the machine's
    arithmetic peak the product reached, both rates measured in the same seconds.
``train``
    Fractions of an epoch of example program 2 (the CNN, batch 128, Adam) and program 4
    (Flatten-Dense(128, relu)-Dense(10, softmax), batch 32, Adam) on the first
    ``--train-images`` Fashion-MNIST training images, with fastnn (C backend; others with
    ``--backends``) and an equivalent PyTorch ``nn.Sequential`` (Adam lr 1e-3,
    cross-entropy on logits, manual batching of shuffled NumPy arrays). The median epoch
    time over ``--train-reps`` epochs (after a two-batch warm-up) is scaled by
    ``60000 / images`` to a full-epoch estimate: that column is computed, not measured.
    The implementations of one program run side by side: each in its own child process,
    all warmed up, then epoch r of each before epoch r + 1 of any (one at a time; the
    others wait on a pipe), so a change of load on a shared machine falls on all alike.

Peak memory is a per-process quantity -- the high-water mark of the resident set
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux; ``VmHWM`` in
/proc/self/status) -- so it cannot be split between two cases that share a process, and
it never goes down. That is why every end-to-end case runs in its own child process
(``sys.executable -c``, working directory outside any source tree, ``PYTHONPATH`` = the
directory holding the imported ``fastnn`` package), which reports its peak RSS and its
timings; the kernel suite, which shares one process, has no memory column. On Linux the
child reads ``VmHWM`` rather than ``ru_maxrss``: after fork+exec, ``ru_maxrss`` also
counts the peak of the forked copy of the parent (hundreds of MiB once the parent has
imported PyTorch), ``VmHWM`` does not (``ru_maxrss`` is still recorded in the JSON). The
peak includes the interpreter, the libraries (PyTorch's are large) and the loaded data
set; the "training growth" column is the peak while training (the high-water mark is
reset through ``/proc/self/clear_refs`` once setup is done) minus the RSS at that point.

Threads: ``--threads`` goes to ``fastnn.set_num_threads``, ``torch.set_num_threads`` and,
through ``threadpoolctl`` when it is installed, to NumPy's BLAS.

PyTorch and matplotlib are optional and imported lazily: without PyTorch its columns are
left out with a note; without matplotlib the PNG chart is skipped with a note.

Register the command in ``fastnn/__main__.py`` with :func:`add_parser`; :func:`main`
runs it stand-alone (``python -m fastnn.bench``).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .utils._args import expand_user
from .utils._files import atomic_write, resolve_target

__all__ = ["main", "add_parser", "run", "kernel_cases", "kernel_callable", "make_trainer",
           "positive_int", "thread_count",
           "load_train_data", "torch_or_none", "machine_info", "format_tables",
           "GROUPS", "PROGRAMS", "FULL_EPOCH_IMAGES"]

#: Where ``--json`` and ``--png`` write by default.
_DEFAULT_OUTPUT = {"--json": "fastnn_bench.json", "--png": "fastnn_bench.png"}
#: Kernel groups and end-to-end programs that ``--only`` accepts.
GROUPS = ("matmul", "conv", "pool", "norm")
PROGRAMS = ("cnn", "mlp")
#: Training images in one full Fashion-MNIST epoch (the scaling target).
FULL_EPOCH_IMAGES = 60000
#: Batch size of each program (program 2: 128, program 4: 32).
BATCH_SIZES = {"cnn": 128, "mlp": 32}
PROGRAM_TITLES = {"cnn": "program 2: CNN, batch 128, Adam",
                  "mlp": "program 4: MLP 784-128-10, batch 32, Adam"}
#: A rep repeats calls faster than this (seconds) so that one rep lasts about this long.
MIN_REP_SECONDS = 1e-3
_SLOW_FIRST_CALL = 0.05  # a first call this long is not tried three more times
# Before each timed rep in time_side_by_side, the implementation runs untimed for this long:
# the previous implementation's worker threads keep spinning for a while after its last
# call (OpenBLAS for about 2**28 cycles, ~0.1 s) and on a 2-core machine a spinning thread
# takes a core from the next implementation's threads; and a library whose threads went to
# sleep pays to wake them. Measured on the 2-core VM: fastnn's 1024^3 right after NumPy's
# took 28.6 ms instead of 13.7 with no warm-up, and a 2.3 ms convolution backward took
# 5.3 ms after a 0.15 s sleep; warmed up this way, both run as they do back to back.
# OpenBLAS's spinning outlasted 0.15 s (86528x9x32 after np.matmul and 0, 0.1, 0.15,
# 0.2, 0.3 s of fastnn's calls: 1548, 1587, 990, 816, 877 us; 850 us back to back).
SETTLE_SECONDS = 0.3
# With --quick (plumbing, numbers that mean nothing) each rep is preceded by one untimed
# call instead: the settling was most of the 29 s the quick kernel suite took.
QUICK_SETTLE_SECONDS = 0.0
_MAX_INNER = 1000
_CHILD_TAG = "@@fastnn-bench"

# (dtype, M, K, N)
MATMUL_SHAPES = [("float32", 1024, 1024, 1024), ("float32", 2048, 2048, 2048),
                 ("float32", 86528, 9, 32), ("float32", 15488, 288, 64),
                 ("float32", 128, 128, 10), ("float64", 1024, 1024, 1024)]
# (x shape NHWC, filters, need_dx): the CNN's two convolutions; the first layer's input
# needs no gradient, so the model (and PyTorch) skips dx there.
CONV_CASES = [((128, 28, 28, 1), 32, False), ((128, 13, 13, 32), 64, True)]
# (x shape NCHW, filters, kernel, dtype): the first convolution of "Deep Learning from
# Scratch"'s conv net (fastnn.compat.dlfs; bench/bench_dlfs.py), PyTorch's own layout.
NCHW_CONV_CASES = [((100, 1, 28, 28), 30, 5, "float64")]
POOL_CASES = [(128, 26, 26, 32), (128, 11, 11, 64)]
# (x shape NCHW, dtype): the pooling of Deep Learning from Scratch's conv net, after its
# first convolution (fastnn.compat.dlfs), in PyTorch's own layout.
NCHW_POOL_CASES = [((100, 30, 24, 24), "float64")]
# Batch normalization (training: the batch's statistics) of the CNN's two convolution
# outputs, as a Conv2D - BatchNormalization - ReLU model has them (NHWC, float32).
NORM_CASES = [(128, 26, 26, 32), (128, 11, 11, 64)]
#: BatchNormalization's default epsilon (Keras).
NORM_EPSILON = 1e-3
# --quick: the same case structure at toy sizes (for plumbing tests).
QUICK_MATMUL_SHAPES = [("float32", 64, 64, 64), ("float32", 512, 9, 8),
                       ("float32", 32, 32, 10), ("float64", 64, 64, 64)]
QUICK_CONV_CASES = [((2, 10, 10, 1), 4, False), ((2, 6, 6, 4), 8, True)]
QUICK_NCHW_CONV_CASES = [((2, 1, 20, 20), 4, 5, "float64")]
QUICK_POOL_CASES = [(2, 8, 8, 4), (2, 6, 6, 8)]
QUICK_NORM_CASES = [(2, 8, 8, 4)]
QUICK_NCHW_POOL_CASES = [((2, 3, 8, 8), "float64")]
QUICK_TRAIN_IMAGES = 256

# Competitor columns of the kernel table, in order; "fastnn" is the baseline.
KERNEL_IMPLS = ("fastnn", "numpy", "torch")
IMPL_TITLES = {"fastnn": "fastnn", "numpy": "NumPy ref", "torch": "PyTorch"}
# The ceiling of the matrix products (C backend only): the kernels' register-only FMA loop
# (fnn_fma_peak: the GEMM micro-kernel's accumulators, no loads or stores) on the same
# threads, doing the product's FLOPs, timed side by side with the implementations, rep by
# rep, so fastnn's fraction of it compares two rates measured within seconds of each
# other. Run for products of at least this many FLOPs (shorter loops measure the parallel
# region's start and end, not the FMA units), and for every product with --quick.
FMA_IMPL = "fma"
FMA_MIN_FLOPS = 1e8


# =========================================================================== helpers
def one_line(exc: BaseException) -> str:
    """An error's message on one line, for a command-line error without a traceback."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) \
        or type(exc).__name__


def positive_int(text: str) -> int:
    """An argparse ``type`` for an int >= 1 (a usage error naming the option otherwise),
    shared by ``fastnn bench``, ``fastnn demo`` and the scripts in examples/."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, received {text}")
    return value


def thread_count(text: str) -> int:
    """``--threads``: an int in [1, fastnn's MAX_THREADS] (a usage error otherwise)."""
    from ._backend import MAX_THREADS
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_THREADS}, received {text}")
    return value


def _name_list(allowed: Sequence[str], what: str) -> Callable[[str], List[str]]:
    def parse(text: str) -> List[str]:
        names = [s.strip().lower() for s in text.split(",") if s.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"{what} must be a comma-separated list of {', '.join(allowed)}; "
                f"received {text!r}")
        return list(dict.fromkeys(names))
    return parse


def default_threads() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpuinfo_field(name: str) -> Optional[str]:
    """The value of the first ``name`` line of /proc/cpuinfo (``"model name"``,
    ``"vendor_id"``, ``"cpu family"``, ...), or None where there is none."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (or the platform's guess)."""
    return (cpuinfo_field("model name") or platform.processor() or platform.machine() or
            "unknown")


def torch_or_none() -> Tuple[Any, Optional[str]]:
    """``(torch, None)`` if PyTorch imports, else ``(None, reason)``. Never required."""
    try:
        import torch  # noqa: PLC0415 - optional, lazy on purpose
    except Exception as exc:  # ImportError, or a broken install
        return None, f"PyTorch is not available ({type(exc).__name__}: {exc})"
    return torch, None


def _ru_maxrss_kib() -> Optional[int]:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in KiB (None where unsupported)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)  # macOS: bytes


def _peak_rss_kib() -> Optional[int]:
    """This process's peak RSS in KiB: ``VmHWM`` on Linux, else ``ru_maxrss``.

    On Linux ``ru_maxrss`` also counts the high-water mark the process had *before* its
    ``exec`` -- that of the forked copy of the parent -- so a child started by a parent
    that had imported PyTorch would report the parent's size. ``VmHWM`` belongs to the
    process image alone (and can be reset, see :func:`_reset_peak_rss`).
    """
    hwm = _proc_status_kib("VmHWM")
    return hwm if hwm is not None else _ru_maxrss_kib()


def machine_info(threads: int, torch=None) -> dict:
    """Date, CPU, ISA, threads and library versions (the table header and JSON)."""
    import fastnn

    info = fastnn.backend_info()
    blas = None
    try:
        from threadpoolctl import threadpool_info
        blas = [{k: d.get(k) for k in ("internal_api", "version", "num_threads",
                                       "threading_layer")}
                for d in threadpool_info() if d.get("user_api") == "blas"]
    except Exception:  # threadpoolctl missing or failing: only informative
        pass
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "isa": info["isa"],
        # the emulated AVX-512 test build (tools/avx512_emulated.sh): its times mean nothing
        "isa_emulated": bool(info.get("isa_emulated")),
        "threads": threads,
        "cpus_available": default_threads(),
        "fastnn": fastnn.__version__,
        "fastnn_backend": info["active"],
        "fastnn_backends_available": info["available"],
        "numpy": np.__version__,
        "numpy_blas": blas,
        "torch": getattr(torch, "__version__", None),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@contextlib.contextmanager
def thread_limits(threads: int, torch=None, notes: Optional[List[str]] = None):
    """Run fastnn, PyTorch and NumPy's BLAS on ``threads`` threads; restore afterwards."""
    import fastnn
    from fastnn import _backend

    # each loaded backend's own count (the active one's may be the NumPy backend's 1),
    # and whether fastnn.set_num_threads had been called
    saved = list(_backend._num_threads)
    old_counts = {mod: mod.get_num_threads() for mod in _backend._loaded.values()}
    old_torch = torch.get_num_threads() if torch is not None else None
    fastnn.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    if notes is not None and threads > default_threads():
        notes.append(f"{threads} threads on {default_threads()} CPUs: the threads take turns")
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            if notes is not None:
                notes.append("threadpoolctl is not installed: NumPy's BLAS ran with its "
                             "default thread count (pip install threadpoolctl)")
            yield
        else:
            with threadpool_limits(limits=threads, user_api="blas"):
                yield
    finally:
        if saved:
            fastnn.set_num_threads(saved[0])
        else:
            for mod, n in old_counts.items():
                mod.set_num_threads(n)
            _backend._num_threads[:] = []
        if torch is not None:
            torch.set_num_threads(old_torch)


def _calibrate(fn: Callable[[], Any]) -> int:
    """Run ``fn`` once (first-call costs) and return ``inner``: how many calls make one
    timed rep. A call shorter than :data:`MIN_REP_SECONDS` is repeated ``inner`` times per
    rep (the count is chosen from the fastest of three more calls, as the first may pay
    one-off costs and any one may be preempted: the first is not trusted to say a call is
    slow unless it took :data:`_SLOW_FIRST_CALL` or more), and one more untimed rep warms
    it up. (A call timed alone right after the untimed calls before a rep took 9-16 us
    where the same call took 3.3-3.7 us in a loop, NumPy's likewise: one first call of a
    3 us product that happened to take over a millisecond made every rep time one call.)"""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    inner = 1
    if first < _SLOW_FIRST_CALL:
        fastest = first
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            fastest = min(fastest, time.perf_counter() - t0)
        if fastest < MIN_REP_SECONDS:
            inner = int(min(_MAX_INNER, max(1, MIN_REP_SECONDS // max(fastest, 1e-7))))
            for _ in range(inner):  # the warm-up rep
                fn()
    return inner


def _keep_busy(fn: Callable[[], Any], seconds: float) -> None:
    """Call ``fn`` (untimed) at least once and until ``seconds`` have passed."""
    end = time.perf_counter() + seconds
    fn()
    while time.perf_counter() < end:
        fn()


def _one_rep(fn: Callable[[], Any], inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def time_side_by_side(fns: Dict[str, Callable[[], Any]], reps: int,
                      ctxs: Optional[Dict[str, Callable[[], Any]]] = None,
                      tick: Optional[Callable[[str], None]] = None,
                      settle: Optional[float] = None) -> Dict[str, Any]:
    """Time several implementations of one computation in alternation: each is warmed up
    (:func:`_calibrate`), then rep ``r`` of every implementation runs before rep ``r + 1``
    of any, so load on a shared machine falls on all of them alike; each rep is preceded by
    ``settle`` seconds (default :data:`SETTLE_SECONDS`) of untimed calls of the same
    implementation.

    ``fns``: name -> zero-argument callable; ``ctxs``: name -> context-manager factory
    entered around each of that implementation's reps (e.g. ``fastnn.use_backend``);
    ``tick(name)``: called after each warm-up and each rep (a failed implementation's
    included). Returns name -> ``(times, inner)`` (seconds per call), or name -> the
    exception it raised (that implementation is then left out of the remaining reps).
    """
    ctxs = ctxs or {}
    out: Dict[str, Any] = {}
    inner: Dict[str, int] = {}

    def ctx(name):
        return ctxs[name]() if name in ctxs else contextlib.nullcontext()

    for name, fn in fns.items():
        try:
            with ctx(name):
                inner[name] = _calibrate(fn)
            out[name] = ([], inner[name])
        except Exception as exc:  # reported by the caller; the others go on
            out[name] = exc
        if tick:
            tick(name)
    for _ in range(reps):
        for name, fn in fns.items():
            if not isinstance(out[name], Exception):
                try:
                    with ctx(name):
                        _keep_busy(fn, SETTLE_SECONDS if settle is None else settle)
                        out[name][0].append(_one_rep(fn, inner[name]))
                except Exception as exc:
                    out[name] = exc
            if tick:   # also for a failed one: the progress bar counts every rep
                tick(name)
    return out


# =========================================================================== kernels
@dataclass
class KernelCase:
    """One kernel benchmark: ``group`` (matmul/conv/pool/norm), ``op``, shapes in ``params``."""
    group: str
    op: str
    name: str
    shape: str
    params: dict
    flops: Optional[float]
    impls: Tuple[str, ...] = KERNEL_IMPLS

    def impl_label(self, impl: str) -> str:
        """What the ``impl`` column runs for this case."""
        if impl == "numpy":
            return "numpy.matmul" if self.group == "matmul" else "fastnn numpy backend"
        if impl == "torch":
            return {"matmul": "torch.mm", "conv": "torch conv2d (NCHW)",
                    "pool": "torch max_pool2d (NCHW)",
                    "norm": "torch native_batch_norm (NCHW)"}[self.group]
        if impl == FMA_IMPL:
            return "FMA-only loop"
        return impl

    def runnable_impls(self, torch, fastnn_backend: str) -> List[str]:
        """The implementations that run here: no PyTorch without it, no FMA loop off the C
        backend."""
        return [i for i in self.impls if (i != "torch" or torch is not None)
                and (i != FMA_IMPL or fastnn_backend == "c")]


def kernel_cases(quick: bool = False, only: Optional[Sequence[str]] = None) -> List[KernelCase]:
    """The kernel cases (toy sizes with ``quick``), restricted to the ``only`` groups."""
    only = set(GROUPS) if only is None else set(only)   # (an empty list: no group)
    cases: List[KernelCase] = []
    if "matmul" in only:
        for dtype, m, k, n in (QUICK_MATMUL_SHAPES if quick else MATMUL_SHAPES):
            short = "f32" if dtype == "float32" else "f64"
            flops = 2.0 * m * k * n
            cases.append(KernelCase(
                "matmul", "matmul", f"matmul {short} {m}x{k}x{n}", f"M,K,N = {m},{k},{n}",
                {"dtype": dtype, "m": m, "k": k, "n": n}, flops,
                KERNEL_IMPLS + ((FMA_IMPL,) if quick or flops >= FMA_MIN_FLOPS else ())))
    if "conv" in only:
        for xs, f, need_dx in (QUICK_CONV_CASES if quick else CONV_CASES):
            n, h, w, c = xs
            oh, ow = h - 2, w - 2
            fwd = 2.0 * n * oh * ow * f * 9 * c
            params = {"dtype": "float32", "x": list(xs), "w": [3, 3, c, f],
                      "padding": "valid", "layout": "NHWC", "need_dx": need_dx,
                      "activation": "relu"}
            shape = f"x{tuple(xs)}, {f} 3x3 filters"
            cases.append(KernelCase("conv", "conv_fwd", f"conv2d fwd+relu {c}->{f}",
                                    shape, dict(params), fwd))
            cases.append(KernelCase("conv", "conv_pool_fwd",
                                    f"conv2d fwd+relu+maxpool {c}->{f}", shape + ", 2x2 pool",
                                    dict(params), fwd))
            what = "dx,dw,db" if need_dx else "dw,db"
            cases.append(KernelCase("conv", "conv_bwd", f"conv2d bwd ({what}) {c}->{f}",
                                    shape, dict(params), fwd * (2 if need_dx else 1)))
            cases.append(KernelCase("conv", "conv_pool_bwd",
                                    f"conv2d+maxpool bwd ({what}) {c}->{f}",
                                    shape + ", from the pooled gradient", dict(params),
                                    fwd * (2 if need_dx else 1)))
        for xs, f, k, dtype in (QUICK_NCHW_CONV_CASES if quick else NCHW_CONV_CASES):
            n, c, h, w = xs
            fwd = 2.0 * n * (h - k + 1) * (w - k + 1) * f * k * k * c
            params = {"dtype": dtype, "x": list(xs), "w": [f, c, k, k], "padding": "valid",
                      "layout": "NCHW", "need_dx": True, "activation": None}
            shape = f"x{tuple(xs)} NCHW, {f} {k}x{k} filters"
            short = "f32" if dtype == "float32" else "f64"
            cases.append(KernelCase("conv", "conv_fwd",
                                    f"conv2d fwd+bias NCHW {short} {c}->{f}", shape,
                                    dict(params), fwd))
            cases.append(KernelCase("conv", "conv_bwd",
                                    f"conv2d bwd (dx,dw,db) NCHW {short} {c}->{f}", shape,
                                    dict(params), 2 * fwd))
    if "pool" in only:
        for xs in (QUICK_POOL_CASES if quick else POOL_CASES):
            params = {"dtype": "float32", "x": list(xs), "pool": [2, 2], "layout": "NHWC"}
            shape = f"x{tuple(xs)}, 2x2"
            cases.append(KernelCase("pool", "pool_fwd", f"maxpool fwd {xs[3]}ch", shape,
                                    dict(params), None))
            cases.append(KernelCase("pool", "pool_bwd", f"maxpool bwd {xs[3]}ch", shape,
                                    dict(params), None))
        for xs, dtype in (QUICK_NCHW_POOL_CASES if quick else NCHW_POOL_CASES):
            params = {"dtype": dtype, "x": list(xs), "pool": [2, 2], "layout": "NCHW"}
            shape = f"x{tuple(xs)} NCHW, 2x2"
            short = "f32" if dtype == "float32" else "f64"
            for op, what in (("pool_fwd", "fwd"), ("pool_bwd", "bwd")):
                cases.append(KernelCase("pool", op, f"maxpool {what} NCHW {short} {xs[1]}ch",
                                        shape, dict(params), None))
    if "norm" in only:
        for xs in (QUICK_NORM_CASES if quick else NORM_CASES):
            params = {"dtype": "float32", "x": list(xs), "layout": "NHWC"}
            shape = f"x{tuple(xs)}, training"
            cases.append(KernelCase("norm", "bn_fwd", f"batchnorm fwd {xs[3]}ch", shape,
                                    dict(params), None))
            cases.append(KernelCase("norm", "bn_bwd", f"batchnorm bwd {xs[3]}ch", shape,
                                    dict(params), None))
    return cases


def kernel_callable(case: KernelCase, impl: str, torch=None, seed: int = 0
                    ) -> Callable[[], Any]:
    """A zero-argument function running ``case`` with ``impl``, inputs already made.

    ``impl``: ``"fastnn"`` or ``"numpy"`` (see :meth:`KernelCase.impl_label`) or
    ``"torch"``. fastnn calls run on the backend active when they are *called* (wrap the
    timing in :func:`fastnn.use_backend`); ``"numpy"`` selects fastnn's numpy backend
    itself for conv and pooling.
    """
    import fastnn
    from fastnn import ops

    rng = np.random.default_rng(seed)
    p = case.params
    dtype = np.dtype(p["dtype"])
    if impl == "torch" and torch is None:
        raise ValueError("impl 'torch' needs the torch module")

    def randn(shape):
        return rng.standard_normal(shape).astype(dtype)

    def on_numpy_backend(fn):
        def run():
            with fastnn.use_backend("numpy"):
                return fn()
        return run

    if impl == FMA_IMPL:
        if case.group != "matmul":
            raise ValueError(f"impl {FMA_IMPL!r} is for matmul cases, not {case.group!r}")
        from .backends import c_backend
        per_round = c_backend.fma_peak(dtype, 1)[0]   # all threads' FLOPs of one round
        iters = max(1, int(round(case.flops / per_round)))
        return lambda: c_backend.fma_peak(dtype, iters)[0]

    if case.group == "matmul":
        m, k, n = p["m"], p["k"], p["n"]
        a, b = randn((m, k)), randn((k, n))
        # the output 64-byte aligned, as ops.matmul allocates its own (NumPy's large arrays
        # start 16 bytes past a line), and the same kind of array for every implementation
        from .utils._arrays import empty_aligned
        c = empty_aligned((m, n), dtype, min_bytes=0)
        if impl == "fastnn":
            return lambda: ops.matmul(a, b, out=c)
        if impl == "numpy":
            return lambda: np.matmul(a, b, out=c)
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        return lambda: torch.mm(ta, tb, out=tc)

    if case.group == "conv":
        x = randn(tuple(p["x"]))
        nchw = p["layout"] == "NCHW"
        if nchw:
            f, cin, kh, kw = p["w"]
        else:
            kh, kw, cin, f = p["w"]
        w = (randn(tuple(p["w"])) * np.sqrt(2.0 / (kh * kw * cin))).astype(dtype)
        bias = (randn((f,)) * 0.1).astype(dtype)
        need_dx, act, lay = p["need_dx"], p["activation"], p["layout"]
        if nchw:
            y_shape = (x.shape[0], f, x.shape[2] - kh + 1, x.shape[3] - kw + 1)
        else:
            y_shape = (x.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1, f)
        dy = randn(y_shape)
        # the argmax the layers keep, on the backend of the call (layers.conv)
        from .layers.conv import pair_argmax_format
        if case.op == "conv_pool_bwd":   # the pair's backward from its pooled gradient
            with fastnn.use_backend("numpy"):
                yp, argmax = ops.conv2d_maxpool_forward(x, w, bias, activation="relu",
                                                        crop=True)
                pos = ops.conv2d_maxpool_forward(x, w, bias, activation="relu", crop=True,
                                                 argmax_format="window")[1]
            dyp = randn(yp.shape)
        if impl in ("fastnn", "numpy"):
            if case.op == "conv_fwd":
                fn = lambda: ops.conv2d_forward(  # noqa: E731
                    x, w, bias, activation=act, layout=lay)
            elif case.op == "conv_pool_fwd":
                fn = lambda: ops.conv2d_maxpool_forward(  # noqa: E731
                    x, w, bias, activation="relu", argmax_format=pair_argmax_format())
            elif case.op == "conv_pool_bwd":
                fn = lambda: ops.conv2d_maxpool_backward(  # noqa: E731
                    dyp, pos if pair_argmax_format() == "window" else argmax, x, w,
                    crop=True, need_dx=need_dx)
            else:
                fn = lambda: ops.conv2d_backward(  # noqa: E731
                    dy, x, w, need_dx=need_dx, layout=lay)
            return on_numpy_backend(fn) if impl == "numpy" else fn

        def nchw_tensor(a, axes):   # PyTorch's layout, converted before timing
            return torch.from_numpy(a if nchw else np.ascontiguousarray(a.transpose(axes)))
        tx, tdy = nchw_tensor(x, (0, 3, 1, 2)), nchw_tensor(dy, (0, 3, 1, 2))
        tw, tb = nchw_tensor(w, (3, 2, 0, 1)), torch.from_numpy(bias)
        F = torch.nn.functional
        if case.op == "conv_fwd" and act is None:
            return lambda: F.conv2d(tx, tw, tb)
        if case.op == "conv_fwd":
            return lambda: torch.relu_(F.conv2d(tx, tw, tb))
        if case.op == "conv_pool_fwd":
            return lambda: F.max_pool2d(torch.relu_(F.conv2d(tx, tw, tb)), 2,
                                        return_indices=True)
        conv_bwd = torch.ops.aten.convolution_backward
        mask = [bool(need_dx), True, True]
        if case.op == "conv_pool_bwd":   # what autograd runs: unpool, then the convolution
            tz = torch.relu_(F.conv2d(tx, tw, tb))
            ty, idx = F.max_pool2d(tz, 2, return_indices=True)
            tdyp = torch.from_numpy(np.ascontiguousarray(dyp.transpose(0, 3, 1, 2)))
            pool_bwd = torch.ops.aten.max_pool2d_with_indices_backward

            def run():
                tdz = pool_bwd(tdyp, tz, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
                return conv_bwd(tdz, tx, tw, [f], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                mask)
            return run
        return lambda: conv_bwd(tdy, tx, tw, [f], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                mask)

    if case.group == "pool":
        x = randn(tuple(p["x"]))
        ph, pw = p["pool"]
        lay = p["layout"]
        if impl in ("fastnn", "numpy"):
            if case.op == "pool_fwd":
                fn = lambda: ops.maxpool2d_forward(x, (ph, pw), layout=lay)  # noqa: E731
            else:
                with fastnn.use_backend("numpy"):
                    y, argmax = ops.maxpool2d_forward(x, (ph, pw), layout=lay)
                dy = randn(y.shape)
                fn = lambda: ops.maxpool2d_backward(dy, argmax, x.shape, (ph, pw),  # noqa: E731
                                                    layout=lay)
            return on_numpy_backend(fn) if impl == "numpy" else fn
        tx = torch.from_numpy(np.ascontiguousarray(x if lay == "NCHW" else
                                                   x.transpose(0, 3, 1, 2)))
        F = torch.nn.functional
        if case.op == "pool_fwd":
            return lambda: F.max_pool2d(tx, (ph, pw), return_indices=True)
        ty, tidx = F.max_pool2d(tx, (ph, pw), return_indices=True)
        tdy = torch.from_numpy(randn(tuple(ty.shape)))
        pool_bwd = torch.ops.aten.max_pool2d_with_indices_backward
        return lambda: pool_bwd(tdy, tx, [ph, pw], [ph, pw], [0, 0], [1, 1], False, tidx)

    if case.group == "norm":
        # BatchNormalization in training: the batch's statistics, the normalization (and
        # the moving averages' update, a few channels long, left out), then its backward
        x = randn(tuple(p["x"]))
        c = x.shape[-1]
        gamma, beta = (1 + 0.1 * randn((c,))).astype(dtype), (0.1 * randn((c,))).astype(dtype)
        dy = randn(x.shape)
        if impl in ("fastnn", "numpy"):
            def stats():
                mean, var = ops.batchnorm_stats(x)
                return mean, (1 / np.sqrt(var + dtype.type(NORM_EPSILON))).astype(dtype)

            if case.op == "bn_fwd":
                fn = lambda: ops.batchnorm_forward(x, *stats(), gamma, beta)  # noqa: E731
            else:
                with fastnn.use_backend("numpy"):
                    mean, inv = stats()
                fn = lambda: ops.batchnorm_backward(dy, x, mean, inv, gamma)  # noqa: E731
            return on_numpy_backend(fn) if impl == "numpy" else fn
        tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        tdy = torch.from_numpy(np.ascontiguousarray(dy.transpose(0, 3, 1, 2)))
        tg, tb = torch.from_numpy(gamma), torch.from_numpy(beta)
        rm, rv = torch.zeros(c, dtype=tx.dtype), torch.ones(c, dtype=tx.dtype)
        bn = torch.ops.aten.native_batch_norm
        if case.op == "bn_fwd":
            return lambda: bn(tx, tg, tb, rm, rv, True, 0.01, NORM_EPSILON)
        _, tmean, tinv = bn(tx, tg, tb, rm, rv, True, 0.01, NORM_EPSILON)
        bn_bwd = torch.ops.aten.native_batch_norm_backward
        return lambda: bn_bwd(tdy, tx, tg, rm, rv, tmean, tinv, True, NORM_EPSILON,
                              [True, True, True])

    raise ValueError(f"unknown kernel group {case.group!r}")


def run_kernels(cases: Sequence[KernelCase], reps: int, fastnn_backend: str, torch=None,
                tick: Optional[Callable[[str], None]] = None,
                settle: Optional[float] = None) -> List[dict]:
    """Time every case with every implementation (``settle``: as
    :func:`time_side_by_side`'s); returns the JSON records."""
    import fastnn

    records = []
    for case in cases:
        rec = {"group": case.group, "op": case.op, "name": case.name, "shape": case.shape,
               "params": case.params, "flops": case.flops, "results": {}, "speedup": {}}
        labels, fns, ctxs = {}, {}, {}
        flops: Dict[str, Optional[float]] = {}
        for impl in case.runnable_impls(torch, fastnn_backend):
            flops[impl] = case.flops
            labels[impl] = (f"fastnn {fastnn_backend}" if impl == "fastnn"
                            else case.impl_label(impl))
            try:
                fns[impl] = kernel_callable(case, impl, torch)
                if impl == FMA_IMPL:   # whole rounds: the FLOPs it really does
                    flops[impl] = float(fns[impl]())
            except Exception as exc:  # report and go on with the other cases
                rec["results"][impl] = {"impl": labels[impl],
                                        "error": f"{type(exc).__name__}: {exc}"}
                if tick:   # the ticks this implementation would have made
                    for _ in range(reps + 1):
                        tick(f"{case.name} [{labels[impl]}]")
            if impl == "fastnn":
                ctxs[impl] = lambda: fastnn.use_backend(fastnn_backend)
        step = (lambda impl: tick(f"{case.name} [{labels[impl]}]")) if tick else None
        timed = time_side_by_side(fns, reps, ctxs, step, settle)
        for impl, res in timed.items():
            if isinstance(res, Exception):
                rec["results"][impl] = {"impl": labels[impl],
                                        "error": f"{type(res).__name__}: {res}"}
                continue
            times, inner = res
            med = statistics.median(times)
            rec["results"][impl] = {
                "impl": labels[impl], "times": times, "inner": inner, "median": med,
                "gflops": (flops[impl] / med / 1e9) if flops[impl] and med > 0 else None}
            if impl == FMA_IMPL:
                rec["results"][impl]["flops"] = flops[impl]
        rec["results"] = {i: rec["results"][i] for i in case.impls if i in rec["results"]}
        base = rec["results"].get("fastnn", {}).get("median")
        for impl, res in rec["results"].items():
            if impl not in ("fastnn", FMA_IMPL) and base and res.get("median"):
                rec["speedup"][impl] = res["median"] / base
        peak = rec["results"].get(FMA_IMPL, {}).get("gflops")
        if peak and base:   # fastnn's rate over the loop's, both medians of this run
            rec["of_fma_loop"] = rec["results"]["fastnn"]["gflops"] / peak
        records.append(rec)
    return records


# =========================================================================== training
def load_train_data(program: str, n_images: int, layout: str = "NHWC", sample=None):
    """The first ``n_images`` Fashion-MNIST training images as float32 in [0, 1] and
    their int64 labels, shaped for ``program`` (``layout`` "NCHW" for PyTorch's CNN).

    Returns ``(x, y, source)``; ``source`` says whether the full set or the shipped sample
    (which :func:`fastnn.datasets.fashion_mnist.load_data` falls back to, warning) was used.
    """
    from .datasets import fashion_mnist

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (x_train, y_train), _ = fashion_mnist.load_data(sample=sample)
    source = "shipped sample" if (caught or sample) else "full dataset"
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    n = max(1, min(int(n_images), len(x_train)))
    x = x_train[:n].astype(np.float32) / np.float32(255.0)
    y = y_train[:n].astype(np.int64)
    if program == "cnn":
        x = x[:, None, :, :] if layout == "NCHW" else x[..., None]
    return np.ascontiguousarray(x), y, source


def _fastnn_model(program: str):
    if program == "cnn":
        from .demo import build_cnn
        return build_cnn()
    from .layers import Dense, Flatten
    from .models import Sequential

    model = Sequential([Flatten(input_shape=(28, 28)), Dense(128, activation="relu"),
                        Dense(10, activation="softmax")], name="fashion_mlp")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _torch_model(torch, program: str):
    nn = torch.nn
    if program == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, 10))
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU(), nn.Linear(128, 10))


class _FastnnTrainer:
    def __init__(self, program: str, backend: str, x, y, seed: int = 0):
        import fastnn

        self.fastnn = fastnn
        self.backend = backend
        self.x, self.y = x, y
        self.batch_size = BATCH_SIZES[program]
        fastnn.utils.set_random_seed(seed)
        with fastnn.use_backend(backend):
            self.model = _fastnn_model(program)

    def warmup(self) -> None:
        n = min(len(self.x), 2 * self.batch_size)
        with self.fastnn.use_backend(self.backend):
            self.model.fit(self.x[:n], self.y[:n], batch_size=self.batch_size, epochs=1,
                           verbose=0)

    def epoch(self) -> float:
        with self.fastnn.use_backend(self.backend):
            hist = self.model.fit(self.x, self.y, batch_size=self.batch_size, epochs=1,
                                  verbose=0)
        return float(hist.history["loss"][-1])


class _TorchTrainer:
    def __init__(self, program: str, torch, x, y, seed: int = 0):
        self.torch = torch
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.x, self.y = x, y
        self.batch_size = BATCH_SIZES[program]
        self.model = _torch_model(torch, program)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def _run(self, n: int) -> float:
        torch, bs = self.torch, self.batch_size
        self.model.train()
        order = self.rng.permutation(n)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            xb = torch.from_numpy(self.x[idx])
            yb = torch.from_numpy(self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            logits = self.model(xb)
            loss = self.loss_fn(logits, yb)
            loss.backward()
            self.opt.step()
            # what fastnn's fit also does each step: the running loss and accuracy
            loss_sum += float(loss.item()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum().item())
        return loss_sum / max(n, 1)

    def warmup(self) -> None:
        self._run(min(len(self.x), 2 * self.batch_size))

    def epoch(self) -> float:
        return self._run(len(self.x))


def make_trainer(program: str, impl: str, x, y, torch=None, seed: int = 0):
    """An object with ``warmup()`` and ``epoch()`` (one pass over ``x``, returns the loss).

    ``impl``: ``"fastnn:<backend>"`` or ``"torch"``; ``x`` NHWC for fastnn's CNN, NCHW for
    PyTorch's (see :func:`load_train_data`).
    """
    if program not in PROGRAMS:
        raise ValueError(f"program must be one of {PROGRAMS}, received {program!r}")
    if impl == "torch":
        if torch is None:
            raise ValueError("impl 'torch' needs the torch module")
        return _TorchTrainer(program, torch, x, y, seed)
    if not impl.startswith("fastnn:"):
        raise ValueError(f"impl must be 'fastnn:<backend>' or 'torch', received {impl!r}")
    return _FastnnTrainer(program, impl.split(":", 1)[1], x, y, seed)


def _proc_status_kib(key: str) -> Optional[int]:
    """``VmRSS`` / ``VmHWM`` of this process from /proc/self/status (Linux), in KiB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0: ``5 > clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _child_main(spec_json: str) -> int:
    """Entry point of an end-to-end child process: train, print timings and peak RSS.

    Memory (see :func:`_peak_rss_kib`): ``setup_peak_rss_kib`` is the peak RSS once the
    libraries, the data and the model are loaded; then (Linux) the high-water mark is
    reset, so the peak at the end is the peak *while training*
    (``training_peak_rss_kib``), and ``peak_rss_kib`` is the larger of the two: the
    process's peak. ``ru_maxrss_kib`` is ``getrusage``'s figure, for reference.
    """
    spec = json.loads(spec_json)
    out = sys.stdout
    rss_start = _peak_rss_kib()
    impl, program, threads = spec["impl"], spec["program"], spec["threads"]
    torch = None
    if impl == "torch":
        import torch  # the parent checked that it imports
    import fastnn

    try:
        x, y, source = load_train_data(program, spec["train_images"],
                                       "NCHW" if impl == "torch" else "NHWC", spec.get("sample"))
    except (OSError, ValueError) as exc:   # a corrupt or missing data set: one line
        print(f"fastnn bench: {one_line(exc)}", file=sys.stderr)
        return 1
    with thread_limits(threads, torch):
        trainer = make_trainer(program, impl, x, y, torch, spec.get("seed", 0))
        setup_peak = _peak_rss_kib()
        reset = _reset_peak_rss()
        rss_before = _proc_status_kib("VmRSS") if reset else None
        trainer.warmup()
        out.write(f"{_CHILD_TAG} tick\n")
        out.flush()
        times, losses = [], []
        for _ in range(spec["reps"]):
            if spec.get("lockstep") and not sys.stdin.readline():
                return 1                       # the parent went away
            t0 = time.perf_counter()
            losses.append(trainer.epoch())
            times.append(time.perf_counter() - t0)
            out.write(f"{_CHILD_TAG} tick\n")
            out.flush()
    end_peak = _peak_rss_kib()
    ru_maxrss = _ru_maxrss_kib()
    peaks = [p for p in (setup_peak, end_peak) if p is not None]
    result = {"times": times, "losses": losses, "train_images": int(len(x)),
              "data_source": source, "rss_start_kib": rss_start,
              "setup_peak_rss_kib": setup_peak,
              "peak_rss_kib": max(peaks) if peaks else None,
              "rss_before_training_kib": rss_before,
              "training_peak_rss_kib": end_peak if reset else None,
              "ru_maxrss_kib": ru_maxrss,
              "training_rss_growth_kib": (end_peak - rss_before
                                          if reset and end_peak and rss_before else None),
              "fastnn_isa": fastnn._backend.get().isa(),
              "torch": getattr(torch, "__version__", None)}
    out.write(f"{_CHILD_TAG} result {json.dumps(result)}\n")
    out.flush()
    return 0


def _package_parent() -> str:
    import fastnn
    return str(Path(fastnn.__file__).resolve().parent.parent)


def _child_env(threads: int) -> dict:
    env = dict(os.environ)
    parent = _package_parent()
    env["PYTHONPATH"] = os.pathsep.join([parent] + ([env["PYTHONPATH"]]
                                                    if env.get("PYTHONPATH") else []))
    env["OMP_NUM_THREADS"] = str(threads)
    return env


_CHILD_CODE = ("import sys; from fastnn.bench import _child_main; "
               "sys.exit(_child_main(sys.argv[1]))")


class _Child:
    """One end-to-end case in a child process, driven rep by rep (``lockstep``): after its
    warm-up it runs one timed epoch each time :meth:`step` is called."""

    def __init__(self, program: str, impl: str, spec: dict, tmp: str, tick):
        self.program, self.impl, self.tick = program, impl, tick
        self.result, self.other = None, []
        self.err = open(os.path.join(tmp, f"stderr-{impl.replace(':', '-')}.txt"), "w+")
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD_CODE, json.dumps(spec)],
                                     cwd=tmp, env=_child_env(spec["threads"]),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True)
        self.alive = True

    def _read_until_tick(self) -> bool:
        """Read the child's output up to its next tick (True) or its end (False)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(f"{_CHILD_TAG} tick"):
                if self.tick:
                    self.tick()
                return True
            if line.startswith(f"{_CHILD_TAG} result "):
                self.result = json.loads(line[len(_CHILD_TAG) + 8:])
            else:
                self.other.append(line.rstrip("\n"))
        self.alive = False
        return False

    def warmed_up(self) -> None:
        self._read_until_tick()

    def step(self) -> None:
        """One timed epoch (a no-op once the child has failed)."""
        if not self.alive:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        except OSError:
            self.alive = False
            return
        self._read_until_tick()

    def finish(self) -> dict:
        """Wait for the child's result; the case's JSON record."""
        if self.alive:
            self._read_until_tick()                 # reads the result line, then EOF
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        rc = self.proc.wait()
        self.err.seek(0)
        stderr = self.err.read()
        self.err.close()
        record = {"program": self.program, "impl": self.impl}
        if rc != 0 or self.result is None:
            tail = "\n".join((stderr.strip().splitlines() or self.other
                              or ["(no output)"])[-8:])
            record["error"] = f"child exited with code {rc}: {tail}"
            return record
        record.update(self.result)
        med = statistics.median(self.result["times"])
        record["median"] = med
        record["per_full_epoch"] = med * FULL_EPOCH_IMAGES / self.result["train_images"]
        record["images_per_s"] = self.result["train_images"] / med if med > 0 else None
        warn = [l for l in stderr.splitlines() if l.startswith("note:")]
        if warn:
            record["child_notes"] = warn
        return record


def run_train_cases(program: str, impls: Sequence[str], *, threads: int, train_images: int,
                    reps: int, tick: Optional[Callable[[str], None]] = None,
                    sample=None) -> List[dict]:
    """Run one program with every implementation in ``impls`` side by side: one child
    process each (own peak RSS), all warmed up, then epoch ``r`` of each runs before epoch
    ``r + 1`` of any (one child at a time; the others wait on a pipe), so a change of load
    on the machine falls on all of them alike. Returns their JSON records."""
    records = []
    with tempfile.TemporaryDirectory(prefix="fastnn-bench-") as tmp:
        children = []
        for impl in impls:
            spec = {"program": program, "impl": impl, "threads": threads,
                    "train_images": train_images, "reps": reps, "seed": 0,
                    "sample": sample, "lockstep": True}
            label = "PyTorch" if impl == "torch" else f"fastnn {impl.split(':', 1)[1]}"
            step_tick = (lambda label=label: tick(f"{program} [{label}]")) if tick else None
            child = _Child(program, impl, spec, tmp, step_tick)
            child.warmed_up()      # one at a time: the warm-ups do not overlap either
            children.append(child)
        for _ in range(reps):
            for child in children:
                child.step()
        for child in children:
            rec = child.finish()
            rec.update({"batch_size": BATCH_SIZES[program], "requested_images": train_images,
                        "side_by_side": True})
            records.append(rec)
    return records


# =========================================================================== tables
def _fmt_time(seconds: Optional[float]) -> str:
    """Three significant digits in the unit the rounded value falls in (999.6 us is "1 ms",
    not "1e+03 us")."""
    if seconds is None:
        return "-"
    rounded = float(f"{seconds:.3g}")
    if rounded >= 1:
        return f"{seconds:.2f} s"
    if rounded >= 1e-3:
        return f"{seconds * 1e3:.3g} ms" if rounded < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds * 1e6:.3g} us"


def _fmt(value: Optional[float], spec: str = ".1f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def _mib(kib: Optional[float]) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def header_line(machine: dict) -> str:
    torch = machine.get("torch") or "not used (see notes)"
    isa = machine["isa"] + (" EMULATED (a test build: not a speed)"
                            if machine.get("isa_emulated") else "")
    return (f"fastnn bench, {machine['date']}: CPU {machine['cpu']}, ISA {isa}, "
            f"{machine['threads']} threads, numpy {machine['numpy']}, torch {torch}, "
            f"fastnn {machine['fastnn']}")


def kernel_table(records: Sequence[dict], with_torch: bool) -> List[str]:
    impls = ["fastnn", "numpy"] + (["torch"] if with_torch else [])
    backend = next((r["results"]["fastnn"]["impl"] for r in records
                    if "fastnn" in r["results"]), "fastnn")
    with_fma = any(FMA_IMPL in r["results"] for r in records)
    head = ["kernel", "shape", f"{backend}", "GFLOPS"]
    if with_fma:
        head += ["FMA-only loop GFLOPS", "fastnn / FMA loop"]
    for impl in impls[1:]:
        head += [IMPL_TITLES[impl], "GFLOPS", f"speedup vs {IMPL_TITLES[impl]}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in records:
        row = [rec["name"], rec["shape"]]
        for impl in impls:
            res = rec["results"].get(impl)
            if res is None:
                cells = ["n/a", "-"]
            elif "error" in res:
                cells = ["error", "-"]
            else:
                cells = [_fmt_time(res["median"]), _fmt(res["gflops"])]
            if impl == "fastnn" and with_fma:
                loop = rec["results"].get(FMA_IMPL, {})
                frac = rec.get("of_fma_loop")
                cells += [_fmt(loop.get("gflops")) if "error" not in loop else "error",
                          "-" if frac is None else f"{100 * frac:.1f}%"]
            if impl != "fastnn":
                cells.append(_fmt(rec["speedup"].get(impl), ".2f", "x"))
            row += cells
        lines.append("| " + " | ".join(row) + " |")
    return lines


def train_table(records: Sequence[dict]) -> List[str]:
    head = ["program", "implementation", "images", "median s / pass", "s / 60k epoch (scaled)",
            "images/s", "fastnn speedup", "peak RSS MiB", "peak while training MiB",
            "training growth MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in records:
        label = rec.get("label", rec["impl"])
        if "error" in rec:
            lines.append(f"| {PROGRAM_TITLES[rec['program']]} | {label} | error: see notes "
                         f"| - | - | - | - | - | - | - |")
            continue
        sp = rec.get("speedup")
        lines.append("| " + " | ".join([
            PROGRAM_TITLES[rec["program"]], label, str(rec["train_images"]),
            _fmt(rec["median"], ".3f"), _fmt(rec["per_full_epoch"], ".2f"),
            _fmt(rec["images_per_s"], ".0f"),
            "baseline" if rec.get("baseline") else _fmt(sp, ".2f", "x"),
            _mib(rec.get("peak_rss_kib")), _mib(rec.get("training_peak_rss_kib")),
            _mib(rec.get("training_rss_growth_kib"))]) + " |")
    return lines


def format_tables(result: dict) -> str:
    """The Markdown report for a :func:`run` result."""
    m = result["machine"]
    s = result["settings"]
    out = [header_line(m), ""]
    with_torch = bool(m.get("torch"))
    if result.get("kernels"):
        out.append(f"### Kernels (median of {s['reps']} reps after one warm-up, the "
                   "implementations alternating rep by rep; speedup = competitor time / "
                   "fastnn time)")
        out.append("")
        out += kernel_table(result["kernels"], with_torch)
        out.append("")
    if result.get("train"):
        out.append(f"### End-to-end training (median of {s['train_reps']} passes over the "
                   f"first images of Fashion-MNIST after a 2-batch warm-up; the 60k column is "
                   f"scaled by 60000 / images, not measured; each row in its own process, "
                   f"the rows' passes alternating)")
        out.append("")
        out += train_table(result["train"])
        out.append("")
    if result.get("notes"):
        out += [f"- {n}" for n in result["notes"]]
    return "\n".join(out).rstrip() + "\n"


# =========================================================================== chart
def write_chart(result: dict, path: str) -> Optional[str]:
    """Save a PNG chart of ``result`` (atomically); returns None, or why it was skipped."""
    png, why = chart_png(result)
    if png is not None:
        _write_file(path, png, "--png")
    return why


def chart_png(result: dict) -> Tuple[Optional[bytes], Optional[str]]:
    """A PNG chart of ``result``: ``(png bytes, None)``, or ``(None, why it was
    skipped)``."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend is touched
    except Exception as exc:
        return None, (f"the PNG chart was skipped: matplotlib is not available "
                      f"({type(exc).__name__}: {exc}); pip install matplotlib "
                      f"(or pip install fastnn[bench])")
    kernels = [r for r in result.get("kernels", []) if r["results"].get("fastnn", {}).get("median")]
    train = [r for r in result.get("train", []) if "error" not in r]
    panels = (1 if kernels else 0) + (1 if train else 0)
    if not panels:
        return None, "the PNG chart was skipped: no successful measurement to plot"
    heights = ([max(3.0, 0.45 * len(kernels) + 1.5)] if kernels else []) + \
              ([max(2.5, 0.5 * len(train) + 1.5)] if train else [])
    fig = Figure(figsize=(10, sum(heights) + 0.8))
    axes = fig.subplots(panels, 1, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]
    ax_i = 0
    if kernels:
        ax = axes[ax_i]
        ax_i += 1
        others = [i for i in ("numpy", "torch") if any(i in r["speedup"] for r in kernels)]
        ypos = np.arange(len(kernels))
        h = 0.8 / max(len(others), 1)
        for j, impl in enumerate(others):
            vals = [r["speedup"].get(impl, np.nan) for r in kernels]
            ax.barh(ypos + (j - (len(others) - 1) / 2) * h, vals, height=h,
                    label=f"vs {IMPL_TITLES[impl]}")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yticks(ypos)
        ax.set_yticklabels([f"{r['name']}\n{r['shape']}" for r in kernels], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("fastnn speedup (competitor time / fastnn time; > 1: fastnn faster)")
        ax.set_title("Kernels")
        ax.legend(fontsize=8)
    if train:
        ax = axes[ax_i]
        labels = [f"{r['program']}: {r.get('label', r['impl'])}" for r in train]
        vals = [r["per_full_epoch"] for r in train]
        ypos = np.arange(len(train))
        colors = ["tab:blue" if r["impl"].startswith("fastnn") else "tab:orange" for r in train]
        ax.barh(ypos, vals, color=colors)
        for y, v in zip(ypos, vals):
            ax.text(v, y, f" {v:.1f} s", va="center", fontsize=8)
        ax.set_xlim(0, max(vals) * 1.15)
        ax.set_yticks(ypos)
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("seconds per 60k-image epoch (scaled from the measured images)")
        ax.set_title("End-to-end training")
    fig.suptitle(header_line(result["machine"]), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue(), None


def _write_file(path: str, data: bytes, option: str) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same directory,
    renamed over it): an interrupted write never leaves half a file."""
    atomic_write(path, lambda fh: fh.write(data), name=option,
                 example=os.path.basename(_DEFAULT_OUTPUT[option]))


# =========================================================================== driver
def run(*, suite: str = "all", only: Optional[Sequence[str]] = None,
        threads: Optional[int] = None, reps: int = 5, train_reps: int = 3,
        train_images: Optional[int] = None, backends: Sequence[str] = ("c",),
        quick: bool = False, use_torch: bool = True, verbose: int = 1,
        sample=None) -> dict:
    """Run the selected benchmarks; returns the result dict (what ``--json`` writes)."""
    import fastnn
    from .utils.progbar import Progbar

    threads = threads or default_threads()
    only = list(only) if only else list(GROUPS + PROGRAMS)
    if train_images is None:
        train_images = QUICK_TRAIN_IMAGES if quick else 6000
    notes: List[str] = []
    torch = None
    if use_torch:
        torch, why = torch_or_none()
        if why:
            notes.append(f"{why}: PyTorch columns left out (pip install torch to compare)")
    else:
        notes.append("PyTorch left out (--no-torch)")

    available = fastnn._backend.available()
    kernel_backend = "c" if "c" in available else available[0]
    if kernel_backend != "c":
        notes.append(f"the C backend is unavailable here; the fastnn kernel column runs the "
                     f"{kernel_backend!r} backend")
    cases = kernel_cases(quick, [g for g in only if g in GROUPS]) \
        if suite in ("kernels", "all") else []
    train_jobs: List[Tuple[str, str]] = []
    if suite in ("train", "all"):
        impls = []
        for b in backends:
            if b in available:
                impls.append(f"fastnn:{b}")
            else:
                notes.append(f"fastnn backend {b!r} skipped: "
                             f"{fastnn._backend._errors.get(b, 'unavailable')}")
        if torch is not None:
            impls.append("torch")
        train_jobs = [(p, i) for p in PROGRAMS if p in only for i in impls]

    n_kernel_runs = sum(len(c.runnable_impls(torch, kernel_backend)) for c in cases)
    total = n_kernel_runs * (reps + 1) + len(train_jobs) * (train_reps + 1)
    bar = Progbar(total, verbose=verbose if verbose in (0, 1, 2) else 1, unit_name="run",
                  stateful_metrics=["case"]) if total else None
    done = [0]

    def tick(label: str = "") -> None:
        done[0] += 1
        if bar is not None:
            bar.update(min(done[0], total), [("case", label)] if label else None)

    result: Dict[str, Any] = {"format": "fastnn-bench/1"}
    from . import _backend
    with thread_limits(threads, torch, notes):
        for name in dict.fromkeys([kernel_backend, *backends]):
            mod = _backend._loaded.get(name)
            got = mod.get_num_threads() if mod is not None and name != "numpy" else threads
            if got != threads:   # (the training children set the same count and cap)
                notes.append(f"the {name} backend runs {got} threads, not {threads} (its "
                             f"cap: {'NUMBA_NUM_THREADS' if name == 'numba' else 'MAX_THREADS'})")
        result["machine"] = machine_info(threads, torch)
        result["settings"] = {
            "suite": suite, "only": only, "threads": threads, "reps": reps,
            "train_reps": train_reps, "train_images": train_images,
            "backends": list(backends), "quick": quick, "torch": torch is not None,
            "kernel_backend": kernel_backend, "min_rep_seconds": MIN_REP_SECONDS}
        result["kernels"] = run_kernels(cases, reps, kernel_backend, torch, tick,
                                        QUICK_SETTLE_SECONDS if quick else None)
    train_records = []
    for program in PROGRAMS:
        impls_p = [i for p, i in train_jobs if p == program]
        if not impls_p:
            continue
        for rec in run_train_cases(program, impls_p, threads=threads,
                                   train_images=train_images, reps=train_reps,
                                   sample=sample, tick=tick):
            rec["label"] = ("PyTorch" if rec["impl"] == "torch"
                            else f"fastnn {rec['impl'].split(':', 1)[1]}")
            train_records.append(rec)
    # fastnn speedup over every other row of the same program: their time / fastnn's time
    for program in PROGRAMS:
        rows = [r for r in train_records if r["program"] == program and "error" not in r]
        base = next((r for r in rows if r["impl"].startswith("fastnn")), None)
        for r in rows:
            if base is None:
                continue
            if r is base:
                r["baseline"] = True
            else:
                r["speedup"] = r["median"] / base["median"]
                r["speedup_over"] = base["impl"]
    result["train"] = train_records
    if bar is not None and done[0] < total:
        bar.update(total, finalize=True)

    if result["kernels"]:
        # (notes for the groups that ran only)
        groups = {r["group"] for r in result["kernels"]}
        notes.append("kernel cases share one process, so they have no peak-memory column "
                     "(peak RSS is per process)" + (
                         "; the end-to-end rows each ran in a child process and report its "
                         "peak RSS" if train_records else ""))
        if "pool" in groups:
            notes.append("pooling does no arithmetic worth counting: no GFLOPS")
        if "norm" in groups:
            notes.append("batchnorm: BatchNormalization in training (per-channel batch mean "
                         "and variance, then the normalization; the backward through the "
                         "batch's statistics, with the scale and offset gradients), float32; "
                         "no GFLOPS (a few operations per element)")
        if any(FMA_IMPL in r["results"] for r in result["kernels"]):
            notes.append("FMA-only loop: fastnn's register-only FMA loop (the GEMM "
                         "micro-kernel's accumulators, no loads or stores; "
                         f"{result['machine']['isa']}) on the same threads, doing the "
                         "product's FLOPs, timed rep by rep alongside the products: this "
                         "machine's arithmetic peak at that moment; fastnn / FMA loop = "
                         "the ratio of the two GFLOPS medians")
    if result["kernels"] and "conv" in groups:
        notes.append("conv forward includes the bias and ReLU (fused in fastnn, "
                     "torch.relu_ in PyTorch); conv forward + maxpool is "
                     "ops.conv2d_maxpool_forward in fastnn (the layers' pair in the model: "
                     "argmax as one-byte window positions on the C backend), "
                     "conv2d, relu_, max_pool2d with indices in PyTorch, and its GFLOPS count "
                     "the whole convolution; conv backward of the first layer skips dx, as "
                     "in the model; the NCHW rows are the first convolution of Deep "
                     "Learning from Scratch's conv net (fastnn.compat.dlfs) in float64: "
                     "the bias without activation (a Relu layer follows in the book), and "
                     "the whole backward, dx included, as the book's layer computes it")
    if train_records:
        srcs = {r.get("data_source") for r in train_records if "data_source" in r}
        if "shipped sample" in srcs:
            notes.append("the full Fashion-MNIST was not found: the end-to-end rows used "
                         "the shipped 3000-image sample")
        notes.append("peak RSS: the child process's high-water mark (VmHWM; interpreter, "
                     "libraries, the loaded data set, training); training growth: the RSS high-water mark "
                     "while training (reset through /proc/self/clear_refs after setup) "
                     "minus the RSS when training started")
    for rec in result["kernels"]:
        for impl, res in rec["results"].items():
            if "error" in res:
                notes.append(f"{rec['name']} [{res['impl']}] failed: {res['error']}")
    for rec in train_records:
        if "error" in rec:
            notes.append(f"{rec['program']} [{rec['label']}] failed: {rec['error']}")
    result["notes"] = notes
    return result


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", choices=["kernels", "train", "all"], default="all",
                   help="kernel comparison, end-to-end training, or both (default)")
    p.add_argument("--only", type=_name_list(GROUPS + PROGRAMS, "--only"), default=None,
                   metavar="NAMES",
                   help="comma-separated subset of matmul,conv,pool,norm (kernels) and cnn,mlp "
                        "(end-to-end programs 2 and 4); default: all")
    p.add_argument("--threads", type=thread_count, default=None,
                   help=f"threads for fastnn, PyTorch and NumPy's BLAS "
                        f"(default: the CPUs available, {default_threads()})")
    p.add_argument("--reps", type=positive_int, default=5,
                   help="timed reps per kernel case, after one warm-up (default 5)")
    p.add_argument("--train-reps", type=positive_int, default=None,
                   help="timed passes per end-to-end case (default 3; 1 with --quick)")
    p.add_argument("--train-images", type=positive_int, default=None,
                   help="training images per measured pass (default 6000; the time per "
                        "full 60k epoch is scaled from it)")
    p.add_argument("--backends", type=_name_list(("c", "numba", "numpy"), "--backends"),
                   default=["c"],
                   help="fastnn backends for end-to-end training (default c)")
    p.add_argument("--no-torch", dest="torch", action="store_false",
                   help="leave PyTorch out even if it is installed")
    p.add_argument("--json", default=_DEFAULT_OUTPUT["--json"], metavar="PATH",
                   help="where to write all timings (default fastnn_bench.json; 'none': "
                        "do not write)")
    p.add_argument("--png", default=_DEFAULT_OUTPUT["--png"], metavar="PATH",
                   help="where to draw the chart (default fastnn_bench.png; 'none': no "
                        "chart; needs matplotlib)")
    p.add_argument("--quick", action="store_true",
                   help="toy shapes and 256 training images: checks the plumbing in a "
                        "minute or two (mostly process start-up and JIT compiles), the "
                        "numbers mean nothing")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                   help="progress bar: 1 (default), 2 (final line only), 0 (none)")


def _check_output(option: str, value: str) -> Optional[str]:
    """Why ``--json`` / ``--png`` ``value`` cannot be written (checked before minutes of
    measuring, not after), or None."""
    if not value:
        return f"{option}: an empty path (give 'none' to write no file)"
    try:
        target = resolve_target(value, option, os.path.basename(_DEFAULT_OUTPUT[option]))
    except (OSError, ValueError) as exc:
        why = one_line(exc)
        return why if why.startswith(option) else f"{option} {value}: {why}"
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        return f"{option} {value}: the directory {parent} does not exist"
    try:   # a file made and removed: os.access said yes to /proc (as root)
        fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp", dir=parent)
    except OSError as exc:
        return f"{option} {value}: the directory {parent} is not writable ({exc.strerror})"
    os.close(fd)
    os.remove(tmp)
    return None


def _run_args(args: argparse.Namespace) -> int:
    outputs = {opt: value for opt, value in (("--png", args.png), ("--json", args.json))
               if value.lower() != "none"}
    for opt, value in outputs.items():
        try:    # ~ and ~user, as a model's save and the data sets' paths take them
            outputs[opt] = value = expand_user(value, opt)
        except ValueError as exc:
            print(f"fastnn bench: {exc}", file=sys.stderr)
            return 2
        why = _check_output(opt, value)
        if why:
            print(f"fastnn bench: {why}", file=sys.stderr)
            return 2
    train_reps = args.train_reps or (1 if args.quick else 3)
    result = run(suite=args.suite, only=args.only, threads=args.threads, reps=args.reps,
                 train_reps=train_reps, train_images=args.train_images,
                 backends=args.backends, quick=args.quick, use_torch=args.torch,
                 verbose=args.verbose)
    if not result["kernels"] and not result["train"]:
        only = f" --only {','.join(args.only)}" if args.only else ""
        why = "".join(f"\n- {note}" for note in result["notes"])
        print(f"fastnn bench: nothing to run for --suite {args.suite}{only}{why}",
              file=sys.stderr)
        return 2
    files = {}   # option -> bytes to write, once the tables are printed
    if "--png" in outputs:
        png, why = chart_png(result)
        if why:    # a note of the result (in the tables' notes and the JSON), said once
            result["notes"] = result["notes"] + [why]
        else:
            files["--png"] = png
    if "--json" in outputs:
        files["--json"] = (json.dumps(result, indent=1) + "\n").encode("utf-8")
    # the tables first: a file that cannot be written then loses nothing
    print()
    print(format_tables(result), end="")
    failed = any("error" in res for r in result["kernels"] for res in r["results"].values()) \
        or any("error" in r for r in result["train"])
    what = {"--png": "chart", "--json": "JSON"}
    for opt, data in files.items():
        try:
            _write_file(outputs[opt], data, opt)
        except (OSError, ValueError) as exc:
            where = f"{opt} {outputs[opt]}: "
            why = one_line(exc)
            print(f"fastnn bench: {where}cannot write the {what[opt]}: "
                  f"{why[len(where):] if why.startswith(where) else why}", file=sys.stderr)
            failed = True
        else:
            print(f"- {what[opt]} written to {outputs[opt]}")
    return 1 if failed else 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``fastnn`` command's subparsers (``func`` returns the
    exit code)."""
    p = subparsers.add_parser(
        "bench", help="compare fastnn with NumPy and PyTorch (kernels, training)",
        description=(__doc__ or "").split("\n\n")[0])
    _add_arguments(p)
    p.set_defaults(func=_run_args)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """``fastnn bench`` as a stand-alone program (``python -m fastnn.bench``)."""
    parser = argparse.ArgumentParser(prog="fastnn bench",
                                     description=(__doc__ or "").split("\n\n")[0])
    _add_arguments(parser)
    return _run_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
