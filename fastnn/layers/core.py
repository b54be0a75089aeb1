"""Core layers: Input, Dense, Flatten, Dropout, Activation, ReLU, Softmax."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import activations as _activations
from .. import ops
from ..ops._checks import FLOAT_DTYPES, expect_shape, float_array
from ..utils import get_rng
from ..utils._args import check_real
from ..utils._custom import function_config
from .base import Layer, _sample_shape

# Activations the fused bias + activation kernel applies in place.
FUSED = {_activations.Linear: "identity", _activations.ReLU: "relu"}


class InputLayer(Layer):
    """Declares the shape of one sample: ``Input(shape=(28, 28, 1))`` as a model's first
    element. Forward and backward are the identity."""

    def __init__(self, shape=None, *, batch_size: Optional[int] = None, batch_shape=None,
                 **kwargs):
        if batch_shape is not None:                 # Keras 3's InputLayer config
            if shape is not None or batch_size is not None:
                raise ValueError("give shape (and batch_size) or batch_shape, not both")
            if not isinstance(batch_shape, (tuple, list)) or len(batch_shape) < 2:
                raise ValueError(f"batch_shape must be a tuple (batch_size, *shape) with at "
                                 f"least one sample dimension, received {batch_shape!r}")
            batch_size, shape = batch_shape[0], tuple(batch_shape[1:])
        if shape is not None and kwargs.get("input_shape") is not None and \
                tuple(kwargs["input_shape"]) != tuple(shape):
            raise ValueError(f"give shape or input_shape, not two different ones: received "
                             f"shape={shape!r}, input_shape={kwargs['input_shape']!r}")
        if shape is None and kwargs.get("input_shape") is None:
            raise ValueError("Input needs shape=, the shape of one sample, e.g. (28, 28, 1)")
        shape = shape if shape is not None else kwargs.pop("input_shape")
        kwargs.pop("input_shape", None)
        super().__init__(input_shape=shape, **kwargs)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
                batch_size, (int, np.integer)) or batch_size < 1):
            raise ValueError(f"batch_size must be None or a positive int, received "
                             f"{batch_size!r}")
        self.batch_size = None if batch_size is None else int(batch_size)

    def forward(self, x, training=False):
        return x

    def backward(self, grad):
        return grad

    def get_config(self):
        cfg = super().get_config()
        cfg["shape"] = cfg.pop("input_shape")
        cfg["batch_size"] = self.batch_size
        return cfg


def Input(shape=None, batch_size: Optional[int] = None, dtype=None, *, batch_shape=None,
          name: Optional[str] = None) -> InputLayer:
    """Keras-style ``Input(shape=...)``: an :class:`InputLayer` for a Sequential model.

    The first three arguments are Keras 3's, in its order; ``batch_shape`` and ``name`` are
    keyword-only (Keras's fourth positional argument, ``sparse``, and its ``tensor`` and
    ``optional`` have no meaning here).

    Parameters
    ----------
    shape : tuple of int
        The shape of one sample, without the batch dimension, e.g. ``(28, 28, 1)``.
    batch_size : int, optional
    dtype : {"float32", "float64"}, default None (float32)
    batch_shape : tuple, optional
        ``(batch_size,) + shape`` in one tuple, instead of ``shape`` and ``batch_size``.
    name : str, optional
    """
    return InputLayer(shape=shape, batch_size=batch_size, batch_shape=batch_shape, name=name,
                      dtype=dtype)


class _WithActivation(Layer):
    """A layer computing ``activation(z)`` from a linear part ``z``: relu and linear run in
    the fused bias + activation kernel; others as a separate forward/backward pair.

    Subclasses implement ``_linear(x, act_kernel) -> z or act(z)`` and
    ``_linear_backward(dz, db) -> dx``. A model whose last layer ends in softmax/sigmoid with
    a matching cross-entropy calls :meth:`forward_logits` / :meth:`backward_logits` to use
    the fused, stable loss gradient instead of the activation's backward.
    """

    channel_axis = -1
    # Whether backward takes the bias gradient from the activation's backward kernel
    # (Dense) or the linear part computes it itself (Conv2D: conv2d_backward returns db).
    _db_in_epilogue = True

    def _set_activation(self, activation):
        self.activation = _activations.get(activation)
        # by class: a user's function named "relu" is not the built-in
        self._act_kernel = FUSED.get(type(self.activation))

    def forward(self, x, training=False):
        x = self._cast_input(x)       # (Keras casts to the layer's dtype too)
        self._check_input(x)
        self._x = x = self._unaliased(x)
        self._training = training     # _linear writes into a reused buffer when training
        if self._act_kernel is not None:
            self._z = None
            self._y = self._linear(x, self._act_kernel)
        else:
            self._z = self._linear(x, "identity")
            self._y = self.activation.forward(self._z)
        return self._y

    def backward(self, grad):
        if self._act_kernel == "identity" and not self._db_in_epilogue:
            # linear: dz is grad itself (copied only if it is one of this layer's buffers,
            # such as its own dx fed back in), and the linear part sums db (the copy cost
            # Conv2D - BatchNormalization 11 MB written and read per step)
            dz, db = self._unaliased(float_array(grad, "grad")), None
            expect_shape(dz, self._y.shape, "grad", "the layer's output shape")
        elif self._act_kernel is not None:
            dz, db = ops.bias_act_backward(grad, self._y, self._act_kernel,
                                           channel_axis=self.channel_axis,
                                           need_db=self._db_in_epilogue,
                                           out=self._buffer("dz", grad.shape, grad.dtype))
        else:
            dz = self.activation.backward(grad, self._z, self._y)
            db = None
        return self._linear_backward(dz, db)

    def forward_logits(self, x, training=False):
        """The output before the activation (the logits of a softmax/sigmoid layer)."""
        x = self._cast_input(x)
        self._check_input(x)
        self._x = x = self._unaliased(x)
        self._training = training
        self._z = self._linear(x, "identity")
        return self._z

    def backward_logits(self, dz, db=None):
        """Backward from the gradient with respect to :meth:`forward_logits`' output
        (``dz``); ``db``, the bias gradient, when the caller has it already."""
        return self._linear_backward(dz, db)

    def get_config(self):
        cfg = super().get_config()
        cfg["activation"] = _activations.serialize(self.activation)
        return cfg


class Dense(_WithActivation):
    """Fully connected layer: ``y = activation(x @ kernel + bias)``.

    Parameters
    ----------
    units : int
    activation : str, Activation, callable or None
    use_bias : bool
    kernel_initializer, bias_initializer : str or initializer
        Defaults ``"glorot_uniform"`` and ``"zeros"``.
    kernel_regularizer, bias_regularizer : str or regularizer, optional
    input_dim : int, optional
        Shorthand for ``input_shape=(input_dim,)``.

    Shapes
    ------
    x (N, ..., in_features) -> y (N, ..., units); kernel (in_features, units); bias (units,).
    """

    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None,
                 input_dim: Optional[int] = None, **kwargs):
        if input_dim is not None:
            kwargs["input_shape"] = (input_dim,)
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units must be a positive int, received units={units!r}")
        self.units = int(units)
        self._set_activation(activation)
        self.use_bias = bool(use_bias)
        self._check_weight_args(kernel_initializer=kernel_initializer,
                                bias_initializer=bias_initializer,
                                kernel_regularizer=kernel_regularizer,
                                bias_regularizer=bias_regularizer)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.kernel_regularizer = kernel_regularizer
        self.bias_regularizer = bias_regularizer

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"Dense needs inputs with a known last dimension, received "
                             f"input shape {input_shape}")
        self.in_features = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", (self.in_features, self.units),
                                      self.kernel_initializer, self.kernel_regularizer)
        self.bias = (self.add_weight("bias", (self.units,), self.bias_initializer,
                                     self.bias_regularizer) if self.use_bias else None)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def _linear(self, x, act):
        x2 = x.reshape(-1, self.in_features)
        out = (self._buffer("y", (x2.shape[0], self.units), x.dtype)
               if getattr(self, "_training", False) else None)
        z = ops.matmul(x2, self.kernel, out=out)
        if self.bias is not None or act != "identity":
            ops.bias_act(z, self.bias, act, out=z)
        return z.reshape(x.shape[:-1] + (self.units,))

    def _linear_backward(self, dz, db):
        x2 = self._x.reshape(-1, self.in_features)
        dz2 = dz.reshape(-1, self.units)
        ops.matmul(x2, dz2, trans_a=True, out=self.grads["kernel"])
        if self.bias is not None:
            if db is None:  # the column sums, by the kernel that sums them for relu layers
                db = ops.bias_act_backward(dz2, dz2, "identity",
                                           out=self._buffer("dzb", dz2.shape, dz2.dtype))[1]
            self.grads["bias"][...] = db
        self._add_regularization_grads()
        if not self.need_input_grad:
            return None
        dx = self._buffer("dx", (dz2.shape[0], self.in_features), dz2.dtype)
        return ops.matmul(dz2, self.kernel, trans_b=True, out=dx).reshape(self._x.shape)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(units=self.units, use_bias=self.use_bias,
                   kernel_initializer=_cfg(self.kernel_initializer),
                   bias_initializer=_cfg(self.bias_initializer),
                   kernel_regularizer=_cfg(self.kernel_regularizer),
                   bias_regularizer=_cfg(self.bias_regularizer))
        return cfg


def _cfg(obj):
    """A JSON-able description of an initializer/regularizer argument."""
    if obj is None or isinstance(obj, (str, int, float, dict)):
        return obj
    if hasattr(obj, "get_config"):
        return {"class_name": type(obj).__name__, "config": obj.get_config()}
    return function_config(obj)   # the user's function: found by name in custom_objects


class Flatten(Layer):
    """Flatten each sample to a vector: (N, d1, d2, ...) -> (N, d1*d2*...).

    With ``data_format="channels_first"`` the input is first transposed to channels-last
    order, as Keras does, so the flattened order matches a channels-last model.
    """

    def __init__(self, data_format: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _data_format(data_format)

    def compute_output_shape(self, input_shape):
        n = 1
        for d in input_shape[1:]:
            n = None if n is None or d is None else n * d     # unknown if any is
        return (input_shape[0], n)

    def forward(self, x, training=False):
        self._shape = x.shape
        if self.data_format == "channels_first" and x.ndim >= 3:
            x = np.moveaxis(x, 1, -1)
        return np.ascontiguousarray(x).reshape(x.shape[0], int(np.prod(x.shape[1:])))

    def backward(self, grad):
        if self.data_format == "channels_first" and len(self._shape) >= 3:
            shp = (self._shape[0],) + self._shape[2:] + (self._shape[1],)
            return np.ascontiguousarray(np.moveaxis(grad.reshape(shp), -1, 1))
        return grad.reshape(self._shape)

    def get_config(self):
        cfg = super().get_config()
        cfg["data_format"] = self.data_format
        return cfg


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale
    the rest by ``1 / (1 - rate)``; at inference, the identity.

    Parameters
    ----------
    rate : float in [0, 1)
    noise_shape : tuple of (int or None), optional
        One entry per input axis (batch first): the shape of the mask, broadcast over
        the axes given as 1 (None: the input's size), as in Keras.
    seed : int, optional
        Seeds this layer's own generator; otherwise fastnn's global one is used
        (``fastnn.utils.set_random_seed``).
    """

    def __init__(self, rate: float, noise_shape=None, seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) \
                or not 0 <= rate < 1:
            raise ValueError(f"rate must be a float in [0, 1), received rate={rate!r}")
        self.rate = float(rate)
        if noise_shape is not None and (
                not isinstance(noise_shape, (tuple, list)) or not all(
                    d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                  and d >= 1) for d in noise_shape)):
            raise ValueError(f"noise_shape must be a tuple of ints >= 1 or None (one per "
                             f"input axis), received noise_shape={noise_shape!r}")
        self.noise_shape = None if noise_shape is None else tuple(
            None if d is None else int(d) for d in noise_shape)   # (Python ints: JSON)
        self._rng = None if seed is None else get_rng(seed)
        self.seed = seed if seed is None or self._rng is seed else int(seed)
        self._mask = None

    def forward(self, x, training=False):
        if not training or self.rate == 0:
            self._mask = None
            return x
        shape = x.shape
        if self.noise_shape is not None:
            if len(self.noise_shape) != x.ndim:
                raise ValueError(f"noise_shape {self.noise_shape} of layer {self.name!r} has "
                                 f"{len(self.noise_shape)} entries but its input has "
                                 f"{x.ndim} axes (shape {x.shape}): give one per axis")
            shape = tuple(x.shape[i] if d is None else d for i, d in enumerate(self.noise_shape))
            if any(m not in (1, d) for m, d in zip(shape, x.shape)):
                raise ValueError(f"noise_shape {self.noise_shape} of layer {self.name!r} does "
                                 f"not broadcast to its input of shape {x.shape}: each entry "
                                 f"must be None, 1 or the input's size")
        if shape == x.shape and x.dtype in FLOAT_DTYPES:   # mask and product in one pass
            x = self._unaliased(x)     # (its own training output fed back in: see Layer)
            y, self._mask = ops.dropout(x, self.rate, self._seed(),
                                        out=self._buffer("y", x.shape, x.dtype),
                                        mask_out=self._buffer("mask", x.shape, x.dtype))
            return y
        self._mask = self._draw_mask(shape, x.dtype)
        return x * self._mask

    def _seed(self) -> int:
        """A new 64-bit key for :func:`fastnn.ops.dropout_mask`, from this layer's generator
        (or fastnn's global one): one draw per step, whatever the mask's size."""
        rng = self._rng if self._rng is not None else get_rng()
        return int(rng.integers(1 << 64, dtype=np.uint64))

    def _draw_mask(self, shape, dtype, out=None) -> np.ndarray:
        """A training mask of ``shape``: 0 with probability ``rate``, else
        ``1 / (1 - rate)`` (:func:`fastnn.ops.dropout_mask` under a new :meth:`_seed`; a
        dtype other than float32/float64 gets float64's mask, cast)."""
        if np.dtype(dtype) in FLOAT_DTYPES:
            return ops.dropout_mask(shape, self.rate, self._seed(), dtype, out=out)
        return ops.dropout_mask(shape, self.rate, self._seed(), np.float64).astype(dtype)

    def backward(self, grad):
        if self._mask is None:
            return grad
        if grad.shape == self._mask.shape and grad.dtype == self._mask.dtype:
            return np.multiply(grad, self._mask,
                               out=self._buffer("dx", grad.shape, grad.dtype))
        return grad * self._mask

    def get_config(self):
        cfg = super().get_config()
        cfg.update(rate=self.rate, noise_shape=self.noise_shape, seed=self.seed)
        return cfg


