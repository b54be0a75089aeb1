"""Utilities: seeding (``set_random_seed``) and label encoding (``to_categorical``)."""
from __future__ import annotations

from ._random import get_rng, set_random_seed
from ._labels import to_categorical

__all__ = ["set_random_seed", "get_rng", "to_categorical"]
