"""Property-based comparison of the fast backends with the NumPy reference.

Hypothesis draws valid convolution and pooling problems (batch, H, W, C, F, kernel,
stride, padding form, dilation, layout, dtype) and every available fast backend must
agree with the reference (tolerances from conftest).
"""
from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastnn import ops  # noqa: E402
from conftest import (absmax, assert_close, assert_same, distinct, rand,  # noqa: E402
                      reference, to_layout, weights_to_layout)

SETTINGS = settings(
    max_examples=40, deadline=None, database=None, print_blob=True,
    # the fast_backend fixture only selects the backend: sharing it between examples is
    # exactly what we want
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def window_problems(draw, pooling: bool, direct: bool = False):
    """A valid (x shape, window, stride, padding, dilation, layout, dtype) problem.

    direct: NCHW with stride 1 along w, one to three channels and output rows of 16 or
    more pixels, the problems the C backend's direct NCHW path takes (most of them)."""
    layout = "NCHW" if direct else draw(st.sampled_from(["NHWC", "NCHW"]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(0, 3))
    c = draw(st.integers(1, 3 if direct else 5))
    f = draw(st.integers(1, 9 if direct else 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), 1 if direct else draw(st.integers(1, 3))
    dh, dw = (1, 1) if pooling else (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    mode = draw(st.sampled_from(["valid", "same", "int", "pair", "sides"]))
    # pooling needs every explicit pad < window on that side
    cap_h = kh - 1 if pooling else 3
    cap_w = kw - 1 if pooling else 3
    if mode in ("valid", "same"):
        padding, (pt, pb, pl, pr) = mode, (0, 0, 0, 0)
    elif mode == "int":
        p = draw(st.integers(0, min(cap_h, cap_w)))
        padding, (pt, pb, pl, pr) = p, (p, p, p, p)
    elif mode == "pair":
        ph, pw = draw(st.integers(0, cap_h)), draw(st.integers(0, cap_w))
        padding, (pt, pb, pl, pr) = (ph, pw), (ph, ph, pw, pw)
    else:
        pt, pb = draw(st.integers(0, cap_h)), draw(st.integers(0, cap_h))
        pl, pr = draw(st.integers(0, cap_w)), draw(st.integers(0, cap_w))
        padding = ((pt, pb), (pl, pr))
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if mode == "same":  # "same" pads enough for any size
        hmin = wmin = 1
    else:
        hmin, wmin = max(1, span_h - pt - pb), max(1, span_w - pl - pr)
    h = draw(st.integers(hmin, hmin + 7))
    w = draw(st.integers(wmin + 16, wmin + 40) if direct else st.integers(wmin, wmin + 7))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return dict(n=n, h=h, w=w, c=c, f=f, k=(kh, kw), stride=(sh, sw), padding=padding,
                dilation=(dh, dw), layout=layout, dtype=dtype, seed=seed)


@SETTINGS
@given(p=window_problems(pooling=False), use_b=st.booleans(), relu=st.booleans(),
       need_dx=st.booleans())
def test_conv_matches_reference(fast_backend, p, use_b, relu, need_dx):
    _check_conv(p, use_b, relu, need_dx)


@SETTINGS
@given(p=window_problems(pooling=False, direct=True), use_b=st.booleans(),
       relu=st.booleans(), need_dx=st.booleans())
def test_conv_wide_nchw_rows_match_reference(fast_backend, p, use_b, relu, need_dx):
    _check_conv(p, use_b, relu, need_dx)


def _check_conv(p, use_b, relu, need_dx):
    """Every convolution op on problem p (im2col, col2im, forward, backward) against the
    NumPy reference."""
    rng = np.random.default_rng(p["seed"])
    dtype, layout, (kh, kw) = p["dtype"], p["layout"], p["k"]
    x = to_layout(rand(rng, (p["n"], p["h"], p["w"], p["c"]), dtype), layout)
    w = weights_to_layout(rand(rng, (kh, kw, p["c"], p["f"]), dtype), layout)
    b = rand(rng, (p["f"],), dtype) if use_b else None
    act = "relu" if relu else None
    geo = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"], layout=layout)

    cols = ops.im2col(x, (kh, kw), **geo)
    assert_same(cols, reference(ops.im2col, x, (kh, kw), **geo), what="im2col")
    dcols = rand(rng, cols.shape, dtype)
    assert_close(ops.col2im(dcols, x.shape, (kh, kw), **geo),
                 reference(ops.col2im, dcols, x.shape, (kh, kw), **geo), k=kh * kw,
                 scale=absmax(dcols), what="col2im")

    k_fwd = kh * kw * p["c"] + 1
    y = ops.conv2d_forward(x, w, b, activation=act, **geo)
    ry = reference(ops.conv2d_forward, x, w, b, activation=act, **geo)
    assert_close(y, ry, k=k_fwd, scale=absmax(x) * absmax(w) + absmax(b), what="conv fwd")

    dy = rand(rng, y.shape, dtype)
    got = ops.conv2d_backward(dy, x, w, need_dx=need_dx, **geo)
    ref = reference(ops.conv2d_backward, dy, x, w, need_dx=need_dx, **geo)
    ohow = cols.shape[0]  # N*OH*OW: the length of the dw and db reductions
    if need_dx:
        assert_close(got[0], ref[0], k=kh * kw * p["f"], scale=absmax(dy) * absmax(w),
                     what="conv dx")
    else:
        assert got[0] is None
    assert_close(got[1], ref[1], k=ohow, scale=absmax(dy) * absmax(x), what="conv dw")
    assert_close(got[2], ref[2], k=ohow, scale=absmax(dy), what="conv db")


@SETTINGS
@given(p=window_problems(pooling=True), default_stride=st.booleans())
def test_pool_matches_reference(fast_backend, p, default_stride):
    rng = np.random.default_rng(p["seed"])
    dtype, layout, pool = p["dtype"], p["layout"], p["k"]
    stride = None if default_stride else p["stride"]
    kw = dict(stride=stride, padding=p["padding"], layout=layout)
    shape = (p["n"], p["h"], p["w"], p["c"])
    g = ops.conv_geometry(to_layout(np.empty(shape), layout).shape, pool,
                          pool if stride is None else stride, p["padding"], layout=layout,
                          pooling=True)
    nmax = -(-g.kh // g.sh) * -(-g.kw // g.sw)  # most windows covering one element

    x = to_layout(distinct(rng, shape, dtype), layout)  # no accidental ties
    y, am = ops.maxpool2d_forward(x, pool, **kw)
    ry, ram = reference(ops.maxpool2d_forward, x, pool, **kw)
    assert_same(y, ry, what="maxpool y")
    assert_same(am, ram, what="maxpool argmax")
    dy = rand(rng, y.shape, dtype)
    assert_close(ops.maxpool2d_backward(dy, am, x.shape, pool, **kw),
                 reference(ops.maxpool2d_backward, dy, ram, x.shape, pool, **kw),
                 k=nmax, scale=absmax(dy), what="maxpool dx")

    xa = to_layout(rand(rng, shape, dtype), layout)
    assert_close(ops.avgpool2d_forward(xa, pool, **kw),
                 reference(ops.avgpool2d_forward, xa, pool, **kw),
                 k=g.kh * g.kw, scale=absmax(xa), what="avgpool y")
    assert_close(ops.avgpool2d_backward(dy, x.shape, pool, **kw),
                 reference(ops.avgpool2d_backward, dy, x.shape, pool, **kw),
                 k=nmax, scale=absmax(dy), what="avgpool dx")
