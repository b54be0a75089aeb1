"""Loss functions, each a value/gradient pair (Keras names and semantics).

A loss object gives ``__call__(y_true, y_pred, sample_weight=None) -> float`` and
``gradient(y_true, y_pred, sample_weight=None) -> dL/dy_pred``. The reduction is Keras's
default, ``sum_over_batch_size``: per-sample losses (times sample weights) summed, divided
by the batch size.

Keras's ``reduction``, ``axis`` (always the last), ``ignore_class`` and ``dtype``
arguments are not taken: in a config (``get``, ``from_config``) they load at the values
Keras 3 writes there (``"sum_over_batch_size"``, -1, None, None or a float dtype) and are a
ValueError otherwise; the ``name`` of a Keras config is ignored (each loss has its Keras
name).

Besides the cross-entropies and MSE / MAE: Keras's Huber (``delta``), LogCosh,
MeanSquaredLogarithmicError, MeanAbsolutePercentageError, KLDivergence, Poisson, Hinge,
SquaredHinge and CategoricalHinge, each with Keras's formula (and its clipping to
``eps``), its analytic gradient and its function form.

Cross-entropies take ``from_logits``, the categorical and binary ones Keras's
``label_smoothing`` (targets moved toward ``1 / num_classes``, or 1/2, before the loss).
When a model ends in softmax (sigmoid) and uses
categorical (binary) cross-entropy on probabilities, :class:`fastnn.models.Sequential`
instead computes the loss from the logits and the fused gradient ``p - y``: no ``log(0)``, no
NaN on saturated outputs. Probability inputs are clipped to ``[eps, 1 - eps]`` with
``eps = 1e-7`` as Keras does.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np

from . import ops
from .activations import sigmoid
from .utils._args import check_real, keras_default_only

EPSILON = 1e-7


def _weights(sample_weight, n: int, dtype) -> Optional[np.ndarray]:
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight, dtype=dtype)
    if sw.ndim == 0 or sw.shape == (1,):    # one weight for the batch, as Keras takes it
        return np.full(n, sw.reshape(()), dtype)
    if sw.shape not in ((n,), (n, 1)):
        raise ValueError(f"sample_weight must be a scalar or have one weight per sample, "
                         f"shape ({n},) or ({n}, 1), received shape {sw.shape} (fastnn's "
                         f"losses weigh whole samples, not their elements)")
    return sw.reshape(-1)


def _reduce(per_sample: np.ndarray, sw) -> float:
    n = per_sample.shape[0]
    if n == 0:
        return 0.0
    if sw is not None:
        per_sample = per_sample * sw
    # np.add.reduce is np.sum without its Python wrapper (~5 us per training step)
    return float(np.add.reduce(per_sample, axis=None, dtype=np.float64) / n)


def _scale(grad: np.ndarray, sw, n: int) -> np.ndarray:
    if sw is not None:
        grad *= sw.reshape((-1,) + (1,) * (grad.ndim - 1))
    grad /= max(n, 1)
    return grad


class Loss:
    """Base class. Subclasses define ``per_sample(y_true, y_pred)`` and
    ``per_sample_grad(y_true, y_pred)`` (gradient of each sample's loss)."""

    name = "loss"
    #: Whether ``y_true`` must have ``y_pred``'s shape, up to a trailing axis of 1 (the
    #: elementwise losses: a reshape of equal sizes would pair the wrong elements). A
    #: subclass of Loss is otherwise given ``y_true`` in its own shape (only a trailing
    #: axis of 1 squeezed or added to match ``y_pred``): integer labels (N,) against
    #: ``y_pred`` (N, K), say, as Keras passes them to a ``Loss``'s ``call``.
    _labels_like_pred = False

    def __init__(self, from_logits: bool = False):
        if not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"from_logits must be a bool, received from_logits={from_logits!r}")
        self.from_logits = bool(from_logits)

    @classmethod
    def from_config(cls, config: dict) -> "Loss":
        """The loss of :meth:`get_config`'s output (or of a Keras 3 loss config: see
        :func:`get`)."""
        return get({"class_name": cls.__name__, "config": config})

    def _prepare(self, y_true, y_pred):
        return self._align(*self._check_pair(y_true, y_pred))

    @staticmethod
    def _check_pair(y_true, y_pred):
        """``(y_true, y_pred)`` as arrays, their dtypes and sample counts checked."""
        y_pred = np.asarray(y_pred)
        if y_pred.dtype.kind != "f":
            raise TypeError(f"y_pred must be floating point, received dtype {y_pred.dtype}")
        y_true = np.asarray(y_true)
        if y_true.dtype.kind not in "fiub":
            raise TypeError(f"y_true must be numeric, received dtype {y_true.dtype}")
        if y_true.ndim == 0 or y_pred.ndim == 0:
            raise ValueError(f"y_true and y_pred must have a batch axis (shape (N, ...)), "
                             f"received shapes {y_true.shape} and {y_pred.shape}")
        if y_true.shape[0] != y_pred.shape[0]:
            raise ValueError(f"y_true and y_pred must have the same number of samples, "
                             f"received {y_true.shape[0]} and {y_pred.shape[0]}")
        return y_true, y_pred

    def _align(self, y_true, y_pred):
        y_true = y_true.astype(y_pred.dtype, copy=False)
        t, p = y_true.shape, y_pred.shape
        if t != p:
            # Keras squeezes or expands a trailing axis of 1: (N,) with (N, 1), and the
            # like; for the elementwise losses any other difference is an error (a reshape
            # of equal sizes paired the wrong elements: (4, 6) with (4, 3, 2))
            if t[:-1] == p and t[-1:] == (1,) or p[:-1] == t and p[-1:] == (1,):
                y_true = y_true.reshape(p)
            elif self._labels_like_pred:
                raise ValueError(f"y_true has shape {t} but y_pred has shape {p} "
                                 f"({self.name}): they may differ by a trailing axis of 1 "
                                 f"only")
        return y_true, y_pred

    def __call__(self, y_true, y_pred, sample_weight=None) -> float:
        y_true, y_pred = self._prepare(y_true, y_pred)
        sw = _weights(sample_weight, y_pred.shape[0], y_pred.dtype)
        return _reduce(self.per_sample(y_true, y_pred), sw)

    def gradient(self, y_true, y_pred, sample_weight=None) -> np.ndarray:
        """dL/dy_pred, shaped like ``y_pred``."""
        y_true, y_pred = self._prepare(y_true, y_pred)
        sw = _weights(sample_weight, y_pred.shape[0], y_pred.dtype)
        return _scale(self.per_sample_grad(y_true, y_pred), sw, y_pred.shape[0])

    def value_and_gradient(self, y_true, y_pred,
                           sample_weight=None) -> Tuple[float, np.ndarray]:
        """``(loss, dL/dy_pred)``: the values of ``__call__`` and :meth:`gradient`, with the
        inputs checked once and the work they share done once (a training step)."""
        y_true, y_pred = self._prepare(y_true, y_pred)
        sw = _weights(sample_weight, y_pred.shape[0], y_pred.dtype)
        per_sample, grad = self._per_sample_value_grad(y_true, y_pred)
        return _reduce(per_sample, sw), _scale(grad, sw, y_pred.shape[0])

    def _per_sample_value_grad(self, t, p):
        return self.per_sample(t, p), self.per_sample_grad(t, p)

    def get_config(self) -> dict:
        return {"name": self.name, "from_logits": self.from_logits}

    def __repr__(self) -> str:     # the constructor's arguments: its config without the name
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class _SmoothedLoss(Loss):
    """A cross-entropy with Keras's ``label_smoothing`` (a float in [0, 1]): targets moved
    toward ``1 / k`` (k = 2 binary, the number of classes categorical) by :meth:`_smooth`."""

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0):
        super().__init__(from_logits)
        value = label_smoothing
        if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)):
            raise TypeError(f"label_smoothing must be a float in [0, 1], received {value!r}")
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], received {value!r}")
        self.label_smoothing = float(value)

    def _smooth(self, y_true, k):
        ls = self.label_smoothing
        return y_true * (1 - ls) + ls / k if ls else y_true

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def _feature_count(y):
    return math.prod(y.shape[1:]) if y.ndim > 1 else 1


