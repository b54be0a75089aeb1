"""Convolution as im2col + GEMM, batch processed in chunks: shared by the NumPy and
Numba backends (the C backend runs the same algorithm in ``csrc/conv.c``).

``prims`` is a backend module providing ``im2col``, ``col2im``, ``gemm`` and
``bias_act`` (see :mod:`fastnn.backends`). The column matrix never holds more than
``chunk`` images, so memory stays bounded whatever the batch size.

NHWC: columns (rows (n, oh, ow), cols (kh, kw, c)) times w as (KH*KW*C, F) gives y as
(N*OH*OW, F) = NHWC directly.
NCHW: per image, w as (F, C*KH*KW) times columns transposed gives y[n] as (F, OH*OW) =
NCHW directly.
"""
from __future__ import annotations

import numpy as np


def _chunks(n: int, chunk: int):
    for n0 in range(0, n, chunk):
        yield n0, min(n, n0 + chunk)


def conv2d_forward(prims, x, w, b, g, layout, act, y, chunk):
    """See :mod:`fastnn.backends` (``conv2d_forward``)."""
    ohow, patch = g.oh * g.ow, g.patch
    f = y.shape[3] if layout == "NHWC" else y.shape[1]
    chunk = max(1, min(chunk, g.n))
    buf = np.empty(chunk * ohow * patch, dtype=x.dtype)
    if layout == "NHWC":
        w2 = w.reshape(patch, f)
    else:
        w2 = w.reshape(f, patch)
    for n0, n1 in _chunks(g.n, chunk):
        gc = g.with_batch(n1 - n0)
        cols = buf[: gc.rows * patch].reshape(gc.rows, patch)
        prims.im2col(x[n0:n1], gc, layout, cols)
        if layout == "NHWC":
            yc = y[n0:n1].reshape(gc.rows, f)
            prims.gemm(False, False, 1.0, cols, w2, 0.0, yc)
            y3 = yc.reshape(gc.rows, f, 1)
        else:
            for i in range(n1 - n0):
                prims.gemm(False, True, 1.0, w2, cols[i * ohow:(i + 1) * ohow], 0.0,
                           y[n0 + i].reshape(f, ohow))
            y3 = y[n0:n1].reshape(n1 - n0, f, ohow)
        if b is not None or act != "identity":
            prims.bias_act(y3, b, act, y3)


def conv2d_backward(prims, dy, x, w, g, layout, dx, dw, db, chunk):
    """See :mod:`fastnn.backends` (``conv2d_backward``). ``dw`` None: not computed (a
    backend that has it already)."""
    ohow, patch = g.oh * g.ow, g.patch
    f = dy.shape[3] if layout == "NHWC" else dy.shape[1]
    chunk = max(1, min(chunk, g.n))
    cols_buf = np.empty(chunk * ohow * patch, dtype=x.dtype) if dw is not None else None
    dcols_buf = np.empty(chunk * ohow * patch, dtype=x.dtype) if dx is not None else None
    if layout == "NHWC":
        w2, dw2 = w.reshape(patch, f), None if dw is None else dw.reshape(patch, f)
        if db is not None:
            db[:] = dy.reshape(-1, f).sum(axis=0)
    else:
        w2, dw2 = w.reshape(f, patch), None if dw is None else dw.reshape(f, patch)
        if db is not None:
            db[:] = dy.reshape(g.n, f, ohow).sum(axis=(0, 2))
    if dw is None and dx is None:
        return
    first = True
    for n0, n1 in _chunks(g.n, chunk):
        gc = g.with_batch(n1 - n0)
        cols = None
        if dw2 is not None:
            cols = cols_buf[: gc.rows * patch].reshape(gc.rows, patch)
            prims.im2col(x[n0:n1], gc, layout, cols)
        dcols = None if dx is None else dcols_buf[: gc.rows * patch].reshape(gc.rows, patch)
        if layout == "NHWC":
            dyc = dy[n0:n1].reshape(gc.rows, f)
            if dw2 is not None:
                prims.gemm(True, False, 1.0, cols, dyc, 0.0 if first else 1.0, dw2)
            first = False
            if dcols is not None:
                prims.gemm(False, True, 1.0, dyc, w2, 0.0, dcols)
        else:
            for i in range(n1 - n0):
                dyi = dy[n0 + i].reshape(f, ohow)
                rows = slice(i * ohow, (i + 1) * ohow)
                if dw2 is not None:
                    prims.gemm(False, False, 1.0, dyi, cols[rows], 0.0 if first else 1.0,
                               dw2)
                first = False
                if dcols is not None:
                    prims.gemm(True, False, 1.0, dyi, w2, 0.0, dcols[rows])
        if dx is not None:
            prims.col2im(dcols, gc, layout, dx[n0:n1])
