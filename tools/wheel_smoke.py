"""Smoke test of an installed fastnn (a wheel in a fresh environment): no test suite, no
checkout, no compiler needed.

    python wheel_smoke.py [--expect-backends c,numba,numpy] [--forbid-path DIR]
                          [--require-no-compiler] [--expect-bundled-openmp] [--no-fit]

Checks, in order (any failure exits 1):

1. ``import fastnn`` imports the installed package (not a source tree under
   ``--forbid-path``). An audit hook records every process started during the whole run
   (``subprocess``, ``os.exec*``, ``os.spawn*``, ``os.system``, ``os.posix_spawn``, fork);
   with ``--require-no-compiler`` there must be none (nothing may compile anything) and no
   C compiler may be on ``PATH``.
2. ``fastnn.backend_info()['available']`` equals ``--expect-backends`` (default: ``c``,
   ``numba`` if the numba package is installed, ``numpy``), and ``c`` is active.
3. ``conv2d_forward``/``conv2d_backward`` on every compiled backend, and on the C backend
   under every instruction set this CPU runs (``generic`` always: the portable path), match
   the NumPy reference. With ``FASTNN_ISA`` set, that ISA must be the active one.
4. One epoch of a small CNN on the Fashion-MNIST sample shipped in the wheel
   (``fashion_mnist.load_data(sample=True)``): finite loss, better than chance.

``--check-portable BUILD_DIR`` instead inspects a build (used by tools/build_wheel.sh,
needs objdump): no ``-march``/``-mtune`` in its compile commands, ISA flags only on the
ISA kernel files (``csrc/kernels/*_avx2.c``, ``*_avx512.c``), and no AVX (VEX/EVEX)
instruction in the built extension outside functions compiled from those files.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

SPAWNS: list = []
_SPAWN_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                 "os.fork", "os.forkpty")


def _audit(event, args):
    if event in _SPAWN_EVENTS:
        SPAWNS.append((event, repr(args)[:300]))


class Failed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failed(msg)


def _compilers_on_path():
    import shutil
    names = ("cc", "gcc", "clang", "c99", "tcc", "icx", "icc", "cl", "x86_64-linux-gnu-gcc")
    return {n: shutil.which(n) for n in names if shutil.which(n)}


def _mapped_openmp_libs():
    """OpenMP runtimes mapped into this process (Linux: /proc/self/maps)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = {line.split()[-1] for line in fh if "/" in line}
    except OSError:
        return None
    pat = re.compile(r"(libgomp|libomp|libiomp5|vcomp)[^/]*$")
    return sorted(p for p in paths if pat.search(p))


# ----------------------------------------------------------------------------- checks
def check_import(args):
    import fastnn  # noqa: F401 (the first import: the audit hook is already watching)

    path = os.path.realpath(fastnn.__file__)
    print(f"fastnn {fastnn.__version__} from {path}")
    if args.forbid_path:
        forbid = os.path.realpath(args.forbid_path)
        inside = path.startswith(forbid.rstrip(os.sep) + os.sep)
        check(not inside, f"fastnn was imported from {path}, inside {forbid}: not the "
                          "installed wheel")
    ext = [os.path.basename(e) for pattern in ("_cfastnn*", "_fastcall*")
           for e in glob.glob(os.path.join(os.path.dirname(path), pattern))]
    print(f"C extensions: {ext}")
    return fastnn


def check_backends(fastnn, args):
    info = fastnn.backend_info()
    print("backend_info:", json.dumps(info))
    if args.expect_backends:
        expected = [b.strip() for b in args.expect_backends.split(",") if b.strip()]
    else:
        expected = ["c"] + (["numba"] if importlib.util.find_spec("numba") else []) + ["numpy"]
    check(info["available"] == expected,
          f"available backends {info['available']} != expected {expected}; "
          f"errors: {info['errors']}")
    check(info["active"] == "c", f"active backend is {info['active']!r}, not 'c'")
    libs = _mapped_openmp_libs()
    if libs is not None:
        print(f"OpenMP runtime(s) mapped: {libs}")
        if args.expect_bundled_openmp:
            pkg_parent = os.path.dirname(os.path.dirname(os.path.realpath(fastnn.__file__)))
            bundled = [p for p in libs if os.path.realpath(p).startswith(
                os.path.join(pkg_parent, "fastnn.libs") + os.sep)]
            check(bundled, f"no OpenMP runtime loaded from the wheel's fastnn.libs/: {libs}")
    return info


