"""Weight initializers with Keras 3 names, defaults and formulas.

An initializer is a callable ``init(shape, dtype="float32") -> ndarray``::

    w = fastnn.initializers.get("he_normal")((3, 3, 16, 32))   # a conv kernel

Fans (:func:`compute_fans`) follow Keras: a dense kernel ``(in, out)`` has
``fan_in = in, fan_out = out``; a convolution kernel ``(*spatial, c_in, c_out)``
(channels-last, e.g. ``(kh, kw, c_in, c_out)``) multiplies both by the receptive field
``prod(spatial)``; a vector ``(n,)`` has ``fan_in = fan_out = n``.

The variance-scaling family (Glorot/He/Lecun) draws, with ``fan`` chosen by the mode:

* ``*Uniform``: uniform on ``[-limit, limit]`` with ``limit = sqrt(3 * scale / fan)``;
* ``*Normal``: a normal **truncated at two standard deviations** (out-of-range draws are
  redrawn) with ``stddev = sqrt(scale / fan) / 0.87962566103423978``. The constant is the
  standard deviation of a unit normal truncated to [-2, 2], so the samples' actual standard
  deviation is ``sqrt(scale / fan)``, as in Keras.

Randomness: ``seed=None`` draws from fastnn's global generator
(:func:`fastnn.utils.get_rng`, reseeded by :func:`fastnn.utils.set_random_seed`), so each
call gives new values; an ``int`` seed makes every call return the same values (Keras 3's
semantics for an integer seed); a ``numpy.random.Generator`` is drawn from directly.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .utils import _custom, get_rng

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform",
           "TruncatedNormal", "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeNormal",
           "HeUniform", "LecunNormal", "LecunUniform", "Orthogonal", "Identity", "compute_fans",
           "get",
           "serialize", "deserialize"]

# Standard deviation of a unit normal truncated to [-2, 2] (Keras's constant).
TRUNCATED_STDDEV_FACTOR = 0.87962566103423978

Shape = Union[int, Sequence[int]]


def _shape(shape: Shape) -> Tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        out = tuple(shape)
    except TypeError:
        raise TypeError(f"`shape` must be a tuple of ints, received shape={shape!r}") from None
    for d in out:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ValueError(f"`shape` must be a tuple of non-negative ints, received "
                             f"shape={shape!r}")
    return tuple(int(d) for d in out)


def _dtype(dtype, *, floating: bool) -> np.dtype:
    try:
        d = np.dtype("float32" if dtype is None else dtype)
    except TypeError:
        raise TypeError(f"`dtype` must be a numpy dtype, received dtype={dtype!r}") from None
    if floating and d.kind != "f":
        raise ValueError(f"random initializers need a floating `dtype`, received "
                         f"dtype={d}")
    if d.kind not in "biuf":
        raise ValueError(f"`dtype` must be numeric, received dtype={d}")
    return d


def _check_seed(seed):
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, dict) and seed.get("class_name") == "SeedGenerator":
        # a Keras 3 config's serialized SeedGenerator: its int seed
        seed = (seed.get("config") or {}).get("seed")
        if seed is None:
            return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be None, a non-negative int or a numpy Generator, "
                         f"received seed={seed!r}")
    return int(seed)


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a float, received {name}={value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"`{name}` must be finite, received {name}={value!r}")
    return v


def _axes(value, name: str) -> Optional[Tuple[int, ...]]:
    """None, or a sequence of ints as a tuple (a ValueError naming the argument)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in value):
        raise ValueError(f"{name} must be None or a sequence of ints (axes of the weight), "
                         f"received {name}={value!r}")
    return tuple(int(a) for a in value)


