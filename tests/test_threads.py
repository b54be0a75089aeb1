"""Threads and backend selection.

* The compiled backends ("c", "numba") give bit-for-bit the same results with 1 and 2
  threads (work is split so that no reduction order depends on the thread count).
* ``backend_info()``, ``use_backend`` (restored even on exceptions) and ``FASTNN_BACKEND``.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import sys
import threading
import warnings
import zlib

import numpy as np
import pytest

import fastnn
from fastnn import _backend, ops
from conftest import (ALL_BACKENDS, DTYPES, assert_bitwise, rand, require_backend,
                      to_layout, weights_to_layout)

DT_IDS = ["f32", "f64"]


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _with_threads(n, fn, *args, **kw):
    fastnn.set_num_threads(n)
    got = fastnn.get_num_threads()
    if got < n and _backend.active_name() == "numba":
        pytest.skip(f"numba is capped at NUMBA_NUM_THREADS={got} thread(s) here")
    assert got == n
    return fn(*args, **kw)


def _same_for_1_and_2_threads(fn, *args, what="", **kw):
    r1 = _with_threads(1, fn, *args, **kw)
    r2 = _with_threads(2, fn, *args, **kw)
    r1b = _with_threads(1, fn, *args, **kw)
    r1, r2, r1b = (r if isinstance(r, tuple) else (r,) for r in (r1, r2, r1b))
    for i, (a, b, c) in enumerate(zip(r1, r2, r1b)):
        if a is None:
            assert b is None and c is None
            continue
        assert_bitwise(a, c, what=f"{what}[{i}] 1 thread, run twice")
        assert_bitwise(a, b, what=f"{what}[{i}] 1 vs 2 threads")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["NN", "TN", "NT", "TT"])
# (400, 300, 200): B packed once and shared by the threads; (1000, 200, 900) too, in three K
# blocks whose last row blocks are handed out in pieces (the C backend's TAIL_SPLIT); the
# small-m products (A read in place, several K blocks) take the C backend's column slabs:
# each thread its own panels. (200, 4200, 1300): two or three N blocks (4096 float / 2048
# double columns, the last narrower) of three or more K blocks, each next B block packed
# ahead while the current one's tiles run (the C backend's two_b), across K and N
# boundaries.
# Every shape is above the C backend's GEMM_PAR_MIN (m * n * k >= 2**22), so two threads
# really split it (smaller ones ran on one thread whatever the setting).
@pytest.mark.parametrize("m,n,k", [(400, 300, 200), (1000, 200, 900), (100, 100, 2000),
                                   (32, 130, 4200), (200, 4200, 1300)],
                         ids=["shared-B", "shared-B-tail", "slabs", "slabs-edge",
                              "shared-B-ahead"])
def test_matmul_thread_invariant(fast_backend, ta, tb, dtype, m, n, k, restore_threads):
    rng = _rng("mm", ta, tb)
    a = rand(rng, (k, m) if ta else (m, k), dtype)
    b = rand(rng, (n, k) if tb else (k, n), dtype)
    _same_for_1_and_2_threads(ops.matmul, a, b, trans_a=ta, trans_b=tb, what="matmul")
    c0 = rand(rng, (m, n), dtype)

    def acc():
        return ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=0.5, beta=-1.0, out=c0.copy())
    _same_for_1_and_2_threads(acc, what="matmul beta")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("m,k,n,calls", [(60, 4317, 128, 200), (48, 300, 4500, 60),
                                         (200, 1300, 4200, 20)],
                         ids=["short-last-k-block", "narrow-last-n-block", "shared-B-ahead"])
def test_matmul_repeated_2_thread_calls_stable(fast_backend, dtype, m, k, n, calls,
                                               restore_threads):
    """Many 2-thread calls of small-m products that the C backend runs in column slabs
    (each thread packs and reads only its own B panels, no barrier). Regressions, each a
    race where one thread packed over panels its neighbour was still reading: (1) K blocks
    with a shorter last one (found with K = 4319 in blocks of 255, the last 239; K = 4317
    has one with every ISA's KC: 256, 384, 512, 640) and an even number of B panels:
    panels placed at offsets that moved with the block depth (wrong once every few dozen
    calls); (2) N = 4500, wider than the N block (4096 float / 2048 double columns), the
    last block narrower: panels placed where that block's split put them (wrong in most
    calls). And a product on the shared-B path whose next B blocks are packed ahead, into
    the panel buffer the tiles are not reading, across K and N blocks."""
    rng = _rng(f"mm-repeat-{m}x{k}x{n}", dtype)
    a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
    ref = _with_threads(1, ops.matmul, a, b)
    fastnn.set_num_threads(2)
    for i in range(calls):
        assert_bitwise(ops.matmul(a, b), ref, what=f"2-thread call {i}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_conv_thread_invariant(fast_backend, layout, dtype, restore_threads):
    rng = _rng("conv", layout)
    n, h, w_, c, f = 64, 17, 15, 8, 16   # (above the C backend's threshold for 2 threads)
    x = to_layout(rand(rng, (n, h, w_, c), dtype), layout)
    w = weights_to_layout(rand(rng, (3, 3, c, f), dtype), layout)
    b = rand(rng, (f,), dtype)
    for geo in (dict(stride=1, padding="same"), dict(stride=2, padding=((1, 0), (0, 2)),
                                                     dilation=2)):
        geo = dict(geo, layout=layout)
        _same_for_1_and_2_threads(ops.conv2d_forward, x, w, b, activation="relu",
                                  what=f"conv2d_forward {geo}", **geo)
        with fastnn.use_backend(fast_backend):
            y = ops.conv2d_forward(x, w, **geo)
        dy = rand(rng, y.shape, dtype)
        _same_for_1_and_2_threads(ops.conv2d_backward, dy, x, w, what=f"conv2d_backward {geo}",
                                  **geo)
        _same_for_1_and_2_threads(ops.conv2d_backward, dy, x, w, need_dx=False,
                                  what=f"conv2d_backward need_dx=False {geo}", **geo)
        _same_for_1_and_2_threads(ops.im2col, x, 3, what="im2col", **geo)
        g = ops.conv_geometry(x.shape, 3, geo["stride"], geo["padding"],
                              geo.get("dilation", 1), layout=layout)
        cols = rand(rng, (g.rows, g.patch), dtype)
        _same_for_1_and_2_threads(ops.col2im, cols, x.shape, 3, what="col2im", **geo)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_conv_chunked_thread_invariant(fast_backend, layout, dtype, restore_threads,
                                       restore_workspace_limit):
    """Chunked batches (tiny workspace) are thread-invariant too."""
    rng = _rng("convchunk", layout)
    # (each one-image chunk is above the C backend's threshold for 2 threads)
    x = to_layout(rand(rng, (3, 64, 64, 16), dtype), layout)
    w = weights_to_layout(rand(rng, (3, 3, 16, 32), dtype), layout)
    ops.set_workspace_limit(1)
    _same_for_1_and_2_threads(ops.conv2d_forward, x, w, padding="same", layout=layout,
                              what="chunked conv2d_forward")
    dy = rand(rng, ops.conv2d_forward(x, w, padding="same", layout=layout).shape, dtype)
    _same_for_1_and_2_threads(ops.conv2d_backward, dy, x, w, padding="same", layout=layout,
                              what="chunked conv2d_backward")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_pool_and_bias_act_thread_invariant(fast_backend, layout, dtype, restore_threads):
    rng = _rng("pool", layout)
    x = to_layout(rand(rng, (8, 40, 39, 24), dtype), layout)   # (above the 2-thread threshold)
    x_nhwc_nan = x.copy()
    x_nhwc_nan.flat[::97] = np.nan
    for pool, kw in ((2, dict()), (3, dict(stride=1, padding="same")),
                     ((3, 2), dict(stride=(2, 3), padding=((2, 0), (1, 1))))):
        kw = dict(kw, layout=layout)
        for xx in (x, x_nhwc_nan):
            _same_for_1_and_2_threads(ops.maxpool2d_forward, xx, pool, what="maxpool fwd", **kw)
        with fastnn.use_backend(fast_backend):
            y, am = ops.maxpool2d_forward(x, pool, **kw)
        dy = rand(rng, y.shape, dtype)
        _same_for_1_and_2_threads(ops.maxpool2d_backward, dy, am, x.shape, pool,
                                  what="maxpool bwd", **kw)
        _same_for_1_and_2_threads(ops.avgpool2d_forward, x, pool, what="avgpool fwd", **kw)
        _same_for_1_and_2_threads(ops.avgpool2d_backward, dy, x.shape, pool,
                                  what="avgpool bwd", **kw)
    axis = -1 if layout == "NHWC" else 1
    bias = rand(rng, (24,), dtype)
    _same_for_1_and_2_threads(ops.bias_act, x, bias, "relu", channel_axis=axis,
                              what="bias_act")
    with fastnn.use_backend(fast_backend):
        y = ops.bias_act(x, bias, "relu", channel_axis=axis)
    _same_for_1_and_2_threads(ops.bias_act_backward, rand(rng, x.shape, dtype), y, "relu",
                              channel_axis=axis, what="bias_act_backward")
    # a Dense's gradient with more channels than one of the C sums' channel blocks (64)
    d2, y2 = rand(rng, (2600, 100), dtype), rand(rng, (2600, 100), dtype)
    for act in ("relu", "identity"):
        _same_for_1_and_2_threads(ops.bias_act_backward, d2, y2, act,
                                  what=f"bias_act_backward {act} (2600, 100)")


def test_numba_thread_count_reaches_other_python_threads(restore_threads):
    """fastnn.set_num_threads is the process's count on the Numba backend too (Numba's own
    count is per Python thread: set in the main thread, it did not reach the kernels a
    worker thread called, which ran on Numba's default)."""
    require_backend("numba")
    import numba
    fastnn.set_num_threads(1)
    seen = []

    def work():
        with fastnn.use_backend("numba"):
            ops.matmul(np.ones((4, 4)), np.ones((4, 4)))
        seen.append(numba.get_num_threads())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [1]


