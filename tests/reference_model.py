"""A plain pure-NumPy float64 reference of fastnn's layers, activations, losses and
regularizers: the oracle of ``tests/test_layers.py``, ``tests/test_gradcheck.py`` and
``tests/test_losses_activations.py``.

Written independently of :mod:`fastnn` (nothing here imports it): explicit NumPy, ``einsum``
over the taps of a window, and the padding rule of ``tests/_naive.py`` (itself independent
of fastnn's geometry helper). Where fastnn uses a compact formula this file uses a different,
step-by-step derivation (batch normalization through the mean and the variance; softmax
through its Jacobian; sigmoid and tanh derivatives from ``cosh``), so that a shared mistake
is unlikely.

Conventions (Keras)
-------------------
* Every function takes and returns float64 arrays (inputs are converted with :func:`f64`).
* Images are (N, H, W, C) for ``data_format="channels_last"`` and (N, C, H, W) for
  ``"channels_first"``; convolution kernels are (KH, KW, C, F) in both formats.
* ``backward`` functions return the gradient with respect to the *input* first, then the
  parameter gradients, given the gradient ``dy`` of a scalar loss with respect to the output.
* Losses use Keras's default reduction, ``sum_over_batch_size``: elementwise losses are
  averaged over every non-batch axis (cross-entropies: over every non-batch axis but the class
  axis), multiplied by the per-sample weights, summed and divided by the batch size.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

import _naive

EPSILON = 1e-7          # Keras backend.epsilon(): the clipping of probabilities
ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "elu", "gelu",
               "silu", "selu", "softplus", "softsign", "exponential", "hard_sigmoid",
               "hard_silu", "mish", "relu6", "log_softmax", "celu", "log_sigmoid")
# Klambauer et al.'s SELU constants, as Keras writes them
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
LOSSES = ("mean_squared_error", "mean_absolute_error", "binary_crossentropy",
          "categorical_crossentropy", "sparse_categorical_crossentropy", "huber", "log_cosh",
          "mean_squared_logarithmic_error", "mean_absolute_percentage_error", "kl_divergence",
          "poisson", "hinge", "squared_hinge", "categorical_hinge")
# the losses summed over the last axis before the mean (a value per row)
ROW_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy", "kl_divergence",
              "categorical_hinge")


def f64(a) -> Optional[np.ndarray]:
    return None if a is None else np.asarray(a, dtype=np.float64)


# =========================================================================== activations
def _phi_cdf(x):
    """The standard normal CDF by math.erfc, element by element."""
    return np.vectorize(lambda v: 0.5 * math.erfc(-v / math.sqrt(2)), otypes=[float])(x)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def activation_forward(name: str, x, *, axis: int = -1, negative_slope: float = 0.2,
                       alpha: float = 1.0, approximate: bool = False) -> np.ndarray:
    """``activation(x)`` elementwise (softmax and log_softmax along ``axis``)."""
    x = f64(x)
    if name == "linear":
        return x.copy()
    if name == "relu":
        return np.where(x > 0, x, 0.0)
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * x))          # = 1 / (1 + exp(-x)), no overflow
    if name == "tanh":
        return np.tanh(x)
    if name == "softmax":
        z = np.moveaxis(x, axis, -1)
        lse = np.logaddexp.reduce(z, axis=-1, keepdims=True)
        return np.moveaxis(np.exp(z - lse), -1, axis)
    if name == "leaky_relu":
        return np.where(x > 0, x, negative_slope * x)
    if name == "elu":
        return np.where(x > 0, x, alpha * (np.exp(np.minimum(x, 0.0)) - 1.0))
    if name == "gelu":
        if approximate:
            c = math.sqrt(2 / math.pi)
            return 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x ** 3)))
        return x * _phi_cdf(x)
    if name == "silu":
        return x * _sigmoid(x)
    if name == "selu":
        return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))
    if name == "softplus":
        return _softplus(x)
    if name == "softsign":
        return x / (1 + np.abs(x))
    if name == "exponential":
        return np.exp(x)
    if name == "hard_sigmoid":
        return np.minimum(np.maximum(x + 3, 0), 6) / 6
    if name == "hard_silu":
        return x * np.minimum(np.maximum(x + 3, 0), 6) / 6
    if name == "mish":
        return x * np.tanh(_softplus(x))
    if name == "relu6":
        return np.minimum(np.maximum(x, 0), 6)
    if name == "log_softmax":
        z = np.moveaxis(x, axis, -1)
        return np.moveaxis(z - np.logaddexp.reduce(z, axis=-1, keepdims=True), -1, axis)
    if name == "celu":
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0) / alpha))
    if name == "log_sigmoid":
        return -_softplus(-x)
    raise ValueError(name)


def activation_backward(name: str, x, dy, *, axis: int = -1, negative_slope: float = 0.2,
                        alpha: float = 1.0, approximate: bool = False) -> np.ndarray:
    """``dL/dx`` given ``dy = dL/dy`` and the forward *input* ``x``."""
    x, dy = f64(x), f64(dy)
    if name == "linear":
        return dy.copy()
    if name == "relu":
        return np.where(x > 0, dy, 0.0)
    if name == "sigmoid":
        with np.errstate(over="ignore"):
            return dy / (4.0 * np.cosh(0.5 * x) ** 2)   # s'(x) = 1 / (4 cosh^2(x/2))
    if name == "tanh":
        with np.errstate(over="ignore"):
            return dy / np.cosh(x) ** 2
    if name == "softmax":
        s = np.moveaxis(activation_forward("softmax", x, axis=axis), axis, -1)
        g = np.moveaxis(dy, axis, -1)
        k = s.shape[-1]
        # Jacobian J[..., i, j] = d s_i / d x_j = s_i (delta_ij - s_j)
        jac = s[..., :, None] * (np.eye(k) - s[..., None, :])
        return np.moveaxis(np.einsum("...ij,...i->...j", jac, g), -1, axis)
    if name == "leaky_relu":
        return np.where(x > 0, dy, negative_slope * dy)
    if name == "elu":
        return np.where(x > 0, dy, alpha * np.exp(np.minimum(x, 0.0)) * dy)
    if name == "gelu":
        if approximate:
            c = math.sqrt(2 / math.pi)
            u = c * (x + 0.044715 * x ** 3)
            with np.errstate(over="ignore"):
                sech2 = 1 / np.cosh(u) ** 2
            return dy * (0.5 * (1 + np.tanh(u)) + 0.5 * x * sech2 * c * (1 + 0.134145 * x ** 2))
        return dy * (_phi_cdf(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))
    if name == "silu":
        s = _sigmoid(x)
        return dy * (s + x * s * (1 - s))
    if name == "selu":
        return dy * SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0.0)))
    if name == "softplus":
        return dy * _sigmoid(x)
    if name == "softsign":
        return dy / (1 + np.abs(x)) ** 2
    if name == "exponential":
        return dy * np.exp(x)
    if name == "hard_sigmoid":
        return dy * np.where(np.abs(x) < 3, 1 / 6, 0.0)
    if name == "hard_silu":
        return dy * np.where(x >= 3, 1.0, np.where(x > -3, x / 3 + 0.5, 0.0))
    if name == "mish":
        t = np.tanh(_softplus(x))
        return dy * (t + x * (1 - t ** 2) * _sigmoid(x))
    if name == "relu6":
        return dy * ((x > 0) & (x < 6))
    if name == "log_softmax":
        s = np.moveaxis(activation_forward("softmax", x, axis=axis), axis, -1)
        g = np.moveaxis(dy, axis, -1)
        k = s.shape[-1]
        # Jacobian J[..., i, j] = d y_i / d x_j = delta_ij - s_j
        jac = np.eye(k) - s[..., None, :]
        return np.moveaxis(np.einsum("...ij,...i->...j", jac, g), -1, axis)
    if name == "celu":
        return np.where(x > 0, dy, np.exp(np.minimum(x, 0.0) / alpha) * dy)
    if name == "log_sigmoid":
        return dy * _sigmoid(-x)
    raise ValueError(name)


# ReLU *layer*: a transcription of what Keras computes (keras.activations.relu, the
# ReLU layer's call): x where x > threshold (relu(x) when threshold == 0), clipped to
# [0, max_value], minus negative_slope * relu(threshold - x)
def relu_layer_forward(x, max_value=None, negative_slope=0.0, threshold=0.0):
    x = f64(x)
    negative_part = np.maximum(-x + threshold, 0.0)
    if threshold != 0:
        y = x * (x > threshold)
    else:
        y = np.maximum(x, 0.0)
    if max_value is not None:
        y = np.clip(y, 0.0, max_value)
    return y - negative_slope * negative_part


def relu_layer_backward(x, dy, max_value=None, negative_slope=0.0, threshold=0.0):
    """The derivative of relu_layer_forward, piece by piece (0 at the kinks)."""
    x, dy = f64(x), f64(dy)
    passes = x > threshold                          # the positive part is x itself
    if max_value is not None:
        passes &= (x > 0) & (x < max_value)         # and not clipped
    d = passes * 1.0 + negative_slope * (x < threshold)
    return dy * d


# =========================================================================== dense
def dense_forward(x, kernel, bias=None, activation="linear", **act_kw):
    """``activation(x @ kernel + bias)`` over the last axis of ``x``."""
    z = np.einsum("...i,ij->...j", f64(x), f64(kernel))
    if bias is not None:
        z = z + f64(bias)
    return activation_forward(activation, z, **act_kw)


def dense_backward(x, kernel, bias, dy, activation="linear", **act_kw):
    """``(dx, dkernel, dbias)``; ``dbias`` is None without a bias."""
    x, kernel = f64(x), f64(kernel)
    z = np.einsum("...i,ij->...j", x, kernel)
    if bias is not None:
        z = z + f64(bias)
    dz = activation_backward(activation, z, dy, **act_kw)
    dkernel = np.einsum("ri,rj->ij", x.reshape(-1, x.shape[-1]), dz.reshape(-1, dz.shape[-1]))
    dbias = None if bias is None else dz.reshape(-1, dz.shape[-1]).sum(axis=0)
    dx = np.einsum("...j,ij->...i", dz, kernel)
    return dx, dkernel, dbias


# =========================================================================== windows
def _to_nhwc(x, data_format):
    return x if data_format == "channels_last" else np.transpose(x, (0, 2, 3, 1))


def _from_nhwc(x, data_format):
    return x if data_format == "channels_last" else np.transpose(x, (0, 3, 1, 2))


def _window_geometry(h, w, size, strides, padding, dilation):
    """(pt, pb, pl, pr, oh, ow) for a window of ``size`` taps; Keras/TF "same" padding."""
    kh, kw = _naive.pair(size)
    sh, sw = _naive.pair(strides)
    dh, dw = _naive.pair(dilation)
    pt, pb, pl, pr = _naive.padding_sides(padding, h, w, (kh, kw), (sh, sw), (dh, dw))
    oh = (h + pt + pb - ((kh - 1) * dh + 1)) // sh + 1
    ow = (w + pl + pr - ((kw - 1) * dw + 1)) // sw + 1
    assert oh >= 1 and ow >= 1, "window larger than the padded input"
    return pt, pb, pl, pr, oh, ow


def _taps(size, strides, dilation, oh, ow):
    """Yield (i, j, rows, cols): the padded-input slices read by tap (i, j) of every output."""
    kh, kw = _naive.pair(size)
    sh, sw = _naive.pair(strides)
    dh, dw = _naive.pair(dilation)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            cols = slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)
            yield i, j, rows, cols


def _pad(x, pt, pb, pl, pr, value=0.0):
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


# =========================================================================== conv2d
def conv2d_forward(x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1,
                   data_format="channels_last", activation="linear", **act_kw):
    """Keras Conv2D: ``y[n, oh, ow, f] = act(b[f] + sum_{i,j,c} xpad[n, oh*sh + i*dh,
    ow*sw + j*dw, c] * kernel[i, j, c, f])``."""
    z = _conv_linear(x, kernel, bias, strides, padding, dilation_rate, data_format)
    return activation_forward(activation, z, **act_kw)   # on the output as laid out (Keras)


def _conv_linear(x, kernel, bias, strides, padding, dilation_rate, data_format):
    xl, kernel = _to_nhwc(f64(x), data_format), f64(kernel)
    n, h, w, _ = xl.shape
    pt, pb, pl, pr, oh, ow = _window_geometry(h, w, kernel.shape[:2], strides, padding,
                                              dilation_rate)
    xp = _pad(xl, pt, pb, pl, pr)
    z = np.zeros((n, oh, ow, kernel.shape[3]))
    for i, j, rows, cols in _taps(kernel.shape[:2], strides, dilation_rate, oh, ow):
        z += np.einsum("nhwc,cf->nhwf", xp[:, rows, cols, :], kernel[i, j])
    if bias is not None:
        z += f64(bias)
    return _from_nhwc(z, data_format)


def conv2d_backward(x, kernel, bias, dy, strides=1, padding="valid", dilation_rate=1,
                    data_format="channels_last", activation="linear", **act_kw):
    """``(dx, dkernel (KH, KW, C, F), dbias or None)``."""
    z = _conv_linear(x, kernel, bias, strides, padding, dilation_rate, data_format)
    dz = _to_nhwc(activation_backward(activation, z, dy, **act_kw), data_format)
    xl, kernel = _to_nhwc(f64(x), data_format), f64(kernel)
    n, h, w, _ = xl.shape
    pt, pb, pl, pr, oh, ow = _window_geometry(h, w, kernel.shape[:2], strides, padding,
                                              dilation_rate)
    xp = _pad(xl, pt, pb, pl, pr)
    dxp = np.zeros_like(xp)
    dkernel = np.zeros_like(kernel)
    for i, j, rows, cols in _taps(kernel.shape[:2], strides, dilation_rate, oh, ow):
        dkernel[i, j] = np.einsum("nhwc,nhwf->cf", xp[:, rows, cols, :], dz)
        dxp[:, rows, cols, :] += np.einsum("nhwf,cf->nhwc", dz, kernel[i, j])
    dx = dxp[:, pt:pt + h, pl:pl + w, :]
    dbias = None if bias is None else dz.sum(axis=(0, 1, 2))
    return _from_nhwc(dx, data_format), dkernel, dbias


# =========================================================================== pooling
def _pool_setup(x, pool_size, strides, padding, data_format):
    xl = _to_nhwc(f64(x), data_format)
    strides = pool_size if strides is None else strides
    n, h, w, _ = xl.shape
    geom = _window_geometry(h, w, pool_size, strides, padding, 1)
    return xl, strides, geom


def _max_taps(x, pool_size, strides, padding, data_format):
    """(stacked taps (N, OH, OW, T, C) of the -inf padded input, padded shape, geometry)."""
    xl, strides, (pt, pb, pl, pr, oh, ow) = _pool_setup(x, pool_size, strides, padding,
                                                        data_format)
    xp = _pad(xl, pt, pb, pl, pr, value=-np.inf)      # padding never wins
    taps = [xp[:, rows, cols, :] for _, _, rows, cols in _taps(pool_size, strides, 1, oh, ow)]
    return np.stack(taps, axis=3), xp.shape, strides, (pt, pl, oh, ow), xl.shape


def maxpool2d_forward(x, pool_size=2, strides=None, padding="valid",
                      data_format="channels_last"):
    stack, *_ = _max_taps(x, pool_size, strides, padding, data_format)
    return _from_nhwc(stack.max(axis=3), data_format)


def maxpool2d_backward(x, dy, pool_size=2, strides=None, padding="valid",
                       data_format="channels_last"):
    """Each output's gradient goes to the first maximum of its window (row-major order)."""
    stack, pshape, strides, (pt, pl, oh, ow), xshape = _max_taps(x, pool_size, strides,
                                                                 padding, data_format)
    winner = np.argmax(stack, axis=3)                 # first maximum on ties
    g = _to_nhwc(f64(dy), data_format)
    dxp = np.zeros(pshape)
    for t, (_, _, rows, cols) in enumerate(_taps(pool_size, strides, 1, oh, ow)):
        dxp[:, rows, cols, :] += np.where(winner == t, g, 0.0)
    dx = dxp[:, pt:pt + xshape[1], pl:pl + xshape[2], :]
    return _from_nhwc(dx, data_format)


