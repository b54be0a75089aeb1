"""Sequential models: compile, fit, evaluate, predict, summary, save / load_model.

The training step is the from-scratch loop, written once::

    forward through the layers -> loss and its gradient -> backward in reverse
    -> optimizer.apply(grads, params)

When the model ends in softmax (sigmoid) and the loss is categorical (binary)
cross-entropy on probabilities, the step stops at the logits and uses the fused gradient
``p - y``, which is exact and cannot produce ``log(0)`` or NaN on saturated outputs.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import math
import os
import re
import zipfile
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from . import activations as _activations
from . import callbacks as _callbacks
from . import layers as _layers
from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from ._dense_step import DenseStep
from .ops._checks import refuse_masked
from .layers.base import Layer, _fmt, _sample_shape, _unique_name
from .layers.conv import (MaxPooling2D, act_pool_backward, act_pool_forward, act_pool_pairable,
                          conv_act_pool_backward, conv_act_pool_forward, conv_pool_backward,
                          conv_pool_forward, conv_pool_fusable, linear_act_backward,
                          linear_act_forward, linear_act_fusable)
from .layers.core import InputLayer, _WithActivation
from .layers.normalization import bn_pool_backward, bn_pool_forward, bn_pool_fusable
from .utils import get_rng
from .utils._args import FilePath, check_bool, check_int, check_path
from .utils import _custom
from .utils._files import DAMAGED_ARCHIVE_ERRORS, atomic_write, special_kind

FORMAT = "fastnn-model"
FORMAT_VERSION = 1


class Sequential:
    """A linear stack of layers.

    Several Python threads may ``predict`` with one model at once; as in Keras, ``fit``,
    ``evaluate`` and ``train_on_batch`` are not for two threads at once on one model (its
    compiled metrics keep one running state): give each thread its own model.

    Parameters
    ----------
    layers : list of Layer, optional
    name : str, optional

    Examples
    --------
    >>> from fastnn.layers import Dense
    >>> x = np.random.default_rng(0).random((100, 20))
    >>> y = (x.sum(axis=1, keepdims=True) > 10).astype("float64")
    >>> model = Sequential([Dense(64, activation="relu", input_dim=20),
    ...                     Dense(1, activation="sigmoid")])
    >>> model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    >>> history = model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'loss']
    """

    def __init__(self, layers: Optional[Sequence[Layer]] = None, name: Optional[str] = None):
        self.name = name or _unique_name("sequential")   # sequential, sequential_1, ...
        self._layers: List[Layer] = []
        self.built = False
        self.optimizer = None
        self.loss = None
        self.compiled_metrics: List = []
        self._metric_args = None
        self.stop_training = False
        self.stop_evaluating = False   # a callback may set these, as in Keras
        self.stop_predicting = False
        self.history = None
        self._input_shape = None
        self._steps_cache = None
        self._forward_cache = None
        self._dense_step = None
        self._trainable = True
        self._compute_dtype = None       # set by build
        if layers is not None and not isinstance(layers, (list, tuple)):
            raise TypeError(f"layers must be a list of Layer instances, received "
                            f"{type(layers).__name__} (write Sequential([layer]))")
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------------ structure
    @property
    def trainable(self) -> bool:
        """Keras's ``model.trainable``: setting it sets every layer's ``trainable`` (False
        freezes the whole model, True makes every layer trainable again). Freezing takes
        effect at the next fit; unfreezing needs a new optimizer (compile again), as in
        Keras."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"trainable must be a bool, received {value!r}")
        self._trainable = bool(value)
        for layer in self._layers:
            layer.trainable = bool(value)

    @property
    def trainable_weights(self) -> List[np.ndarray]:
        """The weights training updates (Keras's ``model.trainable_weights``)."""
        return self.trainable_params

    @property
    def non_trainable_weights(self) -> List[np.ndarray]:
        """The other weights: frozen layers' parameters and every layer's state (such as
        BatchNormalization's moving statistics), as Keras's ``non_trainable_weights``."""
        return [w for l in self.layers for w in l.non_trainable_weights]

    @property
    def layers(self) -> List[Layer]:
        """The layers, without a leading :class:`InputLayer`."""
        return [l for l in self._layers if not isinstance(l, InputLayer)]

    def get_layer(self, name: Optional[str] = None, index: Optional[int] = None) -> Layer:
        """A layer by ``name`` or by ``index`` into :attr:`layers` (Keras's ``get_layer``:
        exactly one of the two).

        Raises
        ------
        ValueError
            If both or neither are given, or no layer has that name or index.
        """
        if (name is None) == (index is None):
            raise ValueError(f"give exactly one of name and index, received name={name!r}, "
                             f"index={index!r}")
        layers = self.layers
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or \
                    not -len(layers) <= index < len(layers):
                raise ValueError(f"index must be an int in [-{len(layers)}, {len(layers)}) "
                                 f"(the model has {len(layers)} layers), received {index!r}")
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; the layers are "
                         f"{[l.name for l in layers]}")

    def add(self, layer: Layer) -> None:
        """Append a layer."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a Layer, received {type(layer).__name__}")
        if isinstance(layer, InputLayer) and self._layers:
            raise ValueError("an Input can only be the first element of a Sequential model")
        if any(l.name == layer.name for l in self._layers):
            raise ValueError(f"a layer named {layer.name!r} is already in the model")
        self._layers.append(layer)
        previous_shape = self._input_shape
        try:
            first = self._layers[0]
            if layer is first and first.input_shape_arg is not None:
                self._input_shape = (None,) + first.input_shape_arg
            if self._input_shape is not None:
                self.build(self._input_shape)
        except BaseException:  # a layer that cannot be built is not kept
            self._layers.pop()
            self._input_shape = previous_shape
            raise
        finally:
            self._structure_changed()

    def pop(self) -> Layer:
        """Remove the last layer and return it (Keras's ``Sequential.pop``); a compiled
        model stays compiled, its metrics resolved again for the new output.

        Raises
        ------
        TypeError
            If the model has no layers (as Keras).
        """
        if not self.layers:
            raise TypeError("There are no layers in the model.")
        layer = self._layers.pop()
        if not self.layers:
            self.built = False
        elif self._input_shape is not None:
            self.build(self._input_shape)
        self._structure_changed()
        return layer

    def __call__(self, x, training: bool = False) -> np.ndarray:
        """The model's output for the batch ``x`` in one pass, as Keras's ``model(x)``
        (``training=True``: training-mode layers, such as Dropout: each call draws its own
        masks, e.g. for Monte-Carlo dropout). Returns a new array."""
        x = self._check_x(x)
        y = self._forward(np.asarray(x, dtype=self._dtype), bool(training))
        # (a training-mode forward returns the last layer's reused work array)
        return y.copy() if training else y

    def build(self, input_shape) -> None:
        """Build every layer for inputs of ``input_shape`` (batch dimension first)."""
        try:
            shape = tuple(input_shape)
        except TypeError:
            raise TypeError(f"input_shape must be a tuple (batch, ...), received "
                            f"{input_shape!r}") from None
        if len(shape) < 2:
            raise ValueError(f"input_shape must be (batch, ...) with at least one dimension "
                             f"after the batch axis, received {input_shape!r}")
        shape = input_shape = (None,) + _sample_shape(shape[1:], "input_shape")
        for layer in self._layers:
            if not layer.built:
                layer.build(shape)
            elif tuple(layer.input_shape[1:]) != tuple(shape[1:]):
                raise ValueError(f"layer {layer.name!r} was built for input shape "
                                 f"{_fmt(layer.input_shape)} but receives {_fmt(shape)}")
            shape = layer.output_shape
        # One compute dtype, the weighted layers' (layers without weights, such as Flatten
        # and Dropout, take any: inputs are cast to this one, see _dtype)
        dtypes = {}
        for layer in self.layers:
            if layer.params or layer.state:
                dtypes.setdefault(np.dtype(layer.dtype), layer)
        if len(dtypes) > 1:
            (d1, l1), (d2, l2) = list(dtypes.items())[:2]
            raise ValueError(f"a model computes in one dtype, but layer {l1.name!r} has "
                             f"dtype {d1} and layer {l2.name!r} {d2}: give the layers with "
                             f"weights the same dtype=...")
        self._compute_dtype = next(iter(dtypes), np.dtype(self.layers[0].dtype)) \
            if self.layers else None
        self._input_shape = input_shape     # (a build that failed keeps the shape it had)
        self.built = bool(self._layers)
        first_param = next((i for i, l in enumerate(self.layers) if l.params), None)
        for i, layer in enumerate(self.layers):
            layer.need_input_grad = first_param is None or i > first_param
        self._first_param = 0 if first_param is None else first_param

    @property
    def _dtype(self) -> np.dtype:
        """The dtype the model computes in and casts its inputs to (set by build): its
        layers with weights' (one for all), else its first layer's."""
        return self._compute_dtype

    @property
    def input_shape(self):
        return self._input_shape

    @property
    def output_shape(self):
        self._require_built("output_shape")
        return self._layers[-1].output_shape

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(f"{what}: the model is not built yet; give the first layer an "
                             f"input_shape (or start with Input(shape=...)), call "
                             f"model.build(input_shape), or call fit/predict once")

    def _ensure_built(self, x: np.ndarray, name: str = "x") -> None:
        if not self.layers:
            raise ValueError("the model has no layers; add some with model.add(layer)")
        if not self.built:
            self.build((None,) + x.shape[1:])
        elif tuple(x.shape[1:]) != tuple(self._input_shape[1:]):
            raise ValueError(f"the model expects inputs of shape {_fmt(self._input_shape)}, "
                             f"received {name} with shape {x.shape}")

    # ------------------------------------------------------------------ weights
    @property
    def trainable_params(self) -> List[np.ndarray]:
        return [p for l in self.layers for p in l.trainable_params.values()]

    @property
    def trainable_grads(self) -> List[np.ndarray]:
        return [l.grads[k] for l in self.layers for k in l.trainable_params]

    @property
    def weights(self) -> List[np.ndarray]:
        """Every layer's weight arrays themselves (not copies; trainable ones, then the
        non-trainable state, layer by layer), as Keras's ``model.weights``."""
        return [w for l in self.layers for w in l.weights]

    def get_weights(self) -> List[np.ndarray]:
        """Copies of every layer's weights, in layer order."""
        self._require_built("get_weights")
        return [w for l in self.layers for w in l.get_weights()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Set every layer's weights (as returned by :meth:`get_weights`)."""
        for layer, w in zip(self.layers, self._checked_weights(weights)):
            layer._write_weights(w)

    def _checked_weights(self, weights: Sequence[np.ndarray]) -> List[List[np.ndarray]]:
        """``weights`` split per layer, every array checked (count, shapes, dtypes) before
        :meth:`set_weights` writes any; ValueError or TypeError otherwise."""
        self._require_built("set_weights")
        weights = list(weights)
        current = self.weights
        if len(weights) != len(current):
            raise ValueError(f"the model has {len(current)} weight arrays, received "
                             f"{len(weights)}")
        checked, i = [], 0
        for layer in self.layers:
            n = len(layer.params) + len(layer.state)
            checked.append(layer._checked_weights(weights[i:i + n]))
            i += n
        return checked

    def count_params(self) -> int:
        self._require_built("count_params")
        return sum(l.count_params() for l in self.layers)

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, *, loss_weights=None,
                weighted_metrics=None, run_eagerly: bool = False, steps_per_execution: int = 1,
                jit_compile="auto", auto_scale_loss: bool = True) -> None:
        """Configure training.

        Parameters
        ----------
        optimizer : str or Optimizer, default "rmsprop" (as Keras)
        loss : str or Loss
        metrics : list of str, Metric or callable, optional
            (The third positional argument, as in Keras 2; Keras 3's is ``loss_weights``,
            which fastnn takes by keyword only.)
        loss_weights, weighted_metrics : None
            Keras 3's, for models with several outputs or weighted metrics: only None is
            taken (ValueError otherwise).
        run_eagerly, steps_per_execution, jit_compile, auto_scale_loss
            Keras 3's, accepted and checked so that Keras code runs unchanged, and
            otherwise without effect: fastnn runs eagerly, compiles nothing per model,
            scales no loss, and runs several steps per call by itself where it can (see
            :meth:`fit`).
            ``"accuracy"`` resolves to binary, categorical or sparse categorical accuracy
            from the loss, as Keras up to 2.2 did (see :mod:`fastnn.metrics` for where
            tf.keras 2 and Keras 3, which look at the shapes, differ). A metric given twice
            is named ``name_1`` the second time, as in Keras.
        """
        if loss is None:
            raise ValueError("compile needs a loss, e.g. loss='sparse_categorical_crossentropy'")
        for name, value in (("loss_weights", loss_weights),
                            ("weighted_metrics", weighted_metrics)):
            if value is not None:
                raise ValueError(f"`{name}` is not supported by fastnn (a Sequential model "
                                 f"has one output; weigh samples with fit's sample_weight), "
                                 f"received {name}={value!r}")
        for name, value in (("run_eagerly", run_eagerly), ("auto_scale_loss", auto_scale_loss)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"`{name}` must be a bool, received {name}={value!r}")
        if not (isinstance(jit_compile, (bool, np.bool_)) or jit_compile == "auto"):
            raise ValueError(f"`jit_compile` must be a bool or 'auto', received "
                             f"jit_compile={jit_compile!r}")
        _positive_int(steps_per_execution, "steps_per_execution")
        self.optimizer = _optimizers.get(optimizer)
        self.loss = _losses.get(loss)
        if metrics is not None and (isinstance(metrics, str) or not isinstance(metrics, (list, tuple))):
            metrics = [metrics]
        self._metric_args = list(metrics or [])
        self._structure_changed()

    def _structure_changed(self) -> None:
        """Forget what was derived from the layers and the compile settings (after
        compile, add or pop): the fused output, the forward plan, the compiled Dense step
        and the metrics, which are resolved from the output shape."""
        if self._metric_args is not None:
            self.compiled_metrics = None  # resolved when the output shape is known
        self._fused = None
        self._steps_cache = None
        self._forward_cache = None
        self._dense_step = None

    def _metrics(self):
        if self.compiled_metrics is None:
            out = self._layers[-1].output_shape
            resolved, used = [], {"loss"}
            for arg in self._metric_args:
                m = _metrics.get(arg, loss=self.loss.name, output_shape=out)
                if m.name in used or any(r is m for r in resolved):
                    # results are keyed by name: a repeated one becomes name_1, name_2, ...
                    # (as in Keras), on a copy (the same object twice would count twice)
                    m, k = copy.deepcopy(m), 1
                    while f"{m.name}_{k}" in used:
                        k += 1
                    m.name = f"{m.name}_{k}"
                used.add(m.name)
                resolved.append(m)
            self.compiled_metrics = resolved
        return self.compiled_metrics

    def _fused_output(self):
        """(kind, loss_from_logits) if the last layer's activation can fuse with the loss."""
        if self._fused is not None:
            return self._fused
        last = self.layers[-1]
        act = getattr(last, "activation", None)
        # by class: a user's function named "softmax" is not the built-in
        name = {_activations.Softmax: "softmax", _activations.Sigmoid: "sigmoid"}.get(type(act))
        if isinstance(act, _activations.Softmax) and act.axis not in (-1, len(last.output_shape) - 1):
            name = None
        loss = self.loss
        fused = (None, None)
        if not loss.from_logits:
            # the same loss on the logits (label smoothing kept)
            smooth = getattr(loss, "label_smoothing", 0.0)
            kw = {"label_smoothing": smooth} if smooth else {}
            # (exact types: a user's subclass computes through its own methods, which the
            # fused formula, and the compiled Dense step built on it, would bypass)
            if name == "softmax" and type(loss) in (_losses.CategoricalCrossentropy,
                                                     _losses.SparseCategoricalCrossentropy):
                fused = ("softmax", type(loss)(from_logits=True, **kw))
            elif name == "sigmoid" and type(loss) is _losses.BinaryCrossentropy:
                fused = ("sigmoid", _losses.BinaryCrossentropy(from_logits=True, **kw))
        self._fused = fused
        return fused

    # ------------------------------------------------------------------ one step
    def _forward(self, x, training: bool, layers=None):
        """Forward through ``layers`` (default: all), first layer first: a Conv2D ending in
        a non-decreasing activation (relu, linear, sigmoid, tanh, elu, ...) followed
        directly by a 2x2 MaxPooling2D runs as one call
        (:func:`~fastnn.layers.conv.conv_pool_forward`: the convolution's output is never
        written), and an Activation (or ReLU) layer of such an activation followed by a
        MaxPooling2D runs after the pooling
        (:func:`~fastnn.layers.conv.act_pool_forward`: on the pooled elements only); a Dense
        or Conv2D without an activation followed by a relu layer runs with relu in its bias
        + activation kernel (:func:`~fastnn.layers.conv.linear_act_forward`);
        :meth:`_backward_steps` pairs their backward. Cached per layer list (all layers,
        or all but the last)."""
        layers = self.layers if layers is None else layers
        key = tuple(map(id, layers))
        if self._forward_cache is None:
            self._forward_cache = {}
        steps = self._forward_cache.get(key)
        if steps is None:
            steps, i = [], 0
            while i < len(layers):
                bn_act = _bn_pool_run(layers, i)
                if bn_act:
                    steps.append(functools.partial(bn_pool_forward, layers[i],
                                                   layers[i + 1] if bn_act == 3 else None,
                                                   layers[i + bn_act - 1]))
                    i += bn_act
                elif _conv_act_pool_run(layers, i):
                    steps.append(functools.partial(conv_act_pool_forward, *layers[i:i + 3]))
                    i += 3
                elif i + 1 < len(layers) and conv_pool_fusable(layers[i], layers[i + 1]):
                    steps.append(functools.partial(conv_pool_forward, layers[i],
                                                   layers[i + 1]))
                    i += 2
                elif i + 1 < len(layers) and act_pool_pairable(layers[i], layers[i + 1]):
                    steps.append(functools.partial(act_pool_forward, layers[i],
                                                   layers[i + 1]))
                    i += 2
                elif _linear_act_run(layers, i):
                    steps.append(functools.partial(linear_act_forward, layers[i],
                                                   layers[i + 1]))
                    i += 2
                else:
                    steps.append(layers[i].forward)
                    i += 1
            self._forward_cache[key] = steps
        for step in steps:
            x = step(x, training=training)
        return x

    def _train_step(self, x, y, sw):
        """One forward/backward/update step; returns (loss, y_pred)."""
        dense = self._dense_step
        if dense is None or not dense.valid(self):
            dense = self._dense_step = DenseStep.build(self)
        if dense is not None and dense.accepts(x, y, sw):
            # the same gradients and update, in one C call
            return dense.run(x, y, self.optimizer, self._params, self._grads)
        kind, logits_loss = self._fused_output()
        layers = self.layers
        if kind is None:
            h = self._forward(x, True)
            y_pred = h
            loss, grad = self.loss.value_and_gradient(y, y_pred, sw)
            back = layers
        else:
            h = self._forward(x, True, layers[:-1])
            last = layers[-1]
            z = last.forward_logits(h, True) if isinstance(last, _WithActivation) else h
            if kind == "softmax":
                loss, grad, y_pred = logits_loss.logits_step(y, z, sw)
            else:
                loss, grad = logits_loss.value_and_gradient(y, z, sw)
                y_pred = _activations.sigmoid(z)
            if isinstance(last, _WithActivation):
                grad = last.backward_logits(grad)
            back = layers[:-1]
        for step in self._backward_steps(back):
            grad = step(grad)
        reg = sum(l.regularization_loss() for l in layers if l._regularizers)
        self.optimizer.apply(self._grads, self._params)
        return loss + reg, y_pred

    def _backward_steps(self, back):
        """The backward calls for the layers ``back`` (from the first with parameters), last
        layer first. A layer ending in a fused relu (Conv2D, Dense) followed directly by
        MaxPooling2D is paired (:func:`_relu_pool_backward`): one pass over the largest
        activation fewer, and the bias gradient summed over the pooled gradient; so is each
        pair :meth:`_forward` ran as one. Cached per layer list."""
        layers = back[self._first_param:]
        key = tuple(map(id, layers))
        if self._steps_cache is not None and self._steps_cache[0] == key:
            return self._steps_cache[1]
        steps, i = [], len(layers) - 1
        while i >= 0:
            layer, prev = layers[i], layers[i - 1] if i > 0 else None
            run = next((r for r in (3, 2) if i - r + 1 >= 0 and
                        _bn_pool_run(layers, i - r + 1) == r), 0)
            if run:
                steps.append(functools.partial(bn_pool_backward, layers[i - run + 1],
                                               prev if run == 3 else None, layer))
                i -= run
            elif i >= 2 and _conv_act_pool_run(layers, i - 2):
                steps.append(functools.partial(conv_act_pool_backward, *layers[i - 2:i + 1]))
                i -= 3
            elif isinstance(layer, MaxPooling2D) and isinstance(prev, _WithActivation) \
                    and prev._act_kernel == "relu" and prev.channel_axis % 4 == (
                        3 if layer.layout == "NHWC" else 1) or conv_pool_fusable(prev, layer):
                # (the pooling sums the bias gradient over its own channel axis, which
                # must be the layer's: a channels_first pool after a channels_last Conv2D
                # gave another layer's bias gradient, or a broadcast error)
                steps.append(functools.partial(_relu_pool_backward, prev, layer))
                i -= 2
            elif act_pool_pairable(prev, layer):
                steps.append(functools.partial(act_pool_backward, prev, layer))
                i -= 2
            elif i >= 1 and _linear_act_run(layers, i - 1):
                steps.append(functools.partial(linear_act_backward, prev, layer))
                i -= 2
            else:
                steps.append(layer.backward)
                i -= 1
        self._steps_cache = (key, steps)
        return steps

    def train_on_batch(self, x, y, sample_weight=None, class_weight=None,
                       return_dict: bool = False):
        """One training step on one batch (Keras 3's signature).

        Parameters
        ----------
        x : ndarray, shape (N, ...)
        y : ndarray, shape (N, ...)
        sample_weight : ndarray, shape (N,), optional
        class_weight : dict {class: weight}, optional
            As in :meth:`fit`.
        return_dict : bool

        Returns
        -------
        The loss (a float) without compiled metrics, else ``[loss, *metrics]``, or a dict
        with ``return_dict=True``: this batch's values (the metrics are reset first, as
        Keras does since it fixed their accumulating across calls), the metrics measured
        on the predictions before the update, as in :meth:`fit`.
        """
        x, y, sw = self._check_data(x, y, sample_weight, "train_on_batch")
        if self.layers and x.dtype != self._dtype:
            x = x.astype(self._dtype)      # as fit casts its batches (Keras too)
        self._prepare_training(y)
        if class_weight is not None:
            sw = self._apply_class_weight(y, class_weight, sw)
        metrics = self._metrics()
        for m in metrics:
            m.reset_state()
        loss, y_pred = self._train_step(x, y, sw)
        for m in metrics:
            m.update_state(y, y_pred)
        return self._batch_result(self._eval_logs(loss, metrics), return_dict)

    def test_on_batch(self, x, y, sample_weight=None, return_dict: bool = False):
        """The loss and metrics on one batch in inference mode (Keras 3's signature):
        :meth:`evaluate` of this batch alone, returned as :meth:`train_on_batch` does."""
        return self.evaluate(x, y, batch_size=max(1, np.shape(x)[0] if np.ndim(x) else 1),
                             verbose=0, sample_weight=sample_weight, return_dict=return_dict)

    @staticmethod
    def _batch_result(result: Dict[str, object], return_dict: bool):
        """evaluate's forms of its results: the dict, the loss alone, or the list."""
        if return_dict:
            return result
        vals = list(result.values())
        return vals[0] if len(vals) == 1 else vals

    def _prepare_training(self, y):
        if self.optimizer is None:
            raise ValueError("the model must be compiled before training: call "
                             "model.compile(optimizer, loss, metrics)")
        params = self.trainable_params
        # which layer's which weight each parameter is (an array may be rebound to a new
        # one of its shape: the weight stays the same)
        owners = [(l, k) for l in self.layers for k in l.trainable_params]
        opt = self.optimizer
        before = opt._param_owners
        if opt.built and before is not None:
            # As Keras: the optimizer goes on with a subset of the weights it was built for
            # (layers frozen since), and refuses others (layers added, another model)
            where = {(id(l), k): i for i, (l, k) in enumerate(before)}
            idx = [where.get((id(l), k)) for l, k in owners]
            if None in idx:
                raise ValueError(
                    "the optimizer holds state for other weights than this model's trainable "
                    "ones (layers were added, replaced or unfrozen since it was built, or it "
                    "trained another model): compile again with a new optimizer, e.g. "
                    "model.compile(optimizer='adam', loss=...)")
            if idx != list(range(len(before))):
                opt._keep_params(idx)
        elif opt.built and (opt._shapes != [p.shape for p in params]
                            or opt._dtypes != [p.dtype for p in params]):
            raise ValueError(
                f"the optimizer was built for parameters of shapes {opt._shapes} but this "
                f"model's trainable weights have shapes {[p.shape for p in params]}: compile "
                f"with a new optimizer, e.g. model.compile(optimizer='adam', loss=...)")
        opt._param_owners = owners
        self._params = params
        self._grads = self.trainable_grads
        self._check_labels(y)

    def _check_labels(self, y):
        if isinstance(self.loss, _losses.SparseCategoricalCrossentropy) and y.size:
            k = self._layers[-1].output_shape[-1]
            lo, hi = np.min(y), np.max(y)
            if lo < 0 or hi >= k:
                raise ValueError(f"labels must be in [0, {k}) for sparse_categorical_crossentropy "
                                 f"with {k} output units, received values in [{lo}, {hi}]")

    def _check_targets(self, y, batch_size):
        """Run the loss on a dummy prediction for the first batch of ``y``, so that targets
        the loss cannot take (shape, one-hot vs integer labels) raise its error up front."""
        out = tuple(self._layers[-1].output_shape[1:])
        if len(y) and all(isinstance(d, (int, np.integer)) for d in out):
            n = min(len(y), batch_size)
            self.loss(y[:n], np.full((n,) + out, 0.5, dtype=self.layers[-1].dtype))

    # ------------------------------------------------------------------ data checks
    def _check_x(self, x, name="x"):
        if isinstance(x, (list, tuple)) or (isinstance(x, np.ndarray)
                                            and type(x) is not np.ndarray):
            # lists, and subclasses as plain arrays (np.matrix's * is a matrix product: a
            # Dropout first layer computed x @ mask); a masked array is refused
            x = _as_array(x, name)
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, received {type(x).__name__}")
        if x.dtype.kind not in "fiub":
            raise TypeError(f"{name} must be numeric, received dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"{name} must have a batch dimension and at least one feature "
                             f"dimension, received shape {x.shape}")
        self._ensure_built(x, name)
        return x

    def _check_data(self, x, y, sample_weight, where, names=("x", "y", "sample_weight")):
        """x, y and sample_weight (None or float64, flat) checked for ``where`` (fit,
        evaluate, ...): numeric, the model's input shape, one target and weight per sample,
        and at least one sample. ``names``: what the messages call the three."""
        nx, ny, nw = names
        x = self._check_x(x, nx)
        if len(x) == 0:
            raise ValueError(f"{where}: {nx} has no samples (shape {x.shape}); give at least "
                             f"one")
        y = _as_array(y, ny)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{ny} must be numeric, received dtype {y.dtype}")
        if y.ndim == 0:
            raise ValueError(f"{where}: {ny} must be an array with one target per sample "
                             f"({len(x)}), received the scalar {y.item()!r}")
        if len(y) != len(x):
            raise ValueError(f"{where}: {nx} and {ny} must have the same number of samples, "
                             f"received {len(x)} and {len(y)}")
        sw = None
        if sample_weight is not None:
            sw = _as_array(sample_weight, nw)
            if sw.dtype.kind not in "fiub":
                raise TypeError(f"{nw} must be numeric, received dtype {sw.dtype}")
            if sw.shape not in ((len(x),), (len(x), 1)):
                raise ValueError(f"{nw} must have shape ({len(x)},) or ({len(x)}, 1): "
                                 f"one weight per sample, received shape {sw.shape}")
            sw = sw.astype(np.float64).reshape(-1)
        return x, y, sw

    def _batch(self, a, idx):
        out = a[idx]
        dt = self._dtype
        if out.dtype != dt and out.dtype.kind in "fiub" and a is self._x_fit:
            out = out.astype(dt)
        return out

    # ------------------------------------------------------------------ fit
    def fit(self, x=None, y=None, batch_size: Optional[int] = None, epochs: int = 1,
            verbose="auto", callbacks=None, validation_split: float = 0.0, validation_data=None,
            shuffle: Union[bool, str] = True, class_weight: Optional[Dict[int, float]] = None,
            sample_weight=None, initial_epoch: int = 0,
            validation_batch_size: Optional[int] = None, validation_freq=1):
        """Train the model.

        Parameters
        ----------
        x : ndarray, shape (N, ...)
        y : ndarray, shape (N, ...) targets (integer labels for sparse cross-entropy)
        batch_size : int or None, default None (32)
        epochs : int, default 1
        verbose : {0, 1, 2, "auto"}, default "auto" (1, as Keras)
            1: a progress bar per epoch; 2: one line per epoch; 0: silent.
        callbacks : list of Callback
            Their ``on_test_*`` hooks see the validation run at the end of each epoch.
        validation_split : float in [0, 1)
            Fraction of the data held out, taken from the end before shuffling: as in
            Keras, the first ``floor(N * (1 - validation_split))`` samples train.
        validation_data : (x_val, y_val) or (x_val, y_val, sample_weight_val)
            Overrides ``validation_split``, as in Keras.
        shuffle : bool or "batch"
            Reshuffle the training samples every epoch (with fastnn's seeded generator);
            ``"batch"``, as in Keras 3: keep the batches of the unshuffled order, each
            batch's samples in a new order.
        class_weight : dict {class: weight}, optional
        sample_weight : ndarray, shape (N,), optional
            Given with ``class_weight``, each sample's weight is the product of the two
            (tf.keras 2's rule; Keras 3 refuses the pair).
        initial_epoch : int, default 0
            The epoch to start at (the History's ``epoch`` counts from it).
        validation_batch_size : int or None, default None (``batch_size``)
        validation_freq : int >= 1 or list of int, default 1
            Validate after every ``validation_freq``-th epoch, or after the epochs (counted
            from 1) in the list, as Keras.

        Returns
        -------
        History

        Keras's ``steps_per_epoch`` and ``validation_steps`` (for endless data generators)
        are not taken: fastnn's data are arrays, and an epoch is one pass over them.

        Notes
        -----
        A stack of Dense layers with the C backend trains runs of full batches in one
        compiled call each when nothing needs the batches one by one (no callback with
        batch hooks, metrics that count, plain Adam or SGD, no weights), as Keras's
        ``steps_per_execution`` does: the progress bar is then redrawn once per run. The
        weights, history and metrics are bit for bit those of one step per call.
        """
        batch_size = _batch_size(batch_size)
        val_batch_size = batch_size if validation_batch_size is None else _positive_int(
            validation_batch_size, "validation_batch_size")
        epochs = _nonneg_int(epochs, "epochs")
        initial_epoch = _nonneg_int(initial_epoch, "initial_epoch")
        if isinstance(validation_freq, (list, tuple)):
            val_epochs = {_positive_int(e, f"validation_freq[{i}]")
                          for i, e in enumerate(validation_freq)}
            validate_after = val_epochs.__contains__
        else:
            freq = _positive_int(validation_freq, "validation_freq")
            validate_after = lambda e: e % freq == 0  # noqa: E731
        verbose = _verbose(verbose)
        if not (isinstance(shuffle, (bool, np.bool_)) or
                (isinstance(shuffle, str) and shuffle == "batch")):
            raise ValueError(f"shuffle must be a bool or 'batch', received {shuffle!r}")
        x, y, sw = self._check_data(x, y, sample_weight, "fit")
        if isinstance(validation_split, bool) or not isinstance(
                validation_split, (int, float, np.integer, np.floating)) \
                or not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), received {validation_split!r}")
        if validation_split and validation_data is None:   # validation_data overrides it
            split_at = int(math.floor(len(x) * (1.0 - validation_split)))
            if split_at in (0, len(x)):
                raise ValueError(f"validation_split={validation_split} leaves no "
                                 f"{'training' if split_at == 0 else 'validation'} samples "
                                 f"out of {len(x)}")
            validation_data = (x[split_at:], y[split_at:]) + (
                (sw[split_at:],) if sw is not None else ())
            x, y = x[:split_at], y[:split_at]
            sw = sw[:split_at] if sw is not None else None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be (x_val, y_val) or "
                                 "(x_val, y_val, sample_weight_val)")
            vx, vy, vsw = self._check_data(
                *validation_data[:2], validation_data[2] if len(validation_data) == 3 else None,
                "fit", names=("validation_data[0]", "validation_data[1]", "validation_data[2]"))
            validation_data = (vx, vy) + ((vsw,) if vsw is not None else ())
        if class_weight is not None:
            sw = self._apply_class_weight(y, class_weight, sw)
        self._prepare_training(y)
        # Bad targets fail here, before any training step or callback file.
        self._check_targets(y, batch_size)
        if validation_data is not None:
            self._check_labels(validation_data[1])
            self._check_targets(validation_data[1], batch_size)
        metrics = self._metrics()
        n = len(x)
        steps = int(math.ceil(n / batch_size)) if n else 0
        self.stop_training = False
        cbs = _callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0, model=self,
            verbose=verbose, epochs=epochs, steps=steps,
            samples=n, metrics=["loss"] + [m.name for m in metrics])
        history = cbs.history
        self._x_fit = x
        rng = get_rng()
        logs: Dict[str, float] = {}
        targets = self._run_targets(x, y, sw, cbs, metrics)
        cbs.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            for m in metrics:
                m.reset_state()
            cbs.on_epoch_begin(epoch)
            if shuffle == "batch":   # Keras 3: each batch's samples, in a new order
                order = np.arange(n)
                for start in range(0, n, batch_size):
                    order[start:start + batch_size] = start + rng.permutation(
                        min(batch_size, n - start))
            else:
                order = rng.permutation(n) if shuffle else np.arange(n)
            loss_sum, seen = 0.0, 0
            step = 0
            while step < steps:
                batches = self._run_length(targets, step, n // batch_size, batch_size)
                cbs.on_train_batch_begin(step)
                if batches > 1:    # that many full batches in one compiled call
                    idx = order[step * batch_size:(step + batches) * batch_size]
                    losses, y_pred = self._dense_step.run_steps(
                        x, targets, idx, batch_size, self.optimizer, self._params)
                    for loss in losses.tolist():
                        loss_sum += loss * batch_size
                        seen += batch_size
                    yb = y[idx]
                else:
                    batches = 1
                    idx = order[step * batch_size:(step + 1) * batch_size]
                    xb = self._batch(x, idx)
                    yb = y[idx]
                    swb = None if sw is None else sw[idx]
                    loss, y_pred = self._train_step(xb, yb, swb)
                    loss_sum += loss * len(idx)
                    seen += len(idx)
                for m in metrics:  # Keras: sample weights weight the loss, not the metrics
                    m.update_state(yb, y_pred)
                # per-class arrays too (Keras; the bar shows their mean)
                logs = {"loss": loss_sum / seen}
                for m in metrics:
                    logs[m.name] = _scalar(m.result())
                step += batches
                cbs.on_train_batch_end(step - 1, logs)
                if self.stop_training:
                    break
            epoch_logs = dict(logs)
            # (also after a stop within the epoch: Keras)
            if validation_data is not None and validate_after(epoch + 1):
                val = self.evaluate(*validation_data[:2], batch_size=val_batch_size, verbose=0,
                                    sample_weight=(validation_data[2] if len(validation_data) == 3
                                                   else None), return_dict=True, callbacks=cbs)
                epoch_logs.update({f"val_{k}": v for k, v in val.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            if self.stop_training:
                break
        if epochs > 0 and self.optimizer.built:   # use_ema: the averages become the weights
            self.optimizer.finalize_variable_values(self._params)    # (Keras, before
        cbs.on_train_end(epoch_logs if epochs > initial_epoch else {})  # on_train_end)
        self._x_fit = None
        self.history = history
        return history

    # rows of a run of compiled steps (DenseStep.run_steps): 256 batches of 32, fewer where
    # the run's dropout masks (drawn up front) would pass _RUN_MASK_BYTES (two Dropout
    # layers after Dense(1024) took 68 MB for a run, 0.8 MB step by step)
    _RUN_ROWS = 8192
    _RUN_MASK_BYTES = 8 << 20

    def _run_targets(self, x, y, sw, cbs, metrics):
        """The training targets as DenseStep.run_steps takes them when fit may train runs of
        full batches in one call each, else None. It may when that changes nothing anyone
        sees: the model has a compiled Dense step, no sample or class weights, no callback
        needs every batch (the progress bar is redrawn per run) and every metric counts
        (one update per run gives the state one per batch gives)."""
        if sw is not None or cbs.batch_hooks_each_step() or not all(
                _metrics.counts_per_run(m, self.output_shape, y) for m in metrics):
            return None
        dense = self._dense_step
        if dense is None or not dense.valid(self):
            dense = self._dense_step = DenseStep.build(self)
        return None if dense is None else dense.fit_targets(x, y)

    def _run_length(self, targets, step: int, full: int, batch_size: int) -> int:
        """How many batches from ``step`` (of ``full`` full ones) fit trains in one compiled
        call: 0 or 1 for the step-by-step path."""
        if targets is None or step >= full or self.stop_training:
            return 0    # (stop_training set before a batch: one step, then fit stops)
        dense = self._dense_step
        if dense is None or not dense.valid(self) or not dense.can_run_steps(
                self.optimizer, self._params):
            return 0
        rows, per_row = self._RUN_ROWS, dense.mask_bytes_per_row()
        if per_row:
            rows = min(rows, self._RUN_MASK_BYTES // per_row)
        return min(full - step, max(1, rows // batch_size))

    def _apply_class_weight(self, y, class_weight, sw):
        if not isinstance(class_weight, dict):
            raise TypeError(f"class_weight must be a dict {{class: weight}}, received "
                            f"{type(class_weight).__name__}")
        if y.ndim > 2:      # (flattened, the argmax would pick from the wrong axis)
            raise ValueError(f"class_weight is not supported for targets of 3 or more "
                             f"dimensions (Keras neither), received y of shape {y.shape}; "
                             f"pass sample_weight instead")
        labels = y.reshape(len(y), -1)
        labels = labels[:, 0] if labels.shape[1] == 1 else np.argmax(labels, axis=1)
        labels = np.round(labels).astype(np.int64)     # Keras rounds float labels too
        weights = np.ones(len(y))
        for cls, w in class_weight.items():
            # a class index: an int, or a float of integral value (np.unique of float
            # binary targets gives 0.0 and 1.0, which Keras's dict lookup matches)
            if isinstance(cls, (bool, np.bool_)) or not (
                    isinstance(cls, (int, np.integer)) or isinstance(
                        cls, (float, np.floating)) and float(cls).is_integer()):
                raise TypeError(f"class_weight keys must be class indices (ints), received "
                                f"{cls!r}")
            if isinstance(w, (bool, np.bool_)) or not isinstance(
                    w, (int, float, np.integer, np.floating)):
                raise TypeError(f"class_weight[{cls!r}] must be a real number, received {w!r}")
            weights[labels == int(cls)] = float(w)
        return weights if sw is None else sw * weights

    # ------------------------------------------------------------------ evaluate / predict
    def predict(self, x, batch_size: Optional[int] = None, verbose="auto", callbacks=None
                ) -> np.ndarray:
        """Outputs for ``x``, computed in batches (inference mode).

        Parameters
        ----------
        x : ndarray, shape (N, ...)
        batch_size : int or None, default None (32)
        verbose : {0, 1, 2, "auto"}, default "auto" (1, as Keras)
            A progress bar over the batches with 1, one line with 2, nothing with 0.
        callbacks : list of Callback, optional
            Their ``on_predict_*`` hooks are called; ``on_predict_batch_end`` gets
            ``{"outputs": batch_outputs}``. A callback may set ``model.stop_predicting``.

        Returns
        -------
        ndarray, shape (N,) + output_shape[1:]
        """
        batch_size = _batch_size(batch_size)
        verbose = _verbose(verbose)
        x = self._check_x(x)
        dt = self._dtype
        n = len(x)
        cbs = self._inference_callbacks(callbacks, verbose, n, batch_size)
        self.stop_predicting = False
        cbs.on_predict_begin()
        outs = []
        for step, i in enumerate(range(0, n, batch_size)):
            cbs.on_predict_batch_begin(step)
            outs.append(self._forward(np.asarray(x[i:i + batch_size], dtype=dt), False))
            cbs.on_predict_batch_end(step, {"outputs": outs[-1]})
            if self.stop_predicting:
                break
        cbs.on_predict_end()
        if not outs:
            return np.zeros((0,) + tuple(self.output_shape[1:]), dtype=dt)
        return np.concatenate(outs, axis=0)

    def _inference_callbacks(self, callbacks, verbose: int, n: int, batch_size: int):
        """The CallbackList evaluate or predict runs: ``callbacks`` itself when it is one
        (fit's, for validation: its parameters stay fit's), else a new one with a
        progress bar when ``verbose``."""
        if isinstance(callbacks, _callbacks.CallbackList):
            return callbacks
        return _callbacks.CallbackList(
            callbacks, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=1,
            steps=int(math.ceil(n / batch_size)), samples=n)

    def predict_on_batch(self, x) -> np.ndarray:
        x = self._check_x(x)
        return self._forward(np.asarray(x, dtype=self._dtype), False)

    def evaluate(self, x=None, y=None, batch_size: Optional[int] = None, verbose="auto",
                 sample_weight=None, return_dict: bool = False, callbacks=None):
        """Loss and metrics on ``(x, y)`` in inference mode.

        Parameters
        ----------
        x : ndarray, shape (N, ...)
        y : ndarray, shape (N, ...)
        batch_size : int or None, default None (32)
        verbose : {0, 1, 2, "auto"}, default "auto" (1, as Keras)
            A progress bar over the batches with 1, one line with 2.
        sample_weight : ndarray, shape (N,), optional
        return_dict : bool
        callbacks : list of Callback, optional
            Their ``on_test_*`` hooks are called, each batch's with the running loss and
            metrics. A callback may set ``model.stop_evaluating``.

        Returns
        -------
        float (loss only), list ``[loss, *metrics]``, or a dict with ``return_dict=True``.
        """
        if self.loss is None:
            raise ValueError("the model must be compiled before evaluate: call model.compile")
        batch_size = _batch_size(batch_size)
        verbose = _verbose(verbose)
        x, y, sw = self._check_data(x, y, sample_weight, "evaluate")
        self._check_labels(y)
        metrics = self._metrics()
        for m in metrics:
            m.reset_state()
        kind, logits_loss = self._fused_output()
        dt = self._dtype
        total, wsum = 0.0, 0
        # the loss reported adds the regularization loss, as Keras's evaluate does
        reg = sum(l.regularization_loss() for l in self.layers if l._regularizers)
        cbs = self._inference_callbacks(callbacks, verbose, len(x), batch_size)
        self.stop_evaluating = False
        cbs.on_test_begin()
        for step, i in enumerate(range(0, len(x), batch_size)):
            cbs.on_test_batch_begin(step)
            xb = np.asarray(x[i:i + batch_size], dtype=dt)
            yb = y[i:i + batch_size]
            swb = None if sw is None else sw[i:i + batch_size]
            if kind is None:
                y_pred = self._forward(xb, False)
                loss = self.loss(yb, y_pred, swb)
            else:
                h = self._forward(xb, False, self.layers[:-1])
                last = self.layers[-1]
                z = last.forward_logits(h, False) if isinstance(last, _WithActivation) else h
                loss = logits_loss(yb, z, swb)
                y_pred = _activations.softmax(z) if kind == "softmax" else _activations.sigmoid(z)
            total += loss * len(yb)
            wsum += len(yb)
            for m in metrics:
                m.update_state(yb, y_pred)
            if cbs.callbacks:   # running results only for a callback that sees them
                logs = self._eval_logs(total / wsum + reg, metrics)
                cbs.on_test_batch_end(step, logs)
            if self.stop_evaluating:
                break
        result = self._eval_logs((total / wsum if wsum else 0.0) + reg, metrics)
        cbs.on_test_end(dict(result))
        return self._batch_result(result, return_dict)

    @staticmethod
    def _eval_logs(loss: float, metrics) -> Dict[str, object]:
        """evaluate's results so far: ``loss`` and each metric's result."""
        result = {"loss": loss}
        for m in metrics:
            result[m.name] = _scalar(m.result())
        return result

    # ------------------------------------------------------------------ summary
    def summary(self, line_length: Optional[int] = None,
                positions: Optional[Sequence[float]] = None, print_fn=None,
                expand_nested: bool = False, show_trainable: bool = False,
                layer_range: Optional[Sequence[str]] = None) -> None:
        """Print the layers, their output shapes and parameter counts (Keras 3's arguments).

        Parameters
        ----------
        line_length : int, optional
            The table's width in characters (Keras's default columns, ``positions``, over
            it); by default each column is as wide as its widest entry.
        positions : sequence of float, optional
            Each column's right edge: fractions of ``line_length`` (all at most 1; Keras's
            default [0.45, 0.80, 1.0], line_length 88) or absolute characters (Keras 2),
            one per column; with ``show_trainable``, three are scaled by 0.9 and a fourth
            added at the end as Keras does (or give four). An entry wider than its column
            goes on over further lines.
        print_fn : callable, optional
            Called once with the whole text (as Keras 3), instead of ``print``.
        expand_nested : bool, default False
            Keras's argument: a fastnn Sequential holds no nested models, so there is
            nothing to expand.
        show_trainable : bool, default False
            A "Trainable" column: Y, N, or - for a layer without weights.
        layer_range : (str, str), optional
            List the layers from the first whose name matches ``layer_range[0]`` to the
            last matching ``layer_range[1]`` (regular expressions, ``re.match``, as Keras);
            the totals stay the model's.
        """
        self._require_built("summary")
        check_bool(expand_nested, "expand_nested")
        show_trainable = check_bool(show_trainable, "show_trainable")
        out = print_fn or print
        if not callable(out):
            raise TypeError(f"print_fn must be callable, received {print_fn!r}")
        header = ["Layer (type)", "Output Shape", "Param #"]
        if show_trainable:
            header.append("Trainable")
        rows = []
        for l in self.layers[slice(*_layer_range(self.layers, layer_range))]:
            row = [f"{l.name} ({type(l).__name__})", _fmt(l.output_shape),
                   f"{l.count_params():,}"]
            if show_trainable:
                row.append(("Y" if l.trainable else "N") if l.params or l.state else "-")
            rows.append(row)
        widths = _summary_widths(header, rows, line_length, positions)
        lines = [f'Model: "{self.name}"', "_" * sum(widths)]

        def table_row(cells):
            # a cell wider than its column (less one space) goes on over further lines
            parts = [[c[k:k + max(1, w - 1)] for k in range(0, max(len(c), 1), max(1, w - 1))]
                     for c, w in zip(cells, widths)]
            for k in range(max(len(p) for p in parts)):
                text = [p[k] if k < len(p) else "" for p in parts]
                # (Param # right-aligned, a space before a Trainable column)
                line = "".join(t.rjust(w - (i + 1 < len(widths))).ljust(w) if i == 2 else
                               t.center(w) if i == 3 else t.ljust(w)
                               for i, (t, w) in enumerate(zip(text, widths)))
                lines.append(line.rstrip())

        table_row(header)
        lines.append("=" * sum(widths))
        for r in rows:
            table_row(r)
        lines.append("=" * sum(widths))
        trainable = sum(p.size for l in self.layers for p in l.trainable_params.values())
        total = self.count_params()
        lines += [f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}", "_" * sum(widths)]
        out("\n".join(lines))

    # ------------------------------------------------------------------ config, save, load
    def get_config(self) -> dict:
        return {"name": self.name,
                "layers": [{"class_name": type(l).__name__, "config": l.get_config()}
                           for l in self._layers],
                "input_shape": None if self._input_shape is None else list(self._input_shape[1:])}

    def to_json(self, **kwargs) -> str:
        """The architecture as JSON, ``{"class_name": "Sequential", "config":
        get_config()}``, for :func:`model_from_json`: no weights, no compile settings (as
        Keras's ``to_json``). ``kwargs`` go to ``json.dumps`` (``indent=2``, say).

        Raises
        ------
        ValueError
            If a layer's configuration holds an object JSON cannot write.
        """
        json.dumps(None, **kwargs)      # (a keyword json.dumps lacks: its own TypeError)
        try:
            return json.dumps({"class_name": "Sequential", "config": self.get_config()},
                              **kwargs)
        except TypeError as exc:
            raise ValueError(f"cannot write the model as JSON: its configuration holds an "
                             f"object JSON cannot write ({exc})") from None

    @classmethod
    def from_config(cls, config: dict, custom_objects: Optional[dict] = None
                    ) -> "Sequential":
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise TypeError(f"config must be a dict with a list of layers, received "
                            f"{type(config).__name__}")
        model = cls(name=config.get("name"))
        # (the scope covers the builds too: they resolve the layers' initializers and
        # regularizers, which may be the user's)
        with _custom.custom_objects_scope(custom_objects):
            for spec in config["layers"]:
                if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
                    raise TypeError(f"each layer of config must be a dict with 'class_name' "
                                    f"and a 'config' dict, received {spec!r}"[:200])
                # (add's checks: unique names, an Input first only; a first layer with an
                # input_shape builds the model)
                model.add(_layers.get(spec["class_name"], spec["config"], custom_objects))
            if config.get("input_shape") is not None and not model.built:
                model.build((None,) + tuple(config["input_shape"]))
        return model

    def save(self, filepath: FilePath, overwrite: bool = True) -> None:
        """Write architecture, weights, compile settings and optimizer state to one file.

        The file (a zip archive, conventionally ``*.fnn``) is written to a temporary file
        beside the target and renamed over it, so an interrupted save never leaves a
        half-written model.

        Parameters
        ----------
        filepath : str, bytes or os.PathLike
            Where to write. A symbolic link is written through (the file it points to is
            replaced, the link stays); missing parent directories are created.
        overwrite : bool, default True
            Replace an existing file. False refuses with :class:`FileExistsError` where
            Keras asks interactively.

        Raises
        ------
        FileExistsError
            If ``overwrite`` is False and ``filepath`` exists.
        IsADirectoryError
            If ``filepath`` is a directory.
        ValueError
            If ``filepath`` exists and is not a regular file (a FIFO, a device), or the
            model cannot be saved (not built, a plain function as the learning rate).
        """
        path = check_path(filepath, "filepath")
        overwrite = check_bool(overwrite, "overwrite")
        meta = self._save_meta()
        arrays = {f"weights/{i}": w for i, w in enumerate(self.get_weights())}
        if self.optimizer is not None:
            for i, s in enumerate(self._saved_optimizer_state()):
                arrays[f"optimizer/{i}"] = np.asarray(s)
        _atomic_zip(path, meta, arrays, overwrite)

    def _saved_slots(self) -> Optional[List[int]]:
        """Which of the built optimizer's parameters :meth:`save` writes the slots of: those
        of weights still in this model, in the optimizer's order (a layer popped since it
        was built leaves slots that no weight of the file is; as Keras, the file keeps the
        state of the model it holds). None when the optimizer is not built or does not
        know whose its parameters are (all are written)."""
        owners = self.optimizer._param_owners
        if not self.optimizer.built or owners is None:
            return None
        present = {id(layer) for layer in self.layers}
        return [i for i, (layer, _) in enumerate(owners) if id(layer) in present]

    def _saved_optimizer_state(self) -> List[np.ndarray]:
        """The optimizer's :meth:`~fastnn.optimizers.Optimizer.get_state`, with only the
        slots :meth:`_saved_slots` keeps (the state holds the step count, then per slot
        kind, and use_ema's averages, one array per parameter)."""
        state = self.optimizer.get_state()
        keep = self._saved_slots()
        n = len(self.optimizer._shapes) if self.optimizer.built else 0
        if keep is None or len(keep) == n:
            return state
        kinds = (len(state) - 1) // n
        return [state[0]] + [state[1 + k * n + i] for k in range(kinds) for i in keep]

    def _save_meta(self) -> dict:
        """What :meth:`save` writes beside the arrays: the architecture and the compile
        settings. Classes and functions fastnn does not know (a custom layer, loss,
        optimizer or metric function) are written by name, for ``load_model``'s
        ``custom_objects``. Raises ValueError for what cannot be written at all (a plain
        function as the learning rate): ModelCheckpoint calls it before training."""
        self._require_built("save")
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": self.get_config(),
                "compile": None}
        if self.optimizer is not None:
            meta["compile"] = {
                "optimizer": {"class_name": type(self.optimizer).__name__,
                              "config": self.optimizer.get_config()},
                "loss": self.loss.get_config(),
                "loss_class": type(self.loss).__name__,
                "metrics": [_metric_entry(m) for m in self._metric_args]}
            keep = self._saved_slots()
            if keep is not None:
                # which layer's which weight each slot belongs to, so a model saved with
                # layers frozen since its optimizer was built trains on after loading
                index = {id(layer): i for i, layer in enumerate(self.layers)}
                owners = self.optimizer._param_owners
                meta["compile"]["optimizer_params"] = [
                    [index[id(owners[i][0])], owners[i][1]] for i in keep]
        try:
            json.dumps(meta)
        except TypeError as exc:
            raise ValueError(f"cannot save the model: its configuration holds an object that "
                             f"cannot be written to a file ({exc}); e.g. give the optimizer "
                             f"a LearningRateSchedule instead of a plain function") from None
        return meta

    def save_weights(self, filepath: FilePath, overwrite: bool = True) -> None:
        """Write only the weights, atomically, as :meth:`save` does.

        Parameters
        ----------
        filepath : str, bytes or os.PathLike
            Where to write (a symbolic link is written through).
        overwrite : bool, default True
            Replace an existing file. False refuses with :class:`FileExistsError` where
            Keras asks interactively.

        Raises
        ------
        FileExistsError, IsADirectoryError, ValueError
            As :meth:`save`.
        """
        path = check_path(filepath, "filepath")
        overwrite = check_bool(overwrite, "overwrite")
        self._require_built("save_weights")
        meta = {"format": FORMAT + "-weights", "version": FORMAT_VERSION}
        _atomic_zip(path, meta, {f"weights/{i}": w for i, w in enumerate(self.get_weights())},
                    overwrite)

    def load_weights(self, filepath: FilePath) -> None:
        """Load weights written by :meth:`save_weights` or :meth:`save`.

        Parameters
        ----------
        filepath : str, bytes or os.PathLike

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If the file is truncated, corrupt or not a fastnn file, or its weights do not
            fit this model (their number or shapes); the message names the file. No weight
            is changed then.
        """
        path = check_path(filepath, "filepath")
        self._require_built("load_weights")
        with _ModelFile(path, (FORMAT, FORMAT + "-weights")) as archive:
            try:
                # every shape is checked against the model before any array is read
                self._checked_weights(archive.headers("weights"))
                weights = archive.arrays("weights")
                self.set_weights(weights)
            except _UnreadableModelFile:
                raise
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: the weights in this file do not fit the model: "
                                 f"{exc}") from exc


def model_from_json(json_string: str, custom_objects: Optional[dict] = None) -> Sequential:
    """A new model from :meth:`Sequential.to_json`'s text: the architecture, built where it
    has an input shape, with newly initialized weights and not compiled (Keras's
    ``model_from_json``). Your own layers, activation functions, initializers and
    regularizers are found by name in ``custom_objects``.

    Raises
    ------
    ValueError
        If ``json_string`` is not JSON of that form, or names a class fastnn does not
        know and ``custom_objects`` does not hold.
    TypeError
        If ``json_string`` is not a string.
    """
    if not isinstance(json_string, (str, bytes, bytearray)):
        raise TypeError(f"json_string must be a str, received {type(json_string).__name__}")
    try:
        spec = json.loads(json_string)
    except ValueError as exc:
        raise ValueError(f"json_string is not JSON: {exc}") from None
    if (not isinstance(spec, dict) or spec.get("class_name") != "Sequential"
            or not isinstance(spec.get("config"), dict)):
        raise ValueError(f"json_string must hold {{'class_name': 'Sequential', 'config': "
                         f"{{...}}}} (Sequential.to_json's output), received "
                         f"{str(json_string)[:100]!r}")
    return Sequential.from_config(spec["config"], custom_objects)


def clone_model(model: Sequential, clone_function=None,
                custom_objects: Optional[dict] = None) -> Sequential:
    """A new Sequential of ``model``'s layers rebuilt from their configs, with newly
    initialized weights, not compiled (Keras's ``clone_model``: copy the weights with
    ``clone.set_weights(model.get_weights())``).

    Parameters
    ----------
    model : Sequential
    clone_function : callable, optional
        ``clone_function(layer) -> new layer``, called on each layer in order (Keras's);
        by default ``type(layer).from_config(layer.get_config())``.
    custom_objects : dict, optional
        Your own activation functions, initializers and regularizers in the layers'
        configs, by name (the model's own layer classes are found without it).
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a Sequential, received {type(model).__name__}")
    if clone_function is not None and not callable(clone_function):
        raise TypeError(f"clone_function must be callable, received {clone_function!r}")
    if clone_function is None:
        scope = {type(l).__name__: type(l) for l in model.layers}
        scope.update(custom_objects or {})
        return Sequential.from_config(model.get_config(), scope)
    clone = Sequential(name=model.name)
    for layer in model.layers:          # (not an Input layer: the input shape is rebuilt)
        new = clone_function(layer)
        if not isinstance(new, Layer):
            raise TypeError(f"clone_function must return a Layer, received "
                            f"{type(new).__name__} for layer {layer.name!r}")
        clone.add(new)
    if model._input_shape is not None and not clone.built:
        clone.build(model._input_shape)
    return clone


def _bn_pool_run(layers: Sequence[Layer], i: int) -> int:
    """The length of a BatchNormalization - MaxPooling2D run at ``layers[i]`` that
    :func:`~fastnn.layers.normalization.bn_pool_forward` runs as one: 2, or 3 with an
    activation between (:func:`~fastnn.layers.conv.act_pool_pairable`); else 0."""
    if i + 1 < len(layers) and bn_pool_fusable(layers[i], layers[i + 1]):
        return 2
    if i + 2 < len(layers) and bn_pool_fusable(layers[i], layers[i + 2]) and \
            act_pool_pairable(layers[i + 1], layers[i + 2]):
        return 3
    return 0


def _conv_act_pool_run(layers: Sequence[Layer], i: int) -> bool:
    """Is ``layers[i:i + 3]`` a Conv2D, an activation layer and a MaxPooling2D that
    :func:`~fastnn.layers.conv.conv_act_pool_forward` runs as one?"""
    return i + 2 < len(layers) and conv_pool_fusable(layers[i], layers[i + 2]) and \
        act_pool_pairable(layers[i + 1], layers[i + 2])


def _linear_act_run(layers: Sequence[Layer], i: int) -> bool:
    """Is ``layers[i:i + 2]`` a Dense or Conv2D and a relu layer that
    :func:`~fastnn.layers.conv.linear_act_forward` runs as one? Not where the relu layer
    pairs with a MaxPooling2D after it (:func:`_conv_act_pool_run`,
    :func:`~fastnn.layers.conv.act_pool_pairable`): those groups keep it, forward and
    backward."""
    return i + 1 < len(layers) and linear_act_fusable(layers[i], layers[i + 1]) and not (
        i + 2 < len(layers) and act_pool_pairable(layers[i + 1], layers[i + 2]))


def _layer_range(layers: Sequence[Layer], layer_range) -> tuple:
    """summary's (start, stop) of ``layers`` for ``layer_range`` (Keras's rule: from the
    first layer whose name matches the first pattern to the last matching the second)."""
    if layer_range is None:
        return 0, len(layers)
    if (not isinstance(layer_range, (list, tuple)) or len(layer_range) != 2
            or not all(isinstance(p, str) for p in layer_range)):
        raise TypeError(f"layer_range must be two strings (name patterns), received "
                        f"layer_range={layer_range!r}")
    lo = [i for i, l in enumerate(layers) if re.match(layer_range[0], l.name)]
    hi = [i for i, l in enumerate(layers) if re.match(layer_range[1], l.name)]
    if not lo or not hi:
        raise ValueError(f"layer_range {layer_range!r} matches no layer name: the layers "
                         f"are {[l.name for l in layers]}")
    if min(lo) > max(hi):
        return min(hi), max(lo) + 1
    return min(lo), max(hi) + 1


def _summary_widths(header: List[str], rows: List[List[str]], line_length,
                    positions) -> List[int]:
    """summary's column widths: each column's widest entry and two spaces, or the
    columns' right edges ``positions`` over ``line_length`` (Keras's defaults)."""
    if line_length is None and positions is None:
        return [max(len(h), *(len(r[i]) for r in rows)) + 2 for i, h in enumerate(header)]
    if line_length is not None:
        line_length = check_int(line_length, "line_length")
    trainable = len(header) == 4
    if line_length is None:
        line_length = 88 + 12 * trainable
    if positions is None:
        positions = [0.45, 0.80, 1.0]
        if trainable:
            positions = [p * 0.90 for p in positions] + [1.0]
    try:
        pos = [float(p) for p in positions]
    except (TypeError, ValueError):
        raise TypeError(f"positions must be a sequence of numbers, received "
                        f"positions={positions!r}") from None
    if trainable and len(pos) == 3:     # Keras: the three shrunk, the Trainable column after
        pos = [p * 0.90 for p in pos] + [1.0] if pos[-1] <= 1 else pos + [pos[-1] + 12]
    if len(pos) != len(header):
        raise ValueError(f"positions must give the right edge of each of the {len(header)} "
                         f"columns {header}, received {len(pos)}: {positions!r}")
    edges = [int(p * line_length) for p in pos] if pos[-1] <= 1 else [int(p) for p in pos]
    widths = [b - a for a, b in zip([0] + edges[:-1], edges)]
    if min(widths) < 4:
        raise ValueError(f"the columns need 4 characters or more each: line_length="
                         f"{line_length}, positions={positions!r} give widths {widths}")
    return widths


def _as_array(a, name: str) -> np.ndarray:
    """``np.asarray(a)`` (a plain ndarray: np.matrix becomes one), with a message naming
    the argument when that fails (a ragged list); a masked array is a TypeError (its mask
    would be ignored)."""
    refuse_masked(a, name)
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} cannot be read as an array: {exc}") from None


def load_model(filepath: FilePath, custom_objects: Optional[dict] = None,
               compile: bool = True, safe_mode: bool = True) -> Sequential:
    """Load a model written by :meth:`Sequential.save` (Keras 3's signature).

    Parameters
    ----------
    filepath : str, bytes or os.PathLike
    custom_objects : dict, optional
        ``{name: class or function}`` for what the model uses that fastnn does not know:
        your own Layer, Loss, Optimizer, Initializer or Regularizer subclasses and your
        activation, initializer and metric functions, under the names they had when
        saved (their ``__name__``; a loss also under its ``name``).
    compile : bool, default True
        Restore the compile settings and the optimizer state; False loads the
        architecture and weights only (no custom losses, optimizers or metrics needed).
    safe_mode : bool, default True
        Accepted for Keras compatibility; it has no effect: a fastnn file holds no code
        (no lambdas, no pickles), so loading one never runs any, whatever its value.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    TypeError
        If ``filepath`` is not a path, ``custom_objects`` not a dict, or ``compile`` or
        ``safe_mode`` not a bool.
    ValueError
        If the file is truncated, corrupt, or not a fastnn model, or names a class or
        function that is neither fastnn's nor in ``custom_objects``; the message names
        the file.
    """
    path = check_path(filepath, "filepath")
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(f"custom_objects must be a dict {{name: class or function}}, "
                        f"received {type(custom_objects).__name__}")
    compile = check_bool(compile, "compile")
    check_bool(safe_mode, "safe_mode")
    custom = dict(custom_objects or {})
    with _ModelFile(path, (FORMAT,)) as archive:
        return _model_from_file(archive, path, custom, compile)


def _model_from_file(archive: "_ModelFile", path: str, custom: dict,
                     compile: bool) -> Sequential:
    """:func:`load_model`'s model, built from the opened file."""
    meta = archive.meta
    try:
        model = Sequential.from_config(meta["config"], custom)
        # every shape is checked against the model before any array is read
        model._checked_weights(archive.headers("weights"))
        model.set_weights(archive.arrays("weights"))
        comp = meta.get("compile")
        if compile and comp:
            optimizer = _optimizers.deserialize(comp["optimizer"], custom)
            model.compile(optimizer=optimizer, loss=_saved_loss(comp, custom),
                          metrics=[_saved_metric(m, custom) for m in comp["metrics"]])
            if archive.count("optimizer"):
                _check_state_headers(archive.headers("optimizer"), model, optimizer)
                optimizer.set_state(archive.arrays("optimizer"))
                owners = comp.get("optimizer_params")
                if owners is not None and optimizer.built:
                    if len(owners) != len(optimizer._shapes):
                        raise ValueError(f"the optimizer state holds {len(optimizer._shapes)} "
                                         f"parameters but names {len(owners)}")
                    optimizer._param_owners = [(model.layers[i], name) for i, name in owners]
    except _UnreadableModelFile:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, MemoryError,
            RecursionError) as exc:
        if str(exc).startswith("Unknown "):   # a valid file naming a class we lack
            # (compile=False skips the loss, optimizer and metrics, not the layers)
            hint = ", or load with compile=False if it is only needed to train" if \
                str(exc).split()[1] in ("loss", "optimizer", "metric") else ""
            raise ValueError(f"{path}: {exc}; if it is your own, pass it: "
                             f"load_model(filepath, custom_objects={{name: object}})"
                             f"{hint}") from exc
        # (MemoryError: sizes in the file, such as a layer's units, beyond any memory;
        # RecursionError: a configuration nested beyond any model's)
        raise ValueError(f"{path}: not a valid fastnn model ({type(exc).__name__}: "
                         f"{exc})") from exc
    return model


def _check_state_headers(state: List[np.ndarray], model: Sequential, optimizer) -> None:
    """Before the optimizer state is read: a step count, then at most one array per slot
    kind (use_ema's moving averages counting as one) and weight, each of a weight's shape
    (what the file may legitimately hold, so no array beyond the model's own size is ever
    read). (All weights, not the trainable ones
    only: a layer frozen after the optimizer was built keeps its slots.)"""
    shapes = {w.shape for w in model.weights}
    most = 1 + len(optimizer._state_kinds()) * len(model.weights)
    if len(state) > most:
        raise ValueError(f"the optimizer state holds {len(state)} arrays, more than the "
                         f"{most} this optimizer keeps for this model")
    if state[0].shape != ():
        raise ValueError(f"the optimizer state's step count has shape {state[0].shape}, "
                         f"expected ()")
    for i, a in enumerate(state[1:], 1):
        if a.shape not in shapes:
            raise ValueError(f"optimizer state array {i} has shape {a.shape}, which no "
                             f"weight of the model has")


def _metric_entry(m):
    """How save() writes one ``compile(metrics=...)`` entry: a name as is, a built-in
    metric by its config, anything else (a function, a Loss, a Metric subclass) by name."""
    if isinstance(m, str):
        return m
    if isinstance(m, _losses.Loss) and type(_losses.get(m.get_config())) is type(m):
        return {"loss": m.get_config()}            # fastnn's own loss as a metric
    try:
        return _metrics.serialize(m)
    except TypeError:
        return {"custom": getattr(m, "__name__", None) or type(m).__name__}


def _saved_metric(entry, custom: dict):
    """The inverse of :func:`_metric_entry`, with the user's ``custom`` objects."""
    if isinstance(entry, dict) and "custom" in entry:
        name = entry["custom"]
        if name not in custom:
            raise ValueError(f"Unknown metric {name!r} (not one of fastnn's)")
        obj = custom[name]
        return obj() if isinstance(obj, type) else obj
    if isinstance(entry, dict) and "loss" in entry:
        return _losses.get(entry["loss"])
    return entry


def _saved_loss(comp: dict, custom: dict):
    """The compiled loss: fastnn's from its config, or the user's class named
    ``loss_class`` (built as ``cls(**config)`` without the name)."""
    cls_name = comp.get("loss_class")
    cfg = comp["loss"]
    if cls_name is not None:
        # custom_objects may name the class or, as a Keras user might, the loss's name
        for key in (cls_name, cfg.get("name") if isinstance(cfg, dict) else None):
            if key is not None and key in custom:
                return custom[key](**{k: v for k, v in cfg.items() if k != "name"})
        try:
            loss = _losses.get(cfg)
        except ValueError as exc:
            if not str(exc).startswith("Unknown"):
                raise
            raise ValueError(f"Unknown loss class {cls_name!r} (named {cfg.get('name')!r}, "
                             f"not one of fastnn's)") from None
    else:
        loss = _losses.get(cfg)
    if cls_name is not None and type(loss).__name__ != cls_name:
        raise ValueError(f"Unknown loss class {cls_name!r} (a subclass of "
                         f"{type(loss).__name__}, not one of fastnn's)")
    return loss


def _atomic_zip(path: str, meta: dict, arrays: Dict[str, np.ndarray],
                overwrite: bool = True) -> None:
    """Write a model file (meta.json and one .npy member per array) atomically."""
    def write(fh) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("meta.json", json.dumps(meta))
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.save(buf, np.asarray(arr), allow_pickle=False)
                zf.writestr(name + ".npy", buf.getvalue())

    atomic_write(path, write, name="filepath", overwrite=overwrite, example="model.fnn")


class _UnreadableModelFile(ValueError):
    """A model file that cannot be read (truncated, corrupt, another format)."""


#: The arrays' member names: weights/0.npy, weights/1.npy, ..., optimizer/0.npy, ...
_ARRAY_MEMBER = re.compile(r"(weights|optimizer)/(0|[1-9][0-9]{0,8})\.npy")
#: meta.json is a model's description: a few KiB, far less than this even for big models.
_MAX_META_BYTES = 16 * 2 ** 20


class _ModelFile:
    """A model file opened for reading (a context manager).

    meta.json is read and checked on opening; an array is read only when asked for, after
    its .npy header (shape, dtype) has been read and checked against the member's size,
    and, by the caller, against the model (:meth:`headers`). So nothing beyond what the
    model can hold is ever read: not a member no one uses, not an array whose header
    declares a size beyond the model's. Every failure to read is a ValueError naming the
    file (an :class:`_UnreadableModelFile`).
    """

    def __init__(self, path: str, formats) -> None:
        self.path = path
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such model file: {path}")
        kind = special_kind(os.stat(path).st_mode)
        if kind:   # (zipfile would wait on a FIFO forever, read a device without end)
            raise _UnreadableModelFile(f"{path}: is {kind}, not a regular file: not a "
                                       f"fastnn model file")
        self._zf: Optional[zipfile.ZipFile] = None
        try:
            with _unreadable(path):
                self._zf = zipfile.ZipFile(path)
                self.meta = self._open(formats)
        except BaseException:
            self.close()
            raise

    def _open(self, formats) -> dict:
        """Sort the members, then read and check meta.json."""
        self._members: Dict[str, Dict[int, zipfile.ZipInfo]] = {"weights": {},
                                                                "optimizer": {}}
        meta_info = None
        for info in self._zf.infolist():
            name = info.filename
            m = _ARRAY_MEMBER.fullmatch(name)
            if name == "meta.json":
                meta_info = info
            elif m:
                self._members[m[1]][int(m[2])] = info
            elif name.startswith(("weights/", "optimizer/")) or name.endswith(".npy"):
                raise ValueError(f"unexpected member {name[:100]!r} (arrays are "
                                 f"weights/<i>.npy and optimizer/<i>.npy)")
            # anything else is ignored, and never read
        if meta_info is None:
            raise ValueError("meta.json is missing")
        if meta_info.file_size > _MAX_META_BYTES:
            raise ValueError(f"meta.json holds {meta_info.file_size} bytes, more than a "
                             f"model's description takes (at most {_MAX_META_BYTES})")
        meta = json.loads(self._zf.read(meta_info).decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") not in formats:
            fmt = meta.get("format") if isinstance(meta, dict) else meta
            hint = ("; it holds weights only (save_weights): build the model and call "
                    "model.load_weights(path)" if fmt == FORMAT + "-weights" else "")
            raise ValueError(f"format is {fmt!r:.100}, expected one of {list(formats)}{hint}")
        version = meta.get("version")
        if isinstance(version, bool) or not isinstance(version, int) \
                or not 1 <= version <= FORMAT_VERSION:
            raise ValueError(f"format version {version!r:.100}; this fastnn reads versions 1 "
                             f"to {FORMAT_VERSION} (written by a newer fastnn?)")
        return meta

    def close(self) -> None:
        if self._zf is not None:
            self._zf.close()

    def __enter__(self) -> "_ModelFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def count(self, prefix: str) -> int:
        """How many ``prefix/<i>.npy`` members the file holds."""
        return len(self._members[prefix])

    def _infos(self, prefix: str) -> List[zipfile.ZipInfo]:
        members = self._members[prefix]
        return [members[i] for i in sorted(members)]

    def headers(self, prefix: str) -> List[np.ndarray]:
        """The arrays ``prefix/0.npy``, ``prefix/1.npy``, ... as their .npy headers declare
        them, without their data: read-only zero-stride arrays of the declared shape and
        dtype (no memory), for the caller to check against the model."""
        out = []
        with _unreadable(self.path):
            for info in self._infos(prefix):
                with self._zf.open(info) as fp:
                    shape, dtype = _npy_header(fp, info)
                out.append(np.broadcast_to(np.zeros((), dtype), shape))
        return out

    def arrays(self, prefix: str) -> List[np.ndarray]:
        """The arrays ``prefix/0.npy``, ``prefix/1.npy``, ... (check :meth:`headers`
        first: this allocates what they declare)."""
        out = []
        with _unreadable(self.path):
            for info in self._infos(prefix):
                with self._zf.open(info) as fp:
                    _npy_header(fp, info)
                    fp.seek(0)
                    out.append(np.lib.format.read_array(fp, allow_pickle=False))
        return out


@contextlib.contextmanager
def _unreadable(path: str):
    """Any failure to read the model file ``path`` inside becomes an
    :class:`_UnreadableModelFile` naming it."""
    try:
        yield
    except _UnreadableModelFile:
        raise
    except DAMAGED_ARCHIVE_ERRORS as exc:
        what = f"{type(exc).__name__}: " if isinstance(exc, (MemoryError, RecursionError)) \
            else ""
        raise _UnreadableModelFile(f"{path}: not a readable fastnn model file (truncated, "
                                   f"corrupt or another format): {what}{exc}") from exc


def _npy_header(fp, info: zipfile.ZipInfo) -> tuple:
    """``(shape, dtype)`` of the .npy member ``info`` open as ``fp``; checks
    that the member's size is exactly that header plus the data it declares."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f"{info.filename}: .npy format version {version} (fastnn writes 1.0)")
    if dtype.hasobject:
        raise ValueError(f"{info.filename}: holds Python objects (dtype {dtype}), not numbers")
    header = fp.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    if info.file_size != header + nbytes:
        raise ValueError(f"{info.filename}: {info.file_size} bytes, but its header declares "
                         f"shape {shape} of {dtype} ({header + nbytes} bytes with the header)")
    return shape, dtype


def _positive_int(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive int, received {name}={v!r}")
    return int(v)


def _batch_size(v) -> int:
    """fit / evaluate / predict's batch_size: None means 32, as in Keras."""
    return 32 if v is None else _positive_int(v, "batch_size")


def _verbose(v) -> int:
    """fit / evaluate / predict's verbose: 0, 1, 2 or "auto" (1); False and True are 0 and
    1, as Python (and so Keras) compares them."""
    if not isinstance(v, (int, str, np.integer, np.bool_)) or v not in (0, 1, 2, "auto"):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', received {v!r}")
    return 1 if v == "auto" else int(v)


def _nonneg_int(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"{name} must be a non-negative int, received {name}={v!r}")
    return int(v)


def _relu_pool_backward(layer, pool, grad):
    """Backward through ``layer`` (ending in relu) and the MaxPooling2D ``pool`` after it:
    the pooling applies relu's derivative to its own, smaller gradient and sums the bias
    gradient there (:meth:`MaxPooling2D.backward_through_relu`); the layer skips its relu
    backward and bias sum. A Conv2D run with the pooling by ``conv_pool_forward`` (any
    non-decreasing activation) takes its gradients straight from the pooled one
    (``conv_pool_backward``)."""
    if getattr(layer, "_dy_crop", False):
        return conv_pool_backward(layer, pool, grad)
    if layer._act_kernel != "relu":     # a fusable pair whose forward ran as two layers
        return layer.backward(pool.backward(grad))
    dz, db = pool.backward_through_relu(grad, need_db=getattr(layer, "bias", None) is not None)
    return layer.backward_logits(dz, db)


def _scalar(v):
    a = np.asarray(v)
    return float(a) if a.ndim == 0 else a
