"""Convolution and pooling layers on :mod:`fastnn.ops`.

``data_format="channels_last"`` (NHWC, the default and fastnn's native layout) or
``"channels_first"`` (NCHW). Kernels are stored as (KH, KW, C_in, filters) in both cases,
like Keras, so weights move between formats unchanged.
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from .. import _backend, ops
from .. import activations as _activations
from ..ops._geometry import as_pair, conv_geometry
from .base import Layer
from .core import Activation, Dense, ReLU, _cfg, _data_format, _WithActivation

_LAYOUT = {"channels_last": "NHWC", "channels_first": "NCHW"}


def _padding_arg(padding) -> str:
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', received padding={padding!r}")
    return padding.lower()


def _spatial_output(layer_geom_args, input_shape, layout, pooling=False):
    """(OH, OW) for a 4-D input shape via the one geometry helper; an unknown (None)
    height or width gives an unknown output size, as in Keras (the batch and channel
    sizes may be None too)."""
    hw = (1, 2) if layout == "NHWC" else (2, 3)
    unknown = 1 << 20        # stands for a size not known yet: larger than any window
    shp = tuple((unknown if i in hw else 1) if d is None else d
                for i, d in enumerate(input_shape))
    g = conv_geometry(shp, *layer_geom_args, layout=layout, pooling=pooling)
    return (None if input_shape[hw[0]] is None else g.oh,
            None if input_shape[hw[1]] is None else g.ow)


class Conv2D(_WithActivation):
    """2-D convolution: ``y = activation(conv(x, kernel) + bias)``.

    Parameters
    ----------
    filters : int
    kernel_size : int or pair
    strides : int or pair, default 1
    padding : {"valid", "same"}
    data_format : {"channels_last", "channels_first"}, optional
    dilation_rate : int or pair, default 1
    groups : int, default 1
        Keras's grouped convolution: the channels split into ``groups`` equal parts, and
        the filters too; filter group g sees channel group g only (``groups`` = C: one
        filter group per channel). C and ``filters`` must be multiples of it. Each group
        runs as a convolution of its own (and the layer is not fused with a following
        max pooling).
    activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
    bias_regularizer : as for :class:`~fastnn.layers.Dense`

    Shapes
    ------
    x (N, H, W, C) -> y (N, OH, OW, filters) channels_last, or (N, C, H, W) ->
    (N, filters, OH, OW) channels_first; kernel (KH, KW, C / groups, filters); bias
    (filters,).
    """

    _db_in_epilogue = False   # conv2d_backward computes db
    _dy_crop = False          # backward given the gradient of a crop (conv_pool_forward)
    _pool_act = None          # the activation conv_pool_forward's kernels applied

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid",
                 data_format: Optional[str] = None, dilation_rate=(1, 1), groups: int = 1,
                 activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(f"filters must be a positive int, received filters={filters!r}")
        self.filters = int(filters)
        if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)) \
                or groups < 1:
            raise ValueError(f"groups must be a positive int, received groups={groups!r}")
        if self.filters % groups:
            raise ValueError(f"The number of filters must be evenly divisible by the number "
                             f"of groups, received filters={self.filters}, groups={groups}")
        self.groups = int(groups)
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.strides = as_pair(strides, "strides")
        self.dilation_rate = as_pair(dilation_rate, "dilation_rate")
        self.padding = _padding_arg(padding)
        self.data_format = _data_format(data_format)
        self.layout = _LAYOUT[self.data_format]
        self.channel_axis = -1 if self.layout == "NHWC" else 1
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

    def _geom_args(self):
        return (self.kernel_size, self.strides, self.padding, self.dilation_rate)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"Conv2D expects 4-D input (batch, H, W, C) for channels_last or "
                             f"(batch, C, H, W) for channels_first, received input shape "
                             f"{input_shape}")
        channels = input_shape[-1] if self.layout == "NHWC" else input_shape[1]
        if channels is None:
            raise ValueError(f"Conv2D needs inputs with a known channel dimension, received "
                             f"input shape {input_shape}")
        self.in_channels = int(channels)
        if self.in_channels % self.groups:
            raise ValueError(f"The number of input channels must be evenly divisible by the "
                             f"number of groups, received {self.in_channels} channels, "
                             f"groups={self.groups}")
        kh, kw = self.kernel_size
        self.kernel = self.add_weight("kernel", (kh, kw, self.in_channels // self.groups,
                                                 self.filters),
                                      self.kernel_initializer, self.kernel_regularizer)
        self.bias = (self.add_weight("bias", (self.filters,), self.bias_initializer,
                                     self.bias_regularizer) if self.use_bias else None)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        oh, ow = _spatial_output(self._geom_args(), input_shape, self.layout)
        if self.layout == "NHWC":
            return (input_shape[0], oh, ow, self.filters)
        return (input_shape[0], self.filters, oh, ow)

    def _ops_kernel(self):
        # (KH, KW, C, F) -> (F, C, KH, KW) for NCHW; a small copy per call.
        return self.kernel if self.layout == "NHWC" else self.kernel.transpose(3, 2, 0, 1)

    def _channels(self, a, g: int) -> np.ndarray:
        """Channel group ``g`` of an activation ``a`` (a view)."""
        n = a.shape[self.channel_axis] // self.groups
        return a[..., g * n:(g + 1) * n] if self.layout == "NHWC" else a[:, g * n:(g + 1) * n]

    def _group_kernel(self, kernel, g: int) -> np.ndarray:
        """Filter group ``g``'s part of the ops-layout kernel (filters last for NHWC, first
        for NCHW) or of a bias (1-D): a view."""
        n = self.filters // self.groups
        return kernel[..., g * n:(g + 1) * n] if self.layout == "NHWC" or kernel.ndim == 1 \
            else kernel[g * n:(g + 1) * n]

    def _linear(self, x, act):
        self._dy_crop = False   # the full output: conv_pool_forward computes a crop
        out = (self._buffer("y", self.compute_output_shape(x.shape), x.dtype)
               if getattr(self, "_training", False) else None)
        geo = dict(stride=self.strides, padding=self.padding, dilation=self.dilation_rate,
                   layout=self.layout, activation=None if act == "identity" else act)
        if self.groups == 1:
            return ops.conv2d_forward(x, self._ops_kernel(), self.bias, out=out, **geo)
        if out is None:
            out = np.empty(self.compute_output_shape(x.shape), x.dtype)
        kernel = self._ops_kernel()
        for g in range(self.groups):   # each filter group on its channel group
            bias = None if self.bias is None else self._group_kernel(self.bias, g)
            self._channels(out, g)[...] = ops.conv2d_forward(
                self._channels(x, g), self._group_kernel(kernel, g), bias, **geo)
        return out

    def _linear_backward(self, dz, db, pool=None):
        """dz: the gradient of the output (or of its crop, ``_dy_crop``); with ``pool`` (the
        MaxPooling2D run with it by :func:`conv_pool_forward`), the pooled gradient: of the
        relu output, relu's derivative not yet applied, else of the pooled linear output
        (:func:`conv_pool_backward`)."""
        kernel = self._ops_kernel()
        # NHWC gradients land straight in grads; NCHW's dw is (F, C, KH, KW), copied below
        dw_out = self.grads["kernel"] if self.layout == "NHWC" else None
        # the bias gradient: from conv2d_backward, unless the caller has it (db)
        need_db = self.bias is not None and db is None
        if self.bias is not None and db is not None:
            self.grads["bias"][...] = db
        dx_out = (self._buffer("dx", self._x.shape, self._x.dtype)
                  if self.need_input_grad else None)
        geo = dict(stride=self.strides, padding=self.padding, dilation=self.dilation_rate,
                   layout=self.layout)
        out = (dx_out, dw_out, self.grads["bias"] if need_db else None)
        if self.groups > 1:     # (never fused with a pooling: conv_pool_fusable)
            if dw_out is None:  # NCHW: the groups' (F / groups, C / groups, KH, KW) parts
                dw_out = self._buffer("dw", kernel.shape, kernel.dtype)
            dx, dw = self._grouped_backward(dz, kernel, need_db, (dx_out, dw_out, out[2]),
                                            geo)
        elif pool is None:
            dx, dw, _ = ops.conv2d_backward(dz, self._x, kernel, need_dx=self.need_input_grad,
                                            need_db=need_db, crop=self._dy_crop, out=out,
                                            **geo)
        else:   # argmax from the pair's own forward: no range scan
            dx, dw, _ = ops._conv2d_maxpool_backward(
                dz, pool._argmax, self._x, kernel, geo["stride"], geo["padding"],
                geo["dilation"], geo["layout"], self._dy_crop, self.need_input_grad, need_db,
                out, check_range=False, dz_buffer=functools.partial(pool._buffer, "dx"),
                relu_y=pool._y if self._pool_act == "relu" else None,
                relu_buffer=functools.partial(pool._buffer, "relu_grad"))
        if self.layout == "NCHW":
            self.grads["kernel"][...] = dw.transpose(2, 3, 1, 0)
        self._add_regularization_grads()
        return dx

    def _grouped_backward(self, dz, kernel, need_db: bool, out, geo):
        """conv2d_backward per filter group, each from the group's slice of dz, into its
        parts of ``out`` = (dx or None, dw in the ops' kernel layout, db or None); returns
        (dx, dw)."""
        dx_out, dw_out, db_out = out
        for g in range(self.groups):
            dxg, dwg, dbg = ops.conv2d_backward(
                self._channels(dz, g), self._channels(self._x, g),
                self._group_kernel(kernel, g), need_dx=dx_out is not None, need_db=need_db,
                **geo)
            if dx_out is not None:
                self._channels(dx_out, g)[...] = dxg
            self._group_kernel(dw_out, g)[...] = dwg
            if need_db:
                self._group_kernel(db_out, g)[...] = dbg
        return dx_out, dw_out

    def get_config(self):
        cfg = super().get_config()
        cfg.update(filters=self.filters, kernel_size=list(self.kernel_size),
                   strides=list(self.strides), padding=self.padding,
                   data_format=self.data_format, dilation_rate=list(self.dilation_rate),
                   use_bias=self.use_bias, groups=self.groups,
                   kernel_initializer=_cfg(self.kernel_initializer),
                   bias_initializer=_cfg(self.bias_initializer),
                   kernel_regularizer=_cfg(self.kernel_regularizer),
                   bias_regularizer=_cfg(self.bias_regularizer))
        return cfg


class _Pooling2D(Layer):
    def __init__(self, pool_size=(2, 2), strides=None, padding: str = "valid",
                 data_format: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = as_pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else as_pair(strides, "strides")
        self.padding = _padding_arg(padding)
        self.data_format = _data_format(data_format)
        self.layout = _LAYOUT[self.data_format]

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"{type(self).__name__} expects 4-D input, received input shape "
                             f"{input_shape}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        oh, ow = _spatial_output((self.pool_size, self.strides, self.padding, 1),
                                 input_shape, self.layout, pooling=True)
        if self.layout == "NHWC":
            return (input_shape[0], oh, ow, input_shape[3])
        return (input_shape[0], input_shape[1], oh, ow)

    def _kw(self):
        return dict(stride=self.strides, padding=self.padding, layout=self.layout)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(pool_size=list(self.pool_size), strides=list(self.strides),
                   padding=self.padding, data_format=self.data_format)
        return cfg


class MaxPooling2D(_Pooling2D):
    """2-D max pooling; the gradient goes to each window's maximum (first on ties).

    Shapes: (N, H, W, C) -> (N, OH, OW, C) channels_last; (N, C, H, W) -> (N, C, OH, OW).
    """

    _act_after = None   # the activation layer act_pool_forward ran after this pooling
    _bn_before = None   # the BatchNormalization bn_pool_forward ran this pooling with

    def forward(self, x, training=False):
        self._check_input(x)
        x = self._unaliased(x)     # (its own training output fed back in: see Layer)
        self._xshape = x.shape
        self._act_after = self._bn_before = None
        out = None
        if training:
            shape = self.compute_output_shape(x.shape)
            out = (self._buffer("y", shape, x.dtype), self._buffer("argmax", shape, np.int64))
        y, self._argmax = ops.maxpool2d_forward(x, self.pool_size, **self._kw(), out=out)
        self._y = y
        return y

    def backward(self, grad):
        kw = self._kw()   # argmax from this layer's forward: no range scan
        if self._argmax.dtype == np.uint8:  # window positions (conv_pool_forward)
            self._argmax = ops._flat_argmax(self._argmax, *self._xshape[1:3], self.layout)
        return ops._maxpool2d_backward(grad, self._argmax, self._xshape, self.pool_size,
                                       kw["stride"], kw["padding"], kw["layout"],
                                       self._buffer("dx", self._xshape, grad.dtype),
                                       check_range=False)

    def backward_through_relu(self, grad, need_db: bool = False):
        """Backward through this pooling and the relu before it, when this layer's input
        was a relu output: ``(dz, db)``, the gradient with respect to the relu's *input*
        and, if ``need_db``, its sum over all but the channel axis (the bias gradient of
        the layer before; else None).

        Relu and max pooling commute: each pooled value is the relu output at its window's
        maximum, so relu's derivative (``y > 0``) applied to the pooled gradient before the
        scatter equals applying it to the scattered gradient, on a pool-size fraction of the
        elements; the scatter keeps sums, so the bias gradient is summed there too. The
        layer before then skips its own relu backward and bias sum
        (:meth:`~fastnn.layers.core._WithActivation.backward_logits`); Sequential pairs them.
        """
        masked, db = self._relu_grad(grad, need_db)
        return self.backward(masked), db

    def _relu_grad(self, grad, need_db: bool):
        """``(grad * (y > 0), its bias sum or None)`` on this layer's output y: relu's
        derivative taken on the pooled gradient (:meth:`backward_through_relu`)."""
        axis = -1 if self.layout == "NHWC" else 1
        return ops.bias_act_backward(grad, self._y, "relu", channel_axis=axis,
                                     need_db=need_db,
                                     out=self._buffer("relu_grad", grad.shape, grad.dtype))


def conv_pool_fusable(conv, pool) -> bool:
    """Can ``conv`` and the layer ``pool`` after it run as one (:func:`conv_pool_forward`)?
    A Conv2D ending in a non-decreasing activation (relu, linear, sigmoid, tanh, elu, ...:
    :func:`fastnn.activations.nondecreasing`) and a 2x2 MaxPooling2D with stride 2 and no
    padding, both channels_last (the pair whose backward Sequential fuses too); not
    subclasses, whose own forward the fused call would skip."""
    return (type(conv) is Conv2D and _activations.nondecreasing(conv.activation)
            and conv.layout == "NHWC" and conv.groups == 1
            and type(pool) is MaxPooling2D and pool.pool_size == (2, 2)
            and pool.strides == (2, 2) and pool.padding == "valid" and pool.layout == "NHWC")


def conv_pool_forward(conv, pool, x, training=False, kernel_act=None):
    """Forward through ``conv`` and the 2x2 ``pool`` after it (:func:`conv_pool_fusable`) in
    one call, :func:`fastnn.ops.conv2d_maxpool_forward`: the convolution's output (the
    largest activation) is never written. Relu and linear run in the fused kernels: the
    chain's output bit for bit. Another activation f, non-decreasing, commutes with the
    maximum: the pair pools the pre-activations and applies f to the pooled ones only, a
    quarter of the elements (the chain's values wherever f's implementation is monotone
    to the last bit; a window whose f values tie, as where f saturates, sends the
    gradient to its largest pre-activation, the chain's to its first tie). Each layer
    keeps what the pair's backward needs (Sequential's ``_relu_pool_backward``): ``conv``
    its input, ``pool`` its output, argmax and (for f) pooled pre-activations; ``conv``
    keeps no output of its own, so its own :meth:`backward` is not available after this
    call. ``kernel_act="relu"`` (:func:`conv_act_pool_forward`, for a linear ``conv``)
    applies relu in the kernels instead of conv's activation. When the convolution's output has
    an odd height or width, its last row or column is read by no window: the pair is
    convolved, pooled and differentiated on the rest (``crop`` of the ops), so ``pool``'s
    backward gives the gradient of that crop, which ``conv``'s :meth:`backward_logits`
    takes.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), conv's input

    Returns
    -------
    y : ndarray, shape (N, OH // 2, OW // 2, filters), pool's output
    """
    conv._check_input(x)
    conv._x, conv._training, conv._z, conv._y = x, training, None, None
    conv_shape = conv.compute_output_shape(x.shape)
    pool._check_input_shape(conv_shape)
    n, oh, ow, f = conv_shape
    conv._dy_crop = True
    pool._xshape = (n, oh // 2 * 2, ow // 2 * 2, f)
    window = pair_argmax_format() == "window"
    # relu, identity, or None: f after the pooling; relu from conv_act_pool_forward
    kernel_act = conv._pool_act = kernel_act or conv._act_kernel
    out = None
    if training:
        shape = pool.compute_output_shape(conv_shape)
        out = (pool._buffer("y" if kernel_act else "z", shape, x.dtype),
               pool._buffer("argmax", shape, np.uint8 if window else np.int64))
    z, pool._argmax = ops.conv2d_maxpool_forward(
        x, conv._ops_kernel(), conv.bias, stride=conv.strides, padding=conv.padding,
        dilation=conv.dilation_rate, layout="NHWC", activation=kernel_act or "identity",
        crop=True, out=out, argmax_format="window" if window else "flat")
    pool._z = None if kernel_act else z
    pool._y = z if kernel_act else conv.activation.forward(z)
    return pool._y


def conv_act_pool_forward(conv, act, pool, x, training=False):
    """``pool(act(conv(x)))`` for a Conv2D and a MaxPooling2D that
    :func:`conv_pool_fusable` accepts with an activation layer between them that
    :func:`act_pool_pairable` accepts (Keras's ``Conv2D(f, k)``, ``Activation("relu")``,
    ``MaxPooling2D()``): :func:`conv_pool_forward`, then ``act`` on the pooled values
    (:func:`act_pool_forward`'s order), or, for a plain relu after a linear ``conv``, the
    kernels of the pair ``Conv2D(activation="relu")`` - ``MaxPooling2D`` (relu inside
    them, forward and backward); the convolution's output is never written; the
    same values as the chain wherever f's implementation is monotone to the last bit (see
    :func:`act_pool_forward`). :func:`conv_act_pool_backward` is its backward.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), conv's input

    Returns
    -------
    y : ndarray, shape (N, OH // 2, OW // 2, filters), act's output
    """
    if _plain_relu(act) and conv._act_kernel == "identity":
        # the pair Conv2D(activation="relu") - MaxPooling2D's kernels, relu inside them
        pool._act_after = None
        return conv_pool_forward(conv, pool, x, training=training, kernel_act="relu")
    y = conv_pool_forward(conv, pool, x, training=training)
    pool._act_after = act
    return act.forward(y, training=training)


def _plain_relu(act) -> bool:
    """Is the activation layer ``act`` exactly relu (the kernels' relu)?"""
    if type(act) is ReLU:
        return act._plain
    return type(act) is Activation and type(act.activation) is _activations.ReLU


def linear_act_fusable(layer, act) -> bool:
    """Can the activation layer ``act`` right after ``layer`` run inside it
    (:func:`linear_act_forward`)? A Dense or Conv2D (exact classes) without an activation
    of its own and an exact relu layer (``Activation("relu")``, a plain ``ReLU()``)."""
    return type(layer) in (Dense, Conv2D) and layer._act_kernel == "identity" and \
        _plain_relu(act)


def linear_act_forward(layer, act, x, training=False):
    """``act(layer(x))`` for a pair :func:`linear_act_fusable` accepts (Keras's
    ``Conv2D(f, k)`` - ``Activation("relu")``), as ``activation="relu"`` computes it: relu
    in the layer's bias + activation kernel, its output written once, the same bits as the
    chain. Where the pair no longer qualifies (an activation set since), the chain.
    :func:`linear_act_backward` is its backward.

    Parameters
    ----------
    x : ndarray, layer's input

    Returns
    -------
    y : ndarray, act's output (layer's output shape)
    """
    if not linear_act_fusable(layer, act):
        act._in_layer = None
        return act.forward(layer.forward(x, training=training), training=training)
    layer._act_kernel = "relu"
    try:
        y = layer.forward(x, training=training)
    finally:
        layer._act_kernel = "identity"
    act._in_layer = layer
    return y


def linear_act_backward(layer, act, grad):
    """Backward of :func:`linear_act_forward` from the gradient of act's output: the
    layer's backward through its fused relu (relu's derivative on its output, in the bias
    + activation kernel), or the two layers' own where they ran one by one."""
    if getattr(act, "_in_layer", None) is not layer:
        return layer.backward(act.backward(grad))
    layer._act_kernel = "relu"
    try:
        return layer.backward(grad)
    finally:
        layer._act_kernel = "identity"


def conv_act_pool_backward(conv, act, pool, grad):
    """Backward of :func:`conv_act_pool_forward` from the pooled gradient: ``act``'s
    derivative on it, then :func:`conv_pool_backward`; the layers' own calls where they
    ran one by one since. Returns the gradient with respect to conv's input, or None."""
    if conv._dy_crop:   # (conv_pool_forward ran; conv is a Conv2D: conv_pool_fusable)
        if conv._pool_act == "relu" and conv._act_kernel == "identity":
            return conv_pool_backward(conv, pool, grad)   # relu ran in the pair's kernels
        if pool._act_after is act:
            return conv_pool_backward(conv, pool, act.backward(grad))
    return conv.backward(act_pool_backward(act, pool, grad))


def pair_argmax_format() -> str:
    """The ``argmax_format`` of :func:`conv_pool_forward`'s call: ``"window"`` (one byte per
    pooled element, an eighth of int64's memory traffic, for the step's largest arrays)
    where the active backend's kernels read window positions (the C backend's
    ``CONV_POOL_POSITIONS``), else ``"flat"`` (the others would convert)."""
    return "window" if getattr(_backend.get(), "CONV_POOL_POSITIONS", False) else "flat"


def conv_pool_backward(conv, pool, grad):
    """Backward of :func:`conv_pool_forward`: the activation's derivative applied to the
    pooled gradient and the bias gradient summed there (as
    :meth:`MaxPooling2D.backward_through_relu`), the weight gradient and, if ``conv``
    needs one, the input gradient straight from the pooled gradient and argmax
    (:func:`fastnn.ops.conv2d_maxpool_backward`), the convolution's own gradient never
    formed. Relu's derivative is taken as the kernels read the gradient (the C backend:
    the same bits as the two steps, without the masked gradient's pass over memory);
    another activation's by its backward on the pooled arrays first. Returns the input
    gradient, or None."""
    if pool._z is not None:
        grad = conv.activation.backward(grad, pool._z, pool._y)
    return conv._linear_backward(grad, None, pool)


def act_pool_pairable(act, pool) -> bool:
    """Can the activation layer ``act`` and the MaxPooling2D ``pool`` after it run in the
    other order (:func:`act_pool_forward`)? An :class:`~fastnn.layers.Activation` of a
    non-decreasing function (:func:`fastnn.activations.nondecreasing`) or a
    :class:`~fastnn.layers.ReLU` whose threshold is >= 0 (then non-decreasing too), and
    a MaxPooling2D of any size, strides and padding; exact classes, not subclasses."""
    if type(pool) is not MaxPooling2D:
        return False
    if type(act) is ReLU:
        return act.threshold >= 0
    return type(act) is Activation and _activations.nondecreasing(act.activation)


def act_pool_forward(act, pool, x, training=False):
    """``pool(act(x))`` for a pair :func:`act_pool_pairable` accepts, computed as
    ``act(pool(x))``: the activation f is non-decreasing, so each window's maximum of f is
    f of its maximum, and f (forward, then backward) runs on the pooled elements only, a
    pool-size fraction (the same values wherever f's implementation is monotone to the
    last bit; where a window's f values tie, as where f saturates, the gradient goes to
    its largest input, the chain's to its first tie). Each layer keeps what
    :func:`act_pool_backward` needs.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C) (channels_last) or (N, C, H, W), act's input

    Returns
    -------
    y : ndarray, pool's output shape
    """
    y = act.forward(pool.forward(x, training=training), training=training)
    pool._act_after = act
    return y


def act_pool_backward(act, pool, grad):
    """Backward of the pair ``act`` - ``pool`` from the pooled gradient: in the order
    :func:`act_pool_forward` ran them (f's derivative on the pooled gradient, then the
    scatter), else in the chain's."""
    if pool._act_after is act:
        return pool.backward(act.backward(grad))
    return act.backward(pool.backward(grad))


class AveragePooling2D(_Pooling2D):
    """2-D average pooling over the in-bounds elements of each window (Keras semantics)."""

    def forward(self, x, training=False):
        self._check_input(x)
        x = self._unaliased(x)
        self._xshape = x.shape
        out = (self._buffer("y", self.compute_output_shape(x.shape), x.dtype)
               if training else None)
        return ops.avgpool2d_forward(x, self.pool_size, **self._kw(), out=out)

    def backward(self, grad):
        return ops.avgpool2d_backward(grad, self._xshape, self.pool_size, **self._kw(),
                                      out=self._buffer("dx", self._xshape, grad.dtype))


class _GlobalPooling2D(Layer):
    """Base of the global poolings: a reduction over the spatial axes, (N, H, W, C) ->
    (N, C), or (N, 1, 1, C) with ``keepdims=True``; channels_first likewise.

    Parameters
    ----------
    data_format : {None, "channels_last", "channels_first"}
    keepdims : bool, default False
    **kwargs
        :class:`~fastnn.layers.Layer`'s.
    """

    def __init__(self, data_format: Optional[str] = None, keepdims: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = _data_format(data_format)
        self.keepdims = bool(keepdims)
        self._axes = (1, 2) if self.data_format == "channels_last" else (2, 3)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"{type(self).__name__} expects 4-D input, received input shape "
                             f"{input_shape}")
        if self.keepdims:
            return tuple(1 if i in self._axes else d for i, d in enumerate(input_shape))
        return tuple(d for i, d in enumerate(input_shape) if i not in self._axes)

    def _spatial(self, a: np.ndarray) -> np.ndarray:
        """An output-shaped array with the spatial axes back (size 1), to broadcast."""
        return a if self.keepdims else np.expand_dims(a, self._axes)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(data_format=self.data_format, keepdims=self.keepdims)
        return cfg


class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over the spatial axes (see ``_GlobalPooling2D`` for the shapes and
    arguments), as Keras's GlobalAveragePooling2D."""

    def forward(self, x, training=False):
        self._check_input(x)
        self._xshape = x.shape
        return x.mean(axis=self._axes, keepdims=self.keepdims)

    def backward(self, grad):
        n = self._xshape[self._axes[0]] * self._xshape[self._axes[1]]
        return np.broadcast_to(self._spatial(grad) / n, self._xshape).astype(grad.dtype,
                                                                              copy=True)


class GlobalMaxPooling2D(_GlobalPooling2D):
    """Maximum over the spatial axes (see ``_GlobalPooling2D`` for the shapes and
    arguments), as Keras's GlobalMaxPooling2D. NaN propagates. The gradient goes to the
    positions holding the maximum, shared equally among ties, as TensorFlow's
    ``reduce_max`` gives it (a channel whose maximum is NaN gets NaN everywhere, as
    there)."""

    def forward(self, x, training=False):
        self._check_input(x)
        self._x = x
        self._y = x.max(axis=self._axes, keepdims=True)
        return self._y if self.keepdims else np.squeeze(self._y, self._axes)

    def backward(self, grad):
        hit = self._x == self._y                          # (NaN == NaN is False)
        count = hit.sum(axis=self._axes, keepdims=True).astype(grad.dtype)
        with np.errstate(invalid="ignore", divide="ignore"):   # NaN where count is 0
            share = np.reciprocal(count) * self._spatial(grad)  # TensorFlow's (1 / n) * g
            return hit * share
