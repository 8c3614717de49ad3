"""Reading Windows event logs into one canonical event table.

Sources:
- `.evtx` files, through the Rust-backed `evtx` package (`PyEvtxParser`). A damaged file does
  not stop the run: every readable record is kept, and each bad chunk or record the parser
  gives up on is counted under `damaged evtx chunk/record`.
- JSON Lines, plain or `.gz`: the flat NXLog layout of the OTRF Security-Datasets (`EventID`,
  `Channel`, `Hostname`, `@timestamp`, data fields at top level) and the nested Winlogbeat /
  Elastic layout (`winlog.event_id`, `winlog.channel`, `winlog.event_data.*`, `host.name`).
  Lines are split on `\\n` only (some `Message` values hold a bare `\\r`). A line that is not a
  JSON object, or has no event id, is rejected and counted; it does not stop the run.
- Directories are walked recursively for `.evtx`, `.json`, `.jsonl`, `.ndjson` (and `.gz` of
  the JSON ones).

Every event becomes one row of :data:`EVENT_COLUMNS`; the fields not mapped to a canonical
column are kept as a JSON object in `raw`. Host names are normalised to the short upper-case
name (`WORKSTATION6.theshire.local` -> `WORKSTATION6`); channel names are matched
case-insensitively to their usual spelling (`security` -> `Security`); user names lose their
domain and are lower-cased (`THESHIRE\\pgustavo` -> `pgustavo`).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl

from deepids.errors import DeepidsError, InputError
from deepids.io.timestamps import parse_timestamps

LOG_LAYOUT = "windows-events"
LOG_SUFFIXES = (".evtx", ".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")

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
# fields consumed into canonical columns (dropped from `raw`)
_CONSUMED = {
    "EventID", "Channel", "Hostname", "Computer", "@timestamp", "EventTime", "EventReceivedTime", "SourceName",
    "RecordNumber", "SubjectUserName", "SubjectDomainName", "TargetUserName", "TargetDomainName", "User",
    "LogonType", "Image", "NewProcessName", "ParentImage", "ParentProcessName", "CommandLine", "ProcessId",
    "NewProcessId", "ParentProcessId", "ExecutionProcessID", "IpAddress", "IpPort", "SourceAddress", "SourcePort",
    "DestAddress", "DestPort", "SourceIp", "DestinationIp", "DestinationPort", "EventType", "Keywords", "host",
    "port", "tags", "@version", "SourceModuleName", "SourceModuleType", "Message",
}
_MESSAGE_KEEP = 2000   # characters of `Message` kept in `raw` (OTRF messages repeat the data fields)


@dataclass
class LogReadReport:
    """What a log read accepted, skipped and rejected; same `to_dict` keys as the flow `ReadReport`, plus log keys."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    time_range: tuple[str, str] | None = None
    unparsed_timestamps: int = 0
    channels: dict[str, int] = field(default_factory=dict)
    event_ids: dict[str, int] = field(default_factory=dict)
    hosts: dict[str, int] = field(default_factory=dict)
    users: int = 0
    damaged_files: dict[str, int] = field(default_factory=dict)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        top = lambda c, k=20: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:k])  # noqa: E731
        return {
            "layout": LOG_LAYOUT,
            "files": list(self.files),
            "records": int(self.records),
            "rejected": int(self.n_rejected),
            "rejected_reasons": top(self.rejected, 100),
            "duplicates": int(self.duplicates),
            "labels": {},
            "time_range": list(self.time_range) if self.time_range else None,
            "unparsed_timestamps": int(self.unparsed_timestamps),
            "entities": {"host": len(self.hosts), "user": int(self.users)},
            "channels": top(self.channels),
            "event_ids": top(self.event_ids),
            "hosts": top(self.hosts),
            "damaged_files": dict(self.damaged_files),
        }


# ----------------------------------------------------------------------------- files
def log_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The log files named, directories walked recursively (sorted); a missing path is an InputError."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(f"no such file or directory: {p}")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_log_file(f))
            if not found:
                raise InputError(f"{p} holds no log files ({', '.join(LOG_SUFFIXES)})")
            files += found
        else:
            files.append(p)
    return files


