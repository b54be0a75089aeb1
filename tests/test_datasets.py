"""fastnn.datasets: IDX reading, search order, error messages, and the shipped sample.

Every test builds its own small IDX files in ``tmp_path``; none needs the real data sets
(``/usr/share/datasets`` may not exist on CI). ``HOME``, ``FASTNN_DATA_DIR`` and the Debian
directory are redirected for every test, so the machine's own data never leaks in. The one
test that compares the shipped sample with the full Fashion-MNIST is skipped without it.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastnn import datasets
from fastnn.datasets import _idx, fashion_mnist, load_idx, mnist

NAMES = {  # (split, kind) -> standard base name
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
REAL_DEBIAN_DIR = fashion_mnist.DEBIAN_DIR


# --------------------------------------------------------------------------- helpers
def idx(array, magic=None) -> bytes:
    """IDX bytes for a uint8/int/float array (``magic`` overrides the 4 magic bytes)."""
    data = _idx.idx_bytes(np.asarray(array))
    return data if magic is None else magic.to_bytes(4, "big") + data[4:]


def make_data(seed=0, n_train=20, n_test=10):
    """Small random ``((x_train, y_train), (x_test, y_test))`` in MNIST's format."""
    rng = np.random.default_rng(seed)
    return ((rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             rng.integers(0, 10, n_train, dtype=np.uint8)),
            (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
             rng.integers(0, 10, n_test, dtype=np.uint8)))


def write_dataset(directory: Path, data, *, gz=True, dotted=False) -> dict:
    """Write ``data`` as the four IDX files into ``directory``; returns {key: Path}."""
    directory.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = data
    arrays = {("train", "images"): xtr, ("train", "labels"): ytr,
              ("test", "images"): xte, ("test", "labels"): yte}
    paths = {}
    for key, base in NAMES.items():
        name = base.replace("-idx", ".idx") if dotted else base
        p = directory / (name + (".gz" if gz else ""))
        p.write_bytes(gzip.compress(idx(arrays[key])) if gz else idx(arrays[key]))
        paths[key] = p
    return paths


def assert_data_equal(got, want):
    (gxtr, gytr), (gxte, gyte) = got
    (wxtr, wytr), (wxte, wyte) = want
    for g, w in ((gxtr, wxtr), (gytr, wytr), (gxte, wxte), (gyte, wyte)):
        assert g.dtype == np.uint8 and g.shape == w.shape
        assert g.flags.writeable and g.flags.c_contiguous
        np.testing.assert_array_equal(g, w)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No FASTNN_DATA_DIR or KERAS_HOME, an empty HOME, and no Debian directory, unless a
    test sets them."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FASTNN_DATA_DIR", raising=False)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    return home


# --------------------------------------------------------------------------- load_idx
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    _idx.write_idx(p, a)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == gz
    b = load_idx(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.shape == a.shape
    assert b.flags.writeable
    np.testing.assert_array_equal(b, a)
    assert datasets.load_idx is load_idx
    assert np.array_equal(load_idx(str(p)), a)


def test_load_idx_header_layout(tmp_path):
    """The bytes really are MNIST's IDX layout: 0x00000801, N, then the data."""
    p = tmp_path / "labels"
    p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    np.testing.assert_array_equal(load_idx(p), np.array([7, 8, 9], np.uint8))
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 1, 2, 3, 4]))
    np.testing.assert_array_equal(load_idx(p), np.array([[[1, 2]], [[3, 4]]], np.uint8))
    p.write_bytes(bytes([0, 0, 0x0C, 1, 0, 0, 0, 1, 0, 0, 1, 2]))  # int32 big-endian
    assert load_idx(p).tolist() == [258]


def test_load_idx_gzip_detected_by_content(tmp_path):
    a = np.arange(10, dtype=np.uint8)
    p = tmp_path / "no-gz-suffix"
    p.write_bytes(gzip.compress(idx(a)))
    np.testing.assert_array_equal(load_idx(p), a)
    p2 = tmp_path / "multi.gz"  # a multi-member gzip stream (e.g. concatenated files)
    raw = idx(a)
    p2.write_bytes(gzip.compress(raw[:7]) + gzip.compress(raw[7:]))
    np.testing.assert_array_equal(load_idx(p2), a)


