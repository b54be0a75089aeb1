"""Activation functions, each a forward/backward pair.

Every activation is an object with ``forward(x) -> y`` and ``backward(dy, x, y) -> dx``
(``x`` the input, ``y`` the output of the forward pass; each implementation uses whichever is
cheaper). Names follow Keras 3: ``relu``, ``sigmoid``, ``tanh``, ``softmax``,
``leaky_relu``, ``elu``, ``linear``, ``gelu``, ``silu`` (``swish``), ``selu``,
``softplus``, ``softsign``, ``exponential``, ``hard_sigmoid``, ``hard_silu``
(``hard_swish``), ``mish``, ``relu6``, ``log_softmax``, ``celu``, ``log_sigmoid``;
:func:`get` resolves a name, an instance or a plain callable.

Each also has Keras's function form (``fastnn.activations.relu(x)``, ``gelu(x,
approximate=False)``, ...), and a layer given one
(``Dense(10, activation=fastnn.activations.relu)``) uses the matching class, with its
analytic backward.
"""
from __future__ import annotations

from typing import Callable, Dict, Union

import numpy as np

from . import ops
from .backends import numpy_backend
from .utils import _custom
from .utils._args import check_real

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _kernel_forward(kind: str, x: np.ndarray, alpha: float = 0.0) -> np.ndarray:
    """``f(x)`` by :func:`fastnn.ops.activation` (compiled kernels on the C backend) for a
    float32/float64 ``x``, else by the NumPy reference's formulas in x's dtype."""
    if x.dtype in _KERNEL_DTYPES:
        return ops.activation(x, kind, alpha=alpha)
    y = np.empty_like(x)
    numpy_backend.activation(x, kind, alpha, y)
    return y


def _kernel_backward(kind: str, dy: np.ndarray, x: np.ndarray, y: np.ndarray,
                     alpha: float = 0.0) -> np.ndarray:
    """``dy * f'(x)`` by :func:`fastnn.ops.activation_backward` where the three arrays
    share a float32/float64 dtype and a shape, else by the reference's formulas."""
    if dy.dtype in _KERNEL_DTYPES and x.dtype == dy.dtype == y.dtype and \
            x.shape == dy.shape == y.shape:
        return ops.activation_backward(dy, x, y, kind, alpha=alpha)
    dx = np.empty(np.broadcast_shapes(dy.shape, x.shape, y.shape), dy.dtype)
    numpy_backend.activation_backward(dy, x, y, kind, alpha, dx)
    return dx


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
        return _kernel_forward("sigmoid", x)

    def backward(self, dy, x, y):
        return _kernel_backward("sigmoid", dy, x, y)


class Tanh(Activation):
    """``y = tanh(x)``; ``dy/dx = 1 - y^2``."""

    name = "tanh"

    def forward(self, x):
        return _kernel_forward("tanh", x)

    def backward(self, dy, x, y):
        return _kernel_backward("tanh", dy, x, y)


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
        return _kernel_forward("leaky_relu", x, self.negative_slope)

    def backward(self, dy, x, y):
        return _kernel_backward("leaky_relu", dy, x, y, self.negative_slope)

    def get_config(self):
        return {"name": self.name, "negative_slope": self.negative_slope}


class ELU(Activation):
    """``y = x if x > 0 else alpha * (exp(x) - 1)``; ``dy/dx = 1 or y + alpha``."""

    name = "elu"

    def __init__(self, alpha: float = 1.0):
        self.alpha = check_real(alpha, "alpha")

    def forward(self, x):
        return _kernel_forward("elu", x, self.alpha)

    def backward(self, dy, x, y):
        return _kernel_backward("elu", dy, x, y, self.alpha)

    def get_config(self):
        return {"name": self.name, "alpha": self.alpha}