def is_log_file(path: str | Path) -> bool:
    """An event log by its name, unless it is a connection log (Suricata EVE, Zeek JSON …)."""
    name = Path(path).name.lower()
    if not name.endswith(LOG_SUFFIXES):
        return False
    from deepids.io.connlogs import detect_source

    try:
        return not Path(path).is_file() or detect_source(path) is None
    except DeepidsError:
        return True


def looks_like_logs(paths: Iterable[str | Path]) -> bool:
    """True when the paths name event logs (by suffix, or directories holding them) rather than flow files."""
    for p in map(Path, paths):
        if p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")]
            logs = sum(1 for f in files if is_log_file(f))
            if logs:
                from deepids.io.paths import _is_flow_file_name

                flows = [f for f in files if _is_flow_file_name(f.name) and not is_log_file(f)
                         and f.name != "INDEX.csv"]          # an OTRF dataset's index is not flows
                if flows:
                    raise InputError(f"{p} holds both event logs ({logs} files) and flow files ({len(flows)}, "
                                     f"e.g. {flows[0].name}); give them separately")
            return bool(logs)
        if is_log_file(p):
            return True
    return False


# ---------------------------------------------------------------------------- reading
def read_events(paths: str | Path | Iterable[str | Path], *, keep_raw: bool = True,
                progress: bool = False) -> tuple[pl.DataFrame, LogReadReport]:
    """Read event logs into the canonical table (rows in file order) and the read report."""
    files = log_files(paths)
    report = LogReadReport(files=[str(f) for f in files])
    rows: list[dict] = []
    rejected: Counter = Counter()
    iterator: Iterable[Path] = files
    if progress and len(files) > 1:
        from rich.progress import track

        iterator = track(files, description="reading logs", transient=True)
    for f in iterator:
        before = sum(rejected.values())
        for flat in _flat_records(f, rejected):
            try:
                row = canonical_event(flat, f.name, keep_raw=keep_raw)
            except (TypeError, ValueError, AttributeError, OverflowError, OSError, RecursionError):
                rejected[R_BAD_FIELD] += 1        # e.g. @timestamp 1e20 or NaN: as the live path rejects it
                continue
            if row is None:
                rejected["no event id"] += 1
                continue
            rows.append(row)
        if f.suffix.lower() == ".evtx" and sum(rejected.values()) > before:
            report.damaged_files[str(f)] = sum(rejected.values()) - before
    table = events_frame(rows)
    report.rejected = {k: v for k, v in rejected.items() if v}
    _summarise(table, report)
    return table, report


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


def _summarise(table: pl.DataFrame, report: LogReadReport) -> None:
    report.records = table.height
    if table.height == 0:
        return
    ts = table.get_column("timestamp")
    report.unparsed_timestamps = int(ts.null_count())
    if ts.null_count() < table.height:
        report.time_range = (str(ts.min()), str(ts.max()))
    count = lambda col: {str(k): int(v) for k, v in table.get_column(col).fill_null("?").cast(pl.Utf8)  # noqa: E731
                         .value_counts().iter_rows()}
    report.channels = count("channel")
    report.event_ids = {f"{c}/{e}": int(n) for c, e, n in table.group_by(["channel", "event_id"]).len().iter_rows()}
    report.hosts = count("host")
    report.users = int(table.get_column("user").drop_nulls().n_unique())
    keyed = table.filter(pl.col("record_id").is_not_null())
    report.duplicates = int(keyed.height - keyed.select(["host", "channel", "record_id", "event_id"]).n_unique())


def inspect_logs(paths) -> LogReadReport:
    """The read report of event logs (records, rejections with reasons, channels, event ids, hosts, time range)."""
    return read_events(paths, keep_raw=False)[1]


def _flat_records(path: Path, rejected: Counter) -> Iterator[dict]:
    name = path.name.lower()
    if name.endswith(".evtx"):
        yield from _evtx_records(path, rejected)
    else:
        yield from _jsonl_records(path, rejected)


MAX_LINE_BYTES = 16 << 20      # a longer JSON line is skipped (never held whole) and rejected


def _lines_bounded(fh, limit: int = MAX_LINE_BYTES) -> Iterator[bytes | None]:
    """The lines of a binary file; None for a line over `limit` bytes (its bytes skipped, not held)."""
    while True:
        line = fh.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield None
            continue
        yield line


