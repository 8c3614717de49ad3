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

Every event becomes one row of :data:`EVENT_COLUMNS` by the rules of :mod:`deepids.io.events`
(the same rules canonicalise events arriving live); the whole flat event is kept as a JSON object
in `raw` (when `keep_raw`; :func:`raw_fields` reads it back). JSON-Lines files are read a block of
lines at a time, the rules applied as polars expressions, with the per-event path for what that
cannot reproduce exactly (:mod:`deepids.io.eventblocks`). Files are read in chunks
(:func:`iter_event_batches`): memory follows the chunk, not the input.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import polars as pl

from deepids.errors import ConfigError, DeepidsError, InputError
from deepids.io.eventblocks import jsonl_pieces
from deepids.io.eventlines import (  # noqa: F401 - the JSON-Lines reasons, importable from here as before
    MAX_LINE_BYTES,
    R_BAD_FIELD,
    R_CORRUPT,
    R_LINE_TOO_LONG,
    R_NOT_OBJECT,
    Piece,
    Reject,
    python_piece,
)
from deepids.io.events import (  # noqa: F401 - the event rules, importable from here as before
    EVENT_COLUMNS,
    EVENT_SCHEMA,
    FAILURE_EVENTS,
    KNOWN_CHANNELS,
    LOGON_EVENTS,
    R_BAD_EVENT,
    R_EVENT_NOT_OBJECT,
    R_FLOW_RECORD,
    R_NO_EVENT_ID,
    canonical_event,
    events_frame,
    events_from_records,
    flatten_winlogbeat,
    normalise_channel,
    normalise_host,
    normalise_user,
    parse_int,
    raw_fields,
)
from deepids.io.report import merge_hashes

LOG_LAYOUT = "windows-events"
LOG_SUFFIXES = (".evtx", ".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")

