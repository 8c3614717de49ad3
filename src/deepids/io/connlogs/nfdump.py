"""NetFlow v5/v9 and IPFIX as ``nfdump -o csv`` writes them (nfdump 1.6/1.7, Debian's package).

The header ``ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,…`` names the fields;
``nfdump -q`` leaves it out, and a file whose first line is such a record (48 fields, two
date-times first) is read with the standard names. The ``Summary`` footer nfdump appends is
ignored and counted. Records are unidirectional as the exporter sent them, or bidirectional
when nfdump aggregated them (``-b``/``-B``): then ``opkt``/``obyt`` hold the answer.

Mapping: ``ts`` is the first packet (nfdump prints the local time of the machine it runs on:
run it with ``TZ=UTC``), ``td`` the duration, ``ipkt``/``ibyt`` and ``opkt``/``obyt`` the two
directions, ``flg`` (``CEUAPRSF``, the TCP flags seen) the state; each flag is also a 0/1
feature (``flag_syn`` …), and the ToS bytes and forwarding status are kept. ICMP types and
codes (``dp`` = ``3.3``) become ``type * 256 + code``, as nfdump stores them. Routing and
exporter fields (interfaces, AS numbers, masks, MACs, MPLS, next hops) are not features. A
trailing ``label`` column (or ``label_column``) is the label.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from deepids.errors import InputError
from deepids.io.connlogs.schema import Field, batch_report, cast_batch, cast_fields, numeric_sources
from deepids.io.connlogs.text import ROW, LineSink, RowNumbers, delimited_batches, rebatch
from deepids.io.paths import read_first_line
from deepids.io.report import ReadReport

NFDUMP_COLUMNS: tuple[str, ...] = (
    "ts", "te", "td", "sa", "da", "sp", "dp", "pr", "flg", "fwd", "stos", "ipkt", "ibyt", "opkt", "obyt",
    "in", "out", "sas", "das", "smk", "dmk", "dtos", "dir", "nh", "nhb", "svln", "dvln", "ismc", "odmc",
    "idmc", "osmc", *(f"mpls{i}" for i in range(1, 11)), "cl", "sl", "al", "ra", "eng", "exid", "tr",
)
FLAGS = ("cwr", "ece", "urg", "ack", "psh", "rst", "syn", "fin")     # the order of nfdump's 'flg'
FLOW_FIELDS: tuple[Field, ...] = (
    Field("ts", "timestamp", "time"), Field("sa", "src_ip", "str"), Field("sp", "src_port", "port"),
    Field("da", "dst_ip", "str"), Field("dp", "dst_port", "port"), Field("pr", "protocol", "proto"),
    Field("td", "duration", "count"), Field("ipkt", "src_packets", "count"), Field("opkt", "dst_packets", "count"),
    Field("ibyt", "src_bytes", "count"), Field("obyt", "dst_bytes", "count"), Field("flg", "state", "str"),
    *(Field(f"flag_{f}", f"flag_{f}", "float") for f in FLAGS),
    Field("stos", "src_tos", "float"), Field("dtos", "dst_tos", "float"), Field("fwd", "forwarding_status", "float"),
)
REQUIRED = ("ts", "td", "sa", "da", "sp", "dp", "pr", "ipkt", "ibyt")
FOOTER = "nfdump summary footer lines"
REPEATED = "repeated nfdump headers (concatenated files)"


def looks_like_header(line: str) -> bool:
    names = [n.strip() for n in line.split(",")]
    return all(r in names for r in REQUIRED)


def looks_like_record(line: str) -> bool:
    """A headerless ``nfdump -q -o csv`` line: 48 fields, starting with two date-times."""
    parts = line.split(",")
    return len(parts) == len(NFDUMP_COLUMNS) and all(len(p) >= 19 and p[4:5] == "-" and p[10:11] == " "
                                                      for p in parts[:2])


class Footer:
    """nfdump's footer: ``Summary``, then a header and a line of totals (six fields each). Those
    three lines are no records; any other line with the wrong field count is damage. Files
    concatenated (``cat a.csv b.csv``) have a footer, then the next file's header, in the middle."""

    def __init__(self) -> None:
        self.left = 0                   # footer lines still expected after 'Summary'

    def __call__(self, text: str) -> str | None:
        t = text.strip()
        if t == "Summary":
            self.left = 2
            return FOOTER
        if self.left and t.count(",") == 5:
            self.left -= 1
            return FOOTER
        self.left = 0
        return None


def is_header_row(first_field) -> pl.Expr | bool:
    """A repeated header (the next file of a concatenation): its first field is ``ts``."""
    return first_field == "ts"


def fields_for(names: list[str], label_column: str | None = None) -> list[Field]:
    label = label_column or "label"
    return list(FLOW_FIELDS) + ([Field(label, "label", "label")] if label in names else [])


