"""Fashion-MNIST (Zalando): 60000 training and 10000 test images of clothes, 28x28 grey levels,
10 classes. A drop-in replacement for MNIST, same file format.

fastnn never downloads anything. The full data set is found in local directories (on
Debian/Ubuntu ``apt-get install dataset-fashion-mnist`` puts it in
``/usr/share/datasets/fashion-mnist``). A small real sample -- 3000 training and 1000 test
images, 300 and 100 per class -- ships inside fastnn, so examples run on a fresh install:
:func:`load_data` falls back to it (with a warning) when the full data set is not found.

Fashion-MNIST is Copyright (c) 2017 Zalando SE, under the MIT license (see
``fastnn/datasets/data/fashion-mnist-sample/LICENSE``).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..utils._args import check_bool
from . import _idx
from ._idx import PathLike

__all__ = ["load_data", "NAME", "CLASS_NAMES", "DEBIAN_DIR", "SAMPLE_DIR", "SAMPLE_SIZES"]

#: Directory name under ``$FASTNN_DATA_DIR`` and ``~/.fastnn/datasets``.
NAME = "fashion-mnist"
#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The sample shipped with fastnn.
SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "fashion-mnist-sample"
#: Images in the shipped sample: (training, test).
SAMPLE_SIZES = (3000, 1000)
#: Label ``i`` names class ``CLASS_NAMES[i]``.
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")

APT_COMMAND = "sudo apt-get install dataset-fashion-mnist"


def load_data(path: PathLike | None = None, *, sample: bool | None = None
              ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load Fashion-MNIST from local IDX files, like
    ``keras.datasets.fashion_mnist.load_data``.

    Parameters
    ----------
    path : str, bytes or os.PathLike, optional
        A directory holding the four IDX files (then only it is searched, and there is no
        fallback to the sample), or a file in the format of Keras's ``mnist.npz`` (arrays
        ``x_train``, ``y_train``, ``x_test``, ``y_test``). Otherwise the search order is:

        1. ``$FASTNN_DATA_DIR/fashion-mnist``, then ``$FASTNN_DATA_DIR`` itself (if the
           environment variable is set);
        2. ``~/.fastnn/datasets/fashion-mnist``;
        3. ``~/.keras/datasets/fashion-mnist`` (``$KERAS_HOME/datasets/fashion-mnist`` if
           set), where ``keras.datasets.fashion_mnist.load_data()`` keeps the files it
           downloads;
        4. ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu:
           ``apt-get install dataset-fashion-mnist``).

        The first directory holding all four files is used. Accepted names are
        ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally ending
        in ``.gz`` and optionally spelt with ``.idx`` instead of ``-idx``.
    sample : bool or None, default None
        ``None``: load the full data set; if it is found nowhere (and ``path`` is not
        given), load the sample shipped with fastnn and emit a :class:`UserWarning` saying
        so. ``True``: always load the shipped sample (3000 training, 1000 test images), no
        warning. ``False``: never fall back; raise :class:`FileNotFoundError` instead.
        NumPy bools are taken as bools; anything else (``1``, ``"yes"``) is a TypeError.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x_train``: uint8 array of shape (60000, 28, 28), grey levels 0..255;
        ``y_train``: uint8 array of shape (60000,), classes 0..9 (see
        :data:`CLASS_NAMES`); ``x_test``: uint8 array of shape (10000, 28, 28); ``y_test``:
        uint8 array of shape (10000,). For the sample the counts are 3000 and 1000, 300 and
        100 per class. The arrays are writable.

    Raises
    ------
    FileNotFoundError
        If the full data set is not found and there is no fallback (``path`` given or
        ``sample=False``). The message lists every directory searched, what each lacked,
        and how to get the data. Nothing is downloaded.
    ValueError
        If a file is corrupt (bad magic number, truncated or oversized data, images not
        28x28, label count differing from image count, labels above 9; the message names
        the file), or if both ``path`` and ``sample=True`` are given.
    TypeError
        If ``path`` is not a str, bytes or os.PathLike, or ``sample`` not None or a bool.

    Warns
    -----
    UserWarning
        When the shipped sample is loaded because the full data set was not found.

    Examples
    --------
    >>> from fastnn.datasets import fashion_mnist
    >>> (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()  # doctest: +SKIP
    >>> x_train.shape, y_test.shape, x_train.dtype                        # doctest: +SKIP
    ((60000, 28, 28), (10000,), dtype('uint8'))
    >>> (x, y), _ = fashion_mnist.load_data(sample=True)   # the shipped 3000/1000 sample
    >>> x.shape, y.shape, x.dtype
    ((3000, 28, 28), (3000,), dtype('uint8'))
    """
    sample = check_bool(sample, "sample", allow_none=True)
    if sample is True:
        if path is not None:
            raise ValueError("load_data(path=..., sample=True): give either a directory or "
                             "sample=True, not both")
        return _load_sample()
    data, report = _idx.load_located(NAME, path, extra=(DEBIAN_DIR,), keras_dir=NAME)
    if data is not None:
        return data
    if path is None and sample is None:
        warnings.warn(
            f"fastnn.datasets.fashion_mnist: the full Fashion-MNIST data set was not found, "
            f"so the SMALL SAMPLE shipped with fastnn was loaded: {SAMPLE_SIZES[0]} training "
            f"and {SAMPLE_SIZES[1]} test images (300/100 per class), not the full 60000/10000."
            f" Accuracies will be lower than published ones. To get the full data set: "
            f"'{APT_COMMAND}' (Debian/Ubuntu), or place the four IDX files in "
            f"~/.fastnn/datasets/fashion-mnist/ (or under $FASTNN_DATA_DIR). Pass sample=True "
            f"to load the sample without this warning, or sample=False to raise instead.",
            UserWarning, stacklevel=2)
        return _load_sample()
    raise FileNotFoundError(_not_found_message(report, explicit=path is not None))


def _load_sample():
    files, why = _idx.find_in_dir(SAMPLE_DIR)
    if files is None:  # a broken install, not a user error
        raise FileNotFoundError(f"the Fashion-MNIST sample shipped with fastnn is missing "
                                f"from {SAMPLE_DIR} ({why}); reinstall fastnn")
    return _idx.load_files(files)


def _not_found_message(report: list[str], explicit: bool) -> str:
    if explicit:
        where = "the directory given as `path`"
    else:
        where = ("~/.fastnn/datasets/fashion-mnist/ (or DIR/fashion-mnist/ or DIR itself, "
                 "with the environment variable FASTNN_DATA_DIR=DIR set), or pass "
                 "load_data(path=DIR)")
    return ("Fashion-MNIST not found. fastnn never downloads data; it looked for the four IDX "
            f"files ({_idx.file_list_text()}; each may be gzipped as .gz) in:\n"
            + "\n".join(report)
            + "\nTo get the full data set:\n"
              f"  - on Debian/Ubuntu: {APT_COMMAND}  (installs them in {DEBIAN_DIR}), or\n"
              f"  - place the four files (from Zalando's Fashion-MNIST release), gzipped or "
              f"not, in {where}.\n"
              f"A {SAMPLE_SIZES[0]}/{SAMPLE_SIZES[1]}-image sample ships with fastnn: "
              f"load_data(sample=True).")
