"""Readers for network-flow files: CICIDS2017, CSE-CIC-IDS2018, NSL-KDD and generic tables.

Every reader returns flows in the canonical vocabulary of :mod:`deepids.io.schema`:

* the metadata columns the input has, in the order of ``schema.METADATA_COLUMNS``
  (``flow_id``, ``src_ip``, ``dst_ip`` as Utf8; ``src_port``, ``dst_port``, ``protocol`` as
  Int64; ``timestamp`` as ``Datetime("us")``);
* the feature columns as Float64 — for the CIC layouts exactly ``schema.FLOW_FEATURES`` in
  that order (the duplicated ``Fwd Header Length`` is dropped however it is spelled); for
  NSL-KDD ``schema.NSL_KDD_COLUMNS`` (the three categorical ones as Utf8); for ``generic``
  every other column (numeric as Float64, the rest as Utf8) with known CIC names mapped to
  canonical ones;
* ``label`` (Utf8, normalised by :mod:`deepids.io.labels`) when the input has labels.

Files are streamed: :func:`iter_flow_batches` reads CSV through ``pyarrow.csv.open_csv``
with every column as raw bytes, decodes them lossily, and casts them with vectorised polars
expressions, so a malformed cell is counted as a rejected row instead of aborting the read.
``Infinity``/``inf``/``NaN``/empty numeric cells are *not* rejections: they become
``inf``/``nan``. A row is rejected, and counted under a reason in :class:`ReadReport`, when
it has the wrong number of fields, is empty, repeats the header line, holds text that is not
a number in a numeric column, or (when the input has labels) has an empty label.

Timestamps
----------
Parsed formats (unparseable values become null and are counted as
``unparsed_timestamps``, they do not reject the row):

* ``D/M/YYYY H:MM`` — CICIDS2017 GeneratedLabelledFlows. The CIC files are day-first
  (``6/7/2017`` is Thursday 6 July 2017, the web-attack day) and use a 12-hour clock
  **without AM/PM**. CICIDS2017 was captured between 8:00 and 17:00, so in this exact
  format an hour below 8 is an afternoon hour and gets **+12 h** (``7/7/2017 3:56`` is
  15:56). No other format is shifted.
* ``D/M/YYYY H:MM:SS`` (CSE-CIC-IDS2018, ``14/02/2018 08:31:01``) and the same with
  ``AM``/``PM``;
* ``M/D/YYYY ...`` as a fallback for values that are not valid day-first dates;
* ISO 8601 (``2018-02-14 08:31:01``, ``2018-02-14T08:31:01.5``, ``2018-02-14``).
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Union

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deepids.errors import ConfigError, InputError, SchemaError
from deepids.io.labels import normalise_labels
from deepids.io.pcap import CAPTURE_SUFFIXES, is_capture
from deepids.io.schema import (
    FLOW_FEATURES,
    FLOW_METADATA,
    IDS2018_TO_CANONICAL,
    LABEL,
    LAYOUTS,
    METADATA_COLUMNS,
    NSL_KDD_CATEGORICAL,
    NSL_KDD_COLUMNS,
)

__all__ = [
    "ReadReport",
    "detect_layout",
    "read_flows",
    "iter_flow_batches",
    "inspect_flows",
    "parse_timestamps",
    "FLOW_FILE_SUFFIXES",
]

PathLike = Union[str, "os.PathLike[str]"]

#: file names a directory argument is expanded to (case-insensitive suffix match).
FLOW_FILE_SUFFIXES: tuple[str, ...] = (
    ".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".txt", ".txt.gz", ".txt.bz2", ".txt.zst",
    ".parquet", ".pq",
)

CIC_LAYOUTS = ("cicids2017", "cicids2017-labelled", "cse-cic-ids2018")
_FAMILY = {"cicids2017": "cic", "cicids2017-labelled": "cic", "cse-cic-ids2018": "cic",
           "nsl-kdd": "nsl-kdd", "generic": "generic",
           "pcap": "cic"}   # captures become CIC flows (deepids.io.flowmeter)

_META_KIND = {"flow_id": "str", "src_ip": "str", "dst_ip": "str", "src_port": "int",
              "dst_port": "int", "protocol": "int", "timestamp": "ts"}
_ENTITY_COLUMNS = ("src_ip", "dst_ip", "dst_port")
_LABELLED_REQUIRED = ("Flow ID", "Source IP", "Source Port", "Destination IP",
                      "Destination Port", "Protocol", "Timestamp")
_CANONICAL_TO_2018 = {v: k for k, v in IDS2018_TO_CANONICAL.items()}
_SPECIFIC_2017 = frozenset(IDS2018_TO_CANONICAL.values())   # names only CICIDS2017 uses
_SPECIFIC_2018 = frozenset(IDS2018_TO_CANONICAL)            # names only CSE-CIC-IDS2018 uses
_DUPLICATE_FWD_HEADER = "Fwd Header Length.1"
_NSL_PROTOCOLS = frozenset({"tcp", "udp", "icmp"})
_CSV_BLOCK_SIZE = 2 << 20       # fixed, so that type inference never depends on batch_size
_MAX_HEADER_BYTES = 1 << 20
_WS = re.compile(r"\s+")

# reasons a row is rejected for
R_FIELDS = "wrong number of fields"
R_EMPTY_ROW = "empty row"
R_HEADER = "repeated header line"
R_LABEL = "empty label"


def _r_nonnumeric(name: str) -> str:
    return f"non-numeric value in '{name}'"


def _r_noninteger(name: str) -> str:
    return f"non-integer value in '{name}'"


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

@dataclass
class ReadReport:
    """What a read accepted, rejected and found. Reports of batches or files ``merge``.

    ``duplicates`` counts exact duplicate rows among the accepted rows (they are kept).
    ``entities`` is the number of distinct values of ``src_ip``, ``dst_ip`` and
    ``dst_port`` where present. Both stay exact under :meth:`merge`: a report carries the
    row hashes and entity values it has seen (private fields, excluded from ``to_dict``,
    ``repr`` and ``==``), about 8 bytes per distinct row.
    """

    layout: str
    files: list[str] = field(default_factory=list)
    records: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    time_range: tuple[str, str] | None = None
    entities: dict[str, int] = field(default_factory=dict)
    unparsed_timestamps: int = 0
    notes: list[str] = field(default_factory=list)    # e.g. what a packet capture held, damage
    _row_hashes: np.ndarray | None = field(default=None, repr=False, compare=False)
    _entity_values: dict[str, set] | None = field(default=None, repr=False, compare=False)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "layout": self.layout,
            "files": list(self.files),
            "records": int(self.records),
            "rejected": int(self.n_rejected),
            "rejected_reasons": {k: int(v) for k, v in
                                 sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0]))},
            "duplicates": int(self.duplicates),
            "labels": {k: int(v) for k, v in
                       sorted(self.labels.items(), key=lambda kv: (-kv[1], kv[0]))},
            "time_range": list(self.time_range) if self.time_range else None,
            "unparsed_timestamps": int(self.unparsed_timestamps),
            "entities": {k: int(v) for k, v in self.entities.items()},
            **({"notes": list(self.notes)} if self.notes else {}),
        }

    def merge(self, other: ReadReport) -> ReadReport:
        """A new report covering both; ``self`` and ``other`` are left unchanged.

        Duplicates across the two are found through the carried row hashes, and distinct
        entity counts through the carried values; without them (reports built by hand)
        the counts are summed.
        """
        files = list(self.files) + [f for f in other.files if f not in self.files]
        rejected = Counter(self.rejected)
        rejected.update(other.rejected)
        labels = Counter(self.labels)
        labels.update(other.labels)

        duplicates = self.duplicates + other.duplicates
        hashes: np.ndarray | None = None
        a, b = self._row_hashes, other._row_hashes
        if a is not None and b is not None:
            if a.size and b.size:
                pos = np.searchsorted(a, b)
                pos[pos == a.size] = 0
                common = a[pos] == b
                duplicates += int(common.sum())
                hashes = np.sort(np.concatenate([a, b[~common]]), kind="stable")
            else:
                hashes = a if a.size else b
        elif a is not None or b is not None:
            hashes = None   # cannot stay exact: drop the hashes

        entities: dict[str, int] = {}
        values: dict[str, set] | None = None
        ea, eb = self._entity_values, other._entity_values
        keys = list(dict.fromkeys([*self.entities, *other.entities]))
        if ea is not None and eb is not None:
            values = {}
            for k in keys:
                if k in ea and k in eb:
                    values[k] = ea[k] | eb[k]
                else:
                    values[k] = set(ea.get(k, eb.get(k, set())))
                entities[k] = len(values[k])
        else:
            for k in keys:
                entities[k] = self.entities.get(k, 0) + other.entities.get(k, 0)

        return ReadReport(
            layout=self.layout,
            files=files,
            records=self.records + other.records,
            rejected=dict(rejected),
            duplicates=duplicates,
            labels=dict(labels),
            time_range=_merge_ranges(self.time_range, other.time_range),
            entities=entities,
            unparsed_timestamps=self.unparsed_timestamps + other.unparsed_timestamps,
            notes=list(self.notes) + [n for n in other.notes if n not in self.notes],
            _row_hashes=hashes,
            _entity_values=values,
        )


def _merge_ranges(a: tuple[str, str] | None, b: tuple[str, str] | None) -> tuple[str, str] | None:
    if a is None:
        return b
    if b is None:
        return a
    lo = min(datetime.fromisoformat(a[0]), datetime.fromisoformat(b[0]))
    hi = max(datetime.fromisoformat(a[1]), datetime.fromisoformat(b[1]))
    return (lo.isoformat(), hi.isoformat())


# --------------------------------------------------------------------------------------
# Paths, headers and layout detection
# --------------------------------------------------------------------------------------

def _is_flow_file_name(name: str) -> bool:
    low = name.lower()
    return any(low.endswith(s) for s in FLOW_FILE_SUFFIXES + CAPTURE_SUFFIXES)


def _resolve_paths(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and _is_flow_file_name(f.name))
            if not found:
                raise InputError(f"{p} is a directory without flow files "
                                 f"({', '.join('*' + s for s in FLOW_FILE_SUFFIXES)})")
            out.extend(found)
        elif not p.exists():
            raise InputError(f"{p}: no such file")
        elif not p.is_file():
            raise InputError(f"{p} is not a regular file")
        else:
            out.append(p)
    if not out:
        raise InputError("no input files given")
    return out


def _sniff(path: Path) -> tuple[str, str | None]:
    """('parquet' | 'csv', compression) from the first bytes of the file."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not magic:
        raise InputError(f"{path} is empty")
    if magic == b"PAR1":
        return "parquet", None
    if magic[:2] == b"\x1f\x8b":
        return "csv", "gzip"
    if magic[:3] == b"BZh":
        return "csv", "bz2"
    if magic == b"\x28\xb5\x2f\xfd":
        return "csv", "zstd"
    return "csv", None


