"""The canonical connection record, and the one cast that every connection-log reader uses.

A connection record is one bidirectional conversation as a sensor summarises it (Zeek
``conn.log``, Suricata ``flow`` events, NetFlow/IPFIX through nfdump, NFStream). Whatever the
source, a reader produces the same columns:

* metadata (never model inputs), named as the flow readers name them: ``flow_id`` (Utf8: Zeek
  ``uid``, Suricata ``flow_id``), ``src_ip``, ``src_port``, ``dst_ip``, ``dst_port``, ``protocol``
  (Int64, the IP protocol number: ``tcp`` is 6), ``timestamp`` (``Datetime("us")``, UTC, the
  first packet);
* :data:`CONN_FEATURES` (Float64): ``duration`` (seconds), ``src_packets``, ``dst_packets``,
  ``src_bytes``, ``dst_bytes`` (``src`` is the originator, the side that sent the first packet);
* :data:`CONN_CATEGORICAL` (Utf8): ``state`` (Zeek ``conn_state``, Suricata ``flow.state``,
  nfdump's cumulated TCP flags) and ``service`` (Zeek ``service``, Suricata ``app_proto``);
* the source's extra fields, as features where they are quantities or small vocabularies
  (Zeek ``missed_bytes``, ``history``; Suricata ``flow.reason``, TCP flags; nfdump flags, ToS;
  NFStream's statistics), named as the source names them;
* ``label`` (Utf8, normalised) when the file carries one.

Unset packet and byte counts and durations (Zeek writes ``-`` when a connection never saw the
second packet or any payload) are 0. A record is rejected, and counted under its reason, when
its timestamp or an address is missing or unreadable, a port is not an integer in 0..65535, a
count or duration is not a number or is negative, or (in labelled input) its label is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from deepids.io.labels import normalise_labels
from deepids.io.report import ReadReport, frame_report
from deepids.io.schema import LABEL

CONN_FEATURES: tuple[str, ...] = ("duration", "src_packets", "dst_packets", "src_bytes", "dst_bytes")
CONN_CATEGORICAL: tuple[str, ...] = ("state", "service")
CONN_METADATA: tuple[str, ...] = ("flow_id", "src_ip", "src_port", "dst_ip", "dst_port", "protocol", "timestamp")

#: the sources (layouts) of connection records, as ``inspect`` names them
CONN_SOURCES: tuple[str, ...] = ("zeek-conn", "zeek-conn-json", "suricata-eve", "nfdump-csv", "nfstream")

PROTOCOL_NUMBERS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ipv6-icmp": 58,
                    "icmpv6": 58, "icmp6": 58, "sctp": 132}

R_TIME = "missing or unreadable timestamp"
R_ADDRESS = "missing address"
R_LABEL = "empty label"
R_FIELDS = "wrong number of fields"
R_JSON = "malformed JSON"


def r_port(name: str) -> str:
    return f"invalid port in '{name}'"


def r_number(name: str) -> str:
    return f"non-numeric value in '{name}'"


def r_negative(name: str) -> str:
    return f"negative value in '{name}'"


@dataclass(frozen=True)
class Field:
    """One source field and what it becomes. ``kind``: ``epoch`` (seconds since 1970, text),
    ``time`` (text date-time, an offset is honoured), ``hex`` (``0x1b``/``1b``), ``str``, ``port``, ``proto``, ``count``
    (a canonical count or duration: unset is 0, negative rejects), ``float`` (an extra
    quantity: unset is NaN), ``bool`` (``T``/``true``/``1`` -> 1.0), ``label``."""

    src: str
    out: str
    kind: str


def _text(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Utf8).str.strip_chars()


def _unset(e: pl.Expr, unset: Sequence[str]) -> pl.Expr:
    return pl.when(e.is_in(list(unset)) | (e == "")).then(None).otherwise(e)


def parse_time(e: pl.Expr, kind: str = "time") -> pl.Expr:
    """Text -> naive UTC ``Datetime("us")``: seconds since 1970 (``epoch``), or ISO 8601 with or
    without an offset (``+0100``, ``+01:00``, ``Z``), or ``YYYY-MM-DD HH:MM:SS[.fff]`` (``time``)."""
    if kind in ("epoch", "epoch_ms"):
        us = (e.cast(pl.Float64, strict=False) * (1e6 if kind == "epoch" else 1e3)).round(0).cast(pl.Int64, strict=False)
        return pl.from_epoch(us, time_unit="us")
    # explicit formats, no inference: a query infers from one value and a mixed column goes null
    with_tz = e.str.to_datetime(time_unit="us", time_zone="UTC", strict=False,
                                format="%Y-%m-%dT%H:%M:%S%.f%#z")
    plain = [e.str.to_datetime(time_unit="us", strict=False, format=f)
             for f in ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f")]
    return pl.coalesce(with_tz.dt.replace_time_zone(None), *plain)


@dataclass(frozen=True)
class Cast:
    """One raw batch cast: the canonical frame (its kept rows), ``{reason: count}`` of the
    rejected ones, and ``reasons``: per raw row, the index into ``names`` of the reason it was
    rejected for, or -1 where it was kept (so ``np.flatnonzero(reasons < 0)`` are the kept
    rows' positions in the batch)."""

    frame: pl.DataFrame
    rejected: dict[str, int]
    reasons: np.ndarray
    names: tuple[str, ...]


def cast_fields(raw: pl.DataFrame, fields: Sequence[Field], unset: Sequence[str] = ("-",)
                ) -> tuple[pl.DataFrame, dict[str, int]]:
    """Cast the raw text columns of one batch to the canonical record; drop and count rejects.

    ``raw`` holds the source's fields as text (any missing source field is treated as unset).
    Returns the canonical frame (columns in :func:`order_columns` order) and
    ``{reason: count}`` of the rows rejected; every raw row is in exactly one of the two.
    """
    done = cast_batch(raw, fields, unset)
    return done.frame, done.rejected


def cast_rows(raw: pl.DataFrame, fields: Sequence[Field], unset: Sequence[str] = ("-",)
              ) -> tuple[pl.DataFrame, list[str | None]]:
    """As :func:`cast_fields`, with the reason of every raw row (None: kept) in row order."""
    done = cast_batch(raw, fields, unset)
    return done.frame, [done.names[k] if k >= 0 else None for k in done.reasons.tolist()]


def cast_batch(raw: pl.DataFrame, fields: Sequence[Field], unset: Sequence[str] = ("-",)) -> Cast:
    """The one cast, in two passes over the batch: each text column cleaned once (stripped,
    unset values null), then every output column and every rejection check in one query."""
    present = [f for f in fields if f.src in raw.columns]
    text = {f.src for f in present if not raw.schema[f.src].is_numeric() or f.kind not in NUMERIC_KINDS}
    sources = list(dict.fromkeys(f.src for f in present))
    clean = raw.with_columns([_unset(_text(c), unset).alias(c) for c in sources if c in text])
    exprs, checks = [], []
    for f in present:
        out, more = _cast_number(f) if clean.schema[f.src].is_numeric() else _cast_one(f)
        checks += more
        exprs.append(out.alias(f.out))
    if not any(f.out == "timestamp" for f in present):
        exprs.append(pl.Series("timestamp", [None] * raw.height, dtype=pl.Datetime("us")))
        checks.append((R_TIME, pl.Series([True] * raw.height)))
    names = tuple(r for r, _ in checks)
    bad = [f"__deepids_bad{i}" for i in range(len(checks))]
    both = clean.lazy().select([*exprs, *(c.fill_null(False).alias(b) for (_, c), b in zip(checks, bad))]).collect()
    first = np.full(raw.height, -1, dtype=np.int64)
    rejected: dict[str, int] = {}
    if raw.height:
        m = both.select(bad).to_numpy().astype(bool).reshape(raw.height, len(checks))
        first = np.where(m.any(axis=1), m.argmax(axis=1), -1)   # a row counts under its first reason
        for k, n in enumerate(np.bincount(first[first >= 0], minlength=len(checks)).tolist()):
            if n:
                rejected[names[k]] = n
    frame = both.drop(bad)
    if rejected:
        frame = frame.filter(pl.Series(first < 0))
    if LABEL in frame.columns:
        frame = frame.with_columns(pl.Series(LABEL, normalise_labels(frame[LABEL]), dtype=pl.Utf8))
    return Cast(frame.select(order_columns(frame.columns)), rejected, first, names)


#: kinds whose column Arrow may parse as numbers straight from the bytes
NUMERIC_KINDS = ("port", "count", "float", "epoch", "epoch_ms")


def numeric_sources(fields: Sequence[Field]) -> frozenset[str]:
    """The fields worth parsing as numbers straight from the bytes (Arrow's parser; a column
    holding anything else, a word say, falls back to text and the careful path)."""
    return frozenset(f.src for f in fields if f.kind in NUMERIC_KINDS)


def _cast_number(f: Field) -> tuple[pl.Expr, list[tuple[str, pl.Expr]]]:
    """A column that is already numbers (every cell parsed; unset cells null): the range checks."""
    x = pl.col(f.src).cast(pl.Float64)
    if f.kind == "port":
        bad = x.is_null() | (x < 0) | (x > 65535) | (x != x.floor()) | x.is_nan()
        return x.cast(pl.Int64, strict=False), [(r_port(f.src), bad & pl.col(f.src).is_not_null())]
    if f.kind == "count":
        return x.fill_null(0.0), [(r_negative(f.src), x < 0)]
    if f.kind in ("epoch", "epoch_ms"):
        out = parse_time(x, f.kind)
        return out, [(R_TIME, out.is_null())]
    return x.fill_null(float("nan")), []            # float


def _cast_one(f: Field) -> tuple[pl.Expr, list[tuple[str, pl.Expr]]]:
    """A text column, already cleaned (stripped; unset and empty cells null)."""
    e = pl.col(f.src)
    checks = []
    if f.kind in ("epoch", "epoch_ms", "time"):
        out = parse_time(e, f.kind)
        checks.append((R_TIME, out.is_null()))
    elif f.kind == "port":
        out = e.cast(pl.Float64, strict=False)
        checks.append((r_port(f.src), e.is_not_null() & (out.is_null() | (out < 0) | (out > 65535)
                                                         | (out != out.floor()))))
        out = out.cast(pl.Int64, strict=False)
    elif f.kind == "proto":
        low = e.str.to_lowercase()
        out = pl.coalesce(low.replace_strict(PROTOCOL_NUMBERS, default=None, return_dtype=pl.Int64),
                          low.cast(pl.Int64, strict=False))
    elif f.kind in ("count", "float"):
        out = e.cast(pl.Float64, strict=False)
        checks.append((r_number(f.src), e.is_not_null() & out.is_null()))
        if f.kind == "count":
            checks.append((r_negative(f.src), out < 0))
        out = out.fill_null(0.0 if f.kind == "count" else float("nan"))
    elif f.kind == "hex":
        out = e.str.strip_prefix("0x").str.to_integer(base=16, strict=False).cast(pl.Float64)
        checks.append((r_number(f.src), e.is_not_null() & out.is_null()))
        out = out.fill_null(float("nan"))
    elif f.kind == "bool":
        out = pl.when(e.is_null()).then(None).otherwise(
            e.str.to_lowercase().is_in(["t", "true", "1"]).cast(pl.Float64)).fill_null(float("nan"))
    elif f.kind == "label":
        out = e
        checks.append((R_LABEL, e.is_null()))
    else:
        out = e
    if f.out in ("src_ip", "dst_ip"):
        checks.append((R_ADDRESS, e.is_null()))
    return out, checks


def order_columns(columns: Sequence[str]) -> list[str]:
    """Metadata, the canonical features, the categorical ones, the source's extras, the label."""
    first = [c for c in (*CONN_METADATA, *CONN_FEATURES, *CONN_CATEGORICAL) if c in columns]
    rest = [c for c in columns if c not in first and c != LABEL]
    return first + rest + ([LABEL] if LABEL in columns else [])


def batch_report(layout: str, path, frame: pl.DataFrame, rejected: dict[str, int],
                 ignored: dict[str, int] | None = None, notes: Sequence[str] = (),
                 numbers: np.ndarray | None = None, parsed: int = 0) -> ReadReport:
    """The :class:`ReadReport` of one batch, exact under ``merge`` (as the flow readers').
    ``numbers``: the record number of each row of ``frame`` within its file (its position among
    the file's records, rejected ones included; lines that are no records are not counted);
    ``parsed``: how many numbers the batch used."""
    report = frame_report(layout, path, frame, rejected, ignored=ignored, notes=notes)
    report.numbers = np.arange(frame.height, dtype=np.int64) if numbers is None else numbers
    report.parsed = frame.height + sum(rejected.values()) if numbers is None else parsed
    return report


def kept_numbers(done: Cast, start: int, rows: np.ndarray | None = None) -> np.ndarray:
    """The record numbers of a cast batch's kept rows: ``start`` + the raw row's position
    (``rows``: each raw row's position, when the batch is not all consecutive records)."""
    kept = np.flatnonzero(done.reasons < 0)
    return (kept if rows is None else rows[kept]).astype(np.int64) + start
