"""The NumPy reference backend is right: it is the oracle for every other backend, so it is
checked here against things that do not depend on it.

* every forward op against the direct loops of ``tests/_naive.py`` (sweeps over batch,
  sizes 1..7 and primes, kernels 1-5, strides 1-3, every padding form, dilation 1-2, both
  layouts; float64, plus float32 spot checks);
* every backward op against central finite differences in float64;
* im2col / col2im adjointness;
* the pooling edge cases of the contract (ties, NaN, -inf with padding, Keras averaging);
* matmul against explicit loops (transposes, alpha/beta, beta == 0 ignoring NaN).

All public calls go through :mod:`fastnn.ops` with ``fastnn.use_backend("numpy")``.

Tolerances (all here, none looser elsewhere in this file)
--------------------------------------------------------
A sum of K products computed in any order differs from the exact sum by at most about
``K * eps * S``, where ``S = sum |terms|`` (per output element; the naive loops give it via
``conv2d_abs_scale`` and friends). The comparisons below use ``atol = ATOL_REL * S_max``
(``S_max`` the largest ``S`` of the output) plus ``rtol``:

* float64 (eps 1.1e-16): rtol 1e-12, ATOL_REL 1e-12. The largest K here is 5*5*3 = 75,
  so K*eps <= 1e-14, 100 times below the tolerance.
* float32 (eps 6.0e-8): rtol 1e-5, ATOL_REL 1e-5. K*eps <= 4.5e-6 for K = 75, so even
  the worst-case rounding order passes. The naive loops accumulate in float64, so the
  float32 result is compared against a (nearly) exact value.
* Pure data movement (im2col, max pooling values and argmax) is compared exactly.
* Finite differences, float64, central, step FD_EPS = 1e-6. Every function
  differentiated is linear or piecewise linear with no kink within FD_EPS of the sample
  point (distinct values for max pooling, values away from 0 for relu), so truncation
  error is 0 and only rounding remains: about eps * |loss terms| / FD_EPS ~ 1e-9. We
  assert rtol FD_RTOL = 1e-6 and atol FD_ATOL = 1e-6 * max(1, max |grad|).
"""
from __future__ import annotations

import itertools
import math
import random
import zlib

import numpy as np
import pytest

import fastnn
from fastnn import _backend, ops

import _naive
from reference_model import numerical_gradient

# --------------------------------------------------------------------------- tolerances
TOL = {
    np.dtype(np.float64): dict(rtol=1e-12, atol_rel=1e-12),
    np.dtype(np.float32): dict(rtol=1e-5, atol_rel=1e-5),
}
FD_EPS = 1e-6
FD_RTOL = 1e-6
FD_ATOL_REL = 1e-6

LAYOUTS = ("NHWC", "NCHW")


@pytest.fixture(autouse=True)
def numpy_backend():
    """Every test in this file runs on the NumPy reference backend."""
    with fastnn.use_backend("numpy") as mod:
        yield mod


def _rng(*key) -> np.random.Generator:
    """A generator seeded by the test case (stable across runs and processes)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def assert_sums_close(actual, expected, scale, what=""):
    """``actual`` (any dtype) matches ``expected`` (exact-ish float64) for sums whose
    ``sum |terms|`` is at most ``scale``: tolerance from :data:`TOL` for actual's dtype."""
    assert isinstance(actual, np.ndarray), what
    assert actual.shape == np.shape(expected), f"{what}: {actual.shape} vs {np.shape(expected)}"
    tol = TOL[actual.dtype]
    atol = tol["atol_rel"] * max(float(np.max(scale, initial=0.0)), 1e-300)
    np.testing.assert_allclose(actual.astype(np.float64), np.asarray(expected, np.float64),
                               rtol=tol["rtol"], atol=atol, err_msg=what)


