"""Program 2: a small CNN on Fashion-MNIST (full data if installed, else the shipped sample).

    python examples/cnn_fashion_mnist.py            # 10 epochs
    apt-get install dataset-fashion-mnist           # the full 60k/10k dataset
"""
import time

import numpy as np

import fastnn
from fastnn.datasets import fashion_mnist
from fastnn.layers import Conv2D, Dense, Flatten, MaxPooling2D
from fastnn.models import Sequential


def build_model():
    model = Sequential([
        Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        MaxPooling2D((2, 2)),
        Conv2D(64, (3, 3), activation="relu"),
        MaxPooling2D((2, 2)),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def main(epochs: int = 10, batch_size: int = 128, n_train=None, n_test=None, verbose: int = 1):
    fastnn.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    x_train = (x_train[:n_train].astype("float32") / 255.0)[..., np.newaxis]
    x_test = (x_test[:n_test].astype("float32") / 255.0)[..., np.newaxis]
    y_train, y_test = y_train[:n_train], y_test[:n_test]

    model = build_model()
    if verbose:
        model.summary()
    t0 = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose)
    seconds = (time.perf_counter() - t0) / max(epochs, 1)
    loss, acc = model.evaluate(x_test, y_test, batch_size=batch_size, verbose=0)
    print(f"test accuracy {acc:.4f}, test loss {loss:.4f}, {seconds:.2f} s/epoch "
          f"({len(x_train)} training images)")
    return model, loss, acc, seconds


if __name__ == "__main__":
    import argparse

    from fastnn.bench import positive_int   # an int >= 1, as fastnn's own commands take

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive_int, default=10,
                        help="training epochs (default 10)")
    parser.add_argument("--batch-size", type=positive_int, default=128,
                        help="samples per batch (default 128)")
    parser.add_argument("--n-train", type=positive_int,
                        help="use only the first N training images (default: all)")
    parser.add_argument("--n-test", type=positive_int,
                        help="use only the first N test images (default: all)")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default 1)")
    a = parser.parse_args()
    main(epochs=a.epochs, batch_size=a.batch_size, n_train=a.n_train, n_test=a.n_test,
         verbose=a.verbose)