class _PlainLoss(Loss):
    """A loss of Keras's without ``from_logits``, ``y_true`` shaped like ``y_pred`` (up to a
    trailing axis of 1), its config its name alone."""

    _labels_like_pred = True

    def __init__(self):
        super().__init__(False)

    def get_config(self):
        return {"name": self.name}


class MeanSquaredError(_PlainLoss):
    """Per sample: ``mean((y_pred - y_true)^2)`` over the non-batch axes."""

    name = "mean_squared_error"

    def per_sample(self, t, p):
        d = (p - t).reshape(p.shape[0], _feature_count(p))
        return np.mean(d * d, axis=1)

    def per_sample_grad(self, t, p):
        return (2.0 / _feature_count(p)) * (p - t)


class MeanAbsoluteError(_PlainLoss):
    """Per sample: ``mean(|y_pred - y_true|)``; gradient ``sign(y_pred - y_true) / D``."""

    name = "mean_absolute_error"

    def per_sample(self, t, p):
        return np.mean(np.abs(p - t).reshape(p.shape[0], _feature_count(p)), axis=1)

    def per_sample_grad(self, t, p):
        return np.sign(p - t) / _feature_count(p)


class Huber(_PlainLoss):
    """Keras's ``huber``: per element ``0.5 e^2`` where ``|e| <= delta``, else ``delta (|e|
    - delta / 2)``, e = y_pred - y_true, averaged over the sample; gradient ``clip(e,
    -delta, delta) / D``."""

    name = "huber"

    def __init__(self, delta: float = 1.0):
        super().__init__()
        self.delta = check_real(delta, "delta", low=0.0)

    def per_sample(self, t, p):
        e = np.abs(p - t)
        d = self.delta
        per = np.where(e <= d, 0.5 * e * e, d * e - 0.5 * d * d)
        return np.mean(per.reshape(p.shape[0], _feature_count(p)), axis=1)

    def per_sample_grad(self, t, p):
        return np.clip(p - t, -self.delta, self.delta) / _feature_count(p)

    def get_config(self):
        return {"name": self.name, "delta": self.delta}