def test_load_idx_empty_and_missing(tmp_path):
    p = tmp_path / "empty.idx"
    p.write_bytes(idx(np.zeros((0, 28, 28), np.uint8)))
    assert load_idx(p).shape == (0, 28, 28)
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "nope")


@pytest.mark.parametrize("content, phrase", [
    (b"", "truncated IDX header"),
    (b"\x00\x00", "truncated IDX header"),
    (b"PK\x03\x04rest", "bad magic number 0x504B0304"),
    (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]), "bad magic number 0x00000701"),
    (bytes([0, 0, 8, 0]), "0 dimensions"),
    (bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0]), "truncated IDX header"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]), "truncated data"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]), "1 unexpected bytes after the data"),
], ids=["empty", "short-magic", "zip-magic", "bad-type", "0-dims", "short-dims",
        "truncated", "extra-byte"])
@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_corrupt(tmp_path, content, phrase, gz):
    p = tmp_path / "bad-file"
    p.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(ValueError) as exc:
        load_idx(p)
    assert str(p) in str(exc.value) and phrase in str(exc.value)


def test_load_idx_corrupt_gzip(tmp_path):
    blob = gzip.compress(idx(np.arange(1000, dtype=np.uint8) % 7))
    p = tmp_path / "t.gz"
    p.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(ValueError, match="truncated gzip data") as exc:
        load_idx(p)
    assert str(p) in str(exc.value)
    p.write_bytes(blob[:10] + bytes(b ^ 0xFF for b in blob[10:]))
    with pytest.raises(ValueError, match="corrupt gzip data"):
        load_idx(p)
    p.write_bytes(blob + b"garbage")
    with pytest.raises(ValueError, match="garbage after the gzip data"):
        load_idx(p)


# --------------------------------------------------------------------------- load_data
@pytest.mark.parametrize("module", [mnist, fashion_mnist])
@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (True, True),
                                        (False, True)])