class GELU(Activation):
    """Gaussian error linear unit, Keras 3's ``gelu``: ``y = x * Phi(x)``, Phi the
    standard normal CDF, ``0.5 * x * erfc(-x / sqrt(2))``: erfc from its Chebyshev
    series, in float64 for float64 input (2e-14 relative for |x| <= 8, 2e-13 down to
    -36), else in float32 (2e-5 relative down to -12); no cancellation in the left tail.
    With ``approximate=True`` the tanh form
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``. ``dy/dx = Phi(x) + x phi(x)``
    (of the tanh form with ``approximate``)."""

    name = "gelu"

    def __init__(self, approximate: bool = False):
        if not isinstance(approximate, (bool, np.bool_)):
            raise TypeError(f"approximate must be a bool, received approximate="
                            f"{approximate!r}")
        self.approximate = bool(approximate)

    def _tanh_part(self, x):
        """tanh(sqrt(2/pi) (x + 0.044715 x^3)) and x clipped to +-20, where the tanh is
        +-1 in float64 already (so x^3 cannot overflow, nor the derivative turn NaN)."""
        xc = np.clip(x, -20, 20)
        return np.tanh(_SQRT_2_OVER_PI * (xc + 0.044715 * xc * xc * xc)), xc

    def forward(self, x):
        if self.approximate:
            t, _ = self._tanh_part(x)
            return (0.5 * x * (1 + t)).astype(x.dtype, copy=False)
        return _kernel_forward("gelu", x)

    def backward(self, dy, x, y):
        if self.approximate:
            t, xc = self._tanh_part(x)
            d = 0.5 * (1 + t) + 0.5 * xc * (1 - t * t) * _SQRT_2_OVER_PI * (
                1 + 3 * 0.044715 * xc * xc)
        else:
            return _kernel_backward("gelu", dy, x, y)
        return (dy * d).astype(dy.dtype, copy=False)

    def get_config(self):
        return {"name": self.name, "approximate": self.approximate}


class SiLU(Activation):
    """Keras 3's ``silu`` (``swish``): ``y = x * sigmoid(x)``; ``dy/dx = s (1 + x (1 -
    s))``, s = sigmoid(x)."""

    name = "silu"

    def forward(self, x):
        return _kernel_forward("silu", x)

    def backward(self, dy, x, y):
        return _kernel_backward("silu", dy, x, y)


class SELU(Activation):
    """Scaled ELU, Keras 3's ``selu``: ``scale * x`` for x > 0, else ``scale * alpha *
    (exp(x) - 1)``, with Klambauer et al.'s alpha = 1.67326324 and scale = 1.05070098."""

    name = "selu"
    alpha = numpy_backend.SELU_ALPHA
    scale = numpy_backend.SELU_SCALE

    def forward(self, x):
        return _kernel_forward("selu", x)

    def backward(self, dy, x, y):
        # (from x, not y + scale * alpha: that sum cancels in the far negative tail)
        return _kernel_backward("selu", dy, x, y)


class Softplus(Activation):
    """``y = log(1 + exp(x))``, as ``max(x, 0) + log1p(exp(-|x|))`` (no overflow);
    ``dy/dx = sigmoid(x)``."""

    name = "softplus"

    def forward(self, x):
        return _softplus(x)

    def backward(self, dy, x, y):
        return (dy * sigmoid(x)).astype(dy.dtype, copy=False)


class Softsign(Activation):
    """``y = x / (1 + |x|)``; ``dy/dx = 1 / (1 + |x|)^2``."""

    name = "softsign"

    def forward(self, x):
        return (x / (1 + np.abs(x))).astype(x.dtype, copy=False)

    def backward(self, dy, x, y):
        a = 1 + np.abs(x)
        return (dy / (a * a)).astype(dy.dtype, copy=False)


class Exponential(Activation):
    """``y = exp(x)`` (inf past the dtype's range, as NumPy and Keras); ``dy/dx = y``."""

    name = "exponential"

    def forward(self, x):
        return np.exp(x)

    def backward(self, dy, x, y):
        return (dy * y).astype(dy.dtype, copy=False)


class HardSigmoid(Activation):
    """Keras 3's ``hard_sigmoid``: ``relu6(x + 3) / 6``, i.e. ``clip(x / 6 + 0.5, 0,
    1)``; ``dy/dx = 1/6`` for -3 < x < 3, else 0."""

    name = "hard_sigmoid"

    def forward(self, x):
        return _kernel_forward("hard_sigmoid", x)

    def backward(self, dy, x, y):
        return _kernel_backward("hard_sigmoid", dy, x, y)


