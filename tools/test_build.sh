# tools/test_build.sh: sourced (not run) by tools/sanitize.sh and tools/avx512_emulated.sh,
# the test runs of special builds of the C kernels.

# fnn_test_venv PIP_ARGS...: a fresh virtual environment ($VENV, or a temporary one),
# activated, with the checkout installed with its test extra; PIP_ARGS pass the build's
# CMake definitions (-Ccmake.define.X=ON) and its own build directory (-Cbuild-dir=...).
fnn_test_venv() {
    local venv
    venv="${VENV:-$(mktemp -d)/venv}"
    python3 -m venv "$venv"
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
    python -m pip install -q --upgrade pip
    python -m pip install -q ".[test]" "$@"
}

# fnn_sanitizer_env: the environment a sanitized build (FASTNN_SANITIZE=ON) runs in: the
# runtimes preloaded into Python, and any ASan/UBSan report aborting with a non-zero exit.
fnn_sanitizer_env() {
    LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
    export LD_PRELOAD
    # allocator_may_return_null: a request beyond memory (NumPy asked for a corrupt model
    # file's 10**12-unit layer) returns NULL, and NumPy raises MemoryError, as without ASan
    export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
}
