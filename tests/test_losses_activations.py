"""Activations and losses against the float64 reference of ``tests/reference_model.py`` and
against central finite differences; the stable softmax/sigmoid + cross-entropy paths on
saturated logits (the loss objects with ``from_logits=True`` and the fused path a
:class:`fastnn.models.Sequential` takes); ``from_logits=True`` against ``from_logits=False``;
NaN propagation; unknown names.

Tolerances: conftest's ``assert_close``/``tolerance`` (``k`` the reduction length, ``scale``
the largest term) and its ``"finite_difference"`` entry.
"""
from __future__ import annotations

import math
import re
import zlib

import numpy as np
import pytest

from fastnn import activations, layers as L, losses, models, optimizers, regularizers
from fastnn.backends import numpy_backend
from conftest import DTYPES, TOLERANCES, absmax, assert_close, tolerance

import reference_model as R

DT_IDS = ["f32", "f64"]
FD = TOLERANCES["finite_difference"]


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def assert_fd(analytic, numeric, what):
    atol = FD["atol"] * max(1.0, float(np.max(np.abs(numeric), initial=0.0)))
    np.testing.assert_allclose(analytic, numeric, rtol=FD["rtol"], atol=atol, err_msg=what)


def _away_from_zero(rng, shape, dtype, lo=0.05, hi=2.0):
    """Values in [-hi, -lo] U [lo, hi]: no kink of relu/leaky_relu/elu within reach."""
    mag = rng.uniform(lo, hi, size=shape)
    return (mag * rng.choice([-1.0, 1.0], size=shape)).astype(dtype)


# =========================================================================== activations
# (id, identifier given to activations.get, reference name, reference keyword arguments,
#  input shape)
ACT_CASES = [
    ("linear", "linear", "linear", {}, (4, 5)),
    ("none", None, "linear", {}, (4, 5)),
    ("relu", "relu", "relu", {}, (4, 5)),
    ("sigmoid", "sigmoid", "sigmoid", {}, (4, 5)),
    ("tanh", "tanh", "tanh", {}, (4, 5)),
    ("softmax", "softmax", "softmax", {}, (4, 5)),
    ("softmax_3d", "softmax", "softmax", {}, (2, 3, 4)),
    ("softmax_axis1", activations.Softmax(axis=1), "softmax", {"axis": 1}, (2, 3, 4)),
    ("softmax_axis0", activations.Softmax(axis=0), "softmax", {"axis": 0}, (3, 4)),
    ("leaky_relu", "leaky_relu", "leaky_relu", {}, (4, 5)),
    ("leaky_relu_0.05", activations.LeakyReLU(0.05), "leaky_relu", {"negative_slope": 0.05},
     (4, 5)),
    ("elu", "elu", "elu", {}, (4, 5)),
    ("elu_alpha0.5", {"name": "elu", "alpha": 0.5}, "elu", {"alpha": 0.5}, (4, 5)),
    ("RELU_upper", "ReLU", "relu", {}, (4, 5)),
    ("gelu", "gelu", "gelu", {}, (4, 5)),
    ("gelu_tanh", activations.GELU(approximate=True), "gelu", {"approximate": True}, (4, 5)),
    ("silu", "silu", "silu", {}, (4, 5)),
    ("swish", "swish", "silu", {}, (4, 5)),
    ("selu", "selu", "selu", {}, (4, 5)),
    ("softplus", "softplus", "softplus", {}, (4, 5)),
    ("softsign", "softsign", "softsign", {}, (4, 5)),
    ("exponential", "exponential", "exponential", {}, (4, 5)),
    ("hard_sigmoid", "hard_sigmoid", "hard_sigmoid", {}, (4, 5)),
    ("hard_silu", "hard_silu", "hard_silu", {}, (4, 5)),
    ("hard_swish", "hard_swish", "hard_silu", {}, (4, 5)),
    ("mish", "mish", "mish", {}, (4, 5)),
    ("relu6", "relu6", "relu6", {}, (4, 5)),
    ("log_softmax", "log_softmax", "log_softmax", {}, (2, 3, 4)),
    ("log_softmax_axis1", activations.LogSoftmax(axis=1), "log_softmax", {"axis": 1},
     (2, 3, 4)),
    ("celu", "celu", "celu", {}, (4, 5)),
    ("celu_alpha0.5", {"name": "celu", "alpha": 0.5}, "celu", {"alpha": 0.5}, (4, 5)),
    ("log_sigmoid", "log_sigmoid", "log_sigmoid", {}, (4, 5)),
]
# the ones whose output is a reduction along an axis
_AXIS_ACTS = ("softmax", "log_softmax")
ACT_IDS = [c[0] for c in ACT_CASES]


def _act_k(ref_name, akw, shape):
    """Terms of the reduction behind one output (softmax sums over its axis)."""
    return shape[akw.get("axis", -1)] if ref_name in _AXIS_ACTS else 1


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("cid,ident,ref_name,akw,shape", ACT_CASES, ids=ACT_IDS)
def test_activation_matches_reference(backend, cid, ident, ref_name, akw, shape, dtype):
    rng = _rng("act", cid, np.dtype(dtype).name)
    act = activations.get(ident)
    x = _away_from_zero(rng, shape, dtype)
    dy = rng.uniform(-1, 1, size=shape).astype(dtype)
    y = act.forward(x)
    dx = act.backward(dy, x, y)
    ry = R.activation_forward(ref_name, x, **akw)
    rdx = R.activation_backward(ref_name, x, dy, **akw)
    k = _act_k(ref_name, akw, shape)
    assert_close(y, ry.astype(dtype), k=k, scale=absmax(ry), what=f"{cid} forward")
    assert_close(dx, rdx.astype(dtype), k=k, scale=absmax(ry) * absmax(dy) + absmax(rdx),
                 what=f"{cid} backward")
    np.testing.assert_array_equal(act(x), y)               # __call__ is forward


@pytest.mark.parametrize("cid,ident,ref_name,akw,shape", ACT_CASES, ids=ACT_IDS)
def test_activation_backward_matches_finite_differences(backend, cid, ident, ref_name, akw,
                                                        shape):
    rng = _rng("actfd", cid)
    act = activations.get(ident)
    x = _away_from_zero(rng, shape, np.float64)
    w = rng.uniform(-1, 1, size=shape)

    def f():
        return float(np.sum(w * act.forward(x)))

    analytic = act.backward(w, x, act.forward(x))
    assert_fd(analytic, R.numerical_gradient(f, x, FD["step"]), cid)


@pytest.mark.parametrize("cid,ident,ref_name,akw,shape", ACT_CASES, ids=ACT_IDS)
def test_activation_config_round_trip(cid, ident, ref_name, akw, shape):
    act = activations.get(ident)
    again = activations.get(activations.serialize(act))
    assert type(again) is type(act) and again.get_config() == act.get_config()
    x = _away_from_zero(_rng("actcfg", cid), shape, np.float64)
    np.testing.assert_array_equal(again.forward(x), act.forward(x))


