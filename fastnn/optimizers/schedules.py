"""Learning-rate schedules: callables of the optimizer step, with Keras names and formulas.

A schedule is passed as an optimizer's ``learning_rate``; before each update the optimizer
calls it with its ``iterations`` count *before* that update (0 for the first step), exactly as
Keras does, and uses the returned float.

>>> from fastnn.optimizers import SGD, schedules
>>> lr = schedules.ExponentialDecay(0.1, decay_steps=1000, decay_rate=0.96, staircase=True)
>>> opt = SGD(learning_rate=lr)

Every schedule returns a Python ``float`` and round-trips through ``get_config`` /
``from_config`` (and :func:`serialize` / :func:`deserialize`, which add the class name).
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Dict, Sequence

import numpy as np

from ..utils._args import check_bool

__all__ = ["LearningRateSchedule", "ExponentialDecay", "PiecewiseConstantDecay",
           "InverseTimeDecay", "PolynomialDecay", "CosineDecay", "CosineDecayRestarts",
           "serialize", "deserialize", "get"]


def _real(value, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    """``value`` as a finite float, or ValueError/TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(
            value, "__float__"):
        raise TypeError(f"`{name}` must be a real number, received {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"`{name}` must be finite, received {name}={value!r}")
    if positive and v <= 0:
        raise ValueError(f"`{name}` must be > 0, received {name}={value!r}")
    if nonneg and v < 0:
        raise ValueError(f"`{name}` must be >= 0, received {name}={value!r}")
    return v


def _count(value, name: str, *, positive: bool = False, nonneg: bool = False):
    """A step count (``decay_steps``, ``warmup_steps``): checked as :func:`_real`, kept as a
    Python int when it is integral (a NumPy scalar would make the config unwritable as
    JSON), else as a float."""
    v = _real(value, name, positive=positive, nonneg=nonneg)
    return int(v) if np.asarray(value).dtype.kind in "iu" else v


def _step(step) -> float:
    if isinstance(step, bool):
        raise TypeError(f"`step` must be a number, received {step!r}")
    return float(step)


class LearningRateSchedule:
    """Base class: a learning rate as a function of the optimizer step.

    Subclasses implement ``__call__(step) -> float`` and ``get_config() -> dict`` (whose keys
    are the constructor's arguments, so the inherited ``from_config`` works).

    Examples
    --------
    >>> class Halving(LearningRateSchedule):
    ...     def __init__(self, lr0):
    ...         self.lr0 = lr0
    ...     def __call__(self, step):
    ...         return self.lr0 / 2 ** (step // 100)
    ...     def get_config(self):
    ...         return {"lr0": self.lr0}
    """

    def __call__(self, step: int) -> float:
        raise NotImplementedError(f"learning rate schedule {type(self).__name__!r} must "
                                  f"override __call__(self, step)")

    def get_config(self) -> Dict[str, Any]:
        raise NotImplementedError(f"learning rate schedule {type(self).__name__!r} must "
                                  f"override get_config() to be serializable")

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "LearningRateSchedule":
        """Rebuild a schedule from :meth:`get_config`'s output."""
        return cls(**config)

    def __repr__(self) -> str:
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        except NotImplementedError:
            args = ""
        return f"{type(self).__name__}({args})"


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``.

    With ``staircase=True`` the exponent is ``floor(step / decay_steps)``, so the rate drops
    by a factor ``decay_rate`` every ``decay_steps`` steps.

    Parameters
    ----------
    initial_learning_rate : float
        Rate at step 0.
    decay_steps : int or float, > 0
    decay_rate : float >= 0
    staircase : bool, default False
    name : str, default "ExponentialDecay"
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False, name: str = "ExponentialDecay"):
        self.initial_learning_rate = _real(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _count(decay_steps, "decay_steps", positive=True)
        self.decay_rate = _real(decay_rate, "decay_rate", nonneg=True)
        self.staircase = check_bool(staircase, "staircase")
        self.name = name

    def __call__(self, step: int) -> float:
        p = _step(step) / float(self.decay_steps)
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self) -> Dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """A step function: ``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, and ``values[-1]`` after ``boundaries[-1]``.

    Parameters
    ----------
    boundaries : sequence of numbers, strictly increasing, length n
    values : sequence of floats, length n + 1
    name : str, default "PiecewiseConstant"
    """

    def __init__(self, boundaries: Sequence[float], values: Sequence[float],
                 name: str = "PiecewiseConstant"):
        # Python numbers (NumPy scalars would reach a model file's JSON config)
        def py(v):
            return v.item() if hasattr(v, "item") and not isinstance(v, (int, float)) else v

        boundaries = [py(b) for b in boundaries]
        values = [py(v) for v in values]
        if len(boundaries) != len(values) - 1:
            raise ValueError(f"The length of `boundaries` should be 1 less than the length of "
                             f"`values`. Received boundaries={boundaries} of length "
                             f"{len(boundaries)} and values={values} of length {len(values)}.")
        for i, b in enumerate(boundaries):
            _real(b, f"boundaries[{i}]")
        if any(b1 >= b2 for b1, b2 in zip(boundaries[:-1], boundaries[1:])):
            raise ValueError(f"`boundaries` must be strictly increasing, received {boundaries}")
        for i, v in enumerate(values):
            _real(v, f"values[{i}]")
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def __call__(self, step: int) -> float:
        # bisect_left counts the boundaries strictly below `step`.
        return float(self.values[bisect.bisect_left(self.boundaries, _step(step))])

    def get_config(self) -> Dict[str, Any]:
        return {"boundaries": list(self.boundaries), "values": list(self.values),
                "name": self.name}


