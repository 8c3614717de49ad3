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
The pieces, one room each: paths and format sniffing (:mod:`deepids.io.paths`), layout
detection (:mod:`deepids.io.layouts`), column plans and type inference
(:mod:`deepids.io.plans`), Arrow decoding (:mod:`deepids.io.arrow`), casting and rejection
rules (:mod:`deepids.io.cast`), timestamps (:mod:`deepids.io.timestamps`) and the report
(:mod:`deepids.io.report`). This module streams them and dispatches packet captures to
:mod:`deepids.io.flowmeter`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deepids.errors import ConfigError, InputError
from deepids.io.arrow import arrow_to_polars
from deepids.io.cast import R_EMPTY_ROW, R_FIELDS, R_HEADER, R_LABEL, batch_report, cast_batch
from deepids.io.connlogs import CONN_SOURCES, conn_files, iter_conn_chunks
from deepids.io.layouts import LAYOUT_FAMILY, detect, detect_layout, read_header
from deepids.io.paths import FLOW_FILE_SUFFIXES, PathLike, resolve_paths
from deepids.io.textstream import LineQuotes, open_text
from deepids.io.plans import Plan, infer_kinds, make_plan
from deepids.io.report import ReadReport
from deepids.io.schema import LABEL, LAYOUTS, METADATA_COLUMNS
from deepids.io.timestamps import parse_timestamps

__all__ = [
    "ReadReport",
    "detect_layout",
    "read_flows",
    "iter_flow_batches",
    "inspect_flows",
    "parse_timestamps",
    "FLOW_FILE_SUFFIXES",
    "R_FIELDS",
    "R_EMPTY_ROW",
    "R_HEADER",
    "R_LABEL",
]

_CSV_BLOCK_SIZE = 2 << 20       # fixed, so that type inference never depends on batch_size


def _empty_frame(plan: Plan) -> pl.DataFrame:
    dtypes = {"float": pl.Float64, "int": pl.Int64, "str": pl.Utf8, "label": pl.Utf8,
              "ts": pl.Datetime("us")}
    return pl.DataFrame(schema={c.out: dtypes.get(c.kind, pl.Utf8) for c in plan.cols})


