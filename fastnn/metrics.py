"""Metrics: stateful metric objects for ``compile``/``fit``/``evaluate``, and reports.

Two families, both pure NumPy:

**Metric objects** (Keras names and semantics). A :class:`Metric` accumulates statistics
over batches with ``update_state(y_true, y_pred, sample_weight=None)``, returns its value
with ``result()`` and starts again with ``reset_state()``. What accumulates are *counts*
(weighted sums and sample counts, true/false positives...), never per-batch averages, so
the value after any number of batches equals the value computed on all the samples at
once. ``Sequential.compile(metrics=[...])`` resolves its entries with :func:`get`; the
string ``"accuracy"`` becomes binary, categorical or sparse categorical accuracy from the
loss, as standalone Keras up to 2.2 chose, and from the output's last axis (1: binary, else
categorical) for a loss that does not say, such as mse. tf.keras 2 and Keras 3 choose from
the shapes of the targets and predictions alone: the two differ for binary cross-entropy
on several output units (multi-label), binary accuracy here and categorical accuracy
there, and for integer labels with a loss like mse. Name the metric
(``"binary_accuracy"``, ...) to choose it yourself. The class :class:`Accuracy` (or
``{"class_name": "Accuracy"}``) is Keras's other accuracy: how often ``y_pred`` *equals*
``y_true``, element by element. The string ``"Accuracy"``, like any spelling of
``"accuracy"`` or ``"acc"``, is the automatic choice, as in Keras 3's compile.

**Evaluation functions** for integer class labels, in the style of scikit-learn:
:func:`confusion_matrix`, :func:`precision_recall_f1` and :func:`classification_report`.
``y_pred`` may be labels ``(N,)`` or the model's probabilities ``(N, C)`` (argmax is taken).

Zero division (a class never predicted, or never present) gives 0, without a warning.

Examples
--------
>>> m = BinaryAccuracy()
>>> m.update_state([[1], [0]], [[0.9], [0.8]])
>>> m.update_state([[1]], [[0.7]])
>>> m.result()
0.6666666666666666
>>> confusion_matrix([0, 1, 2, 2], [0, 2, 2, 2])
array([[1, 0, 0],
       [0, 0, 1],
       [0, 0, 2]])
"""
from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import losses as _losses
from .utils._args import check_bool, check_real
from .activations import sigmoid as _sigmoid

__all__ = [
    "Metric", "Mean", "MeanMetricWrapper", "MeanSquaredError", "MeanAbsoluteError",
    "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
    "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy",
    "Accuracy", "Precision", "Recall", "FBetaScore", "F1Score", "AUC", "ConfusionMatrix",
    "accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
    "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy",
    "mean_squared_error", "mean_absolute_error",
    "confusion_matrix", "precision_recall_f1", "classification_report",
    "get", "serialize",
]

ArrayLike = Any
Result = Union[float, np.ndarray]


# =============================================================================== input checks
def _array(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a numeric ndarray with a batch axis, or a TypeError/ValueError naming it."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a rectangular numeric array, received "
                         f"{type(x).__name__} that NumPy cannot convert ({exc})") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric (bool, int or float), received dtype "
                        f"{a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{name} must have a batch dimension, received a scalar {a!r}")
    return a


def _check_lengths(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(f"y_true and y_pred must have the same number of samples, received "
                         f"{y_true.shape[0]} (y_true shape {y_true.shape}) and "
                         f"{y_pred.shape[0]} (y_pred shape {y_pred.shape})")


def _weights(sample_weight: ArrayLike, n: int) -> Optional[np.ndarray]:
    """Per-sample weights, shape (n,): from None, a scalar, (n,) or (n, 1)."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric, received dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.ndim == 0:
        return np.full(n, float(w))
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (n,):
        raise ValueError(f"sample_weight must hold one weight per sample, shape ({n},) or "
                         f"({n}, 1), received shape {np.shape(sample_weight)}")
    return w


def _element_weights(sample_weight: ArrayLike, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """Weights broadcast to ``shape``: per sample (scalar, (N,), (N, 1)), per element, or
    any (N, ...) of lower rank that broadcasts once padded with trailing axes of 1 (per
    timestep: (N, T) or (N, T, 1) for outputs (N, T, K), as Keras expands and broadcasts)."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric, received dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.shape == tuple(shape):
        return w
    if 2 <= w.ndim <= len(shape) and w.shape[0] == shape[0]:
        padded = w.reshape(w.shape + (1,) * (len(shape) - w.ndim))
        if all(a in (1, b) for a, b in zip(padded.shape, shape)):
            return np.broadcast_to(padded, shape)
        raise ValueError(f"sample_weight of shape {w.shape} does not broadcast to y_pred's "
                         f"shape {tuple(shape)} (its axes align from the first, the batch "
                         f"axis)")
    w = _weights(w, shape[0])
    return np.broadcast_to(w.reshape((-1,) + (1,) * (len(shape) - 1)), shape)


def _integral(a: np.ndarray, name: str) -> np.ndarray:
    """Integer labels from an int/bool/float array whose values are whole numbers."""
    if a.dtype.kind == "f":
        ok = np.isfinite(a) & (a == np.round(a))
        if not np.all(ok):
            bad = a[~ok].flat[0].item()
            raise ValueError(f"{name} must hold integer class labels, received the "
                             f"non-integer value {bad!r}")
    return a.astype(np.int64, copy=False)


def _check_range(labels: np.ndarray, k: int, name: str) -> None:
    # one pass: as unsigned, a negative label is larger than any k
    if labels.size and np.any(labels.astype(np.int64, copy=False).view(np.uint64) >= k):
        raise ValueError(f"{name} labels must be in [0, {k}) for {k} classes, received "
                         f"values in [{labels.min()}, {labels.max()}]")


def _same_rank(y_true: np.ndarray, y_pred: np.ndarray):
    """Keras' squeeze_or_expand_to_same_rank: drop a trailing axis of size 1 on one side."""
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        y_pred = y_pred[..., 0]
    return y_true, y_pred


def _is_sparse(y_true: np.ndarray, y_pred: np.ndarray) -> bool:
    """Integer labels (N, ...) or (N, ..., 1) against class scores (N, ..., C), C > 1."""
    if y_pred.ndim < 2 or y_pred.shape[-1] < 2:
        return False
    return (y_true.shape == y_pred.shape[:-1]
            or (y_true.shape == y_pred.shape[:-1] + (1,)))


def _one_hot_sparse(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    labels = _integral(y_true.reshape(y_pred.shape[:-1]), "y_true")
    k = y_pred.shape[-1]
    _check_range(labels, k, "y_true")
    out = np.zeros(y_pred.shape, dtype=np.float64)
    np.put_along_axis(out, labels[..., None], 1.0, axis=-1)
    return out


def _binary_inputs(y_true: ArrayLike, y_pred: ArrayLike, sparse_ok: bool):
    """Arrays of equal shape for element-wise (binary / multi-label) metrics.

    With ``sparse_ok``, integer labels (N,) or (N, 1) against (N, C > 1) scores are
    one-hot encoded first.
    """
    t = _array(y_true, "y_true")
    p = _array(y_pred, "y_pred")
    _check_lengths(t, p)
    if sparse_ok and t.shape != p.shape and _is_sparse(t, p):
        return _one_hot_sparse(t, p), p
    t, p = _same_rank(t, p)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, received y_true "
                         f"shape {np.shape(y_true)} and y_pred shape {np.shape(y_pred)}")
    return t, p


def _check_name(name: Optional[str]) -> Optional[str]:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string, received {type(name).__name__}")
    return name


def _check_dtype(dtype) -> Optional[str]:
    """The name of a floating-point dtype (``"float32"``...), or None."""
    if dtype is None:
        return None
    try:
        if not isinstance(dtype, (str, type, np.dtype)):
            raise TypeError
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise TypeError(f"dtype must be a floating-point dtype such as 'float32', or None, "
                        f"received {dtype!r}") from None
    if dt.kind != "f":
        raise ValueError(f"dtype must be a floating-point dtype such as 'float32', or None, "
                         f"received {dtype!r} ({dt.name})")
    return dt.name


def _in_dtype(value: Result, dtype: Optional[str]) -> Result:
    """A result rounded to ``dtype`` (the state stays float64); as is for None."""
    if dtype is None:
        return value
    if isinstance(value, np.ndarray):
        return value.astype(dtype)
    return float(np.asarray(value, dtype=dtype))


def _dtype_config(config: Dict[str, Any], dtype: Optional[str]) -> Dict[str, Any]:
    """``config`` with ``"dtype"`` when one was given (the default adds nothing)."""
    return config if dtype is None else {**config, "dtype": dtype}


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, with 0 where b == 0 (no warning)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def _scalar_or_array(a: np.ndarray) -> Result:
    a = np.asarray(a)
    return float(a) if a.ndim == 0 else a


_AVERAGES = (None, "micro", "macro", "weighted")


def _check_average(average) -> None:
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of None, 'micro', 'macro', 'weighted', "
                         f"received {average!r}")


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, support: np.ndarray,
         average: Optional[str], beta: float = 1.0):
    """Precision, recall, F-beta (F1 by default; per class or averaged) from per-class
    counts."""
    if average == "micro":
        tp, fp, fn = np.sum(tp), np.sum(fp), np.sum(fn)
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    # = (1 + b2) p r / (b2 p + r), and 0 when tp == 0; for beta = 1, 2 tp / (2 tp + fp + fn)
    b2 = beta ** 2
    f = _safe_div((1 + b2) * tp, (1 + b2) * tp + fp + b2 * fn)
    if average in (None, "micro"):
        return precision, recall, f
    if average == "macro":
        if precision.size == 0:
            return np.float64(0), np.float64(0), np.float64(0)
        return np.mean(precision), np.mean(recall), np.mean(f)
    total = np.sum(support)  # weighted
    if total == 0:
        return np.float64(0), np.float64(0), np.float64(0)
    return (np.sum(precision * support) / total, np.sum(recall * support) / total,
            np.sum(f * support) / total)


