"""Connection logs arriving line by line (``deepids stream --follow conn.log``): the same
mapping and the same rejection rules as the file readers, with a reason per record.

A :class:`ConnLineParser` is made from the first line of the stream (which says the source)
and keeps what the stream has told it so far: Zeek's ``#fields``/``#types`` header, nfdump's
or NFStream's CSV header, whether nfdump's summary footer has begun. Lines that are no
records of the kind (Zeek directives, Suricata ``dns``/``alert``… events, nfdump's footer) are
counted in ``ignored``.
"""

from __future__ import annotations

import csv
from collections import Counter
from typing import Any

import numpy as np
import orjson
import polars as pl

from deepids.errors import InputError
from deepids.io.connlogs import nfdump, nfstream, suricata, zeek
from deepids.io.connlogs.schema import R_FIELDS, R_JSON, Field, cast_rows
from deepids.io.textstream import odd_quotes
from deepids.io.records import CanonicalRecords, Rejection

_BAD = "__deepids_rejected__"


def _flat(obj: dict, prefix: str = "") -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, bool):
            out[prefix + k] = "true" if v else "false"
        elif v is None or isinstance(v, (str, int, float)):
            out[prefix + k] = None if v is None else str(v)
    return out


class ConnLineParser:
    """Lines of one connection-log source -> records (dicts of text) -> canonical records."""

    def __init__(self, source: str):
        if source not in ("zeek-conn", "zeek-conn-json", "suricata-eve", "nfdump-csv", "nfstream"):
            raise InputError(f"{source!r} cannot be streamed")
        self.source = source
        self.ignored: Counter = Counter()
        self.header = zeek.ZeekHeader()
        self.names: list[str] | None = None
        self.footer = nfdump.Footer()
        self.header_lines: list[str] = []
        self._ignored_total = 0
        self.fields: list[Field] = []
        if source == "zeek-conn-json":
            self.fields = list(zeek.CONN_FIELDS) + [Field(n, n, k) for n, k in zeek._JSON_EXTRAS]
        elif source == "suricata-eve":
            self.fields = list(suricata.FLOW_FIELDS)

    # ---------------------------------------------------------------- lines -> records
    def records(self, lines: list[str]) -> list[dict]:
        out: list[dict] = []
        for line in lines:
            rec = self.record(line)
            if rec is not None:
                out.append(rec)
        return out

    def record(self, line: str) -> dict | None:
        """One line: its record (a dict of text; a rejected one carries its reason), or None
        for a line that is no record (a header, a directive, another event type, a footer)."""
        text = line.lstrip("\ufeff").rstrip("\r")
        if not text.strip():
            return None
        rec = self._record(text)
        if rec is None and not self.ignored_changed():
            self.header_lines.append(text)      # a header line: kept, so that a resumed stream knows it
        return rec

    def ignored_changed(self) -> bool:
        total = sum(self.ignored.values())
        changed, self._ignored_total = total != self._ignored_total, total
        return changed

    def _record(self, text: str) -> dict | None:
        if self.source == "zeek-conn":
            return self._zeek(text)
        if self.source in ("zeek-conn-json", "suricata-eve"):
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError:
                return {_BAD: R_JSON}
            if not isinstance(obj, dict):
                return {_BAD: R_JSON}
            if self.source == "suricata-eve" and obj.get("event_type") != "flow":
                self.ignored[f"'{obj.get('event_type')}' events (not flows)"] += 1
                return None
            return _flat(obj)
        return self._csv(text)

    def _zeek(self, text: str) -> dict | None:
        if text.startswith("#"):
            h = self.header
            if text.startswith("#separator"):
                h.separator = zeek._unescape(text[len("#separator"):].strip()) or "\t"
                return None
            key, _, value = text.partition(h.separator)
            if key == "#fields":
                h.names = value.split(h.separator)
            elif key == "#types":
                h.types = value.split(h.separator)
                self.fields = zeek._fields(h.names, h.types, None)
            elif key in ("#unset_field", "#empty_field"):
                setattr(h, "unset" if key == "#unset_field" else "empty", value)
            elif key not in ("#set_separator", "#path", "#open"):
                self.ignored[zeek.DIRECTIVES] += 1
            return None
        if not self.header.names:
            raise InputError("the Zeek stream has no #fields header before its first record")
        if not self.fields:
            self.fields = zeek._fields(self.header.names, [], None)
        parts = text.split(self.header.separator)
        if len(parts) != len(self.header.names):
            return {_BAD: R_FIELDS}
        return dict(zip(self.header.names, parts))

    def _csv(self, text: str) -> dict | None:
        if self.names is None:
            if self.source == "nfdump-csv" and nfdump.looks_like_record(text):
                self.names = list(nfdump.NFDUMP_COLUMNS)
            else:
                self.names = [n.strip().strip('"') for n in text.split(",")]
                self.fields = (nfdump.fields_for(self.names) if self.source == "nfdump-csv"
                               else nfstream.fields_for(self.names))
                return None
            self.fields = nfdump.fields_for(self.names)
        if self.source == "nfstream" and odd_quotes(text):
            return {_BAD: R_FIELDS}         # a quote left open: the file reader rejects this line alone too
        parts = next(csv.reader([text])) if self.source == "nfstream" else text.split(",")
        if self.source == "nfdump-csv":
            footer = self.footer(text) if len(parts) != len(self.names) or text.strip() == "Summary" else None
            if footer is None and nfdump.is_header_row(parts[0].strip()):
                footer = nfdump.REPEATED
            if footer is not None:
                self.ignored[footer] += 1
                return None
        if len(parts) != len(self.names):
            return {_BAD: R_FIELDS}
        return dict(zip(self.names, parts))

    # ---------------------------------------------------------------- records -> table
    def canonicalise(self, items: list[Any]) -> CanonicalRecords:
        bad = [(i, it[_BAD] if isinstance(it, dict) else getattr(it, "reason", "unreadable record"))
               for i, it in enumerate(items) if not isinstance(it, dict) or _BAD in it]
        good = [i for i, it in enumerate(items) if isinstance(it, dict) and _BAD not in it]
        names = list(dict.fromkeys(f.src for f in self.fields))
        extra = {"suricata-eve": ("flow.start", "flow.end"), "nfstream": ("bidirectional_duration_ms",)}
        cols = names + [c for c in extra.get(self.source, ()) if c not in names]
        raw = pl.DataFrame({c: [items[i].get(c) for i in good] for c in cols}, schema={c: pl.Utf8 for c in cols})
        raw = self._prepare(raw)
        unset = (self.header.unset, self.header.empty) if self.source == "zeek-conn" else ("-",)
        table, reasons = cast_rows(raw, self.fields, unset)
        keep = [i for i, r in zip(good, reasons) if r is None]
        rejected = [Rejection(i, None, r) for i, r in bad]
        rejected += [Rejection(i, None, r) for i, r in zip(good, reasons) if r is not None]
        rejected.sort(key=lambda r: r.index)
        return CanonicalRecords(table, np.asarray(keep, dtype=np.int64), rejected)

    def _prepare(self, raw: pl.DataFrame) -> pl.DataFrame:
        if self.source == "suricata-eve":
            return suricata.prepare(raw)
        if self.source == "nfdump-csv":
            return nfdump.prepare(raw)
        if self.source == "nfstream":
            return nfstream.prepare(raw)
        return raw


def canonicalise_body(body: bytes, required: list[str] | None = None) -> CanonicalRecords | None:
    """A request body that is a connection log (lines of a Zeek ``conn.log`` with its header, EVE
    events, nfdump or NFStream CSV with its header): its canonical records, numbered within the
    body as a file's records are (headers, directives, footers and other event types are no
    records); None when the body is no connection log. An InputError when it holds no record,
    or lacks a column of ``required`` (the model reads other records)."""
    from deepids.io.connlogs import source_of_line

    lines = body.decode("utf-8", "replace").lstrip("\ufeff").splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    source = source_of_line(first) if first is not None else None
    if source is None:
        return None
    parser = ConnLineParser(source)
    items = parser.records(lines)
    if not items:
        raise InputError(f"the {source} body holds no record")
    canon = parser.canonicalise(items)
    missing = [c for c in required or () if c not in canon.table.columns]
    if missing and canon.table.height:
        raise InputError(f"the body is a {source} log, but the model reads other records "
                         f"(missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})")
    return canon
