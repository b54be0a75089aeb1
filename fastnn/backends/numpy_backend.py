"""The pure-NumPy reference backend: the oracle every other backend is tested against.

Written to be read, not to be fast. Every sliding-window primitive follows the same plan
(the im2col of deep-learning-from-scratch, ``common/util.py``):

1. view the input as channels-last, ``(N, H, W, C)`` (a transpose for NCHW, no copy);
2. pad it explicitly with ``g.pt, g.pb, g.pl, g.pr``;
3. loop over the kernel offsets ``(i, j)`` only. For one offset, the input elements read
   by all outputs form one strided slice of the padded image::

       padded[:, i*dh : i*dh + sh*(oh-1) + 1 : sh, j*dw : j*dw + sw*(ow-1) + 1 : sw, :]

   which has shape ``(N, OH, OW, C)``: output ``(oh, ow)`` reads padded row
   ``oh*sh + i*dh``, i.e. input row ``oh*sh - pt + i*dh`` (see ``ConvGeometry``).

Everything else (batch, output pixels, channels) is vectorised. Arithmetic is done in the
dtype of the inputs. See :mod:`fastnn.backends` for the contract of each primitive.
"""
from __future__ import annotations

import sys

import numpy as np

from . import _conv_driver

_num_threads = [1]


# --------------------------------------------------------------------------- threads, isa
def set_num_threads(n: int) -> None:
    """Remembered for :func:`get_num_threads` symmetry; NumPy code here is single-threaded."""
    _num_threads[0] = int(n)


def get_num_threads() -> int:
    """The reference backend always runs on one thread."""
    return 1


def isa() -> str:
    return "numpy"


# --------------------------------------------------------------------------- GEMM
def gemm(trans_a, trans_b, alpha, a, b, beta, c):
    """``c[:] = alpha * op(a) @ op(b) + beta * c``; ``beta == 0`` never reads ``c``."""
    dtype = c.dtype
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    product = dtype.type(alpha) * np.matmul(opa, opb)
    if beta == 0:
        c[...] = product
    else:
        c[...] = product + dtype.type(beta) * c


# --------------------------------------------------------------------------- windows
def _channels_last(x: np.ndarray, layout: str) -> np.ndarray:
    """``x`` as (N, H, W, C): itself for NHWC, a transposed view for NCHW."""
    return x if layout == "NHWC" else x.transpose(0, 2, 3, 1)


def _from_channels_last(y_nhwc: np.ndarray, layout: str) -> np.ndarray:
    """Inverse of :func:`_channels_last` (a view)."""
    return y_nhwc if layout == "NHWC" else y_nhwc.transpose(0, 3, 1, 2)


def _pad(x_nhwc: np.ndarray, g) -> np.ndarray:
    """Zero-padded copy of a channels-last image: (N, pt+H+pb, pl+W+pr, C)."""
    return np.pad(x_nhwc, ((0, 0), (g.pt, g.pb), (g.pl, g.pr), (0, 0)))


def _offsets(g):
    """Yield ``(i, j, rows, cols)`` for every kernel offset, in row-major (kh, kw) order.

    ``rows`` / ``cols`` are slices of the *padded* image selecting, for every output
    position, the element this offset reads; ``padded[:, rows, cols, :]`` is
    (N, OH, OW, C).
    """
    for i in range(g.kh):
        r0 = i * g.dh
        rows = slice(r0, r0 + g.sh * (g.oh - 1) + 1, g.sh)
        for j in range(g.kw):
            c0 = j * g.dw
            cols = slice(c0, c0 + g.sw * (g.ow - 1) + 1, g.sw)
            yield i, j, rows, cols


def _input_coords(g, i: int, j: int):
    """Input row indices (OH,) and column indices (OW,) read at kernel offset (i, j);
    they may lie outside the image (in the padding)."""
    ih = np.arange(g.oh) * g.sh - g.pt + i * g.dh
    iw = np.arange(g.ow) * g.sw - g.pl + j * g.dw
    return ih, iw


def _in_bounds(g, ih: np.ndarray, iw: np.ndarray) -> np.ndarray:
    """(OH, OW) bool: does the position (ih[oh], iw[ow]) lie inside the image?"""
    return ((ih >= 0) & (ih < g.h))[:, None] & ((iw >= 0) & (iw < g.w))[None, :]


def _window_counts(g, dtype) -> np.ndarray:
    """(OH, OW): how many in-bounds elements each window holds."""
    count = np.zeros((g.oh, g.ow), dtype=np.int64)
    for i, j, _, _ in _offsets(g):
        count += _in_bounds(g, *_input_coords(g, i, j))
    return count.astype(dtype)


# --------------------------------------------------------------------------- im2col
def im2col(x, g, layout, cols):
    """Rows (n, oh, ow); columns (kh, kw, c) for NHWC, (c, kh, kw) for NCHW."""
    padded = _pad(_channels_last(x, layout), g)
    win = np.empty((g.n, g.oh, g.ow, g.kh, g.kw, g.c), dtype=x.dtype)
    for i, j, rows, cols_ in _offsets(g):
        win[:, :, :, i, j, :] = padded[:, rows, cols_, :]
    if layout == "NCHW":
        win = win.transpose(0, 1, 2, 5, 3, 4)          # (n, oh, ow, c, kh, kw)
    cols[...] = win.reshape(g.rows, g.patch)


