"""Every fastnn layer against the float64 reference of ``tests/reference_model.py``.

* Forward output, input gradient and every parameter gradient (plus BatchNormalization's
  moving statistics), on every backend (``backend`` fixture), in float32 and float64.
* The reference itself against the direct loops of ``tests/_naive.py`` and against central
  finite differences of its own forward functions.
* The layer protocol: ``compute_output_shape`` equals the real output shape, ``params`` and
  ``grads`` share keys, order, shapes and dtype, ``get_config``/``from_config`` round-trips
  (also through JSON) and the rebuilt layer computes the same output from the same weights.
* Dropout: identity at inference, inverted scaling and one mask shared by forward and
  backward in training, ``noise_shape``, seeding, rate bounds.
* Buffers across steps: a result that is held is not overwritten by the next call, inputs are
  never modified, ``params``/``grads`` keep their identity (updated in place, as
  :mod:`fastnn.layers.base` documents) and a step's gradients do not accumulate.
* Bad arguments and bad input raise ValueError/TypeError naming the argument.

Tolerances: ``assert_close`` of conftest with ``k`` the length of the reduction behind each
compared value and ``scale`` the largest magnitude of its terms; finite differences use the
``"finite_difference"`` entry of conftest's TOLERANCES.
"""
from __future__ import annotations

import itertools
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, NamedTuple, Optional

import numpy as np
import pytest

import fastnn
from fastnn import layers as L
from conftest import (DTYPES, TOLERANCES, absmax, assert_close, assert_same, distinct, rand,
                      tolerance)

import _naive
import reference_model as R

DT_IDS = ["f32", "f64"]