# =============================================================================== base class
class Metric:
    """Base class of the stateful metrics.

    Subclasses implement :meth:`update_state`, :meth:`result` and :meth:`reset_state`.
    Calling a metric, ``m(y_true, y_pred)``, updates it and returns :meth:`result`.

    Parameters
    ----------
    name : str, optional
        The name shown in training logs; defaults to the class's snake-case name.
    """

    _default_name = "metric"
    # True when the state is integer counts (summed exactly in float64): then one update
    # with several batches concatenated leaves the state one update per batch leaves.
    # fit relies on it to update once per run of compiled steps.
    _counts = False

    def __init__(self, name: Optional[str] = None):
        self.name: str = _check_name(name) or self._default_name

    def _counts_for(self, output_shape: Sequence[Optional[int]], y_true: np.ndarray) -> bool:
        """``_counts`` for a model whose output has ``output_shape`` (batch axis first)
        trained on the targets ``y_true``: what fit asks before it updates the metric
        once per run of several batches."""
        return self._counts

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike,
                     sample_weight: ArrayLike = None) -> None:
        """Accumulate the statistics of one batch.

        Parameters
        ----------
        y_true : array-like, shape (N, ...)
        y_pred : array-like, shape (N, ...)
        sample_weight : array-like, shape (N,) or (N, 1), or a scalar, optional
        """
        raise NotImplementedError

    def result(self) -> Result:
        """The metric's value over everything seen since the last reset."""
        raise NotImplementedError

    def reset_state(self) -> None:
        """Forget everything accumulated."""
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Result:
        """``update_state(*args, **kwargs)``, then return ``result()``."""
        self.update_state(*args, **kwargs)
        return self.result()

    def get_config(self) -> Dict[str, Any]:
        """Constructor arguments; ``type(m).from_config(m.get_config())`` rebuilds ``m``."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Metric":
        """The metric of ``get_config()``'s dict. Keras 3 writes ``"dtype": "float32"`` (or
        a dtype policy) into every metric's config: a metric without a ``dtype`` argument
        (it reports float64) takes a float32 or float64 one and drops it."""
        config = dict(config)
        if "dtype" in config and \
                "dtype" not in inspect.signature(cls.__init__).parameters:
            value = config.pop("dtype")
            name = value.get("config", {}).get("name") if isinstance(value, dict) else value
            if value is not None and name not in ("float32", "float64"):
                raise ValueError(f"{cls.__name__} computes in float64 and takes a dtype of "
                                 f"float32 or float64 only (Keras's default), received "
                                 f"dtype={value!r}")
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# =============================================================================== means
class Mean(Metric):
    """The (weighted) mean of the values given to :meth:`update_state`.

    Used for the loss in training logs. Accumulates ``total = sum(w * v)`` and
    ``count = sum(w)``; ``result() = total / count`` (0 before any update). A scalar
    ``sample_weight`` weighs every value of the batch; Keras 3 instead averages the batch
    first and gives that average the one weight, so the two differ once updates of
    different sizes, or weighted and unweighted ones, are mixed (this holds for every
    metric built on it).

    Parameters
    ----------
    name : str, default "mean"

    Examples
    --------
    >>> m = Mean()
    >>> m.update_state([1, 3, 5, 7], sample_weight=[1, 1, 0, 0])
    >>> m.result()
    2.0
    """

    _default_name = "mean"

    def __init__(self, name: Optional[str] = None):
        super().__init__(name)
        self.reset_state()

    def reset_state(self) -> None:
        self.total = 0.0
        self.count = 0.0

    def update_state(self, values: ArrayLike, sample_weight: ArrayLike = None) -> None:
        """Add values to the mean.

        Parameters
        ----------
        values : array-like, shape (N, ...) or a scalar
            Values with more than one axis are first averaged over the non-batch axes
            (one value per sample).
        sample_weight : array-like, optional
            A scalar (the same weight for every sample), shape (N,) or (N, 1) (one weight
            per sample), or the shape of ``values`` (one weight per element).
        """
        v = np.asarray(values)
        if v.dtype.kind not in "biuf":
            raise TypeError(f"values must be numeric, received dtype {v.dtype}")
        v = v.astype(np.float64, copy=False)
        if sample_weight is None:
            if v.ndim == 0:
                self.total += float(v)
                self.count += 1.0
            else:
                self.total += float(_per_sample(v).sum())
                self.count += float(v.shape[0])
            return
        w = np.asarray(sample_weight)
        if w.dtype.kind not in "biuf":
            raise TypeError(f"sample_weight must be numeric, received dtype {w.dtype}")
        w = w.astype(np.float64)
        if v.ndim == 0 and w.ndim == 0:
            self.total += float(v * w)
            self.count += float(w)
            return
        if v.ndim == 0:
            v = np.broadcast_to(v, w.shape)
        if w.ndim == 0:
            w = np.full(v.shape[:1], float(w))
        if w.ndim == v.ndim + 1 and w.shape[-1] == 1:
            w = w[..., 0]
        elif v.ndim == w.ndim + 1 and v.shape[-1] == 1:
            v = v[..., 0]
        if w.ndim == 0 or w.shape[0] != v.shape[0] or w.ndim > v.ndim:
            raise ValueError(f"sample_weight of shape {np.shape(sample_weight)} does not "
                             f"match values of shape {np.shape(values)}")
        if v.ndim > w.ndim:  # reduce values to the weights' rank
            flat = v.reshape(v.shape[:w.ndim] + (int(np.prod(v.shape[w.ndim:])),))
            v = flat.mean(axis=-1) if flat.shape[-1] else np.zeros(v.shape[:w.ndim])
        try:
            wb = np.broadcast_to(w, v.shape)
        except ValueError:
            raise ValueError(f"sample_weight of shape {np.shape(sample_weight)} cannot be "
                             f"broadcast to values of shape {np.shape(values)}") from None
        self.total += float(np.sum(_per_sample(v * wb)))
        self.count += float(np.sum(_per_sample(wb)))

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


def _per_sample(v: np.ndarray) -> np.ndarray:
    """Mean over the non-batch axes: shape (N,)."""
    if v.ndim <= 1:
        return v
    flat = v.reshape(v.shape[0], int(np.prod(v.shape[1:])))
    return flat.mean(axis=1) if flat.shape[1] else np.zeros(v.shape[0])


class MeanMetricWrapper(Mean):
    """The weighted mean of a function's per-sample values, ``fn(y_true, y_pred)``.

    Parameters
    ----------
    fn : callable
        ``fn(y_true, y_pred, **kwargs)`` returning per-sample values, shape (N,) (or
        (N, ...), averaged over the non-batch axes). A scalar return value is taken as
        the mean over the batch and counts for the batch's N samples.
    name : str, optional
        Defaults to ``fn.__name__``.
    **kwargs
        Passed on to ``fn``.

    Examples
    --------
    >>> m = MeanMetricWrapper(lambda t, p: np.abs(np.subtract(t, p)), name="abs_err")
    >>> m([1.0, 2.0], [1.5, 2.0])
    0.25
    """

    def __init__(self, fn: Callable[..., ArrayLike], name: Optional[str] = None, **kwargs):
        if not callable(fn):
            raise TypeError(f"fn must be callable, received {type(fn).__name__}")
        self._fn = fn
        self._fn_kwargs = kwargs
        super().__init__(name or getattr(fn, "__name__", None) or _snake(type(fn).__name__))

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike,
                     sample_weight: ArrayLike = None) -> None:
        values = np.asarray(self._fn(y_true, y_pred, **self._fn_kwargs))
        if values.ndim == 0:
            n = np.shape(y_pred)[0] if np.ndim(y_pred) else 1
            values = np.full(n, values, dtype=np.float64 if values.dtype.kind != "f"
                             else values.dtype)
        super().update_state(values, sample_weight)

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "fn": self._fn, **self._fn_kwargs}


# ------------------------------------------------------------------ per-sample functions
def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Per-sample mean squared error.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (N, ...)
        Same shape, or differing by a trailing axis of size 1.

    Returns
    -------
    ndarray, shape (N,)
    """
    return _per_sample(_squared_errors(y_true, y_pred)).reshape(-1)