def test_load_data_from_path(tmp_path, module, gz, dotted):
    data = make_data()
    write_dataset(tmp_path / "d", data, gz=gz, dotted=dotted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = module.load_data(path=tmp_path / "d")
    assert_data_equal(got, data)
    assert_data_equal(module.load_data(str(tmp_path / "d")), data)


def test_plain_file_preferred_over_gz(tmp_path):
    a, b = make_data(1), make_data(2)
    write_dataset(tmp_path / "d", a, gz=False)
    write_dataset(tmp_path / "d", b, gz=True)
    assert_data_equal(mnist.load_data(tmp_path / "d"), a)


def test_path_tilde_expanded(isolated):
    data = make_data()
    write_dataset(isolated / "mine", data)
    assert_data_equal(mnist.load_data("~/mine"), data)


@pytest.mark.parametrize("module", [mnist, fashion_mnist])
def test_search_order(tmp_path, monkeypatch, isolated, module):
    name = module.NAME
    env = tmp_path / "env"
    monkeypatch.setenv("FASTNN_DATA_DIR", str(env))
    places = [env / name, env, isolated / ".fastnn" / "datasets" / name]
    if module is fashion_mnist:
        places.append(fashion_mnist.DEBIAN_DIR)
    sets = [make_data(seed=10 + i) for i in range(len(places))]
    for place, data in zip(places, sets):
        write_dataset(place, data)
    # Each place wins while it holds the four files; removing one file moves to the next.
    for i, place in enumerate(places):
        assert_data_equal(module.load_data(), sets[i])
        (place / (NAMES[("test", "labels")] + ".gz")).unlink()
    # An explicit path is the only place searched, even with data elsewhere.
    write_dataset(env / name, sets[0])
    with pytest.raises(FileNotFoundError) as exc:
        module.load_data(path=tmp_path / "empty")
    msg = str(exc.value)
    assert str(tmp_path / "empty") in msg and str(env) not in msg


def test_debian_dir_is_the_real_one():
    assert REAL_DEBIAN_DIR == Path("/usr/share/datasets/fashion-mnist")


def test_home_without_env(isolated):
    data = make_data()
    write_dataset(isolated / ".fastnn" / "datasets" / "mnist", data, gz=False)
    assert_data_equal(mnist.load_data(), data)


@pytest.mark.parametrize("module", [mnist, fashion_mnist])
def test_missing_message(tmp_path, monkeypatch, isolated, module):
    env = tmp_path / "env"
    files = write_dataset(env, make_data())
    files[("train", "labels")].unlink()  # a partial set is not used
    monkeypatch.setenv("FASTNN_DATA_DIR", str(env))
    kwargs = {"sample": False} if module is fashion_mnist else {}
    with pytest.raises(FileNotFoundError) as exc:
        module.load_data(**kwargs)
    msg = str(exc.value)
    searched = [env / module.NAME, env, isolated / ".fastnn" / "datasets" / module.NAME]
    if module is fashion_mnist:
        searched.append(fashion_mnist.DEBIAN_DIR)
    for d in searched:
        assert f"  - {d}  (" in msg
    assert "missing train-labels-idx1-ubyte" in msg and "does not exist" in msg
    for base in NAMES.values():
        assert base in msg
    assert "never downloads" in msg and "place" in msg
    assert "FASTNN_DATA_DIR" in msg
    if module is fashion_mnist:
        assert "apt-get install dataset-fashion-mnist" in msg and "sample=True" in msg
    else:
        assert "apt-get" not in msg


def test_a_file_as_path_is_read_as_keras_npz(tmp_path):
    """A file given as ``path`` is Keras's mnist.npz (it was 'is not a directory'); one that
    is not gives a ValueError naming it."""
    f = tmp_path / "file"
    f.write_bytes(b"x")
    for module in (mnist, fashion_mnist):
        with pytest.raises(ValueError, match="not a readable Keras .npz file") as exc:
            module.load_data(f)
        assert str(f) in str(exc.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist.load_data(tmp_path / "no-such-dir")


def _npz(path, data=None, **changes):
    (xtr, ytr), (xte, yte) = data or make_data()
    arrays = dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def _same(got, data):
    for (x, y), (ex, ey) in zip(got, data):
        assert x.dtype == np.uint8 and y.dtype == np.uint8 and x.flags.writeable
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)


def test_keras_mnist_npz_where_keras_keeps_it(tmp_path, monkeypatch, isolated):
    """keras.datasets.mnist.load_data(path="mnist.npz") reads
    $KERAS_HOME/datasets/mnist.npz (else ~/.keras/datasets): fastnn reads the same file,
    by path, by Keras's relative name, and as the last place of its own search."""
    data = make_data(3)
    f = _npz(tmp_path / "elsewhere" / "m.npz", data)
    _same(mnist.load_data(f), data)
    _same(mnist.load_data(str(f)), data)
    cached = _npz(isolated / ".keras" / "datasets" / "mnist.npz", data)
    monkeypatch.chdir(tmp_path)
    _same(mnist.load_data("mnist.npz"), data)           # Keras's default argument
    _same(mnist.load_data(), data)                       # nothing else anywhere
    keras_home = tmp_path / "kh"
    other = make_data(4)
    _npz(keras_home / "datasets" / "mnist.npz", other)
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    _same(mnist.load_data(), other)
    cached.unlink()
    monkeypatch.delenv("KERAS_HOME")
    with pytest.raises(FileNotFoundError) as exc:
        mnist.load_data()
    assert f"{cached}  (Keras's mnist.npz: does not exist)" in str(exc.value)
    # fastnn's own directories come first
    write_dataset(isolated / ".fastnn" / "datasets" / "mnist", make_data(5))
    _npz(cached, data)
    _same(mnist.load_data(), make_data(5))


def test_keras_fashion_mnist_download_directory_is_searched(isolated, tmp_path):
    """Keras keeps Fashion-MNIST's four gzipped IDX files in ~/.keras/datasets/fashion-mnist:
    searched after fastnn's own directories, before Debian's."""
    data = make_data(6)
    write_dataset(isolated / ".keras" / "datasets" / "fashion-mnist", data, gz=True)
    _same(fashion_mnist.load_data(sample=False), data)


@pytest.mark.parametrize("changes, phrase", [
    (dict(y_test=None), "not a Keras MNIST file: it has no y_test"),
    (dict(x_train=np.zeros((20, 28, 28), np.float32)), "x_train must be uint8 images"),
    (dict(x_train=np.zeros((20, 32, 32), np.uint8)), "wrong image dimensions: it holds 20 "
                                                     "images of 32x32"),
    (dict(y_train=np.zeros(19, np.uint8)), "holds 19 labels but"),
    (dict(y_test=np.full(10, 10, np.uint8)), "label(s) outside 0..9"),
    (dict(y_test=np.full(10, -1, np.int64)), "negative"),
    (dict(y_test=np.array([None] * 10, dtype=object)), "not a readable Keras .npz file"),
], ids=["missing", "float-images", "32x32", "count", "label-10", "negative", "pickled"])
def test_corrupt_keras_npz(tmp_path, changes, phrase):
    f = _npz(tmp_path / "bad.npz", **changes)
    with pytest.raises(ValueError) as exc:
        mnist.load_data(f)
    assert str(f) in str(exc.value) and phrase in str(exc.value)


def _damaged_npz(path, how):
    """A Keras .npz whose zip directory or .npy header is damaged in ways zipfile and NumPy
    report with other exceptions than ValueError."""
    _npz(path)
    data = bytearray(path.read_bytes())
    cd = data.index(b"PK\x01\x02")                # the first central directory entry
    if how == "encrypted":                          # RuntimeError: password required
        data[cd + 8] |= 0x01
    elif how == "patched":                          # NotImplementedError: flag bit 5
        data[cd + 8] |= 0x20
    elif how == "method":                           # NotImplementedError: method 99
        data[cd + 10] = 99
    else:                                           # tokenize.TokenError: the .npy header
        with zipfile.ZipFile(path) as z:
            members = {n: bytearray(z.read(n)) for n in z.namelist()}
        h = members["x_train.npy"]
        h[h.index(b"}") + 2] = ord("(")
        with zipfile.ZipFile(path, "w") as z:
            for n, d in members.items():
                z.writestr(n, bytes(d))
        return path
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["encrypted", "patched", "method", "header"])
def test_damaged_keras_npz(tmp_path, how):
    """Every kind of damage gives the ValueError naming the file (zipfile's RuntimeError
    and NotImplementedError and NumPy's tokenize.TokenError escaped before)."""
    f = _damaged_npz(tmp_path / "bad.npz", how)
    with pytest.raises(ValueError, match="not a readable Keras .npz file") as exc:
        mnist.load_data(f)
    assert str(f) in str(exc.value)