def _open_stream(path: Path, compression: str | None):
    try:
        return pa.input_stream(str(path), compression=compression)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def _read_first_line(path: Path, compression: str | None) -> str | None:
    """The first non-blank line, decoded lossily, without BOM and line ending; None if empty."""
    buf = b""
    try:
        with _open_stream(path, compression) as stream:
            while True:
                chunk = stream.read(1 << 16)
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 1:]
                    text = line.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
                    if text.strip():
                        return text
                if not chunk:
                    text = buf.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
                    return text if text.strip() else None
                if len(buf) > _MAX_HEADER_BYTES:
                    raise InputError(f"cannot read {path}: first line is longer than "
                                     f"{_MAX_HEADER_BYTES} bytes; is it a CSV file?")
    except InputError:
        raise
    except (OSError, pa.ArrowException, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def _split_line(line: str) -> list[str]:
    return next(csv.reader([line]))


def _clean(name: str) -> str:
    return _WS.sub(" ", name).strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_nsl_kdd(fields: list[str]) -> bool:
    return (len(fields) in (42, 43) and fields[1].strip().lower() in _NSL_PROTOCOLS
            and _is_number(fields[0]))


def _layout_from_names(names: list[str]) -> str | None:
    s = set(names)
    n2017 = len(s & _SPECIFIC_2017)
    n2018 = len(s & _SPECIFIC_2018)
    if n2018 >= len(_SPECIFIC_2018) // 2 and n2018 > n2017:
        return "cse-cic-ids2018"
    if n2017 >= len(_SPECIFIC_2017) // 2:
        if "Flow ID" in s or "Source IP" in s:
            return "cicids2017-labelled"
        if "Destination Port" in s:
            return "cicids2017"
        return "generic"      # CIC features without the raw identifiers: a canonical table
    return None


@dataclass
class _Header:
    path: Path
    fmt: str                       # "csv" | "parquet"
    compression: str | None
    fields: list[str]              # raw header fields (csv) or column names (parquet)
    has_header: bool
    parquet_schema: pa.Schema | None = None


def _read_header(path: Path) -> _Header:
    if is_capture(path):            # pcap/pcapng: flows are made by deepids.io.flowmeter
        return _Header(path, "pcap", None, [], True)
    fmt, compression = _sniff(path)
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(str(path))
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        if pf.metadata.num_rows == 0:
            raise InputError(f"{path} has no rows")
        schema = pf.schema_arrow
        return _Header(path, fmt, None, list(schema.names), True, schema)
    line = _read_first_line(path, compression)
    if line is None:
        raise InputError(f"{path} is empty")
    fields = _split_line(line)
    return _Header(path, fmt, compression, fields, not _looks_nsl_kdd(fields))


def _detect(header: _Header) -> str:
    if header.fmt == "pcap":
        return "pcap"
    if header.fmt == "csv" and not header.has_header:
        return "nsl-kdd"
    names = [_clean(f) for f in header.fields]
    layout = _layout_from_names(names)
    if layout is not None:
        return layout
    if header.fmt == "parquet":
        return "generic"
    shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
    raise InputError(
        f"cannot detect the layout of {header.path}: its first line ({len(names)} fields: "
        f"{shown}) matches no known flow layout (CICIDS2017, CSE-CIC-IDS2018, NSL-KDD); "
        f"pass layout='generic' to read it as a plain table")


def detect_layout(path: PathLike) -> str:
    """The layout of one flow file, from its header (or its first line for NSL-KDD).

    Returns one of ``schema.LAYOUTS``. A parquet file, or a CSV whose header already holds
    the canonical CIC feature names without the raw identifier columns, is ``generic``.
    Raises :class:`InputError` for a missing or empty file or an unknown header.
    """
    files = _resolve_paths(path)
    if len(files) != 1:
        raise InputError(f"{path} holds {len(files)} flow files; detect_layout takes one file")
    return _detect(_read_header(files[0]))


# --------------------------------------------------------------------------------------
# Column plans
# --------------------------------------------------------------------------------------

@dataclass
class _Col:
    src: str            # column name in the arrow batch
    name: str           # the name as the user's file spells it (for messages)
    out: str            # output column name
    kind: str           # float | int | str | ts | label | auto
    pos: int            # position in the file


@dataclass
class _Plan:
    header: _Header
    layout: str
    cols: list[_Col]            # in output order
    arrow_names: list[str]      # csv: the names handed to pyarrow for every field
    n_fields: int
    header_check: tuple[tuple[str, str], ...] = ()   # (src, raw header text) for repeated headers
    inferred: bool = True       # False while 'auto' kinds await the first block

    @property
    def path(self) -> Path:
        return self.header.path

    @property
    def has_label(self) -> bool:
        return any(c.kind == "label" for c in self.cols)


def _find_label(names: list[str], label_column: str | None, path: Path) -> int | None:
    if label_column is not None:
        want = _clean(label_column)
        for i, n in enumerate(names):
            if n == want:
                return i
        for i, n in enumerate(names):
            if n.lower() == want.lower():
                return i
        shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
        raise SchemaError(f"{path} has no label column {label_column!r} (its columns: {shown})")
    for i, n in enumerate(names):
        if n.lower() == "label":
            return i
    return None


def _missing_error(path: Path, layout: str, missing: list[str]) -> SchemaError:
    shown = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
    return SchemaError(f"{path} does not fit the {layout} layout: {len(missing)} required "
                       f"column(s) missing: {shown}")


def _plan_cic(header: _Header, layout: str, label_column: str | None, srcs: list[str]) -> list[_Col]:
    names = [_clean(f) for f in header.fields]
    rename = IDS2018_TO_CANONICAL if layout == "cse-cic-ids2018" else {}
    label_idx = _find_label(names, label_column, header.path)
    features: dict[str, _Col] = {}
    meta: dict[str, _Col] = {}
    for i, n in enumerate(names):
        if i == label_idx or n == _DUPLICATE_FWD_HEADER:
            continue
        if rename and n in _SPECIFIC_2017:
            continue                        # CSE-CIC-IDS2018 files spell these differently
        canon = rename.get(n, n)
        if canon in FLOW_FEATURES:
            if canon not in features:       # a second `Fwd Header Length` is dropped
                features[canon] = _Col(srcs[i], n, canon, "float", i)
        elif n in FLOW_METADATA:
            m = FLOW_METADATA[n]
            if m not in meta:
                meta[m] = _Col(srcs[i], n, m, _META_KIND[m], i)
    missing = [(_CANONICAL_TO_2018.get(f, f) if rename else f)
               for f in FLOW_FEATURES if f not in features]
    if layout == "cicids2017-labelled":
        present = set(names)
        missing += [m for m in _LABELLED_REQUIRED if m not in present]
    if missing:
        raise _missing_error(header.path, layout, missing)
    cols = [meta[m] for m in METADATA_COLUMNS if m in meta]
    cols += [features[f] for f in FLOW_FEATURES]
    if label_idx is not None:
        cols.append(_Col(srcs[label_idx], names[label_idx], LABEL, "label", label_idx))
    return cols


def _plan_nsl(header: _Header, srcs: list[str]) -> list[_Col]:
    n = len(header.fields)
    if n not in (42, 43):
        raise SchemaError(f"{header.path} does not fit the nsl-kdd layout: expected 42 or 43 "
                          f"fields per line (41 features, label, optional difficulty), found {n}")
    cols = [_Col(srcs[i], name, name, "str" if name in NSL_KDD_CATEGORICAL else "float", i)
            for i, name in enumerate(NSL_KDD_COLUMNS)]
    cols.append(_Col(srcs[41], "label", LABEL, "label", 41))
    return cols


def _plan_generic(header: _Header, label_column: str | None, srcs: list[str],
                  types: list[pa.DataType] | None) -> list[_Col]:
    names = [_clean(f) for f in header.fields]
    label_idx = _find_label(names, label_column, header.path)
    present = set(names)
    meta: dict[str, _Col] = {}
    rest: list[_Col] = []
    used: set[str] = set()
    for i, n in enumerate(names):
        if i == label_idx:
            continue
        if n == _DUPLICATE_FWD_HEADER and "Fwd Header Length" in present:
            continue
        m = FLOW_METADATA.get(n, n if n in _META_KIND else None)
        if m is not None and m not in meta:
            kind = _META_KIND[m]
            if kind == "int":
                # Int64 if numeric, else kept as text under its own name
                if types is not None and (pa.types.is_integer(types[i]) or pa.types.is_floating(types[i])):
                    kind = "int"
                else:
                    kind = "auto-int"
            meta[m] = _Col(srcs[i], n, m, kind, i)
            continue
        out = IDS2018_TO_CANONICAL.get(n, n)
        if out in used or out == LABEL or out in _META_KIND:
            out = n
        k = 1
        base = out
        while out in used or out == LABEL or out in _META_KIND:
            out = f"{base}.{k}"
            k += 1
        used.add(out)
        if types is None:
            kind = "auto"
        else:
            t = types[i]
            if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) \
                    or pa.types.is_decimal(t):
                kind = "float"
            else:
                kind = "str"
        rest.append(_Col(srcs[i], n, out, kind, i))
    cols = [meta[m] for m in METADATA_COLUMNS if m in meta] + rest
    if label_idx is not None:
        cols.append(_Col(srcs[label_idx], names[label_idx], LABEL, "label", label_idx))
    return cols


