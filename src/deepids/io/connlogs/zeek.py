"""Zeek ``conn.log``: the TSV layout (``#separator``/``#fields``/``#types`` header, ``-`` unset,
``(empty)``, ``#close``, gzip, rotated files, concatenated files) and JSON lines.

The header names the fields; :data:`CONN_FIELDS` maps Zeek's to the canonical connection
record (:mod:`deepids.io.connlogs.schema`). Other numeric fields (``count``, ``int``,
``double``, ``interval`` in ``#types``: ``missed_bytes``, ``orig_ip_bytes`` … and those a site's
scripts add) are kept as features under their Zeek names, ``bool`` fields as 0/1, and
``history`` as a category. Address, set and vector fields other than the 5-tuple are not
features. A field called ``label`` (or the one ``label_column`` names) is the label.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from deepids.errors import InputError
from deepids.io.connlogs.schema import Field, batch_report, cast_batch, cast_fields, kept_numbers, numeric_sources
from deepids.io.connlogs.text import (ROW, LineSink, RowNumbers, delimited_batches, json_frame, line_batches,
                                      rebatch, reject_json)
from deepids.io.paths import open_stream
from deepids.io.report import ReadReport

CONN_FIELDS: tuple[Field, ...] = (
    Field("ts", "timestamp", "epoch"), Field("uid", "flow_id", "str"),
    Field("id.orig_h", "src_ip", "str"), Field("id.orig_p", "src_port", "port"),
    Field("id.resp_h", "dst_ip", "str"), Field("id.resp_p", "dst_port", "port"),
    Field("proto", "protocol", "proto"), Field("duration", "duration", "count"),
    Field("orig_pkts", "src_packets", "count"), Field("resp_pkts", "dst_packets", "count"),
    Field("orig_bytes", "src_bytes", "count"), Field("resp_bytes", "dst_bytes", "count"),
    Field("conn_state", "state", "str"), Field("service", "service", "str"),
    Field("history", "history", "str"),
)
_KNOWN = {f.src for f in CONN_FIELDS}
_NUMERIC_TYPES = ("int", "double", "interval")
# the extras of Zeek's own conn.log, for JSON lines (which carry no #types)
_JSON_EXTRAS = (("missed_bytes", "count"), ("orig_ip_bytes", "count"), ("resp_ip_bytes", "count"),
                ("local_orig", "bool"), ("local_resp", "bool"))
_REQUIRED = ("ts", "id.orig_h", "id.resp_h")
_MAX_HEADER = 1 << 20


@dataclass
class ZeekHeader:
    separator: str = "\t"
    unset: str = "-"
    empty: str = "(empty)"
    path: str | None = None
    names: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    lines: int = 0


def _unescape(value: str) -> str:
    try:
        return value.encode("ascii").decode("unicode_escape")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def read_header(path: Path, compression: str | None) -> ZeekHeader:
    """The ``#`` directives at the top of a TSV conn.log."""
    with open_stream(path, compression) as stream:
        head = stream.read(_MAX_HEADER)
    h = ZeekHeader()
    for raw in head.split(b"\n"):
        line = raw.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
        if not line.startswith("#"):
            break
        h.lines += 1
        if line.startswith("#separator"):
            h.separator = _unescape(line[len("#separator"):].strip()) or "\t"
            continue
        key, _, value = line.partition(h.separator)
        if key == "#unset_field":
            h.unset = value
        elif key == "#empty_field":
            h.empty = value
        elif key == "#path":
            h.path = value
        elif key == "#fields":
            h.names = value.split(h.separator)
        elif key == "#types":
            h.types = value.split(h.separator)
    if not h.names:
        raise InputError(f"{path} starts like a Zeek log but has no #fields line")
    if h.path not in (None, "conn") and not {"id.orig_h", "conn_state"} <= set(h.names):
        raise InputError(f"{path} is a Zeek {h.path} log; deepids reads conn logs (conn.log)")
    missing = [n for n in _REQUIRED if n not in h.names]
    if missing:
        raise InputError(f"{path} is a Zeek log without {', '.join(missing)}: not a conn.log")
    if len(h.separator) != 1:
        raise InputError(f"{path}: Zeek separator {h.separator!r} is not one character")
    return h


