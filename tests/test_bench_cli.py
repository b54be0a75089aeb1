"""Plumbing of ``fastnn bench`` (fastnn/bench.py): options, JSON, Markdown table, chart.

Everything runs with ``--quick`` (toy shapes, a few dozen training images), so these tests
check structure and bookkeeping only -- never speed (no timing is asserted anywhere in
tests/). PyTorch is left out of the in-process runs (``--no-torch``), so the test process
never imports it; one subprocess run, skipped when PyTorch is not installed, covers its
columns. End-to-end cases always run in child processes (outside the checkout).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import bench as fb

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _run(tmp_path, capsys, *args):
    json_path, png_path = tmp_path / "bench.json", tmp_path / "bench.png"
    rc = fb.main([*args, "--json", str(json_path), "--png", str(png_path), "--verbose", "0"])
    out = capsys.readouterr().out
    data = json.loads(json_path.read_text())
    return rc, out, data, png_path


def _table_rows(out: str, first_cell_prefixes) -> list:
    return [l for l in out.splitlines()
            if l.startswith("| ") and l[2:].startswith(tuple(first_cell_prefixes))]


def _check_table_shape(out: str) -> None:
    """Every Markdown table row has as many cells as its header."""
    width = None
    for line in out.splitlines():
        if not line.startswith("|"):
            width = None
            continue
        cells = line.count("|")
        if width is None:
            width = cells
        assert cells == width, line


def _check_machine(machine: dict, threads: int) -> None:
    for key in ("date", "cpu", "isa", "threads", "numpy", "torch", "fastnn", "python"):
        assert key in machine
    assert machine["threads"] == threads
    info = fastnn.backend_info()
    assert machine["isa"] == info["isa"]
    assert machine["isa_emulated"] is info.get("isa_emulated", False)


def _check_kernel_record(rec: dict, reps: int, impls=("fastnn", "numpy")) -> None:
    # with --quick every product also times the FMA-only loop, on the C backend
    with_fma = rec["group"] == "matmul" and "c" in fastnn._backend.available()
    assert set(rec["results"]) == set(impls) | ({fb.FMA_IMPL} if with_fma else set())
    for impl, res in rec["results"].items():
        assert "error" not in res, res
        assert len(res["times"]) == reps and res["inner"] >= 1
        assert res["median"] == pytest.approx(statistics.median(res["times"]))
        if rec["group"] in ("pool", "norm"):
            assert res["gflops"] is None and rec["flops"] is None
        elif impl == fb.FMA_IMPL:   # whole rounds of the loop: about the product's FLOPs
            assert res["flops"] > 0 and res["gflops"] == pytest.approx(
                res["flops"] / res["median"] / 1e9)
        else:
            assert res["gflops"] == pytest.approx(rec["flops"] / res["median"] / 1e9)
    for impl in impls[1:]:
        assert rec["speedup"][impl] == pytest.approx(
            rec["results"][impl]["median"] / rec["results"]["fastnn"]["median"])
    assert fb.FMA_IMPL not in rec["speedup"]
    if with_fma:
        assert rec["of_fma_loop"] == pytest.approx(
            rec["results"]["fastnn"]["gflops"] / rec["results"][fb.FMA_IMPL]["gflops"])
    else:
        assert "of_fma_loop" not in rec


def test_kernels_only_pool(tmp_path, capsys):
    rc, out, data, png = _run(tmp_path, capsys, "--suite", "kernels", "--only", "pool",
                              "--reps", "1", "--quick", "--threads", "1", "--no-torch")
    assert rc == 0
    assert data["format"] == "fastnn-bench/1"
    _check_machine(data["machine"], 1)
    assert data["settings"]["only"] == ["pool"] and data["settings"]["quick"] is True
    assert data["train"] == []
    ops = [r["op"] for r in data["kernels"]]
    assert ops == ["pool_fwd", "pool_bwd"] * (len(fb.QUICK_POOL_CASES) +
                                              len(fb.QUICK_NCHW_POOL_CASES))
    assert [r["params"]["layout"] for r in data["kernels"]][-2:] == ["NCHW", "NCHW"]
    for rec in data["kernels"]:
        _check_kernel_record(rec, 1)
    # Markdown: header line, the kernel table without PyTorch columns, one row per case
    assert out.lstrip().startswith("fastnn bench, ")
    assert "CPU " in out and "ISA " in out and "1 threads" in out and "numpy " in out
    (head,) = [l for l in out.splitlines() if l.startswith("| kernel | shape |")]
    assert "NumPy ref" in head and "PyTorch" not in head
    assert len(_table_rows(out, ["maxpool"])) == len(data["kernels"])
    _check_table_shape(out)
    assert "--no-torch" in out
    if HAS_MPL:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not png.exists() and out.count("pip install matplotlib") == 1   # said once
        assert any("pip install matplotlib" in n for n in data["notes"])


def test_kernels_all_groups(tmp_path, capsys):
    rc, out, data, _ = _run(tmp_path, capsys, "--suite", "kernels", "--reps", "2", "--quick",
                            "--no-torch", "--png", "none")
    assert rc == 0
    groups = [r["group"] for r in data["kernels"]]
    assert groups == [c.group for c in fb.kernel_cases(quick=True)]
    assert set(groups) == set(fb.GROUPS)
    for rec in data["kernels"]:
        _check_kernel_record(rec, 2)
    assert len(_table_rows(out, ["matmul", "conv2d", "maxpool", "batchnorm"])) == \
        len(data["kernels"])
    _check_table_shape(out)
    if "c" in fastnn._backend.available():   # the FMA loop's columns: filled for products
        assert "| FMA-only loop GFLOPS | fastnn / FMA loop |" in out
        for row in _table_rows(out, ["matmul"]):
            assert re.search(r"\| \d+\.\d% \|", row), row
        for row in _table_rows(out, ["conv2d", "maxpool"]):
            assert row.split(" | ")[4:6] == ["-", "-"], row
        assert any(n.startswith("FMA-only loop:") for n in data["notes"])


def test_fma_loop_case_needs_a_product_and_the_c_backend():
    case = next(c for c in fb.kernel_cases(quick=True) if c.group == "conv")
    with pytest.raises(ValueError, match="matmul"):
        fb.kernel_callable(case, fb.FMA_IMPL)
    big = [c for c in fb.kernel_cases() if c.group == "matmul"]
    assert [fb.FMA_IMPL in c.impls for c in big] == [c.flops >= fb.FMA_MIN_FLOPS for c in big]
    assert fb.FMA_IMPL not in big[0].runnable_impls(None, "numba")
    assert big[0].runnable_impls(None, "c") == ["fastnn", "numpy", fb.FMA_IMPL]


def test_train_plumbing(tmp_path, capsys):
    backend = fastnn._backend.available()[0]
    rc, out, data, _ = _run(tmp_path, capsys, "--suite", "train", "--only", "mlp", "--quick",
                            "--train-images", "64", "--backends", backend, "--no-torch",
                            "--png", "none")
    assert rc == 0, out
    assert data["kernels"] == []
    (rec,) = data["train"]
    assert rec["program"] == "mlp" and rec["impl"] == f"fastnn:{backend}"
    assert rec["batch_size"] == 32 and rec["train_images"] == 64
    assert len(rec["times"]) == 1 and rec["baseline"] is True
    assert rec["per_full_epoch"] == pytest.approx(rec["median"] * 60000 / 64)
    assert rec["peak_rss_kib"] > 0
    assert "### End-to-end training" in out and "scaled" in out
    assert len(_table_rows(out, ["program 4"])) == 1
    _check_table_shape(out)


def test_add_parser_registers_bench():
    parser = argparse.ArgumentParser(prog="fastnn")
    sub = parser.add_subparsers(dest="command", required=True)
    fb.add_parser(sub)
    args = parser.parse_args(["bench", "--only", "pool,conv", "--suite", "kernels",
                              "--reps", "3", "--train-images", "100"])
    assert callable(args.func)
    assert args.only == ["pool", "conv"] and args.reps == 3 and args.train_images == 100
    for bad in (["bench", "--only", "gemm"], ["bench", "--reps", "0"],
                ["bench", "--suite", "other"], ["bench", "--backends", "cuda"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_chart_skipped_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = {"kernels": [], "train": [], "machine": {}}
    why = fb.write_chart(result, str(tmp_path / "x.png"))
    assert "skipped" in why and "pip install matplotlib" in why
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (optional)")
def test_with_torch_in_subprocess(tmp_path):
    """Kernels and training with the PyTorch columns, in a child process (so this test
    process never imports torch)."""
    json_path = tmp_path / "bench.json"
    root = str(Path(fastnn.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    code = "import sys; from fastnn.bench import main; sys.exit(main(sys.argv[1:]))"
    args = ["--only", "pool,mlp", "--quick", "--reps", "1", "--train-images", "64",
            "--backends", fastnn._backend.available()[0], "--json", str(json_path),
            "--png", "none", "--verbose", "0", "--threads", "1"]
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(json_path.read_text())
    assert data["machine"]["torch"]
    for rec in data["kernels"]:
        _check_kernel_record(rec, 1, ("fastnn", "numpy", "torch"))
    impls = [r["impl"] for r in data["train"]]
    assert impls[-1] == "torch" and len(impls) == 2
    torch_rec = data["train"][-1]
    assert torch_rec["speedup"] == pytest.approx(torch_rec["median"] / data["train"][0]["median"])
    assert "speedup vs PyTorch" in proc.stdout
    assert "| program 4: MLP 784-128-10, batch 32, Adam | PyTorch |" in proc.stdout
    _check_table_shape(proc.stdout)


def test_calibrate_distrusts_a_slow_first_call():
    """A fast call whose first call was slow (one-off costs, preemption) is still repeated
    within a rep; a call that stays slow is timed alone; a first call beyond
    _SLOW_FIRST_CALL is not repeated to find out."""
    n = {"calls": 0}

    def slow_first():
        n["calls"] += 1
        if n["calls"] == 1:
            time.sleep(0.003)

    assert fb._calibrate(slow_first) > 1
    assert fb._calibrate(lambda: time.sleep(0.002)) == 1
    calls = []
    assert fb._calibrate(lambda: (calls.append(1), time.sleep(fb._SLOW_FIRST_CALL))) == 1
    assert len(calls) == 1


def test_time_side_by_side_alternates_and_isolates_errors(monkeypatch):
    """Rep r of every implementation runs before rep r + 1 of any; an implementation that
    raises is reported and dropped while the others go on; contexts wrap every rep."""
    calls, count, entered = [], {}, []

    class Ctx:
        def __enter__(self):
            entered.append("b")

        def __exit__(self, *exc):
            return False

    def make(name, slow=False, fail_at=None):
        def fn():
            calls.append(name)
            count[name] = count.get(name, 0) + 1
            if slow:                                   # > 1 ms: one call per rep
                time.sleep(0.002)
            if fail_at is not None and count[name] >= fail_at:
                raise RuntimeError(f"{name} broke")
        return fn

    ticks = []
    monkeypatch.setattr(fb, "SETTLE_SECONDS", 0.0)     # one untimed call before each rep
    monkeypatch.setattr(fb, "_SLOW_FIRST_CALL", 0.001)  # s and c: one calibration call
    out = fb.time_side_by_side({"a": make("a"), "b": make("b"), "s": make("s", slow=True),
                                "c": make("c", slow=True, fail_at=5)},
                               4, ctxs={"b": Ctx}, tick=ticks.append)
    for name in "abs":
        times, inner = out[name]
        assert len(times) == 4 and all(t > 0 for t in times) and inner >= 1
    assert out["s"][1] == 1
    # c: calibration, then per rep one untimed and one timed call; the 5th call raised
    assert isinstance(out["c"], RuntimeError) and count["c"] == 5
    # after the warm-ups (s then c calibrate last), the reps interleave a, b, s, c, a, ...
    timed = calls[calls.index("c") + 1:]
    reps = [n for i, n in enumerate(timed) if i == 0 or n != timed[i - 1]]
    assert reps == ["a", "b", "s", "c", "a", "b", "s", "c", "a", "b", "s", "a", "b", "s"]
    assert len(entered) == 1 + 4                       # b's warm-up and each of its reps
    assert all(ticks.count(n) == 5 for n in "absc")   # failed reps tick too (progress bar)


def test_train_side_by_side_two_backends(tmp_path, capsys):
    """Two implementations of one program run in lockstep child processes: both records
    complete, each with its own times and peak RSS, marked side_by_side."""
    have = [b for b in ("c", "numpy") if b in fastnn._backend.available()]
    if len(have) < 2:
        pytest.skip("needs two backends")
    rc, out, data, _ = _run(tmp_path, capsys, "--suite", "train", "--only", "mlp", "--quick",
                            "--train-images", "64", "--train-reps", "2", "--backends",
                            ",".join(have), "--no-torch", "--png", "none")
    assert rc == 0, out
    recs = data["train"]
    assert [r["impl"] for r in recs] == [f"fastnn:{b}" for b in have]
    for r in recs:
        assert "error" not in r and r["side_by_side"] is True
        assert len(r["times"]) == 2 and r["peak_rss_kib"] > 0
    assert recs[0]["baseline"] is True and recs[1]["speedup"] > 0
    assert len(_table_rows(out, ["program 4"])) == 2


def test_ab_builds_runs(tmp_path):
    """bench/ab_builds.py (the in-process A/B of two builds) runs GEMM, conv and dlfs cases
    and checks the builds agree; here both sides are the installed build."""
    pytest.importorskip("fastnn._cfastnn")
    script = Path(__file__).resolve().parents[1] / "bench" / "ab_builds.py"
    if not script.exists():
        pytest.skip("not run from a source checkout")
    here = str(Path(fastnn.__file__).resolve().parents[1])
    for args in (["gemm", "40x30x20", "20x64x3d", "--reps", "2"],
                 ["conv", "--reps", "1", "--threads", "1"],
                 ["dlfs", "--reps", "1", "--threads", "1"]):
        res = subprocess.run([sys.executable, str(script), here, here, *args], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        lines = [l for l in res.stdout.splitlines() if "paired median" in l]
        assert len(lines) == {"gemm": 2, "conv": 4, "dlfs": 2}[args[0]], res.stdout


def test_bench_dlfs_runs_in_blocks(tmp_path):
    """bench/bench_dlfs.py trains both nets in turns of --block steps over every step (a
    last, shorter block included) with equal losses; a block < 1 is a usage error."""
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_dlfs.py"
    if not script.exists():
        pytest.skip("not run from a source checkout")

    def run(*args):
        return subprocess.run([sys.executable, str(script), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
    res = run("--steps", "3", "--block", "2", "--batch", "8", "--show", "5")
    assert res.returncode == 0, res.stderr
    steps = [l.split("|") for l in res.stdout.splitlines() if re.match(r"\| \d+ \|", l)]
    assert [int(r[1]) for r in steps] == [0, 1, 2]
    assert all(float(r[2]) == float(r[3]) for r in steps), res.stdout
    assert "3 steps in blocks of 2" in res.stdout
    res = run("--steps", "3", "--block", "0")
    assert res.returncode == 2 and "--block" in res.stderr
    for bad, option in ((["--threads", "-1"], "--threads"), (["--threads", "0"], "--threads"),
                        (["--backend", "bogus"], "--backend"), (["--seed", "-2"], "--seed")):
        res = run(*bad)
        assert res.returncode == 2 and option in res.stderr and "Traceback" not in res.stderr


def test_ab_builds_usage_errors(tmp_path):
    script = Path(__file__).resolve().parents[1] / "bench" / "ab_builds.py"
    if not script.exists():
        pytest.skip("not run from a source checkout")
    for bad, words in ((["gemm", "foo"], "GEMM shapes"), (["gemm", "--reps", "0"], "--reps"),
                       (["gemm", "--threads", "-5"], "--threads"), (["gemm", "--isa", "5"],
                                                                     "--isa")):
        res = subprocess.run([sys.executable, str(script), "a", "b", *bad], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr


def test_usage_errors_come_before_any_measurement(tmp_path, capsys, monkeypatch):
    """A program name alone in --only runs no kernel case (it ran them all); an output path
    that cannot be written and a thread count above 1024 are usage errors (exit 2) before
    any measurement, not a traceback after it."""
    assert fb.kernel_cases(quick=True, only=[]) == []
    rc = fb.main(["--quick", "--suite", "kernels", "--only", "cnn", "--no-torch",
                  "--png", "none", "--verbose", "0"])
    assert rc == 2 and "nothing to run" in capsys.readouterr().err
    # with the reason when the backend asked for could not run
    from fastnn import _backend
    monkeypatch.setattr(_backend, "available", lambda: ["c", "numpy"])
    monkeypatch.setitem(_backend._errors, "numba", "hidden by the test")
    rc = fb.main(["--quick", "--suite", "train", "--backends", "numba", "--no-torch",
                  "--json", "none", "--png", "none", "--verbose", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing to run for --suite train\n" in err
    assert "'numba' skipped: hidden by the test" in err
    monkeypatch.undo()
    rc = fb.main(["--quick", "--json", str(tmp_path / "no" / "such" / "dir" / "x.json"),
                  "--png", "none", "--verbose", "0"])
    assert rc == 2 and "dir does not exist" in capsys.readouterr().err
    # ~ is the home directory, as for a model's save (it was a directory named '~')
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    rc = fb.main(["--quick", "--json", "~/x.json", "--png", "none", "--verbose", "0"])
    assert rc == 2 and f"the directory {tmp_path / 'home'} does not exist" in \
        capsys.readouterr().err
    rc = fb.main(["--quick", "--json", "~nosuchuser-fastnn/x.json", "--png", "none",
                  "--verbose", "0"])
    assert rc == 2 and "cannot expand the home directory" in capsys.readouterr().err
    # a directory that says it is writable but takes no file (/proc): refused up front too
    if os.path.isdir("/proc") and os.access("/proc", os.W_OK):
        rc = fb.main(["--quick", "--json", "/proc/fastnn-bench.json", "--png", "none",
                      "--verbose", "0"])
        assert rc == 2 and "/proc is not writable" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        fb.main(["--threads", "2000"])
    assert info.value.code == 2 and "must be <= 1024" in capsys.readouterr().err
    # an empty path is not 'none'; an unusable one is named with its option
    assert fb.main(["--quick", "--json", "", "--png", "none", "--verbose", "0"]) == 2
    assert "--json: an empty path" in capsys.readouterr().err
    not_dir = tmp_path / "file"
    not_dir.write_text("")
    assert fb.main(["--quick", "--json", str(not_dir / "x.json"), "--png", "none",
                    "--verbose", "0"]) == 2
    assert capsys.readouterr().err.startswith(f"fastnn bench: --json {not_dir / 'x.json'}")
    from fastnn.__main__ import main as cli
    with pytest.raises(SystemExit) as info:
        cli(["demo", "--threads", "2000"])
    assert info.value.code == 2 and "must be <= 1024" in capsys.readouterr().err


def test_thread_limits_restores_each_backend(restore_threads):
    """thread_limits restores each loaded backend's own count (it set the active one's on
    all: with the NumPy backend active, the C backend was left at 1 thread)."""
    from fastnn import _backend
    if "c" not in _backend.available():
        pytest.skip("the C backend is not built here")
    c = _backend.load("c")
    before = c.get_num_threads()
    with fastnn.use_backend("numpy"):
        with fb.thread_limits(1):
            assert c.get_num_threads() == 1
    assert c.get_num_threads() == before


def _canned_result(threads=1) -> dict:
    """A small result as :func:`fastnn.bench.run` returns it (one kernel case)."""
    machine = {"date": "2026-01-01T00:00:00", "cpu": "test CPU", "isa": "test", "threads": threads,
               "numpy": "x", "torch": None, "fastnn": fastnn.__version__, "python": "3"}
    rec = {"group": "pool", "op": "pool_fwd", "name": "maxpool fwd", "shape": "2x8x8x4",
           "params": {}, "flops": None, "speedup": {},
           "results": {"fastnn": {"impl": "fastnn c", "times": [1e-4], "inner": 1,
                                  "median": 1e-4, "gflops": None}}}
    return {"format": "fastnn-bench/1", "machine": machine, "settings": {"reps": 1},
            "kernels": [rec], "train": [], "notes": []}


def test_header_names_an_emulated_isa():
    """The emulated AVX-512 test build's times mean nothing: the header says so."""
    machine = dict(_canned_result()["machine"])
    assert "EMULATED" not in fb.header_line(machine)
    machine["isa_emulated"] = True
    assert "ISA test EMULATED (a test build: not a speed)," in fb.header_line(machine)


