"""Argument checks shared by the public kernel wrappers.

Every check raises TypeError or ValueError naming the argument, what was received and
what was expected, before any backend (and so any C code) sees the data.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
LAYOUTS = ("NHWC", "NCHW")


def refuse_masked(x, name: str) -> None:
    """TypeError if ``x`` is a masked array: fastnn computes on every element, so a mask
    would be ignored silently (and a range check skipping masked entries would pass values
    the kernels then misread)."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; fastnn computes on every element: "
                        f"pass {name}.filled(value) or {name}.data explicitly")


def as_array(x, name: str, expected: str) -> np.ndarray:
    """``x`` as a plain ndarray (``np.asarray``: a subclass such as np.matrix becomes a
    plain array, whose shape rules differ), for the other checks to examine.

    Raises
    ------
    TypeError
        If ``x`` is a masked array (fastnn computes on every element, so a mask would be
        ignored silently, and a range check skipping masked entries would pass values the
        kernels then misread), or NumPy cannot make an array of it (a ragged list, an
        ``__array__`` that raises): the message names ``name`` and says it was to be
        ``expected``.
    """
    if type(x) is np.ndarray:
        return x
    refuse_masked(x, name)
    try:
        return np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name} must be {expected}, received {type(x).__name__} "
                        f"({type(exc).__name__}: {exc})") from None


def float_array(x, name: str, ndim: int | None = None) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32/float64 ndarray (copying only if needed).

    Non-contiguous and negatively strided views are copied, never misread.

    Raises
    ------
    TypeError
        If ``x`` is not an array of float32 or float64 (ints, bools, objects, float16 and
        complex are rejected: cast explicitly), or is a masked array. Other ndarray
        subclasses (np.matrix) are read as plain arrays.
    ValueError
        If ``x`` does not have ``ndim`` dimensions.
    """
    if type(x) is not np.ndarray:
        x = as_array(x, name, "a float32 or float64 array")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, received dtype "
                        f"{x.dtype}; cast it first, e.g. {name}.astype(np.float32)")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, received shape {x.shape}")
    return c_array(x)


def c_array(x: np.ndarray, dtype=None) -> np.ndarray:
    """``x`` (as ``dtype`` if given) C-contiguous and aligned for its type, copied only if
    it is not: an array viewing a byte buffer at an odd offset (np.frombuffer(...,
    offset=1)) is C-contiguous but misaligned, and the kernels' loads of it are undefined
    behaviour in C (UBSan: 'load of misaligned address')."""
    if dtype is not None and x.dtype != dtype:
        x = x.astype(dtype)
    if not (x.flags.c_contiguous and x.flags.aligned):
        x = np.array(x, order="C")        # a new array: aligned
    return x


def same_dtype(arrays: Sequence[np.ndarray], names: Sequence[str]) -> np.dtype:
    """Check that all arrays share one float dtype (fastnn never promotes silently)."""
    dtype = arrays[0].dtype
    for a, n in zip(arrays[1:], names[1:]):
        if a.dtype != dtype:
            raise TypeError(f"{n} has dtype {a.dtype} but {names[0]} has dtype {dtype}; "
                            "fastnn does not mix float32 and float64: cast one of them")
    return dtype


def layout_arg(layout) -> str:
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ValueError(f"layout must be 'NHWC' or 'NCHW', received {layout!r}")
    return layout.upper()


def positive_spatial(shape, layout: str, name: str) -> None:
    """Height, width and channels of a 4-D input must be >= 1 (batch may be 0)."""
    hwc = shape[1:] if layout == "NHWC" else (shape[2], shape[3], shape[1])
    if min(hwc) < 1:
        raise ValueError(f"{name} must have height, width and channels >= 1, received "
                         f"shape {tuple(shape)} ({layout})")


def shape_arg(x_shape, name: str, ndim=None) -> tuple:
    """Validate a user-given shape tuple of non-negative ints (of ``ndim`` entries when
    given): TypeError for a non-tuple or a non-int entry, ValueError for a negative one
    or another length."""
    what = "ints" if ndim is None else f"{ndim} ints"
    try:
        items = tuple(x_shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of {what}, received {x_shape!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
               for v in items):
        raise TypeError(f"{name} must be a tuple of {what}, received {x_shape!r}")
    shp = tuple(int(v) for v in items)
    if (ndim is not None and len(shp) != ndim) or (shp and min(shp) < 0):
        raise ValueError(f"{name} must be a tuple of {'' if ndim is None else f'{ndim} '}"
                         f"non-negative ints, received {x_shape!r}")
    return shp


def shape4(x_shape, name: str) -> tuple:
    """Validate a user-given 4-D shape tuple of non-negative ints."""
    return shape_arg(x_shape, name, 4)


def expect_shape(a: np.ndarray, shape, name: str, why: str = "") -> None:
    if tuple(a.shape) != tuple(shape):
        extra = f" ({why})" if why else ""
        raise ValueError(f"{name} must have shape {tuple(shape)}{extra}, received {a.shape}")


def flag(value, name: str) -> bool:
    """A keyword that must be a bool (numpy's included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, received {value!r}")
    return bool(value)


def scalar(value, name: str) -> float:
    """A real number as a Python float (inf and NaN pass: NaN propagates)."""
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, received {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float64's range, e.g. 10**400
        raise ValueError(f"{name} must be a real number within float64's range (about "
                         f"1.8e308), received an int of {int(value).bit_length()} bits"
                         ) from None
