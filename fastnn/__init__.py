"""fastnn: train neural networks from scratch on a CPU, fast.

Kernels live in :mod:`fastnn.ops` and run on one of three interchangeable backends:
compiled C/OpenMP (``"c"``), Numba (``"numba"``) or the NumPy reference (``"numpy"``).
"""
from __future__ import annotations

from ._backend import (backend_info, get_num_threads, set_backend, set_num_threads,
                       use_backend)
from . import _backend, ops

__version__ = "0.1.0"

# Choose the backend now, so a missing C extension is reported (once) at import.
_backend.active_name()
__all__ = ["ops", "set_backend", "use_backend", "backend_info", "set_num_threads",
           "get_num_threads", "__version__"]