def _avg_parts(x, pool_size, strides, padding, data_format):
    xl, strides, (pt, pb, pl, pr, oh, ow) = _pool_setup(x, pool_size, strides, padding,
                                                        data_format)
    xp = _pad(xl, pt, pb, pl, pr)
    inside = _pad(np.ones_like(xl), pt, pb, pl, pr)   # 1 for in-bounds positions
    count = np.zeros((xl.shape[0], oh, ow, xl.shape[3]))
    for _, _, rows, cols in _taps(pool_size, strides, 1, oh, ow):
        count += inside[:, rows, cols, :]
    return xl, xp, count, strides, (pt, pl, oh, ow)


def avgpool2d_forward(x, pool_size=2, strides=None, padding="valid",
                      data_format="channels_last"):
    """Mean over the in-bounds elements of each window (padding not counted, Keras)."""
    xl, xp, count, strides, (pt, pl, oh, ow) = _avg_parts(x, pool_size, strides, padding,
                                                          data_format)
    total = np.zeros_like(count)
    for _, _, rows, cols in _taps(pool_size, strides, 1, oh, ow):
        total += xp[:, rows, cols, :]
    return _from_nhwc(total / count, data_format)


def avgpool2d_backward(x, dy, pool_size=2, strides=None, padding="valid",
                       data_format="channels_last"):
    xl, xp, count, strides, (pt, pl, oh, ow) = _avg_parts(x, pool_size, strides, padding,
                                                          data_format)
    g = _to_nhwc(f64(dy), data_format) / count
    dxp = np.zeros_like(xp)
    for _, _, rows, cols in _taps(pool_size, strides, 1, oh, ow):
        dxp[:, rows, cols, :] += g
    return _from_nhwc(dxp[:, pt:pt + xl.shape[1], pl:pl + xl.shape[2], :], data_format)


