"""Output sizes and padding for convolution and pooling: the one helper every backend uses.

All geometry is computed here, once, from the user's ``kernel_size`` / ``stride`` /
``padding`` / ``dilation`` arguments. Backends receive a :class:`ConvGeometry` and never
recompute a size themselves.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Optional, Tuple, Union

IntOrPair = Union[int, Tuple[int, int]]
# Bounds that keep every size a backend computes inside int64 (the C kernels index with
# int64_t and multiply sizes together, e.g. a padded chunk of n * hp * wp * c elements):
# each window, stride, dilation and padding value below 2**31, and every padded input,
# column matrix or output volume below 2**62 elements; far beyond any memory, so a
# geometry outside them is a mistake, reported by name instead of wrapping around.
MAX_GEOMETRY = 2**31 - 1
MAX_ELEMENTS = 2**62
Padding = Union[str, int, Tuple[int, int], Tuple[Tuple[int, int], Tuple[int, int]]]


class ConvGeometry(NamedTuple):
    """Geometry of one 2-D sliding-window operation (convolution or pooling); immutable
    (a named tuple: built on every kernel call, a frozen dataclass took 5 us of it).

    Sizes are layout-free: ``n, h, w, c`` are batch, height, width, channels whatever
    the memory layout. Padding is per side (``pt`` top, ``pb`` bottom, ``pl`` left,
    ``pr`` right). For input row ``ih`` of output row ``oh`` and kernel row ``kh``::

        ih = oh * sh - pt + kh * dh

    and likewise for columns. A convolution's ``oh, ow`` may be below the full output's
    (:meth:`with_output`): the top-left crop it computes, or whose gradient it takes
    (``crop`` of :func:`fastnn.ops.conv2d_backward`); backends treat them as any other
    size.
    """

    n: int
    h: int
    w: int
    c: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pb: int
    pl: int
    pr: int
    dh: int
    dw: int
    oh: int
    ow: int

    @property
    def rows(self) -> int:
        """Rows of the column matrix: ``n * oh * ow``."""
        return self.n * self.oh * self.ow

    @property
    def patch(self) -> int:
        """Columns of the column matrix: ``kh * kw * c``."""
        return self.kh * self.kw * self.c

    def with_batch(self, n: int) -> "ConvGeometry":
        """The same geometry for a batch of ``n`` images (used to process chunks)."""
        return self._replace(n=n)

    def with_output(self, oh: int, ow: int) -> "ConvGeometry":
        """The same geometry computing only the output's top-left ``oh`` x ``ow`` pixels."""
        return self._replace(oh=oh, ow=ow)

    def x_shape(self, layout: str) -> Tuple[int, int, int, int]:
        """Shape of the input in ``layout``."""
        if layout == "NHWC":
            return (self.n, self.h, self.w, self.c)
        return (self.n, self.c, self.h, self.w)

    def y_shape(self, layout: str, channels: int) -> Tuple[int, int, int, int]:
        """Shape of an output with ``channels`` channels in ``layout``."""
        if layout == "NHWC":
            return (self.n, self.oh, self.ow, channels)
        return (self.n, channels, self.oh, self.ow)


