"""Arrays whose data starts on a 64-byte boundary (a cache line, two AVX2 vectors, one
AVX-512 vector), for the buffers fastnn allocates itself.

NumPy's large arrays start 16 bytes past such a boundary (the allocator's header), so a
kernel's 32-byte vector loads straddle two cache lines every other load: on Zen 2 the
sparse convolution + pooling backward took 1.09x the time with its arrays there
(2026-12-04, ``ops.conv2d_maxpool_backward`` at the CNN's 32 -> 64 layer, medians of 9).
"""
from __future__ import annotations

import math

import numpy as np

ALIGN = 64
# Below this many bytes an array is NumPy's own (0.5 us): reading the byte buffer's address
# and taking the aligned view cost 3-4 us more per call, as much as a kernel on a few KB
# takes, while from 64 KB on the kernels' time dwarfs it.
MIN_BYTES = 65536


def empty_aligned(shape, dtype, zeros: bool = False, min_bytes: int = MIN_BYTES
                  ) -> np.ndarray:
    """A new C-contiguous array of ``shape`` and ``dtype`` (uninitialised, or zeros). From
    ``min_bytes`` on (0: always), its data starts on a 64-byte boundary: it is then a view
    of a slightly larger byte buffer, which it keeps alive."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < min_bytes or nbytes == 0:
        return (np.zeros if zeros else np.empty)(shape, dtype)
    raw = (np.zeros if zeros else np.empty)(nbytes + ALIGN, np.uint8)
    start = -raw.__array_interface__["data"][0] % ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)
