"""Drop-in replacement for ``common/util.py``, ``common/layers.py`` and
``common/optimizer.py`` of "Deep Learning from Scratch" (Koki Saitou, O'Reilly Japan,
github.com/oreilly-japan/deep-learning-from-scratch), running on :mod:`fastnn.ops`.

Change one import and the book's networks (``SimpleConvNet``, ``MultiLayerNet``, ...) and
training loops run unchanged and faster (``bench/bench_dlfs.py`` measures by how much),
with the same numbers::

    # from common.layers import *
    # from common.optimizer import Adam
    from fastnn.compat.dlfs import *

What is provided
----------------
``im2col``, ``col2im``; the layers ``Convolution``, ``Pooling``, ``Affine``, ``Relu``,
``Sigmoid``, ``SoftmaxWithLoss``, ``Dropout``, ``BatchNormalization`` (``forward`` /
``backward`` and the book's public attributes: ``W``, ``b``, ``dW``, ``db``, ``x``, ``col``,
``col_W``, ``arg_max``, ``mask``, ``out``, ``loss``, ``y``, ``t``, ``dgamma``, ``dbeta``,
``running_mean``, ...); the optimizers ``SGD``, ``Momentum``, ``Nesterov``, ``AdaGrad``,
``RMSprop``, ``Adam`` (``update(params, grads)``); the rest of ``common/util.py``
(``conv_output_size``, ``shuffle_dataset``, ``smooth_curve``) and the functions of
``common/functions.py`` (``sigmoid``, ``softmax``, ``cross_entropy_error``, ``relu``, ...),
which the book's ``common/layers.py`` re-exports, in plain NumPy as in the book.

Same numbers
------------
Every layer computes what the book's computes, on the same inputs, to floating-point
round-off: convolution, pooling and the affine products run in fastnn's kernels (C, Numba
or NumPy, whichever backend is active), which sum the same products in another order; the
element-wise layers and the optimizers give bit-identical results: ``Relu`` and float64
``Adam`` through fastnn kernels that do the book's operations in the book's order
(:func:`fastnn.ops.relu_mask`, the fused Adam step), the rest as the book's NumPy
expressions. fastnn's kernels never build the whole batch's column
matrix (they lower a bounded chunk of images at a time, see
:func:`fastnn.ops.set_workspace_limit`); ``Convolution.col`` is computed on demand when read.

Shared parameters
-----------------
Layers keep references, never copies: ``Convolution.W`` is the very array the network
put in its ``params`` dict, and every ``forward`` reads ``self.W`` / ``self.b`` again, so
in-place optimizer updates (``params[key] -= ...``) and rebinding (``layer.W =
params['W1']``) are both seen by the next ``forward``. The optimizers update
``params[key]`` in place, like the book's.

Output arrays
-------------
As in the book, every call returns arrays of its own: an output, a gradient or ``dW`` the
caller keeps (or a view of one) never changes afterwards. Behind that, ``Convolution``,
``Relu``, ``Pooling`` and ``Affine`` reuse the arrays of earlier calls that nothing refers
to any more, instead of new megabytes every step (whose pages the OS faults in: about 1 ms
of the 13 ms step of ``bench/bench_dlfs.py``). They share one pool per thread, which keeps
up to four arrays of each shape while they are in use (about 70 MB for the book's conv net
at batch 100); ``release_buffers()`` lets go of them at once, e.g. after deleting a net.

Behaviour kept from the book (results depend on it)
---------------------------------------------------
* ``Pooling``'s default stride is 1 (``Pooling(pool_h, pool_w, stride=1, pad=0)``), as in
  the book's ``common/layers.py``; the book's networks pass ``stride=2`` explicitly.
* ``Pooling.arg_max`` is the book's: a 1-D int array over rows (n, oh, ow, c) holding the
  index of the maximum inside the flattened (kh, kw) window; ties go to the first element.
* ``Pooling`` with ``pad > 0``: the book pads with zeros and takes the maximum over the
  padded window (a zero from the padding can win), but computes its output size *without*
  the padding. It therefore works only when both sizes agree (``(H - pool_h) % stride +
  2 * pad < stride``, likewise for W, so never with ``stride <= 2 * pad``); there this
  module gives the same output and gradient. Everywhere else the book crashes in a reshape
  and this module raises ``ValueError`` before computing.
* ``Relu.backward(dout)`` writes into ``dout`` (zeroing it where the input was <= 0) and
  returns that same array; ``Relu`` maps -0.0 and every x <= 0 to +0.0 and keeps NaN.
* ``SoftmaxWithLoss``: ``softmax`` subtracts the row maximum; the loss is the book's
  ``cross_entropy_error``: ``-sum(log(y[t] + 1e-7)) / batch``. A teacher ``t`` of the
  same size as the scores is one-hot, otherwise it holds labels. ``backward(dout)`` ignores
  ``dout`` and returns ``(y - t) / batch``, where batch is ``t.shape[0]`` (so for a single
  1-D sample with a one-hot ``t`` it divides by the number of classes, as the book does).
* ``Dropout`` draws ``np.random.rand(*x.shape) > dropout_ratio`` from NumPy's *global*
  generator (``np.random.seed`` reproduces the book's masks) and is not inverted dropout:
  training multiplies by the 0/1 mask, testing multiplies by ``1 - dropout_ratio``.
* ``BatchNormalization`` reshapes a 4-D input to (N, C*H*W) and normalises every one of
  the C*H*W features separately (not per channel), with ``10e-7`` (= 1e-6) added to the
  variance; ``running_mean`` / ``running_var`` start as zeros on the first ``forward``.
* ``Convolution.backward`` uses the weights ``W`` it was given at ``forward`` time (the
  book keeps ``col_W``, a view of them); ``Affine.backward`` uses the current ``self.W``.
* Optimizers: the book's formulas and epsilons (``1e-7`` in AdaGrad, RMSprop and Adam),
  Adam's bias correction folded into ``lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``,
  state created from ``params`` at the first ``update``. ``Nesterov`` takes ``lr=0.01,
  momentum=0.9``.

Deliberate differences
----------------------
* dtypes: the book's ``im2col`` / ``col2im`` always return float64, so its convolution and
  pooling are float64 whatever the input. Here float32 in gives float32 out (``im2col``,
  ``col2im``, ``Pooling``; ``Convolution`` when ``x``, ``W`` and ``b`` are all float32,
  else float64). ``Affine`` follows NumPy's promotion step by step, as the book's
  expressions do: ``np.dot(x, W)`` in x and W's dtype, then ``+ b`` (float32 data and
  weights with the book's float64 ``b`` give float64); ``dx``, ``dW`` in their operands'
  dtype, ``db`` in dout's (so does ``Convolution``'s ``db``). Integer, bool or float16
  operands are computed in float64 throughout. ``BatchNormalization`` creates its running
  statistics as float32 when its input and ``gamma`` are float32 (the book always uses
  float64).
* Where the book crashes or silently misreads an argument, this module raises
  ``ValueError`` or ``TypeError`` naming the argument, what it received and what was
  expected, before any computation: pooling padding that the book cannot handle (above),
  windows larger than the (padded) input (the book crashes or returns an empty result),
  mismatched shapes, labels outside ``[0, classes)`` or not of shape (N,), non-integer
  labels, ``stride``/``pad`` that are not ints, parameters missing from ``grads``, an
  empty batch in ``SoftmaxWithLoss`` (the book crashes) and in a training
  ``BatchNormalization.forward`` (the book silently sets ``running_mean`` and
  ``running_var`` to NaN). ``backward`` before ``forward`` raises ``RuntimeError``.
  The other layers and ``im2col`` take an empty batch (N = 0) and return empty results,
  where the book crashes in a reshape.
* Optimizers require every ``params`` value to be a float ndarray (updated in place).

Every layer and optimizer runs on whichever fastnn backend is active
(:func:`fastnn.set_backend` / :func:`fastnn.use_backend`).
"""
from __future__ import annotations

import numbers
import sys
import threading
from collections.abc import Mapping

import numpy as np

from .. import ops

__all__ = [
    "im2col", "col2im", "conv_output_size", "shuffle_dataset", "smooth_curve",
    "identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad",
    "softmax", "sum_squared_error", "cross_entropy_error", "softmax_loss",
    "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout", "BatchNormalization",
    "Convolution", "Pooling",
    "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam",
    "release_buffers",
]

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


