"""Program 4: an MLP on Fashion-MNIST, then precision, recall and F1 per class.

    python examples/mlp_fashion_mnist.py
"""
import time

import numpy as np

import fastnn
from fastnn.datasets import fashion_mnist
from fastnn.layers import Dense, Flatten
from fastnn.metrics import classification_report, precision_recall_f1
from fastnn.models import Sequential


def main(epochs: int = 5, batch_size: int = 32, n_train=None, n_test=None, verbose: int = 1):
    fastnn.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    x_train = x_train[:n_train].astype("float32") / 255.0
    x_test = x_test[:n_test].astype("float32") / 255.0
    y_train, y_test = y_train[:n_train], y_test[:n_test]

    model = Sequential([
        Flatten(input_shape=(28, 28)),
        Dense(128, activation="relu"),
        Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=verbose)
    seconds = (time.perf_counter() - t0) / max(epochs, 1)
    loss, acc = model.evaluate(x_test, y_test, verbose=0)

    y_pred = np.argmax(model.predict(x_test, batch_size=256, verbose=verbose), axis=1)
    precision, recall, f1, _support = precision_recall_f1(y_test, y_pred, num_classes=10)
    print(classification_report(y_test, y_pred, target_names=fashion_mnist.CLASS_NAMES))
    print(f"test accuracy {acc:.4f}, {seconds:.2f} s/epoch")
    return acc, precision, recall, f1, seconds


if __name__ == "__main__":
    import argparse

    from fastnn.bench import positive_int   # an int >= 1, as fastnn's own commands take

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive_int, default=5,
                        help="training epochs (default 5)")
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="samples per batch (default 32)")
    parser.add_argument("--n-train", type=positive_int,
                        help="use only the first N training images (default: all)")
    parser.add_argument("--n-test", type=positive_int,
                        help="use only the first N test images (default: all)")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default 1)")
    a = parser.parse_args()
    main(epochs=a.epochs, batch_size=a.batch_size, n_train=a.n_train, n_test=a.n_test,
         verbose=a.verbose)