def check_conv(fastnn, info):
    import numpy as np
    from fastnn import ops
    from fastnn.backends import c_backend

    rng = np.random.default_rng(0)
    cases = []
    for dtype, rtol, atol in ((np.float32, 1e-4, 1e-4), (np.float64, 1e-10, 1e-11)):
        for layout in ("NHWC", "NCHW"):
            x = rng.uniform(-1, 1, (4, 13, 11, 5)).astype(dtype)
            w = rng.uniform(-1, 1, (3, 3, 5, 7)).astype(dtype)
            b = rng.uniform(-1, 1, (7,)).astype(dtype)
            if layout == "NCHW":
                x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
                w = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
            geo = dict(stride=(2, 1), padding="same", dilation=1, layout=layout)
            cases.append((dtype, rtol, atol, layout, x, w, b, geo))

    def run(x, w, b, geo):
        y = ops.conv2d_forward(x, w, b, activation="relu", **geo)
        dy = np.random.default_rng(1).uniform(-1, 1, y.shape).astype(x.dtype)
        return (y,) + tuple(ops.conv2d_backward(dy, x, w, **geo))

    refs = []
    with fastnn.use_backend("numpy"):
        for (_, _, _, _, x, w, b, geo) in cases:
            refs.append(run(x, w, b, geo))

    env_isa = os.environ.get("FASTNN_ISA", "").strip().lower()
    if env_isa:
        check(c_backend.isa() == env_isa, f"FASTNN_ISA={env_isa} but the C backend runs "
                                          f"{c_backend.isa()!r}")
        isas = [env_isa]
    else:
        isas = c_backend.available_isas()
        check("generic" in isas, f"no generic ISA in {isas}")
    start_isa = c_backend.isa()
    runs = [("c", i) for i in isas] + [(b, None) for b in info["available"]
                                       if b not in ("c", "numpy")]
    try:
        for backend, isa in runs:
            if isa is not None:
                c_backend.set_isa(isa)
            with fastnn.use_backend(backend):
                for case, ref in zip(cases, refs):
                    dtype, rtol, atol, layout, x, w, b, geo = case
                    got = run(x, w, b, geo)
                    for name, g_, r_ in zip(("y", "dx", "dw", "db"), got, ref):
                        scale = max(1.0, float(np.max(np.abs(r_))))
                        err = float(np.max(np.abs(g_ - r_)))
                        check(g_.shape == r_.shape and g_.dtype == r_.dtype and
                              np.allclose(g_, r_, rtol=rtol, atol=atol * scale),
                              f"conv2d {name} on {backend}/{isa} {np.dtype(dtype).name} "
                              f"{layout}: max |diff| {err:.3g} vs the numpy reference")
            print(f"conv2d forward+backward on {backend}" + (f" (isa {isa})" if isa else "")
                  + f": matches the numpy reference ({len(cases)} cases: f32/f64, NHWC/NCHW)")
    finally:
        c_backend.set_isa(start_isa)