def test_output_targets_checked_first_and_written_after_the_tables(tmp_path, capsys,
                                                                   monkeypatch):
    """--json / --png naming a directory or a FIFO is a usage error before measuring (a
    directory passed the check, then the write died with a traceback and lost the
    results); the tables are printed before any file is written, and a write that fails
    late is one line on stderr and a non-zero exit; files are written atomically, through
    a symbolic link."""
    def never_run(**kw):
        raise AssertionError("measured before checking the output paths")

    monkeypatch.setattr(fb, "run", never_run)
    adir = tmp_path / "adir"
    adir.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for args, phrase in ((["--json", str(adir), "--png", "none"], "is a directory"),
                         (["--png", str(adir), "--json", "none"], "is a directory"),
                         (["--json", str(fifo), "--png", "none"], "is a FIFO")):
        assert fb.main(args + ["--quick"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fastnn bench: --") and phrase in err and err.count("\n") == 1

    late = tmp_path / "late.json"

    def run_then_block(**kw):      # the target becomes a directory while measuring
        late.mkdir()
        return _canned_result()

    monkeypatch.setattr(fb, "run", run_then_block)
    assert fb.main(["--json", str(late), "--png", "none", "--quick"]) == 1
    out, err = capsys.readouterr()
    assert "| maxpool fwd | 2x8x8x4 |" in out and "JSON written" not in out
    assert err.startswith(f"fastnn bench: --json {late}: cannot write the JSON: ")
    assert err.count("\n") == 1 and "Traceback" not in err

    monkeypatch.setattr(fb, "run", lambda **kw: _canned_result())
    real = tmp_path / "results" / "bench.json"
    real.parent.mkdir()
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert fb.main(["--json", str(link), "--png", "none", "--quick"]) == 0
    out = capsys.readouterr().out
    assert out.index("| maxpool fwd") < out.index(f"- JSON written to {link}")
    assert link.is_symlink() and json.loads(real.read_text())["kernels"][0]["name"] == \
        "maxpool fwd"
    leftovers = [p for d in (tmp_path, real.parent) for p in os.listdir(d)
                 if p.endswith(".tmp")]
    assert leftovers == []


def _corrupt_fashion_mnist(root: Path) -> Path:
    """FASTNN_DATA_DIR-style directory whose fashion-mnist/ training images are a truncated
    gzip file; returns that file."""
    from fastnn.datasets import _idx

    d = root / "fashion-mnist"
    d.mkdir(parents=True)
    arrays = {"train-images-idx3-ubyte": np.zeros((20, 28, 28), np.uint8),
              "train-labels-idx1-ubyte": np.zeros(20, np.uint8),
              "t10k-images-idx3-ubyte": np.zeros((10, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte": np.zeros(10, np.uint8)}
    for name, a in arrays.items():
        (d / (name + ".gz")).write_bytes(_idx.idx_bytes(a, compress=True))
    bad = d / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-30])
    return bad


def test_corrupt_dataset_is_one_line_and_a_failure(tmp_path, capsys, monkeypatch):
    """`fastnn demo` (and a bench training child) on a corrupt data set print the loader's
    message on one line and exit non-zero (the demo printed a ValueError traceback)."""
    from fastnn.__main__ import main as cli

    bad = _corrupt_fashion_mnist(tmp_path / "data")
    monkeypatch.setenv("FASTNN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli(["demo", "--epochs", "1", "--verbose", "0"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"fastnn demo: {bad}: truncated gzip data") and err.count("\n") == 1
    assert "test accuracy" not in out
    spec = {"impl": "fastnn:numpy", "program": "mlp", "threads": 1, "train_images": 16,
            "reps": 1}
    assert fb._child_main(json.dumps(spec)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fastnn bench: {bad}: truncated gzip data") and err.count("\n") == 1


def test_fmt_time_picks_the_unit_after_rounding():
    """A time just under a unit's boundary is written in the larger unit once rounded to
    three digits (a run printed 0.9996 ms as "1e+03 us")."""
    assert fb._fmt_time(0.0009996) == "1 ms"
    assert fb._fmt_time(0.000999) == "999 us"
    assert fb._fmt_time(0.09996) == "100 ms"
    assert fb._fmt_time(0.9996) == "1.00 s"
    assert fb._fmt_time(0.0123) == "12.3 ms"
    assert fb._fmt_time(2.5) == "2.50 s"
    assert fb._fmt_time(None) == "-"