def _fields(names: list[str], types: list[str], label_column: str | None) -> list[Field]:
    out = [f for f in CONN_FIELDS if f.src in names]
    typed = dict(zip(names, types)) if len(types) == len(names) else {}
    for name in names:
        if name in _KNOWN:
            continue
        if name == (label_column or "label"):
            out.append(Field(name, "label", "label"))
        elif typed.get(name) == "count":
            out.append(Field(name, name, "count"))
        elif typed.get(name) in _NUMERIC_TYPES:
            out.append(Field(name, name, "float"))
        elif typed.get(name) == "bool":
            out.append(Field(name, name, "bool"))
    if label_column and label_column not in names:
        raise InputError(f"label column {label_column!r} is not a field of this Zeek log")
    return out


DIRECTIVES = "Zeek '#' lines after the header (#close, concatenated logs)"


def _directive(text: str) -> str | None:
    return DIRECTIVES if text.startswith("#") else None


def tsv_batches(path: Path, compression: str | None, batch_size: int,
                label_column: str | None = None) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    h = read_header(path, compression)
    fields = _fields(h.names, h.types, label_column)
    sink = LineSink(_directive)
    unset = (h.unset, h.empty)
    used = {h.names[0], *(f.src for f in fields)}        # the first field: '#' lines with the full count
    raw_frames = delimited_batches(path, compression, h.names, h.lines, h.separator, sink,
                                   numeric=numeric_sources(fields), include=[n for n in h.names if n in used],
                                   unset=unset)
    numbering = RowNumbers(sink)
    for raw in rebatch(raw_frames, batch_size):
        first = raw[h.names[0]]
        comment = (first.cast(pl.Utf8).str.starts_with("#").fill_null(False) if first.dtype == pl.Utf8
                   else pl.Series([False] * raw.height))
        n_comment = int(comment.sum())
        if n_comment:
            numbering.ignore(raw.filter(comment)[ROW].to_numpy())
            raw = raw.filter(~comment)
        done = cast_batch(raw, fields, unset)
        rejected = dict(done.rejected)
        bad, skipped = sink.take()
        for k, v in bad.items():
            rejected[k] = rejected.get(k, 0) + v
        skipped[DIRECTIVES] = skipped.get(DIRECTIVES, 0) + n_comment
        numbers = numbering.of(raw[ROW].to_numpy()[done.reasons < 0])
        yield done.frame, batch_report("zeek-conn", path, done.frame, rejected, skipped, numbers=numbers,
                                       parsed=done.frame.height + sum(rejected.values()))
    bad, skipped = sink.take()
    if bad or skipped:
        yield _empty(fields), batch_report("zeek-conn", path, _empty(fields), bad, skipped)


def _empty(fields: list[Field]) -> pl.DataFrame:
    frame, _ = cast_fields(pl.DataFrame(schema={f.src: pl.Utf8 for f in fields}), fields)
    return frame


def json_batches(path: Path, compression: str | None, batch_size: int,
                 label_column: str | None = None) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    fields = list(CONN_FIELDS) + [Field(n, n, k) for n, k in _JSON_EXTRAS]
    fields.append(Field(label_column or "label", "label", "label"))
    schema = {f.src: pl.Utf8 for f in fields}
    labelled = None
    done_rows = 0
    for lines in line_batches(path, compression, batch_size):
        raw, good = json_frame(lines, schema)
        if labelled is None:     # the first batch decides whether the file has labels
            labelled = bool(raw.height) and raw[fields[-1].src].null_count() < raw.height
        use = fields if labelled else fields[:-1]
        done = cast_batch(raw, use)
        rejected = {**done.rejected, **reject_json(len(lines) - len(good))}
        yield done.frame, batch_report("zeek-conn-json", path, done.frame, rejected,
                                       numbers=kept_numbers(done, done_rows, good), parsed=len(lines))
        done_rows += len(lines)
