"""Raw batches of a connection-log file: delimited text through Arrow's CSV reader, JSON lines
through polars, both memory-bounded by the batch and never aborted by one bad line."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from deepids.errors import InputError
from deepids.io.arrow import arrow_to_polars
from deepids.io.connlogs.schema import R_FIELDS, R_JSON
from deepids.io.paths import open_stream
from deepids.io.textstream import LineQuotes, open_text

BLOCK_SIZE = 2 << 20
READ_SIZE = 4 << 20


class LineSink:
    """What the delimited reader set aside: directive lines (``#close`` …), footers, bad rows."""

    def __init__(self, classify: Callable[[str], str | None]):
        self.classify = classify
        self.skipped: Counter = Counter()     # not records: '#close', nfdump's summary, ...
        self.rejected: Counter = Counter()    # records with the wrong number of fields
        self.rows = 0                         # rows set aside so far (``take`` does not reset it)
        self.skip = 0                         # header lines: Arrow numbers rows from 1, those included
        self.invalid: list[int] = []          # the row index (see ROW) of each row set aside, in order
        self.ignored_rows: list[int] = []     # those of them that are no records

    def handler(self, row) -> str:
        self.rows += 1
        kind = self.classify(row.text or "")
        if kind is None:
            self.rejected[R_FIELDS] += 1
        else:
            self.skipped[kind] += 1
        if row.number is not None:            # known: the reader parses in order, on one thread
            self.invalid.append(row.number - self.skip - 1)
            if kind is not None:
                self.ignored_rows.append(self.invalid[-1])
        return "skip"

    def take(self) -> tuple[dict[str, int], dict[str, int]]:
        out = dict(self.rejected), dict(self.skipped)
        self.rejected.clear()
        self.skipped.clear()
        return out


#: the column delimited_batches adds: each row's index among the file's non-empty lines after the
#: header (the rows set aside included), from which its record number follows (:class:`RowNumbers`)
ROW = "__deepids_row"


class RowNumbers:
    """Record numbers of a delimited file's rows: a row's position among the file's records,
    rejected ones (a wrong field count too) included, lines that are no records not counted:
    the numbers a stream of the same lines gives."""

    def __init__(self, sink: LineSink):
        self.sink = sink
        self.ignored = np.empty(0, dtype=np.int64)
        self._taken = 0

    def ignore(self, rows: np.ndarray) -> None:
        """Rows read that are no records (a Zeek directive, a footer) after all."""
        self.ignored = np.union1d(self.ignored, np.asarray(rows, dtype=np.int64))

    def of(self, rows: np.ndarray) -> np.ndarray:
        """The record numbers of rows (their ROW values)."""
        if len(self.sink.ignored_rows) > self._taken:
            self.ignore(np.asarray(self.sink.ignored_rows[self._taken:], dtype=np.int64))
            self._taken = len(self.sink.ignored_rows)
        rows = np.asarray(rows, dtype=np.int64)
        return rows - np.searchsorted(self.ignored, rows)


def _row_index(sink: LineSink, first: int, n: int) -> np.ndarray:
    """ROW of the valid rows ``first`` .. ``first + n - 1`` (in reading order): the indices the
    rows set aside so far leave free."""
    ordinal = np.arange(first, first + n, dtype=np.int64)
    invalid = np.asarray(sink.invalid, dtype=np.int64)
    before = invalid - np.arange(invalid.size, dtype=np.int64)     # valid rows before each set-aside row
    return ordinal + np.searchsorted(before, ordinal, side="right")


def delimited_batches(path: Path, compression: str | None, names: Sequence[str], skip_lines: int,
                      delimiter: str, sink: LineSink, quote: str | bool = False,
                      numeric: frozenset[str] = frozenset(), include: Sequence[str] | None = None,
                      unset: Sequence[str] = ()) -> Iterator[pl.DataFrame]:
    """Text frames of the fields ``include`` (default: every one of ``names``), after
    ``skip_lines`` header lines. Rows with the wrong number of fields go to ``sink``; no quoting
    unless ``quote`` (Zeek and nfdump never quote). Cells that are exactly one of ``unset`` (or
    empty) are null already here, so that a numeric column with unset cells still parses as
    numbers in one pass; only the fields used are converted at all (nfdump writes 48). Each frame
    has a column ``ROW``: its rows' indices for :class:`RowNumbers`."""
    keep = [n for n in names if include is None or n in set(include)]
    rows = 0
    sink.skip = skip_lines
    # bytes that are not UTF-8 are replaced before Arrow sees them (it decodes a malformed row
    # before its handler does, and fails there), and a damaged .gz keeps the rows before the damage
    stream = open_text(path, compression)
    reader = None
    try:
        reader = pacsv.open_csv(
            LineQuotes(stream) if quote else stream,
            read_options=pacsv.ReadOptions(column_names=list(names), skip_rows=skip_lines, block_size=BLOCK_SIZE, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=quote, invalid_row_handler=sink.handler),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.binary() for n in keep}, include_columns=keep,
                null_values=[*unset, ""] if unset else [], strings_can_be_null=bool(unset)),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            frame = arrow_to_polars(pa.Table.from_batches([batch]), numeric)
            yield frame.with_columns(pl.Series(ROW, _row_index(sink, rows, batch.num_rows)))
            rows += batch.num_rows
    except InputError:
        raise
    except (OSError, pa.ArrowException, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    finally:
        if reader is not None:
            reader.close()              # stop Arrow's read-ahead before the stream goes
        stream.close()
    if stream.cut_lines:
        sink.rejected[R_FIELDS] = sink.rejected.get(R_FIELDS, 0) + stream.cut_lines
    if stream.damage:
        raise InputError(f"cannot read {path}: {stream.damage}")
    if quote:       # a quote left open swallows the lines after it into one row: count them
        lost = _nonblank_lines(path, compression) - skip_lines - rows - sink.rows
        if lost > 0:
            sink.rejected[R_QUOTED] += lost


R_QUOTED = "line inside an unterminated quote"


def _nonblank_lines(path: Path, compression: str | None) -> int:
    """The lines of the file that are not empty (as Arrow's reader skips empty ones)."""
    n = 0
    rest = b""
    with open_text(path, compression) as stream:
        while True:
            chunk = stream.read(READ_SIZE)
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            n += sum(1 for ln in lines if ln.rstrip(b"\r"))
    return n + (1 if rest.rstrip(b"\r") else 0)


def rebatch(frames: Iterator[pl.DataFrame], batch_size: int) -> Iterator[pl.DataFrame]:
    """Frames regrouped into frames of exactly ``batch_size`` rows (the last one smaller)."""
    buf, n = [], 0
    for f in frames:
        buf.append(f)
        n += f.height
        while n >= batch_size:
            whole = pl.concat(buf, how="vertical")
            yield whole.slice(0, batch_size)
            rest = whole.slice(batch_size)
            buf, n = ([rest] if rest.height else []), rest.height
    if buf:
        yield pl.concat(buf, how="vertical")


def line_batches(path: Path, compression: str | None, max_lines: int) -> Iterator[list[bytes]]:
    """Non-blank lines (without line endings) in lists of at most ``max_lines``."""
    stream = open_stream(path, compression)
    rest = b""
    try:
        while True:
            chunk = stream.read(READ_SIZE)
            data = rest + chunk
            lines = data.split(b"\n")
            rest = lines.pop() if chunk else b""
            out = [ln.rstrip(b"\r") for ln in lines]
            out = [ln for ln in out if ln.strip()]
            for i in range(0, len(out), max_lines):
                yield out[i:i + max_lines]
            if not chunk:
                break
    except (OSError, pa.ArrowException, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    finally:
        stream.close()


def json_frame(lines: list[bytes], schema: dict) -> tuple[pl.DataFrame, np.ndarray]:
    """Parse JSON lines with a fixed schema (values as text); returns the frame and the
    positions (in ``lines``) of the lines it holds: the others are malformed.

    A batch parses in one call; only when it holds a malformed line (a truncated write, a
    non-object) is it checked line by line, and the bad lines are dropped.
    """
    if not lines:
        return pl.DataFrame(schema=schema), np.empty(0, dtype=np.int64)
    try:
        return pl.read_ndjson(io.BytesIO(b"\n".join(lines)), schema=schema), np.arange(len(lines), dtype=np.int64)
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError, ValueError):
        pass
    good: list[int] = []
    for i, ln in enumerate(lines):
        try:
            if isinstance(orjson.loads(ln.lstrip(b"\xef\xbb\xbf")), dict):
                good.append(i)
        except orjson.JSONDecodeError:
            continue
    texts = [lines[i].lstrip(b"\xef\xbb\xbf") for i in good]
    if not good:
        return pl.DataFrame(schema=schema), np.empty(0, dtype=np.int64)
    try:
        return pl.read_ndjson(io.BytesIO(b"\n".join(texts)), schema=schema), np.asarray(good, dtype=np.int64)
    except (pl.exceptions.PolarsError, ValueError):   # a value polars cannot take (a deep array where text is due)
        frames, kept = [], []
        for i, ln in zip(good, texts):
            try:
                frames.append(pl.read_ndjson(io.BytesIO(ln), schema=schema))
                kept.append(i)
            except (pl.exceptions.PolarsError, ValueError):
                continue
        return (pl.concat(frames) if frames else pl.DataFrame(schema=schema)), np.asarray(kept, dtype=np.int64)


def reject_json(bad: int) -> dict[str, int]:
    return {R_JSON: bad} if bad else {}
