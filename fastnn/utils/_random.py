"""The one source of randomness in fastnn.

Initializers without an explicit seed, Dropout masks, shuffling in ``fit``, augmentation and
``validation_split`` all draw from :func:`get_rng`. ``set_random_seed(s)`` reseeds it (and
NumPy's and Python's global generators, as Keras does), so two runs with the same seed and
the same thread count are bit-identical.
"""
from __future__ import annotations

import random

import numpy as np

_state = {"rng": np.random.default_rng()}


def set_random_seed(seed: int) -> None:
    """Seed fastnn's generator, ``numpy.random`` and ``random``.

    Parameters
    ----------
    seed : int, >= 0
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, received {seed!r}")
    seed = int(seed)
    _state["rng"] = np.random.default_rng(seed)
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)


def get_rng(seed=None) -> np.random.Generator:
    """A generator: a fresh one seeded with ``seed`` if given, else fastnn's global one."""
    if seed is None:
        return _state["rng"]
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be None, a non-negative int or a numpy Generator, "
                         f"received {seed!r}")
    return np.random.default_rng(int(seed))
