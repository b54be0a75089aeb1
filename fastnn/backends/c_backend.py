"""The C/OpenMP backend: thin calls into ``fastnn._cfastnn`` (cffi, API mode).

Arguments arrive validated and C-contiguous (see :mod:`fastnn.backends`); this module only
passes pointers, dimensions and a workspace. Workspaces are cached per OS thread and per
dtype and grow as needed, so steady-state training allocates nothing here.

``FASTNN_ISA`` (``generic``, ``avx2``, ``avx512``, ``avx512_256``) forces an instruction set
at import; :func:`set_isa` changes it later. Unsupported requests fall back with a warning.
The default is the best the CPU runs: ``avx512`` where it has AVX-512, but ``avx512_256``
on AMD Zen 4, whose 512-bit operations run as two 256-bit halves (see csrc/cpu.c):
the AVX2 kernels, with matrix-product micro-kernels of 256-bit vectors in AVX-512VL's 32
registers, and AVX-512's own for the products they served better there (short K; float
products with A packed, m > 256; float64 with K > 64: csrc/gemm_kernels.c).

OpenMP waiting: unless the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, this module
sets ``GOMP_SPINCOUNT=1000`` before the extension loads libgomp (which reads it once, at
load). libgomp's default spins about 300,000 iterations before sleeping; when the machine
is shared and the other thread of a region is descheduled, that spinning steals its core:
measured on 2 busy cores, a CNN training step took 367 ms with the default and 128 ms with
1000 (141 ms on one thread). A libgomp loaded earlier by another library keeps its own
setting.
"""
from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from typing import List

import numpy as np

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

# An ImportError here makes the registry fall back to another backend and report why.
if (importlib.util.find_spec("fastnn._cfastnn") is None
        or importlib.util.find_spec("fastnn._fastcall") is None):
    # (without this, Python's message for the missing file is "cannot import name
    # '_cfastnn' from partially initialized module 'fastnn' (most likely due to a circular
    # import)")
    raise ImportError("the compiled extensions fastnn/_cfastnn*.so and _fastcall*.so are not "
                      "both there: fastnn was imported from a source tree, not an installed "
                      "package (pip install . builds them)")
from fastnn import _cfastnn  # noqa: E402

ffi, lib = _cfastnn.ffi, _cfastnn.lib

NAME = "c"
ISAS = ("generic", "avx2", "avx512", "avx512_256")  # by the C library's ISA ids
_LAYOUT = {"NHWC": 0, "NCHW": 1}
_ACT = {"identity": 0, "relu": 1}
_ARRAY = {np.dtype(np.float32): ffi.typeof("float[]"), np.dtype(np.float64): ffi.typeof("double[]")}
_INT64_ARRAY = ffi.typeof("int64_t[]")
_UINT8_ARRAY = ffi.typeof("uint8_t[]")         # numpy bool arrays (one byte, 0 or 1)
_SFX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_FNS: dict = {}


def _fn(name: str, dtype: np.dtype):
    """The C function ``fnn_<name>_<f32|f64>`` (looked up once)."""
    key = (name, dtype)
    f = _FNS.get(key)
    if f is None:
        f = _FNS[key] = getattr(lib, f"fnn_{name}_{_SFX[dtype]}")
    return f


# Pointers straight from the buffer (a typed array cdata is passed as a pointer); each
# lives for the call it is made for, while the caller holds the numpy array.
def _ptr(a: np.ndarray):
    return ffi.from_buffer(_ARRAY[a.dtype], a)


def _iptr(a: np.ndarray):
    return ffi.from_buffer(_INT64_ARRAY, a)


def _opt(a, dtype):
    return ffi.NULL if a is None else _ptr(a)


class _Workspaces(threading.local):
    def __init__(self):
        self.ws: dict = {}


_local = _Workspaces()


def _workspace(nelems: int, dtype: np.dtype):
    """A pointer to at least ``nelems`` elements of this thread's workspace for ``dtype``
    (grown, never shrunk; the pointer is made once per buffer: kernels on small arrays
    feel every Python call)."""
    entry = _local.ws.get(dtype)
    if entry is None or entry[0].size < nelems:
        buf = np.empty(max(int(nelems), 1), dtype=dtype)
        entry = _local.ws[dtype] = (buf, ffi.from_buffer(_ARRAY[dtype], buf))
    return entry[1]


