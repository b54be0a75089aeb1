"""The pure-NumPy reference backend: the oracle every other backend is tested against.

Written to be read, not to be fast. Every sliding-window primitive follows one plan:

1. view the input as channels-last, ``(N, H, W, C)`` (a transpose for NCHW, no copy);
2. split each spatial dimension into *taps* (:func:`_offset_taps`): for one kernel offset
   ``i``, the outputs ``o`` whose position ``o*sh - pt + i*dh`` (see ``ConvGeometry``)
   lies inside the image form a contiguous slice ``outs``, and the rows they read a
   strided slice ``ins`` of the image, so for a pair of taps (rows, columns)::

       x[:, ins_r, ins_c, :]   is read by   the outputs [:, outs_r, outs_c, :]

   both of shape ``(N, len(outs_r), len(outs_c), C)``;
3. loop over the pairs of taps, in row-major (kh, kw) window order.

Nothing is ever padded: a padded position reads 0 (im2col), adds nothing (col2im,
average pooling) and never wins (max pooling), so the taps simply leave it out, and no
memory is spent on padding however large (a huge padding with a huge stride gives a small
output). Pooling windows longer than the image are split by input position instead of
offset (:func:`_pool_taps`): the loop runs over the smaller of the two. Everything else
(batch, output pixels, channels) is vectorised. Arithmetic is done in the dtype of the
inputs. See :mod:`fastnn.backends` for the contract of each primitive.
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
gemm_fast = None  # (ops.matmul checks every call: see fastnn.backends)


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


def _offset_taps(size: int, k: int, s: int, p: int, d: int, count: int) -> list:
    """The taps of one spatial dimension, one per kernel offset that reads the image.

    For each offset ``i`` in increasing order, ``(i, outs, ins)``: ``outs`` the slice of
    the ``count`` outputs whose position ``o*s - p + i*d`` lies in ``[0, size)``, ``ins``
    the slice of those positions (as long as ``outs``). An offset whose outputs all read
    padding is left out.
    """
    taps = []
    for i in range(k):
        start = i * d - p                            # the position output 0 reads
        lo = max(0, -(start // s))                   # the first output reading >= 0
        hi = min(count, (size - 1 - start) // s + 1)  # past the last reading < size
        if lo < hi:
            taps.append((i, slice(lo, hi), slice(start + lo * s, start + (hi - 1) * s + 1, s)))
    return taps


def _pool_taps(size: int, k: int, s: int, p: int, count: int) -> list:
    """Pooling's taps of one dimension (dilation 1): ``(outs, ins)`` pairs that pair every
    output with each in-bounds position of its window once, in increasing window order
    for every output.

    Per kernel offset (:func:`_offset_taps`) when the window is no longer than the image;
    else per input position ``r`` (``ins`` is ``r`` alone, read by every output of
    ``outs``, at offset ``r + p - o*s``): a 4096-wide window over a 1-pixel image is then
    one tap, not 4096.
    """
    if k <= size:
        return [(outs, ins) for _, outs, ins in _offset_taps(size, k, s, p, 1, count)]
    taps = []
    for r in range(size):
        lo = max(0, -((k - 1 - r - p) // s))    # the first output whose window reaches r
        hi = min(count, (r + p) // s + 1)       # past the last whose window starts <= r
        if lo < hi:
            taps.append((slice(lo, hi), slice(r, r + 1)))
    return taps


def _tap_pairs(row_taps, col_taps):
    """Every (rows, columns) pair of taps, rows outer: row-major window order."""
    for r in row_taps:
        for c in col_taps:
            yield r, c


def _window_view(cols: np.ndarray, g, layout: str) -> np.ndarray:
    """A column matrix (N*OH*OW, KH*KW*C) as a (N, OH, OW, KH, KW, C) view, whatever the
    layout's column order."""
    if layout == "NHWC":
        return cols.reshape(g.n, g.oh, g.ow, g.kh, g.kw, g.c)
    return cols.reshape(g.n, g.oh, g.ow, g.c, g.kh, g.kw).transpose(0, 1, 2, 4, 5, 3)


# --------------------------------------------------------------------------- im2col
def im2col(x, g, layout, cols):
    """Rows (n, oh, ow); columns (kh, kw, c) for NHWC, (c, kh, kw) for NCHW."""
    xs = _channels_last(x, layout)
    win = _window_view(cols, g, layout)
    win[...] = 0                                        # what padding reads
    for (i, outs_r, ins_r), (j, outs_c, ins_c) in _tap_pairs(
            _offset_taps(g.h, g.kh, g.sh, g.pt, g.dh, g.oh),
            _offset_taps(g.w, g.kw, g.sw, g.pl, g.dw, g.ow)):
        win[:, outs_r, outs_c, i, j, :] = xs[:, ins_r, ins_c, :]


