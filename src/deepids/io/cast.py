"""The flows' cast-and-reject rules, and casting one batch of a flow file with them.

The column rules (:func:`cast_float`, :func:`cast_int`, :func:`cast_text`,
:func:`cast_timestamp`, :func:`cast_label`) are the one implementation of how a cell becomes a
canonical value: file readers apply them to whole batches (:func:`cast_batch`) and
:mod:`deepids.io.records` applies them to records that arrive one by one.

``Infinity``/``inf``/``NaN``/empty numeric cells are *not* rejections: they become
``inf``/``nan``. A row is rejected, and counted under a reason in :class:`ReadReport`, when
it has the wrong number of fields, is empty, repeats the header line, holds text that is not
a number in a numeric column, or (when the input has labels) has an empty label.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from deepids.errors import InputError
from deepids.io.labels import normalise_labels
from deepids.io.plans import Plan
from deepids.io.report import ENTITY_COLUMNS, ReadReport, frame_report
from deepids.io.timestamps import parse_timestamps

__all__ = ["R_FIELDS", "R_EMPTY_ROW", "R_HEADER", "R_LABEL", "R_NON_NUMERIC", "R_NON_INTEGER",
           "ENTITY_COLUMNS", "parse_float", "cast_float", "cast_int", "cast_text", "cast_timestamp",
           "cast_label", "first_reasons", "cast_batch", "batch_report"]


# reasons a row is rejected for
R_FIELDS = "wrong number of fields"
R_EMPTY_ROW = "empty row"
R_HEADER = "repeated header line"
R_LABEL = "empty label"
R_NON_NUMERIC = "non-numeric value"
R_NON_INTEGER = "non-integer value"
_INT64_LIMIT = float(2 ** 63)


def r_nonnumeric(name: str) -> str:
    return f"{R_NON_NUMERIC} in '{name}'"


def r_noninteger(name: str) -> str:
    return f"{R_NON_INTEGER} in '{name}'"


# --------------------------------------------------------------------------------------
# The column rules: one implementation, used by file readers (cast_batch) and by records
# arriving one by one (deepids.io.records)
# --------------------------------------------------------------------------------------

def parse_float(s: pl.Series) -> tuple[pl.Series, pl.Series | None]:
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
    return parse_float(s.cast(pl.Utf8))


def cast_float(s: pl.Series) -> tuple[pl.Series, pl.Series | None]:
    """A feature: numbers and numeric text (``inf``, ``Infinity``, ``NaN``) as Float64, empty or
    null as NaN; the mask marks text that is not a number (the record is rejected)."""
    v, bad = parse_float(s)
    return v.fill_null(float("nan")), bad


def cast_int(s: pl.Series) -> tuple[pl.Series, pl.Series | None, pl.Series | None]:
    """A port or protocol: (Int64, null when empty; mask of non-numbers; mask of numbers that are
    not integers or do not fit 64 bits). Flagged cells are null in the values."""
    v, bad = parse_float(s)
    nonint = (v.is_not_null() & (~v.is_finite() | (v.floor() != v) | (v.abs() >= _INT64_LIMIT))).fill_null(False)
    return v.cast(pl.Int64, strict=False), bad, (nonint if nonint.any() else None)


def cast_text(s: pl.Series) -> pl.Series:
    """An identifier: text without surrounding blanks; empty is null."""
    if s.dtype != pl.Utf8:
        s = s.cast(pl.Utf8)
    s = s.str.strip_chars()
    return pl.select(pl.when(pl.lit(s) == "").then(None).otherwise(pl.lit(s))).to_series().alias(s.name)


def cast_timestamp(s: pl.Series) -> tuple[pl.Series, pl.Series | None]:
    """(Datetime("us") by :func:`parse_timestamps`, mask of text given but not understood:
    counted as ``unparsed_timestamps``, never a rejection)."""
    ts = parse_timestamps(s)
    if s.dtype != pl.Utf8:
        return ts, None
    txt = s.str.strip_chars()
    return ts, (ts.is_null() & txt.is_not_null() & (txt != "")).fill_null(False)


def cast_label(s: pl.Series, strip_dot: bool = False) -> tuple[pl.Series, pl.Series]:
    """(normalised labels, mask of empty labels: rejected). NSL-KDD labels end with a dot."""
    if s.dtype != pl.Utf8:
        s = s.cast(pl.Utf8)
    if strip_dot:
        s = s.str.strip_chars().str.strip_chars_end(".")
    lab = normalise_labels(s)
    return lab, (lab.is_null() | (lab == "")).fill_null(True)


def first_reasons(n: int, masks: list[tuple[str, pl.Series]]) -> tuple[np.ndarray, dict[str, int]]:
    """(rows kept, {reason: rows}) where each rejected row counts under its first reason."""
    which = np.full(n, -1, dtype=np.int64)
    for k, (_, m) in enumerate(masks):
        arr = m.to_numpy()
        which[arr & (which < 0)] = k
    counts = np.bincount(which[which >= 0], minlength=len(masks))
    rejected: dict[str, int] = {}
    for k, (reason, _) in enumerate(masks):
        if counts[k]:
            rejected[reason] = rejected.get(reason, 0) + int(counts[k])
    return which < 0, rejected


# --------------------------------------------------------------------------------------
# One batch of a file
# --------------------------------------------------------------------------------------

def _row_masks(plan: Plan, raw: pl.DataFrame) -> list[tuple[str, pl.Series]]:
    """Empty rows and repeated header lines of a CSV batch."""
    masks: list[tuple[str, pl.Series]] = []
    n = raw.height
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
    return masks


def cast_batch(plan: Plan, raw: pl.DataFrame) -> tuple[pl.DataFrame, ReadReport]:
    """One raw batch -> (canonical frame, its report): every row kept or rejected with a reason."""
    n = raw.height
    masks = _row_masks(plan, raw)
    out: dict[str, pl.Series] = {}
    unparsed = None
    label_empty = None
    for c in sorted(plan.cols, key=lambda c: c.pos):
        s = raw[c.src]
        if s.dtype.is_nested() or s.dtype == pl.Object:
            raise InputError(f"{plan.header.path}: column {c.src!r} holds {s.dtype} values; deepids reads "
                             f"flat columns of numbers or text")
        if c.kind == "float":
            out[c.out], bad = cast_float(s)
            masks += [(r_nonnumeric(c.name), bad)] if bad is not None else []
        elif c.kind == "int":
            out[c.out], bad, nonint = cast_int(s)
            masks += [(r_nonnumeric(c.name), bad)] if bad is not None else []
            masks += [(r_noninteger(c.name), nonint)] if nonint is not None else []
        elif c.kind == "str":
            out[c.out] = cast_text(s)
        elif c.kind == "ts":
            out[c.out], unparsed = cast_timestamp(s)
        elif c.kind == "label":
            out[c.out], label_empty = cast_label(s, strip_dot=plan.layout == "nsl-kdd")
        else:  # pragma: no cover - 'auto' kinds are resolved before conversion
            raise AssertionError(f"unresolved column kind {c.kind!r}")
    if label_empty is not None and label_empty.any():
        masks.append((R_LABEL, label_empty))

    frame = pl.DataFrame([out[c.out].alias(c.out) for c in plan.cols]) if plan.cols else pl.DataFrame()
    rejected: dict[str, int] = {}
    keep_arr = None
    if masks:
        keep_arr, rejected = first_reasons(n, masks)
        keep = pl.Series(keep_arr)
        frame = frame.filter(keep)
        if unparsed is not None:
            unparsed = unparsed.filter(keep)
    report = batch_report(plan, frame, rejected, int(unparsed.sum()) if unparsed is not None else 0)
    report.numbers = np.flatnonzero(keep_arr) if masks else np.arange(n)
    report.parsed = n
    return frame, report


def batch_report(plan: Plan, frame: pl.DataFrame, rejected: dict[str, int],
                 unparsed: int) -> ReadReport:
    return frame_report(plan.layout, plan.path, frame, rejected, unparsed=unparsed)
