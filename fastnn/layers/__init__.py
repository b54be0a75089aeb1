"""Layers: each a readable forward/backward pair (protocol in :mod:`fastnn.layers.base`).

Keras names and defaults; channels_last by default, ``data_format="channels_first"``
accepted.
"""
from __future__ import annotations

from .base import Layer
from .conv import AveragePooling2D, Conv2D, GlobalAveragePooling2D, MaxPooling2D
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer, ReLU, Softmax
from .normalization import BatchNormalization
from ..augmentation import RandomCrop, RandomFlip, RandomRotation, RandomTranslation

__all__ = ["Layer", "Input", "InputLayer", "Dense", "Conv2D", "MaxPooling2D",
           "AveragePooling2D", "GlobalAveragePooling2D", "Flatten", "Dropout", "Activation",
           "ReLU", "Softmax", "BatchNormalization", "RandomFlip", "RandomTranslation",
           "RandomRotation", "RandomCrop", "get"]

_CLASSES = {cls.__name__: cls for cls in
            (InputLayer, Dense, Conv2D, MaxPooling2D, AveragePooling2D,
             GlobalAveragePooling2D, Flatten, Dropout, Activation, ReLU, Softmax,
             BatchNormalization, RandomFlip, RandomTranslation, RandomRotation, RandomCrop)}
# Keras aliases
_CLASSES.update(MaxPool2D=MaxPooling2D, AvgPool2D=AveragePooling2D,
                GlobalAvgPool2D=GlobalAveragePooling2D)
MaxPool2D, AvgPool2D, GlobalAvgPool2D = MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D


def get(class_name: str, config: dict) -> Layer:
    """Rebuild a layer from its class name and :meth:`Layer.get_config` (used by
    ``load_model``)."""
    if class_name not in _CLASSES:
        raise ValueError(f"Unknown layer class {class_name!r}; known: {sorted(_CLASSES)}")
    return _CLASSES[class_name].from_config(config)