def col2im(cols, g, layout, x):
    """Adjoint of :func:`im2col`: scatter-add every column entry back; ``x`` overwritten."""
    if layout == "NHWC":
        win = cols.reshape(g.n, g.oh, g.ow, g.kh, g.kw, g.c)
    else:
        win = cols.reshape(g.n, g.oh, g.ow, g.c, g.kh, g.kw).transpose(0, 1, 2, 4, 5, 3)
    padded = np.zeros((g.n, g.pt + g.h + g.pb, g.pl + g.w + g.pr, g.c), dtype=cols.dtype)
    for i, j, rows, cols_ in _offsets(g):
        # Within one offset the strided slice touches each element at most once, so a
        # plain += accumulates correctly; overlaps between offsets add up across the loop.
        padded[:, rows, cols_, :] += win[:, :, :, i, j, :]
    inside = padded[:, g.pt:g.pt + g.h, g.pl:g.pl + g.w, :]
    x[...] = _from_channels_last(inside, layout)


# --------------------------------------------------------------------------- bias + act
def bias_act(y, b, act, out):
    """``out = act(y + b[None, :, None])``; relu keeps NaN (``v < 0 ? 0 : v``)."""
    v = y if b is None else y + b[None, :, None]
    if act == "relu":
        v = np.where(v < 0, y.dtype.type(0), v)
    out[...] = v


def relu_mask(x, y, mask):
    """``mask = x <= 0``; ``y = where(mask, +0.0, x)`` (NaN passes, -0.0 becomes +0.0)."""
    np.less_equal(x, 0, out=mask)
    y[...] = np.where(mask, x.dtype.type(0), x)


def relu_mask_backward(dy, mask, dx):
    """``dx = where(mask, +0.0, dy)``; ``dx`` may be ``dy``."""
    dx[...] = np.where(mask, dy.dtype.type(0), dy)


def bias_act_backward(dy, y, act, dx, db):
    """``dx = dy * act'(y)`` with relu' = ``y > 0`` (y is the forward output);
    ``db = dx.sum(axis=(0, 2))`` when ``db`` is not None. ``dx`` may be ``dy``."""
    if act == "relu":
        g = np.where(y > 0, dy, dy.dtype.type(0))
    else:
        g = dy.copy()
    dx[...] = g
    if db is not None:
        db[...] = g.sum(axis=(0, 2))


# --------------------------------------------------------------------------- conv
def conv2d_forward(x, w, b, g, layout, act, y, chunk):
    """im2col + GEMM (see :mod:`fastnn.backends._conv_driver`)."""
    _conv_driver.conv2d_forward(sys.modules[__name__], x, w, b, g, layout, act, y, chunk)


def conv2d_backward(dy, x, w, g, layout, dx, dw, db, chunk):
    """Gradients of the convolution (see :mod:`fastnn.backends._conv_driver`)."""
    _conv_driver.conv2d_backward(sys.modules[__name__], dy, x, w, g, layout, dx, dw, db,
                                 chunk)


# --------------------------------------------------------------------------- pooling
def _flat_index(g, layout, ih, iw) -> np.ndarray:
    """(OH, OW, C) int64: index into ``x[n].ravel()`` of element (ih[oh], iw[ow], c).
    Out-of-bounds coordinates give meaningless indices; callers mask them."""
    r = ih.astype(np.int64)[:, None, None]
    q = iw.astype(np.int64)[None, :, None]
    ch = np.arange(g.c, dtype=np.int64)[None, None, :]
    if layout == "NHWC":
        return (r * g.w + q) * g.c + ch
    return (ch * g.h + r) * g.w + q


def maxpool2d_forward(x, g, layout, y, argmax):
    """Max over the in-bounds elements of each window, and where it was.

    The kernel offsets are visited in row-major window order; a candidate replaces the
    current best only if it is in bounds and either nothing was taken yet, it is strictly
    larger (so ties keep the first), or it is NaN while the best is not (so the first NaN
    wins). This is ``np.argmax`` over the in-bounds elements of the window.
    """
    padded = _pad(_channels_last(x, layout), g)          # pad value never used
    shape = (g.n, g.oh, g.ow, g.c)
    best = np.zeros(shape, dtype=x.dtype)
    best_idx = np.zeros(shape, dtype=np.int64)
    taken = np.zeros(shape, dtype=bool)
    for i, j, rows, cols in _offsets(g):
        ih, iw = _input_coords(g, i, j)
        valid = _in_bounds(g, ih, iw)[None, :, :, None]  # (1, OH, OW, 1)
        v = padded[:, rows, cols, :]
        beats = ~taken | (v > best) | (np.isnan(v) & ~np.isnan(best))
        take = valid & beats
        best = np.where(take, v, best)
        best_idx = np.where(take, _flat_index(g, layout, ih, iw)[None], best_idx)
        taken |= valid
    assert taken.all(), "a pooling window holds no input element (geometry bug)"
    y[...] = _from_channels_last(best, layout)
    argmax[...] = _from_channels_last(best_idx, layout)


