"""Slow, obviously correct direct-loop implementations used as test oracles.

Every function here loops in Python over every output element and, inside, over every
element of its window, reading the input with explicit index arithmetic. Nothing is
vectorised and nothing is shared with :mod:`fastnn` (not even the geometry helper), so
these loops check the NumPy reference backend independently. Keep the inputs small.

Arguments mirror :mod:`fastnn.ops`:

* ``x`` is (N, H, W, C) for ``layout="NHWC"`` and (N, C, H, W) for ``"NCHW"``;
  conv weights ``w`` are (KH, KW, C, F) for NHWC and (F, C, KH, KW) for NCHW.
* ``kernel_size`` / ``pool_size`` / ``stride`` / ``dilation``: an int or a pair.
* ``padding``: "valid", "same" (TensorFlow/Keras: output ``ceil(size / stride)``, the
  smaller half of an odd total padding before), an int, a pair ``(rows, cols)`` or
  per side ``((top, bottom), (left, right))``. :func:`padding_sides` resolves it to
  ``(pt, pb, pl, pr)``.
* Input row read by output row ``oh`` at kernel row ``i``: ``oh * sh - pt + i * dh``
  (likewise for columns); positions outside the image are padding.

Arithmetic: sums are accumulated in Python floats (float64) and the result is cast to
the input dtype at the end, so for float32 inputs these results are *more* accurate than
any float32 kernel.
"""
from __future__ import annotations

import math

import numpy as np


# --------------------------------------------------------------------------- geometry
def pair(v):
    """An int or a pair of ints as a pair."""
    if isinstance(v, (tuple, list)):
        a, b = v
        return int(a), int(b)
    return int(v), int(v)


def span(k: int, d: int) -> int:
    """Extent of a window of ``k`` taps with dilation ``d``."""
    return (k - 1) * d + 1


