"""Central finite-difference checks of whole small models built from fastnn layers and a
fastnn loss, in float64, on every backend.

Each model is chained by hand, the from-scratch usage the library promises
(:mod:`fastnn.layers.base`): forward through the layers in training mode, the loss (plus every
layer's regularization penalty), ``loss.gradient``, backward in reverse. The analytic gradient
of the total loss with respect to every parameter and to the input must equal central
differences of the same total loss (step and tolerances: the ``"finite_difference"`` entry of
conftest's TOLERANCES). Weights are random and nonzero (biases included) so that no input sits
on a kink (relu at 0, |w| at 0, max-pool ties) within the step.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import fastnn
from fastnn import layers as L
from fastnn import losses, regularizers
from conftest import TOLERANCES, absmax, assert_close, distinct, tolerance

import reference_model as R

FD = TOLERANCES["finite_difference"]
F64 = dict(dtype="float64")


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    """A finite-difference check calls the model hundreds of times on tiny arrays, where
    threads only add launch overhead (Numba's especially, on a busy machine). Results do not
    depend on the thread count (tests/test_threads.py checks that)."""
    fastnn.set_num_threads(1)


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _onehot(rng, n, k):
    return np.eye(k)[rng.integers(0, k, size=n)]


# =========================================================================== models
def dense_softmax_ce(rng):
    """Dense + relu + Dense + softmax, categorical cross-entropy on probabilities (the
    softmax backward, not the fused path)."""
    layers = [L.Dense(6, activation="relu", **F64), L.Dense(4, activation="softmax", **F64)]
    return layers, rng.uniform(-1, 1, (5, 5)), _onehot(rng, 5, 4), \
        losses.CategoricalCrossentropy()


def dense_logits_sparse_ce(rng):
    layers = [L.Dense(6, activation="tanh", **F64), L.Dense(4, **F64)]
    return layers, rng.uniform(-1, 1, (5, 3)), rng.integers(0, 4, size=5), \
        losses.SparseCategoricalCrossentropy(from_logits=True)


def dense_activation_softmax_layer(rng):
    """Softmax as its own layer after a linear Dense, categorical CE on probabilities."""
    layers = [L.Dense(5, activation="leaky_relu", **F64), L.Dense(3, **F64),
              L.Activation("softmax", **F64)]
    return layers, rng.uniform(-1, 1, (4, 4)), _onehot(rng, 4, 3), \
        losses.CategoricalCrossentropy()


def conv_stride2_maxpool_dense(rng):
    layers = [L.Conv2D(3, 3, strides=2, padding="same", activation="relu", **F64),
              L.MaxPooling2D(2, padding="same", **F64), L.Flatten(**F64), L.Dense(3, **F64)]
    return layers, distinct(rng, (2, 6, 6, 2), np.float64), _onehot(rng, 2, 3), \
        losses.CategoricalCrossentropy(from_logits=True)


def conv_avgpool_gap(rng):
    layers = [L.Conv2D(4, 3, activation="tanh", **F64),
              L.AveragePooling2D(3, strides=2, padding="same", **F64),
              L.GlobalAveragePooling2D(**F64)]
    return layers, rng.uniform(-1, 1, (2, 7, 6, 2)), rng.uniform(-1, 1, (2, 4)), \
        losses.MeanSquaredError()


def conv_bn_relu_maxpool(rng):
    """BatchNormalization in training mode inside a conv net (gradient through the batch
    statistics)."""
    layers = [L.Conv2D(3, 3, padding="same", use_bias=False, **F64),
              L.BatchNormalization(**F64), L.ReLU(**F64), L.MaxPooling2D(2, **F64),
              L.Flatten(**F64), L.Dense(3, activation="softmax", **F64)]
    return layers, rng.uniform(-1, 1, (2, 5, 5, 2)), _onehot(rng, 2, 3), \
        losses.CategoricalCrossentropy()


def conv_bn_channels_first(rng):
    """channels_first conv + BN(axis=1); the conv bias before BN must get a zero gradient."""
    layers = [L.Conv2D(3, 3, data_format="channels_first", **F64),
              L.BatchNormalization(axis=1, momentum=0.9, **F64), L.Activation("elu", **F64),
              L.GlobalAveragePooling2D(data_format="channels_first", **F64),
              L.Dense(2, activation="sigmoid", **F64)]
    return layers, rng.uniform(-1, 1, (2, 2, 5, 5)), rng.integers(0, 2, (2, 2)).astype(float), \
        losses.BinaryCrossentropy()


def dense_bn_mae(rng):
    """An odd batch: the bias gradient of MAE, a sum of signs over the batch, is not 0."""
    layers = [L.Dense(4, **F64), L.BatchNormalization(center=False, **F64), L.Dense(2, **F64)]
    return layers, rng.uniform(-1, 1, (5, 3)), rng.uniform(-1, 1, (5, 2)), \
        losses.MeanAbsoluteError()


def dense_regularized(rng):
    layers = [L.Dense(5, activation="elu", kernel_regularizer=regularizers.L2(0.05),
                      bias_regularizer=regularizers.L1(0.02), **F64),
              L.Dense(3, kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.03),
                      bias_regularizer="l1_l2", **F64)]
    return layers, rng.uniform(-1, 1, (4, 4)), rng.integers(0, 3, size=4), \
        losses.SparseCategoricalCrossentropy(from_logits=True)


def conv_regularized(rng):
    layers = [L.Conv2D(2, 2, activation="relu", kernel_regularizer="l1_l2",
                       bias_regularizer="l2", **F64),
              L.Flatten(**F64), L.Dense(2, activation="sigmoid", kernel_regularizer="l2", **F64)]
    return layers, rng.uniform(-1, 1, (2, 4, 4, 2)), rng.integers(0, 2, (2, 2)).astype(float), \
        losses.BinaryCrossentropy()


def conv_global_maxpool(rng):
    """GlobalMaxPooling2D after a convolution (data with distinct values: no tied maxima
    after the conv, whose outputs are sums of distinct products)."""
    layers = [L.Conv2D(3, 2, data_format="channels_first", **F64),
              L.GlobalMaxPooling2D(data_format="channels_first", **F64),
              L.Dense(2, **F64)]
    return layers, distinct(rng, (2, 2, 4, 4), np.float64), rng.integers(0, 2, size=2), \
        losses.SparseCategoricalCrossentropy(from_logits=True)


MODELS = [dense_softmax_ce, dense_logits_sparse_ce, dense_activation_softmax_layer,
          conv_stride2_maxpool_dense, conv_avgpool_gap, conv_bn_relu_maxpool,
          conv_bn_channels_first, dense_bn_mae, dense_regularized, conv_regularized,
          conv_global_maxpool]


# =========================================================================== the chain
def _build(make, rng):
    layers, x, y, loss = make(rng)
    shape = (None,) + x.shape[1:]
    for layer in layers:
        layer.build(shape)
        shape = layer.output_shape
        for name, w in list(layer.params.items()) + list(layer.state.items()):
            lo, hi = {"gamma": (0.5, 1.5), "moving_variance": (0.5, 1.5)}.get(name, (-1, 1))
            w[...] = rng.uniform(lo, hi, size=w.shape)
    return layers, np.ascontiguousarray(x, np.float64), y, loss


def total_loss(layers, loss, x, y):
    """Data loss plus every layer's regularization penalty (training-mode forward)."""
    h = x
    for layer in layers:
        h = layer.forward(h, training=True)
    return loss(y, h) + sum(layer.regularization_loss() for layer in layers)


def analytic(layers, loss, x, y):
    h = x
    for layer in layers:
        h = layer.forward(h, training=True)
    g = loss.gradient(y, h)
    for layer in reversed(layers):
        g = layer.backward(g)
    return g, {(i, k): layer.grads[k].copy() for i, layer in enumerate(layers)
               for k in layer.params}


def assert_fd(analytic_grad, numeric, what, zero=False):
    """Analytic equals numeric; the gradient is nonzero unless ``zero`` (then both ~0)."""
    atol = FD["atol"] * max(1.0, float(np.max(np.abs(numeric), initial=0.0)))
    np.testing.assert_allclose(analytic_grad, numeric, rtol=FD["rtol"], atol=atol,
                               err_msg=what)
    if zero:
        assert np.max(np.abs(analytic_grad)) <= atol, f"{what}: expected a zero gradient"
    else:
        assert np.max(np.abs(numeric)) > atol, f"{what}: the check must see a nonzero gradient"


@pytest.mark.parametrize("make", MODELS, ids=[m.__name__ for m in MODELS])
def test_model_gradients_match_finite_differences(backend, make):
    rng = _rng("gradcheck", make.__name__)
    layers, x, y, loss = _build(make, rng)
    dx, grads = analytic(layers, loss, x, y)

    def f():
        return total_loss(layers, loss, x, y)

    for (i, name), g in grads.items():
        param = layers[i].params[name]
        assert param.dtype == np.float64
        # a bias feeding a batch normalization (in training) cannot change the loss
        zero = name == "bias" and i + 1 < len(layers) and \
            isinstance(layers[i + 1], L.BatchNormalization)
        assert_fd(g, R.numerical_gradient(f, param, FD["step"]),
                  f"{make.__name__}[{backend}] layer {i} ({layers[i].name}) d{name}", zero)
    assert_fd(dx, R.numerical_gradient(f, x, FD["step"]), f"{make.__name__}[{backend}] dx")


# =========================================================================== regularizers
REGS = [(regularizers.L1(0.3), 0.3, 0.0), (regularizers.L2(0.2), 0.0, 0.2),
        (regularizers.L1L2(l1=0.05, l2=0.4), 0.05, 0.4), ("l1", 0.01, 0.0),
        ("l2", 0.0, 0.01), ("l1_l2", 0.01, 0.01), (regularizers.L1L2(), 0.0, 0.0)]


@pytest.mark.parametrize("reg,l1,l2", REGS, ids=["L1", "L2", "L1L2", "l1", "l2", "l1_l2",
                                                  "L1L2_zero"])
def test_regularizer_matches_reference(reg, l1, l2):
    rng = _rng("reg", repr(reg))
    w = rng.uniform(-2, 2, size=(4, 3))
    w[0, 0] = 0.0                                   # sign(0) = 0: zero weights stay put
    r = regularizers.get(reg)
    # a sum of w.size terms, each at most l1 |w| + l2 w^2
    np.testing.assert_allclose(r(w), R.regularizer_penalty(w, l1, l2),
                               **tolerance(np.float64, k=w.size,
                                           scale=l1 * absmax(w) + l2 * absmax(w) ** 2))
    want = R.regularizer_gradient(w, l1, l2)
    assert_close(r.gradient(w), want, k=2, scale=absmax(want))
    w32 = w.astype(np.float32)
    want32 = R.regularizer_gradient(w32, l1, l2).astype(np.float32)
    assert_close(r.gradient(w32), want32, k=2, scale=absmax(want32))
    assert r.gradient(w)[0, 0] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_layer_adds_regularization_to_loss_and_grads(backend, dtype):
    """A layer's grads are the data gradient plus the penalty gradient; its
    regularization_loss is the reference penalty."""
    rng = _rng("layerreg", np.dtype(dtype).name)
    layer = L.Dense(3, kernel_regularizer=regularizers.L1L2(0.01, 0.02), bias_regularizer="l2",
                    dtype=np.dtype(dtype).name)
    layer.build((None, 4))
    kernel = rng.uniform(-1, 1, (4, 3)).astype(dtype)
    bias = rng.uniform(-1, 1, 3).astype(dtype)
    layer.set_weights([kernel, bias])
    x = rng.uniform(-1, 1, (5, 4)).astype(dtype)
    dy = rng.uniform(-1, 1, (5, 3)).astype(dtype)
    layer.forward(x, training=True)
    layer.backward(dy)
    _, dk, db = R.dense_backward(x, kernel, bias, dy)
    want_k = dk + R.regularizer_gradient(kernel, 0.01, 0.02)
    want_b = db + R.regularizer_gradient(bias, 0.0, 0.01)
    assert_close(layer.grads["kernel"], want_k.astype(dtype), k=6, scale=2.0)
    assert_close(layer.grads["bias"], want_b.astype(dtype), k=6, scale=2.0)
    want = R.regularizer_penalty(kernel, 0.01, 0.02) + R.regularizer_penalty(bias, 0.0, 0.01)
    np.testing.assert_allclose(layer.regularization_loss(), want,
                               **tolerance(dtype, k=15, scale=0.02 + 0.02))