def test_set_num_threads_reaches_loaded_backends(restore_threads):
    for n in (1, 2, 1):
        fastnn.set_num_threads(n)
        for name in ("c", "numba"):
            if name in _backend._loaded:
                assert _backend._loaded[name].get_num_threads() == n, name
        assert fastnn.backend_info()["num_threads"] in (n, 1)  # numpy reports 1


# --------------------------------------------------------------------- backend selection
def test_backend_info(backend):
    info = fastnn.backend_info()
    assert isinstance(info, dict)
    for key in ("available", "active", "isa", "num_threads"):
        assert key in info, key
    assert info["active"] == backend
    assert isinstance(info["available"], list) and backend in info["available"]
    assert "numpy" in info["available"]
    assert set(info["available"]) <= set(ALL_BACKENDS)
    assert isinstance(info["isa"], str) and info["isa"]
    assert isinstance(info["num_threads"], int) and info["num_threads"] >= 1
    assert isinstance(info.get("errors", {}), dict)
    for name in ALL_BACKENDS:
        if name not in info["available"]:
            assert name in info["errors"] and info["errors"][name]


def test_use_backend_restores_on_exception(backend):
    outer = _backend.active_name()
    assert outer == backend
    for inner in ("numpy",) + tuple(b for b in ("c", "numba") if b in _backend.available()):
        with pytest.raises(RuntimeError, match="boom"):
            with fastnn.use_backend(inner) as mod:
                assert _backend.active_name() == inner
                assert fastnn.backend_info()["active"] == inner
                assert mod is _backend.load(inner)
                raise RuntimeError("boom")
        assert _backend.active_name() == outer
        # an exception raised by an op inside the block
        with pytest.raises(ValueError):
            with fastnn.use_backend(inner):
                ops.matmul(np.ones((2, 3)), np.ones((2, 3)))
        assert _backend.active_name() == outer