def test_nondecreasing_activations_are_so():
    # activations.nondecreasing (max pooling may run before f: Sequential's conv + pool
    # pairs) holds for exactly the elementwise built-ins whose values never decrease on a
    # float64 grid over [-30, 30] (the softmaxes act across elements: never)
    x = np.linspace(-30.0, 30.0, 600001)
    for name in activations._REGISTRY:
        act = activations.get(name)
        claimed = activations.nondecreasing(act)
        if name in ("softmax", "log_softmax"):
            assert not claimed
            continue
        drops = np.diff(act.forward(x)) < 0
        assert claimed == (not drops.any()), (name, x[1:][drops][:3])
    assert activations.nondecreasing(activations.ELU(0.0))
    assert not activations.nondecreasing(activations.ELU(-1.0))
    assert activations.nondecreasing(activations.CELU(-2.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("name", R.ACTIVATIONS)
def test_activation_saturated_inputs_finite(backend, name, dtype):
    """+-1000 (and float32/float64 extremes): no overflow warning, finite exact limits
    (exponential's limit is inf, as NumPy's and Keras's)."""
    if name == "exponential":
        pytest.skip("exp(1000) is inf")
    x = np.array([[-1000.0, 1000.0, -60.0, 60.0, 0.5]], dtype=dtype)
    act = activations.get(name)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = act.forward(x)
        dx = act.backward(np.ones_like(x), x, y)
    assert y.dtype == x.dtype and dx.dtype == x.dtype
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx)), (y, dx)
    ry = R.activation_forward(name, x)
    with np.errstate(over="ignore"):
        rdx = R.activation_backward(name, x, np.ones(x.shape))
    assert_close(y, ry.astype(dtype), k=5, scale=absmax(ry), what=f"{name} saturated y")
    assert_close(dx, rdx.astype(dtype), k=5, scale=max(absmax(rdx), 1.0),
                 what=f"{name} saturated dx")


@pytest.mark.parametrize("name", R.ACTIVATIONS)
def test_activation_nan_propagates(backend, name):
    x = np.array([[np.nan, 0.5, -0.5], [0.25, -2.0, 1.0]])
    y = activations.get(name).forward(x)
    assert np.isnan(y[0, 0]), f"{name}: NaN input gave {y[0, 0]}"
    if name in _AXIS_ACTS:
        assert np.all(np.isnan(y[0])) and np.all(np.isfinite(y[1]))
    else:
        assert np.all(np.isfinite(y[0, 1:])) and np.all(np.isfinite(y[1]))


@pytest.mark.parametrize("name", R.ACTIVATIONS)
def test_activation_call_on_integer_input(name):
    """``act([-1, 0, 2])`` computes in floating point (it used to truncate to integers:
    sigmoid gave [0, 0, 0], softmax raised)."""
    x = [[-1, 0, 2], [3, -2, 1]]
    y = activations.get(name)(x)
    assert y.dtype == np.float64
    ry = R.activation_forward(name, np.array(x, dtype=np.float64))
    assert_close(y, ry, k=3, scale=absmax(ry), what=name)
    np.testing.assert_array_equal(activations.get(name)(np.array(x, dtype=bool)),
                                  activations.get(name)(np.array(x, dtype=bool) * 1.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("name", R.ACTIVATIONS)
def test_function_forms_match_reference_and_resolve_to_classes(backend, name, dtype):
    """Keras's function forms, fastnn.activations.relu(x) etc.: the reference's values, and
    a layer given the function gets the class (analytic backward, fused relu), not a
    numerically differentiated callable."""
    fn = getattr(activations, name)
    x = _rng("fn", name, np.dtype(dtype).name).standard_normal((4, 5)).astype(dtype)
    y = fn(x)
    ry = R.activation_forward(name, x)
    assert_close(y, ry.astype(dtype), k=5 if name in _AXIS_ACTS else 1, scale=absmax(ry),
                 what=name)
    act = activations.get(fn)
    assert type(act) is type(activations.get(name))
    assert activations.serialize(act) == activations.serialize(activations.get(name))
    assert L.Dense(3, activation=fn).activation.name == name


def test_gelu_tails_and_its_erfc():
    """gelu's normal CDF comes from erfc of a non-negative argument on each side, so the
    left tail keeps its relative accuracy (1 + erf(x / sqrt(2)) cancels to 0 there, or to
    a few correct digits): against math.erfc, erfc itself to 2e-13 relative on [0, 26]
    (2e-14 on [0, 6]; the rest the rounding of exp's argument, about z^2 eps; past 26.5
    erfc is subnormal), gelu and its derivative to 1e-12 relative down to x = -36; in
    float32 to 2e-5 relative down to -12 (z^2 float32 eps there)."""
    z = np.linspace(0.0, 26.0, 5201)
    want = np.array([math.erfc(v) for v in z])
    got = numpy_backend._erfc_nonneg(z)
    np.testing.assert_allclose(got, want, rtol=2e-13, atol=0)
    np.testing.assert_allclose(got[z <= 6], want[z <= 6], rtol=2e-14, atol=0)
    x = np.concatenate([-np.geomspace(1e-3, 36.0, 300), np.geomspace(1e-3, 36.0, 300)])
    np.testing.assert_allclose(activations.gelu(x), R.activation_forward("gelu", x),
                               rtol=1e-12, atol=0)
    act = activations.GELU()
    np.testing.assert_allclose(act.backward(np.ones_like(x), x, act.forward(x)),
                               R.activation_backward("gelu", x, np.ones_like(x)), rtol=1e-12,
                               atol=1e-300)
    x32 = np.linspace(-12, 12, 2401).astype(np.float32)
    np.testing.assert_allclose(activations.gelu(x32), R.activation_forward("gelu", x32),
                               rtol=2e-5, atol=0)
    assert activations.gelu(np.float32(-20.0)).dtype == np.float32
    assert type(activations.get("swish")) is activations.SiLU
    assert type(activations.get("hard_swish")) is activations.HardSiLU
    assert activations.swish is activations.silu
    with pytest.raises(TypeError, match="approximate must be a bool"):
        activations.GELU(approximate="yes")
    with pytest.raises(ValueError, match="alpha must be non-zero"):
        activations.CELU(0.0)


def test_relu_function_keyword_forms():
    """relu(x, negative_slope, max_value, threshold) gives Keras's documented examples,
    including its edges (x == threshold gives 0; with max_value, values between a negative
    threshold and 0 give 0), and is the ReLU layer's formula."""
    x = np.array([-10, -5, 0.0, 5, 10])
    A = activations
    assert A.relu(x).tolist() == [0, 0, 0, 5, 10]
    assert A.relu(x, negative_slope=0.5).tolist() == [-5, -2.5, 0, 5, 10]
    assert A.relu(x, max_value=5.0).tolist() == [0, 0, 0, 5, 5]
    assert A.relu(x, threshold=5.0).tolist() == [0, 0, 0, 0, 10]
    assert A.relu(x, max_value=10, negative_slope=0.5).tolist() == [-5, -2.5, 0, 5, 10]
    assert A.relu([-3.0, -1.0, 1.0, 2.0], threshold=1.5).tolist() == [0, 0, 0, 2]
    assert A.relu([-0.5, -1.5], max_value=2.0, threshold=-1.0).tolist() == [0, 0]
    assert A.relu([-0.5, -1.5], threshold=-1.0).tolist() == [-0.5, 0]
    assert np.isnan(A.relu([np.nan], threshold=1.0)[0])
    grid = np.linspace(-3, 3, 25)
    for kw in ({"negative_slope": 0.1}, {"max_value": 1.5}, {"threshold": 0.5},
               {"negative_slope": 0.2, "max_value": 2.0, "threshold": -1.0}):
        np.testing.assert_array_equal(A.relu(grid, **kw), R.relu_layer_forward(grid, **kw),
                                      err_msg=str(kw))
        np.testing.assert_array_equal(L.ReLU(**kw).forward(grid), A.relu(grid, **kw))
    np.testing.assert_array_equal(A.leaky_relu(grid, 0.3), np.where(grid > 0, grid, 0.3 * grid))
    np.testing.assert_allclose(A.elu(grid, 0.5),
                               np.where(grid > 0, grid, 0.5 * np.expm1(np.minimum(grid, 0))))


@pytest.mark.parametrize("name", R.ACTIVATIONS)
def test_function_forms_take_any_numeric_input(name):
    """Every function form takes lists, ints, bools, scalars and float16 alike: integers
    in float64, floats in their own dtype (sigmoid truncated ints to 0 before, softmax
    raised on them, relu refused float16 and 0-d input)."""
    fn = getattr(activations, name)
    ints = np.array([[-2, 0, 3]])
    y = fn(ints)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, fn(ints.astype(np.float64)))
    np.testing.assert_allclose(fn([[-2, 0, 3]]), y)
    half = fn(np.array([[-2.0, 0.5, 3.0]], np.float16))
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, fn(np.array([[-2.0, 0.5, 3.0]])), rtol=2e-3, atol=2e-3)
    if name not in _AXIS_ACTS:          # (a 0-d softmax has no axis)
        assert np.ndim(fn(1.5)) == 0 and np.ndim(fn(np.float32(-1.0))) == 0


