"""Bodies and lines as they arrive, parsed into records: JSON (with Python's NaN/Infinity
literals), NDJSON and CSV lines. What cannot be parsed becomes :class:`Unparsable` with the file
readers' reason, and a record refused later is a :class:`Rejection`; both keep their position, so
every item is accounted for. :mod:`deepids.io.records` (flows) and :mod:`deepids.io.events`
(Windows events) canonicalise the records.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from deepids.io.cast import R_EMPTY_ROW, R_FIELDS, R_HEADER
from deepids.io.layouts import clean_name

__all__ = ["Rejection", "Unparsable", "loads_json", "parse_ndjson", "CsvLineParser", "R_NOT_JSON"]

R_NOT_JSON = "invalid JSON"


@dataclass(frozen=True)
class Rejection:
    """A record refused: its position in the input, the field at fault (None when the record
    as a whole is at fault) and the reason."""

    index: int
    field: str | None
    reason: str

    def to_dict(self) -> dict:
        """``record`` (its position in the input), ``field`` and ``reason``."""
        return {"record": self.index, "field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class Unparsable:
    """Placeholder for an input item that could not even be parsed into a record."""

    reason: str
    field: str | None = None



# --------------------------------------------------------------------------------------
# Parsing bodies and lines
# --------------------------------------------------------------------------------------

def _nonfinite_literals(data: bytes, tokens: tuple[bytes, ...] = (b"NaN", b"Infinity")) -> bytes:
    """`NaN`, `Infinity` and `-Infinity` literals, which Python's json reads and orjson does not,
    turned into the JSON strings "NaN", "Infinity", "-Infinity" (read as the same numbers).

    Only tokens in value position (after `:`, `[`, `,` or a line start, before `,`, `]`, `}` or
    a line end) are quoted. A token inside a string that looks like one is quoted too, which
    makes the text invalid, so the caller falls back to the standard library for it.
    """
    hits = []
    for token in tokens:
        i = data.find(token)
        while i >= 0:
            hits.append((i, i + len(token)))
            i = data.find(token, i + len(token))
    hits.sort()
    out: list[bytes] = []
    last = 0
    n = len(data)
    for start, stop in hits:
        if stop - start == 8 and start > 0 and data[start - 1] == 0x2D:      # -Infinity
            start -= 1
        j = start - 1
        while j >= 0 and data[j] in b" \t\r":
            j -= 1
        k = stop
        while k < n and data[k] in b" \t\r":
            k += 1
        if (j < 0 or data[j] in b":[,\n") and (k >= n or data[k] in b",]}\n"):
            out += [data[last:start], b'"', data[start:stop], b'"']
            last = stop
    if not out:
        return data
    out.append(data[last:])
    return b"".join(out)


def loads_json(data: bytes | str) -> Any:
    """One JSON text, read as Python's json reads it (NaN, Infinity, integers of any size;
    invalid UTF-8 replaced), with orjson's speed wherever orjson can read it.

    Non-finite literals come back as the strings "NaN"/"Infinity"/"-Infinity" from the fast
    path, which every numeric field reads as the same value. Raises ValueError or
    RecursionError for text that is not JSON.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:        # Infinity is cheap to look for; NaN (a short, common-lettered token) only on failure
        return orjson.loads(_nonfinite_literals(raw, (b"Infinity",)) if b"Infinity" in raw else raw)
    except orjson.JSONDecodeError:
        retry = b"NaN" in raw
    if retry:
        try:
            return orjson.loads(_nonfinite_literals(raw))
        except orjson.JSONDecodeError:
            pass
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return json.loads(text)


def _json_line(line: str | bytes) -> Any:
    try:
        return loads_json(line)
    except (ValueError, RecursionError):
        return Unparsable(R_NOT_JSON)


def parse_ndjson(text: str | bytes | Iterable[str | bytes]) -> list[Any]:
    """One item per non-blank line: the parsed JSON value, or :class:`Unparsable`.

    Lines end at ``\\n`` (a ``\\r`` before it is ignored), as NDJSON defines them.
    """
    if isinstance(text, bytes):
        lines: Iterable = text.split(b"\n")
    elif isinstance(text, str):
        lines = text.split("\n")
    else:
        lines = text
    return [_json_line(line) for line in lines if line.strip()]


class CsvLineParser:
    """Turns CSV lines into records (dicts keyed by the header's fields).

    A line with the wrong number of fields, an empty row (every field blank) or a repeat of
    the header line becomes :class:`Unparsable` with the file readers' reason.
    """

    def __init__(self, header: str):
        header = header.lstrip("\ufeff").rstrip("\r\n")
        raw = next(csv.reader([header]))
        self._header_key = [f.strip() for f in raw]
        seen: dict[str, int] = {}
        self.fields: list[str] = []
        for f in raw:          # a repeated name becomes "name.1" (the readers keep the first)
            key = clean_name(f)
            k = seen.get(key, 0)
            seen[key] = k + 1
            self.fields.append(f if k == 0 else f"{key}.{k}")

    def parse(self, lines: Sequence[str]) -> list[Any]:
        out: list[Any] = []
        n = len(self.fields)
        try:
            rows = list(csv.reader([line.rstrip("\r\n") for line in lines]))
        except csv.Error:
            return [self._parse_one(line) for line in lines]
        for row in rows:
            out.append(self._row(row, n))
        return out

    def _parse_one(self, line: str) -> Any:
        try:
            row = next(csv.reader([line.rstrip("\r\n")]))
        except (csv.Error, StopIteration):
            return Unparsable(R_FIELDS)
        return self._row(row, len(self.fields))

    def _row(self, row: list[str], n: int) -> Any:
        if len(row) != n:
            if not any(v.strip() for v in row):
                return Unparsable(R_EMPTY_ROW)
            return Unparsable(R_FIELDS)
        if not any(v.strip() for v in row):
            return Unparsable(R_EMPTY_ROW)
        if [v.strip() for v in row] == self._header_key:
            return Unparsable(R_HEADER)
        return dict(zip(self.fields, row))