def test_use_backend_nests_and_restores():
    base = _backend.active_name()
    with fastnn.use_backend("numpy"):
        assert _backend.active_name() == "numpy"
        others = [b for b in ("c", "numba") if b in _backend.available()]
        for other in others:
            with fastnn.use_backend(other):
                assert _backend.active_name() == other
                with fastnn.use_backend("numpy"):
                    assert _backend.active_name() == "numpy"
                assert _backend.active_name() == other
        assert _backend.active_name() == "numpy"
    assert _backend.active_name() == base


def test_use_backend_checks_at_the_call_and_warns_when_never_entered():
    """A bare `fastnn.use_backend("numpy")` changes nothing (it is a context manager): it
    warns when dropped unentered (it was silent, and a misspelt name passed unnoticed);
    the name is checked at the call; one object may be entered again, nested too."""
    base = _backend.active_name()
    with pytest.warns(RuntimeWarning, match=r"use_backend\('numpy'\) was never entered"):
        fastnn.use_backend("numpy")
    assert _backend.active_name() == base
    with pytest.raises(ValueError):
        fastnn.use_backend("nmupy")
    ctx = fastnn.use_backend("numpy")
    with ctx:
        with ctx:
            assert _backend.active_name() == "numpy"
        assert _backend.active_name() == "numpy"
    assert _backend.active_name() == base
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del ctx                                     # entered: no warning


