"""pytest-benchmark: each kernel at the sizes of issue 4, on every backend and PyTorch.

    pytest bench/test_bench_kernels.py --benchmark-only [-k conv] [--benchmark-group-by=group]

GEMM (M, K, N) float32 1024^3, 2048^3, (86528, 9, 32), (15488, 288, 64), (128, 128, 10)
and float64 1024^3; the CNN's convolutions forward (bias + fused ReLU) and backward
(NHWC, 3x3 valid; x=(128,28,28,1) with 32 filters, x=(128,13,13,32) with 64), each also
fused with its 2x2 max pooling (forward, and backward from the pooled gradient), the book
conv net's first convolution (NCHW float64, x=(100,1,28,28), 30 5x5 filters), the CNN's
2x2 max poolings forward and backward on (128,26,26,32) and (128,11,11,64), and the book
net's (NCHW float64, (100,30,24,24)); batch normalization in training, forward and
backward, on the CNN's two convolution outputs (128,26,26,32) and (128,11,11,64). The list is fastnn.bench.kernel_cases(), the cases
of ``fastnn bench``. PyTorch runs the same ops on NCHW tensors (converted beforehand). No
timing is asserted.
"""
from __future__ import annotations

import pytest

import fastnn
from fastnn import bench as fb

CASES = fb.kernel_cases()


def _case_id(case) -> str:
    """``matmul-f32-1024x1024x1024``, ``conv_bwd-32to64``, ``conv_pool_fwd-32to64``,
    ``pool_fwd-32ch``, ``pool_bwd-30ch-nchw-f64``: -k friendly."""
    p = case.params
    if case.group == "matmul":
        tail = f"{p['dtype'].replace('float', 'f')}-{p['m']}x{p['k']}x{p['n']}"
    elif case.group == "conv" and p["layout"] == "NCHW":
        tail = f"{p['w'][1]}to{p['w'][0]}-nchw-{p['dtype'].replace('float', 'f')}"
    elif case.group == "conv":
        tail = f"{p['w'][2]}to{p['w'][3]}"
    elif p["layout"] == "NCHW":
        tail = f"{p['x'][1]}ch-nchw-{p['dtype'].replace('float', 'f')}"
    else:
        tail = f"{p['x'][3]}ch"
    return f"{case.op}-{tail}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_kernel(benchmark, impl, case, rounds):
    name, torch = impl
    fn = fb.kernel_callable(case, "torch" if name == "torch" else "fastnn", torch)
    heavy = (case.flops or 0) >= 5e8 or case.group == "pool"
    benchmark.group = f"{case.name} | {case.shape}"
    benchmark.extra_info.update({"impl": name, "flops": case.flops, **case.params})
    if name == "torch":
        benchmark.pedantic(fn, rounds=rounds(name, heavy), warmup_rounds=1)
    else:
        with fastnn.use_backend(name):
            benchmark.pedantic(fn, rounds=rounds(name, heavy), warmup_rounds=1)