def mean_absolute_error(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Per-sample mean absolute error, shape (N,); inputs as :func:`mean_squared_error`."""
    return _per_sample(_absolute_errors(y_true, y_pred)).reshape(-1)


def _squared_errors(y_true, y_pred) -> np.ndarray:
    """(y_pred - y_true)**2 element by element: the MeanSquaredError metric's values, which
    :class:`Mean` reduces to the weights' rank (per-timestep weights, as Keras)."""
    t, p = _regression_inputs(y_true, y_pred)
    return np.square(p - t)


def _absolute_errors(y_true, y_pred) -> np.ndarray:
    """|y_pred - y_true| element by element (see :func:`_squared_errors`)."""
    t, p = _regression_inputs(y_true, y_pred)
    return np.abs(p - t)


def _regression_inputs(y_true, y_pred):
    t = _array(y_true, "y_true").astype(np.float64)
    p = _array(y_pred, "y_pred").astype(np.float64)
    _check_lengths(t, p)
    t, p = _same_rank(t, p)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, received y_true "
                         f"shape {np.shape(y_true)} and y_pred shape {np.shape(y_pred)}")
    return t, p


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Per-sample exact accuracy: the fraction of a sample's elements where ``y_pred``
    equals ``y_true`` (Keras's ``accuracy``).

    Parameters
    ----------
    y_true : array-like, shape (N,) or (N, ...)
    y_pred : array-like, shape like ``y_true``
        Or differing by a trailing axis of size 1. A floating-point ``y_pred`` is compared
        in its own dtype (``y_true`` is cast to it, as Keras does), any other exactly.

    Returns
    -------
    ndarray, shape (N,)
        1.0 / 0.0 for shape (N,) or (N, 1); the mean of the matches over the non-batch
        axes otherwise.

    Examples
    --------
    >>> accuracy([[1], [2], [3], [4]], [[0], [2], [3], [4]])
    array([0., 1., 1., 1.])
    """
    return _per_sample(_exact_matches(y_true, y_pred)).reshape(-1)


def _exact_matches(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """1.0 where ``y_pred`` equals ``y_true``, element by element (see :func:`accuracy`)."""
    t, p = _binary_inputs(y_true, y_pred, sparse_ok=False)
    if p.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            t = t.astype(p.dtype)
    return (t == p).astype(np.float64)


def _binary_matches(y_true, y_pred, threshold=0.5) -> np.ndarray:
    t, p = _binary_inputs(y_true, y_pred, sparse_ok=False)
    return (t.astype(np.float64) == (p > threshold)).astype(np.float64)


def binary_accuracy(y_true: ArrayLike, y_pred: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """Per-sample binary accuracy: ``mean(y_true == (y_pred > threshold))``.

    Parameters
    ----------
    y_true : array-like, shape (N,) or (N, K)
        0/1 labels.
    y_pred : array-like, shape like ``y_true``
        Probabilities (or logits, with ``threshold=0``).
    threshold : float, default 0.5

    Returns
    -------
    ndarray, shape (N,)
        The fraction of each sample's K labels that is right.
    """
    return _per_sample(_binary_matches(y_true, y_pred, threshold)).reshape(-1)


def categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Per-sample categorical accuracy: ``argmax(y_true) == argmax(y_pred)``.

    Parameters
    ----------
    y_true : array-like, shape (N, ..., C)
        One-hot labels.
    y_pred : array-like, shape (N, ..., C)
        Probabilities or logits (the argmax is the same).

    Returns
    -------
    ndarray, shape (N, ...)
        1.0 where the predicted class is right, else 0.0.
    """
    labels, p = _onehot_labels(y_true, y_pred, "categorical accuracy",
                               "sparse_categorical_accuracy")
    return (labels == _argmax(p)).astype(np.float64)


def _onehot_labels(y_true, y_pred, what: str, sparse_form: str):
    """(argmax of the one-hot ``y_true``, ``y_pred`` as an array), checked for ``what``."""
    t = _array(y_true, "y_true")
    p = _array(y_pred, "y_pred")
    _check_lengths(t, p)
    if p.ndim < 2:
        raise ValueError(f"y_pred must have a class axis, shape (N, C), received shape "
                         f"{p.shape}")
    if t.shape != p.shape:
        hint = f" (integer labels: use {sparse_form})" if _is_sparse(t, p) else ""
        raise ValueError(f"{what} needs one-hot y_true shaped like y_pred {p.shape}, "
                         f"received y_true shape {t.shape}{hint}")
    return np.argmax(t, axis=-1), p


def sparse_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Per-sample sparse categorical accuracy: ``y_true == argmax(y_pred)``.

    Parameters
    ----------
    y_true : array-like of int, shape (N, ...) or (N, ..., 1)
        Class labels in ``[0, C)``.
    y_pred : array-like, shape (N, ..., C)
        Probabilities or logits.

    Returns
    -------
    ndarray, shape (N, ...)
    """
    labels, p = _sparse_labels(y_true, y_pred, "sparse categorical accuracy",
                               "categorical_accuracy")
    return (labels == _argmax(p)).astype(np.float64)


def _sparse_labels(y_true, y_pred, what: str, onehot_form: str):
    """(the integer labels ``y_true``, shape ``y_pred.shape[:-1]``; ``y_pred`` as an
    array), checked for ``what``."""
    t = _array(y_true, "y_true")
    p = _array(y_pred, "y_pred")
    _check_lengths(t, p)
    if p.ndim < 2:
        raise ValueError(f"y_pred must have a class axis, shape (N, C), received shape "
                         f"{p.shape}")
    if t.shape == p.shape[:-1] + (1,) and t.shape != p.shape[:-1]:
        t = t[..., 0]
    if t.shape != p.shape[:-1]:
        hint = f" (one-hot labels: use {onehot_form})" if t.shape == p.shape else ""
        raise ValueError(f"{what} needs integer labels of shape "
                         f"{p.shape[:-1]} or {p.shape[:-1] + (1,)} for y_pred of shape "
                         f"{p.shape}, received y_true shape {np.shape(y_true)}{hint}")
    labels = _integral(t, "y_true")
    _check_range(labels, p.shape[-1], "y_true")
    return labels, p


def _in_top_k(labels: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """1.0 where the label's score is among the k highest, TensorFlow's ``in_top_k`` (Keras
    3's default backend): its rank is 1 plus the number of classes scored strictly higher
    (ties count for the label), and a sample with any non-finite score (NaN, +-inf) is a
    miss."""
    at = np.take_along_axis(p, labels[..., None], axis=-1)
    rank = 1 + np.sum(p > at, axis=-1)
    hit = rank <= k
    if p.dtype.kind == "f":
        hit &= np.isfinite(p).all(axis=-1)
    return hit.astype(np.float64)


def _argmax(p: np.ndarray) -> np.ndarray:
    """The predicted class along the last axis as TensorFlow's ``argmax`` (Keras 3's default
    backend) picks it: NaN scores are passed over (NumPy's argmax stops at the first NaN;
    an all-NaN sample gives class 0)."""
    if p.dtype.kind == "f":
        p = np.where(np.isnan(p), -np.inf, p)
    return np.argmax(p, axis=-1)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive int, received k={k!r}")
    return int(k)


def top_k_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike, k: int = 5
                               ) -> np.ndarray:
    """Per-sample top-k accuracy with one-hot labels: 1.0 where the true class is among
    the ``k`` highest scores (ties count for it, as Keras's ``in_top_k``).

    Parameters
    ----------
    y_true : array-like, shape (N, ..., C), one-hot
    y_pred : array-like, shape (N, ..., C)
    k : int, default 5

    Returns
    -------
    ndarray, shape (N, ...)
    """
    k = _check_k(k)
    labels, p = _onehot_labels(y_true, y_pred, "top-k categorical accuracy",
                               "sparse_top_k_categorical_accuracy")
    return _in_top_k(labels, p, k)


def sparse_top_k_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike, k: int = 5
                                      ) -> np.ndarray:
    """Per-sample top-k accuracy with integer labels (shape (N, ...) or (N, ..., 1));
    otherwise as :func:`top_k_categorical_accuracy`."""
    k = _check_k(k)
    labels, p = _sparse_labels(y_true, y_pred, "sparse top-k categorical accuracy",
                               "top_k_categorical_accuracy")
    return _in_top_k(labels, p, k)


# ------------------------------------------------------------------ mean-based metrics
class MeanSquaredError(MeanMetricWrapper):
    """Mean squared error over all samples seen, weighted by ``sample_weight``: one weight
    per sample (shape (N,) or (N, 1)), per timestep (the shape of ``y_pred`` without its
    last axis: each weight weighs the mean over that axis, as Keras) or per element."""

    def __init__(self, name: Optional[str] = None):
        super().__init__(_squared_errors, name=name or "mean_squared_error")

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name}


class MeanAbsoluteError(MeanMetricWrapper):
    """Mean absolute error over all samples seen, weighted by ``sample_weight`` as
    :class:`MeanSquaredError`."""

    def __init__(self, name: Optional[str] = None):
        super().__init__(_absolute_errors, name=name or "mean_absolute_error")

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name}


def counts_per_run(metric: "Metric", output_shape: Sequence[Optional[int]],
                   y_true: np.ndarray) -> bool:
    """Whether fit may update ``metric`` once per run of compiled steps: its
    ``_counts_for`` says so, and its ``update_state`` is that of the class that declared
    ``_counts`` (a user's subclass changing ``update_state`` inherits the flag but not what
    it promises)."""
    cls = type(metric)
    owner = next(c for c in cls.__mro__ if "_counts" in vars(c) or "_counts_for" in vars(c))
    if "update_state" in vars(metric) or cls.update_state is not owner.update_state:
        return False
    return metric._counts_for(output_shape, y_true)


def _fraction_counts(output_shape: Sequence[Optional[int]]) -> bool:
    """Whether per-sample scores k / K (k of a sample's K elements) sum exactly, whatever
    the grouping of the samples: when K is a power of 2 (1 included), each score is a
    multiple of 1 / K and their sums are exact in float64; otherwise they are rounded
    (2 / 3), and the last bit of a sum depends on how the batches were grouped."""
    k = int(np.prod([d for d in output_shape[1:]], dtype=np.int64)) \
        if all(d is not None for d in output_shape[1:]) else 0
    return k > 0 and k & (k - 1) == 0


class BinaryAccuracy(MeanMetricWrapper):
    """How often ``(y_pred > threshold)`` equals the 0/1 label ``y_true``.

    For multi-label outputs (N, K) every one of the K labels counts, as in Keras.

    Parameters
    ----------
    threshold : float, default 0.5
        Use 0 when ``y_pred`` holds logits.
    name : str, default "binary_accuracy"

    Examples
    --------
    >>> BinaryAccuracy()([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]])
    0.75
    """

    _counts = True

    def _counts_for(self, output_shape: Sequence[Optional[int]], y_true: np.ndarray) -> bool:
        return _fraction_counts(output_shape)

    def __init__(self, threshold: float = 0.5, name: Optional[str] = None):
        if not isinstance(threshold, numbers.Real) or isinstance(threshold, bool):
            raise TypeError(f"threshold must be a number, received {threshold!r}")
        self.threshold = float(threshold)
        super().__init__(_binary_matches, name=name or "binary_accuracy",
                         threshold=self.threshold)

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold}


class CategoricalAccuracy(MeanMetricWrapper):
    """How often ``argmax(y_pred)`` equals ``argmax(y_true)`` (one-hot labels).

    Parameters
    ----------
    name : str, default "categorical_accuracy"

    Examples
    --------
    >>> CategoricalAccuracy()([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]])
    0.5
    """

    _counts = True

    def __init__(self, name: Optional[str] = None):
        super().__init__(categorical_accuracy, name=name or "categorical_accuracy")

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name}


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often ``argmax(y_pred)`` equals the integer label ``y_true``.

    ``y_true`` has shape (N,) or (N, 1); ``y_pred`` (N, C) holds probabilities or logits.

    Parameters
    ----------
    name : str, default "sparse_categorical_accuracy"

    Examples
    --------
    >>> SparseCategoricalAccuracy()([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]])
    0.5
    """

    _counts = True

    def __init__(self, name: Optional[str] = None):
        super().__init__(sparse_categorical_accuracy,
                         name=name or "sparse_categorical_accuracy")

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name}


class TopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the true class (one-hot ``y_true``) is among the ``k`` highest scores
    of ``y_pred`` (Keras's ``TopKCategoricalAccuracy``; ties count for the true class).

    Parameters
    ----------
    k : int, default 5
    name : str, default "top_k_categorical_accuracy"

    Examples
    --------
    >>> TopKCategoricalAccuracy(k=1)([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]])
    0.5
    """

    _counts = True

    def __init__(self, k: int = 5, name: Optional[str] = None):
        self.k = _check_k(k)
        super().__init__(top_k_categorical_accuracy,
                         name=name or "top_k_categorical_accuracy", k=self.k)

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "k": self.k}


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """:class:`TopKCategoricalAccuracy` with integer labels (shape (N,) or (N, 1)).

    Parameters
    ----------
    k : int, default 5
    name : str, default "sparse_top_k_categorical_accuracy"
    """

    _counts = True

    def __init__(self, k: int = 5, name: Optional[str] = None):
        self.k = _check_k(k)
        super().__init__(sparse_top_k_categorical_accuracy,
                         name=name or "sparse_top_k_categorical_accuracy", k=self.k)

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "k": self.k}


class Accuracy(MeanMetricWrapper):
    """How often ``y_pred`` equals ``y_true`` exactly, element by element
    (``keras.metrics.Accuracy``).

    Each sample scores the fraction of its elements that match (:func:`accuracy`); the
    result is the weighted mean of these scores over all samples seen. Meant for
    predictions that are labels already (class indices, rounded outputs): scores or
    probabilities almost never equal their targets.

    This is not what ``compile(metrics=["accuracy"])`` gives: that string picks binary,
    categorical or sparse categorical accuracy (thresholded or argmax predictions) from
    the loss and shapes, as in Keras (so do ``"Accuracy"`` and ``"ACC"``: Keras 3's compile
    lower-cases the name). This class, or ``{"class_name": "Accuracy"}``, is the exact
    comparison.

    Parameters
    ----------
    name : str, default "accuracy"
    dtype : floating-point dtype, optional
        Of the result, e.g. "float32" (Keras's default); None: float64. The state is
        always accumulated in float64.

    Notes
    -----
    With ``y_true`` and ``y_pred`` of shape (N,), every element is one sample, as in
    Keras. ``sample_weight`` may also weigh each element (the shape of ``y_pred``).

    Examples
    --------
    >>> m = Accuracy()
    >>> m.update_state([[1], [2], [3], [4]], [[0], [2], [3], [4]])
    >>> m.result()
    0.75
    >>> m.reset_state()
    >>> m.update_state([[1], [2], [3], [4]], [[0], [2], [3], [4]], sample_weight=[1, 1, 0, 0])
    >>> m.result()
    0.5
    """

    # a sample of K elements scores k / K: counts for a power-of-2 K (_fraction_counts)
    _counts = False

    def _counts_for(self, output_shape: Sequence[Optional[int]], y_true: np.ndarray) -> bool:
        return _fraction_counts(output_shape)

    def __init__(self, name: Optional[str] = None, dtype: Any = None):
        self.dtype = _check_dtype(dtype)
        super().__init__(_exact_matches, name=name or "accuracy")

    def result(self) -> float:
        return _in_dtype(super().result(), self.dtype)

    def get_config(self) -> Dict[str, Any]:
        return _dtype_config({"name": self.name}, self.dtype)


class _AutoAccuracy(Metric):
    """``"accuracy"`` when neither the loss nor the output shape decides: chosen at the
    first update from the shapes, by Keras 3's rule (y_pred last axis 1 -> binary; y_true
    of lower rank or last axis 1 -> sparse categorical; else categorical)."""

    _default_name = "accuracy"
    _counts = True

    def __init__(self, name: Optional[str] = None):
        super().__init__(name)
        self._inner: Optional[Metric] = None

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        if self._inner is None:
            t = _array(y_true, "y_true").shape
            p = _array(y_pred, "y_pred").shape
            if p[-1] == 1:
                self._inner = BinaryAccuracy(name=self.name)
            elif len(t) < len(p) or t[-1] == 1:
                self._inner = SparseCategoricalAccuracy(name=self.name)
            else:
                self._inner = CategoricalAccuracy(name=self.name)
        self._inner.update_state(y_true, y_pred, sample_weight)

    def result(self) -> float:
        return 0.0 if self._inner is None else self._inner.result()

    def reset_state(self) -> None:
        if self._inner is not None:
            self._inner.reset_state()


# =============================================================================== confusion counts
def _parse_thresholds(thresholds) -> List[float]:
    if thresholds is None:
        return [0.5]
    if isinstance(thresholds, np.ndarray):
        values = thresholds.reshape(-1).tolist()     # (a 0-d array is one threshold)
    elif isinstance(thresholds, (list, tuple)):
        values = list(thresholds)
    else:
        values = [thresholds]
    if not values:
        raise ValueError("thresholds must not be empty")
    out = []
    for t in values:
        if not isinstance(t, numbers.Real) or isinstance(t, bool) or not 0 <= t <= 1:
            raise ValueError(f"thresholds must be numbers in [0, 1], received {thresholds!r}")
        out.append(float(t))
    return out


class _ThresholdCounts(Metric):
    """True/false positives and false negatives at each threshold (Keras's
    ``update_confusion_matrix_variables``): an element is predicted positive when
    ``y_pred > threshold``, and is a true label when ``y_true`` is non-zero."""

    _counts = True

    def __init__(self, thresholds: Union[None, float, Sequence[float]] = None,
                 top_k: Optional[int] = None, class_id: Optional[int] = None,
                 name: Optional[str] = None):
        super().__init__(name)
        # as given (one number or a list), in Python floats: the config is written as JSON
        parsed = None if thresholds is None else _parse_thresholds(thresholds)
        self.init_thresholds = parsed if parsed is None or isinstance(
            thresholds, (list, tuple)) or np.ndim(thresholds) else parsed[0]
        if top_k is not None and (not isinstance(top_k, numbers.Integral)
                                  or isinstance(top_k, bool) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer, received {top_k!r}")
        self.top_k = None if top_k is None else int(top_k)
        # Keras: with top_k and no thresholds, the top k predictions are the positives
        # whatever their values
        self.thresholds = ([-np.inf] if thresholds is None and top_k is not None
                           else _parse_thresholds(thresholds))
        if class_id is not None and (not isinstance(class_id, numbers.Integral)
                                     or isinstance(class_id, bool) or class_id < 0):
            raise ValueError(f"class_id must be a non-negative integer, received {class_id!r}")
        self.class_id = None if class_id is None else int(class_id)
        self.reset_state()

    def reset_state(self) -> None:
        k = len(self.thresholds)
        self.true_positives = np.zeros(k)
        self.false_positives = np.zeros(k)
        self.false_negatives = np.zeros(k)

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike,
                     sample_weight: ArrayLike = None) -> None:
        """Accumulate the counts of one batch.

        Parameters
        ----------
        y_true : array-like, shape (N,), (N, 1) or (N, K)
            0/1 labels shaped like ``y_pred`` (non-zero counts as positive). Integer
            class labels (N,) or (N, 1) against ``y_pred`` of shape (N, C > 1) are
            one-hot encoded first.
        y_pred : array-like, shape (N,), (N, 1) or (N, K)
            Scores in [0, 1] (probabilities).
        sample_weight : array-like, optional
            A scalar, shape (N,) or (N, 1), the shape of ``y_pred``, or a shape
            (N, ...) that broadcasts to it once padded with trailing axes of 1 (per
            timestep: (N, T) for ``y_pred`` (N, T, K)).
        """
        t, p = _binary_inputs(y_true, y_pred, sparse_ok=True)
        w = _element_weights(sample_weight, p.shape)
        if self.top_k is not None:   # along the last axis, all but the k largest become
            keep = np.argsort(-p, axis=-1, kind="stable")[..., :self.top_k]   # -inf (Keras)
            filtered = np.full(p.shape, -np.inf, p.dtype if p.dtype.kind == "f" else None)
            np.put_along_axis(filtered, keep, np.take_along_axis(p, keep, axis=-1), axis=-1)
            p = filtered
        if self.class_id is not None:
            if p.ndim < 2:
                raise ValueError(f"class_id={self.class_id} needs y_pred with a class axis, "
                                 f"shape (N, C), received shape {p.shape}")
            if self.class_id >= p.shape[-1]:
                raise ValueError(f"class_id={self.class_id} is out of range for y_pred with "
                                 f"{p.shape[-1]} classes")
            t, p = t[..., self.class_id], p[..., self.class_id]
            w = None if w is None else w[..., self.class_id]
        label = (t != 0).reshape(-1)
        # in float32, as Keras, which casts the scores to its float32 state (float32 0.3
        # is not above 0.3 there, nor is float64 0.30000001)
        thr = np.asarray(self.thresholds, np.float32)
        pred = p.astype(np.float32).reshape(1, -1) > thr.reshape(-1, 1)  # (T, M)
        w = np.ones(label.shape) if w is None else w.reshape(-1)
        self.true_positives += (pred & label) @ w
        self.false_positives += (pred & ~label) @ w
        self.false_negatives += (~pred & label) @ w

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "thresholds": self.init_thresholds, "top_k": self.top_k,
                "class_id": self.class_id}

    def _out(self, values: np.ndarray) -> Result:
        return float(values[0]) if len(self.thresholds) == 1 else values


class Precision(_ThresholdCounts):
    """Precision ``tp / (tp + fp)`` of binary or multi-label predictions.

    Every element of ``y_pred`` is one prediction, positive when ``> threshold``
    (Keras semantics). ``class_id`` restricts the metric to one column.

    Parameters
    ----------
    thresholds : float or sequence of float in [0, 1], default 0.5
        One precision per threshold; ``result()`` is a float for a single threshold,
        else an array. Use 0 when ``y_pred`` holds logits.
    top_k : int, optional
        Only each row's ``top_k`` largest predictions can be positive (the others count
        as below every threshold); without ``thresholds`` they all are positive. Ties go
        to the lower class index.
    class_id : int, optional
        Only this column of ``y_pred`` (N, C) (and of ``y_true``) is scored, after the
        ``top_k`` filter.
    name : str, default "precision"

    Examples
    --------
    >>> m = Precision()
    >>> m.update_state([0, 1, 1, 1], [1, 0, 1, 1])
    >>> round(m.result(), 4)
    0.6667
    """

    _default_name = "precision"

    def result(self) -> Result:
        return self._out(_safe_div(self.true_positives,
                                   self.true_positives + self.false_positives))


class Recall(_ThresholdCounts):
    """Recall ``tp / (tp + fn)`` of binary or multi-label predictions.

    Parameters and semantics as :class:`Precision`; default name "recall".

    Examples
    --------
    >>> m = Recall()
    >>> m.update_state([0, 1, 1, 1], [1, 0, 1, 1])
    >>> round(m.result(), 4)
    0.6667
    """

    _default_name = "recall"

    def result(self) -> Result:
        return self._out(_safe_div(self.true_positives,
                                   self.true_positives + self.false_negatives))


class FBetaScore(Metric):
    """F-beta score, per class or averaged, like ``keras.metrics.FBetaScore``.

    ``F = (1 + beta**2) * P * R / (beta**2 * P + R)`` for precision P and recall R, i.e.
    ``(1 + beta**2) tp / ((1 + beta**2) tp + beta**2 fn + fp)``: recall counts ``beta``
    times as much as precision. ``beta = 1`` is the F1 score (:class:`F1Score`).

    Parameters
    ----------
    average : {None, "micro", "macro", "weighted"}, default None
        None: one score per class (``result()`` is an array of shape (C,)). "micro": from
        the true/false positives and false negatives summed over classes. "macro": the
        unweighted mean of the per-class scores. "weighted": their mean weighted by
        support (the weighted number of true instances of each class).
    beta : float > 0, default 1.0
    threshold : float in (0, 1], optional
        Elements of ``y_pred`` above it are positive. None (multi-class): the row's
        maximum is positive (argmax; ties mark every maximal class, and an all-zero row
        marks none, as in Keras).
    name : str, default "fbeta_score"
    dtype : floating-point dtype, optional
        Of the result, e.g. "float32" (Keras's default); None: float64. The counts are
        always accumulated in float64.

    Notes
    -----
    ``y_true`` is one-hot / multi-hot (N, C) as in Keras; integer labels (N,) or (N, 1)
    are also accepted and one-hot encoded (when C > 1), and 0/1 labels (N,) go with a
    single sigmoid column (N, 1). Divisions by zero give 0; unlike Keras no
    ``epsilon`` is added to the denominators, so results are exact (Keras's differ by
    about 1e-7). Keras wants ``beta`` as a Python float; any positive real number is
    accepted here.

    Examples
    --------
    >>> m = FBetaScore(beta=2.0, threshold=0.5)
    >>> m.update_state([[1, 1, 1], [1, 0, 0], [1, 1, 0]],
    ...                [[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]])
    >>> np.round(m.result(), 4)
    array([0.3846, 0.9091, 0.8333])
    """

    _default_name = "fbeta_score"
    _counts = True

    def _counts_for(self, output_shape: Sequence[Optional[int]], y_true: np.ndarray) -> bool:
        # the counts add the label values themselves: sums of soft labels (0.9, 0.0333)
        # depend on how the batches are grouped
        y = np.asarray(y_true)
        return y.dtype.kind in "biu" or bool(np.all((y == 0) | (y == 1)))

    def __init__(self, average: Optional[str] = None, beta: float = 1.0,
                 threshold: Optional[float] = None, name: Optional[str] = None,
                 dtype: Any = None):
        super().__init__(name)
        _check_average(average)
        beta = check_real(beta, "beta", low=0, low_open=True, high=1e150)  # beta**2 finite
        if threshold is not None:
            if not isinstance(threshold, numbers.Real) or isinstance(threshold, bool):
                raise TypeError(f"threshold must be a number or None, received {threshold!r}")
            if not 0 < threshold <= 1:
                raise ValueError(f"threshold must verify 0 < threshold <= 1, received "
                                 f"{threshold!r}")
            threshold = float(threshold)
        self.average = average
        self.beta = beta
        self.threshold = threshold
        self.dtype = _check_dtype(dtype)
        self.num_classes: Optional[int] = None
        self.reset_state()

    def reset_state(self) -> None:
        k = self.num_classes or 0
        self.true_positives = np.zeros(k)
        self.false_positives = np.zeros(k)
        self.false_negatives = np.zeros(k)
        self.support = np.zeros(k)

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike,
                     sample_weight: ArrayLike = None) -> None:
        """Accumulate per-class counts.

        Parameters
        ----------
        y_true : array-like, shape (N, C)
            One-hot (multi-class) or multi-hot (multi-label) labels; or integer labels
            (N,) / (N, 1) when C > 1.
        y_pred : array-like, shape (N, C)
            Scores.
        sample_weight : array-like, shape (N,) or (N, 1), or a scalar, optional
        """
        what = type(self).__name__
        t = _array(y_true, "y_true")
        given = _array(y_pred, "y_pred")
        p = given.astype(np.float64)
        _check_lengths(t, p)
        if p.ndim != 2:
            raise ValueError(f"{what} expects y_pred of shape (N, C), received shape "
                             f"{p.shape}")
        if t.shape != p.shape and _is_sparse(t, p):
            t = _one_hot_sparse(t, p)
        elif t.shape + (1,) == p.shape:  # binary labels (N,) against (N, 1)
            t = t.reshape(p.shape)
        if t.shape != p.shape:
            raise ValueError(f"{what} expects y_true shaped like y_pred {p.shape} (or "
                             f"integer labels of shape ({p.shape[0]},)), received "
                             f"{t.shape}")
        if self.num_classes is not None and p.shape[1] != self.num_classes:
            raise ValueError(f"y_pred has {p.shape[1]} classes but this {what} was "
                             f"built for {self.num_classes}")
        w = _weights(sample_weight, p.shape[0])  # checked before any state changes
        w = np.ones(p.shape[0]) if w is None else w
        if self.num_classes is None:
            self.num_classes = p.shape[1]
            self.reset_state()
        if self.threshold is None:
            pred = (p >= np.max(p, axis=-1, keepdims=True)) & (np.abs(p) > 1e-9) \
                if p.size else np.zeros(p.shape, bool)
        else:
            # in float32, as Keras, which casts the predictions to it: float32 0.3 is not
            # above 0.3 there, nor is float64 0.30000001
            pred = given.astype(np.float32) > np.float32(self.threshold)
        pred = pred.astype(np.float64)
        t = t.astype(np.float64)
        self.true_positives += w @ (pred * t)
        self.false_positives += w @ (pred * (1 - t))
        self.false_negatives += w @ ((1 - pred) * t)
        self.support += w @ t

    def result(self) -> Result:
        if self.num_classes is None:
            return _in_dtype(np.zeros(0) if self.average is None else 0.0, self.dtype)
        score = _prf(self.true_positives, self.false_positives, self.false_negatives,
                     self.support, self.average, self.beta)[2]
        return _in_dtype(_scalar_or_array(score), self.dtype)

    def get_config(self) -> Dict[str, Any]:
        return _dtype_config({"name": self.name, "average": self.average, "beta": self.beta,
                              "threshold": self.threshold}, self.dtype)


class F1Score(FBetaScore):
    """F1 score, per class or averaged, like ``keras.metrics.F1Score``: the
    :class:`FBetaScore` with ``beta = 1``, ``2 P R / (P + R) = 2 tp / (2 tp + fp + fn)``.

    Parameters
    ----------
    average : {None, "micro", "macro", "weighted"}, default None
        As :class:`FBetaScore`.
    threshold : float in (0, 1], optional
        As :class:`FBetaScore`: None takes the row's argmax.
    name : str, default "f1_score"
    dtype : floating-point dtype, optional
        As :class:`FBetaScore`.

    Notes
    -----
    Inputs and zero divisions as :class:`FBetaScore`.

    Examples
    --------
    >>> m = F1Score(threshold=0.5)
    >>> m.update_state([[1, 1, 1], [1, 0, 0], [1, 1, 0]],
    ...                [[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]])
    >>> np.round(m.result(), 4)
    array([0.5   , 0.8   , 0.6667])
    """

    _default_name = "f1_score"

    def __init__(self, average: Optional[str] = None, threshold: Optional[float] = None,
                 name: Optional[str] = None, dtype: Any = None):
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name,
                         dtype=dtype)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        del config["beta"]
        return config


_AUC_EPSILON = 1e-7      # Keras's backend.epsilon(): the end thresholds -eps and 1 + eps
_AUC_CURVES = ("ROC", "PR")
_AUC_SUMMATIONS = ("interpolation", "minoring", "majoring")


def _choice(value, name: str, choices: Sequence[str]) -> str:
    """``value`` as spelled in ``choices``, matched in any case."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(choices)}, received "
                        f"{value!r}")
    for c in choices:
        if value.lower() == c.lower():
            return c
    raise ValueError(f"{name} must be one of {list(choices)} (in any case), received "
                     f"{value!r}")


