"""Tests for fastnn.optimizers and fastnn.optimizers.schedules.

Three independent oracles:

* golden single steps, computed by hand in the test from the formulas in the docstrings;
* multi-step trajectories against a plain NumPy transcription of Keras 3's update rules
  (``reference_step`` below, written for clarity, not speed);
* trajectories of the real Keras 3.15.1 (TensorFlow 2.21 CPU backend) optimizers, hardcoded
  in ``KERAS_REFERENCE`` (TensorFlow is never imported by the tests).
"""
from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest

from fastnn import optimizers
from fastnn.optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, schedules

ALL = ("sgd", "rmsprop", "adam", "adamw", "adagrad")
CLASSES = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW, "adagrad": Adagrad}


# --------------------------------------------------------------------------- reference
def reference_step(kind: str, hp: dict, p, g, state: dict, t: int, lr: float):
    """One step of Keras 3's update rule for ``kind``, written out plainly (returns new p).

    ``state`` holds the slots (created here on the first call); ``t`` is 1-based.
    """
    if hp.get("weight_decay"):
        p = p - p * hp["weight_decay"] * lr
    if kind == "sgd":
        mom = hp.get("momentum", 0.0)
        if mom == 0:
            return p - lr * g
        m = state.setdefault("m", np.zeros_like(p))
        m = mom * m - lr * g
        state["m"] = m
        if hp.get("nesterov", False):
            return p + (mom * m - lr * g)
        return p + m
    if kind == "rmsprop":
        rho, eps = hp.get("rho", 0.9), hp.get("epsilon", 1e-7)
        mom, centered = hp.get("momentum", 0.0), hp.get("centered", False)
        v = state.setdefault("v", np.zeros_like(p))
        v = rho * v + (1 - rho) * g ** 2
        state["v"] = v
        if centered:
            a = state.setdefault("a", np.zeros_like(p))
            a = rho * a + (1 - rho) * g
            state["a"] = a
            den = v - a ** 2 + eps
        else:
            den = v + eps
        inc = lr * g / np.sqrt(den)
        if mom > 0:
            m = state.setdefault("m", np.zeros_like(p))
            m = mom * m + inc
            state["m"] = m
            return p - m
        return p - inc
    if kind in ("adam", "adamw"):
        b1, b2 = hp.get("beta_1", 0.9), hp.get("beta_2", 0.999)
        eps = hp.get("epsilon", 1e-7)
        m = state.setdefault("m", np.zeros_like(p))
        v = state.setdefault("v", np.zeros_like(p))
        f = p.dtype.type        # Keras computes alpha in the variable's dtype
        alpha = float(f(lr) * np.sqrt(f(1) - f(b2) ** f(t)) / (f(1) - f(b1) ** f(t)))
        m = m + (g - m) * (1 - b1)
        v = v + (g ** 2 - v) * (1 - b2)
        state["m"], state["v"] = m, v
        if hp.get("amsgrad", False):
            vh = np.maximum(state.setdefault("vh", np.zeros_like(p)), v)
            state["vh"] = vh
            v = vh
        return p - (m * alpha) / (np.sqrt(v) + eps)
    if kind == "adagrad":
        eps = hp.get("epsilon", 1e-7)
        acc = state.setdefault("acc", np.full_like(p, hp.get("initial_accumulator_value", 0.1)))
        acc = acc + g ** 2
        state["acc"] = acc
        return p - lr * g / np.sqrt(acc + eps)
    raise AssertionError(kind)


def make_problem(dtype, seed=0, n_steps=6):
    """Params of several shapes (matrix, vector, 0-d, 4-d) and a sequence of gradients."""
    rng = np.random.default_rng(seed)
    shapes = [(7, 5), (5,), (), (2, 3, 2, 4), (300, 20)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[(rng.standard_normal(s) * (0.5 + k)).astype(dtype) for s in shapes]
             for k in range(n_steps)]
    # exact zeros in a gradient exercise 0 / (0 + eps)
    for gs in grads:
        gs[0][0, :2] = 0
    return params, grads


TOL = {np.dtype(np.float64): dict(rtol=1e-12, atol=1e-14),
       np.dtype(np.float32): dict(rtol=2e-6, atol=1e-7)}

