"""Optimizers with Keras 3 names, defaults and update formulas, in plain NumPy.

========================  ==========================================================
``SGD``                   ``learning_rate=0.01, momentum=0.0, nesterov=False``
``RMSprop``               ``learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                          centered=False``
``Adam``                  ``learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                          amsgrad=False``
``AdamW``                 ``learning_rate=0.001, weight_decay=0.004``, then as ``Adam``
``Adagrad``               ``learning_rate=0.001, initial_accumulator_value=0.1,
                          epsilon=1e-7``
========================  ==========================================================

All take ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm`` and ``name``
(see :class:`Optimizer`). ``learning_rate`` may be a float, a
:class:`schedules.LearningRateSchedule` or a callable of the step.

A from-scratch training loop::

    opt = fastnn.optimizers.get("adam")
    for step in range(n_steps):
        grads = compute_grads(params)      # list of arrays shaped like params
        opt.apply(grads, params)           # params are updated in place

State for checkpoints: ``opt.get_state()`` / ``opt.set_state(state)``; hyperparameters:
``opt.get_config()`` / ``type(opt).from_config(config)``, or :func:`serialize` /
:func:`deserialize` which carry the class name.
"""
from __future__ import annotations

from typing import Any, Dict, Union

from . import schedules
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "Adagrad", "schedules", "get",
           "serialize", "deserialize"]

_OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW,
               "adagrad": Adagrad}


def _lookup(name: str, custom_objects: Dict[str, type] = None) -> type:
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    cls = _OPTIMIZERS.get(name.lower())
    if cls is None:
        raise ValueError(f"Unknown optimizer {name!r}. Valid names: {sorted(_OPTIMIZERS)} "
                         f"(or the class names {[c.__name__ for c in _OPTIMIZERS.values()]})")
    return cls


def serialize(optimizer: Optimizer) -> Dict[str, Any]:
    """``{"class_name": "Adam", "config": optimizer.get_config()}``."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"expected an Optimizer, received {type(optimizer).__name__}")
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def deserialize(config: Dict[str, Any], custom_objects: Dict[str, type] = None) -> Optimizer:
    """Inverse of :func:`serialize`: a new optimizer (without state).

    ``config`` is ``{"class_name": ..., "config": {...}}``; a flat dict with a
    ``"class_name"`` key beside the constructor arguments is accepted too.
    """
    if not isinstance(config, dict):
        raise TypeError(f"expected a dict, received {type(config).__name__}")
    if "class_name" not in config:
        raise ValueError(f"an optimizer config dict needs a 'class_name' key (one of "
                         f"{sorted(_OPTIMIZERS)}), received keys {sorted(config)}")
    cls = _lookup(config["class_name"], custom_objects)
    if "config" in config:
        kwargs = dict(config["config"])
    else:
        kwargs = {k: v for k, v in config.items() if k != "class_name"}
    return cls.from_config(kwargs, custom_objects)


def get(identifier: Union[str, Dict[str, Any], Optimizer]) -> Optimizer:
    """An optimizer from a name, a config dict or an instance.

    Parameters
    ----------
    identifier : str, dict or Optimizer
        A name (case-insensitive: "sgd", "rmsprop", "adam", "adamw", "adagrad"; Keras
        defaults), a :func:`serialize` dict, or an optimizer (returned as is).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones).
    TypeError
        For anything else.
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        return _lookup(identifier)()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"Could not interpret optimizer identifier {identifier!r}: expected a "
                    f"name (one of {sorted(_OPTIMIZERS)}), a config dict or an Optimizer")
