"""fastnn's OpenMP runtime next to others in one process (threadpoolctl).

fastnn's C kernels run on the OpenMP runtime of the compiler that built them (libgomp with
gcc; a manylinux wheel bundles its own renamed copy, ``fastnn.libs/libgomp-<hash>.so``).
NumPy's BLAS (OpenBLAS with its own pthreads pool in the PyPI wheels), PyTorch (its own
bundled libgomp) or another wheel may bring further thread pools into the same process.
What is promised, and tested here:

* threadpoolctl sees our runtime (and numpy's BLAS), and ``threadpool_limits`` caps
  fastnn's threads; results do not change (they never depend on the thread count).
* ``OMP_NUM_THREADS`` sets the initial count; ``fastnn.set_num_threads(n)`` overrides it
  and is an upper bound that no runtime default can raise.
* fastnn starts ``num_threads - 1`` worker threads at most: never more than asked for.
* numpy BLAS calls and fastnn kernels interleaved from two Python threads, and a second,
  distinct copy of libgomp running parallel regions in the same process, neither crash
  nor change results; ``threadpool_limits`` limits both runtimes at once.

Subprocesses run outside the checkout (cwd = a temporary directory) with PYTHONPATH set to
the parent of the imported fastnn package, so they test the same build as this process.
torch is never needed: its test is skipped when it is not installed.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn import ops
from conftest import assert_bitwise, rand, require_backend

threadpoolctl = pytest.importorskip("threadpoolctl")

OPENMP_PREFIXES = ("libgomp", "libomp", "libiomp", "vcomp")


@pytest.fixture
def c_backend(restore_threads):
    require_backend("c")
    with fastnn.use_backend("c") as mod:
        yield mod


def _our_openmp(c_mod):
    """The threadpoolctl controller of the OpenMP runtime fastnn's C backend runs on: the
    one whose limit changes fastnn's thread count."""
    fastnn.set_num_threads(2)
    assert c_mod.get_num_threads() == 2
    ctl = threadpoolctl.ThreadpoolController()
    found = []
    for lc in ctl.select(internal_api="openmp").lib_controllers:
        before = lc.get_num_threads()
        lc.set_num_threads(1)
        try:
            if c_mod.get_num_threads() == 1:
                found.append(lc)
        finally:
            lc.set_num_threads(before)
    assert found, (f"no OpenMP runtime known to threadpoolctl controls fastnn's threads: "
                   f"{threadpoolctl.threadpool_info()}")
    return found[0]


def _built_with_gcc(c_mod) -> bool:
    with open(c_mod._cfastnn.__file__, "rb") as fh:
        data = fh.read()
    return b"GCC: (" in data and b"clang version" not in data


def _work(seed=0, dtype=np.float32):
    """A matmul and a conv forward/backward big enough to run on several threads."""
    rng = np.random.default_rng(seed)
    a, b = rand(rng, (300, 200), dtype), rand(rng, (200, 150), dtype)
    x, w = rand(rng, (8, 20, 20, 8), dtype), rand(rng, (3, 3, 8, 16), dtype)
    y = ops.conv2d_forward(x, w, padding="same")
    dy = rand(rng, y.shape, dtype)
    return (ops.matmul(a, b), y) + tuple(ops.conv2d_backward(dy, x, w, padding="same"))


