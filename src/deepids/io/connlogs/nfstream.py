"""NFStream flows: the CSV ``NFStreamer(...).to_csv()`` writes, or a packet capture / live
interface through the ``nfstream`` package (the optional ``[nfstream]`` extra).

Mapping: ``bidirectional_first_seen_ms`` is the time, ``bidirectional_duration_ms`` the
duration, ``src2dst_*``/``dst2src_*`` the two directions, nDPI's ``application_name`` the
service (NFStream keeps no connection state). Every other quantity NFStream computes is kept
as a feature under its NFStream name: the per-direction counts, and with
``statistical_analysis=True`` the packet-size and inter-arrival statistics and TCP flag
counts (``bidirectional_mean_ps``, ``src2dst_max_piat_ms``, ``bidirectional_syn_packets`` …).
Identifiers and text unique to a flow (MAC addresses, OUIs, VLAN and tunnel ids, server
names, fingerprints, user agents) are not features.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from deepids.errors import ConfigError, InputError
from deepids.io.connlogs.schema import Field, batch_report, cast_batch, numeric_sources
from deepids.io.connlogs.text import ROW, LineSink, RowNumbers, delimited_batches, rebatch
from deepids.io.paths import read_first_line
from deepids.io.report import ReadReport

log = logging.getLogger(__name__)

CORE_FIELDS: tuple[Field, ...] = (
    Field("bidirectional_first_seen_ms", "timestamp", "epoch_ms"), Field("id", "flow_id", "str"),
    Field("src_ip", "src_ip", "str"), Field("src_port", "src_port", "port"),
    Field("dst_ip", "dst_ip", "str"), Field("dst_port", "dst_port", "port"),
    Field("protocol", "protocol", "proto"), Field("duration", "duration", "count"),
    Field("src2dst_packets", "src_packets", "count"), Field("dst2src_packets", "dst_packets", "count"),
    Field("src2dst_bytes", "src_bytes", "count"), Field("dst2src_bytes", "dst_bytes", "count"),
    Field("application_name", "service", "str"), Field("application_category_name", "application_category", "str"),
)
_NOT_FEATURES = {
    "id", "expiration_id", "src_mac", "src_oui", "dst_mac", "dst_oui", "ip_version", "vlan_id", "tunnel_id",
    "requested_server_name", "client_fingerprint", "server_fingerprint", "user_agent", "content_type",
    "application_name", "application_category_name", "duration",
}
REQUIRED = ("src_ip", "dst_ip", "bidirectional_first_seen_ms", "src2dst_packets", "dst2src_packets")


def looks_like_header(line: str) -> bool:
    names = {n.strip().strip('"') for n in line.split(",")}
    return all(r in names for r in REQUIRED)


def _fields(names: list[str], label: str | None) -> list[Field]:
    core = {f.src for f in CORE_FIELDS}
    out = [f for f in CORE_FIELDS if f.src in names or f.src == "duration"]
    for n in names:
        if n in core or n in _NOT_FEATURES or n.endswith(("_first_seen_ms", "_last_seen_ms")):
            continue
        if n == (label or "label"):
            out.append(Field(n, "label", "label"))
        elif n != "bidirectional_duration_ms":
            out.append(Field(n, n, "float"))
    return out


def prepare(raw: pl.DataFrame) -> pl.DataFrame:
    """The duration in seconds from NFStream's milliseconds."""
    if "bidirectional_duration_ms" not in raw.columns:
        return raw
    seconds = (pl.col("bidirectional_duration_ms").cast(pl.Utf8).str.strip_chars()
               .cast(pl.Float64, strict=False) / 1000.0).cast(pl.Utf8)
    return raw.with_columns(seconds.alias("duration"))


def fields_for(names: list[str], label_column: str | None = None) -> list[Field]:
    return _fields(names, label_column)