def _geom(g):
    return ffi.new("fnn_geom *", (g.n, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw,
                                  g.pt, g.pb, g.pl, g.pr, g.dh, g.dw, g.oh, g.ow))


# ----------------------------------------------------------------------------- ISA, threads
def isa() -> str:
    """The instruction set the kernels use now."""
    return ISAS[lib.fnn_get_isa()]


def isa_emulated() -> bool:
    """True in the emulated AVX-512 test build (``FASTNN_EMULATE_AVX512``): its "avx512" is
    SIMDe's portable code on AVX2, there for the tests, far slower than the real one."""
    return bool(lib.fnn_isa_emulated())


def l3_bytes() -> int:
    """The L3 cache's size in bytes as CPUID reports it (0 where the CPU does not say). The
    matrix product writes a C of at least half of it with non-temporal stores on the
    short-K path (gemm.c's ``stream_c``)."""
    return int(lib.fnn_cpu_l3_bytes())


def available_isas() -> List[str]:
    """Instruction sets this CPU can run, in the order of :data:`ISAS` (the C library's
    ids)."""
    return [name for i, name in enumerate(ISAS) if lib.fnn_isa_supported(i)]


def set_isa(name: str) -> None:
    """Force an instruction set (one of :data:`ISAS`), for the whole process.

    For tests and experiments: call it while no other thread runs fastnn's kernels. A
    kernel running in another thread meanwhile may crash the process (its workspace was
    sized, and its kernels chosen, for the instruction set before the switch; found by a
    fuzzing review, switching thousands of times a second). Results do not depend on
    when it is called otherwise.

    Raises
    ------
    ValueError
        If ``name`` is unknown or this CPU cannot run it.
    """
    if name not in ISAS:
        raise ValueError(f"isa must be one of {list(ISAS)}, received {name!r}")
    if lib.fnn_set_isa(ISAS.index(name)) != 0:
        raise ValueError(f"isa {name!r} is not supported by this CPU; available: "
                         f"{available_isas()}")


def set_num_threads(n: int) -> None:
    lib.fnn_set_num_threads(int(n))


def get_num_threads() -> int:
    return int(lib.fnn_get_num_threads())


def fma_peak(dtype, iters: int, a: float = 1.0, b: float = 0.5):
    """Run the kernels' register-only FMA loop (``fnn_fma_peak``: the selected ISA's GEMM
    micro-kernel's accumulators, ``acc = acc * a + b``, no memory traffic) ``iters`` rounds
    on every thread a kernel would use now. The benchmark's ceiling for the GEMM.

    Returns ``(flops, sums)``: the floating-point operations done by all threads (2 per
    lane per round) and, per thread, the sum of its accumulators' first lanes (they start
    at 0, 1, 2, ...), shape ``(get_num_threads(),)`` (NaN for a thread the parallel
    region did not get).
    """
    dtype = np.dtype(dtype)
    if dtype not in _SFX:
        raise TypeError(f"dtype must be float32 or float64, received {dtype}")
    if isinstance(iters, (bool, np.bool_)) or not isinstance(iters, (int, np.integer)) \
            or not 1 <= iters <= 2**40:
        raise ValueError(f"iters must be an int in [1, 2**40], received {iters!r}")
    sums = np.full(max(get_num_threads(), 1), np.nan, dtype)
    flops = _fn("fma_peak", dtype)(int(iters), float(a), float(b), _ptr(sums), sums.size)
    return int(flops), sums


_env_isa = os.environ.get("FASTNN_ISA", "").strip().lower()
if _env_isa:
    try:
        set_isa(_env_isa)
    except ValueError as exc:
        warnings.warn(f"FASTNN_ISA={_env_isa!r} ignored: {exc}", RuntimeWarning)