VARIANTS = [
    ("sgd", dict(learning_rate=0.1)),
    ("sgd", dict(learning_rate=0.05, momentum=0.9)),
    ("sgd", dict(learning_rate=0.05, momentum=0.8, nesterov=True)),
    ("rmsprop", dict(learning_rate=0.01)),
    ("rmsprop", dict(learning_rate=0.01, rho=0.8, momentum=0.5)),
    ("rmsprop", dict(learning_rate=0.01, centered=True)),
    ("rmsprop", dict(learning_rate=0.01, centered=True, momentum=0.9, epsilon=1e-3)),
    ("adam", dict(learning_rate=0.01)),
    ("adam", dict(learning_rate=0.01, beta_1=0.5, beta_2=0.6, epsilon=1e-4, amsgrad=True)),
    ("adamw", dict(learning_rate=0.01)),
    ("adamw", dict(learning_rate=0.02, weight_decay=0.3, amsgrad=True, beta_2=0.7)),
    ("adagrad", dict(learning_rate=0.1)),
    ("adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.0, epsilon=1e-3)),
    ("sgd", dict(learning_rate=0.1, momentum=0.5, weight_decay=0.01)),
]


def _hp(kind, kw):
    hp = dict(kw)
    if kind == "adamw":
        hp.setdefault("weight_decay", 0.004)
    return hp


# --------------------------------------------------------------------------- trajectories
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,kw", VARIANTS)
def test_trajectory_matches_numpy_reference(kind, kw, dtype):
    params, grads = make_problem(dtype)
    opt = CLASSES[kind](**kw)
    hp, lr = _hp(kind, kw), kw["learning_rate"]
    ref = [p.copy() for p in params]
    states = [dict() for _ in params]
    for t, gs in enumerate(grads, start=1):
        opt.apply(gs, params)
        ref = [reference_step(kind, hp, r, g, s, t, lr) for r, g, s in zip(ref, gs, states)]
        assert opt.iterations == t
        for i, (p, r) in enumerate(zip(params, ref)):
            assert p.dtype == np.dtype(dtype) and p.shape == r.shape
            np.testing.assert_allclose(p, r, err_msg=f"{kind} {kw} step {t} param {i}",
                                       **TOL[np.dtype(dtype)])


@pytest.mark.parametrize("kind,kw", VARIANTS)
def test_grouped_small_params_bit_identical_to_one_by_one(kind, kw):
    """Small parameters are updated as one flat group; that must not change a single bit."""
    params, grads = make_problem(np.float32, seed=3)
    params2 = [p.copy() for p in params]
    grouped = CLASSES[kind](**kw)
    single = CLASSES[kind](**kw)
    single._group_max_size = -1
    for gs in grads:
        grouped.apply(gs, params)
        single.apply(gs, params2)
    assert grouped._groups and not single._groups
    for p, q in zip(params, params2):
        assert p.tobytes() == q.tobytes()
    for a, b in zip(grouped.get_state(), single.get_state()):
        assert a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------- real Keras
# Generated once with Keras 3.15.1 on TensorFlow 2.21.0 (CPU, TF_ENABLE_ONEDNN_OPTS=0):
# x = keras.Variable(X0); b = keras.Variable(B0); then for c in C:
# opt.apply_gradients([(A * c, x), (B * c, b)]), with the optimizer built as in
# KERAS_CASES; the values are x and b after the 5 steps (float32, printed with repr).
X0 = np.array([[0.5, -1.0, 2.0], [0.0, 0.25, -0.75]], np.float32)
B0 = np.array([0.1, -0.2], np.float32)
A = np.array([[0.3, -0.2, 0.0], [1.5, -0.05, 0.7]], np.float32)
B = np.array([0.4, -0.9], np.float32)
C = [1.0, -0.5, 2.0, 0.25, 3.0]
KERAS_CASES = {
    "sgd": lambda: SGD(learning_rate=0.1),
    "sgd_momentum": lambda: SGD(learning_rate=0.1, momentum=0.9),
    "sgd_nesterov": lambda: SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
    "rmsprop": lambda: RMSprop(learning_rate=0.01),
    "rmsprop_centered_momentum": lambda: RMSprop(learning_rate=0.01, momentum=0.5,
                                                 centered=True),
    "adam": lambda: Adam(learning_rate=0.01),
    "adam_amsgrad": lambda: Adam(learning_rate=0.01, beta_2=0.5, amsgrad=True),
    "adam_beta2": lambda: Adam(learning_rate=0.01, beta_2=0.5),
    "adamw_amsgrad": lambda: AdamW(learning_rate=0.01, weight_decay=0.1, beta_2=0.5,
                                   amsgrad=True),
    "adagrad_eps": lambda: Adagrad(learning_rate=0.1, initial_accumulator_value=0.0,
                                   epsilon=0.01),
    "rmsprop_centered": lambda: RMSprop(learning_rate=0.01, rho=0.8, centered=True),
    "rmsprop_momentum": lambda: RMSprop(learning_rate=0.01, momentum=0.9),
    "sgd_clipnorm": lambda: SGD(learning_rate=0.1, clipnorm=0.5),
    "adamw": lambda: AdamW(learning_rate=0.01, weight_decay=0.1),
    "adagrad": lambda: Adagrad(learning_rate=0.1),
    "adam_clipnorm": lambda: Adam(learning_rate=0.01, clipnorm=0.5),
    "sgd_global_clipnorm": lambda: SGD(learning_rate=0.1, global_clipnorm=0.5),
    "sgd_clipvalue": lambda: SGD(learning_rate=0.1, clipvalue=0.3),
    "adam_expdecay": lambda: Adam(learning_rate=schedules.ExponentialDecay(0.1, 2, 0.5)),
}

KERAS_REFERENCE = {  # name: (x after the 5 steps, flattened; b after the 5 steps)
    "sgd": (
        [0.327500015, -0.88499999, 2, -0.862500012, 0.278750002, -1.15249991],
        [-0.13000001, 0.317499965]),
    "sgd_momentum": (
        [0.161882013, -0.774587989, 2, -1.6905899, 0.306352973, -1.5389421],
        [-0.350823998, 0.814353943]),
    "sgd_nesterov": (
        [0.0231938064, -0.682129204, 2, -2.38403106, 0.329467684, -1.86254787],
        [-0.535741568, 1.23041844]),
    "rmsprop": (
        [0.425070763, -0.925070882, 2, -0.0749293938, 0.324923992, -0.824929416],
        [0.0250706784, -0.125070632]),
    "rmsprop_centered_momentum": (
        [0.375764817, -0.875765204, 2, -0.124235556, 0.374222964, -0.874235511],
        [-0.0242353808, -0.0757644624]),
    "adam": (
        [0.467356533, -0.967356622, 2, -0.0326436311, 0.282642454, -0.782643497],
        [0.0673564896, -0.167356402]),
    "adam_amsgrad": (
        [0.471907675, -0.971907794, 2, -0.0280923136, 0.278092235, -0.778092265],
        [0.0719076842, -0.171907708]),
    "adam_beta2": (
        [0.469726294, -0.969726324, 2, -0.0302737132, 0.280273646, -0.780273676],
        [0.0697262883, -0.169726297]),
    "adamw_amsgrad": (
        [0.469475865, -0.966980934, 1.99002004, -0.0280291177, 0.276781529, -0.774286568],
        [0.0714718774, -0.170972914]),
    "adagrad_eps": (
        [0.271883845, -0.776887178, 2, -0.23251462, 0.416956246, -0.981819749],
        [-0.130051792, 0.0321689248]),
    "rmsprop_centered": (
        [0.436061561, -0.93606168, 2, -0.0639385134, 0.313935488, -0.813938439],
        [0.0360615253, -0.13606149]),
    "rmsprop_momentum": (
        [0.311639339, -0.811640024, 2, -0.188361242, 0.438340485, -0.938361168],
        [-0.0883609653, -0.0116387941]),
    "sgd_clipnorm": (
        [0.474799275, -0.983199477, 2, -0.126003668, 0.254200131, -0.808801711],
        [0.0490792394, -0.0854282677]),
    "adamw": (
        [0.464928597, -0.962433696, 1.99002004, -0.0325765647, 0.281327903, -0.778833926],
        [0.0669245496, -0.166425452]),
    "adagrad": (
        [0.298164129, -0.81841594, 2, -0.230799168, 0.331985235, -0.974689245],
        [-0.112326637, 0.0276411995]),
    "adam_clipnorm": (
        [0.475858688, -0.975858986, 2, -0.0241417903, 0.274138242, -0.77414161],
        [0.0768992379, -0.17689909]),
    "sgd_global_clipnorm": (
        [0.47719568, -0.98479712, 2, -0.114021659, 0.25380072, -0.80321008],
        [0.0695942342, -0.131587029]),
    "sgd_clipvalue": (
        [0.417500019, -0.925000072, 2, -0.0900000036, 0.278750002, -0.827499986],
        [0.0199999996, -0.117500007]),
    "adam_expdecay": (
        [0.308563232, -0.808563948, 2, -0.191437989, 0.441429138, -0.941437662],
        [-0.0914371461, -0.0085622333]),
}


@pytest.mark.parametrize("case", sorted(KERAS_CASES))
def test_matches_real_keras_trajectory(case):
    opt = KERAS_CASES[case]()
    x, b = X0.copy(), B0.copy()
    for c in C:
        opt.apply([A * np.float32(c), B * np.float32(c)], [x, b])
    ref_x, ref_b = KERAS_REFERENCE[case]
    # The same float32 operations in the same order give the same bits: when generated, every
    # case matched exactly except adam_clipnorm (1 ulp: Keras sums the squares for the norm
    # in float32, in TensorFlow's order). A few ulps of slack cover libm differences in the
    # scalar powers.
    got = np.concatenate([x.ravel(), b])
    ref = np.array(list(ref_x) + list(ref_b), dtype=np.float32)
    ulps = np.abs(got.view(np.int32).astype(np.int64) - ref.view(np.int32).astype(np.int64))
    assert ulps.max() <= 4, f"{case}: {ulps.max()} ulps from Keras\n{got}\n{ref}"


# --------------------------------------------------------------------------- golden steps
def test_sgd_single_step_golden():
    p = np.array([1.0, -2.0, 0.5])
    SGD(learning_rate=0.1).apply([np.array([0.5, -1.0, 0.0])], [p])
    np.testing.assert_allclose(p, [1.0 - 0.05, -2.0 + 0.1, 0.5], rtol=0, atol=1e-15)


def test_sgd_momentum_two_steps_golden():
    p, g = np.array([1.0]), np.array([2.0])
    opt = SGD(learning_rate=0.1, momentum=0.9)
    opt.apply([g], [p])          # m = -0.2;               p = 0.8
    opt.apply([g], [p])          # m = 0.9 * -0.2 - 0.2 = -0.38; p = 0.42
    np.testing.assert_allclose(p, [0.42], rtol=1e-14)
    np.testing.assert_allclose(opt.get_state()[1], [-0.38], rtol=1e-14)


def test_sgd_nesterov_two_steps_golden():
    p, g = np.array([1.0]), np.array([2.0])
    opt = SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
    opt.apply([g], [p])          # m = -0.2; p += 0.9 * -0.2 - 0.2 = -0.38 -> 0.62
    np.testing.assert_allclose(p, [0.62], rtol=1e-14)
    opt.apply([g], [p])          # m = -0.38; p += 0.9 * -0.38 - 0.2 = -0.542 -> 0.078
    np.testing.assert_allclose(p, [0.078], rtol=1e-12)


def test_rmsprop_single_step_golden():
    p, g = np.array([1.0, -1.0]), np.array([0.5, -2.0])
    RMSprop(learning_rate=0.01).apply([g], [p])
    # v = 0.1 * g^2 = [0.025, 0.4]; p -= 0.01 * g / sqrt(v + 1e-7)
    expected = [1.0 - 0.01 * 0.5 / math.sqrt(0.025 + 1e-7),
                -1.0 + 0.01 * 2.0 / math.sqrt(0.4 + 1e-7)]
    np.testing.assert_allclose(p, expected, rtol=1e-14)


def test_rmsprop_centered_momentum_two_steps_golden():
    p = np.array([1.0])
    opt = RMSprop(learning_rate=0.1, rho=0.5, momentum=0.5, epsilon=0.0, centered=True)
    opt.apply([np.array([2.0])], [p])
    # v = 0.5 * 4 = 2; a = 0.5 * 2 = 1; den = 2 - 1 = 1; inc = 0.2; m = 0.2; p = 0.8
    np.testing.assert_allclose(p, [0.8], rtol=1e-14)
    opt.apply([np.array([-1.0])], [p])
    # v = 1 + 0.5 = 1.5; a = 0.5 - 0.5 = 0; den = 1.5; inc = -0.1 / sqrt(1.5)
    # m = 0.1 + inc; p = 0.8 - m
    np.testing.assert_allclose(p, [0.8 - (0.1 - 0.1 / math.sqrt(1.5))], rtol=1e-14)


def test_adam_single_step_golden_epsilon_outside_sqrt():
    p, g = np.array([1.0, -2.0, 3.0]), np.array([0.5, -0.1, 0.0])
    Adam(learning_rate=0.1).apply([g], [p])
    # t = 1: alpha = 0.1 * sqrt(1 - 0.999) / (1 - 0.9) = sqrt(0.001)
    # m = 0.1 * g = [0.05, -0.01, 0]; v = 0.001 * g^2 = [2.5e-4, 1e-5, 0]
    alpha = math.sqrt(0.001)
    expected = [1.0 - alpha * 0.05 / (math.sqrt(2.5e-4) + 1e-7),
                -2.0 + alpha * 0.01 / (math.sqrt(1e-5) + 1e-7),
                3.0]                                   # 0 / (0 + eps) = 0
    np.testing.assert_allclose(p, expected, rtol=1e-13)
    # the bias-corrected-epsilon variant would give a visibly different value
    other = 1.0 - 0.1 * 0.5 / (math.sqrt(0.25) + 1e-7)
    assert abs(p[0] - other) > 1e-9


def test_adam_second_step_bias_correction_golden():
    p = np.array([0.0])
    opt = Adam(learning_rate=0.1, beta_1=0.5, beta_2=0.75, epsilon=0.0)
    opt.apply([np.array([1.0])], [p])   # m = .5, v = .25, alpha = .1*sqrt(.25)/.5 = .1 -> -.1
    np.testing.assert_allclose(p, [-0.1], rtol=1e-14)
    opt.apply([np.array([3.0])], [p])
    # m = .5 + (3 - .5) * .5 = 1.75; v = .25 + (9 - .25) * .25 = 2.4375
    # alpha = .1 * sqrt(1 - .5625) / (1 - .25) = .1 * sqrt(.4375) / .75
    alpha = 0.1 * math.sqrt(0.4375) / 0.75
    np.testing.assert_allclose(p, [-0.1 - alpha * 1.75 / math.sqrt(2.4375)], rtol=1e-14)


def test_amsgrad_uses_running_max_of_velocity():
    p = np.array([0.0])
    opt = Adam(learning_rate=0.1, beta_1=0.0, beta_2=0.5, epsilon=0.0, amsgrad=True)
    plain = Adam(learning_rate=0.1, beta_1=0.0, beta_2=0.5, epsilon=0.0)
    q = np.array([0.0])
    for g in (4.0, 0.5):
        opt.apply([np.array([g])], [p])
        plain.apply([np.array([g])], [q])
    m, v, vhat = opt.get_state()[1:]
    # v: 8 -> 4.125 (decreases); v_hat keeps 8
    np.testing.assert_allclose(v, [4.125])
    np.testing.assert_allclose(vhat, [8.0])
    alpha2 = 0.1 * math.sqrt(1 - 0.25) / 1.0
    np.testing.assert_allclose(p - (-0.1 * math.sqrt(0.5) * 4 / math.sqrt(8)),
                               [-alpha2 * 0.5 / math.sqrt(8.0)], rtol=1e-13)
    assert abs(p[0] - q[0]) > 1e-6


def test_adagrad_single_step_golden():
    p, g = np.array([1.0, 2.0]), np.array([0.3, -0.4])
    Adagrad(learning_rate=0.1).apply([g], [p])
    # acc = 0.1 + g^2; p -= 0.1 * g / sqrt(acc + 1e-7)
    expected = [1.0 - 0.1 * 0.3 / math.sqrt(0.1 + 0.09 + 1e-7),
                2.0 + 0.1 * 0.4 / math.sqrt(0.1 + 0.16 + 1e-7)]
    np.testing.assert_allclose(p, expected, rtol=1e-14)


def test_adamw_decoupled_decay_golden():
    # zero gradient: the Adam step is exactly 0 (m = 0), leaving only the decay
    p = np.array([1.0, -4.0])
    opt = AdamW(learning_rate=0.1, weight_decay=0.5)
    opt.apply([np.zeros(2)], [p])
    np.testing.assert_allclose(p, [1.0 * (1 - 0.05), -4.0 * (1 - 0.05)], rtol=1e-15)
    # with a gradient: decay first (with the same lr), then the Adam step
    p = np.array([2.0])
    AdamW(learning_rate=0.1, weight_decay=0.5).apply([np.array([1.0])], [p])
    alpha = 0.1 * math.sqrt(0.001) / 0.1
    np.testing.assert_allclose(p, [2.0 - 2.0 * 0.05 - alpha * 0.1 / (math.sqrt(0.001) + 1e-7)],
                               rtol=1e-14)


def test_adamw_decay_follows_schedule():
    lr = schedules.PiecewiseConstantDecay([0], [0.1, 0.01])
    p = np.array([1.0])
    opt = AdamW(learning_rate=lr, weight_decay=1.0)
    opt.apply([np.zeros(1)], [p])            # step 0: lr 0.1
    opt.apply([np.zeros(1)], [p])            # step 1: lr 0.01
    np.testing.assert_allclose(p, [0.9 * 0.99], rtol=1e-15)


def test_exclude_from_weight_decay():
    """Keras 3's exclude_from_weight_decay: the arrays of var_list (by identity) and a
    model's weights whose names match var_names take the step without the decay, bit for
    bit the step of the same optimizer with weight_decay 0, small grouped parameters and
    large solo ones alike; the others decay as before. Keras 3.15, AdamW(0.01, 0.1)
    excluding "bias" on a Dense 5-8-3 model, 3 epochs: the same weights to 6e-8. Refused
    once built, as Keras."""
    from fastnn.layers import Dense
    from fastnn.models import Sequential
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in ((3,), (700, 3), (4,), (2,))]
    grads = [rng.standard_normal(p.shape) for p in params]
    runs = {}
    for key, wd, keep in (("none", 0.0, None), ("all", 0.3, None), ("some", 0.3, [0, 1])):
        ps = [p.copy() for p in params]
        opt = AdamW(learning_rate=0.1, weight_decay=wd)
        opt._group_max_size = 100               # (700, 3) solo, the others grouped
        if keep is not None:
            opt.exclude_from_weight_decay(var_list=[ps[i] for i in keep])
        for _ in range(3):
            opt.apply(grads, ps)
        runs[key] = ps
    for i in range(4):
        want = runs["none"][i] if i in (0, 1) else runs["all"][i]
        np.testing.assert_array_equal(runs["some"][i], want)
    assert not np.array_equal(runs["none"][2], runs["all"][2])

    def model(seed):
        rng = np.random.default_rng(seed)
        m = Sequential([Dense(8, activation="relu", input_shape=(5,)),
                        Dense(3, activation="softmax")])
        m.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5
                       for w in m.get_weights()])
        return m

    x = rng.standard_normal((32, 5)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    fitted = {}
    for key, wd, names in (("none", 0.0, None), ("all", 0.1, None), ("bias", 0.1, ["bias"]),
                           ("ker", 0.1, ["^ker"])):
        m = model(1)
        opt = AdamW(0.01, weight_decay=wd)
        if names:
            opt.exclude_from_weight_decay(var_names=names)
        m.compile(opt, "sparse_categorical_crossentropy")
        m.train_on_batch(x, y)           # one step: the same gradients in every run
        fitted[key] = m.get_weights()
        if names:
            assert opt._decay == ([True, False] * 2 if key == "bias" else [False, True] * 2)
        if names:
            with pytest.raises(ValueError, match="before the optimizer is built"):
                opt.exclude_from_weight_decay(var_names=["x"])
    for i in range(4):                  # kernel, bias, kernel, bias
        bias = i % 2 == 1
        np.testing.assert_array_equal(fitted["bias"][i],
                                      fitted["none" if bias else "all"][i])
        np.testing.assert_array_equal(fitted["ker"][i], fitted["all" if bias else "none"][i])
    with pytest.raises(TypeError, match="var_names\\[0\\] must be a str"):
        AdamW().exclude_from_weight_decay(var_names=[3])
    with pytest.raises(TypeError, match="var_list\\[0\\] must be a parameter array"):
        AdamW().exclude_from_weight_decay(var_list=[[1.0]])


def test_learning_rate_takes_keras_variable_idioms():
    """optimizer.learning_rate.assign(v) sets the rate and .numpy() reads it (Keras 3's
    variable idioms; a float had neither); the value is a float in arithmetic, JSON,
    pickling and copies, and holds its optimizer weakly; with a schedule, assigning a
    float is refused as setting one is."""
    import copy
    import gc
    import pickle
    opt = Adam(0.01)
    lr = opt.learning_rate
    assert lr == 0.01 and lr.numpy() == 0.01 and type(lr.numpy()) is float
    lr.assign(0.002)
    assert opt.learning_rate == 0.002 and type(opt.get_config()["learning_rate"]) is float
    assert json.dumps({"lr": lr}) == '{"lr": 0.01}'
    assert type(pickle.loads(pickle.dumps(lr))) is float and type(copy.deepcopy(lr)) is float
    other = SGD(0.3)
    other.learning_rate = opt.learning_rate
    assert type(other._learning_rate) is float and other.learning_rate == 0.002
    sched = Adam(schedules.ExponentialDecay(0.1, 10, 0.5))
    with pytest.raises(TypeError, match="not settable to a float"):
        sched.learning_rate.assign(0.1)
    orphan = Adam(0.1).learning_rate
    gc.collect()
    with pytest.raises(ValueError, match="no longer exists"):
        orphan.assign(0.2)


def test_defaults_match_keras():
    c = SGD().get_config()
    assert (c["learning_rate"], c["momentum"], c["nesterov"]) == (0.01, 0.0, False)
    c = RMSprop().get_config()
    assert (c["learning_rate"], c["rho"], c["momentum"], c["epsilon"], c["centered"]) == \
        (0.001, 0.9, 0.0, 1e-7, False)
    c = Adam().get_config()
    assert (c["learning_rate"], c["beta_1"], c["beta_2"], c["epsilon"], c["amsgrad"]) == \
        (0.001, 0.9, 0.999, 1e-7, False)
    assert c["weight_decay"] is None
    c = AdamW().get_config()
    assert (c["learning_rate"], c["weight_decay"], c["beta_1"], c["beta_2"], c["epsilon"]) == \
        (0.001, 0.004, 0.9, 0.999, 1e-7)
    c = Adagrad().get_config()
    assert (c["learning_rate"], c["initial_accumulator_value"], c["epsilon"]) == \
        (0.001, 0.1, 1e-7)
    for opt in (SGD(), RMSprop(), Adam(), AdamW(), Adagrad()):
        c = opt.get_config()
        assert c["clipnorm"] is None and c["clipvalue"] is None and c["global_clipnorm"] is None
    assert [o.name for o in (SGD(), RMSprop(), Adam(), AdamW(), Adagrad())] == \
        ["SGD", "rmsprop", "adam", "adamw", "adagrad"]


# --------------------------------------------------------------------------- clipping
def test_clipnorm_per_tensor():
    big, small = np.array([3.0, 4.0]), np.array([0.3, 0.4])          # norms 5 and 0.5
    p, q = np.zeros(2), np.zeros(2)
    SGD(learning_rate=1.0, clipnorm=1.0).apply([big, small], [p, q])
    np.testing.assert_allclose(p, [-0.6, -0.8], rtol=1e-15)           # rescaled to norm 1
    np.testing.assert_allclose(q, [-0.3, -0.4], rtol=1e-15)           # untouched
    np.testing.assert_array_equal(big, [3.0, 4.0])                    # grads not modified


def test_global_clipnorm():
    g1, g2 = np.array([3.0, 0.0]), np.array([[0.0], [4.0]])          # global norm 5
    p1, p2 = np.zeros(2), np.zeros((2, 1))
    SGD(learning_rate=1.0, global_clipnorm=2.5).apply([g1, g2], [p1, p2])
    np.testing.assert_allclose(p1, [-1.5, 0.0], rtol=1e-15)
    np.testing.assert_allclose(p2, [[0.0], [-2.0]], rtol=1e-15)
    # under the threshold: unchanged
    p = np.zeros(2)
    SGD(learning_rate=1.0, global_clipnorm=10.0).apply([g1], [p])
    np.testing.assert_allclose(p, [-3.0, 0.0])
    # a non-finite global norm poisons every gradient, as in Keras
    p1, p2 = np.zeros(2), np.zeros((2, 1))
    SGD(learning_rate=1.0, global_clipnorm=1.0).apply(
        [np.array([np.inf, 0.0]), np.array([[0.0], [1.0]])], [p1, p2])
    assert np.isnan(p2).all()


def test_clipvalue_elementwise():
    g = np.array([-5.0, -0.1, 0.0, 0.2, 7.0])
    p = np.zeros(5)
    SGD(learning_rate=1.0, clipvalue=0.5).apply([g], [p])
    np.testing.assert_allclose(p, [0.5, 0.1, 0.0, -0.2, -0.5])
    np.testing.assert_array_equal(g, [-5.0, -0.1, 0.0, 0.2, 7.0])


@pytest.mark.parametrize("kind", ALL)
def test_clipping_feeds_the_update(kind):
    """Clipping happens before the optimizer's own rule: clipped grads == pre-clipped."""
    g = np.array([[3.0, -4.0], [0.5, 1.0]])
    p1, p2 = np.ones((2, 2)), np.ones((2, 2))
    CLASSES[kind](learning_rate=0.1, clipvalue=0.6).apply([g], [p1])
    CLASSES[kind](learning_rate=0.1).apply([np.clip(g, -0.6, 0.6)], [p2])
    np.testing.assert_array_equal(p1, p2)


def test_clip_arguments_validated():
    with pytest.raises(ValueError, match="Only one of"):
        SGD(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="Only one of"):
        Adam(clipnorm=1.0, global_clipnorm=1.0)
    for arg in ("clipnorm", "clipvalue", "global_clipnorm"):
        with pytest.raises(ValueError, match=arg):
            Adam(**{arg: 0.0})
        with pytest.raises(ValueError, match=arg):
            Adam(**{arg: -1.0})
        with pytest.raises(TypeError, match=arg):
            Adam(**{arg: "1"})


# --------------------------------------------------------------------------- schedules
def test_exponential_decay_values():
    s = schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    assert s(0) == pytest.approx(0.1)
    assert s(10) == pytest.approx(0.05)
    assert s(5) == pytest.approx(0.1 * 0.5 ** 0.5)
    st = schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    assert [st(k) for k in (0, 9, 10, 19, 20)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert isinstance(s(3), float)


def test_piecewise_constant_decay_boundaries_inclusive():
    s = schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    assert [s(k) for k in (0, 10, 11, 20, 21, 1000)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    with pytest.raises(ValueError, match="length"):
        schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5])
    with pytest.raises(ValueError, match="increasing"):
        schedules.PiecewiseConstantDecay([20, 10], [1.0, 0.5, 0.1])


def test_inverse_time_decay_values():
    s = schedules.InverseTimeDecay(1.0, decay_steps=2, decay_rate=0.5)
    assert s(0) == 1.0 and s(2) == pytest.approx(1 / 1.5) and s(3) == pytest.approx(1 / 1.75)
    st = schedules.InverseTimeDecay(1.0, decay_steps=2, decay_rate=0.5, staircase=True)
    assert st(3) == pytest.approx(1 / 1.5)


def test_polynomial_and_cosine_decay_values():
    s = schedules.PolynomialDecay(1.0, 10, end_learning_rate=0.1, power=2.0)
    assert s(0) == 1.0 and s(5) == pytest.approx(0.9 * 0.25 + 0.1) and s(50) == 0.1
    sc = schedules.PolynomialDecay(1.0, 10, end_learning_rate=0.0, cycle=True)
    assert sc(15) == pytest.approx(1.0 * (1 - 15 / 20))
    c = schedules.CosineDecay(1.0, 10, alpha=0.1)
    assert c(0) == pytest.approx(1.0) and c(10) == pytest.approx(0.1) and c(99) == c(10)
    assert c(5) == pytest.approx(0.9 * 0.5 + 0.1)
    w = schedules.CosineDecay(0.0, 10, warmup_target=1.0, warmup_steps=4)
    assert w(2) == pytest.approx(0.5) and w(4) == pytest.approx(1.0)
    assert w(9) == pytest.approx(0.5)


@pytest.mark.parametrize("sched", [
    schedules.ExponentialDecay(0.1, 7, 0.9, staircase=True),
    schedules.PiecewiseConstantDecay([3, 8], [0.3, 0.2, 0.1]),
    schedules.InverseTimeDecay(0.5, 4, 1.5),
    schedules.PolynomialDecay(0.2, 9, 0.01, power=0.5, cycle=True),
    schedules.CosineDecay(0.1, 20, alpha=0.05, warmup_target=0.3, warmup_steps=5),
    schedules.CosineDecayRestarts(0.1, 6, t_mul=1.5, m_mul=0.8, alpha=0.01),
])
def test_schedule_config_round_trip(sched):
    again = type(sched).from_config(sched.get_config())
    assert again.get_config() == sched.get_config()
    via = schedules.deserialize(schedules.serialize(sched))
    assert type(via) is type(sched)
    assert [via(k) for k in range(30)] == [sched(k) for k in range(30)]


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="decay_steps"):
        schedules.ExponentialDecay(0.1, 0, 0.5)
    with pytest.raises(ValueError, match="decay_steps"):
        schedules.InverseTimeDecay(0.1, -1, 0.5)
    with pytest.raises(TypeError, match="initial_learning_rate"):
        schedules.ExponentialDecay("0.1", 10, 0.5)
    with pytest.raises(ValueError, match="unknown"):
        schedules.deserialize({"class_name": "Nope", "config": {}})
    with pytest.raises(NotImplementedError):
        schedules.LearningRateSchedule()(0)
    # values that gave complex rates, ZeroDivisionError or inf at some later step; flags
    # that took any truthy value; NumPy step counts that made the config unwritable
    for make, arg in ((lambda: schedules.ExponentialDecay(0.1, 10, -0.5), "decay_rate"),
                      (lambda: schedules.InverseTimeDecay(0.1, 1, -0.1), "decay_rate"),
                      (lambda: schedules.PolynomialDecay(0.1, 10, power=-1.0), "power"),
                      (lambda: schedules.CosineDecayRestarts(0.1, 10, t_mul=0.0), "t_mul"),
                      (lambda: schedules.CosineDecayRestarts(0.1, 10, m_mul=-1.0), "m_mul")):
        with pytest.raises(ValueError, match=arg):
            make()
    with pytest.raises(TypeError, match="staircase"):
        schedules.ExponentialDecay(0.1, 10, 0.5, staircase="no")
    with pytest.raises(TypeError, match="cycle"):
        schedules.PolynomialDecay(0.1, 10, cycle="no")
    cfg = schedules.ExponentialDecay(0.1, np.array(10), 0.5).get_config()
    assert type(cfg["decay_steps"]) is int
    json.dumps(cfg)