def _jsonl_records(path: Path, rejected: Counter) -> Iterator[dict]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            # binary lines end at \n only (some Message values hold a bare \r); streamed, not read whole
            for line in _lines_bounded(fh):
                if line is None:
                    rejected["line too long"] += 1
                    continue
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError):       # not JSON, invalid UTF-8, nested too deep
                    rejected["corrupt JSON line"] += 1
                    continue
                if not isinstance(obj, dict):
                    rejected["JSON line is not an object"] += 1
                    continue
                yield flatten_winlogbeat(obj) if isinstance(obj.get("winlog"), dict) else obj
    except (OSError, EOFError) as exc:     # unreadable, or a truncated .gz
        raise InputError(f"cannot read {path}: {exc}") from None


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


def _evtx_records(path: Path, rejected: Counter) -> Iterator[dict]:
    try:
        from evtx import PyEvtxParser
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError("reading .evtx needs the 'evtx' package (pip install evtx)") from None
    try:
        records = PyEvtxParser(str(path)).records_json()
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"{path} is not a readable EVTX file: {exc}") from None
    ids: list[int] = []
    damaged_before = rejected["damaged evtx chunk/record"]
    while True:
        try:
            rec = next(records)
        except StopIteration:
            break
        except (RuntimeError, ValueError, OSError):
            rejected["damaged evtx chunk/record"] += 1   # the parser moves on to the next record/chunk
            continue
        try:
            event = json.loads(rec["data"]).get("Event", {})
        except (ValueError, AttributeError, RecursionError):
            rejected["damaged evtx chunk/record"] += 1
            continue
        if isinstance(rec.get("event_record_id"), int):
            ids.append(rec["event_record_id"])
        yield flatten_evtx(event, rec.get("event_record_id"), rec.get("timestamp"))
    missing = _evtx_missing(path, ids, rejected["damaged evtx chunk/record"] - damaged_before)
    if missing:
        rejected[R_EVTX_MISSING] += missing


R_BAD_FIELD = "a field of the wrong type (e.g. @timestamp out of range)"
R_EVTX_MISSING = "records lost to a truncated or zeroed EVTX file (estimated from its chunk headers)"
_CHUNK, _FILE_HEADER = 65536, 4096


def _evtx_missing(path: Path, ids: list[int], errors: int = 0) -> int:
    """About how many records a truncated or zeroed EVTX file lost (0 when it shows neither).

    The file header says how many 64 KiB chunks follow it; each chunk header says which record
    ids it holds. When chunks are cut off by the end of the file or zeroed, the records the
    intact chunk headers promise beyond those read, plus the mean of a chunk for each chunk
    lost, are counted: their content cannot be known, but their loss is no longer silent.
    Chunk headers that are merely unusual (a dirty or circular log) are not evidence of loss.
    """
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(128)
            if len(head) < 44 or head[:8] != b"ElfFile\x00":
                return 0 if ids else 1
            chunks, = struct.unpack_from("<H", head, 42)
            promised, lost = [], 0
            for i in range(chunks):
                fh.seek(_FILE_HEADER + i * _CHUNK)
                c = fh.read(48)
                if len(c) < 48 or _FILE_HEADER + (i + 1) * _CHUNK > size or not c.strip(b"\x00"):
                    lost += 1                     # cut off by the end of the file, or zeroed
                    if len(c) >= 48 and c[:8] == b"ElfChnk\x00":
                        lost -= 1                 # a cut chunk whose header survived: its ids are known
                        first_id, last_id = struct.unpack_from("<QQ", c, 24)
                        if 0 < last_id - first_id + 1 <= _CHUNK // 24:
                            promised.append(last_id - first_id + 1)
                    continue
                if c[:8] == b"ElfChnk\x00":
                    first_id, last_id = struct.unpack_from("<QQ", c, 24)
                    if 0 < last_id - first_id + 1 <= _CHUNK // 24:
                        promised.append(last_id - first_id + 1)
    except OSError:
        return 0
    if not lost and size >= _FILE_HEADER + chunks * _CHUNK:
        return 0
    mean = round(sum(promised) / len(promised)) if promised else 1
    return max(0, sum(promised) + mean * lost - len(ids) - errors, 1)


def _text(v):
    if isinstance(v, dict):
        return v.get("#text", v.get("#attributes"))
    return v