def prepare(raw: pl.DataFrame) -> pl.DataFrame:
    """ICMP type.code as one number; the flag string as eight 0/1 columns."""
    missing = [c for c in ("flg", "dp") if c not in raw.columns]
    return _expand(raw.with_columns([pl.lit(None, dtype=pl.Utf8).alias(c) for c in missing]))


def _expand(raw: pl.DataFrame) -> pl.DataFrame:
    """Per batch: the flags of each distinct ``flg`` string (a few dozen at most) joined back,
    and ``dp`` as numbers where it holds no ICMP ``type.code`` (the usual batch: one pass)."""
    flg = pl.col("flg").cast(pl.Utf8).str.strip_chars()
    table = raw.select(pl.col("flg").cast(pl.Utf8)).unique().with_columns(
        pl.when(flg.str.len_chars() == 8).then((flg.str.slice(i, 1) != ".").cast(pl.Float64))
        .otherwise(None).alias(f"flag_{f}") for i, f in enumerate(FLAGS))
    out = raw.drop([f"flag_{f}" for f in FLAGS], strict=False).with_columns(pl.col("flg").cast(pl.Utf8))
    out = out.join(table, on="flg", how="left", maintain_order="left", nulls_equal=True)
    dp = out["dp"].cast(pl.Utf8).str.strip_chars()
    if dp.str.contains(".", literal=True).any():
        icmp = dp.str.extract_groups(r"^(\d+)\.(\d+)$")
        code = (icmp.struct.field("1").cast(pl.Int64, strict=False) * 256
                + icmp.struct.field("2").cast(pl.Int64, strict=False)).cast(pl.Utf8)
        return out.with_columns(pl.coalesce(code, dp).alias("dp"))
    number = dp.cast(pl.Float64, strict=False)
    if number.null_count() == dp.is_in(["-", ""]).sum() + dp.null_count():    # every set cell a number
        return out.with_columns(number.alias("dp"))
    return out.with_columns(dp.alias("dp"))


def csv_batches(path: Path, compression: str | None, batch_size: int,
                label_column: str | None = None) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    first = read_first_line(path, compression) or ""
    if looks_like_header(first):
        names, skip = [n.strip() for n in first.split(",")], 1
    elif looks_like_record(first):
        names, skip = list(NFDUMP_COLUMNS), 0
    else:
        raise InputError(f"{path} is not an nfdump CSV (expected the header ts,te,td,sa,da,…)")
    if len(set(names)) != len(names):
        raise InputError(f"{path}: the nfdump header names a column twice")
    label = label_column or "label"
    if label_column and label_column not in names:
        raise InputError(f"label column {label_column!r} is not in {path}")
    fields = list(FLOW_FIELDS) + ([Field(label, "label", "label")] if label in names else [])
    sink = LineSink(Footer())
    numeric = numeric_sources(fields) - {"dp"} - {f"flag_{f}" for f in FLAGS}     # dp holds ICMP type.code
    used = {"ts", "flg", "dp", *(f.src for f in fields)}
    raws = delimited_batches(path, compression, names, skip, ",", sink, numeric=numeric,
                             include=[n for n in names if n in used], unset=("-",))
    numbering = RowNumbers(sink)
    for raw in rebatch(raws, batch_size):
        # the footer's header line has the right field count only by accident: drop it too
        ts = raw["ts"].cast(pl.Utf8)
        footer = ts.is_in(["Summary", "flows"]).fill_null(False)
        header = is_header_row(ts).fill_null(False)
        n_footer, n_header = int(footer.sum()), int(header.sum())
        records = raw
        if n_footer or n_header:
            numbering.ignore(raw.filter(footer | header)[ROW].to_numpy())
            records = raw.filter(~(footer | header))
        done = cast_batch(_expand(records), fields)
        rejected = dict(done.rejected)
        bad, skipped = sink.take()
        for k, v in bad.items():
            rejected[k] = rejected.get(k, 0) + v
        skipped[FOOTER] = skipped.get(FOOTER, 0) + n_footer
        if n_header:
            skipped[REPEATED] = skipped.get(REPEATED, 0) + n_header
        numbers = numbering.of(records[ROW].to_numpy()[done.reasons < 0])
        yield done.frame, batch_report("nfdump-csv", path, done.frame, rejected, skipped, numbers=numbers,
                                       parsed=done.frame.height + sum(rejected.values()))
    bad, skipped = sink.take()
    if bad or skipped:
        empty, _ = cast_fields(_expand(pl.DataFrame(schema={n: pl.Utf8 for n in names})), fields)
        yield empty, batch_report("nfdump-csv", path, empty, bad, skipped)
