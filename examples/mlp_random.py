"""Program 1: an MLP for binary classification on random data (the Keras docs' classic).

    python examples/mlp_random.py
"""
import numpy as np

import fastnn
from fastnn.layers import Dense
from fastnn.models import Sequential


def main(n_samples: int = 1000, epochs: int = 10, verbose: int = 1):
    fastnn.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x_train = rng.random((n_samples, 20)).astype("float32")
    y_train = rng.integers(2, size=(n_samples, 1))
    x_test = rng.random((max(n_samples // 10, 100), 20)).astype("float32")
    y_test = rng.integers(2, size=(len(x_test), 1))

    model = Sequential([
        Dense(64, activation="relu", input_dim=20),
        Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=verbose)
    loss, acc = model.evaluate(x_test, y_test, batch_size=32, verbose=verbose)
    print(f"test loss {loss:.4f}, test accuracy {acc:.4f} (random labels: ~0.5 expected)")
    return history, loss, acc


if __name__ == "__main__":
    import argparse

    from fastnn.bench import positive_int   # an int >= 1, as fastnn's own commands take

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=positive_int, default=1000,
                        help="random training samples (default 1000)")
    parser.add_argument("--epochs", type=positive_int, default=10,
                        help="training epochs (default 10)")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default 1)")
    a = parser.parse_args()
    main(n_samples=a.n_samples, epochs=a.epochs, verbose=a.verbose)