# --------------------------------------------------------------------------- corruption
def _corrupt(tmp_path, key, content):
    files = write_dataset(tmp_path / "d", make_data(), gz=False)
    files[key].write_bytes(content)
    return files[key]


@pytest.mark.parametrize("key, content, phrase", [
    # labels file where images belong, and vice versa: wrong magic
    (("train", "images"), idx(np.zeros(20, np.uint8)),
     "bad magic number 0x00000801, expected 0x00000803"),
    (("test", "labels"), idx(np.zeros((10, 28, 28), np.uint8)),
     "bad magic number 0x00000803, expected 0x00000801"),
    (("train", "labels"), b"\xde\xad\xbe\xef" + bytes(20), "bad magic number 0xDEADBEEF"),
    (("train", "images"), idx(np.zeros((20, 28, 28), np.float32)),
     "expected 0x00000803"),
    (("test", "images"), idx(np.zeros((10, 28, 28), np.uint8))[:-1], "truncated data"),
    (("test", "images"), idx(np.zeros((10, 28, 28), np.uint8))[:10], "truncated IDX header"),
    (("train", "labels"), idx(np.zeros(20, np.uint8)) + b"\0", "unexpected bytes"),
    (("train", "images"), idx(np.zeros((20, 32, 32), np.uint8)),
     "wrong image dimensions: the header declares 20 images of 32x32 pixels, expected 28x28"),
    (("train", "labels"), idx(np.zeros(19, np.uint8)),
     "holds 19 labels but"),
    (("test", "labels"), idx(np.array([1, 2, 10, 3, 200, 0, 0, 0, 0, 0], np.uint8)),
     "2 label(s) outside 0..9, the first is 10 at index 2"),
], ids=["labels-as-images", "images-as-labels", "garbage-magic", "float-images",
        "truncated-data", "truncated-header", "extra-byte", "32x32", "count-mismatch",
        "label-10"])