def test_cosine_decay_restarts_values():
    """Keras's CosineDecayRestarts (SGDR): periods of 10, 20, 40 steps (t_mul 2), each
    starting at m_mul times the one before; t_mul 1: equal periods."""
    s = schedules.CosineDecayRestarts(1.0, 10, t_mul=2.0, m_mul=0.5, alpha=0.0)
    assert s(0) == 1.0 and s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(0.5) and s(20) == pytest.approx(0.25)
    assert s(30) == pytest.approx(0.25) and s(29.999) == pytest.approx(0.0, abs=1e-7)
    e = schedules.CosineDecayRestarts(1.0, 10, t_mul=1.0, m_mul=1.0, alpha=0.2)
    assert e(0) == e(10) == e(20) == 1.0 and e(5) == pytest.approx(0.6)
    assert schedules.get({"class_name": "CosineDecayRestarts",
                          "config": s.get_config()})(20) == s(20)


def test_optimizer_evaluates_schedule_at_iterations_before_the_step():
    sched = schedules.PiecewiseConstantDecay([0, 1], [1.0, 0.5, 0.25])
    opt = SGD(learning_rate=sched)
    p = np.zeros(1)
    assert opt.learning_rate == 1.0
    deltas = []
    for _ in range(4):
        before = p.copy()
        opt.apply([np.ones(1)], [p])
        deltas.append(float(before[0] - p[0]))
    assert deltas == [1.0, 0.5, 0.25, 0.25]
    assert opt.iterations == 4 and opt.learning_rate == 0.25


