"""Stochastic gradient descent, with optional (Nesterov) momentum, as in Keras 3."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from ..backends.numpy_backend import flush_subnormal
from .optimizer import LearningRate, Optimizer, _check_real

__all__ = ["SGD"]


class SGD(Optimizer):
    """Gradient descent, with optional momentum (Keras 3 formulas).

    With ``momentum == 0``::

        param -= lr * g

    With ``momentum > 0`` (slot ``momentum``, zeros at start)::

        m = momentum * m - lr * g                # stored as 0 if subnormal (below)
        param += m                               # nesterov=False
        param += momentum * m - lr * g           # nesterov=True

    A momentum below the smallest normal number in magnitude is stored as +0 (see
    :func:`fastnn.ops.adam_update`'s ``flush_subnormal``: decaying into the subnormal
    range, it would stick there and slow every later step many times over).

    No epsilon is involved.

    Parameters
    ----------
    learning_rate : float >= 0, LearningRateSchedule or callable, default 0.01
    momentum : float in [0, 1], default 0.0
    nesterov : bool, default False
    weight_decay, clipnorm, clipvalue, global_clipnorm, name
        See :class:`~fastnn.optimizers.Optimizer`.
    **kwargs
        Keras 3's ``use_ema``, ``ema_momentum`` and ``ema_overwrite_frequency`` (a moving
        average of the weights), ``loss_scale_factor`` and ``gradient_accumulation_steps``
        (at their defaults only): see :class:`~fastnn.optimizers.Optimizer`.
    """

    _default_name = "SGD"

    def __init__(self, learning_rate: LearningRate = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: Optional[float] = None,
                 clipnorm: Optional[float] = None, clipvalue: Optional[float] = None,
                 global_clipnorm: Optional[float] = None, name: Optional[str] = None,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay,
                         clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.momentum = _check_real(momentum, "momentum", low=0.0, high=1.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"`nesterov` must be a bool, received nesterov={nesterov!r}")
        self.nesterov = bool(nesterov)

    def _slot_specs(self):
        return [("momentum", 0.0)] if self.momentum != 0 else []

    def _step_constants(self, lr, t):
        return (lr, self.momentum, self.nesterov)

    def _update_step(self, param, grad, slots, scratch, c):
        lr, momentum, nesterov = c
        lr_g = scratch[0]
        np.multiply(grad, lr, out=lr_g)                 # lr * g
        if not slots:
            param -= lr_g
            return
        m = slots[0]
        m *= momentum
        m -= lr_g                                       # m = momentum * m - lr * g
        flush_subnormal(m, scratch[1])
        if nesterov:
            step = scratch[1]
            np.multiply(m, momentum, out=step)
            step -= lr_g                                # momentum * m - lr * g
            param += step
        else:
            param += m

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov})
        return config
