"""Which kernel backend runs: the one module that decides.

Backends, in order of preference:

``"c"``
    The compiled C/OpenMP extension (``fastnn._cfastnn``, built by scikit-build-core).
``"numba"``
    JIT-compiled fallbacks (needs the optional ``numba`` package: ``pip install fastnn[numba]``).
``"numpy"``
    The pure-NumPy reference: slow, always present, the oracle every other backend is tested
    against.

The active backend is chosen at import from ``FASTNN_BACKEND`` if set, else the first of
the list above that loads. If the C extension cannot be loaded a single warning says why.
"""
from __future__ import annotations

import contextvars
import importlib
import importlib.util
import os
import warnings
from types import ModuleType
from typing import Dict, List

import numpy as np

BACKEND_NAMES = ("c", "numba", "numpy")
_MODULES = {
    "c": "fastnn.backends.c_backend",
    "numba": "fastnn.backends.numba_backend",
    "numpy": "fastnn.backends.numpy_backend",
}

_loaded: Dict[str, ModuleType] = {}
_errors: Dict[str, str] = {}
_default: List[str] = []  # one element: the process-wide active backend
_override: contextvars.ContextVar = contextvars.ContextVar("fastnn_backend", default=None)
_num_threads: List[int] = []  # set by set_num_threads; empty means "runtime default"


def _check_name(name) -> str:
    if not isinstance(name, str) or name.lower() not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {list(BACKEND_NAMES)}, received {name!r}")
    return name.lower()


def load(name: str) -> ModuleType:
    """Import backend ``name`` (once) and return its module.

    Raises
    ------
    ValueError
        If ``name`` is not a backend name.
    ImportError
        If the backend cannot be loaded here; the message says why.
    """
    name = _check_name(name)
    if name in _loaded:
        return _loaded[name]
    if name in _errors:
        raise ImportError(f"fastnn backend {name!r} is unavailable: {_errors[name]}")
    # Loading one backend must not change another's threads (Numba, capped at the CPUs,
    # took the C backend's OpenMP count down with it: set_num_threads(4), then
    # backend_info(), left C on 2 threads on a 2-CPU machine)
    counts = {n: m.get_num_threads() for n, m in _loaded.items()}
    try:
        mod = importlib.import_module(_MODULES[name])
        if _num_threads:
            mod.set_num_threads(_num_threads[0])
    except Exception as exc:  # ImportError, OSError from a broken .so, numba errors...
        _errors[name] = f"{type(exc).__name__}: {exc}"
        raise ImportError(f"fastnn backend {name!r} is unavailable: {_errors[name]}") from exc
    finally:
        for n, count in counts.items():
            if _loaded[n].get_num_threads() != count:
                _loaded[n].set_num_threads(count)
    _loaded[name] = mod
    return mod


def available() -> List[str]:
    """Names of the backends that load on this machine, fastest first."""
    names = []
    for name in BACKEND_NAMES:
        try:
            load(name)
        except ImportError:
            continue
        names.append(name)
    return names


def _choose_default() -> str:
    env = os.environ.get("FASTNN_BACKEND", "").strip()
    if env:
        try:
            name = _check_name(env)
            load(name)
            return name
        except (ValueError, ImportError) as exc:
            warnings.warn(f"FASTNN_BACKEND={env!r} cannot be used ({exc}); choosing "
                          "automatically", RuntimeWarning, stacklevel=3)
    try:
        load("c")
        return "c"
    except ImportError:
        reason = _errors.get("c", "unknown error")
    for name in ("numba", "numpy"):
        if name == "numba" and importlib.util.find_spec("numba") is None:
            _errors.setdefault("numba", "the numba package is not installed "
                               "(pip install fastnn[numba])")
            continue
        try:
            load(name)
        except ImportError:
            continue
        warnings.warn(f"fastnn: the C extension could not be loaded ({reason}); using the "
                      f"{name!r} backend instead, which is slower", RuntimeWarning, stacklevel=3)
        return name
    raise ImportError("fastnn: no backend could be loaded")  # numpy always loads


def active_name() -> str:
    """Name of the backend in use in this context."""
    name = _override.get()
    if name is not None:
        return name
    if not _default:
        _default.append(_choose_default())
    return _default[0]


def get() -> ModuleType:
    """The backend module in use in this context."""
    name = _override.get()  # every kernel call: active_name() inlined, no name check
    if name is None:
        name = _default[0] if _default else active_name()
    module = _loaded.get(name)
    return module if module is not None else load(name)


def set_backend(name: str) -> None:
    """Make ``name`` ("c", "numba" or "numpy") the process-wide backend.

    Raises
    ------
    ValueError
        If ``name`` is not a backend name.
    ImportError
        If that backend is unavailable here (the message says why).
    """
    name = _check_name(name)
    load(name)
    _default[:] = [name]


