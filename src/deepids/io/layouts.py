"""Layout detection: which flow layout (CICIDS2017, CSE-CIC-IDS2018, NSL-KDD, generic) a file
has, from its header line (or its first line for the header-less NSL-KDD)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from deepids.errors import InputError
from deepids.io.paths import PathLike, read_first_line, resolve_paths, sniff_format
from deepids.io.pcap import is_capture
from deepids.io.schema import IDS2018_TO_CANONICAL

__all__ = ["CIC_LAYOUTS", "LAYOUT_FAMILY", "Header", "clean_name", "split_line", "read_header",
           "detect", "detect_layout"]

CIC_LAYOUTS = ("cicids2017", "cicids2017-labelled", "cse-cic-ids2018")
#: files read together must share a family (the three CIC layouts form one)
LAYOUT_FAMILY = {"cicids2017": "cic", "cicids2017-labelled": "cic", "cse-cic-ids2018": "cic",
                 "nsl-kdd": "nsl-kdd", "generic": "generic",
                 "pcap": "cic"}   # captures become CIC flows (deepids.io.flowmeter)
SPECIFIC_2017 = frozenset(IDS2018_TO_CANONICAL.values())   # names only CICIDS2017 uses
SPECIFIC_2018 = frozenset(IDS2018_TO_CANONICAL)            # names only CSE-CIC-IDS2018 uses
_NSL_PROTOCOLS = frozenset({"tcp", "udp", "icmp"})
_WS = re.compile(r"\s+")


def split_line(line: str) -> list[str]:
    return next(csv.reader([line]))


def clean_name(name: str) -> str:
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
    n2017 = len(s & SPECIFIC_2017)
    n2018 = len(s & SPECIFIC_2018)
    if n2018 >= len(SPECIFIC_2018) // 2 and n2018 > n2017:
        return "cse-cic-ids2018"
    if n2017 >= len(SPECIFIC_2017) // 2:
        if "Flow ID" in s or "Source IP" in s:
            return "cicids2017-labelled"
        if "Destination Port" in s:
            return "cicids2017"
        return "generic"      # CIC features without the raw identifiers: a canonical table
    return None


@dataclass
class Header:
    path: Path
    fmt: str                       # "csv" | "parquet"
    compression: str | None
    fields: list[str]              # raw header fields (csv) or column names (parquet)
    has_header: bool
    parquet_schema: pa.Schema | None = None


def read_header(path: Path) -> Header:
    if is_capture(path):            # pcap/pcapng: flows are made by deepids.io.flowmeter
        return Header(path, "pcap", None, [], True)
    fmt, compression = sniff_format(path)
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(str(path))
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        if pf.metadata.num_rows == 0:
            raise InputError(f"{path} has no rows")
        schema = pf.schema_arrow
        return Header(path, fmt, None, list(schema.names), True, schema)
    line = read_first_line(path, compression)
    if line is None:
        raise InputError(f"{path} is empty")
    _check_text(path, line)
    try:
        fields = split_line(line)
    except csv.Error as exc:
        raise InputError(f"{path}: the first line is not a CSV header ({exc})") from None
    return Header(path, fmt, compression, fields, not _looks_nsl_kdd(fields))


def _check_text(path: Path, line: str) -> None:
    """A first line deepids cannot read as a CSV header: say why, in the file's terms."""
    if line.startswith(("\ufffd\ufffd", "\ufeff")) or line.count("\x00") > len(line) // 4:
        raise InputError(f"{path} looks like UTF-16 text (NUL bytes between the letters); deepids reads "
                         f"UTF-8: convert it first, e.g. iconv -f UTF-16 -t UTF-8")
    if "\x00" in line:
        raise InputError(f"{path}: the first line holds NUL bytes; it is not a text CSV file")
    if "\r" in line:
        raise InputError(f"{path}: the first line holds a bare carriage return (CR): lines must end with LF "
                         f"or CRLF; if the file uses CR alone, convert it first, e.g. tr '\\r' '\\n'")
    if "," not in line:
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")):
            if line.count(sep) >= 2:
                raise InputError(f"{path}: the header is separated by {name}, not commas; deepids reads "
                                 f"comma-separated files")


def detect(header: Header) -> str:
    if header.fmt == "pcap":
        return "pcap"
    if header.fmt == "csv" and not header.has_header:
        return "nsl-kdd"
    names = [clean_name(f) for f in header.fields]
    layout = _layout_from_names(names)
    if layout is not None:
        return layout
    if header.fmt == "parquet":
        return "generic"
    shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
    raise InputError(
        f"cannot detect the layout of {header.path}: its first line ({len(names)} fields: "
        f"{shown}) matches no known flow layout (CICIDS2017, CSE-CIC-IDS2018, NSL-KDD); "
        f"give --layout generic (layout='generic' in Python) to read it as a plain table")


def detect_layout(path: PathLike) -> str:
    """The layout of one flow file, from its header (or its first line for NSL-KDD).

    Returns one of ``schema.LAYOUTS``. A parquet file, or a CSV whose header already holds
    the canonical CIC feature names without the raw identifier columns, is ``generic``.
    Raises :class:`InputError` for a missing or empty file or an unknown header.
    """
    files = resolve_paths(path)
    if len(files) != 1:
        raise InputError(f"{path} holds {len(files)} flow files; detect_layout takes one file")
    return detect(read_header(files[0]))