def assert_exact(actual, expected, what=""):
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: {actual.shape} vs {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: {actual.dtype} vs {expected.dtype}"
    np.testing.assert_array_equal(actual, expected, err_msg=what)  # NaN == NaN here


def x_shape(n, h, w, c, layout):
    return (n, h, w, c) if layout == "NHWC" else (n, c, h, w)


def w_shape(kh, kw, c, f, layout):
    return (kh, kw, c, f) if layout == "NHWC" else (f, c, kh, kw)


def assert_fd_close(analytic, numeric, what=""):
    assert analytic.shape == numeric.shape, what
    atol = FD_ATOL_REL * max(1.0, float(np.max(np.abs(numeric), initial=0.0)))
    np.testing.assert_allclose(analytic, numeric, rtol=FD_RTOL, atol=atol, err_msg=what)


# =========================================================================== sweeps
SIZES = (1, 2, 3, 4, 5, 6, 7, 11, 13)
PADDINGS = ("valid", "same", 0, 1, 2, (1, 0), ((0, 1), (2, 0)), ((2, 1), (0, 3)))


def _conv_valid(h, w, k, s, p, d):
    pt, pb, pl, pr = _naive.padding_sides(p, h, w, k, s, d)
    return (_naive.output_size(h, k[0], s[0], pt, pb, d[0]) >= 1 and
            _naive.output_size(w, k[1], s[1], pl, pr, d[1]) >= 1)


def _conv_cases():
    """Curated edge cases, then a seeded random sample of the full grid."""
    cases = [  # n, h, w, c, f, (kh, kw), stride, padding, dilation, layout, bias, act
        (1, 1, 1, 1, 1, (1, 1), 1, "valid", 1, "NHWC", False, None),
        (1, 1, 1, 2, 3, (3, 3), 1, "same", 1, "NCHW", True, None),
        (3, 1, 7, 2, 2, (1, 3), (1, 2), "same", 1, "NHWC", True, "relu"),
        (1, 13, 11, 1, 2, (5, 5), 3, "same", 2, "NCHW", True, None),
        (3, 13, 13, 2, 1, (5, 3), 2, ((0, 1), (2, 0)), (2, 1), "NHWC", False, None),
        (1, 2, 2, 1, 1, (3, 3), 1, 1, 1, "NHWC", False, None),       # kernel > image
        (1, 5, 5, 1, 1, (3, 3), 3, 2, 2, "NCHW", True, "relu"),
        (3, 7, 5, 3, 2, (2, 2), 1, "same", 1, "NCHW", True, None),   # even kernel, "same"
        (1, 6, 6, 2, 2, (2, 3), 2, "same", 2, "NHWC", False, None),
        (3, 4, 4, 1, 3, (1, 1), 3, 0, 1, "NCHW", True, "relu"),      # 1x1, strided
        (1, 3, 3, 1, 1, (3, 3), 1, ((2, 1), (0, 3)), 1, "NHWC", False, None),
    ]
    rnd = random.Random(20260422)
    while len(cases) < 90:
        layout = rnd.choice(LAYOUTS)
        h, w = rnd.choice(SIZES), rnd.choice(SIZES)
        k = (rnd.choice((1, 2, 3, 5)), rnd.choice((1, 2, 3, 5)))
        s = rnd.choice((1, 2, 3, (1, 2), (3, 1)))
        d = rnd.choice((1, 1, 2, (1, 2)))
        p = rnd.choice(PADDINGS)
        sp, dp = _naive.pair(s), _naive.pair(d)
        if not _conv_valid(h, w, k, sp, p, dp):
            continue
        cases.append((rnd.choice((1, 3)), h, w, rnd.choice((1, 2, 3)), rnd.choice((1, 2, 3)),
                      k, s, p, d, layout, rnd.random() < 0.5,
                      rnd.choice((None, None, "relu"))))
    return cases


CONV_CASES = _conv_cases()


def _conv_id(case):
    n, h, w, c, f, k, s, p, d, layout, bias, act = case
    return (f"{layout}-n{n}-{h}x{w}x{c}-f{f}-k{k[0]}{k[1]}-s{s}-p{p}-d{d}"
            f"{'-b' if bias else ''}{'-relu' if act else ''}").replace(" ", "")


def _conv_data(case, dtype):
    n, h, w, c, f, k, s, p, d, layout, bias, act = case
    rng = _rng("conv", case)
    x = rng.uniform(-1, 1, x_shape(n, h, w, c, layout)).astype(dtype)
    wt = rng.uniform(-1, 1, w_shape(k[0], k[1], c, f, layout)).astype(dtype)
    b = rng.uniform(-1, 1, f).astype(dtype) if bias else None
    return x, wt, b


@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_conv2d_forward_matches_naive(case):
    n, h, w, c, f, k, s, p, d, layout, bias, act = case
    x, wt, b = _conv_data(case, np.float64)
    kw = dict(stride=s, padding=p, dilation=d, layout=layout)
    y = ops.conv2d_forward(x, wt, b, activation=act, **kw)
    assert y.dtype == np.float64
    ref = _naive.conv2d(x, wt, b, activation=act, **kw)
    assert_sums_close(y, ref, _naive.conv2d_abs_scale(x, wt, b, **kw), _conv_id(case))


@pytest.mark.parametrize("case", CONV_CASES[::9], ids=_conv_id)
def test_conv2d_forward_float32(case):
    n, h, w, c, f, k, s, p, d, layout, bias, act = case
    x, wt, b = _conv_data(case, np.float32)
    kw = dict(stride=s, padding=p, dilation=d, layout=layout)
    y = ops.conv2d_forward(x, wt, b, activation=act, **kw)
    assert y.dtype == np.float32
    # exact (float64) convolution of the very same float32 values
    ref = _naive.conv2d(x.astype(np.float64), wt.astype(np.float64),
                        None if b is None else b.astype(np.float64), activation=act, **kw)
    assert_sums_close(y, ref, _naive.conv2d_abs_scale(x, wt, b, **kw), _conv_id(case))


def test_conv2d_chunked_equals_whole_batch(restore_workspace_limit):
    """The driver lowers at most ``chunk`` images at once: one image per chunk must give
    the result of the whole batch in one chunk (same products; a BLAS may block the
    GEMM differently, hence the float64 sum tolerance rather than bit equality)."""
    rng = _rng("chunk")
    for layout in LAYOUTS:
        x = rng.uniform(-1, 1, x_shape(5, 6, 7, 2, layout))
        wt = rng.uniform(-1, 1, w_shape(3, 2, 2, 3, layout))
        b = rng.uniform(-1, 1, 3)
        dy = rng.uniform(-1, 1, x_shape(5, 3, 4, 3, layout))
        kw = dict(stride=2, padding="same", layout=layout)
        ops.set_workspace_limit(restore_workspace_limit)
        whole = ops.conv2d_forward(x, wt, b, **kw)
        grads = ops.conv2d_backward(dy, x, wt, **kw)
        ops.set_workspace_limit(1)
        # every |term| <= 1 here; the largest sum (db, dw) has 5*3*4 terms
        assert_sums_close(ops.conv2d_forward(x, wt, b, **kw), whole, 3 * 2 * 2 + 1,
                          "chunked forward")
        for got, ref in zip(ops.conv2d_backward(dy, x, wt, **kw), grads):
            assert_sums_close(got, ref, 5 * 3 * 4, "chunked backward")


# --------------------------------------------------------------------------- im2col
def _im2col_cases():
    cases = [
        (1, 1, 1, 1, (1, 1), 1, "valid", 1, "NHWC"),
        (1, 1, 1, 2, (3, 3), 1, "same", 1, "NCHW"),
        (3, 5, 7, 3, (3, 2), (2, 1), ((0, 1), (2, 0)), (1, 2), "NCHW"),
        (1, 13, 11, 2, (5, 5), 3, "same", 2, "NHWC"),
    ]
    rnd = random.Random(77)
    while len(cases) < 40:
        h, w = rnd.choice(SIZES), rnd.choice(SIZES)
        k = (rnd.choice((1, 2, 3)), rnd.choice((1, 2, 3, 5)))
        s, p, d = rnd.choice((1, 2, 3)), rnd.choice(PADDINGS), rnd.choice((1, 2))
        if _conv_valid(h, w, k, (s, s), p, (d, d)):
            cases.append((rnd.choice((1, 3)), h, w, rnd.choice((1, 2, 3)), k, s, p, d,
                          rnd.choice(LAYOUTS)))
    return cases


IM2COL_CASES = _im2col_cases()


def _im2col_id(case):
    n, h, w, c, k, s, p, d, layout = case
    return f"{layout}-n{n}-{h}x{w}x{c}-k{k[0]}{k[1]}-s{s}-p{p}-d{d}".replace(" ", "")


@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("f64", "f32"))
@pytest.mark.parametrize("case", IM2COL_CASES, ids=_im2col_id)
def test_im2col_matches_naive_exactly(case, dtype):
    n, h, w, c, k, s, p, d, layout = case
    x = _rng("im2col", case).uniform(-1, 1, x_shape(n, h, w, c, layout)).astype(dtype)
    kw = dict(stride=s, padding=p, dilation=d, layout=layout)
    assert_exact(ops.im2col(x, k, **kw), _naive.im2col(x, k, **kw), _im2col_id(case))


@pytest.mark.parametrize("case", IM2COL_CASES, ids=_im2col_id)
def test_im2col_col2im_adjoint(case):
    """<im2col(x), c> == <x, col2im(c)> for random x and c (float64)."""
    n, h, w, c, k, s, p, d, layout = case
    rng = _rng("adjoint", case)
    xs = x_shape(n, h, w, c, layout)
    kw = dict(stride=s, padding=p, dilation=d, layout=layout)
    x = rng.uniform(-1, 1, xs)
    cols_x = ops.im2col(x, k, **kw)
    cmat = rng.uniform(-1, 1, cols_x.shape)
    back = ops.col2im(cmat, xs, k, **kw)
    assert back.shape == xs and back.dtype == np.float64
    lhs = float(np.sum(cols_x * cmat))
    rhs = float(np.sum(x * back))
    scale = float(np.sum(np.abs(cols_x * cmat)))
    assert abs(lhs - rhs) <= TOL[np.dtype(np.float64)]["atol_rel"] * scale, (lhs, rhs)


