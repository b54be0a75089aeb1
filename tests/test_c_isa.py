"""Every instruction-set path of the C backend this CPU can run, forced one by one, against
the NumPy reference: GEMM (all transposes, edge tiles, alpha/beta) and convolution.

Tolerances: float64 rtol 1e-12 relative to the largest |value| of the result; float32
2e-6 * sqrt(K) relative likewise (rounding of K-term dot products in a different order).
"""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastnn
from fastnn import ops

try:
    from fastnn.backends import c_backend
    from fastnn import _fastcall
    ISAS = c_backend.available_isas()
except ImportError:  # the conftest's backend fixture reports a missing C extension
    c_backend = _fastcall = None
    ISAS = []

pytestmark = pytest.mark.skipif(c_backend is None, reason="C extension not available")


def test_emulated_avx512_only_where_expected():
    """tools/avx512_emulated.sh sets FASTNN_EXPECT_EMULATED_AVX512=1: its run must test the
    emulated AVX-512 build (an ordinary build there would test AVX2 a second time, and
    pass), with AVX-512 available and the default; every other run an ordinary build."""
    expected = os.environ.get("FASTNN_EXPECT_EMULATED_AVX512", "") == "1"
    assert c_backend.isa_emulated() is expected
    assert fastnn.backend_info().get("isa_emulated", False) is expected
    if expected:
        assert ISAS == ["generic", "avx2", "avx512", "avx512_256"]
        assert c_backend.isa() == "avx512"


def _tol(dtype, k):
    return 1e-12 if dtype == np.float64 else 2e-6 * np.sqrt(max(k, 1))


@pytest.fixture(params=ISAS)
def isa(request):
    before = c_backend.isa()
    c_backend.set_isa(request.param)
    yield request.param
    c_backend.set_isa(before)


# (A is read in place where the ISA has the kernels for it, see gemm.c's a_in_place: with
# n <= 64, with m <= MC (the last two cases: n > 64 and several K blocks) and with a short
# K and n <= 128 (200 x 100 x 40); an untransposed A through the direct-A kernel, a
# transposed one through the strided kernel, a partial last row tile packed. (301, 64, 700)
# and (151, 16, 330) add several K blocks and several MC row blocks. The last two pack A
# (with SSE transposes where A is not transposed, and a last 1-3 columns of a K block
# copied one by one: K blocks of 350 and 257). Each ISA runs every case on its own
# kernels: on AVX-512 the 12 x 32 (float) and 12 x 16 (double) packed, direct-A, strided and
# row-edge kernels, with m around multiples of 12, and their one-vector 12 x 16 and 12 x 8
# versions where n <= 16 (float) or 8 (double): (97, 8, 513) in place and (145, 10, 200)
# packed, each with a last row through the row-edge kernel. On AVX2 and AVX-512 a product
# with neither operand transposed and m <= 256, or a single micro-panel of columns, reads B
# in place too (gemm.c's in-place path, masked columns): every untransposed case with m <=
# 256, and (300, 7, 31) and, on AVX-512, (290, 29, 600) (float: one 32-wide panel, two K
# blocks); B rows over 4 KB apart stay packed: (20, 1100, 50).) (301, 130, 700) and (250,
# 97, 300), untransposed: B micro-panels over 16 KB (K blocks of 300-700), so A-outer, each
# full strip packed by its first tile (ukr_direct_pack: the AVX-512 kernels', AVX2's double
# one), the last row (301 = 25 x 12 + 1 = 50 x 6 + 1) by pack_a. (301, 130, 1300) and (97,
# 130, 1300): three or more K blocks with every ISA's KC (AVX2's float KC 640 makes all the
# others one block), the last shorter, with A packed and in place. (5003, 64, 40): A read in place in row blocks of
# about 1600 rows (gemm.c's inplace_rows: 256 KB of A), the last one ending in a partial
# strip (5003 = 6 x 833 + 5 = 12 x 416 + 11), packed at the start of the thread's buffer.
GEMM_CASES = [(1, 1, 1), (5, 3, 2), (13, 33, 17), (12, 32, 256), (25, 65, 300),
              (97, 130, 513), (300, 7, 31), (301, 64, 700), (151, 16, 330), (200, 100, 40),
              (40, 200, 700), (250, 97, 300), (301, 130, 700), (97, 8, 513), (145, 10, 200),
              (290, 29, 600), (20, 1100, 50), (301, 130, 1300), (97, 130, 1300),
              (5003, 64, 40)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", GEMM_CASES)
def test_gemm_each_isa(isa, dtype, m, n, k):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
            b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
            c0 = rng.standard_normal((m, n)).astype(dtype)
            c = c0.copy()
            with fastnn.use_backend("c"):
                ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=0.75, beta=-1.5, out=c)
            ref = 0.75 * ((a.T if ta else a).astype(np.float64) @
                          (b.T if tb else b).astype(np.float64)) - 1.5 * c0
            scale = np.abs(ref).max() + 1.0
            assert np.abs(c - ref).max() <= _tol(dtype, k) * scale, (isa, ta, tb)


