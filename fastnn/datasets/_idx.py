"""Reading IDX files (the format of MNIST and Fashion-MNIST), and finding them on disk.

The IDX format
--------------
An IDX file is a big-endian header followed by the raw array::

    magic   4 bytes   0x00 0x00 <type code> <number of dimensions d>
    dims    d x 4     unsigned 32-bit big-endian sizes, outermost first
    data    prod(dims) elements of the type, big-endian, C order

Type codes: 0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64. MNIST images are ``0x00000803`` (unsigned bytes, 3 dimensions: N x 28 x 28)
and labels ``0x00000801`` (unsigned bytes, 1 dimension: N). Files may be gzipped; gzip is
detected from the content (``1f 8b``), not from the file name.

Nothing here downloads anything: the data sets are read only from local directories.
"""
from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils._args import FilePath as PathLike
from ..utils._args import check_path, expand_user
from ..utils._files import DAMAGED_ARCHIVE_ERRORS, atomic_write, special_kind

__all__ = ["load_idx"]

#: IDX type code -> big-endian NumPy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_DTYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
                0x0D: "float32", 0x0E: "float64"}

MAGIC_IMAGES = 0x00000803  #: unsigned bytes, 3 dimensions (N, rows, cols)
MAGIC_LABELS = 0x00000801  #: unsigned bytes, 1 dimension (N,)

_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------- reading
#: Compressed bytes read from a gzip file at a time.
_IN_CHUNK = 1 << 18
#: Most bytes one decompression step produces: a step never holds more than this beyond
#: what it may keep.
_OUT_CHUNK = 1 << 20
#: Decompressed bytes read before the header is parsed: any header (at most 4 + 4 * 255
#: bytes), and a small file whole, so its gzip errors come before its IDX errors.
_FIRST_CHUNK = 1 << 16
#: NumPy's limit on an array's dimensions.
_MAX_DIMS = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32


class _Gunzip:
    """Incremental decompression of a (possibly multi-member) gzip file ``f``: :meth:`read`
    produces as many bytes as asked for, no more (so a small file declaring a huge size is
    never decompressed whole); ValueError naming ``name`` if the data are corrupt."""

    def __init__(self, f, name: str) -> None:
        self._f, self._name = f, name
        self._d = zlib.decompressobj(wbits=31)  # 16 + MAX_WBITS: gzip header and trailer
        self._pending = b""   # compressed bytes read from the file, not yet given to _d
        self.done = False

    def read(self, buf: bytearray, n: int) -> None:
        """Append up to ``n`` more decompressed bytes to ``buf`` (a few hundred more at the
        end of the file; fewer only when the stream ends)."""
        want = len(buf) + n
        while len(buf) < want and not self.done:
            d = self._d
            data = d.unconsumed_tail or self._pending or self._f.read(_IN_CHUNK)
            self._pending = b""
            try:
                if data:
                    buf += d.decompress(data, min(want - len(buf), _OUT_CHUNK))
                else:   # the end of the file: what zlib still holds (at most a few hundred bytes)
                    buf += d.flush()
            except zlib.error as exc:
                raise ValueError(f"{self._name}: corrupt gzip data ({exc})") from None
            if d.eof:
                self._next_member()
            elif not data:
                raise ValueError(f"{self._name}: truncated gzip data (the compressed stream "
                                 f"ends before its end marker; the file is incomplete)")

    def _next_member(self) -> None:
        """After a gzip member: another member, the end, zero padding (tolerated, as gzip(1)
        does) or garbage (ValueError)."""
        rest = self._d.unused_data
        while len(rest) < len(_GZIP_MAGIC):
            more = self._f.read(_IN_CHUNK)
            if not more:
                break
            rest += more
        if rest.startswith(_GZIP_MAGIC):
            self._d = zlib.decompressobj(wbits=31)
            self._pending = rest
            return
        self.done = True
        size, garbage = len(rest), bool(rest.strip(b"\x00"))
        while True:
            more = self._f.read(_IN_CHUNK)
            if not more:
                break
            size += len(more)
            garbage = garbage or bool(more.strip(b"\x00"))
        if garbage:
            raise ValueError(f"{self._name}: {size} bytes of garbage after the gzip data")


