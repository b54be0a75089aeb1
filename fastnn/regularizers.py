"""Weight regularizers with Keras 3 names, defaults and formulas.

A regularizer maps a weight array ``w`` to a penalty that is added to the loss, and gives
that penalty's gradient, which a layer adds to the weight's gradient::

    reg = fastnn.regularizers.L2(1e-4)
    loss = data_loss + reg(kernel)
    kernel_grad += reg.gradient(kernel)

=========  ==================================  ==================================
class      penalty ``reg(w)``                  ``reg.gradient(w)``
=========  ==================================  ==================================
``L1``     ``l1 * sum(|w|)``                   ``l1 * sign(w)``
``L2``     ``l2 * sum(w**2)``  (no 1/2)        ``2 * l2 * w``
``L1L2``   ``l1 * sum(|w|) + l2 * sum(w**2)``  ``l1 * sign(w) + 2 * l2 * w``
=========  ==================================  ==================================

``sign(0) = 0``: the subgradient of ``|w|`` at 0 that leaves zero weights alone.
``l1``, ``l2`` and ``l1_l2`` are aliases of the classes, as in Keras 3. The string names
``"l1"`` and ``"l2"`` give a factor of 0.01; ``"l1_l2"`` (and ``"l1l2"``, ``"L1L2"``) gives
``l1 = l2 = 0.01``, tf.keras 2's documented default for that string; the class itself
defaults to 0 and 0. Keras 3.15.1 differs: its ``get("l1_l2")`` raises, and ``"L1L2"`` /
``"l1l2"`` give ``L1L2(0, 0)``, a regularizer that does nothing.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Union

import numpy as np

from .initializers import _config_of
from .utils import _custom

__all__ = ["Regularizer", "L1", "L2", "L1L2", "l1", "l2", "l1_l2", "get", "serialize",
           "deserialize"]


def _factor(value, name: str) -> float:
    """A non-negative finite float, or ValueError/TypeError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"Invalid value for argument {name}: expected a non-negative float. "
                        f"Received: {name}={value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"Invalid value for argument {name}: expected a non-negative float. "
                         f"Received: {name}={value!r}")
    return v


def _weights(w) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"a regularizer needs a numeric array, received dtype {w.dtype}")
    return w


class Regularizer:
    """Base class: ``__call__(w) -> float`` (the penalty) and ``gradient(w) -> ndarray``
    (its gradient with respect to ``w``, same shape and dtype)."""

    def __call__(self, w: np.ndarray) -> float:
        return 0.0

    def gradient(self, w: np.ndarray) -> np.ndarray:
        w = _weights(w)
        return np.zeros_like(w, dtype=w.dtype if w.dtype.kind == "f" else np.float64)

    def get_config(self) -> Dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Regularizer":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1L2(Regularizer):
    """L1 and L2 penalties together.

    ``penalty(w) = l1 * sum(|w|) + l2 * sum(w**2)``;
    ``gradient(w) = l1 * sign(w) + 2 * l2 * w``.

    Parameters
    ----------
    l1 : float >= 0, default 0.0
    l2 : float >= 0, default 0.0
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1 = _factor(0.0 if l1 is None else l1, "l1")
        self.l2 = _factor(0.0 if l2 is None else l2, "l2")

    def __call__(self, w: np.ndarray) -> float:
        """The penalty (a Python float) for weights ``w`` of any shape."""
        w = _weights(w)
        total = 0.0
        if self.l1:
            total += self.l1 * float(np.sum(np.abs(w), dtype=np.float64))
        if self.l2:
            total += self.l2 * float(np.sum(np.square(w, dtype=np.float64)))
        return total

    def gradient(self, w: np.ndarray) -> np.ndarray:
        """``l1 * sign(w) + 2 * l2 * w``, shaped and typed like ``w`` (float64 for integer
        ``w``)."""
        w = _weights(w)
        dtype = w.dtype if w.dtype.kind == "f" else np.dtype(np.float64)
        out = np.zeros(w.shape, dtype=dtype)
        if self.l1:
            np.sign(w, out=out, casting="unsafe")
            out *= self.l1
        if self.l2:
            out += (2.0 * self.l2) * w
        return out

    def get_config(self) -> Dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """L1 penalty ``l1 * sum(|w|)``, gradient ``l1 * sign(w)``.

    Parameters
    ----------
    l1 : float >= 0, default 0.01
    """

    def __init__(self, l1: float = 0.01):
        super().__init__(l1=0.01 if l1 is None else l1, l2=0.0)

    def get_config(self) -> Dict[str, Any]:
        return {"l1": self.l1}


class L2(L1L2):
    """L2 penalty ``l2 * sum(w**2)`` (no factor 1/2, as in Keras), gradient ``2 * l2 * w``.

    Parameters
    ----------
    l2 : float >= 0, default 0.01
    """

    def __init__(self, l2: float = 0.01):
        super().__init__(l1=0.0, l2=0.01 if l2 is None else l2)

    def get_config(self) -> Dict[str, Any]:
        return {"l2": self.l2}


# Keras 3 exports the classes under lower-case names too.
l1 = L1
l2 = L2
l1_l2 = L1L2

_CLASSES = {"Regularizer": Regularizer, "L1": L1, "L2": L2, "L1L2": L1L2}
_STRINGS: Dict[str, Callable[[], Regularizer]] = {
    "l1": lambda: L1(0.01), "l2": lambda: L2(0.01),
    "l1_l2": lambda: L1L2(l1=0.01, l2=0.01), "l1l2": lambda: L1L2(l1=0.01, l2=0.01),
    "L1": L1, "L2": L2, "L1L2": lambda: L1L2(l1=0.01, l2=0.01)}


def serialize(regularizer: Regularizer) -> Dict[str, Any]:
    """``{"class_name": ..., "config": regularizer.get_config()}``."""
    if not isinstance(regularizer, Regularizer):
        raise TypeError(f"expected a Regularizer, received {type(regularizer).__name__}")
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}


def deserialize(config: Dict[str, Any]) -> Regularizer:
    """Inverse of :func:`serialize`."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"a serialized regularizer is a dict with 'class_name' and 'config' "
                         f"keys, received {config!r}")
    mine = _custom.from_custom(config, "regularizer")   # load_model's custom_objects
    if mine is not None:
        return mine
    name = config["class_name"]
    cls = _CLASSES.get(name) or {"l1": L1, "l2": L2, "l1_l2": L1L2}.get(name)
    if cls is None:
        raise ValueError(f"Unknown regularizer {name!r}. Valid names: {sorted(_CLASSES)}")
    return cls.from_config(_config_of(config, "regularizer"))


def get(identifier: Union[None, str, Dict[str, Any], Regularizer, Callable]
        ) -> Optional[Callable]:
    """A regularizer from a name, a config dict, an instance or a callable.

    Parameters
    ----------
    identifier : None, str, dict, Regularizer or callable
        ``None`` -> ``None``; ``"l1"``, ``"l2"``, ``"l1_l2"`` -> an instance with factor(s)
        0.01; a :func:`serialize` dict; an instance or any callable ``w -> float`` -> itself;
        a Regularizer class -> an instance with its defaults.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones).
    TypeError
        For anything else.
    """
    if identifier is None:
        return None
    if isinstance(identifier, str):
        make = _STRINGS.get(identifier)
        if make is None:
            raise ValueError(f"Unknown regularizer {identifier!r}. Valid names: "
                             f"['l1', 'l2', 'l1_l2']")
        return make()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Regularizer):
        return identifier()
    if callable(identifier):
        return identifier
    raise TypeError(f"Could not interpret regularizer identifier: {identifier!r}")