def test_learning_rate_callables():
    seen = []

    def of_step(step):
        seen.append(step)
        return 0.1 / (step + 1)

    opt = SGD(learning_rate=of_step)
    p = np.zeros(1)
    opt.apply([np.ones(1)], [p])
    opt.apply([np.ones(1)], [p])
    np.testing.assert_allclose(p, [-(0.1 + 0.05)])
    assert seen[:2] == [0, 1]
    # a Keras-3-style callable takes no argument
    opt = SGD(learning_rate=lambda: 0.25)
    p = np.zeros(1)
    opt.apply([np.ones(1)], [p])
    assert p[0] == -0.25 and opt.learning_rate == 0.25


def test_learning_rate_is_settable():
    opt = Adam(learning_rate=0.1)
    opt.learning_rate = 0.02
    assert opt.learning_rate == 0.02 and opt.get_config()["learning_rate"] == 0.02
    p = np.zeros(1)
    sgd = SGD(learning_rate=1.0)
    sgd.apply([np.ones(1)], [p])
    sgd.learning_rate = 0.5
    sgd.apply([np.ones(1)], [p])
    assert p[0] == -1.5
    with pytest.raises(ValueError, match="learning_rate"):
        sgd.learning_rate = -0.1
    sched = SGD(learning_rate=schedules.ExponentialDecay(0.1, 10, 0.5))
    with pytest.raises(TypeError, match="LearningRateSchedule"):
        sched.learning_rate = 0.1
    sched.learning_rate = schedules.InverseTimeDecay(0.2, 1, 1.0)   # another schedule is fine
    assert sched.learning_rate == 0.2