# ----------------------------------------------------------------------------- primitives
# (gemm, pointer type) per dtype, for the calls gemm_fast (below) declines: the GEMM is the
# call most often made on small arrays, where each lookup, conversion and Python or C call
# shows (ops.matmul on 2 x 2 float through the general checks and gemm: 2.6 us, 0.4 of
# them in C; 0.45 through gemm_fast). So one C call, fnn_gemm_lwork, which asks for a larger workspace only when this
# thread's is too small; ints, not bools, for the flags (cffi converts a bool 0.15 us
# slower); and from_buffer's flag passed by position (by keyword: 0.11 us slower).
_GEMM = {dt: (getattr(lib, f"fnn_gemm_lwork_{sfx}"), _ARRAY[dt]) for dt, sfx in _SFX.items()}
_NO_WS = (None, ffi.NULL)


def gemm(trans_a, trans_b, alpha, a, b, beta, c):
    m, n = c.shape
    dtype = c.dtype
    fn, arr = _GEMM[dtype]
    frombuf = ffi.from_buffer
    pa, pb, pc = frombuf(arr, a), frombuf(arr, b), frombuf(arr, c)
    ta, tb = 1 if trans_a else 0, 1 if trans_b else 0
    k, lda, ldb = a.shape[0] if ta else a.shape[1], a.shape[1], b.shape[1]
    buf, ws = _local.ws.get(dtype, _NO_WS)  # this thread's workspace, if any yet
    need = fn(ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, ws,
              0 if buf is None else buf.size, pc, n)
    _grow_and_retry(need, fn, ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, dtype)


def _grow_and_retry(need, fn, ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, dtype):
    """Finish an fnn_gemm_lwork call that returned ``need``: with a workspace of that
    length (grown once per larger size, again only if the thread count rose since)."""
    while need > 0:
        need = fn(ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, _workspace(need, dtype),
                  need, pc, n)
    if need < 0:  # (callers pass aligned arrays that C does not overlap)
        raise RuntimeError("fnn_gemm_lwork refused a misaligned or overlapping operand")


# ops.matmul's plain calls: ``gemm_fast(trans_a, trans_b, alpha, a, b, out)`` is
# ``op(a) @ op(b) * alpha`` into ``out`` (or a new array), or None, computing nothing, when
# the call is not a plain one (the caller then checks and prepares the arguments the long
# way). Plain: ``a`` and ``b`` C-contiguous 2-D numpy.ndarray of one float dtype, inner
# dimensions equal, no dimension 0; ``out`` None or such an array of the product's shape,
# writeable, aligned, not overlapping ``a`` or ``b``; bool flags and a float alpha. It is
# the CPython function of fastnn._fastcall (csrc/fastcall.c), bound here to this module's
# fnn_gemm_lwork entry points: through cffi the same call had a fixed cost of 1.3 us (the
# Xeon, 2026-12-04, float 2 x 2 x 2: 0.3 the 15-argument call, 0.4 three
# ffi.from_buffer, 0.5 the checks in Python).
def _bind_fastcall():
    from fastnn import _fastcall
    addr = [int(ffi.cast("uintptr_t", ffi.addressof(lib, f"fnn_gemm_lwork_{s}")))
            for s in ("f32", "f64")]
    _fastcall.bind(addr[0], addr[1], np.ndarray, np.empty, np.dtype(np.float32),
                   np.dtype(np.float64))   # (again on a re-import: a no-op)
    return _fastcall.gemm


gemm_fast = _bind_fastcall()


def im2col(x, g, layout, cols):
    _fn("im2col", x.dtype)(_geom(g), _LAYOUT[layout], _ptr(x), _ptr(cols))


def col2im(cols, g, layout, x):
    _fn("col2im", x.dtype)(_geom(g), _LAYOUT[layout], _ptr(cols), _ptr(x))


def bias_act(y, b, act, out):
    outer, c, inner = y.shape
    _fn("bias_act", y.dtype)(outer, c, inner, _ptr(y), _opt(b, y.dtype), _ACT[act], _ptr(out))


def bias_act_backward(dy, y, act, dx, db):
    outer, c, inner = y.shape
    _fn("bias_act_bwd", y.dtype)(outer, c, inner, _ptr(dy), _ptr(y), _ACT[act], _ptr(dx),
                                 _opt(db, y.dtype))


def batchnorm_stats(x, mean, var):
    outer, c, inner = x.shape
    _fn("bn_stats", x.dtype)(outer, c, inner, _ptr(x), _ptr(mean), _ptr(var))


