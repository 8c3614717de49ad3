"""Raw batches of a connection-log file: delimited text through Arrow's CSV reader, JSON lines
through polars, both memory-bounded by the batch and never aborted by one bad line."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from deepids.errors import InputError
from deepids.io.arrow import arrow_to_polars
from deepids.io.connlogs.schema import R_FIELDS, R_JSON
from deepids.io.paths import open_stream
from deepids.io.textstream import open_text

BLOCK_SIZE = 2 << 20
READ_SIZE = 4 << 20


class LineSink:
    """What the delimited reader set aside: directive lines (``#close`` …), footers, bad rows."""

    def __init__(self, classify: Callable[[str], str | None]):
        self.classify = classify
        self.skipped: Counter = Counter()     # not records: '#close', nfdump's summary, ...
        self.rejected: Counter = Counter()    # records with the wrong number of fields

    def handler(self, row) -> str:
        kind = self.classify(row.text or "")
        if kind is None:
            self.rejected[R_FIELDS] += 1
        else:
            self.skipped[kind] += 1
        return "skip"

    def take(self) -> tuple[dict[str, int], dict[str, int]]:
        out = dict(self.rejected), dict(self.skipped)
        self.rejected.clear()
        self.skipped.clear()
        return out


def delimited_batches(path: Path, compression: str | None, names: Sequence[str], skip_lines: int,
                      delimiter: str, sink: LineSink, quote: str | bool = False,
                      numeric: frozenset[str] = frozenset()) -> Iterator[pl.DataFrame]:
    """Text frames of every field (``names``), after ``skip_lines`` header lines. Rows with the
    wrong number of fields go to ``sink``; no quoting unless ``quote`` (Zeek and nfdump never quote)."""
    # bytes that are not UTF-8 are replaced before Arrow sees them (it decodes a malformed row
    # before its handler does, and fails there), and a damaged .gz keeps the rows before the damage
    stream = open_text(path, compression)
    reader = None
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(column_names=list(names), skip_rows=skip_lines, block_size=BLOCK_SIZE),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=quote, invalid_row_handler=sink.handler),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.binary() for n in names}),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            yield arrow_to_polars(pa.Table.from_batches([batch]), numeric)
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


def json_frame(lines: list[bytes], schema: dict) -> tuple[pl.DataFrame, int]:
    """Parse JSON lines with a fixed schema (values as text); returns (frame, malformed lines).

    A batch parses in one call; only when it holds a malformed line (a truncated write, a
    non-object) is it checked line by line, and the bad lines are dropped and counted.
    """
    if not lines:
        return pl.DataFrame(schema=schema), 0
    try:
        return pl.read_ndjson(io.BytesIO(b"\n".join(lines)), schema=schema), 0
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError, ValueError):
        pass
    good = []
    for ln in lines:
        try:
            if isinstance(orjson.loads(ln.lstrip(b"\xef\xbb\xbf")), dict):
                good.append(ln.lstrip(b"\xef\xbb\xbf"))
        except orjson.JSONDecodeError:
            continue
    bad = len(lines) - len(good)
    if not good:
        return pl.DataFrame(schema=schema), bad
    try:
        return pl.read_ndjson(io.BytesIO(b"\n".join(good)), schema=schema), bad
    except (pl.exceptions.PolarsError, ValueError):   # a value polars cannot take (a deep array where text is due)
        frames, lost = [], 0
        for ln in good:
            try:
                frames.append(pl.read_ndjson(io.BytesIO(ln), schema=schema))
            except (pl.exceptions.PolarsError, ValueError):
                lost += 1
        return (pl.concat(frames) if frames else pl.DataFrame(schema=schema)), bad + lost


def reject_json(bad: int) -> dict[str, int]:
    return {R_JSON: bad} if bad else {}