class AUC(Metric):
    """Area under the ROC or precision-recall curve, approximated on a grid of thresholds
    (``keras.metrics.AUC``).

    At each threshold ``t`` an element is predicted positive when ``y_pred > t``; the
    weighted true/false positives and true/false negatives are accumulated per threshold
    (per label too with ``multi_label``). ``result()`` sums the area between consecutive
    thresholds' points of the curve.

    Parameters
    ----------
    num_thresholds : int > 1, default 200
        The thresholds are ``-1e-7``, ``i / (num_thresholds - 1)`` for ``i = 1 ..
        num_thresholds - 2``, and ``1 + 1e-7``, as in Keras (the end points catch
        predictions of exactly 0 and 1). Ignored when ``thresholds`` is given.
    curve : {"ROC", "PR"}, default "ROC"
        (any case) "ROC": true positive rate (y) against false positive rate (x). "PR":
        precision (y) against recall (x).
    summation_method : {"interpolation", "minoring", "majoring"}, default "interpolation"
        (any case) Each interval between consecutive thresholds adds ``|dx| * height``,
        the height being: "interpolation", the mean of its two ends for ROC (trapezoid);
        for PR, Keras's interpolation after Davis & Goadrich (2006), where the true
        positives and the predicted positives vary linearly over the interval, not
        precision itself. "minoring": the lower of the two ends (a lower bound).
        "majoring": the higher (an upper bound).
    name : str, default "auc"
    dtype : floating-point dtype, optional
        Of the result, e.g. "float32" (Keras's default); None: float64. The counts are
        always accumulated in float64.
    thresholds : sequence of float in [0, 1], optional
        The thresholds to use instead (sorted here), between the end points ``-1e-7``
        and ``1 + 1e-7``; ``num_thresholds`` becomes ``len(thresholds) + 2``.
    multi_label : bool, default False
        True: ``y_pred`` (N, L) holds L independent labels, each with its own curve, and
        the result is the mean of the L areas (weighted by ``label_weights`` if given).
        False: every element of ``y_pred`` is one binary prediction, all labels flattened
        into one curve (use this for multi-class data).
    num_labels : int, optional
        L, with ``multi_label=True`` only; by default it is taken from the first batch.
    label_weights : sequence of float >= 0, optional
        One weight per label (the last axis of ``y_pred``). With ``multi_label`` they
        weight the labels' areas in the mean; without, they weight each element's counts
        by its label, like a sample weight.
    from_logits : bool, default False
        ``y_pred`` holds logits: the sigmoid is applied first.

    Notes
    -----
    ``y_true`` must hold values in [0, 1]; any non-zero value counts as a positive (Keras
    casts the labels to bool and does not check them). ``y_pred`` is clipped to [0, 1]
    (after the sigmoid, with ``from_logits``), as Keras does on its default, evenly
    spaced thresholds, so a prediction below 0 is positive at the first threshold and the
    curve always runs from (1, 1) to (0, 0); Keras leaves predictions unclipped with
    unevenly spaced ``thresholds``. A NaN prediction is negative at every threshold.
    As Keras, predictions are compared in float32, and placed among evenly spaced
    thresholds (the default ones, or given ones evenly spaced to within 1e-7) by
    ``ceil(p * (num_thresholds - 1))`` (so a float32 0.3 is not above the threshold
    0.3); the counts accumulate in float64. Divisions by zero (a rate with nothing to
    count) give 0, as Keras's ``divide_no_nan``.

    Examples
    --------
    Keras's example: the thresholds are [-1e-7, 0.5, 1 + 1e-7], the true positive rates
    [1, 0.5, 0] and the false positive rates [1, 0, 0], so the trapezoids sum to 0.75:

    >>> m = AUC(num_thresholds=3)
    >>> m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9])
    >>> m.result()
    0.75
    >>> m.reset_state()
    >>> m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9], sample_weight=[1, 0, 0, 1])
    >>> m.result()
    1.0
    """

    _default_name = "auc"

    def __init__(self, num_thresholds: int = 200, curve: str = "ROC",
                 summation_method: str = "interpolation", name: Optional[str] = None,
                 dtype: Any = None, thresholds: Optional[Sequence[float]] = None,
                 multi_label: bool = False, num_labels: Optional[int] = None,
                 label_weights: Optional[Sequence[float]] = None, from_logits: bool = False):
        super().__init__(name)
        if not isinstance(num_thresholds, numbers.Integral) or isinstance(num_thresholds,
                                                                          bool):
            raise TypeError(f"num_thresholds must be an integer > 1, received "
                            f"{num_thresholds!r}")
        if thresholds is None:
            if num_thresholds <= 1:
                raise ValueError(f"num_thresholds must be an integer > 1, received "
                                 f"num_thresholds={num_thresholds!r}")
            self._given_thresholds: Optional[List[float]] = None
            inner = [i / (num_thresholds - 1) for i in range(1, num_thresholds - 1)]
        else:
            self._given_thresholds = sorted(_parse_thresholds(thresholds))
            inner = self._given_thresholds
        self._thresholds = np.array([-_AUC_EPSILON] + inner + [1 + _AUC_EPSILON])
        self.num_thresholds = len(self._thresholds)
        # Keras places predictions by the evenly spaced formula (update_state) also for
        # given thresholds that are evenly spaced, to within its epsilon
        n = self.num_thresholds
        self._evenly = self._given_thresholds is None or (n >= 3 and np.allclose(
            [0.0] + inner + [1.0], np.arange(n, dtype=np.float32) / (n - 1),
            atol=_AUC_EPSILON))
        self.curve = _choice(curve, "curve", _AUC_CURVES)
        self.summation_method = _choice(summation_method, "summation_method",
                                        _AUC_SUMMATIONS)
        self.dtype = _check_dtype(dtype)
        self.multi_label = check_bool(multi_label, "multi_label")
        self.from_logits = check_bool(from_logits, "from_logits")
        num_labels = _check_num_classes(num_labels, "num_labels")
        if num_labels is not None and not self.multi_label:
            raise ValueError(f"num_labels is for multi_label=True only, received "
                             f"num_labels={num_labels!r} with multi_label=False")
        self.num_labels: Optional[int] = num_labels
        self.label_weights: Optional[np.ndarray] = None
        if label_weights is not None:
            lw = np.asarray(label_weights)
            if lw.dtype.kind not in "iuf":
                raise TypeError(f"label_weights must be numbers, received "
                                f"{label_weights!r}")
            if lw.ndim != 1 or lw.size == 0:
                raise ValueError(f"label_weights must be a non-empty 1-D sequence, one "
                                 f"weight per label, received shape {lw.shape}")
            if not np.all(np.isfinite(lw) & (lw >= 0)):
                raise ValueError(f"label_weights must be finite and non-negative, received "
                                 f"{label_weights!r}")
            if num_labels is not None and lw.size != num_labels:
                raise ValueError(f"label_weights must hold num_labels={num_labels} "
                                 f"weights, received {lw.size}")
            self.label_weights = lw.astype(np.float64)
        # the number of labels the state counts for: 1 (flattened) unless multi_label
        self._labels: Optional[int] = num_labels if self.multi_label else 1
        self.reset_state()

    @property
    def thresholds(self) -> List[float]:
        """All the thresholds, end points included (as Keras's ``AUC.thresholds``)."""
        return self._thresholds.tolist()

    @property
    def _counts(self) -> bool:   # label weights on flattened labels make float sums
        return self.multi_label or self.label_weights is None

    def reset_state(self) -> None:
        if self._labels is None:          # multi_label: built at the first update
            self.true_positives = self.false_positives = None
            self.true_negatives = self.false_negatives = None
            return
        shape = (self.num_thresholds,) if not self.multi_label else (
            self.num_thresholds, self._labels)
        self.true_positives = np.zeros(shape)
        self.false_positives = np.zeros(shape)
        self.true_negatives = np.zeros(shape)
        self.false_negatives = np.zeros(shape)

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike,
                     sample_weight: ArrayLike = None) -> None:
        """Accumulate the counts of one batch at every threshold.

        Parameters
        ----------
        y_true : array-like, shape like ``y_pred``
            Labels in [0, 1]; non-zero is positive.
        y_pred : array-like, shape (N,), (N, 1) or (N, L) (any shape unless
            ``multi_label``, which needs (N, L))
            Probabilities (logits with ``from_logits=True``).
        sample_weight : array-like, optional
            A scalar, shape (N,) or (N, 1), the shape of ``y_pred``, or a shape
            (N, ...) that broadcasts to it once padded with trailing axes of 1 (per
            timestep: (N, T) for ``y_pred`` (N, T, K)).
        """
        t, p = _binary_inputs(y_true, y_pred, sparse_ok=False)
        if t.size and not np.all((t >= 0) & (t <= 1)):
            raise ValueError(f"y_true must hold labels in [0, 1], received values in "
                             f"[{t.min()}, {t.max()}]")
        if self.multi_label:
            if np.ndim(y_pred) != 2 or np.shape(y_pred)[1] == 0:
                raise ValueError(f"AUC(multi_label=True) expects y_pred of shape (N, L), "
                                 f"L >= 1, received shape {np.shape(y_pred)}")
            t, p = t.reshape(np.shape(y_pred)), p.reshape(np.shape(y_pred))
            labels = p.shape[1]
            if self._labels is not None and labels != self._labels:
                raise ValueError(f"y_pred has {labels} labels but this AUC counts "
                                 f"{self._labels}")
        else:
            labels = p.shape[-1] if p.ndim > 1 else 1
        if self.label_weights is not None and self.label_weights.size != labels:
            raise ValueError(f"label_weights holds {self.label_weights.size} weights but "
                             f"y_pred has {labels} labels (shape {p.shape})")
        w = _element_weights(sample_weight, p.shape)
        if self.label_weights is not None and not self.multi_label:
            lw = np.broadcast_to(self.label_weights, p.shape) if p.ndim > 1 else \
                np.full(p.shape, self.label_weights[0])
            w = lw if w is None else w * lw
        p = p.astype(np.float64)
        if self.from_logits:
            p = _sigmoid(p)
        # in float32, as Keras, which casts the predictions to its float32 state (a
        # float32 0.3 is above the threshold 0.3 in float64, not in float32)
        p = np.clip(p.astype(np.float32), np.float32(0), np.float32(1))
        # how many thresholds lie below each prediction: it is positive at those. Evenly
        # spaced, Keras's count is max(ceil(p * (T - 1)), 1) in float32 (-1e-7 is below
        # every clipped prediction); other given thresholds, p > t in float32
        if self._evenly:
            below = np.maximum(np.ceil(p * np.float32(self.num_thresholds - 1)), 1)
            below = np.where(np.isnan(p), 0, below).astype(np.int64)
        else:
            below = np.searchsorted(self._thresholds.astype(np.float32),
                                    np.where(np.isnan(p), -np.inf, p), side="left")
        if self._labels is None:
            self._labels = labels
            self.reset_state()
        cols = labels if self.multi_label else 1
        below = below.reshape(-1, cols)
        pos = (t != 0).reshape(-1, cols)
        w = np.ones(pos.shape) if w is None else np.asarray(w, np.float64).reshape(-1, cols)
        k = self.num_thresholds + 1
        index = (below + k * np.arange(cols)).reshape(-1)

        def tally(weights: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            """(weight above, weight at or below) each threshold, shape (T, cols)."""
            hist = np.bincount(index, weights=weights.reshape(-1),
                               minlength=k * cols).reshape(cols, k).T
            above = np.cumsum(hist[::-1], axis=0)[::-1][1:]
            return above, np.cumsum(hist, axis=0)[:-1]

        tp, fn = tally(np.where(pos, w, 0.0))
        fp, tn = tally(np.where(pos, 0.0, w))
        shape = self.true_positives.shape
        self.true_positives += tp.reshape(shape)
        self.false_negatives += fn.reshape(shape)
        self.false_positives += fp.reshape(shape)
        self.true_negatives += tn.reshape(shape)

    def _interpolated_pr(self) -> np.ndarray:
        """Each interval's area under the PR curve, Keras's ``interpolate_pr_auc``: over
        an interval the true positives TP and the predicted positives P = TP + FP vary
        linearly, TP = intercept + slope * P, and precision TP / P integrates over recall
        TP / positives in closed form:
        ``slope * (dTP + intercept * log(P_a / P_b)) / positives``."""
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        predicted = tp + fp
        d_tp = tp[:-1] - tp[1:]
        d_p = predicted[:-1] - predicted[1:]
        slope = _safe_div(d_tp, np.maximum(d_p, 0))
        intercept = tp[1:] - slope * predicted[1:]
        both = (predicted[:-1] > 0) & (predicted[1:] > 0)
        ratio = np.where(both, _safe_div(predicted[:-1], np.maximum(predicted[1:], 0)), 1.0)
        return _safe_div(slope * (d_tp + intercept * np.log(ratio)),
                         np.maximum(tp[1:] + fn[1:], 0))

    def result(self) -> float:
        if self.true_positives is None:
            return _in_dtype(0.0, self.dtype)
        tp, fp = self.true_positives, self.false_positives
        tn, fn = self.true_negatives, self.false_negatives
        if self.curve == "PR" and self.summation_method == "interpolation":
            areas = self._interpolated_pr()
        else:
            recall = _safe_div(tp, tp + fn)
            if self.curve == "ROC":
                x, y = _safe_div(fp, fp + tn), recall
            else:
                x, y = recall, _safe_div(tp, tp + fp)
            if self.summation_method == "interpolation":
                heights = (y[:-1] + y[1:]) / 2
            elif self.summation_method == "minoring":
                heights = np.minimum(y[:-1], y[1:])
            else:
                heights = np.maximum(y[:-1], y[1:])
            areas = (x[:-1] - x[1:]) * heights
        auc = np.sum(areas, axis=0)          # () or one area per label
        if self.multi_label:
            auc = np.mean(auc) if self.label_weights is None else _safe_div(
                np.sum(auc * self.label_weights), np.sum(self.label_weights))
        return _in_dtype(float(auc), self.dtype)

    def get_config(self) -> Dict[str, Any]:
        return _dtype_config({
            "name": self.name, "num_thresholds": self.num_thresholds, "curve": self.curve,
            "summation_method": self.summation_method, "thresholds": self._given_thresholds,
            "multi_label": self.multi_label, "num_labels": self.num_labels,
            "label_weights": (None if self.label_weights is None
                              else self.label_weights.tolist()),
            "from_logits": self.from_logits}, self.dtype)


class ConfusionMatrix(Metric):
    """Confusion-matrix counts accumulated over batches: rows true, columns predicted.

    Parameters
    ----------
    num_classes : int
    name : str, default "confusion_matrix"

    ``update_state`` takes labels as :func:`confusion_matrix` does: ``y_true`` integer
    labels (N,) / (N, 1) or one-hot (N, C); ``y_pred`` labels or probabilities (N, C)
    (argmax), or sigmoid probabilities (N, 1) for two classes (``> 0.5``).
    ``result()`` is an array of shape (num_classes, num_classes): int64 counts, or float64
    sums of weights once a ``sample_weight`` has been given.

    Examples
    --------
    >>> m = ConfusionMatrix(2)
    >>> m.update_state([0, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> m.result()
    array([[1, 0],
           [1, 1]])
    """

    _default_name = "confusion_matrix"
    _counts = True

    def __init__(self, num_classes: int, name: Optional[str] = None):
        super().__init__(name)
        self.num_classes = _check_num_classes(num_classes)
        if self.num_classes is None:
            raise TypeError("ConfusionMatrix needs num_classes, a positive integer")
        self.reset_state()

    def reset_state(self) -> None:
        self.counts = np.zeros((self.num_classes, self.num_classes))
        self._weighted = False

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike,
                     sample_weight: ArrayLike = None) -> None:
        t, p, w, _ = _labels(y_true, y_pred, self.num_classes, sample_weight)
        self._weighted = self._weighted or w is not None
        self.counts += _counts(t, p, self.num_classes, w)

    def result(self) -> np.ndarray:
        return self.counts.copy() if self._weighted else self.counts.astype(np.int64)

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes}


