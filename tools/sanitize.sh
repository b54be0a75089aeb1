#!/usr/bin/env bash
# Build fastnn's C kernels with AddressSanitizer + UndefinedBehaviorSanitizer and run the
# test suite (C backend tests) against them:
#     tools/sanitize.sh            # all C-backend tests
#     tools/sanitize.sh -k conv    # extra pytest arguments pass through
# Any ASan/UBSan report aborts the run with a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-$(mktemp -d)/venv}"
python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q ".[test]" -Ccmake.define.FASTNN_SANITIZE=ON \
    -Cbuild-dir=build/sanitize
LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD
# allocator_may_return_null: a request beyond memory (NumPy asked for a corrupt model
# file's 10**12-unit layer) returns NULL, and NumPy raises MemoryError, as without ASan
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export FASTNN_REQUIRE_BACKENDS="c"
# The Numba backend is not C code: skip its tests here (they run in the normal suite).
pytest -q -p no:cacheprovider -k "not numba" "$@"