def test_use_backend_is_per_thread():
    """use_backend is a context-local override: other threads keep the process default."""
    default = _backend.active_name()
    inner = "numpy" if default != "numpy" else next(
        (b for b in ("c", "numba") if b in _backend.available()), None)
    if inner is None:
        pytest.skip("only the numpy backend is available")
    seen = []
    with fastnn.use_backend(inner):
        t = threading.Thread(target=lambda: seen.append(_backend.active_name()))
        t.start()
        t.join()
        assert _backend.active_name() == inner
    assert seen == [default]


def test_set_backend_process_wide(backend):
    saved = list(_backend._default)
    try:
        fastnn.set_backend(backend)
        with fastnn.use_backend("numpy"):
            assert _backend.active_name() == "numpy"
        seen = []
        t = threading.Thread(target=lambda: seen.append(_backend.active_name()))
        t.start()
        t.join()
        assert seen == [backend]
    finally:
        _backend._default[:] = saved


def _run_python(code, **env_extra):
    env = dict(os.environ)
    env.pop("FASTNN_BACKEND", None)
    env.update(env_extra)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    # cwd outside the checkout: `python -c` puts the cwd first on sys.path, and the source
    # tree's fastnn/ (no compiled extension there in CI) must not shadow the installed one.
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tempfile.gettempdir())


PRINT_ACTIVE = "import fastnn; print(fastnn.backend_info()['active'])"