# --------------------------------------------------------------------------- state, config
@pytest.mark.parametrize("kind,kw", VARIANTS)
def test_get_set_state_continues_bit_identically(kind, kw):
    params, grads = make_problem(np.float32, seed=5, n_steps=8)
    opt = CLASSES[kind](**kw)
    for gs in grads[:3]:
        opt.apply(gs, params)
    saved_params = [p.copy() for p in params]
    state = opt.get_state()
    assert state[0].shape == () and int(state[0]) == 3
    for gs in grads[3:]:
        opt.apply(gs, params)

    # a fresh optimizer from the config, restored before it is built
    fresh = CLASSES[kind].from_config(opt.get_config())
    fresh.set_state(state)
    assert fresh.iterations == 3
    restored = [p.copy() for p in saved_params]
    for gs in grads[3:]:
        fresh.apply(gs, restored)
    for p, q in zip(params, restored):
        assert p.tobytes() == q.tobytes()

    # and a built optimizer rewound in place
    again = [p.copy() for p in saved_params]
    opt.set_state(state)
    for gs in grads[3:]:
        opt.apply(gs, again)
    for p, q in zip(params, again):
        assert p.tobytes() == q.tobytes()


def test_state_layout_and_copies():
    params = [np.ones((3, 2), np.float32), np.ones(2, np.float32)]
    opt = Adam(amsgrad=True)
    assert [int(s) for s in opt.get_state()] == [0]          # unbuilt: only iterations
    opt.apply([np.ones((3, 2), np.float32), np.ones(2, np.float32)], params)
    state = opt.get_state()
    assert len(state) == 1 + 3 * 2
    assert [s.shape for s in state[1:]] == [(3, 2), (2,)] * 3
    assert all(s.dtype == np.float32 for s in state[1:])
    state[1][...] = 123.0                                     # a copy, not the slot itself
    assert opt.get_state()[1][0, 0] != 123.0
    assert len(SGD().get_state()) == 1
    sgd = SGD(momentum=0.0)
    sgd.apply([np.ones((3, 2), np.float32), np.ones(2, np.float32)], params)
    assert len(sgd.get_state()) == 1                          # no momentum slot


