"""Activation functions, each a forward/backward pair.

Every activation is an object with ``forward(x) -> y`` and ``backward(dy, x, y) -> dx``
(``x`` the input, ``y`` the output of the forward pass; each implementation uses whichever is
cheaper). Names follow Keras: ``relu``, ``sigmoid``, ``tanh``, ``softmax``, ``leaky_relu``,
``elu``, ``linear``; :func:`get` resolves a name, an instance or a plain callable.

Each also has Keras's function form (``fastnn.activations.relu(x)``, ``tanh``,
``sigmoid``, ``softmax``, ``leaky_relu``, ``elu``, ``linear``), and a layer given one
(``Dense(10, activation=fastnn.activations.relu)``) uses the matching class, with its
analytic backward.
"""
from __future__ import annotations

from typing import Callable, Dict, Union

import numpy as np

from . import ops
from .utils import _custom
from .utils._args import check_real

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Activation:
    """Base class: ``forward(x) -> y`` and ``backward(dy, x, y) -> dx``."""

    name = "activation"

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x):
        x = np.asarray(x)
        if x.dtype.kind in "biu":  # forward keeps its input's dtype: ints would truncate
            x = x.astype(np.float64)
        return self.forward(x)

    def get_config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(Activation):
    """Identity: ``y = x``."""

    name = "linear"

    def forward(self, x):
        return x

    def backward(self, dy, x, y):
        return dy


class ReLU(Activation):
    """``y = max(x, 0)`` (NaN propagates); ``dy/dx = 1 where y > 0``. Runs on the fused
    bias + activation kernel."""

    name = "relu"

    def forward(self, x):
        return ops.bias_act(x, None, "relu")

    def backward(self, dy, x, y):
        return ops.bias_act_backward(dy, y, "relu", need_db=False)[0]


class Sigmoid(Activation):
    """``y = 1 / (1 + exp(-x))``, computed without overflow; ``dy/dx = y (1 - y)``."""

    name = "sigmoid"

    def forward(self, x):
        return sigmoid(x)

    def backward(self, dy, x, y):
        return dy * y * (1 - y)


class Tanh(Activation):
    """``y = tanh(x)``; ``dy/dx = 1 - y^2``."""

    name = "tanh"

    def forward(self, x):
        return np.tanh(x)

    def backward(self, dy, x, y):
        return dy * (1 - y * y)


class Softmax(Activation):
    """``y = exp(x - max) / sum(exp(x - max))`` along ``axis`` (default last);
    ``dx = y * (dy - sum(dy * y))``."""

    name = "softmax"

    def __init__(self, axis: int = -1):
        self.axis = axis

    def forward(self, x):
        return softmax(x, self.axis)

    def backward(self, dy, x, y):
        return y * (dy - np.sum(dy * y, axis=self.axis, keepdims=True))

    def get_config(self):
        return {"name": self.name, "axis": self.axis}


class LeakyReLU(Activation):
    """``y = x if x > 0 else negative_slope * x`` (Keras 3 default slope 0.2)."""

    name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.2):
        self.negative_slope = check_real(negative_slope, "negative_slope", low=0.0)

    def forward(self, x):
        return np.where(x > 0, x, x * self.negative_slope).astype(x.dtype, copy=False)

    def backward(self, dy, x, y):
        return np.where(x > 0, dy, dy * self.negative_slope).astype(dy.dtype, copy=False)

    def get_config(self):
        return {"name": self.name, "negative_slope": self.negative_slope}


class ELU(Activation):
    """``y = x if x > 0 else alpha * (exp(x) - 1)``; ``dy/dx = 1 or y + alpha``."""

    name = "elu"

    def __init__(self, alpha: float = 1.0):
        self.alpha = check_real(alpha, "alpha")

    def forward(self, x):
        neg = self.alpha * np.expm1(np.minimum(x, 0))
        return np.where(x > 0, x, neg).astype(x.dtype, copy=False)

    def backward(self, dy, x, y):
        return np.where(x > 0, dy, dy * (y + self.alpha)).astype(dy.dtype, copy=False)

    def get_config(self):
        return {"name": self.name, "alpha": self.alpha}


