"""Connection logs: the flow records sensors already write, as one canonical connection record.

Sources (``layout`` names, as ``deepids inspect`` reports them):

* ``zeek-conn`` — Zeek ``conn.log`` TSV (gzip, rotated and concatenated files too);
* ``zeek-conn-json`` — Zeek ``conn.log`` as JSON lines;
* ``suricata-eve`` — Suricata EVE JSON, its ``flow`` events (other event types ignored, counted);
* ``nfdump-csv`` — NetFlow v5/v9/IPFIX through ``nfdump -o csv``;
* ``nfstream`` — NFStream's CSV (and captures through the optional ``nfstream`` package).

The source is detected from the file's first line (a Zeek ``#separator`` header, an EVE or
Zeek JSON object, nfdump's or NFStream's CSV header, or a headerless nfdump record); the
columns produced are those of :mod:`deepids.io.connlogs.schema`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import polars as pl

from deepids.errors import ConfigError, InputError
from deepids.io.connlogs import nfdump, nfstream, suricata, zeek
from deepids.io.connlogs.schema import CONN_CATEGORICAL, CONN_FEATURES, CONN_METADATA, CONN_SOURCES
from deepids.io.paths import read_first_line, sniff_format
from deepids.io.report import ReadReport

__all__ = ["CONN_SOURCES", "CONN_FEATURES", "CONN_CATEGORICAL", "CONN_METADATA", "detect_source",
           "iter_conn_batches", "iter_conn_chunks", "read_conn", "is_conn_file_name", "is_conn_path", "conn_files",
           "source_of_line"]

_READERS = {
    "zeek-conn": zeek.tsv_batches,
    "zeek-conn-json": zeek.json_batches,
    "suricata-eve": suricata.eve_batches,
    "nfdump-csv": nfdump.csv_batches,
    "nfstream": nfstream.csv_batches,
}
#: names a directory argument is expanded to, besides the flow files: Zeek's rotated logs
#: (``conn.09:00:00-10:00:00.log.gz``), EVE files (``eve.json``, ``eve.json.1``)
CONN_FILE_SUFFIXES = (".log", ".log.gz", ".json", ".json.gz", ".jsonl", ".ndjson")


def is_conn_file_name(name: str) -> bool:
    low = name.lower()
    return low.endswith(CONN_FILE_SUFFIXES) or ".json." in low or ".log." in low


def source_of_line(line: str) -> str | None:
    """The connection-log source a file's first line belongs to, or None."""
    text = line.lstrip("\ufeff").strip()
    if text.startswith("#separator"):
        return "zeek-conn"
    if text.startswith("{"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        if "event_type" in obj and ("src_ip" in obj or "flow_id" in obj or "stats" in obj):
            return "suricata-eve"
        if "id.orig_h" in obj or ("uid" in obj and "conn_state" in obj):
            return "zeek-conn-json"
        return None
    if nfdump.looks_like_header(text) or nfdump.looks_like_record(text):
        return "nfdump-csv"
    if nfstream.looks_like_header(text):
        return "nfstream"
    return None


def detect_source(path: str | Path) -> str | None:
    """The source of one file (``zeek-conn`` …), or None when it is no connection log."""
    path = Path(path)
    fmt, compression = sniff_format(path)
    if fmt != "csv":
        return None
    line = read_first_line(path, compression)
    return source_of_line(line) if line else None


def iter_conn_batches(path: str | Path, source: str | None = None, batch_size: int = 200_000,
                      label_column: str | None = None) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    """Canonical connection records of one file as ``(frame, report)`` pairs of at most
    ``batch_size`` rows; each report covers its batch (merge them for totals)."""
    path = Path(path)
    if source is not None and source not in _READERS:
        raise ConfigError(f"unknown connection-log source {source!r}; expected one of {', '.join(_READERS)}")
    _, compression = sniff_format(path)
    found = source or detect_source(path)
    if found is None:
        raise InputError(f"{path} is not a connection log deepids knows ({', '.join(CONN_SOURCES)})")
    yielded = False
    for frame, report in _READERS[found](path, compression, batch_size, label_column):
        yielded = True
        yield frame, report
    if not yielded:
        raise InputError(f"{path} holds no records")


def conn_files(paths, layout: str | None = None) -> list[tuple[Path, str]] | None:
    """``[(file, source)]`` when the inputs are connection logs, None when none is; a directory
    expands to its files in name order (rotated logs: ``conn.log``, ``conn.*.log.gz``).
    Connection logs cannot be read together with other flow files, nor Zeek with NetFlow."""
    from deepids.io.paths import FLOW_FILE_SUFFIXES

    if layout is not None and layout not in CONN_SOURCES:
        return None
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and (
                is_conn_file_name(f.name) or f.name.lower().endswith(FLOW_FILE_SUFFIXES)))
        elif p.is_file():
            files.append(p)
        else:
            return None if layout is None else [(p, layout)]    # the flow readers say what is wrong
    found = [(f, layout or detect_source(f)) for f in files]
    conn = [(f, s) for f, s in found if s is not None]
    if not conn:
        return None
    if len(conn) < len(found):
        other = next(f for f, s in found if s is None)
        raise InputError(f"cannot read {other} together with {conn[0][0]} ({conn[0][1]}): "
                         "connection logs are read apart from other flow files")
    families = {s.split("-")[0] for _, s in conn}
    if len(families) > 1:
        raise InputError(f"cannot read {conn[-1][0]} ({conn[-1][1]}) together with {conn[0][0]} ({conn[0][1]}): "
                         "files read together must come from one kind of sensor")
    return conn


def is_conn_path(path: str | Path) -> bool:
    """True when ``path`` is a connection log, or a directory of them (the record-kind layer's
    ``claims``); a mix of logs and other files is left to the reader, which says what is wrong."""
    try:
        return conn_files([path]) is not None
    except InputError:
        return False


def iter_conn_chunks(paths, *, batch_size: int = 200_000, layout: str | None = None,
                     label_column: str | None = None) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    """The connection records of the files, in order, as ``(frame, report)`` pairs of at most
    ``batch_size`` rows, each report carrying its rows' record numbers (``report.numbers``,
    counted from 0 over all the files: a record's position among the records read, rejected
    ones included, as a stream of the same lines numbers them; lines that are no records are
    not counted).
    This is the flows kind's registered reader of connection logs (:mod:`deepids.kinds.flows`)."""
    conn = conn_files(paths, layout)
    if conn is None:
        raise InputError(f"{', '.join(map(str, paths if isinstance(paths, (list, tuple)) else [paths]))} "
                         f"holds no connection log ({', '.join(CONN_SOURCES)})")
    offset = 0              # the records of the files before: a file's reader numbers from 0
    for path, source in conn:
        parsed = 0
        for frame, report in iter_conn_batches(path, source, batch_size, label_column):
            report.numbers = report.numbers + offset
            parsed += report.parsed
            yield frame, report
        offset += parsed


def read_conn(paths, source: str | None = None, label_column: str | None = None) -> tuple[pl.DataFrame, ReadReport]:
    """Every record of the files (in order) as one frame, and the merged report."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames, report = [], None
    for p in paths:
        for frame, part in iter_conn_batches(p, source, label_column=label_column):
            frames.append(frame)
            report = part if report is None else report.merge(part)
    if report is None:
        raise InputError("no input files given")
    return pl.concat(frames, how="diagonal_relaxed"), report
