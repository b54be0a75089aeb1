"""fastnn.ops: the public kernel API.

Every function validates its arguments here, in Python, then runs on the active backend
(``fastnn.set_backend`` / ``fastnn.use_backend``): C, Numba or the NumPy reference. The
names and signatures are stable; other from-scratch trainers call them.

Conventions
-----------
* Arrays are float32 or float64; all float arguments of one call must share a dtype
  (fastnn never promotes float32 to float64 silently: a mix raises TypeError).
* Non-contiguous or negatively strided inputs are copied, never misread.
* ``layout="NHWC"`` (channels last, Keras, the native layout) or ``"NCHW"`` (PyTorch).
  Convolution weights are (KH, KW, C, F) for NHWC and (F, C, KH, KW) for NCHW.
* ``kernel_size``, ``pool_size``, ``stride``, ``dilation``: an int or a pair.
  ``padding``: "valid", "same" (TensorFlow/Keras: the smaller half of an odd total
  before), an int, a pair (rows, cols) or ((top, bottom), (left, right)).
* An empty batch (N = 0) returns empty results.
"""
from __future__ import annotations

import math
import sys
from typing import Optional, Tuple

import numpy as np

from .. import _backend
from ..utils._arrays import MIN_BYTES as ALIGN_MIN_BYTES, empty_aligned
from . import _checks
from ._checks import float_array, layout_arg, same_dtype
from ._geometry import ConvGeometry, as_pair, windows_in_image
from ._geometry import conv_geometry as _conv_geometry

__all__ = [
    "matmul", "im2col", "col2im", "conv2d_forward", "conv2d_backward",
    "conv2d_maxpool_forward", "conv2d_maxpool_backward",
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "bias_act", "bias_act_backward", "relu_mask", "relu_mask_backward",
    "batchnorm_stats", "batchnorm_forward", "batchnorm_backward",
    "batchnorm_maxpool_forward", "batchnorm_maxpool_backward",
    "activation", "activation_backward", "dropout", "dropout_mask",
    "softmax_cross_entropy", "adam_update", "conv_geometry", "ConvGeometry",
    "set_workspace_limit", "get_workspace_limit",
]

_ACTIVATIONS = {"identity": "identity", "linear": "identity", "relu": "relu"}
_workspace_limit = [64 * 1024 * 1024]


