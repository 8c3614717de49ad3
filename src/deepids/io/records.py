"""Records that arrive one by one (HTTP bodies, NDJSON lines, CSV lines) as canonical tables.

The file readers of :mod:`deepids.io.flows` reject a whole row for a bad cell; here the unit is
the record, and each rejected record is named with its position, the field at fault and a
short reason, so a service can answer "record 3: 'Flow Duration': non-numeric value" while it
scores the rest.

Field names are mapped as the file readers map them: leading/trailing spaces and repeated
blanks are ignored, CSE-CIC-IDS2018 spellings (``Tot Fwd Pkts``) become the CICIDS2017 ones,
identifier columns (``Source IP``, ``Src IP``, ``Dst Port``, ``Timestamp``, ...) become the
metadata names (``src_ip``, ``dst_port``, ``timestamp``, ...), which are accepted as they are
too. Values are parsed as the readers parse cells: numbers or numeric text, ``Infinity``/
``NaN`` and empty or null values (NaN, filled by the model's preprocessing) are accepted;
ports and protocol must be integers; timestamps are parsed by :func:`parse_timestamps`, or
read as Unix seconds when they are numbers, and an unparseable timestamp becomes null (counted,
not rejected). Unknown fields are ignored (they stay in the caller's original record).

Reasons a record is rejected (low cardinality, usable as metric labels): see ``REASONS``.
"""

from __future__ import annotations

import csv
import json
import math
from operator import itemgetter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import polars as pl

from deepids.io.cast import R_EMPTY_ROW, R_FIELDS, R_HEADER
from deepids.io.layouts import clean_name
from deepids.io.timestamps import parse_timestamps
from deepids.io.schema import FLOW_FEATURES, FLOW_METADATA, IDS2018_TO_CANONICAL, LABEL, METADATA_COLUMNS

__all__ = [
    "Rejection",
    "Unparsable",
    "CanonicalRecords",
    "canonical_name",
    "records_to_table",
    "parse_ndjson",
    "loads_json",
    "CsvLineParser",
    "REASONS",
]

R_NOT_JSON = "invalid JSON"
R_NOT_OBJECT = "not a JSON object"
R_MISSING = "missing field"
R_NON_NUMERIC = "non-numeric value"
R_NON_INTEGER = "non-integer value"
R_OUT_OF_RANGE = "number out of range"
R_WRONG_TYPE = "wrong type"
REASONS = (R_NOT_JSON, R_NOT_OBJECT, R_MISSING, R_NON_NUMERIC, R_NON_INTEGER, R_OUT_OF_RANGE,
           R_WRONG_TYPE, R_FIELDS, R_EMPTY_ROW, R_HEADER)

_META_KIND = {"flow_id": "str", "src_ip": "str", "dst_ip": "str", "src_port": "int",
              "dst_port": "int", "protocol": "int", "timestamp": "ts"}
_DUPLICATE_FWD_HEADER = "Fwd Header Length.1"
_INT64_MAX = float(2 ** 63)


@dataclass(frozen=True)
class Rejection:
    """A record refused: its position in the input, the field at fault (None when the record
    as a whole is at fault) and the reason."""

    index: int
    field: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"index": self.index, "field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class Unparsable:
    """Placeholder for an input item that could not even be parsed into a record."""

    reason: str
    field: str | None = None


@dataclass
class CanonicalRecords:
    """Records as a canonical table, plus those rejected.

    ``table`` holds the accepted records in input order; ``index[i]`` is the input position
    of table row i. Every input position is in exactly one of ``index`` and ``rejected``.
    """

    table: pl.DataFrame
    index: np.ndarray
    rejected: list[Rejection] = field(default_factory=list)
    unparsed_timestamps: int = 0

    @property
    def n_input(self) -> int:
        return len(self.index) + len(self.rejected)

    def rejected_reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rejected:
            out[r.reason] = out.get(r.reason, 0) + 1
        return out


_NAMES: dict[str, str | None] = {}


def _build_names() -> None:
    for f in FLOW_FEATURES:
        _NAMES[f] = f
    for raw, canon in IDS2018_TO_CANONICAL.items():
        _NAMES[raw] = canon
    for raw, canon in FLOW_METADATA.items():
        _NAMES[raw] = canon
    for m in METADATA_COLUMNS:
        _NAMES[m] = m
    _NAMES[_DUPLICATE_FWD_HEADER] = None
    _NAMES["Label"] = LABEL
    _NAMES["label"] = LABEL


_build_names()


def canonical_name(name: str) -> str | None:
    """The canonical column a raw field name maps to (None: a field that is dropped)."""
    try:
        return _NAMES[name]
    except KeyError:
        pass
    except TypeError:                 # unhashable: cannot be a field name
        return None
    cleaned = clean_name(str(name))
    canon = _NAMES.get(cleaned, cleaned)
    if len(_NAMES) < 100_000:        # bounded cache of spellings seen
        _NAMES[name] = canon
    return canon


