"""The CNN of program 2 with BatchNormalization and other activations: fastnn vs PyTorch.

    python bench/bench_cnn_variants.py [--images 6400] [--reps 3] [--threads 2]
                                       [--variants plain,bn,bn-elu,bn-gelu,...]

Each variant is Conv2D(32, 3) [- BatchNormalization] - activation - MaxPooling2D(2) -
Conv2D(64, 3) [- BatchNormalization] - activation - MaxPooling2D(2) - Flatten -
Dropout(0.5) - Dense(10, softmax), batch 128, Adam(1e-3), on the first ``--images``
Fashion-MNIST training images (the sample fastnn ships when the full set is not
installed), and the same ``nn.Sequential`` in PyTorch (NCHW, CrossEntropyLoss on logits).
A variant is "plain" (relu, no normalization: program 2), "bn" (relu after
BatchNormalization), or "bn-<activation>" / "<activation>" for another activation
("elu", "leaky_relu", "sigmoid", "silu", "gelu", "selu", "tanh"); "layer-<activation>"
writes the activation as its own layer, Keras's Conv2D(32, 3) - Activation(...) (the same
network). A warm-up on 4 batches,
then ``--reps`` passes of fastnn and of PyTorch in turn (bench/_vs_torch.py); prints the
medians scaled to a 60k-image epoch. No result is asserted.
"""
from __future__ import annotations

import argparse

TORCH_ACT = {"relu": "ReLU", "elu": "ELU", "leaky_relu": "LeakyReLU", "sigmoid": "Sigmoid",
             "silu": "SiLU", "gelu": "GELU", "selu": "SELU", "tanh": "Tanh"}


def parse_variant(v: str):
    """(bn, act, as_layer) of a variant name."""
    bn = v == "bn" or v.startswith("bn-")
    as_layer = v.startswith("layer-")
    act = "relu" if v in ("plain", "bn") else v[3:] if bn else v[6:] if as_layer else v
    if act not in TORCH_ACT:
        raise SystemExit(f"unknown variant {v!r}: plain, bn, bn-<act>, layer-<act> or <act>, "
                         f"<act> one of {sorted(TORCH_ACT)}")
    return bn, act, as_layer


def fastnn_model(bn: bool, act: str, as_layer: bool = False):
    from fastnn import layers as L, models
    ls = [L.Input((28, 28, 1))]
    for f in (32, 64):
        if bn:
            ls += [L.Conv2D(f, 3), L.BatchNormalization(), L.Activation(act)]
        elif as_layer:
            ls += [L.Conv2D(f, 3), L.Activation(act)]
        else:
            ls += [L.Conv2D(f, 3, activation=act)]
        ls += [L.MaxPooling2D(2)]
    ls += [L.Flatten(), L.Dropout(0.5), L.Dense(10, activation="softmax")]
    m = models.Sequential(ls)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return m


def torch_model(torch, bn: bool, act: str):
    nn = torch.nn
    ls, c = [], 1
    for f in (32, 64):
        ls += [nn.Conv2d(c, f, 3)] + ([nn.BatchNorm2d(f, eps=1e-3, momentum=0.01)] if bn else [])
        ls += [getattr(nn, TORCH_ACT[act])(), nn.MaxPool2d(2)]
        c = f
    ls += [nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, 10)]
    return nn.Sequential(*ls)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=6400)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", default="plain,bn,bn-elu,bn-gelu,elu,sigmoid")
    args = p.parse_args(argv)

    import torch
    from _vs_torch import epochs, load

    x, y, xt, yt = load(args.images, args.threads, torch)
    print(f"medians of {args.reps}")
    print("| variant | fastnn | PyTorch | PyTorch / fastnn |")
    print("|---|---:|---:|---:|")
    for v in args.variants.split(","):
        bn, act, as_layer = parse_variant(v)
        f, t = epochs(fastnn_model(bn, act, as_layer), torch_model(torch, bn, act), x, y, xt,
                      yt, 128, args.reps, torch)
        print(f"| {v} | {f:.2f} s | {t:.2f} s | {t / f:.2f}x |", flush=True)

if __name__ == "__main__":
    main()
