"""Every public op of fastnn.ops, on every backend, against the NumPy reference backend.

Cases are curated lists (not cartesian products) covering batch 1, sizes 1, primes and
odd tails, strides 1-3, every padding form, dilation 1-2, both layouts and both dtypes.
Tolerances come from conftest (see the comment on TOLERANCES there).
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

import fastnn
from fastnn import _backend, ops
from conftest import (DTYPES, absmax, assert_bitwise, assert_close, assert_same, distinct,
                      rand, reference, require_backend, to_layout, tolerance,
                      weights_to_layout, x_shape_in)

LAYOUTS = ("NHWC", "NCHW")
DT_IDS = ["f32", "f64"]


def _rng(*key) -> np.random.Generator:
    """A generator seeded by the test case (stable across runs and processes)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


# =========================================================================== matmul
MATMUL_SHAPES = [  # (M, N, K)
    (1, 1, 1), (1, 7, 17), (7, 1, 17), (17, 7, 1), (1, 300, 64), (300, 1, 7),
    (7, 17, 129), (64, 64, 64), (129, 17, 7), (17, 129, 300), (300, 64, 17),
    (129, 129, 129),
    # a short K with many whole column panels: the C backend reads a row-major A in place
    (260, 160, 9), (400, 288, 48),
    # several row tiles, column blocks and depth blocks in every backend (the Numba
    # backend's tiles are 120 x 256 x 512 for float32, 120 x 128 x 512 for float64)
    (250, 300, 600),
]
TRANS = [(False, False), (True, False), (False, True), (True, True)]


def _mm_operands(rng, m, n, k, ta, tb, dtype):
    a = rand(rng, (k, m) if ta else (m, k), dtype)
    b = rand(rng, (n, k) if tb else (k, n), dtype)
    return a, b


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ta,tb", TRANS, ids=["NN", "TN", "NT", "TT"])
@pytest.mark.parametrize("m,n,k", MATMUL_SHAPES, ids=lambda v: str(v))
def test_matmul(backend, m, n, k, ta, tb, dtype):
    rng = _rng("mm", m, n, k, ta, tb)
    a, b = _mm_operands(rng, m, n, k, ta, tb, dtype)
    got = ops.matmul(a, b, trans_a=ta, trans_b=tb)
    ref = reference(ops.matmul, a, b, trans_a=ta, trans_b=tb)
    assert_close(got, ref, k=k, scale=absmax(a) * absmax(b), what=f"matmul {m}x{n}x{k}")


ALPHA_BETA = [(1.0, 0.0), (0.5, 0.0), (-2.0, 0.0), (1.0, 1.0), (-1.5, 0.25), (2.0, -1.0),
              (0.0, 3.0), (0.0, 0.0)]


def test_matmul_alpha_beta_round_as_the_reference(backend):
    """alpha * product + beta * c is two roundings, as in the reference: a fused multiply-add
    (the Numba GEMM's write-out compiled with 'contract') gave 3e38 where the reference
    overflows to inf."""
    one = np.ones((1, 1), np.float32)
    with np.errstate(over="ignore"):   # (the reference's NumPy says it overflowed)
        got = ops.matmul(one, np.full((1, 1), 3e38, np.float32), alpha=2.0, beta=1.0,
                         out=np.full((1, 1), -3e38, np.float32))
    assert np.isposinf(got[0, 0])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("alpha,beta", ALPHA_BETA, ids=lambda v: str(v))
@pytest.mark.parametrize("m,n,k,ta,tb", [(17, 7, 64, False, True), (64, 129, 7, True, False),
                                         (1, 300, 17, True, True)], ids=lambda v: str(v))
def test_matmul_alpha_beta_out(backend, m, n, k, ta, tb, alpha, beta, dtype):
    rng = _rng("mmab", m, n, k, alpha, beta)
    a, b = _mm_operands(rng, m, n, k, ta, tb, dtype)
    c0 = rand(rng, (m, n), dtype)
    out = c0.copy()
    got = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, out=out)
    assert got is out, "matmul must write out in place and return it"
    ref = reference(ops.matmul, a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta,
                    out=c0.copy())
    scale = abs(alpha) * absmax(a) * absmax(b) + abs(beta) * absmax(c0)
    assert_close(got, ref, k=k + 1, scale=scale, what="matmul alpha/beta/out")
    # without out, beta multiplies a zero matrix
    got2 = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
    ref2 = reference(ops.matmul, a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
    assert_close(got2, ref2, k=k, scale=abs(alpha) * absmax(a) * absmax(b) + 1e-30,
                 what="matmul alpha/beta no out")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 17, 64), (129, 7, 17), (64, 300, 1),
                                   (5, 4, 0)], ids=lambda v: str(v))
def test_matmul_beta0_ignores_nan_in_out(backend, m, n, k, dtype):
    rng = _rng("mmnan", m, n, k)
    a, b = _mm_operands(rng, m, n, k, False, False, dtype)
    for fill in (np.nan, np.inf):
        out = np.full((m, n), fill, dtype=dtype)
        got = ops.matmul(a, b, alpha=1.5, beta=0.0, out=out)
        assert got is out
        assert np.all(np.isfinite(got)), f"beta=0 must not read out (old value {fill})"
        ref = reference(ops.matmul, a, b, alpha=1.5)
        assert_close(got, ref, k=k, scale=1.5 * absmax(a) * absmax(b), what="beta=0 NaN out")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_matmul_accumulates_repeatedly(backend, dtype):
    rng = _rng("mmacc")
    out = np.zeros((17, 33), dtype)
    ref = np.zeros((17, 33), dtype)
    for step in range(3):
        a, b = rand(rng, (17, 65), dtype), rand(rng, (65, 33), dtype)
        ops.matmul(a, b, beta=1.0, out=out)
        reference(ops.matmul, a, b, beta=1.0, out=ref)
    assert_close(out, ref, k=3 * 65, scale=1.0, what="repeated accumulation")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_matmul_noncontiguous(backend, dtype):
    rng = _rng("mmnc")
    big_a = rand(rng, (40, 70), dtype)
    big_b = rand(rng, (90, 30), dtype)
    cases = [
        (big_a[::2, ::3], big_b[::-1][:24, ::2], False, False),    # stepped, reversed
        (big_a.T[::-1, 1:18], big_b[::-1][:70, 5:22], True, False),  # transposed, reversed
        (np.asfortranarray(big_a[:17, :29]), big_b[:17, :29][::-1], False, True),  # F order
    ]
    for a, b, ta, tb in cases:
        assert not (a.flags.c_contiguous and b.flags.c_contiguous)
        got = ops.matmul(a, b, trans_a=ta, trans_b=tb)
        ref = reference(ops.matmul, np.ascontiguousarray(a), np.ascontiguousarray(b),
                        trans_a=ta, trans_b=tb)
        k = a.shape[0] if ta else a.shape[1]
        assert_close(got, ref, k=k, what="matmul non-contiguous")
    # a non-contiguous out is written in place (through a copy) and accumulated into
    a, b = rand(rng, (13, 9), dtype), rand(rng, (9, 11), dtype)
    holder = rand(rng, (11, 13), dtype)
    out = holder.T  # F-contiguous view, shape (13, 11)
    before = out.copy()
    got = ops.matmul(a, b, beta=0.5, out=out)
    assert got is out
    ref = reference(ops.matmul, a, b, beta=0.5, out=before.copy())
    assert_close(holder.T, ref, k=10, what="matmul non-contiguous out")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("beta", [0.0, 0.5])
@pytest.mark.parametrize("ta,tb", TRANS, ids=["NN", "TN", "NT", "TT"])
def test_matmul_transposed_views_not_copied(backend, ta, tb, beta, dtype, monkeypatch):
    """``matmul(d, W.T)``, the from-scratch backward's idiom: an F-contiguous operand (or
    out) reaches the backend as the C-contiguous array it views, transpose flag flipped."""
    from fastnn import _backend
    rng = _rng("mmT", ta, tb, beta)
    m, n, k = 13, 70, 33
    a_base, b_base = _mm_operands(rng, m, n, k, not ta, not tb, dtype)  # passed as .T
    out_base = rand(rng, (n, m), dtype)
    ref = reference(ops.matmul, np.ascontiguousarray(a_base.T),
                    np.ascontiguousarray(b_base.T), trans_a=ta, trans_b=tb, alpha=1.5,
                    beta=beta, out=np.ascontiguousarray(out_base.T))
    seen = []
    module = _backend.get()
    real = module.gemm
    monkeypatch.setattr(module, "gemm", lambda *args: seen.append(args) or real(*args))
    out = out_base.T
    got = ops.matmul(a_base.T, b_base.T, trans_a=ta, trans_b=tb, alpha=1.5, beta=beta,
                     out=out)
    assert got is out
    assert_close(out, ref, k=k + 1, what=f"matmul of transposed views ta={ta} tb={tb}")
    (call,) = seen
    operands, c = (call[3], call[4]), call[6]
    assert np.shares_memory(c, out_base), "out was copied"
    assert {id(x.base if x.base is not None else x) for x in operands} == \
        {id(a_base), id(b_base)}, "an operand was copied"
    assert all(x.flags.c_contiguous for x in (*operands, c))
    # the error message names the flags as passed, not the flipped ones
    with pytest.raises(ValueError, match=f"trans_a={ta}, trans_b={tb}"):
        ops.matmul(a_base.T, np.asfortranarray(np.ones((n, k - 1) if tb else (k - 1, n),
                                                       dtype)), trans_a=ta, trans_b=tb)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_matmul_out_aliases_input(backend, beta, dtype):
    """``out`` may be (a view of) an input: the result is as if the inputs were copied."""
    rng = _rng("mmalias", beta)
    k = 33
    for which, ta, tb in (("a", False, False), ("b", False, False), ("a", True, False),
                          ("b", False, True), ("ab", False, True)):
        a0, b0 = rand(rng, (k, k), dtype), rand(rng, (k, k), dtype)
        ref = reference(ops.matmul, a0, b0.copy() if which != "ab" else a0, trans_a=ta,
                        trans_b=tb, alpha=0.5, beta=beta,
                        out=(a0 if which in ("a", "ab") else b0).copy())
        a, b = a0.copy(), b0.copy()
        if which == "ab":
            b = a
        out = a if which in ("a", "ab") else b
        got = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=0.5, beta=beta, out=out)
        assert got is out
        assert_close(got, ref, k=k + 1, what=f"matmul out is {which} (ta={ta}, tb={tb})")
    # out is a transposed view of a
    a0, b0 = rand(rng, (k, k), dtype), rand(rng, (k, k), dtype)
    ref = reference(ops.matmul, a0, b0, beta=beta, out=a0.T.copy())
    a = a0.copy()
    got = ops.matmul(a, b0, beta=beta, out=a.T)
    assert_close(a.T, ref, k=k + 1, what="matmul out is a.T")
    assert got.base is a or got is a.T or np.shares_memory(got, a)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_matmul_empty(backend, dtype):
    a = np.zeros((0, 5), dtype)
    b = np.ones((5, 3), dtype)
    assert ops.matmul(a, b).shape == (0, 3)
    assert ops.matmul(b.T, a.T).shape == (3, 0)
    got = ops.matmul(np.ones((4, 0), dtype), np.ones((0, 6), dtype))
    assert_same(got, np.zeros((4, 6), dtype), what="K=0")
    out = np.full((4, 6), 2.0, dtype)
    ops.matmul(np.ones((4, 0), dtype), np.ones((0, 6), dtype), beta=0.5, out=out)
    assert_same(out, np.ones((4, 6), dtype), what="K=0 beta=0.5")


# =========================================================================== conv cases
# (id, N, H, W, C, F, kernel, stride, padding, dilation)
CONV_CASES = [
    ("1px", 1, 1, 1, 1, 1, 1, 1, "valid", 1),
    ("3x3_valid", 2, 7, 7, 3, 4, 3, 1, "valid", 1),
    ("3x3_same", 2, 7, 5, 3, 5, 3, 1, "same", 1),
    ("3x3_s2_same_odd", 1, 9, 11, 2, 3, 3, 2, "same", 1),
    ("s3_pad1", 3, 10, 8, 3, 2, 3, 3, 1, 1),
    ("rect_k_pairs", 2, 8, 9, 4, 3, (2, 3), (1, 2), (1, 2), 1),
    ("asym_pad", 2, 6, 7, 3, 4, 3, 1, ((1, 0), (0, 2)), 1),
    ("dil2_valid", 1, 9, 9, 2, 3, 3, 1, "valid", 2),
    ("dil2_s2_same", 2, 10, 9, 3, 2, 3, 2, "same", 2),
    ("dil_rect_asym", 1, 8, 10, 3, 2, (2, 3), (2, 1), ((0, 1), (2, 0)), (2, 1)),
    ("k_eq_input", 2, 5, 4, 3, 7, (5, 4), 1, "valid", 1),
    ("primes", 3, 13, 11, 5, 7, 5, 2, 2, 1),
    ("k_gt_input_padded", 1, 2, 2, 1, 2, 3, 1, 1, 1),
    ("1x1_wide_c", 1, 4, 4, 17, 3, 1, 1, 0, 1),
    ("stride_gt_k", 2, 11, 11, 2, 3, 2, 3, "valid", 1),
    ("even_k_same_s1", 1, 6, 5, 2, 3, (2, 4), 1, "same", 1),
    ("f1_c1", 2, 9, 7, 1, 1, 3, 2, ((2, 1), (1, 2)), 2),
    ("tail_c_f", 1, 6, 6, 7, 9, 3, 1, "same", 1),
    # kernel rows of KW*C = 3, 6, 8 and 2 elements inside the image (im2col's constant-length
    # runs), with a padded top row in the last but one
    ("c1_3x3_valid", 2, 8, 7, 1, 3, 3, 1, "valid", 1),
    ("c2_3x3_s2_valid", 1, 9, 9, 2, 2, 3, 2, "valid", 1),
    ("c4_2x2_top_pad", 1, 6, 5, 4, 2, 2, 1, ((1, 0), (0, 0)), 1),
    ("c2_1x1_s2", 1, 5, 5, 2, 3, 1, 2, "valid", 1),
    # one channel, few filters, rows of 16 pixels and more: NHWC on the direct NCHW row
    # kernels in the C backend (conv.c's use_c1_direct)
    ("c1_5x5_same_f6_wide", 2, 17, 20, 1, 6, 5, 1, "same", 1),
    ("c1_3x3_s2x1_dil_f8_wide", 1, 12, 22, 1, 8, 3, (2, 1), (1, 0), (1, 2)),
]
CONV_IDS = [c[0] for c in CONV_CASES]


def _conv_case(case, layout, dtype):
    cid, n, h, w, c, f, k, s, p, d = case
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = _rng("conv", cid, layout, np.dtype(dtype).name)
    x = to_layout(rand(rng, (n, h, w, c), dtype), layout)
    wt = weights_to_layout(rand(rng, (kh, kw, c, f), dtype), layout)
    b = rand(rng, (f,), dtype)
    geo = dict(stride=s, padding=p, dilation=d, layout=layout)
    return rng, x, wt, b, (kh, kw), geo, (n, c, f)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_im2col(backend, case, layout, dtype):
    _, x, _, _, ks, geo, _ = _conv_case(case, layout, dtype)
    got = ops.im2col(x, ks, **geo)
    ref = reference(ops.im2col, x, ks, **geo)
    assert_same(got, ref, what="im2col")  # pure data movement: exact


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_col2im(backend, case, layout, dtype):
    rng, x, _, _, ks, geo, _ = _conv_case(case, layout, dtype)
    g = ops.conv_geometry(x.shape, ks, geo["stride"], geo["padding"], geo["dilation"],
                          layout=layout)
    cols = rand(rng, (g.rows, g.patch), dtype)
    got = ops.col2im(cols, x.shape, ks, **geo)
    ref = reference(ops.col2im, cols, x.shape, ks, **geo)
    # each input element sums at most KH*KW column entries
    assert_close(got, ref, k=g.kh * g.kw, scale=absmax(cols), what="col2im")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONV_CASES[:6], ids=CONV_IDS[:6])
def test_col2im_is_adjoint_of_im2col(backend, case, layout, dtype):
    """<im2col(x), cols> == <x, col2im(cols)> on the backend itself (no reference)."""
    rng, x, _, _, ks, geo, _ = _conv_case(case, layout, dtype)
    cols = rand(rng, ops.im2col(x, ks, **geo).shape, dtype)
    lhs = float(np.sum(ops.im2col(x, ks, **geo).astype(np.float64) * cols))
    rhs = float(np.sum(x.astype(np.float64) * ops.col2im(cols, x.shape, ks, **geo)))
    # both sides sum cols.size products of at most max|x| * max|cols|
    np.testing.assert_allclose(lhs, rhs, **tolerance(dtype, k=cols.size,
                                                     scale=absmax(x) * absmax(cols)))