def _make_plan(header: _Header, layout: str, label_column: str | None) -> _Plan:
    if header.fmt == "pcap":
        return _Plan(header, "pcap", [], [], 0)
    if header.fmt == "parquet":
        if layout == "nsl-kdd":
            raise SchemaError(f"{header.path} is a parquet file; the nsl-kdd layout is a "
                              f"header-less CSV")
        srcs = list(header.fields)
        n = len(srcs)
        types = [header.parquet_schema.field(i).type for i in range(n)]
    else:
        n = len(header.fields)
        srcs = [f"f{i}" for i in range(n)]
        types = None
    if layout == "nsl-kdd":
        cols = _plan_nsl(header, srcs)
    elif layout in CIC_LAYOUTS:
        if header.fmt == "csv" and not header.has_header:
            raise _missing_error(header.path, layout, list(FLOW_FEATURES))
        cols = _plan_cic(header, layout, label_column, srcs)
    else:
        cols = _plan_generic(header, label_column, srcs, types)
    header_check: tuple[tuple[str, str], ...] = ()
    if header.fmt == "csv" and header.has_header:
        header_check = tuple((srcs[i], header.fields[i]) for i in range(min(2, n)))
    inferred = not any(c.kind.startswith("auto") for c in cols)
    return _Plan(header, layout, cols, srcs, n, header_check, inferred)


