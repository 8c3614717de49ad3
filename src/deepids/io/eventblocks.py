"""JSON-Lines Windows event logs read a block of lines at a time, columnar.

A file's lines are gathered into blocks (at most a chunk of lines, and at most
:data:`BLOCK_BYTES`); a line over :data:`MAX_LINE_BYTES` is skipped without being held and
rejected, blank lines are skipped. Each block is parsed by polars' NDJSON reader with a fixed
text schema (the fields :func:`deepids.io.events.canonical_event` reads; numbers arrive as their
decimal text, missing keys as null) and canonicalised by the same rules as polars expressions.
Where the values are few (host, channel, user, event type) the rule itself is applied, once
per distinct value.

Exactness comes by fallback, not by imitating every corner: a block the columnar reader refuses
(a corrupt line, a line that is not an object, invalid UTF-8, NaN, nesting deeper than 1024) or
miscounts goes through the per-event path (:func:`python_row`, the rules of :mod:`deepids.io.events`
applied to each parsed line) whole, and so does, one line at a time, every line whose parsed text
alone cannot say what that path would make of it: a nested Winlogbeat event (`winlog`), a field
read here holding a boolean, an object or a fraction (Python's `str()` of it differs from the
reader's text), a numeric timestamp (epoch), a CommandLine of 0, a lone surrogate escape, deep
nesting, a field read here written twice. Both paths keep the whole event as `raw`: here the line
as read, there the parsed object as JSON (:func:`deepids.io.events.raw_json`); they decode to the
same object.
The test module `tests/io/test_eventblocks.py` holds both paths to the same output.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import orjson
import polars as pl

from deepids.errors import InputError
from deepids.io.events import (FAILURE_EVENTS, LOGON_EVENTS, R_NO_EVENT_ID, canonical_event, events_frame,
                               flatten_winlogbeat, host_application, normalise_channel, normalise_host, normalise_user,
                               parse_int)
from deepids.io.timestamps import parse_timestamps

#: the columnar reader is used (False: every line goes through the per-event path; for tests)
FAST = True
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


def jsonl_pieces(path: Path, keep_raw: bool, max_lines: int) -> Iterator[Piece]:
    """The canonical events of a JSON-Lines file, block by block."""
    for block in read_blocks(path, max_lines):
        piece = columnar_piece(block, path.name, keep_raw) if FAST else None
        yield piece if piece is not None else python_piece(
            zip(block.offsets, map(line_record, block.lines)), path.name, keep_raw, block.rejections, block.records)


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


# ------------------------------------------------------------------------- the columnar path
_TEXT_FIELDS = ("@timestamp", "EventTime", "Hostname", "Computer", "Channel", "SourceName", "SubjectUserName",
                "TargetUserName", "User", "Image", "NewProcessName", "SourceImage", "ProcessName", "Application",
                "ParentImage", "ParentProcessName", "CommandLine", "IpAddress", "SourceAddress", "SourceIp",
                "DestAddress", "DestinationIp", "EventType", "ContextInfo", "Message", "Data")
_INT_FIELDS = ("EventID", "RecordNumber", "LogonType", "ProcessId", "SourceProcessId", "NewProcessId",
               "ParentProcessId", "ExecutionProcessID", "IpPort", "SourcePort", "DestPort", "DestinationPort")
_SCHEMA = {k: pl.Utf8 for k in (*_TEXT_FIELDS, *_INT_FIELDS, "winlog")}
_KEY = r'"(?:' + "|".join(re.escape(k) for k in (*_TEXT_FIELDS, *_INT_FIELDS)) + r')"\s*:'
# in the line: a field read here whose value the reader's text does not render as Python's str()
# or parse_int() would (a boolean, an object or array, a fraction or exponent), a CommandLine of
# 0 (falsy in Python, so the host application is taken), a timestamp that is a number (epoch)
# ... and a surrogate escape (the reader reads a lone one as NUL)
_AMBIGUOUS = (_KEY + r"\s*(?:[tf\[{]|-?[0-9]+[.eE])|\"CommandLine\"\s*:\s*-?0\s*[,}]"
              r"|\"(?:@timestamp|EventTime)\"\s*:\s*-?[0-9]|\\u[dD][89a-fA-F]")
_DEEP = 500                 # more brackets than this in a line: nesting that may be too deep for `raw`
_PLAIN_INT = re.compile(r"-?[0-9]{1,18}|0[xX][0-9a-fA-F]{1,15}")
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1
_PY_SPACE = "".join(c for c in map(chr, range(0x110000)) if c.isspace())   # what str.strip() strips
_MARKERS = ("HostApplication=", "Host Application = ")


def _first(*names: str) -> pl.Expr:
    """The first value not null, "" or "-" (the rule of `events._first`)."""
    return pl.coalesce([pl.when((pl.col(n) != "") & (pl.col(n) != "-")).then(pl.col(n)) for n in names])


_PICKED = {   # the values the rules pick, as text
    "ts": _first("@timestamp", "EventTime"), "host": _first("Hostname", "Computer"), "channel": pl.col("Channel"),
    "provider": _first("SourceName"), "subject": _first("SubjectUserName"), "target": _first("TargetUserName"),
    "sysmon_user": _first("User"),
    "image": _first("Image", "NewProcessName", "SourceImage", "ProcessName", "Application"),
    "parent_image": _first("ParentImage", "ParentProcessName"), "command": _first("CommandLine"),
    "src_ip": _first("IpAddress", "SourceAddress", "SourceIp"), "dst_ip": _first("DestAddress", "DestinationIp"),
    "event_type": pl.col("EventType"),
    "event_id": pl.col("EventID"), "record_id": pl.col("RecordNumber"), "logon_type": pl.col("LogonType"),
    "pid_4688": pl.col("NewProcessId"), "ppid_4688": pl.col("ProcessId"),
    "pid": _first("ProcessId", "SourceProcessId", "NewProcessId"), "ppid": pl.col("ParentProcessId"),
    "execution_process_id": pl.col("ExecutionProcessID"), "src_port": _first("IpPort", "SourcePort"),
    "dst_port": _first("DestPort", "DestinationPort"),
}
_INTS = ("event_id", "record_id", "logon_type", "pid_4688", "ppid_4688", "pid", "ppid", "execution_process_id",
         "src_port", "dst_port")


def columnar_piece(block: Block, source_file: str, keep_raw: bool) -> Piece | None:
    """A block canonicalised in polars, its odd lines one by one; None when the NDJSON reader
    refuses or miscounts it (the block is then as it was; once read, its lines are released)."""
    if not block.lines:
        return Piece(events_frame([]), np.empty(0, dtype=np.int64), list(block.rejections), block.records)
    try:
        df = pl.read_ndjson(io.BytesIO(b"\n".join(block.lines)), schema=_SCHEMA)
        text = pl.Series("raw", block.lines, dtype=pl.Binary).cast(pl.Utf8)
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, ValueError):
        return None
    if df.height != len(block.lines):
        return None
    block.lines.clear()         # read: the text holds them now (memory follows one copy of the block, not two)
    odd = _odd_lines(text, df).to_numpy()
    table = _canonical(df, source_file).with_columns(
        text if keep_raw else pl.lit(None, dtype=pl.Utf8).alias("raw"), _at=pl.Series(block.offsets, dtype=pl.Int64))
    del df
    if odd.any():
        table = table.filter(pl.Series(~odd))
    rejections = []
    if table.get_column("event_id").null_count():
        rejections = [(at, R_NO_EVENT_ID, 1) for at in table.filter(pl.col("event_id").is_null()).get_column("_at")]
        table = table.filter(pl.col("event_id").is_not_null())
    if odd.any():
        slow = python_piece(((block.offsets[i], line_record(text[int(i)])) for i in np.flatnonzero(odd)),
                            source_file, keep_raw, [], 0)
        rejections += slow.rejections
        table = pl.concat([table, slow.table.with_columns(_at=pl.Series(slow.offsets, dtype=pl.Int64))]).sort("_at")
    rejections = sorted(rejections + block.rejections, key=lambda r: r[0])
    return Piece(table.drop("_at"), table.get_column("_at").to_numpy(), rejections, block.records)


def _odd_lines(lines: pl.Series, df: pl.DataFrame) -> pl.Series:
    """Lines whose parsed text alone does not say what the per-event path makes of them: a nested
    Winlogbeat event, an ambiguous value (`_AMBIGUOUS`), a lone surrogate, deep nesting (the
    reader and orjson refuse the same depth, 1024, but with `keep_raw` the per-event path rejects
    from about 1000 on, where Python's json cannot write the event back), or a field read here
    written twice (the reader keeps the first value, Python the last)."""
    odd = (df.get_column("winlog").is_not_null() | lines.str.contains(_AMBIGUOUS)
           | (lines.str.count_matches("[", literal=True) + lines.str.count_matches("{", literal=True) > _DEEP))
    keys = lines.str.count_matches(_KEY)
    present = df.select(pl.sum_horizontal(pl.all().is_not_null())).to_series()
    twice = keys > present                  # a key more than its values: written twice, or null
    if twice.any():
        found = lines.filter(twice).str.extract_all(_KEY).list.eval(pl.element().str.replace_all(r"\s", ""))
        twice = twice.scatter(np.flatnonzero(twice.to_numpy()), found.list.len() != found.list.unique().list.len())
    return odd | twice


def _canonical(df: pl.DataFrame, source_file: str) -> pl.DataFrame:
    """The parsed fields -> the canonical columns, by `events.canonical_event`'s rules."""
    picked = df.select(**_PICKED)
    out = picked.with_columns(
        channel=_mapped(picked, "channel", normalise_channel), host=_mapped(picked, "host", normalise_host),
        subject=_mapped(picked, "subject", normalise_user), target=_mapped(picked, "target", normalise_user),
        sysmon_user=_mapped(picked, "sysmon_user", normalise_user),
        outcome=_mapped(picked, "event_type", _outcome_of), command=pl.coalesce("command", _host_application(df)),
        **_ints(picked))
    event_id = pl.col("event_id")
    logon = event_id.is_in(list(LOGON_EVENTS))
    is_4688 = (event_id == 4688) & (pl.col("channel") == "Security")
    return out.select(
        timestamp=_timestamps(picked.get_column("ts")), host="host", channel="channel", provider="provider",
        event_id=event_id, record_id="record_id",
        subject_user=pl.coalesce("subject", pl.when(logon.not_()).then("sysmon_user")), target_user="target",
        user=pl.when(logon).then(pl.coalesce("target", "subject")).otherwise(
            pl.coalesce("subject", "sysmon_user", "target")),
        logon_type="logon_type", image="image", parent_image="parent_image", command_line="command",
        process_id=pl.when(is_4688).then("pid_4688").otherwise("pid"),
        parent_process_id=pl.when(is_4688).then("ppid_4688").otherwise("ppid"),
        execution_process_id="execution_process_id", src_ip="src_ip", src_port="src_port", dst_ip="dst_ip",
        dst_port="dst_port",
        outcome=pl.when(event_id.is_in(list(FAILURE_EVENTS))).then(pl.lit("failure")).otherwise("outcome"),
        source_file=pl.lit(source_file, dtype=pl.Utf8))


def _mapped(df: pl.DataFrame, name: str, rule: Callable) -> pl.Expr:
    """The column `name` through a Python rule, applied once per distinct value."""
    values = df.get_column(name).drop_nulls().unique().to_list()
    if not values:
        return pl.lit(rule(None), dtype=pl.Utf8)
    return pl.col(name).replace_strict(values, [rule(v) for v in values], default=rule(None), return_dtype=pl.Utf8)


def _ints(df: pl.DataFrame) -> dict[str, pl.Expr]:
    """`parse_int` of each integer column: in polars for plain decimal and 0x text, by the rule itself
    for any other value (once per distinct value)."""
    distinct = df.select(pl.col(name).drop_nulls().unique().implode() for name in _INTS).row(0)
    out = {}
    for name, values in zip(_INTS, distinct):
        c = pl.col(name)
        out[name] = c.cast(pl.Int64, strict=False)
        if any(v[:2] in ("0x", "0X") for v in values):
            out[name] = pl.when(c.str.starts_with("0x") | c.str.starts_with("0X")).then(
                c.str.slice(2).str.to_integer(base=16, strict=False)).otherwise(out[name])
        odd = [v for v in values if not _PLAIN_INT.fullmatch(v) and v not in ("", "-")]
        if odd:
            ints = [parse_int(v) for v in odd]
            ints = [v if v is not None and _INT_MIN <= v <= _INT_MAX else None for v in ints]  # as events_frame casts
            out[name] = c.replace_strict(odd, ints, default=out[name], return_dtype=pl.Int64)
    return out


def _outcome_of(event_type) -> str | None:
    t = str(event_type or "").upper()
    return "failure" if "FAILURE" in t else "success" if "SUCCESS" in t else None


def _timestamps(ts: pl.Series) -> pl.Series:
    """`parse_timestamps`; when every value is in the format it tries first (`...T...Z`), that format alone."""
    first = ts.str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.fZ", strict=False)
    if first.null_count() == ts.null_count():
        return first.dt.replace_time_zone(None)
    return parse_timestamps(ts)


def _host_application(df: pl.DataFrame) -> pl.Series:
    """`events.host_application` on each row: the rest of the line after the first marker in the
    first of ContextInfo, Message, Data holding one (stripped; empty: none). Found by byte offset,
    cut by character offset: a text that is not ASCII is cut by the rule itself."""
    keys = ("ContextInfo", "Message", "Data")
    ends = {f"e{i}": pl.when((at := pl.col(k).str.find(_MARKERS[0], literal=True)).is_not_null())
            .then(at + len(_MARKERS[0])).otherwise(pl.col(k).str.find(_MARKERS[1], literal=True) + len(_MARKERS[1]))
            for i, k in enumerate(keys)}
    found = df.select(*keys, **ends)
    if found.select(pl.coalesce(list(ends)).null_count()).item() == df.height:
        return pl.Series("hostapp", [None] * df.height, dtype=pl.Utf8)
    text = found.select(
        t=pl.when(pl.col("e0").is_not_null()).then(pl.col(keys[0])).when(pl.col("e1").is_not_null())
        .then(pl.col(keys[1])).otherwise(pl.col(keys[2])), start=pl.coalesce(list(ends)))
    rest = text.select(r=pl.col("t").str.slice(pl.col("start")),
                       ascii=(pl.col("t").str.len_bytes() == pl.col("t").str.len_chars()).fill_null(True))
    line = rest.select(pl.when((nl := pl.col("r").str.find("\n", literal=True)).is_null()).then(pl.col("r"))
                       .otherwise(pl.col("r").str.head(nl)).str.strip_chars(_PY_SPACE).alias("hostapp")).to_series()
    line = line.set(line == "", None)
    wide = np.flatnonzero(~rest.get_column("ascii").to_numpy())
    if wide.size:
        texts = found.select(keys)[wide].iter_rows()
        line = line.scatter(wide, pl.Series([host_application(dict(zip(keys, t))) for t in texts], dtype=pl.Utf8))
    return line
