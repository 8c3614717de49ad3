"""`deepids stream`: score records as they arrive on a file (optionally followed) or stdin.

Lines are read by a background thread into a bounded queue (so a fast producer waits rather
than filling memory), and scored in micro-batches: a batch is scored when it reaches
``batch_size`` lines or when no new line came for ``flush_interval`` seconds, so a quiet
stream still gets its alerts at once. The format is CSV with a header line, or NDJSON (one
JSON object per line), detected from the first non-blank line. Every line read is scored or
rejected with a reason; the summary's counts add up (``read == scored + rejected``).

With a state file (`checkpoint`), a followed file is resumed where the last run stopped: after
each batch the outputs are synced and the position, counts, output sizes and per-entity
history are saved atomically; a restarted run cuts ``--scores``, ``--rejected`` and
``--alerts`` back to the saved sizes and carries on, so each record appears in them exactly
once and the summary counts every record once. Alerts sent to stdout or a webhook are
at-least-once: those of the batch in flight at a crash are sent again, with the same
``deepids.record_key`` (file identity and byte offset of the record) to drop duplicates by.
"""

from __future__ import annotations

import csv
import json
import logging
import queue
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Sequence

from deepids.errors import ConfigError, InputError
from deepids.io.records import CsvLineParser, Unparsable, parse_ndjson
from deepids.serving import checkpoint
from deepids.serving.alerts import AlertSink, dumps, ecs_alert
from deepids.scoring import RECORD
from deepids.serving.follow import EOF, Line, LineReader, LongLine
from deepids.serving.scorer import LiveScorer, ScoredBatch

logger = logging.getLogger(__name__)

FORMATS = ("auto", "csv", "ndjson", "zeek-conn", "zeek-conn-json", "suricata-eve", "nfdump-csv", "nfstream")
R_LONG_LINE = "line too long"


@dataclass
class StreamSummary:
    read: int = 0
    scored: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    alerts: int = 0
    seconds: float = 0.0
    format: str | None = None
    interrupted: bool = False
    sinks: list[dict] = field(default_factory=list)
    state: dict = field(default_factory=dict)
    follow: dict = field(default_factory=dict)     # resume, rotations, truncations, checkpoints
    capture: dict = field(default_factory=dict)    # a packet capture's report (packets, flows, dropped)
    ignored: dict[str, int] = field(default_factory=dict)   # lines of a connection log that are no records

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict:
        return {"records_read": self.read, "records_scored": self.scored, "records_rejected": self.n_rejected,
                "rejected_reasons": dict(sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0]))),
                "alerts": self.alerts,
                "seconds": round(self.seconds, 3), "format": self.format, "interrupted": self.interrupted,
                "sinks": self.sinks, "state": self.state, "follow": self.follow,
                **({"capture": self.capture} if self.capture else {}),
                **({"ignored": dict(self.ignored)} if self.ignored else {})}

    def line(self) -> str:
        text = (f"read {self.read:,} records: scored {self.scored:,}, rejected {self.n_rejected:,}"
                + ("" if not self.rejected else " (" + ", ".join(f"{n:,} {r}" for r, n in
                   sorted(self.rejected.items(), key=lambda kv: -kv[1])) + ")")
                + f"; {self.alerts:,} alerts")
        if self.follow.get("resumed"):
            text += f"; resumed {self.follow['resumed']} (runs: {self.follow.get('runs', 1)})"
        if self.follow.get("truncations"):
            text += (f"; the file was truncated {self.follow['truncations']} time(s): lines written just before "
                     f"a truncation may be only in the rotated copy")
        for s in self.sinks:
            if "delivered" in s:
                text += (f"; webhook: {s['delivered']:,} delivered, {s['dropped']:,} dropped (buffer full), "
                         f"{s['refused']:,} refused, {s['undelivered']:,} undelivered")
        return text


# --------------------------------------------------------------------------------------
# The follower
# --------------------------------------------------------------------------------------

