"""fastnn: train neural networks from scratch on a CPU, fast.

Kernels live in :mod:`fastnn.ops` and run on one of three interchangeable backends:
compiled C/OpenMP (``"c"``), Numba (``"numba"``) or the NumPy reference (``"numpy"``).
The model API (:mod:`fastnn.layers`, :mod:`fastnn.models`, :mod:`fastnn.losses`,
:mod:`fastnn.optimizers`, :mod:`fastnn.metrics`, :mod:`fastnn.callbacks`) follows Keras.
"""
from __future__ import annotations

from ._backend import (backend_info, get_num_threads, set_backend, set_num_threads,
                       use_backend)
from . import _backend, ops

__version__ = "0.1.0"
__all__ = ["ops", "set_backend", "use_backend", "backend_info", "set_num_threads",
           "get_num_threads", "__version__"]

# Choose the backend now, so a missing C extension is reported (once) at import.
_backend.active_name()


def __getattr__(name):
    # The model API is imported on first use, so `import fastnn` stays light for code that
    # only wants fastnn.ops.
    import importlib

    if name in ("activations", "augmentation", "callbacks", "compat", "datasets", "initializers",
                "layers", "losses", "metrics", "models", "optimizers", "regularizers",
                "tuning", "utils"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
