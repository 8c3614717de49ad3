"""The Windows-event record kind's rules: the canonical event table, and how one event (a flat
NXLog-style object, a nested Winlogbeat / Elastic one, or a flattened EVTX record) becomes a row.

One implementation for files and live records: :func:`canonical_event` makes a row of
:data:`EVENT_SCHEMA`, :func:`events_frame` casts rows to the table (timestamps by
:func:`deepids.io.timestamps.parse_timestamps`, the parser flows use too), and
:func:`events_from_records` canonicalises events arriving one by one with a reason for each
one refused. File readers are in :mod:`deepids.io.logs`.

Host names are normalised to the short upper-case name (`WORKSTATION6.theshire.local` ->
`WORKSTATION6`); channel names are matched case-insensitively to their usual spelling
(`security` -> `Security`); user names lose their domain and are lower-cased
(`THESHIRE\\pgustavo` -> `pgustavo`).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import polars as pl

from deepids.io.records import Rejection, Unparsable, canonical_name
from deepids.io.schema import FLOW_FEATURES
from deepids.io.timestamps import parse_timestamps

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us"),
    "host": pl.Utf8,
    "channel": pl.Utf8,
    "provider": pl.Utf8,
    "event_id": pl.Int64,
    "record_id": pl.Int64,
    "subject_user": pl.Utf8,
    "target_user": pl.Utf8,
    "user": pl.Utf8,            # the acting user: target user of logon events, subject user otherwise
    "logon_type": pl.Int64,
    "image": pl.Utf8,
    "parent_image": pl.Utf8,
    "command_line": pl.Utf8,
    "process_id": pl.Int64,
    "parent_process_id": pl.Int64,
    "execution_process_id": pl.Int64,
    "src_ip": pl.Utf8,
    "src_port": pl.Int64,
    "dst_ip": pl.Utf8,
    "dst_port": pl.Int64,
    "outcome": pl.Utf8,         # success / failure where the event says so
    "source_file": pl.Utf8,
    "raw": pl.Utf8,
}
EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA)

KNOWN_CHANNELS = ("Security", "System", "Application", "Windows PowerShell", "Microsoft-Windows-Sysmon/Operational",
                  "Microsoft-Windows-PowerShell/Operational", "Microsoft-Windows-WMI-Activity/Operational",
                  "Microsoft-Windows-TaskScheduler/Operational", "Microsoft-Windows-Windows Defender/Operational")
_CHANNELS = {c.lower(): c for c in KNOWN_CHANNELS}
LOGON_EVENTS = frozenset({4624, 4625, 4634, 4647, 4648, 4672, 4768, 4769, 4771, 4776})
FAILURE_EVENTS = frozenset({4625, 4771})   # failed logon, Kerberos pre-authentication failed
# fields consumed into canonical columns (a wrong type in one of them names the field in a rejection)
_CONSUMED = {
    "EventID", "Channel", "Hostname", "Computer", "@timestamp", "EventTime", "EventReceivedTime", "SourceName",
    "RecordNumber", "SubjectUserName", "SubjectDomainName", "TargetUserName", "TargetDomainName", "User",
    "LogonType", "Image", "NewProcessName", "ParentImage", "ParentProcessName", "CommandLine", "ProcessId",
    "NewProcessId", "ParentProcessId", "ExecutionProcessID", "IpAddress", "IpPort", "SourceAddress", "SourcePort",
    "DestAddress", "DestPort", "SourceIp", "DestinationIp", "DestinationPort", "EventType", "Keywords", "host",
    "port", "tags", "@version", "SourceModuleName", "SourceModuleType", "Message",
}



def events_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows of canonical events -> the canonical table (timestamps parsed to UTC, naive)."""
    if not rows:
        return pl.DataFrame(schema=EVENT_SCHEMA)
    data = {c: [r.get(c) for r in rows] for c in EVENT_COLUMNS}
    ts = data.pop("timestamp")
    df = pl.DataFrame(data, schema={c: (pl.Utf8 if c == "timestamp" else t) for c, t in EVENT_SCHEMA.items()
                                    if c != "timestamp"}, strict=False)
    parsed = parse_timestamps(pl.Series("timestamp", ts, dtype=pl.Utf8))
    return df.with_columns(parsed).select(EVENT_COLUMNS)


def flatten_winlogbeat(obj: dict) -> dict:
    """Nested Winlogbeat / Elastic layout -> the flat NXLog field names."""
    w = obj["winlog"]
    flat: dict[str, Any] = {}
    for k in ("event_data", "user_data"):
        if isinstance(w.get(k), dict):
            flat.update(w[k])
    host = obj.get("host")
    event = obj.get("event") if isinstance(obj.get("event"), dict) else {}
    flat["EventID"] = w.get("event_id", event.get("code"))
    flat["Channel"] = w.get("channel")
    flat["SourceName"] = w.get("provider_name")
    flat["RecordNumber"] = w.get("record_id")
    flat["Hostname"] = w.get("computer_name") or (host.get("name") if isinstance(host, dict) else host)
    flat["@timestamp"] = obj.get("@timestamp")
    proc = w.get("process")
    if isinstance(proc, dict) and proc.get("pid") is not None:
        flat["ExecutionProcessID"] = proc["pid"]
    outcome = (obj.get("event") or {}).get("outcome") if isinstance(obj.get("event"), dict) else None
    if outcome:
        flat["EventType"] = "AUDIT_FAILURE" if outcome == "failure" else "AUDIT_SUCCESS"
    if obj.get("message"):
        flat["Message"] = obj["message"]
    return flat