def set_workspace_limit(nbytes: int) -> None:
    """Cap the bytes of column workspace a convolution may use (default 64 MiB).

    The batch is lowered to columns in chunks of as many images as fit (at least one).
    (The C backend's NHWC forward on AVX2 CPUs builds no column matrix, "implicit im2col":
    its chunks bound the zero-padded copy of x it makes when there is padding.) The chunks
    set the order in which the backward's dW sums the images, so dW's last bits depend on
    the limit. The limit is the process's, not the calling thread's.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"nbytes must be a positive int, received {nbytes!r}")
    if nbytes < 1:
        raise ValueError(f"nbytes must be a positive int, received {nbytes!r}")
    _workspace_limit[0] = int(nbytes)


def get_workspace_limit() -> int:
    """The column workspace cap in bytes (see :func:`set_workspace_limit`)."""
    return _workspace_limit[0]


def _chunk(g: ConvGeometry, itemsize: int, buffers: int = 1) -> int:
    per_image = max(1, g.oh * g.ow * g.patch * itemsize * buffers)
    return int(max(1, min(g.n, _workspace_limit[0] // per_image)))


def _activation(activation) -> str:
    key = "identity" if activation is None else activation
    if not isinstance(key, str):
        raise TypeError(f"activation must be one of None, 'identity', 'linear', 'relu', "
                        f"received {activation!r}")
    if key.lower() not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of None, 'identity', 'linear', 'relu', "
                         f"received {activation!r}")
    return _ACTIVATIONS[key.lower()]


# --------------------------------------------------------------------------- GEMM
_NDARRAY = np.ndarray
_F32, _F64 = _checks.FLOAT_DTYPES


def matmul(a, b, *, trans_a: bool = False, trans_b: bool = False, alpha: float = 1.0,
           beta: float = 0.0, out: Optional[np.ndarray] = None) -> np.ndarray:
    """General matrix multiply: ``alpha * op(a) @ op(b) + beta * out``.

    Parameters
    ----------
    a : ndarray, shape (M, K), or (K, M) if ``trans_a``
    b : ndarray, shape (K, N), or (N, K) if ``trans_b``
    trans_a, trans_b : bool
        Use the transpose of ``a`` / ``b`` (no copy is made). A transposed view such as
        ``W.T`` (F-contiguous) is not copied either: ``matmul(d, W.T)`` runs as
        ``matmul(d, W, trans_b=True)``. Other non-contiguous views are copied.
    alpha, beta : float
    out : ndarray, shape (M, N), optional
        Written in place and returned (an F-contiguous ``out`` directly, any other
        non-contiguous one through a copy). With ``beta != 0`` the product accumulates into
        it; with ``beta == 0`` its old contents are ignored (BLAS semantics). ``beta`` is
        taken in the arrays' dtype: one that rounds to 0 there (below about 7e-46 in
        float32) is 0. ``out`` may be ``a`` or ``b`` (the input is copied first).
        Unlike BLAS, ``alpha == 0`` still reads ``a`` and ``b``: NaN there propagates.

    Returns
    -------
    ndarray, shape (M, N), the dtype of ``a`` and ``b``.
    """
    # A plain call (ndarrays, bool flags, float alpha, beta 0) first goes to the C
    # backend's gemm_fast, which checks the rest on its way to C and declines anything the
    # checks below would change (copy, transpose, refuse) or have to explain: on a
    # 128 x 128 x 10 float product every Python step costs a percent or two of the call.
    be = _backend.get()
    if (be.gemm_fast is not None and type(a) is _NDARRAY and type(b) is _NDARRAY
            and (trans_a is False or trans_a is True) and (trans_b is False or trans_b is True)
            and type(alpha) is float and type(beta) is float and beta == 0.0):
        c = be.gemm_fast(trans_a, trans_b, alpha, a, b, out)
        if c is not None:
            return c
    # The common call, two C-contiguous 2-D arrays of one float dtype, passes on identity
    # tests alone (the general checks below give the same verdict on it, slower).
    if type(trans_a) is not bool:
        trans_a = _checks.flag(trans_a, "trans_a")
    if type(trans_b) is not bool:
        trans_b = _checks.flag(trans_b, "trans_b")
    given = trans_a, trans_b  # for messages: the flags as passed
    dtype = a.dtype if type(a) is _NDARRAY else None
    if not ((dtype is _F32 or dtype is _F64) and type(b) is _NDARRAY and b.dtype is dtype
            and a.ndim == 2 and b.ndim == 2 and a.flags.carray
            and b.flags.carray):   # (C-contiguous, aligned, writeable; else the checks below)
        # A transposed view (F-contiguous, as ``W.T``) is read as the C-contiguous array it
        # views, with the transpose flag flipped: no copy.
        if isinstance(a, _NDARRAY) and a.ndim == 2 and a.T.flags.c_contiguous:
            a, trans_a = a.T, not trans_a
        if isinstance(b, _NDARRAY) and b.ndim == 2 and b.T.flags.c_contiguous:
            b, trans_b = b.T, not trans_b
        a = float_array(a, "a", 2)
        b = float_array(b, "b", 2)
        dtype = a.dtype if b.dtype == a.dtype else same_dtype([a, b], ["a", "b"])  # raises
    if type(alpha) is not float:
        alpha = _checks.scalar(alpha, "alpha")
    if type(beta) is not float:
        beta = _checks.scalar(beta, "beta")
    if beta != 0.0 and dtype.type(beta) == 0:
        beta = 0.0      # the kernels take beta in the arrays' dtype: there it is 0
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    k2, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != k2:
        raise ValueError(f"inner dimensions differ: op(a) has shape {(m, k)} and op(b) has "
                         f"shape {(k2, n)} (trans_a={given[0]}, trans_b={given[1]})")
    if out is None:
        c = _new((m, n), dtype, "the result", zeros=beta != 0.0)
        target = c
    else:
        if type(out) is not np.ndarray:
            raise TypeError(f"out must be a numpy array (a plain numpy.ndarray: not a "
                            f"subclass such as np.matrix), received {type(out).__name__}")
        if out.dtype != dtype:
            raise TypeError(f"out has dtype {out.dtype} but a and b have {dtype}")
        if out.shape != (m, n):
            _checks.expect_shape(out, (m, n), "out", "op(a).shape[0], op(b).shape[1]")
        flags = out.flags
        if not flags.writeable:
            raise ValueError("out must be writeable, received a read-only array")
        target = c = out
        if not (flags.c_contiguous and flags.aligned):
            if flags.f_contiguous and flags.aligned:
                # a transposed view: out.T = op(b).T @ op(a).T in place
                c = target = out.T
                a, b, trans_a, trans_b = b, a, not trans_b, not trans_a
            else:
                c = np.array(out, order="C")  # written back at the end
        # The kernels read a and b while writing c: an input overlapping out is copied.
        # (Two distinct arrays that each own their data cannot overlap: the common case
        # skips the bounds checks, a few hundred ns of a small product.)
        owns = flags.owndata
        if a is out or not (owns and a.flags.owndata) and np.may_share_memory(a, out):
            a = a.copy()
        if b is out or not (owns and b.flags.owndata) and np.may_share_memory(b, out):
            b = b.copy()
    if m and n and k:  # (the backends read trans_a and trans_b as truth values)
        be.gemm(trans_a, trans_b, alpha, a, b, beta, c)
    elif m == 0 or n == 0:
        return c if out is None else out
    elif beta == 0.0:
        c[...] = 0
    else:
        c *= beta
    if out is None:
        return c
    if c is not target:
        target[...] = c
    return out


# --------------------------------------------------------------------------- im2col
def conv_geometry(x_shape, kernel_size, stride=1, padding=0, dilation=1, *,
                  layout: str = "NHWC", pooling: bool = False) -> ConvGeometry:
    """The :class:`ConvGeometry` (output size, padding per side) that the convolution and
    pooling ops compute for these arguments, checked as they check them.

    Parameters
    ----------
    x_shape : tuple of 4 ints
        Input shape in ``layout``.
    kernel_size, stride, dilation : int or pair of ints, each >= 1
    padding : "valid", "same", int, pair, or ((top, bottom), (left, right))
    layout : {"NHWC", "NCHW"} (any case)
    pooling : bool
        Pooling's rule: explicit padding smaller than the window on every side.
    """
    layout = _checks.layout_arg(layout)
    shp = _checks.shape4(x_shape, "x_shape")
    return _geometry_for(shp, kernel_size, stride, padding, dilation, layout, "x_shape",
                         pooling=_checks.flag(pooling, "pooling"))


def _geometry_for(x_shape, kernel_size, stride, padding, dilation, layout, name="x",
                  pooling=False) -> ConvGeometry:
    _checks.positive_spatial(x_shape, layout, name)
    return _conv_geometry(x_shape, kernel_size, stride, padding, dilation, layout=layout,
                         pooling=pooling)


def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1, layout="NHWC") -> np.ndarray:
    """Lower image patches to the rows of a matrix.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C) for NHWC or (N, C, H, W) for NCHW

    Returns
    -------
    cols : ndarray, shape (N*OH*OW, KH*KW*C)
        Rows over (n, oh, ow); columns over (kh, kw, c) for NHWC and (c, kh, kw) for
        NCHW. Padded positions are zero.

    Raises
    ------
    MemoryError
        If ``cols`` itself does not fit in memory: its size grows with the padding, as
        the output count does (``padding=((0, 2**31 - 1), (0, 0))`` on a 6x7 image with
        3 channels asks for 2.1 TiB). No backend allocates anything for the padding
        beyond ``cols``.
    """
    layout = layout_arg(layout)
    x = float_array(x, "x", 4)
    g = _geometry_for(x.shape, kernel_size, stride, padding, dilation, layout)
    cols = _new((g.rows, g.patch), x.dtype, "the column matrix")
    if g.n:
        _backend.get().im2col(x, g, layout, cols)
    return cols


def col2im(cols, x_shape, kernel_size, *, stride=1, padding=0, dilation=1,
           layout="NHWC") -> np.ndarray:
    """Adjoint of :func:`im2col`: scatter-add columns back into an image tensor.

    Parameters
    ----------
    cols : ndarray, shape (N*OH*OW, KH*KW*C)
    x_shape : tuple of 4 ints, the image shape in ``layout``

    Returns
    -------
    x : ndarray of shape ``x_shape``; overlapping windows accumulate.
    """
    layout = layout_arg(layout)
    cols = float_array(cols, "cols", 2)
    shp = _checks.shape4(x_shape, "x_shape")
    g = _geometry_for(shp, kernel_size, stride, padding, dilation, layout, "x_shape")
    _checks.expect_shape(cols, (g.rows, g.patch), "cols", "N*OH*OW, KH*KW*C")
    x = _new(shp, cols.dtype, "the image batch")
    if g.n:
        _backend.get().col2im(cols, g, layout, x)
    return x


# --------------------------------------------------------------------------- conv
def _conv_args(x, w, layout, stride, padding, dilation):
    layout = layout_arg(layout)
    x = float_array(x, "x", 4)
    w = float_array(w, "w", 4)
    if layout == "NHWC":
        kh, kw, cw, f = w.shape
        c = x.shape[3]
        wdesc = "(KH, KW, C, F)"
    else:
        f, cw, kh, kw = w.shape
        c = x.shape[1]
        wdesc = "(F, C, KH, KW)"
    if min(w.shape) < 1:
        raise ValueError(f"w must have every dimension >= 1, received shape {w.shape}")
    if cw != c:
        raise ValueError(f"w has {cw} input channels (shape {w.shape}, {wdesc}) but x has "
                         f"{c} channels (shape {x.shape}, {layout})")
    g = _geometry_for(x.shape, (kh, kw), stride, padding, dilation, layout)
    return layout, x, w, f, g


def conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, layout="NHWC",
                   activation=None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """2-D convolution (cross-correlation, like Keras and PyTorch) with optional bias
    and fused activation.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C) NHWC or (N, C, H, W) NCHW
    w : ndarray, shape (KH, KW, C, F) NHWC or (F, C, KH, KW) NCHW
    b : ndarray, shape (F,), optional
    activation : None, "identity", "linear" or "relu"
        Applied in the fused epilogue.
    out : ndarray, optional
        C-contiguous array of y's shape and dtype, not overlapping the inputs: written and
        returned (a layer reuses one across steps instead of allocating per batch).

    Returns
    -------
    y : ndarray, shape (N, OH, OW, F) NHWC or (N, F, OH, OW) NCHW

    Notes
    -----
    A padding may exceed the kernel: an output whose window reads only padding is
    ``activation(b)`` (NaN for a filter holding inf or NaN: ``0 * inf``), and only the
    windows that reach the image are computed, over the padding they span, so memory does
    not grow with the padding beyond the output (``padding=2**20`` with
    ``stride=2**31 - 1`` on a 1x1 image is a 1x1 output). :func:`conv2d_backward` and the
    fused ops do likewise.
    """
    layout, x, w, f, g = _conv_args(x, w, layout, stride, padding, dilation)
    act = _activation(activation)
    b, arrays = _bias_arg(b, f, x, w)
    y = _out_array(out, g.y_shape(layout, f), x.dtype, "out", arrays)
    if g.n:
        _conv_forward(_backend.get(), x, w, b, g, layout, act, y)
    return y


def _spatial(layout: str, rows: slice, cols: slice) -> tuple:
    """The index of rows ``rows`` and columns ``cols`` of every image and channel of a
    4-D array in ``layout``."""
    if layout == "NHWC":
        return slice(None), rows, cols
    return slice(None), slice(None), rows, cols


def _conv_forward(backend, x, w, b, g, layout, act, y) -> None:
    """``backend.conv2d_forward`` into ``y``. With a padding at least the kernel's extent
    on some side, only on the windows that reach the image, over the padding they span
    (``_geometry.windows_in_image``): no backend then pads the input in full. The other
    windows read only zeros; their output is ``act(0 + b)``, or NaN for a filter holding
    inf or NaN (``0 * inf``), as their zero columns would give."""
    reach = windows_in_image(g)
    if reach is None:
        backend.conv2d_forward(x, w, b, g, layout, act, y, _chunk(g, x.itemsize))
        return
    nhwc = layout == "NHWC"
    f = w.shape[3] if nhwc else w.shape[0]
    zero = np.zeros(f, x.dtype)      # sum(0 * w) for each filter
    zero[~np.isfinite(w).all(axis=(0, 1, 2) if nhwc else (1, 2, 3))] = np.nan
    fill = np.empty(f, x.dtype)
    backend.bias_act(zero.reshape(1, f, 1), b, act, fill.reshape(1, f, 1))
    y[...] = fill if nhwc else fill[:, None, None]
    gi = reach.g
    if gi is not None:
        xi = np.ascontiguousarray(x[_spatial(layout, slice(reach.r0, None),
                                             slice(reach.c0, None))])
        yi = np.empty(gi.y_shape(layout, f), x.dtype)
        backend.conv2d_forward(xi, w, b, gi, layout, act, yi, _chunk(gi, x.itemsize))
        y[_spatial(layout, slice(reach.oh0, reach.oh1), slice(reach.ow0, reach.ow1))] = yi


def _conv_backward(backend, dy, x, w, g, layout, dx, dw, db, buffers: int) -> None:
    """``backend.conv2d_backward``; with a padding at least the kernel's extent on some
    side, on the windows that reach the image only, as :func:`_conv_forward`. The other
    windows give no gradient to x, their dy to db, and ``0 * dy`` to dw: NaN for a filter
    whose dy holds inf or NaN there (as their zero columns would give)."""
    reach = windows_in_image(g)
    if reach is None:
        backend.conv2d_backward(dy, x, w, g, layout, dx, dw, db,
                                _chunk(g, x.itemsize, buffers))
        return
    nhwc = layout == "NHWC"
    axes = (0, 1, 2) if nhwc else (0, 2, 3)          # all but the filters
    block = _spatial(layout, slice(reach.oh0, reach.oh1), slice(reach.ow0, reach.ow1))
    finite = np.isfinite(dy)
    finite[block] = True
    bad = ~finite.all(axis=axes)                      # filters: inf or NaN outside
    if db is not None:
        db[...] = dy.sum(axis=axes)
    gi = reach.g
    if gi is None:
        dw[...] = 0
        if dx is not None:
            dx[...] = 0
    else:
        inner = _spatial(layout, slice(reach.r0, None), slice(reach.c0, None))
        xi = np.ascontiguousarray(x[inner])
        dxi = dx if dx is None or xi.shape == x.shape else np.empty(xi.shape, x.dtype)
        backend.conv2d_backward(np.ascontiguousarray(dy[block]), xi, w, gi, layout, dxi, dw,
                                None, _chunk(gi, x.itemsize, buffers))
        if dxi is not dx:
            dx[...] = 0
            dx[inner] = dxi
    if nhwc:
        dw[..., bad] = np.nan
    else:
        dw[bad] = np.nan


def _bias_arg(b, f, x, w):
    """b checked (None, or one bias per filter), and the inputs [x, w(, b)] of one dtype."""
    arrays, names = [x, w], ["x", "w"]
    if b is not None:
        b = float_array(b, "b", 1)
        _checks.expect_shape(b, (f,), "b", "one bias per filter")
        arrays.append(b)
        names.append("b")
    same_dtype(arrays, names)
    return b, arrays


def _conv_pool_geometry(g, x, w, f, layout, crop):
    """The convolution's geometry as the 2x2 pooling after it reads it (``crop``: only the
    pixels its windows read, ConvGeometry.oh), and the pooling's geometry."""
    if min(g.oh, g.ow) < 2:
        raise ValueError(f"the convolution's output has spatial size ({g.oh}, {g.ow}) (x "
                         f"{x.shape}, w {w.shape}, {layout}): smaller than the 2x2 pooling "
                         f"window")
    gc = g.with_output(g.oh // 2 * 2, g.ow // 2 * 2) if _checks.flag(crop, "crop") else g
    return gc, _pool_geometry(gc.y_shape(layout, f), 2, None, 0, layout,
                              "the convolution's output")


def conv2d_maxpool_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, layout="NHWC",
                           activation=None, crop: bool = False, out: Optional[tuple] = None,
                           argmax_format: str = "flat") -> Tuple[np.ndarray, np.ndarray]:
    """A convolution followed by 2x2 max pooling (stride 2, no padding), in one call:
    ``maxpool2d_forward(conv2d_forward(x, w, b, ...), 2)``, with the same results bit for
    bit. The C backend fuses them for NHWC on its implicit-im2col path (AVX2): each group
    of output windows is convolved in L1 and pooled there, so the convolution's output is
    never written, and its last row and column, when odd, are never computed (no window
    reads them). Numba fuses them where its convolution is direct (NHWC, a patch of at
    most 32 elements: a first layer), each window's four pixels computed together.
    Elsewhere the two calls run one after the other.

    Parameters
    ----------
    x, w, b, stride, padding, dilation, layout, activation : as for :func:`conv2d_forward`
    crop : bool
        When True, argmax indexes into the top-left (2 * (OH // 2), 2 * (OW // 2)) pixels
        of the convolution's output, the ones the windows read (all of them when OH and OW
        are even): its :func:`maxpool2d_backward` has that shape, and
        :func:`conv2d_backward` takes the result with ``crop=True``, skipping the pixels no
        window reads.
    out : tuple (y, argmax), optional
        Arrays to write the results into (either may be None), C-contiguous, not
        overlapping the inputs; argmax's dtype that of ``argmax_format``.
    argmax_format : {"flat", "window"}
        "flat": argmax as :func:`maxpool2d_forward` gives it (int64). "window": each pooled
        element's position in its 2x2 window, as uint8: 0, 1, 2, 3 for the window's pixel
        (0, 0), (0, 1), (1, 0), (1, 1), an eighth of the memory (the C backend's fused
        kernels write it directly; elsewhere the flat indices are converted).
        :func:`conv2d_maxpool_backward` takes either.

    Returns
    -------
    y : ndarray, shape (N, OH // 2, OW // 2, F) NHWC or (N, F, OH // 2, OW // 2) NCHW, for
        the convolution's output (N, OH, OW, F) or (N, F, OH, OW)
    argmax : ndarray shaped like y
        "flat" (int64): as :func:`maxpool2d_forward` gives: flat indices into each sample
        of the convolution's output, or of its crop (``crop``); the backward is
        :func:`maxpool2d_backward` on that shape. "window" (uint8): window positions.
    """
    layout, x, w, f, g = _conv_args(x, w, layout, stride, padding, dilation)
    act = _activation(activation)
    b, arrays = _bias_arg(b, f, x, w)
    gc, pg = _conv_pool_geometry(g, x, w, f, layout, crop)
    if not isinstance(argmax_format, str):
        raise TypeError(f"argmax_format must be a str, 'flat' or 'window', received "
                        f"{type(argmax_format).__name__}")
    if argmax_format not in ("flat", "window"):
        raise ValueError(f"argmax_format must be 'flat' or 'window', received "
                         f"{argmax_format!r}")
    window = argmax_format == "window"
    y_out, a_out = _out_tuple(out, 2, "out")
    y = _out_array(y_out, pg.y_shape(layout, f), x.dtype, "out[0] (y)", arrays)
    argmax = _out_array(a_out, y.shape, np.uint8 if window else np.int64, "out[1] (argmax)",
                        arrays + [y])
    if g.n:
        backend = _backend.get()
        fused = getattr(backend, "conv2d_maxpool_forward", None)
        # the flat indices, converted after, where the backend does not write positions
        flat = argmax if not window or getattr(backend, "CONV_POOL_POSITIONS", False) \
            else np.empty(y.shape, np.int64)
        # (a pointwise convolution cropped is no longer pointwise to a backend, which then
        # sums its products in another order than conv2d_forward's: not fused)
        pointwise_cropped = gc is not g and g.kh == g.kw == g.sh == g.sw == 1 and not (
            g.pt or g.pb or g.pl or g.pr)
        if fused is None or windows_in_image(gc) is not None or pointwise_cropped or \
                not fused(x, w, b, gc, layout, act, y, flat, _chunk(g, x.itemsize)):
            # conv2d_forward's output (a backend's products may round otherwise for another
            # pixel count), then its crop pooled
            z = np.empty(g.y_shape(layout, f), x.dtype)
            _conv_forward(backend, x, w, b, g, layout, act, z)
            if gc is not g:
                z = np.ascontiguousarray(z[_spatial(layout, slice(0, gc.oh),
                                                    slice(0, gc.ow))])
            if flat.dtype != np.int64:
                flat = np.empty(y.shape, np.int64)
            backend.maxpool2d_forward(z, pg, layout, y, flat)
        if flat is not argmax:
            _window_positions(flat, gc.oh, gc.ow, layout, argmax)
    return y, argmax