def _parse_number(v: Any) -> tuple[float, str | None]:
    """(value, None) or (nan, reason)."""
    t = type(v)
    if t is float:
        return v, None
    if t is int:
        try:
            return float(v), None
        except OverflowError:
            return math.nan, R_OUT_OF_RANGE
    if v is None:
        return math.nan, None
    if t is str:
        s = v.strip()
        if not s:
            return math.nan, None
        try:
            return float(s), None
        except ValueError:
            return math.nan, R_NON_NUMERIC
    if t is bool or isinstance(v, (dict, list, tuple)):
        return math.nan, R_WRONG_TYPE
    if isinstance(v, (int, float, np.integer, np.floating)):
        try:
            return float(v), None
        except OverflowError:
            return math.nan, R_OUT_OF_RANGE
    return math.nan, R_WRONG_TYPE


def _float_column(values: list) -> tuple[np.ndarray, dict[int, str]]:
    """Float64 values and {position: reason} for those refused."""
    types = set(map(type, values))
    if types <= {float, int} or types == {str}:
        try:        # numpy parses numbers and numeric text (inf, Infinity, NaN) as float() does
            return np.array(values, dtype=np.float64), {}
        except (OverflowError, ValueError):
            pass
    out = np.empty(len(values), dtype=np.float64)
    bad: dict[int, str] = {}
    for i, v in enumerate(values):
        x, reason = _parse_number(v)
        out[i] = x
        if reason is not None:
            bad[i] = reason
    return out, bad


def _int_column(values: list) -> tuple[list, dict[int, str]]:
    floats, bad = _float_column(values)
    out: list = [None] * len(values)
    for i, x in enumerate(floats.tolist()):
        if i in bad or x != x:      # NaN: empty / null -> null
            continue
        if not math.isfinite(x) or x != math.floor(x) or abs(x) >= _INT64_MAX:
            bad[i] = R_NON_INTEGER
            continue
        out[i] = int(x)
    return out, bad


def _str_column(values: list) -> tuple[list, dict[int, str]]:
    out: list = [None] * len(values)
    bad: dict[int, str] = {}
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, (dict, list, tuple)):
            bad[i] = R_WRONG_TYPE
            continue
        if isinstance(v, float):
            if v.is_integer():
                v = int(v)   # 6.0 -> "6", as a CSV cell would be written
            elif not math.isfinite(v):
                v = _NONFINITE_TEXT[v > 0] if v == v else "NaN"   # as JSON and CSV spell them
        s = str(v).strip()
        out[i] = s or None
    return out, bad


_NONFINITE_TEXT = {True: "Infinity", False: "-Infinity"}
_NUMBER_TYPES = {float, int, type(None)}


def _timestamp_column(values: list) -> tuple[pl.Series, np.ndarray]:
    """Datetime("us") values and a mask of the values given but not understood."""
    text: list = [None] * len(values)
    epoch: list = [None] * len(values)
    given = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None or isinstance(v, bool):
            given[i] = v is not None
            continue
        if isinstance(v, (int, float)):
            given[i] = True
            if math.isfinite(v) and abs(v) < 1e11:
                epoch[i] = datetime.fromtimestamp(v, timezone.utc).replace(tzinfo=None)
        elif isinstance(v, str):
            text[i] = v
            given[i] = bool(v.strip())
        else:
            given[i] = True
    # parse each distinct text once, and remember it: live records repeat their timestamps
    known: dict[str, datetime | None] = {}
    new = []
    for t in dict.fromkeys(text):
        if t is None:
            continue
        try:
            known[t] = _TS_CACHE[t]
        except KeyError:
            new.append(t)
    if new:
        parsed_new = dict(zip(new, parse_timestamps(pl.Series("timestamp", new, dtype=pl.Utf8)).to_list()))
        known.update(parsed_new)
        if len(_TS_CACHE) + len(new) > _TS_CACHE_SIZE:
            _TS_CACHE.clear()
        _TS_CACHE.update(parsed_new)
    values_out = [e if e is not None else (known[t] if t is not None else None) for e, t in zip(epoch, text)]
    parsed = pl.Series("timestamp", values_out, dtype=pl.Datetime("us"))
    return parsed, given & parsed.is_null().to_numpy()


_TS_CACHE: dict[str, datetime | None] = {}
_TS_CACHE_SIZE = 65_536


