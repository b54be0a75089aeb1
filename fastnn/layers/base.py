"""The layer protocol.

A layer is a readable forward/backward pair:

``build(input_shape)``
    Creates the weights for inputs of ``input_shape`` (batch dimension first, ``None``).
``compute_output_shape(input_shape) -> tuple``
``forward(x, training=False) -> y``
    Caches what ``backward`` needs.
``backward(grad) -> grad with respect to the input``
    Also writes the parameter gradients, in place, into ``grads``.
``params`` / ``grads``
    Dicts keyed by name, in the same order; ``grads[k]`` has the shape of ``params[k]``.
    The arrays are created once and updated in place, so lists of them can be built once
    and handed to an optimizer: ``optimizer.apply(list(grads.values()),
    list(params.values()))``.
``get_config()`` / ``from_config(config)``
    Round-trip the constructor arguments.

Buffers: layers reuse their work arrays from one training step to the next instead of
allocating per batch. The array returned by ``forward(x, training=True)`` and the one
returned by ``backward`` belong to the layer and are overwritten by its next training step
(a new batch shape gets new arrays); copy them to keep them. ``forward(x, training=False)``
(inference, ``predict``, ``evaluate``) returns new arrays.

A from-scratch loop needs nothing else::

    for layer in layers:
        x = layer.forward(x, training=True)
    grad = loss.gradient(y, x)
    for layer in reversed(layers):
        grad = layer.backward(grad)
    optimizer.apply(grads, params)
"""
from __future__ import annotations

import inspect
import itertools
import re
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..utils._args import keras_default_only
from ..utils._arrays import empty_aligned

_name_counters: Dict[str, itertools.count] = defaultdict(itertools.count)


def _snake(name: str) -> str:
    """Keras's to_snake_case: "MaxPooling2D" -> "max_pooling2d", "ReLU" -> "re_lu"."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique_name(prefix: str) -> str:
    n = next(_name_counters[prefix])
    return prefix if n == 0 else f"{prefix}_{n}"


# What fastnn's layers' forward passes cache for their backward (see Layer.__getattr__).
_FORWARD_CACHES = frozenset({"_x", "_y", "_z", "_xshape", "_shape", "_mask", "_xhat",
                             "_inv_std", "_mean", "_argmax", "_dy_crop", "_training"})


def _dtype(dtype) -> np.dtype:
    """A layer's dtype: "float32" (the default) or "float64", as a name, a NumPy dtype or
    Keras 3's DTypePolicy config ({"class_name": "DTypePolicy", "config": {"name": ...}})."""
    given = dtype
    if isinstance(dtype, dict):                     # a Keras 3 layer config's dtype
        dtype = (dtype.get("config") or {}).get("name")
    try:
        dt = np.dtype(dtype or "float32")
    except TypeError:
        dt = None
    if dt is None or dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be 'float32' or 'float64', received {given!r}")
    return dt


# Keras 3 layer arguments fastnn's layers do not take, at the values that leave them
# without effect: a Keras config carrying them loads (Layer.from_config); other values are
# refused by name.
_KERAS_DEFAULTS = {
    "kernel_constraint": None, "bias_constraint": None, "activity_regularizer": None,
    "quantization_config": None, "lora_rank": None, "lora_alpha": None, "groups": 1,
    "beta_constraint": None, "gamma_constraint": None, "beta_regularizer": None,
    "gamma_regularizer": None, "renorm": False, "renorm_clipping": None,
    "renorm_momentum": 0.99, "synchronized": False, "sparse": False, "ragged": False,
    "optional": False, "autocast": True,
}