def _rng(*key) -> np.random.Generator:
    """A generator seeded by the test case (stable across runs and processes)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


# =========================================================================== reference adapters
class Ref(NamedTuple):
    """The reference's answer for one layer call, with the tolerance inputs ``(k, scale)``
    of every compared quantity in ``bounds``."""
    y: np.ndarray
    dx: Optional[np.ndarray]
    grads: Dict[str, np.ndarray]
    state: Dict[str, np.ndarray]
    bounds: Dict[str, tuple]


def _act(kw):
    """(name, keyword arguments) of the reference activation for a layer's ``activation``
    argument (Keras defaults: leaky_relu slope 0.2, elu alpha 1)."""
    a = kw.get("activation")
    return ("linear" if a is None else a), {}


def ref_dense(kw, p, x, dy, training):
    name, akw = _act(kw)
    w, b = p["kernel"], p.get("bias")
    y = R.dense_forward(x, w, b, name, **akw)
    if dy is None:
        return y
    dx, dw, db = R.dense_backward(x, w, b, dy, name, **akw)
    z = R.dense_forward(x, w, b, "linear")
    dz = R.activation_backward(name, z, dy, **akw)
    k_in, units = w.shape
    rows = x.size // k_in
    grads = {"kernel": dw}
    bounds = {"y": (k_in + 1, absmax(x) * absmax(w) + absmax(b)),
              "dx": (units, absmax(dz) * absmax(w)),
              "kernel": (rows, absmax(x) * absmax(dz))}
    if b is not None:
        grads["bias"] = db
        bounds["bias"] = (rows, absmax(dz))
    return Ref(y, dx, grads, {}, bounds)


def _conv_kw(kw):
    return dict(strides=kw.get("strides", 1), padding=kw.get("padding", "valid"),
                dilation_rate=kw.get("dilation_rate", 1),
                data_format=kw.get("data_format") or "channels_last")


def ref_conv(kw, p, x, dy, training):
    name, akw = _act(kw)
    w, b = p["kernel"], p.get("bias")
    ckw = _conv_kw(kw)
    y = R.conv2d_forward(x, w, b, activation=name, **ckw, **akw)
    if dy is None:
        return y
    dx, dw, db = R.conv2d_backward(x, w, b, dy, activation=name, **ckw, **akw)
    dz = R.activation_backward(name, R.conv2d_forward(x, w, b, **ckw), dy, **akw)
    kh, kw_, c, f = w.shape
    rows = dz.size // f
    grads = {"kernel": dw}
    bounds = {"y": (kh * kw_ * c + 1, absmax(x) * absmax(w) + absmax(b)),
              "dx": (kh * kw_ * f, absmax(dz) * absmax(w)),
              "kernel": (rows, absmax(x) * absmax(dz))}
    if b is not None:
        grads["bias"] = db
        bounds["bias"] = (rows, absmax(dz))
    return Ref(y, dx, grads, {}, bounds)


def _pool_kw(kw):
    return dict(pool_size=kw.get("pool_size", 2), strides=kw.get("strides"),
                padding=kw.get("padding", "valid"),
                data_format=kw.get("data_format") or "channels_last")


def _overlap(kw):
    """How many windows can cover one input element (terms of one dx sum)."""
    ps = _naive.pair(kw.get("pool_size", 2))
    st = _naive.pair(kw.get("strides") or ps)
    return -(-ps[0] // st[0]) * -(-ps[1] // st[1])


def ref_maxpool(kw, p, x, dy, training):
    pkw = _pool_kw(kw)
    y = R.maxpool2d_forward(x, **pkw)
    if dy is None:
        return y
    dx = R.maxpool2d_backward(x, dy, **pkw)
    return Ref(y, dx, {}, {}, {"y": (1, absmax(x)), "dx": (_overlap(kw), absmax(dy))})


def ref_avgpool(kw, p, x, dy, training):
    pkw = _pool_kw(kw)
    y = R.avgpool2d_forward(x, **pkw)
    if dy is None:
        return y
    dx = R.avgpool2d_backward(x, dy, **pkw)
    ps = _naive.pair(pkw["pool_size"])
    return Ref(y, dx, {}, {}, {"y": (ps[0] * ps[1], absmax(x)),
                               "dx": (_overlap(kw), absmax(dy))})


def ref_gap(kw, p, x, dy, training):
    gkw = dict(data_format=kw.get("data_format") or "channels_last",
               keepdims=kw.get("keepdims", False))
    y = R.global_avgpool2d_forward(x, **gkw)
    if dy is None:
        return y
    dx = R.global_avgpool2d_backward(x, dy, **gkw)
    hw = x.shape[1] * x.shape[2] if gkw["data_format"] == "channels_last" else \
        x.shape[2] * x.shape[3]
    return Ref(y, dx, {}, {}, {"y": (hw, absmax(x)), "dx": (1, absmax(dy))})


def ref_gmp(kw, p, x, dy, training):
    """Global max pooling by loops over (sample, channel): the maximum, and the gradient
    shared equally among the positions that hold it (TensorFlow's reduce_max)."""
    cf = kw.get("data_format") == "channels_first"
    xl = x.transpose(0, 2, 3, 1) if cf else x                 # (N, H, W, C)
    n, h, w, c = xl.shape
    y = np.empty((n, c), x.dtype)
    dxl = np.zeros_like(xl)
    for i in range(n):
        for ch in range(c):
            window = [(r, q) for r in range(h) for q in range(w)]
            best = max(xl[i, r, q, ch] for r, q in window)
            y[i, ch] = best
            if dy is not None:
                hits = [(r, q) for r, q in window if xl[i, r, q, ch] == best]
                for r, q in hits:
                    dxl[i, r, q, ch] = dy.reshape(n, c)[i, ch] / len(hits)
    if kw.get("keepdims"):
        y = y[:, :, None, None] if cf else y[:, None, None, :]
    if dy is None:
        return y
    dx = dxl.transpose(0, 3, 1, 2) if cf else dxl
    return Ref(y, dx, {}, {}, {"y": (1, absmax(x)), "dx": (1, absmax(dy))})


def ref_flatten(kw, p, x, dy, training):
    df = kw.get("data_format") or "channels_last"
    y = R.flatten_forward(x, df)
    if dy is None:
        return y
    return Ref(y, R.flatten_backward(x, dy, df), {}, {}, {"y": (1, 1.0), "dx": (1, 1.0)})


def ref_identity(kw, p, x, dy, training):       # Dropout at inference, InputLayer
    y = R.f64(x).copy()
    if dy is None:
        return y
    return Ref(y, R.f64(dy).copy(), {}, {}, {"y": (1, 1.0), "dx": (1, 1.0)})


def _elementwise_ref(name, akw, x, dy):
    y = R.activation_forward(name, x, **akw)
    if dy is None:
        return y
    dx = R.activation_backward(name, x, dy, **akw)
    if name == "softmax":
        k = x.shape[akw.get("axis", -1)]
        return Ref(y, dx, {}, {}, {"y": (k, 1.0), "dx": (k, absmax(y) * absmax(dy))})
    return Ref(y, dx, {}, {}, {"y": (1, absmax(y)), "dx": (1, absmax(dy))})


def ref_activation(kw, p, x, dy, training):
    return _elementwise_ref(kw["activation"], {}, x, dy)


def ref_softmax_layer(kw, p, x, dy, training):
    return _elementwise_ref("softmax", {"axis": kw.get("axis", -1)}, x, dy)


def ref_relu_layer(kw, p, x, dy, training):
    rkw = dict(max_value=kw.get("max_value"), negative_slope=kw.get("negative_slope", 0.0),
               threshold=kw.get("threshold", 0.0))
    y = R.relu_layer_forward(x, **rkw)
    if dy is None:
        return y
    return Ref(y, R.relu_layer_backward(x, dy, **rkw), {}, {},
               {"y": (1, absmax(x)), "dx": (1, absmax(dy))})


def ref_batchnorm(kw, p, x, dy, training):
    bkw = dict(axis=kw.get("axis", -1), epsilon=kw.get("epsilon", 1e-3))
    gamma = p.get("gamma") if kw.get("scale", True) else None
    beta = p.get("beta") if kw.get("center", True) else None
    y, mm, mv = R.batchnorm_forward(x, gamma, beta, p["moving_mean"], p["moving_variance"],
                                    momentum=kw.get("momentum", 0.99), training=training,
                                    **bkw)
    if dy is None:
        return y
    dx, dg, db = R.batchnorm_backward(x, gamma, beta, p["moving_mean"], p["moving_variance"],
                                      dy, training=training, **bkw)
    ax = bkw["axis"] % x.ndim
    reduce = tuple(i for i in range(x.ndim) if i != ax)
    count = x.size // x.shape[ax]
    var = x.var(axis=reduce) if training else p["moving_variance"]
    inv_std = float(np.max(1.0 / np.sqrt(var + bkw["epsilon"])))
    xhat_max = 2 * absmax(x) * inv_std
    g = 1.0 if gamma is None else absmax(gamma)
    grads, bounds = {}, {
        "y": (count, absmax(y) + xhat_max * g),
        "dx": (count, inv_std * absmax(dy) * g * max(1.0, xhat_max) ** 2),
        "moving_mean": (count, absmax(x) + absmax(p["moving_mean"])),
        "moving_variance": (count, absmax(x) ** 2 + absmax(p["moving_variance"]))}
    if gamma is not None:
        grads["gamma"] = dg
        bounds["gamma"] = (count, absmax(dy) * xhat_max)
    if beta is not None:
        grads["beta"] = db
        bounds["beta"] = (count, absmax(dy))
    return Ref(y, dx, grads, {"moving_mean": mm, "moving_variance": mv}, bounds)


# =========================================================================== cases
@dataclass(frozen=True)
class Case:
    id: str
    cls: type
    kwargs: dict
    shape: tuple                 # input shape, batch first
    ref: Callable
    training: bool = True
    data: str = "uniform"        # "uniform" in [-1, 1]; "distinct" (no max-pool ties);
    #                              "ties" (small integers)
    args: tuple = field(default=())

    def make(self, dtype):
        return self.cls(*self.args, dtype=np.dtype(dtype).name, **self.kwargs)


ACTS = R.ACTIVATIONS
CASES = (
    # Dense: every activation, no bias, N-D input
    [Case(f"dense_{a}", L.Dense, dict(activation=a), (4, 5), ref_dense, args=(3,))
     for a in ACTS]
    + [Case("dense_none", L.Dense, dict(activation=None), (3, 4), ref_dense, args=(2,)),
       Case("dense_nobias_relu", L.Dense, dict(activation="relu", use_bias=False), (4, 5),
            ref_dense, args=(3,)),
       Case("dense_nobias_tanh", L.Dense, dict(activation="tanh", use_bias=False), (4, 5),
            ref_dense, args=(3,)),
       Case("dense_3d_relu", L.Dense, dict(activation="relu"), (2, 3, 5), ref_dense,
            args=(4,)),
       Case("dense_3d_softmax", L.Dense, dict(activation="softmax"), (2, 3, 5), ref_dense,
            args=(4,)),
       # Conv2D
       Case("conv_valid", L.Conv2D, dict(kernel_size=3), (2, 6, 5, 3), ref_conv, args=(4,)),
       Case("conv_same_s2_relu", L.Conv2D, dict(kernel_size=3, strides=2, padding="same",
                                                activation="relu"), (2, 7, 6, 2), ref_conv,
            args=(3,)),
       Case("conv_dil2_tanh", L.Conv2D, dict(kernel_size=(2, 3), dilation_rate=2,
                                             activation="tanh"), (2, 7, 8, 2), ref_conv,
            args=(3,)),
       Case("conv_same_dil2_sigmoid", L.Conv2D, dict(kernel_size=3, dilation_rate=(2, 1),
                                                     padding="same", activation="sigmoid"),
            (2, 6, 5, 2), ref_conv, args=(3,)),
       Case("conv_s21_softmax", L.Conv2D, dict(kernel_size=(3, 2), strides=(2, 1),
                                               activation="softmax"), (2, 7, 5, 2), ref_conv,
            args=(4,)),
       Case("conv_nobias_elu", L.Conv2D, dict(kernel_size=2, use_bias=False,
                                              activation="elu"), (2, 5, 4, 3), ref_conv,
            args=(2,)),
       Case("conv_cf_valid", L.Conv2D, dict(kernel_size=3, data_format="channels_first"),
            (2, 3, 6, 5), ref_conv, args=(4,)),
       Case("conv_cf_same_s2_relu", L.Conv2D, dict(kernel_size=3, strides=(2, 1),
                                                   padding="same", activation="relu",
                                                   data_format="channels_first"),
            (2, 2, 7, 6), ref_conv, args=(3,)),
       Case("conv_cf_dil2_leaky_nobias", L.Conv2D, dict(kernel_size=2, dilation_rate=2,
                                                        activation="leaky_relu",
                                                        use_bias=False,
                                                        data_format="channels_first"),
            (2, 3, 6, 6), ref_conv, args=(2,)),
       # pooling
       Case("maxpool_2", L.MaxPooling2D, {}, (2, 6, 6, 3), ref_maxpool, data="distinct"),
       Case("maxpool_3_s2_same", L.MaxPooling2D, dict(pool_size=3, strides=2, padding="same"),
            (2, 7, 5, 2), ref_maxpool, data="distinct"),
       Case("maxpool_2_same_odd", L.MaxPooling2D, dict(pool_size=2, padding="same"),
            (2, 5, 5, 2), ref_maxpool, data="distinct"),
       Case("maxpool_cf_23_s1", L.MaxPooling2D, dict(pool_size=(2, 3), strides=1,
                                                    data_format="channels_first"),
            (2, 3, 5, 6), ref_maxpool, data="distinct"),
       Case("avgpool_2", L.AveragePooling2D, {}, (2, 6, 6, 3), ref_avgpool),
       Case("avgpool_3_s2_same", L.AveragePooling2D, dict(pool_size=3, strides=2,
                                                         padding="same"),
            (2, 7, 5, 2), ref_avgpool),
       Case("avgpool_3_s1_same", L.AveragePooling2D, dict(pool_size=3, strides=1,
                                                         padding="same"),
            (2, 5, 4, 2), ref_avgpool),
       Case("avgpool_cf_same", L.AveragePooling2D, dict(pool_size=2, padding="same",
                                                       data_format="channels_first"),
            (2, 3, 5, 5), ref_avgpool),
       Case("gap", L.GlobalAveragePooling2D, {}, (2, 4, 5, 3), ref_gap),
       Case("gap_keepdims", L.GlobalAveragePooling2D, dict(keepdims=True), (2, 4, 5, 3),
            ref_gap),
       Case("gap_cf", L.GlobalAveragePooling2D, dict(data_format="channels_first"),
            (2, 3, 4, 5), ref_gap),
       Case("gap_cf_keepdims", L.GlobalAveragePooling2D,
            dict(data_format="channels_first", keepdims=True), (2, 3, 4, 5), ref_gap),
       Case("gmp", L.GlobalMaxPooling2D, {}, (2, 4, 5, 3), ref_gmp, data="distinct"),
       Case("gmp_ties_keepdims", L.GlobalMaxPooling2D, dict(keepdims=True), (2, 4, 5, 3),
            ref_gmp, data="ties"),
       Case("gmp_cf", L.GlobalMaxPooling2D, dict(data_format="channels_first"),
            (2, 3, 4, 5), ref_gmp, data="ties"),
       # reshaping, dropout at inference
       Case("flatten_4d", L.Flatten, {}, (2, 3, 4, 2), ref_flatten),
       Case("flatten_cf", L.Flatten, dict(data_format="channels_first"), (2, 3, 4, 2),
            ref_flatten),
       Case("flatten_cf_3d", L.Flatten, dict(data_format="channels_first"), (2, 3, 4),
            ref_flatten),
       Case("flatten_2d", L.Flatten, {}, (3, 5), ref_flatten),
       Case("dropout_inference", L.Dropout, {}, (3, 5), ref_identity, training=False,
            args=(0.5,)),
       Case("dropout_rate0_training", L.Dropout, {}, (3, 5), ref_identity, args=(0.0,)),
       ]
    # Activation layer: every activation
    + [Case(f"activation_{a}", L.Activation, dict(activation=a), (4, 6), ref_activation)
       for a in ACTS]
    + [Case("relu_layer", L.ReLU, {}, (4, 6), ref_relu_layer),
       Case("relu_layer_max", L.ReLU, dict(max_value=0.5), (4, 6), ref_relu_layer),
       Case("relu_layer_slope_thr", L.ReLU, dict(negative_slope=0.1, threshold=0.2), (4, 6),
            ref_relu_layer),
       Case("relu_layer_all", L.ReLU, dict(max_value=0.6, negative_slope=0.3,
                                           threshold=-0.1), (3, 2, 4), ref_relu_layer),
       Case("softmax_layer", L.Softmax, {}, (4, 6), ref_softmax_layer),
       Case("softmax_layer_axis1", L.Softmax, dict(axis=1), (2, 5, 3), ref_softmax_layer),
       # BatchNormalization
       Case("bn_2d", L.BatchNormalization, {}, (6, 4), ref_batchnorm),
       Case("bn_4d", L.BatchNormalization, {}, (3, 4, 3, 2), ref_batchnorm),
       Case("bn_4d_cf", L.BatchNormalization, dict(axis=1, momentum=0.9, epsilon=1e-2),
            (3, 2, 4, 3), ref_batchnorm),
       Case("bn_3d_axis1", L.BatchNormalization, dict(axis=1), (3, 4, 5), ref_batchnorm),
       Case("bn_no_center_scale", L.BatchNormalization, dict(center=False, scale=False),
            (3, 4, 3, 2), ref_batchnorm),
       Case("bn_4d_inference", L.BatchNormalization, {}, (3, 4, 3, 2), ref_batchnorm,
            training=False),
       Case("bn_cf_inference", L.BatchNormalization, dict(axis=1), (3, 2, 4, 3),
            ref_batchnorm, training=False),
       ])
CASE_IDS = [c.id for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS)


def _weight_values(name, shape, rng):
    lo, hi = {"gamma": (0.5, 1.5), "moving_variance": (0.5, 1.5), "beta": (-0.5, 0.5),
              "moving_mean": (-0.5, 0.5), "bias": (-0.5, 0.5)}.get(name, (-1.0, 1.0))
    return rng.uniform(lo, hi, size=shape)


def _input(case, dtype, rng, shape=None):
    shape = case.shape if shape is None else shape
    if case.data == "distinct":
        return distinct(rng, shape, dtype)
    if case.data == "ties":                      # small integers: many equal maxima
        return rng.integers(-2, 3, shape).astype(dtype)
    return rand(rng, shape, dtype)


def _build(case, dtype, rng):
    """The layer, built for ``case.shape`` with random weights of ``dtype``."""
    layer = case.make(dtype)
    layer.build((None,) + tuple(case.shape[1:]))
    named = list(itertools.chain(layer.params.items(), layer.state.items()))
    layer.set_weights([_weight_values(k, w.shape, rng).astype(dtype) for k, w in named])
    return layer


def _weights64(layer):
    return {k: w.astype(np.float64) for k, w in
            itertools.chain(layer.params.items(), layer.state.items())}


# =========================================================================== the reference itself
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("geom", [
    dict(size=(3, 3), strides=1, padding="valid", dil=1),
    dict(size=(3, 2), strides=(2, 1), padding="same", dil=1),
    dict(size=(2, 3), strides=2, padding="same", dil=(2, 1)),
    dict(size=(3, 3), strides=(1, 2), padding="valid", dil=2),
], ids=lambda g: f"{g['size']}s{g['strides']}{g['padding']}d{g['dil']}")
def test_reference_windows_match_naive_loops(geom, data_format):
    """reference_model's convolution and pooling equal the direct loops of _naive.py."""
    rng = _rng("naive", repr(geom), data_format)
    layout = "NHWC" if data_format == "channels_last" else "NCHW"
    shp = (2, 7, 6, 3) if layout == "NHWC" else (2, 3, 7, 6)
    x = distinct(rng, shp, np.float64)
    w = rng.uniform(-1, 1, size=geom["size"] + (3, 4))
    b = rng.uniform(-1, 1, size=4)
    w_naive = w if layout == "NHWC" else w.transpose(3, 2, 0, 1)
    got = R.conv2d_forward(x, w, b, geom["strides"], geom["padding"], geom["dil"], data_format)
    want = _naive.conv2d(x, w_naive, b, stride=geom["strides"], padding=geom["padding"],
                         dilation=geom["dil"], layout=layout)
    assert_close(got, want, k=geom["size"][0] * geom["size"][1] * 3 + 1,
                 scale=absmax(x) * absmax(w) + absmax(b), what="conv")
    got = R.maxpool2d_forward(x, geom["size"], geom["strides"], geom["padding"], data_format)
    want, _ = _naive.maxpool2d(x, geom["size"], stride=geom["strides"], padding=geom["padding"],
                               layout=layout)
    np.testing.assert_array_equal(got, want)
    got = R.avgpool2d_forward(x, geom["size"], geom["strides"], geom["padding"], data_format)
    want = _naive.avgpool2d(x, geom["size"], stride=geom["strides"], padding=geom["padding"],
                            layout=layout)
    assert_close(got, want, k=geom["size"][0] * geom["size"][1], scale=absmax(x),
                 what="avgpool")


def _fd_close(analytic, numeric, what):
    fd = TOLERANCES["finite_difference"]
    atol = fd["atol"] * max(1.0, float(np.max(np.abs(numeric), initial=0.0)))
    np.testing.assert_allclose(analytic, numeric, rtol=fd["rtol"], atol=atol, err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_reference_backward_matches_finite_differences(case):
    """The reference's own backward equals central differences of its own forward, for
    the input and every parameter (so the oracle is right before anything is compared with
    it)."""
    if case.data == "ties":
        pytest.skip("a maximum over ties has no derivative: the loop reference is the oracle")
    rng = _rng("refgrad", case.id)
    layer = _build(case, np.float64, rng)
    p = _weights64(layer)
    x = _input(case, np.float64, rng)
    y = case.ref(case.kwargs, p, x, None, case.training)
    dy = rng.uniform(-1, 1, size=y.shape)
    ref = case.ref(case.kwargs, p, x, dy, case.training)
    np.testing.assert_array_equal(ref.y, y)

    def loss():
        return float(np.sum(dy * case.ref(case.kwargs, p, x, None, case.training)))

    step = TOLERANCES["finite_difference"]["step"]
    _fd_close(ref.dx, R.numerical_gradient(loss, x, step), f"{case.id} dx")
    assert set(ref.grads) == set(layer.params), "the reference covers every parameter"
    for name in ref.grads:
        _fd_close(ref.grads[name], R.numerical_gradient(loss, p[name], step),
                  f"{case.id} d{name}")


# =========================================================================== layers vs reference
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_layer_matches_reference(backend, case, dtype):
    rng = _rng("layer", case.id, np.dtype(dtype).name)
    layer = _build(case, dtype, rng)
    p = _weights64(layer)                    # before forward: BN updates its state there
    x = _input(case, dtype, rng)
    y = layer.forward(x, training=case.training)
    dy = rand(rng, y.shape, dtype)
    dx = layer.backward(dy)
    ref = case.ref(case.kwargs, p, x.astype(np.float64), dy.astype(np.float64),
                   case.training)
    what = f"{case.id} [{backend}, {np.dtype(dtype).name}]"

    def check(actual, expected, key):
        k, scale = ref.bounds[key]
        assert_close(actual, expected.astype(dtype), k=k, scale=scale, what=f"{what} {key}")

    check(y, ref.y, "y")
    check(dx, ref.dx, "dx")
    assert list(ref.grads) == list(layer.params), f"{what}: parameters {list(layer.params)}"
    for name in layer.params:
        check(layer.grads[name], ref.grads[name], name)
    for name in ref.state:
        check(layer.state[name], ref.state[name], name)
    if not ref.state:
        for name, w in layer.state.items():   # untouched (e.g. BN at inference)
            assert_same(w, p[name].astype(dtype), what=f"{what} state {name}")


# =========================================================================== protocol
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_protocol_shapes_and_weights(case):
    rng = _rng("proto", case.id)
    layer = _build(case, np.float32, rng)
    batchless = (None,) + tuple(case.shape[1:])
    assert layer.built and layer.input_shape == batchless
    x = _input(case, np.float32, rng)
    y = layer.forward(x, training=case.training)
    assert layer.compute_output_shape(batchless) == (None,) + y.shape[1:]
    assert layer.compute_output_shape(tuple(case.shape)) == y.shape
    assert layer.output_shape == (None,) + y.shape[1:]
    assert list(layer.params) == list(layer.grads), "params and grads: same keys, same order"
    for k in layer.params:
        assert layer.params[k].shape == layer.grads[k].shape, k
        assert layer.params[k].dtype == layer.grads[k].dtype == np.float32, k
    for w in layer.state.values():
        assert w.dtype == np.float32
    weights = layer.get_weights()
    assert len(weights) == len(layer.params) + len(layer.state)
    assert layer.count_params() == sum(w.size for w in weights)
    dx = layer.backward(rand(rng, y.shape, np.float32))
    assert dx.shape == x.shape and dx.dtype == np.float32


@pytest.mark.parametrize("make, pattern", [
    (lambda: L.Dense(3, kernel_initializer="nope"),
     r"Unknown initializer 'nope'.* \(kernel_initializer='nope'\)"),
    (lambda: L.Conv2D(4, 3, bias_regularizer="l3"),
     r"Unknown regularizer 'l3'.* \(bias_regularizer='l3'\)"),
    (lambda: L.BatchNormalization(gamma_initializer=5), r"\(gamma_initializer=5\)"),
    (lambda: L.Dense(3, kernel_regularizer=lambda w: 0.0),
     r"fastnn Regularizer \(with a gradient method\).* \(kernel_regularizer=<function"),
])
def test_initializer_and_regularizer_checked_when_created(make, pattern):
    """An unknown or unusable initializer or regularizer fails as the layer is created,
    naming the argument, as Keras does (it failed only at build: in add, or in fit for a
    model without an input shape)."""
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_config_round_trip(case):
    """get_config -> from_config gives an equal config (also through JSON, as a saved model
    does), and with the same weights the same output."""
    rng = _rng("config", case.id)
    layer = _build(case, np.float64, rng)
    cfg = layer.get_config()
    twin = type(layer).from_config(cfg)
    assert twin.get_config() == cfg
    via_json = L.get(type(layer).__name__, json.loads(json.dumps(cfg)))
    assert type(via_json) is type(layer)
    assert json.dumps(via_json.get_config(), sort_keys=True) == json.dumps(cfg, sort_keys=True)
    for other in (twin, via_json):
        other.build(layer.input_shape)
        other.set_weights(layer.get_weights())
        x = _input(case, np.float64, rng)
        training = case.training and not isinstance(layer, L.Dropout)
        assert_same(other.forward(x.copy(), training=training),
                    layer.forward(x.copy(), training=training), what=case.id)


def test_config_round_trip_with_regularizers_and_initializers():
    from fastnn import initializers, regularizers
    layer = L.Dense(3, activation="leaky_relu", kernel_regularizer=regularizers.L1L2(0.1, 0.2),
                    bias_regularizer="l2", kernel_initializer=initializers.HeNormal(seed=3),
                    input_dim=4, name="d")
    cfg = layer.get_config()
    twin = L.Dense.from_config(json.loads(json.dumps(cfg)))
    assert json.dumps(twin.get_config(), sort_keys=True) == json.dumps(cfg, sort_keys=True)
    twin.build((None, 4))
    w = np.ones((4, 3), np.float32)
    twin.set_weights([w, np.zeros(3, np.float32)])
    np.testing.assert_allclose(twin.regularization_loss(), 0.1 * 12 + 0.2 * 12,
                               **tolerance(np.float32, k=24, scale=0.2))
    conv = L.Conv2D(2, 3, kernel_regularizer="l1_l2", activation=fastnn.activations.ELU(0.5))
    twin = L.Conv2D.from_config(json.loads(json.dumps(conv.get_config())))
    assert twin.get_config() == conv.get_config()
    assert twin.activation.alpha == 0.5


def test_unknown_dimensions_in_built_shape(backend):
    """A layer built with None beyond the batch axis accepts any size there (it used to
    reject every input: "expects (None, None, 4), received (2, 3, 4)"); the known dimensions
    and the rank are still checked."""
    rng = _rng("nonedims")
    dense = L.Dense(3, activation="tanh", dtype="float64")
    dense.build((None, None, 4))
    assert dense.output_shape == (None, None, 3)
    kernel, bias = dense.get_weights()
    for shape in [(2, 3, 4), (5, 1, 4)]:
        x = rng.uniform(-1, 1, shape)
        want = R.dense_forward(x, kernel, bias, "tanh")
        assert_close(dense(x), want, k=5, scale=absmax(x) * absmax(kernel) + 1)
    for bad in [(2, 3, 5), (2, 4), (2, 1, 3, 4)]:
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            dense(np.zeros(bad))
    bn = L.BatchNormalization(dtype="float64")
    bn.build((None, None, 3))
    x = rng.uniform(-1, 1, (4, 5, 3))
    y, _, _ = R.batchnorm_forward(x, *bn.get_weights(), training=True)
    assert_close(bn(x, training=True), y, k=20, scale=10.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_batchnorm_not_trainable_runs_in_inference_mode(backend, dtype):
    """Keras: with trainable=False a BatchNormalization uses (and keeps) its moving
    statistics even in training, so a frozen BN does not drift while fine-tuning."""
    case = next(c for c in CASES if c.id == "bn_4d_inference")
    rng = _rng("bnfrozen", np.dtype(dtype).name)
    layer = _build(case, dtype, rng)
    layer.trainable = False
    p = _weights64(layer)
    x = rand(rng, case.shape, dtype)
    y = layer.forward(x, training=True)
    dy = rand(rng, y.shape, dtype)
    dx = layer.backward(dy)
    ref = ref_batchnorm(case.kwargs, p, x.astype(np.float64), dy.astype(np.float64), False)
    assert_close(y, ref.y.astype(dtype), k=ref.bounds["y"][0], scale=ref.bounds["y"][1])
    assert_close(dx, ref.dx.astype(dtype), k=ref.bounds["dx"][0], scale=ref.bounds["dx"][1])
    for name in layer.state:
        assert_same(layer.state[name], p[name].astype(dtype), what=f"{name} updated")
    assert layer.trainable_params == {}


# =========================================================================== dropout
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_dropout_training_scales_kept_and_reuses_mask(backend, dtype):
    rate = 0.3
    rng = _rng("dropout", np.dtype(dtype).name)
    layer = L.Dropout(rate, seed=5, dtype=np.dtype(dtype).name)
    x = rand(rng, (200, 50), dtype, 0.5, 1.5)          # nonzero: a zero output means dropped
    y = layer(x, training=True)
    assert y.dtype == x.dtype and y.shape == x.shape
    keep = y != 0
    assert_close(y, R.dropout_forward(x, keep, rate).astype(dtype), what="dropout y")
    dropped = 1 - keep.mean()
    sigma = np.sqrt(rate * (1 - rate) / x.size)
    assert abs(dropped - rate) < 5 * sigma, f"dropped fraction {dropped}, rate {rate}"
    dy = rand(rng, x.shape, dtype)
    assert_close(layer.backward(dy), R.dropout_backward(dy, keep, rate).astype(dtype),
                 what="dropout dx: the forward's mask")
    # a new mask on the next step
    y2 = layer(x, training=True)
    assert not np.array_equal(y2 != 0, keep)
    # inference: the identity, and backward passes the gradient through
    assert_same(layer(x, training=False), x)
    assert_same(layer.backward(dy), dy)


def test_dropout_seed_and_noise_shape():
    x = np.ones((4, 6, 5), np.float32)
    a = L.Dropout(0.5, seed=11)(x, training=True)
    b = L.Dropout(0.5, seed=11)(x, training=True)
    assert_same(a, b, what="same seed, same mask")
    layer = L.Dropout(0.5, noise_shape=(None, 1, 5), seed=2)
    y = layer(x, training=True)
    assert np.all(y == y[:, :1, :]), "mask broadcast along the noise_shape 1 axis"
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0 < (y == 0).mean() < 1
    dx = layer.backward(np.ones_like(x))
    assert_same(dx, y, what="backward applies the broadcast mask")


def test_dropout_own_output_fed_back_in():
    # the training output is a reused buffer: fed back in by hand, it is read before the
    # next mask overwrites it (a copy), as from any other array
    x = np.ones((4, 6), np.float32)
    layer, twin = L.Dropout(0.5, seed=3), L.Dropout(0.5, seed=3)
    y = layer(x, training=True)
    want = twin(twin(x, training=True).copy(), training=True)
    assert_same(layer(y, training=True), want, what="own output fed back in")


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, True, "0.5", None, float("nan")])
def test_dropout_rate_bounds(rate):
    with pytest.raises((ValueError, TypeError), match="rate"):
        L.Dropout(rate)


def test_dropout_rate_edges_accepted():
    x = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    assert_same(L.Dropout(0.0)(x, training=True), x)
    for rate in (np.float32(0.25), np.float64(0.25), np.int64(0)):   # NumPy scalars too
        assert L.Dropout(rate).rate == 0.25 * (rate != 0)
    with pytest.raises(ValueError, match="rate"):
        L.Dropout(np.float32(1.0))
    x = np.arange(1, 5001, dtype=np.float32).reshape(50, 100)
    y = L.Dropout(0.999, seed=0)(x, training=True)
    kept = y != 0
    assert 0 < kept.sum() < 50
    assert_close(y[kept], x[kept] * np.float32(1000), what="rate 0.999 scales by 1000")


# =========================================================================== buffers across steps
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_results_held_across_steps(backend, case):
    """A second step with the same batch shape. The layer protocol (fastnn.layers.base,
    "Buffers") lets a layer reuse its output and input-gradient arrays from one *training*
    step to the next; so: in inference mode the first step's output is unchanged, in
    training mode it is either unchanged or (a view of) the buffer the second step returned; the caller's arrays (inputs, gradients) are never modified;
    params/grads are the same arrays updated in place; and the second step's results are
    those of that batch alone."""
    rng = _rng("steps", case.id)
    dtype = np.float64
    layer = _build(case, dtype, rng)
    twin = _build(case, dtype, _rng("steps", case.id))       # same weights
    param_ids = {k: id(v) for k, v in layer.params.items()}
    grad_ids = {k: id(v) for k, v in layer.grads.items()}
    x1, x2 = _input(case, dtype, rng), _input(case, dtype, rng)
    y1 = layer.forward(x1, training=case.training)
    dy1 = rand(rng, y1.shape, dtype)
    dx1 = layer.backward(dy1)
    held = [a.copy() for a in (x1, y1, dy1, dx1)]
    grads1 = {k: g.copy() for k, g in layer.grads.items()}
    x2_copy = x2.copy()
    y2 = layer.forward(x2, training=case.training)
    dy2 = rand(rng, y2.shape, dtype)
    dy2_copy = dy2.copy()
    dx2 = layer.backward(dy2)
    for a, b, name, later in zip((x1, y1, dy1, dx1), held, ("x1", "y1", "dy1", "dx1"),
                                 (None, y2, None, dx2)):
        reused = later is not None and np.shares_memory(a, later)
        if name == "y1" and not case.training:
            reused = False                  # inference outputs are always new arrays
        if not reused:
            assert_same(a, b, what=f"{case.id}: {name} changed by the next step")
    assert_same(x2, x2_copy, what="forward modified its input")
    assert_same(dy2, dy2_copy, what="backward modified its gradient")
    assert {k: id(v) for k, v in layer.params.items()} == param_ids
    assert {k: id(v) for k, v in layer.grads.items()} == grad_ids
    # step 2's results are those of a twin that only saw batch 2 (BN in training: the
    # moving statistics differ, which training-mode outputs do not use)
    ty = twin.forward(x2, training=case.training)
    tdx = twin.backward(dy2)
    assert_same(y2, ty, what=f"{case.id} y2")
    assert_same(dx2, tdx, what=f"{case.id} dx2")
    for k in layer.grads:
        assert_same(layer.grads[k], twin.grads[k], what=f"{case.id} grad {k} accumulated")
        if grads1[k].size and not np.array_equal(x1, x2):
            assert not np.array_equal(grads1[k], layer.grads[k])


# =========================================================================== bad input
def _built(layer, shape):
    layer.build((None,) + shape)
    return layer


@pytest.mark.parametrize("make,shape,bad", [
    (lambda: L.Dense(3), (5,), (2, 4)),
    (lambda: L.Dense(3), (2, 5), (2, 3, 5)),
    (lambda: L.Conv2D(2, 3), (6, 6, 3), (2, 6, 6, 2)),
    (lambda: L.Conv2D(2, 3), (6, 6, 3), (2, 7, 6, 3)),
    (lambda: L.Conv2D(2, 3, data_format="channels_first"), (3, 6, 6), (2, 6, 6, 3)),
    (lambda: L.MaxPooling2D(), (6, 6, 3), (2, 6, 6, 4)),
    (lambda: L.AveragePooling2D(), (6, 6, 3), (2, 4, 6, 3)),
    (lambda: L.BatchNormalization(), (4, 4, 3), (2, 4, 4, 2)),
    (lambda: L.BatchNormalization(axis=1), (3, 4, 4), (2, 4, 4, 3)),
], ids=["dense", "dense3d", "conv_c", "conv_h", "conv_cf", "maxpool", "avgpool", "bn",
        "bn_cf"])
def test_wrong_input_shape_to_built_layer(make, shape, bad):
    layer = _built(make(), shape)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        layer(np.zeros(bad, np.float32))


@pytest.mark.parametrize("make,shape", [
    (lambda: L.Conv2D(2, 3), (None, 6, 3)),
    (lambda: L.MaxPooling2D(), (None, 6, 3)),
    (lambda: L.AveragePooling2D(), (None, 6, 6, 3, 1)),
    (lambda: L.GlobalAveragePooling2D(), (None, 6, 3)),
    (lambda: L.Dense(2), (None,)),
    (lambda: L.BatchNormalization(axis=0), (None, 4)),
    (lambda: L.BatchNormalization(axis=3), (None, 4, 2)),
], ids=["conv3d", "maxpool3d", "avgpool5d", "gap3d", "dense1d", "bn_axis0", "bn_axis3"])
def test_build_rejects_wrong_rank(make, shape):
    with pytest.raises(ValueError):
        make().build(shape)


@pytest.mark.parametrize("make", [
    lambda: L.Dense(3, activation="swish_typo"),
    lambda: L.Conv2D(3, 3, activation="Relu7"),
    lambda: L.Activation("gelu_nope"),
])
def test_unknown_activation_lists_valid_names(make):
    with pytest.raises(ValueError, match="valid names") as info:
        make()
    for name in R.ACTIVATIONS:
        assert name in str(info.value)


@pytest.mark.parametrize("make,arg", [
    (lambda: L.Dense(0), "units"), (lambda: L.Dense(-3), "units"),
    (lambda: L.Dense(2.5), "units"), (lambda: L.Dense("4"), "units"),
    (lambda: L.Dense(True), "units"), (lambda: L.Dense(None), "units"),
    (lambda: L.Conv2D(0, 3), "filters"), (lambda: L.Conv2D(-1, 3), "filters"),
    (lambda: L.Conv2D(1.0, 3), "filters"),
    (lambda: L.Conv2D(2, 0), "kernel_size"), (lambda: L.Conv2D(2, (3, -1)), "kernel_size"),
    (lambda: L.Conv2D(2, 3, strides=0), "strides"),
    (lambda: L.Conv2D(2, 3, dilation_rate=0), "dilation_rate"),
    (lambda: L.Conv2D(2, 3, padding="full"), "padding"),
    (lambda: L.Conv2D(2, 3, data_format="NHWC"), "data_format"),
    (lambda: L.MaxPooling2D(0), "pool_size"), (lambda: L.AveragePooling2D(2, strides=0),
                                               "strides"),
    (lambda: L.MaxPooling2D(padding=1), "padding"),
    (lambda: L.Flatten(data_format="cl"), "data_format"),
    (lambda: L.BatchNormalization(momentum=1.5), "momentum"),
    (lambda: L.BatchNormalization(epsilon=0), "epsilon"),
    (lambda: L.ReLU(max_value=-1), "max_value"),
    (lambda: L.ReLU(negative_slope=-0.1), "negative_slope"),
    (lambda: L.Dense(2, dtype="float16"), "dtype"),
    (lambda: L.Dense(2, unitz=3), "unitz"),
    (lambda: L.Dense(2, input_shape=(0, 3)), "input_shape"),
])
def test_bad_arguments_name_the_argument(make, arg):
    with pytest.raises((ValueError, TypeError), match=re.escape(arg)):
        make()


def test_non_numeric_input_rejected():
    with pytest.raises(TypeError, match="numeric"):
        L.Dense(2)(np.array([["a", "b"]]))


def test_unknown_layer_class_lists_known():
    with pytest.raises(ValueError, match="Conv3D") as info:
        L.get("Conv3D", {})
    for name in ("Dense", "Conv2D", "BatchNormalization", "Dropout"):
        assert name in str(info.value)


@pytest.mark.parametrize("make,shape", [
    (lambda: L.Conv2D(2, 3), (1, 6, 6, 3)), (lambda: L.Dense(3), (2, 4)),
    (lambda: L.Dense(3, activation="relu"), (2, 4)), (lambda: L.MaxPooling2D(), (1, 4, 4, 2)),
    (lambda: L.GlobalAveragePooling2D(), (1, 4, 4, 2)), (lambda: L.Flatten(), (1, 4, 4, 2)),
    (lambda: L.ReLU(), (2, 3)), (lambda: L.BatchNormalization(), (2, 3)),
    (lambda: L.GlobalMaxPooling2D(), (1, 4, 4, 2)),
], ids=["conv", "dense", "dense_relu", "maxpool", "gap", "flatten", "relu", "bn", "gmp"])
def test_backward_before_forward_says_so(make, shape):
    """backward(grad) with no forward pass cached names the cause, built or not (it was
    Python's bare "object has no attribute '_y'")."""
    for built in (False, True):
        layer = make()
        if built:
            layer.build((None,) + shape[1:])
        with pytest.raises(AttributeError, match=r"forward\(x, training=True\) sets it for "
                                                 r"backward, so call forward before"):
            layer.backward(np.ones(layer.compute_output_shape(shape), np.float32))
    with pytest.raises(AttributeError, match="object has no attribute 'unit'"):
        make().unit  # a public typo stays Python's own message


def test_input_takes_keras_arguments_in_keras_order():
    """keras.Input(shape, batch_size, dtype, sparse, batch_shape, name, ...): positional
    dtype is the third argument (it was name)."""
    a = L.Input((4,), 8, "float64")
    assert a.input_shape_arg == (4,) and a.batch_size == 8 and a.dtype == np.float64
    b = L.Input(batch_shape=(16, 28, 28, 1), name="pixels")
    assert b.input_shape_arg == (28, 28, 1) and b.batch_size == 16 and b.name == "pixels"
    assert L.Input((3,)).dtype == np.float32 and L.Input((3,)).batch_size is None
    with pytest.raises(ValueError, match="not both"):
        L.Input((3,), batch_shape=(2, 3))
    with pytest.raises(ValueError, match="batch_shape must be a tuple"):
        L.Input(batch_shape=(2,))
    with pytest.raises(ValueError, match="batch_size must be None or a positive int"):
        L.Input((3,), batch_size=0)
    with pytest.raises(TypeError, match="dtype"):
        L.Input((3,), None, "float16")


def test_missing_attribute_messages():
    """Only forward caches get the "call forward first" message; a property of a user's
    layer that fails shows its own AttributeError, and a typo Python's message."""

    class Scaled(L.Layer):
        @property
        def scale(self):
            return self._scale_factor * 2

    with pytest.raises(AttributeError, match="_scale_factor"):
        Scaled().scale
    with pytest.raises(AttributeError, match="'Scaled' object has no attribute '_nope'"):
        Scaled()._nope
    with pytest.raises(AttributeError, match="call forward before backward"):
        L.Dense(2)._y


def test_global_average_pooling_checks_its_input():
    g = L.GlobalAveragePooling2D()
    g.build((None, 5, 5, 3))
    with pytest.raises(ValueError, match=r"expects input of shape \(None, 5, 5, 3\), received "
                                         r"\(2, 4, 4, 2\)"):
        g(np.zeros((2, 4, 4, 2), np.float32))


def test_dropout_noise_shape_must_broadcast():
    d = L.Dropout(0.5, noise_shape=(None, 2, 5))
    with pytest.raises(ValueError, match=r"noise_shape \(None, 2, 5\) .* does not broadcast "
                                         r"to its input of shape \(4, 3, 5\)"):
        d.forward(np.ones((4, 3, 5), np.float32), training=True)
    y = L.Dropout(0.5, noise_shape=(None, 1, 5), seed=1).forward(np.ones((4, 3, 5)), True)
    assert (y == y[:, :1]).all()                       # one mask value along axis 1


def test_layer_set_weights_all_or_nothing_and_unbuilt_count():
    """Layer.set_weights checks every array before writing any (a bad second array left
    the kernel overwritten; a string array gave NumPy's message naming nothing);
    count_params of an unbuilt layer is an error, not 0 (as Keras); Flatten of an empty
    batch gives (0, features) (NumPy could not reshape size 0 with -1)."""
    d = L.Dense(3)
    with pytest.raises(ValueError, match="not built"):
        d.count_params()
    d.build((None, 2))
    kernel = d.get_weights()[0].copy()
    with pytest.raises(TypeError, match="weight 'bias' .* must be numeric.*no weight was set"):
        d.set_weights([kernel + 1, np.array(["a", "b", "c"])])
    np.testing.assert_array_equal(d.get_weights()[0], kernel)
    assert L.Flatten()(np.zeros((0, 3, 4), np.float32)).shape == (0, 12)


@pytest.mark.parametrize("make,exc,name", [
    (lambda: L.BatchNormalization(epsilon=float("nan")), ValueError, "epsilon"),
    (lambda: L.BatchNormalization(momentum=None), TypeError, "momentum"),
    (lambda: L.BatchNormalization(momentum="x"), TypeError, "momentum"),
    (lambda: L.BatchNormalization(center="yes"), TypeError, "center"),
    (lambda: L.ReLU(negative_slope=float("nan")), ValueError, "negative_slope"),
    (lambda: L.ReLU(max_value="6"), TypeError, "max_value"),
    (lambda: L.ReLU(threshold=None), TypeError, "threshold"),
    (lambda: L.Dropout(0.5, noise_shape=5), ValueError, "noise_shape"),
    (lambda: L.Softmax(axis=None), TypeError, "axis"),
])
def test_layer_arguments_checked_by_name(make, exc, name):
    """Arguments that were taken silently (NaN: every output NaN) or failed with Python's
    unnamed TypeError ('int' object is not iterable, float(None)) name themselves."""
    with pytest.raises(exc, match=name):
        make()


def test_unknown_sizes_in_output_shapes():
    """None (unknown) heights and widths give None output sizes, as in Keras: a Conv2D
    built so runs on any image size (they were read as 1: "kernel larger than the padded
    input"; Flatten multiplied None); an unknown channel count is refused by name."""
    assert L.Conv2D(4, 3).compute_output_shape((None, None, None, 2)) == (None, None, None, 4)
    assert L.Conv2D(4, 3, strides=2, padding="same").compute_output_shape(
        (None, None, 9, 2)) == (None, None, 5, 4)
    assert L.MaxPooling2D(2).compute_output_shape((None, None, None, 3)) == \
        (None, None, None, 3)
    assert L.Flatten().compute_output_shape((None, None, 3)) == (None, None)
    conv = L.Conv2D(4, 3)
    conv.build((None, None, None, 2))
    assert conv(np.ones((1, 5, 6, 2), np.float32)).shape == (1, 3, 4, 4)
    assert conv(np.ones((2, 7, 7, 2), np.float32)).shape == (2, 5, 5, 4)
    with pytest.raises(ValueError, match="known channel"):
        L.Conv2D(4, 3).build((None, 5, 5, None))
    with pytest.raises(ValueError, match="known size along axis"):
        L.BatchNormalization().build((None, 5, None))


def test_keras_3_layer_configs_load():
    """A Keras 3 layer config loads: its dtype as a DTypePolicy dict (was NumPy's 'entry
    not a 2- or 3- tuple'), Keras's arguments fastnn lacks at their no-effect values
    (constraints None, groups 1, ...; each was a TypeError), InputLayer's batch_shape (was
    'Input needs shape='); other values are refused by name, as is a dtype fastnn does not
    compute in ('mixed_float16' passed: NumPy compares None equal to float64)."""
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float64"},
              "registered_name": None}
    dense = L.Dense.from_config({
        "name": "d", "trainable": True, "dtype": policy, "units": 4, "activation": "relu",
        "use_bias": True, "kernel_initializer": "glorot_uniform", "bias_initializer": "zeros",
        "kernel_regularizer": None, "bias_regularizer": None, "kernel_constraint": None,
        "bias_constraint": None, "activity_regularizer": None, "quantization_config": None})
    assert dense.units == 4 and dense.dtype == np.float64
    conv = L.Conv2D.from_config({"filters": 2, "kernel_size": 3, "groups": 1,
                                 "kernel_constraint": None})
    assert conv.filters == 2
    bn = L.BatchNormalization.from_config({"renorm": False, "synchronized": False,
                                           "gamma_constraint": None})
    assert bn.momentum == 0.99
    inp = L.InputLayer.from_config({"batch_shape": [None, 3], "dtype": "float32",
                                    "sparse": False, "ragged": False, "name": "in",
                                    "optional": False})
    assert inp.get_config()["shape"] == [3]
    with pytest.raises(ValueError, match="'kernel_constraint'"):
        L.Dense.from_config({"units": 4, "kernel_constraint": "non_neg"})
    assert L.Conv2D.from_config({"filters": 2, "kernel_size": 3, "groups": 2}).groups == 2
    with pytest.raises(TypeError, match="dtype must be"):
        L.Dense(4, dtype="mixed_float16")
    with pytest.raises(ValueError, match="not two different"):
        L.InputLayer((3,), input_shape=(4,))


