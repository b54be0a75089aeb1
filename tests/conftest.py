"""Shared fixtures and helpers for the fastnn test suite.

Backends
--------
``backend`` runs a test once per backend ("c", "numba", "numpy") with that backend active
(``fastnn.use_backend``); ``fast_backend`` does the same for the non-reference backends.
A backend that cannot be loaded here is *skipped*, unless the environment variable
``FASTNN_REQUIRE_BACKENDS`` (comma-separated names; CI sets ``c,numba,numpy``) lists it:
then the test *fails* with the reason from :mod:`fastnn._backend`, so CI can never
silently skip the compiled backend.

``FASTNN_TEST_BACKENDS`` (comma-separated names; default: all) deselects the
``backend`` / ``fast_backend`` parameters it does not name: the sanitizer and emulated-ISA
runs (tools/sanitize.sh, tools/avx512_emulated.sh) set ``c``, since a test with the NumPy
or Numba backend active runs no C kernel.

``reference(fn, *args, **kw)`` runs ``fn`` under ``fastnn.use_backend("numpy")``: the
oracle every other backend is compared with.

Tolerances
----------
All tolerances live in :data:`TOLERANCES` and :func:`assert_close` below, nowhere else.
"""
from __future__ import annotations

import math
import os
import types

import numpy as np
import pytest

import fastnn
from fastnn import _backend

ALL_BACKENDS = ("c", "numba", "numpy")
FAST_BACKENDS = ("c", "numba")
REFERENCE = "numpy"
DTYPES = (np.float32, np.float64)


# --------------------------------------------------------------------------- backends
def _env_backends(var: str) -> set:
    """The backend names in the comma-separated environment variable ``var``."""
    return {s.strip().lower() for s in os.environ.get(var, "").split(",") if s.strip()}


def required_backends() -> set:
    """Backends named in FASTNN_REQUIRE_BACKENDS (an unavailable one fails, never skips)."""
    return _env_backends("FASTNN_REQUIRE_BACKENDS")


def require_backend(name: str) -> str:
    """Load backend ``name`` or skip the test (fail it if the backend is required)."""
    try:
        _backend.load(name)
        return name
    except ImportError as exc:
        reason = str(exc)  # fastnn._backend says why (import error, missing package...)
    if name in required_backends() or name == REFERENCE:
        pytest.fail(f"backend {name!r} is required (FASTNN_REQUIRE_BACKENDS="
                    f"{os.environ.get('FASTNN_REQUIRE_BACKENDS', '')!r}; the numpy "
                    f"reference is always required) but unavailable: {reason}",
                    pytrace=False)
    pytest.skip(f"backend {name!r} unavailable: {reason}")


def tested_backends() -> set:
    """Backends the ``backend`` / ``fast_backend`` parameters run: FASTNN_TEST_BACKENDS's
    names, or all."""
    return _env_backends("FASTNN_TEST_BACKENDS") or set(ALL_BACKENDS)


def pytest_configure(config):
    for var, names in (("FASTNN_REQUIRE_BACKENDS", required_backends()),
                       ("FASTNN_TEST_BACKENDS", tested_backends())):
        unknown = names - set(ALL_BACKENDS)
        if unknown:
            raise pytest.UsageError(f"{var} names unknown backends {sorted(unknown)}; "
                                    f"known: {list(ALL_BACKENDS)}")