def global_avgpool2d_forward(x, data_format="channels_last", keepdims=False):
    xl = _to_nhwc(f64(x), data_format)
    y = xl.sum(axis=(1, 2)) / (xl.shape[1] * xl.shape[2])
    if keepdims:
        return _from_nhwc(y[:, None, None, :], data_format)
    return y


def global_avgpool2d_backward(x, dy, data_format="channels_last", keepdims=False):
    xl = _to_nhwc(f64(x), data_format)
    g = f64(dy)
    g = _to_nhwc(g, data_format)[:, 0, 0, :] if keepdims else g
    dx = np.broadcast_to(g[:, None, None, :] / (xl.shape[1] * xl.shape[2]), xl.shape)
    return _from_nhwc(np.array(dx), data_format)


# =========================================================================== reshaping
def flatten_forward(x, data_format="channels_last"):
    """(N, ...) -> (N, prod(...)); channels_first is flattened in channels-last order."""
    x = f64(x)
    if data_format == "channels_first" and x.ndim >= 3:
        x = np.transpose(x, (0,) + tuple(range(2, x.ndim)) + (1,))
    return x.reshape(x.shape[0], -1).copy()


def flatten_backward(x, dy, data_format="channels_last"):
    x, dy = f64(x), f64(dy)
    if data_format == "channels_first" and x.ndim >= 3:
        last = (x.shape[0],) + x.shape[2:] + (x.shape[1],)
        return np.transpose(dy.reshape(last), (0, x.ndim - 1) + tuple(range(1, x.ndim - 1)))
    return dy.reshape(x.shape).copy()