class LogCosh(_PlainLoss):
    """Keras's ``log_cosh``: per element ``log(cosh(e))``, e = y_pred - y_true, as ``e +
    softplus(-2 e) - log 2`` (no overflow), averaged over the sample; gradient
    ``tanh(e) / D``."""

    name = "log_cosh"

    def per_sample(self, t, p):
        e = p - t
        with np.errstate(invalid="ignore"):          # a NaN error gives NaN, silently
            per = e + np.logaddexp(0, -2 * e) - math.log(2.0)
        return np.mean(per.reshape(p.shape[0], _feature_count(p)), axis=1)

    def per_sample_grad(self, t, p):
        return np.tanh(p - t) / _feature_count(p)


class MeanSquaredLogarithmicError(_PlainLoss):
    """Keras's ``mean_squared_logarithmic_error``: per element ``(log(max(y_pred, eps) +
    1) - log(max(y_true, eps) + 1))^2``; no gradient where ``y_pred < eps``."""

    name = "mean_squared_logarithmic_error"

    def _diff(self, t, p):
        return np.log1p(np.maximum(p, EPSILON)) - np.log1p(np.maximum(t, EPSILON))

    def per_sample(self, t, p):
        d = self._diff(t, p)
        return np.mean((d * d).reshape(p.shape[0], _feature_count(p)), axis=1)

    def per_sample_grad(self, t, p):
        # (the step function as a product, so a NaN prediction gives a NaN gradient; at
        # p == eps the gradient passes, as TensorFlow's maximum gives it)
        g = 2 * self._diff(t, p) / (np.maximum(p, EPSILON) + 1) * np.heaviside(p - EPSILON, 1)
        return (g / _feature_count(p)).astype(p.dtype, copy=False)


class MeanAbsolutePercentageError(_PlainLoss):
    """Keras's ``mean_absolute_percentage_error``: per element ``100 |y_true - y_pred| /
    max(|y_true|, eps)``; gradient ``100 sign(y_pred - y_true) / max(|y_true|, eps) /
    D``."""

    name = "mean_absolute_percentage_error"

    def per_sample(self, t, p):
        per = 100 * np.abs(t - p) / np.maximum(np.abs(t), EPSILON)
        return np.mean(per.reshape(p.shape[0], _feature_count(p)), axis=1)

    def per_sample_grad(self, t, p):
        g = 100 * np.sign(p - t) / np.maximum(np.abs(t), EPSILON)
        return (g / _feature_count(p)).astype(p.dtype, copy=False)


