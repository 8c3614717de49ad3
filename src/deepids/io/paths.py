"""Input paths: expanding directories to flow files, sniffing a file's format and opening it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Union

import pyarrow as pa

from deepids.errors import InputError
from deepids.io.pcap import CAPTURE_SUFFIXES

__all__ = ["FLOW_FILE_SUFFIXES", "PathLike", "resolve_paths", "sniff_format", "open_stream",
           "read_first_line"]

PathLike = Union[str, "os.PathLike[str]"]

#: file names a directory argument is expanded to (case-insensitive suffix match).
FLOW_FILE_SUFFIXES: tuple[str, ...] = (
    ".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".txt", ".txt.gz", ".txt.bz2", ".txt.zst",
    ".parquet", ".pq",
)
_MAX_HEADER_BYTES = 1 << 20


def _is_flow_file_name(name: str) -> bool:
    low = name.lower()
    return any(low.endswith(s) for s in FLOW_FILE_SUFFIXES + CAPTURE_SUFFIXES)


def resolve_paths(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():          # walked recursively; hidden entries (ours: .*.partial) are not inputs
            found = sorted(f for f in p.rglob("*") if f.is_file() and _is_flow_file_name(f.name)
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise InputError(f"{p} is a directory without flow files "
                                 f"({', '.join('*' + s for s in FLOW_FILE_SUFFIXES)})")
            out.extend(found)
        elif not p.exists():
            raise InputError(f"{p}: no such file")
        elif not p.is_file():
            raise InputError(f"{p} is not a regular file")
        else:
            out.append(p)
    if not out:
        raise InputError("no input files given")
    return out


def sniff_format(path: Path) -> tuple[str, str | None]:
    """('parquet' | 'csv', compression) from the first bytes of the file."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not magic:
        raise InputError(f"{path} is empty")
    if magic == b"PAR1":
        return "parquet", None
    if magic[:2] == b"\x1f\x8b":
        return "csv", "gzip"
    if magic[:3] == b"BZh":
        return "csv", "bz2"
    if magic == b"\x28\xb5\x2f\xfd":
        return "csv", "zstd"
    return "csv", None


def open_stream(path: Path, compression: str | None):
    try:
        return pa.input_stream(str(path), compression=compression)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def read_first_line(path: Path, compression: str | None) -> str | None:
    """The first non-blank line, decoded lossily, without BOM and line ending; None if empty."""
    buf = b""
    try:
        with open_stream(path, compression) as stream:
            while True:
                chunk = stream.read(1 << 16)
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 1:]
                    text = line.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
                    if text.strip():
                        return text
                if not chunk:
                    text = buf.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
                    return text if text.strip() else None
                if len(buf) > _MAX_HEADER_BYTES:
                    raise InputError(f"cannot read {path}: first line is longer than "
                                     f"{_MAX_HEADER_BYTES} bytes; is it a CSV file?")
    except InputError:
        raise
    except (OSError, pa.ArrowException, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