class Activation(Layer):
    """Apply an activation function: ``Activation("relu")``, ``Activation("softmax")``."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = _activations.get(activation)

    def forward(self, x, training=False):
        self._x = x
        self._y = self.activation.forward(x)
        return self._y

    def backward(self, grad):
        return self.activation.backward(grad, self._x, self._y)

    def get_config(self):
        cfg = super().get_config()
        cfg["activation"] = _activations.serialize(self.activation)
        return cfg


class ReLU(Layer):
    """Rectified linear unit, Keras's ReLU layer: :func:`fastnn.activations.relu` with
    ``max_value``, ``negative_slope`` and ``threshold`` (Keras's computation, see there:
    about ``min(max_value, x)`` for ``x > threshold``, else ``negative_slope * (x -
    threshold)``). The default (plain relu) runs on the fused kernel."""

    def __init__(self, max_value: Optional[float] = None, negative_slope: float = 0.0,
                 threshold: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.max_value = check_real(max_value, "max_value", low=0.0, allow_none=True)
        self.negative_slope = check_real(negative_slope, "negative_slope", low=0.0)
        self.threshold = check_real(threshold, "threshold")
        self._plain = max_value is None and negative_slope == 0 and threshold == 0

    def forward(self, x, training=False):
        self._x = x
        if self._plain:
            self._y = ops.bias_act(x, None, "relu")
            return self._y
        self._y = _activations.relu(x, self.negative_slope, self.max_value, self.threshold)
        return self._y

    def backward(self, grad):
        if self._plain:
            return ops.bias_act_backward(grad, self._y, "relu", need_db=False)[0]
        d = _activations.relu_derivative(self._x, self.negative_slope, self.max_value,
                                         self.threshold)
        return (grad * d).astype(grad.dtype, copy=False)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(max_value=self.max_value, negative_slope=self.negative_slope,
                   threshold=self.threshold)
        return cfg


class Softmax(Layer):
    """Softmax along ``axis`` (default last)."""

    def __init__(self, axis: int = -1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"axis must be an int, received axis={axis!r}")
        self.axis = int(axis)
        self.activation = _activations.Softmax(self.axis)

    def forward(self, x, training=False):
        self._y = self.activation.forward(x)
        return self._y

    def backward(self, grad):
        return self.activation.backward(grad, None, self._y)

    def get_config(self):
        cfg = super().get_config()
        cfg["axis"] = self.axis
        return cfg


def _data_format(data_format: Optional[str]) -> str:
    df = "channels_last" if data_format is None else data_format
    if df not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format must be 'channels_last' or 'channels_first', received "
                         f"data_format={data_format!r}")
    return df


__all__ = ["InputLayer", "Input", "Dense", "Flatten", "Dropout", "Activation", "ReLU",
           "Softmax", "_sample_shape"]