def test_corrupt_dataset_files(tmp_path, key, content, phrase):
    p = _corrupt(tmp_path, key, content)
    for module in (mnist, fashion_mnist):
        with pytest.raises(ValueError) as exc:
            module.load_data(path=tmp_path / "d")
        assert str(p) in str(exc.value)
        assert phrase in str(exc.value)


def test_corrupt_gz_dataset_file(tmp_path):
    files = write_dataset(tmp_path / "d", make_data(), gz=True)
    p = files[("train", "images")]
    p.write_bytes(p.read_bytes()[:-30])
    with pytest.raises(ValueError, match="truncated gzip data") as exc:
        mnist.load_data(tmp_path / "d")
    assert str(p) in str(exc.value)


def test_corrupt_full_dataset_does_not_fall_back(tmp_path, monkeypatch):
    """A corrupt file found in the search is an error, not a reason to load the sample."""
    files = write_dataset(tmp_path / "env", make_data())
    files[("test", "labels")].write_bytes(gzip.compress(b"junk"))
    monkeypatch.setenv("FASTNN_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(ValueError, match="bad magic"):
        fashion_mnist.load_data()


# --------------------------------------------------------------------------- the sample
def check_sample(data):
    (xtr, ytr), (xte, yte) = data
    assert xtr.shape == (3000, 28, 28) and ytr.shape == (3000,)
    assert xte.shape == (1000, 28, 28) and yte.shape == (1000,)
    for a in (xtr, ytr, xte, yte):
        assert a.dtype == np.uint8 and a.flags.writeable
    assert np.bincount(ytr, minlength=10).tolist() == [300] * 10
    assert np.bincount(yte, minlength=10).tolist() == [100] * 10
    # Real images: dark background, bright pixels, every image different.
    assert xtr.max() == 255 and xtr[:, 0, 0].mean() < 10 and 50 < xtr.mean() < 100
    assert len({img.tobytes() for img in xtr}) == 3000
    # Original order kept: classes are interleaved, not sorted.
    assert not np.all(np.diff(ytr.astype(int)) >= 0)


def test_sample_shipped():
    d = fashion_mnist.SAMPLE_DIR
    assert d.is_dir(), f"sample not installed at {d}"
    sizes = {p.name: p.stat().st_size for p in d.iterdir()}
    assert set(sizes) == {"LICENSE"} | {b + ".gz" for b in NAMES.values()}
    assert sum(sizes.values()) < 2_000_000
    lic = (d / "LICENSE").read_text()
    assert "Copyright (c) 2017 Zalando SE" in lic and "MIT" in lic
    assert fashion_mnist.SAMPLE_SIZES == (3000, 1000)


def test_sample_true(recwarn):
    check_sample(fashion_mnist.load_data(sample=True))
    assert not [w for w in recwarn.list if issubclass(w.category, UserWarning)]


def test_sample_fallback_warns():
    with pytest.warns(UserWarning) as rec:
        data = fashion_mnist.load_data()
    check_sample(data)
    msg = str(rec[0].message)
    assert rec[0].filename == __file__  # stacklevel points at the caller
    assert "SAMPLE" in msg and "3000 training and 1000 test images" in msg
    assert "not the full 60000/10000" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "sample=True" in msg


def test_sample_fallback_only_when_full_missing(tmp_path, monkeypatch):
    data = make_data()
    write_dataset(fashion_mnist.DEBIAN_DIR, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_data_equal(fashion_mnist.load_data(), data)
        check_sample(fashion_mnist.load_data(sample=True))  # True: the sample regardless


def test_sample_false_and_explicit_path_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_data(sample=False)
    with pytest.raises(FileNotFoundError):  # an explicit path never falls back
        fashion_mnist.load_data(tmp_path / "nothing")
    with pytest.raises(ValueError, match="not both"):
        fashion_mnist.load_data(tmp_path, sample=True)
    with pytest.raises(TypeError):
        fashion_mnist.load_data(sample="yes")


@pytest.mark.skipif(not (REAL_DEBIAN_DIR / "train-labels-idx1-ubyte.gz").exists(),
                    reason="full Fashion-MNIST not installed (apt-get install "
                           "dataset-fashion-mnist)")
def test_sample_is_first_per_class_of_full_dataset():
    """The shipped sample is what tools/make_fashion_sample.py makes from the real data."""
    (xtr, ytr), (xte, yte) = fashion_mnist.load_data(REAL_DEBIAN_DIR)
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    (str_, sytr), (ste, syte) = fashion_mnist.load_data(sample=True)
    for x, y, sx, sy, n in ((xtr, ytr, str_, sytr, 300), (xte, yte, ste, syte, 100)):
        keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:n] for c in range(10)]))
        np.testing.assert_array_equal(sx, x[keep])
        np.testing.assert_array_equal(sy, y[keep])