def test_get_takes_unhashable_callables():
    """A user's callable object need not be hashable (a dataclass with eq, say)."""
    import dataclasses

    @dataclasses.dataclass
    class Scaled:
        s: float = 2.0

        def __call__(self, x):
            return self.s * x

    act = activations.get(Scaled())
    np.testing.assert_array_equal(act.forward(np.array([1.0, 2.0])), [2.0, 4.0])


def test_callable_activation_uses_its_function():
    """A plain callable: forward is the function, backward its (numerical) derivative."""
    act = activations.get(np.sin)
    x = np.linspace(-2, 2, 9)
    dy = np.linspace(1, 2, 9)
    np.testing.assert_array_equal(act.forward(x), np.sin(x))
    assert_fd(act.backward(dy, x, act.forward(x)), dy * np.cos(x), "sin'")


@pytest.mark.parametrize("bad", ["swish_nope", "RelU7", ""])
def test_unknown_activation_name_lists_valid(bad):
    with pytest.raises(ValueError, match="valid names") as info:
        activations.get(bad)
    assert repr(bad) in str(info.value)
    for name in R.ACTIVATIONS:
        assert name in str(info.value)


def test_activation_bad_identifier_type():
    with pytest.raises(TypeError, match="activation"):
        activations.get(3)
    with pytest.raises(ValueError, match="negative_slope"):
        activations.LeakyReLU(-0.1)