@pytest.mark.parametrize("make", [lambda: L.Dense(4, activation="relu"),
                                  lambda: L.Dense(4, activation="tanh"),
                                  lambda: L.Conv2D(3, 3, padding="same", activation="relu"),
                                  lambda: L.MaxPooling2D(3, strides=1, padding="same"),
                                  lambda: L.AveragePooling2D(3, strides=1, padding="same")])
def test_own_output_fed_back_in_is_not_overwritten(make):
    """A layer's training output lives in a reused work array; fed back into the same
    layer by hand, the next forward overwrote the input it keeps for backward, and the
    kernel gradient came out wrong (off by 3.9; found by a review), and a pooling layer
    refused it (its output overlapping its input). The input is copied then, so the
    results equal those of feeding a copy."""
    rng = np.random.default_rng(0)
    shape = (5, 4) if "Dense" in repr(make()) else (2, 5, 5, 3)
    x = rng.standard_normal(shape).astype(np.float32)
    out = []
    for copy in (False, True):
        fastnn.utils.set_random_seed(0)
        layer = make()
        layer.build((None,) + shape[1:])
        h = layer.forward(x, training=True)
        h2 = layer.forward(h.copy() if copy else h, training=True)
        dx = layer.backward(np.ones_like(h2)).copy()
        out.append((h2.copy(), dx) + tuple(g.copy() for g in layer.grads.values()))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("activation", [None, "relu"])