# ------------------------------------------------------------------------ canonical
def normalise_host(name) -> str | None:
    """`WORKSTATION6.theshire.local` and `workstation6` -> `WORKSTATION6`."""
    if name is None:
        return None
    s = str(name).strip()
    if not s:
        return None
    if not _is_ip(s):
        s = s.split(".")[0]
    return s.upper()


def normalise_user(name, domain=None) -> str | None:
    """`THESHIRE\\pgustavo`, `pgustavo@theshire.local` -> `pgustavo`; `-` and empty -> None."""
    if name is None:
        return None
    s = str(name).strip()
    if s in ("", "-", "N/A"):
        return None
    s = s.rsplit("\\", 1)[-1].split("@")[0]
    return s.lower() or None


def normalise_channel(name) -> str | None:
    if name is None:
        return None
    s = str(name).strip()
    return _CHANNELS.get(s.lower(), s)


def _is_ip(s: str) -> bool:
    parts = s.split(".")
    return (len(parts) == 4 and all(p.isdigit() for p in parts)) or ":" in s


def parse_int(v) -> int | None:
    """Decimal or `0x` hexadecimal integers (Security events write PIDs in hex)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if v == v else None
    s = str(v).strip()
    if not s or s == "-":
        return None
    try:
        return int(s, 16) if s.lower().startswith("0x") else int(s)
    except ValueError:
        return None


def _first(flat: dict, *keys):
    for k in keys:
        v = flat.get(k)
        if v not in (None, "", "-"):
            return v
    return None


def canonical_event(flat: dict, source_file: str | None = None, keep_raw: bool = True) -> dict | None:
    """One flat record (NXLog field names) -> a canonical event row; None when it has no event id.

    With `keep_raw`, `raw` holds the whole flat record as JSON (:func:`raw_json`; read it back with
    :func:`raw_fields`): the fields without a canonical column, such as process GUIDs, are found there."""
    event_id = parse_int(flat.get("EventID"))
    if event_id is None:
        return None
    channel = normalise_channel(flat.get("Channel"))
    subject = normalise_user(_first(flat, "SubjectUserName"))
    target = normalise_user(_first(flat, "TargetUserName"))
    sysmon_user = normalise_user(_first(flat, "User"))
    user = (target or subject) if event_id in LOGON_EVENTS else (subject or sysmon_user or target)
    is_4688 = event_id == 4688 and channel == "Security"
    if is_4688:
        process_id, parent_pid = parse_int(flat.get("NewProcessId")), parse_int(flat.get("ProcessId"))
    else:
        process_id = parse_int(_first(flat, "ProcessId", "SourceProcessId", "NewProcessId"))
        parent_pid = parse_int(flat.get("ParentProcessId"))
    event_type = str(flat.get("EventType") or "").upper()
    outcome = ("failure" if ("FAILURE" in event_type or event_id in FAILURE_EVENTS)
               else "success" if "SUCCESS" in event_type else None)
    row = {
        "timestamp": _first(flat, "@timestamp", "EventTime"),
        "host": normalise_host(_first(flat, "Hostname", "Computer")),
        "channel": channel,
        "provider": _first(flat, "SourceName"),
        "event_id": event_id,
        "record_id": parse_int(flat.get("RecordNumber")),
        "subject_user": subject or (sysmon_user if event_id not in LOGON_EVENTS else None),
        "target_user": target,
        "user": user,
        "logon_type": parse_int(flat.get("LogonType")),
        "image": _first(flat, "Image", "NewProcessName", "SourceImage", "ProcessName", "Application"),
        "parent_image": _first(flat, "ParentImage", "ParentProcessName"),
        "command_line": _first(flat, "CommandLine") or host_application(flat),
        "process_id": process_id,
        "parent_process_id": parent_pid,
        "execution_process_id": parse_int(flat.get("ExecutionProcessID")),
        "src_ip": _first(flat, "IpAddress", "SourceAddress", "SourceIp"),
        "src_port": parse_int(_first(flat, "IpPort", "SourcePort")),
        "dst_ip": _first(flat, "DestAddress", "DestinationIp"),
        "dst_port": parse_int(_first(flat, "DestPort", "DestinationPort")),
        "outcome": outcome,
        "source_file": source_file,
        "raw": None,
    }
    if isinstance(row["timestamp"], (int, float)):
        try:        # epoch seconds; out of range or NaN: no time (counted as an unparsed timestamp)
            row["timestamp"] = datetime.fromtimestamp(row["timestamp"], tz=timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")
        except (OverflowError, ValueError, OSError):
            row["timestamp"] = None
    elif row["timestamp"] is not None:
        row["timestamp"] = str(row["timestamp"])
    for k in ("src_ip", "dst_ip", "provider", "image", "parent_image", "command_line"):
        if row[k] is not None:
            row[k] = str(row[k])
    for v in row.values():      # a lone surrogate (JSON "\ud800") cannot go into a table: a ValueError, as a bad field
        if type(v) is str and not v.isascii():
            v.encode()
    if keep_raw:
        row["raw"] = raw_json(flat)
    return row


def raw_json(flat: dict) -> str | None:
    """The `raw` of an event: its whole flat object as JSON (orjson; Python's json for what orjson
    refuses, such as integers beyond 64 bits, lone surrogates or nesting beyond 255 levels); None
    for an object nested too deep for Python's json too (about 1000 levels): the event is kept, so
    reading with and without `raw` gives the same events."""
    try:
        return orjson.dumps(flat, default=str).decode()
    except (TypeError, ValueError):
        pass
    try:
        return json.dumps(flat, default=str)
    except (ValueError, RecursionError):
        return None


def host_application(flat: dict) -> str | None:
    """PowerShell events (400/600/800, 4103) carry the host's command line as `HostApplication=...`."""
    for key in ("ContextInfo", "Message", "Data"):
        text = flat.get(key)
        if not isinstance(text, str):
            continue
        for marker in ("HostApplication=", "Host Application = "):
            at = text.find(marker)
            if at >= 0:
                value = text[at + len(marker):].split("\n", 1)[0].strip()
                return value or None
    return None