def _infer_kinds(plan: _Plan, raw: pl.DataFrame) -> None:
    """Resolve generic 'auto' kinds from the first block: numeric when every non-empty value
    parses as a number (and there is at least one), text otherwise."""
    for c in plan.cols:
        if not c.kind.startswith("auto"):
            continue
        s = raw[c.src]
        if s.dtype != pl.Utf8:
            numeric = s.dtype.is_numeric()
        else:
            stripped = s.str.strip_chars()
            nonempty = stripped.is_not_null() & (stripped != "")
            parsed = stripped.cast(pl.Float64, strict=False)
            numeric = bool(nonempty.any()) and not bool((parsed.is_null() & nonempty).any())
        if c.kind == "auto-int":
            if numeric:
                c.kind = "int"
            else:
                c.kind, c.out = "str", c.name
        else:
            c.kind = "float" if numeric else "str"
    # a metadata column demoted to text may now clash with another column's name
    seen: set[str] = set()
    for c in plan.cols:
        base, k = c.out, 1
        while c.out in seen:
            c.out = f"{base}.{k}"
            k += 1
        seen.add(c.out)
    plan.inferred = True


# --------------------------------------------------------------------------------------
# Casting one batch
# --------------------------------------------------------------------------------------

_TS_FORMATS_PLAIN = (
    "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S",
    "%d/%m/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p", "%d/%m/%Y %I:%M %p", "%m/%d/%Y %I:%M %p",
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
)
_TS_FORMATS_12H = ("%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M")