# --------------------------------------------------------------------------- argument checks
def _int_arg(value, name: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (bools and non-integers are rejected)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, received {value!r} "
                        f"({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, received {value!r}")
    return int(value)


def _array(x, name: str, ndim=None, what: str = "") -> np.ndarray:
    """``x`` as a real (float, int or bool) ndarray, optionally of ``ndim`` dimensions."""
    if not isinstance(x, np.ndarray):
        if x is None:
            raise TypeError(f"{name} must be a numpy array{' ' + what if what else ''}, "
                            "received None")
        try:
            x = np.asarray(x)
        except Exception as exc:
            raise TypeError(f"{name} must be a numpy array, received "
                            f"{type(x).__name__} ({exc})") from None
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real (float, int or bool) array, received "
                        f"dtype {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            dims = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {dims}{' ' + what if what else ''}, received "
                             f"shape {x.shape}")
    return x


def _compute_dtype(*arrays) -> np.dtype:
    """The dtype NumPy would give ``arrays`` combined, if float32 or float64; float64 for
    any other real dtype (ints, bools, float16, longdouble)."""
    rt = np.result_type(*arrays)
    return _F32 if rt == _F32 else _F64


def _sum0(d: np.ndarray) -> np.ndarray:
    """The book's ``np.sum(d, axis=0)`` of a gradient: in ``d``'s own dtype when it is
    float32 or float64, else in float64 (the module's rule for other dtypes)."""
    return np.sum(d if d.dtype in (_F32, _F64) else d.astype(_F64), axis=0)


def _rows(dout: np.ndarray) -> np.ndarray:
    """The book's ``dout.transpose(0, 2, 3, 1).reshape(-1, FN)`` of a convolution's
    output gradient (N, FN, OH, OW)."""
    return dout.transpose(0, 2, 3, 1).reshape(-1, dout.shape[1])


def _single_dtype(x: np.ndarray) -> np.dtype:
    return _F32 if x.dtype == _F32 else _F64


def _as(a, dtype) -> np.ndarray:
    """``a`` C-contiguous in ``dtype`` (no copy when it already is)."""
    return np.ascontiguousarray(a, dtype=dtype)


def _window_fits(h, w, fh, fw, stride, pad, what):
    """The book's output size ``(H + 2*pad - FH) // stride + 1``, required to be >= 1."""
    if h + 2 * pad < fh or w + 2 * pad < fw:
        raise ValueError(
            f"the {what} window {fh}x{fw} is larger than the padded input "
            f"{h + 2 * pad}x{w + 2 * pad} (input H, W = {h}, {w}, pad={pad}): there is no "
            "output position (the original crashes or returns an empty array)")
    return (h + 2 * pad - fh) // stride + 1, (w + 2 * pad - fw) // stride + 1


def _not_before_forward(ctx, layer: str) -> None:
    if ctx is None:
        raise RuntimeError(f"{layer}.backward was called before {layer}.forward")


# --------------------------------------------------------------------------- output buffers
class _Buffers:
    """The output arrays of every layer of this module, handed out again once nothing
    else refers to them.

    The book's layers return new arrays from every call. For the megabytes a convolution
    layer's outputs take, new arrays mean new pages, which the OS faults in and zeroes:
    with glibc returning the freed blocks between steps, the conv net of
    ``bench/bench_dlfs.py`` took 277 page faults and 13.6-14.6 ms per step, against none and
    12.5-13.0 ms with its arrays reused. An array here is given out again only when the only
    references to it are this pool's own: ``sys.getrefcount`` of it is at most that of a
    sentinel array the pool holds the same way, measured by the same code on every call
    (so a count the interpreter reports differently in hot code moves both alike). An
    output a caller still holds, or a view of it, is never overwritten, and one the caller
    made read-only, reshaped, retyped or restrided is dropped, not reused: to the caller
    every output is a new array. Without ``sys.getrefcount`` (PyPy) or with the GIL
    disabled (free-threaded CPython, where the count could change between the check and
    the use) every call allocates, as the book does.

    One pool for all layers (per thread), by shape and dtype, and of the free arrays the one
    handed out last: a step then cycles through as few arrays as it can, touched as
    recently as they can be. The book's net touches some 70 MB per step, about what this
    Xeon's share of its L3 keeps (an elementwise pass over 13.8 MB took 0.63 ms after 40 MB
    of other traffic, 0.89 after 80 MB, 1.30 after 160 MB): with a pool per layer, the
    output ``Pooling`` still held (its ``x``) made ``Relu`` alternate between two 13.8 MB
    arrays, each written back from memory every other step, where now it takes the
    gradient array of the step before. An array not handed out for ``_STALE`` calls is let
    go once free (a new batch size, an evaluation on a larger batch).
    """

    __slots__ = ("_pools", "_sentinel", "_count")
    _MAX = 4        # arrays per (shape, dtype)
    _STALE = 256    # calls: about 20 training steps of the book's conv net

    def __init__(self):
        self._pools = {}                 # (shape, dtype) -> [arrays, stamps]
        self._sentinel = [np.empty(0)]   # held as the arrays are: a list slot
        self._count = 0

    def get(self, shape, dtype) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``: the free one handed out last,
        or a new one (kept for reuse while its shape has room)."""
        shape, dtype = tuple(shape), np.dtype(dtype)
        if not _REUSE:
            return np.empty(shape, dtype)
        self._count += 1
        if self._count % 64 == 0:
            self._sweep()
        entry = self._pools.get((shape, dtype))
        if entry is None:
            entry = self._pools[(shape, dtype)] = ([], [])
        arrays, stamps = entry
        free = sys.getrefcount(self._sentinel[0])
        best = -1
        for i in range(len(arrays)):
            if sys.getrefcount(arrays[i]) <= free and (best < 0 or stamps[i] > stamps[best]):
                best = i
        if best >= 0:
            a = arrays[best]
            if a.shape == shape and a.dtype == dtype and a.flags.writeable and \
                    a.flags.c_contiguous:
                stamps[best] = self._count
                return a
            # made read-only, reshaped, retyped or restrided in place: let it go
            del arrays[best], stamps[best]
        a = np.empty(shape, dtype)
        if len(arrays) < self._MAX:
            arrays.append(a)
            stamps.append(self._count)
        return a

    def _sweep(self) -> None:
        """Let go of the free arrays not handed out in the last ``_STALE`` calls."""
        free = sys.getrefcount(self._sentinel[0])
        for key in list(self._pools):
            arrays, stamps = self._pools[key]
            for i in reversed(range(len(arrays))):
                if self._count - stamps[i] > self._STALE and \
                        sys.getrefcount(arrays[i]) <= free:
                    del arrays[i], stamps[i]
            if not arrays:
                del self._pools[key]

    def holds(self, a) -> bool:
        """Whether ``a`` is one of the pool's arrays (for tests)."""
        return any(a is b for arrays, _ in self._pools.values() for b in arrays)


_REUSE = hasattr(sys, "getrefcount") and getattr(sys, "_is_gil_enabled", lambda: True)()


class _ThreadBuffers(threading.local):
    """One pool per thread: between a pool's check that an array is free and its return,
    another thread could run and take the same array (the GIL switches between bytecodes),
    and two nets trained in two threads would then write into one array."""

    def __init__(self):
        self.pool = _Buffers()


_LOCAL = _ThreadBuffers()


def _buffers() -> _Buffers:
    """This thread's pool."""
    return _LOCAL.pool


def release_buffers() -> None:
    """Let go of the output arrays this thread's layers keep for reuse (not a name of the
    book's). The layers of this module hand their outputs out again once nothing refers
    to them, from one pool per thread that keeps up to four arrays of each shape (about
    70 MB for the book's conv net at batch 100, more after a ``predict`` on a large batch)
    until they go unused for a while or the thread ends; call this to return that memory
    at once, e.g. after deleting a network. Arrays still held elsewhere are not affected."""
    _LOCAL.pool = _Buffers()


def _buffer(shape, dtype) -> np.ndarray:
    """An uninitialised array from this thread's pool (see ``_Buffers``)."""
    return _LOCAL.pool.get(shape, dtype)