# =========================================================================== losses
def _loss_data(rng, name, from_logits, shape, dtype):
    """(y_true, y_pred) away from kinks and clipping."""
    k = shape[-1]
    if name in ("mean_squared_error", "mean_absolute_error", "log_cosh"):
        t = rng.uniform(-1, 1, shape)
        p = t + _away_from_zero(rng, shape, np.float64, 0.05, 1.0)
    elif name == "huber":                                # |error| away from delta = 1 too
        t = rng.uniform(-1, 1, shape)
        e = _away_from_zero(rng, shape, np.float64, 0.05, 0.9)
        p = t + np.where(rng.random(shape) < 0.5, e, 2 * e + np.sign(e))
    elif name == "mean_squared_logarithmic_error":
        t, p = rng.uniform(0, 2, shape), rng.uniform(0.05, 3, shape)
    elif name == "mean_absolute_percentage_error":
        t = _away_from_zero(rng, shape, np.float64, 0.2, 2.0)
        p = t + _away_from_zero(rng, shape, np.float64, 0.05, 1.0)
    elif name == "kl_divergence":                        # distributions against guesses
        t = rng.uniform(0.05, 1, shape)
        t /= t.sum(axis=-1, keepdims=True)
        p = rng.uniform(0.05, 0.95, shape)
    elif name == "poisson":
        t, p = rng.integers(0, 4, shape).astype(np.float64), rng.uniform(0.1, 3, shape)
    elif name in ("hinge", "squared_hinge"):             # margins away from 0
        t = rng.choice([-1.0, 1.0], shape)
        p = t * (1 - _away_from_zero(rng, shape, np.float64, 0.05, 1.5))
    elif name == "categorical_hinge":                    # row margins away from 0
        t = np.eye(k)[rng.integers(0, k, size=shape[:-1])]
        p = rng.uniform(-1, 1, shape)
        p += t * (_away_from_zero(rng, shape[:-1], np.float64, 0.05, 1.5)[..., None]
                  + 1 + ((1 - t) * p).max(axis=-1, keepdims=True) - (t * p).sum(
                      axis=-1, keepdims=True))
    elif name == "binary_crossentropy":
        t = rng.uniform(0, 1, shape)                     # soft labels too
        t.reshape(-1)[: t.size // 2] = rng.integers(0, 2, t.size // 2)
        p = rng.uniform(-3, 3, shape) if from_logits else rng.uniform(0.05, 0.95, shape)
    else:
        labels = rng.integers(0, k, size=shape[:-1])
        t = labels if name.startswith("sparse") else np.eye(k)[labels]
        # probabilities need not sum to 1: Keras renormalises them
        p = rng.uniform(-3, 3, shape) if from_logits else rng.uniform(0.1, 1.0, shape)
    return (t if name.startswith("sparse") else t.astype(dtype)), p.astype(dtype)


# (loss name, from_logits, y_pred shape)
LOSS_CASES = [
    ("mean_squared_error", False, (4, 3)), ("mean_squared_error", False, (3, 2, 4)),
    ("mean_absolute_error", False, (4, 3)), ("mean_absolute_error", False, (3, 2, 2)),
    ("binary_crossentropy", False, (4, 3)), ("binary_crossentropy", True, (4, 3)),
    ("binary_crossentropy", True, (3, 2, 2)), ("binary_crossentropy", False, (5, 1)),
    ("categorical_crossentropy", False, (4, 5)), ("categorical_crossentropy", True, (4, 5)),
    ("categorical_crossentropy", True, (3, 2, 4)), ("categorical_crossentropy", False, (3, 2, 4)),
    ("sparse_categorical_crossentropy", False, (4, 5)),
    ("sparse_categorical_crossentropy", True, (4, 5)),
    ("sparse_categorical_crossentropy", True, (3, 2, 4)),
    ("huber", False, (4, 3)), ("huber", False, (3, 2, 4)), ("log_cosh", False, (4, 3)),
    ("mean_squared_logarithmic_error", False, (4, 3)),
    ("mean_absolute_percentage_error", False, (3, 2, 2)),
    ("kl_divergence", False, (4, 5)), ("kl_divergence", False, (3, 2, 4)),
    ("poisson", False, (4, 3)), ("hinge", False, (4, 3)), ("squared_hinge", False, (3, 2, 2)),
    ("categorical_hinge", False, (4, 5)), ("categorical_hinge", False, (3, 2, 4)),
]
# the losses that take from_logits
_XENT = ("binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy")
LOSS_IDS = [f"{n}-{'logits' if fl else 'probs'}-{'x'.join(map(str, s))}"
            for n, fl, s in LOSS_CASES]


def _make_loss(name, from_logits):
    if name not in _XENT:
        assert not from_logits
        return losses.get(name)
    return losses.get({"name": name, "from_logits": from_logits})


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("name,from_logits,shape", LOSS_CASES, ids=LOSS_IDS)
def test_loss_matches_reference(name, from_logits, shape, dtype, weighted):
    rng = _rng("loss", name, from_logits, shape, np.dtype(dtype).name, weighted)
    t, p = _loss_data(rng, name, from_logits, shape, dtype)
    sw = rng.uniform(0.2, 2.0, size=shape[0]) if weighted else None
    loss = _make_loss(name, from_logits)
    value = loss(t, p, sample_weight=sw)
    grad = loss.gradient(t, p, sample_weight=sw)
    ref = R.loss_value(name, t, p, from_logits, sw)
    rgrad = R.loss_gradient(name, t, p, from_logits, sw)
    assert isinstance(value, float)
    # the value: a sum over every element, computed in dtype
    terms = R.elementwise_loss(name, *R.loss_inputs(name, t, p), from_logits)
    tol = tolerance(dtype, k=p.size, scale=absmax(terms) * (2.0 if weighted else 1.0))
    np.testing.assert_allclose(value, ref, **tol, err_msg=f"{name} value")
    k = shape[-1] if "crossentropy" in name and "categorical" in name else 1
    assert_close(grad, rgrad.astype(dtype), k=k, scale=absmax(rgrad) * k,
                 what=f"{name} gradient")


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("name,from_logits,shape", LOSS_CASES, ids=LOSS_IDS)
def test_loss_value_and_gradient_is_call_and_gradient(name, from_logits, shape, dtype,
                                                      weighted):
    # The training step's one-pass form gives bitwise what the two calls give.
    rng = _rng("lossvg", name, from_logits, shape, np.dtype(dtype).name, weighted)
    t, p = _loss_data(rng, name, from_logits, shape, dtype)
    sw = rng.uniform(0.2, 2.0, size=shape[0]) if weighted else None
    loss = _make_loss(name, from_logits)
    value, grad = loss.value_and_gradient(t, p, sample_weight=sw)
    assert value == loss(t, p, sample_weight=sw)
    assert grad.dtype == p.dtype
    np.testing.assert_array_equal(grad, loss.gradient(t, p, sample_weight=sw))


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("name,from_logits,shape", LOSS_CASES, ids=LOSS_IDS)
def test_loss_gradient_matches_finite_differences(name, from_logits, shape, weighted):
    rng = _rng("lossfd", name, from_logits, shape, weighted)
    t, p = _loss_data(rng, name, from_logits, shape, np.float64)
    sw = rng.uniform(0.2, 2.0, size=shape[0]) if weighted else None
    loss = _make_loss(name, from_logits)
    assert_fd(loss.gradient(t, p, sample_weight=sw),
              R.numerical_gradient(lambda: loss(t, p, sample_weight=sw), p, FD["step"]),
              f"{name} from_logits={from_logits}")


XENT_CASES = [c for c in LOSS_CASES if "categorical" in c[0] and c[1]]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("name,from_logits,shape", XENT_CASES,
                         ids=[f"{n}-{'x'.join(map(str, s))}" for n, _, s in XENT_CASES])
def test_logits_step_is_value_gradient_and_softmax(backend, name, from_logits, shape, dtype,
                                                   weighted):
    """The training step's fused softmax form (one ops.softmax_cross_entropy pass) gives
    the loss, gradient and softmax of the separate calls, to rounding."""
    rng = _rng("logitsstep", name, shape, np.dtype(dtype).name, weighted)
    t, z = _loss_data(rng, name, True, shape, dtype)
    sw = rng.uniform(0.2, 2.0, size=shape[0]) if weighted else None
    loss = _make_loss(name, True)
    value, grad, probs = loss.logits_step(t, z, sample_weight=sw)
    ref_value, ref_grad = loss.value_and_gradient(t, z, sample_weight=sw)
    k = shape[-1]
    tol = tolerance(dtype, k=z.size, scale=(1 + 2 * absmax(z)) * (2.0 if weighted else 1.0))
    np.testing.assert_allclose(value, ref_value, **tol)
    assert_close(grad, ref_grad, k=k, scale=absmax(ref_grad) * k, what="gradient")
    assert_close(probs, activations.softmax(z), k=k, what="softmax")
    with pytest.raises(ValueError, match="from_logits=True"):
        _make_loss(name, False).logits_step(t, z)


@pytest.mark.parametrize("name,from_logits,shape", LOSS_CASES, ids=LOSS_IDS)
def test_loss_of_an_empty_batch_is_zero(name, from_logits, shape):
    """An empty batch (N = 0), also with extra axes, gives 0 and an empty gradient."""
    rng = _rng("lossempty", name, from_logits, shape)
    t, p = _loss_data(rng, name, from_logits, shape, np.float32)
    t, p = t[:0], p[:0]
    loss = _make_loss(name, from_logits)
    assert loss(t, p) == 0.0
    value, grad = loss.value_and_gradient(t, p)
    assert value == 0.0 and grad.shape == p.shape
    if "categorical" in name and from_logits:
        value, grad, probs = loss.logits_step(t, p)
        assert value == 0.0 and grad.shape == probs.shape == p.shape


def test_huber_delta_and_hinge_labels():
    """Huber's delta moves the kink (the reference's value and gradient at delta 0.5, and
    the config round trip); Hinge maps a batch of 0 / 1 labels to -1 / 1 as Keras does
    (the same loss as the -1 / 1 labels), and takes -1 / 1 labels and others as they are;
    a negative delta is refused."""
    rng = _rng("huber-delta")
    t, p = _loss_data(rng, "mean_squared_error", False, (6, 3), np.float64)
    h = losses.Huber(delta=0.5)
    assert h(t, p) == pytest.approx(R.loss_value("huber", t, p, delta=0.5), rel=1e-14)
    np.testing.assert_allclose(h.gradient(t, p), R.loss_gradient("huber", t, p, delta=0.5),
                               rtol=1e-14)
    assert losses.get(h.get_config()).delta == 0.5
    np.testing.assert_array_equal(losses.huber(t, p, 0.5), h.per_sample(t, p))
    with pytest.raises(ValueError, match="delta"):
        losses.Huber(-1.0)
    labels = rng.integers(0, 2, (6, 3)).astype(np.float64)
    for cls in (losses.Hinge, losses.SquaredHinge):
        assert cls()(labels, p) == cls()(2 * labels - 1, p)
        np.testing.assert_array_equal(cls().gradient(labels, p), cls().gradient(2 * labels - 1, p))
    assert losses.hinge(np.full((2, 1), 0.5), np.ones((2, 1))).tolist() == [0.5, 0.5]


def test_new_losses_edges():
    """At the clip bounds the gradient passes, as TensorFlow's clip and maximum give it
    (Keras 3.15: KLDivergence at p == 1 gives -t / p; MSLE at p == eps its value); a loss
    over a class axis names a y_pred without one (a reshape error before); a function form
    given to compile is its class (it was refused as a plain function)."""
    t = np.array([[0.3, 0.7]])
    p = np.array([[0.0, 1.0]])
    np.testing.assert_allclose(losses.KLDivergence().gradient(t, p), [[0.0, -0.7]])
    g = losses.MeanSquaredLogarithmicError().gradient(np.array([[1.0]]), np.array([[1e-7]]))
    assert g[0, 0] == pytest.approx(2 * (np.log1p(1e-7) - np.log(2.0)) / (1 + 1e-7))
    for loss in (losses.KLDivergence(), losses.CategoricalHinge()):
        with pytest.raises(ValueError, match=r"needs y_pred of shape \(N, \.\.\., K\)"):
            loss(np.array([1.0, 0.0, 0.0]), np.array([0.2, 0.3, 0.5]))
    for fn, cls in ((losses.huber, losses.Huber), (losses.kl_divergence, losses.KLDivergence),
                    (losses.mean_squared_error, losses.MeanSquaredError)):
        assert type(losses.get(fn)) is cls
    model = models.Sequential([L.Dense(1, input_dim=2)])
    model.compile("sgd", losses.huber)
    assert type(model.loss) is losses.Huber


def test_activation_tails_in_float32():
    """SELU's and CELU's derivatives in the far negative tail come from x (from y they
    cancelled: 0 at x = -20 in float32, where the derivative is 3.6e-9); the tanh form of
    gelu stays finite for |x| up to float16's and float32's range."""
    x = np.array([-20.0, -14.0, -8.0], np.float32)
    for act, want in ((activations.SELU(), activations.SELU.scale * activations.SELU.alpha
                       * np.exp(x.astype(np.float64))),
                      (activations.CELU(), np.exp(x.astype(np.float64)))):
        d = act.backward(np.ones_like(x), x, act.forward(x))
        np.testing.assert_allclose(d, want, rtol=1e-6)
    for dt in (np.float16, np.float32):
        big = np.array([-np.finfo(dt).max, -700, 700, np.finfo(dt).max], dt)
        act = activations.GELU(approximate=True)
        with np.errstate(over="raise", invalid="raise"):
            y = act.forward(big)
            d = act.backward(np.ones_like(big), big, y)
        np.testing.assert_array_equal(d, [0, 0, 1, 1])
        np.testing.assert_array_equal(y, [0, 0, 700, np.finfo(dt).max])


def test_loss_aliases_and_function_forms():
    rng = _rng("alias")
    t, p = _loss_data(rng, "mean_squared_error", False, (4, 3), np.float64)
    assert losses.get("mse")(t, p) == losses.get("mean_squared_error")(t, p)
    assert losses.get("MAE")(t, p) == R.loss_value("mean_absolute_error", t, p)
    np.testing.assert_allclose(losses.mean_squared_error(t, p), ((p - t) ** 2).mean(axis=1),
                               **tolerance(np.float64, k=3, scale=absmax((p - t) ** 2)))
    t, p = _loss_data(rng, "sparse_categorical_crossentropy", True, (4, 5), np.float64)
    per = losses.sparse_categorical_crossentropy(t, p, from_logits=True)
    assert per.shape == (4,)
    np.testing.assert_allclose(per.mean(), R.loss_value("sparse_categorical_crossentropy", t,
                                                        p, True),
                               **tolerance(np.float64, k=20, scale=absmax(p) + 5))
    for name in R.LOSSES:            # each function form: the class's per-sample values
        if name in ("binary_crossentropy", "categorical_crossentropy",
                    "sparse_categorical_crossentropy"):
            continue
        t, p = _loss_data(rng, name, False, (3, 2, 4), np.float64)
        per = getattr(losses, name)(t, p)
        assert per.shape == (3,)
        assert per.mean() == pytest.approx(losses.get(name)(t, p), rel=1e-14)
    assert losses.get("kld").name == losses.get("KLDivergence").name == "kl_divergence"
    assert type(losses.get("mape")) is losses.MeanAbsolutePercentageError
    assert type(losses.get("msle")) is losses.MeanSquaredLogarithmicError


@pytest.mark.parametrize("name,cls", [("binary_crossentropy", "BinaryCrossentropy"),
                                      ("categorical_crossentropy", "CategoricalCrossentropy")])
@pytest.mark.parametrize("from_logits", [False, True])
def test_function_forms_take_label_smoothing(name, cls, from_logits):
    """Keras's function forms take label_smoothing (and axis, at -1 only): the per-sample
    values whose mean is the class's loss, and the smoothed targets written out."""
    rng = _rng("smooth-fn")
    t, p = _loss_data(rng, name, from_logits, (6, 4), np.float64)
    fn = getattr(losses, name)
    per = fn(t, p, from_logits=from_logits, label_smoothing=0.2)
    assert per.shape == (6,)
    assert per.mean() == pytest.approx(
        getattr(losses, cls)(from_logits=from_logits, label_smoothing=0.2)(t, p), rel=1e-12)
    k = 2 if name.startswith("binary") else 4
    ts = t * 0.8 + 0.2 / k
    np.testing.assert_array_equal(per, fn(ts, p, from_logits=from_logits))
    assert not np.allclose(per, fn(t, p, from_logits=from_logits))
    assert np.array_equal(fn(t, p, from_logits=from_logits, axis=-1),
                          fn(t, p, from_logits=from_logits))
    with pytest.raises(ValueError, match="axis"):
        fn(t, p, from_logits=from_logits, axis=1)
    with pytest.raises(ValueError, match="label_smoothing"):
        fn(t, p, from_logits=from_logits, label_smoothing=1.5)


def test_sparse_function_form_takes_keras_defaults_only():
    rng = _rng("sparse-fn")
    t, p = _loss_data(rng, "sparse_categorical_crossentropy", True, (4, 5), np.float64)
    per = losses.sparse_categorical_crossentropy(t, p, from_logits=True)
    assert np.array_equal(losses.sparse_categorical_crossentropy(
        t, p, from_logits=True, ignore_class=None, axis=-1), per)
    for kw in (dict(ignore_class=0), dict(axis=0)):
        with pytest.raises(ValueError, match=next(iter(kw))):
            losses.sparse_categorical_crossentropy(t, p, from_logits=True, **kw)


def test_sparse_labels_with_trailing_axis():
    rng = _rng("sparse1")
    t, p = _loss_data(rng, "sparse_categorical_crossentropy", True, (4, 5), np.float64)
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    assert loss(t.reshape(4, 1), p) == loss(t, p)
    np.testing.assert_array_equal(loss.gradient(t.reshape(4, 1), p), loss.gradient(t, p))


# =========================================================================== saturation
SATURATED = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0],
                      [-1000.0, -1000.0, -1000.0], [1000.0, 1000.0, -1000.0]])