class _RowLoss(_PlainLoss):
    """A loss with one value per row of the last axis (the classes), averaged over a
    sample's rows: ``y_true`` shaped like ``y_pred``, which needs a class axis."""

    def _align(self, y_true, y_pred):
        _check_class_axis(self.name, y_pred)
        return super()._align(y_true, y_pred)


class KLDivergence(_RowLoss):
    """Keras's ``kl_divergence``: per row of the last axis ``sum(t log(t / p))`` with t and
    p clipped to ``[eps, 1]``, averaged over the sample's rows; gradient ``-t / p`` (0
    where p is outside ``[eps, 1]``; at the bounds it passes, as TensorFlow's clip gives
    it)."""

    name = "kl_divergence"

    def per_sample(self, t, p):
        tc, pc = np.clip(t, EPSILON, 1), np.clip(p, EPSILON, 1)
        per_row = np.sum(tc * np.log(tc / pc), axis=-1)
        return per_row.reshape(p.shape[0], _rows_per_sample(p)).mean(axis=1)

    def per_sample_grad(self, t, p):
        tc, pc = np.clip(t, EPSILON, 1), np.clip(p, EPSILON, 1)
        inside = np.heaviside(p - EPSILON, 1) * np.heaviside(1 - p, 1)
        return (-tc / pc * inside / _rows_per_sample(p)).astype(p.dtype, copy=False)


class Poisson(_PlainLoss):
    """Keras's ``poisson``: per element ``y_pred - y_true log(y_pred + eps)``, averaged
    over the sample; gradient ``(1 - y_true / (y_pred + eps)) / D``."""

    name = "poisson"

    def per_sample(self, t, p):
        per = p - t * np.log(p + EPSILON)
        return np.mean(per.reshape(p.shape[0], _feature_count(p)), axis=1)

    def per_sample_grad(self, t, p):
        return ((1 - t / (p + EPSILON)) / _feature_count(p)).astype(p.dtype, copy=False)


class Hinge(_PlainLoss):
    """Keras's ``hinge``: per element ``max(1 - y_true y_pred, 0)`` with labels -1 / 1 (a
    batch of 0 / 1 labels is mapped to -1 / 1 first, as Keras does), averaged over the
    sample; gradient ``-y_true`` where the margin is positive."""

    name = "hinge"
    _power = 1

    def _align(self, y_true, y_pred):
        t, p = super()._align(y_true, y_pred)
        if t.size and np.all((t == 0) | (t == 1)):
            t = 2 * t - 1
        return t, p

    def per_sample(self, t, p):
        m = np.maximum(1 - t * p, 0)
        per = m if self._power == 1 else m * m
        return np.mean(per.reshape(p.shape[0], _feature_count(p)), axis=1)

    def per_sample_grad(self, t, p):
        m = 1 - t * p
        # (heaviside: a NaN margin gives a NaN gradient)
        g = -t * np.heaviside(m, 0) if self._power == 1 else -2 * t * np.maximum(m, 0)
        return (g / _feature_count(p)).astype(p.dtype, copy=False)


class SquaredHinge(Hinge):
    """Keras's ``squared_hinge``: per element ``max(1 - y_true y_pred, 0)^2`` (labels as
    :class:`Hinge`); gradient ``-2 y_true max(1 - y_true y_pred, 0)``."""

    name = "squared_hinge"
    _power = 2


class CategoricalHinge(_RowLoss):
    """Keras's ``categorical_hinge``: per row of the last axis ``max(neg - pos + 1, 0)``,
    ``pos = sum(t p)``, ``neg = max((1 - t) p)``, averaged over the sample's rows; gradient
    ``-t + (1 - t) [j = argmax((1 - t) p)]`` where the row's loss is positive."""

    name = "categorical_hinge"

    def _parts(self, t, p):
        other = (1 - t) * p
        pos = np.sum(t * p, axis=-1)
        return other, np.max(other, axis=-1) - pos + 1

    def per_sample(self, t, p):
        _, m = self._parts(t, p)
        return np.maximum(m, 0).reshape(p.shape[0], _rows_per_sample(p)).mean(axis=1)

    def per_sample_grad(self, t, p):
        other, m = self._parts(t, p)
        k = p.shape[-1]
        top = np.zeros_like(p)
        if p.size:
            flat = other.reshape(-1, k)
            top.reshape(-1, k)[np.arange(flat.shape[0]), np.argmax(flat, axis=-1)] = 1
        g = (-t + (1 - t) * top) * np.heaviside(m, 0)[..., None]
        return (g / _rows_per_sample(p)).astype(p.dtype, copy=False)