# --------------------------------------------------------------------------- util.py
def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """Lower image patches to the rows of a matrix (the book's ``common.util.im2col``).

    Parameters
    ----------
    input_data : ndarray, shape (N, C, H, W)
    filter_h, filter_w : int
        Window height and width (>= 1).
    stride : int, default 1
    pad : int, default 0
        Zero padding on every side.

    Returns
    -------
    col : ndarray, shape (N*OH*OW, C*filter_h*filter_w)
        Rows over (n, oh, ow), columns over (c, kh, kw), with ``OH = (H + 2*pad -
        filter_h) // stride + 1`` (likewise OW). float32 for float32 input, float64
        otherwise (the book always returns float64).

    Raises
    ------
    TypeError, ValueError
        Bad arguments, or a window larger than the padded input.
    """
    x = _array(input_data, "input_data", 4, "(N, C, H, W)")
    fh = _int_arg(filter_h, "filter_h", 1)
    fw = _int_arg(filter_w, "filter_w", 1)
    stride = _int_arg(stride, "stride", 1)
    pad = _int_arg(pad, "pad", 0)
    n, c, h, w = x.shape
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"input_data must have C, H, W >= 1, received shape {x.shape}")
    _window_fits(h, w, fh, fw, stride, pad, "filter")
    return ops.im2col(_as(x, _single_dtype(x)), (fh, fw), stride=stride, padding=pad,
                      layout="NCHW")


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Adjoint of :func:`im2col`: scatter-add the columns back into images (the book's
    ``common.util.col2im``).

    Parameters
    ----------
    col : ndarray of N*OH*OW*C*filter_h*filter_w elements
        Normally of shape (N*OH*OW, C*filter_h*filter_w); like the book, any shape with
        that many elements is accepted and read in C order.
    input_shape : tuple of 4 ints
        (N, C, H, W) of the image batch.
    filter_h, filter_w, stride, pad : int
        As for :func:`im2col`.

    Returns
    -------
    img : ndarray, shape ``input_shape``
        Overlapping windows accumulate; gradients falling on the padding are dropped.
        float32 for float32 ``col``, float64 otherwise (the book always returns float64).
    """
    cols = _array(col, "col")
    try:
        shp = tuple(_int_arg(v, "input_shape", 0) for v in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be a tuple of 4 ints (N, C, H, W), received "
                        f"{input_shape!r}") from None
    if len(shp) != 4 or min(shp) < 0:
        raise ValueError(f"input_shape must be a tuple of 4 non-negative ints (N, C, H, W), "
                         f"received {input_shape!r}")
    fh = _int_arg(filter_h, "filter_h", 1)
    fw = _int_arg(filter_w, "filter_w", 1)
    stride = _int_arg(stride, "stride", 1)
    pad = _int_arg(pad, "pad", 0)
    n, c, h, w = shp
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"input_shape must have C, H, W >= 1, received {shp}")
    oh, ow = _window_fits(h, w, fh, fw, stride, pad, "filter")
    rows, patch = n * oh * ow, c * fh * fw
    if cols.size != rows * patch:
        raise ValueError(f"col must have N*OH*OW*C*FH*FW = {n}*{oh}*{ow}*{c}*{fh}*{fw} = "
                         f"{rows * patch} elements (shape ({rows}, {patch})), received "
                         f"shape {cols.shape}")
    cols = _as(cols, _single_dtype(cols)).reshape(rows, patch)
    return ops.col2im(cols, shp, (fh, fw), stride=stride, padding=pad, layout="NCHW")


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """``(input_size + 2*pad - filter_size) / stride + 1`` -- a true division, so a float,
    as in the book's ``common.util.conv_output_size``."""
    return (input_size + 2 * pad - filter_size) / stride + 1


def shuffle_dataset(x, t):
    """Shuffle ``x`` and ``t`` along the first axis with one permutation drawn from NumPy's
    global generator (the book's ``common.util.shuffle_dataset``).

    Parameters
    ----------
    x : ndarray, shape (N, D) or (N, C, H, W)
    t : ndarray, shape (N, ...)

    Returns
    -------
    x, t : shuffled copies
    """
    permutation = np.random.permutation(x.shape[0])
    x = x[permutation, :] if x.ndim == 2 else x[permutation, :, :, :]
    t = t[permutation]
    return x, t


def smooth_curve(x):
    """Smooth a loss curve with an 11-point Kaiser window (the book's
    ``common.util.smooth_curve``); returns ``len(x)`` values (for ``len(x) >= 11``)."""
    window_len = 11
    s = np.r_[x[window_len - 1:0:-1], x, x[-1:-window_len:-1]]
    w = np.kaiser(window_len, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:len(y) - 5]


# --------------------------------------------------------------------------- functions.py
def identity_function(x):
    """Return ``x``."""
    return x


def step_function(x):
    """``1`` where ``x > 0``, else ``0``, as a NumPy int array."""
    return np.array(x > 0, dtype=int)


def sigmoid(x):
    """``1 / (1 + exp(-x))`` (the book's ``common.functions.sigmoid``)."""
    return 1 / (1 + np.exp(-x))


def sigmoid_grad(x):
    """``(1 - sigmoid(x)) * sigmoid(x)``."""
    return (1.0 - sigmoid(x)) * sigmoid(x)


def relu(x):
    """``np.maximum(0, x)``."""
    return np.maximum(0, x)


def relu_grad(x):
    """``1`` where ``x >= 0`` (note: including 0, as in the book), else ``0``; dtype of x."""
    grad = np.zeros_like(x)
    grad[x >= 0] = 1
    return grad


def sum_squared_error(y, t):
    """``0.5 * sum((y - t)**2)``."""
    return 0.5 * np.sum((y - t) ** 2)


def softmax_loss(X, t):
    """``cross_entropy_error(softmax(X), t)``."""
    y = softmax(X)
    return cross_entropy_error(y, t)


def softmax(x):
    """Softmax over the last axis after subtracting its maximum (the book's
    ``common.functions.softmax``)."""
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    """The book's ``common.functions.cross_entropy_error``:
    ``-sum(log(y[i, t_i] + 1e-7)) / batch``.

    Parameters
    ----------
    y : ndarray, shape (N, C) or (C,)
        Probabilities.
    t : ndarray
        One-hot (``t.size == y.size``) or integer labels.
    """
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


# --------------------------------------------------------------------------- element-wise layers


class Relu:
    """Rectified linear unit: ``out = x`` where ``x > 0``, else +0.0.

    Attributes
    ----------
    mask : bool ndarray
        ``x <= 0`` of the last forward input.

    Notes
    -----
    As in the book, ``backward(dout)`` zeroes ``dout`` *in place* where ``mask`` is True
    and returns the same array object. NaN inputs pass through (NaN <= 0 is False); -0.0
    becomes +0.0. Results are bit-identical to the book's.
    """

    def __init__(self):
        self.mask = None

    def forward(self, x):
        """``x`` with every element <= 0 replaced by 0.

        Parameters
        ----------
        x : ndarray, any shape

        Returns
        -------
        out : ndarray, shape and dtype of ``x``
        """
        x = _array(x, "x")
        if x.dtype in (_F32, _F64):
            # fastnn's kernel for exactly this idiom: mask and output in one pass
            # the last mask let go first: reused unless the caller kept it
            self.mask = None
            out, self.mask = ops.relu_mask(x, out=_buffer(x.shape, x.dtype),
                                           mask=_buffer(x.shape, np.bool_))
            return out
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        """Zero ``dout`` in place where the forward input was <= 0 and return it.

        Parameters
        ----------
        dout : ndarray, the shape of the forward input (written in place)

        Returns
        -------
        dx : ndarray, the same object as ``dout``
        """
        _not_before_forward(self.mask, "Relu")
        if not isinstance(dout, np.ndarray):
            raise TypeError(f"dout must be a numpy array (Relu.backward writes into it, as "
                            f"the book does), received {type(dout).__name__}")
        if dout.shape != self.mask.shape:
            raise ValueError(f"dout must have the shape of the forward input "
                             f"{self.mask.shape}, received shape {dout.shape}")
        if not dout.flags.writeable:
            raise ValueError("dout must be writeable: Relu.backward zeroes it in place, as "
                             "the book does")
        if dout.dtype in (_F32, _F64) and dout.flags.c_contiguous and \
                isinstance(self.mask, np.ndarray) and self.mask.dtype == np.bool_:
            ops.relu_mask_backward(dout, self.mask, out=dout)
        else:
            dout[self.mask] = 0
        return dout