def dropout_forward(x, keep, rate):
    """Inverted dropout with a given keep mask (1 keep, 0 drop): ``x * keep / (1 - rate)``."""
    return f64(x) * f64(keep) / (1.0 - rate)


def dropout_backward(dy, keep, rate):
    return f64(dy) * f64(keep) / (1.0 - rate)


# =========================================================================== batch norm
def _bn_axes(x, axis):
    ax = axis % x.ndim
    reduce = tuple(i for i in range(x.ndim) if i != ax)
    bshape = tuple(x.shape[ax] if i == ax else 1 for i in range(x.ndim))
    return reduce, bshape


def batchnorm_forward(x, gamma, beta, moving_mean, moving_variance, *, axis=-1,
                      momentum=0.99, epsilon=1e-3, training=True):
    """Keras BatchNormalization. Returns ``(y, new_moving_mean, new_moving_variance)``.

    Training normalizes with the batch mean and biased variance over every axis but
    ``axis`` and updates ``moving = moving * momentum + batch * (1 - momentum)``; inference
    uses the moving statistics and leaves them unchanged. ``gamma``/``beta`` None means
    ``scale=False``/``center=False``."""
    x = f64(x)
    reduce, b = _bn_axes(x, axis)
    mm, mv = f64(moving_mean), f64(moving_variance)
    if training:
        count = x.size // x.shape[axis % x.ndim]
        mean = x.sum(axis=reduce) / count
        var = ((x - mean.reshape(b)) ** 2).sum(axis=reduce) / count
        new_mm = mm * momentum + mean * (1 - momentum)
        new_mv = mv * momentum + var * (1 - momentum)
    else:
        mean, var = mm, mv
        new_mm, new_mv = mm.copy(), mv.copy()
    xhat = (x - mean.reshape(b)) / np.sqrt(var.reshape(b) + epsilon)
    y = xhat
    if gamma is not None:
        y = y * f64(gamma).reshape(b)
    if beta is not None:
        y = y + f64(beta).reshape(b)
    return y, new_mm, new_mv