@dataclass
class LogReadReport:
    """What a log read accepted, skipped and rejected; same `to_dict` keys as the flow `ReadReport`, plus log keys.

    Reports of chunks `merge` exactly: a report carries the distinct users and the hashes of the
    (host, channel, record id, event id) keys it has seen (private, about 8 bytes per event).
    """

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
    _user_names: set | None = field(default=None, repr=False, compare=False)
    _key_hashes: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: a chunk's own report: each row's record number (its position among the records read,
    #: rejected ones included); not kept by `merge`
    numbers: np.ndarray | None = field(default=None, repr=False, compare=False)

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

    def merge(self, other: LogReadReport) -> LogReadReport:
        """A new report covering both (duplicates and distinct users stay exact)."""
        add = lambda a, b: dict(Counter(a) + Counter(b))  # noqa: E731
        users = (self._user_names or set()) | (other._user_names or set())
        a, b = self._key_hashes, other._key_hashes
        duplicates = self.duplicates + other.duplicates
        hashes = a if b is None else b if a is None else None
        if a is not None and b is not None:
            hashes, common = merge_hashes(a, b)
            duplicates += common
        ranges = [r for r in (self.time_range, other.time_range) if r]
        time_range = (min((r[0] for r in ranges), key=datetime.fromisoformat),
                      max((r[1] for r in ranges), key=datetime.fromisoformat)) if ranges else None
        return LogReadReport(
            files=list(self.files) + [f for f in other.files if f not in self.files],
            records=self.records + other.records, rejected=add(self.rejected, other.rejected),
            duplicates=duplicates, time_range=time_range,
            unparsed_timestamps=self.unparsed_timestamps + other.unparsed_timestamps,
            channels=add(self.channels, other.channels), event_ids=add(self.event_ids, other.event_ids),
            hosts=add(self.hosts, other.hosts), users=len(users),
            damaged_files=add(self.damaged_files, other.damaged_files),
            _user_names=users, _key_hashes=hashes)


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
#: events per chunk when reading for scoring: an event row is larger than a flow's (text columns)
EVENT_CHUNK = 10_000
#: lines (at most) parsed at once from a JSON-Lines file, records canonicalised at once from an EVTX file
BLOCK_LINES = 10_000
R_DAMAGED = "damaged evtx chunk/record"


def iter_event_batches(paths: str | Path | Iterable[str | Path], *, batch_size: int = EVENT_CHUNK,
                       keep_raw: bool = False, progress=None
                       ) -> Iterator[tuple[pl.DataFrame, LogReadReport]]:
    """Stream event logs as ``(canonical events, report)`` pairs of at most ``batch_size`` rows, in
    file order. Each report covers its chunk (merge them for totals); the last chunk may be empty
    and carries what was rejected after the last event. Memory follows ``batch_size``.

    JSON-Lines files are read a block of lines at a time (:mod:`deepids.io.eventblocks`); a
    rejection is counted in the chunk being filled when its line is read, as one event at a time
    would count it."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    files = log_files(paths)
    frames: list[pl.DataFrame] = []
    numbers: list[np.ndarray] = []
    rejected: Counter = Counter()       # of the chunk being filled
    pending = LogReadReport()
    filled = 0
    # the caller's progress(files done, files) after each file; the library never draws (not callable: none)
    report_progress = progress if callable(progress) else None
    before = 0                          # records read in the files before this one
    for done, f in enumerate(files, start=1):
        pending.files.append(str(f))
        d0 = sum(rejected.values())
        in_file = 0
        for piece in _pieces(f, keep_raw, min(batch_size, BLOCK_LINES)):
            rejections = iter(piece.rejections)
            nxt = next(rejections, None)
            i, n = 0, piece.table.height
            while i < n:
                take = min(batch_size - filled, n - i)
                last = piece.offsets[i + take - 1]
                while nxt is not None and nxt[0] < last:        # rejected before this chunk's last row
                    rejected[nxt[1]] += nxt[2]
                    nxt = next(rejections, None)
                frames.append(piece.table.slice(i, take))
                numbers.append(piece.offsets[i:i + take] + before)
                filled, i = filled + take, i + take
                if filled >= batch_size:
                    _note_damage(f, sum(rejected.values()) - d0, pending)
                    yield _chunk(frames, rejected, pending, numbers)
                    frames, numbers, rejected, d0, filled = [], [], Counter(), 0, 0
                    pending = LogReadReport(files=[str(f)])
            while nxt is not None:
                rejected[nxt[1]] += nxt[2]
                nxt = next(rejections, None)
            in_file += piece.records
        before += in_file
        _note_damage(f, sum(rejected.values()) - d0, pending)
        if report_progress:
            report_progress(done, len(files))
    yield _chunk(frames, rejected, pending, numbers)


def _note_damage(f: Path, n: int, report: LogReadReport) -> None:
    """An EVTX file's records rejected in this chunk (damaged, or lost to truncation)."""
    if n > 0 and f.suffix.lower() == ".evtx":
        report.damaged_files[str(f)] = n


def _chunk(frames: list[pl.DataFrame], rejected: Counter, report: LogReadReport,
           numbers: list[np.ndarray]) -> tuple[pl.DataFrame, LogReadReport]:
    table = pl.concat(frames) if len(frames) > 1 else frames[0] if frames else events_frame([])
    report.numbers = np.concatenate(numbers) if numbers else np.empty(0, dtype=np.int64)
    report.rejected = {k: v for k, v in rejected.items() if v}
    _summarise(table, report)
    return table, report


def read_events(paths: str | Path | Iterable[str | Path], *, keep_raw: bool = True,
                progress=None) -> tuple[pl.DataFrame, LogReadReport]:
    """Read event logs into the canonical table (rows in file order) and the read report;
    ``progress(files done, files)`` is called after each file."""
    frames: list[pl.DataFrame] = []
    report = LogReadReport()
    for table, part in iter_event_batches(paths, batch_size=1 << 62, keep_raw=keep_raw, progress=progress):
        frames.append(table)
        report = report.merge(part)
    return (pl.concat(frames) if len(frames) > 1 else frames[0]), report


def _summarise(table: pl.DataFrame, report: LogReadReport) -> None:
    report.records = table.height
    report._user_names = set()
    report._key_hashes = np.empty(0, dtype=np.uint64)
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
    report._user_names = set(table.get_column("user").drop_nulls().unique().to_list())
    report.users = len(report._user_names)
    keyed = table.filter(pl.col("record_id").is_not_null()).select(["host", "channel", "record_id", "event_id"])
    h = keyed.hash_rows(seed=0).to_numpy()
    report._key_hashes = np.unique(h)
    report.duplicates = int(h.size - report._key_hashes.size)


def inspect_logs(paths) -> LogReadReport:
    """The read report of event logs (records, rejections with reasons, channels, event ids, hosts, time range)."""
    return read_events(paths, keep_raw=False)[1]


def _pieces(path: Path, keep_raw: bool, block: int) -> Iterator[Piece]:
    """The canonical events of one file, a block at a time, with their record positions and rejections."""
    if path.name.lower().endswith(".evtx"):
        yield from _evtx_pieces(path, keep_raw, block)
    else:
        yield from jsonl_pieces(path, keep_raw, block)


def _evtx_pieces(path: Path, keep_raw: bool, block: int) -> Iterator[Piece]:
    """EVTX records, one event at a time through the rules, in pieces of `block` records."""
    items: list = []
    n = 0
    for item in _evtx_records(path):
        items.append((n, item))
        n += item.count if isinstance(item, Reject) else 1
        if len(items) >= block:
            yield python_piece(items, path.name, keep_raw, [], n - items[0][0])
            items = []
    if items:
        yield python_piece(items, path.name, keep_raw, [], n - items[0][0])


def _evtx_records(path: Path) -> Iterator[dict | Reject]:
    """The flat events of an EVTX file, in order, with a `Reject` for each record lost."""
    try:
        from evtx import PyEvtxParser
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError("reading .evtx needs the 'evtx' package (pip install evtx)") from None
    try:
        records = PyEvtxParser(str(path)).records_json()
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"{path} is not a readable EVTX file: {exc}") from None
    ids: list[int] = []
    damaged = 0
    while True:
        try:
            rec = next(records)
        except StopIteration:
            break
        except (RuntimeError, ValueError, OSError):
            damaged += 1               # the parser moves on to the next record/chunk
            yield Reject(R_DAMAGED)
            continue
        try:
            event = json.loads(rec["data"]).get("Event", {})
        except (ValueError, AttributeError, RecursionError):
            damaged += 1
            yield Reject(R_DAMAGED)
            continue
        if isinstance(rec.get("event_record_id"), int):
            ids.append(rec["event_record_id"])
        yield flatten_evtx(event, rec.get("event_record_id"), rec.get("timestamp"))
    missing = _evtx_missing(path, ids, damaged)
    if missing:
        yield Reject(R_EVTX_MISSING, missing)


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


