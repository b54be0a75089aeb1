#!/usr/bin/env bash
# Run the C backend's tests on the AVX-512 kernels on a CPU that has no AVX-512: a test
# build (cmake -DFASTNN_EMULATE_AVX512=ON) compiles kernels/*_avx512.c for AVX2 + FMA with
# SIMDe's portable _mm512_* intrinsics (kernels/avx512_emulated.h) and reports AVX-512, so
# every test runs them (the default ISA) and test_c_isa.py forces each ISA in turn.
#     tools/avx512_emulated.sh                 # all C-backend tests, about 3 minutes
#     tools/avx512_emulated.sh -k conv         # extra pytest arguments pass through
#     SANITIZE=1 tools/avx512_emulated.sh      # with AddressSanitizer + UBSan (about 30 min
#                                              # with the emulated files at -O3, 2026-12-05)
# With SANITIZE=1 (as tools/sanitize.sh) an AVX-512 load past the end of a buffer is
# reported: the emulation reads every lane an unmasked load reads, where the instruction
# would read past the end silently (and fault only across a page boundary).
# Needs SIMDe's headers (Debian: apt-get install libsimde-dev). Times mean nothing here.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/test_build.sh
if [ "${SANITIZE:-0}" = 1 ]; then
    fnn_test_venv -Ccmake.define.FASTNN_EMULATE_AVX512=ON -Ccmake.define.FASTNN_SANITIZE=ON \
        -Cbuild-dir=build/avx512_emulated_sanitize
    fnn_sanitizer_env
else
    fnn_test_venv -Ccmake.define.FASTNN_EMULATE_AVX512=ON -Cbuild-dir=build/avx512_emulated
fi
export FASTNN_REQUIRE_BACKENDS="c"
# test_c_isa.py checks that this is the emulated build (an ordinary one would test AVX2 again)
export FASTNN_EXPECT_EMULATED_AVX512=1
# The Numba backend is not C code: skip its tests here (they run in the normal suite), and
# the backend-parametrized tests' runs with the NumPy backend active (tests/conftest.py).
export FASTNN_TEST_BACKENDS="c"
pytest -q -p no:cacheprovider -k "not numba" "$@"