@pytest.mark.parametrize("layer", ["workqueue", "forksafe"])
def test_numba_workqueue_layer_takes_python_threads_in_turn(layer):
    """Under NUMBA_THREADING_LAYER=workqueue (what forked workers need), or a setting
    that may resolve to it ("forksafe" without TBB), Numba ends the process when two
    Python threads run parallel kernels at once; the Numba backend's kernels then take
    turns, from the very first call (no kernel ran before the threads start): four
    threads' products, the same bits as one thread's afterwards."""
    require_backend("numba")
    proc = _run_python(
        "import threading, numpy as np, fastnn, numba\n"
        "from fastnn import ops\n"
        "a = np.random.default_rng(0).random((300, 300)).astype(np.float32)\n"
        "fastnn.set_backend('numba'); out = []\n"
        "go = threading.Barrier(4)\n"
        "def run():\n"
        "    go.wait()\n"
        "    for _ in range(10):\n"
        "        out.append(ops.matmul(a, a))\n"
        "ts = [threading.Thread(target=run) for _ in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "ref = ops.matmul(a, a)\n"
        "print(numba.threading_layer(), len(out), sum(not np.array_equal(o, ref) for o in out))",
        NUMBA_THREADING_LAYER=layer, FASTNN_BACKEND="numba")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["40", "0"], proc.stdout + proc.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_numba_workqueue_turns_survive_a_fork_mid_kernel():
    """A child forked while another thread of the parent runs a Numba kernel under the
    workqueue layer gets a lock of its own (the parent's was held by a thread the child
    does not have: its first kernel waited forever)."""
    require_backend("numba")
    proc = _run_python(
        "import os, signal, threading, numpy as np, fastnn\n"
        "from fastnn import ops\n"
        "a = np.random.default_rng(0).random((200, 200)).astype(np.float32)\n"
        "fastnn.set_backend('numba'); ref = ops.matmul(a, a)\n"
        "stop = threading.Event(); busy = threading.Event()\n"
        "def loop():\n"
        "    while not stop.is_set():\n"
        "        busy.set(); ops.matmul(a, a)\n"
        "t = threading.Thread(target=loop); t.start(); busy.wait()\n"
        "codes = []\n"
        "for _ in range(5):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        signal.alarm(20)\n"
        "        os._exit(0 if np.array_equal(ops.matmul(a, a), ref) else 3)\n"
        "    codes.append(os.waitpid(pid, 0)[1])\n"
        "stop.set(); t.join()\n"
        "print(codes)",
        NUMBA_THREADING_LAYER="workqueue", FASTNN_BACKEND="numba")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[0, 0, 0, 0, 0]", proc.stdout + proc.stderr


def test_loading_a_backend_keeps_the_others_threads():
    """Numba, capped at the CPUs, took the C backend's OpenMP count down when it loaded:
    set_num_threads(4) on a 2-CPU machine, then backend_info() (which loads every
    backend), left C on 2 threads. In a fresh process, so that Numba loads second."""
    require_backend("c")
    require_backend("numba")
    proc = _run_python(
        "import fastnn\n"
        "fastnn.set_backend('c'); fastnn.set_num_threads(4)\n"
        "before = fastnn.get_num_threads(); fastnn.backend_info()\n"
        "print(before, fastnn.get_num_threads())", FASTNN_BACKEND="c")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["4", "4"], proc.stdout + proc.stderr


def test_fastnn_backend_env_var(backend):
    proc = _run_python(PRINT_ACTIVE, FASTNN_BACKEND=backend)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == backend, proc.stdout + proc.stderr


def test_fastnn_backend_env_var_case_and_spaces():
    proc = _run_python(PRINT_ACTIVE, FASTNN_BACKEND=" NumPy ")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "numpy", proc.stdout + proc.stderr


def test_fastnn_backend_env_var_invalid_falls_back():
    proc = _run_python(PRINT_ACTIVE, FASTNN_BACKEND="bogus")
    assert proc.returncode == 0, proc.stderr
    active = proc.stdout.strip().splitlines()[-1]
    assert active in ALL_BACKENDS
    assert "FASTNN_BACKEND" in proc.stderr and "bogus" in proc.stderr, proc.stderr
    # the automatic choice is the fastest available backend
    auto = _run_python(PRINT_ACTIVE)
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.strip().splitlines()[-1] == active


def test_default_backend_is_fastest_available():
    proc = _run_python("import fastnn, fastnn._backend as b; print(b.available()[0]); "
                       "print(fastnn.backend_info()['active'])")
    assert proc.returncode == 0, proc.stderr
    first, active = proc.stdout.strip().splitlines()[-2:]
    assert active == first
    if "c" in _backend.available():
        assert active == "c"
        assert "could not be loaded" not in proc.stderr


