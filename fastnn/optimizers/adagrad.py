"""Adagrad, as in Keras 3."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from .optimizer import LearningRate, Optimizer, _check_real

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011), with Keras 3's formulas.

    Slot ``accumulator``, filled with ``initial_accumulator_value`` at start::

        accumulator += g**2
        param -= lr * g / sqrt(accumulator + epsilon)

    Epsilon convention: ``epsilon`` is added *inside* the square root.

    Parameters
    ----------
    learning_rate : float >= 0, LearningRateSchedule or callable, default 0.001
    initial_accumulator_value : float >= 0, default 0.1
    epsilon : float >= 0, default 1e-7
    weight_decay, clipnorm, clipvalue, global_clipnorm, name
        See :class:`~fastnn.optimizers.Optimizer`.
    **kwargs
        Keras 3's ``use_ema``, ``ema_momentum`` and ``ema_overwrite_frequency`` (a moving
        average of the weights), ``loss_scale_factor`` and ``gradient_accumulation_steps``
        (at their defaults only): see :class:`~fastnn.optimizers.Optimizer`.
    """

    _default_name = "adagrad"

    def __init__(self, learning_rate: LearningRate = 0.001,
                 initial_accumulator_value: float = 0.1, epsilon: float = 1e-7,
                 weight_decay: Optional[float] = None, clipnorm: Optional[float] = None,
                 clipvalue: Optional[float] = None, global_clipnorm: Optional[float] = None,
                 name: Optional[str] = None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay,
                         clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.initial_accumulator_value = _check_real(
            initial_accumulator_value, "initial_accumulator_value", low=0.0)
        self.epsilon = _check_real(epsilon, "epsilon", low=0.0)

    def _slot_specs(self):
        return [("accumulator", self.initial_accumulator_value)]

    def _step_constants(self, lr, t):
        return (lr, self.epsilon)

    def _update_step(self, param, grad, slots, scratch, c):
        lr, epsilon = c
        acc = slots[0]
        a, b = scratch
        np.square(grad, out=a)
        acc += a                                        # accumulator += g^2
        np.add(acc, epsilon, out=a)
        np.sqrt(a, out=a)
        np.multiply(grad, lr, out=b)
        b /= a
        param -= b                                      # param -= lr * g / sqrt(acc + eps)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"initial_accumulator_value": self.initial_accumulator_value,
                       "epsilon": self.epsilon})
        return config