def batchnorm_forward(x, mean, inv_std, gamma, beta, out):
    outer, c, inner = x.shape
    _fn("bn_apply", x.dtype)(outer, c, inner, _ptr(x), _ptr(mean), _ptr(inv_std),
                             _opt(gamma, x.dtype), _opt(beta, x.dtype), _ptr(out))


def batchnorm_backward(dy, x, mean, inv_std, gamma, training, dx, dgamma, dbeta):
    outer, c, inner = x.shape
    _fn("bn_bwd", x.dtype)(outer, c, inner, _ptr(dy), _ptr(x), _ptr(mean), _ptr(inv_std),
                           _opt(gamma, x.dtype), int(training), _ptr(dx),
                           _opt(dgamma, x.dtype), _opt(dbeta, x.dtype))


_ACT_KIND = {"sigmoid": 1, "silu": 2, "elu": 3, "selu": 4, "leaky_relu": 5, "gelu": 6,
             "relu6": 7, "hard_sigmoid": 8, "hard_silu": 9, "celu": 10, "tanh": 11}


def activation(x, kind, alpha, out):
    _fn("act_fwd", x.dtype)(x.size, _ACT_KIND[kind], alpha, _ptr(x), _ptr(out))


def activation_backward(dy, x, y, kind, alpha, dx):
    _fn("act_bwd", x.dtype)(x.size, _ACT_KIND[kind], alpha, _ptr(dy), _ptr(x), _ptr(y),
                            _ptr(dx))


def dropout(seed, t, scale, x, mask, y):
    _fn("dropout", mask.dtype)(mask.size, seed, t, scale, _opt(x, mask.dtype), _ptr(mask),
                               _opt(y, mask.dtype))


def relu_mask(x, y, mask):
    _fn("relu_mask", x.dtype)(x.size, _ptr(x), _ptr(y), ffi.from_buffer(_UINT8_ARRAY, mask))


def relu_mask_backward(dy, mask, dx):
    _fn("relu_mask_bwd", dy.dtype)(dy.size, _ptr(dy), ffi.from_buffer(_UINT8_ARRAY, mask),
                                   _ptr(dx))


def adam_update(p, g, m, v, vhat, alpha, omb1, omb2, eps, flush):
    _fn("adam_update", p.dtype)(p.size, _ptr(p), _ptr(g), _ptr(m), _ptr(v),
                                _opt(vhat, p.dtype), alpha, omb1, omb2, eps, int(flush))


def softmax_xent(z, labels, t, scale, probs, loss, dz):
    n, k = z.shape
    _fn("softmax_xent", z.dtype)(n, k, _ptr(z), ffi.NULL if labels is None else _iptr(labels),
                                 ffi.NULL if t is None else _ptr(t), scale, _ptr(probs),
                                 _ptr(loss), _ptr(dz))


def _filters(w, layout):
    return w.shape[3] if layout == "NHWC" else w.shape[0]


def conv2d_forward(x, w, b, g, layout, act, y, chunk):
    dt, f, cg, lay = x.dtype, _filters(w, layout), _geom(g), _LAYOUT[layout]
    ws = _workspace(_fn("conv2d_ws", dt)(cg, lay, f, chunk, 0), dt)
    _fn("conv2d_fwd", dt)(cg, lay, f, _ptr(x), _ptr(w), _opt(b, dt), _ACT[act], chunk,
                          ws, _ptr(y))


#: conv2d_maxpool_forward and _backward take argmax as uint8 window positions too
#: (fastnn.ops.conv2d_maxpool_forward's argmax_format="window").
CONV_POOL_POSITIONS = True


def _argmax_ptrs(argmax):
    """(int64 pointer, uint8 pointer), one of them NULL: the fused conv-pool kernels' argmax
    as flat indices (int64) or window positions (uint8)."""
    if argmax.dtype == np.uint8:
        return ffi.NULL, ffi.from_buffer(_UINT8_ARRAY, argmax)
    return _iptr(argmax), ffi.NULL