class StreamScorer:
    """Turns lines into records, scores them with a `LiveScorer`, and emits alerts."""

    def __init__(self, scorer: LiveScorer, sinks: Sequence[AlertSink] = (), *, fmt: str = "auto",
                 scores_out: IO[str] | None = None, rejected_out: IO[str] | None = None,
                 model_label: str | None = None):
        if fmt not in FORMATS:
            raise ConfigError(f"unknown input format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.scorer = scorer
        self.sinks = list(sinks)
        self.fmt = fmt
        self.scores_out = scores_out
        self.rejected_out = rejected_out
        self.model_label = model_label or scorer.name
        self.summary = StreamSummary()
        self.header: str | None = None
        self._csv: CsvLineParser | None = None
        self._conn = None       # a connection log (Zeek, Suricata EVE, nfdump, NFStream): io.connlogs.live

    # ------------------------------------------------------------------ state
    def state_doc(self) -> dict:
        s = self.summary
        return {"read": s.read, "scored": s.scored, "rejected": dict(s.rejected), "alerts": s.alerts,
                "format": s.format, "csv_header": self.header,
                **({"conn_header": self._conn.header_lines, "ignored": dict(self._conn.ignored)}
                   if self._conn is not None else {})}

    def restore(self, doc: dict) -> None:
        s = self.summary
        s.read, s.scored, s.alerts = int(doc["read"]), int(doc["scored"]), int(doc["alerts"])
        s.rejected = {str(k): int(v) for k, v in (doc.get("rejected") or {}).items()}
        if doc.get("format"):
            self.fmt = s.format = doc["format"]
            if self.fmt not in ("csv", "ndjson"):
                self._use_conn(self.fmt)
                for line in doc.get("conn_header") or []:
                    self._conn.record(line)
                self._conn.ignored.update(doc.get("ignored") or {})
                self._conn.ignored_changed()
        if doc.get("csv_header"):
            self.header = doc["csv_header"]
            self._csv = _csv_parser(self.header)

    def _use_conn(self, source: str) -> None:
        """Read a connection log: its own line parser and canonicaliser (io.connlogs.live)."""
        from deepids.io.connlogs.live import ConnLineParser

        self._conn = conn = ConnLineParser(source)
        metrics = self.scorer.metrics

        def canonicalise(items):
            canon = conn.canonicalise(items)
            metrics.count_received(len(items))
            if canon.rejected:
                metrics.count_rejected(canon.rejected)
            return canon

        self.scorer.canonicalise = canonicalise

    # ------------------------------------------------------------------ records
    def _records(self, raw: Sequence[Line | LongLine | bytes]) -> tuple[list[Any], list[str | None]]:
        """The batch's records (Unparsable for lines that cannot be) and their record keys."""
        texts: list[str | None] = []
        keys: list[str | None] = []
        for item in raw:
            if isinstance(item, bytes):
                item = Line(item)
            if isinstance(item, LongLine):
                texts.append(None)
                keys.append(None if item.file is None else f"{item.file.key}:{item.end - item.size}")
                continue
            text = item.data.decode("utf-8", "replace").rstrip("\r\n")
            if self.summary.format is None and not texts:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue                          # blank lines are not records (as the readers)
            if self.summary.format is None:
                if self.fmt == "auto":
                    from deepids.io.connlogs import source_of_line

                    self.fmt = source_of_line(text) or ("ndjson" if text.lstrip().startswith(("{", "[")) else "csv")
                self.summary.format = self.fmt
                if self.fmt not in ("csv", "ndjson"):
                    self._use_conn(self.fmt)
                if self.fmt == "csv":
                    self._csv = _csv_parser(text)
                    self.header = text
                    continue
            if self._conn is not None:
                rec = self._conn.record(text)
                if rec is None:
                    continue                      # a header, a directive, another event type, a footer
                texts.append(rec)
            else:
                texts.append(text)
            keys.append(item.key)
        if not texts:
            return [], []
        if self._conn is not None:
            return [Unparsable(R_LONG_LINE) if t is None else t for t in texts], keys
        lines = [t for t in texts if t is not None]
        if self.fmt == "ndjson":
            parsed = parse_ndjson(lines)
        elif self._csv is None:
            parsed = [Unparsable("no CSV header line") for _ in lines]
        else:
            parsed = self._csv.parse(lines)
            if len(parsed) != len(lines):         # a quote left open spans lines: one line at a time
                parsed = [self._csv.parse([t])[0] for t in lines]
        it = iter(parsed)
        return [Unparsable(R_LONG_LINE) if t is None else next(it) for t in texts], keys

    def process(self, raw: Sequence[Line | LongLine | bytes]) -> None:
        """Score one micro-batch of lines."""
        items, keys = self._records(raw)
        if not items:
            return
        self.emit(self.scorer.score(items), items, keys)

    def emit(self, batch: ScoredBatch, items: Sequence[Any] | None = None,
             keys: Sequence[str | None] | None = None) -> None:
        """Count a scored batch, write its scores and rejections, and send its alerts. Records are
        numbered from the start of the stream (`record`, as in `deepids score` output); `keys` are
        their record keys (restarts), `items` the records as they arrived (else the canonical row)."""
        s = self.summary
        first = s.read
        s.read += len(batch.index) + len(batch.rejected)
        s.scored += len(batch.index)
        for r in batch.rejected:
            s.rejected[r.reason] = s.rejected.get(r.reason, 0) + 1

        def keyed(doc: dict, i: int) -> dict:
            if keys is not None and keys[i] is not None:
                doc["record_key"] = keys[i]
            return doc

        if self.rejected_out is not None and batch.rejected:
            self.rejected_out.write("".join(json.dumps(keyed({**r.to_dict(), RECORD: first + r.index}, r.index)) + "\n"
                                            for r in batch.rejected))
            self.rejected_out.flush()
        if self.scores_out is not None and len(batch.index):
            self.scores_out.write("".join(dumps(keyed(doc, int(i))) + "\n"
                                          for doc, i in zip(batch.results(first), batch.index.tolist())))
            self.scores_out.flush()
        flagged = [k for k, a in enumerate(batch.is_anomaly.tolist()) if a]
        if not flagged:
            return
        s.alerts += len(flagged)
        rows = batch.table[flagged].to_dicts()
        now = datetime.now(timezone.utc)
        alerts = []
        for k, row in zip(flagged, rows):
            i = int(batch.index[k])
            alert = ecs_alert(items[i] if items is not None else row, row, score=float(batch.score[k]),
                              threshold=batch.threshold, model=self.model_label, top_features=batch.top_features[k],
                              record_number=first + i, now=now)
            if keys is not None and keys[i] is not None:
                alert["deepids"]["record_key"] = keys[i]
            alerts.append(alert)
        for sink in self.sinks:
            sink.emit(alerts)

    def close(self) -> StreamSummary:
        if self._conn is not None:
            self.summary.ignored = dict(self._conn.ignored)
        self.summary.sinks = [sink.close() for sink in self.sinks]
        self.summary.state = self.scorer.state()
        return self.summary


def _csv_parser(header: str) -> CsvLineParser:
    """The parser of a CSV stream's header line; a line that cannot be one is an InputError."""
    if "\x00" in header:
        raise InputError("the first line holds NUL bytes: the input is not CSV or NDJSON text")
    if "\r" in header.rstrip("\r"):
        raise InputError("the first line holds a bare carriage return (CR): lines must end with LF or CRLF")
    try:
        return CsvLineParser(header)
    except csv.Error as exc:
        raise InputError(f"the first line is not a CSV header ({exc})") from None


class _Checkpointer:
    """Saves where the stream is after each batch, and restores it at start (see `checkpoint`)."""

    def __init__(self, path: Path | None, source: str | Path, follower: StreamScorer, outputs: dict):
        self.path = path
        self.source = str(Path(source).resolve()) if str(source) != "-" else "-"
        self.follower = follower
        self.outputs = {k: v for k, v in outputs.items() if v is not None}
        self.position: tuple[Any, int] | None = None
        self.runs = 1
        self.saved = 0
        self.info: dict = {}

    def load(self) -> tuple | None:
        """The (FileId, offset) to resume at, after restoring counts, history and outputs."""
        from deepids.serving.follow import FileId

        if self.path is None:
            return None
        if self.source == "-":
            raise ConfigError("a stream state needs a file to follow, not stdin")
        loaded = checkpoint.load_state(self.path)
        if loaded is None:
            return None
        doc, tensors = loaded
        if doc.get("source") != self.source:
            raise ConfigError(f"the stream state {self.path} belongs to {doc.get('source')}, not {self.source}; "
                              f"give another --state")
        self.follower.restore(doc)
        restored = checkpoint.restore_histories(self.follower.scorer.history, doc, tensors)
        cut = checkpoint.cut_back(self.outputs, doc.get("outputs") or {})
        self.runs = int(doc.get("runs", 1)) + 1
        self.info = {"entities_restored": restored, "output_bytes_cut_back": cut}
        if not doc.get("file"):
            return None
        self.position = (FileId.from_dict(doc["file"]), int(doc["offset"]))
        return self.position

    def advance(self, batch: Sequence[Line | LongLine]) -> None:
        last = batch[-1] if batch else None
        if last is not None and getattr(last, "file", None) is not None:
            self.position = (last.file, last.end)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        doc = dict(self.follower.state_doc(), source=self.source, runs=self.runs,
                   outputs=checkpoint.output_sizes(self.outputs))
        if self.position is not None:
            doc["file"], doc["offset"] = self.position[0].to_dict(), self.position[1]
        checkpoint.save_state(self.path, doc, self.follower.scorer.history)
        self.saved += 1


def run_stream(scorer: LiveScorer, source: str | Path, sinks: Sequence[AlertSink] = (), *, follow: bool = False,
               fmt: str = "auto", batch_size: int = 1000, flush_interval: float = 0.5,
               scores_out: IO[str] | None = None, rejected_out: IO[str] | None = None,
               stop: threading.Event | None = None, stdin: IO[bytes] | None = None,
               poll_interval: float = 0.2, model_label: str | None = None,
               state_path: str | Path | None = None, max_line_bytes: int | None = None) -> StreamSummary:
    """Follow `source` (a path or ``-`` for stdin) and score until the input ends, `stop` is set,
    or KeyboardInterrupt; then flush what was read and return the summary.

    With `state_path` the run resumes where the last one with that state stopped, and saves
    its position after every batch (see the module's docstring).
    """
    from deepids.io.pcap import is_capture
    from deepids.serving.follow import DEFAULT_MAX_LINE

    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if str(source) != "-" and Path(source).is_file() and is_capture(source):
        if follow:
            raise InputError(f"{source} is a packet capture; --follow needs a text file")
        return stream_capture(scorer, source, sinks, batch_size=batch_size, scores_out=scores_out,
                              rejected_out=rejected_out, stop=stop, model_label=model_label)
    follower = StreamScorer(scorer, sinks, fmt=fmt, scores_out=scores_out, rejected_out=rejected_out,
                            model_label=model_label)
    outputs = {"scores": scores_out, "rejected": rejected_out,
               **{f"alerts{i}": getattr(s, "handle", None) for i, s in enumerate(sinks)}}
    saver = _Checkpointer(Path(state_path) if state_path is not None else None, source, follower, outputs)
    resume = saver.load()
    reader = LineReader(source, follow=follow, poll_interval=poll_interval, stdin=stdin,
                        max_queued_lines=max(10 * batch_size, 10_000), resume=resume,
                        max_line_bytes=max_line_bytes or DEFAULT_MAX_LINE)

    def flush(batch: list) -> None:
        follower.process(batch)
        saver.advance(batch)

    started = time.perf_counter()
    pending: list = []
    stop = stop or threading.Event()
    reader.start()
    try:
        try:
            with _interrupt_sets(stop):
                while not stop.is_set():
                    try:
                        item = reader.lines.get(timeout=flush_interval if pending else min(flush_interval, 0.2))
                    except queue.Empty:
                        if pending:
                            batch, pending = pending, []      # out of `pending` first: scored once
                            flush(batch)
                        continue
                    if item is EOF:
                        break
                    pending.append(item)
                    if len(pending) >= batch_size:
                        batch, pending = pending, []
                        flush(batch)
        except KeyboardInterrupt:
            follower.summary.interrupted = True
        if stop.is_set():
            follower.summary.interrupted = True
        reader.stop()
        pending += _already_read(reader)            # scored, not dropped
        for start in range(0, len(pending), batch_size):
            flush(pending[start:start + batch_size])
        pending = []
    finally:
        follower.summary.seconds = time.perf_counter() - started
        summary = follower.close()
        summary.follow = _follow_info(saver, reader)
    _raise_reader_error(reader, source)
    return summary


def _already_read(reader: LineReader) -> list:
    """The lines the reader queued and the loop had not taken yet."""
    out = []
    while True:
        try:
            item = reader.lines.get_nowait()
        except queue.Empty:
            return out
        if item is not EOF:
            out.append(item)


def _follow_info(saver: "_Checkpointer", reader: LineReader) -> dict:
    info = {"state": str(saver.path) if saver.path else None, "runs": saver.runs if saver.path else None,
            "resumed": reader.resumed, "rotations": reader.rotations, "truncations": reader.truncations,
            "checkpoints": saver.saved, **saver.info}
    return {k: v for k, v in info.items() if v not in (None, {}, 0) or k == "truncations"}


def _raise_reader_error(reader: LineReader, source) -> None:
    """What stopped the reader, as the caller should see it (a read error: one line)."""
    error = reader.error
    if error is None or isinstance(error, KeyboardInterrupt):
        return
    if isinstance(error, (InputError, ConfigError)):
        raise error
    if isinstance(error, OSError):
        raise InputError(f"cannot read {source}: {error}") from None
    raise error


@contextmanager
def _interrupt_sets(stop: threading.Event):
    """While scoring, Ctrl-C (SIGINT) sets `stop`: the batch being scored is finished and counted
    once, then the stream stops (a KeyboardInterrupt raised inside a batch left it half counted,
    and scored again). A second Ctrl-C interrupts at once, as usual. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGINT, previous)
        stop.set()

    previous = signal.getsignal(signal.SIGINT) or signal.default_int_handler
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stream_capture(scorer: LiveScorer, path: str | Path, sinks: Sequence[AlertSink] = (), *, batch_size: int = 1000,
                   scores_out: IO[str] | None = None, rejected_out: IO[str] | None = None,
                   stop: threading.Event | None = None, model_label: str | None = None) -> StreamSummary:
    """Score a packet capture's flows as they end: packets -> flows (deepids.io.flowmeter, memory
    following the open flows) -> canonical flow tables -> the scorer, with no text in between.
    Flows are numbered in the order the meter emits them (start time), as `deepids score` does."""
    import numpy as np

    from deepids.io.flowmeter import FlowMeterReport, iter_capture_flows
    from deepids.io.pcap import CaptureReport
    from deepids.io.records import CanonicalRecords

    follower = StreamScorer(scorer, sinks, fmt="ndjson", scores_out=scores_out, rejected_out=rejected_out,
                            model_label=model_label)
    follower.summary.format = "pcap"
    meter = FlowMeterReport(capture=CaptureReport(path=str(path)))
    stop = stop or threading.Event()
    started = time.perf_counter()
    try:
        for flows in iter_capture_flows(path, report=meter):
            for start in range(0, flows.height, batch_size):
                part = flows.slice(start, batch_size)
                scorer.metrics.count_received(part.height)
                follower.emit(scorer.score_canonical(CanonicalRecords(part, np.arange(part.height))))
            if stop.is_set():
                follower.summary.interrupted = True
                break
    except KeyboardInterrupt:
        follower.summary.interrupted = True
    finally:
        follower.summary.seconds = time.perf_counter() - started
        summary = follower.close()
    logger.info("%s", meter.line())
    summary.capture = meter.to_dict()
    return summary