EPILOGUES = {"plain": (False, None), "bias_relu": (True, "relu")}


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("epilogue", list(EPILOGUES))
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_forward(backend, case, epilogue, layout, dtype):
    _, x, w, b, _, geo, (n, c, f) = _conv_case(case, layout, dtype)
    use_b, act = EPILOGUES[epilogue]
    bb = b if use_b else None
    got = ops.conv2d_forward(x, w, bb, activation=act, **geo)
    ref = reference(ops.conv2d_forward, x, w, bb, activation=act, **geo)
    kh, kw = (w.shape[0], w.shape[1]) if layout == "NHWC" else (w.shape[2], w.shape[3])
    assert_close(got, ref, k=kh * kw * c + 1, scale=absmax(x) * absmax(w) + absmax(bb),
                 what=f"conv2d_forward {epilogue}")
    if act == "relu":
        assert np.all(got >= 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act,use_b", [(None, True), ("relu", True), (None, False),
                                        ("relu", False)])
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_maxpool_forward(backend, case, act, use_b, layout, dtype):
    """The fused convolution + 2x2 pooling gives the bits of the two calls (the C backend
    fuses NHWC on AVX2), with and without a bias, ties and NaN included: relu makes
    all-zero windows, and one input is NaN."""
    _, x, w, b, _, geo, _ = _conv_case(case, layout, dtype)
    x.flat[x.size // 3] = np.nan
    b = b if use_b else None
    z = ops.conv2d_forward(x, w, b, activation=act, **geo)
    sp = z.shape[1:3] if layout == "NHWC" else z.shape[2:]
    if min(sp) < 2:
        with pytest.raises(ValueError, match="convolution's output"):
            ops.conv2d_maxpool_forward(x, w, b, activation=act, **geo)
        return
    y_ref, a_ref = ops.maxpool2d_forward(z, 2, layout=layout)
    y, a = ops.conv2d_maxpool_forward(x, w, b, activation=act, **geo)
    assert y.dtype == dtype and y.shape == y_ref.shape and a.dtype == np.int64
    assert y.tobytes() == y_ref.tobytes()
    np.testing.assert_array_equal(a, a_ref)
    # written into given arrays, as maxpool2d_forward's out
    outs = (np.full_like(y, 7), np.full_like(a, -1))
    got = ops.conv2d_maxpool_forward(x, w, b, activation=act, out=outs, **geo)
    assert got[0] is outs[0] and got[1] is outs[1]
    assert outs[0].tobytes() == y_ref.tobytes()
    np.testing.assert_array_equal(outs[1], a_ref)
    # crop=True: the same windows, argmax into the (2 * (OH // 2), 2 * (OW // 2)) crop
    yc, ac = ops.conv2d_maxpool_forward(x, w, b, activation=act, crop=True, **geo)
    assert yc.tobytes() == y_ref.tobytes()
    sample, crop = z.shape[1:], list(z.shape[1:])
    for axis in ((0, 1) if layout == "NHWC" else (1, 2)):
        crop[axis] = crop[axis] // 2 * 2
    np.testing.assert_array_equal(
        ac, np.ravel_multi_index(np.unravel_index(a_ref, sample), crop))
    # argmax_format="window": each maximum's position in its window, one byte
    rows, cols = np.unravel_index(a_ref, sample)[slice(0, 2) if layout == "NHWC" else
                                                  slice(1, 3)]
    want = (2 * (rows % 2) + cols % 2).astype(np.uint8)
    for crop in (False, True):
        outs = (np.full_like(y, 7), np.full(y.shape, 9, np.uint8))
        for out in (None, outs):
            yw, aw = ops.conv2d_maxpool_forward(x, w, b, activation=act, crop=crop, out=out,
                                                argmax_format="window", **geo)
            assert aw.dtype == np.uint8 and (out is None or aw is outs[1])
            assert yw.tobytes() == y_ref.tobytes()
            np.testing.assert_array_equal(aw, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("crop,need_dx,need_db", [(False, True, True), (True, True, False),
                                                  (False, False, True), (True, False, True),
                                                  (True, False, False)])
@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 2, 3, 9, 11, 18, 20, 22, 23)],
                         ids=[CONV_IDS[i] for i in (1, 2, 3, 9, 11, 18, 20, 22, 23)])
