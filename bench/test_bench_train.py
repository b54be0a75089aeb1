"""pytest-benchmark: a fixed number of training steps of programs 2 and 4, on every
backend and PyTorch.

    pytest bench/test_bench_train.py --benchmark-only

Program 2 (the CNN, batch 128, Adam): :data:`CNN_STEPS` steps; program 4 (Flatten -
Dense(128, relu) - Dense(10, softmax), batch 32, Adam): :data:`MLP_STEPS` steps, on the
first Fashion-MNIST training images (the shipped sample if the full set is absent). One
round is one ``fit`` epoch over those images (shuffled, loss and accuracy tracked, as in
a real epoch); model building and a 2-batch warm-up are outside the timing. Multiply by
60000 / images for a full-epoch estimate (``fastnn bench --suite train`` does that, and
measures peak memory in child processes). No timing is asserted.
"""
from __future__ import annotations

import pytest

from fastnn import bench as fb

CNN_STEPS = 8   # 1024 images at batch 128
MLP_STEPS = 32  # 1024 images at batch 32
STEPS = {"cnn": CNN_STEPS, "mlp": MLP_STEPS}


@pytest.mark.parametrize("program", fb.PROGRAMS)
def test_train_steps(benchmark, impl, program, train_data):
    name, torch = impl
    n = STEPS[program] * fb.BATCH_SIZES[program]
    layout = "NCHW" if name == "torch" else "NHWC"
    x, y, source = train_data(program, n, layout)
    trainer = fb.make_trainer(program, "torch" if name == "torch" else f"fastnn:{name}",
                              x, y, torch)
    trainer.warmup()
    benchmark.group = fb.PROGRAM_TITLES[program] + f" | {len(x)} images"
    benchmark.extra_info.update({"impl": name, "images": len(x), "data": source,
                                 "batch_size": fb.BATCH_SIZES[program]})
    n_rounds = 1 if name == "numpy" else 3  # the reference backend: fewer rounds
    benchmark.pedantic(trainer.epoch, rounds=n_rounds, warmup_rounds=0)
