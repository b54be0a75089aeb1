"""Other classic from-scratch networks than programs 2 and 4: fastnn vs PyTorch.

    python bench/bench_archs.py [--images 6400] [--reps 3] [--threads 2]
                                [--archs lenet5,lenet5-relu,vgg,mlp-sigmoid,mlp-tanh]

The architectures (Keras layers; the same ``nn.Sequential`` in PyTorch, NCHW,
CrossEntropyLoss on the logits; Adam(1e-3) in both):

- ``lenet5``: LeCun's LeNet-5 as Keras tutorials write it: Conv2D(6, 5, "same", tanh) -
  AveragePooling2D(2) - Conv2D(16, 5, tanh) - AveragePooling2D(2) - Flatten -
  Dense(120, tanh) - Dense(84, tanh) - Dense(10, softmax), batch 128;
- ``lenet5-relu``: the same with relu and MaxPooling2D;
- ``vgg``: two VGG blocks, Conv2D(32, 3, "same", relu) x 2 - MaxPooling2D(2) -
  Conv2D(64, 3, "same", relu) x 2 - MaxPooling2D(2) - Flatten - Dense(128, relu) -
  Dropout(0.5) - Dense(10, softmax), batch 128;
- ``mlp-sigmoid`` / ``mlp-tanh``: Flatten - Dense(256) - Dense(128) - Dense(10, softmax)
  with sigmoid or tanh hidden layers, batch 32 (the textbook MLP).

On the first ``--images`` Fashion-MNIST training images (the sample fastnn ships when the
full set is not installed). A warm-up on 4 batches, then ``--reps`` epochs of fastnn and
of PyTorch in turn (bench/_vs_torch.py); prints the medians scaled to a 60k-image epoch.
No result is asserted.
"""
from __future__ import annotations

import argparse

ARCHS = ("lenet5", "lenet5-relu", "vgg", "mlp-sigmoid", "mlp-tanh")


def models_for(arch: str, torch):
    """(fastnn layers, torch nn.Sequential, batch size) of ``arch``."""
    from fastnn import layers as L
    nn = torch.nn
    if arch.startswith("lenet5"):
        act, tact = ("relu", nn.ReLU) if arch == "lenet5-relu" else ("tanh", nn.Tanh)
        pool, tpool = ((L.MaxPooling2D, nn.MaxPool2d) if arch == "lenet5-relu"
                       else (L.AveragePooling2D, nn.AvgPool2d))
        f = [L.Input((28, 28, 1)), L.Conv2D(6, 5, padding="same", activation=act), pool(2),
             L.Conv2D(16, 5, activation=act), pool(2), L.Flatten(),
             L.Dense(120, activation=act), L.Dense(84, activation=act),
             L.Dense(10, activation="softmax")]
        t = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), tact(), tpool(2), nn.Conv2d(6, 16, 5),
                          tact(), tpool(2), nn.Flatten(), nn.Linear(400, 120), tact(),
                          nn.Linear(120, 84), tact(), nn.Linear(84, 10))
        return f, t, 128
    if arch == "vgg":
        f, t, c = [L.Input((28, 28, 1))], [], 1
        for n in (32, 64):
            f += [L.Conv2D(n, 3, padding="same", activation="relu"),
                  L.Conv2D(n, 3, padding="same", activation="relu"), L.MaxPooling2D(2)]
            t += [nn.Conv2d(c, n, 3, padding=1), nn.ReLU(), nn.Conv2d(n, n, 3, padding=1),
                  nn.ReLU(), nn.MaxPool2d(2)]
            c = n
        f += [L.Flatten(), L.Dense(128, activation="relu"), L.Dropout(0.5),
              L.Dense(10, activation="softmax")]
        t += [nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Dropout(0.5),
              nn.Linear(128, 10)]
        return f, nn.Sequential(*t), 128
    act = arch.split("-")[1]
    tact = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[act]
    f = [L.Input((28, 28, 1)), L.Flatten(), L.Dense(256, activation=act),
         L.Dense(128, activation=act), L.Dense(10, activation="softmax")]
    t = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), tact(), nn.Linear(256, 128), tact(),
                      nn.Linear(128, 10))
    return f, t, 32


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=6400)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--archs", default=",".join(ARCHS))
    args = p.parse_args(argv)
    archs = args.archs.split(",")
    for a in archs:
        if a not in ARCHS:
            raise SystemExit(f"unknown architecture {a!r}: one of {', '.join(ARCHS)}")

    import torch
    from fastnn import models
    from _vs_torch import epochs, load

    x, y, xt, yt = load(args.images, args.threads, torch)
    print(f"medians of {args.reps}")
    print("| network | batch | fastnn | PyTorch | PyTorch / fastnn |")
    print("|---|---:|---:|---:|---:|")
    for arch in archs:
        layers, tm, bs = models_for(arch, torch)
        fm = models.Sequential(layers)
        fm.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        f, t = epochs(fm, tm, x, y, xt, yt, bs, args.reps, torch)
        print(f"| {arch} | {bs} | {f:.2f} s | {t:.2f} s | {t / f:.2f}x |", flush=True)

if __name__ == "__main__":
    main()
