#!/usr/bin/env python3
"""Make the Fashion-MNIST sample shipped in fastnn/datasets/data/fashion-mnist-sample/.

The sample is the first 300 training and the first 100 test images of each class, in the
order of the original files (so classes stay interleaved as there): 3000 + 1000 real
images, deterministic. It is written as gzipped IDX files (level 9, no file name, mtime 0)
so running this script again on the same source gives byte-identical files.

Source: the full data set, by default Debian's ``/usr/share/datasets/fashion-mnist``
(``apt-get install dataset-fashion-mnist``); any directory with the four IDX files works.

Usage::

    python3 tools/make_fashion_sample.py [--source DIR] [--out DIR] [--check]

``--check`` writes nothing: it rebuilds the sample in memory and fails if the shipped
files' content differs (compared after decompression, as another zlib build may compress
the same data to different bytes).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastnn.datasets import _idx  # noqa: E402

PER_CLASS = {"train": 300, "test": 100}
NUM_CLASSES = 10
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT = ROOT / "fastnn" / "datasets" / "data" / "fashion-mnist-sample"
OUT_NAMES = {key: base + ".gz" for key, base in _idx.FILES.items()}

LICENSE = """\
Fashion-MNIST sample shipped with fastnn
========================================

The files in this directory are a subset of Fashion-MNIST (the first 300 training and
the first 100 test images of each of the 10 classes, in their original order),
made by tools/make_fashion_sample.py from the original IDX files.
Fashion-MNIST: https://github.com/zalandoresearch/fashion-mnist

The MIT License (MIT)

Copyright (c) 2017 Zalando SE

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def sample_indices(y: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` examples of each class, in increasing order."""
    picks = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(y == c)[:per_class]
        if idx.size < per_class:
            raise SystemExit(f"class {c} has only {idx.size} examples (< {per_class})")
        picks.append(idx)
    return np.sort(np.concatenate(picks))


def build(source: Path) -> dict:
    """``{file name: IDX gzip bytes}`` of the sample made from the data set in ``source``."""
    files, why = _idx.find_in_dir(source)
    if files is None:
        raise SystemExit(f"{source}: no Fashion-MNIST here ({why}); "
                         f"try: apt-get install dataset-fashion-mnist")
    out = {}
    for split, n in PER_CLASS.items():
        x, y = _idx.load_split(files, split)
        keep = sample_indices(y, n)
        for kind, arr in (("images", x[keep]), ("labels", y[keep])):
            out[OUT_NAMES[(split, kind)]] = _idx.idx_bytes(arr, compress=True,
                                                           compresslevel=9)
    out["LICENSE"] = LICENSE.encode()
    return out


def _content(blob: bytes) -> bytes:
    return gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                    help=f"directory with the full data set (default {DEFAULT_SOURCE})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"output directory (default {DEFAULT_OUT.relative_to(ROOT)})")
    ap.add_argument("--check", action="store_true",
                    help="compare with the files in --out instead of writing them")
    args = ap.parse_args(argv)

    blobs = build(args.source)
    total, bad = 0, []
    for name, data in blobs.items():
        path = args.out / name
        total += len(data)
        digest = hashlib.sha256(data).hexdigest()[:16]
        if args.check:
            # Compare decompressed content: another zlib build may compress differently.
            ok = path.is_file() and _content(path.read_bytes()) == _content(data)
            bad += [] if ok else [name]
            print(f"{'ok  ' if ok else 'DIFF'} {path}  {len(data)} bytes  sha256 {digest}")
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"wrote {path}  {len(data)} bytes  sha256 {digest}")
    print(f"total {total} bytes")
    if bad:
        print(f"the shipped sample differs from a fresh build: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