def parse_timestamps(values: pl.Series) -> pl.Series:
    """Parse flow timestamps to ``Datetime("us")``; unparseable values become null.

    ``D/M/YYYY H:MM`` (CICIDS2017 GeneratedLabelledFlows) is a 12-hour clock without
    AM/PM, captured between 8:00 and 17:00: in that exact format an hour below 8 gets
    +12 h (``7/7/2017 3:56`` -> 2017-07-07 15:56). See the module docstring for all formats.
    """
    dt = pl.Datetime("us")
    if values.dtype == pl.Date or isinstance(values.dtype, pl.Datetime):
        out = values.cast(dt)
        if getattr(values.dtype, "time_zone", None):
            out = values.dt.replace_time_zone(None).cast(dt)
        return out
    if values.dtype != pl.Utf8:
        values = values.cast(pl.Utf8)
    s = pl.col("v").str.strip_chars()
    twelve = [s.str.strptime(dt, f, strict=False) for f in _TS_FORMATS_12H]
    shifted = pl.coalesce(twelve)
    shifted = pl.when(shifted.dt.hour() < 8).then(shifted + timedelta(hours=12)).otherwise(shifted)
    plain = [s.str.strptime(dt, f, strict=False) for f in _TS_FORMATS_PLAIN]
    date_only = s.str.strptime(pl.Date, "%Y-%m-%d", strict=False).cast(dt)
    return (pl.DataFrame({"v": values})
            .select(pl.coalesce([*plain[:6], shifted, *plain[6:], date_only]).alias(values.name))
            .to_series())