# padding at least the dilated kernel's extent: windows of padding only, strides that skip
# image rows, a stride and padding far beyond the image (nothing may be padded in full)
BEYOND_CASES = [  # n, h, w, c, f, k, stride, padding, dilation, layout
    (2, 5, 4, 3, 2, (2, 2), (3, 1), ((4, 0), (0, 1)), 1, "NHWC"),
    (1, 6, 5, 2, 3, (1, 1), (4, 2), ((5, 5), (0, 3)), 1, "NCHW"),
    (2, 4, 5, 2, 2, (2, 2), (2, 3), ((4, 6), (5, 1)), (3, 1), "NHWC"),
    (1, 3, 3, 2, 2, (2, 2), 1, 3, 1, "NCHW"),
    (1, 2, 3, 1, 2, (1, 2), (2**30, 2**29), ((2**30, 0), (1, 2**29)), 1, "NHWC"),
]


@pytest.mark.parametrize("case", BEYOND_CASES, ids=lambda c: _conv_id(c + (True, "relu")))
def test_padding_beyond_the_kernel_matches_naive(case):
    n, h, w, c, f, k, s, p, d, layout = case
    rng = _rng("beyond", case)
    x = rng.uniform(-1, 1, x_shape(n, h, w, c, layout))
    wt = rng.uniform(-1, 1, w_shape(*k, c, f, layout))
    b = rng.uniform(-1, 1, f)
    kw = dict(stride=s, padding=p, dilation=d, layout=layout)
    assert_exact(ops.im2col(x, k, **kw), _naive.im2col(x, k, **kw), "im2col")
    y = ops.conv2d_forward(x, wt, b, activation="relu", **kw)
    assert_sums_close(y, _naive.conv2d(x, wt, b, activation="relu", **kw),
                      _naive.conv2d_abs_scale(x, wt, b, **kw), "conv2d")
    # col2im: the adjoint of im2col
    cols = ops.im2col(x, k, **kw)
    r = rng.uniform(-1, 1, cols.shape)
    back = ops.col2im(r, x.shape, k, **kw)
    assert abs(float(np.sum(cols * r)) - float(np.sum(x * back))) <= \
        TOL[np.dtype(np.float64)]["atol_rel"] * float(np.sum(np.abs(cols * r)))


def test_col2im_overwrites_and_accumulates():
    """Each input element receives one entry per window that reads it: col2im of all ones
    counts the windows covering each element (here 3x3 stride 1 'same' on 4x4)."""
    for layout in LAYOUTS:
        xs = x_shape(1, 4, 4, 1, layout)
        cols = np.ones((16, 9))
        got = ops.col2im(cols, xs, 3, padding="same", layout=layout).reshape(4, 4)
        cover = np.array([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]], float)
        assert_exact(got, cover, layout)


# --------------------------------------------------------------------------- pooling
POOL_PADDINGS = ("valid", "same", 0, 1, (1, 0), ((0, 1), (1, 0)), ((1, 0), (0, 2)))


def _pool_cases():
    cases = [
        (1, 1, 1, 1, (1, 1), None, "valid", "NHWC"),
        (1, 1, 1, 2, (3, 3), 1, "same", "NCHW"),
        (3, 13, 11, 2, (3, 3), 2, "same", "NHWC"),
        (1, 5, 5, 1, (2, 2), None, "same", "NCHW"),
        (3, 7, 6, 3, (3, 2), (1, 3), ((1, 0), (0, 1)), "NHWC"),
        (1, 4, 4, 1, (3, 3), 1, 1, "NCHW"),
    ]
    rnd = random.Random(4242)
    while len(cases) < 50:
        h, w = rnd.choice(SIZES), rnd.choice(SIZES)
        k = (rnd.choice((1, 2, 3)), rnd.choice((1, 2, 3)))
        s = rnd.choice((None, 1, 2, 3, (2, 1)))
        p = rnd.choice(POOL_PADDINGS)
        sp = _naive.pair(k if s is None else s)
        if not isinstance(p, str):
            pt, pb, pl, pr = _naive.padding_sides(p, h, w, k)
            if max(pt, pb) >= k[0] or max(pl, pr) >= k[1]:
                continue  # ops rejects padding >= window for pooling
        if _conv_valid(h, w, k, sp, p, (1, 1)):
            cases.append((rnd.choice((1, 3)), h, w, rnd.choice((1, 2, 3)), k, s, p,
                          rnd.choice(LAYOUTS)))
    return cases


POOL_CASES = _pool_cases()


def _pool_id(case):
    n, h, w, c, k, s, p, layout = case
    return f"{layout}-n{n}-{h}x{w}x{c}-k{k[0]}{k[1]}-s{s}-p{p}".replace(" ", "")


def _tie_heavy(rng, shape, dtype):
    """Values from a tiny set (many ties) with some -inf and a few NaN."""
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    x[rng.random(shape) < 0.15] = -np.inf
    x[rng.random(shape) < 0.04] = np.nan
    return x


@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("f64", "f32"))
@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_maxpool_forward_matches_naive_exactly(case, dtype):
    """Ties, -inf and NaN everywhere: values and argmax must match np.argmax semantics
    over the in-bounds window elements."""
    n, h, w, c, k, s, p, layout = case
    x = _tie_heavy(_rng("maxpool", case), x_shape(n, h, w, c, layout), dtype)
    y, arg = ops.maxpool2d_forward(x, k, stride=s, padding=p, layout=layout)
    y_ref, arg_ref = _naive.maxpool2d(x, k, stride=s, padding=p, layout=layout)
    assert_exact(y, y_ref, "values " + _pool_id(case))
    assert_exact(arg, arg_ref, "argmax " + _pool_id(case))
    # argmax really points at the value (within the sample)
    flat = x.reshape(n, -1)
    picked = np.take_along_axis(flat, arg.reshape(n, -1), axis=1).reshape(y.shape)
    assert_exact(picked, y, "x[n].ravel()[argmax] == y")


@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("f64", "f32"))
@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_avgpool_forward_matches_naive(case, dtype):
    n, h, w, c, k, s, p, layout = case
    x = _rng("avgpool", case).uniform(-1, 1, x_shape(n, h, w, c, layout)).astype(dtype)
    y = ops.avgpool2d_forward(x, k, stride=s, padding=p, layout=layout)
    assert y.dtype == dtype
    ref = _naive.avgpool2d(x.astype(np.float64), k, stride=s, padding=p, layout=layout)
    # a mean of <= 9 terms, error <= ~10 eps * max|x|
    assert_sums_close(y, ref, np.max(np.abs(x)), _pool_id(case))