class Sigmoid:
    """Logistic sigmoid ``1 / (1 + exp(-x))``.

    Attributes
    ----------
    out : ndarray
        The last forward output (used by backward: ``dout * (1 - out) * out``).
    """

    def __init__(self):
        self.out = None

    def forward(self, x):
        """Return ``sigmoid(x)``; ``x`` is any real ndarray."""
        x = _array(x, "x")
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout):
        """Return ``dout * (1.0 - out) * out``."""
        _not_before_forward(self.out, "Sigmoid")
        dout = _array(dout, "dout")
        if dout.shape != self.out.shape:
            raise ValueError(f"dout must have the shape of the forward output "
                             f"{self.out.shape}, received shape {dout.shape}")
        return dout * (1.0 - self.out) * self.out


class Dropout:
    """Dropout as in the book (http://arxiv.org/abs/1207.0580), *not* inverted dropout.

    Parameters
    ----------
    dropout_ratio : float in [0, 1], default 0.5

    Attributes
    ----------
    mask : bool ndarray
        ``np.random.rand(*x.shape) > dropout_ratio`` from the last training forward.

    Notes
    -----
    Training multiplies by the 0/1 mask (no rescaling); testing (``train_flg=False``)
    multiplies by ``1 - dropout_ratio``. The mask is drawn from NumPy's global generator,
    so ``np.random.seed`` gives the book's masks.
    """

    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = self._ratio(dropout_ratio)
        self.mask = None

    @staticmethod
    def _ratio(r):
        if isinstance(r, (bool, np.bool_)) or not isinstance(r, numbers.Real):
            raise TypeError(f"dropout_ratio must be a real number in [0, 1], received {r!r}")
        if not 0.0 <= float(r) <= 1.0:
            raise ValueError(f"dropout_ratio must be in [0, 1], received {r!r}")
        return r

    def forward(self, x, train_flg=True):
        """``x * mask`` (new mask) when ``train_flg``, else ``x * (1 - dropout_ratio)``."""
        x = _array(x, "x")
        ratio = self._ratio(self.dropout_ratio)
        if train_flg:
            # (an array even for a 0-d x, where rand() returns a float)
            self.mask = np.asarray(np.random.rand(*x.shape) > ratio)
            return x * self.mask
        return x * (1.0 - ratio)

    def backward(self, dout):
        """Return ``dout * mask`` (the mask of the last training forward)."""
        _not_before_forward(self.mask, "Dropout")
        dout = _array(dout, "dout")
        if dout.shape != self.mask.shape:
            raise ValueError(f"dout must have the shape of the forward input "
                             f"{self.mask.shape}, received shape {dout.shape}")
        return dout * self.mask


class SoftmaxWithLoss:
    """Softmax followed by the book's cross-entropy loss.

    Attributes
    ----------
    loss : numpy float
        ``-sum(log(y[i, t_i] + 1e-7)) / batch`` of the last forward.
    y : ndarray
        Softmax probabilities (row maximum subtracted first).
    t : ndarray
        The teacher of the last forward: one-hot (same size as the scores) or labels.

    Notes
    -----
    ``backward(dout=1)`` ignores ``dout`` (the book's does) and returns ``(y - t) / batch``
    with ``batch = t.shape[0]``; for one 1-D sample with a one-hot ``t`` that divides by
    the number of classes, as the book does. For one 1-D sample with a label, the book's
    backward crashes; here it raises ValueError.
    """

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    @staticmethod
    def _teacher(t, x):
        t = _array(t, "t")
        if x.ndim == 2 and x.shape[0] == 0:
            raise ValueError(f"x must hold at least one sample, received shape {x.shape} "
                             "(the loss averages over the batch; the original crashes)")
        if t.size == x.size:
            if x.ndim == 2 and t.shape != x.shape:
                raise ValueError(f"t has as many elements as x, so it is read as one-hot, "
                                 f"and must then have the shape of x {x.shape}, received "
                                 f"shape {t.shape}")
            return t
        classes = x.shape[-1]
        want = (x.shape[0],) if x.ndim == 2 else (1,)
        if t.dtype.kind not in "iu":
            raise TypeError(f"t must be one-hot (shape {x.shape}) or integer labels of shape "
                            f"{want}, received dtype {t.dtype} and shape {t.shape}")
        if (x.ndim == 2 and t.shape != want) or (x.ndim == 1 and t.size != 1):
            raise ValueError(f"t must be one-hot (shape {x.shape}) or integer labels of shape "
                             f"{want}, received shape {t.shape}")
        if t.size and (t.min() < 0 or t.max() >= classes):
            raise ValueError(f"t must hold labels in [0, {classes}) (x has {classes} classes), "
                             f"received values in [{t.min()}, {t.max()}]")
        return t

    def forward(self, x, t):
        """Return the loss of scores ``x`` against teacher ``t``.

        Parameters
        ----------
        x : ndarray, shape (N, C) or (C,)
            Scores (logits).
        t : ndarray
            One-hot of the shape of ``x``, or integer labels of shape (N,) (a single
            label for 1-D ``x``).

        Returns
        -------
        loss : numpy float scalar
        """
        x = _array(x, "x", (1, 2), "(N, C) or (C,)")
        t = self._teacher(t, x)
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        """Return ``(y - t) / t.shape[0]`` (``dout`` is ignored, as in the book)."""
        _not_before_forward(self.y, "SoftmaxWithLoss")
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:
            return (self.y - self.t) / batch_size
        if self.y.ndim != 2:
            raise ValueError("SoftmaxWithLoss.backward needs 2-D scores (N, C) when t holds "
                             "labels; the forward got one 1-D sample (the original crashes "
                             "here): pass x[None] and t of shape (1,)")
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1
        return dx / batch_size


