"""Every instruction-set path of the C backend this CPU can run, forced one by one, against
the NumPy reference: GEMM (all transposes, edge tiles, alpha/beta) and convolution.

Tolerances: float64 rtol 1e-12 relative to the largest |value| of the result; float32
2e-6 * sqrt(K) relative likewise (rounding of K-term dot products in a different order).
"""
import numpy as np
import pytest

import fastnn
from fastnn import ops

try:
    from fastnn.backends import c_backend
    ISAS = c_backend.available_isas()
except ImportError:  # the conftest's backend fixture reports a missing C extension
    c_backend = None
    ISAS = []

pytestmark = pytest.mark.skipif(c_backend is None, reason="C extension not available")


def _tol(dtype, k):
    return 1e-12 if dtype == np.float64 else 2e-6 * np.sqrt(max(k, 1))


@pytest.fixture(params=ISAS)
def isa(request):
    before = c_backend.isa()
    c_backend.set_isa(request.param)
    yield request.param
    c_backend.set_isa(before)


GEMM_CASES = [(1, 1, 1), (5, 3, 2), (13, 33, 17), (12, 32, 256), (25, 65, 300),
              (97, 130, 513), (300, 7, 31)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", GEMM_CASES)
def test_gemm_each_isa(isa, dtype, m, n, k):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
            b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
            c0 = rng.standard_normal((m, n)).astype(dtype)
            c = c0.copy()
            with fastnn.use_backend("c"):
                ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=0.75, beta=-1.5, out=c)
            ref = 0.75 * ((a.T if ta else a).astype(np.float64) @
                          (b.T if tb else b).astype(np.float64)) - 1.5 * c0
            scale = np.abs(ref).max() + 1.0
            assert np.abs(c - ref).max() <= _tol(dtype, k) * scale, (isa, ta, tb)


def test_gemm_beta_zero_ignores_nan(isa):
    a = np.ones((20, 40), np.float32)
    b = np.ones((40, 50), np.float32)
    out = np.full((20, 50), np.nan, np.float32)
    with fastnn.use_backend("c"):
        ops.matmul(a, b, out=out)
    assert np.all(out == 40.0)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_each_isa(isa, layout, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 11, 9, 3)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 7)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    if layout == "NCHW":
        x, w = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    kw = dict(stride=(2, 1), padding="same", dilation=(1, 2), layout=layout)
    with fastnn.use_backend("numpy"):
        y_ref = ops.conv2d_forward(x, w, b, activation="relu", **kw)
        dy = rng.standard_normal(y_ref.shape).astype(dtype)
        grads_ref = ops.conv2d_backward(dy, x, w, **kw)
    with fastnn.use_backend("c"):
        y = ops.conv2d_forward(x, w, b, activation="relu", **kw)
        grads = ops.conv2d_backward(dy, x, w, **kw)
    k = 3 * 2 * 3
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=_tol(dtype, k) * (np.abs(y_ref).max() + 1))
    for g, r in zip(grads, grads_ref):
        np.testing.assert_allclose(g, r, rtol=0,
                                   atol=_tol(dtype, 5 * 11 * 9) * (np.abs(r).max() + 1))


def test_isa_env_and_errors():
    assert c_backend.isa() in c_backend.ISAS
    with pytest.raises(ValueError, match="isa"):
        c_backend.set_isa("sse9")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool,stride,padding", [(2, None, 0), (3, 2, "same"), ((2, 3), 1, 1)])
def test_maxpool_each_isa(isa, dtype, pool, stride, padding):
    """The generic ISA runs the plain (branching) max-pooling loop, the others the
    branch-free channel-block loop: both must agree exactly with the reference, including
    ties (integer-valued data has many), NaN and channel counts around the block size."""
    rng = np.random.default_rng(7)
    for c in (1, 5, 64, 70):
        x = rng.integers(-3, 4, size=(2, 7, 9, c)).astype(dtype)
        x[0, 1, 2, 0] = np.nan
        with fastnn.use_backend("numpy"):
            y_ref, a_ref = ops.maxpool2d_forward(x, pool, stride=stride, padding=padding)
        with fastnn.use_backend("c"):
            y, a = ops.maxpool2d_forward(x, pool, stride=stride, padding=padding)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(a, a_ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,padding,dilation",
                         [(3, 1, 0, 1), (3, 2, "same", 1), ((2, 3), 1, 1, 2), (1, 1, 0, 1)])
def test_col2im_each_isa(isa, dtype, kernel, stride, padding, dilation):
    """NHWC col2im: the generic ISA runs the gather (the reference), the others the
    scatter with contiguous kernel rows; both against the NumPy reference."""
    rng = np.random.default_rng(11)
    for c in (1, 3, 40):
        shape = (3, 7, 9, c)
        cols = ops.im2col(np.zeros(shape, dtype), kernel, stride=stride, padding=padding,
                          dilation=dilation)
        cols = rng.standard_normal(cols.shape).astype(dtype)
        with fastnn.use_backend("numpy"):
            ref = ops.col2im(cols, shape, kernel, stride=stride, padding=padding,
                             dilation=dilation)
        with fastnn.use_backend("c"):
            got = ops.col2im(cols, shape, kernel, stride=stride, padding=padding,
                             dilation=dilation)
        k = np.prod(np.broadcast_to(kernel, 2))
        assert np.abs(got - ref).max() <= _tol(dtype, k) * (np.abs(ref).max() + 1.0)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("shape,filters", [((2, 9, 11, 3), 5), ((3, 8, 8, 16), 40),
                                           ((1, 3, 3, 1024), 7)])   # the last: K-split GEMM
def test_fused_epilogue_changes_no_bit(isa, layout, shape, filters):
    """conv2d_forward applies bias + relu inside the GEMM's tiles; the result must be
    bitwise the unfused convolution followed by bias_act (NaN and -0.0 included)."""
    rng = np.random.default_rng(len(shape) + filters)
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[3]
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        w = rng.standard_normal((filters, c, 3, 3)).astype(np.float32)
    else:
        w = rng.standard_normal((3, 3, c, filters)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    b[0] = np.nan
    axis = -1 if layout == "NHWC" else 1
    with fastnn.use_backend("c"):
        for act in ("relu", None):
            fused = ops.conv2d_forward(x, w, b, layout=layout, activation=act)
            plain = ops.bias_act(ops.conv2d_forward(x, w, layout=layout), b, act,
                                 channel_axis=axis)
            np.testing.assert_array_equal(fused.view(np.int32), plain.view(np.int32))