def _header(buf, name: str, expected_magic: int | None = None) -> tuple:
    """Parse the IDX header at the start of ``buf``: ``(magic, dims, dtype, header size,
    data size)``. ValueError naming ``name`` for any malformation."""
    n = len(buf)
    if n < 4:
        raise ValueError(f"{name}: truncated IDX header ({n} bytes; an IDX file starts with "
                         f"a 4-byte magic number)")
    magic = int.from_bytes(bytes(buf[:4]), "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"{name}: bad magic number 0x{magic:08X}, expected "
                         f"0x{expected_magic:08X} ({_describe_magic(expected_magic)})"
                         + (f"; this file holds {_describe_magic(magic)}"
                            if _valid_magic(magic) else "; this is not an IDX file"))
    if not _valid_magic(magic):
        raise ValueError(f"{name}: bad magic number 0x{magic:08X}: not an IDX file (the "
                         f"first two bytes must be 0 and the third a type code, one of "
                         f"{', '.join(f'0x{c:02X}' for c in IDX_DTYPES)})")
    code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if ndim == 0:
        raise ValueError(f"{name}: IDX header declares 0 dimensions")
    if ndim > _MAX_DIMS:
        raise ValueError(f"{name}: IDX header declares {ndim} dimensions; NumPy arrays have "
                         f"at most {_MAX_DIMS}")
    header = 4 + 4 * ndim
    if n < header:
        raise ValueError(f"{name}: truncated IDX header ({n} bytes, but {ndim} dimensions "
                         f"need {header})")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    # (a zero among the dimensions makes any others 0 bytes of data, but NumPy still
    # refuses a shape whose other dimensions multiply past its index range)
    if math.prod(d for d in dims if d) * dtype.itemsize >= 1 << 62:
        raise ValueError(f"{name}: IDX header declares shape {dims}, too large for any "
                         f"array")
    return magic, dims, dtype, header, math.prod(dims) * dtype.itemsize


def _parse(buf, name: str, expected_magic: int | None = None, *,
           size: int | None = None) -> tuple[int, np.ndarray]:
    """Parse IDX bytes ``buf`` into ``(magic, array)``; the array is a view of ``buf``
    (big-endian dtype). ValueError naming ``name`` for any malformation. ``size``: the
    whole file's length when ``buf`` holds only its start (then only the sizes are
    checked)."""
    magic, dims, dtype, header, want = _header(buf, name, expected_magic)
    have = (len(buf) if size is None else size) - header
    if have < want:
        raise ValueError(f"{name}: truncated data: the header declares shape {dims} "
                         f"({want} bytes of data) but the file holds only {have} bytes "
                         f"after the header")
    if have > want:
        raise ValueError(f"{name}: {have - want} unexpected bytes after the data (the "
                         f"header declares shape {dims}, {want} bytes of data)")
    arr = np.frombuffer(buf, dtype=dtype, count=math.prod(dims), offset=header)
    return magic, arr.reshape(dims)


_MAX_DEFLATE_RATIO = 1032   # deflate's largest expansion (258-byte matches in ~2 bits)


def _gunzip_idx(f, name: str, expected_magic: int | None = None) -> bytearray:
    """The decompressed IDX bytes of the gzip file ``f``: decompressed step by step, the
    header parsed first, and stopped (ValueError) as soon as more than the size it
    declares has come out: a small file that inflates to gigabytes is never inflated."""
    stream = _Gunzip(f, name)
    buf = bytearray()
    stream.read(buf, _FIRST_CHUNK)
    if not stream.done:   # buf holds the whole header
        _, dims, _, header, want = _header(buf, name, expected_magic)
        # deflate expands at most 1032-fold: a size past that cannot be in this file, and
        # inflating toward it would take that memory before the truncation shows
        try:
            packed = os.fstat(f.fileno()).st_size
        except (AttributeError, OSError, ValueError):   # not a real file: no bound known
            packed = None
        if packed is not None and header + want > _MAX_DEFLATE_RATIO * packed + 1024:
            raise ValueError(f"{name}: truncated or corrupt data: the header declares shape "
                             f"{dims} ({want} bytes of data) but a gzip file of {packed} "
                             f"bytes inflates to at most about {_MAX_DEFLATE_RATIO * packed} "
                             f"bytes")
        stream.read(buf, header + want + 1 - len(buf))
        if not stream.done and len(buf) > header + want:
            raise ValueError(f"{name}: more than {len(buf) - header - want} unexpected bytes "
                             f"after the data (the header declares shape {dims}, {want} "
                             f"bytes of data; decompression stopped there)")
    return buf


def _valid_magic(magic: int) -> bool:
    return magic >> 16 == 0 and (magic >> 8) & 0xFF in IDX_DTYPES