def test_conv2d_maxpool_backward(backend, case, crop, need_dx, need_db, layout, dtype):
    """The gradients of the convolution + 2x2 pooling from the pooled gradient and argmax
    (the C backend, NHWC without dx: straight from them) against the reference's
    maxpool2d_backward then conv2d_backward; a NaN in dy stays on its pixel's products."""
    rng, x, w, b, _, geo, (n, c, f) = _conv_case(case, layout, dtype)
    z = reference(ops.conv2d_forward, x, w, b, activation="relu", **geo)
    sp = z.shape[1:3] if layout == "NHWC" else z.shape[2:]
    if min(sp) < 2:
        return
    y, am = ops.conv2d_maxpool_forward(x, w, b, activation="relu", crop=crop, **geo)
    dy = rand(rng, y.shape, dtype)
    dy.flat[dy.size // 2] = np.nan
    zc = (2 * (sp[0] // 2), 2 * (sp[1] // 2)) if crop else sp
    zshape = z.shape[:1] + zc + z.shape[3:] if layout == "NHWC" else z.shape[:2] + zc
    dz = reference(ops.maxpool2d_backward, dy, am, zshape, 2, layout=layout)
    ref = reference(ops.conv2d_backward, dz, x, w, crop=crop, need_dx=need_dx,
                    need_db=need_db, **geo)
    got = ops.conv2d_maxpool_backward(dy, am, x, w, crop=crop, need_dx=need_dx,
                                      need_db=need_db, **geo)
    # from the window positions: the same bits
    _, pos = ops.conv2d_maxpool_forward(x, w, b, activation="relu", crop=crop,
                                        argmax_format="window", **geo)
    for g, r in zip(ops.conv2d_maxpool_backward(dy, pos, x, w, crop=crop, need_dx=need_dx,
                                                need_db=need_db, **geo), got):
        assert (g is None and r is None) or g.tobytes() == r.tobytes()
    kh, kw = (w.shape[0], w.shape[1]) if layout == "NHWC" else (w.shape[2], w.shape[3])
    k = n * zc[0] * zc[1]
    for name, g, r, kk, scale in (("dx", got[0], ref[0], kh * kw * f, absmax(dy) * absmax(w)),
                                  ("dw", got[1], ref[1], k, absmax(dy) * absmax(x)),
                                  ("db", got[2], ref[2], k, absmax(dy))):
        if r is None:
            assert g is None, name
        else:
            assert np.isnan(r).any() and np.isfinite(r).any(), name
            assert_close(g, r, k=kk, scale=scale, what=f"conv2d_maxpool_backward {name}")
    # an empty batch: dw (and db) zero
    _, dw0, _ = ops.conv2d_maxpool_backward(dy[:0], am[:0], x[:0], w, crop=crop,
                                            out=(None, np.full_like(w, 7), None), **geo)
    assert dw0.shape == w.shape and not dw0.any()


# NHWC, 8+ input channels (where the fast backends take each pooled gradient's products
# with its argmax pixel only): f over one 64-filter mask, padding, strides, dilation, odd
# outputs (the crop), a 1x1 kernel.
POOL_SPARSE = [((5, 13, 13, 8), (3, 3, 8, 16), 1, "valid", 1),
               ((3, 12, 11, 8), (3, 3, 8, 70), 1, "same", 1),
               ((3, 15, 14, 16), (3, 3, 16, 9), (2, 1), ((1, 0), (2, 1)), (1, 2)),
               ((2, 10, 10, 12), (1, 1, 12, 5), 1, "valid", 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("crop", [True, False])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation", POOL_SPARSE)
def test_conv2d_maxpool_backward_sparse(fast_backend, xs, ws, stride, padding, dilation,
                                        crop, dtype):
    """dx, dw, db from the pooled gradient with relu's zeros in it and a NaN, against the
    reference's scatter then conv2d_backward, with argmax into the crop or (odd outputs)
    into the whole output; bits independent of the thread count."""
    rng = _rng("pool-sparse", xs, ws)
    x, w, b = rand(rng, xs, dtype), rand(rng, ws, dtype), rand(rng, ws[3:], dtype)
    geo = dict(stride=stride, padding=padding, dilation=dilation, crop=crop)
    y, am = reference(ops.conv2d_maxpool_forward, x, w, b, activation="relu", **geo)
    dy = rand(rng, y.shape, dtype) * (y > 0)
    dy.flat[dy.size // 3] = np.nan
    z = reference(ops.conv2d_forward, x, w, **{k: v for k, v in geo.items() if k != "crop"})
    zshape = (xs[0], 2 * y.shape[1], 2 * y.shape[2], ws[3]) if crop else z.shape
    dz = reference(ops.maxpool2d_backward, dy, am, zshape, 2)
    ref = reference(ops.conv2d_backward, dz, x, w, **geo)
    pos = reference(ops.conv2d_maxpool_forward, x, w, b, activation="relu",
                    argmax_format="window", **geo)[1]
    before = fastnn.get_num_threads()
    try:
        got = [ops.conv2d_maxpool_backward(dy, am, x, w, **geo)]
        fastnn.set_num_threads(1)
        got.append(ops.conv2d_maxpool_backward(dy, am, x, w, **geo))
        got.append(ops.conv2d_maxpool_backward(dy, pos, x, w, **geo))  # window positions
    finally:
        fastnn.set_num_threads(before)
    k = xs[0] * zshape[1] * zshape[2]
    for name, g, r, kk, scale in (
            ("dx", got[0][0], ref[0], ws[0] * ws[1] * ws[3], absmax(dy) * absmax(w)),
            ("dw", got[0][1], ref[1], k, absmax(dy) * absmax(x)),
            ("db", got[0][2], ref[2], k, absmax(dy))):
        assert np.isnan(r).any() and np.isfinite(r).any(), name
        assert_close(g, r, k=kk, scale=scale, what=f"conv2d_maxpool_backward {name}")
    for a, c, p in zip(*got):
        assert_bitwise(a, c)
        assert_bitwise(a, p)
    # Numba (its sparse kernel takes every geometry here): a flat argmax in range that the
    # forward never gives is ignored, as a zero gradient there: another window's pixel,
    # and its own window's pixel under another filter. (The C backend's fused kernels do
    # the same, test_c_isa.py; where they do not take the geometry, as the 1x1 kernel
    # with dx, it runs the two calls, whose scatter puts the gradient where argmax points.)
    if fast_backend != "numba":
        return
    dy = rand(rng, y.shape, dtype)
    f = ws[3]
    bad, keep = am.copy(), dy.copy()
    bad[0, 0, 0, 0] = am[0, -1, -1, 0]          # the last window's pixel, in window (0, 0)
    bad[0, 0, 0, f - 1] = am[0, 0, 0, f - 1] - 1   # window (0, 0)'s pixel, filter f - 2's
    keep[0, 0, 0, 0] = keep[0, 0, 0, f - 1] = 0
    got = ops.conv2d_maxpool_backward(dy, bad, x, w, **geo)
    want = ops.conv2d_maxpool_backward(keep, am, x, w, **geo)
    assert_close(got[0], want[0], k=ws[0] * ws[1] * ws[3], scale=absmax(dy) * absmax(w),
                 what="dx, argmax outside its window")
    assert_close(got[1], want[1], k=k, scale=absmax(dy) * absmax(x),
                 what="dw, argmax outside its window")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("xs,ws,padding", [((7, 12, 11, 1), (3, 3, 1, 32), "valid"),
                                           ((5, 9, 9, 3), (3, 3, 3, 10), "same"),
                                           ((3, 13, 20, 1), (5, 5, 1, 6), "same")])
def test_conv2d_maxpool_backward_few_channels(fast_backend, xs, ws, padding, dtype):
    """dw and db from the pooled gradient with fewer than 8 input channels and no dx (the
    first layer: the Numba backend's direct pooled dW, the C backend's rows kernel, and
    with one channel and few filters its direct row kernels on unpooled planes) against the reference's scatter then conv2d_backward, a NaN in dy included; bits
    independent of the thread count; an argmax outside its window reaches nothing."""
    rng = _rng("pool-few", xs, ws)
    x, w, b = rand(rng, xs, dtype), rand(rng, ws, dtype), rand(rng, ws[3:], dtype)
    y, am = reference(ops.conv2d_maxpool_forward, x, w, b, activation="relu",
                      padding=padding, crop=True)
    dy = rand(rng, y.shape, dtype) * (y > 0)
    dy.flat[dy.size // 3] = np.nan
    zshape = (xs[0], 2 * y.shape[1], 2 * y.shape[2], ws[3])
    dz = reference(ops.maxpool2d_backward, dy, am, zshape, 2)
    ref = reference(ops.conv2d_backward, dz, x, w, padding=padding, crop=True, need_dx=False)
    pos = reference(ops.conv2d_maxpool_forward, x, w, b, activation="relu",
                    padding=padding, crop=True, argmax_format="window")[1]
    before = fastnn.get_num_threads()
    try:
        got = [ops.conv2d_maxpool_backward(dy, am, x, w, padding=padding, crop=True,
                                           need_dx=False)]
        fastnn.set_num_threads(1)
        got.append(ops.conv2d_maxpool_backward(dy, am, x, w, padding=padding, crop=True,
                                               need_dx=False))
        got.append(ops.conv2d_maxpool_backward(dy, pos, x, w, padding=padding, crop=True,
                                               need_dx=False))   # window positions
    finally:
        fastnn.set_num_threads(before)
    k = xs[0] * zshape[1] * zshape[2]
    assert got[0][0] is None
    for name, g, r, scale in (("dw", got[0][1], ref[1], absmax(dy) * absmax(x)),
                              ("db", got[0][2], ref[2], absmax(dy))):
        assert np.isnan(r).any() and np.isfinite(r).any(), name
        assert_close(g, r, k=k, scale=scale, what=f"conv2d_maxpool_backward {name}")
    for a, c, p in zip(got[0][1:], got[1][1:], got[2][1:]):
        assert_bitwise(a, c)
        assert_bitwise(a, p)
    # an argmax in range but outside its window is ignored: as a zero gradient there
    dy = rand(rng, y.shape, dtype)
    bad, keep = am.copy(), dy.copy()
    bad[0, 0, 0, 3] = bad[0, 2, 2, 3]     # window (2, 2)'s pixel, in window (0, 0)
    bad[1, 1, 0, 5] = 5                   # pixel 0's filter 5, another window's
    keep[0, 0, 0, 3] = keep[1, 1, 0, 5] = 0
    got = ops.conv2d_maxpool_backward(dy, bad, x, w, padding=padding, crop=True,
                                      need_dx=False, need_db=False)
    want = ops.conv2d_maxpool_backward(keep, am, x, w, padding=padding, crop=True,
                                       need_dx=False, need_db=False)
    assert_close(got[1], want[1], k=k, scale=absmax(dy) * absmax(x),
                 what="argmax outside its window")


@pytest.mark.parametrize("f", [6, 9])
def test_conv2d_maxpool_backward_skips_the_odd_edge(fast_backend, f):
    """An inf in x read only by the convolution's odd last column, which no pooling window
    reads (crop=False): the fast backends' fused backward never forms that column, so dw
    stays finite (the reference's dense backward gives NaN from 0 * inf); 6 filters take
    the C backend's direct row kernels on planes, 9 its implicit dW."""
    rng = np.random.default_rng(31)
    x = rng.standard_normal((2, 20, 21, 1))
    w = rng.standard_normal((5, 5, 1, f))
    x[0, 3, 20, 0] = np.inf                  # output (16, 17): column 16 alone reads it
    y, am = ops.conv2d_maxpool_forward(x, w)
    finite = x.copy()
    finite[0, 3, 20, 0] = 0
    for a in (am, ops.conv2d_maxpool_forward(x, w, argmax_format="window")[1]):
        _, dw, db = ops.conv2d_maxpool_backward(np.ones_like(y), a, x, w, need_dx=False)
        _, dw0, db0 = ops.conv2d_maxpool_backward(np.ones_like(y), a, finite, w,
                                                  need_dx=False)
        np.testing.assert_array_equal(dw, dw0)
        np.testing.assert_array_equal(db, db0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("xs,ws", [((3, 12, 11, 1), (3, 3, 1, 32)), ((2, 9, 9, 8), (3, 3, 8, 12))])
def test_conv2d_maxpool_window_positions_out_of_range(fast_backend, xs, ws, dtype):
    """Window positions above 3 (never from the forward): the public backward refuses them
    (test_bad_input); without the check (fastnn's layers, on their own forward's
    positions) a backend that reads positions (C) drops such a gradient, as an argmax
    outside its window, and the others refuse them still: never an address from one."""
    rng = _rng("pool-pos-range", xs, ws)
    x, w, b = rand(rng, xs, dtype), rand(rng, ws, dtype), rand(rng, ws[3:], dtype)
    y, pos = ops.conv2d_maxpool_forward(x, w, b, activation="relu", crop=True,
                                        argmax_format="window")
    dy, bad, keep = rand(rng, y.shape, dtype), pos.copy(), None
    bad[0, 0, 0, 3], bad[1, 1, 1, 5], bad[-1, -1, -1, -1] = 4, 255, 7
    keep = dy.copy()
    keep[0, 0, 0, 3] = keep[1, 1, 1, 5] = keep[-1, -1, -1, -1] = 0
    need_dx = xs[3] > 1

    def grads(d, a):
        return ops._conv2d_maxpool_backward(d, a, x, w, 1, 0, 1, "NHWC", True, need_dx,
                                            False, None, check_range=False)
    if not getattr(_backend.get(), "CONV_POOL_POSITIONS", False):
        with pytest.raises(ValueError, match=r"window positions\) must hold values"):
            grads(dy, bad)
        return
    got, want = grads(dy, bad), grads(keep, pos)
    k = xs[0] * 4 * y.shape[1] * y.shape[2]
    assert_close(got[1], want[1], k=k, scale=absmax(dy) * absmax(x), what="dw")
    if need_dx:
        assert_close(got[0], want[0], k=ws[0] * ws[1] * ws[3], scale=absmax(dy) * absmax(w),
                     what="dx")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("oh,ow", [(4, 6), (5, 7), (2, 3)])
def test_window_positions_against_loops(layout, oh, ow):
    """ops' conversions between a 2x2 pooling's flat argmax and its window positions (the
    backends without positions of their own) against loops over every element."""
    rng = np.random.default_rng(oh * 10 + ow)
    n, f, ph, pw = 2, 3, oh // 2, ow // 2
    shape = (n, ph, pw, f) if layout == "NHWC" else (n, f, ph, pw)
    pos = rng.integers(0, 4, shape).astype(np.uint8)
    want = np.empty(shape, np.int64)
    for i in np.ndindex(*shape):
        p, q, j = (i[1], i[2], i[3]) if layout == "NHWC" else (i[2], i[3], i[1])
        r, c = 2 * p + pos[i] // 2, 2 * q + pos[i] % 2
        want[i] = (r * ow + c) * f + j if layout == "NHWC" else (j * oh + r) * ow + c
    flat = ops._flat_argmax(pos, oh, ow, layout)
    assert flat.dtype == np.int64
    np.testing.assert_array_equal(flat, want)
    back = np.full(shape, 9, np.uint8)
    ops._window_positions(flat, oh, ow, layout, back)
    np.testing.assert_array_equal(back, pos)


@pytest.mark.parametrize("padding", [0, "same"])
def test_conv2d_maxpool_forward_in_chunks(backend, restore_workspace_limit, padding):
    """With a workspace limit of one image per chunk (the padded copy of x is made per
    chunk), the fused op writes each chunk's pooled outputs and argmax in place."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 12, 11, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 20)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    fastnn.ops.set_workspace_limit(1)
    y_ref, a_ref = ops.maxpool2d_forward(
        ops.conv2d_forward(x, w, b, padding=padding, activation="relu"), 2)
    y, a = ops.conv2d_maxpool_forward(x, w, b, padding=padding, activation="relu")
    assert y.tobytes() == y_ref.tobytes()
    np.testing.assert_array_equal(a, a_ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("use_b,act", [(True, None), (False, "relu"), (True, "identity"),
                                       (True, "linear"), (True, "RELU")])
def test_conv2d_forward_epilogues(backend, use_b, act, layout, dtype):
    _, x, w, b, _, geo, (n, c, f) = _conv_case(CONV_CASES[5], layout, dtype)
    bb = b if use_b else None
    got = ops.conv2d_forward(x, w, bb, activation=act, **geo)
    ref = reference(ops.conv2d_forward, x, w, bb, activation=act, **geo)
    assert_close(got, ref, k=6 * c + 1, scale=absmax(x) * absmax(w) + absmax(bb),
                 what=f"conv2d_forward b={use_b} act={act}")
    plain = ops.conv2d_forward(x, w, **geo)
    bshape = (1, 1, 1, f) if layout == "NHWC" else (1, f, 1, 1)
    manual = plain + (bb.reshape(bshape) if use_b else 0)
    if act is not None and act.lower() == "relu":
        manual = np.maximum(manual, 0)
    assert_close(got, manual.astype(dtype), k=6 * c + 1,
                 scale=absmax(x) * absmax(w) + absmax(bb),
                 what="fused epilogue == separate bias + activation")


def _conv_backward_check(x, w, dy, geo, layout, need_dx, c, what, dy_full=None):
    """The backend's gradients for ``dy`` against the reference's; with ``dy_full`` (dy
    padded with zeros to the output's shape), ``dy`` is a top-left crop (``crop=True``)."""
    crop = dy_full is not None
    got = ops.conv2d_backward(dy, x, w, need_dx=need_dx, crop=crop, **geo)
    dy = dy_full if crop else dy
    ref = reference(ops.conv2d_backward, dy, x, w, need_dx=need_dx, **geo)
    kh, kw, f = ((w.shape[0], w.shape[1], w.shape[3]) if layout == "NHWC"
                 else (w.shape[2], w.shape[3], w.shape[0]))
    n = x.shape[0]
    ohow = dy.shape[1] * dy.shape[2] if layout == "NHWC" else dy.shape[2] * dy.shape[3]
    assert len(got) == 3
    if need_dx:
        # each dx element: sum over the (at most KH*KW) windows covering it and F filters
        assert_close(got[0], ref[0], k=kh * kw * f, scale=absmax(dy) * absmax(w),
                     what=f"{what} dx")
    else:
        assert got[0] is None and ref[0] is None
    assert_close(got[1], ref[1], k=n * ohow, scale=absmax(dy) * absmax(x), what=f"{what} dw")
    assert_close(got[2], ref[2], k=n * ohow, scale=absmax(dy), what=f"{what} db")
    return got


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_backward(backend, case, layout, dtype):
    rng, x, w, _, _, geo, (n, c, f) = _conv_case(case, layout, dtype)
    y = reference(ops.conv2d_forward, x, w, **geo)
    dy = rand(rng, y.shape, dtype)
    _conv_backward_check(x, w, dy, geo, layout, True, c, "conv2d_backward")


def _top_left(layout, oh, ow):
    """Index of the top-left (oh, ow) pixels of a 4-D array in ``layout``."""
    sp = (slice(0, oh), slice(0, ow))
    return (slice(None),) + sp if layout == "NHWC" else (slice(None), slice(None)) + sp


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_backward_crop(backend, case, layout, dtype):
    """crop=True: dy covers the output's top-left (OH', OW') pixels (the whole output, one
    row or column fewer, a single pixel); the gradients are the reference's for dy padded
    with zeros, with and without dx."""
    rng, x, w, _, _, geo, (n, c, f) = _conv_case(case, layout, dtype)
    full = reference(ops.conv2d_forward, x, w, **geo).shape
    oh, ow = full[1:3] if layout == "NHWC" else full[2:]
    for i, (ch, cw) in enumerate(sorted({(oh, ow), (max(oh - 1, 1), ow),
                                          (oh, max(ow - 1, 1)), (1, 1)})):
        dy_full = np.zeros(full, dtype)
        part = _top_left(layout, ch, cw)
        dy_full[part] = rand(rng, dy_full[part].shape, dtype)
        _conv_backward_check(x, w, np.ascontiguousarray(dy_full[part]), geo, layout, i % 2 == 0,
                             c, f"crop to ({ch}, {cw})", dy_full=dy_full)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv2d_backward_crop_forms_no_product_outside(backend, layout):
    """A NaN in x read only by the output's last row: with that row cropped away, dw, db
    and dx are finite (those of x with a zero there, and dx is zero on that row); with dy
    padded with zeros instead, 0 * NaN makes dw NaN."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 6, 5, 3))            # NHWC; output (2, 4, 3, 4)
    x[:, 5] = np.nan
    x0 = np.where(np.isnan(x), 0.0, x)
    dy = rng.standard_normal((2, 3, 3, 4))           # its first 3 rows
    padded = np.zeros((2, 4, 3, 4))
    padded[:, :3] = dy
    w = weights_to_layout(rng.standard_normal((3, 3, 3, 4)), layout)
    x, x0, dy, padded = (to_layout(a, layout) for a in (x, x0, dy, padded))
    got = ops.conv2d_backward(dy, x, w, crop=True, layout=layout)
    ref = ops.conv2d_backward(dy, x0, w, crop=True, layout=layout)
    for a, b in zip(got, ref):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
    last_row = got[0][:, 5] if layout == "NHWC" else got[0][:, :, 5]
    assert not last_row.any()
    assert np.isnan(ops.conv2d_backward(padded, x, w, layout=layout)[1]).any()


# A padding at least the (dilated) kernel's extent on some side: outputs whose windows read
# only padding (all in the top rows here, output (0, 0) among them), some where a stride
# longer than the kernel skips image rows, one where no window reaches the image at all.
# (id, N, H, W, C, F, kernel, stride, padding, dilation)
PAD_BEYOND_CASES = [
    ("top_rows_padding_only", 2, 5, 4, 3, 4, 2, (3, 1), ((4, 0), (0, 1)), 1),
    ("stride_skips_rows", 1, 6, 5, 2, 3, 1, (4, 2), ((5, 5), (0, 3)), 1),
    ("dilated_both_sides", 2, 4, 5, 2, 3, 2, (2, 3), ((4, 6), (5, 1)), (3, 1)),
    ("no_window_reaches", 1, 1, 1, 2, 3, 1, 10, ((3, 3), (0, 0)), 1),
    ("stride1_wide_pad", 1, 3, 3, 2, 2, 2, 1, 3, 1),
    ("pool_sized", 2, 3, 4, 3, 2, 2, 2, ((3, 2), (4, 3)), 1),
]


def _by_columns(x, w, dy, geo, layout):
    """Convolution, forward and backward, as the im2col formula computes them in float64
    (``cols @ w``, ``cols.T @ dy``, ``col2im(dy @ w.T)``): what a padding read as zero
    columns gives, on the reference's im2col and col2im, not on the convolution's code."""
    f = w.shape[3] if layout == "NHWC" else w.shape[0]
    ks = w.shape[:2] if layout == "NHWC" else w.shape[2:]
    x64 = x.astype(np.float64)
    cols = reference(ops.im2col, x64, ks, **geo)
    w2 = w.reshape(-1, f) if layout == "NHWC" else w.reshape(f, -1).T
    w2 = w2.astype(np.float64)
    to_rows = (lambda a: a) if layout == "NHWC" else (lambda a: a.transpose(0, 2, 3, 1))
    y_shape = to_rows(dy).shape
    y = (cols @ w2).reshape(y_shape)
    dy2 = to_rows(dy.astype(np.float64)).reshape(-1, f)
    dw2 = cols.T @ dy2
    dw = dw2.reshape(w.shape) if layout == "NHWC" else dw2.T.reshape(w.shape)
    dx = reference(ops.col2im, np.ascontiguousarray(dy2 @ w2.T), x.shape, ks, **geo)
    y = y if layout == "NHWC" else y.transpose(0, 3, 1, 2)
    return y, dx, dw, dy2.sum(axis=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", PAD_BEYOND_CASES, ids=[c[0] for c in PAD_BEYOND_CASES])
def test_conv_padding_beyond_the_kernel(backend, case, layout, dtype):
    """Outputs whose windows read only padding: ``act(b)`` forward; backward, no gradient
    to x and ``0 * dy`` to w (NaN for a filter whose dy there is inf), dy to b. Every
    conv op as the im2col formula, fused or not; inf and NaN as zero columns give them."""
    rng, x, w, b, ks, geo, (n, c, f) = _conv_case(case, layout, dtype)
    g = ops.conv_geometry(x.shape, ks, geo["stride"], geo["padding"], geo["dilation"],
                          layout=layout)
    dy = rand(rng, g.y_shape(layout, f), dtype)
    y_cols, dx_cols, dw_cols, db_cols = _by_columns(x, w, dy, geo, layout)
    k, kb, sx, sw = g.patch, g.rows, absmax(x), absmax(w)
    y = ops.conv2d_forward(x, w, b, activation="relu", **geo)
    bias = b if layout == "NHWC" else b[:, None, None]
    assert_close(y, np.maximum(y_cols + bias, 0).astype(dtype), k=k + 1,
                 scale=sx * sw + absmax(b), what="forward")
    dx, dw, db = ops.conv2d_backward(dy, x, w, **geo)
    assert_close(dx, dx_cols.astype(dtype), k=f * k, scale=absmax(dy) * sw, what="dx")
    assert_close(dw, dw_cols.astype(dtype), k=kb, scale=absmax(dy) * sx, what="dw")
    assert_close(db, db_cols.astype(dtype), k=kb, scale=absmax(dy), what="db")
    # NaN in filter 0: all its outputs NaN (the padding-only ones too: 0 * NaN)
    wn = w.copy()
    wn[(..., 0) if layout == "NHWC" else (0,)].flat[0] = np.nan
    yn = ops.conv2d_forward(x, wn, b, **geo)
    yn0, yn_rest = (yn[..., 0], yn[..., 1:]) if layout == "NHWC" else (yn[:, 0], yn[:, 1:])
    assert np.isnan(yn0).all() and np.isfinite(yn_rest).all(), "NaN in w"
    # inf in dy at output (0, 0) of filter 1, a window of padding only: dw NaN for that
    # filter, finite elsewhere; dx finite (that window's gradient lands on padding)
    dyi = dy.copy()
    dyi[(0, 0, 0, 1) if layout == "NHWC" else (0, 1, 0, 0)] = np.inf
    dxi, dwi, dbi = ops.conv2d_backward(dyi, x, w, **geo)
    dw1, dw_rest = (dwi[..., 1], np.delete(dwi, 1, axis=3)) if layout == "NHWC" else \
        (dwi[1], np.delete(dwi, 1, axis=0))
    assert np.isnan(dw1).all() and np.isfinite(dw_rest).all(), "inf in dy: dw"
    assert np.isfinite(dxi).all() and dbi[1] == np.inf, "inf in dy: dx, db"
    # the fused convolution + pooling, where the output has 2x2 pixels to pool
    sp = y.shape[1:3] if layout == "NHWC" else y.shape[2:]
    if min(sp) >= 2:
        yp, am = ops.conv2d_maxpool_forward(x, w, b, activation="relu", **geo)
        ryp, ram = reference(ops.maxpool2d_forward, y, 2, layout=layout)
        assert_same(yp, ryp, what="fused forward")
        assert_same(am, ram, what="fused argmax")
        dyp = rand(rng, yp.shape, dtype)
        dz = reference(ops.maxpool2d_backward, dyp, am, y.shape, 2, layout=layout)
        got = ops.conv2d_maxpool_backward(dyp, am, x, w, **geo)
        for a, e, what in zip(got, _by_columns(x, w, dz, geo, layout)[1:], ("dx", "dw", "db")):
            assert_close(a, e.astype(dtype), k=max(kb, f * k),
                         scale=absmax(dyp) * max(sx, sw, 1.0), what=f"fused backward {what}")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_conv_huge_dilation_pads_no_copy(backend, layout):
    """A padding just under a huge dilated kernel's extent (fastnn.ops keeps such windows,
    which reach the image): C's implicit, direct and pooled paths padded a copy of the 1x1
    image to 2**28 + 1 rows (2 GiB); they now leave such geometries to im2col + GEMM.
    Peak traced memory stays small and the result is the reference's."""
    import tracemalloc
    x = to_layout(np.array([[[[2.0, -1.0]]]], np.float32), layout)        # 1x1, 2 channels
    w = weights_to_layout(np.arange(1, 9, dtype=np.float32).reshape(2, 1, 2, 2), layout)
    geo = dict(dilation=(2**28, 1), padding=((2**28, 0), (0, 0)), layout=layout)
    tracemalloc.start()
    try:
        y = ops.conv2d_forward(x, w, **geo)
        dx, dw, db = ops.conv2d_backward(np.ones_like(y), x, w, **geo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak
    with fastnn.use_backend("numpy"):
        want = ops.conv2d_forward(x, w, **geo)
        wdx, wdw, wdb = ops.conv2d_backward(np.ones_like(want), x, w, **geo)
    assert_same(y, want, what="y")
    assert_same(dx, wdx, what="dx")
    assert_same(dw, wdw, what="dw")
    assert_same(db, wdb, what="db")



@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv_huge_padding_small_output(backend, layout):
    """A padding of 2**20 with a stride of 2**20 or more: a 2x2 output (the bottom right
    pixel reads the image, the others only padding). The reference and the C backend's
    NHWC path padded the input in full (8 TiB: MemoryError); C's NCHW path and Numba
    returned the result."""
    x = to_layout(np.array([[[[2.0, -1.0]]]], np.float32), layout)      # 1x1, 2 channels
    w = weights_to_layout(np.array([[[[1.0, 3.0], [4.0, 1.0]]]], np.float32), layout)
    b = np.array([0.5, -20.0], np.float32)
    geo = dict(stride=2**20, padding=((2**20, 0), (2**20, 0)), layout=layout)
    fill = np.array([0.5, 0.0], np.float32)                     # relu(b)
    inside = np.maximum(np.array([2.0 - 4.0, 6.0 - 1.0]) + b, 0)  # relu(x @ w + b)
    expect = np.empty((1, 2, 2, 2), np.float32)
    expect[...] = fill
    expect[0, 1, 1] = inside
    y = ops.conv2d_forward(x, w, b, activation="relu", **geo)
    assert_same(y, to_layout(expect, layout), what="forward")
    dy = to_layout(np.arange(1, 9, dtype=np.float32).reshape(1, 2, 2, 2), layout)
    dx, dw, db = ops.conv2d_backward(dy, x, w, **geo)
    g = np.array([7.0, 8.0], np.float32)                         # dy at pixel (1, 1)
    assert_same(dx, to_layout((w.reshape(2, 2) @ g if layout == "NHWC" else
                               w.reshape(2, 2).T @ g).reshape(1, 1, 1, 2), layout), what="dx")
    assert_same(dw, weights_to_layout(np.outer([2.0, -1.0], g).reshape(1, 1, 2, 2)
                                      .astype(np.float32), layout), what="dw")
    assert_same(db, np.array([16.0, 20.0], np.float32), what="db")
    yp, am = ops.conv2d_maxpool_forward(x, w, b, activation="relu", **geo)
    assert_same(yp, to_layout(np.array([[[[0.5, 0.0]]]], np.float32), layout), what="fused")
    dxp, dwp, dbp = ops.conv2d_maxpool_backward(np.ones_like(yp), am, x, w, **geo)
    assert dxp.shape == x.shape and np.isfinite(dwp).all() and dbp.shape == (2,)
    cols = ops.im2col(x, 1, **geo)
    assert_same(cols, np.array([[0, 0], [0, 0], [0, 0], [2, -1]], np.float32), what="im2col")
    xb = ops.col2im(np.arange(8, dtype=np.float32).reshape(4, 2), x.shape, 1, **geo)
    assert_same(xb.reshape(-1), np.array([6.0, 7.0], np.float32), what="col2im")
    # the fuzz case: a 1x1 output reading only padding
    one = np.ones((1, 1, 1, 1), np.float32)
    assert_same(ops.conv2d_forward(one, one, padding=2**20, stride=2**31 - 1, layout=layout),
                np.zeros((1, 1, 1, 1), np.float32), what="fuzz case")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 4, 9, 11, 22, 23)],
                         ids=[CONV_IDS[i] for i in (1, 4, 9, 11, 22, 23)])
def test_conv2d_backward_no_dx(backend, case, layout, dtype):
    rng, x, w, _, _, geo, (n, c, f) = _conv_case(case, layout, dtype)
    y = reference(ops.conv2d_forward, x, w, **geo)
    dy = rand(rng, y.shape, dtype)
    _, dw, db = _conv_backward_check(x, w, dy, geo, layout, False, c, "need_dx=False")
    _, dw2, db2 = ops.conv2d_backward(dy, x, w, need_dx=True, **geo)
    assert_close(dw, dw2, k=x.shape[0] * y[0].size, scale=absmax(dy) * absmax(x),
                 what="dw independent of need_dx")
    assert_close(db, db2, k=x.shape[0] * y[0].size, scale=absmax(dy), what="db vs need_dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("xs,ws,stride,dilation", [
    ((3, 14, 14, 6), (5, 5, 6, 16), 1, 1),        # LeNet-5's second convolution
    ((2, 11, 12, 3), (5, 5, 3, 7), 2, 1),         # strided
    ((2, 13, 12, 6), (3, 5, 6, 4), 1, (2, 1)),    # dilated rows, undilated columns
    ((2, 10, 9, 2), (3, 3, 2, 5), 1, 1),
    ((2, 12, 13, 6), (3, 3, 6, 5), 1, (1, 2))])   # dilated columns
def test_conv2d_backward_few_channels(fast_backend, xs, ws, stride, dilation, dtype):
    """NHWC backward with fewer input channels than a vector's lanes, whose receptive
    fields' rows overlap in dx (LeNet-5's second convolution among them), strided or
    dilated: against the reference, a NaN in dy included (it reaches its receptive field
    only); bits independent of the thread count. (The C backend's implicit dx, whose tiles
    would overlap there, took no less time than dcols + col2im on LeNet-5's: Zen 4,
    2026-12-06.)"""
    rng = _rng("dx-runs", xs, ws)
    x, w = rand(rng, xs, dtype), rand(rng, ws, dtype)
    geo = dict(stride=stride, dilation=dilation)
    y = reference(ops.conv2d_forward, x, w, **geo)
    dy = rand(rng, y.shape, dtype)
    dy[0, y.shape[1] // 2, y.shape[2] // 2, 0] = np.nan
    ref = reference(ops.conv2d_backward, dy, x, w, **geo)
    before = fastnn.get_num_threads()
    try:
        got = ops.conv2d_backward(dy, x, w, **geo)
        fastnn.set_num_threads(1)
        one = ops.conv2d_backward(dy, x, w, **geo)
    finally:
        fastnn.set_num_threads(before)
    assert np.isnan(ref[0]).any() and np.isfinite(ref[0]).any()
    assert_close(got[0], ref[0], k=ws[0] * ws[1] * ws[3], scale=absmax(dy) * absmax(w),
                 what="dx")
    assert_close(got[1], ref[1], k=dy[..., 0].size, scale=absmax(dy) * absmax(x), what="dw")
    for a, b in zip(got, one):
        assert_bitwise(a, b)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 4)],
                         ids=[CONV_IDS[i] for i in (1, 4)])
def test_conv2d_backward_no_db(backend, case, layout):
    """need_db=False: db is None, dx and dw are bitwise those of the full call."""
    rng, x, w, _, _, geo, _ = _conv_case(case, layout, np.float64)
    dy = rand(rng, reference(ops.conv2d_forward, x, w, **geo).shape, np.float64)
    dx, dw, db = ops.conv2d_backward(dy, x, w, need_db=False, **geo)
    assert db is None
    dx2, dw2, db2 = ops.conv2d_backward(dy, x, w, **geo)
    np.testing.assert_array_equal(dx, dx2)
    np.testing.assert_array_equal(dw, dw2)
    assert db2 is not None and db2.shape == (w.shape[3] if layout == "NHWC" else w.shape[0],)
    # an empty batch too
    _, dw0, db0 = ops.conv2d_backward(dy[:0], x[:0], w, need_db=False, **geo)
    assert db0 is None and not dw0.any()


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv_noncontiguous_inputs(backend, layout, dtype):
    """Transposed views, negative strides and stepped slices are copied, never misread."""
    rng = _rng("convnc", layout)
    n, h, w_, c, f = 3, 9, 8, 3, 4
    # x: a stepped, reversed slice of a bigger array, then laid out by a transposed view
    big = rand(rng, (2 * n, h + 3, 2 * w_, c + 2), dtype)
    x_nhwc = big[::2, 1:h + 1, ::-2, 1:c + 1]
    x = x_nhwc if layout == "NHWC" else x_nhwc.transpose(0, 3, 1, 2)
    w_big = rand(rng, (3, 3, c, 2 * f), dtype)
    w_hwcf = w_big[::-1, :, :, ::2]
    w = w_hwcf if layout == "NHWC" else w_hwcf.transpose(3, 2, 0, 1)
    b = rand(rng, (2 * f,), dtype)[::2]
    assert not x.flags.c_contiguous and not w.flags.c_contiguous and not b.flags.c_contiguous
    geo = dict(stride=(1, 2), padding="same", dilation=1, layout=layout)
    xc, wc, bc = (np.ascontiguousarray(v) for v in (x, w, b))
    got = ops.conv2d_forward(x, w, b, activation="relu", **geo)
    ref = reference(ops.conv2d_forward, xc, wc, bc, activation="relu", **geo)
    assert_close(got, ref, k=9 * c + 1, scale=absmax(x) * absmax(w) + absmax(b),
                 what="conv fwd non-contiguous")
    dy_big = rand(rng, got.shape[:3] + (2 * got.shape[3],), dtype)
    dy = dy_big[..., ::2][::-1]
    assert dy.shape == got.shape and not dy.flags.c_contiguous
    gb = ops.conv2d_backward(dy, x, w, **geo)
    rb = reference(ops.conv2d_backward, np.ascontiguousarray(dy), xc, wc, **geo)
    kk = n * got[0, ..., 0].size
    assert_close(gb[0], rb[0], k=9 * f, what="conv bwd dx non-contiguous")
    assert_close(gb[1], rb[1], k=kk, what="conv bwd dw non-contiguous")
    assert_close(gb[2], rb[2], k=kk, what="conv bwd db non-contiguous")
    # im2col / col2im on the same views
    cols = ops.im2col(x, 3, **geo)
    assert_same(cols, reference(ops.im2col, xc, 3, **geo), what="im2col non-contiguous")
    cols_nc = np.asfortranarray(cols)
    assert_close(ops.col2im(cols_nc, x.shape, 3, **geo),
                 reference(ops.col2im, cols, x.shape, 3, **geo), k=9, what="col2im F-order")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("limit_images", [1, 3])
def test_conv_workspace_chunks(backend, layout, dtype, limit_images, restore_workspace_limit):
    """A tiny workspace limit splits the batch into chunks; results must not change."""
    rng = _rng("chunks", layout)
    n, h, w_, c, f = 11, 7, 6, 3, 4
    x = to_layout(rand(rng, (n, h, w_, c), dtype), layout)
    w = weights_to_layout(rand(rng, (3, 3, c, f), dtype), layout)
    b = rand(rng, (f,), dtype)
    geo = dict(stride=1, padding="same", dilation=1, layout=layout)
    g = ops.conv_geometry(x.shape, 3, 1, "same", 1, layout=layout)
    per_image = g.oh * g.ow * g.patch * np.dtype(dtype).itemsize

    ops.set_workspace_limit(restore_workspace_limit)
    y_full = ops.conv2d_forward(x, w, b, activation="relu", **geo)
    dy = rand(rng, y_full.shape, dtype)
    bw_full = ops.conv2d_backward(dy, x, w, **geo)
    ref_y = reference(ops.conv2d_forward, x, w, b, activation="relu", **geo)
    ref_bw = reference(ops.conv2d_backward, dy, x, w, **geo)

    ops.set_workspace_limit(limit_images * per_image if limit_images > 1 else 1)
    assert ops.get_workspace_limit() < n * per_image  # really chunked (forward and backward)
    y = ops.conv2d_forward(x, w, b, activation="relu", **geo)
    bw = ops.conv2d_backward(dy, x, w, **geo)
    bw_nodx = ops.conv2d_backward(dy, x, w, need_dx=False, **geo)
    kdw = n * g.oh * g.ow
    for got, what in ((y, "y"),):
        assert_close(got, y_full, k=9 * c + 1, what=f"chunked {what} vs unchunked")
        assert_close(got, ref_y, k=9 * c + 1, what=f"chunked {what} vs reference")
    for i, (name, k) in enumerate((("dx", 9 * f), ("dw", kdw), ("db", kdw))):
        assert_close(bw[i], bw_full[i], k=k, what=f"chunked {name} vs unchunked")
        assert_close(bw[i], ref_bw[i], k=k, what=f"chunked {name} vs reference")
        if i:
            assert_close(bw_nodx[i], ref_bw[i], k=k, what=f"chunked need_dx=False {name}")
    # the reference under the same tiny limit agrees too
    assert_close(reference(ops.conv2d_forward, x, w, b, activation="relu", **geo), ref_y,
                 k=9 * c + 1, what="reference chunked vs unchunked")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_empty_batch(backend, layout, dtype):
    c, f, h, w_ = 3, 4, 6, 5
    x = np.zeros(x_shape_in(0, h, w_, c, layout), dtype)
    w = weights_to_layout(np.ones((3, 3, c, f), dtype), layout)
    b = np.ones(f, dtype)
    geo = dict(stride=2, padding="same", layout=layout)
    oh, ow = 3, 3
    y = ops.conv2d_forward(x, w, b, activation="relu", **geo)
    assert y.shape == x_shape_in(0, oh, ow, f, layout) and y.dtype == dtype
    dx, dw, db = ops.conv2d_backward(y, x, w, **geo)
    assert dx.shape == x.shape and dx.dtype == dtype
    assert_same(dw, np.zeros_like(w), what="dw of empty batch")
    assert_same(db, np.zeros(f, dtype), what="db of empty batch")
    dx2, dw2, db2 = ops.conv2d_backward(y, x, w, need_dx=False, **geo)
    assert dx2 is None
    assert_same(dw2, np.zeros_like(w))
    cols = ops.im2col(x, 3, **geo)
    assert cols.shape == (0, 9 * c) and cols.dtype == dtype
    back = ops.col2im(cols, x.shape, 3, **geo)
    assert back.shape == x.shape and back.dtype == dtype
    yp, am = ops.maxpool2d_forward(x, 2, padding="same", layout=layout)
    assert yp.shape == x_shape_in(0, 3, 3, c, layout) and am.shape == yp.shape
    assert am.dtype == np.int64 and yp.dtype == dtype
    dxp = ops.maxpool2d_backward(yp, am, x.shape, 2, padding="same", layout=layout)
    assert dxp.shape == x.shape
    ya = ops.avgpool2d_forward(x, 2, padding="same", layout=layout)
    assert ya.shape == yp.shape and ya.dtype == dtype
    assert ops.avgpool2d_backward(ya, x.shape, 2, padding="same", layout=layout).shape == x.shape
    yb = ops.bias_act(np.zeros((0, f), dtype), b)
    assert yb.shape == (0, f)
    dxb, dbb = ops.bias_act_backward(yb, yb)
    assert dxb.shape == (0, f)
    assert_same(dbb, np.zeros(f, dtype), what="db of empty bias_act")


# =========================================================================== pooling
# (id, N, H, W, C, pool, stride, padding)
POOL_CASES = [
    ("2x2", 2, 6, 6, 3, 2, None, "valid"),
    ("2x2_odd_tail", 1, 7, 5, 2, 2, None, "valid"),
    ("3x3_s1_same", 2, 7, 5, 2, 3, 1, "same"),
    ("3x3_s2_same", 1, 9, 8, 3, 3, 2, "same"),
    ("overlap_s1", 2, 5, 6, 2, 3, 1, "valid"),
    ("rect_pad1", 1, 7, 9, 4, (2, 3), (1, 2), (1, 1)),
    ("asym_pad", 2, 6, 7, 3, 3, 2, ((1, 0), (0, 2))),
    ("stride3_gt_pool", 2, 10, 11, 2, 2, 3, "valid"),
    ("pool1", 1, 3, 4, 5, 1, 1, 0),
    ("global", 3, 5, 4, 3, (5, 4), None, "valid"),
    ("primes", 3, 13, 11, 5, 3, 2, 1),
    ("pad1_s1_corners", 1, 4, 4, 1, 2, 1, 1),
    ("input_1x1", 2, 1, 1, 3, 1, None, "valid"),
    ("same_even_pool", 1, 6, 5, 2, 2, 1, "same"),
    ("pair_pad", 2, 5, 8, 3, (3, 2), (2, 2), (2, 1)),
]
POOL_IDS = [c[0] for c in POOL_CASES]


def _pool_case(case, layout, dtype, kind):
    cid, n, h, w, c, p, s, pad = case
    rng = _rng("pool", cid, layout, np.dtype(dtype).name, kind)
    x = to_layout(distinct(rng, (n, h, w, c), dtype) if kind == "max"
                  else rand(rng, (n, h, w, c), dtype), layout)
    return rng, x, p, dict(stride=s, padding=pad, layout=layout)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_maxpool2d(backend, case, layout, dtype):
    rng, x, p, kw = _pool_case(case, layout, dtype, "max")
    y, am = ops.maxpool2d_forward(x, p, **kw)
    ry, ram = reference(ops.maxpool2d_forward, x, p, **kw)
    assert_same(y, ry, what="maxpool y")
    assert_same(am, ram, what="maxpool argmax")
    # argmax points at the value chosen
    flat = x.reshape(x.shape[0], -1)
    assert_same(np.take_along_axis(flat, am.reshape(am.shape[0], -1), 1).reshape(y.shape), y,
                what="x[argmax] == y")
    dy = rand(rng, y.shape, dtype)
    dx = ops.maxpool2d_backward(dy, am, x.shape, p, **kw)
    rdx = reference(ops.maxpool2d_backward, dy, ram, x.shape, p, **kw)
    g = ops.conv_geometry(x.shape, p, kw["stride"] or p, kw["padding"], layout=layout,
                          pooling=True)
    # an input element receives at most ceil(kh/sh)*ceil(kw/sw) gradients
    nmax = -(-g.kh // g.sh) * -(-g.kw // g.sw)
    assert_close(dx, rdx, k=nmax, scale=absmax(dy), what="maxpool backward")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_avgpool2d(backend, case, layout, dtype):
    rng, x, p, kw = _pool_case(case, layout, dtype, "avg")
    y = ops.avgpool2d_forward(x, p, **kw)
    ry = reference(ops.avgpool2d_forward, x, p, **kw)
    g = ops.conv_geometry(x.shape, p, kw["stride"] or p, kw["padding"], layout=layout,
                          pooling=True)
    assert_close(y, ry, k=g.kh * g.kw, scale=absmax(x), what="avgpool forward")
    dy = rand(rng, y.shape, dtype)
    dx = ops.avgpool2d_backward(dy, x.shape, p, **kw)
    rdx = reference(ops.avgpool2d_backward, dy, x.shape, p, **kw)
    nmax = -(-g.kh // g.sh) * -(-g.kw // g.sw)
    assert_close(dx, rdx, k=nmax, scale=absmax(dy), what="avgpool backward")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pool_window_longer_than_the_image_stride_1(backend, layout):
    """Stride 1: a 1024 x 1024 window with padding 1023 on a 1x1 image has a million
    outputs, each reading the one pixel. The Numba kernels scanned every window offset for
    every output (10^12 steps: 225 s for the four ops at 4096); they now scan only the
    offsets inside the image. Every output is the pixel (max, average) and every gradient
    goes to it."""
    x = to_layout(np.array([[[[2.0, -3.0]]]], np.float32), layout)
    kw = dict(stride=1, padding=1023, layout=layout)
    y, am = ops.maxpool2d_forward(x, 1024, **kw)
    ya = ops.avgpool2d_forward(x, 1024, **kw)
    dy = np.ones_like(y)
    dxm = ops.maxpool2d_backward(dy, am, x.shape, 1024, **kw)
    dxa = ops.avgpool2d_backward(dy, x.shape, 1024, **kw)
    full = to_layout(np.broadcast_to(np.array([2.0, -3.0], np.float32), (1, 1024, 1024, 2)),
                     layout)
    assert_same(y, full, what="max")
    assert_same(ya, full, what="avg")
    assert_same(dxm, to_layout(np.full((1, 1, 1, 2), 1024.0 ** 2, np.float32), layout),
                what="max dx")
    assert_same(dxa, to_layout(np.full((1, 1, 1, 2), 1024.0 ** 2, np.float32), layout),
                what="avg dx")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_avgpool_backward_window_of_2_to_29(backend, layout):
    """A 2**29 window with padding 2**29 - 1 over an 8x8 image: the Numba backward looped
    over every kernel offset of every input pixel (28 s on 2 threads; now over the outputs
    whose window holds it). Each of the 2x2 outputs averages the pixels of its window."""
    k = 2**29
    dy = to_layout(np.ones((1, 2, 2, 1), np.float32), layout)
    shape = (1, 8, 8, 1) if layout == "NHWC" else (1, 1, 8, 8)
    dx = ops.avgpool2d_backward(dy, shape, k, padding=k - 1, layout=layout)
    assert_close(dx, reference(ops.avgpool2d_backward, dy, shape, k, padding=k - 1,
                               layout=layout), k=4, what="avgpool backward, 2**29 window")
    assert float(dx.sum()) == pytest.approx(4.0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pool_window_much_longer_than_the_image(backend, layout):
    """A 1024 x 1024 window, padding 1023, over a 2x3 image: a 2x2 output, each window
    reading one or two pixels. The reference looped in Python over every window offset
    (a million; about 20 s for the max pooling forward, > 60 s with 4096): it now loops
    over the input positions when there are fewer. Results by hand (no timing assert:
    a hang would hold up the suite)."""
    x_nhwc = np.array([[1.0, 5.0, 3.0], [np.nan, -2.0, -2.0]], np.float32).reshape(1, 2, 3, 1)
    x = to_layout(np.concatenate([x_nhwc, -x_nhwc], axis=3), layout)     # 2 channels
    kw = dict(padding=1023, layout=layout)
    y, am = ops.maxpool2d_forward(x, 1024, **kw)
    ya = ops.avgpool2d_forward(x, 1024, **kw)
    dy = to_layout(np.arange(1, 9, dtype=np.float32).reshape(1, 2, 2, 2), layout)
    dxa = ops.avgpool2d_backward(dy, x.shape, 1024, **kw)
    dxm = ops.maxpool2d_backward(dy, am, x.shape, 1024, **kw)
    # windows: rows {0}, {1}; columns {0}, {1, 2}
    y_exp = np.array([[[1, -1], [5, -3]], [[np.nan, np.nan], [-2, 2]]], np.float32)[None]
    assert_same(y, to_layout(y_exp, layout), what="max")
    pos = np.array([[0, 1], [3, 4]])                   # first max (ties: first; NaN wins)
    pos_c1 = np.array([[0, 2], [3, 4]])
    am_exp = np.stack([pos, pos_c1], axis=-1)[None]
    am_exp = am_exp * 2 + [0, 1] if layout == "NHWC" else am_exp + [0, 6]
    assert_same(am, to_layout(am_exp, layout), what="argmax")
    ya_exp = np.array([[[1, -1], [4, -4]], [[np.nan, np.nan], [-2, 2]]], np.float32)[None]
    assert_same(ya, to_layout(ya_exp, layout), what="avg")
    d = np.arange(1, 9, dtype=np.float32).reshape(2, 2, 2)             # (oh, ow, c)
    dxa_exp = np.stack([[d[0, 0], d[0, 1] / 2, d[0, 1] / 2],
                        [d[1, 0], d[1, 1] / 2, d[1, 1] / 2]])[None]
    assert_close(dxa, to_layout(dxa_exp, layout), k=2, scale=8, what="avg backward")
    dxm_exp = np.zeros((1, 2, 3, 2), np.float32)
    for (oh, ow, c), p in np.ndenumerate(np.stack([pos, pos_c1], axis=-1)):
        dxm_exp[(0,) + divmod(int(p), 3) + (c,)] += d[oh, ow, c]
    assert_same(dxm, to_layout(dxm_exp, layout), what="max backward")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_pool_noncontiguous(backend, layout, dtype):
    rng = _rng("poolnc", layout)
    big = distinct(rng, (4, 14, 9, 6), dtype)
    x_nhwc = big[::2, ::-2, :, 1::2]
    x = x_nhwc if layout == "NHWC" else x_nhwc.transpose(0, 3, 1, 2)
    assert not x.flags.c_contiguous
    xc = np.ascontiguousarray(x)
    kw = dict(stride=2, padding="same", layout=layout)
    y, am = ops.maxpool2d_forward(x, 3, **kw)
    ry, ram = reference(ops.maxpool2d_forward, xc, 3, **kw)
    assert_same(y, ry)
    assert_same(am, ram)
    dy = rand(rng, y.shape + (2,), dtype)[..., 0]
    assert not dy.flags.c_contiguous
    am_nc = np.stack([am, am], axis=-1)[..., 1]
    assert not am_nc.flags.c_contiguous
    assert_close(ops.maxpool2d_backward(dy, am_nc, x.shape, 3, **kw),
                 reference(ops.maxpool2d_backward, np.ascontiguousarray(dy), ram, x.shape, 3,
                           **kw), k=4, what="maxpool backward non-contiguous")
    ya = ops.avgpool2d_forward(x, 3, **kw)
    assert_close(ya, reference(ops.avgpool2d_forward, xc, 3, **kw), k=9, scale=absmax(x))
    assert_close(ops.avgpool2d_backward(dy, x.shape, 3, **kw),
                 reference(ops.avgpool2d_backward, np.ascontiguousarray(dy), x.shape, 3, **kw),
                 k=4, what="avgpool backward non-contiguous")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_maxpool_ties(backend, layout, dtype):
    """Ties go to the first element in row-major window order."""
    # all equal: every window picks its top-left in-bounds element
    x = np.zeros(x_shape_in(1, 4, 4, 2, layout), dtype)
    y, am = ops.maxpool2d_forward(x, 2, layout=layout)
    hwc = layout == "NHWC"
    for oh in range(2):
        for ow in range(2):
            for c in range(2):
                idx = ((2 * oh * 4 + 2 * ow) * 2 + c) if hwc else ((c * 4 + 2 * oh) * 4 + 2 * ow)
                got = am[0, oh, ow, c] if hwc else am[0, c, oh, ow]
                assert got == idx, f"tie at window ({oh},{ow},c={c}): {got} != {idx}"
    assert_same(am, reference(ops.maxpool2d_forward, x, 2, layout=layout)[1])
    # overlapping windows, padding and many random ties (values in {0, 1, 2})
    rng = _rng("ties", layout)
    for pool, kw in ((3, dict(stride=1, padding="same")), (2, dict(stride=1, padding=1)),
                     ((3, 2), dict(stride=(2, 1), padding=((2, 0), (1, 1))))):
        x = to_layout(rng.integers(0, 3, size=(2, 7, 6, 3)).astype(dtype), layout)
        y, am = ops.maxpool2d_forward(x, pool, layout=layout, **kw)
        ry, ram = reference(ops.maxpool2d_forward, x, pool, layout=layout, **kw)
        assert_same(y, ry, what=f"ties y {pool} {kw}")
        assert_same(am, ram, what=f"ties argmax {pool} {kw}")
        dy = rand(rng, y.shape, dtype)
        assert_close(ops.maxpool2d_backward(dy, am, x.shape, pool, layout=layout, **kw),
                     reference(ops.maxpool2d_backward, dy, ram, x.shape, pool, layout=layout,
                               **kw), k=9, what="ties backward")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_maxpool_nan_propagates(backend, layout, dtype):
    x_nhwc = np.array([[1, 5, 2, 0],
                       [3, np.nan, 7, np.nan],
                       [np.nan, 4, -1, -2],
                       [8, np.nan, -3, -4]], dtype=dtype).reshape(1, 4, 4, 1)
    x_nhwc = np.concatenate([x_nhwc, -x_nhwc], axis=3)  # second channel: negated (NaN stays)
    x = to_layout(x_nhwc, layout)
    y, am = ops.maxpool2d_forward(x, 2, layout=layout)
    hwc = layout == "NHWC"
    ych = y[0, ..., 0] if hwc else y[0, 0]
    amch = am[0, ..., 0] if hwc else am[0, 0]
    assert np.isnan(ych[0, 0]) and np.isnan(ych[0, 1]) and np.isnan(ych[1, 0])
    assert ych[1, 1] == -1
    # first NaN of each window (row-major), as flat (h*W + w) positions of channel 0
    pos = {(0, 0): 5, (0, 1): 7, (1, 0): 8, (1, 1): 10}
    for (oh, ow), p in pos.items():
        exp = p * 2 if hwc else p
        assert amch[oh, ow] == exp, f"NaN window ({oh},{ow}): argmax {amch[oh, ow]} != {exp}"
    ry, ram = reference(ops.maxpool2d_forward, x, 2, layout=layout)
    assert_same(y, ry, what="NaN y")
    assert_same(am, ram, what="NaN argmax")
    # NaN with overlapping windows and padding, random positions
    rng = _rng("nan", layout)
    xr = distinct(rng, (2, 7, 6, 3), dtype)
    xr[rng.random(xr.shape) < 0.15] = np.nan
    xr = to_layout(xr, layout)
    for pool, kw in ((3, dict(stride=1, padding="same")), (2, dict(stride=2, padding=1))):
        y, am = ops.maxpool2d_forward(xr, pool, layout=layout, **kw)
        ry, ram = reference(ops.maxpool2d_forward, xr, pool, layout=layout, **kw)
        assert_same(y, ry, what=f"NaN y {pool} {kw}")
        assert_same(am, ram, what=f"NaN argmax {pool} {kw}")
    # avgpool: NaN propagates to every window containing it
    ya = ops.avgpool2d_forward(x, 2, layout=layout)
    assert_same(np.isnan(ya), np.isnan(reference(ops.avgpool2d_forward, x, 2, layout=layout)))
    assert np.isnan(ya).sum() == 6


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_pool_padding_semantics(backend, layout, dtype):
    """Padded positions never win a max and are not counted in an average."""
    n, h, w, c = 2, 5, 4, 3
    neg = to_layout(-1.0 - distinct(_rng("padneg"), (n, h, w, c), dtype) ** 2, layout)
    for pool, kw in ((3, dict(stride=1, padding="same")), (2, dict(stride=1, padding=1)),
                     (3, dict(stride=2, padding=((2, 0), (0, 2))))):
        y, am = ops.maxpool2d_forward(neg, pool, layout=layout, **kw)
        assert np.all(y <= -1.0), "a padded zero won a max pool window"
        ry, ram = reference(ops.maxpool2d_forward, neg, pool, layout=layout, **kw)
        assert_same(y, ry)
        assert_same(am, ram)
        ones = np.ones_like(neg)
        ya = ops.avgpool2d_forward(ones, pool, layout=layout, **kw)
        assert_same(ya, np.ones_like(ya), what="avgpool of ones with padding must be 1")
    # a window of -inf: padding still never wins, argmax is a real element
    x = np.full(x_shape_in(1, 2, 2, 1, layout), -np.inf, dtype)
    y, am = ops.maxpool2d_forward(x, 2, stride=1, padding=1, layout=layout)
    assert np.all(y == -np.inf)
    assert_same(am, reference(ops.maxpool2d_forward, x, 2, stride=1, padding=1,
                              layout=layout)[1])
    assert np.all((am >= 0) & (am < 4))
    # avgpool divisor by hand: 2x2 pool, stride 1, padding 1 over a 2x2 input of ones..4
    x = to_layout(np.arange(1, 5, dtype=dtype).reshape(1, 2, 2, 1), layout)
    ya = ops.avgpool2d_forward(x, 2, stride=1, padding=1, layout=layout)
    expect = np.array([[1, 1.5, 2], [2, 2.5, 3], [3, 3.5, 4]], dtype=dtype)
    got = ya[0, ..., 0] if layout == "NHWC" else ya[0, 0]
    assert_close(got, expect, k=4, scale=4, what="avgpool divisor excludes padding")


# =========================================================================== bias_act
BIAS_CASES = [  # (shape, channel_axis)
    ((7,), -1), ((1, 1), -1), ((5, 3), -1), ((5, 3), 1), ((17, 129), -1),
    ((2, 3, 4, 5), -1), ((2, 3, 4, 5), 1), ((3, 5, 7, 2), -3), ((1, 1, 1, 13), 3),
    ((4, 6, 2), 0),
    # past the Numba backend's serial cutoff (_SERIAL_MAX = 65536 elements): its parallel
    # paths, rows (inner == 1) and planes (inner > 1)
    ((300, 257), -1), ((3, 70, 20, 17), 1),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("act", ["relu", "identity", None, "linear"])
@pytest.mark.parametrize("shape,axis", BIAS_CASES, ids=lambda v: str(v))
def test_bias_act(backend, shape, axis, act, dtype):
    rng = _rng("bias", shape, axis, act)
    x = rand(rng, shape, dtype)
    x.flat[::7] = 0.0  # exact zeros: relu'(0) is 0
    b = rand(rng, (shape[axis],), dtype)
    for bb in (None, b):  # ry (used as y below) is the output with the bias
        y = ops.bias_act(x, bb, act, channel_axis=axis)
        ry = reference(ops.bias_act, x, bb, act, channel_axis=axis)
        assert_close(y, ry, k=2, scale=2.0, what=f"bias_act b={bb is not None}")
    dy = rand(rng, shape, dtype)
    for need_db in (True, False):
        dx, db = ops.bias_act_backward(dy, ry, act, channel_axis=axis, need_db=need_db)
        rdx, rdb = reference(ops.bias_act_backward, dy, ry, act, channel_axis=axis,
                             need_db=need_db)
        assert_close(dx, rdx, what="bias_act_backward dx")
        if need_db:
            assert_close(db, rdb, k=dy.size // shape[axis], scale=absmax(dy),
                         what="bias_act_backward db")
        else:
            assert db is None and rdb is None


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_bias_act_noncontiguous(backend, dtype):
    rng = _rng("biasnc")
    big = rand(rng, (6, 10, 8), dtype)
    x = big[::2, ::-1, 1::2].transpose(0, 2, 1)  # (3, 4, 10), channel axis 1 has size 4
    b = rand(rng, (8,), dtype)[::2]
    assert not x.flags.c_contiguous and not b.flags.c_contiguous
    y = ops.bias_act(x, b, "relu", channel_axis=1)
    ry = reference(ops.bias_act, np.ascontiguousarray(x), np.ascontiguousarray(b), "relu",
                   channel_axis=1)
    assert_close(y, ry, k=2, scale=2.0)
    dy = rand(rng, (3, 10, 4), dtype).transpose(0, 2, 1)
    dx, db = ops.bias_act_backward(dy, ry, "relu", channel_axis=1)
    rdx, rdb = reference(ops.bias_act_backward, np.ascontiguousarray(dy), ry, "relu",
                         channel_axis=1)
    assert_close(dx, rdx)
    assert_close(db, rdb, k=30)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape,axis", [((5, 3), -1), ((2, 3, 4, 5), 1), ((129,), 0)],
                         ids=lambda v: str(v))
def test_bias_act_out(backend, shape, axis, dtype):
    """``out=`` receives the result, separately or in place (out is x / out is dy)."""
    rng = _rng("biasout", shape, axis)
    x = rand(rng, shape, dtype)
    b = rand(rng, (shape[axis],), dtype)
    ry = reference(ops.bias_act, x, b, "relu", channel_axis=axis)
    out = np.full(shape, np.nan, dtype)
    got = ops.bias_act(x, b, "relu", channel_axis=axis, out=out)
    assert got is out
    assert_close(out, ry, k=2, scale=2.0, what="bias_act out=")
    xin = x.copy()
    got = ops.bias_act(xin, b, "relu", channel_axis=axis, out=xin)
    assert got is xin
    assert_close(xin, ry, k=2, scale=2.0, what="bias_act in place")
    dy = rand(rng, shape, dtype)
    rdx, rdb = reference(ops.bias_act_backward, dy, ry, "relu", channel_axis=axis)
    out = np.full(shape, np.nan, dtype)
    dx, db = ops.bias_act_backward(dy, ry, "relu", channel_axis=axis, out=out)
    assert dx is out
    assert_close(dx, rdx, what="bias_act_backward out=")
    assert_close(db, rdb, k=dy.size // shape[axis], what="bias_act_backward db with out=")
    dyin = dy.copy()
    dx, db = ops.bias_act_backward(dyin, ry, "relu", channel_axis=axis, out=dyin)
    assert dx is dyin
    assert_close(dyin, rdx, what="bias_act_backward in place")
    assert_close(db, rdb, k=dy.size // shape[axis], what="bias_act_backward db in place")


# --------------------------------------------------------------------------- relu_mask
_SPECIALS = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -1e-300, 5e-324]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", [(7,), (3, 5, 4), (1, 300007)], ids=lambda v: str(v))
def test_relu_mask_bitwise_equal_to_reference(backend, shape, dtype):
    """relu_mask / relu_mask_backward are selects: every backend gives the reference's bits
    (+0.0 where x <= 0, -0.0 included; NaN and its sign kept), past the threading threshold
    and on odd tails, in place too."""
    rng = _rng("relu_mask", shape)
    x = rand(rng, shape, dtype)
    flat = x.reshape(-1)
    flat[:: 11] = 0.0
    flat[: len(_SPECIALS)] = np.array(_SPECIALS[: flat.size], dtype=dtype)
    y, m = ops.relu_mask(x)
    ry, rm = reference(ops.relu_mask, x)
    assert_bitwise(y, ry, what="relu_mask y")
    assert m.dtype == np.bool_ and np.array_equal(m, rm)
    dy = rand(rng, shape, dtype)
    dy.reshape(-1)[1::13] = np.nan
    dx = ops.relu_mask_backward(dy, m)
    assert_bitwise(dx, reference(ops.relu_mask_backward, dy, rm), what="relu_mask_backward")
    xin, mout = x.copy(), np.ones(shape, np.bool_)
    yin, mret = ops.relu_mask(xin, out=xin, mask=mout)
    assert yin is xin and mret is mout
    assert_bitwise(xin, ry, what="relu_mask in place")
    assert np.array_equal(mout, rm)
    dyin = dy.copy()
    assert ops.relu_mask_backward(dyin, m, out=dyin) is dyin
    assert_bitwise(dyin, dx, what="relu_mask_backward in place")


def test_relu_mask_bad_input():
    x = np.ones((3, 4), np.float32)
    m = np.zeros((3, 4), np.bool_)
    with pytest.raises(TypeError, match="mask must be a numpy bool array"):
        ops.relu_mask(x, mask=np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match=r"mask must .*shape \(3, 4\)"):
        ops.relu_mask(x, mask=np.zeros((4, 3), np.bool_))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.relu_mask(x, mask=np.zeros((4, 3), np.bool_).T)
    with pytest.raises(TypeError, match="out has dtype"):
        ops.relu_mask(x, out=np.ones((3, 4), np.float64))
    with pytest.raises(TypeError, match="dtype float32 or float64"):
        ops.relu_mask(np.ones(3, np.int32))
    with pytest.raises(TypeError, match="mask must be a numpy bool array"):
        ops.relu_mask_backward(x, m.astype(np.int8))
    with pytest.raises(TypeError, match="mask must be a numpy bool array"):
        ops.relu_mask_backward(x, [[True] * 4] * 3)
    with pytest.raises(ValueError, match="mask"):
        ops.relu_mask_backward(x, m[:2])
    with pytest.raises(ValueError, match="out"):
        ops.relu_mask_backward(x, m, out=np.ones((4, 3), np.float32))


# --------------------------------------------------------------------------- out=
def test_out_arguments_write_in_place(backend):
    """Every op with ``out=`` writes into the given arrays, returns them, and gives
    exactly the result it gives without ``out`` (same backend, same inputs)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 9, 8, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    y = ops.conv2d_forward(x, w, b, padding="same", activation="relu")
    buf = np.full_like(y, np.nan)
    assert ops.conv2d_forward(x, w, b, padding="same", activation="relu", out=buf) is buf
    np.testing.assert_array_equal(buf, y)

    dy = rng.standard_normal(y.shape).astype(np.float32)
    ref = ops.conv2d_backward(dy, x, w, padding="same")
    bufs = (np.full_like(x, np.nan), np.full_like(w, np.nan), np.full_like(b, np.nan))
    got = ops.conv2d_backward(dy, x, w, padding="same", out=bufs)
    for g, r, o in zip(got, ref, bufs):
        assert g is o
        np.testing.assert_array_equal(g, r)
    dx, dw, db = ops.conv2d_backward(dy, x, w, padding="same", need_dx=False,
                                     out=(None, bufs[1], None))
    assert dx is None and dw is bufs[1]
    np.testing.assert_array_equal(dw, ref[1])

    p, a = ops.maxpool2d_forward(x, 2)
    pb, ab = np.full_like(p, np.nan), np.full(p.shape, -1, np.int64)
    got = ops.maxpool2d_forward(x, 2, out=(pb, ab))
    assert got[0] is pb and got[1] is ab
    np.testing.assert_array_equal(pb, p)
    np.testing.assert_array_equal(ab, a)
    dxb = np.full_like(x, np.nan)
    assert ops.maxpool2d_backward(p, a, x.shape, 2, out=dxb) is dxb
    np.testing.assert_array_equal(dxb, ops.maxpool2d_backward(p, a, x.shape, 2))

    q = ops.avgpool2d_forward(x, 2, padding="same")
    qb = np.full_like(q, np.nan)
    assert ops.avgpool2d_forward(x, 2, padding="same", out=qb) is qb
    np.testing.assert_array_equal(qb, q)
    dxb = np.full_like(x, np.nan)
    assert ops.avgpool2d_backward(q, x.shape, 2, padding="same", out=dxb) is dxb
    np.testing.assert_array_equal(dxb, ops.avgpool2d_backward(q, x.shape, 2, padding="same"))


def test_elementwise_ops_in_place_and_exact_views(backend):
    """The elementwise ops accept ``out`` being their input itself, or another view of
    exactly its memory, and give the result they give out of place; a partly overlapping
    ``out`` is rejected (tests/test_bad_input.py)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    dy = rng.standard_normal((6, 5)).astype(np.float32)
    y = ops.bias_act(x, b, "relu")
    dx, db = ops.bias_act_backward(dy, y, "relu")
    rm, mask = ops.relu_mask(x)
    rmb = ops.relu_mask_backward(dy, mask)

    a = x.copy()
    assert ops.bias_act(a, b, "relu", out=a) is a
    np.testing.assert_array_equal(a, y)
    a = x.copy()
    view = a.reshape(-1).reshape(a.shape)  # another object over exactly a's memory
    assert ops.bias_act(a, b, "relu", out=view) is view
    np.testing.assert_array_equal(a, y)
    for alias in ("dy", "y"):
        d, yy = dy.copy(), y.copy()
        o = d if alias == "dy" else yy
        got, gdb = ops.bias_act_backward(d, yy, "relu", out=o)
        assert got is o
        np.testing.assert_array_equal(got, dx)
        np.testing.assert_allclose(gdb, db, rtol=1e-6, atol=1e-6)
    a = x.copy()
    got, m = ops.relu_mask(a, out=a)
    assert got is a
    np.testing.assert_array_equal(a, rm)
    np.testing.assert_array_equal(m, mask)
    d = dy.copy()
    assert ops.relu_mask_backward(d, mask, out=d) is d
    np.testing.assert_array_equal(d, rmb)


def test_out_arguments_are_checked():
    x = np.ones((2, 6, 6, 3), np.float32)
    w = np.ones((3, 3, 3, 4), np.float32)
    y = ops.conv2d_forward(x, w)
    with pytest.raises(ValueError, match="out must be an array of shape"):
        ops.conv2d_forward(x, w, out=np.empty((2, 4, 4, 5), np.float32))
    with pytest.raises(TypeError, match="out has dtype float64"):
        ops.conv2d_forward(x, w, out=np.empty(y.shape, np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.conv2d_forward(x, w, out=np.empty((2, 4, 4, 8), np.float32)[..., ::2])
    big = np.zeros(x.size + y.size, np.float32)
    xa = big[:x.size].reshape(x.shape)
    with pytest.raises(ValueError, match="must not overlap"):
        ops.conv2d_forward(xa, w, out=big[x.size - 1:x.size - 1 + y.size].reshape(y.shape))
    with pytest.raises(TypeError, match="tuple of 3 arrays"):
        ops.conv2d_backward(y, x, w, out=np.empty_like(x))
    with pytest.raises(TypeError, match="tuple of 2 arrays"):
        ops.maxpool2d_forward(x, 2, out=(np.empty((2, 3, 3, 3), np.float32),))
    with pytest.raises(TypeError, match=r"out\[1\] \(argmax\) has dtype int32"):
        ops.maxpool2d_forward(x, 2, out=(None, np.empty((2, 3, 3, 3), np.int32)))
    dy = np.ones((2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="must not overlap"):
        ops.avgpool2d_backward(dy, (2, 3, 3, 3), 1, out=dy)


# --------------------------------------------------------------------------- softmax xent
XENT_CASES = [(1, 1), (1, 10), (7, 3), (32, 10), (257, 7), (3, 300), (2000, 10),
              (7001, 10)]  # (the last past the Numba backend's serial cutoff)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("sparse", [True, False], ids=["labels", "dense"])
@pytest.mark.parametrize("n,k", XENT_CASES, ids=str)
def test_softmax_cross_entropy(backend, n, k, sparse, dtype):
    """Against the reference: probs, loss (sums of K terms of size up to 1 + |s|) and dz;
    a NaN row and (sparse) rows whose label is the largest or smallest class."""
    rng = _rng("xent", n, k, sparse)
    z = (rng.standard_normal((n, k)) * 4).astype(dtype)
    labels = rng.integers(0, k, n)
    labels[0], labels[-1] = 0, k - 1
    target = labels if sparse else rng.uniform(0, 1, (n, k)).astype(dtype)
    if n > 2:
        z[1, k // 2] = np.nan
    got = ops.softmax_cross_entropy(z, target, scale=1.0 / n)
    ref = reference(ops.softmax_cross_entropy, z, target, scale=1.0 / n)
    scale = 1 + 2 * absmax(z)
    for g, r, what in zip(got, ref, ("probs", "loss", "dz")):
        assert_close(g, r, k=k, scale=scale if what == "loss" else 1.0, what=what)
    if n > 2:
        assert np.isnan(got[1][1]) and np.isfinite(got[1][2:]).all()


def test_softmax_cross_entropy_out_and_bad_input(backend):
    z = np.zeros((4, 3), np.float32)
    out = (np.empty((4, 3), np.float32), np.empty(4, np.float32), np.empty((4, 3), np.float32))
    res = ops.softmax_cross_entropy(z, np.array([0, 1, 2, 0]), out=out)
    assert all(a is b for a, b in zip(res, out))
    np.testing.assert_allclose(out[1], np.log(3.0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        ops.softmax_cross_entropy(z, np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="labels must be in"):
        ops.softmax_cross_entropy(z, np.array([0, -1, 2, 0]))
    with pytest.raises(ValueError, match=r"target must have shape \(4,\)"):
        ops.softmax_cross_entropy(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"target must have shape \(4, 3\)"):
        ops.softmax_cross_entropy(z, np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match="float64"):
        ops.softmax_cross_entropy(z, np.zeros((4, 3)))
    with pytest.raises(TypeError, match="integer labels or float targets"):
        ops.softmax_cross_entropy(z, np.array(["a"] * 4))
    with pytest.raises(ValueError, match="at least one class"):
        ops.softmax_cross_entropy(np.zeros((4, 0), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="must be 2-D"):
        ops.softmax_cross_entropy(np.zeros(4, np.float32), np.zeros(4, np.int64))
    with pytest.raises(TypeError, match="scale must be a real number"):
        ops.softmax_cross_entropy(z, np.zeros(4, np.int64), scale="1")
    with pytest.raises(ValueError, match="must not overlap"):
        ops.softmax_cross_entropy(z, np.zeros(4, np.int64), out=(out[0], None, out[0]))
    with pytest.raises(ValueError, match="must not overlap"):
        ops.softmax_cross_entropy(z, np.zeros(4, np.int64), out=(z, None, None))
    empty = ops.softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64))
    assert [a.shape for a in empty] == [(0, 3), (0,), (0, 3)]


# --------------------------------------------------------------------------- adam_update
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad", [False, True])
# odd tails for vector loops, one side and the other of the thread cutoffs (the C
# backend's, Numba's 65536)
@pytest.mark.parametrize("n", [10007, 70001])
def test_adam_update_bitwise_equal_to_reference(backend, dtype, amsgrad, n):
    """The fused kernel does the reference's operations in the same order and dtype, so
    every backend matches it bit for bit over several steps (NaN included)."""
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(n).astype(dtype)
    state = [p0.copy(), np.zeros(n, dtype), np.zeros(n, dtype),
             np.zeros(n, dtype) if amsgrad else None]
    ref_state = [a.copy() if a is not None else None for a in state]
    for t in range(1, 5):
        g = rng.standard_normal(n).astype(dtype)
        g[t] = np.nan
        alpha = 1e-3 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        p, m, v, vh = state
        ops.adam_update(p, g, m, v, alpha=alpha, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                        v_hat=vh)
        with fastnn.use_backend("numpy"):
            p, m, v, vh = ref_state
            ops.adam_update(p, g, m, v, alpha=alpha, beta_1=0.9, beta_2=0.999,
                            epsilon=1e-7, v_hat=vh)
    for got, ref in zip(state, ref_state):
        if ref is not None:
            np.testing.assert_array_equal(got, ref)
    assert np.isnan(state[0][1:5]).all() and np.isfinite(state[0][5:]).all()


def test_adam_update_reference_formula():
    """The reference against the formula written out in float64 scalars."""
    p, g = np.array([0.5, -1.0]), np.array([0.1, -3.0])
    m, v = np.array([0.2, 0.0]), np.array([0.01, 0.5])
    with fastnn.use_backend("numpy"):
        ops.adam_update(p, g, m, v, alpha=0.01, beta_1=0.8, beta_2=0.9, epsilon=1e-3)
    m_ref = np.array([0.2 + (0.1 - 0.2) * 0.2, (-3.0) * 0.2])
    v_ref = np.array([0.01 + (0.01 - 0.01) * 0.1, 0.5 + (9.0 - 0.5) * 0.1])
    np.testing.assert_allclose(m, m_ref, rtol=1e-15)
    np.testing.assert_allclose(v, v_ref, rtol=1e-15)
    np.testing.assert_allclose(p, [0.5, -1.0] - 0.01 * m_ref / (np.sqrt(v_ref) + 1e-3),
                               rtol=1e-15)


def test_adam_update_bad_input():
    a = np.zeros(4, np.float32)
    b, c, d = np.zeros_like(a), np.zeros_like(a), np.zeros_like(a)
    with pytest.raises(TypeError, match="grad must be float32 or float64"):
        ops.adam_update(a, np.zeros(4, np.int64), c, d, alpha=0.1)
    with pytest.raises(TypeError, match="float64"):
        ops.adam_update(a, b.astype(np.float64), c, d, alpha=0.1)
    with pytest.raises(ValueError, match="m has shape"):
        ops.adam_update(a, b, np.zeros(5, np.float32), d, alpha=0.1)
    with pytest.raises(ValueError, match="param and m overlap"):
        ops.adam_update(a, b, a, d, alpha=0.1)
    with pytest.raises(ValueError, match="beta_1 and beta_2 must be in"):
        ops.adam_update(a, b, c, d, alpha=0.1, beta_1=1.0)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        ops.adam_update(a, b, c, d, alpha="0.1")
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="v must be writeable"):
        ops.adam_update(a, b, c, ro, alpha=0.1)
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.adam_update(np.zeros(8, np.float32)[::2], b, c, d, alpha=0.1)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_adam_update_flush_subnormal(backend, dtype):
    """flush_subnormal=True stores m and v below the smallest normal number as +0: a
    subnormal m with a zero gradient otherwise sticks (0.9 m rounds back to m, the
    formula's exact result, kept by the default); where every value is normal the result
    is bitwise the unflushed one, NaN propagates, and each backend matches the
    reference."""
    f = np.dtype(dtype).type
    sub = f(4) * np.finfo(dtype).smallest_subnormal
    assert sub + (f(0) - sub) * f(0.1) == sub                   # the sticking point
    n = 10007
    rng = np.random.default_rng(12)
    p0 = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 1e-3).astype(dtype)
    m0 = (rng.standard_normal(n) * 1e-3).astype(dtype)
    v0 = np.abs(rng.standard_normal(n) * 1e-6).astype(dtype)
    g[:40] = 0                                  # zero gradients with subnormal moments:
    m0[:20], m0[20:40] = sub, -sub              # m stuck, of either sign
    v0[:40] = np.finfo(dtype).tiny / f(4)       # v subnormal
    g[50] = np.nan
    kw = dict(alpha=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    results = {}
    for flush in (False, True):
        for ref in (False, True):
            p, m, v = p0.copy(), m0.copy(), v0.copy()
            with fastnn.use_backend("numpy" if ref else backend):
                ops.adam_update(p, g, m, v, flush_subnormal=flush, **kw)
            results[flush, ref] = (p, m, v)
    for flush in (False, True):
        for got, want in zip(results[flush, False], results[flush, True]):
            np.testing.assert_array_equal(got, want)
    p, m, v = results[True, False]
    assert (m[:40] == 0).all() and not np.signbit(m[:40]).any()
    assert (v[:40] == 0).all() and not np.signbit(v[:40]).any()
    np.testing.assert_array_equal(p[:40], p0[:40])
    assert np.isnan(p[50]) and np.isnan(m[50]) and np.isnan(v[50])
    kept_p, kept_m, kept_v = results[False, False]
    np.testing.assert_array_equal(kept_m[:20], sub)             # without: stuck
    for a, b in zip((p, m, v), (kept_p, kept_m, kept_v)):       # the normal elements
        np.testing.assert_array_equal(a[40:], b[40:])
    with pytest.raises(TypeError, match="flush_subnormal must be a bool"):
        ops.adam_update(p, g, m, v, flush_subnormal=1, **kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_adam_update_flush_with_a_subnormal_epsilon(backend, dtype):
    """A subnormal epsilon is a value, not a zero: the C backend's flush-to-zero mode
    would read it as 0 (0 / 0 = NaN where v is 0, -inf where m is not), so it stays off
    then, and every backend gives the reference's finite step."""
    eps = float(np.finfo(dtype).tiny) / 1e3
    results = []
    for name in (backend, "numpy"):
        p, g = np.ones(3, dtype), np.zeros(3, dtype)
        m, v = np.array([0, 1e-3, 0], dtype), np.zeros(3, dtype)
        with fastnn.use_backend(name):
            ops.adam_update(p, g, m, v, alpha=1e-3, epsilon=eps, flush_subnormal=True)
        results.append(p)
    assert np.isfinite(results[0]).all()
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_update_epsilon_zero_divides_by_zero_as_the_reference(backend, dtype, amsgrad):
    """epsilon = 0 is allowed: where v (or v_hat) is 0 the step divides by 0, giving NaN
    (0 / 0: a zero gradient) or -inf / inf (m not 0, v flushed), as the reference does,
    and never an exception (Numba's default error model raised ZeroDivisionError)."""
    results = []
    for name in (backend, "numpy"):
        p, g = np.ones(4, dtype), np.array([0, 0, 1, -1], dtype)
        m, v = np.array([0, 1e-3, 0, 0], dtype), np.zeros(4, dtype)
        vh = np.zeros(4, dtype) if amsgrad else None
        with fastnn.use_backend(name):
            ops.adam_update(p, g, m, v, alpha=1e-3, beta_2=0.0, epsilon=0.0, v_hat=vh)
        results.append(p)
    np.testing.assert_array_equal(results[0], results[1])
    assert np.isnan(results[1][0]) and results[1][1] == -np.inf


def test_adam_update_flush_mode_ends_with_the_call(restore_threads):
    """The C backend's flush-to-zero mode is on only inside the call, on each thread that
    ran it: afterwards subnormal values go through a kernel on both OpenMP threads (relu
    keeps them: a denormals-are-zero compare would call them 0), NumPy on this thread,
    and an unflushed Adam (its stuck m stays) as before."""
    require_backend("c")
    fastnn.set_num_threads(2)
    n = 1 << 20
    rng = np.random.default_rng(13)
    with fastnn.use_backend("c"):
        state = [rng.standard_normal(n).astype(np.float32) * np.float32(1e-3)
                 for _ in range(4)]
        state[3] = np.abs(state[3])
        ops.adam_update(*state, alpha=1e-3, flush_subnormal=True)
        tiny = np.finfo(np.float32).smallest_subnormal
        x = np.full(n, 3 * tiny, np.float32)
        x[1::2] *= -1
        y, mask = ops.relu_mask(x)
        np.testing.assert_array_equal(y, np.where(x > 0, x, np.float32(0)))
        assert (y[::2] != 0).all() and (~mask[::2]).all()
        m = np.full(n, 4 * tiny, np.float32)
        ops.adam_update(state[0], np.zeros(n, np.float32), m, np.zeros(n, np.float32),
                        alpha=1e-3)
        assert (m == 4 * tiny).all()
    assert np.float32(np.finfo(np.float32).tiny) * np.float32(0.5) != 0


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("n,c,hw,f", [(1, 2, 32, 256), (3, 7, 1, 8), (2, 13, 1, 16),
                                      (1, 1, 23, 4), (4, 3, 9, 40)])
def test_nchw_pointwise_backward_workspace(backend, dtype, n, c, hw, f):
    """The NCHW 1x1 convolution's backward computes dx (c x hw) = w^T dy per image, a
    GEMM whose workspace grows with hw; it was sized for the (hw x c x f) product of the
    other convolutions (gemm_ws is not symmetric in m and n) and overran it: 2 channels of
    32 x 32 with 256 filters asked 18448 elements and needed 284736 (a segfault; heap
    corruption in training). Under the guarded workspace (conftest), against the reference,
    through conv2d_backward and the pooled backward that falls back to it."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c, hw, hw)).astype(dtype)
    w = rng.standard_normal((f, c, 1, 1)).astype(dtype)
    dy = rng.standard_normal((n, f, hw, hw)).astype(dtype)
    got = ops.conv2d_backward(dy, x, w, layout="NCHW")
    with fastnn.use_backend("numpy"):
        want = ops.conv2d_backward(dy, x, w, layout="NCHW")
    tol = dict(rtol=2e-4, atol=2e-4 * f) if dtype == np.float32 else dict(rtol=1e-10,
                                                                          atol=1e-10 * f)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, **tol)
    if hw >= 2:
        y, arg = ops.conv2d_maxpool_forward(x, w, layout="NCHW")
        dp = rng.standard_normal(y.shape).astype(dtype)
        got = ops.conv2d_maxpool_backward(dp, arg, x, w, layout="NCHW")
        with fastnn.use_backend("numpy"):
            want = ops.conv2d_maxpool_backward(dp, arg, x, w, layout="NCHW")
        for g, r in zip(got, want):
            np.testing.assert_allclose(g, r, **tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("limit", [None, 300_000], ids=["one-chunk", "chunked"])
def test_conv_workspace_covers_every_block_length(backend, layout, dtype, limit,
                                                  restore_workspace_limit):
    """A GEMM's workspace is not monotone in its sizes: the NCHW backward's last block of
    9 images (double 16 x 72 x 441) asked more than its full blocks of 11 (16 x 72 x 539),
    and sizing for the full block alone overran the workspace (heap corruption, a crash
    with 64 images). The guarded workspace (conftest) fails on any overrun; the results
    match the reference."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 17, 15, 8)).astype(dtype)
    w = rng.standard_normal((3, 3, 8, 16)).astype(dtype)
    if layout == "NCHW":
        x, w = x.transpose(0, 3, 1, 2).copy(), w.transpose(3, 2, 0, 1).copy()
    if limit:
        ops.set_workspace_limit(limit)
    geo = dict(stride=2, padding=((1, 0), (0, 2)), dilation=2, layout=layout)
    y = ops.conv2d_forward(x, w, **geo)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = ops.conv2d_backward(dy, x, w, **geo)
    with fastnn.use_backend("numpy"):
        want_y = ops.conv2d_forward(x, w, **geo)
        want = ops.conv2d_backward(dy, x, w, **geo)
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y, want_y, **tol)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, **tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_conv_maxpool_backward_read_only_input(backend, dtype):
    """A read-only x (np.load with mmap_mode="r", np.frombuffer) in the fused convolution +
    pooling backward without dx: the Numba backend's placeholder for dx was a view of x,
    and Numba refused the kernel (a TypingError) even though it never writes there."""
    rng = _rng("ro", dtype)
    x = rand(rng, (2, 4, 4, 8), dtype)
    w = rand(rng, (3, 3, 8, 2), dtype)
    x.setflags(write=False)
    with fastnn.use_backend("numpy"):
        y, am = ops.conv2d_maxpool_forward(x, w, padding="same")
        ref = ops.conv2d_maxpool_backward(np.ones_like(y), am, x, w, padding="same",
                                          need_dx=False)
    with fastnn.use_backend(backend):
        got = ops.conv2d_maxpool_backward(np.ones_like(y), am, x, w, padding="same",
                                          need_dx=False)
    assert got[0] is None
    for g, r, what in zip(got[1:], ref[1:], ("dw", "db")):
        assert_close(g, r, k=2 * 4 * 4, scale=absmax(x) + 1.0, what=what)


def test_matmul_beta_rounding_to_zero_is_zero(backend):
    """A beta that is 0 in float32 (1e-50) does not read out, in every backend (the
    reference tested the Python float and propagated NaN from out; C and Numba did not)."""
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 2), np.float32)
    out = np.full((2, 2), np.nan, np.float32)
    with fastnn.use_backend(backend):
        got = ops.matmul(a, b, beta=1e-50, out=out)
    np.testing.assert_array_equal(got, np.full((2, 2), 3.0, np.float32))


def test_conv_geometry_memo_gives_what_it_computes():
    """conv_geometry keeps its results by argument (fastnn.ops._geometry._MEMO): a kept
    result is the one computing it gives, an argument only equal to a kept one (2.0, True,
    a numpy int) still gets its own checks, errors are never kept, and the store is
    bounded."""
    from fastnn.ops import _geometry as G

    G._MEMO.clear()
    args = ((8, 13, 13, 32), 3, 1, "valid", 1)
    first = G.conv_geometry(*args, layout="NHWC")
    assert G._MEMO and G.conv_geometry(*args, layout="NHWC") is first
    assert first == G._conv_geometry(*args, "NHWC", False)
    assert G.conv_geometry(*args, layout="NCHW") != first    # the layout is in the key
    with pytest.raises(TypeError, match=r"\bkernel_size must be an int or a pair"):
        G.conv_geometry((8, 13, 13, 32), 3.0, 1, "valid", 1)
    with pytest.raises(TypeError, match=r"\bstride must be an int or a pair"):
        G.conv_geometry((8, 13, 13, 32), 3, True, "valid", 1)
    assert G.conv_geometry((8, 13, 13, 32), np.int64(3), 1, "valid", 1) == first
    for _ in range(2):   # an error, asked twice, raises twice
        with pytest.raises(ValueError, match=r"\bkernel_size=\(30, 30\)"):
            G.conv_geometry((8, 13, 13, 32), 30, 1, "valid", 1)
    for n in range(G._MEMO_MAX + 10):
        assert G.conv_geometry((n + 1, 13, 13, 32), 3, 1, "valid", 1).n == n + 1
    assert len(G._MEMO) <= G._MEMO_MAX


# =========================================================================== batch norm
BN_CASES = BIAS_CASES + [
    # several channel blocks of 64 and row pieces of the C backend's channels-last sums
    ((1000, 130), -1), ((64, 1), -1), ((129, 7, 3), 1), ((5, 200), 1)]


def _bn_inputs(rng, shape, axis, dtype, offset=3.0):
    c = shape[axis]
    x = (offset + rand(rng, shape, dtype) * rand(rng, (c,), dtype, 0.5, 2.0).reshape(
        [c if i == axis % len(shape) else 1 for i in range(len(shape))])).astype(dtype)
    return x, rand(rng, (c,), dtype, 0.5, 2.0), rand(rng, (c,), dtype), rand(rng, shape, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape,axis", BN_CASES, ids=lambda v: str(v))
def test_batchnorm(backend, shape, axis, dtype):
    rng = _rng("bn", shape, axis)
    x, gamma, beta, dy = _bn_inputs(rng, shape, axis, dtype)
    n = x.size // shape[axis]
    mean, var = ops.batchnorm_stats(x, channel_axis=axis)
    rmean, rvar = reference(ops.batchnorm_stats, x, channel_axis=axis)
    assert_close(mean, rmean, k=n, scale=absmax(x), what="batchnorm mean")
    assert_close(var, rvar, k=n, scale=absmax(x - rmean.reshape(
        [-1 if i == axis % x.ndim else 1 for i in range(x.ndim)])) ** 2, what="batchnorm var")
    inv = (1 / np.sqrt(rvar + dtype(1e-3))).astype(dtype)
    for g, b in ((gamma, beta), (None, None), (gamma, None), (None, beta)):
        y = ops.batchnorm_forward(x, rmean, inv, g, b, channel_axis=axis)
        ry = reference(ops.batchnorm_forward, x, rmean, inv, g, b, channel_axis=axis)
        assert_close(y, ry, k=3, scale=absmax(ry), what=f"batchnorm_forward {g is None}"
                                                         f" {b is None}")
    for g in (gamma, None):
        for training in (True, False):
            got = ops.batchnorm_backward(dy, x, rmean, inv, g, channel_axis=axis,
                                         training=training)
            want = reference(ops.batchnorm_backward, dy, x, rmean, inv, g,
                             channel_axis=axis, training=training)
            what = f"batchnorm_backward gamma={g is not None} training={training}"
            assert_close(got[0], want[0], k=n, scale=absmax(want[0]), what=what + " dx")
            assert_close(got[1], want[1], k=n, scale=absmax(dy) * absmax(x) * absmax(inv),
                         what=what + " dgamma")
            assert_close(got[2], want[2], k=n, scale=absmax(dy), what=what + " dbeta")
    none = ops.batchnorm_backward(dy, x, rmean, inv, gamma, channel_axis=axis,
                                  need_param_grads=False)
    assert none[1] is None and none[2] is None


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape,axis", [((300, 257), -1), ((3, 70, 20, 17), 1)],
                         ids=lambda v: str(v))
def test_batchnorm_in_place_and_thread_independent(backend, shape, axis, dtype,
                                                   restore_threads):
    """out=x (forward) and out=dy (backward) give what separate outputs give; the sums do
    not depend on the thread count (bit for bit)."""
    rng = _rng("bnip", shape, axis)
    x, gamma, beta, dy = _bn_inputs(rng, shape, axis, dtype)
    mean, var = ops.batchnorm_stats(x, channel_axis=axis)
    inv = (1 / np.sqrt(var + dtype(1e-3))).astype(dtype)
    y = ops.batchnorm_forward(x, mean, inv, gamma, beta, channel_axis=axis)
    xin = x.copy()
    assert ops.batchnorm_forward(xin, mean, inv, gamma, beta, channel_axis=axis,
                                 out=xin) is xin
    assert_bitwise(xin, y, what="batchnorm_forward out=x")
    dx, dg, db = ops.batchnorm_backward(dy, x, mean, inv, gamma, channel_axis=axis)
    dyin = dy.copy()
    got = ops.batchnorm_backward(dyin, x, mean, inv, gamma, channel_axis=axis, out=dyin)
    assert got[0] is dyin
    assert_bitwise(dyin, dx, what="batchnorm_backward out=dy")
    fastnn.set_num_threads(1)
    m1, v1 = ops.batchnorm_stats(x, channel_axis=axis)
    dx1, dg1, db1 = ops.batchnorm_backward(dy, x, mean, inv, gamma, channel_axis=axis)
    for a, b, what in ((m1, mean, "mean"), (v1, var, "var"), (dx1, dx, "dx"),
                       (dg1, dg, "dgamma"), (db1, db, "dbeta")):
        assert_bitwise(a, b, what=f"1 thread vs 2: {what}")


# (N, H, W, C): odd sizes (a last row / column no window reads), channel blocks of 64,
# no whole window at all, and a CNN's first block
BN_POOL_SHAPES = [(2, 5, 7, 3), (3, 8, 6, 130), (1, 1, 5, 4), (4, 26, 26, 32)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", BN_POOL_SHAPES, ids=lambda v: str(v))
def test_batchnorm_maxpool(backend, shape, dtype):
    """batchnorm_maxpool_forward: the reference's maximum, window position and x there
    bit for bit (negative gammas pool the minimum of x); the backward as batchnorm_backward
    of the pooling's scattered gradient, to the sums' rounding."""
    rng = _rng("bnpool", shape)
    x, gamma, beta, _ = _bn_inputs(rng, shape, -1, dtype)
    gamma = gamma * np.where(np.arange(shape[-1]) % 3 == 1, -1, 1).astype(dtype)
    n = x.size // shape[-1]
    mean, var = ops.batchnorm_stats(x)
    inv = (1 / np.sqrt(var + dtype(1e-3))).astype(dtype)
    for g, b in ((gamma, beta), (None, None), (gamma, None), (None, beta)):
        got = ops.batchnorm_maxpool_forward(x, mean, inv, g, b)
        want = reference(ops.batchnorm_maxpool_forward, x, mean, inv, g, b)
        assert_bitwise(got[0], want[0], what="batchnorm_maxpool_forward y")
        if got[0].size:
            chain = ops.maxpool2d_forward(ops.batchnorm_forward(
                x[:, :shape[1] // 2 * 2, :shape[2] // 2 * 2], mean, inv, g, b), 2)[0]
            assert_bitwise(got[0], chain, what="batchnorm_maxpool_forward y vs the chain")
        assert got[1].dtype == np.uint8 and np.array_equal(got[1], want[1])
        assert_bitwise(got[2], want[2], what="batchnorm_maxpool_forward x_max")
    y, pos, xm = ops.batchnorm_maxpool_forward(x, mean, inv, gamma, beta)
    dy = rand(rng, y.shape, dtype)
    for g in (gamma, None):
        for training in (True, False):
            got = ops.batchnorm_maxpool_backward(dy, pos, xm, x, mean, inv, g,
                                                 training=training)
            want = reference(ops.batchnorm_maxpool_backward, dy, pos, xm, x, mean, inv, g,
                             training=training)
            what = f"batchnorm_maxpool_backward gamma={g is not None} training={training}"
            assert_close(got[0], want[0], k=n, scale=absmax(want[0]), what=what + " dx")
            assert_close(got[1], want[1], k=n, scale=absmax(dy) * absmax(x) * absmax(inv),
                         what=what + " dgamma")
            assert_close(got[2], want[2], k=n, scale=absmax(dy), what=what + " dbeta")
    none = ops.batchnorm_maxpool_backward(dy, pos, xm, x, mean, inv, gamma,
                                          need_param_grads=False)
    assert none[1] is None and none[2] is None


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_batchnorm_maxpool_nan_threads_and_bad_positions(backend, dtype, restore_threads):
    """NaN wins its window (the first one), as in maxpool2d_forward, and propagates into
    its channel's gradients; the results do not depend on the thread count (bit for bit);
    a window position above 3 is refused with a ValueError."""
    rng = _rng("bnpool-nan")
    x, gamma, beta, _ = _bn_inputs(rng, (5, 12, 9, 70), -1, dtype)
    mean, var = ops.batchnorm_stats(x)
    inv = (1 / np.sqrt(var + dtype(1e-3))).astype(dtype)
    x[1, 3, 4, 5] = np.nan
    y, pos, xm = ops.batchnorm_maxpool_forward(x, mean, inv, gamma, beta)
    assert np.isnan(y[1, 1, 2, 5]) and pos[1, 1, 2, 5] == 2 and np.isnan(xm[1, 1, 2, 5])
    assert np.isnan(y).sum() == 1
    dy = rand(rng, y.shape, dtype)
    dx, dg, db = ops.batchnorm_maxpool_backward(dy, pos, xm, x, mean, inv, gamma)
    assert np.isnan(dg[5]) and np.isnan(dx[..., 5]).all()
    assert not np.isnan(np.delete(dg, 5)).any() and not np.isnan(np.delete(dx, 5, 3)).any()
    # the moving statistics' backward, a * dy, reads no x: an infinite one gives no NaN
    xinf = np.where(np.isnan(x), np.inf, x).astype(dtype)
    assert np.isfinite(ops.batchnorm_maxpool_backward(dy, pos, xm, xinf, mean, inv, gamma,
                                                      training=False)[0]).all()
    fastnn.set_num_threads(1)
    one = ops.batchnorm_maxpool_forward(x, mean, inv, gamma, beta)
    dx1, dg1, db1 = ops.batchnorm_maxpool_backward(dy, pos, xm, x, mean, inv, gamma)
    assert_bitwise(one[0], y, what="1 thread vs 2: y")
    assert np.array_equal(one[1], pos)
    for a, b, what in ((dx1, dx, "dx"), (dg1, dg, "dgamma"), (db1, db, "dbeta")):
        assert_bitwise(a, b, what=f"1 thread vs 2: {what}")
    bad = pos.copy()
    bad[4, 5, 3, 69] = 4
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        ops.batchnorm_maxpool_backward(dy, bad, xm, x, mean, inv, gamma)
    with pytest.raises(TypeError, match="pos must be the uint8"):
        ops.batchnorm_maxpool_backward(dy, pos.astype(np.int64), xm, x, mean, inv, gamma)
    with pytest.raises(ValueError, match="dy"):
        ops.batchnorm_maxpool_backward(dy[:, :-1], pos, xm, x, mean, inv, gamma)
    with pytest.raises(ValueError, match="x_max"):
        ops.batchnorm_maxpool_backward(dy, pos, xm[:1], x, mean, inv, gamma)
    with pytest.raises(ValueError, match="gamma"):
        ops.batchnorm_maxpool_forward(x, mean, inv, gamma[:3], beta)
    with pytest.raises(TypeError, match="mean and inv_std"):
        ops.batchnorm_maxpool_forward(x, None, inv)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_batchnorm_offset_mean_variance(backend, dtype):
    """A channel whose mean is 1e4 times its spread: the variance from sums of shifted
    values stays exact to the dtype (sum(x^2) / n - mean^2 in float64 alone would lose
    8 of its digits)."""
    rng = _rng("bnoff")
    x = (1e4 + rng.uniform(-1, 1, (4096, 3))).astype(dtype)
    xd = x.astype(np.float64)
    want = ((xd - xd.mean(axis=0)) ** 2).mean(axis=0)
    _, var = ops.batchnorm_stats(x)
    np.testing.assert_allclose(var, want, rtol=tolerance(dtype)["rtol"])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_batchnorm_nan_and_empty(backend, dtype):
    x = np.ones((8, 5), dtype)
    x[3, 1] = np.nan
    x[:, 2] = np.arange(8)
    x[0, 3], x[5, 4] = np.inf, -np.inf   # first element (the sums' shift) or not
    with np.errstate(invalid="ignore"):   # (the reference's NumPy warns of inf - inf)
        mean, var = ops.batchnorm_stats(x)
        rmean, rvar = reference(ops.batchnorm_stats, x)
    assert_same(mean, rmean, what="batchnorm_stats mean with NaN and inf")
    assert_same(var, rvar, what="batchnorm_stats var with NaN and inf")
    assert np.isnan(mean[1]) and np.isnan(var[1])
    assert mean[3] == np.inf and mean[4] == -np.inf and np.isnan(var[3:]).all()
    assert mean[2] == 3.5 and var[2] == 5.25 and mean[0] == 1 and var[0] == 0
    x[0, 3], x[5, 4] = 1, 1
    mean = np.where(np.isfinite(mean), mean, 0).astype(dtype)
    mean[1] = np.nan
    inv = np.ones(5, dtype)
    y = ops.batchnorm_forward(x, np.where(np.isnan(mean), 0, mean).astype(dtype), inv)
    assert np.isnan(y[3, 1]) and np.isfinite(np.delete(y, 1, axis=1)).all()
    dx, dg, db = ops.batchnorm_backward(np.ones((8, 5), dtype), x, mean, inv)
    assert np.isnan(dx[:, 1]).all() and np.isfinite(np.delete(dx, 1, axis=1)).all()
    empty = np.zeros((0, 4), dtype)
    m0, v0 = ops.batchnorm_stats(empty)
    assert m0.shape == (4,) and np.isnan(m0).all() and np.isnan(v0).all()
    z = np.zeros(4, dtype)
    assert ops.batchnorm_forward(empty, z, z).shape == (0, 4)
    dx0, dg0, db0 = ops.batchnorm_backward(empty, empty, z, z)
    assert dx0.shape == (0, 4)
    assert_same(dg0, z, what="dgamma of an empty batch")
    assert_same(db0, z, what="dbeta of an empty batch")


# =========================================================================== activations
ACT_KINDS = [("sigmoid", 0.0), ("silu", 0.0), ("elu", 1.0), ("elu", 0.5), ("selu", 0.0),
             ("leaky_relu", 0.2), ("leaky_relu", 0.0), ("gelu", 0.0), ("relu6", 0.0),
             ("hard_sigmoid", 0.0), ("hard_silu", 0.0), ("celu", 1.0), ("celu", -0.7),
             ("celu", 2.5), ("tanh", 0.0)]


def _act_input(rng, shape, dtype):
    """Values over the exp's whole range: both tails (past float's exp overflow and
    underflow), the reduced range |x| <= ln2 / 2 and its edges, exact zeros, NaN, +-inf."""
    x = rng.normal(0, 4, shape).astype(dtype)
    flat = x.reshape(-1)
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 0.3465, -0.3466, 1e-30, -1e-30,
                        88.5, 89.5, -87.0, -103.0, -104.5, 700.0, -740.0, 20.0, -20.0,
                        3.0, -3.0, 6.0, 2.999, -2.999, 6.001],
                       np.float64).astype(dtype)
    flat[:special.size] = special[:flat.size]
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("kind,alpha", ACT_KINDS, ids=lambda v: str(v))
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5, 17), (4099,), (300, 257)], ids=str)
def test_activation(backend, kind, alpha, shape, dtype):
    rng = _rng("act", kind, alpha, shape)
    x = _act_input(rng, shape, dtype)
    with np.errstate(all="ignore"):   # (the reference's exp overflows, inf * 0, ...)
        y = ops.activation(x, kind, alpha=alpha)
        ry = reference(ops.activation, x, kind, alpha=alpha)
        assert_close(y, ry, k=4, scale=absmax(ry), what=f"activation {kind}")
        dy = rand(rng, shape, dtype)
        dx = ops.activation_backward(dy, x, ry, kind, alpha=alpha)
        rdx = reference(ops.activation_backward, dy, x, ry, kind, alpha=alpha)
        assert_close(dx, rdx, k=4, scale=absmax(rdx), what=f"activation_backward {kind}")
        # in place: out=x and out=dy
        xin, dyin = x.copy(), dy.copy()
        assert ops.activation(xin, kind, alpha=alpha, out=xin) is xin
        assert_bitwise(xin, y, what="activation out=x")
        assert ops.activation_backward(dyin, x, ry, kind, alpha=alpha, out=dyin) is dyin
        assert_bitwise(dyin, dx, what="activation_backward out=dy")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_activation_exp_relative_accuracy(backend, dtype):
    """sigmoid(-x) = exp(-x) / (1 + exp(-x)) of a float over [-87, 0] and elu's expm1 near
    0 stay within a few ulp of float64 math, relatively (the kernels' own exp and expm1,
    not only within the suite's absolute tolerance)."""
    x = -np.linspace(0, 87 if dtype == np.float32 else 700, 20001).astype(dtype)
    s = ops.activation(x, "sigmoid")
    xd = x.astype(np.float64)
    want = np.exp(xd) / (1 + np.exp(xd))
    ulp = np.finfo(dtype).eps
    assert np.max(np.abs(s / want - 1)) < 8 * ulp
    small = -np.geomspace(1e-12, 0.5, 4001).astype(dtype)
    e = ops.activation(small, "elu", alpha=1.0)
    assert np.max(np.abs(e / np.expm1(small.astype(np.float64)) - 1)) < 8 * ulp
    # tanh from expm1(-2 |x|): relative, near 0 too, and odd
    t = np.concatenate([-np.geomspace(1e-12, 30, 8001), np.geomspace(1e-12, 30, 8001)])
    t = t.astype(dtype)
    assert np.max(np.abs(ops.activation(t, "tanh") / np.tanh(t.astype(np.float64)) - 1)) \
        < 8 * ulp
    # gelu's derivative (the C kernel takes Phi(x) as y / x, near 0 as its series): within
    # a few eps of float64's exact Phi(x) + x phi(x), subnormal x and the series' edge too
    g = np.concatenate([np.linspace(-12, 12, 4001), [0.0, 1e-40, -1e-40, 2.0 ** -20,
                                                     -(2.0 ** -20), 1.5e-6, -1.5e-6]])
    g = g.astype(dtype)
    want = np.array([0.5 * math.erfc(-v / math.sqrt(2)) + v * math.exp(-v * v / 2) /
                     math.sqrt(2 * math.pi) for v in g.astype(np.float64)])
    got = ops.activation_backward(np.ones_like(g), g, ops.activation(g, "gelu"), "gelu")
    assert np.max(np.abs(got - want)) < 8 * ulp
    assert ops.activation(np.array([-np.inf, 0.0], dtype), "sigmoid")[0] == 0   # exp(-inf)


# sizes around the kernels' groups of 32 elements and the C backend's pieces of 4096, and
# one its two threads split
DROPOUT_SIZES = [1, 31, 32, 33, 100, 4096 + 37, 70_001]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_dropout_matches_reference_bit_for_bit(backend, dtype, restore_threads):
    """Every backend's dropout and dropout_mask: the reference's words (its Philox), so
    the same bits, for one thread or two; NaN and inf in x propagate, dropped or not."""
    for n in DROPOUT_SIZES:
        rng = _rng("drop", n)
        x = rand(rng, (n,), dtype)
        x[: min(n, 3)] = [np.nan, np.inf, -np.inf][: min(n, 3)]
        for rate, seed in ((0.3, 7), (0.5, 2**64 - 1), (0.0, 3)):
            with np.errstate(invalid="ignore"):
                y, m = ops.dropout(x, rate, seed)
                ry, rm = reference(ops.dropout, x, rate, seed)
            assert_bitwise(m, rm, what=f"dropout mask n={n} rate={rate}")
            assert_bitwise(y, ry, what=f"dropout y n={n} rate={rate}")
            assert_bitwise(ops.dropout_mask((n,), rate, seed, dtype), rm, what="dropout_mask")
        fastnn.set_num_threads(1)
        y1, m1 = ops.dropout(x, 0.3, 7)
        fastnn.set_num_threads(2)
        assert_bitwise(m1, ops.dropout(x, 0.3, 7)[1], what="dropout 1 vs 2 threads")
    x = rand(_rng("drop-nd"), (3, 5, 7), dtype)
    y, m = ops.dropout(x, 0.5, 11, out=np.empty_like(x), mask_out=np.empty_like(x))
    assert y.shape == m.shape == x.shape
    assert_bitwise(m, ops.dropout_mask((3, 5, 7), 0.5, 11, dtype), what="dropout n-d")
    assert_bitwise(y, x * m, what="y = x * mask")
    assert ops.dropout(np.empty((0, 4), dtype), 0.5, 1)[0].shape == (0, 4)