def as_pair(value, name: str, *, minimum: int = 1) -> Tuple[int, int]:
    """Normalise an int or a pair of ints to a pair, checking each is ``>= minimum``.

    Raises
    ------
    TypeError
        If ``value`` is not an int or a pair of ints.
    ValueError
        If an entry is below ``minimum``.
    """
    if type(value) is tuple and len(value) == 2 and type(value[0]) is type(value[1]) is int:
        pair = value      # the common case first: every kernel call checks its geometry
    elif isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, received {value!r}")
    elif isinstance(value, int) or _is_integer(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            _is_integer(v) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, received {value!r}")
    if pair[0] < minimum or pair[1] < minimum:
        raise ValueError(f"{name} must be >= {minimum}, received {value!r}")
    if pair[0] > MAX_GEOMETRY or pair[1] > MAX_GEOMETRY:
        raise ValueError(f"{name} must be <= {MAX_GEOMETRY} (2**31 - 1), received {value!r}")
    return pair


def _is_integer(v) -> bool:
    # an int first: the abstract-class check costs about 1 us, on every kernel call
    return type(v) is int or isinstance(v, numbers.Integral)


def _out_size(size: int, k: int, s: int, p_before: int, p_after: int, d: int) -> int:
    span = d * (k - 1) + 1
    return (size + p_before + p_after - span) // s + 1


def _same_padding(size: int, k: int, s: int, d: int) -> Tuple[int, int, int]:
    """TensorFlow/Keras "same": out = ceil(size / s); the smaller half of an odd total
    padding goes before, the larger after."""
    span = d * (k - 1) + 1
    out = -(-size // s)
    total = max((out - 1) * s + span - size, 0)
    before = total // 2
    return before, total - before, out


def _padding_per_side(padding, name: str = "padding") -> Tuple[int, int, int, int]:
    """Explicit padding as (top, bottom, left, right)."""
    if isinstance(padding, bool):
        raise TypeError(f"{name} must be 'valid', 'same', an int, a pair or a pair of pairs, "
                        f"received {padding!r}")
    if isinstance(padding, int) or _is_integer(padding):
        p = int(padding)
        sides = (p, p, p, p)
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        a, b = padding
        if all(_is_integer(v) and not isinstance(v, bool) for v in (a, b)):
            sides = (int(a), int(a), int(b), int(b))
        elif all(isinstance(v, (tuple, list)) and len(v) == 2 and all(
                _is_integer(u) and not isinstance(u, bool) for u in v) for v in (a, b)):
            sides = (int(a[0]), int(a[1]), int(b[0]), int(b[1]))
        else:
            raise TypeError(f"{name} must be 'valid', 'same', an int, a pair or a pair of "
                            f"pairs ((top, bottom), (left, right)), received {padding!r}")
    else:
        raise TypeError(f"{name} must be 'valid', 'same', an int, a pair or a pair of pairs "
                        f"((top, bottom), (left, right)), received {padding!r}")
    if min(sides) < 0:
        raise ValueError(f"{name} must be >= 0 on every side, received {padding!r}")
    if max(sides) > MAX_GEOMETRY:
        raise ValueError(f"{name} must be <= {MAX_GEOMETRY} (2**31 - 1) on every side, "
                         f"received {padding!r}")
    return sides


# conv_geometry's results by arguments, for arguments made only of ints, strings, bools
# and tuples of them (the layers' own): a layer's step asks for the same few geometries
# every call, and computing one took 6-11 us, 36% of the Python time of a conv + pooling
# layer pair's forward (12 per step of the CNN of program 2). The results are immutable.
_MEMO: dict = {}
_MEMO_MAX = 1024


def _int_or_pair(v) -> bool:
    """Is ``v`` an int or a pair of ints, exactly (so that equal keys mean equal arguments:
    2.0 and True equal 2 and 1 but are refused)?"""
    return type(v) is int or (type(v) is tuple and len(v) == 2 and type(v[0]) is int
                              and type(v[1]) is int)


def _memo_key(x_shape, kernel_size, stride, padding, dilation, layout, pooling):
    """conv_geometry's arguments as a key of _MEMO, or None where they are not all plain
    (the layers' are: a tuple of 4 ints, ints or pairs, a padding string or int or pair,
    a layout string, a bool)."""
    if (type(x_shape) is tuple and len(x_shape) == 4 and type(x_shape[0]) is int
            and type(x_shape[1]) is int and type(x_shape[2]) is int
            and type(x_shape[3]) is int and _int_or_pair(kernel_size)
            and _int_or_pair(stride) and _int_or_pair(dilation)
            and (type(padding) is str or _int_or_pair(padding))
            and type(layout) is str and type(pooling) is bool):
        return (x_shape, kernel_size, stride, padding, dilation, layout, pooling)
    return None


def conv_geometry(x_shape, kernel_size, stride=1, padding=0, dilation=1, *,
                  layout: str = "NHWC", pooling: bool = False) -> ConvGeometry:
    """Compute the geometry of a convolution or pooling window over ``x_shape``.

    Parameters
    ----------
    x_shape : tuple of 4 ints
        Input shape in ``layout`` (``(N, H, W, C)`` or ``(N, C, H, W)``).
    kernel_size, stride, dilation : int or pair of ints
        Window size, step and dilation (each ``>= 1``).
    padding : "valid", "same", int, pair, or ((top, bottom), (left, right))
        "same" follows TensorFlow/Keras: output ``ceil(size / stride)``, the smaller
        half of an odd total before, the larger after.
    layout : {"NHWC", "NCHW"}
    pooling : bool
        For pooling, explicit padding must be smaller than the window on every side so
        that every window holds at least one input element.

    Raises
    ------
    ValueError
        If the window (after dilation) is larger than the padded input, or a padding is
        out of range.
    """
    key = _memo_key(x_shape, kernel_size, stride, padding, dilation, layout, pooling)
    if key is None:
        return _conv_geometry(x_shape, kernel_size, stride, padding, dilation, layout,
                              pooling)
    g = _MEMO.get(key)
    if g is None:   # (an error raises before anything is kept)
        g = _conv_geometry(x_shape, kernel_size, stride, padding, dilation, layout, pooling)
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        _MEMO[key] = g
    return g


def _conv_geometry(x_shape, kernel_size, stride, padding, dilation, layout: str,
                   pooling: bool) -> ConvGeometry:
    """:func:`conv_geometry`, computed."""
    kname = "pool_size" if pooling else "kernel_size"
    kh, kw = as_pair(kernel_size, kname)
    sh, sw = as_pair(stride, "stride")
    dh, dw = as_pair(dilation, "dilation")
    if layout == "NHWC":
        n, h, w, c = (int(v) for v in x_shape)
    else:
        n, c, h, w = (int(v) for v in x_shape)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            pt = pb = pl = pr = 0
        elif mode == "same":
            pt, pb, oh_same = _same_padding(h, kh, sh, dh)
            pl, pr, ow_same = _same_padding(w, kw, sw, dw)
        else:
            raise ValueError(f"padding must be 'valid', 'same', an int or pairs, "
                             f"received {padding!r}")
    else:
        pt, pb, pl, pr = _padding_per_side(padding)
        if pooling and (max(pt, pb) >= kh or max(pl, pr) >= kw):
            raise ValueError(f"padding must be smaller than pool_size={(kh, kw)} on every "
                             f"side so each window holds an input element, received "
                             f"padding={padding!r}")
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if span_h > h + pt + pb or span_w > w + pl + pr:
        raise ValueError(
            f"{kname}={(kh, kw)} (dilation={(dh, dw)}) is larger than the padded input "
            f"{(h + pt + pb, w + pl + pr)} (input H, W = {(h, w)}, padding "
            f"(top, bottom, left, right) = {(pt, pb, pl, pr)})")
    oh = _out_size(h, kh, sh, pt, pb, dh)
    ow = _out_size(w, kw, sw, pl, pr, dw)
    hp, wp = h + pt + pb, w + pl + pr
    for what, elems in (("padded input", max(n, 1) * hp * wp * c),
                        ("column matrix", max(n, 1) * oh * ow * kh * kw * c)):
        if elems >= MAX_ELEMENTS:
            raise ValueError(
                f"{kname}={(kh, kw)}, stride={(sh, sw)}, padding (top, bottom, left, right)="
                f"{(pt, pb, pl, pr)} and dilation={(dh, dw)} on input (N, H, W, C) = "
                f"{(n, h, w, c)} give a {what} of {elems} elements; expected fewer than "
                f"2**62: check the input's shape, padding, dilation and stride")
    return ConvGeometry(n, h, w, c, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, oh, ow)


class Reach(NamedTuple):
    """The outputs of a convolution whose windows reach into the image (see
    :func:`windows_in_image`): rows ``oh0:oh1`` and columns ``ow0:ow1`` of the output,
    computed by geometry ``g`` over the input from row ``r0`` and column ``c0`` on
    (``x[:, r0:, c0:]`` in NHWC terms). ``g`` is None when no window reaches the image
    (``oh0 == oh1`` or ``ow0 == ow1``)."""

    g: Optional[ConvGeometry]
    oh0: int
    oh1: int
    ow0: int
    ow1: int
    r0: int
    c0: int


def _reach(size: int, k: int, s: int, p: int, d: int, count: int) -> Tuple[int, ...]:
    """One dimension of :func:`windows_in_image`: ``(lo, hi, start, before, after)``, the
    outputs ``[lo, hi)`` of ``count`` whose windows (``o*s - p`` to ``o*s - p + span - 1``)
    reach into ``[0, size)`` (``lo == hi``: none), the first input position they span
    (``>= 0``) and the padding they span before and after the image (each below
    ``span``)."""
    span = d * (k - 1) + 1
    lo = max(0, -((span - 1 - p) // s))
    hi = min(count, (size - 1 + p) // s + 1)
    if lo >= hi:
        return lo, lo, 0, 0, 0
    first = lo * s - p
    last = (hi - 1) * s - p + span - 1
    return lo, hi, max(0, first), max(0, -first), max(0, last - (size - 1))


def windows_in_image(g: ConvGeometry) -> Optional[Reach]:
    """For a convolution whose padding is at least the dilated kernel extent on some side:
    the outputs whose windows reach into the image, and a geometry computing just them with
    only the padding they span (below the extent on every side); None otherwise (the
    usual case: every window then reaches the image, and the padding on each side is
    below the extent).

    The other outputs read only padding, zeros: each is ``act(sum(0 * w) + b)``. A
    backend given ``g`` itself would pad the input in full (the reference and the C
    backend's NHWC path did: a 1x1 image with ``padding=2**20`` and
    ``stride=2**31 - 1``, a 1x1 output, asked for 16 TiB).
    """
    span_h, span_w = g.dh * (g.kh - 1) + 1, g.dw * (g.kw - 1) + 1
    if max(g.pt, g.pb) < span_h and max(g.pl, g.pr) < span_w:
        return None
    oh0, oh1, r0, pt, pb = _reach(g.h, g.kh, g.sh, g.pt, g.dh, g.oh)
    ow0, ow1, c0, pl, pr = _reach(g.w, g.kw, g.sw, g.pl, g.dw, g.ow)
    inner = None
    if oh0 < oh1 and ow0 < ow1:
        inner = g._replace(h=g.h - r0, w=g.w - c0, pt=pt, pb=pb, pl=pl, pr=pr,
                           oh=oh1 - oh0, ow=ow1 - ow0)
    return Reach(inner, oh0, oh1, ow0, ow1, r0, c0)