SAT_LABELS = np.array([1, 1, 2, 0])        # wrong, right, tie, tie


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("sparse", [False, True], ids=["categorical", "sparse"])
def test_softmax_ce_from_logits_saturated(dtype, sparse):
    z = SATURATED.astype(dtype)
    t = SAT_LABELS if sparse else np.eye(3, dtype=dtype)[SAT_LABELS]
    loss = (losses.SparseCategoricalCrossentropy if sparse
            else losses.CategoricalCrossentropy)(from_logits=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss(t, z)
        grad = loss.gradient(t, z)
    assert math.isfinite(value) and np.all(np.isfinite(grad))
    ref = R.loss_value("categorical_crossentropy", np.eye(3)[SAT_LABELS], z, True)
    np.testing.assert_allclose(value, ref, **tolerance(dtype, k=12, scale=2000.0))
    # exactly softmax - onehot (over the batch size)
    want = (R.activation_forward("softmax", z) - np.eye(3)[SAT_LABELS]) / 4
    assert_close(grad, want.astype(dtype), k=3, scale=1.0, what="softmax - onehot")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_sigmoid_bce_from_logits_saturated(dtype):
    z = np.array([[1000.0, -1000.0], [-1000.0, 1000.0], [50.0, -50.0]], dtype=dtype)
    t = np.array([[1, 0], [1, 0], [0, 1]], dtype=dtype)
    loss = losses.BinaryCrossentropy(from_logits=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss(t, z)
        grad = loss.gradient(t, z)
    assert math.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, R.loss_value("binary_crossentropy", t, z, True),
                               **tolerance(dtype, k=6, scale=1000.0))
    want = (R.activation_forward("sigmoid", z) - t) / 6
    assert_close(grad, want.astype(dtype), k=1, scale=1.0, what="sigmoid - y")


@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy"])
def test_probability_losses_finite_on_saturated_probabilities(name):
    """Exact 0 and 1 probabilities are clipped to [1e-7, 1 - 1e-7] (Keras): finite values."""
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    t = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    loss = losses.get(name)
    with np.errstate(divide="raise", invalid="raise"):
        value = loss(t, p)
        grad = loss.gradient(t, p)
    assert math.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, R.loss_value(name, t, p),
                               **tolerance(np.float64, k=p.size, scale=20.0))   # -log(1e-7)
    np.testing.assert_array_equal(grad, R.loss_gradient(name, t, p))