def flatten_evtx(event: dict, record_id=None, timestamp=None) -> dict:
    """The `evtx` crate's JSON of one record -> the flat NXLog field names."""
    system = event.get("System") or {}
    flat: dict[str, Any] = {}
    for section in ("EventData", "UserData"):
        data = event.get(section)
        if isinstance(data, dict):
            if section == "UserData" and len(data) == 1 and isinstance(next(iter(data.values())), dict):
                data = next(iter(data.values()))
            for k, v in data.items():
                if k == "#attributes":
                    continue
                if k == "Data" and isinstance(v, list):
                    flat["Data"] = " ".join(str(_text(x)) for x in v if x is not None)
                else:
                    flat[k] = _text(v)
    provider = (system.get("Provider") or {}).get("#attributes", {})
    flat["EventID"] = _text(system.get("EventID"))
    flat["Channel"] = system.get("Channel")
    flat["SourceName"] = provider.get("Name")
    flat["Hostname"] = system.get("Computer")
    flat["RecordNumber"] = system.get("EventRecordID", record_id)
    created = (system.get("TimeCreated") or {}).get("#attributes", {}).get("SystemTime")
    flat["@timestamp"] = created or timestamp
    execution = (system.get("Execution") or {}).get("#attributes", {})
    if execution.get("ProcessID") is not None:
        flat["ExecutionProcessID"] = execution["ProcessID"]
    security = (system.get("Security") or {}).get("#attributes", {})
    if security.get("UserID"):
        flat["UserID"] = security["UserID"]
    keywords = system.get("Keywords")
    if isinstance(keywords, str) and keywords.startswith("0x"):
        k = int(keywords, 16)
        if k & 0x10000000000000:
            flat["EventType"] = "AUDIT_FAILURE"
        elif k & 0x20000000000000:
            flat["EventType"] = "AUDIT_SUCCESS"
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
    """One flat record (NXLog field names) -> a canonical event row; None when it has no event id."""
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
        "command_line": _first(flat, "CommandLine") or _host_application(flat),
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
        # epoch seconds; out of range or NaN raises: the record is rejected ("@timestamp",
        # wrong type) by the file readers and the live path alike
        row["timestamp"] = datetime.fromtimestamp(row["timestamp"], tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    elif row["timestamp"] is not None:
        row["timestamp"] = str(row["timestamp"])
    for k in ("src_ip", "dst_ip", "provider", "image", "parent_image", "command_line"):
        if row[k] is not None:
            row[k] = str(row[k])
    if keep_raw:
        rest = {k: v for k, v in flat.items() if k not in _CONSUMED}
        if flat.get("Message"):
            rest["Message"] = str(flat["Message"])[:_MESSAGE_KEEP]
        row["raw"] = json.dumps(rest, default=str, ensure_ascii=False)
    return row


def _host_application(flat: dict) -> str | None:
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


def events_from_records(items) -> tuple[pl.DataFrame, "np.ndarray", list]:
    """Windows events as they arrive (HTTP bodies, NDJSON lines) -> (canonical event table, the input
    position of each row, rejections).

    Each item is a flat NXLog-style object (the OTRF layout) or a nested Winlogbeat / Elastic one
    (``winlog.*``, ``host.name``), flattened as :func:`read_events` flattens them. An item that is
    not a JSON object, has no event id, or is a network flow is rejected with its position, the
    field at fault and the reason (a `deepids.io.records.Rejection`); the rest keep input order.
    """
    import numpy as np

    from deepids.io.records import Rejection, Unparsable, canonical_name
    from deepids.io.schema import FLOW_FEATURES

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
    from deepids.io.records import Rejection

    for k, v in flat.items():
        if k in _CONSUMED and k != "Message" and (isinstance(v, (dict, list, bool)) or
                                                  (isinstance(v, (int, float)) and abs(v) > 2 ** 53)):
            return Rejection(i, f"winlog.event_data.{k}" if nested and k not in _WINLOG_TOP else k, R_WRONG_TYPE_EVENT)
    return Rejection(i, None, R_BAD_EVENT)


R_WRONG_TYPE_EVENT = "wrong type"
_WINLOG_TOP = {"EventID", "Channel", "SourceName", "RecordNumber", "Hostname", "@timestamp", "ExecutionProcessID",
               "EventType"}