# --------------------------------------------------------------------------- pooling edges
@pytest.mark.parametrize("layout", LAYOUTS)
def test_maxpool_ties_pick_first_in_window_order(layout):
    x = np.zeros(x_shape(1, 4, 5, 2, layout))
    # valid 2x2 stride 2: each window's first element is its top-left
    y, arg = ops.maxpool2d_forward(x, 2, layout=layout)
    oh, ow = np.meshgrid([0, 2], [0, 2], indexing="ij")
    for c in range(2):
        first = (oh * 5 + ow) * 2 + c if layout == "NHWC" else (c * 4 + oh) * 5 + ow
        got = arg[0, :, :, c] if layout == "NHWC" else arg[0, c]
        assert_exact(got, first.astype(np.int64), f"channel {c}")
    # 3x3 stride 1 'same': the first in-bounds element (padding never wins)
    y, arg = ops.maxpool2d_forward(x, 3, stride=1, padding="same", layout=layout)
    got = arg[0, :, :, 0] if layout == "NHWC" else arg[0, 0]
    r0 = np.maximum(np.arange(4) - 1, 0)[:, None]
    c0 = np.maximum(np.arange(5) - 1, 0)[None, :]
    first = (r0 * 5 + c0) * 2 if layout == "NHWC" else r0 * 5 + c0
    assert_exact(got, first.astype(np.int64), "same padding ties")
    # a tie between two maxima later in the window: the earlier one (row-major) wins
    x2 = np.zeros(x_shape(1, 3, 3, 1, layout))
    v = x2[0, :, :, 0] if layout == "NHWC" else x2[0, 0]
    v[1, 2] = v[2, 0] = 5.0   # (1, 2) comes before (2, 0) in row-major order
    y, arg = ops.maxpool2d_forward(x2, 3, layout=layout)
    assert y.ravel()[0] == 5.0 and arg.ravel()[0] == 1 * 3 + 2


@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("f64", "f32"))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_maxpool_nan_propagates_first_nan_wins(layout, dtype):
    x = np.arange(16, dtype=dtype).reshape(4, 4)
    x[0, 1] = np.nan
    x[1, 0] = np.nan              # second NaN of the same window
    x[3, 3] = np.nan              # NaN beats the larger numbers around it
    x[2, 2] = np.inf
    x4 = x.reshape(1, 4, 4, 1) if layout == "NHWC" else x.reshape(1, 1, 4, 4)
    y, arg = ops.maxpool2d_forward(x4, 2, layout=layout)
    y2, a2 = y.reshape(2, 2), arg.reshape(2, 2)
    assert np.isnan(y2[0, 0]) and a2[0, 0] == 1          # first NaN in window order
    assert y2[0, 1] == 7 and a2[0, 1] == 7
    assert y2[1, 0] == 13 and a2[1, 0] == 13
    assert np.isnan(y2[1, 1]) and a2[1, 1] == 15          # NaN beats +inf


@pytest.mark.parametrize("layout", LAYOUTS)
def test_maxpool_all_minus_inf_with_padding_picks_in_bounds(layout):
    """Padding behaves like -inf but must never be chosen, even on an exact tie."""
    x = np.full(x_shape(2, 3, 4, 2, layout), -np.inf)
    for p in (1, "same", ((1, 0), (0, 1))):
        y, arg = ops.maxpool2d_forward(x, 3, stride=1, padding=p, layout=layout)
        assert np.all(y == -np.inf)
        assert arg.min() >= 0 and arg.max() < 3 * 4 * 2
        pt, pb, pl, pr = _naive.padding_sides(p, 3, 4, 3, 1)
        oh = np.arange(y.shape[1 if layout == "NHWC" else 2])
        ow = np.arange(y.shape[2 if layout == "NHWC" else 3])
        r0 = np.maximum(oh - pt, 0)[:, None]
        c0 = np.maximum(ow - pl, 0)[None, :]
        for c in range(2):
            first = (r0 * 4 + c0) * 2 + c if layout == "NHWC" else (c * 3 + r0) * 4 + c0
            for n in range(2):
                got = arg[n, :, :, c] if layout == "NHWC" else arg[n, c]
                assert_exact(got, first.astype(np.int64), f"padding={p} n={n} c={c}")
    # -inf in bounds, a finite value elsewhere in the window: the finite value wins
    x[0, 0, 0, 0] = -5.0
    y, _ = ops.maxpool2d_forward(x, 2, padding=((1, 0), (1, 0)), layout=layout)
    assert y[0, 0, 0, 0] == -5.0


# windows longer than the image (by input position in the reference), ties, -inf and NaN
LONG_POOL_CASES = [  # n, h, w, c, k, stride, padding, layout
    (2, 2, 3, 2, (7, 5), 1, ((6, 2), (0, 4)), "NHWC"),
    (1, 3, 2, 3, (6, 9), (2, 3), ((5, 5), (8, 1)), "NCHW"),
    (2, 1, 4, 1, (4, 3), (1, 2), ((3, 1), (2, 2)), "NHWC"),  # rows by input, columns by offset
    (1, 2, 2, 2, (8, 8), None, 7, "NCHW"),
]


@pytest.mark.parametrize("case", LONG_POOL_CASES, ids=_pool_id)
def test_pool_window_longer_than_the_image(case):
    n, h, w, c, k, s, p, layout = case
    rng = _rng("longpool", case)
    kw = dict(stride=s, padding=p, layout=layout)
    x = _tie_heavy(rng, x_shape(n, h, w, c, layout), np.float64)
    y, arg = ops.maxpool2d_forward(x, k, **kw)
    y_ref, arg_ref = _naive.maxpool2d(x, k, **kw)
    assert_exact(y, y_ref, "max values")
    assert_exact(arg, arg_ref, "argmax")
    xa = rng.uniform(-1, 1, x.shape)
    ya = ops.avgpool2d_forward(xa, k, **kw)
    assert_sums_close(ya, _naive.avgpool2d(xa, k, **kw), np.max(np.abs(xa)), "avg")
    # the backward is the adjoint of the forward: <avg(x), r> == <x, avg_backward(r)>
    r = rng.uniform(-1, 1, ya.shape)
    back = ops.avgpool2d_backward(r, x.shape, k, **kw)
    lhs, rhs = float(np.sum(ya * r)), float(np.sum(xa * back))
    assert abs(lhs - rhs) <= 1e-12 * float(np.sum(np.abs(ya * r)) + 1), (lhs, rhs)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_avgpool_padding_not_counted(layout):
    x = np.ones(x_shape(1, 4, 5, 2, layout))
    y = ops.avgpool2d_forward(x, 3, stride=1, padding="same", layout=layout)
    assert_exact(y, np.ones_like(y), "mean of ones is one whatever the window")
    v = np.arange(20, dtype=np.float64).reshape(4, 5)
    xv = v.reshape(1, 4, 5, 1) if layout == "NHWC" else v.reshape(1, 1, 4, 5)
    y = ops.avgpool2d_forward(xv, 3, stride=1, padding=1, layout=layout).reshape(4, 5)
    assert y[0, 0] == (0 + 1 + 5 + 6) / 4                   # corner: 4 in-bounds
    assert y[0, 2] == (1 + 2 + 3 + 6 + 7 + 8) / 6           # edge: 6 in-bounds
    assert y[1, 1] == np.mean(v[0:3, 0:3])                  # interior: 9


# =========================================================================== backward
def _fd_conv_cases():
    return [  # n, h, w, c, f, k, stride, padding, dilation, layout
        (2, 5, 4, 2, 3, (3, 3), 1, "same", 1, "NHWC"),
        (2, 5, 4, 2, 3, (3, 3), 1, "same", 1, "NCHW"),
        (1, 7, 6, 2, 2, (3, 2), 2, ((0, 1), (2, 0)), 1, "NHWC"),
        (1, 7, 6, 2, 2, (3, 2), 2, ((0, 1), (2, 0)), 1, "NCHW"),
        (2, 6, 6, 1, 2, (2, 3), (1, 3), "valid", 2, "NHWC"),
        (2, 6, 6, 1, 2, (2, 3), (1, 3), "valid", 2, "NCHW"),
        (1, 5, 5, 3, 1, (5, 5), 3, 2, 1, "NHWC"),
        (1, 1, 1, 2, 2, (3, 3), 1, 1, 1, "NCHW"),
    ]