def _fused_model(last, loss, n_in, dtype):
    model = models.Sequential([L.Input((n_in,), dtype=dtype)] + last)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss=loss)
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"], ids=DT_IDS)
@pytest.mark.parametrize("head", ["dense_softmax", "activation_softmax", "softmax_layer",
                                  "sparse"])
def test_sequential_fused_softmax_ce_on_saturated_logits(backend, head, dtype):
    """A model ending in softmax with categorical CE trains on the logits: on logits of
    +-1000 the loss is finite and right, and the last kernel's gradient is
    x^T (softmax(z) - onehot) / N."""
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]], dtype=dtype)
    kernel = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]], dtype=dtype)
    labels = np.array([1, 1, 2, 0])
    onehot = np.eye(3, dtype=dtype)[labels]
    if head == "dense_softmax":
        last = [L.Dense(3, activation="softmax", use_bias=False, dtype=dtype)]
    elif head == "activation_softmax":
        last = [L.Dense(3, use_bias=False, dtype=dtype), L.Activation("softmax", dtype=dtype)]
    elif head == "softmax_layer":
        last = [L.Dense(3, use_bias=False, dtype=dtype), L.Softmax(dtype=dtype)]
    else:
        last = [L.Dense(3, activation="softmax", use_bias=False, dtype=dtype)]
    sparse = head == "sparse"
    model = _fused_model(last, "sparse_categorical_crossentropy" if sparse
                         else "categorical_crossentropy", 2, dtype)
    model.build((None, 2))
    dense = [l for l in model.layers if isinstance(l, L.Dense)][0]
    dense.set_weights([kernel])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = model.train_on_batch(x, labels if sparse else onehot)
    z = x.astype(np.float64) @ kernel.astype(np.float64)
    assert math.isfinite(value)
    np.testing.assert_allclose(value, R.loss_value("categorical_crossentropy",
                                                   np.eye(3)[labels], z, True),
                               **tolerance(dtype, k=12, scale=3000.0))
    grad = dense.grads["kernel"]
    assert np.all(np.isfinite(grad))
    want = x.astype(np.float64).T @ (R.activation_forward("softmax", z) - np.eye(3)[labels]) / 4
    assert_close(grad, want.astype(dtype), k=4, scale=1.0, what=f"{head} kernel gradient")
    np.testing.assert_array_equal(dense.params["kernel"], kernel)    # learning rate 0


@pytest.mark.parametrize("dtype", ["float32", "float64"], ids=DT_IDS)
def test_sequential_fused_sigmoid_bce_on_saturated_logits(backend, dtype):
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=dtype)
    kernel = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype=dtype)
    y = np.array([[0, 1], [0, 1], [1, 0]], dtype=dtype)
    model = _fused_model([L.Dense(2, activation="sigmoid", use_bias=False, dtype=dtype)],
                         "binary_crossentropy", 2, dtype)
    model.build((None, 2))
    dense = model.layers[-1]
    dense.set_weights([kernel])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = model.train_on_batch(x, y)
    z = x.astype(np.float64) @ kernel.astype(np.float64)
    np.testing.assert_allclose(value, R.loss_value("binary_crossentropy", y, z, True),
                               **tolerance(dtype, k=6, scale=1000.0))
    want = x.astype(np.float64).T @ (R.activation_forward("sigmoid", z) - y) / 6
    assert_close(dense.grads["kernel"], want.astype(dtype), k=3, scale=1.0,
                 what="sigmoid head gradient")


# =========================================================================== logits vs probs
@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy",
                                  "sparse_categorical_crossentropy"])
def test_from_logits_equals_probabilities(name):
    """Where both are defined (moderate logits, no clipping), from_logits=True on z equals
    from_logits=False on sigmoid(z)/softmax(z), and the logits gradient is the
    probabilities gradient pulled back through the activation."""
    rng = _rng("logits_vs_probs", name)
    t, z = _loss_data(rng, name, True, (5, 4), np.float64)
    act = "sigmoid" if name == "binary_crossentropy" else "softmax"
    p = R.activation_forward(act, z)
    on_logits = losses.get({"name": name, "from_logits": True})
    on_probs = losses.get({"name": name, "from_logits": False})
    tol = tolerance(np.float64, k=z.size, scale=absmax(z) + 10)
    np.testing.assert_allclose(on_logits(t, z), on_probs(t, p), **tol)
    pulled = R.activation_backward(act, z, on_probs.gradient(t, p))
    assert_close(on_logits.gradient(t, z), pulled, k=4, scale=absmax(pulled) + 1.0,
                 what="chain rule through the activation")


# =========================================================================== NaN
@pytest.mark.parametrize("name,from_logits,shape", LOSS_CASES, ids=LOSS_IDS)
def test_nan_prediction_gives_nan_loss(name, from_logits, shape):
    rng = _rng("nan", name, from_logits, shape)
    t, p = _loss_data(rng, name, from_logits, shape, np.float64)
    p.reshape(-1)[0] = np.nan
    loss = _make_loss(name, from_logits)
    with np.errstate(invalid="ignore"):
        value = loss(t, p)
        grad = loss.gradient(t, p)
    assert math.isnan(value), f"{name}: NaN prediction gave loss {value}"
    assert np.isnan(grad.reshape(-1)[0]), "the NaN element's gradient is NaN"
    assert np.all(np.isfinite(grad[1:])), "other samples are unaffected"


@pytest.mark.parametrize("name,from_logits", [
    ("mean_squared_error", False), ("mean_absolute_error", False),
    ("binary_crossentropy", False), ("binary_crossentropy", True),
    ("categorical_crossentropy", False), ("categorical_crossentropy", True)])
def test_nan_target_gives_nan_loss(name, from_logits):
    rng = _rng("nant", name, from_logits)
    t, p = _loss_data(rng, name, from_logits, (3, 4), np.float64)
    t[0, 0] = np.nan
    with np.errstate(invalid="ignore"):
        value = _make_loss(name, from_logits)(t, p)
    assert math.isnan(value)


def test_nan_sparse_label_rejected():
    p = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="integer"):
        losses.SparseCategoricalCrossentropy()(np.array([0.0, np.nan]), p)


# =========================================================================== names
@pytest.mark.parametrize("bad", ["mean_squared_errorr", "crossentropy", "hingee"])
def test_unknown_loss_name_lists_valid(bad):
    with pytest.raises(ValueError, match="valid names") as info:
        losses.get(bad)
    assert repr(bad) in str(info.value)
    for name in R.LOSSES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="valid names"):
        models.Sequential([L.Dense(1, input_dim=2)]).compile(optimizer="sgd", loss=bad)


@pytest.mark.parametrize("bad", ["l3", "L2_", "elastic"])
def test_unknown_regularizer_name_lists_valid(bad):
    with pytest.raises(ValueError, match=re.escape("['l1', 'l2', 'l1_l2']")):
        regularizers.get(bad)
    with pytest.raises(ValueError, match="l1_l2"):
        L.Dense(2, kernel_regularizer=bad).build((None, 3))