def _run_python(code, timeout=300, **env_extra):
    env = dict(os.environ)
    for var in ("FASTNN_BACKEND", "OMP_NUM_THREADS"):
        env.pop(var, None)
    env.update(env_extra)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    # cwd outside the checkout: `python -c` puts the cwd first on sys.path, and the source
    # tree's fastnn/ (no compiled extension there in CI) must not shadow the installed one.
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                              capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _last_line(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


# ------------------------------------------------------------------------ threadpoolctl
def test_threadpool_info_lists_our_openmp_and_numpy_blas(c_backend):
    ours = _our_openmp(c_backend)
    info = threadpoolctl.threadpool_info()
    omp = [i for i in info if i["internal_api"] == "openmp"]
    assert any(i["filepath"] == ours.filepath for i in omp), info
    assert ours.prefix in OPENMP_PREFIXES, ours.info()
    if sys.platform.startswith("linux") and _built_with_gcc(c_backend):
        assert ours.prefix == "libgomp", ours.info()
    assert ours.num_threads == 2  # fastnn.set_num_threads(2), seen by threadpoolctl
    blas = [i for i in info if i["user_api"] == "blas"]
    assert blas, f"numpy's BLAS is not listed by threadpoolctl: {info}"


def test_threadpool_limits_caps_fastnn_results_identical(c_backend):
    fastnn.set_num_threads(2)
    assert fastnn.backend_info()["num_threads"] == 2
    r2 = _work()
    for kwargs in (dict(limits=1), dict(limits=1, user_api="openmp")):
        with threadpoolctl.threadpool_limits(**kwargs):
            assert fastnn.backend_info()["num_threads"] == 1, kwargs
            assert fastnn.get_num_threads() == 1
            omp = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp"]
            assert omp and all(i["num_threads"] == 1 for i in omp), omp
            r1 = _work()
        assert fastnn.backend_info()["num_threads"] == 2, f"not restored after {kwargs}"
        for i, (a, b) in enumerate(zip(r1, r2)):
            assert_bitwise(a, b, what=f"result {i}, threadpool_limits({kwargs}) vs 2 threads")
    # Limiting the BLAS leaves fastnn alone.
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert fastnn.backend_info()["num_threads"] == 2


def test_set_num_threads_is_an_upper_bound(c_backend):
    ours = _our_openmp(c_backend)
    fastnn.set_num_threads(1)
    assert ours.get_num_threads() == 1  # fastnn sets OpenMP's default too
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        assert fastnn.get_num_threads() == 1  # a runtime default cannot raise the cap
    fastnn.set_num_threads(2)
    assert fastnn.get_num_threads() == 2 and ours.get_num_threads() == 2


# ------------------------------------------------------------------------ OMP_NUM_THREADS
PRINT_THREADS = """
import fastnn
fastnn.set_backend("c")
print(fastnn.backend_info()["num_threads"])
"""


@pytest.mark.parametrize("n", [1, 2, 3])
def test_omp_num_threads_sets_initial_count(n):
    require_backend("c")
    assert _last_line(_run_python(PRINT_THREADS, OMP_NUM_THREADS=str(n))) == str(n)


def test_set_num_threads_overrides_omp_num_threads():
    require_backend("c")
    code = PRINT_THREADS + "fastnn.set_num_threads(2); print(fastnn.get_num_threads())\n"
    proc = _run_python(code, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "2"], proc.stdout + proc.stderr


# ------------------------------------------------------------------------ oversubscription
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc/self/task")
def test_no_more_worker_threads_than_asked():
    """A kernel on n threads starts at most n - 1 OS threads (the caller is the n-th);
    under threadpool_limits(1) or OMP_NUM_THREADS=1 it starts none."""
    require_backend("c")
    code = """
    import os, numpy as np, fastnn
    from fastnn import ops
    from threadpoolctl import threadpool_limits
    fastnn.set_backend("c")
    tasks = lambda: len(os.listdir("/proc/self/task"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 24, 24, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
    a = rng.standard_normal((256, 256))
    a @ a  # numpy's BLAS starts its own pool now, before counting
    base = tasks()
    with threadpool_limits(limits=1):
        ops.conv2d_forward(x, w); ops.matmul(x.reshape(-1, 8), w.reshape(-1, 16)[:8])
        limited = tasks() - base
    default = fastnn.get_num_threads()
    ops.conv2d_forward(x, w)
    started = tasks() - base
    print(limited, default, started)
    """
    limited, default, started = map(int, _last_line(_run_python(code)).split())
    assert limited == 0
    if hasattr(os, "sched_getaffinity"):  # OpenMP's default: one thread per usable CPU
        assert default == len(os.sched_getaffinity(0)), default
    assert started <= default - 1, (started, default)
    if default > 1:
        assert started >= 1, "the kernel did not run in parallel: the count proves nothing"
    one = _last_line(_run_python(code, OMP_NUM_THREADS="1")).split()
    assert one == ["0", "1", "0"], one


# ------------------------------------------------------------------------ threads, runtimes
INTERLEAVED = """
import sys, threading, numpy as np, fastnn
from fastnn import ops
fastnn.set_backend("c")
fastnn.set_num_threads(2)
rng = np.random.default_rng(0)
a = rng.standard_normal((256, 256)).astype(np.float32)
b = rng.standard_normal((256, 256)).astype(np.float32)
x = rng.standard_normal((8, 20, 20, 8)).astype(np.float32)
w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
ref_np = a @ b
ref_mm = ops.matmul(a, b)
ref_conv = ops.conv2d_forward(x, w, padding="same")
ref_grads = ops.conv2d_backward(ref_conv, x, w, padding="same")
errors, calls = [], [0, 0]

def work(tid, rounds=40):
    try:
        for i in range(rounds):
            if (i + tid) % 2:
                assert np.allclose(a @ b, ref_np, rtol=1e-5, atol=1e-4), "numpy matmul"
                calls[0] += 1
            else:
                assert np.array_equal(ops.matmul(a, b), ref_mm), "fastnn matmul"
                y = ops.conv2d_forward(x, w, padding="same")
                assert np.array_equal(y, ref_conv), "fastnn conv forward"
                for g, r in zip(ops.conv2d_backward(y, x, w, padding="same"), ref_grads):
                    assert np.array_equal(g, r), "fastnn conv backward"
                calls[1] += 1
    except BaseException as exc:
        errors.append(f"thread {tid}: {exc!r}")

threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(errors or "ok", calls)
sys.exit(1 if errors else 0)
"""


def test_numpy_blas_and_fastnn_interleaved_from_two_threads():
    require_backend("c")
    proc = _run_python(INTERLEAVED)
    assert _last_line(proc).startswith("ok"), proc.stdout + proc.stderr


SECOND_LIBGOMP = """
import ctypes, os, shutil, sys, threading, numpy as np, fastnn
from fastnn import ops
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits
fastnn.set_backend("c")
fastnn.set_num_threads(2)
c_mod = fastnn._backend.load("c")
ours = None
for lc in ThreadpoolController().select(internal_api="openmp").lib_controllers:
    lc.set_num_threads(1)
    if c_mod.get_num_threads() == 1:
        ours = lc
    lc.set_num_threads(2)
if ours is None or ours.prefix != "libgomp":
    print("SKIP fastnn does not run on libgomp:", threadpool_info()); sys.exit(0)
# A second, distinct copy of the runtime, like the one another auditwheel-repaired wheel
# (PyTorch, scikit-learn, ...) bundles under its own hashed name.
copy = os.path.join(sys.argv[1], "libgomp-fastnn-test.so.1")
shutil.copyfile(ours.filepath, copy)
other = ctypes.CDLL(copy)
if not hasattr(other, "GOMP_parallel"):
    print("SKIP this libgomp has no GOMP_parallel"); sys.exit(0)
omp = [i for i in threadpool_info() if i["internal_api"] == "openmp"]
paths = {os.path.realpath(i["filepath"]) for i in omp}
assert os.path.realpath(copy) in paths and os.path.realpath(ours.filepath) in paths, omp

BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
other.GOMP_parallel.argtypes = [BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
other.omp_get_thread_num.restype = ctypes.c_int
other.omp_get_max_threads.restype = ctypes.c_int
seen, lock = set(), threading.Lock()

@BODY
def body(_):
    with lock:
        seen.add(other.omp_get_thread_num())

def other_parallel(n=2):
    seen.clear()
    other.GOMP_parallel(body, None, n, 0)  # a team of n threads in the *other* runtime
    return sorted(seen)

assert other_parallel() == [0, 1]
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 20, 20, 8)).astype(np.float32)
w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
a = rng.standard_normal((256, 256))
ref = ops.conv2d_forward(x, w, padding="same")
ref_np = a @ a
with threadpool_limits(limits=1):  # reaches both runtimes (and the BLAS)
    limited = [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openmp"]
    assert limited == [1, 1], threadpool_info()
    assert fastnn.get_num_threads() == 1 and other.omp_get_max_threads() == 1
    assert np.array_equal(ops.conv2d_forward(x, w, padding="same"), ref)
assert fastnn.get_num_threads() == 2 and other.omp_get_max_threads() == 2
errors = []

def fastnn_loop():
    try:
        for _ in range(30):
            assert np.array_equal(ops.conv2d_forward(x, w, padding="same"), ref)
    except BaseException as exc:
        errors.append(repr(exc))

def other_loop():
    try:
        for _ in range(30):
            assert other_parallel() == [0, 1]
            assert np.allclose(a @ a, ref_np)
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=f) for f in (fastnn_loop, other_loop)]
for t in threads: t.start()
for t in threads: t.join()
print(errors or "ok", len(omp))
sys.exit(1 if errors else 0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libgomp copies: Linux")
def test_second_libgomp_copy_in_the_same_process(tmp_path):
    """Two distinct libgomp copies (ours and, e.g., PyTorch's) in one process: both listed
    and limited by threadpoolctl, parallel regions in both from two Python threads."""
    require_backend("c")
    code = SECOND_LIBGOMP.replace("sys.argv[1]", repr(str(tmp_path)))
    proc = _run_python(code)
    last = _last_line(proc)
    if last.startswith("SKIP"):
        pytest.skip(last)
    assert last == "ok 2", proc.stdout + proc.stderr


TORCH = """
import sys, threading, numpy as np, torch, fastnn
from fastnn import ops
from threadpoolctl import threadpool_info, threadpool_limits
fastnn.set_backend("c")
print([(i["internal_api"], i["prefix"], i["num_threads"]) for i in threadpool_info()])
x = np.random.default_rng(0).standard_normal((8, 20, 20, 8)).astype(np.float32)
w = np.random.default_rng(1).standard_normal((3, 3, 8, 16)).astype(np.float32)
ref = ops.conv2d_forward(x, w, padding="same")
t = torch.randn(256, 256)
ref_t = t @ t
with threadpool_limits(limits=1):
    assert fastnn.get_num_threads() == 1
    assert np.array_equal(ops.conv2d_forward(x, w, padding="same"), ref)
errors = []
def loop(use_torch):
    try:
        for _ in range(30):
            if use_torch:
                assert torch.allclose(t @ t, ref_t)
            else:
                assert np.array_equal(ops.conv2d_forward(x, w, padding="same"), ref)
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=loop, args=(u,)) for u in (True, False)]
for th in threads: th.start()
for th in threads: th.join()
print(errors or "ok")
sys.exit(1 if errors else 0)
"""


def test_torch_and_fastnn_in_one_process():
    """Optional: only when torch happens to be installed (it is never a dependency)."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (optional)")
    require_backend("c")
    proc = _run_python(TORCH)
    assert _last_line(proc) == "ok", proc.stdout + proc.stderr