@pytest.mark.parametrize("case", _fd_conv_cases(), ids=lambda c: _conv_id(c + (False, None)))
def test_conv2d_backward_finite_differences(case):
    n, h, w, c, f, k, s, p, d, layout = case
    rng = _rng("fdconv", case)
    kw = dict(stride=s, padding=p, dilation=d, layout=layout)
    x = rng.uniform(-1, 1, x_shape(n, h, w, c, layout))
    wt = rng.uniform(-1, 1, w_shape(k[0], k[1], c, f, layout))
    b = rng.uniform(-1, 1, f)
    y = ops.conv2d_forward(x, wt, b, **kw)
    r = rng.uniform(-1, 1, y.shape)       # loss = sum(y * r), so dL/dy = r

    def loss():
        return float(np.sum(ops.conv2d_forward(x, wt, b, **kw) * r))

    dx, dw, db = ops.conv2d_backward(r, x, wt, **kw)
    assert_fd_close(dx, numerical_gradient(loss, x, FD_EPS), "dx")
    assert_fd_close(dw, numerical_gradient(loss, wt, FD_EPS), "dw")
    assert_fd_close(db, numerical_gradient(loss, b, FD_EPS), "db")
    none, dw2, db2 = ops.conv2d_backward(r, x, wt, need_dx=False, **kw)
    assert none is None
    assert_exact(dw2, dw, "dw without dx")
    assert_exact(db2, db, "db without dx")


@pytest.mark.parametrize("case", _fd_conv_cases()[::2], ids=lambda c: _conv_id(c + (False, None)))
def test_conv2d_backward_float32(case):
    """float32 gradients against the float64 gradients of the same float32 data (the
    float64 ones are checked by finite differences above)."""
    n, h, w, c, f, k, s, p, d, layout = case
    rng = _rng("conv32", case)
    kw = dict(stride=s, padding=p, dilation=d, layout=layout)
    x = rng.uniform(-1, 1, x_shape(n, h, w, c, layout)).astype(np.float32)
    wt = rng.uniform(-1, 1, w_shape(k[0], k[1], c, f, layout)).astype(np.float32)
    oh = ops.conv2d_forward(x, wt, **kw).shape
    dy = rng.uniform(-1, 1, oh).astype(np.float32)
    got = ops.conv2d_backward(dy, x, wt, **kw)
    d64 = [a.astype(np.float64) for a in (dy, x, wt)]
    ref = ops.conv2d_backward(*d64, **kw)
    # sum |terms| of each gradient element: the same gradients of |dy|, |x|, |w|
    scale = ops.conv2d_backward(*[np.abs(a) for a in d64], **kw)
    for name, g32, g64, s_ in zip(("dx", "dw", "db"), got, ref, scale):
        assert g32.dtype == np.float32
        assert_sums_close(g32, g64, s_, f"conv backward float32 {name}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("k,s,p", [(2, None, "valid"), (3, 1, "same"), (3, 2, 1),
                                   ((2, 3), (1, 2), ((1, 0), (0, 2)))],
                         ids=["k2", "k3s1same", "k3s2p1", "k23asym"])
def test_maxpool_backward_finite_differences(layout, k, s, p):
    rng = _rng("fdmax", layout, k, s, p)
    shape = x_shape(2, 5, 6, 2, layout)
    # distinct values 0.125 apart: no tie within FD_EPS; overlapping windows share maxima
    x = (rng.permutation(int(np.prod(shape))).astype(np.float64) / 8.0).reshape(shape)
    y, arg = ops.maxpool2d_forward(x, k, stride=s, padding=p, layout=layout)
    r = rng.uniform(-1, 1, y.shape)

    def loss():
        return float(np.sum(ops.maxpool2d_forward(x, k, stride=s, padding=p,
                                                  layout=layout)[0] * r))

    dx = ops.maxpool2d_backward(r, arg, shape, k, stride=s, padding=p, layout=layout)
    assert_fd_close(dx, numerical_gradient(loss, x, FD_EPS), "maxpool dx")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_maxpool_backward_accumulates_duplicates(layout):
    """One global maximum chosen by every overlapping window gets the sum of their dy."""
    x = np.zeros(x_shape(1, 3, 3, 1, layout))
    x.reshape(-1)[4] = 1.0                                 # the centre
    y, arg = ops.maxpool2d_forward(x, 3, stride=1, padding="same", layout=layout)
    assert np.all(arg == 4)
    dy = np.arange(1.0, 10.0).reshape(y.shape)
    dx = ops.maxpool2d_backward(dy, arg, x.shape, 3, stride=1, padding="same", layout=layout)
    expected = np.zeros(9)
    expected[4] = 45.0
    assert_exact(dx.reshape(-1), expected, "duplicates accumulate")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("k,s,p", [(2, None, "valid"), (3, 1, "same"), (3, 2, 1),
                                   ((2, 3), (1, 2), ((1, 0), (0, 2)))],
                         ids=["k2", "k3s1same", "k3s2p1", "k23asym"])
def test_avgpool_backward_finite_differences(layout, k, s, p):
    rng = _rng("fdavg", layout, k, s, p)
    shape = x_shape(2, 5, 6, 2, layout)
    x = rng.uniform(-1, 1, shape)
    y = ops.avgpool2d_forward(x, k, stride=s, padding=p, layout=layout)
    r = rng.uniform(-1, 1, y.shape)

    def loss():
        return float(np.sum(ops.avgpool2d_forward(x, k, stride=s, padding=p,
                                                  layout=layout) * r))

    dx = ops.avgpool2d_backward(r, shape, k, stride=s, padding=p, layout=layout)
    assert_fd_close(dx, numerical_gradient(loss, x, FD_EPS), "avgpool dx")


@pytest.mark.parametrize("case", IM2COL_CASES[:6], ids=_im2col_id)
def test_col2im_finite_differences(case):
    """col2im is linear: d sum(col2im(c) * r) / dc == im2col(r)."""
    n, h, w, c, k, s, p, d, layout = case
    rng = _rng("fdcol2im", case)
    xs = x_shape(n, h, w, c, layout)
    kw = dict(stride=s, padding=p, dilation=d, layout=layout)
    r = rng.uniform(-1, 1, xs)
    cols = rng.uniform(-1, 1, ops.im2col(r, k, **kw).shape)

    def loss():
        return float(np.sum(ops.col2im(cols, xs, k, **kw) * r))

    assert_fd_close(ops.im2col(r, k, **kw), numerical_gradient(loss, cols, FD_EPS), "col2im")


@pytest.mark.parametrize("shape,axis", [((4, 3), -1), ((2, 3, 4, 5), 1), ((2, 4, 3, 3), -1),
                                        ((5,), 0)], ids=str)