def test_set_state_validation():
    params = [np.ones((3, 2)), np.ones(2)]
    grads = [np.ones((3, 2)), np.ones(2)]
    opt = Adam()
    opt.apply(grads, params)
    state = opt.get_state()
    with pytest.raises(ValueError, match="1 \\+ 4"):
        opt.set_state(state[:-1])
    bad = list(state)
    bad[2] = np.ones(3)
    with pytest.raises(ValueError, match="state\\[2\\]"):
        opt.set_state(bad)
    with pytest.raises(ValueError, match="iteration"):
        opt.set_state([np.array(-1)] + state[1:])
    with pytest.raises(ValueError, match="iteration"):   # was an OverflowError
        opt.set_state([np.array(np.inf)] + state[1:])
    with pytest.raises(ValueError, match="empty"):
        opt.set_state([])
    fresh = Adam()
    with pytest.raises(ValueError, match="multiple"):
        fresh.set_state(state[:-1])
    # restored slots are checked against the parameters at the first apply
    fresh.set_state(state)
    with pytest.raises(ValueError, match="trainable_variables\\[0\\]"):
        fresh.apply([np.ones((2, 3)), np.ones(2)], [np.ones((2, 3)), np.ones(2)])


@pytest.mark.parametrize("kind,kw", VARIANTS + [
    ("adam", dict(learning_rate=schedules.ExponentialDecay(0.1, 10, 0.9), clipnorm=2.0)),
    ("rmsprop", dict(global_clipnorm=1.0, name="my_rms")),
    ("sgd", dict(clipvalue=0.5))])
def test_config_round_trip(kind, kw):
    opt = CLASSES[kind](**kw)
    config = opt.get_config()
    again = CLASSES[kind].from_config(config)
    assert type(again) is type(opt)
    assert again.get_config() == config
    via = optimizers.deserialize(optimizers.serialize(opt))
    assert type(via) is type(opt) and via.get_config() == config
    via = optimizers.get({"class_name": type(opt).__name__, "config": config})
    assert via.get_config() == config
    repr(opt)


def test_get_by_name_instance_and_dict():
    for name, cls in CLASSES.items():
        assert type(optimizers.get(name)) is cls
        assert type(optimizers.get(name.upper())) is cls
        assert type(optimizers.get(cls.__name__)) is cls
    opt = Adam()
    assert optimizers.get(opt) is opt
    flat = optimizers.get({"class_name": "sgd", "learning_rate": 0.5, "momentum": 0.5})
    assert isinstance(flat, SGD) and flat.learning_rate == 0.5 and flat.momentum == 0.5
    with pytest.raises(ValueError) as info:
        optimizers.get("adamax")
    for name in ALL:
        assert name in str(info.value)
    with pytest.raises(TypeError):
        optimizers.get(3)
    with pytest.raises(ValueError, match="class_name"):
        optimizers.get({"learning_rate": 0.1})


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("cls", list(CLASSES.values()))
def test_learning_rate_validation(cls):
    with pytest.raises(ValueError, match="learning_rate"):
        cls(learning_rate=-0.01)
    with pytest.raises(ValueError, match="learning_rate"):
        cls(learning_rate=float("nan"))
    with pytest.raises(TypeError, match="learning_rate"):
        cls(learning_rate="0.01")
    with pytest.raises(TypeError, match="learning_rate"):
        cls(learning_rate=None)
    cls(learning_rate=0)          # an int is accepted (as 0.0)