def test_required_backends_load():
    """What CI insists on (FASTNN_REQUIRE_BACKENDS) is really loadable, with the reason
    from fastnn._backend otherwise."""
    from conftest import required_backends
    for name in sorted(required_backends()):
        require_backend(name)


def test_require_backends_turns_skip_into_failure(tmp_path):
    """An unavailable backend is skipped, unless FASTNN_REQUIRE_BACKENDS names it: then the
    test fails with the registry's reason (CI can never silently skip a backend)."""
    fake = tmp_path / "fake" / "numba"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ImportError("numba deliberately broken by test_threads")\n')
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    target = os.path.join(tests_dir, "test_threads.py") + "::test_backend_info"
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", target,
            "-k", "numba", "-rfEs"]

    def run(**env_extra):
        env = dict(os.environ)
        for var in ("FASTNN_BACKEND", "FASTNN_REQUIRE_BACKENDS", "FASTNN_TEST_BACKENDS"):
            env.pop(var, None)
        env.update(env_extra)
        root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "fake"), root,
                                             env.get("PYTHONPATH", "")])
        return subprocess.run([sys.executable] + args, env=env, capture_output=True,
                              text=True, timeout=300, cwd=str(tmp_path))

    skipped = run()
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "1 skipped" in skipped.stdout and "deliberately broken" in skipped.stdout
    failed = run(FASTNN_REQUIRE_BACKENDS="c, numba,numpy")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "deliberately broken" in failed.stdout, failed.stdout
    assert "FASTNN_REQUIRE_BACKENDS" in failed.stdout
    assert "skipped" not in failed.stdout.splitlines()[-1]
    bogus = run(FASTNN_REQUIRE_BACKENDS="c,cuda")
    assert bogus.returncode != 0 and "cuda" in bogus.stdout + bogus.stderr


def test_gomp_spincount_default_respects_user_settings(monkeypatch):
    """The C backend bounds libgomp's spin-wait unless the user chose a wait policy."""
    require_backend("c")
    code = ("import os, fastnn; fastnn.set_backend('c'); "
            "print(os.environ.get('GOMP_SPINCOUNT'))")
    # (this process imported fastnn already, which set the variable here too)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert _run_python(code).stdout.split()[-1] == "1000"
    assert _run_python(code, GOMP_SPINCOUNT="50").stdout.split()[-1] == "50"
    assert _run_python(code, OMP_WAIT_POLICY="active").stdout.split()[-1] == "None"


def test_default_isa_is_the_best_except_avx512_256_on_zen4(monkeypatch):
    """With no FASTNN_ISA the C backend runs the best ISA the CPU has, but avx512_256 on AMD
    family 19h with AVX-512 (Zen 4: 512-bit operations in two halves, the 256-bit kernels
    faster; not in the emulated AVX-512 test build, which tests its AVX-512 kernels by
    default everywhere); AVX-512 stays selectable there. avx512_256 is available only
    where AVX-512 is."""
    require_backend("c")
    from fastnn.bench import cpuinfo_field

    vendor, family = cpuinfo_field("vendor_id"), cpuinfo_field("cpu family")
    if vendor is None or family is None:
        pytest.skip("no /proc/cpuinfo to tell the CPU's vendor and family")
    monkeypatch.delenv("FASTNN_ISA", raising=False)
    code = ("from fastnn.backends import c_backend as c; "
            "print(c.isa(), ','.join(c.available_isas()), c.isa_emulated())")
    isa, available, emulated = _run_python(code).stdout.split()[-3:]
    available = available.split(",")
    best = [name for name in ("generic", "avx2", "avx512") if name in available][-1]
    if "avx512_256" in available:  # AVX-512F and VL (not on Xeon Phi, which lacks VL)
        assert best == "avx512", available
    zen4 = (vendor == "AuthenticAMD" and family == "25" and best == "avx512" and
            emulated == "False")
    assert isa == ("avx512_256" if zen4 else best), (vendor, family, isa, available)
    forced = _run_python("from fastnn.backends import c_backend as c; print(c.isa())",
                         FASTNN_ISA=best)
    assert forced.stdout.split()[-1] == best