class BinaryCrossentropy(_SmoothedLoss):
    """Per sample: ``mean(-(y log p + (1 - y) log(1 - p)))`` over the last axes.

    With ``from_logits=True`` ``y_pred`` holds logits ``z`` and the stable form
    ``max(z, 0) - z y + log(1 + exp(-|z|))`` is used; its gradient is ``sigmoid(z) - y``.
    """

    name = "binary_crossentropy"
    _labels_like_pred = True

    def _align(self, y_true, y_pred):
        y_true, y_pred = super()._align(y_true, y_pred)
        return self._smooth(y_true, 2), y_pred

    def per_sample(self, t, p):
        if self.from_logits:
            z = p
            loss = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
        else:
            pc = np.clip(p, EPSILON, 1 - EPSILON)
            loss = -(t * np.log(pc) + (1 - t) * np.log(1 - pc))
        return np.mean(loss.reshape(p.shape[0], _feature_count(p)), axis=1)

    def per_sample_grad(self, t, p):
        d = _feature_count(p)
        if self.from_logits:
            return (sigmoid(p) - t) / d
        pc = np.clip(p, EPSILON, 1 - EPSILON)
        g = (pc - t) / (pc * (1 - pc))
        g[(p < EPSILON) | (p > 1 - EPSILON)] = 0  # clipped: flat
        return g / d


def _log_softmax(z):
    m = np.max(z, axis=-1, keepdims=True)
    s = z - m
    return s - np.log(np.sum(np.exp(s), axis=-1, keepdims=True))


