"""Checks of arguments shared by the optimizers, the layers, the models and the data sets:
a ValueError or TypeError naming the argument, never a crash later."""
from __future__ import annotations

import math
import os
from typing import Optional, Union

import numpy as np

#: What a file path argument may be: as :func:`os.fsdecode` takes it.
FilePath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def check_real(value, name: str, *, low: float = None, high: float = None,
               low_open: bool = False, high_open: bool = False,
               allow_none: bool = False) -> Optional[float]:
    """``value`` as a finite Python float inside the given bounds, or ValueError/TypeError
    naming the argument."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                    np.floating)):
        raise TypeError(f"`{name}` must be a float, received {name}={value!r} "
                        f"({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"`{name}` must be finite, received {name}={value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"`{name}` must be {'>' if low_open else '>='} {low}, "
                         f"received {name}={value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"`{name}` must be {'<' if high_open else '<='} {high}, "
                         f"received {name}={value!r}")
    return v


def check_int(value, name: str, *, low: int = 1) -> int:
    """``value`` as a Python int >= ``low``: a TypeError naming the argument for a non-int
    (a bool, a float such as 2.5 or 2.0, a string; NumPy ints are taken), a ValueError
    below ``low``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, received {name}={value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, received {name}={value!r}")
    return int(value)


def keras_default_only(owner: str, name: str, value, default) -> None:
    """A Keras argument fastnn does not implement, taken only at Keras's default (so a Keras
    config or call carrying it works); any other value is a ValueError naming it."""
    if value is not default and value != default:
        raise ValueError(f"`{name}` is not supported by {owner} in fastnn: it takes no "
                         f"{name!r} other than Keras's default {default!r}, received "
                         f"{name}={value!r}")


def check_bool(value, name: str, *, allow_none: bool = False) -> Optional[bool]:
    """``value`` as a Python bool: ``True``, ``False`` or a NumPy bool (``np.True_``);
    anything else (``1``, ``"yes"``) is a TypeError naming the argument. With
    ``allow_none``, None is returned as is."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool{' or None' if allow_none else ''}, "
                        f"received {name}={value!r}")
    return bool(value)


def check_path(value, name: str) -> str:
    """A file path argument as a str: a str, bytes or os.PathLike, decoded as
    :func:`os.fsdecode` does, ``~`` expanded (:func:`expand_user`); anything else is a
    TypeError naming the argument, a path holding a NUL character a ValueError."""
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a str, bytes or os.PathLike, received "
                        f"{type(value).__name__}")
    try:
        path = os.fsdecode(value)
    except TypeError as exc:  # an os.PathLike whose __fspath__ returns something else
        raise TypeError(f"{name} must be a str, bytes or os.PathLike: {exc}") from None
    if "\0" in path:
        raise ValueError(f"{name} must not contain a NUL character, received {value!r}")
    return expand_user(path, name)


def expand_user(path: str, name: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` expanded as :func:`os.path.expanduser`
    does, or a ValueError naming ``name`` when there is no such home directory (a file
    would otherwise be written under a directory literally named ``~``)."""
    if not path.startswith("~"):
        return path
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        raise ValueError(f"{name}: cannot expand the home directory in {path!r} (no home "
                         f"directory is known for it)")
    return expanded