def col2im(cols, g, layout, x):
    """Adjoint of :func:`im2col`: scatter-add every column entry back; ``x`` overwritten."""
    win = _window_view(cols, g, layout)
    xs = _channels_last(x, layout)
    xs[...] = 0
    for (i, outs_r, ins_r), (j, outs_c, ins_c) in _tap_pairs(
            _offset_taps(g.h, g.kh, g.sh, g.pt, g.dh, g.oh),
            _offset_taps(g.w, g.kw, g.sw, g.pl, g.dw, g.ow)):
        # Within one offset the strided slice touches each element at most once, so a
        # plain += accumulates correctly; overlaps between offsets add up across the loop.
        xs[:, ins_r, ins_c, :] += win[:, outs_r, outs_c, i, j, :]


# --------------------------------------------------------------------------- bias + act
def bias_act(y, b, act, out):
    """``out = act(y + b[None, :, None])``; relu keeps NaN (``v < 0 ? 0 : v``)."""
    v = y if b is None else y + b[None, :, None]
    if act == "relu":
        v = np.where(v < 0, y.dtype.type(0), v)
    out[...] = v


# --------------------------------------------------------------------------- activations
# erfc(z) for z >= 0 by Chebyshev's series (the coefficients of Numerical Recipes, 3rd
# ed., section 6.2.2): relative error against math.erfc under 2e-14 on [0, 6] and 2e-13
# on [0, 27] (there the rounding of exp's argument, about z^2 eps)
_ERFC_COF = (-1.3026537197817094, 6.4196979235649026e-1, 1.9476473204185836e-2,
             -9.561514786808631e-3, -9.46595344482036e-4, 3.66839497852761e-4,
             4.2523324806907e-5, -2.0278578112534e-5, -1.624290004647e-6,
             1.303655835580e-6, 1.5626441722e-8, -8.5238095915e-8, 6.529054439e-9,
             5.059343495e-9, -9.91364156e-10, -2.27365122e-10, 9.6467911e-11,
             2.394038e-12, -6.886027e-12, 8.94487e-13, 3.13092e-13, -1.12708e-13,
             3.81e-16, 7.106e-15, -1.523e-15, -9.4e-17, 1.21e-16, -2.8e-17)
# float32 takes the first 13 terms: the rest sum to under 1e-8 in exp's argument
_ERFC_TERMS = {np.dtype(np.float64): len(_ERFC_COF), np.dtype(np.float32): 13}