def test_no_home_directory_is_not_an_error(tmp_path, monkeypatch):
    """With no home directory to find (HOME unset, a uid without a passwd entry, as in
    some containers) the search skips ~/.fastnn instead of failing before it looks."""
    data = make_data()
    write_dataset(tmp_path / "d", data)
    monkeypatch.setenv("FASTNN_DATA_DIR", str(tmp_path / "d"))

    real = Path.expanduser

    def no_home(self):
        if str(self).startswith("~"):
            raise RuntimeError("Could not determine home directory.")
        return real(self)

    monkeypatch.setattr(Path, "expanduser", no_home)
    assert_data_equal(mnist.load_data(), data)


def test_unexpandable_home_is_named(monkeypatch):
    """A '~user' with no home directory in FASTNN_DATA_DIR, path= or a file name: pathlib's
    bare 'RuntimeError: Could not determine home directory.' named nothing (found by a
    review); now a ValueError naming the variable or argument."""
    monkeypatch.setenv("FASTNN_DATA_DIR", "~no_such_user_fastnn")
    with pytest.raises(ValueError, match="FASTNN_DATA_DIR: cannot expand"):
        mnist.load_data()
    monkeypatch.delenv("FASTNN_DATA_DIR")
    with pytest.raises(ValueError, match="path: cannot expand"):
        mnist.load_data(path="~no_such_user_fastnn/x")


# --------------------------------------------------------------------------- hostile files
class _CountingDecompressor:
    """A zlib decompressor that adds up the bytes it produces."""

    def __init__(self, real, produced):
        self._real, self._produced = real, produced

    def decompress(self, *args, **kwargs):
        out = self._real.decompress(*args, **kwargs)
        self._produced.append(len(out))
        return out

    def flush(self, *args):
        out = self._real.flush(*args)
        self._produced.append(len(out))
        return out

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def produced(monkeypatch):
    """The sizes of the chunks every zlib decompressor produces during the test."""
    import zlib

    sizes = []
    real = zlib.decompressobj
    monkeypatch.setattr(zlib, "decompressobj",
                        lambda *a, **k: _CountingDecompressor(real(*a, **k), sizes))
    return sizes