@pytest.mark.parametrize("act", ["relu", "identity"])
def test_bias_act_backward_finite_differences(shape, axis, act):
    rng = _rng("fdbias", shape, axis, act)
    # |x| >= 0.2 and |b| <= 0.05: x + b stays >= 0.15 away from the relu kink
    x = rng.uniform(0.2, 1.0, shape) * rng.choice((-1.0, 1.0), shape)
    b = rng.uniform(-0.05, 0.05, shape[axis])
    y = ops.bias_act(x, b, act, channel_axis=axis)
    r = rng.uniform(-1, 1, shape)

    def loss():
        return float(np.sum(ops.bias_act(x, b, act, channel_axis=axis) * r))

    dx, db = ops.bias_act_backward(r, y, act, channel_axis=axis)
    assert_fd_close(dx, numerical_gradient(loss, x, FD_EPS), "bias_act dx")
    assert_fd_close(db, numerical_gradient(loss, b, FD_EPS), "bias_act db")
    dx2, none = ops.bias_act_backward(r, y, act, channel_axis=axis, need_db=False)
    assert none is None
    assert_exact(dx2, dx)


# =========================================================================== relu_mask
@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("f64", "f32"))
def test_relu_mask_reference_against_loops(dtype):
    """The NumPy reference against the idiom it replaces, element by element in Python:
    ``mask = x <= 0; y = x.copy(); y[mask] = 0`` and ``dout[mask] = 0``."""
    rng = _rng("relu_mask", dtype)
    x = rng.uniform(-1, 1, (4, 6)).astype(dtype)
    x.flat[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, -np.nan]
    dy = rng.uniform(-1, 1, (4, 6)).astype(dtype)
    with fastnn.use_backend("numpy"):
        y, m = ops.relu_mask(x)
        dx = ops.relu_mask_backward(dy, m)
    ey, em, edx = x.copy(), np.zeros(x.shape, bool), dy.copy()
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if x[i, j] <= 0:
                em[i, j] = True
                ey[i, j] = 0            # a Python int 0 stored: +0.0
                edx[i, j] = 0
    assert np.array_equal(m, em)
    assert_exact(y, ey, "relu_mask y")
    assert not np.signbit(y).any() or np.isnan(y[np.signbit(y)]).all()   # -0.0 -> +0.0
    assert_exact(dx, edx, "relu_mask_backward")


# =========================================================================== bias_act
@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("f64", "f32"))
def test_bias_act_forward(dtype):
    rng = _rng("bias", dtype)
    x = rng.uniform(-1, 1, (2, 3, 4, 5)).astype(dtype)
    b = rng.uniform(-1, 1, 3).astype(dtype)
    y = ops.bias_act(x, b, "relu", channel_axis=1)
    assert y.dtype == dtype
    s = x + b[None, :, None, None]                       # exact: one rounding, same dtype
    assert_exact(y, np.where(s < 0, dtype(0), s), "relu(x + b)")
    assert_exact(ops.bias_act(x, None, "identity"), x, "identity without bias")
    assert_exact(ops.bias_act(x, None, None), x, "None means identity")
    assert_exact(ops.bias_act(x, b, "linear", channel_axis=1), s, "linear with bias")
    # NaN passes through relu (v < 0 ? 0 : v), as in the compiled backends
    xn = np.array([[np.nan, -1.0, 2.0]], dtype=dtype)
    assert_exact(ops.bias_act(xn, None, "relu"), np.array([[np.nan, 0, 2]], dtype=dtype))


def test_bias_act_primitives_allow_aliasing(numpy_backend):
    """``out`` may be ``y`` in bias_act; ``dx`` may be ``dy`` in bias_act_backward."""
    rng = _rng("alias")
    y = rng.uniform(-1, 1, (3, 4, 5))
    b = rng.uniform(-1, 1, 4)
    expected = np.maximum(y + b[None, :, None], 0)
    inplace = y.copy()
    numpy_backend.bias_act(inplace, b, "relu", inplace)
    assert_exact(inplace, expected)
    dy = rng.uniform(-1, 1, y.shape)
    expected_dx = np.where(inplace > 0, dy, 0.0)
    db = np.full(4, np.nan)
    numpy_backend.bias_act_backward(dy, inplace, "relu", dy, db)
    assert_exact(dy, expected_dx)
    np.testing.assert_allclose(db, expected_dx.sum(axis=(0, 2)), rtol=1e-12, atol=1e-14)


# =========================================================================== matmul
def _naive_matmul(a, b, ta, tb):
    a = a.T if ta else a
    b = b.T if tb else b
    m, k = a.shape
    n = b.shape[1]
    c = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            c[i, j] = sum(float(a[i, q]) * float(b[q, j]) for q in range(k))
    return c


@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("f64", "f32"))
@pytest.mark.parametrize("ta,tb", list(itertools.product((False, True), repeat=2)),
                         ids=["NN", "NT", "TN", "TT"])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (3, 4, 5), (7, 1, 13), (1, 6, 2), (5, 5, 17)],
                         ids=str)
def test_matmul_against_loops(m, n, k, ta, tb, dtype):
    rng = _rng("mm", m, n, k, ta, tb)
    a = rng.uniform(-1, 1, (k, m) if ta else (m, k)).astype(dtype)
    b = rng.uniform(-1, 1, (n, k) if tb else (k, n)).astype(dtype)
    ref = _naive_matmul(a, b, ta, tb)
    scale = _naive_matmul(np.abs(a), np.abs(b), ta, tb)
    got = ops.matmul(a, b, trans_a=ta, trans_b=tb)
    assert got.dtype == dtype
    assert_sums_close(got, ref, scale, "alpha=1 beta=0")
    for alpha, beta in [(0.5, 0.0), (-2.0, 1.0), (1.5, -0.25), (0.0, 2.0)]:
        c0 = rng.uniform(-1, 1, (m, n)).astype(dtype)
        out = c0.copy()
        got = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, out=out)
        assert got is out
        expected = alpha * ref + beta * c0.astype(np.float64)
        assert_sums_close(got, expected, abs(alpha) * scale + abs(beta) * np.abs(c0),
                          f"alpha={alpha} beta={beta}")


@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("f64", "f32"))
def test_matmul_beta_zero_ignores_nan_in_out(dtype, numpy_backend):
    rng = _rng("nan-out", dtype)
    a = rng.uniform(-1, 1, (4, 3)).astype(dtype)
    b = rng.uniform(-1, 1, (3, 5)).astype(dtype)
    ref = _naive_matmul(a, b, False, False)
    out = np.full((4, 5), np.nan, dtype=dtype)
    got = ops.matmul(a, b, alpha=2.0, beta=0.0, out=out)
    assert not np.isnan(got).any()
    assert_sums_close(got, 2.0 * ref, 2.0 * _naive_matmul(abs(a), abs(b), False, False))
    # the primitive itself, not only the wrapper
    c = np.full((4, 5), np.inf, dtype=dtype)
    numpy_backend.gemm(False, False, 1.0, a, b, 0.0, c)
    assert np.isfinite(c).all()
    # with beta != 0 the old contents are read: NaN propagates
    out = np.full((4, 5), np.nan, dtype=dtype)
    assert np.isnan(ops.matmul(a, b, beta=1.0, out=out)).all()


