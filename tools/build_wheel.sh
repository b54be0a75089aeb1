#!/usr/bin/env bash
# Build a portable Linux wheel of fastnn, repair it into a manylinux wheel (auditwheel +
# patchelf bundle the OpenMP runtime), then install it in a fresh virtual environment and
# smoke-test it (tools/wheel_smoke.py) with no compiler reachable, outside the checkout.
#
#   tools/build_wheel.sh [OUTDIR]          # repaired wheel lands in OUTDIR (./wheelhouse)
#
# Environment: PYTHON (interpreter to build for, default python3); KEEP_TMP=1 keeps the
# temporary directory (build tree, logs, venvs). Needs: a C compiler with OpenMP, objdump,
# network access to PyPI (auditwheel, patchelf, build requirements, numpy/cffi/numba).
#
# Steps:
#  1. build venv in a temp dir; `pip wheel . --no-deps` with a temp CMake build dir (the
#     checkout is not written to) and compile_commands.json exported;
#  2. portability: no -march/-mtune, ISA flags only on csrc/kernels/*_avx2.c / *_avx512.c,
#     no AVX instruction outside functions compiled from them in the built .so (wheel_smoke.py
#     --check-portable); the one wheel runs on any x86-64 and picks its ISA at run time;
#  3. `auditwheel show`, then `auditwheel repair --plat <the most compatible manylinux tag
#     auditwheel reports for this build>`: it copies libgomp into fastnn.libs/ under a
#     hashed name and points the extension's RPATH/NEEDED at it (patchelf);
#  4. fresh venv: `pip install --only-binary :all: <repaired wheel>[numba]` and the smoke
#     test, both with PATH = that venv's bin/ only (no cc, gcc, clang: a compiler cannot
#     even be found) and CC/CXX=/bin/false, from a temp cwd, no PYTHONPATH. If strace works
#     here, the smoke test runs under `strace -f -e trace=execve` and must exec nothing but
#     python itself; the smoke test's audit hook independently fails on any spawned process;
#  5. the smoke test again with FASTNN_ISA=generic (the portable kernels on this CPU).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$repo/wheelhouse}" && cd "${1:-$repo/wheelhouse}" && pwd)"
PYTHON="${PYTHON:-python3}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/fastnn-wheel.XXXXXX")"
cleanup() {
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
step() { printf '\n=== [%4ds] %s\n' "$SECONDS" "$*"; }
run_logged() {  # run_logged LOG CMD...: quiet unless it fails
  local log="$1"; shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 60 "$log"; echo "FAILED: $*" >&2; exit 1
  fi
}

step "build venv ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])'))"
"$PYTHON" -m venv "$tmp/build-venv"
bpy="$tmp/build-venv/bin/python"
run_logged "$tmp/pip-build-venv.log" "$bpy" -m pip install --upgrade pip auditwheel patchelf

step "pip wheel . (build dir $tmp/build)"
(cd "$repo" && run_logged "$tmp/build.log" "$bpy" -m pip wheel . --no-deps -w "$tmp/dist" \
  --config-settings=build-dir="$tmp/build" \
  --config-settings=cmake.define.CMAKE_EXPORT_COMPILE_COMMANDS=ON -v)
whl="$(ls "$tmp"/dist/fastnn-*.whl)"
echo "built $(basename "$whl")"
grep -E "fastnn: |OpenMP" "$tmp/build.log" | sed 's/^/  /' || true

step "portability of the build (flags and machine code)"
"$bpy" "$repo/tools/wheel_smoke.py" --check-portable "$tmp/build"

step "auditwheel show"
"$tmp/build-venv/bin/auditwheel" show "$whl" | tee "$tmp/show.txt"
# The most compatible manylinux policy this build satisfies (glibc symbol versions of the
# build machine and the libraries it links), as auditwheel itself reports it.
plat="$(grep -oE 'manylinux_[0-9]+_[0-9]+_[a-z0-9_]+' "$tmp/show.txt" | sort -t_ -k2,2n -k3,3n | head -n1)"
[ -n "$plat" ] || { echo "auditwheel reports no manylinux policy for this build" >&2; exit 1; }

step "auditwheel repair --plat $plat"
# patchelf (from PyPI, in the build venv) must be on PATH for auditwheel.
run_logged "$tmp/repair.log" env PATH="$tmp/build-venv/bin:$PATH" auditwheel repair --plat "$plat" \
  -w "$tmp/wheelhouse" "$whl"
repaired="$(ls "$tmp"/wheelhouse/fastnn-*.whl)"
echo "repaired: $(basename "$repaired")"
"$tmp/build-venv/bin/auditwheel" show "$repaired" | sed 's/^/  /'
"$bpy" - "$repaired" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libs = [n for n in names if n.startswith("fastnn.libs/") or "_cfastnn" in n]
print("  shared objects in the wheel:", libs)
assert any("gomp" in n for n in libs), "libgomp was not bundled"
assert any(n.startswith("fastnn/_fastcall") for n in names), "fastnn._fastcall missing"
assert any(n.startswith("fastnn/datasets/data/") for n in names), "sample data missing"
EOF

step "fresh venv, install the repaired wheel with no compiler on PATH"
"$PYTHON" -m venv "$tmp/test-venv"
tbin="$tmp/test-venv/bin"
nocc=(env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV PATH="$tbin" CC=/bin/false
      CXX=/bin/false)
for tool in cc gcc clang c99 ld; do
  if "${nocc[@]}" "$tbin/python" -c "import shutil,sys; sys.exit(shutil.which('$tool') is None)"; then
    echo "a compiler tool ($tool) is still reachable" >&2; exit 1
  fi
done
echo "PATH=$tbin: no cc, gcc, clang, c99, ld"
run_logged "$tmp/pip-test-venv.log" "${nocc[@]}" "$tbin/python" -m pip install \
  --only-binary=:all: "$repaired[numba]"
grep -E "^Successfully installed" "$tmp/pip-test-venv.log" | sed 's/^/  /'

step "smoke test (cwd $tmp/run, outside the checkout)"
mkdir -p "$tmp/run"
cp "$repo/tools/wheel_smoke.py" "$tmp/run/"
smoke=("$tbin/python" wheel_smoke.py --expect-backends c,numba,numpy --forbid-path "$repo"
       --require-no-compiler --expect-bundled-openmp)
t0=$SECONDS
if command -v strace >/dev/null && strace -f -qq -e trace=none true 2>/dev/null; then
  (cd "$tmp/run" && "${nocc[@]}" "$(command -v strace)" -f -qq -e trace=execve \
     -e signal=none -o "$tmp/execve.log" "${smoke[@]}")
  # One execve, the interpreter's: nothing else ran (no compiler, no helper process).
  execs="$(grep -c 'execve(' "$tmp/execve.log" || true)"
  echo "strace: $execs execve call(s): $(grep -o 'execve("[^"]*"' "$tmp/execve.log" | sort -u | tr '\n' ' ')"
  [ "$execs" = 1 ] || { cat "$tmp/execve.log" >&2; echo "processes were started" >&2; exit 1; }
else
  echo "(strace unavailable: relying on the smoke test's audit hook)"
  (cd "$tmp/run" && "${nocc[@]}" "${smoke[@]}")
fi
echo "smoke test: $((SECONDS - t0)) s"

step "smoke test with FASTNN_ISA=generic (portable kernels)"
(cd "$tmp/run" && "${nocc[@]}" FASTNN_ISA=generic "${smoke[@]}" --no-fit)

cp "$repaired" "$out/"
step "done: $out/$(basename "$repaired")"
