"""Artefacts that appear whole or not at all.

An output is written under a temporary name in its own directory (so the rename stays on one
file system), flushed to disk (`fsync`), and renamed over its final name only when complete;
a run that fails or is interrupted (disk full, Ctrl-C, an exception) removes its temporary
file and leaves whatever was there before untouched. `os.replace` swaps the directory entry:
a symlink standing at the final name is replaced, never followed.

Directories (a saved model) are built in a temporary sibling and swapped in: the old
directory is kept until the new one is complete, then removed.

Files holding records (scores, alerts, reports, models) are created ``0o640`` by default: not
readable by other users whatever the umask.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from deepids.errors import OutputError

log = logging.getLogger(__name__)

PRIVATE = 0o640


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _explain(path: Path, exc: BaseException) -> OutputError | None:
    """An OutputError naming `path` for an I/O failure (None for any other exception). Rust
    writers (polars, safetensors) raise ``... (os error 28)`` without an errno."""
    code = exc.errno if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) else None
    if code is None and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    if code is None and not (isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError)):
        return None
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EACCES: "permission denied", errno.EROFS: "the file system is read-only"}.get(
        code, getattr(exc, "strerror", None) or str(exc))
    return OutputError(f"cannot write {path}: {what}; nothing was written there (the partial file was removed)")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, mode: int = PRIVATE) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is synced and renamed to `path`.

    On any exception the temporary file is removed and the exception goes on (an `OSError`
    such as disk full becomes an `OutputError` naming the file); `path` keeps what it held.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, mode)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        explained = _explain(path, exc)
        if explained is not None:
            raise explained from None
        log.warning("deepids: %s was not written (%s); the partial file was removed", path,
                    "interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__)
        raise
    _fsync_dir(directory)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", *, perms: int = PRIVATE,
                 encoding: str | None = "utf-8", newline: str | None = None) -> Iterator[IO]:
    """`open(path, mode)` that leaves `path` complete or untouched (see `atomic_path`)."""
    if "b" in mode:
        encoding = None
    with atomic_path(path, mode=perms) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()


def write_text(path: str | Path, text: str, *, perms: int = PRIVATE) -> None:
    with atomic_write(path, "w", perms=perms) as fh:
        fh.write(text)


def write_bytes(path: str | Path, data: bytes, *, perms: int = PRIVATE) -> None:
    with atomic_write(path, "wb", perms=perms) as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `path`; on success it takes `path`'s place.

    An existing directory at `path` is kept until the new one is complete, then replaced (the
    entries the new one does not hold are carried over); on failure the temporary directory
    is removed and the old one stays as it was. A symlink at
    `path` is replaced by the new directory, never written through.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} exists and is not a directory")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=parent))
    os.chmod(tmp, 0o750)
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        _swap_in(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        explained = _explain(path, exc)
        if explained is not None:
            raise explained from None
        raise
    _fsync_dir(parent)


def _swap_in(new: Path, path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    if not path.exists():
        os.rename(new, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.rmdir(old)
    os.rename(path, old)
    try:
        os.rename(new, path)
    except OSError:
        os.rename(old, path)          # put the old one back
        raise
    for entry in old.iterdir():       # what the new directory does not replace stays (notes, checkpoints)
        if not (path / entry.name).exists() and not entry.name.endswith((".partial", ".old")):
            with contextlib.suppress(OSError):
                os.rename(entry, path / entry.name)
    shutil.rmtree(old, ignore_errors=True)


def open_append(path: str | Path, *, perms: int = PRIVATE, encoding: str = "utf-8") -> IO[str]:
    """Open `path` for appending (created `perms`), refusing to follow a symlink at its name."""
    path = Path(path)
    if str(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, perms)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(f"{path} is a symbolic link; deepids does not write through links") from None
        raise
    return os.fdopen(fd, "a", encoding=encoding)