def test_matmul_k_zero_and_noncontiguous_out():
    a, b = np.zeros((3, 0)), np.zeros((0, 4))
    out = np.full((3, 4), np.nan)
    assert_exact(ops.matmul(a, b, out=out), np.zeros((3, 4)))
    base = np.arange(24.0).reshape(4, 6)
    view = base[:, ::2]                                      # non-contiguous out
    a = np.arange(8.0).reshape(4, 2)
    bm = np.arange(6.0).reshape(2, 3)
    ops.matmul(a, bm, beta=1.0, out=view)
    assert_exact(base[:, ::2], np.arange(24.0).reshape(4, 6)[:, ::2] + a @ bm)
    assert_exact(base[:, 1::2], np.arange(24.0).reshape(4, 6)[:, 1::2], "untouched")


# =========================================================================== misc
def test_backend_identity(numpy_backend):
    assert _backend.active_name() == "numpy"
    assert numpy_backend.isa() == "numpy"
    assert numpy_backend.get_num_threads() == 1
    numpy_backend.set_num_threads(4)                         # remembered, no effect
    assert numpy_backend.get_num_threads() == 1
    numpy_backend.set_num_threads(1)


def test_naive_same_padding_matches_tensorflow():
    """The naive geometry (used as the oracle above) against hand-computed TF values."""
    # in 5, k 3, s 2 -> out 3, total pad 2 -> (1, 1); in 6 -> out 3, total 1 -> (0, 1)
    assert _naive.same_padding(5, 3, 2, 1) == (1, 1)
    assert _naive.same_padding(6, 3, 2, 1) == (0, 1)
    assert _naive.same_padding(1, 5, 1, 2) == (4, 4)         # span 9
    assert _naive.same_padding(7, 1, 3, 1) == (0, 0)
    assert _naive.same_padding(4, 2, 1, 1) == (0, 1)         # even kernel: extra after
    assert _naive.output_size(13, 5, 3, 0, 0, 2) == 2        # span 9: starts 0, 3
    assert _naive.output_size(2, 3, 1, 1, 1, 1) == 2


@pytest.mark.parametrize("layout", LAYOUTS)
def test_empty_batch(layout):
    x = np.zeros(x_shape(0, 4, 4, 2, layout))
    wt = np.zeros(w_shape(3, 3, 2, 3, layout))
    assert ops.conv2d_forward(x, wt, layout=layout).shape[0] == 0
    dx, dw, db = ops.conv2d_backward(np.zeros(x_shape(0, 2, 2, 3, layout)), x, wt,
                                     layout=layout)
    assert dx.shape == x.shape and not dw.any() and not db.any()
    assert ops.maxpool2d_forward(x, 2, layout=layout)[0].shape[0] == 0


# =========================================================================== softmax xent
def _naive_softmax_xent(z, labels, t, scale):
    """Row by row in Python floats (math.exp, math.log, math.fsum): the definition."""
    n, k = z.shape
    probs, loss, dz = np.empty((n, k)), np.empty(n), np.empty((n, k))
    for i in range(n):
        row = [float(v) for v in z[i]]
        m = max(row)
        e = [math.exp(v - m) for v in row]
        total = math.fsum(e)
        target = ([1.0 if j == labels[i] else 0.0 for j in range(k)] if labels is not None
                  else [float(v) for v in t[i]])
        for j in range(k):
            probs[i, j] = e[j] / total
            dz[i, j] = (probs[i, j] * math.fsum(target) - target[j]) * scale
        loss[i] = math.fsum(target[j] * (math.log(total) - (row[j] - m)) for j in range(k))
    return probs, loss, dz


@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("f64", "f32"))
@pytest.mark.parametrize("sparse", [True, False], ids=["labels", "onehot"])
@pytest.mark.parametrize("n,k", [(1, 1), (1, 5), (6, 3), (9, 10), (3, 37)], ids=str)
def test_softmax_cross_entropy_against_loops(n, k, sparse, dtype):
    """probs, loss and dz against the definition (naive rows in float64): sums of K terms
    each at most max(1, |s|), hence the scale below (|s| <= 2 * max|z|)."""
    rng = _rng("xent", n, k, sparse, dtype)
    z = (rng.standard_normal((n, k)) * 3).astype(dtype)
    labels = rng.integers(0, k, n)
    t = np.eye(k, dtype=dtype)[labels] if not sparse else None
    if not sparse:  # any non-negative weights, not only one-hot rows
        t[:, 0] += dtype(0.25)
    probs, loss, dz = ops.softmax_cross_entropy(z, labels if sparse else t, scale=0.5)
    ep, el, ed = _naive_softmax_xent(z, labels if sparse else None, t, 0.5)
    scale = k * (1 + 2 * float(np.abs(z).max())) * 1.25
    assert_sums_close(probs, ep, scale, "probs")
    assert_sums_close(loss, el, scale, "loss")
    assert_sums_close(dz, ed, scale, "dz")
    assert probs.dtype == loss.dtype == dz.dtype == dtype


@pytest.mark.parametrize("sparse", [True, False], ids=["labels", "onehot"])
def test_softmax_cross_entropy_finite_differences(sparse):
    """dz is the gradient of scale * sum(loss): central differences in float64 (the loss
    is smooth; truncation ~ step^2 |f'''| ~ 1e-12, far below the tolerance)."""
    rng = _rng("fdxent", sparse)
    z = rng.standard_normal((4, 6)) * 2
    labels = rng.integers(0, 6, 4)
    target = labels if sparse else rng.uniform(0, 1, (4, 6))
    scale = 0.37

    def f():
        return scale * float(np.sum(ops.softmax_cross_entropy(z, target, scale=scale)[1]))

    dz = ops.softmax_cross_entropy(z, target, scale=scale)[2]
    assert_fd_close(dz, numerical_gradient(f, z, FD_EPS), "softmax_cross_entropy dz")


def test_softmax_cross_entropy_nan_and_extremes():
    """NaN in a row makes that row NaN, and only that row; huge logits do not overflow."""
    z = np.array([[1.0, np.nan, 0.0], [1000.0, -1000.0, 999.0], [0.0, 0.0, 0.0]])
    probs, loss, dz = ops.softmax_cross_entropy(z, np.array([0, 2, 1]), scale=1.0)
    assert np.isnan(probs[0]).all() and np.isnan(loss[0]) and np.isnan(dz[0]).all()
    assert np.isfinite(probs[1:]).all() and np.isfinite(loss[1:]).all()
    np.testing.assert_allclose(loss[1], 1 + np.log1p(np.exp(-1.0)), rtol=1e-12)
    np.testing.assert_allclose(loss[2], np.log(3.0), rtol=1e-12)