@pytest.mark.skipif("avx512_256" not in ISAS, reason="needs AVX-512F and VL (or the emulated "
                    "AVX-512 build)")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avx512_256_pairs_are_the_avx2_tiles_bit_for_bit(dtype):
    """avx512_256's direct-A pair kernel (two 16-column panels in one 6 x 32 tile, float)
    sums each element as AVX2's 6 x 16 tiles do: products with A read in place by rows
    give the same bits under both ISAs. Cases (m > 256, where a row-major B is packed;
    smaller ones read B in place unless it is transposed): K as one block (the next strip
    prefetched), an odd panel count (48 columns: a pair and a single), a partial last panel
    (40, 56), rows that end in a partial strip (m not a multiple of 6), K blocks shorter
    than A's rows, under 4 KB (K 1000: 2 x 500, the next rows' segments prefetched) and
    over (K 1300: 2 x 650 of 5200-byte float rows, no prefetch); each with alpha and beta
    into a C with wider rows than n (ldc > n), alone, and with B transposed. The short-K
    strips (K 11 to 63) are AVX2's under both; K up to 10 runs the kernel holding B in
    registers (test_short_k_products_hold_b_in_registers). Doubles run AVX2's kernels
    under both ISAs up to K = 64, and the AVX-512 ISA's zmm kernels from K = 65 on
    (gemm_kernels.c, ZEN4_ZMM_MIN_NK): the same bits as that ISA there; so do floats
    with m > 256 and n, K > 64 (ZEN4_ZMM_MIN_M; the cases are (m, K, n): (400, 500, 96)
    and (257, 500, 65), but not (256, 500, 100)). A K of 500 is two blocks on the AVX-512
    kernels and one on AVX2's, so the two ISAs' bits differ there."""
    rng = np.random.default_rng(256)
    before = c_backend.isa()
    try:
        for m, k, n in ((15488 // 8, 288, 64), (397, 100, 48), (301, 70, 40), (400, 1000, 64),
                        (303, 1300, 56), (97, 100, 48), (6, 64, 32), (1000, 12, 64),
                        (400, 500, 96), (257, 500, 65), (256, 500, 100)):
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            c0 = rng.standard_normal((m, n + 5)).astype(dtype)
            got = {}
            zmm = k >= 65 if dtype == np.float64 else m > 256 and n > 64 and k > 64
            twin = "avx512" if zmm else "avx2"
            if twin not in ISAS:
                continue
            for name in (twin, "avx512_256"):
                c_backend.set_isa(name)
                c = c0.copy()
                with fastnn.use_backend("c"):
                    ops.matmul(a, b, alpha=0.75, beta=-1.5, out=c[:, :n])
                    plain = ops.matmul(a, b)
                    bt = ops.matmul(a, np.ascontiguousarray(b.T), trans_b=True)
                got[name] = (c, plain, bt)
            for x, y in zip(got[twin], got["avx512_256"]):
                np.testing.assert_array_equal(y, x, err_msg=str((m, k, n, twin)))
            ref = a.astype(np.float64) @ b.astype(np.float64)
            scale = np.abs(ref).max() + 1.0
            assert np.abs(got["avx512_256"][1] - ref).max() <= _tol(dtype, k) * scale
    finally:
        c_backend.set_isa(before)


BREG_ISAS = [name for name in ("avx512", "avx512_256") if name in ISAS]


@pytest.mark.skipif(not BREG_ISAS, reason="needs AVX-512F (or the emulated AVX-512 build)")
def test_short_k_products_hold_b_in_registers():
    """Float products with K up to 10 on the AVX-512 ISAs run gemm.c's B-in-registers
    kernel (kernels/gemm_breg_avx512.c): B's panel of 16 (n <= 16) or 32 columns in
    registers, a last narrower panel masked, several panels in blocks of rows, B
    transposed packed first, the rows split between the threads. Each element sums its
    products in order with one FMA each, as the AVX2 tiles do: with beta == 0 (alpha or
    not, B transposed or not) the same bits as the avx2 ISA. With beta != 0 AVX2's edge
    tiles round beta * C before adding it, the kernel adds it in the FMA, so that case is
    checked against float64. 1 and 2 threads give the same bits; NaN in A reaches its row
    only; with beta == 0 a NaN-filled C is not read."""
    rng = np.random.default_rng(910)
    before, threads = c_backend.isa(), fastnn.get_num_threads()
    try:
        for m, k, n in ((1, 1, 1), (3, 2, 5), (7, 10, 16), (13, 9, 17), (37, 9, 32),
                        (100, 4, 33), (257, 10, 100), (1000, 9, 64), (20000, 9, 32),
                        (300, 3, 784)):
            a = rng.standard_normal((m, k)).astype(np.float32)
            b = rng.standard_normal((k, n)).astype(np.float32)
            c0 = rng.standard_normal((m, n + 3)).astype(np.float32)
            a[m // 2, k - 1] = np.nan
            ref = a.astype(np.float64) @ b.astype(np.float64)
            got = {}
            for name in ["avx2"] + BREG_ISAS:
                c_backend.set_isa(name)
                with fastnn.use_backend("c"):
                    plain = ops.matmul(a, b)
                    scaled = ops.matmul(a, b, alpha=0.75)
                    bt = ops.matmul(a, np.ascontiguousarray(b.T), trans_b=True)
                    nan_c = np.full((m, n), np.nan, np.float32)
                    ops.matmul(a, b, out=nan_c)
                    acc = c0.copy()
                    ops.matmul(a, b, alpha=0.75, beta=-1.5, out=acc[:, :n])
                    fastnn.set_num_threads(1)
                    one = ops.matmul(a, b)
                    fastnn.set_num_threads(threads)
                got[name] = (plain, scaled, bt, nan_c, one)
                np.testing.assert_array_equal(one, plain, err_msg=str((name, m, k, n)))
                np.testing.assert_array_equal(nan_c, plain, err_msg=str((name, m, k, n)))
                assert np.isnan(plain[m // 2]).all() and np.isnan(acc[m // 2, :n]).all()
                rows = np.arange(m) != m // 2
                scale = np.abs(ref[rows]).max(initial=0.0) + 1.0
                tol = _tol(np.float32, k) * scale
                assert np.abs(plain[rows] - ref[rows]).max(initial=0.0) <= tol
                want = 0.75 * ref[rows] - 1.5 * c0[rows, :n]
                assert np.abs(acc[rows, :n] - want).max(initial=0.0) <= 2 * tol
                np.testing.assert_array_equal(acc[:, n:], c0[:, n:])
            for name in BREG_ISAS:
                for x, y in zip(got["avx2"], got[name]):
                    np.testing.assert_array_equal(y, x, err_msg=str((name, m, k, n)))
    finally:
        c_backend.set_isa(before)
        fastnn.set_num_threads(threads)


@pytest.mark.skipif(not BREG_ISAS, reason="needs AVX-512F (or the emulated AVX-512 build)")
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_short_k_epilogue_in_registers(layout):
    """The 1x1 convolutions' forward with up to 10 input channels is a short-K product
    with a bias (per column NHWC, per row NCHW) and relu: the B-in-registers kernel applies
    them before its one store, with the epilogue's operations, so the same bits as the
    avx2 ISA (which applies them to each finished tile), NaN kept by relu; and the NumPy
    reference within the tolerance."""
    rng = np.random.default_rng(911)
    before = c_backend.isa()
    try:
        for c, f in ((2, 5), (5, 24), (10, 40)):
            if layout == "NHWC":
                x = rng.standard_normal((6, 7, 9, c)).astype(np.float32)
                w = rng.standard_normal((1, 1, c, f)).astype(np.float32)
                x[0, 0, 0, 0] = np.nan
            else:
                x = rng.standard_normal((6, c, 7, 9)).astype(np.float32)
                w = rng.standard_normal((f, c, 1, 1)).astype(np.float32)
                x[0, 0, 0, 0] = np.nan
            b = rng.standard_normal(f).astype(np.float32)
            b[0] = -0.0
            w[..., 0] = 0.0 if layout == "NHWC" else w[..., 0]
            got = {}
            for name in ["avx2"] + BREG_ISAS:
                c_backend.set_isa(name)
                with fastnn.use_backend("c"):
                    got[name] = [ops.conv2d_forward(x, w, b, layout=layout, activation=act)
                                 for act in (None, "relu")]
            with fastnn.use_backend("numpy"):
                ref = [ops.conv2d_forward(x, w, b, layout=layout, activation=act)
                       for act in (None, "relu")]
            for name in BREG_ISAS:
                for y, x2, r in zip(got[name], got["avx2"], ref):
                    np.testing.assert_array_equal(y, x2, err_msg=str((name, c, f)))
                    assert np.array_equal(np.signbit(y), np.signbit(x2))
                    assert np.isnan(y).sum() == np.isnan(r).sum() > 0
                    ok = ~np.isnan(r)
                    tol = _tol(np.float32, c) * (np.abs(r[ok]).max() + 1.0)
                    assert np.abs(y[ok] - r[ok]).max() <= tol
    finally:
        c_backend.set_isa(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_rows_do_not_depend_on_the_row_count(isa, dtype):
    """Each row of C is the same whether it falls in a full micro-tile or in an edge tile
    (the kernels compute a last 1 or 2 rows with a kernel of their own): the products of
    the first m rows of A, for m around multiples of 6 (AVX2) and 12 (AVX-512), are bit
    for bit rows of the product of all of A. With n = 100 the first m <= 144 rows read A in
    place and more pack it: the same sums there too."""
    rng = np.random.default_rng(17)
    for rows, n, ms in ((44, 40, (1, 2, 7, 8, 11, 12, 13, 14, 25, 26, 31, 32, 33, 37, 38, 43)),
                        (44, 10, (1, 2, 11, 12, 13, 14, 25, 26, 43)),
                        (300, 100, (1, 7, 127, 128, 144, 145, 151, 299))):
        a = rng.standard_normal((rows, 300)).astype(dtype)
        b = rng.standard_normal((300, n)).astype(dtype)
        with fastnn.use_backend("c"):
            full = ops.matmul(a, b)
            for m in ms:
                np.testing.assert_array_equal(ops.matmul(a[:m], b), full[:m], err_msg=str(m))
                np.testing.assert_array_equal(ops.matmul(np.ascontiguousarray(a[:m].T), b,
                                                         trans_a=True), full[:m],
                                              err_msg=str(m))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_gemm_short_k_strips_and_streaming_stores(isa, dtype, alpha):
    """A short K with A read in place by rows and whole column panels (gemm.c: AVX2's
    ukr_direct_strips, a call per block of strips, its own loop for alpha == 1 and a case
    of its own for 32 float columns; a C of 8 MB and half the L3 or more, aligned, written
    with non-temporal stores): the bits of the same rows computed tile by tile (a product
    of a few rows, and the first rows of a product whose last panel is partial, against
    32 and 64 columns), of a C not 32-byte aligned (no streaming), of a C
    under the streaming size (normal stores) and on 1 thread; within tolerance of float64,
    with beta too. Where half the L3 is over 64 MB, the C is 8 MB and nothing streams (the
    test's arrays would take several GB)."""
    from fastnn.backends import c_backend
    from fastnn.utils._arrays import empty_aligned
    rng = np.random.default_rng(23)
    k = 9
    stream_bytes = max(8 << 20, c_backend.l3_bytes() // 2)
    if stream_bytes > 64 << 20:
        stream_bytes = 8 << 20
    m = stream_bytes // (32 * np.dtype(dtype).itemsize) + 5   # C just over it, 32 columns
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, 65)).astype(dtype)
    b32, b64 = np.ascontiguousarray(b[:, :32]), np.ascontiguousarray(b[:, :64])
    with fastnn.use_backend("c"):
        aligned = ops.matmul(a, b32, alpha=alpha,
                             out=empty_aligned((m, 32), dtype, min_bytes=0))
        raw = np.empty(m * 32 + 3, dtype)
        start = next(i for i in range(1, 4) if raw[i:].ctypes.data % 32)
        shifted = ops.matmul(a, b32, alpha=alpha,
                             out=raw[start:start + m * 32].reshape(m, 32))
        below = ops.matmul(a[:m - 4096], b32, alpha=alpha,
                           out=empty_aligned((m - 4096, 32), dtype, min_bytes=0))
        before = fastnn.get_num_threads()
        try:
            fastnn.set_num_threads(1)
            one = ops.matmul(a, b32, alpha=alpha)
        finally:
            fastnn.set_num_threads(before)
        few = ops.matmul(a[:30], b32, alpha=alpha)
        wide = ops.matmul(a[:3000], b, alpha=alpha)          # a partial last panel: per tile
        wide64 = ops.matmul(a[:3000], b64, alpha=alpha)      # strips, 64 columns
        c0 = rng.standard_normal((3000, 32)).astype(dtype)
        beta = ops.matmul(a[:3000], b32, alpha=alpha, beta=-2.0, out=c0.copy())
    for got in (shifted, one):
        np.testing.assert_array_equal(got, aligned)
    np.testing.assert_array_equal(below, aligned[:m - 4096])
    np.testing.assert_array_equal(few, aligned[:30])
    np.testing.assert_array_equal(wide[:, :32], aligned[:3000])
    np.testing.assert_array_equal(wide64, wide[:, :64])
    ref = alpha * (a.astype(np.float64) @ b32.astype(np.float64))
    assert np.abs(aligned - ref).max() <= _tol(dtype, k) * (np.abs(ref).max() + 1.0)
    ref_b = ref[:3000] - 2.0 * c0
    assert np.abs(beta - ref_b).max() <= _tol(dtype, k) * (np.abs(ref_b).max() + 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", [(8, 2, 64), (9, 1, 64), (17, 3, 100), (64, 10, 128),
                                   (33, 4, 257), (130, 9, 70), (7, 10, 95), (4100, 10, 128),
                                   (6, 7, 64), (11, 5, 80), (13, 6, 130)])
def test_gemm_dot_path_each_isa(isa, dtype, m, n, k):
    """The dot-product path (AVX2 and AVX-512, few columns and K >= 64, gemm.c's use_dot):
    rows of A in blocks of 8 (passes of 8 or 4) and a last 1-7, columns in fours (AVX-512;
    a last one of three) and then pairs (an odd last one), K with and without a tail of lanes, alpha and beta (0 and not), every
    transpose, A's rows aligned (read in place) and not (copied), and 4100 rows on 2
    threads: within tolerance of the float64 product, and the same bits whatever the
    transposes, A's alignment and the thread count (lanes go by p, never by address). On
    the generic ISA the same checks pass on the reference kernel, which sums in the order
    of p."""
    rng = np.random.default_rng(m * 7 + n * 5 + k)
    a0 = rng.standard_normal((m, k)).astype(dtype)
    b0 = rng.standard_normal((k, n)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    ref = a0.astype(np.float64) @ b0.astype(np.float64)
    # A one element past a 64-byte boundary (and K not a multiple of the lanes: rows
    # misaligned too): the copy path; np.empty's own alignment varies
    buf = np.empty(m * k + 64, dtype)
    off = (-buf.ctypes.data // buf.itemsize) % (64 // buf.itemsize) + 1
    a_odd = buf[off:off + m * k].reshape(m, k)
    a_odd[...] = a0
    assert a_odd.ctypes.data % 64 != 0
    first = None
    for threads in (1, 2):
        before = fastnn.get_num_threads()
        fastnn.set_num_threads(threads)
        try:
            with fastnn.use_backend("c"):
                for ta in (False, True):
                    for tb in (False, True):
                        for a_in in (a0, a_odd):
                            a = np.ascontiguousarray(a_in.T) if ta else a_in
                            b = np.ascontiguousarray(b0.T) if tb else b0
                            for alpha, beta in ((1.0, 0.0), (0.75, -1.5)):
                                c = c0.copy()
                                ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=alpha,
                                           beta=beta, out=c)
                                want = alpha * ref + beta * c0
                                scale = np.abs(want).max() + 1.0
                                assert np.abs(c - want).max() <= _tol(dtype, k) * scale
                                if alpha == 1.0:
                                    if first is None:
                                        first = c
                                    np.testing.assert_array_equal(
                                        c, first, err_msg=str((threads, ta, tb)))
        finally:
            fastnn.set_num_threads(before)
    # A at every offset from a 64-byte boundary (K a multiple of 16: every row at the same
    # offset; read in place only when aligned, else copied): the same bits
    if k % 16 == 0:
        for off in range(1, 64 // a0.itemsize):
            buf = np.empty(m * k + 64, dtype)
            at = (-buf.ctypes.data // buf.itemsize) % (64 // buf.itemsize) + off
            a_off = buf[at:at + m * k].reshape(m, k)
            a_off[...] = a0
            assert a_off.ctypes.data % 64 == off * a0.itemsize
            with fastnn.use_backend("c"):
                np.testing.assert_array_equal(ops.matmul(a_off, b0), first, err_msg=str(off))
    # NaN in one element of A: its row of C only
    a = a0.copy()
    a[m // 2, k - 1] = np.nan
    with fastnn.use_backend("c"):
        c = ops.matmul(a, b0)
    assert np.isnan(c[m // 2]).all()
    assert np.isfinite(np.delete(c, m // 2, axis=0)).all()


def test_gemm_beta_zero_ignores_nan(isa):
    a = np.ones((20, 40), np.float32)
    b = np.ones((40, 50), np.float32)
    out = np.full((20, 50), np.nan, np.float32)
    with fastnn.use_backend("c"):
        ops.matmul(a, b, out=out)
    assert np.all(out == 40.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_lwork(dtype, restore_threads, monkeypatch):
    """fnn_gemm_lwork computes only with a workspace of fnn_gemm_ws's length (else returns
    that length and leaves C alone), and the backend's kept workspace grows when a larger
    product or more threads need more."""
    sfx = "f32" if dtype == np.float32 else "f64"
    lwork_fn = getattr(c_backend.lib, f"fnn_gemm_lwork_{sfx}")
    ws_fn = getattr(c_backend.lib, f"fnn_gemm_ws_{sfx}")
    rng = np.random.default_rng(7)
    ptr = lambda x: c_backend.ffi.from_buffer(c_backend._ARRAY[np.dtype(dtype)], x)
    for m, n, k in [(128, 10, 128), (300, 200, 100), (9, 32, 86528 // 64)]:
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        need = ws_fn(m, n, k)
        assert need > 0
        ws = np.full(need, np.nan, dtype)
        c = np.full((m, n), 7.0, dtype)
        assert lwork_fn(0, 0, m, n, k, 1.0, ptr(a), k, ptr(b), n, 0.0, ptr(ws), need - 1,
                        ptr(c), n) == need
        assert (c == 7.0).all() and np.isnan(ws).all()
        assert lwork_fn(0, 0, m, n, k, 1.0, ptr(a), k, ptr(b), n, 0.0, ptr(ws), need,
                        ptr(c), n) == 0
        np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=_tol(dtype, k),
                                   atol=_tol(dtype, k) * np.abs(c).max())
    # the backend's own kept workspace, not the guard fixture's exact ones
    monkeypatch.undo()
    monkeypatch.setattr(c_backend, "_local", c_backend._Workspaces())
    fastnn.set_num_threads(1)
    a = rng.standard_normal((400, 300)).astype(dtype)
    b = rng.standard_normal((300, 500)).astype(dtype)
    want = a.astype(np.float64) @ b
    tol = dict(rtol=_tol(dtype, 300), atol=_tol(dtype, 300) * 400)
    with fastnn.use_backend("c"):
        # a general call (a strided view: copied) on the cffi path and its workspace
        ops.matmul(a[:40, :30], b[:30, :50].copy())
        small = c_backend._local.ws[np.dtype(dtype)][0].size
        fastnn.set_num_threads(2)
        np.testing.assert_allclose(ops.matmul(a[:, :], b, alpha=1), want, **tol)
        assert c_backend._local.ws[np.dtype(dtype)][0].size >= ws_fn(400, 500, 300) > small
        # the plain calls' path (fastnn._fastcall) and its own workspace, in a new thread
        sizes = []

        def run():
            fastnn.set_num_threads(1)
            sizes.append(_fastcall.workspace_nbytes())
            ops.matmul(a[:40].copy(), b[:, :50].copy())
            sizes.append(_fastcall.workspace_nbytes())
            fastnn.set_num_threads(2)
            np.testing.assert_allclose(ops.matmul(a, b), want, **tol)
            sizes.append(_fastcall.workspace_nbytes())

        t = threading.Thread(target=run)
        t.start()
        t.join()
        item = np.dtype(dtype).itemsize
        assert sizes[0] == 0 and 0 < sizes[1] < sizes[2]
        assert sizes[2] >= ws_fn(400, 500, 300) * item


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_each_isa(isa, layout, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 11, 9, 3)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 7)).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    if layout == "NCHW":
        x, w = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    kw = dict(stride=(2, 1), padding="same", dilation=(1, 2), layout=layout)
    with fastnn.use_backend("numpy"):
        y_ref = ops.conv2d_forward(x, w, b, activation="relu", **kw)
        dy = rng.standard_normal(y_ref.shape).astype(dtype)
        grads_ref = ops.conv2d_backward(dy, x, w, **kw)
    with fastnn.use_backend("c"):
        y = ops.conv2d_forward(x, w, b, activation="relu", **kw)
        grads = ops.conv2d_backward(dy, x, w, **kw)
    k = 3 * 2 * 3
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=_tol(dtype, k) * (np.abs(y_ref).max() + 1))
    for g, r in zip(grads, grads_ref):
        np.testing.assert_allclose(g, r, rtol=0,
                                   atol=_tol(dtype, 5 * 11 * 9) * (np.abs(r).max() + 1))


# (x shape NHWC, w shape, stride, padding, dilation): the implicit-im2col forward (NHWC on
# ISAs with a gather kernel) across partial row tiles and filter panels (f = 7, 33, 70),
# padding (a zero-padded copy), strides, dilation, one input channel, a patch longer than
# the GEMM's K block (3*3*64 = 576) and the longest it takes (2*2*512 = 2048) and beyond
# (2*2*513: im2col + GEMM).
IMPLICIT_CASES = [((3, 11, 9, 3), (3, 2, 3, 7), 1, "valid", 1),
                  ((2, 10, 10, 4), (3, 3, 4, 70), 2, "same", 1),
                  ((2, 12, 12, 5), (3, 3, 5, 20), (1, 2), "same", 2),
                  ((4, 13, 13, 1), (3, 3, 1, 32), 1, "valid", 1),
                  ((2, 9, 9, 64), (3, 3, 64, 33), 1, 1, 1),
                  ((1, 4, 4, 512), (2, 2, 512, 17), 1, "valid", 1),
                  ((1, 4, 4, 513), (2, 2, 513, 17), 1, "valid", 1),
                  # one channel, few filters, wide rows: the direct NCHW row kernels
                  # (conv.c's use_c1_direct) on AVX2 and AVX-512, chunked too
                  ((3, 20, 18, 1), (5, 5, 1, 6), 1, "same", 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation", IMPLICIT_CASES)
def test_conv_forward_nhwc_each_isa(isa, dtype, xs, ws, stride, padding, dilation):
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[-1]).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    with fastnn.use_backend("numpy"):
        ref = ops.conv2d_forward(x, w, b, activation="relu", **kw)
    k = ws[0] * ws[1] * ws[2]
    with fastnn.use_backend("c"):
        y = ops.conv2d_forward(x, w, b, activation="relu", **kw)
        np.testing.assert_allclose(y, ref, rtol=0, atol=_tol(dtype, k) * (np.abs(ref).max() + 1))
        # chunked (one image at a time: the padded copy per chunk) gives the same bits
        before = ops.get_workspace_limit()
        ops.set_workspace_limit(1)
        try:
            y1 = ops.conv2d_forward(x, w, b, activation="relu", **kw)
        finally:
            ops.set_workspace_limit(before)
        np.testing.assert_array_equal(y1, y)


def test_isa_env_and_errors():
    assert c_backend.isa() in c_backend.ISAS
    with pytest.raises(ValueError, match="isa"):
        c_backend.set_isa("sse9")
    for name in c_backend.ISAS:  # known but not on this CPU: refused, nothing changed
        if name not in ISAS:
            before = c_backend.isa()
            with pytest.raises(ValueError, match="not supported by this CPU"):
                c_backend.set_isa(name)
            assert c_backend.isa() == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool,stride,padding", [(2, None, 0), (3, 2, "same"), ((2, 3), 1, 1)])
def test_maxpool_each_isa(isa, dtype, pool, stride, padding):
    """The generic ISA runs the plain (branching) max-pooling loop, the others the
    branch-free channel-block loop (2x2 windows with stride 2: a loop over each window's
    four elements, SSE2 lanes of channels and a scalar tail): all must agree exactly with
    the reference, including ties (integer-valued data has many), NaN (inside a window, as
    a window's first element, a whole NaN window) and channel counts around the block
    size and the lane count."""
    rng = np.random.default_rng(7)
    for c in (1, 5, 64, 70):
        x = rng.integers(-3, 4, size=(2, 7, 9, c)).astype(dtype)
        x[0, 1, 2, 0] = np.nan
        x[0, 0, 0, c - 1] = np.nan
        x[1, 2:4, 2:4, c // 2] = np.nan
        with fastnn.use_backend("numpy"):
            y_ref, a_ref = ops.maxpool2d_forward(x, pool, stride=stride, padding=padding)
        with fastnn.use_backend("c"):
            y, a = ops.maxpool2d_forward(x, pool, stride=stride, padding=padding)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(a, a_ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,padding,dilation",
                         [(3, 1, 0, 1), (3, 2, "same", 1), ((2, 3), 1, 1, 2), (1, 1, 0, 1)])
def test_col2im_each_isa(isa, dtype, kernel, stride, padding, dilation):
    """NHWC col2im: the generic ISA runs the gather (the reference), the others the
    scatter with contiguous kernel rows; both against the NumPy reference."""
    rng = np.random.default_rng(11)
    for c in (1, 3, 40):
        shape = (3, 7, 9, c)
        cols = ops.im2col(np.zeros(shape, dtype), kernel, stride=stride, padding=padding,
                          dilation=dilation)
        cols = rng.standard_normal(cols.shape).astype(dtype)
        with fastnn.use_backend("numpy"):
            ref = ops.col2im(cols, shape, kernel, stride=stride, padding=padding,
                             dilation=dilation)
        with fastnn.use_backend("c"):
            got = ops.col2im(cols, shape, kernel, stride=stride, padding=padding,
                             dilation=dilation)
        k = np.prod(np.broadcast_to(kernel, 2))
        assert np.abs(got - ref).max() <= _tol(dtype, k) * (np.abs(ref).max() + 1.0)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("shape,filters", [((2, 9, 11, 3), 5), ((3, 8, 8, 16), 40),
                                           ((1, 3, 3, 1024), 7)])   # the last: K-split GEMM
def test_fused_epilogue_changes_no_bit(isa, layout, shape, filters):
    """conv2d_forward applies bias + relu inside the GEMM's tiles; the result must be
    bitwise the unfused convolution followed by bias_act (NaN and -0.0 included)."""
    rng = np.random.default_rng(len(shape) + filters)
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[3]
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        w = rng.standard_normal((filters, c, 3, 3)).astype(np.float32)
    else:
        w = rng.standard_normal((3, 3, c, filters)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    b[0] = np.nan
    axis = -1 if layout == "NHWC" else 1
    with fastnn.use_backend("c"):
        for act in ("relu", None):
            fused = ops.conv2d_forward(x, w, b, layout=layout, activation=act)
            plain = ops.bias_act(ops.conv2d_forward(x, w, layout=layout), b, act,
                                 channel_axis=axis)
            np.testing.assert_array_equal(fused.view(np.int32), plain.view(np.int32))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_epilogue_a_outer_order(isa, layout, dtype):
    """A 1x1 convolution is one GEMM with the epilogue fused: 200 x 100 x 300 (NHWC, A
    packed) and 100 x 100 x 300 per image (NCHW, A in place). On AVX-512 its B micro-panels
    (300 x 32 floats, 300 x 16 doubles: over 32 KB) run A micro-panel by A micro-panel
    (gemm.c's A-outer order), the epilogue strip by strip, the last strip included: bitwise
    the unfused product followed by bias_act."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 10, 10, 300)).astype(dtype)
    w = rng.standard_normal((1, 1, 300, 100)).astype(dtype)
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        w = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    b = rng.standard_normal(100).astype(dtype)
    b[-1] = np.nan
    axis = -1 if layout == "NHWC" else 1
    view = np.int32 if dtype == np.float32 else np.int64
    with fastnn.use_backend("c"):
        for act in ("relu", None):
            fused = ops.conv2d_forward(x, w, b, layout=layout, activation=act)
            plain = ops.bias_act(ops.conv2d_forward(x, w, layout=layout), b, act,
                                 channel_axis=axis)
            np.testing.assert_array_equal(fused.view(view), plain.view(view))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,filters", [((2, 10, 10, 40), 20), ((3, 11, 11, 40), 20),
                                           ((3, 11, 11, 40), 5)])
def test_fused_epilogue_in_place(isa, dtype, shape, filters):
    """A 1x1 NHWC convolution with few filters is one product whose B (the weights, 20 or 5
    columns) fits one micro-panel: on AVX-512 it runs gemm.c's in-place path (200 rows as a
    short A, 363 as one panel), the epilogue one tile behind the kernel and on the last
    tile after the loop: bitwise the unfused product followed by bias_act."""
    rng = np.random.default_rng(filters)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((1, 1, shape[3], filters)).astype(dtype)
    b = rng.standard_normal(filters).astype(dtype)
    b[-1] = np.nan
    view = np.int32 if dtype == np.float32 else np.int64
    with fastnn.use_backend("c"):
        for act in ("relu", None):
            fused = ops.conv2d_forward(x, w, b, activation=act)
            plain = ops.bias_act(ops.conv2d_forward(x, w), b, act)
            np.testing.assert_array_equal(fused.view(view), plain.view(view))


# (n, c, h, w), filters, kernel, stride, padding, dilation. NCHW convolutions take the
# batched path (one GEMM per block of images, transposed columns) on every ISA but generic,
# which runs the per-image reference; 1x1 kernels run per image everywhere. Blocks are
# sized for L2 but hold at least 512 output pixels: small images make one block, 28x28
# ones with several channels a block per image or two (threads over blocks, dw summed
# per group of blocks). On AVX2 and up, stride 1 along w with rows of 16 pixels or more
# take the direct path (conv.c: the forward for patches up to 32, dw and db up to 160):
# the last seven cases (and the first two) cover its masked row ends, filter counts that
# are not multiples of its blocks (forward and dx 4 on AVX2, 5 on AVX-512; dw 3 and 5;
# db 4), padding, dilation and row strides;
# without padding dx is direct too (patches up to 32 in float32, 160 in float64), its
# blocks of 4 (AVX2) or 5 (AVX-512) patch elements adding into rows that may overlap
# (kernels of fewer rows).
# On AVX-512 rows of at least 24 double or 48 float pixels run the AVX-512 row kernels
# (conv.c's wide_rows): 28x28 images with 5x5 filters in float64, the last two in both.
NCHW_CONV_CASES = [
    ((1, 1, 28, 28), 30, 5, 1, 0, 1),
    ((5, 3, 28, 28), 30, 5, 1, 0, 1),         # several blocks and dw groups
    ((5, 2, 30, 29), 17, 3, 2, "same", 2),    # several blocks, stride 2, dilation 2
    ((5, 1, 12, 10), 30, 3, 1, 0, 1),
    ((5, 3, 11, 9), 1, 3, 2, "same", 1),
    ((5, 17, 8, 10), 30, (3, 2), 1, "same", 2),
    ((1, 3, 9, 12), 30, (2, 3), (2, 1), 1, (2, 1)),
    ((5, 17, 7, 6), 30, 1, 1, 0, 1),          # 1x1: per image
    ((5, 3, 7, 6), 1, 1, 2, 0, 1),            # 1x1 with stride: lowered
    ((3, 1, 20, 37), 7, 3, (2, 1), 1, (1, 2)),  # direct: 35-pixel rows, stride 2 along h
    ((2, 3, 9, 21), 5, (2, 3), 1, (1, 2), 1),   # direct: 23-pixel rows, patch 18
    ((4, 6, 17, 17), 13, 5, 1, 2, 1),           # direct dw only (patch 150): 17-pixel rows
    ((2, 1, 6, 40), 2, (1, 8), 1, 0, 1),        # direct: one-row kernel, 33-pixel rows
    ((2, 2, 23, 30), 5, 3, (2, 1), 0, (2, 1)),  # direct dx too: stride 2 along h, 3 rows
    ((2, 2, 9, 60), 6, 3, 1, 1, 1),             # 60-pixel rows: AVX-512 rows in float too
    ((2, 2, 8, 53), 5, 3, 1, 0, 1),             # 51-pixel rows, direct dx: masked 3 lanes
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,filters,kernel,stride,padding,dilation", NCHW_CONV_CASES)
def test_conv_nchw_each_isa(isa, dtype, shape, filters, kernel, stride, padding, dilation):
    """NCHW conv2d forward (with bias + relu and without) and backward (dx, dw, db; and
    without dx) against the NumPy reference."""
    rng = np.random.default_rng(shape[0] * 100 + shape[1] + filters)
    kh, kw = np.broadcast_to(kernel, 2)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((filters, shape[1], kh, kw)).astype(dtype)
    b = rng.standard_normal(filters).astype(dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, layout="NCHW")
    with fastnn.use_backend("numpy"):
        y_ref = ops.conv2d_forward(x, w, b, activation="relu", **kwargs)
        y0_ref = ops.conv2d_forward(x, w, **kwargs)
        dy = rng.standard_normal(y_ref.shape).astype(dtype)
        grads_ref = ops.conv2d_backward(dy, x, w, **kwargs)
    with fastnn.use_backend("c"):
        y = ops.conv2d_forward(x, w, b, activation="relu", **kwargs)
        y0 = ops.conv2d_forward(x, w, **kwargs)
        grads = ops.conv2d_backward(dy, x, w, **kwargs)
        nodx = ops.conv2d_backward(dy, x, w, need_dx=False, **kwargs)
    patch = shape[1] * kh * kw
    for got, ref in ((y, y_ref), (y0, y0_ref)):
        assert np.abs(got - ref).max() <= _tol(dtype, patch) * (np.abs(ref).max() + 1), isa
    k = max(shape[0] * y_ref.shape[2] * y_ref.shape[3], filters * kh * kw)
    for got, ref in zip(grads, grads_ref):
        assert np.abs(got - ref).max() <= _tol(dtype, k) * (np.abs(ref).max() + 1), isa
    assert nodx[0] is None
    np.testing.assert_array_equal(nodx[1], grads[1])
    np.testing.assert_array_equal(nodx[2], grads[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,kernel", [((5, 2, 10, 9), 3), ((7, 1, 28, 28), 5)])
@pytest.mark.parametrize("padding", ["same", 0])   # 28x28 without: the direct dx too
def test_conv_nchw_chunks_each_isa(isa, dtype, shape, kernel, padding):
    """A workspace limit smaller than the batch's columns: chunks of 2 or 3 images (one
    block each, or a block per image whose dw partials are summed), dw accumulated over
    the chunks; the NumPy reference's numbers."""
    rng = np.random.default_rng(3)
    n, c, h, w_ = shape
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((30, c, kernel, kernel)).astype(dtype)
    b = rng.standard_normal(30).astype(dtype)
    kwargs = dict(padding=padding, layout="NCHW")
    with fastnn.use_backend("numpy"):
        y_ref = ops.conv2d_forward(x, w, b, activation="relu", **kwargs)
        dy = rng.standard_normal(y_ref.shape).astype(dtype)
        grads_ref = ops.conv2d_backward(dy, x, w, **kwargs)
    patch = c * kernel * kernel
    per_image = h * w_ * patch * np.dtype(dtype).itemsize * 2          # backward: 2 buffers
    limit = ops.get_workspace_limit()
    ops.set_workspace_limit((2 if n == 5 else 3) * per_image)
    try:
        with fastnn.use_backend("c"):
            y = ops.conv2d_forward(x, w, b, activation="relu", **kwargs)
            grads = ops.conv2d_backward(dy, x, w, **kwargs)
    finally:
        ops.set_workspace_limit(limit)
    assert np.abs(y - y_ref).max() <= _tol(dtype, patch) * (np.abs(y_ref).max() + 1)
    for got, ref in zip(grads, grads_ref):
        assert np.abs(got - ref).max() <= _tol(dtype, n * h * w_) * (np.abs(ref).max() + 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool,stride,padding", [(2, None, 0), (3, 2, "same"), ((2, 3), 1, 1),
                                                 (2, 3, "valid"), ((3, 2), (1, 2), "same")])
def test_maxpool_nchw_each_isa(isa, dtype, pool, stride, padding):
    """NCHW max pooling: the generic ISA runs the plain loop, the others the branch-free
    loop over output columns (SSE2 on x86-64; 2x2 windows of stride 2 on AVX-512: 16 float
    or 8 double outputs at a time, a row's last ones masked); all exactly the reference,
    with ties (integer-valued data), NaN (first, second and last in a window, on a padded
    edge, whole NaN windows) and rows wider than the loop's column block (256). And the
    backward, exactly the reference's."""
    rng = np.random.default_rng(5)
    for shape in ((2, 3, 7, 9), (1, 2, 5, 530), (3, 1, 3, 4)):
        x = rng.integers(-3, 4, size=shape).astype(dtype)
        x[0, 0, 0, 0] = np.nan
        x[-1, -1, -1, shape[3] // 2] = np.nan
        x[-1, 0, 0, 3] = np.nan                  # 2x2 windows: second in window (0, 1)
        x[0, -1, 1, -1 - shape[3] % 2] = np.nan  # last in the row's last window
        if shape[2] >= 2 and shape[3] >= 4:
            x[0, -1, :2, :4] = np.nan
        with fastnn.use_backend("numpy"):
            y_ref, a_ref = ops.maxpool2d_forward(x, pool, stride=stride, padding=padding,
                                                 layout="NCHW")
        with fastnn.use_backend("c"):
            y, a = ops.maxpool2d_forward(x, pool, stride=stride, padding=padding,
                                         layout="NCHW")
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(a, a_ref)
        # the backward: with the forward's argmax, and with one moved to another window of
        # another plane (both ways); -0.0 in dy gives +0.0 (0 + dy), NaN stays
        dy = rng.standard_normal(y.shape).astype(dtype)
        dy.flat[1] = -0.0
        dy.flat[-1] = np.nan
        moved = a.copy()
        moved[0, 0, 0, 0] = a[0, -1, -1, -1]    # into the sample's last plane
        moved[-1, -1, -1, -1] = a[-1, 0, 0, 0]  # into its first
        for am in (a, moved):
            with fastnn.use_backend("numpy"):
                dx_ref = ops.maxpool2d_backward(dy, am, x.shape, pool, stride=stride,
                                                padding=padding, layout="NCHW")
            with fastnn.use_backend("c"):
                dx = ops.maxpool2d_backward(dy, am, x.shape, pool, stride=stride,
                                            padding=padding, layout="NCHW")
            np.testing.assert_array_equal(dx, dx_ref)
            assert np.array_equal(np.signbit(dx), np.signbit(dx_ref))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool,stride,padding", [(2, None, 0), (3, 2, "same"), ((2, 3), 1, 1),
                                                 ((3, 2), (1, 2), "same")])
def test_avgpool_nchw_each_isa(isa, dtype, pool, stride, padding):
    """NCHW average pooling, forward and backward: the loop over output columns adds in
    the reference loop's order, so every ISA gives the generic ISA's bits; and the NumPy
    reference's numbers."""
    rng = np.random.default_rng(9)
    for shape in ((2, 3, 7, 9), (1, 2, 4, 530)):
        x = rng.standard_normal(shape).astype(dtype)
        with fastnn.use_backend("c"):
            y = ops.avgpool2d_forward(x, pool, stride=stride, padding=padding, layout="NCHW")
            dy = rng.standard_normal(y.shape).astype(dtype)
            dx = ops.avgpool2d_backward(dy, shape, pool, stride=stride, padding=padding,
                                        layout="NCHW")
            c_backend.set_isa("generic")
            y_gen = ops.avgpool2d_forward(x, pool, stride=stride, padding=padding,
                                          layout="NCHW")
            dx_gen = ops.avgpool2d_backward(dy, shape, pool, stride=stride, padding=padding,
                                            layout="NCHW")
        np.testing.assert_array_equal(y, y_gen)
        np.testing.assert_array_equal(dx, dx_gen)
        with fastnn.use_backend("numpy"):
            y_ref = ops.avgpool2d_forward(x, pool, stride=stride, padding=padding,
                                          layout="NCHW")
            dx_ref = ops.avgpool2d_backward(dy, shape, pool, stride=stride, padding=padding,
                                            layout="NCHW")
        assert np.abs(y - y_ref).max() <= _tol(dtype, 9) * (np.abs(y_ref).max() + 1)
        assert np.abs(dx - dx_ref).max() <= _tol(dtype, 9) * (np.abs(dx_ref).max() + 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_nchw_direct_nan_each_isa(isa, dtype):
    """NaN through the direct NCHW path (one-channel 5x5, 24-pixel rows) as through the
    reference: a NaN input pixel makes NaN exactly the outputs that read it (relu keeps
    them), and a NaN in dy reaches dw and db."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 1, 28, 28)).astype(dtype)
    w = rng.standard_normal((6, 1, 5, 5)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    x[1, 0, 10, 27] = np.nan
    dy = rng.standard_normal((3, 6, 24, 24)).astype(dtype)
    dy[2, 4, 23, 0] = np.nan
    out = {}
    for backend in ("numpy", "c"):
        with fastnn.use_backend(backend):
            y = ops.conv2d_forward(x, w, b, activation="relu", layout="NCHW")
            _, dw, db = ops.conv2d_backward(dy, np.nan_to_num(x), w, layout="NCHW")
            out[backend] = (y, dw, db)
    for got, ref in zip(out["c"], out["numpy"]):
        assert np.isnan(ref).any()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        ok = ~np.isnan(ref)
        scale = np.abs(ref[ok]).max() + 1
        assert np.abs(got[ok] - ref[ok]).max() <= _tol(dtype, 1728) * scale


def test_nchw_conv_pool_thread_invariant(isa):
    """Big enough for the batched NCHW convolution's blocks (40: 8 dw groups of 5) and the
    NCHW pooling loops to run on 2 threads: the same bits as on 1."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((40, 2, 28, 28))
    w = rng.standard_normal((30, 2, 5, 5))
    b = rng.standard_normal(30)
    x1, w1 = x[:, :1], w[:, :1]                 # one channel: the direct forward too
    xp = rng.integers(-3, 4, size=(40, 30, 24, 24)).astype(np.float64)
    before = fastnn.get_num_threads()
    results = []
    try:
        for nt in (1, 2):
            fastnn.set_num_threads(nt)
            with fastnn.use_backend("c"):
                y = ops.conv2d_forward(x, w, b, activation="relu", layout="NCHW")
                grads = ops.conv2d_backward(y, x, w, layout="NCHW")
                y1 = ops.conv2d_forward(x1, w1, b, activation="relu", layout="NCHW")
                grads1 = ops.conv2d_backward(y1, x1, w1, layout="NCHW")
                pooled = ops.maxpool2d_forward(xp, 2, layout="NCHW")
                avg = ops.avgpool2d_forward(xp, 3, stride=2, padding="same", layout="NCHW")
            results.append((y, y1) + tuple(grads) + tuple(grads1) + tuple(pooled) + (avg,))
    finally:
        fastnn.set_num_threads(before)
    for r1, r2 in zip(*results):
        np.testing.assert_array_equal(r1, r2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", [(9, 32, 8192), (20, 30, 8192 + 300), (7, 5, 12289),
                                   (30, 25, 9000), (100, 100, 4320), (30, 30, 3000),
                                   (17, 40, 2048), (64, 64, 8191), (192, 192, 2050),
                                   (10, 10, 5000)])
def test_gemm_k_split_each_isa(isa, dtype, m, n, k):
    """Small outputs with a long K take the K-split path (pieces of 4096 from K = 8192, an
    even number of equal pieces from K = 2048 with more than 16 columns; each piece with its
    own K blocking, packed or read in place, partial sums added in piece order): correct for
    every transpose and remainder, and bitwise the same on 1 and 2 threads. (A workspace
    sized for the whole K's blocking instead of each piece's once overflowed here.)"""
    rng = np.random.default_rng(m + n + k)
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
            b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
            ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
            outs = []
            for threads in (1, 2):
                with fastnn.use_backend("c"):
                    before = fastnn.get_num_threads()
                    fastnn.set_num_threads(threads)
                    try:
                        outs.append(ops.matmul(a, b, trans_a=ta, trans_b=tb))
                    finally:
                        fastnn.set_num_threads(before)
            np.testing.assert_array_equal(outs[0], outs[1])
            assert np.abs(outs[0] - ref).max() <= _tol(dtype, k) * (np.abs(ref).max() + 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation", IMPLICIT_CASES)
def test_conv_maxpool_forward_nhwc_each_isa(isa, dtype, xs, ws, stride, padding, dilation):
    """Fused convolution + 2x2 pooling (AVX2: groups of 3 windows through the gather kernel,
    pooled in L1; generic: the two calls) against the two calls, bit for bit; odd output
    sizes (a row and a column no window reads), partial groups and filter panels."""
    rng = np.random.default_rng(sum(xs) + sum(ws) + 1)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[-1]).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    with fastnn.use_backend("c"):
        z = ops.conv2d_forward(x, w, b, activation="relu", **kw)
        if min(z.shape[1:3]) < 2:
            return
        y_ref, a_ref = ops.maxpool2d_forward(z, 2)
        y, a = ops.conv2d_maxpool_forward(x, w, b, activation="relu", **kw)
        yw, pos = ops.conv2d_maxpool_forward(x, w, b, activation="relu", **kw,
                                             argmax_format="window")
    assert y.tobytes() == y_ref.tobytes() == yw.tobytes()
    np.testing.assert_array_equal(a, a_ref)
    rows, cols = np.unravel_index(a_ref, z.shape[1:])[:2]    # each window's position
    np.testing.assert_array_equal(pos, 2 * (rows % 2) + cols % 2)


@pytest.mark.parametrize("dtype,f", [(np.float32, 32), (np.float32, 16), (np.float32, 20),
                                     (np.float64, 16), (np.float64, 8)])
def test_conv_backward_k_split_each_isa(isa, dtype, f):
    """The first layer's dW (9 x f output, K = N*OH*OW >= 8192): through the K-split GEMM
    (generic ISA) or the gather kernel, with dy's rows read in place (f one or two whole
    panels: 16, 32 floats, 8, 16 doubles) or packed (20)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 28, 28, 1)).astype(dtype)
    w = rng.standard_normal((3, 3, 1, f)).astype(dtype)
    dy = rng.standard_normal((16, 26, 26, f)).astype(dtype)
    with fastnn.use_backend("numpy"):
        _, dw_ref, db_ref = ops.conv2d_backward(dy, x, w, need_dx=False)
    with fastnn.use_backend("c"):
        _, dw, db = ops.conv2d_backward(dy, x, w, need_dx=False)
    k = 16 * 26 * 26
    assert np.abs(dw - dw_ref).max() <= _tol(dtype, k) * (np.abs(dw_ref).max() + 1.0)
    assert np.abs(db - db_ref).max() <= _tol(dtype, k) * (np.abs(db_ref).max() + 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_backward_nhwc_runs_each_isa(isa, dtype):
    """NHWC backward with 70 filters (5 float panels, 9 double, the last partial), a patch
    of 63 (partial row tiles) and 1296 output pixels: the gather kernel's dW in four pieces
    of 324 pixels, each in runs of 128 accumulated into its partial (the last run
    partial), against the reference."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 20, 20, 7)).astype(dtype)
    w = rng.standard_normal((3, 3, 7, 70)).astype(dtype)
    dy = rng.standard_normal((4, 18, 18, 70)).astype(dtype)
    with fastnn.use_backend("numpy"):
        ref = ops.conv2d_backward(dy, x, w)
    with fastnn.use_backend("c"):
        got = ops.conv2d_backward(dy, x, w)
    for name, g, r, k in zip(("dx", "dw", "db"), got, ref, (9 * 70, 4 * 18 * 18, 4 * 18 * 18)):
        err = np.abs(g - r).max()
        assert err <= _tol(dtype, k) * (np.abs(r).max() + 1.0), (name, err)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws", [((8, 13, 13, 32), (3, 3, 32, 64)),
                                   ((3, 9, 8, 5), (1, 1, 5, 6))])
def test_conv_backward_crop_each_isa(isa, dtype, xs, ws):
    """crop=True (the CNN's second convolution, whose last row and column no pooling window
    reads; a 1x1 convolution, no longer pointwise once cropped) against the reference on dy
    padded with zeros."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    oh, ow = xs[1] - ws[0] + 1, xs[2] - ws[1] + 1
    dy = rng.standard_normal((xs[0], oh - 1, ow - 1, ws[3])).astype(dtype)
    padded = np.zeros((xs[0], oh, ow, ws[3]), dtype)
    padded[:, :oh - 1, :ow - 1] = dy
    with fastnn.use_backend("numpy"):
        ref = ops.conv2d_backward(padded, x, w)
    with fastnn.use_backend("c"):
        got = ops.conv2d_backward(dy, x, w, crop=True)
    k = xs[0] * oh * ow
    for name, g, r, kk in zip(("dx", "dw", "db"), got, ref, (ws[0] * ws[1] * ws[3], k, k)):
        err = np.abs(g - r).max()
        assert err <= _tol(dtype, kk) * (np.abs(r).max() + 1.0), (name, err)


@pytest.mark.parametrize("dtype,xs,ws,stride,dilation,padding", [
    (np.float32, (16, 13, 13, 32), (3, 3, 32, 64), 1, 1, "valid"),
    (np.float32, (5, 9, 7, 16), (3, 3, 16, 24), 1, 1, "valid"),
    (np.float32, (3, 11, 10, 32), (2, 3, 32, 20), (2, 1), (1, 2), "valid"),
    (np.float64, (16, 13, 13, 16), (3, 3, 16, 64), 1, 1, "valid"),
    (np.float64, (2, 6, 6, 16), (1, 2, 16, 5), (1, 2), 1, "valid"),
    (np.float32, (16, 13, 13, 32), (3, 3, 32, 64), 1, 1, "same"),
    (np.float32, (3, 11, 10, 32), (2, 3, 32, 20), (2, 1), (1, 2), "same"),
    (np.float32, (4, 7, 9, 16), (3, 2, 16, 8), 1, 1, ((0, 2), (1, 0))),
    (np.float64, (5, 8, 8, 16), (3, 3, 16, 8), 2, 1, 1)])
def test_conv_backward_dx_scatter_each_isa(isa, dtype, xs, ws, stride, dilation, padding,
                                           restore_workspace_limit):
    """NHWC dx without dcols (AVX2, channels a multiple of NR: the scatter micro-kernel
    adds each tile into dx, or with padding into a padded image whose interior is dx's;
    else dcols + col2im) against the reference, with tiles that span two images; the same
    bits on 1 and 2 threads (16 images of 121 pixels: the second thread's first tile starts
    before its pixels) and in chunks of one image (the tiles on one grid)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    kw = dict(stride=stride, dilation=dilation, padding=padding)
    with fastnn.use_backend("numpy"):
        y = ops.conv2d_forward(x, w, **kw)
        dy = rng.standard_normal(y.shape).astype(dtype)
        ref = ops.conv2d_backward(dy, x, w, **kw)[0]
    runs = []
    before = fastnn.get_num_threads()
    try:
        with fastnn.use_backend("c"):
            for threads, limit in ((2, None), (1, None), (2, 1)):
                fastnn.set_num_threads(threads)
                if limit:
                    fastnn.ops.set_workspace_limit(limit)
                runs.append(ops.conv2d_backward(dy, x, w, need_db=False, **kw)[0])
    finally:
        fastnn.set_num_threads(before)
    k = ws[0] * ws[1] * ws[3]
    assert np.abs(runs[0] - ref).max() <= _tol(dtype, k) * (np.abs(ref).max() + 1.0)
    assert runs[0].tobytes() == runs[1].tobytes() == runs[2].tobytes()


@pytest.mark.parametrize("dtype,f", [(np.float32, 32), (np.float32, 20), (np.float32, 70),
                                     (np.float64, 12)])
@pytest.mark.parametrize("limit", [None, 1])
def test_conv_maxpool_backward_dw_each_isa(isa, dtype, f, limit, restore_workspace_limit):
    """dW and db of the convolution + pooling from the pooled gradient and argmax (AVX2:
    dW's product over the window-ordered pixels straight from them; AVX-512: its B packed
    from them, window by window; generic: the sparse kernels) against the reference: 13
    images of 100 windows, so dW's pieces of 650 pixels split windows (pixel rows of one
    window in two pieces), full and partial filter panels and vectors, 70 filters in runs
    of pixels (the C dW's DW_RUN), a 27-element patch in register blocks of 9, in one
    chunk or one image per chunk."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((13, 22, 22, 3)).astype(dtype)
    w = rng.standard_normal((3, 3, 3, f)).astype(dtype)
    if limit:
        fastnn.ops.set_workspace_limit(limit)
    with fastnn.use_backend("c"):
        y, am = ops.conv2d_maxpool_forward(x, w, activation="relu")
        dy = rng.standard_normal(y.shape).astype(dtype)
        _, dw, db = ops.conv2d_maxpool_backward(dy, am, x, w, need_dx=False)
        pos = ops.conv2d_maxpool_forward(x, w, activation="relu", argmax_format="window")[1]
        from_pos = ops.conv2d_maxpool_backward(dy, pos, x, w, need_dx=False)
    assert from_pos[1].tobytes() == dw.tobytes() and from_pos[2].tobytes() == db.tobytes()
    with fastnn.use_backend("numpy"):
        dz = ops.maxpool2d_backward(dy, am, (13, 20, 20, f), 2)
        _, dw_ref, db_ref = ops.conv2d_backward(dz, x, w, need_dx=False)
    k = 13 * 20 * 20
    assert np.abs(dw - dw_ref).max() <= _tol(dtype, k) * (np.abs(dw_ref).max() + 1.0)
    assert np.abs(db - db_ref).max() <= _tol(dtype, k) * (np.abs(db_ref).max() + 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_maxpool_backward_packed_positions_each_isa(isa, dtype):
    """dW and db from window positions where the sparse kernels do not apply (17 x 17
    patch elements with dilated columns: 289 runs): the implicit dW (AVX2: its rows kernel
    in blocks of 9 patch elements; AVX-512, where the CPU has it: its B packed from them,
    conv.c's pack_pooled; generic, without a gather kernel: the scatter and the dense
    backward), the bits of the flat argmax's, near the reference."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((3, 20, 41, 1)).astype(dtype)
    w = rng.standard_normal((17, 17, 1, 9)).astype(dtype)
    kw = dict(dilation=(1, 2), crop=True)
    with fastnn.use_backend("numpy"):
        y, am = ops.conv2d_maxpool_forward(x, w, activation="relu", **kw)
        pos = ops.conv2d_maxpool_forward(x, w, activation="relu", argmax_format="window",
                                         **kw)[1]
        dy = rng.standard_normal(y.shape).astype(dtype)
        _, dw_ref, db_ref = ops.conv2d_maxpool_backward(dy, am, x, w, need_dx=False, **kw)
    with fastnn.use_backend("c"):
        _, dw, db = ops.conv2d_maxpool_backward(dy, am, x, w, need_dx=False, **kw)
        _, dw_pos, db_pos = ops.conv2d_maxpool_backward(dy, pos, x, w, need_dx=False, **kw)
    assert dw_pos.tobytes() == dw.tobytes() and db_pos.tobytes() == db.tobytes()
    k = dy.size // 9
    assert np.abs(dw - dw_ref).max() <= _tol(dtype, k) * (np.abs(dw_ref).max() + 1.0)
    assert np.abs(db - db_ref).max() <= _tol(dtype, k) * (np.abs(db_ref).max() + 1.0)


# (x shape, w shape, stride, padding, dilation): receptive fields of whole AVX2 vectors
# (rows of kw * c elements, or with dilated columns runs of c), f past one 64-bit filter
# mask (70, 130) and short of it, padding (dx through a padded image), strides, odd outputs
# (the crop), a 1x1 kernel; float64's vectors of 4 take c = 4.
POOL_SPARSE_CASES = [
    (np.float32, (9, 13, 13, 32), (3, 3, 32, 64), 1, "valid", 1),
    (np.float32, (4, 12, 11, 8), (3, 3, 8, 70), 1, "same", 1),
    (np.float32, (3, 15, 14, 16), (3, 3, 16, 9), 1, "valid", (1, 2)),
    (np.float32, (3, 17, 16, 8), (3, 2, 8, 5), (2, 1), ((1, 0), (2, 1)), 1),
    (np.float32, (2, 10, 10, 24), (1, 1, 24, 130), 1, "valid", 1),
    (np.float64, (9, 13, 13, 16), (3, 3, 16, 64), 1, "valid", 1),
    (np.float64, (3, 11, 12, 4), (3, 3, 4, 7), 1, "same", 1),
    (np.float64, (3, 14, 13, 4), (2, 3, 4, 66), (1, 2), "valid", (2, 1))]


@pytest.mark.parametrize("dtype,xs,ws,stride,padding,dilation", POOL_SPARSE_CASES)
def test_conv_maxpool_backward_sparse_each_isa(isa, dtype, xs, ws, stride, padding,
                                               dilation):
    """dx, dW and db of the convolution + pooling straight from the pooled gradient and
    argmax (each gradient times its argmax pixel's receptive field and its filter only:
    AVX2 image kernels, the portable ones on generic) against the reference's scatter then
    conv2d_backward: relu's zeros in dy (skipped), a NaN (its pixel's receptive field in
    dx, its filter's row of dW), dx alone where wanted; the same bits on 1 and 2 threads
    (dW summed per fixed group of images)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[3]).astype(dtype)
    geo = dict(stride=stride, padding=padding, dilation=dilation)
    with fastnn.use_backend("numpy"):
        y, am = ops.conv2d_maxpool_forward(x, w, b, activation="relu", crop=True, **geo)
        dy = rng.standard_normal(y.shape).astype(dtype) * (y > 0)
        dy.flat[dy.size // 2] = np.nan
        zshape = (xs[0], 2 * (y.shape[1]), 2 * y.shape[2], ws[3])
        dz = ops.maxpool2d_backward(dy, am, zshape, 2)
        ref = ops.conv2d_backward(dz, x, w, crop=True, **geo)
    runs = []
    before = fastnn.get_num_threads()
    try:
        with fastnn.use_backend("c"):
            for threads in (2, 1):
                fastnn.set_num_threads(threads)
                runs.append(ops.conv2d_maxpool_backward(dy, am, x, w, crop=True, **geo))
            dw_only = ops.conv2d_maxpool_backward(dy, am, x, w, crop=True, need_dx=False,
                                                  **geo)
            pos = ops.conv2d_maxpool_forward(x, w, b, activation="relu", crop=True,
                                             argmax_format="window", **geo)[1]
            from_pos = ops.conv2d_maxpool_backward(dy, pos, x, w, crop=True, **geo)
    finally:
        fastnn.set_num_threads(before)
    k = {"dx": ws[0] * ws[1] * ws[3], "dw": xs[0] * zshape[1] * zshape[2], "db": 1}
    k["db"] = k["dw"]
    for name, got, want in zip(("dx", "dw", "db"), runs[0], ref):
        nan = np.isnan(want)
        assert nan.any() and not nan.all(), name
        np.testing.assert_array_equal(np.isnan(got), nan, err_msg=name)
        err = np.abs(got[~nan] - want[~nan]).max()
        assert err <= _tol(dtype, k[name]) * (np.abs(want[~nan]).max() + 1.0), name
    for a, c, p in zip(runs[0], runs[1], from_pos):
        assert a.tobytes() == c.tobytes() == p.tobytes()
    assert dw_only[0] is None
    assert dw_only[1].tobytes() == runs[0][1].tobytes()
    assert dw_only[2].tobytes() == runs[0][2].tobytes()


# (dtype, x shape, w shape): the sparse kernels (8 and 32 channels, float64's 4), the pooled
# implicit dW (1 and 3 channels: AVX2's unpacked rows, the others' packed panels; 70 filters
# in runs of pixels), odd outputs (the crop); one channel and few filters (the direct row
# kernels on unpooled planes)
RELU_POOL_CASES = [(np.float32, (9, 13, 13, 32), (3, 3, 32, 64)),
                   (np.float32, (5, 12, 11, 8), (3, 3, 8, 20)),
                   (np.float32, (13, 28, 28, 1), (3, 3, 1, 32)),
                   (np.float32, (7, 15, 17, 3), (3, 3, 3, 70)),
                   (np.float64, (6, 11, 12, 4), (3, 3, 4, 7)),
                   (np.float64, (11, 13, 13, 1), (3, 3, 1, 9)),
                   (np.float32, (5, 14, 20, 1), (5, 5, 1, 6)),
                   (np.float64, (4, 13, 21, 1), (5, 5, 1, 3))]


@pytest.mark.parametrize("dtype,xs,ws", RELU_POOL_CASES)
@pytest.mark.parametrize("need_dx", [True, False])
def test_conv_maxpool_backward_applies_relu_like_bias_act_backward(isa, dtype, xs, ws,
                                                                    need_dx):
    """The layers' pair backward (fastnn.ops._conv2d_maxpool_backward with relu_y, the
    pooled relu output): relu's derivative taken in the kernels as they read the pooled
    gradient gives, bit for bit, bias_act_backward's masked gradient (and its db) followed
    by the backward: zeros, negatives and a NaN in relu_y (0: relu_y > 0 is false there),
    on 1 and 2 threads; each backend (the C backend per ISA; Numba and NumPy through
    bias_act_backward first)."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    with fastnn.use_backend("numpy"):
        y, am = ops.conv2d_maxpool_forward(x, w, None, activation="relu", crop=True)
        pos = ops.conv2d_maxpool_forward(x, w, None, activation="relu", crop=True,
                                         argmax_format="window")[1]
    y = y - dtype(0.3)                       # negatives and zeros besides positives
    y.flat[::7] = 0
    y.flat[y.size // 3] = np.nan
    dy = rng.standard_normal(y.shape).astype(dtype)
    args = (x, w, 1, 0, 1, "NHWC", True, need_dx, True, None)
    before = fastnn.get_num_threads()
    try:
        for backend in ("c", "numba", "numpy"):
            with fastnn.use_backend(backend):
                masked, db = ops.bias_act_backward(dy, y, "relu")
                want = ops._conv2d_maxpool_backward(masked, am, *args, check_range=False)
                want = (want[0], want[1], db)
                for threads, a_or_pos in ((2, am), (1, am), (2, pos)):   # (the layers': pos)
                    fastnn.set_num_threads(threads)
                    got = ops._conv2d_maxpool_backward(dy, a_or_pos, *args,
                                                       check_range=False, relu_y=y)
                    for name, a, b in zip(("dx", "dw", "db"), got, want):
                        if b is None:
                            assert a is None
                            continue
                        assert a.tobytes() == b.tobytes(), (backend, threads, name,
                                                            a_or_pos.dtype)
    finally:
        fastnn.set_num_threads(before)
    with pytest.raises(ValueError, match="relu_y"):
        ops._conv2d_maxpool_backward(dy, am, *args, check_range=False, relu_y=y[:, :-1])
    with pytest.raises(TypeError, match="relu_y"):
        ops._conv2d_maxpool_backward(dy, am, *args, check_range=False,
                                     relu_y=y.astype(np.float32 if dtype == np.float64
                                                     else np.float64))


def test_conv_maxpool_backward_sparse_ignores_argmax_outside_window(isa):
    """An argmax naming a pixel outside its own window (in range, but never from the
    forward) is ignored by the sparse path, as by the pooled dW: its gradient reaches
    nothing (no read or write outside the image either way); so is a window position above
    3 (the layers' unchecked call: the AVX2 and the portable tables)."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 9, 9, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
    y, am = ops.conv2d_maxpool_forward(x, w, None, activation="relu", crop=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    bad = am.copy()
    bad[0, 0, 0, 3] = bad[0, 2, 2, 3]   # filter 3's pixel of window (2, 2), in window (0, 0)
    bad[1, 1, 0, 5] = 5                 # filter 5 of pixel 0, another window's
    keep = dy.copy()
    keep[0, 0, 0, 3] = keep[1, 1, 0, 5] = 0
    pos = ops.conv2d_maxpool_forward(x, w, None, activation="relu", crop=True,
                                     argmax_format="window")[1]
    bad_pos = pos.copy()
    bad_pos[0, 0, 0, 3], bad_pos[1, 1, 0, 5] = 4, 255
    with fastnn.use_backend("c"):
        got = ops.conv2d_maxpool_backward(dy, bad, x, w, crop=True, need_db=False)
        want = ops.conv2d_maxpool_backward(keep, am, x, w, crop=True, need_db=False)
        got_pos = ops._conv2d_maxpool_backward(dy, bad_pos, x, w, 1, 0, 1, "NHWC", True, True,
                                               False, None, check_range=False)
    for g in (got, got_pos):
        np.testing.assert_allclose(g[0], want[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g[1], want[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_maxpool_each_isa(isa, dtype):
    """bn_pool_fwd's window: the portable loop (generic) and the AVX2 lanes with the
    portable tail (every other ISA; 75 channels: 9 vectors of float and 3 tail channels, a
    second channel block) give the reference's bits, ties, NaN and a negative gamma among
    them; the backward (no ISA kernel of its own) the same bits on every ISA."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 9, 7, 75)).astype(dtype)
    x[0, 0, 1, :8] = x[0, 0, 0, :8]          # ties: the first wins
    x[1, 2, 3, 9] = x[2, 5, 4, 74] = np.nan  # NaN: wins its window
    mean, var = rng.standard_normal(75).astype(dtype), rng.uniform(0.5, 2, 75).astype(dtype)
    inv = (1 / np.sqrt(var)).astype(dtype)
    gamma = rng.uniform(-2, 2, 75).astype(dtype)
    beta = rng.standard_normal(75).astype(dtype)
    dy = rng.standard_normal((3, 4, 3, 75)).astype(dtype)
    for g, b in ((gamma, beta), (None, None)):
        with fastnn.use_backend("c"):
            got = ops.batchnorm_maxpool_forward(x, mean, inv, g, b)
            back = ops.batchnorm_maxpool_backward(dy, *got[1:], x, mean, inv, g)
        with fastnn.use_backend("numpy"):
            want = ops.batchnorm_maxpool_forward(x, mean, inv, g, b)
        for a, w in zip(got, want):
            np.testing.assert_array_equal(a.view(np.uint8), w.view(np.uint8))
        c_backend.set_isa("generic")
        with fastnn.use_backend("c"):
            generic = ops.batchnorm_maxpool_backward(dy, *got[1:], x, mean, inv, g)
        c_backend.set_isa(isa)
        for a, w in zip(back, generic):
            np.testing.assert_array_equal(a.view(np.uint8), w.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_update_each_isa(isa, dtype):
    """The portable loop (generic) and its AVX2 build give the reference's bits."""
    rng = np.random.default_rng(11)
    n = 1003
    state = [rng.standard_normal(n).astype(dtype), np.zeros(n, dtype), np.zeros(n, dtype),
             np.zeros(n, dtype)]
    ref = [a.copy() for a in state]
    for t in range(1, 4):
        g = rng.standard_normal(n).astype(dtype)
        g[t] = np.nan
        kw = dict(alpha=1e-2 * t, beta_1=0.9, beta_2=0.99, epsilon=1e-7)
        with fastnn.use_backend("c"):
            ops.adam_update(state[0], g, state[1], state[2], v_hat=state[3], **kw)
        with fastnn.use_backend("numpy"):
            ops.adam_update(ref[0], g, ref[1], ref[2], v_hat=ref[3], **kw)
    for got, want in zip(state, ref):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_mask_each_isa(isa, dtype):
    """relu_mask runs a portable two-loop select on the generic ISA and, for double, a
    one-pass AVX2 lane kernel on the others (16 elements a step, a scalar tail): the same
    bits as the reference for every length around the 16-element step and the 1024-element
    thread block, misaligned and in place, with every special value (NaN of both signs,
    +-inf, +-0.0, subnormals) in every lane position."""
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -1e-300,
                         5e-324, 1e-45, -1e-45, 1.0, -1.0, 3.5, -2.5, 7.0, -0.5], dtype)
    rng = np.random.default_rng(11)
    lengths = list(range(1, 40)) + [63, 64, 65, 1023, 1024, 1025, 2047, 5000, 70001]
    for n in lengths:
        buf = rng.standard_normal(n + 1).astype(dtype)
        buf[rng.integers(0, n + 1, size=max(1, n // 3))] = 0.0
        for i in range(0, n + 1, 7):  # specials land in every lane over the lengths
            buf[i] = specials[(i // 7 + n) % specials.size]
        for x in (buf[:n], buf[1:]):  # aligned as allocated, and one element off
            with fastnn.use_backend("numpy"):
                y_ref, m_ref = ops.relu_mask(x)
            with fastnn.use_backend("c"):
                y, m = ops.relu_mask(x)
                xin = x.copy()
                yin, _ = ops.relu_mask(xin, out=xin)
            assert y.view(np.uint8).tobytes() == y_ref.view(np.uint8).tobytes(), (isa, n)
            assert yin.view(np.uint8).tobytes() == y_ref.view(np.uint8).tobytes(), (isa, n)
            assert m.dtype == np.bool_ and np.array_equal(m, m_ref), (isa, n)
            assert set(np.unique(m.view(np.uint8))) <= {0, 1}, (isa, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c,hw,f", [(1, 2, 32, 256), (3, 7, 1, 8), (2, 13, 1, 16),
                                      (1, 1, 23, 4)])
def test_nchw_pointwise_backward_each_isa(isa, dtype, n, c, hw, f):
    """The NCHW 1x1 backward's dx GEMM (c x hw x f) within its workspace on every ISA
    (it overran it on each: generic float64 with 1 channel of 23 x 23 and 4 filters, AVX2
    with 7 channels of 1 x 1 and 8 filters); the guarded workspace (conftest) checks."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((n, c, hw, hw)).astype(dtype)
    w = rng.standard_normal((f, c, 1, 1)).astype(dtype)
    dy = rng.standard_normal((n, f, hw, hw)).astype(dtype)
    with fastnn.use_backend("c"):
        got = ops.conv2d_backward(dy, x, w, layout="NCHW")
    with fastnn.use_backend("numpy"):
        want = ops.conv2d_backward(dy, x, w, layout="NCHW")
    rtol = 2e-4 if dtype == np.float32 else 1e-10
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * f)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_maxpool_crop_of_a_pointwise_convolution_is_bit_for_bit(isa, dtype):
    """conv2d_maxpool_forward promises maxpool2d_forward(conv2d_forward(...), 2) bit for
    bit; for a 1x1 convolution with crop=True the cropped geometry took the fused implicit
    path while the whole one is a pointwise GEMM, summing in another order (725 of 930
    values differed by up to 6.7e-6 on AVX2 / AVX-512; found by a fuzzing review)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 63, 10, 64)).astype(dtype)
    w = rng.standard_normal((1, 1, 64, 6)).astype(dtype)
    with fastnn.use_backend("c"):
        two = ops.maxpool2d_forward(ops.conv2d_forward(x, w), 2)[0]
        for crop in (False, True):
            np.testing.assert_array_equal(ops.conv2d_maxpool_forward(x, w, crop=crop)[0], two)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_lwork_refuses_misaligned_or_overlapping(dtype):
    """fnn_gemm_lwork returns -1 and writes nothing when an operand is not aligned to the
    element size or C's span of memory meets A's or B's (ops.matmul's fast path passes
    arrays it has not checked for either); C right beside A and B is computed."""
    sfx = "f32" if dtype == np.float32 else "f64"
    lwork_fn = getattr(c_backend.lib, f"fnn_gemm_lwork_{sfx}")
    arr = c_backend._ARRAY[np.dtype(dtype)]
    ptr = lambda x: c_backend.ffi.from_buffer(arr, x)
    m, n, k = 6, 5, 4
    ws = np.empty(getattr(c_backend.lib, f"fnn_gemm_ws_{sfx}")(m, n, k), dtype)
    rng = np.random.default_rng(3)
    # one buffer: A (m x k) | B (k x n) | C (m x n)
    buf = rng.standard_normal(m * k + k * n + m * n).astype(dtype)
    a, b = buf[:m * k], buf[m * k:m * k + k * n]
    want = a.reshape(m, k) @ b.reshape(k, n)

    def call(pa, pb, pc, ta=0, tb=0):
        lda = m if ta else k
        ldb = k if tb else n
        return lwork_fn(ta, tb, m, n, k, 1.0, pa, lda, pb, ldb, 0.0, ptr(ws), ws.size, pc, n)

    before = buf.copy()
    # C starting on A's last element, on B's first, on B's last: refused, nothing written
    for start in (m * k - 1, m * k, m * k + k * n - 1):
        assert call(ptr(a), ptr(b), ptr(buf[start:start + m * n])) == -1
        np.testing.assert_array_equal(buf, before)
    # transposed operands span the same memory: still refused
    assert call(ptr(a), ptr(b), ptr(buf[m * k - 1:m * k - 1 + m * n]), ta=1, tb=1) == -1
    # C beside them: computed
    c = buf[m * k + k * n:]
    assert call(ptr(a), ptr(b), ptr(c)) == 0
    np.testing.assert_allclose(c.reshape(m, n), want, rtol=1e-5)
    # misaligned a, b or c (a byte buffer at offset 1): refused
    raw = np.zeros(buf.nbytes + 1, np.uint8)
    mis = np.frombuffer(raw.data, dtype, count=buf.size, offset=1)
    mis[:] = buf
    pmis = c_backend.ffi.from_buffer(arr, mis)
    out = np.full(m * n, 7.0, dtype)
    assert call(pmis, ptr(b), ptr(out)) == -1
    assert call(ptr(a), pmis + m * k, ptr(out)) == -1
    assert (out == 7.0).all()
    assert call(ptr(a), ptr(b), pmis + m * k + k * n) == -1
    np.testing.assert_array_equal(mis, buf)
    # nothing is read when k == 0: an overlapping C is zeroed, as BLAS does
    assert lwork_fn(0, 0, m, n, 0, 1.0, ptr(a), 1, ptr(b), n, 0.0, ptr(ws), ws.size,
                    ptr(buf[:m * n]), n) == 0
    assert (buf[:m * n] == 0).all()


def _view_at(a, byte_offset):
    """A copy of ``a`` viewing a byte buffer at ``byte_offset``."""
    raw = np.zeros(a.nbytes + byte_offset, np.uint8)
    out = np.frombuffer(raw.data, a.dtype, count=a.size, offset=byte_offset).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fastcall_gemm_direct(dtype):
    """fastnn._fastcall.gemm (ops.matmul's plain calls) called directly with anything: the
    product of a plain call; None, touching nothing, for every other; never a crash."""
    g = _fastcall.gemm
    rng = np.random.default_rng(11)
    a = rng.standard_normal((6, 5)).astype(dtype)
    b = rng.standard_normal((5, 3)).astype(dtype)
    want = a.astype(np.float64) @ b
    tol = dict(rtol=_tol(dtype, 5), atol=_tol(dtype, 5) * np.abs(want).max())
    out = np.full((6, 3), np.nan, dtype)
    assert g(False, False, 1.0, a, b, out) is out
    np.testing.assert_allclose(out, want, **tol)
    new = g(False, False, -2.0, a, b, None)
    assert type(new) is np.ndarray and new.dtype == dtype and new.shape == (6, 3)
    np.testing.assert_allclose(new, -2 * want, **tol)
    np.testing.assert_allclose(g(True, True, 1.0, a.T.copy(), b.T.copy(), None), want, **tol)
    other = np.float64 if dtype == np.float32 else np.float32
    ro = np.zeros((6, 3), dtype)
    ro.flags.writeable = False

    class Sub(np.ndarray):
        pass

    declined = {
        "int flag": (1, False, 1.0, a, b, None), "numpy bool flag": (np.True_, False, 1.0,
                                                                     a, b, None),
        "int alpha": (False, False, 1, a, b, None),
        "numpy float alpha": (False, False, np.float64(1.0), a, b, None),
        "list a": (False, False, 1.0, a.tolist(), b, None),
        "subclass a": (False, False, 1.0, a.view(Sub), b, None),
        "1-D a": (False, False, 1.0, a.ravel(), b, None),
        "3-D b": (False, False, 1.0, a, b[None], None),
        "int a": (False, False, 1.0, a.astype(np.int32), b, None),
        "float16 a": (False, False, 1.0, a.astype(np.float16), b, None),
        "complex b": (False, False, 1.0, a, b.astype(np.complex64), None),
        "byte-swapped a": (False, False, 1.0, a.astype(a.dtype.newbyteorder()), b, None),
        "mixed dtypes": (False, False, 1.0, a, b.astype(other), None),
        "inner dims": (False, False, 1.0, a, a, None),
        "zero dim": (False, False, 1.0, a[:0], b, None),
        "F-contiguous a": (False, False, 1.0, np.asfortranarray(a), b, None),
        "misaligned a": (False, False, 1.0, _view_at(a, 1), b, None),
        "read-only out": (False, False, 1.0, a, b, ro),
        "out wrong shape": (False, False, 1.0, a, b, np.zeros((3, 6), dtype)),
        "out wrong dtype": (False, False, 1.0, a, b, np.zeros((6, 3), other)),
        "out a list": (False, False, 1.0, a, b, [[0.0] * 3] * 6),
        "out F-contiguous": (False, False, 1.0, a, b, np.zeros((3, 6), dtype).T),
    }
    for name, args in declined.items():
        assert g(*args) is None, name
    assert not ro.any()
    s = rng.standard_normal((5, 5)).astype(dtype)
    x = s.copy()
    assert g(False, False, 1.0, x, s, x) is None  # out is a: refused before any write
    np.testing.assert_array_equal(x, s)
    with pytest.raises(TypeError, match="6 arguments"):
        g(False, False, 1.0, a, b)
    with pytest.raises(RuntimeError, match="already bound to other addresses"):
        _fastcall.bind(1, 1, np.ndarray, np.empty, np.dtype(np.float32), np.dtype(np.float64))
    # a product no array can hold (C-contiguous views of a few bytes, never read):
    # declined, and ops.matmul's general path names the result it cannot allocate
    size = np.dtype(dtype).itemsize
    tall = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), (2**32, 1), (size, size))
    wide = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), (1, 2**32), (size, size))
    assert g(False, False, 1.0, tall, wide, None) is None
    with pytest.raises(MemoryError, match="the result"):
        with fastnn.use_backend("c"):
            ops.matmul(tall, wide)


def test_fastcall_reimport(tmp_path):
    """fastnn imported again after its modules left sys.modules (test runners and
    autoreloaders do this) binds fastnn._fastcall again (a no-op: C keeps the module's
    state) and keeps the C backend."""
    code = ("import sys, numpy as np, fastnn\n"
            "from fastnn import ops\n"
            "assert fastnn.backend_info()['active'] == 'c'\n"
            "for name in [n for n in sys.modules if n.startswith('fastnn')]:\n"
            "    del sys.modules[name]\n"
            "import fastnn\n"
            "from fastnn import ops\n"
            "info = fastnn.backend_info()\n"
            "assert info['active'] == 'c', info\n"
            "a = np.arange(6, dtype=np.float32).reshape(2, 3)\n"
            "assert (ops.matmul(a, a.T.copy()) == a @ a.T).all()\n")
    env = {k: v for k, v in os.environ.items() if k != "FASTNN_BACKEND"}
    # (cwd outside the checkout: `-c` puts the cwd first on sys.path, and CI's tests import
    # the installed package, not the source tree, which has no compiled extensions)
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_fastcall_threads():
    """Products large enough to run without the GIL, from four Python threads at once."""
    rng = np.random.default_rng(12)
    pairs = [(rng.standard_normal((200, 150)).astype(np.float32),
              rng.standard_normal((150, 120)).astype(np.float32)) for _ in range(4)]
    wants = [a.astype(np.float64) @ b for a, b in pairs]
    errors = []

    def run(i):
        try:
            a, b = pairs[i]
            for _ in range(20):
                np.testing.assert_allclose(_fastcall.gemm(False, False, 1.0, a, b, None),
                                           wants[i], rtol=_tol(np.float32, 150),
                                           atol=_tol(np.float32, 150) * 50)
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_fast_path(dtype, monkeypatch):
    """ops.matmul gives a plain call to the C backend's gemm_fast, and every other call to
    its general checks (gemm_fast declines it having computed nothing), with the same
    results as NumPy either way."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((7, 9)).astype(dtype)
    b = rng.standard_normal((9, 4)).astype(dtype)
    want = a.astype(np.float64) @ b
    tol = dict(rtol=_tol(dtype, 9), atol=_tol(dtype, 9) * np.abs(want).max())
    taken = []
    fast = c_backend.gemm_fast

    def spy(*args):
        c = fast(*args)
        taken.append(c is not None)
        return c

    monkeypatch.setattr(c_backend, "gemm_fast", spy)
    with fastnn.use_backend("c"):
        out = np.full((7, 4), np.nan, dtype)
        plain = [lambda: ops.matmul(a, b), lambda: ops.matmul(a, b, out=out),
                 lambda: ops.matmul(a.T.copy(), b, trans_a=True),
                 lambda: ops.matmul(a, b.T.copy(), trans_b=True, alpha=1.0),
                 lambda: ops.matmul(a[:, :], b)]
        for f in plain:
            np.testing.assert_allclose(f(), want, **tol)
        np.testing.assert_allclose(out, want, **tol)
        assert taken == [True] * len(plain)
        np.testing.assert_allclose(ops.matmul(a, b, alpha=-2.0), -2 * want, **tol)
        declined = {  # each (call, what gemm_fast saw: [] not called, [False] declined)
            "a F-contiguous": (lambda: ops.matmul(np.asfortranarray(a), b), [False]),
            "b strided": (lambda: ops.matmul(a, np.repeat(b, 2, axis=1)[:, ::2]), [False]),
            "a misaligned": (lambda: ops.matmul(_view_at(a, 1), b), [False]),
            "out misaligned": (lambda: ops.matmul(a, b, out=_view_at(np.zeros((7, 4), dtype),
                                                                     1)), [False]),
            "out F-contiguous": (lambda: ops.matmul(a, b, out=np.zeros((4, 7), dtype).T),
                                 [False]),
            "beta given": (lambda: ops.matmul(a, b, beta=1.0, out=np.zeros((7, 4), dtype)),
                           []),
            "int alpha": (lambda: ops.matmul(a, b, alpha=1), []),
            "lists": (lambda: ops.matmul(a.tolist(), b.tolist()), []),
        }
        for name, (call, seen) in declined.items():
            taken.clear()
            np.testing.assert_allclose(call(), want, err_msg=name, **tol)
            assert taken == seen, name
        # out that is, or overlaps, an input: declined by C (-1), computed from a copy
        s = rng.standard_normal((9, 9)).astype(dtype)
        want_ss = s.astype(np.float64) @ s
        tol_s = dict(rtol=_tol(dtype, 9), atol=_tol(dtype, 9) * np.abs(want_ss).max())
        for make_out in (lambda x: x, lambda x: x[:, :]):
            x = s.copy()
            taken.clear()
            np.testing.assert_allclose(ops.matmul(x, s, out=make_out(x)), want_ss, **tol_s)
            np.testing.assert_allclose(x, want_ss, **tol_s)
            assert taken == [False]
            x = s.copy()
            np.testing.assert_allclose(ops.matmul(s, x, out=make_out(x)), want_ss, **tol_s)
        # read-only out, wrong out dtype, mismatched shapes: the general checks' errors
        ro = np.zeros((7, 4), dtype)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="out must be writeable"):
            ops.matmul(a, b, out=ro)
        with pytest.raises(TypeError, match="out has dtype"):
            ops.matmul(a, b, out=np.zeros((7, 4), np.float32 if dtype == np.float64
                                          else np.float64))
        with pytest.raises(ValueError, match="inner dimensions differ"):
            ops.matmul(a, a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_workspace_alignment(isa, dtype, monkeypatch):
    """The convolutions move their workspace to a 64-byte boundary themselves (NumPy's is
    16 bytes past one, where the sparse pooled backward's vector loads straddled cache
    lines): the same bits from a workspace at every element offset within 64 bytes, and
    nothing written past the size the workspace query asked for."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 9, 9, 16)).astype(dtype)
    w = (rng.standard_normal((3, 3, 16, 24)) * 0.2).astype(dtype)
    b = rng.standard_normal(24).astype(dtype)
    dy = rng.standard_normal((4, 7, 7, 24)).astype(dtype)
    canary = 7
    real_workspace = c_backend._workspace

    def run(offset):
        def workspace(nelems, dt):
            buf = np.full(offset + int(nelems) + canary, 1.25, dtype=dt)
            ws = buf[offset:offset + int(nelems)]
            used.append((buf, offset + int(nelems)))
            return c_backend.ffi.from_buffer(c_backend._ARRAY[dt], ws)

        used = []
        monkeypatch.setattr(c_backend, "_workspace", workspace)
        with fastnn.use_backend("c"):
            y = ops.conv2d_forward(x, w, b, activation="relu")
            grads = ops.conv2d_backward(dy, x, w)
            yp, am = ops.conv2d_maxpool_forward(x, w, b, activation="relu")
            pgrads = ops.conv2d_maxpool_backward(yp, am, x, w)
        monkeypatch.setattr(c_backend, "_workspace", real_workspace)
        for buf, end in used:
            assert np.all(buf[end:] == 1.25), (isa, offset, "wrote past the workspace")
        return [y, *grads, yp, am, *pgrads]

    ref = run(0)
    for offset in (1, 2, 3, 5, 8, 15 if dtype == np.float32 else 7):
        for r, got in zip(ref, run(offset)):
            np.testing.assert_array_equal(got, r, err_msg=f"{isa} offset {offset}")


# fnn_fma_peak (the benchmark's ceiling): accumulators and lanes of each ISA's loop (the
# GEMM micro-kernel's register tile; the portable loop's scalars)
_FMA_LOOP = {("generic", np.float32): (32, 1), ("generic", np.float64): (16, 1),
             ("avx2", np.float32): (12, 8), ("avx2", np.float64): (12, 4),
             ("avx512", np.float32): (24, 16), ("avx512", np.float64): (24, 8),
             ("avx512_256", np.float32): (12, 8), ("avx512_256", np.float64): (12, 4)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_fma_peak_loop_counts_and_sums(isa, dtype, threads, restore_threads):
    fastnn.set_num_threads(threads)
    nacc, lanes = _FMA_LOOP[(isa, dtype)]
    iters = 1001
    flops, sums = c_backend.fma_peak(dtype, iters, 1.0, 0.5)
    ran = int(np.count_nonzero(~np.isnan(sums)))
    assert 1 <= ran <= threads and sums.dtype == dtype
    assert flops == ran * iters * 2 * nacc * lanes
    # accumulator j starts at j and adds 0.5 per round (exact in both precisions)
    expected = sum(j + 0.5 * iters for j in range(nacc))
    assert np.all(sums[:ran] == expected)
    # the arithmetic is real: a = 2 doubles every accumulator each round
    _, sums2 = c_backend.fma_peak(dtype, 3, 2.0, 0.0)
    assert sums2[0] == 8 * sum(range(nacc))
    # NaN propagates
    assert np.isnan(c_backend.fma_peak(dtype, 5, float("nan"), 0.5)[1][0])


@pytest.mark.parametrize("bad, err", [(0, ValueError), (-3, ValueError), (2.5, ValueError),
                                      (True, ValueError), (2**41, ValueError),
                                      ("10", ValueError)])
def test_fma_peak_rejects_bad_iters(bad, err):
    with pytest.raises(err, match="iters"):
        c_backend.fma_peak(np.float32, bad)
    with pytest.raises(TypeError, match="dtype"):
        c_backend.fma_peak(np.int32, 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,alpha", [("sigmoid", 0.0), ("silu", 0.0), ("elu", 1.0),
                                        ("selu", 0.0), ("leaky_relu", 0.2),
                                        ("gelu", 0.0), ("relu6", 0.0), ("hard_sigmoid", 0.0),
                                        ("hard_silu", 0.0), ("celu", 0.5), ("tanh", 0.0)])
def test_activation_each_isa(isa, kind, alpha, dtype):
    """The exp-based activations' loops: the portable build (generic) and the AVX2 one
    (every other ISA) give the same bits (a NaN's sign aside: which operand of x * NaN
    the compiler puts first decides it, and builds differ; the sanitizer build's did),
    and the NumPy reference's values."""
    rng = np.random.default_rng(11)
    x = rng.normal(0, 5, 10007).astype(dtype)
    x[:5] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    dy = rng.standard_normal(x.size).astype(dtype)
    with fastnn.use_backend("c"):
        y = ops.activation(x, kind, alpha=alpha)
        dx = ops.activation_backward(dy, x, y, kind, alpha=alpha)
        c_backend.set_isa("generic")
        try:
            y0 = ops.activation(x, kind, alpha=alpha)
            dx0 = ops.activation_backward(dy, x, y, kind, alpha=alpha)
        finally:
            c_backend.set_isa(isa)
    for a, b in ((y, y0), (dx, dx0)):
        nan = np.isnan(a)
        assert (nan == np.isnan(b)).all()
        assert a[~nan].tobytes() == b[~nan].tobytes()
    with fastnn.use_backend("numpy"), np.errstate(all="ignore"):
        y_ref = ops.activation(x, kind, alpha=alpha)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol * np.nanmax(np.abs(y_ref[5:])))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_each_isa(isa, dtype):
    """dropout's portable loops (generic) and the AVX2 Philox rounds (every other ISA):
    the same integer words, so the same bits."""
    x = np.random.default_rng(12).standard_normal(10_007).astype(dtype)
    with fastnn.use_backend("c"):
        y, m = ops.dropout(x, 0.4, 2**40 + 3)
        c_backend.set_isa("generic")
        try:
            y0, m0 = ops.dropout(x, 0.4, 2**40 + 3)
        finally:
            c_backend.set_isa(isa)
    assert y.tobytes() == y0.tobytes() and m.tobytes() == m0.tobytes()
