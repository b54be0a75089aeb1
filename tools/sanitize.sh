#!/usr/bin/env bash
# Build fastnn's C kernels with AddressSanitizer + UndefinedBehaviorSanitizer and run the
# test suite (C backend tests) against them:
#     tools/sanitize.sh            # all C-backend tests
#     tools/sanitize.sh -k conv    # extra pytest arguments pass through
# Any ASan/UBSan report aborts the run with a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/test_build.sh
fnn_test_venv -Ccmake.define.FASTNN_SANITIZE=ON -Cbuild-dir=build/sanitize
fnn_sanitizer_env
export FASTNN_REQUIRE_BACKENDS="c"
# The Numba backend is not C code: skip its tests here (they run in the normal suite), and
# the backend-parametrized tests' runs with the NumPy backend active (tests/conftest.py).
export FASTNN_TEST_BACKENDS="c"
pytest -q -p no:cacheprovider -k "not numba" "$@"