def compute_fans(shape: Shape) -> Tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shape, as Keras computes them.

    Parameters
    ----------
    shape : tuple of int
        ``()`` -> (1, 1); ``(n,)`` -> (n, n); ``(in, out)`` -> (in, out);
        ``(*spatial, c_in, c_out)`` -> ``(c_in * r, c_out * r)`` with
        ``r = prod(spatial)`` (channels-last convolution kernels).
    """
    shape = _shape(shape)
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = 1
    for d in shape[:-2]:
        receptive *= d
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base class: ``__call__(shape, dtype="float32") -> ndarray`` and ``get_config()``."""

    def __call__(self, shape: Shape, dtype="float32") -> np.ndarray:
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Initializer":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Constant(Initializer):
    """Every element equals ``value``.

    Parameters
    ----------
    value : float, default 0.0
    """

    def __init__(self, value: float = 0.0):
        self.value = _real(value, "value")

    def __call__(self, shape: Shape, dtype="float32") -> np.ndarray:
        return np.full(_shape(shape), self.value, dtype=_dtype(dtype, floating=False))

    def get_config(self) -> Dict[str, Any]:
        return {"value": self.value}


class Zeros(Initializer):
    """All zeros (the Keras default for biases)."""

    def __call__(self, shape: Shape, dtype="float32") -> np.ndarray:
        return np.zeros(_shape(shape), dtype=_dtype(dtype, floating=False))


class Ones(Initializer):
    """All ones."""

    def __call__(self, shape: Shape, dtype="float32") -> np.ndarray:
        return np.ones(_shape(shape), dtype=_dtype(dtype, floating=False))


class Identity(Initializer):
    """``gain`` times the identity matrix (Keras's ``IdentityInitializer``); 2-D shapes
    only, rectangular ones with ones on the main diagonal (``np.eye(rows, cols)``).

    Parameters
    ----------
    gain : float, default 1.0
    """

    def __init__(self, gain: float = 1.0):
        self.gain = _real(gain, "gain")

    def __call__(self, shape: Shape, dtype="float32") -> np.ndarray:
        shape, dtype = _shape(shape), _dtype(dtype, floating=True)
        if len(shape) != 2:
            raise ValueError(f"the Identity initializer needs a 2-D shape, received "
                             f"{shape}")
        return (self.gain * np.eye(*shape)).astype(dtype, copy=False)

    def get_config(self) -> Dict[str, Any]:
        return {"gain": self.gain}


class RandomInitializer(Initializer):
    """Base of the random initializers: holds ``seed`` (see the module docstring)."""

    def __init__(self, seed: Optional[Union[int, np.random.Generator]] = None):
        self.seed = _check_seed(seed)

    def _rng(self) -> np.random.Generator:
        return get_rng(self.seed)

    def get_config(self) -> Dict[str, Any]:
        return {"seed": self.seed if not isinstance(self.seed, np.random.Generator) else None}


def _truncated_standard_normal(rng: np.random.Generator,
                               shape: Tuple[int, ...]) -> np.ndarray:
    """Unit normal samples with every draw outside [-2, 2] redrawn (float64 draws)."""
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2.0
    n_bad = int(bad.sum())
    while n_bad:
        z[bad] = rng.standard_normal(n_bad)
        bad = np.abs(z) > 2.0
        n_bad = int(bad.sum())
    return z