def maxpool2d_backward(dy, argmax, g, layout, dx):
    """``dx`` zero except ``dx[n].flat[argmax[n, ...]] += dy[n, ...]`` (duplicates add)."""
    per_sample = g.h * g.w * g.c
    dx[...] = 0
    sample = np.arange(g.n, dtype=np.int64).reshape(g.n, 1, 1, 1)
    flat = (argmax + sample * per_sample).ravel()      # index into dx.ravel()
    np.add.at(dx.reshape(-1), flat, dy.ravel())


def avgpool2d_forward(x, g, layout, y):
    """Sum of the in-bounds elements of each window over their number (Keras)."""
    padded = _pad(_channels_last(x, layout), g)          # zeros add nothing to the sum
    total = np.zeros((g.n, g.oh, g.ow, g.c), dtype=x.dtype)
    for _, _, rows, cols in _offsets(g):
        total += padded[:, rows, cols, :]
    count = _window_counts(g, x.dtype)[None, :, :, None]
    y[...] = _from_channels_last(total / count, layout)


def avgpool2d_backward(dy, g, layout, dx):
    """Adjoint of :func:`avgpool2d_forward`: each window spreads ``dy / count`` over the
    elements it read; padded positions are dropped."""
    count = _window_counts(g, dy.dtype)[None, :, :, None]
    share = _channels_last(dy, layout) / count           # (N, OH, OW, C)
    padded = np.zeros((g.n, g.pt + g.h + g.pb, g.pl + g.w + g.pr, g.c), dtype=dy.dtype)
    for _, _, rows, cols in _offsets(g):
        padded[:, rows, cols, :] += share
    inside = padded[:, g.pt:g.pt + g.h, g.pl:g.pl + g.w, :]
    dx[...] = _from_channels_last(inside, layout)


# --------------------------------------------------------------------------- losses
def softmax_xent(z, labels, t, scale, probs, loss, dz):
    """Softmax cross-entropy per row, written as whole-array NumPy operations."""
    s = z - np.max(z, axis=1, keepdims=True)
    e = np.exp(s)
    total = np.sum(e, axis=1, keepdims=True)
    probs[...] = e / total
    log_total = np.log(total)
    f = z.dtype.type
    if labels is not None:
        rows = np.arange(z.shape[0])
        loss[...] = log_total[:, 0] - s[rows, labels]
        dz[...] = probs
        dz[rows, labels] -= f(1)
        dz *= f(scale)
    else:
        loss[...] = np.sum(t * (log_total - s), axis=1)
        dz[...] = (probs * np.sum(t, axis=1, keepdims=True) - t) * f(scale)


# --------------------------------------------------------------------------- optimizers
def flush_subnormal(a, tmp):
    """Set the elements of ``a`` below its dtype's smallest normal number in magnitude
    (-0.0 included) to +0, in place; NaN and infinities stay. ``tmp``: a contiguous
    scratch array like ``a`` (overwritten; its bytes hold the two masks), so nothing the
    size of ``a`` is allocated. fastnn's optimizers do this to their slots: a slot that
    decays into the subnormal range sticks there (0.9 * m rounds back to m) and makes
    every later step's arithmetic on it many times slower (see fastnn.ops.adam_update).
    Two compares and a byte pass over ``a`` when nothing is to flush (the usual case)."""
    tiny = np.finfo(a.dtype).tiny
    raw = tmp.reshape(-1).view(np.uint8)
    below = raw[:a.size].view(np.bool_).reshape(a.shape)
    above = raw[a.size:2 * a.size].view(np.bool_).reshape(a.shape)
    np.less(a, tiny, out=below)
    np.greater(a, -tiny, out=above)
    np.logical_and(below, above, out=below)     # -tiny < a < tiny (NaN: False)
    if below.any():
        np.copyto(a, 0, where=below)


def adam_update(p, g, m, v, vhat, alpha, omb1, omb2, eps, flush):
    """Adam's step, written as whole-array NumPy operations (the reference order)."""
    t = g - m
    t *= omb1
    m += t                                  # m += (g - m) * (1 - beta_1)
    np.square(g, out=t)
    t -= v
    t *= omb2
    v += t                                  # v += (g^2 - v) * (1 - beta_2)
    if flush:
        flush_subnormal(m, t)
        flush_subnormal(v, t)
    if vhat is not None:
        v = np.maximum(vhat, v, out=vhat)   # AMSGrad
        if flush:
            flush_subnormal(v, t)
    np.sqrt(v, out=t)
    t += eps                                # sqrt(v) + epsilon
    u = m * alpha
    u /= t
    p -= u                                  # p -= m * alpha / (sqrt(v) + epsilon)