class FunctionActivation(Activation):
    """Wrap a user callable ``fn(x) -> y``; its gradient is taken by central differences
    elementwise (so ``fn`` must act elementwise). Prefer an :class:`Activation` subclass
    with an analytic ``backward`` for speed.

    ``name`` is the function's ``__name__``; nothing dispatches on it (a user function
    named ``relu`` is called, not replaced by the built-in), and its config says it is the
    user's (``{"name": ..., "custom": True}``): ``load_model`` takes it back from
    ``custom_objects``."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]):
        self.fn = fn
        self.name = getattr(fn, "__name__", "custom")

    def get_config(self):
        return {"name": self.name, "custom": True}

    def __repr__(self) -> str:
        return f"FunctionActivation({self.name})"

    def forward(self, x):
        return np.asarray(self.fn(x), dtype=x.dtype)

    def backward(self, dy, x, y):
        # central differences: a step of eps^(1/3) balances their truncation error (h^2)
        # against rounding (eps / h): float32 sin' within ~2e-5 (sqrt(eps): 1.5e-4)
        h = np.cbrt(np.finfo(x.dtype).eps) * np.maximum(1.0, np.abs(x))
        d = (np.asarray(self.fn(x + h)) - np.asarray(self.fn(x - h))) / (2 * h)
        return (dy * d).astype(dy.dtype, copy=False)


def _as_float(x) -> np.ndarray:
    """``x`` as an array; integers and bools become float64 (the functions keep a float
    dtype)."""
    x = np.asarray(x)
    return x.astype(np.float64) if x.dtype.kind in "biu" else x


def relu(x, negative_slope: float = 0.0, max_value=None, threshold: float = 0.0
         ) -> np.ndarray:
    """Keras's ``relu``, as Keras computes it: ``x`` where ``x > threshold`` (``max(x, 0)``
    when ``threshold`` is 0), else 0; then clipped to ``[0, max_value]``; minus
    ``negative_slope * max(threshold - x, 0)``. So ``x == threshold`` gives 0 and, with a
    ``max_value``, values between a negative threshold and 0 give 0 (Keras's code; its
    ReLU docstring's formula says otherwise at those points). NaN propagates (Keras's
    ``where(x > threshold, x, 0)`` makes it 0 when there is a threshold).

    Plain ``max(x, 0)`` of a float32/float64 array runs on the fused kernel. Returns an
    array of ``x``'s shape and float dtype."""
    x = _as_float(x)
    plain = negative_slope == 0 and max_value is None and threshold == 0
    if plain and x.dtype in _KERNEL_DTYPES and x.ndim:
        return ReLU().forward(x)
    # (where, not x * (x > threshold): -inf * 0 would be NaN; NaN itself passes)
    y = np.maximum(x, 0) if threshold == 0 else np.where((x > threshold) | np.isnan(x), x, 0)
    if max_value is not None:
        y = np.clip(y, 0, max_value)
    if negative_slope:
        y = y - negative_slope * np.maximum(threshold - x, 0)
    return np.asarray(y, dtype=x.dtype)


def relu_derivative(x, negative_slope: float = 0.0, max_value=None, threshold: float = 0.0
                    ) -> np.ndarray:
    """``d relu(x) / dx`` for :func:`relu`'s arguments (0 at the kinks), in x's dtype."""
    x = _as_float(x)
    lo = max(threshold, 0.0) if max_value is not None else threshold
    d = x > lo
    if max_value is not None:
        d &= x < max_value
    out = d.astype(x.dtype)
    if negative_slope:
        out += negative_slope * (x < threshold)
    return out


def tanh(x) -> np.ndarray:
    """Keras's ``tanh``."""
    return Tanh().forward(_as_float(x))