def csv_batches(path: Path, compression: str | None, batch_size: int,
                label_column: str | None = None) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    first = read_first_line(path, compression) or ""
    if not looks_like_header(first):
        raise InputError(f"{path} is not an NFStream CSV (expected src_ip, bidirectional_first_seen_ms, …)")
    names = [n.strip().strip('"') for n in first.split(",")]
    if label_column and label_column not in names:
        raise InputError(f"label column {label_column!r} is not in {path}")
    fields = _fields(names, label_column)
    sink = LineSink(lambda text: None)
    numeric = numeric_sources(fields)
    used = {"bidirectional_duration_ms", *(f.src for f in fields)}
    raws = delimited_batches(path, compression, names, 1, ",", sink, quote='"', numeric=numeric,
                             include=[n for n in names if n in used], unset=("-",))
    numbering = RowNumbers(sink)
    for raw in rebatch(raws, batch_size):
        done = cast_batch(prepare(raw), fields)
        rejected = dict(done.rejected)
        bad, _ = sink.take()
        for k, v in bad.items():
            rejected[k] = rejected.get(k, 0) + v
        numbers = numbering.of(raw[ROW].to_numpy()[done.reasons < 0])
        yield done.frame, batch_report("nfstream", path, done.frame, rejected, numbers=numbers,
                                       parsed=done.frame.height + sum(rejected.values()))
    bad, _ = sink.take()
    if bad:
        empty = cast_batch(prepare(pl.DataFrame(schema={n: pl.Utf8 for n in names})), fields).frame
        yield empty, batch_report("nfstream", path, empty, bad)


@contextmanager
def _children_stderr_to_log():
    """NFStream's metering processes print a traceback when NFStream stops them after an error
    (a capture it cannot read): what they write to stderr goes to the debug log, not the terminal;
    the error itself reaches the user as one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace").strip()
            if text:
                log.debug("NFStream's processes wrote: %s", text[-2000:])


def write_capture(capture: str | Path, out: str | Path) -> int:
    """NFStream's flows of a packet capture (pcap or pcapng, gzip-compressed too) written to
    ``out`` as the CSV ``NFStreamer(statistical_analysis=True).to_csv()`` writes (deepids reads
    it back as ``nfstream``); returns the number of flows. Needs the ``[nfstream]`` extra."""
    import gzip
    import shutil

    try:
        from nfstream import NFStreamer
    except ImportError:
        raise ConfigError("reading captures with NFStream needs the nfstream package: "
                          "pip install 'deepids[nfstream]'") from None
    capture, out = Path(capture), Path(out)
    if not capture.is_file():
        raise InputError(f"{capture} is not a file")
    with tempfile.TemporaryDirectory(prefix="deepids-nfstream-") as tmp:
        source = capture
        if capture.read_bytes()[:2] == b"\x1f\x8b":        # libpcap reads no gzip: unpack beside
            source = Path(tmp) / capture.name.removesuffix(".gz")
            try:
                with gzip.open(capture, "rb") as src, open(source, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as exc:
                raise InputError(f"cannot read {capture}: {exc}") from None
        part = Path(tmp) / "flows.csv"
        try:
            with _children_stderr_to_log():
                NFStreamer(source=str(source), statistical_analysis=True).to_csv(path=str(part))
        except (ValueError, OSError, RuntimeError) as exc:
            raise InputError(f"NFStream cannot read {capture}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
        if not part.exists() or part.stat().st_size == 0:
            raise InputError(f"NFStream found no flows in {capture}")
        with open(part, "rb") as fh:
            flows = sum(1 for ln in fh if ln.strip()) - 1
        from deepids.atomic import atomic_path

        with atomic_path(out) as tmp:       # whole or not at all
            shutil.copyfile(part, tmp)
    return flows


def capture_batches(source: str | Path, batch_size: int, label_column: str | None = None,
                    **streamer) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    """Flows of a capture file or a live interface through NFStream, with its statistics."""
    try:
        from nfstream import NFStreamer
    except ImportError:
        raise ConfigError("reading captures with NFStream needs the nfstream package: "
                          "pip install 'deepids[nfstream]'") from None
    opts = {"statistical_analysis": True, **streamer}
    with tempfile.TemporaryDirectory(prefix="deepids-nfstream-") as tmp:
        out = Path(tmp) / "flows.csv"
        try:
            with _children_stderr_to_log():
                NFStreamer(source=str(source), **opts).to_csv(path=str(out))
        except (ValueError, OSError, RuntimeError) as exc:
            raise InputError(f"NFStream cannot read {source}: {exc}") from None
        if not out.exists() or out.stat().st_size == 0:
            raise InputError(f"NFStream found no flows in {source}")
        for frame, report in csv_batches(out, None, batch_size, label_column):
            report.files = [str(source)]
            yield frame, report
