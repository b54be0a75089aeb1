"""Batch normalization."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..utils._args import check_real
from .base import Layer
from .conv import MaxPooling2D, act_pool_backward
from .core import _cfg


class BatchNormalization(Layer):
    """Normalize each feature (channel) over the batch, Keras semantics.

    Training: ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta`` with the batch mean and
    (biased) variance over every axis but ``axis``; then
    ``moving = moving * momentum + batch * (1 - momentum)``. Inference, and training with
    ``trainable=False`` (as in Keras, for fine-tuning), uses the moving statistics. For a
    channels_last convolution output (N, H, W, C) the default ``axis=-1`` normalizes per
    channel; use ``axis=1`` for channels_first.

    Weights: ``gamma``, ``beta`` (trainable, in ``params``), ``moving_mean``,
    ``moving_variance`` (in ``state``), each of shape (C,).
    """

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3,
                 center: bool = True, scale: bool = True, beta_initializer="zeros",
                 gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.momentum = check_real(momentum, "momentum", low=0.0, high=1.0)
        self.epsilon = check_real(epsilon, "epsilon", low=0.0, low_open=True)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"axis must be an int, received axis={axis!r}")
        self.axis = int(axis)
        for name, value in (("center", center), ("scale", scale)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, received {name}={value!r}")
        self.center = bool(center)
        self.scale = bool(scale)
        self._check_weight_args(beta_initializer=beta_initializer,
                                gamma_initializer=gamma_initializer,
                                moving_mean_initializer=moving_mean_initializer,
                                moving_variance_initializer=moving_variance_initializer)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        self.moving_mean_initializer = moving_mean_initializer
        self.moving_variance_initializer = moving_variance_initializer

    def build(self, input_shape):
        ndim = len(input_shape)
        if not -ndim <= self.axis < ndim or self.axis % ndim == 0:
            raise ValueError(f"axis={self.axis} is not a feature axis of inputs of shape "
                             f"{input_shape}")
        self._ax = self.axis % ndim
        if input_shape[self._ax] is None:
            raise ValueError(f"BatchNormalization needs a known size along axis={self.axis}, "
                             f"received input shape {input_shape}")
        c = int(input_shape[self._ax])
        self.gamma = self.add_weight("gamma", (c,), self.gamma_initializer) if self.scale else None
        self.beta = self.add_weight("beta", (c,), self.beta_initializer) if self.center else None
        self.moving_mean = self.add_weight("moving_mean", (c,), self.moving_mean_initializer,
                                           trainable=False)
        self.moving_variance = self.add_weight("moving_variance", (c,),
                                               self.moving_variance_initializer, trainable=False)
        super().build(input_shape)

    def forward(self, x, training=False):
        training = self._statistics(x, training)
        x = self._x
        out = self._buffer("y", x.shape, x.dtype) if training else None
        # y = (x - mean) * (inv_std * gamma) + beta
        return ops.batchnorm_forward(x, self._mean, self._inv_std, self.gamma, self.beta,
                                     channel_axis=self._ax, out=out)

    def _statistics(self, x, training) -> bool:
        """A forward's start (also bn_pool_forward's): x cast and checked, and the mean and
        inv_std of this step (the batch's in training, updating the moving ones; else the
        moving ones), kept with x (``_x``) for backward, which recomputes x_hat = (x - mean)
        * inv_std from them. Returns whether the batch's statistics were used."""
        x = self._cast_input(x)
        self._check_input(x)
        # Keras: a non-trainable BatchNormalization runs in inference mode (moving statistics,
        # not updated) even in training
        training = self._training = bool(training) and self.trainable
        if training:
            # the batch's mean and biased variance per channel (summed in float64)
            mean, var = ops.batchnorm_stats(x, channel_axis=self._ax)
            m = self.momentum
            self.moving_mean *= m
            self.moving_mean += (1 - m) * mean
            self.moving_variance *= m
            self.moving_variance += (1 - m) * var
        else:
            mean, var = self.moving_mean.copy(), self.moving_variance
        inv_std = (1.0 / np.sqrt(var + self.epsilon)).astype(x.dtype)
        self._x, self._mean, self._inv_std = self._unaliased(x), mean, inv_std
        return training

    def _set_param_grads(self, dgamma, dbeta) -> None:
        if self.gamma is not None:
            self.grads["gamma"][...] = dgamma
        if self.beta is not None:
            self.grads["beta"][...] = dbeta

    def backward(self, grad):
        x = self._x   # (first: before a forward, the error that says so)
        need = self.gamma is not None or self.beta is not None
        # training: the mean and variance are functions of x, and their gradient flows
        # into dx; else they are constants and dx = grad * gamma * inv_std
        dx, dgamma, dbeta = ops.batchnorm_backward(
            grad, x, self._mean, self._inv_std, self.gamma, channel_axis=self._ax,
            training=self._training, need_param_grads=need,
            out=self._buffer("dx", x.shape, x.dtype))
        self._set_param_grads(dgamma, dbeta)
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(axis=self.axis, momentum=self.momentum, epsilon=self.epsilon,
                   center=self.center, scale=self.scale,
                   beta_initializer=_cfg(self.beta_initializer),
                   gamma_initializer=_cfg(self.gamma_initializer),
                   moving_mean_initializer=_cfg(self.moving_mean_initializer),
                   moving_variance_initializer=_cfg(self.moving_variance_initializer))
        return cfg