class BatchNormalization:
    """Batch normalisation as in the book (http://arxiv.org/abs/1502.03167).

    Parameters
    ----------
    gamma, beta : ndarray, shape (D,) (or broadcastable to (N, D))
        Scale and shift, kept by reference (an optimizer may update them in place).
    momentum : float, default 0.9
        ``running = momentum * running + (1 - momentum) * batch_statistic``.
    running_mean, running_var : ndarray, shape (D,), optional
        Zeros are created at the first ``forward`` when None.

    Attributes
    ----------
    input_shape, batch_size, xc, xn, std, dgamma, dbeta, running_mean, running_var

    Notes
    -----
    A 4-D input (N, C, H, W) is reshaped to (N, C*H*W): every one of the C*H*W features
    is normalised separately (not per channel), as in the book; so ``gamma`` has C*H*W
    elements. The variance gets ``10e-7`` (= 1e-6) before the square root.
    The running statistics are float32 when the input and ``gamma`` are (the book always
    creates them as float64).
    """

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        _array(gamma, "gamma")
        _array(beta, "beta")
        if isinstance(momentum, (bool, np.bool_)) or not isinstance(momentum, numbers.Real):
            raise TypeError(f"momentum must be a real number, received {momentum!r}")
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.xc = None
        self.xn = None
        self.std = None
        self.dgamma = None
        self.dbeta = None

    def forward(self, x, train_flg=True):
        """Normalise with the batch statistics (``train_flg``) or the running ones.

        Parameters
        ----------
        x : ndarray, shape (N, D) or (N, C, H, W)

        Returns
        -------
        out : ndarray, shape of ``x``
        """
        x = _array(x, "x", (2, 4), "(N, D) or (N, C, H, W)")
        self.input_shape = x.shape
        x2 = x.reshape(x.shape[0], -1) if x.ndim == 4 else x
        d = x2.shape[1]
        names = ("gamma", "beta")
        if self.running_mean is not None:   # (None: the book makes both, below)
            if self.running_var is None:
                raise ValueError("running_var is None but running_mean is not: give both "
                                 "(or neither: they start as zeros)")
            names += ("running_mean", "running_var")
        for name in names:
            p = _array(getattr(self, name), name)
            try:
                ok = np.broadcast_shapes(p.shape, x2.shape) == x2.shape
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{name} must broadcast to the normalised shape {x2.shape} "
                                 f"(D = {d} features; a 4-D input has C*H*W features), "
                                 f"received shape {p.shape}")
        out = self._forward(x2, train_flg)
        return out.reshape(*self.input_shape)

    def _forward(self, x, train_flg):
        if self.running_mean is None:
            d = x.shape[1]
            dt = _compute_dtype(x, _array(self.gamma, "gamma"))
            self.running_mean = np.zeros(d, dtype=dt)
            self.running_var = np.zeros(d, dtype=dt)
        if train_flg:
            if x.shape[0] == 0:
                raise ValueError("x must hold at least one sample when train_flg is True: the "
                                 "batch mean and variance of no samples are NaN, which the "
                                 "original writes into running_mean and running_var")
            mu = x.mean(axis=0)
            xc = x - mu
            var = np.mean(xc ** 2, axis=0)
            std = np.sqrt(var + 10e-7)
            xn = xc / std
            self.batch_size = x.shape[0]
            self.xc = xc
            self.xn = xn
            self.std = std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xc = x - self.running_mean
            xn = xc / ((np.sqrt(self.running_var + 10e-7)))
        return self.gamma * xn + self.beta

    def backward(self, dout):
        """Gradient with respect to the input; sets ``dgamma`` and ``dbeta``.

        Parameters
        ----------
        dout : ndarray, the shape of the forward input

        Returns
        -------
        dx : ndarray, the shape of the forward input
        """
        _not_before_forward(self.xc, "BatchNormalization")
        dout = _array(dout, "dout")
        if dout.shape != self.input_shape:
            raise ValueError(f"dout must have the shape of the forward input "
                             f"{self.input_shape}, received shape {dout.shape}")
        if dout.ndim != 2:
            dout = dout.reshape(dout.shape[0], -1)
        dx = self._backward(dout)
        return dx.reshape(*self.input_shape)

    def _backward(self, dout):
        dbeta = dout.sum(axis=0)
        dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        self.dgamma = dgamma
        self.dbeta = dbeta
        return dx


# --------------------------------------------------------------------------- Affine
def _affine_params(W, b):
    W = _array(W, "W", 2, "(D_in, D_out)")
    b = _array(b, "b")
    if b.size != W.shape[1]:
        raise ValueError(f"b must have W.shape[1] = {W.shape[1]} elements (one per output), "
                         f"received shape {b.shape}")
    return W, b


class Affine:
    """Fully connected layer ``out = x.reshape(N, -1) @ W + b``.

    Parameters
    ----------
    W : ndarray, shape (D_in, D_out)
    b : ndarray, shape (D_out,)
        Kept by reference, read again at every ``forward`` (shared with ``params``).

    Attributes
    ----------
    x : ndarray, shape (N, D_in)
        The last input, reshaped to 2-D (a view of it, as in the book).
    original_x_shape : tuple
        The shape of the last input; ``backward`` returns ``dx`` in it.
    dW, db : ndarray
        Gradients from the last ``backward``.

    Notes
    -----
    ``backward`` uses the current ``self.W`` (as the book does).
    """

    def __init__(self, W, b):
        _affine_params(W, b)
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None
        self._shape = None        # (N, D_in) of the last forward

    def forward(self, x):
        """Return ``x.reshape(N, -1) @ W + b``, shape (N, D_out).

        Parameters
        ----------
        x : ndarray, shape (N, ...) with prod(...) == D_in
        """
        W, b = _affine_params(self.W, self.b)
        x = _array(x, "x")
        if x.ndim < 1:
            raise ValueError(f"x must have a batch axis, received a scalar of shape {x.shape}")
        n = x.shape[0]
        d = int(np.prod(x.shape[1:], dtype=np.int64))
        if d != W.shape[0]:
            raise ValueError(f"x must have W.shape[0] = {W.shape[0]} features per sample "
                             f"(x.reshape(N, -1)), received shape {x.shape} ({d} features)")
        x2 = x.reshape(n, d)
        # the book's np.dot(x, W) + b: the product in x and W's dtype, then b added by
        # NumPy's promotion (float32 data and weights with a float64 b give float64)
        dtype = _compute_dtype(x, W)
        xc = _as(x2, dtype)
        out = ops.matmul(xc, _as(W, dtype), out=_buffer((n, W.shape[1]), dtype))
        b1 = b.reshape(-1)
        if np.result_type(out, b1) == dtype:
            out += b1
        else:
            out = out + b1
        self.original_x_shape = x.shape
        self.x = x2
        self._shape = xc.shape
        return out

    def backward(self, dout):
        """Return ``dx`` in the input's shape; set ``dW = x.T @ dout``, ``db = sum(dout)``.

        Parameters
        ----------
        dout : ndarray, shape (N, D_out)
        """
        _not_before_forward(self._shape, "Affine")
        W = _array(self.W, "W", 2, "(D_in, D_out)")
        dout = _array(dout, "dout", 2, "(N, D_out)")
        # dW from the attribute x, as the book's np.dot(self.x.T, dout): a value assigned to
        # it, or changed in place since forward, is the one used
        x = _array(self.x, "x", 2, "(N, D_in)")
        want = (self._shape[0], W.shape[1])
        if dout.shape != want or W.shape[0] != self._shape[1]:
            raise ValueError(f"dout must have shape {want} (N, D_out), received {dout.shape} "
                             f"(W has shape {W.shape})")
        if x.shape != self._shape:
            raise ValueError(f"x (the attribute) must keep the forward input's shape "
                             f"{self._shape} (N, D_in), received {x.shape}")
        # as the book's np.dot(dout, W.T), np.dot(x.T, dout), np.sum(dout, axis=0): each
        # in its own operands' dtype
        dt_x, dt_w = _compute_dtype(dout, W), _compute_dtype(x, dout)
        d_x = _as(dout, dt_x)
        d_w = d_x if dt_w == dt_x else _as(dout, dt_w)   # (one copy of a strided dout)
        dx = ops.matmul(d_x, _as(W, dt_x), trans_b=True, out=_buffer(self._shape, dt_x))
        self.dW = ops.matmul(_as(x, dt_w), d_w, trans_a=True,
                             out=_buffer(W.shape, dt_w))
        self.db = _sum0(dout)
        return dx.reshape(*self.original_x_shape)


# --------------------------------------------------------------------------- Convolution
def _conv_params(W, b):
    W = _array(W, "W", 4, "(FN, C, FH, FW)")
    if min(W.shape) < 1:
        raise ValueError(f"W must have every dimension >= 1, received shape {W.shape}")
    b = _array(b, "b")
    if b.size != W.shape[0]:
        raise ValueError(f"b must have FN = W.shape[0] = {W.shape[0]} elements (one per "
                         f"filter), received shape {b.shape}")
    return W, b