def _describe_magic(magic: int) -> str:
    code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    return f"{_DTYPE_NAMES[code]} data with {ndim} dimension{'s' * (ndim != 1)}"


def read_idx(file: PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a writable native-endian array.

    Internal form of :func:`load_idx` that can also insist on a magic number.
    """
    path = Path(check_path(file, "file"))
    name = str(path)
    kind = special_kind(os.stat(path).st_mode)
    if kind:   # (opening a FIFO waits for a writer; a pipe's size is 0, it cannot seek)
        raise ValueError(f"{name}: is {kind}, not a regular file: IDX files are read from "
                         f"regular files (save the data to one first)")
    with open(path, "rb") as f:
        head = f.read(_FIRST_CHUNK)
        if head[:2] == _GZIP_MAGIC:
            f.seek(0)
            buf = _gunzip_idx(f, name, expected_magic)
        else:
            # Plain file: the header checked against the file's size first (a huge or
            # foreign file is refused before anything is allocated), then the rest read
            # straight into a writable buffer, no extra copy.
            size = os.fstat(f.fileno()).st_size
            if len(head) < size:
                header, want = _header(head, name, expected_magic)[3:]
                if size != header + want:
                    _parse(head, name, expected_magic, size=size)   # says how they differ
            buf = bytearray(max(size, len(head)))
            buf[:len(head)] = head
            got = len(head) + (f.readinto(memoryview(buf)[len(head):]) or 0)
            del buf[got:]
    _, arr = _parse(buf, name, expected_magic)
    if arr.dtype.itemsize > 1 or arr.dtype.byteorder not in "=|":
        return arr.astype(arr.dtype.newbyteorder("="))  # native byte order (a copy)
    return arr.view(arr.dtype.newbyteorder("="))   # a view of the writable buffer


def load_idx(file: PathLike) -> np.ndarray:
    """Read one IDX file, gzipped or not.

    Parameters
    ----------
    file : str, bytes or os.PathLike
        Path of the file, e.g. ``"train-images-idx3-ubyte.gz"``. Gzip is detected from the
        content, so the name need not end in ``.gz``.

    Returns
    -------
    numpy.ndarray
        A writable array of the shape the header declares, e.g. ``(60000, 28, 28)`` for
        MNIST training images or ``(60000,)`` for its labels, in native byte order with the
        type the header declares (``uint8`` for MNIST: type code 0x08).

    Raises
    ------
    FileNotFoundError
        If ``file`` does not exist.
    ValueError
        If the file is not a well-formed IDX file: bad magic number, more dimensions than
        NumPy takes, truncated header or data, extra bytes after the data (a gzip file is
        decompressed only up to the size its header declares), or corrupt gzip data. The
        message names the file.

    Examples
    --------
    >>> from fastnn.datasets import load_idx
    >>> y = load_idx("t10k-labels-idx1-ubyte.gz")  # doctest: +SKIP
    >>> y.shape, y.dtype                             # doctest: +SKIP
    ((10000,), dtype('uint8'))
    """
    return read_idx(file)


def idx_bytes(array: np.ndarray, *, compress: bool = False, compresslevel: int = 9) -> bytes:
    """``array`` encoded as an IDX file (gzipped if ``compress``: no file name and mtime 0 in
    the gzip header, so the output is reproducible). Used by the sample tool and the tests."""
    import gzip

    array = np.asarray(array)
    for code, dt in IDX_DTYPES.items():
        if dt.kind == array.dtype.kind and dt.itemsize == array.dtype.itemsize:
            break
    else:
        raise TypeError(f"IDX cannot store dtype {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=dt).tobytes()
    return gzip.compress(data, compresslevel=compresslevel, mtime=0) if compress else data


def write_idx(file: PathLike, array: np.ndarray, *, compress: bool | None = None,
              compresslevel: int = 9) -> None:
    """Write ``array`` as an IDX file, gzipped if ``compress`` (by default: if the name ends
    in ``.gz``), atomically (utils._files.atomic_write). See :func:`idx_bytes`."""
    path = check_path(file, "file")
    if compress is None:
        compress = path.endswith(".gz")
    data = idx_bytes(array, compress=compress, compresslevel=compresslevel)
    atomic_write(path, lambda fh: fh.write(data), name="file")


# --------------------------------------------------------------------------- finding
#: The four files of an MNIST-style data set: (split, kind) -> base name.
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def spellings(base: str) -> list[str]:
    """Accepted file names for ``base`` (e.g. ``train-images-idx3-ubyte``), preferred first:
    plain before gzipped, ``-idx3-ubyte`` before ``.idx3-ubyte``."""
    dotted = base.replace("-idx", ".idx")
    return [base, dotted, base + ".gz", dotted + ".gz"]


def find_in_dir(directory: Path) -> tuple[dict | None, str]:
    """The four files in ``directory`` as ``{(split, kind): Path}``, or ``(None, why)``."""
    if not directory.exists():
        return None, "does not exist"
    if not directory.is_dir():
        return None, "is not a directory"
    found, missing = {}, []
    for key, base in FILES.items():
        for candidate in spellings(base):
            p = directory / candidate
            if p.is_file():
                found[key] = p
                break
        else:
            missing.append(base + "[.gz]")
    if missing:
        if not found:
            return None, "none of the four files"
        return None, "missing " + ", ".join(missing)
    return found, ""


def search_dirs(name: str, path: PathLike | None, extra: Sequence[PathLike] = ()) -> list[Path]:
    """Directories searched for data set ``name``, in order.

    ``path`` if given (and then only it); else ``$FASTNN_DATA_DIR/<name>``,
    ``$FASTNN_DATA_DIR``, ``~/.fastnn/datasets/<name>`` and then ``extra``.
    """
    if path is not None:
        return [Path(check_path(path, "path"))]
    dirs = []
    env = os.environ.get("FASTNN_DATA_DIR", "").strip()
    if env:
        root = Path(expand_user(env, "FASTNN_DATA_DIR"))
        dirs += [root / name, root]
    try:
        dirs.append(Path("~").expanduser() / ".fastnn" / "datasets" / name)
    except RuntimeError:  # no home directory (HOME unset, a uid without a passwd entry)
        pass
    dirs += [Path(os.fspath(d)) for d in extra]
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def locate(name: str, dirs: Sequence[Path]) -> tuple[dict | None, list[str]]:
    """First directory of ``dirs`` holding all four files: ``(files, [])``, or
    ``(None, report lines)`` saying what each directory lacked."""
    report = []
    for d in dirs:
        files, why = find_in_dir(d)
        if files is not None:
            return files, []
        report.append(f"  - {d}  ({why})")
    return None, report


def file_list_text() -> str:
    return ", ".join(FILES.values())


def load_split(files: dict, split: str, *, num_classes: int = 10,
               image_shape: tuple[int, int] = (28, 28)) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one split's images ``(N, 28, 28)`` and labels ``(N,)`` (uint8)."""
    img_path, lab_path = files[(split, "images")], files[(split, "labels")]
    x = read_idx(img_path, MAGIC_IMAGES)
    check_images(x, img_path, image_shape, "the header declares")
    y = read_idx(lab_path, MAGIC_LABELS)
    return x, check_labels(y, x, lab_path, img_path, num_classes)


def check_images(x: np.ndarray, name, image_shape: tuple[int, int] = (28, 28),
                 source: str = "it holds") -> None:
    """``x`` must be N images of ``image_shape`` (ValueError naming ``name``)."""
    if x.shape[1:] != image_shape:
        raise ValueError(f"{name}: wrong image dimensions: {source} "
                         f"{x.shape[0]} images of {x.shape[1]}x{x.shape[2]} pixels, expected "
                         f"{image_shape[0]}x{image_shape[1]}")


def check_labels(y: np.ndarray, x: np.ndarray, lab_path, img_path,
                 num_classes: int = 10) -> np.ndarray:
    """``y``, one label in 0..num_classes-1 per image of ``x`` (ValueError naming them)."""
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{lab_path}: holds {y.shape[0]} labels but {img_path} holds "
                         f"{x.shape[0]} images; the two files must have the same count")
    if y.size and int(y.max()) >= num_classes:
        bad = np.flatnonzero(y >= num_classes)
        raise ValueError(f"{lab_path}: invalid labels: {bad.size} label(s) outside "
                         f"0..{num_classes - 1}, the first is {int(y[bad[0]])} at index "
                         f"{int(bad[0])}")
    return y