def test_own_input_gradient_fed_back_into_backward(activation):
    """A Conv2D's input gradient lives in a reused work array; fed back into the same
    layer's backward (input and output shapes equal), it is read before being written: a
    linear Conv2D, which hands its output gradient straight to the convolution's backward,
    gives what a copy gives (it refused the overlap)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    g = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    out = []
    for copy in (False, True):
        fastnn.utils.set_random_seed(0)
        layer = L.Conv2D(3, 3, padding="same", activation=activation)
        layer.build((None,) + x.shape[1:])
        layer.forward(x, training=True)
        d = layer.backward(g)
        d2 = layer.backward(d.copy() if copy else d).copy()
        out.append((d2,) + tuple(v.copy() for v in layer.grads.values()))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def test_dense_and_conv_forward_cast_their_input():
    """Layer by layer, a float64 or big-endian input to a float32 Dense or Conv2D was an
    error naming matmul's arguments ('b has dtype float32 but a has dtype float64'); it is
    cast to the layer's dtype, as Keras does (fit and predict already cast)."""
    rng = np.random.default_rng(1)
    for layer, shape in ((L.Dense(3, activation="relu"), (2, 4)),
                         (L.Conv2D(2, 3, activation="relu"), (1, 5, 5, 2))):
        layer.build((None,) + shape[1:])
        x = rng.standard_normal(shape)
        want = layer.forward(x.astype(np.float32)).copy()
        for variant in (x, x.astype(">f4"), x.astype(">f8")):
            got = layer.forward(variant)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)


