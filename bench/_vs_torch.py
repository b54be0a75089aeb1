"""What bench_cnn_variants.py and bench_archs.py share: the Fashion-MNIST images for both
libraries, and epochs of fastnn and PyTorch timed in turn."""
from __future__ import annotations

import statistics
import time

import numpy as np


def load(images: int, threads: int, torch):
    """Both libraries on ``threads`` threads; the first ``images`` Fashion-MNIST training
    images (the sample fastnn ships when the full set is not installed) as (x NHWC
    float32 in [0, 1], y int64, x NCHW as a torch tensor, y as one); prints the header."""
    import fastnn
    from fastnn.datasets import fashion_mnist
    fastnn.set_num_threads(threads)
    torch.set_num_threads(threads)
    (x, y), _ = fashion_mnist.load_data()
    x = (x[:images].astype(np.float32) / 255)[..., None]
    y = y[:images].astype(np.int64)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {threads} threads, "
          f"{len(x)} images, s per 60k epoch (scaled)")
    return x, y, xt, torch.from_numpy(y)


def epochs(model, tm, x, y, xt, yt, batch: int, reps: int, torch):
    """Seconds per 60k-image epoch of the compiled fastnn ``model`` and of the torch
    module ``tm`` (Adam(1e-3), CrossEntropyLoss on its logits), each warmed up on 4
    batches, then ``reps`` epochs of each in turn: the two medians, scaled."""
    model.fit(x[:4 * batch], y[:4 * batch], batch_size=batch, epochs=1, verbose=0)
    opt = torch.optim.Adam(tm.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def torch_epoch(n=len(xt)):
        tm.train()
        for i in range(0, n, batch):
            opt.zero_grad()
            loss_fn(tm(xt[i:i + batch]), yt[i:i + batch]).backward()
            opt.step()

    torch_epoch(4 * batch)
    tf_, tt = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        tf_.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch_epoch()
        tt.append(time.perf_counter() - t0)
    scale = 60000 / len(x)
    return statistics.median(tf_) * scale, statistics.median(tt) * scale
