"""Alerts in Elastic Common Schema (ECS), and where they go: a file, stdout, or a webhook.

An alert is one NDJSON line a SIEM ingests as it is::

    {"@timestamp": "2017-07-07T15:30:00Z",
     "event": {"kind": "alert", "module": "deepids", "category": ["intrusion_detection"], ...},
     "source": {"ip": ...}, "destination": {"ip": ..., "port": ...},   # flows
     "host": {"name": ...}, "user": {"name": ...},                      # host events
     "deepids": {"score": ..., "threshold": ..., "model": ..., "top_features": [...],
                 "record": {...the original record...}}}

``@timestamp`` is the record's own time when it has one (naive times are written as UTC),
otherwise the time the alert was raised; ``event.created`` is always the time it was raised.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

_TRANSPORT = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp"}
_HOST_KEYS = ("host.name", "hostname", "Computer", "computer_name", "ComputerName", "host")
_USER_KEYS = ("user.name", "TargetUserName", "SubjectUserName", "user", "username", "UserName")


def _utc_iso(dt: datetime) -> str:
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.isoformat(timespec="milliseconds") + "Z"


def _json_safe(obj: Any) -> Any:
    """Make a value JSON-serialisable without NaN/Infinity (written as strings, as CICFlowMeter does)."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, datetime):
        return _utc_iso(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def _lookup(record: dict, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if key in record:
            v = record[key]
        elif "." in key:                       # nested ECS / winlogbeat documents
            v = record
            for part in key.split("."):
                v = v.get(part) if isinstance(v, dict) else None
        else:
            continue
        if isinstance(v, dict):
            v = v.get("name")
        if v not in (None, "") and not isinstance(v, (dict, list)):
            return str(v).strip() or None
    return None


def ecs_alert(record: Any, row: dict, *, score: float, threshold: float, model: str,
              top_features: list[str], record_number: int | None = None,
              now: datetime | None = None) -> dict:
    """One ECS alert document for a record scored above the threshold.

    ``record`` is the record as it arrived, ``row`` its canonical form (``src_ip``, ``dst_ip``,
    ``dst_port``, ``timestamp``, ...).
    """
    now = now or datetime.now(timezone.utc)
    ts = row.get("timestamp")
    doc: dict[str, Any] = {
        "@timestamp": _utc_iso(ts) if isinstance(ts, datetime) else _utc_iso(now),
        "event": {"kind": "alert", "module": "deepids", "dataset": "deepids.alerts",
                  "category": ["intrusion_detection"], "type": ["info"], "created": _utc_iso(now),
                  "risk_score": float(score)},
    }
    source = {k: row[c] for k, c in (("ip", "src_ip"), ("port", "src_port")) if row.get(c) is not None}
    dest = {k: row[c] for k, c in (("ip", "dst_ip"), ("port", "dst_port")) if row.get(c) is not None}
    if source:
        doc["source"] = source
    if dest:
        doc["destination"] = dest
    proto = row.get("protocol")
    if proto is not None:
        doc["network"] = {"iana_number": str(proto), **({"transport": _TRANSPORT[proto]} if proto in _TRANSPORT else {})}
    if "event_id" in row:                      # a Windows event: its canonical host and user
        host, user = row.get("host"), row.get("user")
    elif isinstance(record, dict):
        host, user = _lookup(record, _HOST_KEYS), _lookup(record, _USER_KEYS)
    else:
        host = user = None
    if host:
        doc["host"] = {"name": host}
    if user:
        doc["user"] = {"name": user}
    deepids = {"score": float(score), "threshold": float(threshold), "model": model,
               "top_features": list(top_features), "record": _json_safe(record)}
    if row.get("flow_id"):
        deepids["flow_id"] = row["flow_id"]
    if record_number is not None:              # `record` in score and stream output (here: the record)
        deepids["record_number"] = int(record_number)
    doc["deepids"] = deepids
    return doc


def dumps(doc: dict) -> str:
    return json.dumps(_json_safe(doc), allow_nan=False, separators=(",", ":"))


# --------------------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------------------

_SECRET_PARAMS = ("key", "token", "secret", "password", "passwd", "pass", "auth", "signature", "sig",
                  "credential", "session", "code")


def redact_url(url: str) -> str:
    """`url` with its user info and the values of credential-like query parameters replaced by ``***``."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        query = [(k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v)
                 for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))
    except ValueError:
        return "<unparsable URL>"


class AlertSink(Protocol):
    def emit(self, alerts: list[dict]) -> None: ...

    def close(self) -> dict: ...


class MemorySink:
    """Keeps alerts in a list (`.alerts`), for callers of the Python API and for tests."""

    def __init__(self):
        self.alerts: list[dict] = []

    def emit(self, alerts: list[dict]) -> None:
        self.alerts += alerts

    def close(self) -> dict:
        return {"sink": "memory", "written": len(self.alerts)}


class FileSink:
    """Appends alerts as NDJSON to a file, or writes them to stdout (``-``); flushed per batch."""

    def __init__(self, path: str | Path):
        self.name = str(path)
        if self.name == "-":
            self._fh = sys.stdout
            self._own = False
        else:
            from deepids.atomic import open_append

            self._fh = open_append(path)       # created 0640, never through a symlink
            self._own = True
        self.written = 0

    @property
    def handle(self):
        """The file written (None for stdout), for a stream that checkpoints its outputs."""
        return self._fh if self._own else None

    def emit(self, alerts: list[dict]) -> None:
        if not alerts:
            return
        self._fh.write("".join(dumps(a) + "\n" for a in alerts))
        self._fh.flush()
        self.written += len(alerts)

    def close(self) -> dict:
        if self._own:
            self._fh.close()
        else:
            self._fh.flush()
        return {"sink": self.name, "written": self.written}


class WebhookSink:
    """POSTs alerts as NDJSON to an HTTP endpoint from a background thread.

    Alerts wait in a buffer of at most ``max_buffer``; when the endpoint is down long enough
    for the buffer to fill, the oldest alerts are dropped and counted (``dropped``), so memory
    stays bounded and nothing is lost silently. A failed POST (connection error, timeout, 5xx,
    408, 429) is retried with exponential backoff up to ``max_backoff`` seconds; any other 4xx
    means the endpoint refuses the alerts: they are counted as ``refused``. ``close`` waits up
    to ``close_timeout`` seconds for the buffer to drain; what is left is ``undelivered``.

    With a ``token`` every POST carries ``Authorization: Bearer <token>``. Credentials in the
    URL (``user:pass@``, ``?api_key=...``) are used but never reported: ``close()`` and
    ``last_error`` show the URL redacted.
    """

    def __init__(self, url: str, *, max_buffer: int = 10_000, batch_size: int = 500, timeout: float = 5.0,
                 backoff: float = 0.5, max_backoff: float = 30.0, close_timeout: float = 10.0,
                 headers: dict | None = None, token: str | None = None):
        import httpx

        self.url = url
        self.shown_url = redact_url(url)
        if token:
            headers = {**(headers or {}), "authorization": f"Bearer {token}"}
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.close_timeout = close_timeout
        self.delivered = self.dropped = self.refused = self.failed_posts = self.undelivered = 0
        self.last_error: str | None = None
        self._buf: deque[tuple[int, str]] = deque()
        self._seq = 0
        self._cond = threading.Condition()
        self._closing = False
        self._client = httpx.Client(timeout=timeout, headers={"content-type": "application/x-ndjson",
                                                              **(headers or {})})
        self._thread = threading.Thread(target=self._run, name="deepids-webhook", daemon=True)
        self._thread.start()

    def emit(self, alerts: list[dict]) -> None:
        if not alerts:
            return
        lines = [dumps(a) for a in alerts]
        with self._cond:
            for line in lines:
                if len(self._buf) >= self.max_buffer:
                    self._buf.popleft()
                    self.dropped += 1
                self._seq += 1
                self._buf.append((self._seq, line))
            self._cond.notify()

    def _run(self) -> None:
        import httpx

        delay = self.backoff
        while True:
            with self._cond:
                while not self._buf and not self._closing:
                    self._cond.wait()
                if not self._buf:
                    return
                batch = [self._buf[i] for i in range(min(self.batch_size, len(self._buf)))]
            body = "".join(line + "\n" for _, line in batch)
            retry = False
            try:
                r = self._client.post(self.url, content=body.encode())
                if r.status_code < 300:
                    outcome = "ok"
                elif r.status_code >= 500 or r.status_code in (408, 429):
                    outcome, retry = f"HTTP {r.status_code}", True
                else:
                    outcome = f"refused: HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                outcome, retry = f"{type(exc).__name__}: {str(exc).replace(self.url, self.shown_url)}", True
            last_seq = batch[-1][0]
            with self._cond:
                if not retry:
                    n = 0
                    while self._buf and self._buf[0][0] <= last_seq:
                        self._buf.popleft()
                        n += 1
                    if outcome == "ok":
                        self.delivered += n
                    else:
                        self.refused += n
                        self.last_error = outcome
                    delay = self.backoff
                    continue
                self.failed_posts += 1
                self.last_error = outcome
                if self._closing and time.monotonic() > self._deadline:
                    return
                self._cond.wait(timeout=delay)       # woken early only by close()
                delay = min(delay * 2, self.max_backoff)

    def close(self) -> dict:
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + self.close_timeout
            self._cond.notify_all()
        self._thread.join(self.close_timeout + 1.0)
        with self._cond:
            self.undelivered = len(self._buf)
        self._client.close()
        return {"sink": self.shown_url, "delivered": self.delivered, "dropped": self.dropped, "refused": self.refused,
                "undelivered": self.undelivered, "failed_posts": self.failed_posts, "last_error": self.last_error}