def _window_positions(flat, oh: int, ow: int, layout: str, out) -> None:
    """out (uint8) = the window positions (0 .. 3) of the flat argmax (into each sample of
    an (oh, ow) output) of a 2x2 pooling with stride 2: 2 * (row % 2) + column % 2."""
    if layout == "NHWC":        # flat = (row * ow + column) * f + channel
        pix = flat // flat.shape[3]
        row = pix // ow
    else:                       # flat = (channel * oh + row) * ow + column
        pix = flat
        row = pix // ow % oh
    out[...] = 2 * (row % 2) + pix % ow % 2


def _check_positions(pos) -> None:
    """ValueError unless the window positions ``pos`` (uint8) are all 0 .. 3."""
    if pos.size and pos.max() > 3:
        raise ValueError(f"argmax (uint8: window positions) must hold values in [0, 3], "
                         f"received values in [{pos.min()}, {pos.max()}]")


def _flat_argmax(pos, oh: int, ow: int, layout: str) -> np.ndarray:
    """The flat argmax (int64, into each sample of an (oh, ow) output) of window positions
    ``pos`` (uint8, each 0 .. 3, checked: any other would index another window, or outside
    the sample) of a 2x2 pooling with stride 2: the inverse of :func:`_window_positions`."""
    _check_positions(pos)
    k = pos.astype(np.int64)
    if layout == "NHWC":
        _, ph, pw, f = pos.shape
        r = 2 * np.arange(ph).reshape(ph, 1, 1) + (k >> 1)
        c = 2 * np.arange(pw).reshape(pw, 1) + (k & 1)
        return (r * ow + c) * f + np.arange(f)
    _, f, ph, pw = pos.shape
    r = 2 * np.arange(ph).reshape(ph, 1) + (k >> 1)
    c = 2 * np.arange(pw) + (k & 1)
    return (np.arange(f).reshape(f, 1, 1) * oh + r) * ow + c


def conv2d_backward(dy, x, w, *, stride=1, padding=0, dilation=1, layout="NHWC",
                    need_dx: bool = True, need_db: bool = True, crop: bool = False,
                    out: Optional[tuple] = None
                    ) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """Gradients of ``conv2d_forward(x, w, b)`` (without activation) given ``dy``.

    Parameters
    ----------
    dy : ndarray, the output's shape: (N, OH, OW, F) NHWC or (N, F, OH, OW) NCHW
    x, w : as for :func:`conv2d_forward`
    need_dx : bool
        When False, ``dx`` is not computed and None is returned in its place (first layer).
    need_db : bool
        When False, ``db`` is not computed and None is returned in its place (no bias, or a
        bias gradient the caller already has).
    crop : bool
        When True, ``dy`` may cover only the output's top-left (OH', OW') pixels, 1 <= OH'
        <= OH and 1 <= OW' <= OW (as :func:`conv2d_maxpool_forward` with ``crop=True`` and
        :func:`maxpool2d_backward` give it), the others' gradient being zero: the results
        of ``dy`` padded with zeros at the bottom and right, without the work on those
        pixels. Their products with x are then not formed, so a NaN or inf in x that only
        they read leaves dw finite (with the padded dy, 0 * inf would make it NaN).
    out : tuple (dx, dw, db), optional
        Arrays to write the results into (each may be None: allocated); as for
        :func:`conv2d_forward`'s ``out``.

    Returns
    -------
    dx : ndarray shaped like x, or None
    dw : ndarray shaped like w
    db : ndarray, shape (F,), or None
    """
    layout, x, w, f, g = _conv_args(x, w, layout, stride, padding, dilation)
    dy = float_array(dy, "dy", 4)
    same_dtype([x, w, dy], ["x", "w", "dy"])
    if _checks.flag(crop, "crop"):
        oh, ow = dy.shape[1:3] if layout == "NHWC" else dy.shape[2:]
        if not (1 <= oh <= g.oh and 1 <= ow <= g.ow):
            raise ValueError(f"dy has spatial size ({oh}, {ow}) (shape {dy.shape}, {layout}); "
                             f"with crop=True expected 1 to ({g.oh}, {g.ow}), the "
                             f"convolution's output size")
        g = g.with_output(oh, ow)   # the pixels computed
    _checks.expect_shape(dy, g.y_shape(layout, f), "dy", f"the conv output shape, {layout}")
    dx, dw, db = _conv_grads(out, x, w, f, need_dx, need_db, (dy, x, w))
    if g.n:
        _conv_backward(_backend.get(), dy, x, w, g, layout, dx, dw, db, 2 if need_dx else 1)
    return dx, dw, db


def _conv_grads(out, x, w, f, need_dx, need_db, inputs):
    """A convolution's (dx, dw, db) arrays from ``out`` (None: allocated; dx, db None when
    not needed); for an empty batch, dw and db are zero."""
    need_dx, need_db = _checks.flag(need_dx, "need_dx"), _checks.flag(need_db, "need_db")
    dx_out, dw_out, db_out = _out_tuple(out, 3, "out")
    dw = _out_array(dw_out, w.shape, x.dtype, "out[1] (dw)", inputs)
    db = _out_array(db_out, (f,), x.dtype, "out[2] (db)", inputs + (dw,)) if need_db else None
    dx = (_out_array(dx_out, x.shape, x.dtype, "out[0] (dx)", inputs + (dw, db)) if need_dx
          else None)
    if x.shape[0] == 0:
        dw[...] = 0
        if db is not None:
            db[...] = 0
    return dx, dw, db


