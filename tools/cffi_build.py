"""Generate the cffi (API mode) C source of fastnn._cfastnn from csrc/fastnn.h.

Run by CMake at build time: ``python tools/cffi_build.py csrc/fastnn.h out/_cfastnn.c``.
The declarations between the CDEF-BEGIN and CDEF-END markers of the header are the cdef;
compile and link flags live in CMakeLists.txt, not here.
"""
import sys

import cffi


def main(header: str, out: str) -> None:
    with open(header, encoding="utf-8") as fh:
        text = fh.read()
    try:
        cdef = text.split("/* CDEF-BEGIN */", 1)[1].split("/* CDEF-END */", 1)[0]
    except IndexError:
        raise SystemExit(f"{header}: CDEF-BEGIN / CDEF-END markers not found")
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    ffi.set_source("fastnn._cfastnn", '#include "fastnn.h"\n')
    ffi.emit_c_code(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