def records_to_table(
    records: Sequence[Any],
    required: Iterable[str],
    text_columns: Iterable[str] = (),
    metadata: Iterable[str] = METADATA_COLUMNS,
    optional_text: Iterable[str] = (),
) -> CanonicalRecords:
    """Canonicalise records (dicts of field -> value) into a table, rejecting bad records.

    ``required`` are the canonical columns a record must have (a model's input columns);
    a required column is numeric (Float64, or Int64 for ports and protocol) unless it is in
    ``text_columns``. ``metadata`` columns are taken when present (null otherwise) and are
    always in the table, so tables of different batches share one schema; so are the
    ``optional_text`` columns (an entity such as a host or user name, as text). A record is
    rejected for the first field at fault, in column order. Items that are
    :class:`Unparsable` are rejected with their own reason; items that are not dicts are
    rejected as ``not a JSON object``.
    """
    required = list(dict.fromkeys(required))
    text = set(text_columns)
    meta = [m for m in metadata if m in _META_KIND and m not in required]
    extra = [c for c in dict.fromkeys(optional_text) if c not in required and c not in meta]
    n = len(records)
    first_error: dict[int, tuple[str | None, str]] = {}
    # records usually share one set of field names: map each distinct set once
    # (canonical column -> the record's own key), instead of re-keying every record
    dicts: list[dict] = []
    maps: list[dict] = []
    by_keys: dict[tuple, dict] = {}
    for i, rec in enumerate(records):
        if isinstance(rec, dict):
            try:
                keys = tuple(rec)
                mapping = by_keys.get(keys)
            except TypeError:
                keys, mapping = None, None
            if mapping is None:
                mapping = {}
                for k in rec:
                    c = canonical_name(k)
                    if c is not None:
                        mapping[c] = k
                if keys is not None and len(by_keys) < 1000:
                    by_keys[keys] = mapping
            dicts.append(rec)
            maps.append(mapping)
        else:
            dicts.append({})
            maps.append({})
            if isinstance(rec, Unparsable):
                first_error[i] = (rec.field, rec.reason)
            else:
                first_error[i] = (None, R_NOT_OBJECT)
    one_mapping = maps[0] if n and all(m is maps[0] for m in maps) else None

    missing = object()
    columns: dict[str, Any] = {}
    unparsed_mask = np.zeros(n, dtype=bool)
    # the common case: every record is an object with the same keys in the same order. Then
    # the values are read column by column in C (itemgetter + transpose), no field can be
    # missing record by record, and a numeric column of plain numbers becomes an array at once.
    transposed: dict[str, tuple] = {}
    if one_mapping is not None and not first_error:
        present = [c for c in (*meta, *extra, *required) if c in one_mapping]
        if len(present) == 1:
            key = one_mapping[present[0]]
            transposed = {present[0]: tuple(r[key] for r in dicts)}
        elif present:
            transposed = dict(zip(present, zip(*map(itemgetter(*[one_mapping[c] for c in present]), dicts))))
    for c in (*meta, *extra, *required):
        kind = _META_KIND.get(c) or ("str" if c in text or c in extra else "float")
        if c in transposed:
            values = transposed[c]
            if kind == "float" and set(map(type, values)) <= _NUMBER_TYPES:
                try:            # None -> NaN, as _float_column reads it
                    columns[c] = np.array(values, dtype=np.float64)
                    continue
                except (OverflowError, ValueError, TypeError):
                    pass
            values = list(values)
        elif one_mapping is not None:
            raw = one_mapping.get(c, missing)
            values = [missing] * n if raw is missing else [r.get(raw, missing) for r in dicts]
        else:
            values = [r[m[c]] if c in m else missing for r, m in zip(dicts, maps)]
        if c not in transposed and missing in values:
            for i, v in enumerate(values):
                if v is missing:
                    values[i] = None
                    if c in required:
                        first_error.setdefault(i, (c, R_MISSING))
        if kind == "float":
            col, bad = _float_column(values)
        elif kind == "int":
            col, bad = _int_column(values)
        elif kind == "str":
            col, bad = _str_column(values)
        else:
            col, unparsed_mask = _timestamp_column(values)
            bad = {}
        for i, reason in bad.items():
            if i not in first_error and isinstance(records[i], dict):
                first_error[i] = (str(maps[i].get(c, c)), reason)
        columns[c] = col

    keep = np.ones(n, dtype=bool)
    if first_error:
        keep[list(first_error)] = False
    dtypes = {"float": pl.Float64, "int": pl.Int64, "str": pl.Utf8, "ts": pl.Datetime("us")}
    ordered = ([m for m in METADATA_COLUMNS if m in meta or m in required] + extra
               + [c for c in required if c not in _META_KIND])
    kinds = {c: _META_KIND.get(c) or ("str" if c in text or c in extra else "float") for c in ordered}
    series = []
    for c in ordered:
        col = columns[c]
        if kinds[c] == "float":
            series.append(pl.Series(c, col, dtype=pl.Float64))
            continue
        s = col if isinstance(col, pl.Series) else pl.Series(c, col, dtype=dtypes[kinds[c]])
        series.append(s.alias(c))
    table = pl.DataFrame(series) if series else pl.DataFrame()
    if first_error:
        table = table.filter(pl.Series(keep))
    rejected = [Rejection(i, f, r) for i, (f, r) in sorted(first_error.items())]
    unparsed = int((unparsed_mask & keep).sum())
    return CanonicalRecords(table, np.flatnonzero(keep).astype(np.int64), rejected, unparsed)


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
