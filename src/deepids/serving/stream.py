"""`deepids stream`: score records as they arrive on a file (optionally followed) or stdin.

Lines are read by a background thread into a bounded queue (so a fast producer waits rather
than filling memory), and scored in micro-batches: a batch is scored when it reaches
``batch_size`` lines or when no new line came for ``flush_interval`` seconds, so a quiet
stream still gets its alerts at once. The format is CSV with a header line, or NDJSON (one
JSON object per line), detected from the first non-blank line. Every line read is scored or
rejected with a reason; the summary's counts add up (``read == scored + rejected``).
"""

from __future__ import annotations

import gzip
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Sequence

from deepids.errors import ConfigError, InputError
from deepids.io.records import CsvLineParser, parse_ndjson
from deepids.serving.alerts import AlertSink, dumps, ecs_alert
from deepids.scoring import RECORD
from deepids.serving.scorer import LiveScorer, ScoredBatch

FORMATS = ("auto", "csv", "ndjson")
_EOF = object()


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

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict:
        return {"records_read": self.read, "records_scored": self.scored, "records_rejected": self.n_rejected,
                "rejected_reasons": dict(sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0]))),
                "alerts": self.alerts,
                "seconds": round(self.seconds, 3), "format": self.format, "interrupted": self.interrupted,
                "sinks": self.sinks, "state": self.state}

    def line(self) -> str:
        text = (f"read {self.read:,} records: scored {self.scored:,}, rejected {self.n_rejected:,}"
                + ("" if not self.rejected else " (" + ", ".join(f"{n:,} {r}" for r, n in
                   sorted(self.rejected.items(), key=lambda kv: -kv[1])) + ")")
                + f"; {self.alerts:,} alerts")
        for s in self.sinks:
            if "delivered" in s:
                text += (f"; webhook: {s['delivered']:,} delivered, {s['dropped']:,} dropped (buffer full), "
                         f"{s['refused']:,} refused, {s['undelivered']:,} undelivered")
        return text


# --------------------------------------------------------------------------------------
# Line sources
# --------------------------------------------------------------------------------------