def _decode_binary(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """bytes -> UTF-8 text; invalid bytes become U+FFFD (decoded per distinct value)."""
    try:
        return arr.cast(pa.string())
    except pa.ArrowInvalid:
        pass
    chunks = []
    for chunk in arr.chunks:
        try:
            chunks.append(chunk.cast(pa.string()))
            continue
        except pa.ArrowInvalid:
            pass
        enc = pc.dictionary_encode(chunk)
        words = [None if b is None else b.decode("utf-8", "replace")
                 for b in enc.dictionary.to_pylist()]
        fixed = pa.DictionaryArray.from_arrays(enc.indices, pa.array(words, pa.string()))
        chunks.append(fixed.cast(pa.string()))
    return pa.chunked_array(chunks, pa.string())


def _prepare_column(col: pa.ChunkedArray, numeric: bool) -> pa.ChunkedArray:
    """Decode raw bytes to text; for a numeric column try Arrow's own float parser, which
    accepts ``inf``/``Infinity``/``NaN`` and fails (leaving the text for the careful polars
    path) on empty cells, padding or words."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if numeric and pa.types.is_binary(t):
        # the usual case, all cells numbers: parse the bytes as they are (a zero-copy view as
        # text skips the UTF-8 check, which the float parser makes needless: it accepts ASCII only)
        try:
            return pa.chunked_array([chunk.view(pa.string()) for chunk in col.chunks], pa.string()).cast(pa.float64())
        except pa.ArrowInvalid:
            pass
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        col = _decode_binary(col)
        t = col.type
    if numeric and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        try:
            return col.cast(pa.float64())
        except pa.ArrowInvalid:
            return col
    return col


def _arrow_to_polars(table: pa.Table, numeric: frozenset[str] = frozenset()) -> pl.DataFrame:
    if not table.num_columns:
        return pl.DataFrame()
    names = table.column_names
    jobs = [(col, name in numeric) for name, col in zip(names, table.columns)]
    if table.num_rows >= 20_000 and len(jobs) > 1 and _POOL_WORKERS > 1:
        cols = list(_pool().map(lambda job: _prepare_column(*job), jobs))
    else:
        cols = [_prepare_column(*job) for job in jobs]
    return pl.from_arrow(pa.table(dict(zip(names, cols))))


_POOL_WORKERS = max(1, min(8, os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """Threads for per-column Arrow work (Arrow releases the GIL while casting)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_POOL_WORKERS, thread_name_prefix="deepids-io")
    return _POOL


def _parse_float(s: pl.Series) -> tuple[pl.Series, pl.Series | None]:
    """(Float64 values with null for empty cells, mask of cells that are not numbers or None)."""
    if s.dtype == pl.Utf8:
        v = s.cast(pl.Float64, strict=False)
        if not v.null_count():
            return v, None
        cand = (v.is_null() & s.is_not_null() & (s != "")).fill_null(False)
        if not cand.any():
            return v, None
        stripped = s.str.strip_chars()
        v = v.fill_null(stripped.cast(pl.Float64, strict=False))
        bad = (v.is_null() & stripped.is_not_null() & (stripped != "")).fill_null(False)
        return v, (bad if bad.any() else None)
    if s.dtype == pl.Boolean or s.dtype.is_numeric():
        return s.cast(pl.Float64), None
    return _parse_float(s.cast(pl.Utf8))


def _convert(plan: _Plan, raw: pl.DataFrame) -> tuple[pl.DataFrame, ReadReport]:
    n = raw.height
    masks: list[tuple[str, pl.Series]] = []
    out: dict[str, pl.Series] = {}
    unparsed = pl.Series([], dtype=pl.Boolean)

    # Arrow parses a numeric column straight to Float64 only when none of its cells is
    # empty or text, so an empty row or a repeated header can only exist if every column
    # (for the header: the first ones) is still text.
    utf8 = [c for c, t in raw.schema.items() if t == pl.Utf8]
    if plan.header.fmt == "csv" and n and len(utf8) == raw.width:
        cheap = (raw[utf8[0]] == "") & (raw[utf8[-1]] == "")
        if cheap.fill_null(False).any():
            empty = raw.select(pl.all_horizontal(
                [pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in utf8]))
            empty = empty.to_series().fill_null(False)
            if empty.any():
                masks.append((R_EMPTY_ROW, empty))
    if plan.header_check and n and all(s in utf8 for s, _ in plan.header_check):
        (s0, h0), *more = plan.header_check
        is_header = raw[s0] == h0
        for s1, h1 in more:
            is_header = is_header & (raw[s1] == h1)
        is_header = is_header.fill_null(False)
        if is_header.any():
            masks.append((R_HEADER, is_header))

    label_empty = None
    for c in sorted(plan.cols, key=lambda c: c.pos):
        s = raw[c.src]
        if c.kind == "float":
            v, bad = _parse_float(s)
            if bad is not None:
                masks.append((_r_nonnumeric(c.name), bad))
            out[c.out] = v.fill_null(float("nan"))
        elif c.kind == "int":
            v, bad = _parse_float(s)
            if bad is not None:
                masks.append((_r_nonnumeric(c.name), bad))
            nonint = (v.is_not_null() & (~v.is_finite() | (v.floor() != v))).fill_null(False)
            if nonint.any():
                masks.append((_r_noninteger(c.name), nonint))
            # rows flagged above are filtered out below; what remains is integral or null
            out[c.out] = v.cast(pl.Int64, strict=False).alias(c.out)
        elif c.kind == "str":
            if s.dtype != pl.Utf8:
                s = s.cast(pl.Utf8)
            s = s.str.strip_chars()
            out[c.out] = pl.select(pl.when(pl.lit(s) == "").then(None).otherwise(pl.lit(s))).to_series()
        elif c.kind == "ts":
            ts = parse_timestamps(s)
            if s.dtype == pl.Utf8:
                txt = s.str.strip_chars()
                unparsed = (ts.is_null() & txt.is_not_null() & (txt != "")).fill_null(False)
            out[c.out] = ts
        elif c.kind == "label":
            if s.dtype != pl.Utf8:
                s = s.cast(pl.Utf8)
            if plan.layout == "nsl-kdd":     # KDD'99-style files end labels with a dot
                s = s.str.strip_chars().str.strip_chars_end(".")
            lab = normalise_labels(s)
            label_empty = (lab.is_null() | (lab == "")).fill_null(True)
            out[c.out] = lab
        else:  # pragma: no cover - 'auto' kinds are resolved before conversion
            raise AssertionError(f"unresolved column kind {c.kind!r}")
    if label_empty is not None and label_empty.any():
        masks.append((R_LABEL, label_empty))

    frame = pl.DataFrame([out[c.out].alias(c.out) for c in plan.cols]) if plan.cols else pl.DataFrame()
    rejected: dict[str, int] = {}
    if masks:
        which = np.full(n, -1, dtype=np.int64)
        for k, (_, m) in enumerate(masks):
            arr = m.to_numpy()
            which[arr & (which < 0)] = k
        counts = np.bincount(which[which >= 0], minlength=len(masks))
        for k, (reason, _) in enumerate(masks):
            if counts[k]:
                rejected[reason] = rejected.get(reason, 0) + int(counts[k])
        keep = pl.Series(which < 0)
        frame = frame.filter(keep)
        if len(unparsed):
            unparsed = unparsed.filter(keep)
    report = _batch_report(plan, frame, rejected, int(unparsed.sum()) if len(unparsed) else 0)
    return frame, report


