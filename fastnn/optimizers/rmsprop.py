"""RMSprop, optionally centered and with momentum, as in Keras 3."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from ..backends.numpy_backend import flush_subnormal
from .optimizer import LearningRate, Optimizer, _check_real

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """RMSprop (Keras 3 formulas).

    Slots: ``velocity`` (zeros), plus ``momentum`` if ``momentum > 0`` and
    ``average_gradient`` if ``centered``::

        velocity = rho * velocity + (1 - rho) * g**2
        if centered:
            average_gradient = rho * average_gradient + (1 - rho) * g
            denominator = velocity - average_gradient**2 + epsilon
        else:
            denominator = velocity + epsilon
        increment = lr * g / sqrt(denominator)
        if momentum > 0:
            m = momentum * m + increment
            param -= m
        else:
            param -= increment

    Epsilon convention: ``epsilon`` is added to the mean square *inside* the square root,
    ``sqrt(velocity + epsilon)``, not to ``sqrt(velocity)``. Each slot, once updated, is
    stored as +0 where it is below the smallest normal number in magnitude (see
    :func:`fastnn.ops.adam_update`'s ``flush_subnormal``: a decaying slot would stick in
    the subnormal range and slow every later step many times over).

    Parameters
    ----------
    learning_rate : float >= 0, LearningRateSchedule or callable, default 0.001
    rho : float in [0, 1], default 0.9
        Discount of the moving averages.
    momentum : float in [0, 1], default 0.0
    epsilon : float >= 0, default 1e-7
    centered : bool, default False
        Normalize by the estimated variance of the gradient instead of its raw second
        moment.
    weight_decay, clipnorm, clipvalue, global_clipnorm, name
        See :class:`~fastnn.optimizers.Optimizer`.
    **kwargs
        Keras 3's ``use_ema``, ``ema_momentum`` and ``ema_overwrite_frequency`` (a moving
        average of the weights), ``loss_scale_factor`` and ``gradient_accumulation_steps``
        (at their defaults only): see :class:`~fastnn.optimizers.Optimizer`.
    """

    _default_name = "rmsprop"

    def __init__(self, learning_rate: LearningRate = 0.001, rho: float = 0.9,
                 momentum: float = 0.0, epsilon: float = 1e-7, centered: bool = False,
                 weight_decay: Optional[float] = None, clipnorm: Optional[float] = None,
                 clipvalue: Optional[float] = None, global_clipnorm: Optional[float] = None,
                 name: Optional[str] = None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay,
                         clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.rho = _check_real(rho, "rho", low=0.0, high=1.0)
        self.momentum = _check_real(momentum, "momentum", low=0.0, high=1.0)
        self.epsilon = _check_real(epsilon, "epsilon", low=0.0)
        if not isinstance(centered, (bool, np.bool_)):
            raise TypeError(f"`centered` must be a bool, received centered={centered!r}")
        self.centered = bool(centered)

    def _slot_specs(self):
        specs = [("velocity", 0.0)]
        if self.momentum > 0:
            specs.append(("momentum", 0.0))
        if self.centered:
            specs.append(("average_gradient", 0.0))
        return specs

    def _step_constants(self, lr, t):
        return (lr, self.rho, 1.0 - self.rho, self.epsilon, self.momentum, self.centered)

    def _update_step(self, param, grad, slots, scratch, c):
        lr, rho, one_minus_rho, epsilon, momentum, centered = c
        velocity = slots[0]
        a, b = scratch
        velocity *= rho
        np.square(grad, out=a)
        a *= one_minus_rho
        velocity += a                                   # rho * v + (1 - rho) * g^2
        flush_subnormal(velocity, b)
        if centered:
            avg = slots[-1]
            avg *= rho
            np.multiply(grad, one_minus_rho, out=a)
            avg += a                                    # rho * avg + (1 - rho) * g
            flush_subnormal(avg, b)
            np.square(avg, out=a)
            np.subtract(velocity, a, out=a)
            a += epsilon                                # v - avg^2 + eps
        else:
            np.add(velocity, epsilon, out=a)            # v + eps
        np.sqrt(a, out=a)
        np.multiply(grad, lr, out=b)
        b /= a                                          # increment = lr * g / sqrt(den)
        if momentum > 0:
            m = slots[1]
            m *= momentum
            m += b
            flush_subnormal(m, a)
            param -= m
        else:
            param -= b

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                       "centered": self.centered})
        return config