# =============================================================================== functions
def _check_num_classes(num_classes, name: str = "num_classes") -> Optional[int]:
    """A positive int or None, else a TypeError/ValueError naming ``name``."""
    if num_classes is None:
        return None
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool):
        raise TypeError(f"{name} must be a positive integer, received {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"{name} must be a positive integer, received {num_classes}")
    return int(num_classes)


def _label_vector(y: ArrayLike, name: str, is_pred: bool) -> Tuple[np.ndarray, Optional[int]]:
    """(labels (N,), number of classes implied by the shape or None)."""
    a = _array(y, name)
    what = "probabilities" if is_pred else "one-hot labels"
    if a.ndim > 2 or (a.ndim == 2 and a.shape[1] == 0):
        raise ValueError(f"{name} must be integer labels of shape (N,) or (N, 1), or {what} "
                         f"of shape (N, C); received shape {a.shape}")
    if a.ndim == 2 and a.shape[1] > 1:
        if not is_pred:
            if not (np.all((a == 0) | (a == 1)) and np.all(a.sum(axis=1) == 1)):
                raise ValueError(f"y_true of shape {a.shape} must be one-hot (exactly one 1 "
                                 f"per row, zeros elsewhere), or give integer labels (N,)")
        return np.argmax(a, axis=1).astype(np.int64), a.shape[1]
    v = a.reshape(-1)
    if v.dtype.kind == "f":
        whole = np.isfinite(v) & (v == np.round(v))
        if is_pred and not np.all(whole) and np.all((v >= 0) & (v <= 1)):
            return (v > 0.5).astype(np.int64), 2  # sigmoid probabilities, 2 classes
        if not np.all(whole):
            hint = ("; for probabilities give shape (N, C), or threshold sigmoid outputs"
                    if is_pred else "")
            raise ValueError(f"{name} must hold integer class labels, received the "
                             f"non-integer value {v[~whole][0].item()!r}{hint}")
    return v.astype(np.int64), None


def _labels(y_true, y_pred, num_classes, sample_weight):
    """Validated (true labels, predicted labels, weights or None, number of classes)."""
    k = _check_num_classes(num_classes)
    t, kt = _label_vector(y_true, "y_true", is_pred=False)
    p, kp = _label_vector(y_pred, "y_pred", is_pred=True)
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true and y_pred must have the same number of samples, received "
                         f"{t.shape[0]} (y_true shape {np.shape(y_true)}) and {p.shape[0]} "
                         f"(y_pred shape {np.shape(y_pred)})")
    shape_k = {x for x in (kt, kp) if x is not None}
    if len(shape_k) > 1:
        raise ValueError(f"y_true implies {kt} classes but y_pred implies {kp}")
    if k is None:
        if shape_k:
            k = shape_k.pop()
        else:
            k = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    elif shape_k and shape_k.pop() not in (k,):
        raise ValueError(f"num_classes={k} but the inputs have {kt or kp} classes")
    _check_range(t, k, "y_true")
    _check_range(p, k, "y_pred")
    return t, p, _weights(sample_weight, t.shape[0]), k


