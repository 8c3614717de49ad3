"""Suricata EVE JSON: the ``event_type: flow`` records; every other event type is ignored and
counted by type (``alert``, ``dns``, ``http``, ``stats`` …).

A flow record's time is ``flow.start`` (its first packet; the event's own ``timestamp`` is when
it was logged), its duration ``flow.end - flow.start``; ``flow.state`` is the state,
``app_proto`` the service. Extras kept as features: ``flow.reason`` (timeout, shutdown, forced),
``flow.alerted``, ``flow.age``, the cumulated TCP flags each way (``tcp.tcp_flags_ts``/``_tc``)
and the flag booleans (``tcp.syn`` … ``tcp.cwr``), and ``tcp.state``. A top-level ``label`` (or
the key ``label_column`` names) is the label.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from deepids.io.connlogs.schema import Field, batch_report, cast_batch, kept_numbers, parse_time
from deepids.io.connlogs.text import json_frame, line_batches, reject_json
from deepids.io.report import ReadReport

FLOW_FIELDS: tuple[Field, ...] = (
    Field("flow.start", "timestamp", "time"), Field("flow_id", "flow_id", "str"),
    Field("src_ip", "src_ip", "str"), Field("src_port", "src_port", "port"),
    Field("dest_ip", "dst_ip", "str"), Field("dest_port", "dst_port", "port"),
    Field("proto", "protocol", "proto"), Field("duration", "duration", "count"),
    Field("flow.pkts_toserver", "src_packets", "count"), Field("flow.pkts_toclient", "dst_packets", "count"),
    Field("flow.bytes_toserver", "src_bytes", "count"), Field("flow.bytes_toclient", "dst_bytes", "count"),
    Field("flow.state", "state", "str"), Field("app_proto", "service", "str"),
    Field("flow.reason", "reason", "str"), Field("flow.alerted", "alerted", "bool"),
    Field("flow.age", "age", "float"), Field("tcp.state", "tcp_state", "str"),
    Field("tcp.tcp_flags_ts", "tcp_flags_ts", "hex"), Field("tcp.tcp_flags_tc", "tcp_flags_tc", "hex"),
    *(Field(f"tcp.{f}", f"tcp_{f}", "bool") for f in ("syn", "fin", "rst", "psh", "ack", "urg", "ecn", "cwr")),
)
_TOP = ("flow_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "app_proto", "event_type")
_FLOW = ("start", "end", "pkts_toserver", "pkts_toclient", "bytes_toserver", "bytes_toclient", "state", "reason",
         "alerted", "age")
_FLAGS = ("syn", "fin", "rst", "psh", "ack", "urg", "ecn", "cwr")
_TCP = ("state", "tcp_flags", "tcp_flags_ts", "tcp_flags_tc", *_FLAGS)
_EVENT_TYPE = re.compile(rb'"event_type"\s*:\s*"([^"\\]*)"')
R_NO_TYPE = "no event_type (not an EVE record)"


def _schema(label: str) -> dict:
    schema = {k: pl.Utf8 for k in _TOP}
    schema["flow"] = pl.Struct({k: pl.Utf8 for k in _FLOW})
    schema["tcp"] = pl.Struct({k: pl.Utf8 for k in _TCP})
    schema[label] = pl.Utf8
    return schema


def _flatten(raw: pl.DataFrame) -> pl.DataFrame:
    cols = [pl.col(k) for k in raw.columns if k not in ("flow", "tcp")]
    cols += [pl.col("flow").struct.field(k).alias(f"flow.{k}") for k in _FLOW]
    cols += [pl.col("tcp").struct.field(k).alias(f"tcp.{k}") for k in _TCP]
    return prepare(raw.select(cols))


def prepare(flat: pl.DataFrame) -> pl.DataFrame:
    """Flat text columns (``flow.start`` …) -> the duration, and the TCP flags made explicit."""
    missing = [c for c in (*(f"flow.{k}" for k in _FLOW), *(f"tcp.{k}" for k in _TCP)) if c not in flat.columns]
    flat = flat.with_columns([pl.lit(None, dtype=pl.Utf8).alias(c) for c in missing])
    # EVE writes only the flags that were seen: where a TCP record is present, a missing one is false
    seen = pl.col("tcp.tcp_flags").is_not_null() | pl.col("tcp.tcp_flags_ts").is_not_null()
    flat = flat.with_columns([pl.when(seen).then(pl.col(f"tcp.{f}").fill_null("false")).otherwise(pl.col(f"tcp.{f}"))
                              for f in _FLAGS])
    start = parse_time(pl.col("flow.start").str.strip_chars())
    end = parse_time(pl.col("flow.end").str.strip_chars())
    seconds = (end - start).dt.total_microseconds() / 1e6
    return flat.with_columns(seconds.cast(pl.Utf8).alias("duration"))


def split_events(lines: list[bytes]) -> tuple[list[bytes], Counter]:
    """The lines of flow events (and those without a readable event_type, for the JSON check),
    and a count of the other event types."""
    flows, other = [], Counter()
    for ln in lines:
        m = _EVENT_TYPE.search(ln)
        if m is None or m.group(1) == b"flow":
            flows.append(ln)
        else:
            other[m.group(1).decode("utf-8", "replace")] += 1
    return flows, other


def eve_batches(path: Path, compression: str | None, batch_size: int,
                label_column: str | None = None) -> Iterator[tuple[pl.DataFrame, ReadReport]]:
    label = label_column or "label"
    schema = _schema(label)
    labelled = None
    done_rows = 0           # flow records so far (other event types are no records of this kind)
    for lines in line_batches(path, compression, batch_size):
        flows, other = split_events(lines)
        raw, good = json_frame(flows, schema)
        rejected = reject_json(len(flows) - len(good))
        typed = raw["event_type"].is_not_null()
        if not typed.all():
            rejected[R_NO_TYPE] = int((~typed).sum())
            raw, good = raw.filter(typed), good[typed.to_numpy()]
        if labelled is None and raw.height:
            labelled = raw[label].null_count() < raw.height
        fields = list(FLOW_FIELDS) + ([Field(label, "label", "label")] if labelled else [])
        done = cast_batch(_flatten(raw), fields)
        for k, v in done.rejected.items():
            rejected[k] = rejected.get(k, 0) + v
        ignored = {f"'{k}' events (not flows)": v for k, v in other.items()}
        yield done.frame, batch_report("suricata-eve", path, done.frame, rejected, ignored,
                                       numbers=kept_numbers(done, done_rows, good), parsed=len(flows))
        done_rows += len(flows)
