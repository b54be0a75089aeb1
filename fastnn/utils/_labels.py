"""Label encoding."""
from __future__ import annotations

from typing import Optional

import numpy as np


def to_categorical(y, num_classes: Optional[int] = None, dtype="float32") -> np.ndarray:
    """One-hot encode integer class labels, as ``keras.utils.to_categorical``.

    Parameters
    ----------
    y : array-like of ints, any shape (a trailing axis of size 1 is dropped)
        Class labels ``>= 0`` (floats of integral value are accepted).
    num_classes : int, optional
        Defaults to ``max(y) + 1`` (also when 0 or None, as Keras).

    Returns
    -------
    ndarray, shape ``y.shape + (num_classes,)`` (without ``y``'s trailing axis of size 1):
    (N,) labels give (N, num_classes), (N, T) sequences (N, T, num_classes).

    Raises
    ------
    TypeError
        For labels that are not integers, or a ``num_classes`` that is not an int.
    ValueError
        For a negative label, or one ``>= num_classes`` (Keras wraps -1 around or fails
        with an IndexError).
    """
    y = np.asarray(y)
    if y.dtype.kind not in "iub":
        if not (y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise TypeError(f"y must hold integer class labels, received dtype {y.dtype}")
    # the range as given, before the cast to int64 (which wraps 2**63 + 5 and turns 1e20
    # into garbage)
    if y.size and y.min() < 0:
        raise ValueError(f"y must hold labels >= 0, received a minimum of {y.min()}")
    if y.size and y.max() >= 2**62:
        raise ValueError(f"y holds the label {y.max()}, too large for a class index")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(
            num_classes, (int, np.integer)) or num_classes < 0):
        raise TypeError(f"num_classes must be a non-negative int or None, received "
                        f"{num_classes!r}")
    shape = y.shape[:-1] if y.ndim > 1 and y.shape[-1] == 1 else y.shape
    y = y.astype(np.int64).ravel()
    n = int(num_classes) if num_classes else (int(y.max()) + 1 if y.size else 0)
    if y.size and y.max() >= n:
        raise ValueError(f"num_classes={num_classes} is too small for label {y.max()}")
    out = np.zeros((y.size, n), dtype=dtype)
    out[np.arange(y.size), y] = 1
    return out.reshape(tuple(shape) + (n,))