class CategoricalCrossentropy(_SmoothedLoss):
    """Per sample: ``-sum(y log p)`` over the class axis (last). ``y_true`` one-hot.

    ``from_logits=True``: log-softmax of the logits, gradient ``softmax(z) - y``.
    Probabilities (``from_logits=False``) are renormalised to sum to 1 and clipped, as Keras
    does.
    """

    name = "categorical_crossentropy"

    def _check_classes(self, y_pred):
        _check_class_axis(self.name, y_pred)

    def _align(self, y_true, y_pred):
        self._check_classes(y_pred)
        if y_true.shape != y_pred.shape:
            raise ValueError(f"categorical_crossentropy needs one-hot y_true shaped like y_pred "
                             f"{y_pred.shape}, received {y_true.shape}; for integer labels "
                             f"use sparse_categorical_crossentropy")
        return self._smooth(y_true.astype(y_pred.dtype, copy=False), y_pred.shape[-1]), y_pred

    def per_sample(self, t, p):
        if self.from_logits:
            return self._logits_value(t, p, _log_softmax(p))
        q = p / np.sum(p, axis=-1, keepdims=True)
        q = np.clip(q, EPSILON, 1 - EPSILON)
        per_row = -np.sum(t * np.log(q), axis=-1)
        return per_row.reshape(p.shape[0], _rows_per_sample(p)).mean(axis=1)

    def per_sample_grad(self, t, p):
        if self.from_logits:
            return self._logits_grad(t, p, _log_softmax(p))
        s = np.sum(p, axis=-1, keepdims=True)
        q = p / s
        qc = np.clip(q, EPSILON, 1 - EPSILON)
        gq = -t / qc
        gq[(q < EPSILON) | (q > 1 - EPSILON)] = 0
        # through the renormalisation q = p / s
        return (gq - np.sum(gq * q, axis=-1, keepdims=True)) / s / _rows_per_sample(p)


    # From logits, value and gradient share the log-softmax ``log_probs``.
    @staticmethod
    def _logits_value(t, p, log_probs):
        per_row = -np.sum(t * log_probs, axis=-1)
        return per_row.reshape(p.shape[0], _rows_per_sample(p)).mean(axis=1)

    @staticmethod
    def _logits_grad(t, p, log_probs):
        e = np.exp(log_probs)
        return (e * np.sum(t, axis=-1, keepdims=True) - t) / _rows_per_sample(p)

    def _per_sample_value_grad(self, t, p):
        if not self.from_logits:
            return super()._per_sample_value_grad(t, p)
        ls = _log_softmax(p)
        return self._logits_value(t, p, ls), self._logits_grad(t, p, ls)

    def logits_step(self, y_true, z, sample_weight=None):
        """The training step's fused form for logits ``z`` (``from_logits=True``):
        ``(loss, dL/dz, softmax(z))``, the values of :meth:`value_and_gradient` and of the
        softmax (the prediction the metrics see), from one pass of
        :func:`fastnn.ops.softmax_cross_entropy`.

        Parameters
        ----------
        y_true : ndarray, one-hot shaped like ``z`` (integer labels for the sparse loss)
        z : ndarray, shape (N, ..., K), the logits
        sample_weight : ndarray, shape (N,), optional

        Returns
        -------
        (float, ndarray shaped like z, ndarray shaped like z)
        """
        if not self.from_logits:
            raise ValueError(f"logits_step needs from_logits=True; {self!r} takes "
                             f"probabilities")
        t, z = self._prepare(y_true, z)
        return self._xent_step(t.reshape(-1, z.shape[-1]), z, sample_weight)

    def _xent_step(self, target, z, sample_weight):
        """logits_step on checked targets: ``target`` (rows, K) floats or (rows,) labels."""
        sw = _weights(sample_weight, z.shape[0], z.dtype)
        n, rows = z.shape[0], _rows_per_sample(z)
        # the gradient's scale: 1 / rows per sample, and 1 / N unless sample weights come
        # between (then _scale applies them and the 1 / N, as in value_and_gradient)
        scale = 1.0 / (rows * max(n, 1)) if sw is None else 1.0 / rows
        probs, per_row, grad = ops.softmax_cross_entropy(z.reshape(-1, z.shape[-1]), target,
                                                         scale=scale)
        per_sample = per_row if rows == 1 else per_row.reshape(n, rows).mean(axis=1)
        grad = grad.reshape(z.shape)
        if sw is not None:
            grad = _scale(grad, sw, n)
        return _reduce(per_sample, sw), grad, probs.reshape(z.shape)


def _check_class_axis(name: str, y_pred: np.ndarray) -> None:
    """A loss reducing the last axis needs one (the classes, K >= 1)."""
    if y_pred.ndim < 2 or y_pred.shape[-1] == 0:
        raise ValueError(f"{name} needs y_pred of shape (N, ..., K), K >= 1 classes on the "
                         f"last axis, received shape {y_pred.shape}")


def _rows_per_sample(p):
    return math.prod(p.shape[1:-1]) if p.ndim > 2 else 1


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer labels ``y_true`` of shape (N,) or (N, 1).

    Raises
    ------
    ValueError
        If a label is outside ``[0, num_classes)``.
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits: bool = False):
        super().__init__(from_logits)        # (no label smoothing, as in Keras)

    def get_config(self) -> dict:
        return Loss.get_config(self)

    def _align(self, y_true, y_pred):
        labels = self._labels(y_true, y_pred)
        k = y_pred.shape[-1]
        onehot = np.zeros(y_pred.shape, dtype=y_pred.dtype)
        onehot.reshape(-1, k)[np.arange(labels.size), labels.reshape(-1)] = 1
        return onehot, y_pred

    def logits_step(self, y_true, z, sample_weight=None):
        # as the categorical form, with integer labels (no one-hot matrix)
        if not self.from_logits:
            return super().logits_step(y_true, z, sample_weight)
        y_true, z = self._check_pair(y_true, z)
        return self._xent_step(self._labels(y_true, z).reshape(-1), z, sample_weight)

    def _labels(self, y_true, y_pred):
        """The integer labels of ``y_true`` (shape ``y_pred.shape[:-1]``), checked."""
        self._check_classes(y_pred)
        labels = np.asarray(y_true)
        if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
            labels = labels.reshape(labels.shape[:-1])
        if labels.shape != y_pred.shape[:-1]:
            raise ValueError(f"sparse labels must have shape {y_pred.shape[:-1]} (one integer "
                             f"per sample), received {np.shape(y_true)}")
        if labels.dtype.kind == "f":
            if not np.all(labels == np.round(labels)):
                raise ValueError("sparse labels must be integers, received non-integer values")
        k = y_pred.shape[-1]
        # the range before the cast to int64 (which wraps 2**63 + 5 and turns inf into
        # garbage): the message shows the values as given
        if labels.size and not (labels.min() >= 0 and labels.max() < k):
            raise ValueError(f"labels must be in [0, {k}) for {k} classes, received values in "
                             f"[{labels.min()}, {labels.max()}]")
        return labels.astype(np.int64, copy=False)