def batchnorm_backward(x, gamma, beta, moving_mean, moving_variance, dy, *, axis=-1,
                       epsilon=1e-3, training=True):
    """``(dx, dgamma or None, dbeta or None)``. In training the gradient flows through the
    batch mean and variance (the classic step-by-step chain rule); at inference the moving
    statistics are constants."""
    x, dy = f64(x), f64(dy)
    reduce, b = _bn_axes(x, axis)
    count = x.size // x.shape[axis % x.ndim]
    if training:
        mean = (x.sum(axis=reduce) / count).reshape(b)
        var = (((x - mean) ** 2).sum(axis=reduce) / count).reshape(b)
    else:
        mean, var = f64(moving_mean).reshape(b), f64(moving_variance).reshape(b)
    std = np.sqrt(var + epsilon)
    xhat = (x - mean) / std
    dgamma = None if gamma is None else (dy * xhat).sum(axis=reduce)
    dbeta = None if beta is None else dy.sum(axis=reduce)
    dxhat = dy if gamma is None else dy * f64(gamma).reshape(b)
    if not training:
        return dxhat / std, dgamma, dbeta
    # xhat = (x - mean) * (var + eps)^(-1/2), mean = sum(x)/m, var = sum((x - mean)^2)/m
    dvar = (dxhat * (x - mean) * -0.5 * (var + epsilon) ** -1.5).sum(axis=reduce).reshape(b)
    dmean = ((-dxhat / std).sum(axis=reduce).reshape(b)
             + dvar * (-2.0 * (x - mean)).sum(axis=reduce).reshape(b) / count)
    dx = dxhat / std + dvar * 2.0 * (x - mean) / count + dmean / count
    return dx, dgamma, dbeta


