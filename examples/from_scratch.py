"""Program 3: backpropagation by hand, with fastnn's layers and your training loop.

The loop is forward through the layers, the loss gradient, backward in reverse, then the
update.

    python examples/from_scratch.py
"""
import numpy as np

import fastnn
from fastnn.datasets import fashion_mnist
from fastnn.layers import Dense, ReLU, Softmax
from fastnn.losses import CategoricalCrossentropy
from fastnn.optimizers import SGD
from fastnn.utils import to_categorical


def main(epochs: int = 5, batch_size: int = 64, n_train=None, n_test=None, lr: float = 0.1):
    fastnn.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    x_train = x_train[:n_train].reshape(-1, 784).astype("float32") / 255.0
    x_test = x_test[:n_test].reshape(-1, 784).astype("float32") / 255.0
    t_train = to_categorical(y_train[:n_train], 10)
    y_test = y_test[:n_test]

    layers = [Dense(100, input_dim=784), ReLU(), Dense(10), Softmax()]
    shape = (None, 784)
    for layer in layers:                     # build: create the weights
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    params = [p for layer in layers for p in layer.params.values()]
    grads = [g for layer in layers for g in layer.grads.values()]
    loss_fn = CategoricalCrossentropy()
    optimizer = SGD(learning_rate=lr)
    rng = np.random.default_rng(0)

    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x, t = x_train[idx], t_train[idx]
            for layer in layers:                         # forward
                x = layer.forward(x, training=True)
            total += loss_fn(t, x) * len(idx)
            grad = loss_fn.gradient(t, x)                # dL/dy
            for layer in reversed(layers):               # backward, chain rule
                grad = layer.backward(grad)
            optimizer.apply(grads, params)               # w -= lr * dL/dw
        x = x_test
        for layer in layers:
            x = layer.forward(x, training=False)
        acc = float(np.mean(np.argmax(x, axis=1) == y_test))
        print(f"epoch {epoch + 1}: loss {total / len(order):.4f}, test accuracy {acc:.4f}")
    return total / len(order), acc


if __name__ == "__main__":
    import argparse

    from fastnn.bench import positive_int   # an int >= 1, as fastnn's own commands take

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive_int, default=5,
                        help="training epochs (default 5)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="samples per batch (default 64)")
    parser.add_argument("--n-train", type=positive_int,
                        help="use only the first N training images (default: all)")
    parser.add_argument("--n-test", type=positive_int,
                        help="use only the first N test images (default: all)")
    parser.add_argument("--lr", type=float, default=0.1,
                        help="learning rate (default 0.1)")
    a = parser.parse_args()
    main(epochs=a.epochs, batch_size=a.batch_size, n_train=a.n_train, n_test=a.n_test, lr=a.lr)