class RandomNormal(RandomInitializer):
    """Normal samples ``N(mean, stddev**2)``.

    Parameters
    ----------
    mean : float, default 0.0
    stddev : float >= 0, default 0.05
    seed : None, int or numpy Generator
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed=None):
        self.mean = _real(mean, "mean")
        self.stddev = _real(stddev, "stddev")
        if self.stddev < 0:
            raise ValueError(f"`stddev` must be >= 0, received stddev={stddev!r}")
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype="float32") -> np.ndarray:
        shape, dtype = _shape(shape), _dtype(dtype, floating=True)
        z = self._rng().standard_normal(shape)
        return (z * self.stddev + self.mean).astype(dtype, copy=False)

    def get_config(self) -> Dict[str, Any]:
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class TruncatedNormal(RandomInitializer):
    """Normal samples ``N(mean, stddev**2)`` with draws more than two standard deviations
    from the mean redrawn (so the result's standard deviation is ``0.8796 * stddev``).

    Parameters
    ----------
    mean : float, default 0.0
    stddev : float >= 0, default 0.05
    seed : None, int or numpy Generator
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed=None):
        self.mean = _real(mean, "mean")
        self.stddev = _real(stddev, "stddev")
        if self.stddev < 0:
            raise ValueError(f"`stddev` must be >= 0, received stddev={stddev!r}")
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype="float32") -> np.ndarray:
        shape, dtype = _shape(shape), _dtype(dtype, floating=True)
        z = _truncated_standard_normal(self._rng(), shape)
        return (z * self.stddev + self.mean).astype(dtype, copy=False)

    def get_config(self) -> Dict[str, Any]:
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class RandomUniform(RandomInitializer):
    """Uniform samples on ``[minval, maxval)``.

    Parameters
    ----------
    minval : float, default -0.05
    maxval : float, default 0.05
    seed : None, int or numpy Generator
    """

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed=None):
        self.minval = _real(minval, "minval")
        self.maxval = _real(maxval, "maxval")
        if self.maxval < self.minval:
            raise ValueError(f"`maxval` must be >= `minval`, received minval={minval!r}, "
                             f"maxval={maxval!r}")
        if not math.isfinite(self.maxval - self.minval):     # NumPy: OverflowError
            raise ValueError(f"`maxval - minval` must be finite, received "
                             f"minval={minval!r}, maxval={maxval!r}")
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype="float32") -> np.ndarray:
        shape, dtype = _shape(shape), _dtype(dtype, floating=True)
        u = self._rng().uniform(self.minval, self.maxval, size=shape)
        return u.astype(dtype, copy=False)

    def get_config(self) -> Dict[str, Any]:
        return {"minval": self.minval, "maxval": self.maxval, **super().get_config()}


class VarianceScaling(RandomInitializer):
    """Samples whose variance is ``scale / n``, with ``n`` from the weight's fans.

    ``n`` is ``fan_in`` (``mode="fan_in"``), ``fan_out`` or their mean (``"fan_avg"``),
    at least 1. Then:

    * ``distribution="truncated_normal"`` (or ``"normal"``): a normal truncated at two
      standard deviations with ``stddev = sqrt(scale / n) / 0.87962566103423978``;
    * ``"untruncated_normal"``: ``N(0, scale / n)``;
    * ``"uniform"``: uniform on ``[-limit, limit]``, ``limit = sqrt(3 * scale / n)``.

    Parameters
    ----------
    scale : float > 0, default 1.0
    mode : {"fan_in", "fan_out", "fan_avg"}, default "fan_in"
    distribution : {"truncated_normal", "untruncated_normal", "uniform"}
    seed : None, int or numpy Generator
    input_axes, output_axes : sequence of int or None, default None
        Keras 3.15's: with both given, ``fan_in`` and ``fan_out`` are the products of the
        weight's sizes along those axes instead of :func:`compute_fans`'s.
    """

    _modes = ("fan_in", "fan_out", "fan_avg")
    _distributions = ("truncated_normal", "untruncated_normal", "uniform")

    def __init__(self, scale: float = 1.0, mode: str = "fan_in",
                 distribution: str = "truncated_normal", seed=None, input_axes=None,
                 output_axes=None):
        self.input_axes = _axes(input_axes, "input_axes")
        self.output_axes = _axes(output_axes, "output_axes")
        self.scale = _real(scale, "scale")
        if self.scale <= 0:
            raise ValueError(f"Argument `scale` must be positive float. Received: "
                             f"scale={scale!r}")
        if mode not in self._modes:
            raise ValueError(f"Invalid `mode` argument: {mode!r}. Please use one of "
                             f"{list(self._modes)}")
        if not isinstance(distribution, str):
            raise TypeError(f"`distribution` must be a string, received {distribution!r}")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in self._distributions:
            raise ValueError(f"Invalid `distribution` argument: {distribution!r}. Please use "
                             f"one of {list(self._distributions)}")
        self.mode = mode
        self.distribution = distribution
        super().__init__(seed)

    def _variance(self, shape: Tuple[int, ...]) -> float:
        fan_in, fan_out = compute_fans(shape)
        if self.input_axes is not None and self.output_axes is not None:
            try:
                fan_in = math.prod(shape[a] for a in self.input_axes)
                fan_out = math.prod(shape[a] for a in self.output_axes)
            except IndexError:
                raise ValueError(f"input_axes={self.input_axes} / output_axes="
                                 f"{self.output_axes} do not fit a weight of shape "
                                 f"{shape}") from None
        n = {"fan_in": fan_in, "fan_out": fan_out,
             "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        return self.scale / max(1.0, n)

    def __call__(self, shape: Shape, dtype="float32") -> np.ndarray:
        shape, dtype = _shape(shape), _dtype(dtype, floating=True)
        var = self._variance(shape)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            stddev = math.sqrt(var) / TRUNCATED_STDDEV_FACTOR
            out = _truncated_standard_normal(rng, shape) * stddev
        elif self.distribution == "untruncated_normal":
            out = rng.standard_normal(shape) * math.sqrt(var)
        else:
            limit = math.sqrt(3.0 * var)
            out = rng.uniform(-limit, limit, size=shape)
        return out.astype(dtype, copy=False)

    def _axes_config(self) -> Dict[str, Any]:
        return {k: list(v) for k, v in (("input_axes", self.input_axes),
                                         ("output_axes", self.output_axes)) if v is not None}

    def get_config(self) -> Dict[str, Any]:
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                **super().get_config(), **self._axes_config()}