# =========================================================================== losses
def _onehot(labels, pred_shape):
    """One-hot of integer labels shaped ``pred_shape[:-1]`` (or with a trailing 1)."""
    labels = np.asarray(labels).astype(np.int64).reshape(pred_shape[:-1])
    return np.eye(pred_shape[-1])[labels]


def _hinge_labels(t):
    """Keras: a batch of 0 / 1 labels becomes -1 / 1."""
    return 2 * t - 1 if np.all((t == 0) | (t == 1)) else t


def elementwise_loss(name, t, p, from_logits, delta=1.0):
    """The Keras loss tensor before reduction: shape (N, ...) (last axis summed for the
    ROW_LOSSES)."""
    if name == "huber":
        e = np.abs(p - t)
        return np.where(e <= delta, e * e / 2, delta * e - delta * delta / 2)
    if name == "log_cosh":
        return np.log(np.cosh(p - t))
    if name == "mean_squared_logarithmic_error":
        return (np.log(np.maximum(p, EPSILON) + 1) - np.log(np.maximum(t, EPSILON) + 1)) ** 2
    if name == "mean_absolute_percentage_error":
        return 100 * np.abs((t - p) / np.maximum(np.abs(t), EPSILON))
    if name == "kl_divergence":
        tc, pc = np.clip(t, EPSILON, 1), np.clip(p, EPSILON, 1)
        return (tc * (np.log(tc) - np.log(pc))).sum(axis=-1)
    if name == "poisson":
        return p - t * np.log(p + EPSILON)
    if name == "hinge":
        return np.maximum(1 - _hinge_labels(t) * p, 0)
    if name == "squared_hinge":
        return np.maximum(1 - _hinge_labels(t) * p, 0) ** 2
    if name == "categorical_hinge":
        pos = (t * p).sum(axis=-1)
        neg = ((1 - t) * p).max(axis=-1)
        return np.maximum(neg - pos + 1, 0)
    if name == "mean_squared_error":
        return (p - t) ** 2
    if name == "mean_absolute_error":
        return np.abs(p - t)
    if name == "binary_crossentropy":
        if from_logits:
            return np.logaddexp(0.0, p) - t * p          # softplus(z) - t z
        pc = np.clip(p, EPSILON, 1 - EPSILON)
        return -(t * np.log(pc) + (1 - t) * np.log(1 - pc))
    if name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        if from_logits:
            logp = p - np.logaddexp.reduce(p, axis=-1, keepdims=True)
        else:
            q = np.clip(p / p.sum(axis=-1, keepdims=True), EPSILON, 1 - EPSILON)
            logp = np.log(q)
        return -(t * logp).sum(axis=-1)
    raise ValueError(name)