def _batch_report(plan: _Plan, frame: pl.DataFrame, rejected: dict[str, int],
                  unparsed: int) -> ReadReport:
    hashes = np.empty(0, dtype=np.uint64)
    duplicates = 0
    if frame.height and frame.width:
        h = frame.hash_rows().to_numpy()
        hashes = np.unique(h)
        duplicates = int(h.size - hashes.size)
    labels: dict[str, int] = {}
    if LABEL in frame.columns and frame.height:
        vc = frame[LABEL].value_counts()
        labels = dict(zip(vc[LABEL].to_list(), (int(x) for x in vc["count"].to_list())))
    time_range = None
    if "timestamp" in frame.columns:
        lo, hi = frame["timestamp"].min(), frame["timestamp"].max()
        if lo is not None:
            time_range = (lo.isoformat(), hi.isoformat())
    values = {c: set(frame[c].drop_nulls().unique().to_list())
              for c in _ENTITY_COLUMNS if c in frame.columns}
    return ReadReport(
        layout=plan.layout, files=[str(plan.path)], records=frame.height, rejected=rejected,
        duplicates=duplicates, labels=labels, time_range=time_range,
        entities={k: len(v) for k, v in values.items()}, unparsed_timestamps=unparsed,
        _row_hashes=hashes, _entity_values=values,
    )


# --------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------

def _empty_frame(plan: _Plan) -> pl.DataFrame:
    dtypes = {"float": pl.Float64, "int": pl.Int64, "str": pl.Utf8, "label": pl.Utf8,
              "ts": pl.Datetime("us")}
    return pl.DataFrame(schema={c.out: dtypes.get(c.kind, pl.Utf8) for c in plan.cols})


def _raw_batches_csv(plan: _Plan, pending: list[int]) -> Iterator[pa.Table]:
    """Record batches of raw bytes; rows with a wrong field count are counted in pending."""

    def on_invalid(row) -> str:
        pending[0] += 1
        return "skip"

    wanted = {c.src for c in plan.cols} | {s for s, _ in plan.header_check}
    include = [s for s in plan.arrow_names if s in wanted]
    stream = _open_stream(plan.path, plan.header.compression)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(column_names=plan.arrow_names,
                                           skip_rows=1 if plan.header.has_header else 0,
                                           block_size=_CSV_BLOCK_SIZE),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={s: pa.binary() for s in include}, include_columns=include),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            yield pa.Table.from_batches([batch])
    except InputError:
        raise
    except (OSError, pa.ArrowException, EOFError) as exc:
        raise InputError(f"cannot read {plan.path}: {exc}") from None
    finally:
        stream.close()


def _raw_batches_parquet(plan: _Plan, batch_size: int) -> Iterator[pa.Table]:
    names = list(dict.fromkeys(c.src for c in plan.cols))
    try:
        pf = pq.ParquetFile(str(plan.path))
        for batch in pf.iter_batches(batch_size=batch_size, columns=names):
            yield pa.Table.from_batches([batch])
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {plan.path}: {exc}") from None


def _rechunk(tables: Iterator[pa.Table], batch_size: int) -> Iterator[pa.Table]:
    buf: list[pa.Table] = []
    rows = 0
    for t in tables:
        if not t.num_rows:
            continue
        buf.append(t)
        rows += t.num_rows
        while rows >= batch_size:
            whole = pa.concat_tables(buf) if len(buf) > 1 else buf[0]
            yield whole.slice(0, batch_size)
            rest = whole.slice(batch_size)
            buf = [rest] if rest.num_rows else []
            rows = rest.num_rows
    if rows:
        yield pa.concat_tables(buf) if len(buf) > 1 else buf[0]


def _iter_capture(plan: _Plan, batch_size: int) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    """Flows of a packet capture (deepids.io.flowmeter); dropped flows count as rejected rows,
    and what the capture held (packets skipped, damage) goes into the report's notes."""
    from deepids.io.flowmeter import capture_flows

    frame, meter = capture_flows(plan.path)
    for start in range(0, max(frame.height, 1), batch_size):
        part = frame.slice(start, batch_size)
        report = _batch_report(plan, part, dict(meter.dropped) if start == 0 else {}, 0)
        if start == 0:
            report.notes = [meter.line()]
        yield part, report