def _erfc_nonneg(z: np.ndarray) -> np.ndarray:
    """erfc(z) for z >= 0, float64 or float32 (in z's dtype): Clenshaw's recurrence on the
    series above, in three buffers (no array allocated per term)."""
    cof = _ERFC_COF[:_ERFC_TERMS[z.dtype]]
    t = 2 / (2 + z)
    ty = 4 * t - 2
    d, dd, nxt = np.zeros_like(z), np.zeros_like(z), np.empty_like(z)
    for c in cof[:0:-1]:
        np.multiply(ty, d, out=nxt)
        nxt -= dd
        nxt += c
        d, dd, nxt = nxt, d, dd
    ty *= d                               # the exponent, in ty
    ty += cof[0]
    ty *= 0.5
    ty -= dd
    ty -= z * z
    with np.errstate(under="ignore"):
        return t * np.exp(ty)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF of ``x``, in float64 for float64 input, else float32:
    ``erfc(-x / sqrt(2)) / 2``, each side from erfc of a non-negative argument (no
    cancellation in the left tail)."""
    dt = np.float64 if x.dtype == np.float64 else np.float32
    z = x.astype(dt) * dt(1 / np.sqrt(2))
    e = _erfc_nonneg(np.abs(z))
    e *= 0.5
    return np.where(z < 0, e, 1 - e)


def _hard_sigmoid(x):
    return np.clip(x / 6 + 0.5, 0, 1).astype(x.dtype, copy=False)


#: selu's constants (Klambauer et al.), Keras 3's.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    pos = (1 / (1 + e)).astype(x.dtype, copy=False)
    return np.where(x >= 0, pos, e * pos).astype(x.dtype, copy=False)


def activation(x, kind, alpha, out):
    """``out = f(x)`` elementwise, each operation in x's dtype (``alpha`` a Python float:
    elu's alpha, leaky_relu's negative_slope):

    sigmoid     ``pos = 1 / (1 + e)`` for x >= 0, else ``e * pos``, ``e = exp(-|x|)``
    silu        ``x * sigmoid(x)``
    elu         ``x > 0 ? x : alpha * expm1(min(x, 0))``
    selu        ``x > 0 ? SELU_SCALE * x : (SELU_SCALE * SELU_ALPHA) * expm1(min(x, 0))``
    leaky_relu  ``x > 0 ? x : x * alpha``
    gelu        ``x * Phi(x)`` (the exact form), Phi the standard normal CDF from erfc's
                Chebyshev series (:func:`_normal_cdf`)
    relu6       ``clip(x, 0, 6)``
    hard_sigmoid  ``clip(x / 6 + 0.5, 0, 1)``
    hard_silu   ``x * hard_sigmoid(x)``
    celu        ``x > 0 ? x : alpha * expm1(min(x, 0) / alpha)``
    tanh        ``tanh(x)`` (NumPy's)

    NaN propagates. ``out`` may be ``x``."""
    if kind == "sigmoid":
        y = _sigmoid(x)
    elif kind == "silu":
        y = x * _sigmoid(x)
    elif kind == "elu":
        y = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
    elif kind == "selu":
        y = np.where(x > 0, SELU_SCALE * x, SELU_SCALE * SELU_ALPHA * np.expm1(np.minimum(x, 0)))
    elif kind == "gelu":
        y = x * _normal_cdf(x)
    elif kind == "relu6":
        y = np.clip(x, 0, 6)
    elif kind == "hard_sigmoid":
        y = _hard_sigmoid(x)
    elif kind == "hard_silu":
        y = x * _hard_sigmoid(x)
    elif kind == "celu":
        y = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0) / alpha))
    elif kind == "tanh":
        y = np.tanh(x)
    else:
        y = np.where(x > 0, x, x * alpha)
    out[...] = y


def activation_backward(dy, x, y, kind, alpha, dx):
    """``dx = dy * f'(x)`` for :func:`activation`'s f, ``y = f(x)`` its output:

    sigmoid     ``dy * y * (1 - y)``
    silu        ``dy * (s * (1 + x * (1 - s)))``, ``s = sigmoid(x)``
    elu         ``x > 0 ? dy : dy * (y + alpha)``
    selu        ``dy * (x > 0 ? SELU_SCALE : (SELU_SCALE * SELU_ALPHA) * exp(min(x, 0)))``
                (from x: ``y + scale * alpha`` cancels in the far negative tail)
    leaky_relu  ``x > 0 ? dy : dy * alpha``
    gelu        ``dy * (Phi(x) + x * exp(-x * x / 2) / sqrt(2 pi))``
    relu6       ``0 < x < 6 ? dy : 0``
    hard_sigmoid  ``-3 < x < 3 ? dy / 6 : 0``
    hard_silu   ``dy * (x >= 3 ? 1 : x > -3 ? (2 x + 3) / 6 : 0)``
    celu        ``x > 0 ? dy : dy * exp(min(x, 0) / alpha)`` (from x: ``y / alpha + 1``
                cancels in the far negative tail)
    tanh        ``dy * (1 - y * y)``

    ``dx`` may be ``dy``."""
    if kind == "sigmoid":
        g = dy * y * (1 - y)
    elif kind == "silu":
        s = _sigmoid(x)
        g = dy * (s * (1 + x * (1 - s)))
    elif kind == "elu":
        g = np.where(x > 0, dy, dy * (y + alpha))
    elif kind == "selu":
        g = dy * np.where(x > 0, SELU_SCALE,
                          SELU_SCALE * SELU_ALPHA * np.exp(np.minimum(x, 0))).astype(x.dtype)
    elif kind == "gelu":
        xc = x.astype(np.float64 if x.dtype == np.float64 else np.float32)
        with np.errstate(under="ignore"):
            g = dy * (_normal_cdf(xc) + xc * np.exp(-0.5 * xc * xc) * (1 / np.sqrt(2 * np.pi)))
    elif kind == "relu6":
        g = np.where((x > 0) & (x < 6), dy, 0)
    elif kind == "hard_sigmoid":
        g = np.where((x > -3) & (x < 3), dy / 6, 0)
    elif kind == "hard_silu":
        g = dy * np.where(x >= 3, 1, np.where(x > -3, (2 * x + 3) / 6, 0))
    elif kind == "celu":
        g = np.where(x > 0, dy, dy * np.exp(np.minimum(x, 0) / alpha))
    elif kind == "tanh":
        g = dy * (1 - y * y)
    else:
        g = np.where(x > 0, dy, dy * alpha)
    dx[...] = g


# --------------------------------------------------------------------------- batch norm
def batchnorm_stats(x, mean, var):
    """Per-channel mean and biased variance of ``x`` (outer, C, inner) over axes 0 and 2,
    in float64 (two passes), rounded to x's dtype."""
    xd = x.astype(np.float64)
    m = xd.mean(axis=(0, 2))
    mean[...] = m
    var[...] = np.square(xd - m[None, :, None]).mean(axis=(0, 2))


def batchnorm_forward(x, mean, inv_std, gamma, beta, out):
    """``out = (x - mean) * (inv_std * gamma) + beta`` per channel, each operation in x's
    dtype (gamma None: ``inv_std`` alone; beta None: no add). ``out`` may be ``x``."""
    a = inv_std if gamma is None else inv_std * gamma
    y = (x - mean[None, :, None]) * a[None, :, None]
    if beta is not None:
        y = y + beta[None, :, None]
    out[...] = y


def batchnorm_backward(dy, x, mean, inv_std, gamma, training, dx, dgamma, dbeta):
    """The backward of :func:`batchnorm_forward` (see ``fastnn.backends``)."""
    dt = x.dtype
    n = x.shape[0] * x.shape[2]
    d = x - mean[None, :, None]
    s1 = dy.astype(np.float64).sum(axis=(0, 2))
    s2 = (dy.astype(np.float64) * d.astype(np.float64)).sum(axis=(0, 2))
    inv = inv_std.astype(np.float64)
    g = np.ones_like(inv) if gamma is None else gamma.astype(np.float64)
    a = (g * inv).astype(dt)[None, :, None]
    if dbeta is not None:
        dbeta[...] = s1
    if dgamma is not None:
        dgamma[...] = s2 * inv
    if training:
        km = (s1 / n).astype(dt)[None, :, None]
        kk = (g * inv ** 3 * s2 / n).astype(dt)[None, :, None]
        dx[...] = a * (dy - km) - kk * d
    else:
        dx[...] = a * dy


# Philox4x32-10's constants (Salmon et al., SC 2011; Random123's philox.h)
PHILOX_M = (0xD2511F53, 0xCD9E8D57)     # the round multipliers
PHILOX_W = (0x9E3779B9, 0xBB67AE85)     # the key's increments between rounds
_U32 = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    """Philox4x32-10: ``ctr`` (4, m) uint32 counters, ``key`` two ints below 2^32 -> the
    (4, m) uint32 random words. Each of ten rounds, with the key bumped by ``PHILOX_W``
    before every round but the first: ``p0 = M0 * c0``, ``p1 = M1 * c2`` (64-bit
    products), ``c = (hi(p1) ^ c1 ^ k0, lo(p1), hi(p0) ^ c3 ^ k1, lo(p0))``."""
    c0, c1, c2, c3 = (np.asarray(ctr[i], np.uint64) for i in range(4))
    for r in range(10):
        k0 = np.uint64((key[0] + r * PHILOX_W[0]) & _U32)
        k1 = np.uint64((key[1] + r * PHILOX_W[1]) & _U32)
        p0, p1 = c0 * np.uint64(PHILOX_M[0]), c2 * np.uint64(PHILOX_M[1])
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & np.uint64(_U32),
                          (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & np.uint64(_U32))
    return np.stack([c0, c1, c2, c3]).astype(np.uint32)


def dropout_words(n: int, seed: int) -> np.ndarray:
    """The (n,) uint32 random words of :func:`dropout`: element i takes word ``(i % 32) //
    8`` of Philox block ``b = 8 * (i // 32) + i % 8`` (counter ``(b mod 2^32, b // 2^32, 0,
    0)``, key ``(seed mod 2^32, seed // 2^32)``), so that each group of 32 elements is
    eight blocks side by side (the compiled kernels' vector lanes)."""
    groups = -(-n // 32)
    b = np.arange(groups * 8, dtype=np.uint64)
    zero = np.zeros_like(b)
    words = philox4x32_10((b & np.uint64(_U32), b >> np.uint64(32), zero, zero),
                          (seed & _U32, seed >> 32))
    return words.reshape(4, groups, 8).transpose(1, 0, 2).reshape(-1)[:n]


def dropout(seed, t, scale, x, mask, y):
    """``mask = where(dropout_words(n, seed) >= t, scale, 0)`` in mask's dtype and, ``x``
    not None, ``y = x * mask`` (NaN and inf in x propagate, through ``0 * x`` too)."""
    keep = dropout_words(mask.size, seed) >= t
    mask[...] = np.where(keep, mask.dtype.type(scale), mask.dtype.type(0))
    if x is not None:
        with np.errstate(invalid="ignore"):     # inf * 0: NaN, as the kernels give, silently
            np.multiply(x, mask, out=y)


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
def _pool_tap_lists(g):
    """Pooling's (row taps, column taps) of geometry ``g`` (see :func:`_pool_taps`)."""
    return (_pool_taps(g.h, g.kh, g.sh, g.pt, g.oh), _pool_taps(g.w, g.kw, g.sw, g.pl, g.ow))


def _flat_index(g, layout, ih, iw) -> np.ndarray:
    """(len(ih), len(iw), C) int64: index into ``x[n].ravel()`` of element (ih, iw, c)."""
    r = ih.astype(np.int64)[:, None, None]
    q = iw.astype(np.int64)[None, :, None]
    ch = np.arange(g.c, dtype=np.int64)[None, None, :]
    if layout == "NHWC":
        return (r * g.w + q) * g.c + ch
    return (ch * g.h + r) * g.w + q


def _window_counts(g, taps, dtype) -> np.ndarray:
    """(OH, OW): how many in-bounds elements each window holds."""
    per_dim = []
    for dim_taps, count in zip(taps, (g.oh, g.ow)):
        n = np.zeros(count, dtype=np.int64)
        for outs, _ in dim_taps:
            n[outs] += 1
        per_dim.append(n)
    return (per_dim[0][:, None] * per_dim[1][None, :]).astype(dtype)


def maxpool2d_forward(x, g, layout, y, argmax):
    """Max over the in-bounds elements of each window, and where it was.

    Each window's elements are visited in row-major window order; a candidate replaces
    the current best if nothing was taken yet, it is strictly larger (so ties keep the
    first), or it is NaN while the best is not (so the first NaN wins). This is
    ``np.argmax`` over the in-bounds elements of the window.
    """
    xs = _channels_last(x, layout)
    shape = (g.n, g.oh, g.ow, g.c)
    best = np.zeros(shape, dtype=x.dtype)
    best_idx = np.zeros(shape, dtype=np.int64)
    taken = np.zeros(shape, dtype=bool)
    rows, cols = np.arange(g.h), np.arange(g.w)
    for (outs_r, ins_r), (outs_c, ins_c) in _tap_pairs(*_pool_tap_lists(g)):
        out = (slice(None), outs_r, outs_c)
        v = xs[:, ins_r, ins_c, :]            # broadcasts where ins is one position
        b = best[out]
        take = ~taken[out] | (v > b) | (np.isnan(v) & ~np.isnan(b))
        best[out] = np.where(take, v, b)
        best_idx[out] = np.where(take, _flat_index(g, layout, rows[ins_r], cols[ins_c])[None],
                                 best_idx[out])
        taken[out] = True
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
    xs = _channels_last(x, layout)
    taps = _pool_tap_lists(g)
    total = np.zeros((g.n, g.oh, g.ow, g.c), dtype=x.dtype)
    for (outs_r, ins_r), (outs_c, ins_c) in _tap_pairs(*taps):
        total[:, outs_r, outs_c, :] += xs[:, ins_r, ins_c, :]
    count = _window_counts(g, taps, x.dtype)[None, :, :, None]
    y[...] = _from_channels_last(total / count, layout)


def avgpool2d_backward(dy, g, layout, dx):
    """Adjoint of :func:`avgpool2d_forward`: each window spreads ``dy / count`` over the
    in-bounds elements it read."""
    taps = _pool_tap_lists(g)
    count = _window_counts(g, taps, dy.dtype)[None, :, :, None]
    share = _channels_last(dy, layout) / count           # (N, OH, OW, C)
    dxs = _channels_last(dx, layout)
    dxs[...] = 0
    for (outs_r, ins_r), (outs_c, ins_c) in _tap_pairs(*taps):
        dst, src = dxs[:, ins_r, ins_c, :], share[:, outs_r, outs_c, :]
        # a tap by input position: its outputs all read that one position
        axes = tuple(a for a in (1, 2) if dst.shape[a] != src.shape[a])
        dst += src.sum(axis=axes, keepdims=True) if axes else src


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
