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

The rules are not copied here: a JSON value becomes a cell, and the cell is cast by the flows'
column rules in :mod:`deepids.io.cast`, the ones the file readers apply. Only what a CSV cell
cannot be is decided here: an object, array or boolean where a number or text belongs is
``wrong type``, an integer beyond the float range is ``number out of range``, a number in
``timestamp`` is Unix seconds.

Reasons a record is rejected (low cardinality, usable as metric labels): see ``REASONS``.
"""

from __future__ import annotations

import math
from operator import itemgetter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import polars as pl

from deepids.io.cast import (
    R_EMPTY_ROW,
    R_FIELDS,
    R_HEADER,
    R_NON_INTEGER,
    R_NON_NUMERIC,
    cast_float,
    cast_int,
    cast_text,
    cast_timestamp,
)
from deepids.io.layouts import clean_name
from deepids.io.lines import (  # noqa: F401 - parsing bodies and lines, importable from here as before
    R_NOT_JSON,
    CsvLineParser,
    Rejection,
    Unparsable,
    loads_json,
    parse_ndjson,
)
from deepids.io.schema import (
    DUPLICATE_FWD_HEADER,
    FLOW_FEATURES,
    FLOW_METADATA,
    IDS2018_TO_CANONICAL,
    LABEL,
    METADATA_COLUMNS,
    METADATA_KINDS,
)

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

R_NOT_OBJECT = "not a JSON object"
R_MISSING = "missing field"
R_OUT_OF_RANGE = "number out of range"
R_WRONG_TYPE = "wrong type"
REASONS = (R_NOT_JSON, R_NOT_OBJECT, R_MISSING, R_NON_NUMERIC, R_NON_INTEGER, R_OUT_OF_RANGE,
           R_WRONG_TYPE, R_FIELDS, R_EMPTY_ROW, R_HEADER)



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
    _NAMES[DUPLICATE_FWD_HEADER] = None
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


# --------------------------------------------------------------------------------------
# JSON values -> cells. What a value means is then decided by the flows' column rules in
# deepids.io.cast, the ones the file readers apply; only what a CSV cell cannot hold (objects,
# arrays, booleans, integers beyond the float range, numbers as Unix-time timestamps) is
# decided here.
# --------------------------------------------------------------------------------------

_NONE = type(None)
_NUMBER_TYPES = {float, int, _NONE}
_NONFINITE_TEXT = {True: "Infinity", False: "-Infinity"}


def _number_cells(values: Sequence) -> tuple[pl.Series, dict[int, str]]:
    """A numeric column's values as cells (Float64 when all are numbers or null, else text), and
    those refused before any rule: {position: reason}."""
    types = set(map(type, values))
    if types <= _NUMBER_TYPES:
        try:
            col = pl.Series(np.array(values, dtype=np.float64))     # overflow raises
        except (OverflowError, TypeError, ValueError):
            col = None
        if col is not None:
            if _NONE in types:          # null stays null (an empty cell), not NaN
                col = col.scatter([i for i, v in enumerate(values) if v is None], None)
            return col, {}
    if types == {str}:
        return _text_series(list(values)), {}
    cells: list = [None] * len(values)
    bad: dict[int, str] = {}
    for i, v in enumerate(values):
        t = type(v)
        if v is None:
            continue
        if t is str:
            cells[i] = v
        elif t is bool or not isinstance(v, (int, float, np.integer, np.floating)):
            bad[i] = R_WRONG_TYPE
        else:
            try:
                cells[i] = repr(float(v))
            except OverflowError:
                bad[i] = R_OUT_OF_RANGE
    return _text_series(cells), bad


def _text_series(values: list) -> pl.Series:
    """Text cells; a string that is not valid Unicode (a lone surrogate from JSON) is replaced
    character by character, as the file readers decode invalid bytes."""
    try:
        return pl.Series(values, dtype=pl.Utf8)
    except Exception:  # noqa: BLE001 - polars raises its own error types for bad strings
        return pl.Series([v if v is None else v.encode("utf-8", "replace").decode("utf-8") for v in values],
                         dtype=pl.Utf8)


def _positions(mask: pl.Series | None, reason: str, bad: dict[int, str]) -> None:
    if mask is not None:
        for i in np.flatnonzero(mask.to_numpy()).tolist():
            bad.setdefault(i, reason)


def _float_column(values: Sequence) -> tuple[pl.Series, dict[int, str]]:
    """Float64 values (the file readers' rule: numbers, numeric text, NaN for empty or null) and
    {position: reason} for those refused."""
    types = set(map(type, values))
    if types <= _NUMBER_TYPES:
        try:        # the usual case, plain numbers: None -> NaN as the rule reads an empty cell
            return pl.Series(np.array(values, dtype=np.float64)), {}
        except (OverflowError, TypeError, ValueError):
            pass
    cells, bad = _number_cells(values)
    col, nonnumeric = cast_float(cells)
    _positions(nonnumeric, R_NON_NUMERIC, bad)
    return col, bad


def _int_column(values: Sequence) -> tuple[pl.Series, dict[int, str]]:
    cells, bad = _number_cells(values)
    col, nonnumeric, nonint = cast_int(cells)
    _positions(nonnumeric, R_NON_NUMERIC, bad)
    _positions(nonint, R_NON_INTEGER, bad)
    return col, bad


def _str_column(values: Sequence) -> tuple[pl.Series, dict[int, str]]:
    out: list = [None] * len(values)
    bad: dict[int, str] = {}
    for i, v in enumerate(values):
        if v is None or type(v) is str:
            out[i] = v
        elif isinstance(v, (dict, list, tuple)):
            bad[i] = R_WRONG_TYPE
        elif isinstance(v, float):
            if v.is_integer():
                out[i] = str(int(v))    # 6.0 -> "6", as a CSV cell would be written
            elif not math.isfinite(v):
                out[i] = _NONFINITE_TEXT[v > 0] if v == v else "NaN"   # as JSON and CSV spell them
            else:
                out[i] = str(v)
        else:
            out[i] = str(v)
    return cast_text(_text_series(out)), bad


def _timestamp_column(values: Sequence) -> tuple[pl.Series, np.ndarray]:
    """Datetime("us") values and a mask of the values given but not understood. Text is parsed by
    the file readers' rule (each distinct text once, remembered: live records repeat their
    timestamps); a number is Unix seconds."""
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
        parsed_new = dict(zip(new, cast_timestamp(pl.Series("timestamp", new, dtype=pl.Utf8))[0].to_list()))
        known.update(parsed_new)
        if len(_TS_CACHE) + len(new) > _TS_CACHE_SIZE:
            _TS_CACHE.clear()
        _TS_CACHE.update(parsed_new)
    values_out = [e if e is not None else (known[t] if t is not None else None) for e, t in zip(epoch, text)]
    parsed = pl.Series("timestamp", values_out, dtype=pl.Datetime("us"))
    return parsed, given & parsed.is_null().to_numpy()


_TS_CACHE: dict[str, datetime | None] = {}
_TS_CACHE_SIZE = 65_536
_MISSING = object()


def _key_maps(records: Sequence[Any]) -> tuple[list[dict], list[dict], dict[int, tuple[str | None, str]]]:
    """(the records as dicts, each one's {canonical column: its own key}, first errors).

    Records usually share one set of field names: each distinct set is mapped once."""
    dicts: list[dict] = []
    maps: list[dict] = []
    first_error: dict[int, tuple[str | None, str]] = {}
    by_keys: dict[tuple, dict] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            dicts.append({})
            maps.append({})
            first_error[i] = (rec.field, rec.reason) if isinstance(rec, Unparsable) else (None, R_NOT_OBJECT)
            continue
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
    return dicts, maps, first_error


def _transposed(columns: list[str], dicts: list[dict], one_mapping: dict | None) -> dict[str, tuple]:
    """The common case, every record an object with the same keys in the same order: the values
    column by column, read in C (itemgetter + transpose)."""
    if one_mapping is None:
        return {}
    present = [c for c in columns if c in one_mapping]
    if len(present) == 1:
        key = one_mapping[present[0]]
        return {present[0]: tuple(r[key] for r in dicts)}
    if present:
        return dict(zip(present, zip(*map(itemgetter(*[one_mapping[c] for c in present]), dicts))))
    return {}


def _values(c: str, dicts: list[dict], maps: list[dict], one_mapping: dict | None) -> list:
    """Column c of every record; _MISSING where a record lacks it."""
    if one_mapping is not None:
        raw = one_mapping.get(c, _MISSING)
        return [_MISSING] * len(dicts) if raw is _MISSING else [r.get(raw, _MISSING) for r in dicts]
    return [r[m[c]] if c in m else _MISSING for r, m in zip(dicts, maps)]


def _cast_column(kind: str, values: Sequence) -> tuple[pl.Series, dict[int, str], np.ndarray | None]:
    """(values cast by kind, {position: reason} refused, mask of unparsed timestamps)."""
    if kind == "float":
        return (*_float_column(values), None)
    if kind == "int":
        return (*_int_column(values), None)
    if kind == "str":
        return (*_str_column(values), None)
    col, unparsed = _timestamp_column(values)
    return col, {}, unparsed


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
    meta = [m for m in metadata if m in METADATA_KINDS and m not in required]
    extra = [c for c in dict.fromkeys(optional_text) if c not in required and c not in meta]
    n = len(records)
    dicts, maps, first_error = _key_maps(records)
    one_mapping = maps[0] if n and all(m is maps[0] for m in maps) else None
    order = [*meta, *extra, *required]
    kinds = {c: METADATA_KINDS.get(c) or ("str" if c in text or c in extra else "float") for c in order}
    transposed = _transposed(order, dicts, one_mapping) if not first_error else {}
    columns: dict[str, pl.Series] = {}
    unparsed_mask = np.zeros(n, dtype=bool)
    for c in order:
        if c in transposed:
            values = transposed[c]
        else:
            values = _values(c, dicts, maps, one_mapping)
            if _MISSING in values:
                for i, v in enumerate(values):
                    if v is _MISSING:
                        values[i] = None
                        if c in required:
                            first_error.setdefault(i, (c, R_MISSING))
        columns[c], bad, unparsed = _cast_column(kinds[c], values)
        if unparsed is not None:
            unparsed_mask = unparsed
        for i, reason in bad.items():
            if i not in first_error and isinstance(records[i], dict):
                first_error[i] = (str(maps[i].get(c, c)), reason)
    keep = np.ones(n, dtype=bool)
    if first_error:
        keep[list(first_error)] = False
    ordered = ([m for m in METADATA_COLUMNS if m in meta or m in required] + extra
               + [c for c in required if c not in METADATA_KINDS])
    table = pl.DataFrame([columns[c].alias(c) for c in ordered]) if ordered else pl.DataFrame()
    if first_error:
        table = table.filter(pl.Series(keep))
    rejected = [Rejection(i, f, r) for i, (f, r) in sorted(first_error.items())]
    unparsed = int((unparsed_mask & keep).sum())
    return CanonicalRecords(table, np.flatnonzero(keep).astype(np.int64), rejected, unparsed)