def _raw_batches_csv(plan: Plan, pending: list[int], notes: list[str]) -> Iterator[pa.Table]:
    """Record batches of raw bytes; rows with a wrong field count (and a row cut by damage) are
    counted in pending; damage to a compressed file goes into notes, after the rows before it."""

    def on_invalid(row) -> str:
        pending[0] += 1
        return "skip"

    wanted = {c.src for c in plan.cols} | {s for s, _ in plan.header_check}
    include = [s for s in plan.arrow_names if s in wanted]
    stream = open_text(plan.path, plan.header.compression)
    reader = None
    try:
        reader = pacsv.open_csv(
            LineQuotes(stream),     # a quote left open rejects its line, not every line after it
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
        if "straddl" in str(exc):
            raise InputError(f"cannot read {plan.path}: a line is longer than {_CSV_BLOCK_SIZE >> 20} MiB; "
                             f"flow records are far shorter: is the file damaged?") from None
        raise InputError(f"cannot read {plan.path}: {exc}") from None
    finally:
        if reader is not None:
            reader.close()              # stop Arrow's read-ahead before the stream goes
        stream.close()
    pending[0] += stream.cut_lines
    if stream.note():
        notes.append(stream.note())


def _raw_batches_parquet(plan: Plan, batch_size: int) -> Iterator[pa.Table]:
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


def _iter_capture(plan: Plan, batch_size: int) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    """Flows of a packet capture as they end (deepids.io.flowmeter: memory follows the open flows);
    dropped flows count as rejected rows, and what the capture held (packets skipped, damage) goes
    into the last report's notes."""
    from deepids.io.flowmeter import FlowMeterReport, iter_capture_flows
    from deepids.io.pcap import CaptureReport

    meter = FlowMeterReport(capture=CaptureReport(path=str(plan.path)))
    done = 0
    last: tuple[pl.DataFrame, ReadReport] | None = None
    for flows in _rechunk_frames(iter_capture_flows(plan.path, report=meter), batch_size):
        if last is not None:
            yield last
        report = batch_report(plan, flows, {}, 0)
        report.numbers, report.parsed = np.arange(done, done + flows.height), flows.height
        done += flows.height
        last = flows, report
    if last is None:
        from deepids.io.flowfeatures import empty_flows

        last = empty_flows(), batch_report(plan, empty_flows(), {}, 0)
    last[1].rejected = {k: v for k, v in meter.dropped.items() if v}
    last[1].notes = [meter.line()]
    yield last


def _rechunk_frames(frames: Iterator[pl.DataFrame], batch_size: int) -> Iterator[pl.DataFrame]:
    buf: list[pl.DataFrame] = []
    rows = 0
    for f in frames:
        buf.append(f)
        rows += f.height
        while rows >= batch_size:
            whole = pl.concat(buf) if len(buf) > 1 else buf[0]
            yield whole.slice(0, batch_size)
            rest = whole.slice(batch_size)
            buf, rows = ([rest] if rest.height else []), rest.height
    if rows:
        yield pl.concat(buf) if len(buf) > 1 else buf[0]


def _iter_file(plan: Plan, batch_size: int) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    if plan.header.fmt == "pcap":
        yield from _iter_capture(plan, batch_size)
        return
    pending, notes = [0], []
    if plan.header.fmt == "parquet":
        raw_tables: Iterator[pa.Table] = _raw_batches_parquet(plan, batch_size)
    else:
        raw_tables = _raw_batches_csv(plan, pending, notes)

    if not plan.inferred:
        first = next(raw_tables, None)
        if first is not None:
            infer_kinds(plan, arrow_to_polars(first))
            raw_tables = _chain([first], raw_tables)

    numeric = frozenset(c.src for c in plan.cols if c.kind in ("float", "int"))
    yielded = False
    for table in _rechunk(raw_tables, batch_size):
        frame, report = cast_batch(plan, arrow_to_polars(table, numeric))
        if pending[0]:
            report.rejected[R_FIELDS] = report.rejected.get(R_FIELDS, 0) + pending[0]
            pending[0] = 0
        if notes:
            report.notes.extend(notes)
            notes.clear()
        yielded = True
        yield frame, report
    if pending[0] or notes or not yielded:
        if not yielded and not pending[0]:
            if notes:
                raise InputError(f"cannot read {plan.path}: {notes[0]}")
            if plan.header.has_header:
                raise InputError(f"{plan.path} has a header but no data rows")
            raise InputError(f"{plan.path} is empty")
        if not plan.inferred:
            for c in plan.cols:
                if c.kind.startswith("auto"):
                    c.kind = "str" if c.kind == "auto" else "int"
            plan.inferred = True
        report = ReadReport(layout=plan.layout, files=[str(plan.path)],
                            rejected={R_FIELDS: pending[0]} if pending[0] else {}, notes=list(notes),
                            _row_hashes=np.empty(0, dtype=np.uint64),
                            _entity_values={})
        pending[0] = 0
        yield _empty_frame(plan), report


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


def _plans(paths, layout: str | None, label_column: str | None) -> list[Plan]:
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS + CONN_SOURCES)}")
    files = resolve_paths(paths)
    plans = []
    for f in files:
        header = read_header(f)
        lay = "pcap" if header.fmt == "pcap" else (layout or detect(header))
        plans.append(make_plan(header, lay, label_column))
    families = {LAYOUT_FAMILY[p.layout] for p in plans}
    if len(families) > 1:
        first = plans[0]
        other = next(p for p in plans if LAYOUT_FAMILY[p.layout] != LAYOUT_FAMILY[first.layout])
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
    if conn_files(paths, layout) is not None:    # Zeek, Suricata, nfdump, NFStream: the same reader as the
        yield from iter_conn_chunks(paths, batch_size=batch_size, layout=layout,   # flows kind's (deepids.kinds)
                                    label_column=label_column)
        return
    plans = _plans(paths, layout, label_column)
    offset = 0          # records read in earlier batches: record numbers run over all files
    for plan in plans:
        for frame, report in _iter_file(plan, batch_size):
            if report.numbers is not None:
                report.numbers = report.numbers + offset
            offset += report.parsed
            yield frame, report


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