class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)``.

    With ``staircase=True``, ``step / decay_steps`` is floored.

    Parameters
    ----------
    initial_learning_rate : float
    decay_steps : int or float, > 0
    decay_rate : float >= 0
    staircase : bool, default False
    name : str, default "InverseTimeDecay"
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False, name: str = "InverseTimeDecay"):
        self.initial_learning_rate = _real(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _count(decay_steps, "decay_steps", positive=True)
        self.decay_rate = _real(decay_rate, "decay_rate", nonneg=True)
        self.staircase = check_bool(staircase, "staircase")
        self.name = name

    def __call__(self, step: int) -> float:
        p = _step(step) / float(self.decay_steps)
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)

    def get_config(self) -> Dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase, "name": self.name}


class PolynomialDecay(LearningRateSchedule):
    """Polynomial decay from ``initial_learning_rate`` to ``end_learning_rate``.

    ``(initial - end) * (1 - min(step, decay_steps) / decay_steps) ** power + end``; with
    ``cycle=True`` the horizon is instead the first multiple of ``decay_steps`` that is
    ``>= step`` (``decay_steps`` itself at step 0).

    Parameters
    ----------
    initial_learning_rate : float
    decay_steps : int or float, > 0
    end_learning_rate : float, default 1e-4
    power : float >= 0, default 1.0
    cycle : bool, default False
    name : str, default "PolynomialDecay"
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float,
                 end_learning_rate: float = 0.0001, power: float = 1.0, cycle: bool = False,
                 name: str = "PolynomialDecay"):
        self.initial_learning_rate = _real(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _count(decay_steps, "decay_steps", positive=True)
        self.end_learning_rate = _real(end_learning_rate, "end_learning_rate")
        self.power = _real(power, "power", nonneg=True)
        self.cycle = check_bool(cycle, "cycle")
        self.name = name

    def __call__(self, step: int) -> float:
        s = _step(step)
        horizon = float(self.decay_steps)
        if self.cycle:
            horizon *= 1.0 if s == 0 else math.ceil(s / horizon)
        else:
            s = min(s, horizon)
        p = s / horizon
        return ((self.initial_learning_rate - self.end_learning_rate) * (1.0 - p) ** self.power
                + self.end_learning_rate)

    def get_config(self) -> Dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "end_learning_rate": self.end_learning_rate,
                "power": self.power, "cycle": self.cycle, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay, with an optional linear warm-up first.

    Without warm-up (``warmup_target=None``)::

        s = min(step, decay_steps)
        lr = initial_learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha)

    With warm-up, the rate rises linearly from ``initial_learning_rate`` to
    ``warmup_target`` over ``warmup_steps`` steps, then decays as above from
    ``warmup_target`` over ``decay_steps`` more steps.

    Parameters
    ----------
    initial_learning_rate : float
    decay_steps : int, > 0
    alpha : float, default 0.0
        Final rate as a fraction of the decay's starting rate.
    name : str, default "CosineDecay"
    warmup_target : float or None, default None
    warmup_steps : int, default 0
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, alpha: float = 0.0,
                 name: str = "CosineDecay", warmup_target: float = None,
                 warmup_steps: float = 0):
        self.initial_learning_rate = _real(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _count(decay_steps, "decay_steps", positive=True)
        self.alpha = _real(alpha, "alpha")
        self.name = name
        self.warmup_target = None if warmup_target is None else _real(warmup_target,
                                                                       "warmup_target")
        self.warmup_steps = _count(warmup_steps, "warmup_steps", nonneg=True)

    def _decay(self, s: float, start: float) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * s / float(self.decay_steps)))
        return start * ((1.0 - self.alpha) * cosine + self.alpha)

    def __call__(self, step: int) -> float:
        s = _step(step)
        if self.warmup_target is None:
            return self._decay(min(s, float(self.decay_steps)), self.initial_learning_rate)
        w = float(self.warmup_steps)
        s = min(s, float(self.decay_steps) + w)
        if s < w:
            return (self.warmup_target - self.initial_learning_rate) * (s / w) \
                + self.initial_learning_rate
        return self._decay(s - w, self.warmup_target)

    def get_config(self) -> Dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha, "name": self.name,
                "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR, Loshchilov & Hutter 2016), Keras's formula.

    The first period lasts ``first_decay_steps`` steps, each next one ``t_mul`` times the
    one before, and each restarts from ``m_mul`` times the previous starting rate. With
    ``f = step / first_decay_steps``, the period ``i`` and the fraction ``c`` of it done::

        t_mul == 1: i = floor(f);  c = f - i
        otherwise:  i = floor(log(1 - f * (1 - t_mul)) / log(t_mul))
                    c = (f - (1 - t_mul**i) / (1 - t_mul)) / t_mul**i
        lr = initial_learning_rate * ((1 - alpha) * 0.5 * m_mul**i * (1 + cos(pi * c)) + alpha)

    Parameters
    ----------
    initial_learning_rate : float
    first_decay_steps : int or float, > 0
    t_mul : float > 0, default 2.0
    m_mul : float >= 0, default 1.0
    alpha : float, default 0.0
        The rate's floor, as a fraction of ``initial_learning_rate``.
    name : str, default "SGDRDecay"
    """

    def __init__(self, initial_learning_rate: float, first_decay_steps: float,
                 t_mul: float = 2.0, m_mul: float = 1.0, alpha: float = 0.0,
                 name: str = "SGDRDecay"):
        self.initial_learning_rate = _real(initial_learning_rate, "initial_learning_rate")
        self.first_decay_steps = _count(first_decay_steps, "first_decay_steps", positive=True)
        self.t_mul = _real(t_mul, "t_mul", positive=True)
        self.m_mul = _real(m_mul, "m_mul", nonneg=True)
        self.alpha = _real(alpha, "alpha")
        self.name = name

    def __call__(self, step: int) -> float:
        f = _step(step) / float(self.first_decay_steps)
        t = self.t_mul
        if t == 1.0:
            i = math.floor(f)
            c = f - i
        else:
            x = 1.0 - f * (1.0 - t)
            if x <= 0.0:   # t_mul < 1: the shrinking periods add up to a finite length
                raise ValueError(
                    f"{type(self).__name__}: step {step} is past the end of the schedule: "
                    f"with t_mul={t} < 1 its periods add up to "
                    f"{self.first_decay_steps / (1.0 - t):g} steps (Keras returns NaN)")
            i = math.floor(math.log(x) / math.log(t))

            def start(j: int) -> float:   # where period j begins, in first periods
                return (1.0 - t ** j) / (1.0 - t)

            # the logarithm can land a hair below a restart (log(243) / log(3) is
            # 4.999...): put f in the period whose start it has reached
            while start(i + 1) <= f:
                i += 1
            while i > 0 and start(i) > f:
                i -= 1
            c = (f - start(i)) / t ** i
        decayed = 0.5 * self.m_mul ** i * (1.0 + math.cos(math.pi * c))
        return self.initial_learning_rate * ((1.0 - self.alpha) * decayed + self.alpha)

    def get_config(self) -> Dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "first_decay_steps": self.first_decay_steps, "t_mul": self.t_mul,
                "m_mul": self.m_mul, "alpha": self.alpha, "name": self.name}


_SCHEDULES = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay,
                                            InverseTimeDecay, PolynomialDecay, CosineDecay,
                                            CosineDecayRestarts)}


def serialize(schedule: LearningRateSchedule) -> Dict[str, Any]:
    """``{"class_name": ..., "config": schedule.get_config()}``."""
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(f"expected a LearningRateSchedule, received {schedule!r}")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config: Dict[str, Any],
                custom_objects: Dict[str, type] = None) -> LearningRateSchedule:
    """Inverse of :func:`serialize`; ``custom_objects`` maps extra class names to classes."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"a serialized schedule is a dict with 'class_name' and 'config' "
                         f"keys, received {config!r}")
    known = dict(_SCHEDULES)
    if custom_objects:
        known.update(custom_objects)
    name = config["class_name"]
    if name not in known:
        raise ValueError(f"unknown learning rate schedule {name!r}; known: {sorted(known)}")
    return known[name].from_config(dict(config.get("config", {})))


def get(identifier) -> LearningRateSchedule:
    """A schedule from an instance (returned as is) or a :func:`serialize` dict."""
    if isinstance(identifier, LearningRateSchedule):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"cannot interpret {identifier!r} as a learning rate schedule")