def test_loss_bad_shapes_name_the_problem():
    with pytest.raises(ValueError, match="one-hot"):
        losses.CategoricalCrossentropy()(np.array([0, 1]), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        losses.SparseCategoricalCrossentropy()(np.array([0, 3]), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="sample_weight"):
        losses.MeanSquaredError()(np.zeros((2, 3)), np.zeros((2, 3)), sample_weight=[1., 2, 3])
    # N weights in another shape were read in order; per-element weights are refused
    for sw in (np.ones((2, 2)), np.ones((4, 3))):
        with pytest.raises(ValueError, match=r"one weight per sample, shape \(4,\)"):
            losses.MeanSquaredError()(np.zeros((4, 3)), np.ones((4, 3)), sample_weight=sw)


def test_loss_scalar_sample_weight_weighs_the_batch():
    """A scalar or one-element sample_weight multiplies every sample, as Keras takes it
    (refused before); (N,) and (N, 1) weigh each sample."""
    rng = np.random.default_rng(2)
    y, p = rng.random((4, 3)), rng.random((4, 3))
    for loss in (losses.MeanSquaredError(), losses.BinaryCrossentropy(),
                 losses.CategoricalCrossentropy()):
        plain = loss(y, p)
        for sw in (2.0, [2.0], np.array([2.0]), np.float32(2.0)):
            assert loss(y, p, sample_weight=sw) == pytest.approx(2 * plain, rel=1e-12)
            np.testing.assert_allclose(loss.gradient(y, p, sample_weight=sw),
                                       2 * loss.gradient(y, p), rtol=1e-12)
        w = np.array([1.0, 0.0, 2.0, 0.5])
        assert loss(y, p, sample_weight=w[:, None]) == loss(y, p, sample_weight=w)
    with pytest.raises(TypeError, match="y_pred"):
        losses.MeanSquaredError()(np.zeros((2, 3)), np.zeros((2, 3), dtype=int))


def test_loss_shapes_scalars_and_class_axes():
    """Scalars say the batch axis is missing (they gave IndexError); shapes may differ
    by a trailing axis of 1 only, as Keras squeezes or expands (equal sizes were reshaped,
    pairing the wrong elements: (4, 6) with (4, 3, 2) gave 180.2); the categorical losses
    need a class axis of at least one class (NumPy's reduction and reshape errors before);
    a sparse label out of range is reported as given, not wrapped by a cast to int64."""
    mse = losses.MeanSquaredError()
    for t, p in ((1.0, 2.0), (1.0, np.array([1.5, 2.0])), (np.array([1.0]), np.float64(2))):
        with pytest.raises(ValueError, match="must have a batch axis"):
            mse(t, p)
    with pytest.raises(ValueError, match=r"\(4, 6\) but y_pred has shape \(4, 3, 2\)"):
        mse(np.arange(24.0).reshape(4, 6), np.zeros((4, 3, 2)))
    want = mse(np.arange(4.0), np.ones(4))
    assert mse(np.arange(4.0).reshape(4, 1), np.ones(4)) == want
    assert mse(np.arange(4.0), np.ones((4, 1))) == want
    for loss in (losses.CategoricalCrossentropy(), losses.SparseCategoricalCrossentropy()):
        for p in (np.zeros((2, 0)), np.array([0.2, 0.7])):
            with pytest.raises(ValueError, match=r"needs y_pred of shape \(N, \.\.\., K\)"):
                loss(np.zeros(p.shape[:1] + ((0,) if p.ndim > 1 else ())), p)
    p = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"received values in \[0, 9223372036854775813\]"):
        losses.SparseCategoricalCrossentropy()(np.array([0, 2**63 + 5], np.uint64), p)
    with pytest.raises(ValueError, match=r"received values in \[0\.0, inf\]"):
        losses.SparseCategoricalCrossentropy()(np.array([0.0, np.inf]), p)