def loss_inputs(name, y_true, y_pred):
    p = f64(y_pred)
    if name == "sparse_categorical_crossentropy":
        t = _onehot(y_true, p.shape)
    else:
        t = f64(y_true).reshape(p.shape)
    return t, p


def loss_value(name, y_true, y_pred, from_logits=False, sample_weight=None,
               delta=1.0) -> float:
    """Keras ``sum_over_batch_size``: mean over the non-batch axes of the loss tensor,
    times the sample weight, summed over the batch, divided by the batch size."""
    t, p = loss_inputs(name, y_true, y_pred)
    per_elem = elementwise_loss(name, t, p, from_logits, delta)
    n = p.shape[0]
    per_sample = per_elem.reshape(n, -1).mean(axis=1)
    if sample_weight is not None:
        per_sample = per_sample * f64(sample_weight).reshape(n)
    return float(per_sample.sum() / n)


def loss_gradient(name, y_true, y_pred, from_logits=False, sample_weight=None,
                  delta=1.0) -> np.ndarray:
    """``d loss_value / d y_pred`` (zero where a probability is clipped)."""
    t, p = loss_inputs(name, y_true, y_pred)
    n = p.shape[0]
    if name in ROW_LOSSES:
        terms = int(np.prod(p.shape[1:-1]))           # loss-tensor elements per sample
    else:
        terms = int(np.prod(p.shape[1:]))
    if name == "huber":
        e = p - t
        g = np.where(np.abs(e) <= delta, e, delta * np.sign(e))
    elif name == "log_cosh":
        g = np.sinh(p - t) / np.cosh(p - t)
    elif name == "mean_squared_logarithmic_error":
        d = np.log(np.maximum(p, EPSILON) + 1) - np.log(np.maximum(t, EPSILON) + 1)
        g = np.where(p >= EPSILON, 2 * d / (p + 1), 0.0)
    elif name == "mean_absolute_percentage_error":
        g = 100 * np.sign(p - t) / np.maximum(np.abs(t), EPSILON)
    elif name == "kl_divergence":
        g = np.where((p >= EPSILON) & (p <= 1), -np.clip(t, EPSILON, 1) / p, 0.0)
    elif name == "poisson":
        g = 1 - t / (p + EPSILON)
    elif name in ("hinge", "squared_hinge"):
        y = _hinge_labels(t)
        m = 1 - y * p
        g = np.where(m > 0, -y, 0.0) * (1 if name == "hinge" else 2 * np.maximum(m, 0))
    elif name == "categorical_hinge":
        other = (1 - t) * p
        j = other.argmax(axis=-1)
        top = np.eye(p.shape[-1])[j]
        active = (other.max(axis=-1) - (t * p).sum(axis=-1) + 1) > 0
        g = np.where(active[..., None], -t + (1 - t) * top, 0.0)
    elif name == "mean_squared_error":
        g = 2.0 * (p - t)
    elif name == "mean_absolute_error":
        g = np.sign(p - t)
    elif name == "binary_crossentropy":
        if from_logits:
            g = activation_forward("sigmoid", p) - t
        else:
            inside = (p > EPSILON) & (p < 1 - EPSILON)
            pc = np.clip(p, EPSILON, 1 - EPSILON)
            g = np.where(inside, -t / pc + (1 - t) / (1 - pc), 0.0)
    else:
        if from_logits:
            s = activation_forward("softmax", p)
            g = s * t.sum(axis=-1, keepdims=True) - t
        else:
            total = p.sum(axis=-1, keepdims=True)
            q = p / total
            inside = (q > EPSILON) & (q < 1 - EPSILON)
            gq = np.where(inside, -t / np.clip(q, EPSILON, 1 - EPSILON), 0.0)
            k = p.shape[-1]
            # q_j = p_j / sum(p): dq_j/dp_i = (delta_ij - q_j) / sum(p)
            jac = (np.eye(k) - q[..., :, None]) / total[..., None]   # [..., j, i]
            g = np.einsum("...j,...ji->...i", gq, jac)
    g = g / (terms * n)
    if sample_weight is not None:
        g = g * f64(sample_weight).reshape((n,) + (1,) * (g.ndim - 1))
    return g


# =========================================================================== regularizers
def regularizer_penalty(w, l1=0.0, l2=0.0) -> float:
    """Keras: ``l1 * sum|w| + l2 * sum(w^2)`` (no factor 1/2)."""
    w = f64(w)
    return float(l1 * np.abs(w).sum() + l2 * (w * w).sum())


def regularizer_gradient(w, l1=0.0, l2=0.0) -> np.ndarray:
    w = f64(w)
    return l1 * np.sign(w) + 2.0 * l2 * w



# =========================================================================== finite differences
def numerical_gradient(f, x: np.ndarray, step: float) -> np.ndarray:
    """Central finite differences of the scalar ``f()`` with respect to every element of
    ``x``, a float64 array that ``f`` reads (perturbed in place and restored)."""
    assert x.dtype == np.float64
    grad = np.zeros(x.shape)
    flat = x.reshape(-1)            # a view: x is perturbed in place
    assert np.shares_memory(flat, x)
    gflat = grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + step
        up = f()
        flat[k] = old - step
        down = f()
        flat[k] = old
        gflat[k] = (up - down) / (2 * step)
    return grad