class HardSiLU(Activation):
    """Keras 3's ``hard_silu`` (``hard_swish``): ``x * hard_sigmoid(x)``; ``dy/dx = (2x +
    3) / 6`` for -3 < x < 3, 1 above, 0 below."""

    name = "hard_silu"

    def forward(self, x):
        return _kernel_forward("hard_silu", x)

    def backward(self, dy, x, y):
        return _kernel_backward("hard_silu", dy, x, y)


class Mish(Activation):
    """``y = x * tanh(softplus(x))``; ``dy/dx = t + x (1 - t^2) sigmoid(x)``, t =
    tanh(softplus(x))."""

    name = "mish"

    def forward(self, x):
        return (x * np.tanh(_softplus(x))).astype(x.dtype, copy=False)

    def backward(self, dy, x, y):
        t = np.tanh(_softplus(x))
        return (dy * (t + x * (1 - t * t) * sigmoid(x))).astype(dy.dtype, copy=False)


class ReLU6(Activation):
    """``y = min(max(x, 0), 6)`` (NaN propagates); ``dy/dx = 1`` for 0 < x < 6 (0 at the
    kinks)."""

    name = "relu6"

    def forward(self, x):
        return _kernel_forward("relu6", x)

    def backward(self, dy, x, y):
        return _kernel_backward("relu6", dy, x, y)


class LogSoftmax(Activation):
    """``y = x - logsumexp(x)`` along ``axis`` (default last), the max subtracted first;
    ``dx = dy - softmax(x) * sum(dy)``."""

    name = "log_softmax"

    def __init__(self, axis: int = -1):
        self.axis = axis

    def forward(self, x):
        return log_softmax(x, self.axis)

    def backward(self, dy, x, y):
        return dy - np.exp(y) * np.sum(dy, axis=self.axis, keepdims=True)

    def get_config(self):
        return {"name": self.name, "axis": self.axis}


class CELU(Activation):
    """Continuously differentiable ELU, Keras 3's ``celu``: ``x`` for x > 0, else ``alpha
    * (exp(x / alpha) - 1)``; ``dy/dx = 1 or exp(x / alpha)``."""

    name = "celu"

    def __init__(self, alpha: float = 1.0):
        self.alpha = check_real(alpha, "alpha")
        if self.alpha == 0:
            raise ValueError("alpha must be non-zero (celu divides by it), received "
                             "alpha=0.0")

    def forward(self, x):
        return _kernel_forward("celu", x, self.alpha)

    def backward(self, dy, x, y):
        # (exp(x / alpha) from x: y / alpha + 1 cancels in the far negative tail)
        return _kernel_backward("celu", dy, x, y, self.alpha)

    def get_config(self):
        return {"name": self.name, "alpha": self.alpha}


class LogSigmoid(Activation):
    """``y = log(sigmoid(x)) = -softplus(-x)`` (no overflow); ``dy/dx = sigmoid(-x)``."""

    name = "log_sigmoid"

    def forward(self, x):
        return (-_softplus(-x)).astype(x.dtype, copy=False)

    def backward(self, dy, x, y):
        return (dy * sigmoid(-x)).astype(dy.dtype, copy=False)


_SQRT_2_OVER_PI = 0.7978845608028654


def _softplus(x: np.ndarray) -> np.ndarray:
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)


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


# (celu for either sign of alpha: its derivative, exp(x / alpha) for x < 0, is positive;
# leaky_relu's slope is >= 0, checked at construction)
_NONDECREASING = frozenset({Linear, ReLU, Sigmoid, Tanh, SELU, Softplus, Softsign, Exponential,
                            HardSigmoid, ReLU6, CELU, LeakyReLU, LogSigmoid})