def same_padding(size: int, k: int, s: int, d: int):
    """TensorFlow "same" padding for one axis: (before, after)."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + span(k, d) - size, 0)
    return total // 2, total - total // 2


def padding_sides(padding, h, w, kernel_size, stride=1, dilation=1):
    """Resolve any accepted ``padding`` to ``(pt, pb, pl, pr)``."""
    kh, kw = pair(kernel_size)
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return 0, 0, 0, 0
        assert padding.lower() == "same", padding
        pt, pb = same_padding(h, kh, sh, dh)
        pl, pr = same_padding(w, kw, sw, dw)
        return pt, pb, pl, pr
    if isinstance(padding, (tuple, list)):
        rows, cols = padding
        if isinstance(rows, (tuple, list)):
            return int(rows[0]), int(rows[1]), int(cols[0]), int(cols[1])
        return int(rows), int(rows), int(cols), int(cols)
    p = int(padding)
    return p, p, p, p


def output_size(size: int, k: int, s: int, p_before: int, p_after: int, d: int) -> int:
    """Number of window positions: start 0, s, 2s, ... while the window fits."""
    count = 0
    start = 0
    while start + span(k, d) <= p_before + size + p_after:
        count += 1
        start += s
    return count


def _sizes(x, layout):
    if layout == "NHWC":
        n, h, w, c = x.shape
    else:
        n, c, h, w = x.shape
    return n, h, w, c


def _get(x, layout, n, ih, iw, c):
    """x[n, ih, iw, c] in layout terms."""
    return x[n, ih, iw, c] if layout == "NHWC" else x[n, c, ih, iw]


def _flat(layout, h, w, c_count, ih, iw, c):
    """Index of (ih, iw, c) into ``x[n].ravel()``."""
    if layout == "NHWC":
        return (ih * w + iw) * c_count + c
    return (c * h + ih) * w + iw


def _empty_out(layout, n, oh, ow, c, dtype):
    shape = (n, oh, ow, c) if layout == "NHWC" else (n, c, oh, ow)
    return np.zeros(shape, dtype=dtype)


def _set(y, layout, n, oh, ow, c, value):
    if layout == "NHWC":
        y[n, oh, ow, c] = value
    else:
        y[n, c, oh, ow] = value


def _geometry(x, kernel_size, stride, padding, dilation, layout):
    n, h, w, c = _sizes(x, layout)
    kh, kw = pair(kernel_size)
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    pt, pb, pl, pr = padding_sides(padding, h, w, (kh, kw), (sh, sw), (dh, dw))
    oh = output_size(h, kh, sh, pt, pb, dh)
    ow = output_size(w, kw, sw, pl, pr, dw)
    if oh < 1 or ow < 1:
        raise ValueError("window larger than the padded input")
    return n, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow


# --------------------------------------------------------------------------- conv
def conv2d(x, w, b=None, *, stride=1, padding=0, dilation=1, layout="NHWC",
           activation=None):
    """Cross-correlation ``y[n, oh, ow, f] = act(b[f] + sum_{i, j, c}
    x[n, oh*sh - pt + i*dh, ow*sw - pl + j*dw, c] * w[i, j, c, f])`` (out-of-image
    positions contribute 0). ``activation``: None/"identity"/"linear" or "relu".
    Returns y in ``layout`` with x's dtype."""
    if layout == "NHWC":
        kh, kw, _, f_count = w.shape
    else:
        f_count, _, kh, kw = w.shape
    n, h, wd, c_count, kh, kw, sh, sw, dh, dw, pt, pl, oh_count, ow_count = _geometry(
        x, (kh, kw), stride, padding, dilation, layout)
    y = _empty_out(layout, n, oh_count, ow_count, f_count, x.dtype)
    for n_ in range(n):
        for oh in range(oh_count):
            for ow in range(ow_count):
                for f in range(f_count):
                    acc = 0.0 if b is None else float(b[f])
                    for i in range(kh):
                        for j in range(kw):
                            ih = oh * sh - pt + i * dh
                            iw = ow * sw - pl + j * dw
                            if not (0 <= ih < h and 0 <= iw < wd):
                                continue
                            for c in range(c_count):
                                wv = w[i, j, c, f] if layout == "NHWC" else w[f, c, i, j]
                                acc += float(_get(x, layout, n_, ih, iw, c)) * float(wv)
                    if activation == "relu" and acc < 0:
                        acc = 0.0
                    _set(y, layout, n_, oh, ow, f, acc)
    return y


def conv2d_abs_scale(x, w, b=None, **kw):
    """``sum |terms|`` of every conv output: conv2d(|x|, |w|, |b|). Rounding error of any
    summation order of an output is at most ~K*eps times this."""
    return conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                  None if b is None else np.abs(b).astype(np.float64), **kw)


# --------------------------------------------------------------------------- im2col
def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1, layout="NHWC"):
    """Column matrix (N*OH*OW, KH*KW*C): row ``(n*OH + oh)*OW + ow``; column
    ``(i*KW + j)*C + c`` for NHWC, ``(c*KH + i)*KW + j`` for NCHW; padding reads 0."""
    n, h, w, c_count, kh, kw, sh, sw, dh, dw, pt, pl, oh_count, ow_count = _geometry(
        x, kernel_size, stride, padding, dilation, layout)
    cols = np.zeros((n * oh_count * ow_count, kh * kw * c_count), dtype=x.dtype)
    for n_ in range(n):
        for oh in range(oh_count):
            for ow in range(ow_count):
                row = (n_ * oh_count + oh) * ow_count + ow
                for i in range(kh):
                    for j in range(kw):
                        for c in range(c_count):
                            if layout == "NHWC":
                                col = (i * kw + j) * c_count + c
                            else:
                                col = (c * kh + i) * kw + j
                            ih = oh * sh - pt + i * dh
                            iw = ow * sw - pl + j * dw
                            if 0 <= ih < h and 0 <= iw < w:
                                cols[row, col] = _get(x, layout, n_, ih, iw, c)
    return cols