class use_backend:
    """Context manager running the enclosed code on backend ``name`` (in this thread or
    asyncio task; :func:`set_backend` changes the process-wide one).

    The name is checked and the backend loaded when it is called. Called without
    ``with``, it would change nothing: it warns (RuntimeWarning) when such an object is
    dropped without ever having been entered.

    Examples
    --------
    >>> with fastnn.use_backend("numpy"):  # doctest: +SKIP
    ...     y = fastnn.ops.matmul(a, b)
    """

    def __init__(self, name: str):
        self._name = _check_name(name)
        self._module = load(self._name)
        self._tokens: List[contextvars.Token] = []
        self._entered = False

    def __enter__(self) -> ModuleType:
        self._entered = True
        self._tokens.append(_override.set(self._name))
        return self._module

    def __exit__(self, *exc) -> None:
        _override.reset(self._tokens.pop())

    def __del__(self):
        if not getattr(self, "_entered", True):
            warnings.warn(f"fastnn.use_backend({self._name!r}) was never entered, so it "
                          f"changed nothing: use `with fastnn.use_backend(...):`, or "
                          f"fastnn.set_backend(...) for the whole process",
                          RuntimeWarning, stacklevel=2)


# More threads than this is a mistake, not a machine: each OpenMP thread gets its own
# kernel workspace, so n = 10**9 asked for terabytes, and 2**31 overflowed the C int.
# (csrc/cpu.c's FNN_MAX_THREADS, the cap of OMP_NUM_THREADS too, is the same.)
MAX_THREADS = 1024


_FORKED = [False]   # set in a child made by os.fork (see _after_fork_in_child)


def _after_fork_in_child() -> None:
    """In a process made by ``os.fork`` (``multiprocessing``'s default start method on
    Linux): OpenMP's threads do not survive a fork, and libgomp hangs a child in its first
    parallel region when the parent had run one; so the child's kernels run on one thread
    (they never enter a parallel region then)."""
    _FORKED[0] = True
    _num_threads[:] = [1]
    for mod in _loaded.values():
        mod.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n: int) -> None:
    """Set the number of threads the compiled backends use (C via OpenMP, Numba; Numba
    caps it at ``numba.config.NUMBA_NUM_THREADS``, the machine's CPUs by default).

    ``OMP_NUM_THREADS`` sets the initial value for the C backend. The C backend's count
    applies to the calling thread and caps every other: a Python thread started by the
    program runs OpenMP's default for it (``OMP_NUM_THREADS``, else the CPUs) unless it
    calls ``set_num_threads`` itself. In a process made by ``os.fork`` (the ``fork`` start
    method of ``multiprocessing``) the kernels run on one thread, and asking for more warns
    (libgomp cannot run threads in such a child: use the ``spawn`` or ``forkserver`` start
    method for workers that need them). Numba's OpenMP threading layer (its default where
    TBB is missing) goes further and ends such a child ("fork() called from a process
    already using GNU OpenMP") when the parent has run a Numba kernel: the Numba backend in
    forked workers needs ``NUMBA_THREADING_LAYER=workqueue`` (or TBB) or another start
    method (under workqueue the Numba backend's kernels run one Python thread at a time:
    Numba ends the process when two threads use that layer at once).

    Parameters
    ----------
    n : int in [1, 1024]
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) \
            or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"n must be an int >= 1 and <= {MAX_THREADS}, received {n!r}")
    n = int(n)
    if _FORKED[0] and n > 1:
        warnings.warn(f"set_num_threads({n}) in a process made by fork: fastnn's kernels "
                      f"stay on one thread there (OpenMP cannot run threads in a forked "
                      f"child); start workers with the 'spawn' or 'forkserver' method",
                      RuntimeWarning, stacklevel=2)
        n = 1
    _num_threads[:] = [n]
    for mod in _loaded.values():
        mod.set_num_threads(n)


def get_num_threads() -> int:
    """Threads the active backend uses."""
    return get().get_num_threads()


def backend_info() -> dict:
    """Describe the backends: ``available``, ``active``, ``isa``, ``num_threads``, ``errors``
    (and ``isa_emulated``: True, in the emulated AVX-512 test build only)."""
    avail = available()
    active = active_name()
    mod = load(active)
    info = {
        "available": avail,
        "active": active,
        "isa": mod.isa(),
        "num_threads": mod.get_num_threads(),
        "errors": {k: v for k, v in _errors.items() if k not in avail},
    }
    if getattr(mod, "isa_emulated", lambda: False)():
        info["isa_emulated"] = True
    return info