@pytest.mark.parametrize("members", [1, 2])
def test_gzip_bomb_stops_at_the_declared_size(tmp_path, produced, members):
    """A small gzip file inflating far beyond the size its header declares (8 MiB of zeros
    after a header declaring 1 byte) is refused once the declared size is exceeded, not
    after decompressing everything (a 1 MB file of 1 GiB used 2.1 GB)."""
    payload = bytes([0, 0, 8, 1, 0, 0, 0, 1]) + bytes(8 << 20)
    blob = (gzip.compress(payload, 1) if members == 1 else
            gzip.compress(payload[:5], 1) + gzip.compress(payload[5:], 1))
    assert len(blob) < 100_000
    p = tmp_path / "bomb.gz"
    p.write_bytes(blob)
    with pytest.raises(ValueError, match="unexpected bytes after the data") as exc:
        load_idx(p)
    assert str(p) in str(exc.value)
    assert 0 < sum(produced) < (1 << 20), sum(produced)


def test_gzip_declaring_more_than_it_can_hold_is_refused_before_inflating(tmp_path,
                                                                         produced):
    """A small gzip file whose header declares more data than deflate can expand the file
    to (1032-fold at most) is refused before anything past the header is inflated (a
    0.3 MB file declaring shape (2**32 - 1, 28, 28) inflated its 300 MB of zeros before
    the truncation showed). A legitimate file near the bound still loads."""
    payload = bytes([0, 0, 8, 3]) + (2**32 - 1).to_bytes(4, "big") + bytes([0, 0, 0, 28]) * 2
    p = tmp_path / "bomb.gz"
    p.write_bytes(gzip.compress(payload + bytes(4 << 20), 9))
    with pytest.raises(ValueError, match="inflates to at most about") as exc:
        load_idx(p)
    assert str(p) in str(exc.value)
    assert sum(produced) < (1 << 17), sum(produced)
    zeros = bytes([0, 0, 8, 1]) + (4 << 20).to_bytes(4, "big") + bytes(4 << 20)
    ok = tmp_path / "zeros.gz"
    ok.write_bytes(gzip.compress(zeros, 9))
    assert load_idx(ok).shape == (4 << 20,)


def test_gzip_streaming_keeps_members_padding_and_garbage_rules(tmp_path):
    """A multi-member file larger than the decompression steps reads whole; trailing zero
    padding is tolerated, anything else after the data is garbage (counted in full)."""
    a = (np.arange(8 * 400 * 400) % 251).astype(np.uint8).reshape(8, 400, 400)
    raw = idx(a)
    blob = b"".join(gzip.compress(raw[i:i + 200_000], 1) for i in range(0, len(raw), 200_000))
    p = tmp_path / "big.gz"
    p.write_bytes(blob + bytes(300_000))
    np.testing.assert_array_equal(load_idx(p), a)
    p.write_bytes(blob + bytes(300_000) + b"x")
    with pytest.raises(ValueError, match="300001 bytes of garbage after the gzip data"):
        load_idx(p)
    p.write_bytes(blob[:-100])
    with pytest.raises(ValueError, match="truncated gzip data"):
        load_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_too_many_dimensions(tmp_path, gz):
    """A header declaring more dimensions than NumPy arrays have is a ValueError naming the
    file (it was NumPy's own error, without the file name)."""
    content = bytes([0, 0, 8, 70]) + (1).to_bytes(4, "big") * 70 + b"\x07"
    p = tmp_path / "dims"
    p.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(ValueError, match="declares 70 dimensions") as exc:
        load_idx(p)
    assert str(p) in str(exc.value)


def test_bytes_paths_and_path_types(tmp_path):
    """Paths as bytes are accepted (as os.fsdecode takes them); anything else is a
    TypeError naming the argument."""
    data = make_data()
    files = write_dataset(tmp_path / "d", data)
    np.testing.assert_array_equal(load_idx(bytes(files[("train", "labels")])), data[0][1])
    for module in (mnist, fashion_mnist):
        assert_data_equal(module.load_data(bytes(tmp_path / "d")), data)
        with pytest.raises(TypeError, match="path must be a str, bytes or os.PathLike, "
                                            "received int"):
            module.load_data(3)
    with pytest.raises(TypeError, match="file must be a str, bytes or os.PathLike, "
                                        "received int"):
        load_idx(3)