def nondecreasing(act: Activation) -> bool:
    """Whether the built-in activation ``act`` is non-decreasing everywhere (linear, relu,
    sigmoid, tanh, selu, softplus, softsign, exponential, hard_sigmoid, relu6, celu,
    leaky_relu, log_sigmoid, and elu with ``alpha >= 0``; not gelu, silu, hard_silu, mish, the
    softmaxes or a user's function): then each window's maximum of ``f(x)`` is ``f`` of its
    maximum, so a max pooling may run before ``f`` (:func:`fastnn.layers.conv.
    conv_pool_fusable`). Decided by exact class: a subclass may compute anything."""
    if type(act) is ELU:
        return act.alpha >= 0
    return type(act) in _NONDECREASING


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
    return _kernel_forward("sigmoid", _as_float(x))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` with the max subtracted first (no overflow); Keras's
    ``softmax``. Returns a new array."""
    x = _as_float(x)
    z = x - np.max(x, axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= np.sum(z, axis=axis, keepdims=True)
    return z


def gelu(x, approximate: bool = False) -> np.ndarray:
    """Keras 3's ``gelu``: ``x * Phi(x)`` (``approximate``: the tanh form); see
    :class:`GELU`."""
    return GELU(approximate).forward(_as_float(x))


def silu(x) -> np.ndarray:
    """Keras 3's ``silu`` (also ``swish``): ``x * sigmoid(x)``."""
    return SiLU().forward(_as_float(x))


swish = silu


def selu(x) -> np.ndarray:
    """Keras 3's ``selu``: ``scale * elu(x, alpha)`` with the self-normalising constants."""
    return SELU().forward(_as_float(x))


def softplus(x) -> np.ndarray:
    """Keras 3's ``softplus``: ``log(1 + exp(x))``, without overflow."""
    return Softplus().forward(_as_float(x))


def softsign(x) -> np.ndarray:
    """Keras 3's ``softsign``: ``x / (1 + |x|)``."""
    return Softsign().forward(_as_float(x))


def exponential(x) -> np.ndarray:
    """Keras 3's ``exponential``: ``exp(x)``."""
    return Exponential().forward(_as_float(x))


def hard_sigmoid(x) -> np.ndarray:
    """Keras 3's ``hard_sigmoid``: ``clip(x / 6 + 0.5, 0, 1)``."""
    return HardSigmoid().forward(_as_float(x))


def hard_silu(x) -> np.ndarray:
    """Keras 3's ``hard_silu`` (also ``hard_swish``): ``x * hard_sigmoid(x)``."""
    return HardSiLU().forward(_as_float(x))


hard_swish = hard_silu


def mish(x) -> np.ndarray:
    """Keras 3's ``mish``: ``x * tanh(softplus(x))``."""
    return Mish().forward(_as_float(x))


def relu6(x) -> np.ndarray:
    """Keras 3's ``relu6``: ``min(max(x, 0), 6)``."""
    return ReLU6().forward(_as_float(x))


def celu(x, alpha: float = 1.0) -> np.ndarray:
    """Keras 3's ``celu``: ``x if x > 0 else alpha * (exp(x / alpha) - 1)``."""
    return CELU(alpha).forward(_as_float(x))


def log_sigmoid(x) -> np.ndarray:
    """Keras 3's ``log_sigmoid``: ``log(sigmoid(x))``, without overflow."""
    return LogSigmoid().forward(_as_float(x))


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Keras 3's ``log_softmax``: ``x - logsumexp(x)`` along ``axis``, the max subtracted
    first (no overflow). Returns a new array."""
    x = _as_float(x)
    z = x - np.max(x, axis=axis, keepdims=True)
    z -= np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
    return z


_REGISTRY: Dict[str, type] = {
    "linear": Linear, "identity": Linear, None: Linear,
    "relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "softmax": Softmax,
    "leaky_relu": LeakyReLU, "elu": ELU, "gelu": GELU, "silu": SiLU, "swish": SiLU,
    "selu": SELU, "softplus": Softplus, "softsign": Softsign, "exponential": Exponential,
    "hard_sigmoid": HardSigmoid, "hard_silu": HardSiLU, "hard_swish": HardSiLU,
    "mish": Mish, "relu6": ReLU6, "log_softmax": LogSoftmax, "celu": CELU,
    "log_sigmoid": LogSigmoid,
}


# The function forms, each resolved by get() to its class (not to a FunctionActivation,
# whose gradient is numerical).
_FUNCTIONS: Dict[Callable, str] = {
    relu: "relu", tanh: "tanh", sigmoid: "sigmoid", softmax: "softmax",
    leaky_relu: "leaky_relu", elu: "elu", linear: "linear", gelu: "gelu", silu: "silu",
    selu: "selu", softplus: "softplus", softsign: "softsign", exponential: "exponential",
    hard_sigmoid: "hard_sigmoid", hard_silu: "hard_silu", mish: "mish", relu6: "relu6",
    log_softmax: "log_softmax", celu: "celu", log_sigmoid: "log_sigmoid",
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