class Convolution:
    """2-D convolution (cross-correlation) of NCHW images, the book's ``Convolution``.

    Parameters
    ----------
    W : ndarray, shape (FN, C, FH, FW)
    b : ndarray, shape (FN,)
        Kept by reference, read again at every ``forward`` (shared with ``params``).
    stride : int, default 1
    pad : int, default 0
        Zero padding on every side.

    Attributes
    ----------
    x : ndarray
        The last input.
    col : ndarray, shape (N*OH*OW, C*FH*FW)
        ``im2col`` of the last input, computed only when read (fastnn never builds it).
    col_W : ndarray, shape (C*FH*FW, FN)
        ``W.reshape(FN, -1).T`` of the weights used by the last forward (a view).
    dW, db : ndarray
        Gradients from the last ``backward``, shapes of ``W`` and (FN,).

    Notes
    -----
    The output is ``(N, FN, OH, OW)`` with ``OH = (H + 2*pad - FH) // stride + 1``. The
    backward pass uses the weight array the forward pass used (the book's ``col_W``).
    """

    def __init__(self, W, b, stride=1, pad=0):
        _conv_params(W, b)
        self.W = W
        self.b = b
        self.stride = _int_arg(stride, "stride", 1)
        self.pad = _int_arg(pad, "pad", 0)
        self.x = None
        self.dW = None
        self.db = None
        self._ctx = None          # (input in compute dtype, W array used, stride, pad)
        self._col = None
        self._col_W = None

    def forward(self, x):
        """Return the convolution of ``x`` (N, C, H, W) with ``W`` plus ``b``:
        shape (N, FN, OH, OW)."""
        W, b = _conv_params(self.W, self.b)
        stride = _int_arg(self.stride, "stride", 1)
        pad = _int_arg(self.pad, "pad", 0)
        xa = _array(x, "x", 4, "(N, C, H, W)")
        fn, c, fh, fw = W.shape
        n, cx, h, w = xa.shape
        if cx != c:
            raise ValueError(f"x has {cx} channels (shape {xa.shape}, (N, C, H, W)) but W "
                             f"expects {c} (shape {W.shape}, (FN, C, FH, FW))")
        if h < 1 or w < 1:
            raise ValueError(f"x must have H, W >= 1, received shape {xa.shape}")
        oh, ow = _window_fits(h, w, fh, fw, stride, pad, "filter")
        # the book's im2col builds float64 columns from any input: float32 only when x, W
        # and b all are (see the module notes)
        dtype = _F32 if xa.dtype == W.dtype == b.dtype == _F32 else _F64
        xc = _as(xa, dtype)
        if np.may_share_memory(xc, xa):
            # the book's backward reads the columns it built here, a snapshot: x changed in
            # place before backward must not change dW (a copy of the input, not of the
            # kh*kw times larger columns)
            xc = xc.copy()
        out = ops.conv2d_forward(xc, _as(W, dtype), _as(b, dtype).reshape(fn), stride=stride,
                                 padding=pad, layout="NCHW",
                                 out=_buffer((n, fn, oh, ow), dtype))
        self.x = x
        self._ctx = (xc, self.W, stride, pad)
        self._col = None
        self._col_W = None
        return out

    def backward(self, dout):
        """Return ``dx`` (the input's shape); set ``dW`` (FN, C, FH, FW) and ``db`` (FN,).

        Parameters
        ----------
        dout : ndarray, shape (N, FN, OH, OW)
        """
        _not_before_forward(self._ctx, "Convolution")
        xc, W_used, stride, pad = self._ctx
        W = _array(W_used, "W", 4)
        dout = _array(dout, "dout", 4, "(N, FN, OH, OW)")
        n, c, h, w = xc.shape
        fn, _, fh, fw = W.shape
        oh, ow = _window_fits(h, w, fh, fw, stride, pad, "filter")
        if dout.shape != (n, fn, oh, ow):
            raise ValueError(f"dout must have the forward output's shape {(n, fn, oh, ow)} "
                             f"(N, FN, OH, OW), received shape {dout.shape}")
        if self._col is not None or self._col_W is not None:
            return self._backward_from_columns(dout, xc.shape, W.shape, stride, pad)
        dtype = _compute_dtype(xc, W, dout)
        dx, dW, db = ops.conv2d_backward(_as(dout, dtype), _as(xc, dtype), _as(W, dtype),
                                         stride=stride, padding=pad, layout="NCHW",
                                         out=(_buffer(xc.shape, dtype),
                                              _buffer(W.shape, dtype), None))
        self.dW = dW
        # the book's db is np.sum over dout's rows in dout's own dtype
        self.db = db if dout.dtype == dtype else _sum0(_rows(dout))
        return dx

    def _backward_from_columns(self, dout, x_shape, w_shape, stride, pad):
        """The book's backward, from ``col`` and ``col_W`` as they are now: once a caller
        has read or assigned either (and may have changed it), its values are the ones the
        book's formulas use, so they are used here too (fastnn's kernels, which work from
        the input, would not see them)."""
        fn, c, fh, fw = w_shape
        col = _array(self.col, "col", 2)
        col_W = _array(self.col_W, "col_W", 2)
        rows, patch = x_shape[0] * dout.shape[2] * dout.shape[3], c * fh * fw
        if col.shape != (rows, patch) or col_W.shape != (patch, fn):
            raise ValueError(f"col and col_W must keep the forward's shapes {(rows, patch)} "
                             f"and {(patch, fn)}, received {col.shape} and {col_W.shape}")
        d2 = _rows(dout)
        self.db = _sum0(d2)
        dtype = _compute_dtype(col, col_W, d2)
        d2 = _as(d2, dtype)
        self.dW = ops.matmul(_as(col, dtype), d2, trans_a=True).T.reshape(fn, c, fh, fw)
        dcol = ops.matmul(d2, _as(col_W, dtype), trans_b=True)
        return col2im(dcol, x_shape, fh, fw, stride, pad)

    @property
    def col(self):
        """``im2col`` of the last input (computed on first read after each forward). Read
        or assigned, ``backward`` computes from it (and ``col_W``) as the book does."""
        if self._col is None and self._ctx is not None:
            xc, W_used, stride, pad = self._ctx
            fh, fw = np.shape(W_used)[2:]
            self._col = im2col(xc, fh, fw, stride, pad)
        return self._col

    @col.setter
    def col(self, value):
        self._col = value

    @property
    def col_W(self):
        """``W.reshape(FN, -1).T`` of the weights used by the last forward (a view)."""
        if self._col_W is None and self._ctx is not None:
            W_used = np.asarray(self._ctx[1])
            self._col_W = W_used.reshape(W_used.shape[0], -1).T
        return self._col_W

    @col_W.setter
    def col_W(self, value):
        self._col_W = value


