"""fastnn.compat.dlfs against a NumPy transcription of the book's code (tests/dlfs_original.py).

Every layer on every backend, float64 and float32: forward outputs, backward gradients and
the public attributes (``dW``, ``db``, ``col``, ``col_W``, ``arg_max``, ``mask``, ``y``,
``loss``, ``dgamma``, ...). Results computed by fastnn's kernels (convolution, pooling,
affine products, col2im) are compared with the conftest tolerances for a K-term reduction;
data movement (im2col, pooling maxima, arg_max) and the element-wise layers and optimizers,
which evaluate the book's NumPy expressions in the book's order, are compared exactly.
The original computes convolution and pooling in float64 whatever the input (its im2col
allocates float64); float32 results are compared with that float64 result rounded to
float32, under the float32 tolerance.
"""
from __future__ import annotations

import weakref
import zlib

import numpy as np
import pytest

import dlfs_original as O
from conftest import absmax, assert_close, assert_same
import fastnn
from fastnn import ops
from fastnn.compat import dlfs as D

DTYPES = (np.float64, np.float32)
DT_IDS = ["f64", "f32"]


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _rand(rng, shape, dtype=np.float64, low=-1.0, high=1.0):
    return rng.uniform(low, high, size=shape).astype(dtype)


def _expect(expected, dtype):
    """The original's (float64) result in the dtype fastnn must return."""
    return np.asarray(expected).astype(dtype)


