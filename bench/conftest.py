"""Shared helpers for the pytest-benchmark suite in bench/ (run explicitly:
``pytest bench/ --benchmark-only``; the normal test run collects only tests/).

Every benchmark is parametrised over the implementations in :data:`IMPLS`: fastnn's
backends ``c``, ``numba`` and ``numpy`` (the reference), plus ``torch`` for comparison.
An implementation that cannot run here is *skipped* with the reason, unless
``FASTNN_REQUIRE_BACKENDS`` (comma-separated, as in tests/) names it: then it fails.
The NumPy reference backend is given fewer rounds (:func:`rounds_for`).

The cases, inputs and training loops are those of ``fastnn bench`` (:mod:`fastnn.bench`),
so the two always measure the same thing.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

try:
    import fastnn  # noqa: F401
except ImportError:  # running from a checkout without PYTHONPATH: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import fastnn  # noqa: F401

from fastnn import _backend
from fastnn import bench as fb

BACKENDS = ("c", "numba", "numpy")
IMPLS = BACKENDS + ("torch",)
REFERENCE = "numpy"


def _required() -> set:
    env = os.environ.get("FASTNN_REQUIRE_BACKENDS", "")
    return {s.strip().lower() for s in env.split(",") if s.strip()}


def require_impl(name: str):
    """Make ``name`` usable or skip (fail if required); returns the torch module for
    ``"torch"``, else None."""
    if name == "torch":
        torch, why = fb.torch_or_none()
        if torch is None:
            if "torch" in _required():
                pytest.fail(f"torch is required (FASTNN_REQUIRE_BACKENDS) but {why}",
                            pytrace=False)
            pytest.skip(why)
        return torch
    try:
        _backend.load(name)
    except ImportError as exc:
        if name in _required() or name == REFERENCE:
            pytest.fail(f"backend {name!r} is required but unavailable: {exc}", pytrace=False)
        pytest.skip(f"backend {name!r} unavailable: {exc}")
    return None


def rounds_for(impl: str, heavy: bool) -> int:
    """Timed rounds: fewer for heavy cases, fewest for the NumPy reference backend."""
    if impl == REFERENCE:
        return 2 if heavy else 5
    return 5 if heavy else 20


@pytest.fixture(scope="session")
def rounds():
    """:func:`rounds_for` as a fixture (test modules should not import conftest)."""
    return rounds_for


@pytest.fixture(params=IMPLS)
def impl(request):
    """Each implementation in turn: ``(name, torch module or None)``."""
    return request.param, require_impl(request.param)


@pytest.fixture(scope="session")
def threads() -> int:
    """Threads for every implementation: ``FASTNN_BENCH_THREADS`` or all CPUs available."""
    return int(os.environ.get("FASTNN_BENCH_THREADS", "0")) or fb.default_threads()


@pytest.fixture(autouse=True)
def _thread_limits(threads):
    torch, _ = fb.torch_or_none() if "torch" in sys.modules else (None, None)
    with fb.thread_limits(threads, torch):
        yield


_DATA: dict = {}


@pytest.fixture(scope="session")
def train_data():
    """``train_data(program, n_images, layout)``: Fashion-MNIST images, loaded once."""
    def get(program: str, n_images: int, layout: str = "NHWC"):
        key = (program, n_images, layout)
        if key not in _DATA:
            _DATA[key] = fb.load_train_data(program, n_images, layout)
        return _DATA[key]
    return get


def pytest_report_header(config):
    info = fastnn.backend_info()
    torch, why = fb.torch_or_none()
    return [f"fastnn bench: backends={info['available']} isa={info['isa']} "
            f"cpu={fb.cpu_model()!r} torch={getattr(torch, '__version__', why)}"]