def pytest_collection_modifyitems(config, items):
    keep = tested_backends()
    if keep == set(ALL_BACKENDS):
        return
    selected, deselected = [], []
    for item in items:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        name = params.get("backend", params.get("fast_backend"))
        (deselected if name is not None and name not in keep else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_report_header(config):
    try:
        info = fastnn.backend_info()
    except Exception as exc:  # pragma: no cover - reported, not hidden
        return [f"fastnn backend_info() failed: {type(exc).__name__}: {exc}"]
    req = sorted(required_backends())
    return [f"fastnn backends: available={info['available']} active={info['active']} "
            f"isa={info['isa']}{' (EMULATED)' if info.get('isa_emulated') else ''} "
            f"threads={info['num_threads']} required={req}",
            f"fastnn backend errors: {info['errors']}"]


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Each backend in turn, active for the duration of the test."""
    name = require_backend(request.param)
    with fastnn.use_backend(name):
        yield name


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    """Each non-reference backend in turn, active for the duration of the test."""
    name = require_backend(request.param)
    with fastnn.use_backend(name):
        yield name


def reference(fn, *args, **kw):
    """``fn(*args, **kw)`` on the NumPy reference backend."""
    require_backend(REFERENCE)
    with fastnn.use_backend(REFERENCE):
        return fn(*args, **kw)


@pytest.fixture
def restore_workspace_limit():
    saved = fastnn.ops.get_workspace_limit()
    yield saved
    fastnn.ops.set_workspace_limit(saved)


@pytest.fixture
def restore_threads():
    """Put every loaded backend's thread count (and the registry's memory of
    ``set_num_threads``) back as it was."""
    saved_global = list(_backend._num_threads)
    saved = {name: mod.get_num_threads() for name, mod in _backend._loaded.items()}
    yield
    for name, n in saved.items():
        _backend._loaded[name].set_num_threads(n)
    _backend._num_threads[:] = saved_global


def run_steps_calls(monkeypatch, rows: int) -> list:
    """For tests of fit's runs of compiled steps: fit trains runs of at most ``rows`` rows
    per call, and the returned list gets each run's number of batches as it runs. Skips
    without the C backend (the compiled dense step)."""
    from fastnn import _dense_step
    from fastnn.models import Sequential
    if fastnn.backend_info()["active"] != "c":
        pytest.skip("the compiled dense step needs the C backend")
    calls = []
    real = _dense_step.DenseStep.run_steps

    def spy(self, x, targets, idx, n, *a):
        calls.append(len(idx) // n)
        return real(self, x, targets, idx, n, *a)

    monkeypatch.setattr(_dense_step.DenseStep, "run_steps", spy)
    monkeypatch.setattr(Sequential, "_RUN_ROWS", rows)
    return calls


# --------------------------------------------------------------------------- workspaces
_GUARD = 1024                                       # elements on each side of a workspace
_GUARD_BITS = {4: np.uint32(0x7FC0DEAD), 8: np.uint64(0x7FF8DEADBEEFDEAD)}   # NaN payloads


@pytest.fixture(autouse=True)
def guarded_workspace(monkeypatch):
    """Every workspace a C kernel gets in a test is exactly the size its ``*_ws`` function
    reported, between two guard zones of a NaN bit pattern no kernel computes; a write
    outside it fails the test. (In normal use the workspace is one buffer grown and kept
    across calls, which hides a kernel that overruns the size it asked for.)"""
    try:
        from fastnn.backends import c_backend
    except ImportError:                 # no C extension: nothing to guard
        yield
        return
    handed = []

    def workspace(nelems, dtype):
        dtype = np.dtype(dtype)
        n = max(int(nelems), 1)
        raw = np.empty(n + 2 * _GUARD + 64 // dtype.itemsize, dtype)
        start = (-raw.ctypes.data % 64) // dtype.itemsize          # 64-byte aligned
        buf = raw[start:start + n + 2 * _GUARD]
        bits = buf.view(np.uint32 if dtype.itemsize == 4 else np.uint64)
        bits[:] = _GUARD_BITS[dtype.itemsize]
        handed.append((bits, n))
        return c_backend.ffi.from_buffer(c_backend._ARRAY[dtype], buf[_GUARD:])

    monkeypatch.setattr(c_backend, "_workspace", workspace)
    # kernels that state their workspace's length (fnn_gemm_lwork) find none kept, so
    # they too ask _workspace for exactly what they need
    monkeypatch.setattr(c_backend, "_local", types.SimpleNamespace(ws={}))
    yield
    for bits, n in handed:
        pattern = _GUARD_BITS[bits.itemsize]
        assert (bits[:_GUARD] == pattern).all(), \
            f"a kernel wrote before its {n}-element workspace"
        assert (bits[_GUARD + n:] == pattern).all(), \
            f"a kernel wrote past its {n}-element workspace"


# --------------------------------------------------------------------------- tolerances
# Backends differ from the reference only by floating-point rounding: they sum the same
# products in another order (blocking, SIMD lanes, FMA, threads). For a sum of K terms each
# at most S in magnitude, the rounding error of *any* summation order is bounded by about
# K * eps * S, and for the random-sign data used here it behaves like a random walk,
# ~ sqrt(K) * eps * S. Cancellation can make the exact result tiny while the error stays
# ~ sqrt(K) * eps * S, so a relative tolerance alone is wrong for sums: the absolute
# tolerance is scaled by sqrt(K) * S, where S is the largest |term| of the reduction (e.g.
# max|a| * max|b| for a dot product), supplied by the caller.
#
#   float64 (eps 1.1e-16): rtol 1e-10, atol 1e-12 * sqrt(K) * S -- about 1e4 times the
#       expected random-walk error, and still above the K*eps worst case for every K used.
#   float32 (eps 6.0e-8):  rtol 1e-4,  atol 1e-5  * sqrt(K) * S -- about 170 times the
#       expected random-walk error; the K*eps worst case stays below it for K up to ~3e4
#       (the suite's largest reductions are ~1e3).
#
# Ops that only move data (im2col, maxpool forward values and argmax) are compared exactly.
TOLERANCES = {
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
    # Central finite differences of whole small models, layers, losses and activations
    # (float64 only; tests/test_gradcheck.py, test_layers.py, test_losses_activations.py):
    # (L(p + step) - L(p - step)) / (2 step). Truncation error step^2 |d3L/dp3| / 6 ~ 1e-12
    # for the smooth losses used; rounding error ~ eps * |L terms| / step ~ 1e-10. Inputs
    # keep every kink (relu at 0, max-pool ties, |w| at 0, probability clipping) further
    # than step away, so the analytic gradient must match to rtol 1e-6 and
    # atol 1e-6 * max(1, max |numeric gradient|): ~1e4 above the expected error.
    "finite_difference": dict(step=1e-6, rtol=1e-6, atol=1e-6),
}


def absmax(*arrays) -> float:
    """Largest finite |value| over ``arrays`` (1.0 when there is none), for scales."""
    best = 0.0
    for a in arrays:
        if a is None:
            continue
        a = np.asarray(a)
        fin = a[np.isfinite(a)] if a.size else a
        if fin.size:
            best = max(best, float(np.max(np.abs(fin))))
    return best if best > 0 else 1.0


def tolerance(dtype, k: int = 1, scale: float = 1.0) -> dict:
    """``rtol``/``atol`` for comparing a ``dtype`` result of a K-term reduction whose terms
    are at most ``scale`` in magnitude (see the comment above)."""
    base = TOLERANCES[np.dtype(dtype)]
    return dict(rtol=base["rtol"], atol=base["atol"] * math.sqrt(max(int(k), 1)) * float(scale))


def assert_close(actual, expected, *, k: int = 1, scale: float = 1.0, what: str = ""):
    """``actual`` matches the reference ``expected``: same shape and dtype, NaN where it is
    NaN, and values within :func:`tolerance` for a ``k``-term reduction of terms bounded by
    ``scale``."""
    expected = np.asarray(expected)
    assert isinstance(actual, np.ndarray), f"{what}: expected an ndarray, got {type(actual)}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    tol = tolerance(expected.dtype, k, scale)
    np.testing.assert_allclose(actual, expected, equal_nan=True, err_msg=what, **tol)


def assert_same(actual, expected, *, what: str = ""):
    """Exact equality (same shape, dtype, values; NaN where NaN)."""
    expected = np.asarray(expected)
    assert isinstance(actual, np.ndarray), f"{what}: expected an ndarray, got {type(actual)}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    np.testing.assert_array_equal(actual, expected, err_msg=what)


def assert_bitwise(a, b, *, what: str = ""):
    """Bit-for-bit identical arrays (distinguishes -0.0 from 0.0 and NaN payloads)."""
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape}/{a.dtype} vs " \
                                                      f"{b.shape}/{b.dtype}"
    utype = {4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    ua = np.ascontiguousarray(a).view(utype)
    ub = np.ascontiguousarray(b).view(utype)
    bad = ua != ub
    if bad.any():
        diff = np.abs(a[bad].astype(np.float64) - b[bad].astype(np.float64))
        raise AssertionError(f"{what}: not bitwise identical; {int(bad.sum())} of {a.size} "
                             f"elements differ, max |diff| = {np.nanmax(diff)}")


# --------------------------------------------------------------------------- data
def rand(rng, shape, dtype, low=-1.0, high=1.0) -> np.ndarray:
    return rng.uniform(low, high, size=shape).astype(dtype)


def distinct(rng, shape, dtype) -> np.ndarray:
    """Pairwise-distinct values (no accidental ties in max pooling), exact in float32."""
    size = int(np.prod(shape, dtype=np.int64))
    vals = rng.permutation(size).astype(np.float64) - size // 2
    return (vals / 8.0).reshape(shape).astype(dtype)


def to_layout(x_nhwc: np.ndarray, layout: str) -> np.ndarray:
    """A contiguous NHWC array in ``layout``."""
    return x_nhwc if layout == "NHWC" else np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))


def weights_to_layout(w_hwcf: np.ndarray, layout: str) -> np.ndarray:
    """Weights (KH, KW, C, F) in the layout's weight order ((F, C, KH, KW) for NCHW)."""
    return w_hwcf if layout == "NHWC" else np.ascontiguousarray(w_hwcf.transpose(3, 2, 0, 1))


def x_shape_in(n, h, w, c, layout):
    return (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
