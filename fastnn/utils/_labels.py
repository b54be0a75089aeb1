"""Label encoding."""
from __future__ import annotations

from typing import Optional

import numpy as np


def to_categorical(y, num_classes: Optional[int] = None, dtype="float32") -> np.ndarray:
    """One-hot encode integer class labels (like ``keras.utils.to_categorical``).

    Parameters
    ----------
    y : array-like of ints, shape (N,) (a trailing axis of size 1 is dropped)
    num_classes : int, optional; defaults to ``max(y) + 1``

    Returns
    -------
    ndarray, shape (N, num_classes)
    """
    y = np.asarray(y)
    if y.dtype.kind not in "iub":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"y must hold integer class labels, received dtype {y.dtype}")
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y.reshape(y.shape[:-1])
    y = y.astype(np.int64).ravel()
    if y.size and y.min() < 0:
        raise ValueError(f"y must hold labels >= 0, received a minimum of {y.min()}")
    n = int(y.max()) + 1 if num_classes is None and y.size else int(num_classes or 0)
    if y.size and y.max() >= n:
        raise ValueError(f"num_classes={num_classes} is too small for label {y.max()}")
    out = np.zeros((y.size, n), dtype=dtype)
    out[np.arange(y.size), y] = 1
    return out