class Layer:
    """Base class of every layer (see the module docstring for the protocol).

    A built layer takes inputs of the shape it was built for, and says so otherwise. Keras
    3's layers also take other sizes on the axes their weights do not depend on (a Conv2D
    built for 8x8 images runs on 6x6 ones; a Dense on (N, 5, 3) works on the last axis);
    fastnn's do not: its models run one input shape, for which they keep their buffers.

    Parameters
    ----------
    name : str, optional
        Unique by default (``dense``, ``dense_1``, ...).
    input_shape : tuple of int, optional
        Shape of one sample (no batch dimension); only meaningful on a model's first layer.
    dtype : {"float32", "float64"}
    trainable : bool
        When False, ``params`` are still exposed but ``trainable_params`` is empty.
    """

    def __init__(self, *, name: Optional[str] = None, input_shape=None, dtype="float32",
                 trainable: bool = True, **kwargs):
        # Keras's arguments fastnn does not implement, passed at their no-effect values
        # (activity_regularizer=None, kernel_constraint=None, ...): taken, as from_config
        # takes them
        for key, default in _KERAS_DEFAULTS.items():
            if key in kwargs:
                keras_default_only(type(self).__name__, key, kwargs.pop(key), default)
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments "
                            f"{sorted(kwargs)}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, received {name!r}")
        self.name = name or _unique_name(_snake(type(self).__name__))
        self.dtype = _dtype(dtype)
        self.trainable = bool(trainable)
        self.input_shape_arg = None if input_shape is None else _sample_shape(input_shape)
        self.params: Dict[str, np.ndarray] = {}
        self.grads: Dict[str, np.ndarray] = {}
        self.state: Dict[str, np.ndarray] = {}   # non-trainable weights (BatchNorm stats)
        self._regularizers: Dict[str, object] = {}
        self.built = False
        self.input_shape: Optional[Tuple] = None
        self.output_shape: Optional[Tuple] = None
        self.need_input_grad = True  # a model sets False on its first layer

    # ---------------------------------------------------------------- protocol
    def build(self, input_shape) -> None:
        """Create weights for inputs of ``input_shape`` (batch first, may be None)."""
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(self.compute_output_shape(self.input_shape))
        self.built = True

    def compute_output_shape(self, input_shape) -> Tuple:
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __getattr__(self, name: str):
        # Reached only when normal lookup fails. For what fastnn's layers cache in forward
        # for backward, say so instead of Python's bare "no attribute '_y'".
        if name in _FORWARD_CACHES and "built" in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__} {self.__dict__.get('name')!r} has no {name!r} yet: "
                f"forward(x, training=True) sets it for backward, so call forward before "
                f"backward(grad)")
        for klass in type(self).__mro__:
            if name in klass.__dict__:   # a property whose getter raised: its own error
                return object.__getattribute__(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, x, training: bool = False) -> np.ndarray:
        x = self._cast_input(x)
        if not self.built:
            self.build((None,) + x.shape[1:])
        return self.forward(x, training=training)

    # ---------------------------------------------------------------- buffers
    def _unaliased(self, x: np.ndarray) -> np.ndarray:
        """``x``, or a copy of it when it is (a view of) one of this layer's reused work
        arrays, such as its own previous output fed back in by hand: the forward pass
        about to overwrite that array would change the input kept for backward (the
        kernel gradient came out wrong, the output right)."""
        bufs = self.__dict__.get("_bufs")
        if bufs and isinstance(x, np.ndarray):
            # compare the arrays that hold the memory (each buffer is a view of bytes)
            base = x if x.base is None else x.base
            if any(base is (b if b.base is None else b.base) for b in bufs.values()):
                return x.copy()
        return x

    def _buffer(self, key: str, shape, dtype) -> np.ndarray:
        """This layer's work array ``key`` of ``shape`` and ``dtype``, reused across steps
        (reallocated only when the shape or dtype changes); see the module docstring."""
        bufs = self.__dict__.setdefault("_bufs", {})
        buf = bufs.get(key)
        shape = tuple(shape)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = bufs[key] = empty_aligned(shape, dtype, min_bytes=0)   # (made once)
        return buf

    # ---------------------------------------------------------------- weights
    def add_weight(self, name: Optional[str] = None, shape=None, initializer=None,
                   regularizer=None, trainable: bool = True) -> np.ndarray:
        """Create a weight array; trainable ones get a zero gradient array in ``grads``.

        Takes Keras 3's keywords (``self.add_weight(shape=(3,), initializer="ones")``):
        ``initializer`` defaults to ``"glorot_uniform"`` as in Keras, ``name`` to
        ``"variable"`` (``"variable_1"``, ... when taken). fastnn's own layers pass the name
        first, by position.
        """
        if shape is None:
            raise TypeError(f"add_weight of layer {self.name!r} needs a shape")
        if name is None:
            name, k = "variable", 0
            while name in self.params or name in self.state:
                k += 1
                name = f"variable_{k}"
        init = _initializers.get("glorot_uniform" if initializer is None else initializer)
        # 64-byte aligned, as the work arrays: the kernels stream through the weights, their
        # gradients and the optimizer's slots (32 x 784 x 128 products 1.01-1.06x slower
        # on Zen 2 with them 16 bytes past a cache line)
        value = empty_aligned(shape, self.dtype, min_bytes=0)
        value[...] = init(tuple(shape), dtype=self.dtype)
        if trainable:
            self.params[name] = value
            self.grads[name] = empty_aligned(shape, self.dtype, zeros=True, min_bytes=0)
            if regularizer is not None:
                reg = _regularizers.get(regularizer)
                if not hasattr(reg, "gradient"):
                    raise TypeError(f"{name}_regularizer must be a fastnn Regularizer (with a "
                                    f"gradient method) or its name, received {regularizer!r}")
                self._regularizers[name] = reg
        else:
            self.state[name] = value
        return value

    @staticmethod
    def _check_weight_args(**args) -> None:
        """Resolve each ``*_initializer`` / ``*_regularizer`` argument once, as the layer is
        created (Keras fails there; the weights are made at build): an unknown name or a
        wrong type is reported with the argument's name."""
        for name, value in args.items():
            try:
                if name.endswith("_initializer"):
                    _initializers.get(value)
                elif value is not None and not hasattr(_regularizers.get(value), "gradient"):
                    raise TypeError("a regularizer must be a fastnn Regularizer (with a "
                                    "gradient method) or its name")
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"{exc} ({name}={value!r})") from None

    @property
    def trainable_params(self) -> Dict[str, np.ndarray]:
        return self.params if self.trainable else {}

    @property
    def weights(self) -> List[np.ndarray]:
        """The weight arrays themselves (not copies), as Keras's ``layer.weights``: the
        trainable ones, then the non-trainable state."""
        return list(itertools.chain(self.params.values(), self.state.values()))

    @property
    def trainable_weights(self) -> List[np.ndarray]:
        """The weights training updates: none while ``trainable`` is False."""
        return list(self.trainable_params.values())

    @property
    def non_trainable_weights(self) -> List[np.ndarray]:
        """The state (BatchNormalization's moving statistics), and every weight while
        ``trainable`` is False."""
        frozen = [] if self.trainable else list(self.params.values())
        return frozen + list(self.state.values())

    def regularization_loss(self) -> float:
        """Sum of the regularization penalties of this layer's trainable weights: 0 for a
        frozen layer (``trainable = False``), as in Keras, whose layers sum the penalties
        over ``trainable_weights``."""
        return float(sum(reg(self.params[k]) for k, reg in self._regularizers.items()
                         if k in self.trainable_params))

    def _add_regularization_grads(self) -> None:
        for k, reg in self._regularizers.items():
            self.grads[k] += reg.gradient(self.params[k]).astype(self.dtype, copy=False)

    def get_weights(self) -> List[np.ndarray]:
        """Copies of the weights: trainable ones, then the non-trainable state."""
        return [w.copy() for w in itertools.chain(self.params.values(), self.state.values())]

    def set_weights(self, weights) -> None:
        """Overwrite the weights in place (shapes must match :meth:`get_weights`); all are
        checked before any is written."""
        self._write_weights(self._checked_weights(weights))

    def _checked_weights(self, weights) -> List[np.ndarray]:
        """``weights`` as arrays that :meth:`_write_weights` can write (ValueError or
        TypeError naming the weight otherwise; nothing is written)."""
        targets = list(itertools.chain(self.params.items(), self.state.items()))
        weights = list(weights)
        if len(weights) != len(targets):
            raise ValueError(f"layer {self.name!r} expects {len(targets)} weight arrays, "
                             f"received {len(weights)}")
        out = []
        for (k, t), w in zip(targets, weights):
            try:
                w = np.asarray(w)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"weight {k!r} of layer {self.name!r} cannot be read as an "
                                 f"array ({exc}); no weight was set") from None
            if w.shape != t.shape:
                raise ValueError(f"weight {k!r} of layer {self.name!r} has shape {t.shape}, "
                                 f"received {w.shape}; no weight was set")
            if w.dtype.kind not in "fiub":
                raise TypeError(f"weight {k!r} of layer {self.name!r} must be numeric, "
                                f"received dtype {w.dtype}; no weight was set")
            out.append(w)
        return out

    def _write_weights(self, weights: List[np.ndarray]) -> None:
        for t, w in zip(itertools.chain(self.params.values(), self.state.values()), weights):
            t[...] = w

    def count_params(self) -> int:
        if not self.built:
            raise ValueError(f"layer {self.name!r} is not built yet, so it has no weights "
                             f"to count: build it (or call it once) first")
        return int(sum(w.size for w in itertools.chain(self.params.values(),
                                                        self.state.values())))

    # ---------------------------------------------------------------- config
    def get_config(self) -> dict:
        cfg = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype.name}
        if self.input_shape_arg is not None:
            cfg["input_shape"] = list(self.input_shape_arg)
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> "Layer":
        """The layer of :meth:`get_config`'s output, or of a Keras 3 layer config: Keras's
        arguments fastnn does not take are dropped at their no-effect values (constraints
        and activity regularizers None, groups 1, ...) and refused otherwise."""
        config = dict(config)
        accepted = set(inspect.signature(cls.__init__).parameters) | \
            set(inspect.signature(Layer.__init__).parameters)
        for key, default in _KERAS_DEFAULTS.items():
            if key in config and key not in accepted:
                keras_default_only(cls.__name__, key, config.pop(key), default)
        return cls(**config)

    # ---------------------------------------------------------------- helpers
    def _cast_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"layer {self.name!r} needs numeric input, received dtype "
                            f"{x.dtype}")
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        return x

    def _check_input(self, x: np.ndarray) -> None:
        self._check_input_shape(x.shape)

    def _check_input_shape(self, shape) -> None:
        expected = None if self.input_shape is None else tuple(self.input_shape[1:])
        # None in the built shape (an unknown dimension) accepts any size; the rank must match
        if expected is not None and (len(shape) - 1 != len(expected) or any(
                e is not None and d != e for d, e in zip(shape[1:], expected))):
            raise ValueError(f"layer {self.name!r} expects input of shape "
                             f"{_fmt(self.input_shape)}, received {tuple(shape)}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


def _sample_shape(shape, name: str = "input_shape") -> Tuple[int, ...]:
    """A sample's shape (no batch axis): a non-empty tuple of positive ints (an int alone
    is a 1-tuple). None, strings and floats are refused: fastnn's models run one shape."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (int(shape),)
    try:
        items = tuple(shape)
    except TypeError:
        items = None
    if items is None or any(isinstance(s, (bool, np.bool_)) or
                            not isinstance(s, (int, np.integer)) for s in items):
        none = items is not None and any(s is None for s in items)
        raise (ValueError if none else TypeError)(
            f"{name} must be a tuple of ints, received {shape!r}"
            + (" (fastnn's models take one input shape: give every dimension after the "
               "batch axis)" if none else ""))
    shp = tuple(int(s) for s in items)
    if not shp or min(shp) < 1:
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, received "
                         f"{shape!r}")
    return shp


def _fmt(shape) -> str:
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + \
        ("," if len(shape) == 1 else "") + ")"