# --------------------------------------------------------------------------- Pooling
class Pooling:
    """Max pooling of NCHW images, the book's ``Pooling``.

    Parameters
    ----------
    pool_h, pool_w : int
        Window size.
    stride : int, default 1
        The book's default is 1; its networks pass ``stride=2`` for 2x2 pooling.
    pad : int, default 0
        See Notes.

    Attributes
    ----------
    x : ndarray
        The last input.
    arg_max : int ndarray, shape (N*OH*OW*C,)
        The book's: rows over (n, oh, ow, c), each the index of the maximum inside the
        flattened (kh, kw) window (ties: the first). Computed from fastnn's argmax when
        read; as in the book, ``backward`` routes by its values at that time (assigned, or
        changed in place after a read).

    Notes
    -----
    ``OH = (H - pool_h) // stride + 1``. With ``pad > 0`` the book pads with zeros and
    takes the maximum over the padded window (a zero from the padding can win and then
    receives the gradient, which is dropped), but computes the output size without the
    padding: that only works when ``(H + 2*pad - pool_h) // stride == (H - pool_h) //
    stride`` (and likewise for W), i.e. ``(H - pool_h) % stride + 2 * pad < stride``, which
    needs ``stride > 2 * pad``. This class reproduces those cases exactly and raises
    ValueError for the others, where the book crashes.
    """

    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h = _int_arg(pool_h, "pool_h", 1)
        self.pool_w = _int_arg(pool_w, "pool_w", 1)
        self.stride = _int_arg(stride, "stride", 1)
        self.pad = _int_arg(pad, "pad", 0)
        self.x = None
        self._ctx = None          # (fastnn argmax, pooled (padded) shape, dtype, geometry)
        self._arg_max = None

    def _geometry(self, h, w):
        ph = _int_arg(self.pool_h, "pool_h", 1)
        pw = _int_arg(self.pool_w, "pool_w", 1)
        stride = _int_arg(self.stride, "stride", 1)
        pad = _int_arg(self.pad, "pad", 0)
        oh, ow = _window_fits(h, w, ph, pw, stride, pad, "pooling")
        if pad:
            book_oh = int(1 + (h - ph) / stride)
            book_ow = int(1 + (w - pw) / stride)
            if (book_oh, book_ow) != (oh, ow):
                raise ValueError(
                    f"Pooling with pad={pad} is not supported for this input: the original "
                    f"pools the zero-padded input ({oh}x{ow} windows for H, W = {h}, {w}, "
                    f"pool {ph}x{pw}, stride {stride}) but sizes its output without the "
                    f"padding ({book_oh}x{book_ow}) and crashes reshaping. It only works "
                    f"when both sizes agree, i.e. (H - pool_h) % stride + 2 * pad < stride "
                    f"and likewise for W (so never with stride <= 2 * pad); use pad=0")
        return ph, pw, stride, pad, oh, ow

    def forward(self, x):
        """Return the window maxima, shape (N, C, OH, OW)."""
        xa = _array(x, "x", 4, "(N, C, H, W)")
        n, c, h, w = xa.shape
        if c < 1 or h < 1 or w < 1:
            raise ValueError(f"x must have C, H, W >= 1, received shape {xa.shape}")
        ph, pw, stride, pad, oh, ow = self._geometry(h, w)
        dtype = _single_dtype(xa)
        xc = _as(xa, dtype)
        if pad:
            # the book's im2col pads with zeros and the zeros take part in the maximum
            xc = np.pad(xc, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        # the last argmax let go first (reused: nothing outside this layer sees it)
        self._ctx = self._arg_max = None
        out, am = ops.maxpool2d_forward(xc, (ph, pw), stride=stride, padding=0,
                                        layout="NCHW",
                                        out=(_buffer((n, c, oh, ow), dtype),
                                             _buffer((n, c, oh, ow), np.int64)))
        self.x = x
        self._ctx = (am, xc.shape, dtype, (ph, pw, stride, pad))
        return out

    def backward(self, dout):
        """Route each gradient to its window's maximum; return ``dx`` (the input's shape).

        Parameters
        ----------
        dout : ndarray, shape (N, C, OH, OW)
        """
        _not_before_forward(self._ctx, "Pooling")
        if self._arg_max is not None:
            # arg_max was read or assigned: the book routes by its values now (changed in
            # place or not), so they are converted again
            self.arg_max = self._arg_max
        am, pooled_shape, fdtype, (ph, pw, stride, pad) = self._ctx
        dout = _array(dout, "dout", 4, "(N, C, OH, OW)")
        if dout.shape != am.shape:
            raise ValueError(f"dout must have the forward output's shape {am.shape} "
                             f"(N, C, OH, OW), received shape {dout.shape}")
        dtype = _compute_dtype(np.empty(0, fdtype), dout)
        dx = ops._maxpool2d_backward(_as(dout, dtype), am, pooled_shape, (ph, pw), stride,
                                     0, "NCHW", _buffer(pooled_shape, dtype),
                                     check_range=False)  # am: ours
        if pad:
            dx = np.ascontiguousarray(dx[:, :, pad:pooled_shape[2] - pad,
                                         pad:pooled_shape[3] - pad])
        return dx

    @property
    def arg_max(self):
        """The book's ``arg_max`` (see the class docstring), computed on first read."""
        if self._arg_max is None and self._ctx is not None:
            am, shp, _, (ph, pw, stride, pad) = self._ctx
            hs, ws = shp[2], shp[3]
            n, c, oh, ow = am.shape
            local = am % (hs * ws)                       # drop the channel offset
            ih, iw = np.divmod(local, ws)
            kh = ih - (np.arange(oh, dtype=np.int64) * stride)[:, None]
            kw = iw - (np.arange(ow, dtype=np.int64) * stride)[None, :]
            book = (kh * pw + kw).transpose(0, 2, 3, 1).reshape(-1)
            self._arg_max = book.astype(np.intp, copy=False)
        return self._arg_max

    @arg_max.setter
    def arg_max(self, value):
        if value is None or self._ctx is None:
            self._arg_max = value
            if value is None:
                self._ctx = None
            return
        am, shp, fdtype, (ph, pw, stride, pad) = self._ctx
        n, c, oh, ow = am.shape
        a = _array(value, "arg_max")
        if a.dtype.kind not in "iu" or a.size != am.size:
            raise ValueError(f"arg_max must be an int array of N*OH*OW*C = {am.size} window "
                             f"indices, received dtype {a.dtype} and shape {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= ph * pw):
            raise ValueError(f"arg_max must hold window indices in [0, {ph * pw}), received "
                             f"values in [{a.min()}, {a.max()}]")
        k = a.reshape(n, oh, ow, c).transpose(0, 3, 1, 2).astype(np.int64)
        kh, kw = np.divmod(k, pw)
        ih = kh + (np.arange(oh, dtype=np.int64) * stride)[:, None]
        iw = kw + (np.arange(ow, dtype=np.int64) * stride)[None, :]
        ch = np.arange(c, dtype=np.int64)[None, :, None, None]
        new = np.ascontiguousarray(ch * (shp[2] * shp[3]) + ih * shp[3] + iw)
        self._ctx = (new, shp, fdtype, (ph, pw, stride, pad))
        self._arg_max = value


# --------------------------------------------------------------------------- optimizers
class _Optimizer:
    """Shared argument checks and scratch buffers of the optimizers."""

    _state = ()           # names of the per-key state dicts ("v", "h", "m", ...)

    def _items(self, params, grads):
        """Validate ``params`` / ``grads`` before anything is updated; return
        ``[(key, param, grad)]`` in ``params.keys()`` order."""
        for name, d in (("params", params), ("grads", grads)):
            if not isinstance(d, Mapping) and not (hasattr(d, "keys") and
                                                   hasattr(d, "__getitem__")):
                raise TypeError(f"{name} must be a dict of arrays, received "
                                f"{type(d).__name__}")
        states = [getattr(self, s, None) for s in self._state]
        items = []
        for key in params.keys():
            p = params[key]
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(f"params[{key!r}] must be a float numpy array (updated in "
                                f"place), received {type(p).__name__}"
                                f"{' of dtype ' + str(p.dtype) if hasattr(p, 'dtype') else ''}")
            if not p.flags.writeable:
                raise ValueError(f"params[{key!r}] must be writeable (it is updated in place)")
            if key not in grads:
                raise ValueError(f"grads has no entry {key!r}; params has keys "
                                 f"{list(params.keys())}, grads has {list(grads.keys())}")
            g = _array(grads[key], f"grads[{key!r}]")
            try:
                ok = np.broadcast_shapes(g.shape, p.shape) == p.shape
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"grads[{key!r}] must have the shape of params[{key!r}] "
                                 f"{p.shape}, received shape {g.shape}")
            for sname, st in zip(self._state, states):
                if st is not None and key not in st:
                    raise ValueError(f"params has a key {key!r} that was not there at the "
                                     f"first update: the optimizer's state {sname!r} is "
                                     f"created from the first params (as in the book)")
            items.append((key, p, g))
        return items

    def _init_state(self, params):
        """At the first update, each state dict in ``_state`` gets a zero array per key of
        ``params`` (as the book's optimizers create theirs). As in the book, the first state
        decides: when it is None (``opt.m = None`` resets Adam), every state starts again
        (the book's Adam rebuilds ``v`` with ``m``); another one None alone is created."""
        first = bool(self._state) and getattr(self, self._state[0]) is None
        for name in self._state:
            if first or getattr(self, name) is None:
                setattr(self, name, {key: np.zeros_like(val) for key, val in params.items()})

    @staticmethod
    def _fused(p, g, m, v, scalars) -> bool:
        """Can Adam's step on ``p`` run in fastnn's fused kernel with the book's bits? Yes
        when ``p``, ``g``, ``m`` and ``v`` share shape and a float32/float64 dtype, are
        C-contiguous, ``p`` and ``g`` do not overlap, and no scalar changes the dtype
        (then NumPy rounds each scalar to the dtype, as the kernel does)."""
        dt = p.dtype
        if dt not in (_F32, _F64):
            return False
        for a in (g, m, v):
            if not isinstance(a, np.ndarray) or a.dtype != dt or a.shape != p.shape:
                return False
        if not (p.flags.c_contiguous and g.flags.c_contiguous and m.flags.c_contiguous
                and v.flags.c_contiguous and m.flags.writeable and v.flags.writeable):
            return False
        if any(np.result_type(s, p) != dt for s in scalars):
            return False
        return not np.may_share_memory(p, g)

    def _fast(self, key, p, g, scalars, states=()):
        """Two scratch arrays when ``p``, ``g`` and ``states`` share shape and dtype and
        no scalar changes that dtype (then in-place ufuncs round exactly like the book's
        temporaries); else None (the book's expressions are evaluated as written)."""
        dt = p.dtype
        if g.dtype != dt or g.shape != p.shape:
            return None
        for s in states:
            if not isinstance(s, np.ndarray) or s.dtype != dt or s.shape != p.shape or \
                    not s.flags.writeable:
                return None
        for s in scalars:
            if np.result_type(s, p) != dt:
                return None
        scratch = self.__dict__.setdefault("_scratch", {})
        bufs = scratch.get(key)
        if bufs is None or bufs[0].shape != p.shape or bufs[0].dtype != dt:
            bufs = (np.empty(p.shape, dt), np.empty(p.shape, dt))
            scratch[key] = bufs
        return bufs


def _lr_arg(value, name="lr"):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, received {value!r}")
    return value


class SGD(_Optimizer):
    """Stochastic gradient descent: ``params[key] -= lr * grads[key]`` (in place).

    Parameters
    ----------
    lr : float, default 0.01
    """

    def __init__(self, lr=0.01):
        self.lr = _lr_arg(lr)

    def update(self, params, grads):
        """Update every array of the dict ``params`` in place from the dict ``grads``."""
        for key, p, g in self._items(params, grads):
            bufs = self._fast(key, p, g, (self.lr,))
            if bufs is None:
                params[key] -= self.lr * g
            else:
                t = bufs[0]
                np.multiply(self.lr, g, out=t)
                p -= t


class Momentum(_Optimizer):
    """Momentum SGD: ``v = momentum * v - lr * g``; ``param += v``.

    Parameters
    ----------
    lr : float, default 0.01
    momentum : float, default 0.9

    Attributes
    ----------
    v : dict of ndarray
        Velocities, created (zeros) from ``params`` at the first ``update``.
    """

    _state = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = _lr_arg(lr)
        self.momentum = _lr_arg(momentum, "momentum")
        self.v = None

    def update(self, params, grads):
        """Update every array of the dict ``params`` in place from the dict ``grads``."""
        items = self._items(params, grads)
        self._init_state(params)
        for key, p, g in items:
            v = self.v[key]
            bufs = self._fast(key, p, g, (self.momentum, self.lr), (v,))
            if bufs is None:
                self.v[key] = self.momentum * v - self.lr * g
                params[key] += self.v[key]
            else:
                # a new velocity array, as the book's expression makes (a saved reference
                # to the old one keeps its values), computed with the book's roundings
                t = bufs[0]
                v = np.multiply(self.momentum, v)
                np.multiply(self.lr, g, out=t)
                v -= t
                self.v[key] = v
                p += v


class Nesterov(_Optimizer):
    """Nesterov's accelerated gradient in the book's form (http://arxiv.org/abs/1212.0901):
    ``v = momentum * v - lr * g``; ``param += momentum**2 * v - (1 + momentum) * lr * g``.

    Parameters
    ----------
    lr : float, default 0.01
    momentum : float, default 0.9
    """

    _state = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = _lr_arg(lr)
        self.momentum = _lr_arg(momentum, "momentum")
        self.v = None

    def update(self, params, grads):
        """Update every array of the dict ``params`` in place from the dict ``grads``."""
        items = self._items(params, grads)
        self._init_state(params)
        m, lr = self.momentum, self.lr
        for key, p, g in items:
            v = self.v[key]
            bufs = self._fast(key, p, g, (m, lr, m * m, (1 + m) * lr), (v,))
            if bufs is None:
                self.v[key] *= m
                self.v[key] -= lr * g
                params[key] += m * m * self.v[key]
                params[key] -= (1 + m) * lr * g
            else:
                t = bufs[0]
                v *= m
                np.multiply(lr, g, out=t)
                v -= t
                np.multiply(m * m, v, out=t)
                p += t
                np.multiply((1 + m) * lr, g, out=t)
                p -= t


class AdaGrad(_Optimizer):
    """AdaGrad: ``h += g * g``; ``param -= lr * g / (sqrt(h) + 1e-7)``.

    Parameters
    ----------
    lr : float, default 0.01
    """

    _state = ("h",)

    def __init__(self, lr=0.01):
        self.lr = _lr_arg(lr)
        self.h = None

    def update(self, params, grads):
        """Update every array of the dict ``params`` in place from the dict ``grads``."""
        items = self._items(params, grads)
        self._init_state(params)
        for key, p, g in items:
            h = self.h[key]
            bufs = self._fast(key, p, g, (self.lr, 1e-7), (h,))
            if bufs is None:
                self.h[key] += g * g
                params[key] -= self.lr * g / (np.sqrt(self.h[key]) + 1e-7)
            else:
                t, u = bufs
                np.multiply(g, g, out=t)
                h += t
                np.multiply(self.lr, g, out=t)
                np.sqrt(h, out=u)
                u += 1e-7
                t /= u
                p -= t


class RMSprop(_Optimizer):
    """RMSprop: ``h = decay_rate * h + (1 - decay_rate) * g * g``;
    ``param -= lr * g / (sqrt(h) + 1e-7)``.

    Parameters
    ----------
    lr : float, default 0.01
    decay_rate : float, default 0.99
    """

    _state = ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = _lr_arg(lr)
        self.decay_rate = _lr_arg(decay_rate, "decay_rate")
        self.h = None

    def update(self, params, grads):
        """Update every array of the dict ``params`` in place from the dict ``grads``."""
        items = self._items(params, grads)
        self._init_state(params)
        d = self.decay_rate
        for key, p, g in items:
            h = self.h[key]
            bufs = self._fast(key, p, g, (d, 1 - d, self.lr, 1e-7), (h,))
            if bufs is None:
                self.h[key] *= d
                self.h[key] += (1 - d) * g * g
                params[key] -= self.lr * g / (np.sqrt(self.h[key]) + 1e-7)
            else:
                t, u = bufs
                h *= d
                np.multiply(1 - d, g, out=t)
                t *= g
                h += t
                np.multiply(self.lr, g, out=t)
                np.sqrt(h, out=u)
                u += 1e-7
                t /= u
                p -= t


class Adam(_Optimizer):
    """Adam as in the book (http://arxiv.org/abs/1412.6980v8).

    ``m += (1 - beta1) * (g - m)``; ``v += (1 - beta2) * (g**2 - v)``;
    ``param -= lr_t * m / (sqrt(v) + 1e-7)`` with the bias correction folded into
    ``lr_t = lr * sqrt(1 - beta2**iter) / (1 - beta1**iter)``.

    The book's arithmetic exactly, subnormal moments included: where a gradient stays 0,
    ``m`` decays into the subnormal range and sticks there, and those elements' steps
    get slow, in the book's NumPy code as here (``fastnn.optimizers.Adam`` flushes them
    to 0: see ``fastnn.ops.adam_update``'s ``flush_subnormal``).

    Parameters
    ----------
    lr : float, default 0.001
    beta1 : float, default 0.9
    beta2 : float, default 0.999

    Attributes
    ----------
    iter : int
        Updates done so far.
    m, v : dict of ndarray
        Moment estimates, created (zeros) from ``params`` at the first ``update``.
    """

    _state = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = _lr_arg(lr)
        self.beta1 = _lr_arg(beta1, "beta1")
        self.beta2 = _lr_arg(beta2, "beta2")
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        """Update every array of the dict ``params`` in place from the dict ``grads``."""
        items = self._items(params, grads)
        self._init_state(params)
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        b1, b2 = 1 - self.beta1, 1 - self.beta2
        for key, p, g in items:
            m, v = self.m[key], self.v[key]
            if self._fused(p, g, m, v, (b1, b2, lr_t, 1e-7)):
                # fastnn's Adam kernel runs the same operations in the same order, one
                # element at a time in one pass instead of eleven: the same bits
                ops._adam_update(p, g, m, v, None, float(lr_t), float(b1), float(b2), 1e-7,
                                  False)
                continue
            bufs = self._fast(key, p, g, (b1, b2, lr_t, 1e-7), (m, v))
            if bufs is None:
                self.m[key] += b1 * (g - self.m[key])
                self.v[key] += b2 * (g ** 2 - self.v[key])
                params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)
            else:
                t, u = bufs
                np.subtract(g, m, out=t)
                t *= b1
                m += t
                np.multiply(g, g, out=t)
                t -= v
                t *= b2
                v += t
                np.multiply(lr_t, m, out=t)
                np.sqrt(v, out=u)
                u += 1e-7
                t /= u
                p -= t
