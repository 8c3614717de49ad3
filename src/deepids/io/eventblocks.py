"""JSON-Lines Windows event logs read a block of lines at a time, columnar.

A file's lines are gathered into blocks by :func:`deepids.io.eventlines.read_blocks` (at most a
chunk of lines, and at most `BLOCK_BYTES`). Each block is parsed by polars' NDJSON reader with a fixed
text schema (the fields :func:`deepids.io.events.canonical_event` reads; numbers arrive as their
decimal text, missing keys as null) and canonicalised by the same rules as polars expressions.
Where the values are few (host, channel, user, event type) the rule itself is applied, once
per distinct value.

Exactness comes by fallback, not by imitating every corner: a block the columnar reader refuses
(a corrupt line, a line that is not an object, invalid UTF-8, NaN, nesting deeper than 1024) or
miscounts goes through the per-event path (:mod:`deepids.io.eventlines`, the rules of :mod:`deepids.io.events`
applied to each parsed line) whole, and so does, one line at a time, every line whose parsed text
alone cannot say what that path would make of it: a nested Winlogbeat event (`winlog`), a field
read here holding a boolean, an object or a fraction (Python's `str()` of it differs from the
reader's text), a numeric timestamp (epoch), a CommandLine of 0, a lone surrogate escape, deep
nesting, a field read here written twice. Both paths keep the whole event as `raw`: here the line
as read, there the parsed object as JSON (:func:`deepids.io.events.raw_json`); they decode to the
same object. The test module `tests/io/test_eventblocks.py` holds both paths to the same output.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import polars as pl

from deepids.io.eventlines import Block, Piece, line_record, python_piece, read_blocks
from deepids.io.events import (FAILURE_EVENTS, LOGON_EVENTS, R_NO_EVENT_ID, events_frame, host_application,
                               normalise_channel, normalise_host, normalise_user, parse_int)
from deepids.io.timestamps import parse_timestamps

log = logging.getLogger(__name__)

#: the columnar reader is used (False: every line goes through the per-event path; for tests)
FAST = True


def jsonl_pieces(path: Path, keep_raw: bool, max_lines: int) -> Iterator[Piece]:
    """The canonical events of a JSON-Lines file, block by block."""
    for block in read_blocks(path, max_lines):
        piece = columnar_piece(block, path.name, keep_raw) if FAST else None
        yield piece if piece is not None else python_piece(
            zip(block.offsets, map(line_record, block.lines)), path.name, keep_raw, block.rejections, block.records)


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
# what str.strip() strips: the characters whose str.isspace() is true (a constant: computing it at
# import walked all 1.1 M code points, 0.12 s of every start-up; tests/io/test_eventblocks.py checks it)
_PY_SPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
             "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
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
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, ValueError) as exc:
        log.debug("%s: %d lines read event by event (the NDJSON reader refused them: %s)", source_file,
                  len(block.lines), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    if df.height != len(block.lines):
        log.debug("%s: %d lines read event by event (the NDJSON reader made %d rows of them)", source_file,
                  len(block.lines), df.height)
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
    reader and orjson refuse the same depth, 1024, but from about 1000 on the per-event path has no
    `raw` for the event: Python's json cannot write it back), or a field read here written twice
    (the reader keeps the first value, Python the last)."""
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
