"""Tests for fastnn.initializers and fastnn.regularizers (Keras 3 semantics)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fastnn import initializers as I
from fastnn import regularizers as R
from fastnn.utils import set_random_seed

TRUNC = 0.87962566103423978

RANDOM = [I.GlorotUniform, I.GlorotNormal, I.HeNormal, I.HeUniform, I.LecunNormal,
          I.LecunUniform, I.RandomNormal, I.RandomUniform, I.TruncatedNormal,
          I.VarianceScaling, I.Orthogonal]
ALL = RANDOM + [I.Zeros, I.Ones, I.Constant]

# (class, scale, fan mode, distribution) of the variance-scaling presets, from Keras.
PRESETS = [
    (I.GlorotUniform, 1.0, "fan_avg", "uniform"),
    (I.GlorotNormal, 1.0, "fan_avg", "truncated_normal"),
    (I.HeNormal, 2.0, "fan_in", "truncated_normal"),
    (I.HeUniform, 2.0, "fan_in", "uniform"),
    (I.LecunNormal, 1.0, "fan_in", "truncated_normal"),
    (I.LecunUniform, 1.0, "fan_in", "uniform"),
]


def _fan(shape, mode):
    fan_in, fan_out = I.compute_fans(shape)
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


# --------------------------------------------------------------------------- fans
@pytest.mark.parametrize("shape,fans", [
    ((), (1, 1)), ((7,), (7, 7)), ((784, 128), (784, 128)),
    ((3, 3, 16, 32), (3 * 3 * 16, 3 * 3 * 32)),          # channels-last conv2d kernel
    ((5, 4, 8), (5 * 4, 5 * 8)),                          # conv1d kernel (k, cin, cout)
    ((2, 3, 3, 4, 6), (2 * 3 * 3 * 4, 2 * 3 * 3 * 6)),    # conv3d kernel
])
def test_compute_fans(shape, fans):
    assert I.compute_fans(shape) == fans


# --------------------------------------------------------------------------- shapes/dtypes
@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [None, "float32", np.float64, "float16"])
def test_shape_and_dtype(cls, dtype):
    init = cls()
    shape = (6, 4) if cls is I.Orthogonal else (3, 3, 2, 4)
    out = init(shape) if dtype is None else init(shape, dtype=dtype)
    assert isinstance(out, np.ndarray) and out.shape == shape
    assert out.dtype == np.dtype("float32" if dtype is None else dtype)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("cls", [c for c in ALL if c is not I.Orthogonal])
def test_int_shape_and_scalar_shape(cls):
    assert cls()(5).shape == (5,)
    assert cls()(()).shape == ()


def test_constant_zeros_ones():
    np.testing.assert_array_equal(I.Zeros()((2, 3)), np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(I.Ones()((2,), dtype="float64"), np.ones(2))
    np.testing.assert_array_equal(I.Constant(2.5)((2, 2)), np.full((2, 2), 2.5, np.float32))
    assert I.Zeros()((2,), dtype="int32").dtype == np.int32   # non-random: any numeric dtype


# --------------------------------------------------------------------------- seeding
@pytest.mark.parametrize("cls", RANDOM)
def test_int_seed_reproducible_across_instances_and_calls(cls):
    a = cls(seed=42)((40, 30))
    b = cls(seed=42)((40, 30))
    c = cls(seed=42)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(c((40, 30)), c((40, 30)))   # Keras: an int seed repeats
    assert not np.array_equal(a, cls(seed=43)((40, 30)))


@pytest.mark.parametrize("cls", RANDOM)
def test_unseeded_draws_from_global_rng(cls):
    set_random_seed(7)
    init = cls()
    first, second = init((20, 10)), init((20, 10))
    assert not np.array_equal(first, second)                    # the global stream advances
    set_random_seed(7)
    np.testing.assert_array_equal(cls()((20, 10)), first)     # and is reproducible


def test_generator_seed():
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    a = I.HeNormal(seed=g1)((10, 10))
    b = I.HeNormal(seed=g2)((10, 10))
    np.testing.assert_array_equal(a, b)
    assert I.HeNormal(seed=g1).get_config() == {"seed": None}


# --------------------------------------------------------------------------- distributions
@pytest.mark.parametrize("cls,scale,mode,dist", PRESETS)
@pytest.mark.parametrize("shape", [(800, 400), (5, 5, 40, 64)])
def test_presets_variance_matches_keras_formula(cls, scale, mode, dist, shape):
    w = cls(seed=0)(shape, dtype="float64")
    target = scale / _fan(shape, mode)
    assert abs(w.mean()) < 0.01 * math.sqrt(target) * 10
    assert w.var() == pytest.approx(target, rel=0.03)
    if dist == "uniform":
        limit = math.sqrt(3 * target)
        assert np.abs(w).max() <= limit
        assert np.abs(w).max() > 0.99 * limit
    else:
        stddev = math.sqrt(target) / TRUNC                     # pre-truncation stddev
        assert np.abs(w).max() <= 2 * stddev                   # truncated at 2 stddev
        assert np.abs(w).max() > 1.95 * stddev


def test_he_uniform_conv_limit():
    w = I.HeUniform(seed=1)((3, 3, 16, 32))
    limit = math.sqrt(6 / (3 * 3 * 16))
    assert np.abs(w).max() <= np.float32(limit)


def test_truncated_normal_and_variance_scaling_options():
    t = I.TruncatedNormal(mean=1.0, stddev=0.5, seed=0)((200_000,), dtype="float64")
    assert np.abs(t - 1.0).max() <= 1.0
    assert t.std() == pytest.approx(0.5 * TRUNC, rel=0.01)
    u = I.VarianceScaling(scale=3.0, mode="fan_out", distribution="untruncated_normal",
                          seed=0)((100, 500), dtype="float64")
    assert u.var() == pytest.approx(3.0 / 500, rel=0.03)
    assert np.abs(u).max() > 2 * math.sqrt(3.0 / 500)          # not truncated
    n = I.VarianceScaling(distribution="normal")
    assert n.distribution == "truncated_normal"


def test_random_normal_and_uniform_parameters():
    n = I.RandomNormal(mean=2.0, stddev=0.1, seed=0)((100_000,), dtype="float64")
    assert n.mean() == pytest.approx(2.0, abs=0.002) and n.std() == pytest.approx(0.1, rel=0.02)
    u = I.RandomUniform(minval=-1.0, maxval=3.0, seed=0)((100_000,), dtype="float64")
    assert u.min() >= -1.0 and u.max() < 3.0 and u.mean() == pytest.approx(1.0, abs=0.02)
    d = I.RandomNormal()
    assert (d.mean, d.stddev) == (0.0, 0.05)
    d = I.RandomUniform()
    assert (d.minval, d.maxval) == (-0.05, 0.05)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (3, 3, 2, 5)])
def test_orthogonal(shape):
    w = I.Orthogonal(gain=2.0, seed=0)(shape, dtype="float64")
    m = w.reshape(-1, shape[-1])
    small = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(small, 4.0 * np.eye(small.shape[0]), atol=1e-12)
    with pytest.raises(ValueError, match="two-dimensional"):
        I.Orthogonal()((5,))


# --------------------------------------------------------------------------- get/config
@pytest.mark.parametrize("name,cls", [
    ("glorot_uniform", I.GlorotUniform), ("glorot_normal", I.GlorotNormal),
    ("he_normal", I.HeNormal), ("he_uniform", I.HeUniform), ("lecun_normal", I.LecunNormal),
    ("lecun_uniform", I.LecunUniform), ("zeros", I.Zeros), ("ones", I.Ones),
    ("constant", I.Constant), ("random_normal", I.RandomNormal),
    ("random_uniform", I.RandomUniform), ("truncated_normal", I.TruncatedNormal),
    ("variance_scaling", I.VarianceScaling), ("orthogonal", I.Orthogonal),
    ("GlorotUniform", I.GlorotUniform), ("HeNormal", I.HeNormal)])
def test_get_by_name(name, cls):
    assert type(I.get(name)) is cls


def test_get_other_identifiers():
    assert I.get(None) is None
    init = I.HeNormal(seed=1)
    assert I.get(init) is init
    fn = lambda shape, dtype="float32": np.zeros(shape, dtype)  # noqa: E731
    assert I.get(fn) is fn
    assert type(I.get(I.Ones)) is I.Ones
    assert I.glorot_uniform is I.GlorotUniform and I.he_normal is I.HeNormal
    with pytest.raises(ValueError) as info:
        I.get("kaiming")
    assert "glorot_uniform" in str(info.value) and "he_normal" in str(info.value)
    with pytest.raises(TypeError):
        I.get(3)


@pytest.mark.parametrize("init", [
    I.GlorotUniform(seed=3), I.HeNormal(), I.Constant(0.3), I.Zeros(), I.Ones(),
    I.RandomNormal(mean=1.0, stddev=2.0, seed=4), I.RandomUniform(-1.0, 2.0),
    I.TruncatedNormal(stddev=0.2, seed=5), I.Orthogonal(gain=0.5, seed=2),
    I.VarianceScaling(scale=2.0, mode="fan_avg", distribution="uniform", seed=9)])
def test_initializer_config_round_trip(init):
    config = init.get_config()
    again = type(init).from_config(config)
    assert again.get_config() == config
    via = I.get(I.serialize(init))
    assert type(via) is type(init) and via.get_config() == config
    if getattr(init, "seed", None) is not None:
        shape = (4, 3)
        np.testing.assert_array_equal(init(shape), again(shape))
    repr(init)


def test_preset_configs_hold_only_the_seed():
    assert I.GlorotUniform(seed=3).get_config() == {"seed": 3}
    assert I.HeNormal().get_config() == {"seed": None}


def test_initializer_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        I.VarianceScaling(scale=0.0)
    with pytest.raises(ValueError, match="mode"):
        I.VarianceScaling(mode="fan_mid")
    with pytest.raises(ValueError, match="distribution"):
        I.VarianceScaling(distribution="cauchy")
    with pytest.raises(ValueError, match="seed"):
        I.HeNormal(seed=-1)
    with pytest.raises(ValueError, match="seed"):
        I.HeNormal(seed="abc")
    with pytest.raises(ValueError, match="stddev"):
        I.RandomNormal(stddev=-1.0)
    with pytest.raises(ValueError, match="maxval"):
        I.RandomUniform(minval=1.0, maxval=0.0)
    with pytest.raises(ValueError, match="dtype"):
        I.GlorotUniform()((2, 2), dtype="int32")
    with pytest.raises(ValueError, match="shape"):
        I.Zeros()((2, -1))
    with pytest.raises(TypeError, match="shape"):
        I.Zeros()(None)
    with pytest.raises(TypeError, match="value"):
        I.Constant("1")


# --------------------------------------------------------------------------- regularizers
W = np.array([[0.5, -1.5, 0.0], [2.0, -0.25, 1.0]])


def test_l1_l2_penalties_by_hand():
    s_abs = 0.5 + 1.5 + 0.0 + 2.0 + 0.25 + 1.0            # 5.25
    s_sq = 0.25 + 2.25 + 0.0 + 4.0 + 0.0625 + 1.0          # 7.5625
    assert R.L1(0.1)(W) == pytest.approx(0.1 * s_abs)
    assert R.L2(0.1)(W) == pytest.approx(0.1 * s_sq)         # no factor 1/2
    assert R.L1L2(l1=0.1, l2=0.2)(W) == pytest.approx(0.1 * s_abs + 0.2 * s_sq)
    assert isinstance(R.L2(0.1)(W), float)
    assert R.L2(2.0)(np.ones((5, 5), np.float32)) == 50.0   # Keras's docstring example
    assert R.L1L2()(W) == 0.0


def test_regularizer_gradients_by_hand():
    np.testing.assert_allclose(R.L1(0.1).gradient(W), 0.1 * np.sign(W))
    np.testing.assert_allclose(R.L2(0.1).gradient(W), 0.2 * W)
    np.testing.assert_allclose(R.L1L2(0.1, 0.2).gradient(W), 0.1 * np.sign(W) + 0.4 * W)
    assert R.L1(0.1).gradient(W)[0, 2] == 0.0                # sign(0) = 0
    g = R.L1L2(0.1, 0.2).gradient(W.astype(np.float32))
    assert g.dtype == np.float32 and g.shape == W.shape
    np.testing.assert_array_equal(R.L1L2().gradient(W), np.zeros_like(W))


@pytest.mark.parametrize("reg", [R.L1(0.3), R.L2(0.7), R.L1L2(0.2, 0.5)])
def test_regularizer_gradient_matches_finite_differences(reg):
    w = np.random.default_rng(0).standard_normal((4, 3)) + 0.05   # away from kinks at 0
    grad = reg.gradient(w)
    h = 1e-6
    for idx in np.ndindex(w.shape):
        wp, wm = w.copy(), w.copy()
        wp[idx] += h
        wm[idx] -= h
        assert grad[idx] == pytest.approx((reg(wp) - reg(wm)) / (2 * h), rel=1e-6, abs=1e-8)


def test_regularizer_defaults_get_and_aliases():
    assert R.L1().l1 == 0.01 and R.L2().l2 == 0.01
    assert (R.L1L2().l1, R.L1L2().l2) == (0.0, 0.0)
    assert R.l1 is R.L1 and R.l2 is R.L2 and R.l1_l2 is R.L1L2
    assert isinstance(R.get("l1"), R.L1) and R.get("l1").l1 == 0.01
    assert isinstance(R.get("l2"), R.L2) and R.get("l2").l2 == 0.01
    both = R.get("l1_l2")
    assert isinstance(both, R.L1L2) and (both.l1, both.l2) == (0.01, 0.01)
    assert R.get(None) is None
    reg = R.L2(0.5)
    assert R.get(reg) is reg
    fn = lambda w: 0.0  # noqa: E731
    assert R.get(fn) is fn
    with pytest.raises(ValueError) as info:
        R.get("l3")
    assert "l1" in str(info.value) and "l2" in str(info.value)
    with pytest.raises(TypeError):
        R.get(0.5)


@pytest.mark.parametrize("reg", [R.L1(0.3), R.L2(0.7), R.L1L2(0.2, 0.5), R.L1L2()])
def test_regularizer_config_round_trip(reg):
    config = reg.get_config()
    again = type(reg).from_config(config)
    assert again.get_config() == config
    via = R.get(R.serialize(reg))
    assert type(via) is type(reg) and via.get_config() == config
    assert via(W) == reg(W)
    repr(reg)


def test_regularizer_configs_like_keras():
    assert R.L1(0.3).get_config() == {"l1": 0.3}
    assert R.L2(0.7).get_config() == {"l2": 0.7}
    assert R.L1L2(0.2, 0.5).get_config() == {"l1": 0.2, "l2": 0.5}


@pytest.mark.parametrize("make,arg", [
    (lambda: R.L1(-0.1), "l1"), (lambda: R.L2(float("nan")), "l2"),
    (lambda: R.L1L2(l1=0.1, l2=-1.0), "l2"), (lambda: R.L2("0.1"), "l2"),
    (lambda: R.L1(True), "l1")])
def test_regularizer_bad_arguments(make, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        make()


def test_keras_3_aliases_identity_and_serialized_configs():
    """Keras 3's short names ("normal", "uniform", "one", "zero") and its Identity
    initializer; a serialized initializer or regularizer whose config is None takes no
    arguments (it raised "'NoneType' object is not iterable"), one that is not a dict says
    so; RandomUniform's range must be finite (NumPy raised OverflowError)."""
    assert type(I.get("normal")) is I.RandomNormal and type(I.get("uniform")) is I.RandomUniform
    np.testing.assert_array_equal(I.get("one")((2, 3)), np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(I.get("zero")((2,)), np.zeros(2, np.float32))
    eye = I.get("identity")((2, 3), dtype="float64")
    np.testing.assert_array_equal(eye, np.eye(2, 3))
    assert eye.dtype == np.float64
    np.testing.assert_array_equal(I.Identity(gain=2.5)((3, 3)), 2.5 * np.eye(3, dtype=np.float32))
    assert I.deserialize(I.serialize(I.Identity(0.5))).gain == 0.5
    with pytest.raises(ValueError, match="needs a 2-D shape"):
        I.Identity()((2, 2, 2))
    assert type(I.deserialize({"class_name": "HeNormal", "config": None})) is I.HeNormal
    assert R.deserialize({"class_name": "L2", "config": None}).l2 == 0.01
    for mod in (I, R):
        name = "HeNormal" if mod is I else "L2"
        with pytest.raises(ValueError, match="'config' must be a dict"):
            mod.deserialize({"class_name": name, "config": [1]})
    with pytest.raises(ValueError, match="maxval - minval` must be finite"):
        I.RandomUniform(-1e308, 1e308)


def test_keras_3_15_variance_scaling_configs_load():
    """Keras 3.15 writes input_axes and output_axes into every VarianceScaling config
    (Glorot, He, Lecun included): they load (a TypeError refused every Keras kernel
    config), and with both given the fans are the products of those axes' sizes."""
    from fastnn import initializers as I
    g = I.get({"module": "keras.initializers", "class_name": "GlorotUniform",
               "config": {"seed": None, "input_axes": None, "output_axes": None},
               "registered_name": None})
    assert type(g) is I.GlorotUniform and g.get_config() == {"seed": None}
    v = I.VarianceScaling(mode="fan_in", distribution="uniform", input_axes=[0],
                          output_axes=[1, 2], seed=0)
    w = v((400, 3, 4))
    assert abs(float(w.std()) - (1 / 400) ** 0.5) < 0.05 * (1 / 400) ** 0.5
    assert I.get({"class_name": "VarianceScaling", "config": v.get_config()}).input_axes == (0,)
    with pytest.raises(ValueError, match="input_axes"):
        I.VarianceScaling(input_axes="0")


def test_keras_seed_generator_in_a_config():
    """Keras 3 writes a SeedGenerator as a dict into an initializer's config: its seed is
    taken (a ValueError before)."""
    from fastnn import initializers
    cfg = {"class_name": "GlorotUniform",
           "config": {"seed": {"module": "keras.random", "class_name": "SeedGenerator",
                               "config": {"seed": 7}, "registered_name": None}}}
    a = initializers.get(cfg)((3, 4))
    b = initializers.GlorotUniform(seed=7)((3, 4))
    np.testing.assert_array_equal(a, b)
