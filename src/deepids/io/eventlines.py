"""JSON-Lines Windows event logs: their lines, a block at a time, and the per-event path.

:func:`read_blocks` streams a file's lines in blocks (a line over :data:`MAX_LINE_BYTES` is
skipped without being held and rejected, blank lines are skipped; a cut or damaged `.gz` gives its lines
before the damage, then an InputError). The per-event path (:func:`line_record`, :func:`python_row`,
:func:`python_piece`) parses each line and applies the rules of :mod:`deepids.io.events` to it: it
reads what the columnar reader (:mod:`deepids.io.eventblocks`) hands over, and EVTX records.
"""

from __future__ import annotations

import gzip
import io
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import orjson
import polars as pl

from deepids.errors import InputError
from deepids.io.events import R_NO_EVENT_ID, canonical_event, events_frame, flatten_winlogbeat

MAX_LINE_BYTES = 16 << 20      # a longer JSON line is skipped (never held whole) and rejected
BLOCK_BYTES = 16 << 20          # a block ends after this many bytes of lines, whatever its line count
R_LINE_TOO_LONG = "line too long"
R_CORRUPT = "corrupt JSON line"
R_NOT_OBJECT = "JSON line is not an object"
R_BAD_FIELD = "a field of the wrong type (e.g. @timestamp out of range)"


class Piece(NamedTuple):
    """Canonical rows of one file, each row's record position in the file, and the rejections
    (position, reason, count) among them; `records` counts both."""

    table: pl.DataFrame
    offsets: np.ndarray
    rejections: list
    records: int


class Block(NamedTuple):
    lines: list            # bytes, without their newline
    offsets: list          # the record position of each line in the file
    rejections: list       # (position, reason, count): lines too long
    records: int           # lines and rejections


# ---------------------------------------------------------------------------------------- lines
def lines_bounded(fh, limit: int = MAX_LINE_BYTES) -> Iterator[bytes | None]:
    """The lines of a binary file; None for a line over `limit` bytes (its bytes skipped, not held)."""
    while True:
        line = fh.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield None
            continue
        yield line


@contextmanager
def _open(path: Path):
    """The file's bytes, a `.gz` decompressed. `gzip.open` is a buffered reader over gzip's own
    decompressing reader with an 8 KiB buffer (Python 3.11); the same reader with a 1 MiB buffer
    gives the same bytes and the same errors at the same place, and reads lines twice as fast."""
    with open(path, "rb") as raw:
        if not path.name.lower().endswith(".gz"):
            yield raw
            return
        reader = getattr(gzip, "_GzipReader", None)
        yield io.BufferedReader(reader(raw), buffer_size=1 << 20) if reader else gzip.GzipFile(fileobj=raw)


def read_blocks(path: Path, max_lines: int) -> Iterator[Block]:
    """The lines of a JSON-Lines file in blocks; a cut or damaged file gives its lines before the
    damage and then an InputError."""
    lines, offsets, rejections, n, start, size = [], [], [], 0, 0, 0
    try:
        with _open(path) as fh:
            # binary lines end at \n only (some Message values hold a bare \r); streamed, not read whole
            for line in lines_bounded(fh, MAX_LINE_BYTES):
                if line is None:
                    rejections.append((n, R_LINE_TOO_LONG, 1))
                    n += 1
                    continue
                if line.isspace():                 # blank (ASCII whitespace only, as bytes.strip() strips)
                    continue
                lines.append(line[:-1] if line.endswith(b"\n") else line)
                offsets.append(n)
                n += 1
                size += len(line)
                if len(lines) >= max_lines or size >= BLOCK_BYTES:
                    yield Block(lines, offsets, rejections, n - start)
                    lines, offsets, rejections, start, size = [], [], [], n, 0
    except (OSError, EOFError) as exc:     # unreadable, or a truncated .gz
        if lines or rejections:
            yield Block(lines, offsets, rejections, n - start)
        raise InputError(f"cannot read {path}: {exc}") from None
    if lines or rejections:
        yield Block(lines, offsets, rejections, n - start)

# ------------------------------------------------------------------------- the per-event path
class Reject(NamedTuple):
    reason: str
    count: int = 1


def _loads(line: bytes):
    """orjson (several times faster); what it refuses goes to Python's json, which also takes the
    NaN/Infinity literals that Python's json writes, so both accept the same lines. orjson reads an
    integer beyond 64 bits as a float: an event holding a float is read again by Python's json,
    which keeps such integers whole (as the line says, and as the columnar path reads them)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)
    return json.loads(line) if _has_float(obj) else obj


def _has_float(obj) -> bool:
    stack = [obj]
    while stack:
        item = stack.pop()
        for v in item.values() if type(item) is dict else item if type(item) is list else ():
            if type(v) is float:
                return True
            if type(v) is dict or type(v) is list:
                stack.append(v)
    return False


def line_record(line: bytes | str) -> dict | Reject:
    """One JSON line -> its flat event (a nested Winlogbeat one flattened), or why not."""
    try:
        obj = _loads(line)
    except (ValueError, RecursionError):       # not JSON, invalid UTF-8, nested too deep
        return Reject(R_CORRUPT)
    if not isinstance(obj, dict):
        return Reject(R_NOT_OBJECT)
    return flatten_winlogbeat(obj) if isinstance(obj.get("winlog"), dict) else obj


def python_row(flat: dict, source_file: str, keep_raw: bool) -> dict | Reject:
    """One flat event -> its canonical row, or why not."""
    try:
        row = canonical_event(flat, source_file, keep_raw=keep_raw)
    except (TypeError, ValueError, AttributeError, OverflowError, OSError, RecursionError):
        return Reject(R_BAD_FIELD)            # e.g. @timestamp 1e20 or NaN: as the live path rejects it
    return Reject(R_NO_EVENT_ID) if row is None else row


def python_piece(items, source_file: str, keep_raw: bool, rejections: list, records: int) -> Piece:
    """(position, flat event or Reject) pairs -> a piece, by the per-event rules."""
    rows, offsets, rejections = [], [], list(rejections)
    for at, item in items:
        if not isinstance(item, Reject):
            item = python_row(item, source_file, keep_raw)
        if isinstance(item, Reject):
            rejections.append((at, item.reason, item.count))
        else:
            rows.append(item)
            offsets.append(at)
    rejections.sort(key=lambda r: r[0])
    return Piece(events_frame(rows), np.asarray(offsets, dtype=np.int64), rejections, records)