# --------------------------------------------------------------------------- Keras's files
#: The arrays of a Keras ``mnist.npz``.
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: Largest member of such a file read (MNIST's is 47 MB): a larger one is refused before
#: NumPy allocates what its header declares.
_NPZ_MEMBER_MAX = 1 << 32


def keras_datasets_dir() -> Path | None:
    """Where Keras keeps the data sets it downloads: ``$KERAS_HOME/datasets``, else
    ``~/.keras/datasets`` (None without a home directory)."""
    home = os.environ.get("KERAS_HOME", "").strip()
    if home:
        return Path(expand_user(home, "KERAS_HOME")) / "datasets"
    try:
        return Path("~").expanduser() / ".keras" / "datasets"
    except RuntimeError:
        return None


def load_npz(path: Path) -> tuple[tuple[np.ndarray, np.ndarray],
                                  tuple[np.ndarray, np.ndarray]]:
    """``((x_train, y_train), (x_test, y_test))`` from a Keras ``mnist.npz`` (the file
    ``keras.datasets.mnist.load_data`` downloads), checked as the IDX files are; ValueError
    naming the file if it is not one."""
    import zipfile

    name = str(path)
    kind = special_kind(os.stat(path).st_mode)
    if kind:
        raise ValueError(f"{name}: is {kind}, not a regular file")
    try:
        with zipfile.ZipFile(path) as zf:
            sizes = {i.filename: i.file_size for i in zf.infolist()}
        members = {k: sizes.get(k + ".npy") for k in NPZ_KEYS}
        missing = [k for k, size in members.items() if size is None]
        if missing:
            raise ValueError(f"{name}: not a Keras MNIST file: it has no {', '.join(missing)} "
                             f"(it holds {', '.join(sorted(sizes)) or 'nothing'})")
        big = [k for k, size in members.items() if size > _NPZ_MEMBER_MAX]
        if big:
            raise ValueError(f"{name}: {big[0]} declares {members[big[0]]} bytes, more than "
                             f"an MNIST-style data set holds")
        with np.load(path, allow_pickle=False) as f:
            a = {k: np.array(f[k]) for k in NPZ_KEYS}
    except DAMAGED_ARCHIVE_ERRORS + (KeyError,) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(name):
            raise
        raise ValueError(f"{name}: not a readable Keras .npz file ({exc})") from None
    out = []
    for split in ("train", "test"):
        xk, yk = f"x_{split}", f"y_{split}"
        x, y = a[xk], a[yk]
        if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError(f"{name}: {xk} must be uint8 images (N, 28, 28) and {yk} "
                             f"integer labels (N,), received {x.dtype} {x.shape} and "
                             f"{y.dtype} {y.shape}")
        check_images(x, f"{name} ({xk})")
        y = check_labels(y, x, f"{name} ({yk})", f"{name} ({xk})")
        if y.size and int(y.min()) < 0:
            raise ValueError(f"{name} ({yk}): invalid labels: negative values")
        out.append((x, y.astype(np.uint8)))
    return out[0], out[1]


def load_located(name: str, path: PathLike | None, *, extra: Sequence[PathLike] = (),
                 keras_dir: str | None = None, keras_npz: str | None = None):
    """``(data, [])`` for data set ``name``, or ``(None, report lines)`` if it is nowhere.

    ``path`` given: a directory of the four IDX files, or a file, read as a Keras ``.npz``
    (a relative name that is not here is looked for in Keras's download directory, as
    ``keras.datasets.mnist.load_data(path)`` does). Else :func:`search_dirs`'s directories,
    then Keras's ``keras_dir`` (where Keras keeps the IDX files it downloads), then
    ``extra``, and last Keras's ``keras_npz`` file."""
    kd = keras_datasets_dir()
    if path is not None:
        p = Path(check_path(path, "path"))
        if not p.exists() and not p.is_absolute() and kd is not None and (kd / p).exists():
            p = kd / p
        if p.exists() and not p.is_dir():
            return load_npz(p), []
        dirs = [p]
    else:
        keras = [kd / keras_dir] if kd is not None and keras_dir else []
        dirs = search_dirs(name, None, extra=[*keras, *extra])
    files, report = locate(name, dirs)
    if files is not None:
        return load_files(files), []
    if path is None and kd is not None and keras_npz:
        npz = kd / keras_npz
        if npz.exists():
            return load_npz(npz), []
        report.append(f"  - {npz}  (Keras's {keras_npz}: does not exist)")
    return None, report


def load_files(files: dict) -> tuple[tuple[np.ndarray, np.ndarray],
                                     tuple[np.ndarray, np.ndarray]]:
    """``((x_train, y_train), (x_test, y_test))`` from the four located files."""
    return load_split(files, "train"), load_split(files, "test")