def leaky_relu(x, negative_slope: float = 0.2) -> np.ndarray:
    """Keras's ``leaky_relu``: ``x if x > 0 else negative_slope * x``."""
    return LeakyReLU(negative_slope).forward(_as_float(x))


def elu(x, alpha: float = 1.0) -> np.ndarray:
    """Keras's ``elu``: ``x if x > 0 else alpha * (exp(x) - 1)``."""
    return ELU(alpha).forward(_as_float(x))


def linear(x) -> np.ndarray:
    """Keras's ``linear``: ``x`` unchanged."""
    return _as_float(x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (no overflow for large |x|); Keras's
    ``sigmoid``."""
    x = _as_float(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` with the max subtracted first (no overflow); Keras's
    ``softmax``. Returns a new array."""
    x = _as_float(x)
    z = x - np.max(x, axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= np.sum(z, axis=axis, keepdims=True)
    return z


_REGISTRY: Dict[str, type] = {
    "linear": Linear, "identity": Linear, None: Linear,
    "relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "softmax": Softmax,
    "leaky_relu": LeakyReLU, "elu": ELU,
}


# The function forms, each resolved by get() to its class (not to a FunctionActivation,
# whose gradient is numerical).
_FUNCTIONS: Dict[Callable, str] = {
    relu: "relu", tanh: "tanh", sigmoid: "sigmoid", softmax: "softmax",
    leaky_relu: "leaky_relu", elu: "elu", linear: "linear",
}


# (load_model's custom_objects: the user's functions and Activation classes by name,
# while layers are rebuilt from configs)
custom_objects_scope = _custom.custom_objects_scope


def get(identifier: Union[None, str, Activation, Callable, dict]) -> Activation:
    """Resolve an activation from None (linear), a name, a config dict, an
    :class:`Activation`, one of this module's functions (its class) or a callable.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones), or the config of a user's
        function that is not in the custom objects (see :func:`custom_objects_scope`).
    """
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, dict):
        cfg = dict(identifier)
        if "class_name" in cfg:   # Keras 3's form of a function: {"class_name": "function",
            conf = cfg.get("config")  # "config": its name, ...}
            if cfg["class_name"] != "function" or not isinstance(conf, str):
                raise ValueError(f"cannot read the activation config {identifier!r}: "
                                 f"expected a name, or {{'class_name': 'function', "
                                 f"'config': name}}")
            found = _custom.custom_object(conf)
            return get(conf if found is None else found)
        name = cfg.pop("name", None)
        if cfg.pop("custom", False):
            found = _custom.custom_object(name)
            if found is None:
                raise ValueError(f"Unknown activation {name!r}, a function of your own "
                                 f"not in custom_objects")
            if isinstance(found, type) and issubclass(found, Activation):
                return found(**cfg)
            return get(found)
        return get(name) if not cfg else _REGISTRY[_check_name(name)](**cfg)
    if identifier is None or isinstance(identifier, str):
        return _REGISTRY[_check_name(identifier)]()
    if callable(identifier):
        # (by identity: a user's callable need not be hashable)
        name = next((n for f, n in _FUNCTIONS.items() if f is identifier), None)
        return _REGISTRY[name]() if name else FunctionActivation(identifier)
    raise TypeError(f"activation must be a name, an Activation or a callable, received "
                    f"{identifier!r}")


def _check_name(name):
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        valid = sorted(k for k in _REGISTRY if k is not None)
        raise ValueError(f"Unknown activation {name!r}; valid names: {valid}")
    return key


def serialize(act: Activation):
    """The config that :func:`get` turns back into ``act``: a built-in with its default
    arguments as its name alone (the form Keras reads)."""
    cfg = act.get_config()
    cls = _REGISTRY.get(cfg.get("name"))
    if type(act) is cls and cfg == cls().get_config():
        return cfg["name"]
    return cfg["name"] if len(cfg) == 1 else cfg