def check_fit(fastnn):
    import numpy as np
    from fastnn.datasets import fashion_mnist
    from fastnn.layers import Conv2D, Dense, Flatten, MaxPooling2D
    from fastnn.models import Sequential

    fastnn.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data(sample=True)
    x_train = (x_train.astype("float32") / 255.0)[..., np.newaxis]
    x_test = (x_test.astype("float32") / 255.0)[..., np.newaxis]
    model = Sequential([
        Conv2D(16, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        MaxPooling2D((2, 2)),
        Flatten(),
        Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    hist = model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    secs = time.perf_counter() - t0
    loss, acc = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    train_loss = hist.history["loss"][-1]
    print(f"1-epoch fit on the shipped sample ({len(x_train)} images): train loss "
          f"{train_loss:.4f}, test loss {loss:.4f}, test accuracy {acc:.4f}, {secs:.2f} s")
    check(np.isfinite(train_loss) and np.isfinite(loss), "non-finite loss")
    check(acc > 0.5, f"test accuracy {acc:.4f} after one epoch: training does not work")


# ----------------------------------------------------------------------------- portability
def check_portable(build_dir):
    """ISA hygiene of a build tree (see the module docstring)."""
    problems = []
    ccs = glob.glob(os.path.join(build_dir, "**", "compile_commands.json"), recursive=True)
    check(ccs, f"no compile_commands.json under {build_dir} "
               "(configure with CMAKE_EXPORT_COMPILE_COMMANDS=ON)")
    entries = json.load(open(ccs[0], encoding="utf-8"))
    kernel_flag = re.compile(r"(^|\s)(-m(avx\S*|fma|f16c|bmi\S*|sse4\S*)|/arch:\S+)")
    # the ISA kernel files (csrc/kernels/*_avx2.c, *_avx512.c): only they get ISA flags, and
    # only functions compiled from them (static helpers included) may hold AVX code
    isa_source = re.compile(r"_avx(2|512)\.c$")
    for e in entries:
        cmd = e.get("command") or " ".join(e.get("arguments", []))
        src = os.path.basename(e["file"])
        if re.search(r"(^|\s)-m(arch|tune|cpu)=", cmd):
            problems.append(f"{src}: -march/-mtune/-mcpu in {cmd}")
        flags = [m.group(2) for m in kernel_flag.finditer(cmd)]
        if flags and not isa_source.search(src):
            problems.append(f"{src}: ISA flags {flags} outside the ISA kernel files")
        print(f"  {src}: ISA flags {flags or 'none'}")
    sos = [p for p in glob.glob(os.path.join(build_dir, "**", "_cfastnn*"), recursive=True)
           if p.endswith((".so", ".pyd", ".dylib"))]
    check(sos, f"no built extension under {build_dir}")
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", sos[0]], check=True,
                         capture_output=True, text=True).stdout
    func, by_func = None, {}
    for line in dis.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            func = m.group(1)
            continue
        parts = line.split("\t")
        if func and len(parts) >= 2:
            mnem = parts[1].split()[0] if parts[1].split() else ""
            if mnem.startswith("v") or "%ymm" in line or "%zmm" in line:
                by_func.setdefault(func, set()).add(mnem)
    allowed, portable = set(), set()
    objs = [o for o in glob.glob(os.path.join(build_dir, "**", "*.c.o*"), recursive=True)
            if o.endswith((".c.o", ".c.obj"))]
    for obj in objs:
        out = subprocess.run(["objdump", "-d", obj], check=True, capture_output=True,
                             text=True).stdout
        names = set(re.findall(r"^[0-9a-f]+ <(.+)>:$", out, flags=re.M))
        (allowed if re.search(r"_avx(2|512)\.c\.o(bj)?$", obj) else portable).update(names)
    check(allowed, f"no ISA kernel objects (*_avx2.c.o) under {build_dir}")
    for name in sorted(allowed & portable):  # one name, two objects: cannot tell them apart
        problems.append(f"function {name} is defined both in an ISA kernel file and outside")
    for f_, mn in sorted(by_func.items()):
        ok = f_ in allowed
        print(f"  AVX instructions in {f_}: {len(mn)} kinds ({'ok' if ok else 'NOT ALLOWED'})")
        if not ok:
            problems.append(f"{f_} uses AVX instructions {sorted(mn)[:8]}")
    check(not problems, "not portable:\n  " + "\n  ".join(problems))
    print(f"portable: no -march/-mtune; AVX only in {sorted(by_func)} of {sos[0]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--expect-backends", default="",
                   help="comma-separated, in order (default: c[,numba],numpy)")
    p.add_argument("--forbid-path", default="",
                   help="fail if fastnn is imported from under this directory (the checkout)")
    p.add_argument("--require-no-compiler", action="store_true",
                   help="fail if a C compiler is on PATH or any process is started")
    p.add_argument("--expect-bundled-openmp", action="store_true",
                   help="fail unless the OpenMP runtime is loaded from fastnn.libs/ "
                        "(an auditwheel-repaired wheel)")
    p.add_argument("--no-fit", action="store_true", help="skip the 1-epoch fit")
    p.add_argument("--check-portable", metavar="BUILD_DIR",
                   help="only inspect a build tree's flags and machine code")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        if args.check_portable:
            check_portable(args.check_portable)
            return 0
        sys.addaudithook(_audit)
        cc = _compilers_on_path()
        print(f"python {sys.version.split()[0]} at {sys.executable}; compilers on PATH: "
              f"{cc or 'none'}")
        if args.require_no_compiler:
            check(not cc, f"compilers on PATH: {cc}")
        fastnn = check_import(args)
        info = check_backends(fastnn, args)
        check_conv(fastnn, info)
        if not args.no_fit:
            check_fit(fastnn)
        if SPAWNS:
            print(f"processes started: {SPAWNS}")
            check(not args.require_no_compiler, "processes were started (see above)")
        else:
            print("no process was started (nothing was compiled)")
    except Failed as exc:
        print(f"SMOKE TEST FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"smoke test passed in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