# =========================================================================== im2col / col2im
IM2COL_CASES = [  # (N, C, H, W, FH, FW, stride, pad)
    (1, 1, 1, 1, 1, 1, 1, 0), (2, 3, 7, 7, 3, 3, 1, 0), (2, 3, 7, 7, 3, 3, 2, 1),
    (1, 2, 6, 5, 2, 3, 1, 2), (2, 2, 9, 9, 3, 3, 3, 0), (2, 1, 4, 4, 3, 3, 2, 0),
    (3, 2, 5, 5, 5, 5, 1, 0), (2, 3, 8, 8, 2, 2, 2, 0),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", IM2COL_CASES, ids=str)
def test_im2col_col2im_match_original(backend, case, dtype):
    n, c, h, w, fh, fw, s, p = case
    rng = _rng("im2col", case)
    x = _rand(rng, (n, c, h, w), dtype)
    col = D.im2col(x, fh, fw, s, p)
    ref = O.im2col(x, fh, fw, s, p)
    assert_same(col, _expect(ref, dtype), what="im2col")
    dcol = _rand(rng, ref.shape, dtype)
    img = D.col2im(dcol, x.shape, fh, fw, stride=s, pad=p)
    ref_img = O.col2im(dcol, x.shape, fh, fw, s, p)
    overlaps = -(-fh // s) * -(-fw // s)
    assert_close(img, _expect(ref_img, dtype), k=overlaps, scale=absmax(dcol), what="col2im")


def test_im2col_dtypes(backend):
    x = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    for dt, want in ((np.float32, np.float32), (np.float64, np.float64),
                     (np.int64, np.float64), (np.uint8, np.float64), (bool, np.float64)):
        col = D.im2col(x.astype(dt), 2, 2)
        assert col.dtype == want, dt
        assert_same(col, O.im2col(x.astype(dt), 2, 2).astype(want), what=str(dt))
        assert D.col2im(col, x.shape, 2, 2).dtype == want
    # like the book's, col2im reads any array of the right size in C order
    col = D.im2col(x.astype(np.float64), 2, 2, 2)
    assert_same(D.col2im(col.ravel(), x.shape, 2, 2, 2), O.col2im(col.ravel(), x.shape, 2, 2, 2))


def test_star_import_gives_the_books_names():
    import fastnn.compat
    assert fastnn.compat.dlfs is D
    namespace = {}
    exec("from fastnn.compat.dlfs import *", namespace)
    for name in ("im2col", "col2im", "Convolution", "Pooling", "Affine", "Relu", "Sigmoid",
                 "SoftmaxWithLoss", "Dropout", "BatchNormalization", "SGD", "Momentum",
                 "Nesterov", "AdaGrad", "RMSprop", "Adam", "softmax", "cross_entropy_error"):
        assert name in namespace, name


def test_util_and_functions_match_original():
    rng = _rng("functions")
    x = _rand(rng, (6, 10), np.float64, -3, 3)
    x[0, :2] = 0.0
    t = rng.integers(0, 10, 6)
    for name in ("identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu",
                 "relu_grad", "softmax"):
        assert_same(getattr(D, name)(x), getattr(O, name)(x), what=name)
    y = O.softmax(x)
    assert D.cross_entropy_error(y, t) == O.cross_entropy_error(y, t)
    assert D.cross_entropy_error(y, np.eye(10)[t]) == O.cross_entropy_error(y, np.eye(10)[t])
    assert D.softmax_loss(x, t) == O.softmax_loss(x, t)
    assert D.sum_squared_error(y, np.eye(10)[t]) == O.sum_squared_error(y, np.eye(10)[t])
    assert D.conv_output_size(28, 5, 2, 1) == O.conv_output_size(28, 5, 2, 1) == 13.5
    assert_same(D.smooth_curve(x[:, 0].repeat(3)), O.smooth_curve(x[:, 0].repeat(3)))
    xs = _rand(rng, (7, 1, 2, 2))
    np.random.seed(3)
    ours = D.shuffle_dataset(xs, t[:1].repeat(7) + np.arange(7))
    np.random.seed(3)
    ref = O.shuffle_dataset(xs, t[:1].repeat(7) + np.arange(7))
    assert_same(ours[0], ref[0])
    assert_same(ours[1], ref[1])


# =========================================================================== Convolution
CONV_CASES = [  # (N, C, H, W, FN, FH, FW, stride, pad)
    (1, 1, 1, 1, 1, 1, 1, 1, 0), (2, 3, 7, 7, 4, 3, 3, 1, 0), (2, 3, 7, 7, 4, 3, 3, 2, 1),
    (3, 2, 6, 5, 3, 2, 3, 1, 2), (2, 2, 9, 9, 3, 3, 3, 3, 0), (2, 1, 4, 4, 2, 3, 3, 2, 0),
    (2, 3, 5, 5, 2, 5, 5, 1, 0), (4, 1, 28, 28, 30, 5, 5, 1, 0),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_convolution_matches_original(backend, case, dtype):
    n, c, h, w, fn, fh, fw, s, p = case
    rng = _rng("conv", case)
    x = _rand(rng, (n, c, h, w), dtype)
    W = _rand(rng, (fn, c, fh, fw), dtype)
    b = _rand(rng, (fn,), dtype)
    ours, ref = D.Convolution(W, b, s, p), O.Convolution(W, b, s, p)
    y, y_ref = ours.forward(x), ref.forward(x)
    assert_close(y, _expect(y_ref, dtype), k=c * fh * fw + 1,
                 scale=max(absmax(x) * absmax(W), absmax(b)), what="forward")
    assert ours.x is x
    dout = _rand(rng, y_ref.shape, dtype)
    dx, dx_ref = ours.backward(dout), ref.backward(dout)
    rows = n * y.shape[2] * y.shape[3]
    assert_close(dx, _expect(dx_ref, dtype), k=fn * fh * fw, scale=absmax(dout) * absmax(W),
                 what="dx")
    assert_close(ours.dW, _expect(ref.dW, dtype), k=rows, scale=absmax(dout) * absmax(x),
                 what="dW")
    assert_close(ours.db, _expect(ref.db, dtype), k=rows, scale=absmax(dout), what="db")
    # the book's intermediate attributes, produced on demand
    assert_same(ours.col, _expect(ref.col, dtype), what="col")
    assert_same(ours.col_W, ref.col_W, what="col_W")
    assert np.shares_memory(ours.col_W, W)


def test_convolution_builds_no_column_matrix(backend, restore_workspace_limit, monkeypatch):
    """The fast path never lowers the batch with im2col itself: fastnn's kernels work on
    chunks bounded by the workspace limit (one image here); ``col`` is built only when
    read."""
    from fastnn import ops
    rng = _rng("conv-chunks")
    x, W, b = _rand(rng, (5, 2, 9, 9)), _rand(rng, (3, 2, 3, 3)), _rand(rng, (3,))
    ref = O.Convolution(W, b, 1, 1)
    y_ref = ref.forward(x)
    dout = _rand(rng, y_ref.shape)
    dx_ref = ref.backward(dout)

    def no_im2col(*a, **k):
        raise AssertionError("the fast path must not call im2col")

    monkeypatch.setattr(ops, "im2col", no_im2col)
    ops.set_workspace_limit(1)
    ours = D.Convolution(W, b, 1, 1)
    assert_close(ours.forward(x), y_ref, k=19, scale=1.0)
    assert_close(ours.backward(dout), dx_ref, k=27, scale=1.0)
    assert_close(ours.dW, ref.dW, k=405, scale=1.0)
    assert ours._col is None
    monkeypatch.undo()                                  # now ``col`` may be computed
    assert_same(ours.col, ref.col)


def test_convolution_mixed_dtypes_follow_numpy(backend):
    """float32 data with the book's float64 weights computes in float64, as NumPy does."""
    rng = _rng("conv-mixed")
    x = _rand(rng, (2, 3, 6, 6), np.float32)
    W, b = _rand(rng, (4, 3, 3, 3)), _rand(rng, (4,))
    ours, ref = D.Convolution(W, b, 1, 1), O.Convolution(W, b, 1, 1)
    y = ours.forward(x)
    assert y.dtype == np.float64
    assert_close(y, ref.forward(x), k=28, scale=1.0)
    dout = _rand(rng, y.shape, np.float32)
    dx = ours.backward(dout)
    assert dx.dtype == ours.dW.dtype == np.float64
    assert_close(dx, ref.backward(dout), k=36, scale=1.0)
    assert_close(ours.dW, ref.dW, k=72, scale=1.0)
    # the book's db: np.sum over dout's rows, in dout's float32
    assert_same(ours.db, ref.db)
    # float16 weights: float64, as the book's float64 columns (not NumPy's float32)
    ours = D.Convolution(W.astype(np.float16), b.astype(np.float32), 1, 1)
    assert ours.forward(x).dtype == np.float64


def test_affine_mixed_dtypes_follow_the_books_expressions(backend):
    """The book's np.dot(x, W) + b in x and W's dtype, then b's promotion; dx, dW in their
    operands' dtypes, db in dout's."""
    rng = _rng("affine-mixed")
    x32, W32 = _rand(rng, (5, 12), np.float32), _rand(rng, (12, 6), np.float32)
    b64 = _rand(rng, (6,))
    ours, ref = D.Affine(W32, b64), O.Affine(W32, b64)
    y, y_ref = ours.forward(x32), ref.forward(x32)
    assert y.dtype == y_ref.dtype == np.float64
    # the float32 product, then b added in float64
    assert_same(y, ops.matmul(x32, W32).astype(np.float64) + b64)
    assert np.abs(y - y_ref).max() <= 1e-5       # the book's float32 np.dot sums otherwise
    dout = _rand(rng, y.shape, np.float32)
    dx = ours.backward(dout)
    assert dx.dtype == ours.dW.dtype == ours.db.dtype == np.float32
    assert_close(dx, ref.backward(dout), k=6, scale=1.0)
    assert_close(ours.dW, ref.dW, k=5, scale=1.0)
    assert_same(ours.db, ref.db)
    # float64 layer, float32 dout: dx, dW float64, db float32 (np.sum of dout)
    x64, W64 = x32.astype(np.float64), W32.astype(np.float64)
    ours, ref = D.Affine(W64, b64), O.Affine(W64, b64)
    assert_close(ours.forward(x64), ref.forward(x64), k=12, scale=1.0)
    dx = ours.backward(dout)
    assert dx.dtype == ours.dW.dtype == np.float64 and ours.db.dtype == np.float32
    assert_close(dx, ref.backward(dout), k=6, scale=1.0)
    assert_close(ours.dW, ref.dW, k=5, scale=1.0)
    assert_same(ours.db, ref.db)


def test_momentum_makes_new_velocity_arrays(backend):
    """The book's v[key] = momentum * v[key] - lr * g binds a new array: a reference saved
    before an update keeps its values."""
    ours, ref = D.Momentum(), O.Momentum()
    p, p_ref = {"W": np.ones(3)}, {"W": np.ones(3)}
    g = {"W": np.array([1.0, -2.0, 0.5])}
    ours.update(p, g)
    ref.update(p_ref, g)
    saved, before = dict(ours.v), ours.v["W"].copy()
    ours.update(p, g)
    ref.update(p_ref, g)
    assert_same(saved["W"], before)
    assert saved["W"] is not ours.v["W"]
    assert_same(ours.v["W"], ref.v["W"])
    assert_same(p["W"], p_ref["W"])


def test_empty_batches():
    """SoftmaxWithLoss and a training BatchNormalization refuse an empty batch (the book
    crashes / writes NaN into the running statistics); the other layers return empty
    results."""
    with pytest.raises(ValueError, match="at least one sample"):
        D.SoftmaxWithLoss().forward(np.zeros((0, 5)), np.zeros(0, np.int64))
    bn = D.BatchNormalization(np.ones(5), np.zeros(5))
    with pytest.raises(ValueError, match="at least one sample"):
        bn.forward(np.zeros((0, 5)))
    assert bn.running_mean is None or np.isfinite(bn.running_mean).all()
    assert D.Affine(np.ones((4, 3)), np.zeros(3)).forward(np.zeros((0, 4))).shape == (0, 3)
    assert D.Relu().forward(np.zeros((0, 4))).shape == (0, 4)


def test_col2im_shape_must_be_ints():
    col = np.zeros((2 * 16, 3 * 9))
    with pytest.raises(TypeError, match="input_shape"):
        D.col2im(col, (2.9, 3, 6.5, 6), 3, 3)
    assert D.col2im(col, (2, 3, 6, 6), 3, 3).shape == (2, 3, 6, 6)


def test_dropout_on_a_scalar_matches_the_book():
    ours, ref = D.Dropout(0.3), O.Dropout(0.3)
    x = np.array(1.5)
    np.random.seed(3)
    y = ours.forward(x)
    np.random.seed(3)
    assert y == ref.forward(x)
    assert ours.backward(np.array(2.0)) == ref.backward(np.array(2.0))


# =========================================================================== Pooling
POOL_CASES = [  # (N, C, H, W, PH, PW, stride, pad)
    (2, 3, 8, 8, 2, 2, 2, 0), (2, 3, 7, 7, 3, 3, 1, 0), (2, 2, 7, 9, 3, 2, 2, 0),
    (1, 1, 5, 5, 2, 2, 1, 0), (2, 2, 6, 6, 3, 3, 3, 0), (1, 1, 1, 1, 1, 1, 1, 0),
    (4, 30, 24, 24, 2, 2, 2, 0),
    (2, 3, 5, 5, 2, 2, 3, 1), (2, 2, 8, 13, 3, 3, 5, 2),   # pad > 0 where the book works
]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pooling_matches_original(backend, case, dtype, ties):
    n, c, h, w, ph, pw, s, p = case
    rng = _rng("pool", case, ties)
    if ties:   # few distinct values: many ties (first wins), padding zeros tie with data
        x = rng.integers(-2, 2, size=(n, c, h, w)).astype(dtype)
    else:      # mostly negative: with pad > 0 a zero of the padding often wins
        x = _rand(rng, (n, c, h, w), dtype, -1.0, 0.2)
    ours, ref = D.Pooling(ph, pw, s, p), O.Pooling(ph, pw, s, p)
    y, y_ref = ours.forward(x), ref.forward(x)
    assert_same(y, _expect(y_ref, dtype), what="forward")
    assert_same(ours.arg_max, ref.arg_max, what="arg_max")
    dout = _rand(rng, y_ref.shape, dtype)
    dx, dx_ref = ours.backward(dout), ref.backward(dout)
    overlaps = -(-ph // s) * -(-pw // s)
    assert_close(dx, _expect(dx_ref, dtype), k=overlaps, scale=absmax(dout), what="dx")


def test_pooling_default_stride_is_the_books(backend):
    x = _rand(_rng("pool-default"), (2, 3, 6, 6))
    y = D.Pooling(2, 2).forward(x)
    assert y.shape == (2, 3, 5, 5)
    assert_same(y, O.Pooling(2, 2).forward(x))


def test_pooling_arg_max_assignment_routes_backward(backend):
    rng = _rng("argmax-set")
    x = _rand(rng, (2, 3, 6, 6))
    ours, ref = D.Pooling(3, 3, 1), O.Pooling(3, 3, 1)
    ours.forward(x)
    ref.forward(x)
    new = rng.integers(0, 9, size=ref.arg_max.shape)
    ours.arg_max = new
    ref.arg_max = new
    assert_same(np.asarray(ours.arg_max), new)
    dout = _rand(rng, (2, 3, 4, 4))
    assert_close(ours.backward(dout), ref.backward(dout), k=9, scale=1.0)


@pytest.mark.parametrize("case", [(1, 1, 4, 4, 2, 2, 2, 1), (2, 3, 8, 8, 2, 2, 2, 1),
                                  (1, 1, 6, 6, 3, 3, 1, 1), (1, 1, 4, 4, 2, 2, 1, 1)], ids=str)
def test_pooling_pad_where_the_original_crashes(backend, case):
    n, c, h, w, ph, pw, s, p = case
    x = _rand(_rng("pad-crash", case), (n, c, h, w))
    with pytest.raises(ValueError):            # the original: a reshape error
        O.Pooling(ph, pw, s, p).forward(x)
    with pytest.raises(ValueError, match=r"pad=1.*only works when"):
        D.Pooling(ph, pw, s, p).forward(x)


# =========================================================================== Affine
AFFINE_CASES = [((1, 1), 1), ((5, 7), 3), ((4, 3, 2, 2), 6), ((16, 4320), 100), ((8, 100), 10)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", AFFINE_CASES, ids=str)
def test_affine_matches_original(backend, case, dtype):
    xshape, dout_dim = case
    rng = _rng("affine", case)
    x = _rand(rng, xshape, dtype)
    d = int(np.prod(xshape[1:]))
    W, b = _rand(rng, (d, dout_dim), dtype), _rand(rng, (dout_dim,), dtype)
    ours, ref = D.Affine(W, b), O.Affine(W, b)
    y, y_ref = ours.forward(x), ref.forward(x)
    assert_close(y, y_ref, k=d + 1, scale=max(absmax(x) * absmax(W), absmax(b)), what="out")
    assert ours.original_x_shape == ref.original_x_shape
    assert_same(ours.x, ref.x)
    assert np.shares_memory(ours.x, x)
    dout = _rand(rng, y_ref.shape, dtype)
    dx, dx_ref = ours.backward(dout), ref.backward(dout)
    assert_close(dx, dx_ref, k=dout_dim, scale=absmax(dout) * absmax(W), what="dx")
    assert_close(ours.dW, ref.dW, k=xshape[0], scale=absmax(dout) * absmax(x), what="dW")
    assert_same(ours.db, ref.db, what="db")


# =========================================================================== element-wise layers
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_relu_bitwise_and_in_place(backend, dtype):
    rng = _rng("relu", dtype)
    x = _rand(rng, (3, 4, 5, 6), dtype)
    x.flat[:4] = [0.0, -0.0, np.nan, -np.inf]
    ours, ref = D.Relu(), O.Relu()
    y, y_ref = ours.forward(x), ref.forward(x)
    assert np.array_equal(y.view(np.uint8), y_ref.view(np.uint8))      # +0.0 for -0.0, NaN kept
    assert_same(ours.mask, ref.mask)
    dout = _rand(rng, x.shape, dtype)
    d1, d2 = dout.copy(), dout.copy()
    dx, dx_ref = ours.backward(d1), ref.backward(d2)
    assert dx is d1                                  # written in place, like the book
    assert np.array_equal(dx.view(np.uint8), dx_ref.view(np.uint8))
    xi = rng.integers(-3, 3, size=(4, 5))            # other dtypes take the book's path
    assert_same(D.Relu().forward(xi), O.Relu().forward(xi))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_sigmoid_bitwise(backend, dtype):
    rng = _rng("sigmoid", dtype)
    x = _rand(rng, (6, 7), dtype, -5, 5)
    ours, ref = D.Sigmoid(), O.Sigmoid()
    assert_same(ours.forward(x), ref.forward(x))
    assert_same(ours.out, ref.out)
    dout = _rand(rng, x.shape, dtype)
    assert_same(ours.backward(dout), ref.backward(dout))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_dropout_bitwise_same_masks(backend, dtype):
    rng = _rng("dropout", dtype)
    x = _rand(rng, (4, 3, 5, 5), dtype)
    ours, ref = D.Dropout(0.3), O.Dropout(0.3)
    np.random.seed(7)
    y = ours.forward(x)
    np.random.seed(7)
    y_ref = ref.forward(x)
    assert_same(y, y_ref)
    assert_same(ours.mask, ref.mask)
    dout = _rand(rng, x.shape, dtype)
    assert_same(ours.backward(dout), ref.backward(dout))
    # test time: scaled by (1 - ratio), not inverted dropout
    assert_same(ours.forward(x, train_flg=False), ref.forward(x, train_flg=False))
    assert_same(ours.forward(x, False), x * (1.0 - 0.3))


@pytest.mark.parametrize("onehot", [False, True], ids=["labels", "onehot"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_softmax_with_loss_bitwise(backend, dtype, onehot):
    rng = _rng("swl", dtype, onehot)
    x = _rand(rng, (8, 10), dtype, -30, 30)
    labels = rng.integers(0, 10, 8)
    t = np.eye(10)[labels] if onehot else labels
    ours, ref = D.SoftmaxWithLoss(), O.SoftmaxWithLoss()
    loss, loss_ref = ours.forward(x, t), ref.forward(x, t)
    assert type(loss) is type(loss_ref) and loss == loss_ref
    assert ours.loss == ref.loss
    assert_same(ours.y, ref.y)
    assert_same(ours.t, ref.t)
    assert_same(ours.backward(), ref.backward())
    assert_same(ours.backward(5.0), ref.backward(5.0))      # dout is ignored, as in the book


def test_softmax_with_loss_single_sample_quirk(backend):
    x = _rand(_rng("swl1"), (10,))
    t = np.eye(10)[3]
    ours, ref = D.SoftmaxWithLoss(), O.SoftmaxWithLoss()
    assert ours.forward(x, t) == ref.forward(x, t)
    assert_same(ours.backward(), ref.backward())            # divided by 10 classes (book)
    assert ours.forward(x, np.array([3])) == ref.forward(x, np.array([3]))
    with pytest.raises(ValueError, match="1-D sample"):   # the original: IndexError
        ours.backward()


@pytest.mark.parametrize("ndim", [2, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_batch_normalization_bitwise(backend, dtype, ndim):
    rng = _rng("bn", dtype, ndim)
    shape = (6, 5) if ndim == 2 else (6, 2, 3, 3)
    d = int(np.prod(shape[1:]))
    gamma, beta = _rand(rng, (d,), dtype, 0.5, 1.5), _rand(rng, (d,), dtype)
    ours, ref = D.BatchNormalization(gamma, beta), O.BatchNormalization(gamma, beta)
    for step in range(3):
        x = _rand(rng, shape, dtype, -2, 3)
        assert_same(ours.forward(x), ref.forward(x), what=f"forward {step}")
        dout = _rand(rng, shape, dtype)
        assert_same(ours.backward(dout), ref.backward(dout), what=f"backward {step}")
        assert_same(ours.dgamma, ref.dgamma)
        assert_same(ours.dbeta, ref.dbeta)
        for name in ("xc", "xn", "std"):
            assert_same(getattr(ours, name), getattr(ref, name), what=name)
    x = _rand(rng, shape, dtype)
    y_test = ours.forward(x, train_flg=False)
    y_ref = ref.forward(x, train_flg=False)
    if dtype == np.float64:
        assert_same(ours.running_mean, ref.running_mean)
        assert_same(ours.running_var, ref.running_var)
        assert_same(y_test, y_ref)
    else:   # running statistics kept in float32 here (the book: float64)
        assert ours.running_mean.dtype == np.float32 and y_test.dtype == np.float32
        assert_close(ours.running_mean, ref.running_mean.astype(np.float32))
        assert_close(ours.running_var, ref.running_var.astype(np.float32))
        assert_close(y_test, y_ref.astype(np.float32), k=4, scale=absmax(y_ref))


# =========================================================================== optimizers
OPTIMIZERS = [
    ("SGD", dict()), ("SGD", dict(lr=0.3)), ("Momentum", dict()),
    ("Momentum", dict(lr=0.05, momentum=0.5)), ("Nesterov", dict()), ("AdaGrad", dict()),
    ("RMSprop", dict()), ("RMSprop", dict(lr=0.001, decay_rate=0.9)), ("Adam", dict()),
    ("Adam", dict(lr=0.01, beta1=0.8, beta2=0.99)),
]


@pytest.mark.parametrize("pdtype,gdtype", [(np.float64, np.float64), (np.float32, np.float32),
                                           (np.float32, np.float64)],
                         ids=["f64", "f32", "f32-params-f64-grads"])
@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=lambda v: str(v))
def test_optimizer_trajectories_bitwise(name, kw, pdtype, gdtype):
    rng = _rng("opt", name, tuple(kw.items()), pdtype, gdtype)
    shapes = {"W1": (4, 3, 2, 2), "b1": (4,), "W2": (12, 5), "b2": (5,)}
    p_ours = {k: _rand(rng, s, pdtype) for k, s in shapes.items()}
    p_ref = {k: v.copy() for k, v in p_ours.items()}
    objects = {k: v for k, v in p_ours.items()}
    ours, ref = getattr(D, name)(**kw), getattr(O, name)(**kw)
    for step in range(6):
        grads = {k: _rand(rng, s, gdtype, -2, 2) for k, s in shapes.items()}
        if step == 3:
            grads["b1"][:] = 0.0
        ours.update(p_ours, grads)
        ref.update(p_ref, grads)
        for k in shapes:
            assert p_ours[k] is objects[k]                    # updated in place
            assert_same(p_ours[k], p_ref[k], what=f"{name} step {step} {k}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_adam_fused_kernel_bitwise(backend, dtype, monkeypatch):
    """float64 Adam runs fastnn's fused kernel (every backend): the book's bits, also past
    the kernels' threading threshold and on the vector loops' tails. A non-contiguous
    parameter takes the NumPy expressions, and so does float32, whose lr_t (a float64
    from np.sqrt) makes the book compute its last step in float64; same bits again."""
    from fastnn import ops
    calls = []
    real = ops._adam_update
    monkeypatch.setattr(ops, "_adam_update", lambda *a: (calls.append(a[0].shape), real(*a)))
    rng = _rng("adam-fused", np.dtype(dtype).name)
    shapes = {"W": (700, 433), "b": (433,), "c": (3,)}      # 303100 elements: threaded
    p_ours = {k: _rand(rng, s, dtype) for k, s in shapes.items()}
    p_ours["T"] = _rand(rng, (40, 30), dtype).T              # a transposed view
    p_ref = {k: v.copy() for k, v in p_ours.items()}
    ours, ref = D.Adam(lr=0.01), O.Adam(lr=0.01)
    for step in range(4):
        grads = {k: _rand(rng, v.shape, dtype, -2, 2) for k, v in p_ours.items()}
        grads["W"][0, :5] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
        with np.errstate(invalid="ignore"):                 # inf - inf, as in the book
            ours.update(p_ours, grads)
            ref.update(p_ref, grads)
        for k in p_ours:
            assert_same(p_ours[k], p_ref[k], what=f"Adam step {step} {k}")
            assert_same(ours.m[k], ref.m[k], what=f"Adam m step {step} {k}")
            assert_same(ours.v[k], ref.v[k], what=f"Adam v step {step} {k}")
    if dtype == np.float64:
        assert calls == [(700, 433), (433,), (3,)] * 4       # "T" (a view) is not fused
    else:
        assert calls == []
    assert D.Adam._fused(p_ours["W"], grads["W"], ours.m["W"], ours.v["W"], (0.1, 1e-7))
    assert not D.Adam._fused(p_ours["T"], grads["T"], ours.m["T"], ours.v["T"], (0.1,))
    assert not D.Adam._fused(p_ours["W"], p_ours["W"], ours.m["W"], ours.v["W"], (0.1,))
    if dtype == np.float32:
        assert not D.Adam._fused(p_ours["W"], grads["W"], ours.m["W"], ours.v["W"],
                                 (np.float64(0.1),))


def test_optimizer_state_matches_original():
    rng = _rng("opt-state")
    p1 = {"W": _rand(rng, (5, 4))}
    p2 = {"W": p1["W"].copy()}
    ours, ref = D.Adam(), O.Adam()
    for _ in range(3):
        g = {"W": _rand(rng, (5, 4))}
        ours.update(p1, g)
        ref.update(p2, g)
    assert ours.iter == ref.iter == 3
    assert_same(ours.m["W"], ref.m["W"])
    assert_same(ours.v["W"], ref.v["W"])


# =========================================================================== shared parameters
def test_shared_params_in_place_updates_and_rebinding(backend):
    rng = _rng("shared")
    params = O.SimpleConvNet.init_params(rng, input_dim=(1, 12, 12), filter_num=4,
                                         filter_size=3, hidden_size=8, output_size=5)
    net = O.SimpleConvNet(D, params)
    conv, aff = net.layers[0], net.layers[3]
    assert conv.W is params["W1"] and aff.W is params["W2"]
    x = _rand(rng, (3, 1, 12, 12))
    t = rng.integers(0, 5, 3)
    _, grads = net.gradient(x, t)
    D.SGD(lr=0.5).update(params, grads)                   # in place on the shared arrays
    y1 = conv.forward(x)
    fresh = D.Convolution(params["W1"].copy(), params["b1"].copy())
    assert_same(y1, fresh.forward(x), what="after update")
    params["W1"] *= 2.0                                   # any in-place change is seen
    params["b1"] += 1.0
    y2 = conv.forward(x)
    assert not np.allclose(y2, y1)
    assert_same(y2, D.Convolution(params["W1"].copy(), params["b1"].copy()).forward(x))
    # rebinding, as the book's networks do in load_params
    new_W = _rand(rng, params["W1"].shape)
    new_b = _rand(rng, params["b1"].shape)
    conv.W, conv.b = new_W, new_b
    assert_same(conv.forward(x), D.Convolution(new_W.copy(), new_b.copy()).forward(x))
    h = _rand(rng, (3, 4, 5, 5))
    new_W2 = _rand(rng, (100, 8))
    aff.W = new_W2
    assert_same(aff.forward(h), D.Affine(new_W2.copy(), aff.b.copy()).forward(h))


# =========================================================================== output buffers
def _layer_calls(rng):
    """(name, layer, forward input, backward input) for each layer that reuses buffers."""
    conv = D.Convolution(_rand(rng, (4, 2, 3, 3)), _rand(rng, (4,)))
    aff = D.Affine(_rand(rng, (32, 6)), _rand(rng, (6,)))
    return [("Convolution", conv, (3, 2, 6, 6), (3, 4, 4, 4)),
            ("Relu", D.Relu(), (3, 4, 4, 4), (3, 4, 4, 4)),
            ("Pooling", D.Pooling(2, 2, stride=2), (3, 4, 4, 4), (3, 4, 2, 2)),
            ("Affine", aff, (3, 2, 4, 4), (3, 6))]


@pytest.mark.parametrize("i", range(4), ids=["Convolution", "Relu", "Pooling", "Affine"])
def test_outputs_a_caller_holds_are_never_overwritten(backend, i):
    """The layers hand out their output arrays again (no fresh pages every step), but only
    arrays nothing else refers to: an output, a gradient or ``dW`` the caller keeps, or a
    view of one, keeps its values through later calls; one it drops is reused."""
    rng = _rng("reuse", i)
    name, layer, xs, ds = _layer_calls(rng)[i]
    kept, copies = [], []
    for step in range(4):
        x, d = _rand(rng, xs), _rand(rng, ds)
        out = layer.forward(x)
        dx = layer.backward(d)
        assert all(out is not k and dx is not k for k in kept), name
        if step % 2 == 0:         # keep this step's results: the whole array and a view
            kept += [out, dx[0]] + ([layer.dW] if hasattr(layer, "dW") else [])
            copies += [a.copy() for a in kept[len(copies):]]
    for k, c in zip(kept, copies):
        assert_same(k, c, what=f"{name}: a kept array changed")
    # once dropped, the outputs come back: the pool holds them
    del kept, copies, out, dx
    out = layer.forward(_rand(rng, xs))
    assert D._buffers().holds(out), name
    first = weakref.ref(out)
    del out
    again = layer.forward(_rand(rng, xs))
    assert again is first(), name                          # the one handed out last


@pytest.mark.parametrize("i", range(4), ids=["Convolution", "Relu", "Pooling", "Affine"])
def _spoil(out, how):
    """Change a dropped output in place as a caller may: read-only, reshaped, retyped."""
    if how == "read-only":
        out.setflags(write=False)
    elif how == "reshaped":
        out.shape = (out.size,)
    else:
        out.dtype = np.int64 if out.dtype.itemsize == 8 else np.int32


@pytest.mark.parametrize("how", ["read-only", "reshaped", "retyped"])
@pytest.mark.parametrize("i", range(4), ids=["Convolution", "Relu", "Pooling", "Affine"])
def test_dropped_outputs_changed_in_place_are_not_reused(backend, i, how):
    """An output the caller made read-only, reshaped or retyped in place before dropping it
    is replaced, not handed to the kernels as the next output (in the pool it still sits
    under its first shape and dtype)."""
    rng = _rng("reuse-ro", i, how)
    name, layer, xs, ds = _layer_calls(rng)[i]
    for _ in range(4):
        x = _rand(rng, xs)
        out = layer.forward(x)
        ref = out.copy()
        _spoil(out, how)
        del out
        again = layer.forward(x)
        assert again.flags.writeable, name
        assert_same(again, ref, what=name)


def test_layers_copy_and_pickle(backend):
    import copy
    import pickle
    rng = _rng("reuse-copy")
    relu = D.Relu()
    x = _rand(rng, (4, 5))
    out = relu.forward(x)
    for clone in (copy.deepcopy(relu), pickle.loads(pickle.dumps(relu))):
        assert_same(clone.mask, relu.mask)
        assert_same(clone.forward(x), out)


def test_buffers_shared_by_layers_never_overwrite_what_a_caller_holds(backend):
    """The layers draw their outputs from one pool: an array of the same shape that another
    layer handed out and the caller still holds (a Relu output, a Pooling gradient, a
    Convolution output, a mask) is never given to a later call; the last one dropped is."""
    rng = _rng("shared-pool")
    conv = D.Convolution(_rand(rng, (4, 2, 3, 3)), _rand(rng, (4,)))
    relu_a, relu_b, pool = D.Relu(), D.Relu(), D.Pooling(2, 2, stride=2)
    kept, copies = [], []
    for step in range(6):
        y = conv.forward(_rand(rng, (3, 2, 6, 6)))              # (3, 4, 4, 4)
        r = relu_a.forward(y)
        p = pool.forward(r)
        s = relu_b.forward(_rand(rng, (3, 4, 4, 4)))
        dx = pool.backward(_rand(rng, p.shape))                 # (3, 4, 4, 4) too
        live = [y, r, s, dx, relu_a.mask, relu_b.mask]
        assert len({id(a) for a in live + kept}) == len(live) + len(kept), step
        if step % 2 == 0:
            kept += [y, dx, relu_a.mask] + [r] * (step == 2) + [s[1]] * (step == 4)
            copies += [a.copy() for a in kept[len(copies):]]
        for k, c in zip(kept, copies):
            assert_same(k, c, what=f"step {step}: a kept array changed")
        del y, r, p, s, dx, live
    # what nobody holds comes back: the last one handed out first
    del kept, copies
    out = relu_b.forward(_rand(rng, (3, 4, 4, 4)))
    last = weakref.ref(out)
    del out
    assert relu_b.forward(_rand(rng, (3, 4, 4, 4))) is last()


def test_each_thread_has_its_own_buffer_pool(backend):
    """Two threads never draw from one pool (a pool's free check and its hand-out are not
    atomic under the GIL): nets trained in three threads at once give the results of one
    trained alone."""
    import threading
    rng = _rng("threads")
    params = O.SimpleConvNet.init_params(rng, input_dim=(1, 12, 12), filter_num=4,
                                         filter_size=3, hidden_size=8)
    xs = [rng.random((6, 1, 12, 12)) for _ in range(3)]
    ts = [rng.integers(0, 10, 6) for _ in range(3)]

    def train(out):
        p = {k: v.copy() for k, v in params.items()}
        net, opt = O.SimpleConvNet(D, p), D.Adam()
        with fastnn.use_backend(backend):        # (the choice is per thread)
            for _ in range(20):
                for x, t in zip(xs, ts):
                    opt.update(p, net.gradient(x, t)[1])
        out.append((D._buffers(), p))

    alone, threaded = [], []
    train(alone)
    workers = [threading.Thread(target=train, args=(threaded,)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    pools = {id(pool) for pool, _ in alone + threaded}
    assert len(pools) == 4
    for _, p in threaded:
        for k in params:
            assert_same(p[k], alone[0][1][k], what=k)


def test_layer_state_arrays_are_reused_unless_kept(backend):
    """Relu's mask and Pooling's argmax are reused from one forward to the next, but a mask
    the caller kept keeps its values."""
    rng = _rng("state-reuse")
    relu = D.Relu()
    relu.forward(_rand(rng, (5, 6)))
    first = weakref.ref(relu.mask)          # (a weak reference leaves it free)
    relu.forward(_rand(rng, (5, 6)))
    assert relu.mask is first()
    kept = relu.mask
    ref = kept.copy()
    x = _rand(rng, (5, 6))
    relu.forward(x)
    assert relu.mask is not kept
    assert_same(kept, ref)
    assert_same(relu.mask, x <= 0)
    pool = D.Pooling(2, 2, stride=2)
    pool.forward(_rand(rng, (2, 3, 4, 4)))
    am = weakref.ref(pool._ctx[0])
    pool.forward(_rand(rng, (2, 3, 4, 4)))
    assert pool._ctx[0] is am()


def test_buffers_of_an_old_shape_are_let_go(backend):
    rng = _rng("stale")
    relu = D.Relu()
    relu.forward(_rand(rng, (7, 3, 11)))
    key = ((7, 3, 11), np.dtype(np.float64))
    assert key in D._buffers()._pools
    for _ in range(D._Buffers._STALE // 2 + 64):          # two arrays per call
        relu.forward(_rand(rng, (2, 3)))
    assert key not in D._buffers()._pools


def test_release_buffers_lets_go_of_the_pool(backend):
    rng = _rng("release")
    relu = D.Relu()
    out = relu.forward(_rand(rng, (4, 9)))
    ref = out.copy()
    spare = weakref.ref(relu.forward(_rand(rng, (4, 9))))   # dropped: back in the pool
    assert spare() is not None
    D.release_buffers()
    assert spare() is None                                   # freed
    assert D._buffers()._pools == {}
    assert_same(out, ref)                                    # what the caller holds stays
    assert_same(relu.forward(out), ref)


def test_reused_buffers_follow_a_new_batch_size(backend):
    rng = _rng("reuse-shape")
    relu = D.Relu()
    for n in (5, 5, 3, 3, 5):
        x = _rand(rng, (n, 7))
        out = relu.forward(x)
        assert_same(out, np.where(x > 0, x, 0.0), what=str(n))
        assert relu.mask.shape == (n, 7)
        del out


# =========================================================================== end to end
def test_simple_convnet_adam_losses_match_original(backend):
    rng = _rng("e2e")
    params = O.SimpleConvNet.init_params(rng)
    p_ref = {k: v.copy() for k, v in params.items()}
    p_ours = {k: v.copy() for k, v in params.items()}
    net_ref, net_ours = O.SimpleConvNet(O, p_ref), O.SimpleConvNet(D, p_ours)
    opt_ref, opt_ours = O.Adam(), D.Adam()
    losses_ref, losses_ours = [], []
    for _ in range(4):
        x = rng.random((12, 1, 28, 28))
        t = rng.integers(0, 10, 12)
        loss_ref, g_ref = net_ref.gradient(x, t)
        loss_ours, g_ours = net_ours.gradient(x, t)
        for k in g_ref:
            assert g_ours[k].dtype == np.float64
            assert_close(g_ours[k], g_ref[k], k=4320, scale=absmax(g_ref[k]), what=k)
        opt_ref.update(p_ref, g_ref)
        opt_ours.update(p_ours, g_ours)
        losses_ref.append(loss_ref)
        losses_ours.append(loss_ours)
    assert_close(np.array(losses_ours), np.array(losses_ref), what="losses")
    assert losses_ours[-1] < losses_ours[0]
    for k in params:
        assert_close(p_ours[k], p_ref[k], scale=absmax(p_ref[k]), what=k)


def test_float32_network_stays_float32(backend):
    rng = _rng("f32-net")
    params = {k: v.astype(np.float32) for k, v in O.SimpleConvNet.init_params(
        rng, input_dim=(1, 10, 10), filter_num=3, filter_size=3, hidden_size=6).items()}
    net = O.SimpleConvNet(D, params)
    x = rng.random((4, 1, 10, 10)).astype(np.float32)
    loss, grads = net.gradient(x, rng.integers(0, 10, 4))
    assert all(g.dtype == np.float32 for g in grads.values())
    assert np.isfinite(loss)


# =========================================================================== bad input
class _NoKernels:
    def __getattr__(self, name):
        raise AssertionError(f"fastnn.ops.{name} was called before the arguments were checked")


BAD_CALLS = [
    # (call, exception, words the message must contain)
    (lambda: D.im2col(np.zeros((2, 3, 4)), 2, 2), ValueError, ["input_data", "4-D", "(2, 3, 4)"]),
    (lambda: D.im2col(np.zeros((1, 1, 4, 4)), 2, 2, stride=0), ValueError, ["stride", ">= 1", "0"]),
    (lambda: D.im2col(np.zeros((1, 1, 4, 4)), 2.0, 2), TypeError, ["filter_h", "int", "2.0"]),
    (lambda: D.im2col(np.zeros((1, 1, 4, 4), complex), 2, 2), TypeError,
     ["input_data", "complex"]),
    (lambda: D.im2col(np.zeros((1, 1, 4, 4)), 7, 2), ValueError, ["window", "7x2", "4x4"]),
    (lambda: D.col2im(np.zeros((8, 4)), (1, 1, 4, 4), 2, 2), ValueError, ["col", "36", "(8, 4)"]),
    (lambda: D.col2im(np.zeros((9, 4)), (1, 4, 4), 2, 2), ValueError, ["input_shape", "4"]),
    (lambda: D.Convolution(np.zeros((2, 3, 3)), np.zeros(2)), ValueError,
     ["W", "4-D", "(2, 3, 3)"]),
    (lambda: D.Convolution(np.zeros((2, 1, 3, 3)), np.zeros(3)), ValueError, ["b", "2", "(3,)"]),
    (lambda: D.Convolution(np.zeros((2, 1, 3, 3)), np.zeros(2), pad=-1), ValueError,
     ["pad", ">= 0"]),
    (lambda: D.Convolution(np.zeros((2, 1, 3, 3)), np.zeros(2), stride=True), TypeError,
     ["stride"]),
    (lambda: D.Convolution(np.zeros((2, 1, 3, 3)), np.zeros(2)).forward(np.zeros((1, 2, 5, 5))),
     ValueError, ["x", "2 channels", "expects 1"]),
    (lambda: D.Convolution(np.zeros((2, 1, 3, 3)), np.zeros(2)).forward(np.zeros((1, 5, 5))),
     ValueError, ["x", "4-D", "(1, 5, 5)"]),
    (lambda: D.Convolution(np.zeros((2, 1, 3, 3)), np.zeros(2)).backward(np.zeros((1, 2, 3, 3))),
     RuntimeError, ["before", "forward"]),
    (lambda: D.Pooling(2, 0), ValueError, ["pool_w", ">= 1"]),
    (lambda: D.Pooling(3, 3).forward(np.zeros((1, 1, 2, 2))), ValueError, ["window", "3x3"]),
    (lambda: D.Affine(np.zeros((4, 3)), np.zeros(4)), ValueError, ["b", "3", "(4,)"]),
    (lambda: D.Affine(np.zeros((4, 3)), np.zeros(3)).forward(np.zeros((2, 5))), ValueError,
     ["x", "4 features", "(2, 5)"]),
    (lambda: D.SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0, 3])), ValueError,
     ["t", "[0, 3)", "3]"]),
    (lambda: D.SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError,
     ["t", "integer", "float64"]),
    (lambda: D.SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([[0], [1]])), ValueError,
     ["t", "(2,)", "(2, 1)"]),
    (lambda: D.SoftmaxWithLoss().forward(np.zeros((2, 3)), np.zeros((3, 2))), ValueError,
     ["one-hot", "(2, 3)", "(3, 2)"]),
    (lambda: D.Dropout(1.5), ValueError, ["dropout_ratio", "[0, 1]", "1.5"]),
    (lambda: D.Dropout("0.5"), TypeError, ["dropout_ratio"]),
    (lambda: D.BatchNormalization(np.ones(4), np.zeros(4)).forward(np.zeros((2, 3, 4))),
     ValueError, ["x", "2-D or 4-D", "(2, 3, 4)"]),
    (lambda: D.BatchNormalization(np.ones(4), np.zeros(4)).forward(np.zeros((2, 5))),
     ValueError, ["gamma", "(2, 5)", "(4,)"]),
    (lambda: D.Relu().backward(np.zeros(3)), RuntimeError, ["Relu.backward", "before"]),
    (lambda: D.SGD().update([np.zeros(2)], [np.zeros(2)]), TypeError, ["params", "dict", "list"]),
    (lambda: D.Adam().update({"W": np.zeros(2)}, {"b": np.zeros(2)}), ValueError,
     ["grads", "'W'"]),
    (lambda: D.Momentum().update({"W": np.zeros(2)}, {"W": np.zeros(3)}), ValueError,
     ["grads['W']", "(2,)", "(3,)"]),
    (lambda: D.AdaGrad().update({"W": np.zeros(2, int)}, {"W": np.zeros(2)}), TypeError,
     ["params['W']", "int64"]),
    (lambda: D.RMSprop(lr="0.1"), TypeError, ["lr", "'0.1'"]),
]


@pytest.mark.parametrize("i", range(len(BAD_CALLS)))
def test_bad_input_is_rejected_before_any_kernel(monkeypatch, i):
    call, exc, words = BAD_CALLS[i]
    monkeypatch.setattr(D, "ops", _NoKernels())
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for word in words:
        assert word in msg, (word, msg)


def test_bad_input_leaves_optimizer_and_params_untouched():
    params = {"W": np.ones(3), "b": np.ones(2)}
    opt = D.Adam()
    with pytest.raises(ValueError, match="grads\\['b'\\]"):
        opt.update(params, {"W": np.ones(3), "b": np.ones(5)})
    assert opt.iter == 0 and opt.m is None
    assert_same(params["W"], np.ones(3))
    with pytest.raises(ValueError, match="first update"):
        opt.update({"W": params["W"]}, {"W": np.ones(3)})
        opt.update(params, {"W": np.ones(3), "b": np.ones(2)})


# ------------------------------------------------------------ the review of 2026-12-03 15:3x
def test_adam_reset_by_m_none_rebuilds_v(backend):
    """The book's Adam rebuilds m and v when m is None; `opt.m = None` left v as it was
    (the next step's v 4x the book's)."""
    p1, p2 = {"W": np.array([1.0, 2.0, 3.0])}, {"W": np.array([1.0, 2.0, 3.0])}
    g = {"W": np.array([0.1, 0.2, 0.3])}
    ours, book = D.Adam(lr=0.01), O.Adam(lr=0.01)
    for _ in range(3):
        ours.update(p1, g)
        book.update(p2, g)
    ours.m = book.m = None
    ours.update(p1, g)
    book.update(p2, g)
    assert_same(ours.v["W"], book.v["W"])
    assert_same(p1["W"], p2["W"])


def test_convolution_of_integer_pixels_is_float64(backend):
    """The book's im2col builds float64 columns from uint8 pixels: float64 out, dx, dW even
    with float32 W and b (they came out float32)."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (2, 1, 6, 6)).astype(np.uint8)
    W = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    ours, book = D.Convolution(W, b), O.Convolution(W, b)
    y, yb = ours.forward(x), book.forward(x)
    assert y.dtype == yb.dtype == np.float64
    assert_close(y, yb, k=10, scale=255 * absmax(W), what="y")
    dout = rng.standard_normal(y.shape)
    dx, dxb = ours.backward(dout), book.backward(dout)
    assert dx.dtype == dxb.dtype and ours.dW.dtype == book.dW.dtype == np.float64
    assert_close(ours.dW, book.dW, k=32, scale=255 * absmax(dout), what="dW")


def test_convolution_backward_uses_the_forward_input_not_its_later_values(backend):
    """The book's dW comes from the columns built at forward; fastnn read the input array
    again at backward, so x changed in place in between changed dW (to 0 here)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 5, 5))
    W, b = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    ours, book = D.Convolution(W, b), O.Convolution(W, b)
    ours.forward(x)
    book.forward(x)
    x *= 0
    dout = rng.standard_normal((2, 3, 3, 3))
    ours.backward(dout)
    book.backward(dout)
    assert np.abs(book.dW).max() > 0.1
    assert_close(ours.dW, book.dW, k=18, scale=absmax(dout) * 4, what="dW")


def test_affine_backward_reads_the_attribute_x(backend):
    """The book's dW is np.dot(self.x.T, dout): an x assigned to the attribute, or (for a
    float32 input, whose self.x the book keeps as it is) changed in place, is the one used.
    fastnn used its own converted copy."""
    rng = np.random.default_rng(5)
    W, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    dout = rng.standard_normal((2, 3))
    for change in ("assign", "in place float32"):
        x = rng.standard_normal((2, 4)).astype(np.float32 if "float32" in change else
                                                np.float64)
        ours, book = D.Affine(W, b), O.Affine(W, b)
        ours.forward(x)
        book.forward(x)
        if change == "assign":
            new = rng.standard_normal((2, 4))
            ours.x, book.x = new, new.copy()
        else:
            x *= 2
        ours.backward(dout)
        book.backward(dout)
        assert_close(ours.dW, book.dW, k=2, scale=absmax(dout) * 10, what=change)
    ours.x = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"x \(the attribute\)"):
        ours.backward(dout)


def test_batchnorm_running_statistics_checked_by_name():
    with pytest.raises(ValueError, match="running_mean must broadcast"):
        D.BatchNormalization(np.ones(3), np.zeros(3), running_mean=np.zeros(4),
                             running_var=np.ones(4)).forward(np.ones((2, 3)), train_flg=False)
    with pytest.raises(ValueError, match="running_var is None but running_mean"):
        D.BatchNormalization(np.ones(3), np.zeros(3),
                             running_mean=np.zeros(3)).forward(np.ones((2, 3)))


def test_pooling_routes_by_arg_max_changed_in_place(backend):
    """The book's backward reads self.arg_max: values written into the array read from it
    (or into an array assigned to it) are the ones used; fastnn used its own copy."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 4, 4))
    dout = rng.standard_normal((2, 2, 2, 2))
    ours, book = D.Pooling(2, 2, stride=2), O.Pooling(2, 2, stride=2)
    ours.forward(x)
    book.forward(x)
    ours.arg_max[:] = 0
    book.arg_max[:] = 0
    assert_same(ours.backward(dout), book.backward(dout))
    am = np.full_like(book.arg_max, 3)
    ours.arg_max = am
    book.arg_max = am.copy()
    am[:] = 1
    book.arg_max[:] = 1
    assert_same(ours.backward(dout), book.backward(dout))


def test_convolution_backward_from_columns_read_or_assigned(backend):
    """The book's backward computes dW from self.col and dx from self.col_W: values written
    into them (or assigned) are used. fastnn's kernels work from the input and ignored them."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 2, 5, 5))
    W, b = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    dout = rng.standard_normal((2, 3, 3, 3))
    for change in ("col in place", "col assigned", "col_W assigned", "read only"):
        ours, book = D.Convolution(W, b), O.Convolution(W, b)
        ours.forward(x)
        book.forward(x)
        if change == "col in place":
            ours.col[:, :4] = 0
            book.col[:, :4] = 0
        elif change == "col assigned":
            new = rng.standard_normal(book.col.shape)
            ours.col, book.col = new, new.copy()
        elif change == "col_W assigned":
            new = rng.standard_normal(book.col_W.shape)
            ours.col_W, book.col_W = new, new.copy()
        else:
            assert_close(ours.col, book.col, what="col")
        dx, dxb = ours.backward(dout), book.backward(dout)
        s = absmax(dout) * 4
        assert_close(dx, dxb, k=27, scale=s, what=change)
        assert_close(ours.dW, book.dW, k=18, scale=s, what=change)
        assert_close(ours.db, book.db, k=18, scale=s, what=change)