@pytest.mark.parametrize("make,arg", [
    (lambda: SGD(momentum=1.5), "momentum"), (lambda: SGD(momentum=-0.1), "momentum"),
    (lambda: SGD(nesterov="yes"), "nesterov"),
    (lambda: RMSprop(rho=1.1), "rho"), (lambda: RMSprop(epsilon=-1e-7), "epsilon"),
    (lambda: RMSprop(momentum=-1.0), "momentum"), (lambda: RMSprop(centered=1), "centered"),
    (lambda: Adam(beta_1=1.0), "beta_1"), (lambda: Adam(beta_2=-0.1), "beta_2"),
    (lambda: Adam(epsilon=-1.0), "epsilon"), (lambda: Adam(amsgrad="no"), "amsgrad"),
    (lambda: AdamW(weight_decay=None), "weight_decay"),
    (lambda: AdamW(weight_decay=-0.1), "weight_decay"),
    (lambda: Adagrad(initial_accumulator_value=-0.1), "initial_accumulator_value"),
    (lambda: Adagrad(epsilon=float("inf")), "epsilon"),
    (lambda: Adam(weight_decay=-1.0), "weight_decay"),
    (lambda: Adam(name=3), "name"),
])
def test_hyperparameter_validation(make, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        make()


def test_apply_takes_keras_3_argument_order():
    """Keras 3's ``apply(grads, trainable_variables=None)``: the gradients first (the
    order was reversed: Keras code moved the gradients and left the weights, silently);
    without variables, those given to ``build``; ``apply_gradients`` takes (grad, var)
    pairs."""
    p, g = np.ones(3, np.float32), np.full(3, 0.5, np.float32)
    SGD(0.1).apply([g], [p])
    np.testing.assert_array_equal(p, np.full(3, 0.95, np.float32))
    np.testing.assert_array_equal(g, np.full(3, 0.5, np.float32))
    opt = SGD(0.1)
    q = np.ones(3, np.float32)
    opt.build([q])
    opt.apply([g])
    np.testing.assert_array_equal(q, np.full(3, 0.95, np.float32))
    assert opt.apply_gradients([(g, q)]) == 2
    np.testing.assert_allclose(q, np.full(3, 0.9, np.float32))
    with pytest.raises(ValueError, match="build\\(variables\\), but build\\(\\) was not called"):
        SGD(0.1).apply([g])


def test_apply_input_validation():
    opt = Adam()
    params = [np.ones((3, 2)), np.ones(2)]
    with pytest.raises(ValueError, match="1 grads but 2 trainable_variables"):
        opt.apply([np.ones((3, 2))], params)
    with pytest.raises(ValueError, match="grads\\[1\\]"):
        opt.apply([np.ones((3, 2)), np.ones(3)], params)
    opt.apply([np.ones((3, 2)), np.ones(2)], params)
    with pytest.raises(ValueError, match="trainable_variables\\[1\\]"):
        opt.apply([np.ones((3, 2)), np.ones(4)], [np.ones((3, 2)), np.ones(4)])
    with pytest.raises(ValueError, match="trainable_variables\\[0\\].*dtype"):
        opt.apply([np.ones((3, 2)), np.ones(2)], [np.ones((3, 2), np.float32), np.ones(2)])
    with pytest.raises(ValueError, match="built for 2 parameters"):
        opt.apply([np.ones((3, 2))], params[:1])
    with pytest.raises(TypeError, match="trainable_variables\\[0\\]"):
        Adam().apply([np.ones(2)], [[1.0, 2.0]])
    with pytest.raises(TypeError, match=r"must be float32 or float64 \(native byte order\), "
                                        r"received dtype int64"):
        Adam().apply([np.ones(2)], [np.ones(2, dtype=np.int64)])
    ro = np.ones(2)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        Adam().apply([np.ones(2)], [ro])
    assert opt.iterations == 1      # failed calls did not step


def test_changing_slot_hyperparameters_after_build_is_refused():
    opt = SGD(learning_rate=0.1)
    p = np.ones(2)
    opt.apply([np.ones(2)], [p])
    opt.momentum = 0.9
    with pytest.raises(ValueError, match="hyperparameters"):
        opt.apply([np.ones(2)], [p])


# --------------------------------------------------------------------------- API details
def test_updates_in_place_shared_and_strided_arrays():
    big = np.zeros((4, 6))
    kernel = big[:, ::2]                 # a strided view, like weights shared with a layer
    bias = np.zeros(3)
    ids = (id(kernel), id(bias))
    opt = SGD(learning_rate=1.0)
    opt.apply([np.ones((4, 3)), np.full(3, 2.0)], [kernel, bias])
    assert (id(kernel), id(bias)) == ids
    np.testing.assert_array_equal(big[:, ::2], -1.0)
    np.testing.assert_array_equal(big[:, 1::2], 0.0)
    np.testing.assert_array_equal(bias, -2.0)


def test_apply_gradients_alias():
    p1, p2 = np.ones(3), np.ones(3)
    g = np.array([0.1, -0.2, 0.3])
    a, b = Adam(learning_rate=0.1), Adam(learning_rate=0.1)
    a.apply([g], [p1])
    assert b.apply_gradients([(g, p2)]) == 1
    np.testing.assert_array_equal(p1, p2)
    with pytest.raises(TypeError, match="pair"):
        b.apply_gradients([g])


def test_mixed_dtypes_and_list_grads():
    p32, p64 = np.ones(3, np.float32), np.ones((2, 2))
    opt = RMSprop(learning_rate=0.1)
    opt.apply([np.ones(3), [[1.0, 1.0], [1.0, 1.0]]], [p32, p64])
    assert p32.dtype == np.float32 and p64.dtype == np.float64
    assert [s.dtype for s in opt.get_state()[1:]] == [np.float32, np.float64]
    np.testing.assert_allclose(p32, 1 - 0.1 / np.sqrt(0.1 + 1e-7), rtol=1e-6)


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("dtype", [np.float16, ">f4", ">f8", np.longdouble, np.int32],
                         ids=["float16", "big-endian-f4", "big-endian-f8", "longdouble", "int32"])
def test_params_of_other_dtypes_rejected(backend, kind, dtype):
    """Only native float32/float64 parameters: the C and Numba kernels take no others
    (float16 gave a KeyError in C and a TypingError in Numba), so every backend says so."""
    p = np.ones(3, dtype)
    with pytest.raises(TypeError, match=r"trainable_variables\[0\] must be float32 or float64 \(native "
                                        r"byte order\), received dtype"):
        CLASSES[kind]().apply([np.ones(3, np.float32)], [p])
    kw = {"momentum": 0.9} if kind == "sgd" else {}     # (plain SGD has no slots)
    opt = CLASSES[kind](**kw)
    opt.apply([np.ones(3, np.float32)], [np.ones(3, np.float32)])
    state = opt.get_state()
    fresh = CLASSES[kind](**kw)
    with pytest.raises(TypeError, match=r"state\[1\] must be a float32 or float64 array"):
        fresh.set_state([state[0]] + [a.astype(dtype) for a in state[1:]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,kw", [
    ("adam", {}), ("adam", dict(amsgrad=True)), ("adamw", {}),
    ("sgd", dict(momentum=0.9)), ("sgd", dict(momentum=0.8, nesterov=True)),
    ("rmsprop", {}), ("rmsprop", dict(momentum=0.5, centered=True))])
def test_subnormal_slots_are_flushed(backend, kind, kw, dtype):
    """A slot that has decayed into the subnormal range (a weight whose gradient stays
    0) is stored as +0 after the next step, instead of sticking there (0.9 m rounds back
    to m) and slowing every later step (ops.adam_update's flush_subnormal); the step
    itself is then 0, as the subnormal slot's would round to: p does not move."""
    f = np.dtype(dtype).type
    sub = f(4) * np.finfo(dtype).smallest_subnormal
    opt = CLASSES[kind](**kw)
    params = [np.linspace(-1, 1, 600).astype(dtype)]
    opt.apply([np.ones(600, dtype)], params)
    state = opt.get_state()
    assert len(state) > 1
    for a in state[1:]:
        a[...] = sub
        a[::2] = -sub
    opt.set_state(state)
    before = params[0].copy()
    opt.apply([np.zeros(600, dtype)], params)
    for a in opt.get_state()[1:]:
        assert (a == 0).all() and not np.signbit(a).any(), kind
    if kind != "adamw":                         # (AdamW's decay moves p)
        np.testing.assert_array_equal(params[0], before)


@pytest.mark.parametrize("kind", ALL)
def test_gradients_are_cast_to_the_param_dtype_first(kind):
    """Keras casts each gradient to its variable's dtype before the update."""
    params, grads = make_problem(np.float32, seed=7, n_steps=3)
    cast = [p.copy() for p in params]
    a, b = CLASSES[kind](learning_rate=0.1), CLASSES[kind](learning_rate=0.1)
    for gs in grads:
        g64 = [g.astype(np.float64) + 1e-9 for g in gs]   # not representable in float32
        a.apply(g64, params)
        b.apply([g.astype(np.float32) for g in g64], cast)
    for p, q in zip(params, cast):
        assert p.dtype == np.float32 and p.tobytes() == q.tobytes()


def test_build_is_explicit_and_idempotent():
    opt = Adagrad()
    params = [np.ones(4), np.ones(2)]
    assert not opt.built
    opt.build(params)
    assert opt.built and opt.iterations == 0
    np.testing.assert_array_equal(opt.get_state()[1], np.full(4, 0.1))
    opt.build([np.ones(7)])             # no-op once built
    opt.apply([np.zeros(4), np.zeros(2)], params)
    assert opt.iterations == 1


def test_empty_and_zero_size_params():
    """An empty list is no step (Keras 3: iterations stays 0; fastnn counted one and built
    for 0 parameters, so the next real call failed)."""
    opt = Adam()
    opt.apply([], [])
    assert opt.iterations == 0
    w = np.ones(3)
    opt.apply([np.ones(3)], [w])
    assert opt.iterations == 1 and (w < 1).all()
    opt2 = Adam()
    p, q = np.ones(0), np.ones(2)
    opt2.apply([np.ones(0), np.ones(2)], [p, q])
    assert p.shape == (0,)


@pytest.mark.parametrize("kind", ALL)
def test_no_per_step_allocation(kind):
    """After the first step, a step allocates nothing the size of a parameter."""
    params = [np.ones((256, 128), np.float32), np.ones(128, np.float32),
              np.ones((128, 10), np.float32), np.ones(10, np.float32)]
    grads = [np.full_like(p, 0.01) for p in params]
    opt = CLASSES[kind](clipnorm=1.0)
    opt.apply(grads, params)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            opt.apply(grads, params)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024, f"{kind}: a step allocated {peak} bytes"


def test_subclass_contract():
    class Sign(Optimizer):
        """param -= lr * sign(g): the smallest possible subclass."""
        _n_scratch = 1

        def _update_step(self, param, grad, slots, scratch, c):
            step = np.sign(grad, out=scratch[0])
            step *= c[0]
            param -= step

    p = np.zeros(3)
    Sign(learning_rate=0.5).apply([np.array([2.0, -3.0, 0.0])], [p])
    np.testing.assert_array_equal(p, [-0.5, 0.5, 0.0])


KERAS_BASE = {"use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
              "loss_scale_factor": None, "gradient_accumulation_steps": None}


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_keras_3_base_arguments_at_their_defaults(kind):
    """A Keras 3 optimizer config carries use_ema, ema_momentum, ema_overwrite_frequency,
    loss_scale_factor and gradient_accumulation_steps: at their defaults they load (they
    were a TypeError, so no Keras config could be read); other values of the last two,
    which fastnn does not implement, are a ValueError naming the argument (use_ema is
    implemented: test_ema_*)."""
    cls = CLASSES[kind]
    opt = optimizers.get({"class_name": cls.__name__,
                          "config": dict(KERAS_BASE, learning_rate=0.01)})
    assert type(opt) is cls and opt.learning_rate == 0.01
    for arg, value in (("loss_scale_factor", 128.0), ("gradient_accumulation_steps", 4)):
        with pytest.raises(ValueError, match=f"`{arg}` is not supported"):
            cls(**{arg: value})
    with pytest.raises(ValueError, match="ema_momentum"):
        cls(ema_momentum=1.5)


# --------------------------------------------------------------------------- use_ema
def _ema_model_and_data():
    """Keras 3.15.1's run below used these: x, y and the initial weights from
    default_rng(0) in this order."""
    from fastnn.layers import Dense, Input
    from fastnn.models import Sequential
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 3)).astype(np.float32)
    y = rng.integers(0, 2, 24)
    w0 = [rng.standard_normal((3, 4)).astype(np.float32) * 0.5, np.zeros(4, np.float32),
          rng.standard_normal((4, 2)).astype(np.float32) * 0.5, np.zeros(2, np.float32)]
    model = Sequential([Input((3,)), Dense(4, activation="relu"),
                        Dense(2, activation="softmax")])
    model.set_weights(w0)
    return model, x, y


