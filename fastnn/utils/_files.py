"""Writing files atomically: to a temporary file beside the target, renamed over it, so an
interrupted write never leaves a half-written file (model saves, ``fastnn bench``'s JSON
and chart); and what reading a damaged archive can raise."""
from __future__ import annotations

import functools
import io
import os
import stat
import tempfile
import tokenize
import zipfile
import zlib
from typing import BinaryIO, Callable, TextIO

__all__ = ["resolve_target", "special_kind", "atomic_write", "atomic_write_text",
           "DAMAGED_ARCHIVE_ERRORS"]

#: What reading a damaged zip archive of .npy members (a model file, a Keras ``.npz``) can
#: raise, each loader turning it into a ValueError naming the file: zipfile's and zlib's
#: errors, truncation (EOFError, OSError), ValueError, a size declared beyond any memory
#: (MemoryError), a meta.json nested deeper than any model's description (RecursionError),
#: zipfile's NotImplementedError and RuntimeError for a header that declares an unknown
#: compression method or version, or encryption, and tokenize.TokenError from NumPy's
#: reader of a .npy header that does not parse (fastnn 2026-12-05: it escaped both
#: loaders).
DAMAGED_ARCHIVE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError,
                          OSError, ValueError, MemoryError, RecursionError,
                          NotImplementedError, RuntimeError, tokenize.TokenError)

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_kind(mode: int):
    """What a file of ``st_mode`` ``mode`` is when it is a FIFO, a device or a socket
    (opening one to read can block forever), else None."""
    return next((k for test, k in _KINDS if test(mode)), None)


def resolve_target(path: str, name: str = "filepath", example: str = "file") -> str:
    """The file a write to ``path`` replaces: symbolic links resolved (the file is written
    through a link, as ``open(path, "w")`` and Keras do, instead of replacing the link).

    Raises IsADirectoryError for a directory (or a path ending in a separator), and
    ValueError naming ``name`` for an existing target that is not a regular file (a FIFO,
    a device, a socket), which a rename would replace.
    """
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)) \
            or os.path.isdir(path):
        raise IsADirectoryError(f"{name} {path}: is a directory; give the file's path, "
                                f"e.g. {os.path.join(path, example)}")
    target = os.path.realpath(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    if not stat.S_ISREG(mode):
        kind = special_kind(mode) or "not a regular file"
        raise ValueError(f"{name} {path}: is {kind}, not a regular file; fastnn writes "
                         f"regular files only and does not replace anything else")
    return target


def atomic_write(path: str, write: Callable[[BinaryIO], None], *, name: str = "filepath",
                 overwrite: bool = True, example: str = "file") -> None:
    """Write a file atomically: ``write(fh)`` fills a temporary file (mode ``0666 &
    ~umask``, as ``open`` gives, or the replaced file's mode and owner) in the target's
    directory, which then replaces the target (a new inode: other hard links to the old
    file keep the old contents).

    The target is :func:`resolve_target`'s (a symbolic link is written through); missing
    parent directories are created. If ``write`` or anything else fails, the temporary
    file is removed and the previous file, if any, is left as it was.

    Raises
    ------
    FileExistsError
        If ``overwrite`` is False and the target exists.
    IsADirectoryError, ValueError
        See :func:`resolve_target`.
    """
    target = resolve_target(path, name, example)
    if not overwrite and os.path.exists(target):
        raise FileExistsError(f"{name} {path}: already exists and overwrite=False; pass "
                              f"overwrite=True to replace it")
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp", dir=directory)
    except OSError as exc:   # (its message named the temporary file, not the user's path)
        raise type(exc)(exc.errno, f"{name} {path}: cannot create a file in {directory}: "
                                   f"{exc.strerror}") from None
    try:
        # mkstemp makes the file private (0600); give it the mode open() would: a new
        # file's 0666 & ~umask, or the mode (and, where allowed, the owner) of the file it
        # replaces, which open(path, "w") would have kept (os.fchmod is POSIX's; Windows
        # has it from Python 3.13, and no such modes before)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask() if old is None else stat.S_IMODE(old.st_mode))
        if old is not None and hasattr(os, "fchown"):
            try:
                os.fchown(fd, old.st_uid, old.st_gid)
            except OSError:   # another user's file: it becomes ours, as a rename makes it
                pass
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@functools.lru_cache(maxsize=None)
def _umask() -> int:
    """The process's umask (read once: setting it is the only way to read it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str, write: Callable[[TextIO], None], *, name: str = "filepath",
                      encoding: str = "utf-8", newline: str = "", **kwargs) -> None:
    """:func:`atomic_write` of a text file: ``write(fh)`` gets it as text (``encoding``,
    ``newline`` as :func:`open` takes them: ``""`` for the csv module)."""
    def binary(fh: BinaryIO) -> None:
        text = io.TextIOWrapper(fh, encoding=encoding, newline=newline)
        try:
            write(text)
            text.flush()
        finally:
            text.detach()   # the binary file stays open for atomic_write to close
    atomic_write(path, binary, name=name, **kwargs)
