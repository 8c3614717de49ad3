"""Column plans: which columns of a file become which canonical columns, cast how.

A :class:`Plan` is made once per file from its header (:func:`make_plan`); a generic CSV's
column kinds that the header cannot tell are resolved from the first block
(:func:`infer_kinds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from deepids.errors import SchemaError
from deepids.io.layouts import CIC_LAYOUTS, SPECIFIC_2017, Header, clean_name
from deepids.io.schema import (
    DUPLICATE_FWD_HEADER,
    FLOW_FEATURES,
    FLOW_METADATA,
    IDS2018_TO_CANONICAL,
    LABEL,
    METADATA_COLUMNS,
    METADATA_KINDS,
    NSL_KDD_CATEGORICAL,
    NSL_KDD_COLUMNS,
)

__all__ = ["Column", "Plan", "make_plan", "infer_kinds"]


_LABELLED_REQUIRED = ("Flow ID", "Source IP", "Source Port", "Destination IP",
                      "Destination Port", "Protocol", "Timestamp")
_CANONICAL_TO_2018 = {v: k for k, v in IDS2018_TO_CANONICAL.items()}


@dataclass
class Column:
    src: str            # column name in the arrow batch
    name: str           # the name as the user's file spells it (for messages)
    out: str            # output column name
    kind: str           # float | int | str | ts | label | auto
    pos: int            # position in the file


@dataclass
class Plan:
    header: Header
    layout: str
    cols: list[Column]            # in output order
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
        want = clean_name(label_column)
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


def _plan_cic(header: Header, layout: str, label_column: str | None, srcs: list[str]) -> list[Column]:
    names = [clean_name(f) for f in header.fields]
    rename = IDS2018_TO_CANONICAL if layout == "cse-cic-ids2018" else {}
    label_idx = _find_label(names, label_column, header.path)
    features: dict[str, Column] = {}
    meta: dict[str, Column] = {}
    for i, n in enumerate(names):
        if i == label_idx or n == DUPLICATE_FWD_HEADER:
            continue
        if rename and n in SPECIFIC_2017:
            continue                        # CSE-CIC-IDS2018 files spell these differently
        canon = rename.get(n, n)
        if canon in FLOW_FEATURES:
            if canon not in features:       # a second `Fwd Header Length` is dropped
                features[canon] = Column(srcs[i], n, canon, "float", i)
        elif n in FLOW_METADATA:
            m = FLOW_METADATA[n]
            if m not in meta:
                meta[m] = Column(srcs[i], n, m, METADATA_KINDS[m], i)
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
        cols.append(Column(srcs[label_idx], names[label_idx], LABEL, "label", label_idx))
    return cols


def _plan_nsl(header: Header, srcs: list[str]) -> list[Column]:
    n = len(header.fields)
    if n not in (42, 43):
        raise SchemaError(f"{header.path} does not fit the nsl-kdd layout: expected 42 or 43 "
                          f"fields per line (41 features, label, optional difficulty), found {n}")
    cols = [Column(srcs[i], name, name, "str" if name in NSL_KDD_CATEGORICAL else "float", i)
            for i, name in enumerate(NSL_KDD_COLUMNS)]
    cols.append(Column(srcs[41], "label", LABEL, "label", 41))
    return cols


def _plan_generic(header: Header, label_column: str | None, srcs: list[str],
                  types: list[pa.DataType] | None) -> list[Column]:
    names = [clean_name(f) for f in header.fields]
    label_idx = _find_label(names, label_column, header.path)
    present = set(names)
    meta: dict[str, Column] = {}
    rest: list[Column] = []
    used: set[str] = set()
    for i, n in enumerate(names):
        if i == label_idx:
            continue
        if n == DUPLICATE_FWD_HEADER and "Fwd Header Length" in present:
            continue
        m = FLOW_METADATA.get(n, n if n in METADATA_KINDS else None)
        if m is not None and m not in meta:
            kind = METADATA_KINDS[m]
            if kind == "int":
                # Int64 if numeric, else kept as text under its own name
                if types is not None and (pa.types.is_integer(types[i]) or pa.types.is_floating(types[i])):
                    kind = "int"
                else:
                    kind = "auto-int"
            meta[m] = Column(srcs[i], n, m, kind, i)
            continue
        out = IDS2018_TO_CANONICAL.get(n, n)
        if out in used or out == LABEL or out in METADATA_KINDS:
            out = n
        k = 1
        base = out
        while out in used or out == LABEL or out in METADATA_KINDS:
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
        rest.append(Column(srcs[i], n, out, kind, i))
    cols = [meta[m] for m in METADATA_COLUMNS if m in meta] + rest
    if label_idx is not None:
        cols.append(Column(srcs[label_idx], names[label_idx], LABEL, "label", label_idx))
    return cols


def make_plan(header: Header, layout: str, label_column: str | None) -> Plan:
    if header.fmt == "pcap":
        return Plan(header, "pcap", [], [], 0)
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
    return Plan(header, layout, cols, srcs, n, header_check, inferred)


def infer_kinds(plan: Plan, raw: pl.DataFrame) -> None:
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