# =========================================================================== batch norm
def _bn_loops(x, axis, gamma, beta, eps, dy):
    """Batch normalization by the textbook formulas, channel by channel in Python floats
    (math.fsum): mean, biased variance, y, and the training-mode gradients."""
    xm = np.moveaxis(x.astype(np.float64), axis, -1).reshape(-1, x.shape[axis])
    gm = np.moveaxis(dy.astype(np.float64), axis, -1).reshape(xm.shape)
    n, c = xm.shape
    mean, var, y, dx = np.zeros(c), np.zeros(c), np.zeros(xm.shape), np.zeros(xm.shape)
    dgamma, dbeta = np.zeros(c), np.zeros(c)
    for j in range(c):
        col, g = [float(v) for v in xm[:, j]], [float(v) for v in gm[:, j]]
        mean[j] = math.fsum(col) / n
        var[j] = math.fsum((v - mean[j]) ** 2 for v in col) / n
        inv = 1.0 / math.sqrt(var[j] + eps)
        xhat = [(v - mean[j]) * inv for v in col]
        for i in range(n):
            y[i, j] = xhat[i] * gamma[j] + beta[j]
        dbeta[j] = math.fsum(g)
        dgamma[j] = math.fsum(gi * hi for gi, hi in zip(g, xhat))
        for i in range(n):   # d/dx of gamma * xhat(x, mean(x), var(x)) + beta
            dx[i, j] = gamma[j] * inv / n * (n * g[i] - dbeta[j] - xhat[i] * dgamma[j])

    def back(a):
        shape = list(x.shape)
        shape.append(shape.pop(axis))
        return np.moveaxis(a.reshape(shape), -1, axis)
    return mean, var, back(y), back(dx), dgamma, dbeta


@pytest.mark.parametrize("dtype", (np.float64, np.float32), ids=("f64", "f32"))
@pytest.mark.parametrize("shape,axis", [((6, 3), -1), ((2, 3, 4, 5), 1), ((2, 4, 3, 3), -1),
                                        ((1, 2), 1), ((7,), 0)], ids=str)
def test_batchnorm_reference_against_loops(shape, axis, dtype):
    rng = _rng("bnloops", shape, axis)
    # an offset mean (5) and unequal spreads per channel
    x = (5 + rng.uniform(-1, 1, shape) * rng.uniform(0.5, 2, shape)).astype(dtype)
    c = shape[axis]
    gamma, beta = rng.uniform(0.5, 2, c).astype(dtype), rng.uniform(-1, 1, c).astype(dtype)
    dy = rng.uniform(-1, 1, shape).astype(dtype)
    eps = 1e-3
    mean, var, ey, edx, edg, edb = _bn_loops(x, axis, gamma, beta, eps, dy)
    got_mean, got_var = ops.batchnorm_stats(x, channel_axis=axis)
    n = x.size // c
    assert_sums_close(got_mean, mean, 6.0, "mean")
    assert_sums_close(got_var, var, 36.0, "var")
    inv = (1 / np.sqrt(got_var + dtype(eps))).astype(dtype)
    y = ops.batchnorm_forward(x, got_mean, inv, gamma, beta, channel_axis=axis)
    assert_sums_close(y, ey, 8.0 * np.sqrt(n), "y")
    dx, dg, db = ops.batchnorm_backward(dy, x, got_mean, inv, gamma, channel_axis=axis)
    scale = 3 * float(np.max(gamma * inv)) * n
    assert_sums_close(dx, edx, scale, "dx")
    assert_sums_close(dg, edg, 8.0 * n, "dgamma")
    assert_sums_close(db, edb, n, "dbeta")


@pytest.mark.parametrize("shape,axis", [((5, 3), -1), ((2, 3, 2, 2), 1), ((3, 2, 2, 2), -1)],
                         ids=str)
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_backward_finite_differences(shape, axis, affine):
    """Training mode: the loss through the batch's own statistics (mean and variance are
    functions of x), differentiated numerically; and inference mode (constants)."""
    rng = _rng("fdbn", shape, axis, affine)
    x = rng.uniform(-1, 1, shape) + 0.5
    c = shape[axis]
    gamma = rng.uniform(0.5, 2, c) if affine else None
    beta = rng.uniform(-1, 1, c) if affine else None
    r = rng.uniform(-1, 1, shape)
    eps = 1e-3

    def forward(training):
        mean, var = ops.batchnorm_stats(x, channel_axis=axis) if training else (m0, v0)
        inv = 1 / np.sqrt(var + eps)
        return ops.batchnorm_forward(x, mean, inv, gamma, beta, channel_axis=axis), mean, inv

    m0, v0 = rng.uniform(-0.5, 0.5, c), rng.uniform(0.2, 1.5, c)   # "moving" statistics
    for training in (True, False):
        _, mean, inv = forward(training)
        dx, dg, db = ops.batchnorm_backward(r, x, mean, inv, gamma, channel_axis=axis,
                                            training=training)

        def loss():
            return float(np.sum(forward(training)[0] * r))

        assert_fd_close(dx, numerical_gradient(loss, x, FD_EPS), f"dx training={training}")
        if affine:
            assert_fd_close(dg, numerical_gradient(loss, gamma, FD_EPS), "dgamma")
            assert_fd_close(db, numerical_gradient(loss, beta, FD_EPS), "dbeta")


# Random123's known-answer vectors for philox4x32 10 (its tests/kat_vectors): counter, key,
# the four words
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def test_philox_known_answers_and_dropout_words():
    from fastnn.backends import numpy_backend
    ctr = np.array([c for c, _, _ in PHILOX_KAT], np.uint32).T
    for j, (c, key, want) in enumerate(PHILOX_KAT):
        assert tuple(_naive.philox4x32_10(c, key)) == want
        got = numpy_backend.philox4x32_10(ctr[:, j:j + 1], key)[:, 0]
        assert tuple(int(v) for v in got) == want
    # the element order, against the loops: across groups of 32, a seed and a block index
    # with high words (the counter's second word)
    for seed in (0, 12345, (7 << 32) + 99, 2**64 - 1):
        words = numpy_backend.dropout_words(75, seed)
        assert words.dtype == np.uint32
        assert [int(w) for w in words] == [_naive.dropout_word(i, seed) for i in range(75)]
    big = 2**36 + 5          # element 5 of group 2^31: block 2^34 + 5, counter words (5, 4)
    assert _naive.dropout_word(big, 3) == _naive.philox4x32_10((5, 4, 0, 0), (3, 0))[0]


def test_dropout_mask_statistics():
    """The reference's masks: values 0 and 1 / (1 - rate) only; the kept fraction within
    5 binomial standard deviations of 1 - rate (fixed seeds: a deterministic test); keeps
    of neighbouring elements uncorrelated likewise; other seeds give other masks."""
    n = 200_000
    with fastnn.use_backend("numpy"):
        for rate in (0.1, 0.5, 0.9):
            for seed in (1, 2**63 + 17):
                m = ops.dropout_mask((n,), rate, seed, np.float64)
                assert set(np.unique(m)) == {0.0, 1 / (1 - rate)}
                keep = m > 0
                p = 1 - rate
                assert abs(keep.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
                for lag in (1, 8, 32):
                    r = np.corrcoef(keep[:-lag], keep[lag:])[0, 1]
                    assert abs(r) < 5 / math.sqrt(n), (rate, seed, lag, r)
        assert (ops.dropout_mask((100,), 0.0, 5, np.float32) == 1).all()
        a = ops.dropout_mask((4000,), 0.5, 1, np.float32)
        assert (a != ops.dropout_mask((4000,), 0.5, 2, np.float32)).any()
        # the same drops in float32 and float64
        assert ((a > 0) == (ops.dropout_mask((4000,), 0.5, 1, np.float64) > 0)).all()