def raw_fields(raw: str | None) -> dict:
    """The `raw` column of one event back as a dict ({} when absent)."""
    if not raw:
        return {}
    try:
        out = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return out if isinstance(out, dict) else {}


# ------------------------------------------------------------------ records that arrive one by one
R_EVENT_NOT_OBJECT = "not a JSON object"
R_NO_EVENT_ID = "no event id"
R_FLOW_RECORD = "a network flow, not a Windows event (this is a log model)"
R_BAD_EVENT = "malformed event"


def events_from_records(items) -> tuple[pl.DataFrame, np.ndarray, list]:
    """Windows events as they arrive (HTTP bodies, NDJSON lines) -> (canonical event table, the input
    position of each row, rejections).

    Each item is a flat NXLog-style object (the OTRF layout) or a nested Winlogbeat / Elastic one
    (``winlog.*``, ``host.name``), flattened as :func:`read_events` flattens them. An item that is
    not a JSON object, has no event id, or is a network flow is rejected with its position, the
    field at fault and the reason (a `deepids.io.records.Rejection`); the rest keep input order.
    """
    flow_names = set(FLOW_FEATURES)
    rows: list[dict] = []
    index: list[int] = []
    rejected: list = []
    for i, item in enumerate(items):
        if isinstance(item, Unparsable):
            rejected.append(Rejection(i, item.field, item.reason))
            continue
        if not isinstance(item, dict):
            rejected.append(Rejection(i, None, R_EVENT_NOT_OBJECT))
            continue
        nested = isinstance(item.get("winlog"), dict)
        flat = item
        try:
            flat = flatten_winlogbeat(item) if nested else item
            row = canonical_event(flat, None, keep_raw=True)   # raw: process GUIDs etc. for process context
        except (TypeError, ValueError, AttributeError, OverflowError, OSError):
            rejected.append(_bad_event(i, flat if isinstance(flat, dict) else item, nested))
            continue
        if row is None:
            if any(canonical_name(k) in flow_names for k in list(item)[:20]):
                rejected.append(Rejection(i, None, R_FLOW_RECORD))
            else:
                rejected.append(Rejection(i, "winlog.event_id" if nested else "EventID", R_NO_EVENT_ID))
            continue
        rows.append(row)
        index.append(i)
    return events_frame(rows), np.asarray(index, dtype=np.int64), rejected


def _bad_event(i: int, flat: dict, nested: bool):
    """The rejection of an event whose fields broke canonicalisation: the first field of a wrong type."""
    for k, v in flat.items():
        if k in _CONSUMED and k != "Message" and (isinstance(v, (dict, list, bool)) or
                                                  (isinstance(v, (int, float)) and abs(v) > 2 ** 53)):
            return Rejection(i, f"winlog.event_data.{k}" if nested and k not in _WINLOG_TOP else k, R_WRONG_TYPE_EVENT)
    return Rejection(i, None, R_BAD_EVENT)


R_WRONG_TYPE_EVENT = "wrong type"
_WINLOG_TOP = {"EventID", "Channel", "SourceName", "RecordNumber", "Hostname", "@timestamp", "ExecutionProcessID",
               "EventType"}