# ------------------------------------------------- thread counts changed by another thread
RACE = """
import threading, numpy as np, fastnn, fastnn.ops as O
fastnn.set_backend('c'); fastnn.set_num_threads(1)
done = threading.Event()
def work():
    r = np.random.default_rng(0)
    for n in range(1, 160):   # a growing batch: the workspace is sized anew on every call
        x = r.standard_normal((n, 12, 12, 8)).astype(np.float32)
        w = r.standard_normal((3, 3, 8, 8)).astype(np.float32)
        O.conv2d_backward(np.ones((n, 12, 12, 8), np.float32), x, w, padding=1)
        O.matmul(x.reshape(n * 12, -1), np.ones((96, 40), np.float32))
    done.set()
t = threading.Thread(target=work); t.start(); k = 0
while not done.is_set():
    fastnn.set_num_threads(1 + (k & 1)); k += 1
t.join(); print('ok')
"""


def test_thread_count_changed_by_another_thread_mid_call():
    """Workspaces were sized for the thread count when asked and the kernel read the count
    again: another Python thread switching it between 1 and 2 made a NHWC convolution's
    backward write past its workspace (a segfault, every run). They are sized for the
    most threads the calling thread's kernels can use (cpu.c, fnn_max_threads)."""
    require_backend("c")
    proc = _run_python(RACE)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode,
                                                                  proc.stderr[-2000:])


def test_more_threads_than_processors(restore_threads):
    """set_num_threads(1024) is accepted (and reported); kernels use at most one thread per
    processor (a 64 x 16 x 16 x 16 convolution asked a 39 GiB workspace) and compute the
    same results."""
    require_backend("c")
    from fastnn.backends import c_backend
    rng = np.random.default_rng(1)
    x, w = rand(rng, (64, 16, 16, 16), np.float32), rand(rng, (32, 16, 3, 3), np.float32)
    fastnn.set_num_threads(1)
    with fastnn.use_backend("c"):
        want = ops.conv2d_forward(x, w, layout="NCHW")
        fastnn.set_num_threads(1024)
        assert c_backend.get_num_threads() == 1024
        got = ops.conv2d_forward(x, w, layout="NCHW")
    assert_bitwise(got, want)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_runs_kernels_on_one_thread():
    """A child made by fork (multiprocessing's default start method on Linux) after the
    parent ran a 2-thread kernel hung forever in libgomp's first parallel region (found by
    a review; Ctrl-C could not break it). The child's kernels now run on one thread, and
    asking it for more warns. (The C backend: Numba's own OpenMP layer terminates such a
    child itself when the parent ran a Numba kernel, 'fork() called from a process already
    using GNU OpenMP'; see set_num_threads.)"""
    import time
    import warnings
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(2)
    try:
        a = np.ones((512, 512), np.float32)
        ops.matmul(a, a)                              # the parent's thread pool exists
        for backend in ("c",):
            pid = os.fork()
            if pid == 0:                              # the child: never return into pytest
                code = 1
                try:
                    with fastnn.use_backend(backend):
                        r = ops.matmul(a, a)
                        with warnings.catch_warnings(record=True) as w:
                            warnings.simplefilter("always")
                            fastnn.set_num_threads(2)
                        code = 0 if (r[0, 0] == 512 and fastnn.get_num_threads() == 1
                                     and any("fork" in str(x.message) for x in w)) else 3
                finally:
                    os._exit(code)
            t0 = time.monotonic()
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.waitstatus_to_exitcode(status) == 0, backend
                    break
                if time.monotonic() - t0 > 60:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    pytest.fail(f"the forked child hung ({backend} backend)")
                time.sleep(0.02)
    finally:
        fastnn.set_num_threads(before)
