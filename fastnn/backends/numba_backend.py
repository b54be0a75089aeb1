"""Numba backend: JIT-compiled kernels, the fallback when the C extension is unavailable.

Implements every primitive of the backend contract (see :mod:`fastnn.backends`). The
public wrappers in :mod:`fastnn.ops` have validated the arguments, so arrays arrive
C-contiguous and of one float dtype. The Python functions here only flatten arrays and
unpack :class:`~fastnn.ops._geometry.ConvGeometry` into plain ints; all the work runs in
``@numba.njit`` kernels (``parallel=True`` with ``prange`` where they parallelise).

Every kernel receives 1-D arrays and plain ints, so each compiles once per dtype (and
layouts or transposes are runtime flags, not new specialisations). No ``fastmath`` but
``contract`` in the GEMM micro-kernel and the direct convolution's taps (their
multiply-adds become FMAs: one rounding instead of two; 86528 x 9 x 32 float ran in half
the time): NaN and infinities propagate as in the NumPy reference, and results do not
depend on the number of threads (no reduction is ever split between threads in a
thread-dependent way). Hot loops index with unsigned integers (see the direct convolution).

GEMM
----
``c = alpha * op(a) @ op(b) + beta * c`` is computed tile by tile: the output is cut
into tiles of at most ``MB x NB``, and each worker (``prange``) takes a run of them, column
block by column block. A worker packs the column block of ``op(b)`` it needs once, depth
block by depth block (``KC``), as panels of 64 bytes of columns; then an ``MR``-row
register-tiled micro-kernel (6 rows x 2 vectors of 256 bits, see
``tools/gen_numba_micro.py``) multiplies rows of ``op(a)``, read where they are through
strides (``op(a)[i, p] = a.flat[i*ars + p*acs]``: no transpose of a whole matrix is ever
made), by each panel into a per-worker accumulator tile. Its scalar accumulators become
vector registers only with LLVM's SLP vectoriser, which Numba leaves off by default: it
is turned on while the GEMM compiles (:func:`_slp_vectorized`). The full K reduction of
a tile happens in one worker, in a fixed order.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading

import numba
import numpy as np
from numba import njit, prange
from numba.core.compiler_lock import global_compiler_lock

from . import _conv_driver, _numba_micro
from .numpy_backend import PHILOX_M, PHILOX_W

__all__ = [
    "gemm", "im2col", "col2im", "bias_act", "bias_act_backward", "batchnorm_stats",
    "batchnorm_forward", "batchnorm_backward", "relu_mask",
    "relu_mask_backward", "conv2d_forward", "conv2d_backward", "conv2d_maxpool_forward",
    "conv2d_maxpool_backward",
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "softmax_xent", "adam_update", "dropout", "set_num_threads", "get_num_threads", "isa",
]


# --------------------------------------------------------------------------- threads
# Numba's thread count belongs to the Python thread that set it; fastnn's is the
# process's, as the C backend's: every kernel entry point (see _process_wide at the end)
# makes the calling thread's count this one (None: Numba's default, never set).
_THREADS = [None]


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (capped at ``numba.config.NUMBA_NUM_THREADS``), in every Python
    thread."""
    _THREADS[0] = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(_THREADS[0])


def get_num_threads() -> int:
    """Threads the kernels use."""
    return int(numba.get_num_threads() if _THREADS[0] is None else _THREADS[0])


def isa() -> str:
    """Instruction-set description of this backend."""
    return "numba"


# --------------------------------------------------------------------------- GEMM
# Register tile (see tools/gen_numba_micro.py): _MR rows x 64 bytes of columns.
_MR = 6
_NR = {np.dtype(np.float32): 16, np.dtype(np.float64): 8}
# Cache tiles (elements). The packed B block is KC x NB, the accumulator tile MB x NB, both
# per worker; they stay within L2. _MB is a multiple of _MR, _NB of both _NR.
_MB = 120
_KC = 512
_NB = {np.dtype(np.float32): 256, np.dtype(np.float64): 128}
# Below this many multiply-adds a product runs on one worker: waking the pool's other
# threads costs more than they save (GOMP_SPINCOUNT=1000, see c_backend: they sleep between
# calls). 128 x 64 x 10 float: 15 us on one thread, 95 us on two; 128 x 1600 x 64: 345
# and 270 us (2 threads, this Xeon).
_GEMM_SERIAL_MACS = 1 << 20


@njit(cache=True)
def _micro(nr, kc, a, ao, ars, acs, bp, bo, ac, co):
    """The _MR x nr micro-kernel of _numba_micro (nr: 16 float32, 8 float64) on the
    accumulator block at ac[co], rows nr apart. Called by name, not passed as an argument:
    a function taking a dispatcher is not cached, and the GEMM compiled again, 3.6 s, in
    every process. Every function of the GEMM must first compile inside _slp_vectorized
    (gemm sees to it): compiled outside, this one stayed scalar in the GEMM compiled after
    it (24 ms for 15488x288x64 float, 3.0 in scope), and the cache would keep it so. The
    row stride is a literal, which Numba compiles in: with the stride a run-time value
    (the tile's width, as before) the kernel alone ran at 45 GFLOPS, with it 102-104 (one
    thread, Zen 2, kc 288, 2026-12-04)."""
    if nr == 16:
        _numba_micro.micro_6x16(kc, a, ao, ars, acs, bp, bo, ac, co, 16)
    else:
        _numba_micro.micro_6x8(kc, a, ao, ars, acs, bp, bo, ac, co, 8)