# --------------------------------------------------------------------------- pooling
def _window(x, layout, n_, c, oh, ow, h, w, kh, kw, sh, sw, pt, pl):
    """In-bounds (value, flat index) pairs of one window, in row-major (i, j) order."""
    out = []
    for i in range(kh):
        for j in range(kw):
            ih = oh * sh - pt + i
            iw = ow * sw - pl + j
            if 0 <= ih < h and 0 <= iw < w:
                out.append((_get(x, layout, n_, ih, iw, c),
                            _flat(layout, h, w, x.shape[3] if layout == "NHWC" else
                                  x.shape[1], ih, iw, c)))
    if not out:
        raise ValueError("a pooling window holds no input element")
    return out


def maxpool2d(x, pool_size, *, stride=None, padding=0, layout="NHWC"):
    """Max pooling: ``(y, argmax)``. The winner of a window is ``np.argmax`` over its
    in-bounds values listed in row-major window order: the first maximum wins ties, the
    first NaN beats everything, padding never takes part. ``argmax`` (int64) indexes
    ``x[n].ravel()``."""
    stride = pool_size if stride is None else stride
    n, h, w, c_count, kh, kw, sh, sw, _, _, pt, pl, oh_count, ow_count = _geometry(
        x, pool_size, stride, padding, 1, layout)
    y = _empty_out(layout, n, oh_count, ow_count, c_count, x.dtype)
    arg = _empty_out(layout, n, oh_count, ow_count, c_count, np.int64)
    for n_ in range(n):
        for c in range(c_count):
            for oh in range(oh_count):
                for ow in range(ow_count):
                    win = _window(x, layout, n_, c, oh, ow, h, w, kh, kw, sh, sw, pt, pl)
                    values = np.array([v for v, _ in win], dtype=x.dtype)
                    k = int(np.argmax(values))
                    _set(y, layout, n_, oh, ow, c, values[k])
                    _set(arg, layout, n_, oh, ow, c, win[k][1])
    return y, arg


def avgpool2d(x, pool_size, *, stride=None, padding=0, layout="NHWC"):
    """Average pooling over the in-bounds elements of each window (padding not counted)."""
    stride = pool_size if stride is None else stride
    n, h, w, c_count, kh, kw, sh, sw, _, _, pt, pl, oh_count, ow_count = _geometry(
        x, pool_size, stride, padding, 1, layout)
    y = _empty_out(layout, n, oh_count, ow_count, c_count, x.dtype)
    for n_ in range(n):
        for c in range(c_count):
            for oh in range(oh_count):
                for ow in range(ow_count):
                    win = _window(x, layout, n_, c, oh, ow, h, w, kh, kw, sh, sw, pt, pl)
                    _set(y, layout, n_, oh, ow, c, sum(float(v) for v, _ in win) / len(win))
    return y


def philox4x32_10(ctr, key):
    """Philox4x32-10 on Python ints, one counter (four words) and key (two) at a time:
    Random123's algorithm as published (Salmon et al., SC 2011), for the reference's
    vectorised one."""
    mask = 0xFFFFFFFF
    c, k = list(ctr), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) & mask, (k[1] + 0xBB67AE85) & mask]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & mask, (p0 >> 32) ^ c[3] ^ k[1], p0 & mask]
    return c


def dropout_word(i: int, seed: int) -> int:
    """Element i's word of fastnn's dropout masks: word (i % 32) // 8 of Philox block
    8 * (i // 32) + i % 8 under the key (seed mod 2^32, seed // 2^32)."""
    b = 8 * (i // 32) + i % 8
    return philox4x32_10((b & 0xFFFFFFFF, b >> 32, 0, 0),
                         (seed & 0xFFFFFFFF, seed >> 32))[(i % 32) // 8]
