"""``fastnn demo``: train the small CNN (example program 2) on Fashion-MNIST.

Uses the full dataset when it is installed (``apt-get install dataset-fashion-mnist`` or
``FASTNN_DATA_DIR``), else the 3000/1000-image sample shipped inside the package, and prints
the progress bar, the test accuracy and the seconds per epoch.
"""
from __future__ import annotations

import time
import warnings

import numpy as np


def build_cnn():
    """Program 2's model: Conv(32) - MaxPool - Conv(64) - MaxPool - Dense(64) - Dense(10),
    Adam, sparse categorical cross-entropy, accuracy."""
    from .layers import Conv2D, Dense, Flatten, MaxPooling2D
    from .models import Sequential

    model = Sequential([
        Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        MaxPooling2D((2, 2)),
        Conv2D(64, (3, 3), activation="relu"),
        MaxPooling2D((2, 2)),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(10, activation="softmax"),
    ], name="fashion_cnn")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _scaled(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W) as float32 in [0, 1], (N, H, W, 1); divided in place, so
    the full training set costs one float32 copy, not two (``astype(...) / 255`` raised
    the RSS by 334 MiB for the 60k images, this by 155)."""
    x = images.astype(np.float32)
    x /= 255.0
    return x[..., None]


class DataError(Exception):
    """Fashion-MNIST could not be loaded (a corrupt or missing file): ``fastnn demo``
    prints the message, the loader's error, on one line."""


def run(epochs: int = 10, batch_size: int = 128, sample=None, verbose: int = 1,
        seed: int = 0) -> dict:
    """Train and evaluate; returns ``{"test_accuracy", "test_loss", "seconds_per_epoch",
    "train_images", "source"}``. Raises :class:`DataError` (from the loader's ValueError or
    OSError) if the data set cannot be loaded."""
    import fastnn
    from .datasets import fashion_mnist

    fastnn.utils.set_random_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data(sample=sample)
        except (OSError, ValueError) as exc:
            raise DataError(str(exc)) from exc
    source = "full dataset"
    for w in caught:
        print(f"note: {w.message}")
        source = "shipped sample"
    if sample:
        source = "shipped sample"
    x_train, x_test = _scaled(x_train), _scaled(x_test)
    info = fastnn.backend_info()
    print(f"fastnn {fastnn.__version__}: backend {info['active']} ({info['isa']}), "
          f"{info['num_threads']} thread{'s' if info['num_threads'] != 1 else ''}; "
          f"Fashion-MNIST {source}: {len(x_train)} train / "
          f"{len(x_test)} test images")
    model = build_cnn()
    if verbose:
        model.summary()
    t0 = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose)
    per_epoch = (time.perf_counter() - t0) / max(epochs, 1)
    # evaluated in training-size batches: with 512 the activations the layers keep for a
    # batch (inputs, pooling argmax) raised the demo's peak RSS from about 360 to 573 MiB,
    # and it was slower (1.29 s vs 0.72 s for the 10k test images)
    loss, acc = model.evaluate(x_test, y_test, batch_size=batch_size, verbose=0)
    print(f"test accuracy {acc:.4f} - test loss {loss:.4f} - {per_epoch:.2f} s/epoch")
    return {"test_accuracy": acc, "test_loss": loss, "seconds_per_epoch": per_epoch,
            "train_images": len(x_train), "source": source}