def bn_pool_fusable(bn, pool) -> bool:
    """Can ``bn`` and the MaxPooling2D ``pool`` after it (an activation between them runs
    after the pooling: :func:`~fastnn.layers.conv.act_pool_pairable`) run as one
    (:func:`bn_pool_forward`)? A BatchNormalization of the last axis of 4-D inputs and a 2x2
    MaxPooling2D with stride 2 and no padding, channels_last; exact classes, not
    subclasses, whose own forward the fused call would skip."""
    return (type(bn) is BatchNormalization and type(pool) is MaxPooling2D
            and getattr(bn, "_ax", None) == 3 and pool.pool_size == (2, 2)
            and pool.strides == (2, 2) and pool.padding == "valid" and pool.layout == "NHWC")


def bn_pool_forward(bn, act, pool, x, training=False):
    """``pool(act(bn(x)))`` (``act`` an activation layer, or None) for a pair
    :func:`bn_pool_fusable` accepts, as :func:`fastnn.ops.batchnorm_maxpool_forward`: the
    normalized array is never written, and the backward (:func:`bn_pool_backward`) runs
    from the pooled gradient; ``act`` runs on the pooled values
    (:func:`~fastnn.layers.conv.act_pool_forward`'s order). bn's statistics as its own
    forward takes them (the batch's in training, else the moving ones), so the same values
    as the chain, bit for bit.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), bn's input

    Returns
    -------
    y : ndarray, shape (N, H // 2, W // 2, C), pool's (or act's) output
    """
    bn._statistics(x, training)   # (a frozen layer: its moving statistics)
    x = bn._x
    pool._check_input(x)
    out = None
    if training:
        shape = pool.compute_output_shape(x.shape)
        out = (pool._buffer("y", shape, x.dtype), pool._buffer("argmax", shape, np.uint8),
               pool._buffer("x_max", shape, x.dtype))
    y, pool._argmax, pool._x_max = ops.batchnorm_maxpool_forward(
        bn._x, bn._mean, bn._inv_std, bn.gamma, bn.beta, out=out)
    pool._xshape, pool._y, pool._act_after, pool._bn_before = x.shape, y, act, bn
    return y if act is None else act.forward(y, training=training)


def bn_pool_backward(bn, act, pool, grad):
    """Backward of :func:`bn_pool_forward` from the pooled gradient: ``act``'s derivative
    on it, then :func:`fastnn.ops.batchnorm_maxpool_backward` (the normalized array's
    gradient never formed; for a frozen bn, its moving statistics' constant scale), or
    the layers' own calls where they ran one by one since. Returns the gradient with
    respect to bn's input."""
    if pool._bn_before is not bn:   # (the layers ran one by one since)
        grad = pool.backward(grad) if act is None else act_pool_backward(act, pool, grad)
        return bn.backward(grad)
    if act is not None:
        grad = act.backward(grad)
    x = bn._x
    dx, dgamma, dbeta = ops.batchnorm_maxpool_backward(
        grad, pool._argmax, pool._x_max, x, bn._mean, bn._inv_std, bn.gamma,
        training=bn._training, need_param_grads=bn.gamma is not None or bn.beta is not None,
        out=bn._buffer("dx", x.shape, x.dtype))
    bn._set_param_grads(dgamma, dbeta)
    return dx