class _Preset(VarianceScaling):
    """A VarianceScaling with fixed arguments; its config is the seed (and the axes)."""

    _preset: Tuple[float, str, str] = (1.0, "fan_in", "truncated_normal")

    def __init__(self, seed=None, input_axes=None, output_axes=None):
        scale, mode, distribution = self._preset
        super().__init__(scale=scale, mode=mode, distribution=distribution, seed=seed,
                         input_axes=input_axes, output_axes=output_axes)

    def get_config(self) -> Dict[str, Any]:
        return {**RandomInitializer.get_config(self), **self._axes_config()}


class GlorotUniform(_Preset):
    """Glorot (Xavier) uniform: ``U(-limit, limit)``, ``limit = sqrt(6 / (fan_in + fan_out))``.
    The default kernel initializer of Keras layers."""

    _preset = (1.0, "fan_avg", "uniform")


class GlorotNormal(_Preset):
    """Glorot (Xavier) normal: truncated normal with standard deviation (after truncation)
    ``sqrt(2 / (fan_in + fan_out))``."""

    _preset = (1.0, "fan_avg", "truncated_normal")


class HeNormal(_Preset):
    """He normal: truncated normal with standard deviation (after truncation)
    ``sqrt(2 / fan_in)``."""

    _preset = (2.0, "fan_in", "truncated_normal")


class HeUniform(_Preset):
    """He uniform: ``U(-limit, limit)``, ``limit = sqrt(6 / fan_in)``."""

    _preset = (2.0, "fan_in", "uniform")


class LecunNormal(_Preset):
    """Lecun normal: truncated normal with standard deviation (after truncation)
    ``sqrt(1 / fan_in)``."""

    _preset = (1.0, "fan_in", "truncated_normal")


class LecunUniform(_Preset):
    """Lecun uniform: ``U(-limit, limit)``, ``limit = sqrt(3 / fan_in)``."""

    _preset = (1.0, "fan_in", "uniform")


class Orthogonal(RandomInitializer):
    """An orthogonal matrix (times ``gain``) from the QR decomposition of a normal matrix.

    A shape ``(*d, n)`` is treated as the matrix ``(prod(d), n)``; the result has
    orthonormal columns if ``prod(d) >= n``, else orthonormal rows.

    Parameters
    ----------
    gain : float, default 1.0
    seed : None, int or numpy Generator
    """

    def __init__(self, gain: float = 1.0, seed=None):
        self.gain = _real(gain, "gain")
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype="float32") -> np.ndarray:
        shape, dtype = _shape(shape), _dtype(dtype, floating=True)
        if len(shape) < 2:
            raise ValueError(f"The tensor to initialize must be at least two-dimensional. "
                             f"Received: shape={shape} of rank {len(shape)}.")
        rows = int(np.prod(shape[:-1], dtype=np.int64))
        cols = shape[-1]
        a = self._rng().standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q).reshape(shape).astype(dtype, copy=False)

    def get_config(self) -> Dict[str, Any]:
        return {"gain": self.gain, **super().get_config()}