@njit(cache=True)   # (not contract: alpha * acc + beta * c rounds twice, as the reference)
def _gemm_worker(wk, nwork, a, ars, acs, b, brs, bcs, c, m, n, k, alpha, beta,
                 bp, ap, ac, mb_max, nb_max, kc_max, nr):
    """Worker ``wk`` of ``nwork``: its share of the tiles, column block by column block, of
    c.flat[i*n + j] = alpha * sum_p a.flat[i*ars + p*acs] * b.flat[p*brs + j*bcs]
    (+ beta * old c), for i < m, j < n.

    ``bp`` (k * nb_max, nb_max a multiple of nr) holds a column block of op(b), packed
    once per block a worker meets: depth block by depth block of kc_max, each as nr-column
    panels, kc x nr row-major, zero-padded to whole panels. ``ac`` ((mb_max + _MR)
    * nb_max) accumulates the tile as _MR x nr blocks, each row-major (rows nr apart), a
    row strip's blocks panel after panel, the strips one after the other. ``_micro``
    (an _MR x nr kernel of _numba_micro) adds the product of _MR rows of op(a), read where
    they are, and one B panel to _MR x nr accumulators. Only a tile's last rows, when fewer
    than _MR, are copied to ``ap`` (_MR * kc_max, column by column) and zero-padded; the
    padded rows and columns of ``ac`` are never written out. Each output element is
    reduced over p in increasing order by one worker, whatever the number of threads."""
    nmb = (m + mb_max - 1) // mb_max
    nnb = (n + nb_max - 1) // nb_max
    ntiles = nmb * nnb
    packed = -1  # the column block bp holds
    for t in range(wk * ntiles // nwork, (wk + 1) * ntiles // nwork):
        jb = t // nmb
        ib = t - jb * nmb
        i0 = ib * mb_max
        mb = min(m, i0 + mb_max) - i0
        mfull = mb // _MR * _MR
        j0 = jb * nb_max
        nb = min(n, j0 + nb_max) - j0
        npan = (nb + nr - 1) // nr
        nbp = npan * nr
        for q in range((mfull + _MR) * nbp):
            ac[q] = 0
        if jb != packed:
            # pack op(b)[:, j0:j0+nb], depth block by depth block: the block at p0 starts
            # at bp[p0 * nbp], its panel jp holds columns jp*nr.. as kc x nr
            p0 = 0
            while p0 < k:
                kc = min(k, p0 + kc_max) - p0
                if bcs == 1:
                    for p in range(kc):
                        src = (p0 + p) * brs + j0
                        for jp in range(npan):
                            dst = p0 * nbp + (jp * kc + p) * nr
                            w = min(nr, nb - jp * nr)
                            for jj in range(w):
                                bp[dst + jj] = b[src + jp * nr + jj]
                            for jj in range(w, nr):
                                bp[dst + jj] = 0
                else:
                    for j in range(nbp):
                        jp = j // nr
                        dst = p0 * nbp + jp * kc * nr + (j - jp * nr)
                        if j < nb:
                            src = p0 * brs + (j0 + j) * bcs
                            for p in range(kc):
                                bp[dst + p * nr] = b[src + p * brs]
                        else:
                            for p in range(kc):
                                bp[dst + p * nr] = 0
                p0 += kc_max
            packed = jb
        p0 = 0
        while p0 < k:
            kc = min(k, p0 + kc_max) - p0
            for i in range(0, mfull, _MR):
                ao = (i0 + i) * ars + p0 * acs
                for jp in range(npan):
                    _micro(nr, kc, a, ao, ars, acs, bp, p0 * nbp + jp * kc * nr, ac,
                           (i * npan + jp * _MR) * nr)
            if mfull < mb:
                # the last rows, fewer than _MR: ap[p*_MR + r], zero-padded
                for r in range(_MR):
                    if mfull + r < mb:
                        src = (i0 + mfull + r) * ars + p0 * acs
                        for p in range(kc):
                            ap[p * _MR + r] = a[src + p * acs]
                    else:
                        for p in range(kc):
                            ap[p * _MR + r] = 0
                for jp in range(npan):
                    _micro(nr, kc, ap, np.int64(0), np.int64(1), np.int64(_MR), bp,
                           p0 * nbp + jp * kc * nr, ac, (mfull * npan + jp * _MR) * nr)
            p0 += kc_max
        # write the tile out: c = alpha * acc (+ beta * c); row i's block in panel jp
        # starts at ((i - r) * npan + jp * _MR + r) * nr, r = i % _MR
        for i in range(mb):
            cr = (i0 + i) * n + j0
            r = i % _MR
            for jp in range(npan):
                ar = ((i - r) * npan + jp * _MR + r) * nr
                cj = cr + jp * nr
                w = min(nr, nb - jp * nr)
                if beta == 0:
                    for j in range(w):
                        c[cj + j] = alpha * ac[ar + j]
                else:
                    for j in range(w):
                        c[cj + j] = alpha * ac[ar + j] + beta * c[cj + j]


@njit(parallel=True, cache=True)
def _gemm_kernel(a, ars, acs, b, brs, bcs, c, m, n, k, alpha, beta, bpack, apack, acc,
                 mb_max, nb_max, kc_max, nr):
    nwork = bpack.shape[0]
    if nwork == 1:  # not a parallel region: it would wake the pool's threads all the same
        _gemm_worker(np.int64(0), np.int64(1), a, ars, acs, b, brs, bcs, c, m, n, k, alpha,
                     beta, bpack[0], apack[0], acc[0], mb_max, nb_max, kc_max, nr)
        return
    for wk in prange(nwork):
        _gemm_worker(np.int64(wk), nwork, a, ars, acs, b, brs, bcs, c, m, n, k, alpha, beta,
                     bpack[wk], apack[wk], acc[wk], mb_max, nb_max, kc_max, nr)


@njit(cache=True)
def _scale_kernel(c, beta):
    """c = beta * c, or zeros when beta == 0 (c not read). Only for K == 0."""
    if beta == 0:
        for i in range(c.size):
            c[i] = 0
    else:
        for i in range(c.size):
            c[i] = beta * c[i]


class _Workspace(threading.local):
    def __init__(self):
        self.buffers = {}


_workspace = _Workspace()


def _buffers(dtype, nwork: int, k: int):
    """Per-worker packing buffers (op(b)'s column block over the whole depth k, op(a)'s
    last rows) and tile accumulators, cached per Python thread and dtype (sized for the
    largest tile and the deepest product so far)."""
    key = np.dtype(dtype)
    cur = _workspace.buffers.get(key)
    nb = _NB[key]
    if cur is None or cur[0].shape[0] < nwork or cur[0].shape[1] < k * nb:
        cur = (np.empty((nwork, k * nb), dtype=key), np.empty((nwork, _MR * _KC), dtype=key),
               np.empty((nwork, (_MB + _MR) * nb), dtype=key))
        _workspace.buffers[key] = cur
    return cur[0][:nwork], cur[1][:nwork], cur[2][:nwork]


def _round_up(x: int, q: int) -> int:
    return -(-x // q) * q


gemm_fast = None  # (ops.matmul checks every call: see fastnn.backends)


def gemm(trans_a, trans_b, alpha, a, b, beta, c):
    """``c[:] = alpha * op(a) @ op(b) + beta * c`` (see :mod:`fastnn.backends`)."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    dt = c.dtype.type
    if m == 0 or n == 0:
        return
    if k == 0:
        _scale_kernel(c.reshape(-1), dt(beta))
        return
    # op(a)[i, p] = a.flat[i*ars + p*acs]; op(b)[p, j] = b.flat[p*brs + j*bcs]
    ars, acs = (1, m) if trans_a else (k, 1)
    brs, bcs = (1, k) if trans_b else (n, 1)
    nr = _NR[c.dtype]
    nthreads = numba.get_num_threads() if m * n * k >= _GEMM_SERIAL_MACS else 1
    # Column blocks of equal width (a multiple of nr), at most _NB: n = 288 is 2 x 144, not
    # 256 + 32 (with two workers taking alternate tiles, one got every 256-wide tile).
    nnb = -(-n // _NB[c.dtype])
    strips = -(-m // _MR)
    if strips < 2 * nthreads:
        # too few row strips for two tiles per thread (a convolution's dW, 9 x 32): cut
        # the columns too, in blocks of at least nr
        nnb = max(nnb, min(-(-n // nr), -(-2 * nthreads // strips)))
    nb_max = _round_up(-(-n // nnb), nr)
    # Row blocks of about equal height, a multiple of _MR, at most _MB, and enough of them
    # for about two tiles per thread. Tile shapes never change any result: each element
    # is reduced over p in the same order whatever the tiling.
    mblocks = max(-(-2 * nthreads // nnb), -(-m // _MB))
    mb_max = _round_up(-(-m // mblocks), _MR)
    ntiles = -(-m // mb_max) * nnb
    nwork = max(1, min(nthreads, ntiles))
    bpack, apack, acc = _buffers(c.dtype, nwork, k)
    args = (a.reshape(-1), ars, acs, b.reshape(-1), brs, bcs, c.reshape(-1), m, n, k,
            dt(alpha), dt(beta), bpack, apack, acc, mb_max, nb_max, _KC, nr)
    key = (c.dtype, a.flags.writeable, b.flags.writeable)
    if key in _GEMM_COMPILED:
        _gemm_kernel(*args)
    else:
        with _slp_vectorized():
            _gemm_kernel(*args)
        _GEMM_COMPILED.add(key)


# Argument types (dtype, whether a and b are writeable) _gemm_kernel has been called with.
_GEMM_COMPILED = set()


@contextlib.contextmanager
def _slp_vectorized():
    """Compile with LLVM's SLP vectoriser on, which the micro-kernels need to keep their
    scalar accumulators in vector registers (without it: 10-13 GFLOPS of scalar FMAs and
    spills, against 208-285 with it, 2 threads). Numba turns it off by default (numba PR
    8852: miscompilations reported against older LLVMs); here it is on only for the GEMM
    kernel's compilation, whose results the tests check against the NumPy reference, and
    Numba's compiler lock is held meanwhile so that no other compilation, in any thread,
    sees the setting."""
    with global_compiler_lock:
        old = numba.config.SLP_VECTORIZE
        numba.config.SLP_VECTORIZE = 1
        try:
            yield
        finally:
            numba.config.SLP_VECTORIZE = old


# --------------------------------------------------------------------------- im2col
# Geometry arguments, in this order, for every sliding-window kernel below:
#   nimg, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow
# (x flat index: NHWC ((n*h + ih)*w + iw)*ch + c, NCHW ((n*ch + c)*h + ih)*w + iw).

@njit(cache=True)
def _im2col_row(x, cols, nhwc, r, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """Column rows of image row r = n*oh + yo (all ow output positions)."""
    patch = kh * kw * ch
    ni = r // oh
    yo = r - ni * oh
    for xo in range(ow):
        base = (r * ow + xo) * patch
        if nhwc:
            iw0 = xo * sw - pl
            # whole kernel rows inside the image (no dilation): one contiguous run each
            run = dw == 1 and iw0 >= 0 and iw0 + kw <= w
            for ki in range(kh):
                ih = yo * sh - pt + ki * dh
                if run and ih >= 0 and ih < h:
                    src = np.uint64(((ni * h + ih) * w + iw0) * ch)
                    dst = np.uint64(base + ki * kw * ch)
                    for q in range(np.uint64(kw * ch)):
                        cols[dst + q] = x[src + q]
                    continue
                for kj in range(kw):
                    iw = xo * sw - pl + kj * dw
                    dst = np.uint64(base + (ki * kw + kj) * ch)
                    if ih >= 0 and ih < h and iw >= 0 and iw < w:
                        src = np.uint64(((ni * h + ih) * w + iw) * ch)
                        for ci in range(np.uint64(ch)):
                            cols[dst + ci] = x[src + ci]
                    else:
                        for ci in range(np.uint64(ch)):
                            cols[dst + ci] = 0
        else:
            for ci in range(ch):
                plane = (ni * ch + ci) * h
                for ki in range(kh):
                    ih = yo * sh - pt + ki * dh
                    dst = base + (ci * kh + ki) * kw
                    if ih >= 0 and ih < h:
                        src = (plane + ih) * w
                        for kj in range(kw):
                            iw = xo * sw - pl + kj * dw
                            if iw >= 0 and iw < w:
                                cols[dst + kj] = x[src + iw]
                            else:
                                cols[dst + kj] = 0
                    else:
                        for kj in range(kw):
                            cols[dst + kj] = 0


@njit(parallel=True, cache=True)
def _im2col_kernel(x, cols, nhwc, nimg, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    for r in prange(nimg * oh):
        _im2col_row(x, cols, nhwc, np.int64(r), h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


@njit(cache=True)
def _col2im_row_nchw(cols, x, r, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """NCHW gather for input row r = n*h + ih: x[n, :, ih, :] = sum of the column entries
    that read it, one thread per input row (no races). For input row ih, kernel row ki
    contributes iff t = ih + pt - ki*dh is a multiple of sh with 0 <= t/sh < oh (same for
    columns). Terms are added in row-major kernel-offset order, as the reference's
    per-offset scatter-add does."""
    patch = kh * kw * ch
    ni = r // h
    ih = r - ni * h
    for ci in range(ch):
        xrow = ((ni * ch + ci) * h + ih) * w
        for iw in range(w):
            x[xrow + iw] = 0
        for ki in range(kh):
            t = ih + pt - ki * dh
            if t < 0 or t % sh != 0:
                continue
            yo = t // sh
            if yo >= oh:
                continue
            orow = (ni * oh + yo) * ow
            cbase = (ci * kh + ki) * kw
            for iw in range(w):
                s = x[xrow + iw]
                for kj in range(kw):
                    u = iw + pl - kj * dw
                    if u < 0 or u % sw != 0:
                        continue
                    xo = u // sw
                    if xo >= ow:
                        continue
                    s += cols[(orow + xo) * patch + cbase + kj]
                x[xrow + iw] = s


@njit(parallel=True, cache=True)
def _col2im_nchw_kernel(cols, x, nimg, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    for r in prange(nimg * h):
        _col2im_row_nchw(cols, x, np.int64(r), h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh,
                         ow)


def _geom_args(g):
    return (int(g.n), int(g.h), int(g.w), int(g.c), int(g.kh), int(g.kw), int(g.sh),
            int(g.sw), int(g.pt), int(g.pl), int(g.dh), int(g.dw), int(g.oh), int(g.ow))


def im2col(x, g, layout, cols):
    """Lower patches of ``x`` to the rows of ``cols`` (see :mod:`fastnn.backends`)."""
    _im2col_kernel(x.reshape(-1), cols.reshape(-1), layout == "NHWC", *_geom_args(g))


@njit(cache=True)
def _col2im_image_nhwc(cols, x, ni, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """NHWC col2im of image ni as a scatter: walk its column rows in order and add each
    kernel row into x, kw*ch contiguous elements at once where it lies inside the image
    (im2col's runs mirrored). Only image ni's x is written."""
    patch = kh * kw * ch
    xn = ni * h * w * ch
    uxn = np.uint64(xn)
    for q in range(np.uint64(h * w * ch)):
        x[uxn + q] = 0
    for yo in range(oh):
        for xo in range(ow):
            src = ((ni * oh + yo) * ow + xo) * patch
            iw0 = xo * sw - pl
            dense = dw == 1 and iw0 >= 0 and iw0 + kw <= w
            for ki in range(kh):
                ih = yo * sh - pt + ki * dh
                if ih < 0 or ih >= h:
                    continue
                rs = src + ki * kw * ch
                if dense:
                    d = np.uint64(xn + (ih * w + iw0) * ch)
                    urs = np.uint64(rs)
                    for q in range(np.uint64(kw * ch)):
                        x[d + q] += cols[urs + q]
                    continue
                for kj in range(kw):
                    iw = iw0 + kj * dw
                    if iw >= 0 and iw < w:
                        d = np.uint64(xn + (ih * w + iw) * ch)
                        sb = np.uint64(rs + kj * ch)
                        for q in range(np.uint64(ch)):
                            x[d + q] += cols[sb + q]


@njit(parallel=True, cache=True)
def _col2im_nhwc_kernel(cols, x, nimg, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    for ni in prange(nimg):
        _col2im_image_nhwc(cols, x, np.int64(ni), h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw,
                           oh, ow)


def col2im(cols, g, layout, x):
    """Adjoint of :func:`im2col`; ``x`` is overwritten. NHWC: a scatter per image
    (threads over images); NCHW: a gather per input row."""
    if layout == "NHWC":
        _col2im_nhwc_kernel(cols.reshape(-1), x.reshape(-1), *_geom_args(g))
    else:
        _col2im_nchw_kernel(cols.reshape(-1), x.reshape(-1), *_geom_args(g))


# --------------------------------------------------------------------------- bias + act
@njit(cache=True)
def _bias_act_run(y, bv, has_b, relu, out, base, count):
    """out[base:base+count] = act(y[...] + bv) (bias only if ``has_b``). One straight
    loop per flag combination with unsigned indices, so each vectorises (``v < 0 ? 0 :
    v`` keeps NaN and -0.0, as the reference does)."""
    zero = y.dtype.type(0)
    b0 = np.uint64(base)
    cnt = np.uint64(count)
    if has_b and relu:
        for q in range(cnt):
            v = y[b0 + q] + bv
            out[b0 + q] = zero if v < 0 else v
    elif has_b:
        for q in range(cnt):
            out[b0 + q] = y[b0 + q] + bv
    elif relu:
        for q in range(cnt):
            v = y[b0 + q]
            out[b0 + q] = zero if v < 0 else v
    else:
        for q in range(cnt):
            out[b0 + q] = y[b0 + q]


@njit(cache=True)
def _bias_act_rows(y, b, has_b, relu, out, r0, r1, ch):
    """Rows [r0, r1) of (outer, C) (inner == 1): bias b[c] per column, row by row; without
    a bias the rows are one contiguous run."""
    if not has_b:
        _bias_act_run(y, y.dtype.type(0), False, relu, out, r0 * ch, (r1 - r0) * ch)
        return
    zero = y.dtype.type(0)
    uch = np.uint64(ch)
    for r in range(r0, r1):
        base = np.uint64(r * ch)
        if relu:
            for ci in range(uch):
                v = y[base + ci] + b[ci]
                out[base + ci] = zero if v < 0 else v
        else:
            for ci in range(uch):
                out[base + ci] = y[base + ci] + b[ci]


@njit(parallel=True, cache=True)
def _bias_act_kernel(y, b, has_b, relu, out, outer, ch, inner, serial):
    if serial:
        if inner == 1:
            _bias_act_rows(y, b, has_b, relu, out, 0, outer, ch)
        else:
            for r in range(outer * ch):
                _bias_act_run(y, b[r % ch] if has_b else y.dtype.type(0), has_b, relu, out,
                              r * inner, inner)
        return
    if inner == 1:
        # runs of whole rows (a prange iteration per 32-element row cost more than it)
        nruns, per = _runs(outer)
        for rr in prange(nruns):
            r0 = rr * per
            _bias_act_rows(y, b, has_b, relu, out, r0, min(outer, r0 + per), ch)
    else:
        for r in prange(outer * ch):
            bv = b[r % ch] if has_b else y.dtype.type(0)
            _bias_act_run(y, bv, has_b, relu, out, r * inner, inner)


# Elementwise kernels on fewer elements than this run without a parallel region: even with
# one iteration, a region wakes the pool's threads, which sleep between calls (libgomp's
# GOMP_SPINCOUNT=1000, set by c_backend): 45 us for a 32 x 128 x 10 product with 0.5 ms of
# Python between calls, 13 us without the region (2 threads, this Xeon).
_SERIAL_MAX = 1 << 16

# Fixed number of row chunks for the db reduction when inner == 1: the partial sums and
# their order depend only on the shape, never on the number of threads.
_DB_CHUNKS = 64


@njit(cache=True)
def _runs(total):
    """(nruns, per): the elementwise loops' split of ``total`` elements into at most
    1024 contiguous runs of ``per`` (a parallel iteration per element, or per short row,
    is far slower)."""
    nruns = max(1, min(total, 1024))
    return nruns, (total + nruns - 1) // nruns


@njit(cache=True)
def _bias_act_backward_part(dy, y, relu, dx, db, part, mode, r, outer, ch, inner, nchunks):
    """mode 1 (inner == 1): chunk r of the rows, partial sums of dx per channel into
    part[r]; mode 2 (inner > 1): channel r, db[r] = sum."""
    zero = dy.dtype.type(0)
    if mode == 1:
        per = (outer + nchunks - 1) // nchunks
        o0 = r * per
        o1 = min(outer, o0 + per)
        for ci in range(ch):
            part[r, ci] = 0.0
        for o in range(o0, o1):
            base = np.uint64(o * ch)
            for ci in range(np.uint64(ch)):
                g = dy[base + ci]
                if relu and not (y[base + ci] > 0):
                    g = zero
                dx[base + ci] = g
                part[r, ci] += g
    else:
        s = 0.0
        for o in range(outer):
            base = np.uint64((o * ch + r) * inner)
            for q in range(np.uint64(inner)):
                g = dy[base + q]
                if relu and not (y[base + q] > 0):
                    g = zero
                dx[base + q] = g
                s += g
        db[r] = s


@njit(cache=True)
def _act_backward_run(dy, y, relu, dx, q0, q1):
    zero = dy.dtype.type(0)
    for q in range(q0, q1):
        g = dy[q]
        if relu and not (y[q] > 0):
            g = zero
        dx[q] = g


@njit(parallel=True, cache=True)
def _bias_act_backward_kernel(dy, y, relu, dx, db, has_db, outer, ch, inner, nchunks,
                              serial):
    if not has_db:
        # elementwise: threads take contiguous runs of the flat arrays (a run per
        # (row, channel) was one element per parallel iteration for NHWC's inner == 1)
        total = outer * ch * inner
        if serial:
            _act_backward_run(dy, y, relu, dx, 0, total)
            return
        nruns, per = _runs(total)
        for r in prange(nruns):
            _act_backward_run(dy, y, relu, dx, r * per, min(total, (r + 1) * per))
        return
    if inner == 1:
        mode = 1
        nrows = nchunks
    else:
        mode = 2
        nrows = ch
    part = np.empty((nchunks if mode == 1 else 0, ch), dtype=np.float64)
    if serial:  # the same parts, summed in the same order
        for r in range(nrows):
            _bias_act_backward_part(dy, y, relu, dx, db, part, mode, r, outer, ch, inner,
                                    nchunks)
    else:
        for r in prange(nrows):
            _bias_act_backward_part(dy, y, relu, dx, db, part, mode, np.int64(r), outer,
                                    ch, inner, nchunks)
    if mode == 1:
        for ci in range(ch):
            s = 0.0
            for q in range(nchunks):
                s += part[q, ci]
            db[ci] = s


@njit(cache=True)
def _relu_mask_run(x, y, mask, e0, e1):
    for e in range(e0, e1):
        v = x[e]
        m = v <= 0
        mask[e] = m
        y[e] = 0 if m else v


@njit(parallel=True, cache=True)
def _relu_mask_kernel(x, y, mask):
    n = x.size
    if n < _SERIAL_MAX:
        _relu_mask_run(x, y, mask, 0, n)
        return
    nruns, per = _runs(n)
    for r in prange(nruns):
        _relu_mask_run(x, y, mask, r * per, min(n, (r + 1) * per))


@njit(cache=True)
def _relu_mask_bwd_run(dy, mask, dx, e0, e1):
    for e in range(e0, e1):
        dx[e] = 0 if mask[e] else dy[e]


@njit(parallel=True, cache=True)
def _relu_mask_bwd_kernel(dy, mask, dx):
    n = dy.size
    if n < _SERIAL_MAX:
        _relu_mask_bwd_run(dy, mask, dx, 0, n)
        return
    nruns, per = _runs(n)
    for r in prange(nruns):
        _relu_mask_bwd_run(dy, mask, dx, r * per, min(n, (r + 1) * per))


@njit(cache=True)
def _dropout_run(k0, k1, t, scale, x, has_x, mask, y, g0, g1):
    """Groups g0 .. g1 of 32 elements: numpy_backend.dropout_words's Philox4x32-10 words,
    eight blocks side by side per group, each lane's ten rounds in uint64 arithmetic."""
    n = mask.size
    m32 = np.uint64(0xFFFFFFFF)
    mul0, mul1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
    w0, w1 = np.uint64(PHILOX_W[0]), np.uint64(PHILOX_W[1])
    zero = mask.dtype.type(0)
    for g in range(g0, g1):
        for lane in range(8):
            b = np.uint64(g) * np.uint64(8) + np.uint64(lane)
            c0, c1, c2, c3 = b & m32, b >> np.uint64(32), np.uint64(0), np.uint64(0)
            for r in range(10):
                ka = (k0 + np.uint64(r) * w0) & m32
                kb = (k1 + np.uint64(r) * w1) & m32
                p0, p1 = mul0 * c0, mul1 * c2
                c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ ka, p1 & m32,
                                  (p0 >> np.uint64(32)) ^ c3 ^ kb, p0 & m32)
            for w in range(4):
                i = g * 32 + w * 8 + lane
                if i < n:
                    word = c0 if w == 0 else c1 if w == 1 else c2 if w == 2 else c3
                    m = scale if word >= t else zero
                    mask[i] = m
                    if has_x:
                        y[i] = x[i] * m


@njit(parallel=True, cache=True)
def _dropout_kernel(k0, k1, t, scale, x, has_x, mask, y):
    groups = (mask.size + 31) // 32
    nruns, per = _runs(groups)
    for r in prange(nruns):
        _dropout_run(k0, k1, t, scale, x, has_x, mask, y, r * per, min(groups, (r + 1) * per))


def dropout(seed, t, scale, x, mask, y):
    """numpy_backend.dropout: the mask of its Philox4x32-10 words (and ``y = x * mask``)."""
    has_x = x is not None
    xs = x.reshape(-1) if has_x else mask.reshape(-1)
    ys = y.reshape(-1) if has_x else mask.reshape(-1)
    _dropout_kernel(np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32), np.uint64(t),
                    mask.dtype.type(scale), xs, has_x, mask.reshape(-1), ys)


def relu_mask(x, y, mask):
    """``mask = x <= 0``; ``y = where(mask, +0.0, x)``."""
    _relu_mask_kernel(x.reshape(-1), y.reshape(-1), mask.reshape(-1))


def relu_mask_backward(dy, mask, dx):
    """``dx = where(mask, +0.0, dy)``; ``dx`` may be ``dy``."""
    _relu_mask_bwd_kernel(dy.reshape(-1), mask.reshape(-1), dx.reshape(-1))


def bias_act(y, b, act, out):
    """``out = act(y + b[None, :, None])`` on (outer, C, inner) arrays."""
    outer, ch, inner = y.shape
    bf = b if b is not None else np.zeros(1, dtype=y.dtype)
    _bias_act_kernel(y.reshape(-1), bf, b is not None, act == "relu", out.reshape(-1),
                     outer, ch, inner, y.size < _SERIAL_MAX)


def bias_act_backward(dy, y, act, dx, db):
    """``dx = dy * act'(y)``; ``db`` (or None) = ``dx.sum(axis=(0, 2))``."""
    outer, ch, inner = y.shape
    dbf = db if db is not None else np.zeros(1, dtype=y.dtype)
    nchunks = max(1, min(_DB_CHUNKS, outer))
    _bias_act_backward_kernel(dy.reshape(-1), y.reshape(-1), act == "relu", dx.reshape(-1),
                              dbf, db is not None, outer, ch, inner, nchunks,
                              y.size < _SERIAL_MAX)


# --------------------------------------------------------------------------- batch norm
# Channel sums (batchnorm_stats, batchnorm_backward) are taken in float64 over pieces of a
# channel's rows that depend on the shape only, the pieces' sums added in piece order (as
# the bias gradient's _DB_CHUNKS): the results do not depend on the thread count.
# Channels-last (inner == 1): a piece is a run of whole rows, all channels at once (the
# work items are the pieces); otherwise a work item is one channel's rows of one piece.
_BN_PIECES = 64         # pieces of a channel's rows, at most
_BN_PIECE_ROWS = 32     # rows per piece (inner == 1), at least
_BN_PIECE_ELEMS = 2048  # a channel's elements per piece (inner > 1), at least


def _bn_pieces(outer: int, inner: int) -> int:
    """The number of pieces the channel sums of an (outer, C, inner) array take (each
    piece at least one row)."""
    if inner == 1:
        return max(1, min(_BN_PIECES, outer // _BN_PIECE_ROWS))
    return max(1, min(_BN_PIECES, outer, outer * inner // _BN_PIECE_ELEMS))


@njit(cache=True)
def _bn_sums_item(p, q, shift, stats, part1, part2, t, pieces, outer, ch, inner):
    """Work item ``t`` of the channel sums: part1[pc, j] = sum of u and part2[pc, j] = sum
    of u * w (float64) over piece pc's rows of channel j. ``stats``: u = w = x - shift[j]
    in float64 (p = q = x); else u = dy and w = x - mean[j] in x's dtype (p = dy, q = x,
    shift = mean)."""
    if inner == 1:
        pc = t
        a1 = part1[pc]
        a2 = part2[pc]
        for j in range(ch):
            a1[j] = 0.0
            a2[j] = 0.0
        uch = np.uint64(ch)
        for o in range(outer * pc // pieces, outer * (pc + 1) // pieces):
            base = np.uint64(o * ch)
            if stats:
                for j in range(uch):
                    u = np.float64(p[base + j]) - np.float64(shift[j])
                    a1[j] += u
                    a2[j] += u * u
            else:
                for j in range(uch):
                    u = np.float64(p[base + j])
                    a1[j] += u
                    a2[j] += u * np.float64(q[base + j] - shift[j])
        return
    pc = t // ch
    j = t % ch
    s = shift[j]
    sf = np.float64(s)
    s1 = 0.0
    s2 = 0.0
    uin = np.uint64(inner)
    for o in range(outer * pc // pieces, outer * (pc + 1) // pieces):
        base = np.uint64((o * ch + j) * inner)
        if stats:
            for i in range(uin):
                u = np.float64(p[base + i]) - sf
                s1 += u
                s2 += u * u
        else:
            for i in range(uin):
                u = np.float64(p[base + i])
                s1 += u
                s2 += u * np.float64(q[base + i] - s)
    part1[pc, j] = s1
    part2[pc, j] = s2


@njit(cache=True)
def _bn_add_pieces(part1, part2, s1, s2):
    """s1[j], s2[j] = the pieces' sums of channel j, added in piece order."""
    pieces, ch = part1.shape
    for j in range(ch):
        t1 = part1[0, j]
        t2 = part2[0, j]
        for pc in range(1, pieces):
            t1 += part1[pc, j]
            t2 += part2[pc, j]
        s1[j] = t1
        s2[j] = t2


@njit(parallel=True, cache=True)
def _bn_stats_kernel(x, mean, var, outer, ch, inner, pieces, serial):
    """One pass of shifted sums (shift: the channel's first element, x[0, j, 0], or 0 where
    that is not finite, so an infinite channel's mean stays infinite): mean = sum(d) / n +
    shift, var = max(sum(d^2) / n - (sum(d) / n)^2, 0) (NaN stays)."""
    shift = np.empty_like(mean)
    for j in range(ch):
        v = x[j * inner]
        shift[j] = v if v - v == 0 else 0
    part1 = np.empty((pieces, ch), dtype=np.float64)
    part2 = np.empty((pieces, ch), dtype=np.float64)
    items = pieces if inner == 1 else pieces * ch
    if serial:  # the same items, summed in the same order
        for t in range(items):
            _bn_sums_item(x, x, shift, True, part1, part2, t, pieces, outer, ch, inner)
    else:
        for t in prange(items):
            _bn_sums_item(x, x, shift, True, part1, part2, np.int64(t), pieces, outer, ch,
                          inner)
    s1 = np.empty(ch, dtype=np.float64)
    s2 = np.empty(ch, dtype=np.float64)
    _bn_add_pieces(part1, part2, s1, s2)
    n = np.float64(outer * inner)
    for j in range(ch):
        m = s1[j] / n
        v = s2[j] / n - m * m
        mean[j] = m + np.float64(shift[j])
        var[j] = v if (v > 0 or v != v) else 0.0


@njit(cache=True)
def _bn_fwd_last(x, mean, a, beta, has_beta, out, o0, o1, ch):
    """Rows [o0, o1) of a channels-last (outer, C): out = (x - mean) * a + beta."""
    uch = np.uint64(ch)
    for o in range(o0, o1):
        base = np.uint64(o * ch)
        if has_beta:
            for j in range(uch):
                out[base + j] = (x[base + j] - mean[j]) * a[j] + beta[j]
        else:
            for j in range(uch):
                out[base + j] = (x[base + j] - mean[j]) * a[j]


@njit(cache=True)
def _bn_fwd_run(x, m, a, b, has_beta, out, base, count):
    """out[base:base+count] = (x[...] - m) * a (+ b), one channel's run."""
    b0 = np.uint64(base)
    if has_beta:
        for i in range(np.uint64(count)):
            out[b0 + i] = (x[b0 + i] - m) * a + b
    else:
        for i in range(np.uint64(count)):
            out[b0 + i] = (x[b0 + i] - m) * a


@njit(parallel=True, cache=True)
def _bn_fwd_kernel(x, mean, inv_std, gamma, has_gamma, beta, has_beta, out, outer, ch,
                   inner, serial):
    a = np.empty_like(inv_std)      # inv_std * gamma, rounded to the dtype first
    for j in range(ch):
        a[j] = inv_std[j] * gamma[j] if has_gamma else inv_std[j]
    if serial:
        if inner == 1:
            _bn_fwd_last(x, mean, a, beta, has_beta, out, 0, outer, ch)
        else:
            for r in range(outer * ch):
                j = r % ch
                _bn_fwd_run(x, mean[j], a[j], beta[j] if has_beta else a[j], has_beta, out,
                            r * inner, inner)
        return
    if inner == 1:
        nruns, per = _runs(outer)
        for rr in prange(nruns):
            o0 = rr * per
            _bn_fwd_last(x, mean, a, beta, has_beta, out, o0, min(outer, o0 + per), ch)
    else:
        for r in prange(outer * ch):
            j = r % ch
            _bn_fwd_run(x, mean[j], a[j], beta[j] if has_beta else a[j], has_beta, out,
                        r * inner, inner)


@njit(cache=True)
def _bn_bwd_last(dy, x, mean, ka, km, kk, training, dx, o0, o1, ch):
    """Rows [o0, o1) of a channels-last (outer, C): dx = ka * (dy - km) - kk * (x - mean)
    (training) or ka * dy."""
    uch = np.uint64(ch)
    for o in range(o0, o1):
        base = np.uint64(o * ch)
        if training:
            for j in range(uch):
                dx[base + j] = (ka[j] * (dy[base + j] - km[j])
                                - kk[j] * (x[base + j] - mean[j]))
        else:
            for j in range(uch):
                dx[base + j] = ka[j] * dy[base + j]


@njit(cache=True)
def _bn_bwd_run(dy, x, m, ka, km, kk, training, dx, base, count):
    """dx over one channel's run [base, base + count), as _bn_bwd_last."""
    b0 = np.uint64(base)
    if training:
        for i in range(np.uint64(count)):
            dx[b0 + i] = ka * (dy[b0 + i] - km) - kk * (x[b0 + i] - m)
    else:
        for i in range(np.uint64(count)):
            dx[b0 + i] = ka * dy[b0 + i]


@njit(parallel=True, cache=True)
def _bn_bwd_kernel(dy, x, mean, inv_std, gamma, has_gamma, training, dx, dgamma, has_dgamma,
                   dbeta, has_dbeta, outer, ch, inner, pieces, serial):
    s1 = np.zeros(ch, dtype=np.float64)
    s2 = np.zeros(ch, dtype=np.float64)
    if training or has_dgamma or has_dbeta:
        # every sum is taken before dx (which may be dy) is written
        part1 = np.empty((pieces, ch), dtype=np.float64)
        part2 = np.empty((pieces, ch), dtype=np.float64)
        items = pieces if inner == 1 else pieces * ch
        if serial:
            for t in range(items):
                _bn_sums_item(dy, x, mean, False, part1, part2, t, pieces, outer, ch,
                              inner)
        else:
            for t in prange(items):
                _bn_sums_item(dy, x, mean, False, part1, part2, np.int64(t), pieces, outer,
                              ch, inner)
        _bn_add_pieces(part1, part2, s1, s2)
    # coefficients in float64, rounded to the dtype (stored in arrays of it), so that the
    # elementwise pass below runs in the dtype
    n = np.float64(outer * inner)
    ka = np.empty_like(inv_std)
    km = np.empty_like(inv_std)
    kk = np.empty_like(inv_std)
    for j in range(ch):
        s = np.float64(inv_std[j])
        g = np.float64(gamma[j]) if has_gamma else 1.0
        ka[j] = g * s
        km[j] = s1[j] / n
        kk[j] = g * s * s * s * s2[j] / n
        if has_dbeta:
            dbeta[j] = s1[j]
        if has_dgamma:
            dgamma[j] = s2[j] * s
    if serial:
        if inner == 1:
            _bn_bwd_last(dy, x, mean, ka, km, kk, training, dx, 0, outer, ch)
        else:
            for r in range(outer * ch):
                j = r % ch
                _bn_bwd_run(dy, x, mean[j], ka[j], km[j], kk[j], training, dx, r * inner,
                            inner)
        return
    if inner == 1:
        nruns, per = _runs(outer)
        for rr in prange(nruns):
            o0 = rr * per
            _bn_bwd_last(dy, x, mean, ka, km, kk, training, dx, o0, min(outer, o0 + per),
                         ch)
    else:
        for r in prange(outer * ch):
            j = r % ch
            _bn_bwd_run(dy, x, mean[j], ka[j], km[j], kk[j], training, dx, r * inner, inner)


def batchnorm_stats(x, mean, var):
    """Per-channel mean and biased variance of ``x`` (outer, C, inner) over axes 0 and 2,
    from float64 sums, rounded to x's dtype."""
    outer, ch, inner = x.shape
    _bn_stats_kernel(x.reshape(-1), mean, var, outer, ch, inner, _bn_pieces(outer, inner),
                     x.size < _SERIAL_MAX)


def batchnorm_forward(x, mean, inv_std, gamma, beta, out):
    """``out = (x - mean) * (inv_std * gamma) + beta`` per channel, each operation in x's
    dtype (gamma None: ``inv_std`` alone; beta None: no add). ``out`` may be ``x``."""
    outer, ch, inner = x.shape
    dummy = inv_std[:0]
    _bn_fwd_kernel(x.reshape(-1), mean, inv_std, gamma if gamma is not None else dummy,
                   gamma is not None, beta if beta is not None else dummy, beta is not None,
                   out.reshape(-1), outer, ch, inner, x.size < _SERIAL_MAX)


def batchnorm_backward(dy, x, mean, inv_std, gamma, training, dx, dgamma, dbeta):
    """The backward of :func:`batchnorm_forward` (see ``fastnn.backends``); ``dx`` may be
    ``dy``."""
    outer, ch, inner = x.shape
    dummy = inv_std[:0]
    _bn_bwd_kernel(dy.reshape(-1), x.reshape(-1), mean, inv_std,
                   gamma if gamma is not None else dummy, gamma is not None, bool(training),
                   dx.reshape(-1), dgamma if dgamma is not None else dummy,
                   dgamma is not None, dbeta if dbeta is not None else dummy,
                   dbeta is not None, outer, ch, inner, _bn_pieces(outer, inner),
                   x.size < _SERIAL_MAX)


# --------------------------------------------------------------------------- conv
# NHWC convolutions with a patch (KH*KW*C) up to this long run directly, without a column
# matrix: im2col + GEMM with K = 9 ran the GEMM at a fraction of its speed (a 3x3x1 layer:
# 9.5 ms forward with bias and relu, 7.5 ms backward, for 128 28x28 images).
_DIRECT_MAX_PATCH = 32
# Pixel pieces of the direct weight gradient: a partial sum each, added in piece order
# (fixed by the shape, so results do not depend on the number of threads).
_DIRECT_DW_PIECE = 1024


def _direct(g, layout) -> bool:
    return layout == "NHWC" and g.patch <= _DIRECT_MAX_PATCH


def _conv3x3c1(g) -> bool:
    """A 3x3 single-channel convolution of unit stride and dilation without padding: the
    ``_conv3x3c1_pool_*`` kernels' case (the CNN's first layer)."""
    return g.c == 1 and g.kh == g.kw == 3 and g.sh == g.sw == g.dh == g.dw == 1 and not (
        g.pt or g.pb or g.pl or g.pr)


# The direct kernels index with unsigned integers: with signed ones Numba tests each index
# for a negative (wrap-around) value, and the inner loops did not vectorise (4.5x slower).
# Their multiply-adds may fuse (``contract``), as in the GEMM.
@njit(cache=True, fastmath={"contract"})
def _direct_taps(x, src, s0, s_step, dst, d0, d_step, f, n, yo, xo, h, wd, ch, kh, kw, sh,
                 sw, pt, pl, dh, dw):
    """For each element p of output pixel (n, yo, xo)'s receptive field in NHWC x, in
    (kh, kw, c) order, with value v: dst[d0 + p*d_step + j] += v * src[s0 + p*s_step + j]
    for j < f. The forward takes src = w (s_step = f) into one accumulator row (d_step =
    0); the weight gradient src = the pixel's dy row (s_step = 0) into a dw partial
    (d_step = f). Elements outside the image count as 0 (times w: NaN and inf in w
    propagate as through the column matrix's zeros)."""
    uf = np.uint64(f)
    zero = x.dtype.type(0)
    sb = np.uint64(s0)
    db = np.uint64(d0)
    for ki in range(kh):
        ih = yo * sh - pt + ki * dh
        for kj in range(kw):
            iw = xo * sw - pl + kj * dw
            inside = ih >= 0 and ih < h and iw >= 0 and iw < wd
            base = np.uint64(((n * h + ih) * wd + iw) * ch) if inside else np.uint64(0)
            for ci in range(np.uint64(ch)):
                v = x[base + ci] if inside else zero
                for j in range(uf):
                    dst[db + j] += v * src[sb + j]
                sb += np.uint64(s_step)
                db += np.uint64(d_step)


@njit(parallel=True, cache=True)
def _conv_direct_fwd_kernel(x, w, b, has_b, relu, y, f, nimg, h, wd, ch, kh, kw, sh, sw,
                            pt, pl, dh, dw, oh, ow):
    """y[q, :] = act(sum over p of patch(q)[p] * w[p, :] + b), p in increasing order, for
    each output pixel q (NHWC); the bias added after the sum, as bias_act does. Threads
    over output rows (n, yo); pixels four at a time along a row (``_direct_taps4``),
    a last one to three one by one: the same sums."""
    uf = np.uint64(f)
    zero = y.dtype.type(0)
    for r in prange(nimg * oh):
        n = r // oh
        yo = r - n * oh
        acc = np.empty(4 * f, dtype=y.dtype)
        for x0 in range(0, ow, 4):
            npx = min(4, ow - x0)
            acc[:] = zero
            if npx == 4:
                _direct_taps4(x, w, 0, acc, True, f, n, yo, x0, n, yo, x0 + 1, n, yo, x0 + 2,
                              n, yo, x0 + 3, h, wd, ch, kh, kw, sh, sw, pt, pl, dh, dw)
            else:
                for k in range(npx):
                    _direct_taps(x, w, 0, f, acc, k * f, 0, f, n, yo, x0 + k, h, wd, ch, kh,
                                 kw, sh, sw, pt, pl, dh, dw)
            for k in range(npx):
                yb = np.uint64((r * ow + x0 + k) * f)
                ab = np.uint64(k) * uf
                for j in range(uf):
                    v = acc[ab + j] + b[j] if has_b else acc[ab + j]
                    y[yb + j] = zero if relu and v < zero else v


@njit(cache=True)
def _pool_takes(v, best):
    """Max pooling's rule: v replaces the window's best so far when greater, or when it
    is the first NaN (so the first maximum in window order wins, and the first NaN)."""
    return (v > best) | ((v != v) & (best == best))


@njit(cache=True, fastmath={"contract"})
def _direct_taps4(x, src, s0, dst, forward, f, n0, y0, x0, n1, y1, x1, n2, y2, x2, n3, y3,
                  x3, h, wd, ch, kh, kw, sh, sw, pt, pl, dh, dw):
    """``_direct_taps`` for four output pixels k = (n_k, y_k, x_k) at once, for each
    element p of their receptive fields in (kh, kw, c) order, with values v_k (0 outside
    the image): ``forward``: dst[k*f + j] += v_k * src[p*f + j] (src = w, dst = four
    accumulator rows: each w row read once for the four); else dst[p*f + j] += v_k *
    src[s0 + k*f + j] in pixel order (src = the four pixels' dy rows, dst = a dw partial:
    each element read and written once for the four). The sums of four calls, in the
    same order."""
    uf = np.uint64(f)
    uch = np.uint64(ch)
    zero = x.dtype.type(0)
    o1, o2, o3 = uf, uf + uf, uf + uf + uf
    r = np.uint64(0)   # the current receptive-field element's row of w or of dst
    d0 = np.uint64(s0)
    for ki in range(kh):
        ih0, ih1 = y0 * sh - pt + ki * dh, y1 * sh - pt + ki * dh
        ih2, ih3 = y2 * sh - pt + ki * dh, y3 * sh - pt + ki * dh
        for kj in range(kw):
            iw0, iw1 = x0 * sw - pl + kj * dw, x1 * sw - pl + kj * dw
            iw2, iw3 = x2 * sw - pl + kj * dw, x3 * sw - pl + kj * dw
            in0 = ih0 >= 0 and ih0 < h and iw0 >= 0 and iw0 < wd
            in1 = ih1 >= 0 and ih1 < h and iw1 >= 0 and iw1 < wd
            in2 = ih2 >= 0 and ih2 < h and iw2 >= 0 and iw2 < wd
            in3 = ih3 >= 0 and ih3 < h and iw3 >= 0 and iw3 < wd
            b0 = np.uint64(((n0 * h + ih0) * wd + iw0) * ch) if in0 else np.uint64(0)
            b1 = np.uint64(((n1 * h + ih1) * wd + iw1) * ch) if in1 else np.uint64(0)
            b2 = np.uint64(((n2 * h + ih2) * wd + iw2) * ch) if in2 else np.uint64(0)
            b3 = np.uint64(((n3 * h + ih3) * wd + iw3) * ch) if in3 else np.uint64(0)
            for ci in range(uch):
                v0 = x[b0 + ci] if in0 else zero
                v1 = x[b1 + ci] if in1 else zero
                v2 = x[b2 + ci] if in2 else zero
                v3 = x[b3 + ci] if in3 else zero
                if forward:
                    for j in range(uf):
                        wv = src[r + j]
                        dst[j] += v0 * wv
                        dst[o1 + j] += v1 * wv
                        dst[o2 + j] += v2 * wv
                        dst[o3 + j] += v3 * wv
                else:
                    for j in range(uf):
                        t = dst[r + j]
                        t += v0 * src[d0 + j]
                        t += v1 * src[d0 + o1 + j]
                        t += v2 * src[d0 + o2 + j]
                        t += v3 * src[d0 + o3 + j]
                        dst[r + j] = t
                r += uf


@njit(parallel=True, cache=True)
def _conv_direct_pool_fwd_kernel(x, w, b, has_b, relu, y, am, f, nimg, h, wd, ch, kh, kw,
                                 sh, sw, pt, pl, dh, dw, oh, ow):
    """The direct forward's pixels (each summed as ``_conv_direct_fwd_kernel`` sums it)
    of each 2x2 window, stride 2, max-pooled as ``_maxpool_row`` pools them: y and am
    (NHWC, (nimg, oh // 2, ow // 2, f)), am a flat index into the (oh, ow, f) output of
    one image. The convolution's output is never written. Threads over pooled rows."""
    uf = np.uint64(f)
    zero = y.dtype.type(0)
    poh, pw = oh // 2, ow // 2
    for r in prange(nimg * poh):
        n = r // poh
        py = r - n * poh
        acc = np.empty(4 * f, dtype=y.dtype)
        for px in range(pw):
            yb = np.uint64((r * pw + px) * f)
            acc[:] = zero
            yo, xo = 2 * py, 2 * px
            _direct_taps4(x, w, 0, acc, True, f, n, yo, xo, n, yo, xo + 1, n, yo + 1, xo, n,
                          yo + 1, xo + 1, h, wd, ch, kh, kw, sh, sw, pt, pl, dh, dw)
            for corner in range(4):  # window order
                idx = np.int64(((yo + corner // 2) * ow + xo + corner % 2) * f)
                ab = np.uint64(corner) * uf
                for j in range(uf):
                    v = acc[ab + j] + b[j] if has_b else acc[ab + j]
                    v = zero if relu and v < zero else v
                    if corner == 0:
                        y[yb + j] = v
                        am[yb + j] = idx + np.int64(j)
                    else:
                        best = y[yb + j]
                        take = _pool_takes(v, best)
                        y[yb + j] = v if take else best
                        am[yb + j] = idx + np.int64(j) if take else am[yb + j]


@njit(parallel=True, cache=True, fastmath={"contract"})
def _conv3x3c1_pool_fwd_kernel(x, w, b, has_b, relu, y, am, f, nimg, h, wd, oh, ow):
    """``_conv_direct_pool_fwd_kernel`` for a 3x3 single-channel convolution of unit
    stride and dilation without padding: each window's 16 inputs read once, its four
    pixels' sums kept in registers over the filters (the generic kernel adds each tap into
    rows in memory: 3.4 ms for the CNN's 3x3x1 -> 32 layer on 128 images, this one 1.5 on
    the Zen 2 VM). The same multiply-adds in the same order (from 0, tap by tap), then the
    bias and relu, then the pooling rule: the same bits."""
    uf = np.uint64(f)
    uwd = np.uint64(wd)
    zero = y.dtype.type(0)
    poh, pw = oh // 2, ow // 2
    orow = np.int64(ow * f)
    for r in prange(nimg * poh):
        n = r // poh
        py = r - n * poh
        code = np.empty(f, dtype=np.int32)  # each filter's winning pixel, 0 .. 3
        for px in range(pw):
            q = np.uint64((n * h + 2 * py) * wd + 2 * px)
            x00, x01, x02, x03 = x[q], x[q + 1], x[q + 2], x[q + 3]
            q += uwd
            x10, x11, x12, x13 = x[q], x[q + 1], x[q + 2], x[q + 3]
            q += uwd
            x20, x21, x22, x23 = x[q], x[q + 1], x[q + 2], x[q + 3]
            q += uwd
            x30, x31, x32, x33 = x[q], x[q + 1], x[q + 2], x[q + 3]
            yb = np.uint64((r * pw + px) * f)
            i0 = np.int64((2 * py * ow + 2 * px) * f)
            for j in range(uf):
                w0, w1, w2 = w[j], w[uf + j], w[2 * uf + j]
                w3, w4, w5 = w[3 * uf + j], w[4 * uf + j], w[5 * uf + j]
                w6, w7, w8 = w[6 * uf + j], w[7 * uf + j], w[8 * uf + j]
                a0 = zero
                a1 = zero
                a2 = zero
                a3 = zero
                a0 += x00 * w0
                a1 += x01 * w0
                a2 += x10 * w0
                a3 += x11 * w0
                a0 += x01 * w1
                a1 += x02 * w1
                a2 += x11 * w1
                a3 += x12 * w1
                a0 += x02 * w2
                a1 += x03 * w2
                a2 += x12 * w2
                a3 += x13 * w2
                a0 += x10 * w3
                a1 += x11 * w3
                a2 += x20 * w3
                a3 += x21 * w3
                a0 += x11 * w4
                a1 += x12 * w4
                a2 += x21 * w4
                a3 += x22 * w4
                a0 += x12 * w5
                a1 += x13 * w5
                a2 += x22 * w5
                a3 += x23 * w5
                a0 += x20 * w6
                a1 += x21 * w6
                a2 += x30 * w6
                a3 += x31 * w6
                a0 += x21 * w7
                a1 += x22 * w7
                a2 += x31 * w7
                a3 += x32 * w7
                a0 += x22 * w8
                a1 += x23 * w8
                a2 += x32 * w8
                a3 += x33 * w8
                if has_b:
                    bj = b[j]
                    a0 = a0 + bj
                    a1 = a1 + bj
                    a2 = a2 + bj
                    a3 = a3 + bj
                if relu:
                    a0 = zero if a0 < zero else a0
                    a1 = zero if a1 < zero else a1
                    a2 = zero if a2 < zero else a2
                    a3 = zero if a3 < zero else a3
                t1 = _pool_takes(a1, a0)
                best = a1 if t1 else a0
                k = np.int32(1) if t1 else np.int32(0)
                t2 = _pool_takes(a2, best)
                best = a2 if t2 else best
                k = np.int32(2) if t2 else k
                t3 = _pool_takes(a3, best)
                best = a3 if t3 else best
                k = np.int32(3) if t3 else k
                y[yb + j] = best
                code[j] = k
            # the winners' flat indices in a loop of their own: with them in the loop
            # above (int64 lanes beside float ones) it ran 4 lanes wide, not 8
            for j in range(uf):
                k = np.int64(code[j])
                am[yb + j] = i0 + (k >> 1) * orow + (k & 1) * np.int64(f) + np.int64(j)


@njit(cache=True)
def _next_pixel(n, yo, xo, oh, ow):
    """The output pixel after (n, yo, xo) in (n, yo, xo) order."""
    if xo + 1 < ow:
        return n, yo, xo + 1
    if yo + 1 < oh:
        return n, yo + 1, 0
    return n + 1, 0, 0


@njit(parallel=True, cache=True)
def _conv_direct_dw_kernel(x, dy, parts, need_db, f, piece, nimg, h, wd, ch, kh, kw, sh, sw,
                           pt, pl, dh, dw, oh, ow):
    """parts[s, p*f + j] = sum over the pixels q of piece s (in order) of patch(q)[p] *
    dy[q, j]; with need_db, parts[s, patch*f + j] = the sum of dy[q, j] too. Pixels four
    at a time (``_direct_taps4``), the last few one by one: the same sums."""
    npix = nimg * oh * ow
    uf = np.uint64(f)
    pdb = np.uint64(kh * kw * ch) * uf
    for s in prange(parts.shape[0]):
        part = parts[s]
        for e in range(np.uint64(part.size)):
            part[e] = 0
        q0, q1 = s * piece, min(npix, (s + 1) * piece)
        if need_db:
            for q in range(q0, q1):
                qb = np.uint64(q * f)
                for j in range(uf):
                    part[pdb + j] += dy[qb + j]
        q = q0
        while q + 4 <= q1:
            n0 = q // (oh * ow)
            y0 = (q - n0 * oh * ow) // ow
            x0 = q - (n0 * oh + y0) * ow
            n1, y1, x1 = _next_pixel(n0, y0, x0, oh, ow)
            n2, y2, x2 = _next_pixel(n1, y1, x1, oh, ow)
            n3, y3, x3 = _next_pixel(n2, y2, x2, oh, ow)
            _direct_taps4(x, dy, q * f, part, False, f, n0, y0, x0, n1, y1, x1, n2, y2, x2,
                          n3, y3, x3, h, wd, ch, kh, kw, sh, sw, pt, pl, dh, dw)
            q += 4
        for q in range(q, q1):
            n = q // (oh * ow)
            rem = q - n * oh * ow
            yo = rem // ow
            _direct_taps(x, dy, q * f, 0, part, 0, f, f, n, yo, rem - yo * ow, h, wd, ch, kh,
                         kw, sh, sw, pt, pl, dh, dw)


@njit(cache=True)
def _sum_parts(parts, out):
    """out = the rows of parts added in order."""
    for e in range(out.size):
        acc = parts[0, e]
        for s in range(1, parts.shape[0]):
            acc += parts[s, e]
        out[e] = acc


def conv2d_forward(x, w, b, g, layout, act, y, chunk):
    """Direct for small NHWC patches (see ``_DIRECT_MAX_PATCH``), else im2col + GEMM (see
    :mod:`fastnn.backends._conv_driver`)."""
    if not _direct(g, layout):
        _conv_driver.conv2d_forward(_this, x, w, b, g, layout, act, y, chunk)
        return
    f = y.shape[3]
    bf = b if b is not None else np.zeros(1, dtype=y.dtype)
    _conv_direct_fwd_kernel(x.reshape(-1), w.reshape(-1), bf, b is not None, act == "relu",
                            y.reshape(-1), f, *_geom_args(g))


def conv2d_maxpool_forward(x, w, b, g, layout, act, y, argmax, chunk):
    """Fused on the direct path only (small NHWC patches): there the convolution's
    output costs as much memory traffic as its arithmetic. Elsewhere False."""
    if not _direct(g, layout):
        return False
    bf = b if b is not None else np.zeros(1, dtype=y.dtype)
    if _conv3x3c1(g):
        _conv3x3c1_pool_fwd_kernel(x.reshape(-1), w.reshape(-1), bf, b is not None,
                                   act == "relu", y.reshape(-1), argmax.reshape(-1),
                                   y.shape[3], int(g.n), int(g.h), int(g.w), int(g.oh),
                                   int(g.ow))
        return True
    _conv_direct_pool_fwd_kernel(x.reshape(-1), w.reshape(-1), bf, b is not None,
                                 act == "relu", y.reshape(-1), argmax.reshape(-1),
                                 y.shape[3], *_geom_args(g))
    return True


def conv2d_backward(dy, x, w, g, layout, dx, dw, db, chunk):
    """Gradients of the convolution: dw direct for small NHWC patches, the rest as im2col
    + GEMM (see :mod:`fastnn.backends._conv_driver`)."""
    if not _direct(g, layout):
        _conv_driver.conv2d_backward(_this, dy, x, w, g, layout, dx, dw, db, chunk)
        return
    f = dy.shape[3]
    npix, pf = g.n * g.oh * g.ow, g.patch * f
    parts = np.empty((-(-npix // _DIRECT_DW_PIECE), pf + (f if db is not None else 0)),
                     dtype=dy.dtype)
    _conv_direct_dw_kernel(x.reshape(-1), dy.reshape(-1), parts, db is not None, f,
                           _DIRECT_DW_PIECE, *_geom_args(g))
    sums = np.empty(parts.shape[1], dtype=dy.dtype)
    _sum_parts(parts, sums)
    dw.reshape(-1)[:] = sums[:pf]
    if db is not None:
        db[:] = sums[pf:]
    if dx is not None:
        # dx as the driver computes it (dw, db None: not again)
        _conv_driver.conv2d_backward(_this, dy, x, w, g, layout, dx, None, None, chunk)


# Image groups of the pooled backward's weight gradient: one partial each, added in
# group order (fixed by the batch size: results do not depend on the number of threads).
_POOL_GROUPS = 8
_POOL_MIN_CHANNELS = 8


@njit(cache=True)
def _window_tables(f, oh, ow):
    """Per pooled window q of a (oh, ow, f) output, (oh // 2) * (ow // 2) of them: its top
    pixel's row and column (2 * ph, 2 * pw) and its flat corner (2 * ph * ow + 2 * pw) * f."""
    PW = ow // 2
    nwin = (oh // 2) * PW
    wy = np.empty(nwin, np.int64)
    wx = np.empty(nwin, np.int64)
    corner = np.empty(nwin, np.int64)
    for q in range(nwin):
        ph = q // PW
        pw = q - ph * PW
        wy[q] = 2 * ph
        wx[q] = 2 * pw
        corner[q] = (2 * ph * ow + 2 * pw) * f
    return wy, wx, corner


@njit(cache=True)
def _window_position(amv, j, corner, f, ow):
    """The position (0, 1, 2, 3 for the pixels (0, 0), (0, 1), (1, 0), (1, 1)) of the
    pixel that flat argmax ``amv`` of filter j names in the window whose flat corner is
    ``corner`` (:func:`_window_tables`), or -1 outside that window. By comparisons and
    without branches: decoded with three integer divisions, as before, the sparse
    kernel's dw alone took 3.3 ms instead of 2.7; with a branch per position 3.4-3.6
    instead of 2.9-3.0 (128 13x13x32 images -> 64, 2 threads, Zen 2)."""
    d = amv - j - corner
    right = (d == f) | (d == (ow + 1) * f)
    low = (d == ow * f) | (d == (ow + 1) * f)
    k = 2 * np.int64(low) + np.int64(right)
    return k if (d == 0) | right | low else np.int64(-1)


@njit(cache=True, fastmath={"contract"})
def _sparse_dw_tap(part, pj, g, x, n, yo, xo, h, wd, ch, kh, kw, sh, sw, pt, pl, dh, dw):
    """part[pj + p] += g * (element p of output pixel (n, yo, xo)'s receptive field in
    NHWC x), p in (kh, kw, c) order; elements outside the image add 0 * g."""
    uch = np.uint64(ch)
    zero = x.dtype.type(0)
    for ki in range(kh):
        ih = yo * sh - pt + ki * dh
        for kj in range(kw):
            iw = xo * sw - pl + kj * dw
            pb = pj + np.uint64((ki * kw + kj) * ch)
            if ih < 0 or ih >= h or iw < 0 or iw >= wd:
                for c in range(uch):  # padding: 0 * dy (NaN stays NaN)
                    part[pb + c] += zero * g
                continue
            base = np.uint64(((n * h + ih) * wd + iw) * ch)
            for c in range(uch):
                part[pb + c] += g * x[base + c]


@njit(cache=True, fastmath={"contract"})
def _sparse_dx_tap(dx, wt, pj, g, n, yo, xo, h, wd, ch, kh, kw, sh, sw, pt, pl, dh, dw):
    """dx (NHWC) at output pixel (n, yo, xo)'s receptive field += g * wt[pj + p], p in
    (kh, kw, c) order; elements outside the image skipped."""
    uch = np.uint64(ch)
    for ki in range(kh):
        ih = yo * sh - pt + ki * dh
        for kj in range(kw):
            iw = xo * sw - pl + kj * dw
            if ih < 0 or ih >= h or iw < 0 or iw >= wd:
                continue
            pb = pj + np.uint64((ki * kw + kj) * ch)
            base = np.uint64(((n * h + ih) * wd + iw) * ch)
            for c in range(uch):
                dx[base + c] += g * wt[pb + c]


@njit(cache=True)
def _field_inside(yo, xo, h, wd, kh, kw, sh, sw, pt, pl, dh, dw):
    """Output pixel (yo, xo)'s receptive field lies inside the image, each kernel row one
    contiguous run (unit dilation along the width)."""
    y0 = yo * sh - pt
    x0 = xo * sw - pl
    return dw == 1 and y0 >= 0 and y0 + (kh - 1) * dh < h and x0 >= 0 and x0 + kw <= wd


@njit(parallel=True, cache=True, fastmath={"contract"})
def _conv_pool_sparse_kernel(dy, am, x, wt, parts, dx, need_dx, per, f, nimg, h, wd, ch,
                             kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """Per group of ``per`` images: parts[g, j*patch + p] = the sum over its pooled
    elements (image, window, filter j) of dy times element p of the receptive field of
    the pixel argmax names (0 outside the image; an argmax outside its window is
    ignored), and dx (zeroed first) += dy times w^T's row j (wt) at that receptive field,
    for the nonzero dy only: the C backend's sparse pooled backward (conv.c).

    Each image filter by filter (the partial's row of filter j and w^T's row j stay in
    L1), four windows at a time where their fields are inside the image: each partial
    element loaded and stored once for four multiply-adds, added in window order as one
    window at a time adds them (dw: the same bits as windows outer, filters inner; dx:
    the filters' terms now added filter by filter). 128 13x13x32 images -> 64, 2
    threads, Zen 2, the kernel alone (``need_dx``, without): 6.7-7.4 ms (4.8-5.2) with
    windows outer and filters inner, one element at a time, 5.1-6.0 (2.9-3.0) this way.
    Tried and slower: dx in a pass of its own, windows outer (3.7 ms for dx alone) or
    filters outer (3.6); a window's filters grouped by the pixel their argmax names, dx
    four filters at a time (3.2)."""
    PW = ow // 2
    nwin = (oh // 2) * PW
    patch = np.uint64(kh * kw * ch)
    run = np.uint64(kw * ch)
    zero = x.dtype.type(0)
    wy, wx, corner = _window_tables(f, oh, ow)
    for gi in prange(parts.shape[0]):
        part = parts[gi]
        for e in range(np.uint64(part.size)):
            part[e] = zero
        for n in range(gi * per, min(nimg, (gi + 1) * per)):
            e_n = n * nwin * f
            if need_dx:
                for e in range(np.uint64(n * h * wd * ch), np.uint64((n + 1) * h * wd * ch)):
                    dx[e] = zero
            for j in range(f):
                pj = np.uint64(j) * patch
                q = 0
                while q < nwin:
                    step = 1   # windows left to take one at a time
                    if q + 4 <= nwin:
                        step = 4   # (if not the four at once: not decoded again)
                        e0 = e_n + q * f + j
                        k0 = _window_position(am[e0], j, corner[q], f, ow)
                        k1 = _window_position(am[e0 + f], j, corner[q + 1], f, ow)
                        k2 = _window_position(am[e0 + 2 * f], j, corner[q + 2], f, ow)
                        k3 = _window_position(am[e0 + 3 * f], j, corner[q + 3], f, ow)
                        y0, x0 = wy[q] + (k0 >> 1), wx[q] + (k0 & 1)
                        y1, x1 = wy[q + 1] + (k1 >> 1), wx[q + 1] + (k1 & 1)
                        y2, x2 = wy[q + 2] + (k2 >> 1), wx[q + 2] + (k2 & 1)
                        y3, x3 = wy[q + 3] + (k3 >> 1), wx[q + 3] + (k3 & 1)
                        if min(min(k0, k1), min(k2, k3)) >= 0 and \
                                _field_inside(y0, x0, h, wd, kh, kw, sh, sw, pt, pl, dh, dw) and \
                                _field_inside(y1, x1, h, wd, kh, kw, sh, sw, pt, pl, dh, dw) and \
                                _field_inside(y2, x2, h, wd, kh, kw, sh, sw, pt, pl, dh, dw) and \
                                _field_inside(y3, x3, h, wd, kh, kw, sh, sw, pt, pl, dh, dw):
                            g0, g1 = dy[e0], dy[e0 + f]
                            g2, g3 = dy[e0 + 2 * f], dy[e0 + 3 * f]
                            for ki in range(kh):
                                b0 = np.uint64(((n * h + y0 * sh - pt + ki * dh) * wd
                                                + x0 * sw - pl) * ch)
                                b1 = np.uint64(((n * h + y1 * sh - pt + ki * dh) * wd
                                                + x1 * sw - pl) * ch)
                                b2 = np.uint64(((n * h + y2 * sh - pt + ki * dh) * wd
                                                + x2 * sw - pl) * ch)
                                b3 = np.uint64(((n * h + y3 * sh - pt + ki * dh) * wd
                                                + x3 * sw - pl) * ch)
                                pb = pj + np.uint64(ki) * run
                                for c in range(run):
                                    t = part[pb + c]
                                    t += g0 * x[b0 + c]
                                    t += g1 * x[b1 + c]
                                    t += g2 * x[b2 + c]
                                    t += g3 * x[b3 + c]
                                    part[pb + c] = t
                                if need_dx:
                                    if g0 != zero:
                                        for c in range(run):
                                            dx[b0 + c] += g0 * wt[pb + c]
                                    if g1 != zero:
                                        for c in range(run):
                                            dx[b1 + c] += g1 * wt[pb + c]
                                    if g2 != zero:
                                        for c in range(run):
                                            dx[b2 + c] += g2 * wt[pb + c]
                                    if g3 != zero:
                                        for c in range(run):
                                            dx[b3 + c] += g3 * wt[pb + c]
                            q += 4
                            continue
                    for qq in range(q, q + step):
                        e = e_n + qq * f + j
                        k = _window_position(am[e], j, corner[qq], f, ow)
                        if k >= 0:
                            g = dy[e]
                            yo, xo = wy[qq] + (k >> 1), wx[qq] + (k & 1)
                            _sparse_dw_tap(part, pj, g, x, n, yo, xo, h, wd, ch, kh, kw, sh,
                                           sw, pt, pl, dh, dw)
                            if need_dx and g != zero:
                                _sparse_dx_tap(dx, wt, pj, g, n, yo, xo, h, wd, ch, kh, kw,
                                               sh, sw, pt, pl, dh, dw)
                    q += step


@njit(parallel=True, cache=True, fastmath={"contract"})
def _conv_pool_direct_dw_kernel(dy, am, x, parts, per, f, nimg, h, wd, ch, kh, kw, sh, sw,
                                pt, pl, dh, dw, oh, ow):
    """Per group of ``per`` images: parts[g, p*f + j] = the sum over its windows, in
    order, of patch(pixel k)[p] * (dy where argmax names pixel k, else 0) over the
    window's four pixels k (``_direct_taps4``): the direct weight gradient of the
    scattered gradient, with the filters (vectorised) innermost, but without the scatter's
    pass over the convolution-sized gradient. An argmax outside its window is ignored."""
    PW = ow // 2
    nwin = (oh // 2) * PW
    uf = np.uint64(f)
    zero = x.dtype.type(0)
    d1, d2, d3 = f, ow * f, (ow + 1) * f
    for gi in prange(parts.shape[0]):
        part = parts[gi]
        for e in range(np.uint64(part.size)):
            part[e] = zero
        gk = np.empty(4 * f, dtype=x.dtype)   # the four pixels' gradient rows
        for n in range(gi * per, min(nimg, (gi + 1) * per)):
            for q in range(nwin):
                ph = q // PW
                pw = q - ph * PW
                e0 = np.uint64((n * nwin + q) * f)
                base = (2 * ph * ow + 2 * pw) * f
                for j in range(uf):
                    d = am[e0 + j] - np.int64(j) - base
                    v = dy[e0 + j]
                    gk[j] = v if d == 0 else zero
                    gk[uf + j] = v if d == d1 else zero
                    gk[2 * uf + j] = v if d == d2 else zero
                    gk[3 * uf + j] = v if d == d3 else zero
                yo, xo = 2 * ph, 2 * pw
                _direct_taps4(x, gk, 0, part, False, f, n, yo, xo, n, yo, xo + 1, n, yo + 1,
                              xo, n, yo + 1, xo + 1, h, wd, ch, kh, kw, sh, sw, pt, pl, dh,
                              dw)


@njit(parallel=True, cache=True, fastmath={"contract"})
def _conv3x3c1_pool_dw_kernel(dy, am, x, parts, per, f, nimg, h, wd, oh, ow):
    """``_conv_pool_direct_dw_kernel`` for a 3x3 single-channel convolution of unit stride
    and dilation without padding (``_conv3x3c1``): each window's 16 inputs read once, the
    nine taps' partial rows updated filter by filter, the four pixels' terms in pixel
    order: the same multiply-adds in the same order as ``_direct_taps4`` (the same bits).
    The CNN's 3x3x1 -> 32 layer, 128 26x26 outputs, 2 threads, Zen 2: 2.2 ms with
    ``_direct_taps4`` (2.0 of it in its per-tap set-up and 32-filter loops), 1.1 this way
    with the positions decoded in the loop below, 0.82-0.90 as it is."""
    uf = np.uint64(f)
    uwd = np.uint64(wd)
    zero = x.dtype.type(0)
    PW = ow // 2
    nwin = (oh // 2) * PW
    for gi in prange(parts.shape[0]):
        part = parts[gi]
        for e in range(np.uint64(part.size)):
            part[e] = zero
        code = np.empty(f, dtype=np.int32)  # each filter's argmax position, 0 .. 3 or -1
        for n in range(gi * per, min(nimg, (gi + 1) * per)):
            for q in range(nwin):
                ph = q // PW
                pw = q - ph * PW
                e0 = np.uint64((n * nwin + q) * f)
                base = (2 * ph * ow + 2 * pw) * f
                # the positions in a loop of their own: int64 lanes beside the float ones
                # made the loop below 4 lanes wide, not 8
                for j in range(uf):
                    code[j] = np.int32(_window_position(am[e0 + j], np.int64(j), base, f, ow))
                r = np.uint64((n * h + 2 * ph) * wd + 2 * pw)
                x00, x01, x02, x03 = x[r], x[r + 1], x[r + 2], x[r + 3]
                r += uwd
                x10, x11, x12, x13 = x[r], x[r + 1], x[r + 2], x[r + 3]
                r += uwd
                x20, x21, x22, x23 = x[r], x[r + 1], x[r + 2], x[r + 3]
                r += uwd
                x30, x31, x32, x33 = x[r], x[r + 1], x[r + 2], x[r + 3]
                for j in range(uf):
                    k = code[j]
                    v = dy[e0 + j]
                    g0 = v if k == 0 else zero
                    g1 = v if k == 1 else zero
                    g2 = v if k == 2 else zero
                    g3 = v if k == 3 else zero
                    t = part[j]
                    t += x00 * g0
                    t += x01 * g1
                    t += x10 * g2
                    t += x11 * g3
                    part[j] = t
                    t = part[uf + j]
                    t += x01 * g0
                    t += x02 * g1
                    t += x11 * g2
                    t += x12 * g3
                    part[uf + j] = t
                    t = part[2 * uf + j]
                    t += x02 * g0
                    t += x03 * g1
                    t += x12 * g2
                    t += x13 * g3
                    part[2 * uf + j] = t
                    t = part[3 * uf + j]
                    t += x10 * g0
                    t += x11 * g1
                    t += x20 * g2
                    t += x21 * g3
                    part[3 * uf + j] = t
                    t = part[4 * uf + j]
                    t += x11 * g0
                    t += x12 * g1
                    t += x21 * g2
                    t += x22 * g3
                    part[4 * uf + j] = t
                    t = part[5 * uf + j]
                    t += x12 * g0
                    t += x13 * g1
                    t += x22 * g2
                    t += x23 * g3
                    part[5 * uf + j] = t
                    t = part[6 * uf + j]
                    t += x20 * g0
                    t += x21 * g1
                    t += x30 * g2
                    t += x31 * g3
                    part[6 * uf + j] = t
                    t = part[7 * uf + j]
                    t += x21 * g0
                    t += x22 * g1
                    t += x31 * g2
                    t += x32 * g3
                    part[7 * uf + j] = t
                    t = part[8 * uf + j]
                    t += x22 * g0
                    t += x23 * g1
                    t += x32 * g2
                    t += x33 * g3
                    part[8 * uf + j] = t


def conv2d_maxpool_backward(dy, argmax, x, w, g, layout, dx, dw, db, chunk):
    """dx, dw, db of a convolution + 2x2 max pooling from the pooled gradient and argmax,
    NHWC: each pooled gradient times its argmax pixel's receptive field and its filter
    only (:func:`_conv_pool_sparse_kernel`). With fewer than 8 input channels (the channel
    loops too short to vectorise: 128 28x28x1 images -> 32, dw alone, took 2.7x the time
    of the scatter and the direct dw) dw alone, direct from the pooled gradient on small
    patches (:func:`_conv_pool_direct_dw_kernel`: 128 28x28x1 images -> 32, 2.2 vs 3.0
    ms, 2 threads, Zen 2). False (nothing written) for NCHW, and with dx there."""
    few = g.c < _POOL_MIN_CHANNELS
    if layout != "NHWC" or g.oh < 2 or g.ow < 2 or (
            few and (dx is not None or not _direct(g, layout))):
        return False
    f = w.shape[3]
    ng = max(1, min(_POOL_GROUPS, g.n))
    parts = np.empty((ng, g.patch * f), dtype=x.dtype)   # a dw partial per image group
    if few and _conv3x3c1(g):   # partials as dw (patch x f)
        _conv3x3c1_pool_dw_kernel(dy.reshape(-1), argmax.reshape(-1), x.reshape(-1), parts,
                                  -(-g.n // ng), f, int(g.n), int(g.h), int(g.w), int(g.oh),
                                  int(g.ow))
    elif few:
        _conv_pool_direct_dw_kernel(dy.reshape(-1), argmax.reshape(-1), x.reshape(-1), parts,
                                    -(-g.n // ng), f, *_geom_args(g))
    else:     # partials as dw^T (f x patch)
        # w^T (f x patch) for dx only; without dx, empty arrays stand for both
        # (new empty arrays, not views of x: a read-only x would make Numba reject the
        # kernel's writes to dx, even where need_dx is False)
        none = np.empty(0, dtype=x.dtype)
        wt = np.ascontiguousarray(w.reshape(g.patch, f).T) if dx is not None else none
        _conv_pool_sparse_kernel(dy.reshape(-1), argmax.reshape(-1), x.reshape(-1),
                                 wt.reshape(-1), parts,
                                 dx.reshape(-1) if dx is not None else none,
                                 dx is not None, -(-g.n // ng), f, *_geom_args(g))
    sums = np.empty(parts.shape[1], dtype=x.dtype)
    _sum_parts(parts, sums)
    dw.reshape(g.patch, f)[...] = sums.reshape(g.patch, f) if few else \
        sums.reshape(f, g.patch).T
    if db is not None:
        np.sum(dy.reshape(-1, f), axis=0, out=db)
    return True


_this = sys.modules[__name__]


# --------------------------------------------------------------------------- pooling
@njit(cache=True)
def _maxpool_row(x, y, am, nhwc, r, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """NHWC: output row r = n*oh + yo, all channels. NCHW: plane r = n*C + c.
    Strict > keeps the first maximum in window order; the first NaN wins."""
    if nhwc:
        # unsigned indices and branch-free selects, so the channel loops vectorise (with
        # signed ones Numba tests every index for a negative, wrap-around value)
        ni = r // oh
        yo = r - ni * oh
        klo, khi = _taps(yo, sh, pt, kh, dh, h)
        xs = ni * h * w * ch
        uch = np.uint64(ch)
        for xo in range(ow):
            jlo, jhi = _taps(xo, sw, pl, kw, dw, w)
            yb = np.uint64((r * ow + xo) * ch)
            first = True
            for ki in range(klo, khi):
                ih = yo * sh - pt + ki * dh
                for kj in range(jlo, jhi):
                    iw = xo * sw - pl + kj * dw
                    idx = (ih * w + iw) * ch
                    xb = np.uint64(xs + idx)
                    if first:
                        first = False
                        for ci in range(uch):
                            y[yb + ci] = x[xb + ci]
                            am[yb + ci] = idx + np.int64(ci)
                    else:
                        for ci in range(uch):
                            v = x[xb + ci]
                            best = y[yb + ci]
                            take = _pool_takes(v, best)
                            y[yb + ci] = v if take else best
                            am[yb + ci] = idx + np.int64(ci) if take else am[yb + ci]
            if first:  # empty window: impossible for a validated pooling geometry
                for ci in range(uch):
                    y[yb + ci] = -np.inf
                    am[yb + ci] = np.int64(ci)
    else:
        ci = r % ch
        xb = r * h * w
        for yo in range(oh):
            klo, khi = _taps(yo, sh, pt, kh, dh, h)
            for xo in range(ow):
                jlo, jhi = _taps(xo, sw, pl, kw, dw, w)
                first = True
                best = x[xb]
                bi = 0
                for ki in range(klo, khi):
                    ih = yo * sh - pt + ki * dh
                    for kj in range(jlo, jhi):
                        iw = xo * sw - pl + kj * dw
                        v = x[xb + ih * w + iw]
                        if first or v > best or (v != v and best == best):
                            first = False
                            best = v
                            bi = ih * w + iw
                yb = (r * oh + yo) * ow + xo
                if first:
                    best = -np.inf
                y[yb] = best
                am[yb] = ci * h * w + bi


@njit(parallel=True, cache=True)
def _maxpool_fwd_kernel(x, y, am, nhwc, nimg, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw,
                        oh, ow):
    nrows = nimg * oh if nhwc else nimg * ch
    for r in prange(nrows):
        _maxpool_row(x, y, am, nhwc, np.int64(r), h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


@njit(cache=True)
def _maxpool_bwd_sample(dy, am, dx, ni, per_out, per_in):
    xb = np.uint64(ni * per_in)
    for q in range(np.uint64(per_in)):
        dx[xb + q] = 0
    yb = np.uint64(ni * per_out)
    for q in range(np.uint64(per_out)):
        dx[xb + np.uint64(am[yb + q])] += dy[yb + q]


@njit(parallel=True, cache=True)
def _maxpool_bwd_kernel(dy, am, dx, nimg, per_out, per_in):
    # argmax indexes within its sample, so samples never collide: parallel over n only.
    for ni in prange(nimg):
        _maxpool_bwd_sample(dy, am, dx, np.int64(ni), per_out, per_in)


def maxpool2d_forward(x, g, layout, y, argmax):
    """Max pooling with per-sample flat argmax (see :mod:`fastnn.backends`)."""
    _maxpool_fwd_kernel(x.reshape(-1), y.reshape(-1), argmax.reshape(-1), layout == "NHWC",
                        *_geom_args(g))


def maxpool2d_backward(dy, argmax, g, layout, dx):
    """Route each gradient to its window's argmax; ``dx`` overwritten."""
    _maxpool_bwd_kernel(dy.reshape(-1), argmax.reshape(-1), dx.reshape(-1), int(g.n),
                        int(g.oh * g.ow * g.c), int(g.h * g.w * g.c))


@njit(cache=True)
def _taps(o, s, p, k, d, size):
    """The kernel offsets ``lo <= ki < hi`` of output position o whose input position
    ``o*s - p + ki*d`` falls inside [0, size): loops over a window's offsets run over these
    only (a 4096-wide window on a 1-pixel image is one offset per output, not 4096)."""
    start = o * s - p
    if start >= 0 and start + (k - 1) * d < size:
        return 0, k                 # the whole window (no divisions: most outputs)
    lo = 0 if start >= 0 else (d - 1 - start) // d
    hi = k if start + (k - 1) * d < size else (size - 1 - start) // d + 1
    if hi < lo:
        hi = lo
    return lo, hi


@njit(cache=True)
def _windows_over(i, s, p, k, d, on):
    """The output positions ``lo <= o < hi`` whose window may hold input position i: those
    with ``0 <= i + p - o*s <= (k-1)*d`` (it does when d divides that, at kernel offset
    (i + p - o*s) / d, which grows as o falls). The backward's loops run over these only
    (a window of 2**29 on an 8-pixel image took 28 s, looping over every offset of every
    pixel)."""
    lo = max(0, -(-(i + p - (k - 1) * d) // s))
    hi = min(on, (i + p) // s + 1)
    return lo, max(lo, hi)


@njit(cache=True)
def _in_bounds(o, s, p, k, d, size):
    """Number of kernel offsets of output position o that fall inside [0, size)."""
    lo, hi = _taps(o, s, p, k, d, size)
    return hi - lo


@njit(cache=True)
def _avgpool_fwd_row(x, y, nhwc, r, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """NHWC: output row r = n*oh + yo. NCHW: plane r = n*C + c. Sum in window order,
    then divide by the number of in-bounds elements."""
    if nhwc:
        ni = r // oh
        yo = r - ni * oh
        klo, khi = _taps(yo, sh, pt, kh, dh, h)
        cnth = khi - klo
        for xo in range(ow):
            jlo, jhi = _taps(xo, sw, pl, kw, dw, w)
            cf = x.dtype.type(cnth * (jhi - jlo))
            yb = (r * ow + xo) * ch
            for ci in range(ch):
                y[yb + ci] = 0
            for ki in range(klo, khi):
                ih = yo * sh - pt + ki * dh
                for kj in range(jlo, jhi):
                    iw = xo * sw - pl + kj * dw
                    xb = ((ni * h + ih) * w + iw) * ch
                    for ci in range(ch):
                        y[yb + ci] += x[xb + ci]
            for ci in range(ch):
                y[yb + ci] = y[yb + ci] / cf
    else:
        xb = r * h * w
        for yo in range(oh):
            klo, khi = _taps(yo, sh, pt, kh, dh, h)
            cnth = khi - klo
            for xo in range(ow):
                jlo, jhi = _taps(xo, sw, pl, kw, dw, w)
                cf = x.dtype.type(cnth * (jhi - jlo))
                s = x.dtype.type(0)
                for ki in range(klo, khi):
                    ih = yo * sh - pt + ki * dh
                    for kj in range(jlo, jhi):
                        iw = xo * sw - pl + kj * dw
                        s += x[xb + ih * w + iw]
                y[(r * oh + yo) * ow + xo] = s / cf


@njit(parallel=True, cache=True)
def _avgpool_fwd_kernel(x, y, nhwc, nimg, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    nrows = nimg * oh if nhwc else nimg * ch
    for r in prange(nrows):
        _avgpool_fwd_row(x, y, nhwc, np.int64(r), h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


@njit(cache=True)
def _avgpool_bwd_row(dy, dx, nhwc, r, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow):
    """Gather: dx[ih, iw] = sum over the windows holding (ih, iw) of dy / count, in
    row-major kernel-offset order. NHWC: input row r = n*h + ih. NCHW: plane r = n*C + c."""
    if nhwc:
        ni = r // h
        ih = r - ni * h
        xrow = r * w * ch
        for q in range(w * ch):
            dx[xrow + q] = 0
        ylo, yhi = _windows_over(ih, sh, pt, kh, dh, oh)
        for yo in range(yhi - 1, ylo - 1, -1):   # (kernel offsets in increasing order)
            if (ih + pt - yo * sh) % dh != 0:
                continue
            cnth = _in_bounds(yo, sh, pt, kh, dh, h)
            orow = (ni * oh + yo) * ow
            for iw in range(w):
                dst = xrow + iw * ch
                xlo, xhi = _windows_over(iw, sw, pl, kw, dw, ow)
                for xo in range(xhi - 1, xlo - 1, -1):
                    if (iw + pl - xo * sw) % dw != 0:
                        continue
                    cf = dy.dtype.type(cnth * _in_bounds(xo, sw, pl, kw, dw, w))
                    src = (orow + xo) * ch
                    for ci in range(ch):
                        dx[dst + ci] += dy[src + ci] / cf
    else:
        xb = r * h * w
        yb = r * oh * ow
        for ih in range(h):
            for iw in range(w):
                dx[xb + ih * w + iw] = 0
            ylo, yhi = _windows_over(ih, sh, pt, kh, dh, oh)
            for yo in range(yhi - 1, ylo - 1, -1):
                if (ih + pt - yo * sh) % dh != 0:
                    continue
                cnth = _in_bounds(yo, sh, pt, kh, dh, h)
                for iw in range(w):
                    s = dx[xb + ih * w + iw]
                    xlo, xhi = _windows_over(iw, sw, pl, kw, dw, ow)
                    for xo in range(xhi - 1, xlo - 1, -1):
                        if (iw + pl - xo * sw) % dw != 0:
                            continue
                        cf = dy.dtype.type(cnth * _in_bounds(xo, sw, pl, kw, dw, w))
                        s += dy[yb + yo * ow + xo] / cf
                    dx[xb + ih * w + iw] = s


@njit(parallel=True, cache=True)
def _avgpool_bwd_kernel(dy, dx, nhwc, nimg, h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw,
                        oh, ow):
    nrows = nimg * h if nhwc else nimg * ch
    for r in prange(nrows):
        _avgpool_bwd_row(dy, dx, nhwc, np.int64(r), h, w, ch, kh, kw, sh, sw, pt, pl, dh, dw,
                         oh, ow)


def avgpool2d_forward(x, g, layout, y):
    """Average over the in-bounds elements of each window (Keras)."""
    _avgpool_fwd_kernel(x.reshape(-1), y.reshape(-1), layout == "NHWC", *_geom_args(g))


def avgpool2d_backward(dy, g, layout, dx):
    """Adjoint of :func:`avgpool2d_forward`; ``dx`` overwritten."""
    _avgpool_bwd_kernel(dy.reshape(-1), dx.reshape(-1), layout == "NHWC", *_geom_args(g))


# --------------------------------------------------------------------------- losses
@njit(cache=True)
def _xent_row(z, labels, t, sparse, scale, one, nan, probs, loss, dz, i):
    """Row i: probabilities, loss and the gradient (scaled)."""
    k = z.shape[1]
    if sparse and (labels[i] < 0 or labels[i] >= k):
        loss[i] = nan
        for j in range(k):
            probs[i, j] = nan
            dz[i, j] = nan
        return
    mx = z[i, 0]
    for j in range(1, k):
        if z[i, j] > mx or z[i, j] != z[i, j]:  # a NaN stays
            mx = z[i, j]
    total = one - one
    for j in range(k):
        e = np.exp(z[i, j] - mx)
        probs[i, j] = e
        total += e
    for j in range(k):
        probs[i, j] /= total
    lt = np.log(total)
    if sparse:
        lab = labels[i]
        loss[i] = lt - (z[i, lab] - mx)
        for j in range(k):
            dz[i, j] = ((probs[i, j] - one) if j == lab else probs[i, j]) * scale
    else:
        acc = one - one
        tsum = one - one
        for j in range(k):
            acc += t[i, j] * (lt - (z[i, j] - mx))
            tsum += t[i, j]
        loss[i] = acc
        for j in range(k):
            dz[i, j] = (probs[i, j] * tsum - t[i, j]) * scale


@njit(parallel=True, cache=True)
def _xent_kernel(z, labels, t, sparse, scale, one, nan, probs, loss, dz):
    # one, nan, scale: scalars of z's dtype, so every operation runs in that dtype
    n = z.shape[0]
    if z.size < _SERIAL_MAX:
        for i in range(n):
            _xent_row(z, labels, t, sparse, scale, one, nan, probs, loss, dz, i)
        return
    for i in prange(n):
        _xent_row(z, labels, t, sparse, scale, one, nan, probs, loss, dz, i)


def softmax_xent(z, labels, t, scale, probs, loss, dz):
    """Softmax cross-entropy per row (the C kernel's loop)."""
    f = z.dtype.type
    sparse = labels is not None
    _xent_kernel(z, labels if sparse else np.zeros(1, np.int64), z if t is None else t,
                 sparse, f(scale), f(1), f(np.nan), probs, loss, dz)


# --------------------------------------------------------------------------- optimizers
# error_model="numpy": a division by zero (epsilon 0 where v is 0) gives inf or NaN, as in
# the reference, instead of Numba's default ZeroDivisionError
@njit(cache=True, error_model="numpy")
def _adam_run(p, g, m, v, vhat, use_vhat, alpha, omb1, omb2, eps, lim, i0, i1):
    zero = lim - lim                        # +0 in the arrays' dtype
    for i in range(i0, i1):
        gi = g[i]
        mi = m[i] + (gi - m[i]) * omb1
        vi = v[i] + (gi * gi - v[i]) * omb2
        if abs(mi) < lim:                   # lim: the smallest normal number, or 0
            mi = zero
        if abs(vi) < lim:
            vi = zero
        m[i] = mi
        v[i] = vi
        if use_vhat:
            h = vhat[i]
            if h != h or h > vi:
                vi = h
            if abs(vi) < lim:
                vi = zero
            vhat[i] = vi
        p[i] -= (mi * alpha) / (np.sqrt(vi) + eps)


@njit(parallel=True, cache=True)
def _adam_kernel(p, g, m, v, vhat, use_vhat, alpha, omb1, omb2, eps, lim):
    if p.size < _SERIAL_MAX:
        _adam_run(p, g, m, v, vhat, use_vhat, alpha, omb1, omb2, eps, lim, 0, p.size)
        return
    nruns, per = _runs(p.size)
    for r in prange(nruns):
        _adam_run(p, g, m, v, vhat, use_vhat, alpha, omb1, omb2, eps, lim, r * per,
                  min(p.size, (r + 1) * per))


def adam_update(p, g, m, v, vhat, alpha, omb1, omb2, eps, flush):
    """Adam's step in one pass; the scalars are rounded to the arrays' dtype first, so
    every operation runs in that dtype, as in the reference."""
    f = p.dtype.type
    _adam_kernel(p, g, m, v, vhat if vhat is not None else m[:0], vhat is not None,
                 f(alpha), f(omb1), f(omb2), f(eps), f(np.finfo(f).tiny if flush else 0))


# Numba's workqueue threading layer (NUMBA_THREADING_LAYER=workqueue, which forked workers
# need: see fastnn.set_num_threads) ends the process when two Python threads run parallel
# kernels at once ("Concurrent access has been detected"): there the kernels take turns.
_TURNS = threading.RLock()
_LAYER_IS_WORKQUEUE = []        # [bool] once Numba has chosen its layer
# the settings under which Numba may choose workqueue (without TBB, and for "forksafe"
# without a non-GNU OpenMP): until its first parallel region says which it took, their
# kernels take turns too
_MAYBE_WORKQUEUE = ("workqueue", "forksafe", "default")


def _new_turns() -> None:
    """A forked child's lock: the parent's may have been held by a thread the child does
    not have."""
    global _TURNS
    _TURNS = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_turns)


def _workqueue() -> bool:
    """Whether the kernels take turns: Numba's threading layer is workqueue or, before
    its first parallel region, may turn out to be."""
    if _LAYER_IS_WORKQUEUE:
        return _LAYER_IS_WORKQUEUE[0]
    try:
        _LAYER_IS_WORKQUEUE.append(numba.threading_layer() == "workqueue")
        return _LAYER_IS_WORKQUEUE[0]
    except ValueError:          # no parallel region has run yet
        return str(numba.config.THREADING_LAYER).lower() in _MAYBE_WORKQUEUE


def _process_wide(fn):
    """``fn`` run with the process's thread count (set_num_threads) in the calling Python
    thread too (Numba's count is per thread: one set in the main thread did not reach the
    kernels a worker thread called), one Python thread at a time under the workqueue
    layer (_TURNS)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        n = _THREADS[0]
        if n is not None and numba.get_num_threads() != n:
            numba.set_num_threads(n)
        if _workqueue():
            with _TURNS:
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)
    return run


for _name in __all__:
    if _name not in ("set_num_threads", "get_num_threads", "isa"):
        globals()[_name] = _process_wide(globals()[_name])
