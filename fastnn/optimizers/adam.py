"""Adam (optionally AMSGrad) and AdamW, as in Keras 3."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from .. import ops as _ops
from .optimizer import LearningRate, Optimizer, _check_real

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2014), with Keras 3's formulas.

    Slots: ``momentum`` (m) and ``velocity`` (v), zeros at start, plus ``velocity_hat`` if
    ``amsgrad``. At step ``t`` (1 for the first step)::

        alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)    # in the parameter's dtype
        m += (g - m) * (1 - beta_1)
        v += (g**2 - v) * (1 - beta_2)
        if amsgrad:
            v_hat = maximum(v_hat, v);  v = v_hat
        param -= (m * alpha) / (sqrt(v) + epsilon)

    Epsilon convention: "epsilon hat" of the paper (the formula before its Section 2.1):
    ``epsilon`` is added to ``sqrt(v)`` of the *uncorrected* second moment, with the bias
    corrections folded into ``alpha`` -- not to ``sqrt(v_hat_corrected)`` as in the paper's
    Algorithm 1 (nor inside the square root).

    Parameters
    ----------
    learning_rate : float >= 0, LearningRateSchedule or callable, default 0.001
    beta_1 : float in [0, 1), default 0.9
    beta_2 : float in [0, 1), default 0.999
    epsilon : float >= 0, default 1e-7
    amsgrad : bool, default False
    weight_decay, clipnorm, clipvalue, global_clipnorm, name
        See :class:`~fastnn.optimizers.Optimizer`.
    **kwargs
        Keras 3's ``use_ema``, ``ema_momentum`` and ``ema_overwrite_frequency`` (a moving
        average of the weights), ``loss_scale_factor`` and ``gradient_accumulation_steps``
        (at their defaults only): see :class:`~fastnn.optimizers.Optimizer`.
    """

    _default_name = "adam"

    def __init__(self, learning_rate: LearningRate = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 weight_decay: Optional[float] = None, clipnorm: Optional[float] = None,
                 clipvalue: Optional[float] = None, global_clipnorm: Optional[float] = None,
                 name: Optional[str] = None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay,
                         clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.beta_1 = _check_real(beta_1, "beta_1", low=0.0, high=1.0, high_open=True)
        self.beta_2 = _check_real(beta_2, "beta_2", low=0.0, high=1.0, high_open=True)
        self.epsilon = _check_real(epsilon, "epsilon", low=0.0)
        if not isinstance(amsgrad, (bool, np.bool_)):
            raise TypeError(f"`amsgrad` must be a bool, received amsgrad={amsgrad!r}")
        self.amsgrad = bool(amsgrad)

    def _slot_specs(self):
        specs = [("momentum", 0.0), ("velocity", 0.0)]
        if self.amsgrad:
            specs.append(("velocity_hat", 0.0))
        return specs

    def _step_constants(self, lr, t):
        # alpha is computed in each parameter dtype's own precision, as Keras does (it casts
        # lr, beta_1, beta_2 and the step to the variable's dtype): float32 trajectories
        # then match Keras's to within an ulp instead of drifting by tens of ulps.
        alphas = {}
        for dtype in self._dtypes_in_use:
            f = dtype.type
            alphas[dtype] = float(f(lr) * np.sqrt(f(1) - f(self.beta_2) ** f(t))
                                  / (f(1) - f(self.beta_1) ** f(t)))
        return (alphas, 1.0 - self.beta_1, 1.0 - self.beta_2, self.epsilon)

    def _update_step(self, param, grad, slots, scratch, c):
        # One pass in the active backend's fused kernel (fastnn.ops.adam_update, which
        # documents the operation order: the same as the formulas above, in the parameter's
        # dtype, bitwise equal in every backend).
        alphas, one_minus_b1, one_minus_b2, epsilon = c
        if not grad.flags.c_contiguous:
            grad = np.ascontiguousarray(grad)
        target = param if param.flags.c_contiguous else np.ascontiguousarray(param)
        _ops._adam_update(target, grad, slots[0], slots[1],
                          slots[2] if len(slots) == 3 else None, alphas[param.dtype],
                          one_minus_b1, one_minus_b2, epsilon, True)
        if target is not param:                 # a strided view: write the result back
            param[...] = target

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                       "amsgrad": self.amsgrad})
        return config


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as Keras 3 does it.

    Before the Adam step of :class:`Adam` (same slots, same epsilon convention: ``epsilon``
    added to ``sqrt(v)``), every parameter decays::

        param -= param * weight_decay * lr

    with the same ``lr`` as the step (a schedule's current value). The decay applies to all
    parameters, biases included, as Keras does unless told otherwise
    (:meth:`~fastnn.optimizers.Optimizer.exclude_from_weight_decay`).

    Parameters
    ----------
    learning_rate : float >= 0, LearningRateSchedule or callable, default 0.001
    weight_decay : float >= 0, default 0.004
    beta_1 : float in [0, 1), default 0.9
    beta_2 : float in [0, 1), default 0.999
    epsilon : float >= 0, default 1e-7
    amsgrad : bool, default False
    clipnorm, clipvalue, global_clipnorm, name
        See :class:`~fastnn.optimizers.Optimizer`.
    **kwargs
        Keras 3's ``use_ema``, ``ema_momentum`` and ``ema_overwrite_frequency`` (a moving
        average of the weights), ``loss_scale_factor`` and ``gradient_accumulation_steps``
        (at their defaults only): see :class:`~fastnn.optimizers.Optimizer`.
    """

    _default_name = "adamw"

    def __init__(self, learning_rate: LearningRate = 0.001, weight_decay: float = 0.004,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 amsgrad: bool = False, clipnorm: Optional[float] = None,
                 clipvalue: Optional[float] = None, global_clipnorm: Optional[float] = None,
                 name: Optional[str] = None, **kwargs):
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: "
                             "weight_decay=None")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=amsgrad, weight_decay=weight_decay,
                         clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, name=name, **kwargs)