def conv2d_maxpool_forward(x, w, b, g, layout, act, y, argmax, chunk):
    dt, f, cg, lay = x.dtype, _filters(w, layout), _geom(g), _LAYOUT[layout]
    if not _fn("conv2d_pool_ok", dt)(cg, lay, f):
        return False
    ws = _workspace(_fn("conv2d_ws", dt)(cg, lay, f, chunk, 0), dt)
    return bool(_fn("conv2d_pool_fwd", dt)(cg, lay, f, _ptr(x), _ptr(w), _opt(b, dt),
                                           _ACT[act], chunk, ws, _ptr(y),
                                           *_argmax_ptrs(argmax)))


def conv2d_backward(dy, x, w, g, layout, dx, dw, db, chunk):
    dt, f, cg, lay = x.dtype, _filters(w, layout), _geom(g), _LAYOUT[layout]
    ws = _workspace(_fn("conv2d_ws", dt)(cg, lay, f, chunk, 1), dt)
    _fn("conv2d_bwd", dt)(cg, lay, f, _ptr(dy), _ptr(x), _ptr(w), chunk, ws,
                          _opt(dx, dt), _ptr(dw), _opt(db, dt))


#: conv2d_maxpool_backward takes relu_y (the pooled relu output) and applies relu's
#: derivative in its kernels (fastnn.ops._conv2d_maxpool_backward).
CONV_POOL_RELU = True


def conv2d_maxpool_backward(dy, argmax, x, w, g, layout, dx, dw, db, chunk, relu_y=None):
    dt, f, cg, lay = x.dtype, _filters(w, layout), _geom(g), _LAYOUT[layout]
    need_dx = int(dx is not None)
    if not _fn("conv2d_pool_bwd_ok", dt)(cg, lay, f, need_dx):
        return False
    ws = _workspace(_fn("conv2d_pool_bwd_ws", dt)(cg, lay, f, chunk, need_dx), dt)
    return bool(_fn("conv2d_pool_bwd", dt)(cg, lay, f, _ptr(dy), _opt(relu_y, dt),
                                           *_argmax_ptrs(argmax), _ptr(x), _ptr(w), chunk, ws,
                                           _opt(dx, dt), _ptr(dw), _opt(db, dt)))


def batchnorm_maxpool_forward(x, mean, inv_std, gamma, beta, y, pos, x_max):
    n, h, w, c = x.shape
    _fn("bn_pool_fwd", x.dtype)(n, h, w, c, _ptr(x), _ptr(mean), _ptr(inv_std),
                                _opt(gamma, x.dtype), _opt(beta, x.dtype), _ptr(y),
                                ffi.from_buffer(_UINT8_ARRAY, pos), _ptr(x_max))


def batchnorm_maxpool_backward(dy, pos, x_max, x, mean, inv_std, gamma, training, dx, dgamma,
                               dbeta):
    (n, h, w, c), dt = x.shape, x.dtype
    return bool(_fn("bn_pool_bwd", dt)(n, h, w, c, _ptr(dy), ffi.from_buffer(_UINT8_ARRAY, pos),
                                       _ptr(x_max), _ptr(x), _ptr(mean), _ptr(inv_std),
                                       _opt(gamma, dt), int(training), _ptr(dx),
                                       _opt(dgamma, dt), _opt(dbeta, dt)))


def maxpool2d_forward(x, g, layout, y, argmax):
    _fn("maxpool_fwd", x.dtype)(_geom(g), _LAYOUT[layout], _ptr(x), _ptr(y), _iptr(argmax))


#: maxpool2d_backward checks argmax's range as it scatters (see fastnn.backends).
ARGMAX_RANGE_CHECKED = True


def maxpool2d_backward(dy, argmax, g, layout, dx):
    return bool(_fn("maxpool_bwd", dy.dtype)(_geom(g), _LAYOUT[layout], _ptr(dy),
                                             _iptr(argmax), _ptr(dx)))


def avgpool2d_forward(x, g, layout, y):
    _fn("avgpool_fwd", x.dtype)(_geom(g), _LAYOUT[layout], _ptr(x), _ptr(y))


def avgpool2d_backward(dy, g, layout, dx):
    _fn("avgpool_bwd", dy.dtype)(_geom(g), _LAYOUT[layout], _ptr(dy), _ptr(dx))