_REGISTRY: Dict[str, type] = {
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "huber": Huber, "log_cosh": LogCosh, "logcosh": LogCosh,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
    "msle": MeanSquaredLogarithmicError,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "mape": MeanAbsolutePercentageError,
    "kl_divergence": KLDivergence, "kld": KLDivergence,
    "kullback_leibler_divergence": KLDivergence, "poisson": Poisson, "hinge": Hinge,
    "squared_hinge": SquaredHinge, "categorical_hinge": CategoricalHinge,
}


def get(identifier) -> Loss:
    """Resolve a loss from a name, a config dict or a :class:`Loss` instance.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones).
    """
    if isinstance(identifier, Loss):
        return _complete(identifier)
    if isinstance(identifier, dict):
        if "class_name" in identifier:   # Keras's {"class_name": ..., "config": {...}}
            cls = _class(identifier["class_name"])
            cfg = dict(identifier.get("config") or {})
        else:                            # get_config()'s {"name": ..., ...}
            cfg = dict(identifier)
            cls = _class(cfg.pop("name", None))
        cfg.pop("name", None)
        # Keras 3 writes these into every loss config: at their defaults they load
        for key, default in _KERAS_DEFAULTS.items():
            if key in cfg:
                value = cfg.pop(key)
                if not (key == "dtype" and value in ("float32", "float64")):
                    keras_default_only(cls.__name__, key, value, default)
        try:
            return cls(**cfg)
        except TypeError as exc:
            raise TypeError(f"{cls.__name__} does not take the config {cfg!r}: {exc}") \
                from None
    if isinstance(identifier, str):
        return _class(identifier)()
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return _complete(identifier())
    cls = next((c for f, c in _function_classes().items() if f is identifier), None)
    if cls is not None:                # this module's function forms: their class
        return cls()
    raise TypeError(f"loss must be a name, a config, a Loss subclass or instance (a plain "
                    f"function has no gradient: subclass Loss), received {identifier!r}")


def _complete(loss: Loss) -> Loss:
    """``loss``, if its class gives the value and the gradient: ``per_sample`` and
    ``per_sample_grad`` (the base class's contract), or its own ``value_and_gradient``. A
    Keras-style subclass defining only ``call`` failed inside fit ('no attribute
    per_sample'); it is a TypeError at compile."""
    cls = type(loss)
    if (hasattr(loss, "per_sample") and hasattr(loss, "per_sample_grad")) or \
            cls.value_and_gradient is not Loss.value_and_gradient:
        return loss
    raise TypeError(f"{cls.__name__} must define per_sample(y_true, y_pred) -> the loss of "
                    f"each sample, shape (N,), and per_sample_grad(y_true, y_pred) -> its "
                    f"gradient, shaped like y_pred (a Loss subclass gives fastnn the "
                    f"gradient too: Keras's call() alone has none)")


# Keras 3's loss arguments fastnn does not take, at the values Keras writes into every
# config (get accepts them there, refuses others); a dtype of float32 or float64 is also
# taken (fastnn computes in the predictions' dtype).
_KERAS_DEFAULTS = {"reduction": "sum_over_batch_size", "axis": -1, "ignore_class": None,
                   "dtype": None}


def _class(name) -> type:
    """The loss class of a name: snake-case (any case) or the class name."""
    if isinstance(name, str):
        for cls in _REGISTRY.values():
            if name == cls.__name__:
                return cls
        if name.lower() in _REGISTRY:
            return _REGISTRY[name.lower()]
    raise ValueError(f"Unknown loss {name!r}; valid names: {sorted(_REGISTRY)} (or the "
                     f"class names)")