_CLASSES = (Zeros, Ones, Constant, RandomNormal, RandomUniform, TruncatedNormal,
            VarianceScaling, GlorotUniform, GlorotNormal, HeNormal, HeUniform, LecunNormal,
            LecunUniform, Orthogonal, Identity)
_ALIASES = {"zeros": Zeros, "ones": Ones, "constant": Constant, "random_normal": RandomNormal,
            "random_uniform": RandomUniform, "truncated_normal": TruncatedNormal,
            "variance_scaling": VarianceScaling, "glorot_uniform": GlorotUniform,
            "glorot_normal": GlorotNormal, "he_normal": HeNormal, "he_uniform": HeUniform,
            "lecun_normal": LecunNormal, "lecun_uniform": LecunUniform,
            "orthogonal": Orthogonal, "identity": Identity,
            # Keras 3's short aliases
            "uniform": RandomUniform, "normal": RandomNormal, "one": Ones, "zero": Zeros}
_BY_NAME = {**{c.__name__: c for c in _CLASSES}, **_ALIASES}

# Keras-style lower-case aliases of the classes.
zeros, ones, constant = Zeros, Ones, Constant
random_normal, random_uniform, truncated_normal = RandomNormal, RandomUniform, TruncatedNormal
variance_scaling, orthogonal, identity = VarianceScaling, Orthogonal, Identity
glorot_uniform, glorot_normal = GlorotUniform, GlorotNormal
he_normal, he_uniform, lecun_normal, lecun_uniform = HeNormal, HeUniform, LecunNormal, LecunUniform


def serialize(initializer: Initializer) -> Dict[str, Any]:
    """``{"class_name": ..., "config": initializer.get_config()}``."""
    if not isinstance(initializer, Initializer):
        raise TypeError(f"expected an Initializer, received {type(initializer).__name__}")
    return {"class_name": type(initializer).__name__, "config": initializer.get_config()}


def deserialize(config: Dict[str, Any]) -> Initializer:
    """Inverse of :func:`serialize`."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"a serialized initializer is a dict with 'class_name' and 'config' "
                         f"keys, received {config!r}")
    mine = _custom.from_custom(config, "initializer")   # load_model's custom_objects
    if mine is not None:
        return mine
    cls = _lookup(config["class_name"])
    return cls.from_config(_config_of(config, "initializer"))


def _config_of(serialized: Dict[str, Any], what: str) -> Dict[str, Any]:
    """The ``"config"`` dict of a serialized object (missing or None: no arguments)."""
    cfg = serialized.get("config")
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ValueError(f"a serialized {what}'s 'config' must be a dict of its arguments, "
                         f"received {cfg!r}")
    return dict(cfg)


def _lookup(name: str) -> type:
    cls = _BY_NAME.get(name)
    if cls is None:
        raise ValueError(f"Unknown initializer {name!r}. Valid names: {sorted(_ALIASES)} "
                         f"(or the class names)")
    return cls


def get(identifier: Union[None, str, Dict[str, Any], Initializer, Callable]
        ) -> Optional[Callable]:
    """An initializer from a name, a config dict, an instance or any callable.

    Parameters
    ----------
    identifier : None, str, dict, Initializer or callable
        ``None`` -> ``None``; a name such as ``"glorot_uniform"``, ``"he_normal"``,
        ``"zeros"`` (or a class name such as ``"GlorotUniform"``) -> a new instance with
        Keras defaults; a :func:`serialize` dict; an instance or callable -> itself; an
        Initializer class -> an instance of it.

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
        return _lookup(identifier)()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if callable(identifier):
        return identifier
    raise TypeError(f"Could not interpret initializer identifier: {identifier!r}")
