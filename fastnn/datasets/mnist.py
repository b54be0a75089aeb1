"""MNIST handwritten digits: 60000 training and 10000 test images, 28x28 grey levels.

fastnn never downloads anything. Put the four IDX files (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
gzipped or not) in one of the directories :func:`load_data` searches.
"""
from __future__ import annotations

import numpy as np

from . import _idx
from ._idx import PathLike

__all__ = ["load_data", "NAME", "CLASS_NAMES"]

#: Directory name under ``$FASTNN_DATA_DIR`` and ``~/.fastnn/datasets``.
NAME = "mnist"
#: Label ``i`` is the digit ``i``.
CLASS_NAMES = tuple(str(i) for i in range(10))


def load_data(path: PathLike | None = None) -> tuple[tuple[np.ndarray, np.ndarray],
                                                     tuple[np.ndarray, np.ndarray]]:
    """Load MNIST from local IDX files, like ``keras.datasets.mnist.load_data``.

    Parameters
    ----------
    path : str, bytes or os.PathLike, optional
        A directory holding the four IDX files (then only it is searched), or a file: the
        ``mnist.npz`` that ``keras.datasets.mnist.load_data(path)`` downloads (arrays
        ``x_train``, ``y_train``, ``x_test``, ``y_test``); as in Keras, a relative file
        name that is not in the current directory is looked for in Keras's download
        directory (``$KERAS_HOME/datasets``, else ``~/.keras/datasets``). Otherwise the
        search order is:

        1. ``$FASTNN_DATA_DIR/mnist``, then ``$FASTNN_DATA_DIR`` itself (if the environment
           variable is set);
        2. ``~/.fastnn/datasets/mnist``;
        3. Keras's ``mnist.npz`` in its download directory, where a Keras user has it.

        The first directory holding all four files is used. Accepted names are
        ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally ending
        in ``.gz`` and optionally spelt with ``.idx`` instead of ``-idx``.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x_train``: uint8 array of shape (60000, 28, 28), grey levels 0..255;
        ``y_train``: uint8 array of shape (60000,), digits 0..9;
        ``x_test``: uint8 array of shape (10000, 28, 28); ``y_test``: uint8 array of shape
        (10000,). (N is whatever the files hold.) The arrays are writable.

    Raises
    ------
    FileNotFoundError
        If no searched directory holds all four files. The message lists every directory
        searched, what each lacked, and how to get the data. Nothing is downloaded.
    ValueError
        If a file is corrupt: bad magic number, truncated or oversized data, images not
        28x28, label count differing from image count, or labels above 9. The message names
        the file.
    TypeError
        If ``path`` is not a str, bytes or os.PathLike.

    Examples
    --------
    >>> from fastnn.datasets import mnist
    >>> (x_train, y_train), (x_test, y_test) = mnist.load_data()  # doctest: +SKIP
    >>> x_train.shape, y_train.shape, x_train.dtype               # doctest: +SKIP
    ((60000, 28, 28), (60000,), dtype('uint8'))
    """
    data, report = _idx.load_located(NAME, path, keras_npz="mnist.npz")
    if data is None:
        raise FileNotFoundError(_not_found_message(report, explicit=path is not None))
    return data


def _not_found_message(report: list[str], explicit: bool) -> str:
    if explicit:
        where = "the directory given as `path`"
    else:
        where = ("~/.fastnn/datasets/mnist/ (or DIR/mnist/ or DIR itself, with the environment "
                 "variable FASTNN_DATA_DIR=DIR set), or pass load_data(path=DIR); Keras's "
                 "mnist.npz works too, as load_data(path=FILE) or in ~/.keras/datasets/")
    return ("MNIST not found. fastnn never downloads data; it looked for the four IDX files "
            f"({_idx.file_list_text()}; each may be gzipped as .gz) in:\n"
            + "\n".join(report)
            + "\nTo use MNIST, get those four files (the original MNIST distribution) and "
              f"place them, gzipped or not, in {where}.")