def conv2d_maxpool_backward(dy, argmax, x, w, *, stride=1, padding=0, dilation=1,
                            layout="NHWC", crop: bool = False, need_dx: bool = True,
                            need_db: bool = True, out: Optional[tuple] = None
                            ) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """Gradients of :func:`conv2d_maxpool_forward` (without activation: apply its
    derivative to ``dy`` first, e.g. :func:`bias_act_backward` with the pooled output)
    given the pooled gradient: ``conv2d_backward(maxpool2d_backward(dy, argmax, ...), x, w,
    ...)``, equal up to rounding. The C backend (NHWC) takes dx, dw and db straight from
    ``dy`` and ``argmax``: the convolution's gradient, four times dy's size and three
    quarters zeros, is never formed, and each pooled gradient is multiplied with its argmax
    pixel's receptive field and its filter only (a quarter of the dense products).

    Where the fused path runs (the C backend's NHWC kernels, and Numba's), the pixels no
    window reads (an odd last row or column, ``crop=False``) are neither formed nor
    multiplied: an inf or NaN in ``x`` that only their receptive fields read leaves ``dw``
    finite, where the dense reference (and a convolution backward on the scattered
    gradient, as in PyTorch) gives NaN from ``0 * inf``. The sparse kernels (8 input
    channels and up) skip a window's unselected pixels as well; elsewhere those may be
    multiplied by their zero gradient (NaN from such an inf, as in the reference). Values
    any window selected propagate in every backend.

    Parameters
    ----------
    dy : ndarray, the pooled output's shape: (N, PH, PW, F) NHWC or (N, F, PH, PW) NCHW
    argmax : int64 or uint8 ndarray shaped like dy
        As :func:`conv2d_maxpool_forward` returned it, with the same ``crop``: int64 flat
        indices ("flat"; an index in range but outside its own window, which the forward
        never gives, is ignored by the C and Numba backends and scattered where it points
        by the reference), or uint8 window positions 0 .. 3 ("window").
    x, w, stride, padding, dilation, layout : as for :func:`conv2d_forward`
    crop, need_dx, need_db, out : as for :func:`conv2d_backward` (``crop``: argmax indexes
        the crop of :func:`conv2d_maxpool_forward`'s ``crop``)

    Returns
    -------
    dx : ndarray shaped like x, or None
    dw : ndarray shaped like w
    db : ndarray, shape (F,), or None
    """
    return _conv2d_maxpool_backward(dy, argmax, x, w, stride, padding, dilation, layout, crop,
                                    need_dx, need_db, out, check_range=True)


def _conv2d_maxpool_backward(dy, argmax, x, w, stride, padding, dilation, layout, crop,
                             need_dx, need_db, out, check_range: bool, dz_buffer=None,
                             relu_y=None, relu_buffer=None):
    """:func:`conv2d_maxpool_backward`; ``check_range=False`` skips the scan of argmax's
    range (fastnn's own layers, whose argmax comes from their own forward); ``dz_buffer``,
    a function ``(shape, dtype) -> ndarray`` (a layer's reused work array), gives the array
    the scattered gradient goes to where the backend forms it (else a new one). ``relu_y``
    (shaped like dy): the pooled output of a relu convolution, whose derivative is then
    applied to ``dy`` first, as :func:`bias_act_backward` gives it (``relu_y > 0 ? dy :
    0``), ``db`` its sum there: by a backend whose ``CONV_POOL_RELU`` is true in the
    kernels that read ``dy`` (the C backend: the same bits as the two calls, without the
    masked gradient's pass over memory), else by :func:`bias_act_backward` first, into
    ``relu_buffer(shape, dtype)`` (a layer's work array; else a new one)."""
    layout, x, w, f, g = _conv_args(x, w, layout, stride, padding, dilation)
    dy = float_array(dy, "dy", 4)
    same_dtype([x, w, dy], ["x", "w", "dy"])
    gc, pg = _conv_pool_geometry(g, x, w, f, layout, crop)
    _checks.expect_shape(dy, pg.y_shape(layout, f), "dy", f"the pooled output shape, {layout}")
    if relu_y is not None:
        relu_y = float_array(relu_y, "relu_y", 4)
        same_dtype([dy, relu_y], ["dy", "relu_y"])
        _checks.expect_shape(relu_y, dy.shape, "relu_y", "dy's shape")
    argmax = _argmax_arg(argmax, dy.shape, gc.oh * gc.ow * f, check_range, window_ok=True)
    dx, dw, db = _conv_grads(out, x, w, f, need_dx, need_db, (dy, x, w, argmax))
    if g.n == 0:
        return dx, dw, db
    backend = _backend.get()
    if argmax.dtype == np.uint8 and not getattr(backend, "CONV_POOL_POSITIONS", False):
        argmax = _flat_argmax(argmax, gc.oh, gc.ow, layout)

    def relu_first():
        """dy with relu's derivative applied, db its sum (the kernels then sum none)."""
        masked = None if relu_buffer is None else relu_buffer(dy.shape, dy.dtype)
        dz, db_relu = bias_act_backward(dy, relu_y, "relu",
                                        channel_axis=-1 if layout == "NHWC" else 1,
                                        need_db=db is not None, out=masked)
        if db is not None:
            db[...] = db_relu
        return dz, None

    db_kernel = db              # where the kernels below sum the bias gradient
    if relu_y is not None and not getattr(backend, "CONV_POOL_RELU", False):
        (dy, db_kernel), relu_y = relu_first(), None
    fused = getattr(backend, "conv2d_maxpool_backward", None)
    extra = {} if relu_y is None else {"relu_y": relu_y}
    if fused is not None and windows_in_image(gc) is None and \
            fused(dy, argmax, x, w, gc, layout, dx, dw, db_kernel, _chunk(gc, x.itemsize, 1),
                  **extra):
        return dx, dw, db
    if relu_y is not None:      # a CONV_POOL_RELU backend whose fused kernel did not apply
        dy, db_kernel = relu_first()
    shape = gc.y_shape(layout, f)
    dz = (np.empty(shape, x.dtype) if dz_buffer is None else
          _out_array(dz_buffer(shape, x.dtype), shape, x.dtype, "dz_buffer",
                     (dy, x, w, argmax)))
    if argmax.dtype == np.uint8:
        argmax = _flat_argmax(argmax, gc.oh, gc.ow, layout)
    backend.maxpool2d_backward(dy, argmax, pg, layout, dz)
    _conv_backward(backend, dz, x, w, gc, layout, dx, dw, db_kernel, 2 if need_dx else 1)
    return dx, dw, db


# --------------------------------------------------------------------------- bias + act
def _bias_act_view(y: np.ndarray, channel_axis: int) -> Tuple[int, int, int]:
    axis = channel_axis % y.ndim
    outer = math.prod(y.shape[:axis])
    inner = math.prod(y.shape[axis + 1:])
    return outer, y.shape[axis], inner


def bias_act(x, b=None, activation="relu", *, channel_axis: int = -1,
             out: Optional[np.ndarray] = None) -> np.ndarray:
    """Fused epilogue ``activation(x + b)`` with ``b`` broadcast along ``channel_axis``.

    Parameters
    ----------
    x : ndarray, any shape with ``x.ndim >= 1``
    b : ndarray, shape (x.shape[channel_axis],), optional
    activation : None, "identity", "linear" or "relu"
    channel_axis : int
        -1 for Dense and NHWC outputs, 1 for NCHW outputs.
    out : ndarray shaped like x, optional
        Written and returned; may be ``x`` itself (in place), and must not overlap ``x``
        any other way, nor ``b``.

    Returns
    -------
    y : ndarray shaped like x
    """
    x = _channel_input(x, "x", channel_axis)
    act = _activation(activation)
    outer, c, inner = _bias_act_view(x, channel_axis)
    if b is not None:
        b = float_array(b, "b", 1)
        _checks.expect_shape(b, (c,), "b", f"x.shape[{channel_axis}]")
        same_dtype([x, b], ["x", "b"])
    y = _out_like(out, x, "out", "x", (b,))
    if x.size:
        _backend.get().bias_act(x.reshape(outer, c, inner), b, act, y.reshape(outer, c, inner))
    return y


def _new(shape, dtype, name: str, zeros: bool = False) -> np.ndarray:
    """A new array for result ``name``, 64-byte aligned from ``ALIGN_MIN_BYTES`` on
    (``empty_aligned``); a MemoryError naming it when its size is beyond what the machine
    can address (NumPy's ValueError 'array is too big' named nothing)."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes > sys.maxsize:
        raise MemoryError(f"{name} would be an array of shape {tuple(shape)} ({nbytes} "
                          f"bytes), more than this machine can address")
    if nbytes < ALIGN_MIN_BYTES:   # (the common small case without a further call)
        return (np.zeros if zeros else np.empty)(shape, dtype=dtype)
    return empty_aligned(shape, dtype, zeros)


def _out_array(out, shape, dtype, name: str, inputs=()) -> np.ndarray:
    """``out`` checked to be a writeable C-contiguous array of ``shape`` and ``dtype`` that
    shares no memory with ``inputs`` (the kernels read those while writing ``out``), or a
    new array when ``out`` is None."""
    shape, dtype = tuple(shape), np.dtype(dtype)
    if out is None:
        return _new(shape, dtype, name)
    if type(out) is not np.ndarray:
        raise TypeError(f"{name} must be a numpy array (a plain numpy.ndarray: not a "
                        f"subclass such as np.matrix), received {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype} but the result is {dtype}")
    if out.shape != shape:
        raise ValueError(f"{name} must be an array of shape {shape}, received shape "
                         f"{out.shape}")
    flags = out.flags
    if not (flags.c_contiguous and flags.writeable and flags.aligned):
        raise ValueError(f"{name} must be C-contiguous, writeable and aligned for its dtype "
                         f"(not a view of a byte buffer at an odd offset)")
    for arr in inputs:
        if arr is not None and np.shares_memory(out, arr):
            raise ValueError(f"{name} must not overlap an input array (the kernel reads the "
                             f"inputs while it writes {name})")
    return out


def _out_like(out, like: np.ndarray, name: str, like_names: str, inputs=(), others=()
              ) -> np.ndarray:
    """``out`` checked to be a writeable C-contiguous array shaped and typed like ``like``,
    or a new array. An elementwise kernel reads each element before it writes it, so
    ``out`` may be ``like`` itself (in place), or any of ``others`` (arrays of ``like``'s
    shape), or a view of exactly the same memory; it must not overlap them any other way
    (shifted by some elements, the kernel would read what it has already written, and each
    backend would give another result), nor overlap ``inputs`` at all. ``like_names``
    names ``like`` and ``others`` in the error."""
    out = _out_array(out, like.shape, like.dtype, name, inputs)
    if out.size:
        for arr in (like,) + tuple(others):
            if out is not arr and np.shares_memory(out, arr) and \
                    out.ctypes.data != arr.ctypes.data:   # (usually no sharing: test it first)
                raise ValueError(f"{name} overlaps {like_names} only partly: it must be "
                                 f"{like_names} itself (in place) or share no memory with it")
    return out


def _out_tuple(out, count: int, name: str) -> tuple:
    """``out`` as a tuple of ``count`` optional arrays (None: allocate them all)."""
    if out is None:
        return (None,) * count
    if not isinstance(out, (tuple, list)) or len(out) != count:
        raise TypeError(f"{name} must be a tuple of {count} arrays (or None), received "
                        f"{type(out).__name__}"
                        + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    return tuple(out)


def bias_act_backward(dy, y, activation="relu", *, channel_axis: int = -1,
                      need_db: bool = True, out: Optional[np.ndarray] = None
                      ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Backward of :func:`bias_act`.

    Parameters
    ----------
    dy : ndarray, gradient of the loss with respect to the output ``y``
    y : ndarray, the *output* of :func:`bias_act` (relu's derivative is ``y > 0``)
    out : ndarray shaped like dy, optional
        Receives ``dx``; may be ``dy`` or ``y`` itself (in place), and must not overlap
        them any other way.

    Returns
    -------
    dx : ndarray shaped like y, the gradient with respect to ``x``
    db : ndarray, shape (y.shape[channel_axis],), or None when ``need_db`` is False
    """
    dy = float_array(dy, "dy")
    y = _channel_input(y, "y", channel_axis)
    same_dtype([dy, y], ["dy", "y"])
    _checks.expect_shape(dy, y.shape, "dy", "the shape of y")
    act = _activation(activation)
    outer, c, inner = _bias_act_view(y, channel_axis)
    dx = _out_like(out, dy, "out", "dy or y", others=(y,))
    db = np.zeros(c, dtype=y.dtype) if _checks.flag(need_db, "need_db") else None
    if y.size:
        _backend.get().bias_act_backward(dy.reshape(outer, c, inner), y.reshape(outer, c, inner),
                                         act, dx.reshape(outer, c, inner), db)
    return dx, db