def test_sample_takes_numpy_bools_and_refuses_ints(tmp_path):
    """sample=np.True_ loads the shipped sample (it loaded the full data set: the check
    passed it, the code tested `sample is True`); 1 is refused, as the package's other
    flags refuse it."""
    write_dataset(fashion_mnist.DEBIAN_DIR, make_data())     # a "full" set of 20 images
    check_sample(fashion_mnist.load_data(sample=np.True_))
    assert fashion_mnist.load_data(sample=np.False_)[0][0].shape == (20, 28, 28)
    for bad in (1, 0, "yes", 1.0):
        with pytest.raises(TypeError, match="`sample` must be a bool or None"):
            fashion_mnist.load_data(sample=bad)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_zero_dimension_beside_huge_ones(tmp_path, gz):
    """(0, 2**32-1, 2**32-1) declares no data, but NumPy cannot make that shape: the error
    names the file and the shape (it was NumPy's 'array is too big')."""
    content = bytes([0, 0, 8, 3]) + (0).to_bytes(4, "big") + (2**32 - 1).to_bytes(4, "big") * 2
    p = tmp_path / "huge"
    p.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(ValueError, match=r"declares shape \(0, 4294967295, 4294967295\), "
                                         r"too large") as exc:
        load_idx(p)
    assert str(p) in str(exc.value)


def test_load_idx_checks_the_header_before_reading_a_big_file(tmp_path, monkeypatch):
    """A plain file whose header does not match its size (or that is no IDX file) is refused
    from its first bytes: nothing of its size is allocated (a sparse 1 TB file raised a
    bare MemoryError)."""
    allocated = []
    real = bytearray

    class Spy(real):
        def __init__(self, *args):
            if args and isinstance(args[0], int):
                allocated.append(args[0])
            super().__init__(*args)
    monkeypatch.setattr(_idx, "bytearray", Spy, raising=False)
    big = tmp_path / "big"
    with open(big, "wb") as fh:                 # 3 x 28 x 28 declared, 4 GB long (sparse)
        fh.write(bytes([0, 0, 8, 3]) + np.array([3, 28, 28], ">u4").tobytes())
        fh.truncate(1 << 32)
    with pytest.raises(ValueError, match="unexpected bytes after the data"):
        load_idx(big)
    zeros = tmp_path / "zeros"
    with open(zeros, "wb") as fh:
        fh.truncate(1 << 32)
    with pytest.raises(ValueError, match="bad magic number"):
        load_idx(zeros)
    assert allocated == []
    ok = tmp_path / "ok"
    ok.write_bytes(idx(np.arange(70000, dtype=np.uint8).reshape(100, 700) % 251))
    assert load_idx(ok).shape == (100, 700)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_load_idx_refuses_fifos_and_pipes(tmp_path):
    """A FIFO made load_idx wait forever for a writer; a pipe (/dev/stdin) read as 0 bytes
    ('truncated header') or failed to seek if gzipped."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is a FIFO") as exc:
        load_idx(fifo)
    assert str(fifo) in str(exc.value)
    code = ("import sys; from fastnn.datasets import load_idx\n"
            "try:\n    load_idx('/dev/stdin')\nexcept ValueError as e:\n    print(e)\n")
    res = subprocess.run([sys.executable, "-c", code], input=gzip.compress(idx(
        np.zeros((2, 28, 28), np.uint8))), capture_output=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(datasets.__file__).parents[2])})
    assert b"is a FIFO" in res.stdout, res.stderr


def test_write_idx_is_atomic(tmp_path, monkeypatch):
    """A write that fails half way leaves the previous file whole and no temporary file
    (write_idx wrote in place with Path.write_bytes)."""
    p = tmp_path / "x.idx"
    _idx.write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
    real = _idx.atomic_write

    def failing(path, write, **kw):
        def half(fh):
            fh.write(b"\x00\x00\x08")
            raise OSError("disk full")
        return real(path, half, **kw)
    monkeypatch.setattr(_idx, "atomic_write", failing)
    with pytest.raises(OSError, match="disk full"):
        _idx.write_idx(p, np.zeros(1, np.uint8))
    np.testing.assert_array_equal(load_idx(p), np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert sorted(f.name for f in tmp_path.iterdir() if f.name != "home") == ["x.idx"]