def _counts(t: np.ndarray, p: np.ndarray, k: int, w: Optional[np.ndarray]) -> np.ndarray:
    return np.bincount(t * k + p, weights=w, minlength=k * k).reshape(k, k)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: Optional[int] = None,
                     sample_weight: ArrayLike = None) -> np.ndarray:
    """Confusion matrix: entry ``[i, j]`` counts samples of true class i predicted as j.

    Parameters
    ----------
    y_true : array-like, shape (N,) or (N, 1)
        Integer class labels (a one-hot (N, C) array is accepted too).
    y_pred : array-like, shape (N,) or (N, 1), or (N, C)
        Integer labels, or probabilities/scores (N, C) whose argmax is taken. Floats in
        [0, 1] of shape (N,) or (N, 1) that are not all whole numbers are read as sigmoid
        probabilities of class 1 (predicted class ``y_pred > 0.5``).
    num_classes : int, optional
        C. Defaults to the number of columns of a (N, C) input, else ``max label + 1``.
        Classes are always ``0 .. C-1``, present or not (sklearn with
        ``labels=range(C)``).
    sample_weight : array-like, shape (N,), optional

    Returns
    -------
    ndarray, shape (C, C)
        int64 counts, or float64 sums of weights with ``sample_weight``.

    Raises
    ------
    ValueError
        On a length mismatch, a label outside ``[0, C)``, a non-integer label or a wrong
        number of dimensions.
    TypeError
        On non-numeric input.

    Examples
    --------
    >>> confusion_matrix([2, 0, 2, 2, 0, 1], [0, 0, 2, 2, 0, 2])
    array([[2, 0, 0],
           [0, 0, 1],
           [1, 0, 2]])
    """
    t, p, w, k = _labels(y_true, y_pred, num_classes, sample_weight)
    cm = _counts(t, p, k, w)
    return cm if w is not None else cm.astype(np.int64)


def precision_recall_f1(y_true: ArrayLike, y_pred: ArrayLike, num_classes: Optional[int] = None,
                        average: Optional[str] = None, sample_weight: ArrayLike = None):
    """Precision, recall, F1 and support for each class, or averaged.

    Parameters
    ----------
    y_true, y_pred, num_classes, sample_weight
        As in :func:`confusion_matrix`.
    average : {None, "macro", "micro", "weighted"}, default None
        None: per-class arrays. "macro": unweighted mean over the C classes. "micro":
        from the counts summed over classes (for single-label data, all three equal the
        accuracy). "weighted": mean weighted by support.

    Returns
    -------
    precision, recall, f1 : ndarray of shape (C,), or float when averaged
    support : ndarray of shape (C,), or the total when averaged
        Number (or weight) of true samples of each class. (sklearn returns None for the
        support of an average; the total is more useful.)

    Notes
    -----
    Precision of a class never predicted, recall of a class never present, and F1 when
    both are 0, are 0 (sklearn's ``zero_division=0``), without a warning.

    Examples
    --------
    >>> p, r, f, s = precision_recall_f1([0, 1, 2, 2, 2], [0, 0, 2, 2, 1])
    >>> np.round(f, 2), s
    (array([0.67, 0.  , 0.8 ]), array([1, 1, 3]))
    """
    _check_average(average)
    t, p, w, k = _labels(y_true, y_pred, num_classes, sample_weight)
    cm = _counts(t, p, k, w)
    support = cm.sum(axis=1)
    if w is None:
        support = support.astype(np.int64)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = support - tp
    precision, recall, f1 = _prf(tp, fp, fn, support, average)
    if average is None:
        return precision, recall, f1, support
    total = support.sum()
    return float(precision), float(recall), float(f1), (int(total) if w is None
                                                        else float(total))