def _channel_input(x, name: str, channel_axis) -> np.ndarray:
    """``x`` as a float array with at least one dimension, ``channel_axis`` one of them."""
    x = float_array(x, name)
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least 1 dimension, received shape {x.shape}")
    _channel_axis_arg(channel_axis, x.ndim)
    return x


def _channel_vector(v, name: str, x: np.ndarray, channel_axis: int) -> np.ndarray:
    """``v`` as a C-contiguous (C,) array of x's dtype, C = x.shape[channel_axis]."""
    v = float_array(v, name, 1)
    _checks.expect_shape(v, (x.shape[channel_axis],), name, f"x.shape[{channel_axis}]")
    same_dtype([x, v], ["x", name])
    return v


def batchnorm_stats(x, *, channel_axis: int = -1) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel batch mean and (biased) variance, batch normalization's statistics.

    Parameters
    ----------
    x : ndarray, any shape with ``x.ndim >= 1``
    channel_axis : int
        The feature axis: -1 for Dense and NHWC inputs, 1 for NCHW.

    Returns
    -------
    mean, var : ndarray, shape (x.shape[channel_axis],), x's dtype
        Over every axis but ``channel_axis``: ``mean = x.mean(axes)`` and ``var = ((x -
        mean) ** 2).mean(axes)``, computed in float64 whatever x's dtype (NaN in a
        channel makes both NaN; a channel of no elements gives NaN).
    """
    x = _channel_input(x, "x", channel_axis)
    outer, c, inner = _bias_act_view(x, channel_axis)
    mean, var = np.empty(c, x.dtype), np.empty(c, x.dtype)
    if outer * inner == 0:
        mean.fill(np.nan)
        var.fill(np.nan)
    elif c:
        _backend.get().batchnorm_stats(x.reshape(outer, c, inner), mean, var)
    return mean, var


def batchnorm_forward(x, mean, inv_std, gamma=None, beta=None, *, channel_axis: int = -1,
                      out: Optional[np.ndarray] = None) -> np.ndarray:
    """Batch normalization's affine step ``(x - mean) * (inv_std * gamma) + beta``.

    Parameters
    ----------
    x : ndarray, any shape with ``x.ndim >= 1``
    mean, inv_std : ndarray, shape (C,), C = ``x.shape[channel_axis]``
        The batch's statistics (:func:`batchnorm_stats`) in training, the moving ones in
        inference; ``inv_std = 1 / sqrt(var + epsilon)``.
    gamma, beta : ndarray, shape (C,), optional
        Scale (None: 1) and offset (None: 0).
    channel_axis : int
        -1 for Dense and NHWC inputs, 1 for NCHW.
    out : ndarray shaped like x, optional
        Written and returned; may be ``x`` itself (in place), and must not overlap ``x``
        any other way, nor the (C,) arrays.

    Returns
    -------
    y : ndarray shaped like x
        Each operation in x's dtype, in the order written above (``inv_std * gamma``
        first).
    """
    x = _channel_input(x, "x", channel_axis)
    mean = _channel_vector(mean, "mean", x, channel_axis)
    inv_std = _channel_vector(inv_std, "inv_std", x, channel_axis)
    gamma = None if gamma is None else _channel_vector(gamma, "gamma", x, channel_axis)
    beta = None if beta is None else _channel_vector(beta, "beta", x, channel_axis)
    y = _out_like(out, x, "out", "x", (mean, inv_std, gamma, beta))
    if x.size:
        shape = _bias_act_view(x, channel_axis)
        _backend.get().batchnorm_forward(x.reshape(shape), mean, inv_std, gamma, beta,
                                         y.reshape(shape))
    return y


def batchnorm_backward(dy, x, mean, inv_std, gamma=None, *, channel_axis: int = -1,
                       training: bool = True, need_param_grads: bool = True,
                       out: Optional[np.ndarray] = None
                       ) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """Backward of batch normalization, ``y = (x - mean) * inv_std * gamma + beta``.

    Parameters
    ----------
    dy : ndarray shaped like x, the gradient of the loss with respect to ``y``
    x : ndarray, the forward's input, any shape with ``x.ndim >= 1``
    mean, inv_std, gamma : ndarray, shape (C,), as given to :func:`batchnorm_forward`
        (gamma None: 1)
    channel_axis : int
    training : bool
        True when ``mean`` and ``inv_std`` are the batch's own statistics (they then
        depend on x and their gradient flows into ``dx``); False for the moving
        statistics, constants: ``dx = dy * inv_std * gamma``.
    need_param_grads : bool
        Whether to return ``dgamma`` and ``dbeta`` (else None, None).
    out : ndarray shaped like dy, optional
        Receives ``dx``; may be ``dy`` itself (in place), and must not overlap it any other
        way, nor ``x`` or the (C,) arrays.

    Returns
    -------
    dx : ndarray shaped like x
    dgamma, dbeta : ndarray, shape (C,), or None
        ``dbeta = sum(dy)``, ``dgamma = sum(dy * (x - mean)) * inv_std`` over every axis
        but ``channel_axis``, summed in float64.
    """
    dy = float_array(dy, "dy")
    x = _channel_input(x, "x", channel_axis)
    same_dtype([x, dy], ["x", "dy"])
    _checks.expect_shape(dy, x.shape, "dy", "the shape of x")
    mean = _channel_vector(mean, "mean", x, channel_axis)
    inv_std = _channel_vector(inv_std, "inv_std", x, channel_axis)
    gamma = None if gamma is None else _channel_vector(gamma, "gamma", x, channel_axis)
    training = _checks.flag(training, "training")
    need = _checks.flag(need_param_grads, "need_param_grads")
    dx = _out_like(out, dy, "out", "dy", (x, mean, inv_std, gamma))
    c = x.shape[channel_axis]
    dgamma, dbeta = (np.zeros(c, x.dtype), np.zeros(c, x.dtype)) if need else (None, None)
    if x.size:
        shape = _bias_act_view(x, channel_axis)
        _backend.get().batchnorm_backward(dy.reshape(shape), x.reshape(shape), mean, inv_std,
                                          gamma, training, dx.reshape(shape), dgamma, dbeta)
    return dx, dgamma, dbeta


def _bn_pool_args(x, mean, inv_std, gamma, beta):
    """x (N, H, W, C) and its (C,) vectors checked, for the two batchnorm_maxpool ops."""
    if mean is None or inv_std is None:
        raise TypeError("mean and inv_std must be arrays of shape (C,), received None")
    x = float_array(x, "x", 4)
    vec = [None if v is None else _channel_vector(v, name, x, -1) for v, name in
           ((mean, "mean"), (inv_std, "inv_std"), (gamma, "gamma"), (beta, "beta"))]
    return (x, *vec)


def batchnorm_maxpool_forward(x, mean, inv_std, gamma=None, beta=None, *,
                              out: Optional[tuple] = None
                              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch normalization's affine step followed by 2x2 max pooling of stride 2 (no
    padding), channels-last: ``maxpool2d_forward(batchnorm_forward(x, mean, inv_std, gamma,
    beta), 2)`` bit for bit, with what :func:`batchnorm_maxpool_backward` needs. The C
    backend runs them as one pass, the normalized array never written (a quarter of it
    is); elsewhere the two calls run one after the other.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    mean, inv_std, gamma, beta : ndarray, shape (C,)
        As for :func:`batchnorm_forward` (gamma None: 1, beta None: 0).
    out : tuple (y, pos, x_max), optional
        Arrays to write the results into (any may be None), C-contiguous, not overlapping
        the inputs or each other.

    Returns
    -------
    y : ndarray, shape (N, H // 2, W // 2, C)
        Each 2x2 window's maximum of the normalized values (the first on ties; NaN wins);
        an odd last row or column is read by no window.
    pos : uint8 ndarray, y's shape
        Each maximum's position in its window: 0, 1, 2, 3 for (0, 0), (0, 1), (1, 0),
        (1, 1) (:func:`conv2d_maxpool_forward`'s ``argmax_format="window"``).
    x_max : ndarray, y's shape
        x at each maximum (the backward's sums read it instead of x).
    """
    x, mean, inv_std, gamma, beta = _bn_pool_args(x, mean, inv_std, gamma, beta)
    n, h, w, c = x.shape
    vecs = [x, mean, inv_std, gamma, beta]
    y_out, p_out, m_out = _out_tuple(out, 3, "out")
    y = _out_array(y_out, (n, h // 2, w // 2, c), x.dtype, "out[0] (y)", vecs)
    pos = _out_array(p_out, y.shape, np.uint8, "out[1] (pos)", vecs + [y])
    x_max = _out_array(m_out, y.shape, x.dtype, "out[2] (x_max)", vecs + [y, pos])
    if y.size:
        backend = _backend.get()
        fused = getattr(backend, "batchnorm_maxpool_forward", None)
        if fused is not None:
            fused(x, mean, inv_std, gamma, beta, y, pos, x_max)
        else:
            xc = np.ascontiguousarray(x[:, :2 * (h // 2), :2 * (w // 2)])
            z = batchnorm_forward(xc, mean, inv_std, gamma, beta)
            flat = np.empty(y.shape, np.int64)
            backend.maxpool2d_forward(z, _pool_geometry(z.shape, 2, 2, 0, "NHWC", "x"),
                                      "NHWC", y, flat)
            _window_positions(flat, z.shape[1], z.shape[2], "NHWC", pos)
            x_max[...] = np.take_along_axis(xc.reshape(n, -1), flat.reshape(n, -1),
                                            1).reshape(y.shape)
    return y, pos, x_max


def batchnorm_maxpool_backward(dy, pos, x_max, x, mean, inv_std, gamma=None, *,
                               training: bool = True, need_param_grads: bool = True,
                               out: Optional[np.ndarray] = None
                               ) -> Tuple[np.ndarray, Optional[np.ndarray],
                                          Optional[np.ndarray]]:
    """Backward of :func:`batchnorm_maxpool_forward`: :func:`batchnorm_backward` given the
    gradient the pooling's backward scatters from ``dy`` (to each window's position, zero
    elsewhere), up to the sums' rounding. The C backend never forms that gradient: its sums
    run over the pooled ``dy`` and ``x_max`` and ``dx`` is written in one pass; elsewhere
    :func:`maxpool2d_backward` and :func:`batchnorm_backward` run one after the other.

    Parameters
    ----------
    dy : ndarray, shape (N, H // 2, W // 2, C), the gradient of the pooled output
    pos, x_max : the forward's window positions (uint8, each 0 .. 3) and x there, dy's shape
    x, mean, inv_std, gamma : as given to :func:`batchnorm_maxpool_forward`
    training, need_param_grads : bool
        As for :func:`batchnorm_backward`.
    out : ndarray shaped like x, optional
        Receives ``dx``; C-contiguous, not overlapping the inputs.

    Returns
    -------
    dx : ndarray shaped like x
    dgamma, dbeta : ndarray, shape (C,), or None (``need_param_grads=False``)

    Raises
    ------
    ValueError
        If a position is above 3 (the C backend finds it as it writes ``dx``: ``out``, if
        given, is then written).
    """
    x, mean, inv_std, gamma, _ = _bn_pool_args(x, mean, inv_std, gamma, None)
    dy = float_array(dy, "dy", 4)
    x_max = float_array(x_max, "x_max", 4)
    same_dtype([x, dy, x_max], ["x", "dy", "x_max"])
    n, h, w, c = x.shape
    _checks.expect_shape(dy, (n, h // 2, w // 2, c), "dy", "(N, H // 2, W // 2, C) of x")
    _checks.expect_shape(x_max, dy.shape, "x_max", "the shape of dy")
    _checks.refuse_masked(pos, "pos")
    if not isinstance(pos, np.ndarray) or pos.dtype != np.uint8:
        raise TypeError(f"pos must be the uint8 array of window positions returned by "
                        f"batchnorm_maxpool_forward, received "
                        f"{getattr(pos, 'dtype', type(pos).__name__)}")
    _checks.expect_shape(pos, dy.shape, "pos", "the shape of dy")
    pos = _checks.c_array(pos)
    training = _checks.flag(training, "training")
    need = _checks.flag(need_param_grads, "need_param_grads")
    dx = _out_array(out, x.shape, x.dtype, "out",
                    (dy, pos, x_max, x, mean, inv_std, gamma))
    dgamma, dbeta = (np.zeros(c, x.dtype), np.zeros(c, x.dtype)) if need else (None, None)
    if x.size:
        fused = getattr(_backend.get(), "batchnorm_maxpool_backward", None)
        if fused is None:
            dz = np.zeros(x.shape, x.dtype)   # (the rows and columns no window reads: 0)
            if dy.size:
                crop = (n, 2 * (h // 2), 2 * (w // 2), c)
                dz[:, :crop[1], :crop[2]] = _maxpool2d_backward(
                    dy, _flat_argmax(pos, crop[1], crop[2], "NHWC"), crop, 2, 2, 0, "NHWC",
                    None, check_range=False)
            _, dgamma, dbeta = batchnorm_backward(dz, x, mean, inv_std, gamma,
                                                  training=training, need_param_grads=need,
                                                  out=dx)
        elif not fused(dy, pos, x_max, x, mean, inv_std, gamma, training, dx, dgamma, dbeta):
            _check_positions(pos)
    return dx, dgamma, dbeta


#: The activations of :func:`activation`.
ACTIVATION_KINDS = ("sigmoid", "silu", "elu", "selu", "leaky_relu", "gelu", "relu6",
                    "hard_sigmoid", "hard_silu", "celu", "tanh")


def _activation_args(kind, alpha) -> float:
    if not isinstance(kind, str) or kind not in ACTIVATION_KINDS:
        raise ValueError(f"kind must be one of {ACTIVATION_KINDS}, received {kind!r}")
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer,
                                                                      np.floating)):
        raise TypeError(f"alpha must be a real number, received {alpha!r}")
    if kind == "celu" and alpha == 0:
        raise ValueError("alpha must be non-zero for celu (it divides by alpha), received "
                         "alpha=0.0")
    return float(alpha)


def _activation_impl(name: str):
    """The active backend's primitive ``name``, or the NumPy reference's where the backend
    has none (the Numba backend)."""
    fn = getattr(_backend.get(), name, None)
    if fn is None:
        from ..backends import numpy_backend
        fn = getattr(numpy_backend, name)
    return fn


def activation(x, kind: str, *, alpha: float = 0.0, out: Optional[np.ndarray] = None
               ) -> np.ndarray:
    """An elementwise activation ``y = f(x)`` on exp or a select.

    Parameters
    ----------
    x : ndarray, any shape
    kind : one of :data:`ACTIVATION_KINDS`
        ``sigmoid(x) = 1 / (1 + exp(-x))`` (without overflow), ``silu(x) = x *
        sigmoid(x)``, ``elu(x) = x > 0 ? x : alpha * (exp(x) - 1)``, ``selu(x) = scale *
        elu(x, alpha_selu)`` (Keras 3's constants), ``leaky_relu(x) = x > 0 ? x : alpha *
        x``, ``gelu(x) = x * Phi(x)`` (exact: Phi the standard normal CDF, from erfc's
        Chebyshev series), ``relu6(x) = clip(x, 0, 6)``, ``hard_sigmoid(x) = clip(x / 6 +
        0.5, 0, 1)``, ``hard_silu(x) = x * hard_sigmoid(x)``, ``celu(x) = x > 0 ? x :
        alpha * (exp(x / alpha) - 1)``, ``tanh(x)``. NaN propagates.
    alpha : float
        elu's and celu's ``alpha`` (celu: not 0), leaky_relu's ``negative_slope``; unused
        by the others.
    out : ndarray shaped like x, optional
        Written and returned; may be ``x`` itself (in place), and must not overlap it any
        other way.

    Returns
    -------
    y : ndarray shaped like x
    """
    x = float_array(x, "x")
    alpha = _activation_args(kind, alpha)
    y = _out_like(out, x, "out", "x")
    if x.size:
        _activation_impl("activation")(x.reshape(-1), kind, alpha, y.reshape(-1))
    return y


def activation_backward(dy, x, y, kind: str, *, alpha: float = 0.0,
                        out: Optional[np.ndarray] = None) -> np.ndarray:
    """Backward of :func:`activation`: ``dx = dy * f'(x)``.

    Parameters
    ----------
    dy : ndarray, the gradient with respect to ``y``
    x, y : ndarray shaped like dy, the forward's input and output (:func:`activation`)
    kind, alpha : as given to :func:`activation`
    out : ndarray shaped like dy, optional
        Receives ``dx``; may be ``dy`` itself (in place), and must not overlap ``dy`` any
        other way, nor ``x`` or ``y``.

    Returns
    -------
    dx : ndarray shaped like dy
    """
    dy = float_array(dy, "dy")
    x = float_array(x, "x")
    y = float_array(y, "y")
    same_dtype([dy, x, y], ["dy", "x", "y"])
    _checks.expect_shape(x, dy.shape, "x", "the shape of dy")
    _checks.expect_shape(y, dy.shape, "y", "the shape of dy")
    alpha = _activation_args(kind, alpha)
    dx = _out_like(out, dy, "out", "dy", (x, y))
    if dy.size:
        _activation_impl("activation_backward")(dy.reshape(-1), x.reshape(-1), y.reshape(-1),
                                                kind, alpha, dx.reshape(-1))
    return dx


def _dropout_args(rate, seed) -> Tuple[float, int, int]:
    """(rate, seed, t): ``rate`` a real in [0, 1), ``seed`` an int in [0, 2^64), and the
    word threshold ``t = round(rate * 2^32)`` (at most 2^32 - 1)."""
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.integer,
                                                                    np.floating)):
        raise TypeError(f"rate must be a real number in [0, 1), received rate={rate!r}")
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be in [0, 1), received rate={rate!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int in [0, 2**64), received seed={seed!r}")
    if not 0 <= int(seed) < 1 << 64:
        raise ValueError(f"seed must be in [0, 2**64), received seed={seed!r}")
    return float(rate), int(seed), min(round(float(rate) * 2.0 ** 32), (1 << 32) - 1)


def dropout_mask(shape, rate: float, seed: int, dtype=np.float32, *,
                 out: Optional[np.ndarray] = None) -> np.ndarray:
    """An inverted-dropout mask: each element ``1 / (1 - rate)`` (in ``dtype``), or 0 with
    probability ``rate``, from counter-based random numbers: element i's 32-bit word of
    Philox4x32-10 (Random123's generator, also behind PyTorch's and JAX's counter-based
    streams) under the key ``seed``, dropped when below ``round(rate * 2^32)``. The mask
    is a function of ``seed``, the element's index and ``rate`` only: the same in every
    backend and for any thread count, the same drops in float32 and float64; draw a new
    seed for every step (as :class:`fastnn.layers.Dropout` does from its generator).

    Parameters
    ----------
    shape : tuple of ints
    rate : float in [0, 1)
    seed : int in [0, 2**64)
    dtype : float32 or float64
    out : ndarray of ``shape`` and ``dtype``, optional

    Returns
    -------
    mask : ndarray of ``shape``
    """
    rate, seed, t = _dropout_args(rate, seed)
    dtype = np.dtype(dtype)
    if dtype not in _checks.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, received {dtype}")
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    mask = _out_array(out, _checks.shape_arg(shape, "shape"), dtype, "out")
    if mask.size:
        _backend.get().dropout(seed, t, 1.0 / (1.0 - rate), None, mask.reshape(-1), None)
    return mask


def dropout(x, rate: float, seed: int, *, out: Optional[np.ndarray] = None,
            mask_out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Inverted dropout in one pass: ``mask = dropout_mask(x.shape, rate, seed, x.dtype)``
    and ``y = x * mask`` (a NaN or inf in x stays NaN where dropped: ``0 * x``, as the
    product in NumPy, Keras and PyTorch). The backward is ``dy * mask``.

    Parameters
    ----------
    x : ndarray, float32 or float64, any shape
    rate, seed : as for :func:`dropout_mask`
    out, mask_out : ndarrays shaped and typed like x, optional
        Receive y and the mask; neither may overlap x or the other.

    Returns
    -------
    y : ndarray shaped like x
    mask : ndarray shaped like x
    """
    x = float_array(x, "x")
    rate, seed, t = _dropout_args(rate, seed)
    mask = _out_array(mask_out, x.shape, x.dtype, "mask_out", (x,))
    y = _out_array(out, x.shape, x.dtype, "out", (x, mask))
    if x.size:
        _backend.get().dropout(seed, t, 1.0 / (1.0 - rate), x.reshape(-1), mask.reshape(-1),
                               y.reshape(-1))
    return y, mask


def _bool_arg(mask, name: str) -> None:
    _checks.refuse_masked(mask, name)
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError(f"{name} must be a numpy bool array, received "
                        f"{type(mask).__name__}"
                        + (f" of dtype {mask.dtype}" if isinstance(mask, np.ndarray) else ""))


def _bool_out(mask, shape, name: str, inputs=()) -> np.ndarray:
    """``mask`` checked to be a writeable C-contiguous bool array of ``shape`` sharing no
    memory with ``inputs``, or a new one when None."""
    if mask is not None:
        _bool_arg(mask, name)
    return _out_array(mask, shape, np.bool_, name, inputs)


def relu_mask(x, *, out: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None
              ) -> Tuple[np.ndarray, np.ndarray]:
    """ReLU that also returns where it zeroed: the from-scratch idiom ``mask = x <= 0;
    y = x.copy(); y[mask] = 0`` in one pass.

    Parameters
    ----------
    x : ndarray, any shape
    out : ndarray shaped like x, optional
        Receives ``y``; may be ``x`` itself (in place).
    mask : bool ndarray shaped like x, optional
        Receives the mask.

    Returns
    -------
    y : ndarray shaped like x
        ``x`` where ``x > 0`` or NaN, ``+0.0`` elsewhere (``-0.0`` becomes ``+0.0``:
        unlike :func:`bias_act`, which keeps ``-0.0``).
    mask : bool ndarray shaped like x
        ``x <= 0`` (False for NaN).
    """
    x = float_array(x, "x")
    y = _out_like(out, x, "out", "x")
    m = _bool_out(mask, x.shape, "mask", (x, y))
    if x.size:
        _backend.get().relu_mask(x, y, m)
    return y, m


def relu_mask_backward(dy, mask, *, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Backward of :func:`relu_mask`, the idiom ``dout[mask] = 0``.

    Parameters
    ----------
    dy : ndarray, the gradient with respect to ``y``
    mask : bool ndarray shaped like dy, the mask :func:`relu_mask` returned
    out : ndarray shaped like dy, optional
        Receives ``dx``; may be ``dy`` itself (in place, as the idiom is).

    Returns
    -------
    dx : ndarray shaped like dy: ``+0.0`` where ``mask``, ``dy`` elsewhere
    """
    dy = float_array(dy, "dy")
    _bool_arg(mask, "mask")
    _checks.expect_shape(mask, dy.shape, "mask", "the shape of dy")
    mask = _checks.c_array(np.asarray(mask))   # (a subclass, np.matrix: a plain array)
    dx = _out_like(out, dy, "out", "dy", (mask,))
    if dy.size:
        _backend.get().relu_mask_backward(dy, mask, dx)
    return dx


def _channel_axis_arg(channel_axis, ndim: int) -> None:
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)) or \
            not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel_axis must be an int in [{-ndim}, {ndim}), received "
                         f"{channel_axis!r}")


# --------------------------------------------------------------------------- pooling
def _pool_geometry(x_shape, pool_size, stride, padding, layout, name):
    ps = as_pair(pool_size, "pool_size")
    st = ps if stride is None else stride
    return _geometry_for(x_shape, ps, st, padding, 1, layout, name, pooling=True)


def maxpool2d_forward(x, pool_size, *, stride=None, padding=0, layout="NHWC",
                      out: Optional[tuple] = None) -> Tuple[np.ndarray, np.ndarray]:
    """2-D max pooling.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C) NHWC or (N, C, H, W) NCHW
    pool_size : int or pair
    stride : int, pair or None (None means ``pool_size``)
    padding : "valid", "same", int or pairs; padded positions never win
    out : tuple (y, argmax), optional
        Arrays to write the results into (either may be None), C-contiguous, not
        overlapping x.

    Returns
    -------
    y : ndarray, shape (N, OH, OW, C) NHWC or (N, C, OH, OW) NCHW
    argmax : int64 ndarray shaped like y
        Flat index of each maximum within its sample, i.e. into ``x[n].ravel()``. Ties go
        to the first element in row-major window order; NaN wins (propagates).
    """
    layout = layout_arg(layout)
    x = float_array(x, "x", 4)
    g = _pool_geometry(x.shape, pool_size, stride, padding, layout, "x")
    y_out, a_out = _out_tuple(out, 2, "out")
    y = _out_array(y_out, g.y_shape(layout, g.c), x.dtype, "out[0] (y)", (x,))
    argmax = _out_array(a_out, y.shape, np.int64, "out[1] (argmax)", (x, y))
    if g.n:
        _backend.get().maxpool2d_forward(x, g, layout, y, argmax)
    return y, argmax


def maxpool2d_backward(dy, argmax, x_shape, pool_size, *, stride=None, padding=0,
                       layout="NHWC", out: Optional[np.ndarray] = None) -> np.ndarray:
    """Backward of :func:`maxpool2d_forward`: route each gradient to its window's argmax.

    Parameters
    ----------
    dy : ndarray, the output's shape
    argmax : int64 ndarray, as returned by :func:`maxpool2d_forward`
    x_shape : tuple of 4 ints
    out : ndarray of shape ``x_shape``, optional
        Written and returned; C-contiguous, not overlapping dy or argmax.

    Returns
    -------
    dx : ndarray of shape ``x_shape``; overlapping windows accumulate.

    Raises
    ------
    ValueError
        If argmax holds an index outside one sample. The C backend finds it as it
        scatters (no pass over argmax first): ``out``, if given, is then partly written.
    """
    return _maxpool2d_backward(dy, argmax, x_shape, pool_size, stride, padding, layout, out,
                               check_range=True)


def _argmax_range_error(argmax, per_sample: int) -> ValueError:
    return ValueError(f"argmax must hold indices in [0, {per_sample}) (within one sample), "
                      f"received values in [{argmax.min()}, {argmax.max()}]")


def _argmax_arg(argmax, shape, per_sample: int, check_range: bool,
                window_ok: bool = False) -> np.ndarray:
    """``argmax`` checked to be an int64 array of ``shape`` (and, if ``check_range``, to
    hold indices within one sample of ``per_sample`` elements), C-contiguous; with
    ``window_ok``, or a uint8 array of window positions (each 0 .. 3 if ``check_range``:
    :func:`conv2d_maxpool_forward`'s ``argmax_format="window"``)."""
    _checks.refuse_masked(argmax, "argmax")
    dtype = getattr(argmax, "dtype", None)
    if not isinstance(argmax, np.ndarray) or not (
            dtype == np.int64 or (window_ok and dtype == np.uint8)):
        what = ("the int64 (flat) or uint8 (window) array returned by "
                "conv2d_maxpool_forward" if window_ok else
                "the int64 array returned by maxpool2d_forward")
        raise TypeError(f"argmax must be {what}, received "
                        f"{dtype if dtype is not None else type(argmax).__name__}")
    _checks.expect_shape(argmax, shape, "argmax", "the shape of dy")
    argmax = _checks.c_array(argmax)
    if dtype == np.uint8:
        if check_range:
            _check_positions(argmax)
        return argmax
    # one pass: as uint64 a negative index is >= 2**63, so the largest catches both ends
    if check_range and argmax.size and argmax.view(np.uint64).max() >= per_sample:
        raise _argmax_range_error(argmax, per_sample)
    return argmax


def _maxpool2d_backward(dy, argmax, x_shape, pool_size, stride, padding, layout, out,
                        check_range: bool) -> np.ndarray:
    """:func:`maxpool2d_backward`; ``check_range=False`` skips the check of argmax's range
    for fastnn's own layers, whose argmax comes from their own forward. A backend with
    ``ARGMAX_RANGE_CHECKED`` checks it as it scatters; for the others it is a scan first
    (two passes over argmax: 17% of the call for (128, 26, 26, 32) float)."""
    layout = layout_arg(layout)
    dy = float_array(dy, "dy", 4)
    shp = _checks.shape4(x_shape, "x_shape")
    g = _pool_geometry(shp, pool_size, stride, padding, layout, "x_shape")
    yshape = g.y_shape(layout, g.c)
    _checks.expect_shape(dy, yshape, "dy", f"the pooled output shape, {layout}")
    backend, per_sample = _backend.get(), g.h * g.w * g.c
    fused = check_range and getattr(backend, "ARGMAX_RANGE_CHECKED", False)
    argmax = _argmax_arg(argmax, yshape, per_sample, check_range and not fused)
    dx = _out_array(out, shp, dy.dtype, "out", (dy, argmax))
    if g.n:
        in_range = backend.maxpool2d_backward(dy, argmax, g, layout, dx)
        if fused and not in_range:
            raise _argmax_range_error(argmax, per_sample)
    return dx


def avgpool2d_forward(x, pool_size, *, stride=None, padding=0, layout="NHWC",
                      out: Optional[np.ndarray] = None) -> np.ndarray:
    """2-D average pooling over the in-bounds elements of each window (Keras semantics:
    padding is not counted in the divisor).

    ``out`` (optional): a C-contiguous array of y's shape and dtype, not overlapping x,
    written and returned.

    Returns
    -------
    y : ndarray, shape (N, OH, OW, C) NHWC or (N, C, OH, OW) NCHW
    """
    layout = layout_arg(layout)
    x = float_array(x, "x", 4)
    g = _pool_geometry(x.shape, pool_size, stride, padding, layout, "x")
    y = _out_array(out, g.y_shape(layout, g.c), x.dtype, "out", (x,))
    if g.n:
        _backend.get().avgpool2d_forward(x, g, layout, y)
    return y


def avgpool2d_backward(dy, x_shape, pool_size, *, stride=None, padding=0,
                       layout="NHWC", out: Optional[np.ndarray] = None) -> np.ndarray:
    """Backward of :func:`avgpool2d_forward`. ``out`` (optional): an array of shape
    ``x_shape``, C-contiguous, not overlapping dy, written and returned.

    Returns
    -------
    dx : ndarray of shape ``x_shape``
    """
    layout = layout_arg(layout)
    dy = float_array(dy, "dy", 4)
    shp = _checks.shape4(x_shape, "x_shape")
    g = _pool_geometry(shp, pool_size, stride, padding, layout, "x_shape")
    _checks.expect_shape(dy, g.y_shape(layout, g.c), "dy", f"the pooled output shape, {layout}")
    dx = _out_array(out, shp, dy.dtype, "out", (dy,))
    if g.n:
        _backend.get().avgpool2d_backward(dy, g, layout, dx)
    return dx


# --------------------------------------------------------------------------- losses
def softmax_cross_entropy(z, target, *, scale: float = 1.0,
                          out: Optional[tuple] = None
                          ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax cross-entropy from logits: probabilities, per-row loss and gradient in one
    pass (the ``SoftmaxWithLoss`` of from-scratch code, without a one-hot matrix).

    Per row, with ``s = z - max(z)`` and ``total = sum(exp(s))``::

        probs = exp(s) / total
        loss  = log(total) - s[label]                 (integer labels)
              = sum(t * (log(total) - s))             (float targets t)
        dz    = (probs - onehot(label)) * scale       (integer labels)
              = (probs * sum(t) - t) * scale          (float targets t)

    ``dz`` is the gradient of ``scale * sum(loss)``: ``scale = 1 / N`` gives the gradient
    of the mean loss. NaN in a row of ``z`` makes that row's results NaN.

    Parameters
    ----------
    z : ndarray, shape (N, K), K >= 1
        Logits, float32 or float64.
    target : ndarray
        Integer class labels, shape (N,), in [0, K); or float targets of z's dtype,
        shape (N, K) (one-hot rows, or any non-negative weights).
    scale : float
        Multiplies the gradient.
    out : tuple (probs, loss, dz) of arrays or None, optional
        Written and returned: probs (N, K), loss (N,), dz (N, K) of z's dtype, C-contiguous,
        overlapping neither the inputs nor each other.

    Returns
    -------
    probs : ndarray, shape (N, K)
    loss : ndarray, shape (N,)
    dz : ndarray, shape (N, K)
    """
    z = float_array(z, "z", 2)
    n, k = z.shape
    if k < 1:
        raise ValueError(f"z must have at least one class (K >= 1), received shape {z.shape}")
    scale = _checks.scalar(scale, "scale")
    target = _checks.as_array(target, "target", "integer labels or float targets (an "
                              "array)")
    labels = t = None
    if target.dtype.kind in "iu":
        _checks.expect_shape(target, (n,), "target", "integer labels: one per row of z")
        if n:   # (the range of the labels as given: a uint64 cast to int64 could wrap)
            lo, hi = target.min(), target.max()
            if lo < 0 or hi >= k:
                raise ValueError(f"target labels must be in [0, {k}) for {k} classes, "
                                 f"received values in [{lo}, {hi}]")
        labels = _checks.c_array(target, np.int64)
    elif target.dtype.kind == "f":
        t = float_array(target, "target", 2)
        same_dtype([z, t], ["z", "target"])
        _checks.expect_shape(t, (n, k), "target", "float targets: the shape of z")
    else:
        raise TypeError(f"target must hold integer labels or float targets, received dtype "
                        f"{target.dtype}")
    probs, loss, dz = _out_tuple(out, 3, "out")
    probs = _out_array(probs, (n, k), z.dtype, "out[0] (probs)", (z, t, labels))
    loss = _out_array(loss, (n,), z.dtype, "out[1] (loss)", (z, t, labels, probs))
    dz = _out_array(dz, (n, k), z.dtype, "out[2] (dz)", (z, t, labels, probs, loss))
    if n:
        _backend.get().softmax_xent(z, labels, t, scale, probs, loss, dz)
    return probs, loss, dz


# --------------------------------------------------------------------------- optimizers
def adam_update(param, grad, m, v, *, alpha: float, beta_1: float = 0.9,
                beta_2: float = 0.999, epsilon: float = 1e-7,
                v_hat: Optional[np.ndarray] = None, flush_subnormal: bool = False) -> None:
    """One fused Adam step (Keras's formulas), in place, in one pass over the arrays.

    Every operation runs in the arrays' dtype, in this order (``omb1 = 1 - beta_1`` and
    ``omb2 = 1 - beta_2`` computed in float64, then rounded to the dtype like ``alpha`` and
    ``epsilon``)::

        m += (grad - m) * omb1
        v += (grad**2 - v) * omb2
        if flush_subnormal:  m, v of magnitude below the dtype's smallest normal = +0
        if v_hat is not None:  v_hat = maximum(v_hat, v), used as v below  (AMSGrad)
                               (flushed likewise)
        param -= (m * alpha) / (sqrt(v) + epsilon)

    so all backends give bitwise the same result.

    Pass ``flush_subnormal=True`` for long training runs: where a gradient stays 0 (a dead
    ReLU unit, the weights of an always-black pixel), ``m`` decays into the subnormal range
    and sticks there (``0.9 * m`` rounds back to ``m`` below about 1e-44), and from then on
    every step does arithmetic on subnormals, which x86 CPUs run through a slow microcode
    path: 17x slower with such an ``m``, 33x with ``v`` too (100k float32, one Xeon
    thread). The C backend then also runs the step in the CPU's flush-to-zero mode (x86:
    FTZ and DAZ, set for the call only, on each of its threads, as TensorFlow sets it for
    Keras; not when ``alpha``, ``epsilon`` or ``1 - beta`` is itself subnormal), so an
    intermediate such as ``(grad**2 - v) * omb2`` below the smallest normal number counts
    as 0 too: without that, v's ~7000 steps of decay from 1e-35 to 1e-38 kept a step slow.
    Where an operand or result is subnormal, the C results can then differ from the other
    backends': a moment whose gradient stays 0 stops decaying once its decrement is below
    the smallest normal number (float32 ``m`` below ~1e-37 with ``beta_1 = 0.9``; the
    others decay it to 0), which moves ``param`` by ``m * alpha / (sqrt(v) + epsilon)``
    per step, nothing for a parameter above ~1e-20 at any usual ``alpha``. With no
    subnormal operand or result every backend gives the same bits.
    fastnn.optimizers.Adam flushes; the default keeps the formula above exact.

    Parameters
    ----------
    param, m, v : ndarray, C-contiguous, writeable, aligned, one shape and float dtype
        Updated in place.
    grad : ndarray of the same shape and dtype, read only
    alpha : float
        The step size with the bias corrections folded in:
        ``lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)`` at step ``t``.
    beta_1, beta_2 : float in [0, 1)
    epsilon : float >= 0
        Added to ``sqrt(v)`` (Keras's "epsilon hat" convention).
    v_hat : ndarray like param, optional
        AMSGrad's running maximum of v, updated in place.
    flush_subnormal : bool, default False
        Store moments below the smallest normal number (in magnitude) as +0.
    """
    arrays = {"param": param, "grad": grad, "m": m, "v": v}
    if v_hat is not None:
        arrays["v_hat"] = v_hat
    for name, a in arrays.items():
        if type(a) is not np.ndarray:
            raise TypeError(f"{name} must be a numpy ndarray (a plain one: not a subclass "
                            f"such as np.matrix), received {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be float32 or float64, received {a.dtype}")
        if a.shape != param.shape:
            raise ValueError(f"{name} has shape {a.shape} but param has shape {param.shape}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")
        if name != "grad" and not a.flags.writeable:
            raise ValueError(f"{name} must be writeable (it is updated in place)")
        if name != "grad" and not a.flags.aligned:
            raise ValueError(f"{name} must be aligned for its dtype (not a view of a byte "
                             f"buffer at an odd offset): it is updated in place")
    same_dtype(list(arrays.values()), list(arrays))
    items = list(arrays.items())
    for i, (name_a, a) in enumerate(items):
        for name_b, b in items[i + 1:]:
            if np.may_share_memory(a, b):
                raise ValueError(f"{name_a} and {name_b} overlap in memory; param, grad, m, v "
                                 f"and v_hat must be distinct arrays")
    scalars = {}
    for name, val in (("alpha", alpha), ("beta_1", beta_1), ("beta_2", beta_2),
                      ("epsilon", epsilon)):
        scalars[name] = _checks.scalar(val, name)
    if not 0.0 <= scalars["beta_1"] < 1.0 or not 0.0 <= scalars["beta_2"] < 1.0:
        raise ValueError(f"beta_1 and beta_2 must be in [0, 1), received "
                         f"{beta_1!r} and {beta_2!r}")
    if not scalars["epsilon"] >= 0.0:
        raise ValueError(f"epsilon must be >= 0, received {epsilon!r}")
    flush = _checks.flag(flush_subnormal, "flush_subnormal")
    grad = _checks.c_array(grad)   # (a misaligned one copied)
    _adam_update(param, grad, m, v, v_hat, scalars["alpha"], 1.0 - scalars["beta_1"],
                 1.0 - scalars["beta_2"], scalars["epsilon"], flush)


def _adam_update(param, grad, m, v, v_hat, alpha, omb1, omb2, eps, flush) -> None:
    """:func:`adam_update` without the checks, for fastnn's own optimizers, which own
    (and have validated) their arrays."""
    if param.size:
        _backend.get().adam_update(param.reshape(-1), grad.reshape(-1), m.reshape(-1),
                                   v.reshape(-1), None if v_hat is None else v_hat.reshape(-1),
                                   alpha, omb1, omb2, eps, flush)