@pytest.mark.parametrize("make, index, keras", [
    (lambda: optimizers.SGD(0.05, momentum=0.9, use_ema=True, ema_overwrite_frequency=5), 2,
     [[0.12678253650665283, 0.5138368606567383], [0.07915375381708145, -0.29141339659690857],
      [-0.676899790763855, -0.6944701075553894], [0.2669718861579895, 0.4792260527610779]]),
    (lambda: optimizers.Adam(0.01, use_ema=True, ema_momentum=0.8, ema_overwrite_frequency=3),
     2, [[0.15050119161605835, 0.49011802673339844], [0.07149593532085419, -0.2837555408477783],
         [-0.6779232025146484, -0.6934468746185303], [0.2798711955547333, 0.4663267135620117]]),
], ids=["sgd_momentum", "adam"])
def test_ema_matches_keras_3(make, index, keras):
    """use_ema (Keras 3's moving average of the weights, with ema_overwrite_frequency, the
    averages copied into the weights at the end of fit): the weights after 2 epochs of 6
    batches equal Keras 3.15.1's (TensorFlow 2.21, oneDNN off; values written here) to
    float32 rounding. The compiled Dense step, which updates inside C, steps aside."""
    model, x, y = _ema_model_and_data()
    model.compile(make(), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(model.get_weights()[index], keras, rtol=0, atol=3e-7)


def test_ema_formula_and_overwrite_bit_for_bit():
    """The average after each step is m * average + (1 - m) * param in the parameter's
    dtype, m = ema_momentum except 0 at the first step; the parameters take the averages
    after every ema_overwrite_frequency-th step and at finalize_variable_values."""
    rng = np.random.default_rng(3)
    p = rng.standard_normal(5).astype(np.float32)
    opt = optimizers.SGD(0.1, use_ema=True, ema_momentum=0.7, ema_overwrite_frequency=3)
    ref_p, avg = p.copy(), np.zeros(5, np.float32)
    m, one = np.float32(0.7), np.float32(1)
    for step in range(7):
        g = rng.standard_normal(5).astype(np.float32)
        opt.apply([g], [p])
        ref_p -= np.float32(0.1) * g
        mm = np.float32(0.0) if step == 0 else m
        avg = mm * avg + (one - mm) * ref_p
        if (step + 1) % 3 == 0:
            ref_p = avg.copy()
        np.testing.assert_array_equal(p, ref_p)
        np.testing.assert_array_equal(opt.get_state()[-1], avg)
    opt.finalize_variable_values([p])
    np.testing.assert_array_equal(p, avg)


def test_ema_state_and_config_round_trip():
    """The averages are part of get_state (after the slots): an optimizer restored from it,
    built or not, continues bit for bit; the config carries the three arguments; bad
    values are errors naming them."""
    rng = np.random.default_rng(4)
    grads = [[rng.standard_normal((3, 2)), rng.standard_normal(2)] for _ in range(6)]
    make = lambda: optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9)  # noqa: E731
    whole = make()
    pw = [np.ones((3, 2)), np.zeros(2)]
    for g in grads:
        whole.apply(g, pw)
    for built in (False, True):
        first = make()
        pa = [np.ones((3, 2)), np.zeros(2)]
        for g in grads[:3]:
            first.apply(g, pa)
        second = optimizers.Adam.from_config(first.get_config())
        assert second.use_ema and second.ema_momentum == 0.9
        if built:
            second.build(pa)
        second.set_state(first.get_state())
        for g in grads[3:]:
            second.apply(g, pa)
        for a, b in zip(pa + second.get_state(), pw + whole.get_state()):
            np.testing.assert_array_equal(a, b)
    assert len(whole.get_state()) == 1 + 3 * 2          # m, v and the averages
    with pytest.raises(TypeError, match="use_ema"):
        optimizers.SGD(use_ema="yes")
    # switched after the first step it would blend zeros into the weights (a review)
    with pytest.raises(ValueError, match="use_ema cannot change once the optimizer is built"):
        whole.use_ema = False
    plain = optimizers.SGD(0.1)
    assert "use_ema" not in plain.get_config()     # (a user's subclass may not take it)
    plain.apply([np.ones(2)], [np.zeros(2)])
    with pytest.raises(ValueError, match="use_ema cannot change"):
        plain.use_ema = True
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="ema_overwrite_frequency"):
            optimizers.SGD(use_ema=True, ema_overwrite_frequency=bad)


def test_review_fixes_learning_rate_clipping_none_and_configs():
    """A callable learning rate whose parameters all have defaults is called with none
    (it got the step count: lambda lr=0.01: lr ran at 0, 1, 2, 3); gradients are clipped in
    their own dtype before the cast (a float64 1e20 overflowed the float32 norm: NaN
    weights); a None gradient is a ValueError saying so; a tf.keras 2 config's decay is
    dropped with a warning; a PiecewiseConstantDecay of NumPy numbers has a JSON config."""
    import json
    import warnings
    from fastnn import optimizers as O
    w = np.ones(2)
    opt = SGD(learning_rate=lambda lr=0.01: lr)
    for _ in range(4):
        opt.apply([np.ones(2)], [w])
    np.testing.assert_allclose(w, 0.96)
    assert opt.learning_rate == 0.01
    w32 = np.ones(3, np.float32)
    g = np.array([1e20, 1.0, 0.0])
    O.AdamW(global_clipnorm=1.0).apply([g], [w32])
    assert np.isfinite(w32).all() and w32[0] < 1
    w32 = np.ones(3, np.float32)
    SGD(1.0, clipnorm=1.0).apply([g], [w32])
    np.testing.assert_allclose(w32, [0.0, 1.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match=r"grads\[0\] is None"):
        Adam().apply([None, np.ones(2)], [np.ones((2, 2)), np.ones(2)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = O.deserialize({"class_name": "Adam",
                             "config": {"learning_rate": 0.01, "decay": 0.0}})
    assert type(opt) is Adam and any("decay" in str(c.message) for c in caught)
    sched = O.schedules.PiecewiseConstantDecay(np.array([10, 20]), np.array([.1, .01, .001]))
    assert json.loads(json.dumps(sched.get_config()))["boundaries"] == [10, 20]
    assert sched(15) == 0.01


def test_cosine_decay_restarts_at_exact_restarts():
    """A restart step whose logarithm lands a hair low (log(243) / log(3) = 4.999...) is
    the new period's start, 0.1 in Keras 3.15.1 (it was the previous period's end, 0.0);
    with t_mul < 1 a step past the schedule's finite length is a clear ValueError (a math
    domain error before; Keras gives NaN)."""
    from fastnn.optimizers.schedules import CosineDecayRestarts
    s = CosineDecayRestarts(0.1, 10, t_mul=3.0)
    assert s(1210) == pytest.approx(0.1) and s(1209) < 1e-6
    assert CosineDecayRestarts(0.1, 3, t_mul=3.0)(363) == pytest.approx(0.1)
    assert s(363) == pytest.approx(0.0045624435, rel=1e-6)   # Keras: 0.00456244358792901
    short = CosineDecayRestarts(0.1, 7, t_mul=0.5)
    assert short(13) == pytest.approx(0.004951584618538618, rel=1e-4)  # Keras in float32
    with pytest.raises(ValueError, match="past the end of the schedule"):
        short(14)