def test_global_max_pooling_matches_keras():
    """GlobalMaxPooling2D against Keras 3.15.1 (TensorFlow 2.21; values computed there and
    written here): the maximum per channel, the gradient shared equally among tied maxima,
    NaN propagating (a channel whose maximum is NaN gets NaN everywhere, as TensorFlow's
    reduce_max gradient gives), the Keras config loading."""
    x = np.array([[[[1., 5.], [3., 5.]], [[3., -np.inf], [2., np.nan]]]], np.float32)
    layer = L.GlobalMaxPooling2D()
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, [[3.0, np.nan]])
    dx = layer.backward(np.array([[1.0, 2.0]], np.float32))
    np.testing.assert_array_equal(dx[..., 0], [[[0.0, 0.5], [0.5, 0.0]]])
    assert np.isnan(dx[..., 1]).all() and dx.dtype == np.float32
    keras_cfg = {"name": "global_max_pooling2d", "trainable": True,
                 "dtype": {"module": "keras", "class_name": "DTypePolicy",
                           "config": {"name": "float32"}, "registered_name": None},
                 "data_format": "channels_first", "keepdims": True}
    again = L.get("GlobalMaxPooling2D", keras_cfg)
    assert type(again) is L.GlobalMaxPooling2D and again.keepdims
    assert again.compute_output_shape((None, 3, 4, 5)) == (None, 3, 1, 1)
    assert L.GlobalMaxPool2D is L.GlobalMaxPooling2D