class LineReader:
    """Reads lines from a file (optionally following it as it grows) or stdin into a bounded queue.

    Following survives truncation (reads again from the start) and rotation (a new file at the
    same path is opened). A partial last line is held back until its newline arrives, or until
    the end of input when not following.
    """

    def __init__(self, source: str | Path, *, follow: bool = False, poll_interval: float = 0.2,
                 max_queued_lines: int = 50_000, stdin: IO[bytes] | None = None):
        self.source = str(source)
        self.follow = follow
        self.poll_interval = poll_interval
        self.lines: queue.Queue = queue.Queue(maxsize=max_queued_lines)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._stdin = stdin
        if self.source != "-":
            p = Path(self.source)
            if not p.exists():
                raise InputError(f"{p}: no such file")
            if not p.is_file():
                raise InputError(f"{p} is not a regular file")
        self._thread = threading.Thread(target=self._run, name="deepids-stream-reader", daemon=True)

    def start(self) -> "LineReader":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _put(self, line: bytes) -> bool:
        while not self._stop.is_set():
            try:
                self.lines.put(line, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            if self.source == "-" and self._stdin is not None:
                self._read_stream(self._stdin)
            elif self.source == "-":
                self._read_fd(sys.stdin.fileno())
            else:
                self._read_file(Path(self.source))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self.error = exc
        finally:
            while True:
                try:
                    self.lines.put(_EOF, timeout=0.2)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        try:
                            self.lines.get_nowait()
                        except queue.Empty:
                            pass

    def _read_stream(self, fh) -> None:
        while not self._stop.is_set():
            line = fh.readline()
            if not line:
                return
            if not self._put(line):
                return

    def _read_fd(self, fd: int) -> None:
        """Raw reads from a descriptor (no buffered-reader lock held by this daemon thread at exit)."""
        rest = b""
        while not self._stop.is_set():
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            rest += chunk
            *complete, rest = rest.split(b"\n")
            for line in complete:
                if not self._put(line + b"\n"):
                    return
        if rest and not self._stop.is_set():
            self._put(rest)

    def _read_file(self, path: Path) -> None:
        from deepids.io.flowmeter import capture_lines
        from deepids.io.pcap import is_capture

        if is_capture(path):             # a packet capture: its flows, as CSV lines
            if self.follow:
                raise InputError(f"{path} is a packet capture; --follow needs a text file")
            for line in capture_lines(path):
                if not self._put(line):
                    return
            return
        with open(path, "rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
        if gz:
            if self.follow:
                raise InputError(f"{path} is gzip-compressed; --follow needs a plain text file")
            with gzip.open(path, "rb") as fh:
                self._read_stream(fh)
            return
        fh = open(path, "rb")
        try:
            inode = os.fstat(fh.fileno()).st_ino
            rest = b""
            while not self._stop.is_set():
                chunk = fh.read(1 << 16)
                if chunk:
                    rest += chunk
                    *complete, rest = rest.split(b"\n")
                    for line in complete:
                        if not self._put(line + b"\n"):
                            return
                    continue
                if not self.follow:
                    break
                # at the end: wait for more, and notice truncation or rotation
                time.sleep(self.poll_interval)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue                      # rotated away; wait for the new file
                if st.st_ino != inode:
                    fh.close()
                    fh = open(path, "rb")
                    inode = os.fstat(fh.fileno()).st_ino
                    rest = b""
                elif st.st_size < fh.tell():
                    fh.seek(0)
                    rest = b""
            if rest and not self._stop.is_set():
                self._put(rest)
        finally:
            fh.close()


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
        self._csv: CsvLineParser | None = None

    def _decide_format(self, line: str) -> None:
        if self.fmt == "auto":
            self.fmt = "ndjson" if line.lstrip().startswith(("{", "[")) else "csv"
        self.summary.format = self.fmt

    def _items(self, lines: list[str]) -> list[Any]:
        items: list[Any] = []
        if self.summary.format is None:
            lines = [ln for ln in lines if ln.strip()]
            if not lines:
                return []
            self._decide_format(lines[0])
            if self.fmt == "csv":
                self._csv = CsvLineParser(lines[0])
                lines = lines[1:]
        if self.fmt == "ndjson":
            return parse_ndjson(lines)
        lines = [ln for ln in lines if ln.strip()]      # blank lines are not records (as the readers)
        if self._csv is None:
            return items
        return self._csv.parse(lines)

    def process(self, raw_lines: list[bytes]) -> None:
        """Score one micro-batch of raw lines."""
        lines = [b.decode("utf-8", "replace").rstrip("\r\n") for b in raw_lines]
        if self.summary.format is None and lines:
            lines[0] = lines[0].lstrip("\ufeff")
        items = self._items(lines)
        if not items:
            return
        self.emit(self.scorer.score(items), items)

    def emit(self, batch: ScoredBatch, items: Sequence[Any] | None = None) -> None:
        """Count a scored batch, write its scores and rejections, and send its alerts. Records are
        numbered from the start of the stream (`record`, as in `deepids score` output)."""
        s = self.summary
        first = s.read
        s.read += len(batch.index) + len(batch.rejected)
        s.scored += len(batch.index)
        for r in batch.rejected:
            s.rejected[r.reason] = s.rejected.get(r.reason, 0) + 1
        if self.rejected_out is not None and batch.rejected:
            self.rejected_out.write("".join(json.dumps({**r.to_dict(), RECORD: first + r.index}) + "\n"
                                            for r in batch.rejected))
            self.rejected_out.flush()
        if self.scores_out is not None and len(batch.index):
            self.scores_out.write("".join(dumps(r) + "\n" for r in batch.results(first)))
            self.scores_out.flush()
        flagged = [k for k, a in enumerate(batch.is_anomaly.tolist()) if a]
        if not flagged:
            return
        s.alerts += len(flagged)
        rows = batch.table[flagged].to_dicts()
        now = datetime.now(timezone.utc)
        alerts = [ecs_alert(items[int(batch.index[k])] if items is not None else row, row,
                            score=float(batch.score[k]), threshold=batch.threshold, model=self.model_label,
                            top_features=batch.top_features[k], record_number=first + int(batch.index[k]), now=now)
                  for k, row in zip(flagged, rows)]
        for sink in self.sinks:
            sink.emit(alerts)

    def close(self) -> StreamSummary:
        self.summary.sinks = [sink.close() for sink in self.sinks]
        self.summary.state = self.scorer.state()
        return self.summary


def run_stream(scorer: LiveScorer, source: str | Path, sinks: Sequence[AlertSink] = (), *, follow: bool = False,
               fmt: str = "auto", batch_size: int = 1000, flush_interval: float = 0.5,
               scores_out: IO[str] | None = None, rejected_out: IO[str] | None = None,
               stop: threading.Event | None = None, stdin: IO[bytes] | None = None,
               poll_interval: float = 0.2, model_label: str | None = None) -> StreamSummary:
    """Follow `source` (a path or ``-`` for stdin) and score until the input ends, `stop` is set,
    or KeyboardInterrupt; then flush what was read and return the summary."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    reader = LineReader(source, follow=follow, poll_interval=poll_interval, stdin=stdin,
                        max_queued_lines=max(10 * batch_size, 10_000))
    follower = StreamScorer(scorer, sinks, fmt=fmt, scores_out=scores_out, rejected_out=rejected_out,
                            model_label=model_label)
    started = time.perf_counter()
    pending: list[bytes] = []
    stop = stop or threading.Event()
    reader.start()
    try:
        try:
            ended = False
            while not ended and not stop.is_set():
                try:
                    item = reader.lines.get(timeout=flush_interval if pending else min(flush_interval, 0.2))
                except queue.Empty:
                    if pending:
                        follower.process(pending)
                        pending = []
                    continue
                if item is _EOF:
                    ended = True
                    break
                pending.append(item)
                if len(pending) >= batch_size:
                    follower.process(pending)
                    pending = []
        except KeyboardInterrupt:
            follower.summary.interrupted = True
        if stop.is_set():
            follower.summary.interrupted = True
        reader.stop()
        # what was already read is scored, not dropped
        while True:
            try:
                item = reader.lines.get_nowait()
            except queue.Empty:
                break
            if item is not _EOF:
                pending.append(item)
        for start in range(0, len(pending), batch_size):
            follower.process(pending[start:start + batch_size])
        pending = []
    finally:
        follower.summary.seconds = time.perf_counter() - started
        summary = follower.close()
    if reader.error is not None and not isinstance(reader.error, KeyboardInterrupt):
        if isinstance(reader.error, (InputError, ConfigError)):
            raise reader.error
        if isinstance(reader.error, OSError):
            raise InputError(f"cannot read {source}: {reader.error}") from None
        raise reader.error
    return summary
