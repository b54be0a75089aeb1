"""Data sets, read from local files like ``keras.datasets`` (nothing is ever downloaded).

- :func:`fastnn.datasets.mnist.load_data` -- MNIST digits.
- :func:`fastnn.datasets.fashion_mnist.load_data` -- Fashion-MNIST; falls back to a small
  real sample shipped with fastnn (3000 training / 1000 test images) when the full data set
  is not installed.
- :func:`load_idx` -- read one IDX file (the MNIST file format), gzipped or not.

Both loaders return ``((x_train, y_train), (x_test, y_test))``: uint8 images of shape
(N, 28, 28) and uint8 labels of shape (N,). They search ``path`` if given, else
``$FASTNN_DATA_DIR/<name>``, ``$FASTNN_DATA_DIR``, ``~/.fastnn/datasets/<name>`` (and for
Fashion-MNIST Debian's ``/usr/share/datasets/fashion-mnist``).
"""
from __future__ import annotations

from . import fashion_mnist, mnist
from ._idx import load_idx

__all__ = ["mnist", "fashion_mnist", "load_idx"]