def _grouped_conv_naive(x, kernel, bias, groups, stride):
    """A grouped 'valid' convolution of an NHWC batch by loops: filter f sees the channels
    of its group only."""
    n, h, w, c = x.shape
    kh, kw, cg, f = kernel.shape
    fg = f // groups
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    y = np.zeros((n, oh, ow, f))
    for i in range(n):
        for r in range(oh):
            for q in range(ow):
                for o in range(f):
                    c0 = (o // fg) * cg
                    patch = x[i, r * stride:r * stride + kh, q * stride:q * stride + kw,
                              c0:c0 + cg]
                    y[i, r, q, o] = np.sum(patch * kernel[..., o]) + (
                        0.0 if bias is None else bias[o])
    return y


@pytest.mark.parametrize("groups, filters, stride, data_format", [
    (2, 6, 1, None), (4, 4, 2, None), (3, 3, 1, "channels_first"), (2, 4, 2, "channels_first")])
def test_grouped_conv2d(backend, groups, filters, stride, data_format):
    """Conv2D(groups=...), Keras's grouped convolution (accepted at 1 only before): the
    forward against loops, the gradients against the layer's own finite differences in
    float64 (tests/test_gradcheck.py has it in a model), the kernel's shape (KH, KW,
    C / groups, filters), the config, and the argument checks. (Checked against Keras
    3.15.1 too: forward and every gradient within 5e-15 in float64, three configurations,
    both data formats, each backend.)"""
    rng = np.random.default_rng(groups * 10 + filters)
    c = 12 // 4 * groups if groups != 3 else 6
    x = rng.standard_normal((2, 6, 7, c))
    layer = L.Conv2D(filters, 3, strides=stride, groups=groups, dtype="float64",
                     data_format=data_format)
    xin = x if data_format is None else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    layer.build((None,) + xin.shape[1:])
    assert layer.kernel.shape == (3, 3, c // groups, filters)
    layer.set_weights([rng.standard_normal(layer.kernel.shape), rng.standard_normal(filters)])
    y = layer.forward(xin, training=True)
    want = _grouped_conv_naive(x, layer.kernel, layer.bias, groups, stride)
    if data_format is not None:
        want = want.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g).copy()
    grads = {k: v.copy() for k, v in layer.grads.items()}

    def loss():
        return float(np.sum(g * layer.forward(xin, training=False)))
    step = 1e-6
    for arr, analytic in ((xin, dx), (layer.kernel, grads["kernel"]),
                          (layer.bias, grads["bias"])):
        flat, numeric = arr.reshape(-1), np.empty(arr.size)
        for i in range(arr.size):
            keep = flat[i]
            flat[i] = keep + step
            up = loss()
            flat[i] = keep - step
            numeric[i] = (up - loss()) / (2 * step)
            flat[i] = keep
        np.testing.assert_allclose(analytic.reshape(-1), numeric, rtol=1e-6, atol=1e-6)
    again = L.Conv2D.from_config(layer.get_config())
    assert again.groups == groups
    with pytest.raises(ValueError, match="evenly divisible by the number of groups"):
        L.Conv2D(5, 3, groups=2)
    with pytest.raises(ValueError, match="input channels must be evenly divisible"):
        L.Conv2D(4, 3, groups=4).build((None, 6, 6, 6))
    with pytest.raises(ValueError, match="groups must be a positive int"):
        L.Conv2D(4, 3, groups=0)


# ------------------------------------------------------------ review fixes (API vs Keras)
def test_default_names_follow_keras_snake_case():
    from fastnn.layers import ReLU, MaxPooling2D, BatchNormalization
    from fastnn.models import Sequential
    assert ReLU().name.startswith("re_lu")
    assert MaxPooling2D().name.startswith("max_pooling2d")
    assert BatchNormalization().name.startswith("batch_normalization")
    names = {Sequential().name for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("sequential") for n in names)


def test_sequential_build_needs_every_sample_dimension():
    """A model built on None dimensions could never run (its input check compared None
    with the sizes); 0, strings and floats were taken too."""
    from fastnn.layers import Dense, Input
    from fastnn.models import Sequential
    for shape, exc in (((None, None, 3), ValueError), ((None, 0), ValueError),
                       ((None, "3"), TypeError), ((None, 2.5), TypeError)):
        with pytest.raises(exc, match="input_shape"):
            Sequential([Dense(2)]).build(shape)
    with pytest.raises(ValueError, match="give every dimension after the batch axis"):
        Input(shape=(None, 3))
    model = Sequential([Dense(2)])
    model.build((None, 3))
    assert model.predict(np.ones((2, 3), np.float32), verbose=0).shape == (2, 2)


def test_dropout_noise_shape_of_the_wrong_rank():
    from fastnn.layers import Dropout
    with pytest.raises(ValueError, match="has 3 entries but its input has 2 axes"):
        Dropout(0.5, noise_shape=(None, None, None)).forward(np.ones((2, 3)), training=True)
    y = Dropout(0.5, noise_shape=(None, 1), seed=1).forward(np.ones((4, 3)), training=True)
    assert (np.ptp(y, axis=1) == 0).all()          # one draw per row


def test_layer_weights_properties_and_keras_add_weight():
    """Layers have Keras's weights / trainable_weights / non_trainable_weights (only the
    model had them), and add_weight takes Keras 3's keywords (name was required first)."""
    from fastnn.layers import BatchNormalization, Dense, Layer
    d = Dense(2)
    d.build((None, 3))
    assert [w.shape for w in d.weights] == [(3, 2), (2,)] and d.weights[0] is d.kernel
    assert len(d.trainable_weights) == 2 and d.non_trainable_weights == []
    d.trainable = False
    assert d.trainable_weights == [] and len(d.non_trainable_weights) == 2
    bn = BatchNormalization()
    bn.build((None, 4))
    assert len(bn.weights) == 4 and len(bn.non_trainable_weights) == 2

    class Scale(Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")
            self.u = self.add_weight(shape=(2, 2))          # glorot_uniform, as Keras
            super().build(input_shape)

    s = Scale()
    s.build((None, 3))
    assert list(s.params) == ["variable", "variable_1"]
    assert (s.w == 1).all() and 0 < np.abs(s.u).max() <= np.sqrt(6 / 4)
    with pytest.raises(TypeError, match="needs a shape"):
        s.add_weight(name="x")


def test_keras_signature_details():
    """Conv2D takes groups as Keras's 7th positional argument (it was activation); Keras
    arguments fastnn does not implement are taken at their no-effect values when passed
    directly, as from_config took them, and refused otherwise."""
    from fastnn.layers import BatchNormalization, Conv2D, Dense
    c = Conv2D(4, 3, 1, "same", None, 1, 2, "relu")
    assert c.groups == 2 and c.get_config()["activation"] == "relu"
    Dense(2, activity_regularizer=None, kernel_constraint=None, bias_constraint=None)
    BatchNormalization(gamma_regularizer=None, renorm=False)
    with pytest.raises(ValueError, match="activity_regularizer"):
        Dense(2, activity_regularizer="l2")
    with pytest.raises(TypeError, match="unexpected keyword"):
        Dense(2, no_such_argument=1)


def test_work_arrays_are_64_byte_aligned():
    """The arrays fastnn allocates for kernels to stream through (ops' results from 64 KB
    on; layers' reused work arrays, weights, gradients and the optimizers' slots always) start on a 64-byte boundary (NumPy's large
    arrays start 16 bytes past one, where 32-byte vector loads straddle cache lines);
    zeros when asked."""
    from fastnn.utils._arrays import MIN_BYTES, empty_aligned
    for shape in [(), (0,), 7, (3, 5), (128, 13, 13, 32)]:
        for dtype in (np.float32, np.float64, np.int64, np.uint8):
            for min_bytes in (0, MIN_BYTES):
                a = empty_aligned(shape, dtype, min_bytes=min_bytes)
                z = empty_aligned(shape, dtype, zeros=True, min_bytes=min_bytes)
                for arr in (a, z):
                    assert arr.shape == ((shape,) if isinstance(shape, int) else shape)
                    assert arr.dtype == dtype
                    assert arr.flags.c_contiguous and arr.flags.writeable
                    if arr.nbytes and arr.nbytes >= min_bytes:
                        assert arr.ctypes.data % 64 == 0, (shape, dtype, min_bytes)
                assert not z.any()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 18, 18, 8)).astype(np.float32)
    y = fastnn.ops.conv2d_forward(x, rng.standard_normal((3, 3, 8, 16)).astype(np.float32))
    assert y.nbytes >= MIN_BYTES and y.ctypes.data % 64 == 0
    layer = L.Conv2D(16, 3, activation="relu")
    layer.build((None, 18, 18, 8))
    h = layer.forward(x[:2], training=True)
    dx = layer.backward(np.ones_like(h))
    for arr in (h, dx, *layer._bufs.values(), *layer.params.values(), *layer.grads.values()):
        assert arr.ctypes.data % 64 == 0
    opt = fastnn.optimizers.Adam()
    opt.build(list(layer.params.values()))
    for slots in opt._slots.values():   # each slot kind: one array per parameter
        for slot in slots:
            assert slot.ctypes.data % 64 == 0