@pytest.mark.parametrize("from_logits", [False, True])
def test_label_smoothing_as_keras(from_logits):
    """CategoricalCrossentropy and BinaryCrossentropy take Keras's label_smoothing: the
    targets move toward 1/K (categorical) or 1/2 (binary) before the loss, so the value
    and the gradient are the unsmoothed loss's on the smoothed targets; a model trained
    with it (softmax fused with the loss, the compiled dense step refused) reports the
    smoothed loss."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((5, 4))
    p = z if from_logits else np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    t = np.eye(4)[rng.integers(0, 4, 5)]
    cce = losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=0.2)
    plain = losses.CategoricalCrossentropy(from_logits=from_logits)
    ts = t * 0.8 + 0.2 / 4
    assert cce(t, p) == pytest.approx(plain(ts, p), rel=1e-12)
    np.testing.assert_allclose(cce.gradient(t, p), plain.gradient(ts, p), rtol=1e-12)
    bp = 1 / (1 + np.exp(-z)) if not from_logits else z
    bt = (rng.random((5, 4)) < 0.5).astype(float)
    bce = losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=0.3)
    bplain = losses.BinaryCrossentropy(from_logits=from_logits)
    assert bce(bt, bp) == pytest.approx(bplain(bt * 0.7 + 0.15, bp), rel=1e-12)
    assert losses.get(cce.get_config()).label_smoothing == 0.2
    assert repr(cce) == (f"CategoricalCrossentropy(from_logits={from_logits}, "
                         f"label_smoothing=0.2)")
    assert repr(losses.MeanSquaredError()) == "MeanSquaredError()"     # its real arguments
    model = models.Sequential([L.Dense(4, activation="softmax", input_shape=(3,))])
    model.compile("sgd", losses.CategoricalCrossentropy(label_smoothing=0.2))
    x = rng.standard_normal((5, 3)).astype(np.float32)
    probs = model.predict(x, verbose=0).astype(np.float64)
    want = -np.mean(np.sum(ts * np.log(probs), axis=1))
    assert model.evaluate(x, t, verbose=0) == pytest.approx(want, rel=1e-5)
    assert model.train_on_batch(x, t) == pytest.approx(want, rel=1e-5)
    assert model._dense_step is None


def test_loss_lookup_by_class_name_and_keras_config():
    """losses.get takes the class names and Keras's {"class_name", "config"} dicts;
    label_smoothing is checked, and the sparse loss has none (Keras neither)."""
    assert type(losses.get("MeanSquaredError")) is losses.MeanSquaredError
    got = losses.get({"class_name": "CategoricalCrossentropy",
                      "config": {"from_logits": True, "label_smoothing": 0.1}})
    assert got.from_logits and got.label_smoothing == 0.1
    assert type(losses.get({"class_name": "mse", "config": None})) is losses.MeanSquaredError
    with pytest.raises(ValueError, match="Unknown loss"):
        losses.get({"class_name": "Tversky", "config": {}})
    # Keras 3.15's configs of the other losses (reduction, name, dtype as Keras writes them)
    huber = losses.get({"class_name": "Huber", "config": {
        "name": "huber_loss", "reduction": "sum_over_batch_size", "dtype": None, "delta": 0.5}})
    assert type(huber) is losses.Huber and huber.delta == 0.5
    for cls in ("LogCosh", "MeanSquaredLogarithmicError", "MeanAbsolutePercentageError",
                "KLDivergence", "Poisson", "Hinge", "SquaredHinge", "CategoricalHinge"):
        got = losses.get({"class_name": cls, "config": {"reduction": "sum_over_batch_size"}})
        assert type(got).__name__ == cls
        assert type(losses.get(got.get_config())) is type(got)
    with pytest.raises(ValueError, match="takes no 'reduction' other than"):
        losses.get({"name": "mse", "reduction": "sum"})
    with pytest.raises(TypeError, match="does not take the config"):
        losses.get({"name": "mse", "delta": 1.0})
    # Keras 3's own configs (reduction, axis, dtype written at their defaults), a class,
    # from_config; a plain function is refused with the reason
    keras_cfg = {"name": "categorical_crossentropy", "reduction": "sum_over_batch_size",
                 "from_logits": False, "label_smoothing": 0.0, "axis": -1, "dtype": None}
    assert type(losses.get({"class_name": "CategoricalCrossentropy", "config": keras_cfg})) \
        is losses.CategoricalCrossentropy
    assert type(losses.CategoricalCrossentropy.from_config(keras_cfg)) is \
        losses.CategoricalCrossentropy
    assert type(losses.get(losses.MeanSquaredError)) is losses.MeanSquaredError
    with pytest.raises(TypeError, match="a plain function has no gradient"):
        losses.get(lambda t, p: 0.0)
    with pytest.raises(TypeError, match="from_logits must be a bool"):
        losses.BinaryCrossentropy(from_logits="False")
    with pytest.raises(TypeError):
        losses.SparseCategoricalCrossentropy(label_smoothing=0.1)
    for bad, err in ((1.5, ValueError), (-0.1, ValueError), ("0.1", TypeError),
                     (True, TypeError)):
        with pytest.raises(err, match="label_smoothing"):
            losses.BinaryCrossentropy(label_smoothing=bad)


def test_a_users_function_named_like_a_builtin_is_called(tmp_path):
    """A user's activation function is called even when its name is a built-in's (a
    function named relu ran the fused relu kernel, one named softmax was fused with the
    cross-entropy, and a saved Activation(tanh) came back as the built-in tanh); a saved
    model with one loads back from custom_objects, and without them says which is
    missing. A built-in with its default arguments serializes as its name (Keras's form)."""
    import fastnn.layers as L
    from fastnn.models import Sequential, load_model

    def relu(v):
        return np.where(v > 0, v, 0.1 * v)

    def tanh(v):
        return 2 * np.tanh(v)

    d = L.Dense(2, activation=relu)
    d.build((None, 2))
    d.set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    np.testing.assert_allclose(d(np.array([[-1.0, 2.0]], np.float32)), [[-0.1, 2.0]],
                               rtol=1e-6)
    model = Sequential([L.Input((2,)), L.Activation(tanh)])
    model.compile("sgd", "mse")
    model.save(tmp_path / "m.fnn")
    with pytest.raises(ValueError, match="Unknown activation 'tanh', a function of your own"):
        load_model(tmp_path / "m.fnn")
    back = load_model(tmp_path / "m.fnn", custom_objects={"tanh": tanh})
    x = np.array([[0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_allclose(back.predict(x, verbose=0), 2 * np.tanh(x), rtol=1e-6)
    assert L.Dense(2, activation="softmax").get_config()["activation"] == "softmax"
    assert L.Dense(2, activation="leaky_relu").get_config()["activation"] == "leaky_relu"


def test_a_users_softmax_is_not_fused_with_the_loss():
    """compile fuses softmax + categorical cross-entropy only for fastnn's own softmax: a
    user function named softmax was replaced by the fused loss (evaluate reported the
    cross-entropy of another output than predict's)."""
    import fastnn.layers as L
    from fastnn.models import Sequential

    def softmax(v):
        e = np.exp(2 * v - np.max(2 * v, axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    model = Sequential([L.Dense(3, activation=softmax, input_shape=(3,))])
    model.compile("sgd", "categorical_crossentropy")
    p = model.predict(x, verbose=0).astype(np.float64)
    expected = -np.mean(np.sum(y * np.log(np.clip(p, 1e-7, 1 - 1e-7)), axis=-1))
    assert model.evaluate(x, y, verbose=0) == pytest.approx(expected, rel=1e-5)


def test_relu_threshold_keeps_minus_infinity_finite_rules():
    """relu with a threshold computed x * (x > threshold): -inf * 0 is NaN (with a NumPy
    warning) where Keras 3.15 gives 0, and -inf with a slope (Keras: -inf). NaN itself
    still propagates."""
    x = np.array([-np.inf, np.nan, 0.25, 0.5, 2.0, np.inf])
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(activations.relu(x, threshold=0.5),
                                      [0.0, np.nan, 0.0, 0.0, 2.0, np.inf])
        y = activations.relu(np.array([-np.inf, 0.0]), negative_slope=0.1, max_value=1.0,
                             threshold=-0.5)
    np.testing.assert_array_equal(y, [-np.inf, 0.0])


def test_leaky_relu_and_elu_arguments_named():
    for make, name in ((activations.LeakyReLU, "negative_slope"), (activations.ELU, "alpha")):
        with pytest.raises(TypeError, match=name):
            make("a")
        with pytest.raises(ValueError, match=f"`{name}` must be finite"):
            make(float("nan"))
    with pytest.raises(ValueError, match="negative_slope"):
        activations.LeakyReLU(-0.1)


def test_function_activation_gradient_float32():
    """A user's activation differentiates by central differences; the step was sqrt(eps)
    (float32 sin' off by 1.5e-4), eps^(1/3) balances truncation and rounding."""
    act = activations.get(np.sin)
    x = np.linspace(-3, 3, 101).astype(np.float32)
    g = act.backward(np.ones_like(x), x, act.forward(x))
    assert g.dtype == np.float32
    assert np.abs(g - np.cos(x.astype(np.float64))).max() < 5e-5


def test_loss_subclass_takes_labels_of_its_own_shape():
    """A Loss subclass is given y_true in the shape it came (as Keras passes it to a
    Loss's call): integer labels (N,) against y_pred (N, K) trained (they were refused,
    "they may differ by a trailing axis of 1 only", before per_sample ran); fastnn's
    elementwise losses still refuse them, and a subclass of one of those too."""
    class SparseSquared(losses.Loss):
        def per_sample(self, t, p):
            onehot = np.eye(p.shape[1], dtype=p.dtype)[t.astype(np.int64)]
            return ((p - onehot) ** 2).mean(axis=1)

        def per_sample_grad(self, t, p):
            return 2 * (p - np.eye(p.shape[1], dtype=p.dtype)[t.astype(np.int64)]) / p.shape[1]

    t, p = np.array([0, 2, 1]), np.array([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    mse = losses.MeanSquaredError()
    onehot = np.eye(3)[t]
    assert SparseSquared()(t, p) == mse(onehot, p)
    np.testing.assert_array_equal(SparseSquared().gradient(t, p), mse.gradient(onehot, p))
    model = models.Sequential([L.Dense(3, activation="softmax", input_dim=2)])
    model.compile("adam", SparseSquared())
    hist = model.fit(np.ones((4, 2), np.float32), np.array([0, 1, 2, 1]), verbose=0)
    assert np.isfinite(hist.history["loss"][0])

    class Scaled(losses.MeanSquaredError):
        pass

    for loss in (mse, losses.MeanAbsoluteError(), losses.BinaryCrossentropy(), Scaled()):
        with pytest.raises(ValueError, match=r"y_true has shape \(3,\) but y_pred"):
            loss(t, p)


def test_loss_subclass_without_a_gradient_is_refused_at_compile():
    """A Keras-style Loss subclass defining only call() passed compile and failed inside
    fit ('no attribute per_sample'; found by a docs review): compile says what a subclass
    defines. A subclass with its own value_and_gradient, or per_sample and
    per_sample_grad, is taken."""
    class KerasStyle(losses.Loss):
        def call(self, y_true, y_pred):
            return np.mean((y_true - y_pred) ** 2)

    class Complete(losses.Loss):
        def per_sample(self, t, p):
            return ((t - p) ** 2).reshape(len(p), -1).mean(axis=1)

        def per_sample_grad(self, t, p):
            return 2 * (p - t) / p[0].size

    model = models.Sequential([L.Dense(1, input_dim=2)])
    with pytest.raises(TypeError, match=r"KerasStyle must define per_sample\(y_true, y_pred\)"):
        model.compile("sgd", KerasStyle())
    with pytest.raises(TypeError, match="must define per_sample"):
        model.compile("sgd", KerasStyle)
    model.compile("sgd", Complete())
    hist = model.fit(np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32), verbose=0)
    assert np.isfinite(hist.history["loss"][0])