def classification_report(y_true: ArrayLike, y_pred: ArrayLike,
                          target_names: Optional[Sequence[str]] = None, digits: int = 2,
                          num_classes: Optional[int] = None,
                          sample_weight: ArrayLike = None) -> str:
    """A text report of per-class precision, recall, F1 and support, like sklearn's.

    Parameters
    ----------
    y_true, y_pred, num_classes, sample_weight
        As in :func:`confusion_matrix`.
    target_names : sequence of str, optional
        One display name per class (length C); defaults to "0", "1", ...
    digits : int, default 2
        Decimals of the scores.

    Returns
    -------
    str
        One row per class, then ``accuracy``, ``macro avg`` and ``weighted avg`` rows, in
        sklearn's layout.

    Examples
    --------
    >>> print(classification_report([0, 1, 2, 2, 2], [0, 0, 2, 2, 1],
    ...                             target_names=["class 0", "class 1", "class 2"]))
                  precision    recall  f1-score   support
    <BLANKLINE>
         class 0       0.50      1.00      0.67         1
         class 1       0.00      0.00      0.00         1
         class 2       1.00      0.67      0.80         3
    <BLANKLINE>
        accuracy                           0.60         5
       macro avg       0.50      0.56      0.49         5
    weighted avg       0.70      0.60      0.61         5
    <BLANKLINE>
    """
    if not isinstance(digits, numbers.Integral) or isinstance(digits, bool) or digits < 0:
        raise ValueError(f"digits must be a non-negative integer, received {digits!r}")
    t, p, w, k = _labels(y_true, y_pred, num_classes, sample_weight)
    if target_names is None:
        names = [str(i) for i in range(k)]
    else:
        if isinstance(target_names, str):
            raise TypeError("target_names must be a sequence of strings, received a string")
        names = [str(n) for n in target_names]
        if len(names) != k:
            raise ValueError(f"target_names has {len(names)} names but there are {k} "
                             f"classes")
    cm = _counts(t, p, k, w)
    support = cm.sum(axis=1)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = support - tp

    def sup(x):  # as sklearn: an int count, or the float sum of the weights
        return str(int(x)) if w is None else str(round(float(x), 10))

    headers = ["precision", "recall", "f1-score", "support"]
    width = max([len(n) for n in names] + [len("weighted avg"), digits])
    head_fmt = "{:>{width}s} " + " {:>9}" * len(headers)
    row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    report = head_fmt.format("", *headers, width=width) + "\n\n"
    for name, row in zip(names, zip(*_prf(tp, fp, fn, support, None), support)):
        report += row_fmt.format(name, *row[:3], sup(row[3]), width=width, digits=digits)
    report += "\n"
    total = support.sum()
    accuracy = float(tp.sum() / total) if total else 0.0
    report += ("{:>{width}s} " + " {:>9}" * 2 + " {:>9.{digits}f} {:>9}\n").format(
        "accuracy", "", "", accuracy, sup(total), width=width, digits=digits)
    for average in ("macro", "weighted"):
        avg = _prf(tp, fp, fn, support, average)
        report += row_fmt.format(f"{average} avg", *avg, sup(total), width=width,
                                 digits=digits)
    return report


# =============================================================================== resolver
def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


_LOSS_KIND = {"binarycrossentropy": "binary", "bce": "binary",
              "categoricalcrossentropy": "categorical", "cce": "categorical",
              "sparsecategoricalcrossentropy": "sparse"}


def _accuracy_kind(loss, output_shape) -> Optional[str]:
    """tf.keras's choice for "accuracy": from the loss, else from the output's last axis
    (see the module docstring for where Keras 3 differs)."""
    loss_name = loss if isinstance(loss, str) or loss is None else getattr(loss, "name", None)
    kind = _LOSS_KIND.get(_key(loss_name)) if isinstance(loss_name, str) else None
    if kind is None and output_shape is not None:
        shape = tuple(output_shape)
        if shape:
            kind = "binary" if shape[-1] == 1 else "categorical"
    return kind


def _accuracy(name, loss, output_shape) -> Metric:
    kind = _accuracy_kind(loss, output_shape)
    cls = {"binary": BinaryAccuracy, "categorical": CategoricalAccuracy,
           "sparse": SparseCategoricalAccuracy, None: _AutoAccuracy}[kind]
    return cls(name=name)


def _f_score(cls: type) -> Callable[..., Metric]:
    """The factory of "f1" / "fbeta_score": macro-averaged, threshold 0.5 for a binary
    loss or a single output unit, argmax otherwise."""
    def make(name, loss, output_shape) -> Metric:
        binary = (_accuracy_kind(loss, None) == "binary"
                  or (output_shape is not None and tuple(output_shape)[-1:] == (1,)))
        return cls(average="macro", threshold=0.5 if binary else None, name=name)
    return make


def _fn_metric(fn, default):
    return lambda name, loss, shape: MeanMetricWrapper(fn, name=name or default)


# canonical name -> factory(name, loss, output_shape)
_FACTORIES: Dict[str, Callable[..., Metric]] = {
    "accuracy": _accuracy, "acc": _accuracy,
    "binary_accuracy": lambda n, l, s: BinaryAccuracy(name=n),
    "categorical_accuracy": lambda n, l, s: CategoricalAccuracy(name=n),
    "sparse_categorical_accuracy": lambda n, l, s: SparseCategoricalAccuracy(name=n),
    "top_k_categorical_accuracy": lambda n, l, s: TopKCategoricalAccuracy(name=n),
    "sparse_top_k_categorical_accuracy":
        lambda n, l, s: SparseTopKCategoricalAccuracy(name=n),
    "precision": lambda n, l, s: Precision(name=n),
    "recall": lambda n, l, s: Recall(name=n),
    "f1": _f_score(F1Score), "f1_score": _f_score(F1Score),
    "fbeta_score": _f_score(FBetaScore),
    "auc": lambda n, l, s: AUC(name=n),
    "mse": lambda n, l, s: MeanSquaredError(name=n),
    "mean_squared_error": lambda n, l, s: MeanSquaredError(name=n),
    "mae": lambda n, l, s: MeanAbsoluteError(name=n),
    "mean_absolute_error": lambda n, l, s: MeanAbsoluteError(name=n),
    "binary_crossentropy": _fn_metric(_losses.binary_crossentropy, "binary_crossentropy"),
    "categorical_crossentropy": _fn_metric(_losses.categorical_crossentropy,
                                           "categorical_crossentropy"),
    "sparse_categorical_crossentropy": _fn_metric(_losses.sparse_categorical_crossentropy,
                                                  "sparse_categorical_crossentropy"),
    # the other losses, as Keras's metrics of the same names: the mean of their
    # per-sample values (huber and log_cosh too)
    **{name: _fn_metric(getattr(_losses, fn), name) for name, fn in (
        ("huber", "huber"), ("log_cosh", "log_cosh"), ("logcosh", "log_cosh"),
        ("mean_squared_logarithmic_error", "mean_squared_logarithmic_error"),
        ("msle", "mean_squared_logarithmic_error"),
        ("mean_absolute_percentage_error", "mean_absolute_percentage_error"),
        ("mape", "mean_absolute_percentage_error"), ("kl_divergence", "kl_divergence"),
        ("kld", "kl_divergence"), ("poisson", "poisson"), ("hinge", "hinge"),
        ("squared_hinge", "squared_hinge"), ("categorical_hinge", "categorical_hinge"))},
}
_BY_KEY = {_key(k): f for k, f in _FACTORIES.items()}
_CLASSES: Dict[str, type] = {c.__name__: c for c in (
    Mean, MeanSquaredError, MeanAbsoluteError, Accuracy, BinaryAccuracy, CategoricalAccuracy,
    SparseCategoricalAccuracy, TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy,
    Precision, Recall, FBetaScore, F1Score, AUC, ConfusionMatrix)}


def get(identifier: Union[str, Metric, Callable, dict], loss: Any = None,
        output_shape: Optional[Sequence[Optional[int]]] = None) -> Metric:
    """Resolve a metric the way ``compile(metrics=[...])`` does.

    Parameters
    ----------
    identifier : str, Metric, Metric subclass, dict or callable
        - a :class:`Metric` instance: returned as is;
        - a :class:`Metric` subclass: instantiated with default arguments;
        - ``"accuracy"`` / ``"acc"``, in any case (Keras 3's compile lower-cases them, so
          ``"Accuracy"`` too): binary, categorical or sparse categorical accuracy,
          chosen from ``loss`` (binary_crossentropy -> :class:`BinaryAccuracy`,
          categorical_crossentropy -> :class:`CategoricalAccuracy`,
          sparse_categorical_crossentropy -> :class:`SparseCategoricalAccuracy`), else
          from ``output_shape`` (last axis 1 -> binary, else categorical), else from the
          shapes of the first batch;
        - other names (case and underscores ignored; class names work too):
          "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
          "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy" (k = 5),
          "precision", "recall", "f1" / "f1_score" (macro-averaged :class:`F1Score`, with
          threshold 0.5 for binary or multi-label outputs, argmax otherwise),
          "fbeta_score" (:class:`FBetaScore`, beta = 1, averaged as "f1"), "auc" (a
          default :class:`AUC`: ROC, 200 thresholds), "mse" / "mean_squared_error",
          "mae" / "mean_absolute_error", the cross-entropies "binary_crossentropy",
          "categorical_crossentropy", "sparse_categorical_crossentropy", and the other
          losses' names ("huber", "log_cosh", "msle", "mape", "kl_divergence" / "kld",
          "poisson", "hinge", "squared_hinge", "categorical_hinge": the mean of their
          per-sample values);
        - ``{"class_name": ..., "config": {...}}`` (see :func:`serialize`);
        - a fastnn :class:`~fastnn.losses.Loss`: the mean of its per-sample values;
        - any other callable ``fn(y_true, y_pred) -> per-sample values``: wrapped in a
          :class:`MeanMetricWrapper` named ``fn.__name__``.
        A metric given by name is named exactly as written ("acc" stays "acc", as in
        Keras).
    loss : str or Loss, optional
        The compiled loss (its name is used).
    output_shape : tuple, optional
        The model's output shape, e.g. ``(None, 10)``.

    Returns
    -------
    Metric
        A new metric (except for a Metric instance given).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones).
    TypeError
        For anything else that is not a metric.
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        factory = _BY_KEY.get(_key(identifier))
        if factory is None:
            raise ValueError(f"Unknown metric {identifier!r}; valid names: "
                             f"{sorted(_FACTORIES)} (or a Metric instance or a function "
                             f"fn(y_true, y_pred))")
        return factory(identifier, loss, output_shape)
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        if name not in _CLASSES:
            raise ValueError(f"Unknown metric class {name!r} in {identifier!r}; valid "
                             f"classes: {sorted(_CLASSES)}")
        return _CLASSES[name].from_config(dict(identifier.get("config", {})))
    if inspect.isclass(identifier) and issubclass(identifier, Metric):
        return identifier()
    if isinstance(identifier, _losses.Loss):
        loss_obj = identifier
        return MeanMetricWrapper(lambda t, p: loss_obj.per_sample(*loss_obj._prepare(t, p)),
                                 name=loss_obj.name)
    if callable(identifier) and not inspect.isclass(identifier):
        return MeanMetricWrapper(identifier)
    raise TypeError(f"a metric must be a name, a Metric or a function fn(y_true, y_pred), "
                    f"received {identifier!r}")


def serialize(metric: Metric) -> Dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` for a built-in metric; :func:`get` rebuilds it.

    Raises
    ------
    TypeError
        For a metric that cannot be rebuilt from its config (a wrapped function).
    """
    cls = type(metric)
    if _CLASSES.get(cls.__name__) is not cls:
        raise TypeError(f"cannot serialize {cls.__name__}: only the built-in metrics "
                        f"{sorted(_CLASSES)} can be")
    return {"class_name": cls.__name__, "config": metric.get_config()}
