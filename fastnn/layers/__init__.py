"""Layers: each a readable forward/backward pair (protocol in :mod:`fastnn.layers.base`).

Keras names and defaults; channels_last by default, ``data_format="channels_first"``
accepted.
"""
from __future__ import annotations

from typing import Optional

from ..utils import _custom
from .base import Layer
from .conv import (AveragePooling2D, Conv2D, GlobalAveragePooling2D, GlobalMaxPooling2D,
                   MaxPooling2D)
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer, ReLU, Softmax
from .normalization import BatchNormalization

__all__ = ["Layer", "Input", "InputLayer", "Dense", "Conv2D", "MaxPooling2D",
           "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten",
           "Dropout", "Activation", "ReLU", "Softmax", "BatchNormalization", "RandomFlip",
           "RandomTranslation", "RandomRotation", "RandomCrop", "get"]

_CLASSES = {cls.__name__: cls for cls in
            (InputLayer, Dense, Conv2D, MaxPooling2D, AveragePooling2D,
             GlobalAveragePooling2D, GlobalMaxPooling2D, Flatten, Dropout, Activation, ReLU,
             Softmax, BatchNormalization)}
# Keras aliases
_CLASSES.update(MaxPool2D=MaxPooling2D, AvgPool2D=AveragePooling2D,
                GlobalAvgPool2D=GlobalAveragePooling2D, GlobalMaxPool2D=GlobalMaxPooling2D)
MaxPool2D, AvgPool2D, GlobalAvgPool2D = MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D


# The augmentation layers live in fastnn.augmentation (which imports this package's base
# class), so they are imported on first use here, not at import time.
_AUGMENTATION = ("RandomFlip", "RandomTranslation", "RandomRotation", "RandomCrop")


def __getattr__(name):
    if name in _AUGMENTATION:
        from .. import augmentation
        return getattr(augmentation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get(class_name: str, config: dict, custom_objects: Optional[dict] = None) -> Layer:
    """Rebuild a layer from its class name and :meth:`Layer.get_config` (used by
    ``load_model``); ``custom_objects`` maps the names of the user's own layer classes to
    the classes."""
    if custom_objects and class_name in custom_objects:
        cls = custom_objects[class_name]
    elif class_name in _AUGMENTATION:
        cls = __getattr__(class_name)
    elif class_name in _CLASSES:
        cls = _CLASSES[class_name]
    else:
        raise ValueError(f"Unknown layer class {class_name!r}; known: "
                         f"{sorted(set(_CLASSES) | set(_AUGMENTATION))}")
    # the user's activations, initializers and regularizers, named in the config
    with _custom.custom_objects_scope(custom_objects):
        return cls.from_config(config)