def _iter_file(plan: _Plan, batch_size: int) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    if plan.header.fmt == "pcap":
        yield from _iter_capture(plan, batch_size)
        return
    pending = [0]
    if plan.header.fmt == "parquet":
        raw_tables: Iterator[pa.Table] = _raw_batches_parquet(plan, batch_size)
    else:
        raw_tables = _raw_batches_csv(plan, pending)

    if not plan.inferred:
        first = next(raw_tables, None)
        if first is not None:
            _infer_kinds(plan, _arrow_to_polars(first))
            raw_tables = _chain([first], raw_tables)

    numeric = frozenset(c.src for c in plan.cols if c.kind in ("float", "int"))
    yielded = False
    for table in _rechunk(raw_tables, batch_size):
        frame, report = _convert(plan, _arrow_to_polars(table, numeric))
        if pending[0]:
            report.rejected[R_FIELDS] = report.rejected.get(R_FIELDS, 0) + pending[0]
            pending[0] = 0
        yielded = True
        yield frame, report
    if pending[0] or not yielded:
        if not yielded and not pending[0]:
            if plan.header.has_header:
                raise InputError(f"{plan.path} has a header but no data rows")
            raise InputError(f"{plan.path} is empty")
        if not plan.inferred:
            for c in plan.cols:
                if c.kind.startswith("auto"):
                    c.kind = "str" if c.kind == "auto" else "int"
            plan.inferred = True
        report = ReadReport(layout=plan.layout, files=[str(plan.path)],
                            rejected={R_FIELDS: pending[0]},
                            _row_hashes=np.empty(0, dtype=np.uint64),
                            _entity_values={})
        pending[0] = 0
        yield _empty_frame(plan), report


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


def _plans(paths, layout: str | None, label_column: str | None) -> list[_Plan]:
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    files = _resolve_paths(paths)
    plans = []
    for f in files:
        header = _read_header(f)
        lay = "pcap" if header.fmt == "pcap" else (layout or _detect(header))
        plans.append(_make_plan(header, lay, label_column))
    families = {_FAMILY[p.layout] for p in plans}
    if len(families) > 1:
        first = plans[0]
        other = next(p for p in plans if _FAMILY[p.layout] != _FAMILY[first.layout])
        raise InputError(f"cannot read {other.path} ({other.layout}) together with "
                         f"{first.path} ({first.layout}): files read together must share a "
                         f"layout family")
    return plans


def iter_flow_batches(
    paths: PathLike | Iterable[PathLike],
    layout: str | None = None,
    label_column: str | None = None,
    batch_size: int = 200_000,
) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    """Stream flows as ``(frame, report)`` pairs of at most ``batch_size`` rows each.

    Files are read in the given order (a directory expands to its flow files, sorted by
    name), each with its own layout detected from its header unless ``layout`` forces one;
    all must belong to one family (the three CIC layouts form one). ``label_column`` names
    the label column of a CIC or generic file (default: a column called ``Label``/``label``,
    if any); NSL-KDD's label is always field 42. Every header is checked before the first
    batch is produced. Each report covers its batch only
    (rejected rows of a file may be attributed to a neighbouring batch of that file); merge
    them with :meth:`ReadReport.merge` for totals, as :func:`inspect_flows` does. A file
    whose rows are all rejected yields one empty frame with its report.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    plans = _plans(paths, layout, label_column)
    for plan in plans:
        yield from _iter_file(plan, batch_size)


def _order_columns(columns: list[str]) -> list[str]:
    meta = [m for m in METADATA_COLUMNS if m in columns]
    rest = [c for c in columns if c not in meta and c != LABEL]
    return meta + rest + ([LABEL] if LABEL in columns else [])


def read_flows(
    paths: PathLike | Iterable[PathLike],
    layout: str | None = None,
    label_column: str | None = None,
) -> tuple[pl.DataFrame, ReadReport]:
    """Read flow files into one DataFrame (file order, then row order) and a report.

    See :func:`iter_flow_batches` for the arguments and the module docstring for the
    columns produced and the rows rejected.
    """
    frames: list[pl.DataFrame] = []
    report: ReadReport | None = None
    for frame, part in iter_flow_batches(paths, layout, label_column):
        frames.append(frame)
        report = part if report is None else report.merge(part)
    assert report is not None
    if all(f.schema == frames[0].schema for f in frames):
        df = pl.concat(frames, how="vertical", rechunk=True)
    else:
        df = pl.concat(frames, how="diagonal_relaxed", rechunk=True)
        df = df.select(_order_columns(df.columns))
    return df, report


def inspect_flows(
    paths: PathLike | Iterable[PathLike],
    layout: str | None = None,
    label_column: str | None = None,
) -> ReadReport:
    """Stream through the files and return only the merged :class:`ReadReport`."""
    report: ReadReport | None = None
    for _, part in iter_flow_batches(paths, layout, label_column):
        report = part if report is None else report.merge(part)
    assert report is not None
    return report