# Keras-style function aliases: loss(y_true, y_pred) -> per-sample values.
def _per_sample_form(cls, doc):
    """The function form of a loss class without arguments: ``fn(y_true, y_pred)`` -> the
    per-sample values, shape (N,)."""
    def fn(y_true, y_pred):
        loss = cls()
        return loss.per_sample(*loss._prepare(y_true, y_pred))
    fn.__name__ = fn.__qualname__ = cls.name
    fn.__doc__ = doc
    return fn


mean_squared_error = _per_sample_form(MeanSquaredError,
                                      "Per-sample mean squared error, shape (N,).")
mean_absolute_error = _per_sample_form(MeanAbsoluteError,
                                       "Per-sample mean absolute error, shape (N,).")


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Per-sample binary cross-entropy, shape (N,); Keras's arguments (``axis`` only at
    its default, -1: see the module's docstring)."""
    keras_default_only("binary_crossentropy", "axis", axis, -1)
    loss = BinaryCrossentropy(from_logits, label_smoothing)
    return loss.per_sample(*loss._prepare(y_true, y_pred))


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0,
                             axis=-1):
    """Per-sample categorical cross-entropy, shape (N,); Keras's arguments (``axis`` only
    at its default, -1)."""
    keras_default_only("categorical_crossentropy", "axis", axis, -1)
    loss = CategoricalCrossentropy(from_logits, label_smoothing)
    return loss.per_sample(*loss._prepare(y_true, y_pred))


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None,
                                    axis=-1):
    """Per-sample sparse categorical cross-entropy, shape (N,); Keras's arguments
    (``ignore_class`` and ``axis`` only at their defaults, None and -1)."""
    keras_default_only("sparse_categorical_crossentropy", "ignore_class", ignore_class, None)
    keras_default_only("sparse_categorical_crossentropy", "axis", axis, -1)
    loss = SparseCategoricalCrossentropy(from_logits)
    return loss.per_sample(*loss._prepare(y_true, y_pred))


def huber(y_true, y_pred, delta=1.0):
    """Per-sample Huber loss, shape (N,)."""
    loss = Huber(delta)
    return loss.per_sample(*loss._prepare(y_true, y_pred))


log_cosh = _per_sample_form(LogCosh, "Per-sample log-cosh loss, shape (N,).")
mean_squared_logarithmic_error = _per_sample_form(
    MeanSquaredLogarithmicError, "Per-sample mean squared logarithmic error, shape (N,).")
mean_absolute_percentage_error = _per_sample_form(
    MeanAbsolutePercentageError, "Per-sample mean absolute percentage error, shape (N,).")
kl_divergence = _per_sample_form(KLDivergence, "Per-sample Kullback-Leibler divergence, "
                                               "shape (N,).")
poisson = _per_sample_form(Poisson, "Per-sample Poisson loss, shape (N,).")
hinge = _per_sample_form(Hinge, "Per-sample hinge loss, shape (N,).")
squared_hinge = _per_sample_form(SquaredHinge, "Per-sample squared hinge loss, shape (N,).")
categorical_hinge = _per_sample_form(CategoricalHinge, "Per-sample categorical hinge loss, "
                                                       "shape (N,).")


def _function_classes() -> Dict[object, type]:
    """This module's function forms and the class each computes with its defaults (get
    resolves ``compile(loss=fastnn.losses.huber)`` to ``Huber()``)."""
    return {mean_squared_error: MeanSquaredError, mean_absolute_error: MeanAbsoluteError,
            binary_crossentropy: BinaryCrossentropy,
            categorical_crossentropy: CategoricalCrossentropy,
            sparse_categorical_crossentropy: SparseCategoricalCrossentropy, huber: Huber,
            log_cosh: LogCosh, mean_squared_logarithmic_error: MeanSquaredLogarithmicError,
            mean_absolute_percentage_error: MeanAbsolutePercentageError,
            kl_divergence: KLDivergence, poisson: Poisson, hinge: Hinge,
            squared_hinge: SquaredHinge, categorical_hinge: CategoricalHinge}
