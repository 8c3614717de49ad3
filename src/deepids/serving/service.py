"""`deepids serve`: an HTTP scoring service (FastAPI + uvicorn).

Endpoints
---------
- ``POST /v1/score``: a JSON array of records, one JSON object, or NDJSON (one record per
  line). The answer lists every record: ``results`` (``record``, ``score``, ``threshold``,
  ``is_anomaly``, ``top_features``: the score frame's names, `deepids.scoring.SCORE_FIELDS`) for
  those scored and ``rejected`` (``record``, ``field``, ``reason``) for those refused;
  ``record`` is the record's position in the body, from 0. Status 200 when at least one record was scored, 422 when
  every record was refused (same body), 400 for a body that is empty, holds no record, or is
  neither JSON nor NDJSON, 408 for a body not received within ``body_timeout`` seconds, 413
  for a body over ``max_body_bytes`` (refused on its announced length, or as soon as the bytes
  received pass it), and 503 with ``Retry-After`` when the server is saturated; nothing of a
  503'd request was scored, so it can be sent again as it is. A request that finds the
  scoring queue full, or the bodies being read and parsed holding ``max_inflight_bytes``, is
  refused before its body is read (a chunked body, as soon as its bytes pass the budget),
  counted in ``deepids_requests_refused_unread_total{reason=...}``; one whose records find no
  room in the queue after parsing has them counted as rejected, ``reason="overloaded"``.
- ``GET /healthz`` (always open), ``GET /v1/model`` (the model's metadata, file paths reduced
  to file names), ``GET /metrics`` (Prometheus, with the process metrics).
- ``GET /docs`` (documentation rendered on the server, nothing fetched from the internet) and
  ``/openapi.json``, unless ``docs=False``.

With a ``token`` every route but ``/healthz`` needs ``Authorization: Bearer <token>``; others
get 401, counted in ``deepids_requests_unauthorized_total`` (see `serving.security`).

Micro-batching (`serving.batcher`): an idle server scores a lone request at once, so a
single-record request does not wait for company; a request of a few records that finds the
server idle is scored on the event loop itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from starlette.responses import HTMLResponse, Response

from deepids.errors import DeepidsError
from deepids.io.records import CanonicalRecords, Unparsable, loads_json, parse_ndjson
from deepids.serving.batcher import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, MicroBatcher
from deepids.serving.metrics import CONTENT_TYPE
from deepids.serving.scorer import R_OVERLOADED, LiveScorer, ScoredBatch
from deepids.serving.security import BearerTokenGuard, docs_html, without_paths

log = logging.getLogger(__name__)

R_SCORING_FAILED = "scoring failed"
R_QUEUE_TIMEOUT = "waited too long in the queue"
R_QUEUE_FULL = "queue full"
R_INFLIGHT = "bodies in flight"
DEFAULT_MAX_BODY = 16 << 20
DEFAULT_MAX_INFLIGHT = 64 << 20
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_QUEUE_TIMEOUT = 10.0
_THREAD_PARSE_BYTES = 64 << 10
_INLINE_RECORDS = 16        # an idle server scores requests this small on the event loop
STATUS_CLIENT_GONE = 499    # the client closed the connection before its answer (nginx's code)


class BodyError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def parse_body(body: bytes, content_type: str = "") -> list[Any]:
    """A request body -> list of items (records, or `Unparsable` for NDJSON lines that are not JSON).

    A JSON array gives its elements; a JSON object is one record; anything else is read as
    NDJSON. Raises BodyError(400) for an empty body, a body without records, or one that is
    neither JSON nor NDJSON.
    """
    if not body or not body.strip():
        raise BodyError(400, "empty body: send a JSON array of records, or NDJSON (one record per line)")
    data = body[3:] if body.startswith(b"\xef\xbb\xbf") else body
    ndjson_declared = "ndjson" in content_type or "jsonl" in content_type or "json-seq" in content_type
    if not ndjson_declared:
        try:
            doc = loads_json(data)
        except (ValueError, RecursionError):
            doc = _NOT_JSON
        if doc is not _NOT_JSON:
            if isinstance(doc, list):
                if not doc:
                    raise BodyError(400, "the JSON array holds no record")
                return doc
            if isinstance(doc, dict):
                return [doc]
            raise BodyError(400, f"the body is a JSON {_json_type(doc)}, not a record or an array of records")
    items = parse_ndjson(data)
    if not items:
        raise BodyError(400, "the body holds no record")
    if all(isinstance(i, Unparsable) for i in items):
        raise BodyError(400, "the body is neither JSON nor NDJSON (no line parses as JSON)")
    return items


_NOT_JSON = object()


def _json_type(doc: Any) -> str:
    if isinstance(doc, bool):
        return "boolean"
    if isinstance(doc, (int, float)) or doc in ("NaN", "Infinity", "-Infinity"):
        return "number"
    return {str: "string", type(None): "null"}.get(type(doc), type(doc).__name__)



def _json_response(payload: Any, status: int = 200, headers: dict | None = None) -> Response:
    # orjson writes non-finite floats as null; scores are made JSON-safe before this anyway
    return Response(orjson.dumps(payload), status_code=status, headers=headers, media_type="application/json")


class _Inflight:
    """Bytes of request bodies being read or parsed (the event loop is single-threaded)."""

    bytes: int = 0


@dataclass(frozen=True)
class Limits:
    """What one request, and all of them together, may hold."""

    max_body_bytes: int = DEFAULT_MAX_BODY
    max_queue_records: int = DEFAULT_MAX_QUEUE
    max_batch_records: int = DEFAULT_MAX_BATCH
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    retry_after: int = 1
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT


class _Refused(Exception):
    """A request answered before its records were scored."""

    def __init__(self, response: Response):
        self.response = response


class ScoreHandler:
    """``POST /v1/score``: admit, read, parse and canonicalise, queue, score, answer.

    Memory is bounded by three limits: one body (`max_body_bytes`, else 413), the bodies being
    read and parsed at once (`max_inflight_bytes`: a request arriving while they hold it gets
    503 before its body is read), and the records waiting to be scored (`max_queue_records`:
    503 after parsing, its records counted as rejected, reason "overloaded"). A body that
    does not arrive within `body_timeout` seconds gets 408, so stalled uploads hold nothing
    for long. Records still waiting in the queue after `queue_timeout` seconds are taken out
    unscored (503, counted as rejected, reason "waited too long in the queue"); records
    already being scored are answered (a batch holds at most `max_batch_records`).
    """

    def __init__(self, scorer: LiveScorer, batcher: MicroBatcher, limits: Limits, inflight: _Inflight):
        self.scorer = scorer
        self.batcher = batcher
        self.limits = limits
        self.inflight = inflight
        self.metrics = scorer.metrics

    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await self._answer(request)
            status = response.status_code
            return response
        except ClientDisconnect:
            status = STATUS_CLIENT_GONE         # nobody to answer; counted, not a server error
            return Response(status_code=STATUS_CLIENT_GONE)
        finally:
            self.metrics.observe_request(status, time.perf_counter() - started)

    def _busy(self, why: str, unread: bool = False) -> Response:
        retry = self.limits.retry_after
        headers = {"Retry-After": str(retry)}
        if unread:          # close rather than read and throw away a body we refused
            headers["Connection"] = "close"
        return _json_response({"detail": f"{why}; retry after {retry} s. Nothing of this request was scored.",
                               "retry_after": retry}, 503, headers=headers)

    async def _answer(self, request: Request) -> Response:
        try:
            body = await self._read_body(request)
            canon = await self._canonicalise(body, request.headers.get("content-type", "").lower())
        except _Refused as refused:
            return refused.response
        rejected = [r.to_dict() for r in canon.rejected]
        if canon.table.height == 0:
            return _json_response({"results": [], "rejected": rejected, "scored": 0, "n_rejected": len(rejected),
                                   "detail": "no record could be scored; see rejected"}, 422)
        try:
            score_, flagged, top = await self._score(canon)
        except _Refused as refused:
            return refused.response
        batch = ScoredBatch(canon.index, score_, flagged, top, self.scorer.threshold, canon.table, canon.rejected)
        results = batch.results()
        return _json_response({"results": results, "rejected": rejected, "scored": len(results),
                               "n_rejected": len(rejected), "alerts": int(np.count_nonzero(flagged))})

    def _admit(self, request: Request) -> int:
        """The announced body length, once the request may be read; raises _Refused otherwise."""
        lim, length = self.limits, request.headers.get("content-length")
        expected = 0
        if length is not None:
            try:
                expected = int(length)
            except ValueError:
                raise _Refused(_json_response({"detail": "invalid Content-Length header"}, 400)) from None
            if expected < 0:
                raise _Refused(_json_response({"detail": "invalid Content-Length header"}, 400))
            if expected > lim.max_body_bytes:
                raise _Refused(_json_response({"detail": f"body of {length} bytes is over the limit of "
                                                         f"{lim.max_body_bytes} bytes; split it"}, 413,
                                              headers={"Connection": "close"}))
        if self.batcher.depth >= lim.max_queue_records:
            # the queue is full: refuse before reading and parsing, which is most of a record's cost
            self.metrics.count_refused(R_QUEUE_FULL)
            raise _Refused(self._busy(f"the scoring queue is full ({self.batcher.depth} records waiting)",
                                      unread=True))
        if self.inflight.bytes > 0 and self.inflight.bytes + expected > lim.max_inflight_bytes:
            # bodies being read or parsed already hold the memory budget: refuse before reading
            self.metrics.count_refused(R_INFLIGHT)
            raise _Refused(self._busy(f"the server is reading {self.inflight.bytes} bytes of other requests",
                                      unread=True))
        return expected

    async def _read_body(self, request: Request) -> bytes:
        """The whole body, counted in the in-flight bytes as it arrives (released by `_canonicalise`)."""
        self._admit(request)
        lim = self.limits
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(lim.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    self.inflight.bytes += len(chunk)
                    chunks.append(chunk)
                    if size > lim.max_body_bytes:
                        raise _Refused(_json_response({"detail": f"body is over the limit of {lim.max_body_bytes} "
                                                                 f"bytes; split it"}, 413,
                                                      headers={"Connection": "close"}))
                    if self.inflight.bytes > lim.max_inflight_bytes and self.inflight.bytes > size:
                        # a chunked upload has no announced length: it is refused once it passes the budget
                        self.metrics.count_refused(R_INFLIGHT)
                        raise _Refused(self._busy(f"the server is reading {self.inflight.bytes} bytes of "
                                                  f"request bodies", unread=True))
        except TimeoutError:
            self.inflight.bytes -= size
            raise _Refused(_json_response({"detail": f"the body did not arrive within {lim.body_timeout:g} s"},
                                          408, headers={"Connection": "close"})) from None
        except BaseException:
            self.inflight.bytes -= size
            raise
        return b"".join(chunks)

    async def _canonicalise(self, body: bytes, ctype: str) -> CanonicalRecords:
        held = len(body)
        try:
            if held > _THREAD_PARSE_BYTES:
                return await asyncio.get_running_loop().run_in_executor(
                    self.batcher.parser, _parse_and_canonicalise, self.scorer, body, ctype)
            return _parse_and_canonicalise(self.scorer, body, ctype)
        except BodyError as exc:
            raise _Refused(_json_response({"detail": exc.detail}, exc.status)) from None
        finally:
            self.inflight.bytes -= held

    async def _score(self, canon: CanonicalRecords):
        batcher, metrics = self.batcher, self.metrics
        inline = batcher.idle() and canon.table.height <= _INLINE_RECORDS
        fut = None if inline else batcher.submit(canon.table)
        if fut is None and not inline:
            metrics.count_rejected({R_OVERLOADED: canon.table.height})
            raise _Refused(self._busy(f"the scoring queue is full ({batcher.depth} records waiting)"))
        try:
            if inline:
                # nothing queued or being scored: a few records are scored right here, sparing
                # two thread hand-offs (each a wait for a core on a busy host)
                return self.scorer.score_table(canon.table)
            return await self._wait(fut, canon.table.height)
        except _Refused:
            raise
        except DeepidsError as exc:
            metrics.count_rejected({R_SCORING_FAILED: canon.table.height})
            raise _Refused(_json_response({"detail": str(exc)}, 422)) from None
        except Exception as exc:  # noqa: BLE001 - answered, counted, and the server goes on
            log.exception("scoring failed")
            metrics.count_rejected({R_SCORING_FAILED: canon.table.height})
            raise _Refused(_json_response({"detail": f"scoring failed: {type(exc).__name__}"}, 500)) from None


    async def _wait(self, fut: asyncio.Future, n: int):
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.limits.queue_timeout)
        except TimeoutError:
            if self.batcher.withdraw(fut):
                self.metrics.count_rejected({R_QUEUE_TIMEOUT: n})
                raise _Refused(self._busy(f"the records waited {self.limits.queue_timeout:g} s in the "
                                          f"scoring queue")) from None
            return await fut                # being scored already: its batch is bounded


R_TOO_MANY = "too many requests"


class RequestLimit:
    """ASGI middleware: at most `limit` HTTP requests in progress; more get 503 with Retry-After,
    counted in ``deepids_requests_refused_unread_total{reason="too many requests"}`` (uvicorn's own
    connection limit, set above this one, answers without counting). ``/healthz`` always answers."""

    def __init__(self, app, limit: int, metrics, retry_after: int = 1, open_paths=("/healthz",)):
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.retry_after = retry_after
        self.open_paths = frozenset(open_paths)
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in self.open_paths:
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            self.metrics.count_refused(R_TOO_MANY)
            self.metrics.observe_request(503, 0.0)
            body = orjson.dumps({"detail": f"{self.active} requests in progress; retry after {self.retry_after} s. "
                                           f"Nothing of this request was scored.", "retry_after": self.retry_after})
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(self.retry_after).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


_RECORD_SCHEMA = {"type": "object", "additionalProperties": True,
                  "description": "One record in the model's column vocabulary: for a flow model, raw CICFlowMeter "
                                 "names in either dataset's spelling, or canonical names; for a log model, a "
                                 "Windows event (flat NXLog layout, or nested Winlogbeat)."}
_OPENAPI_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"oneOf": [{"type": "array", "items": _RECORD_SCHEMA}, _RECORD_SCHEMA]}},
    "application/x-ndjson": {"schema": {"type": "string", "description": "one JSON record per line"}},
}}}


def _add_info_routes(app: FastAPI, scorer: LiveScorer, batcher: MicroBatcher, limits: Limits,
                     inflight: _Inflight) -> None:
    metrics = scorer.metrics

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the model is loaded and the scoring worker is running (needs no token)."""
        return {"status": "ok", "model": scorer.name, "queue_depth": batcher.depth,
                "uptime_seconds": round(time.time() - metrics.started, 3)}

    @app.get("/v1/model")
    async def model_info() -> dict:
        """Model metadata: class, version, features, threshold and its provenance, training summary
        (file paths reduced to file names)."""
        return without_paths(scorer.model_info())

    def gauges():
        state = scorer.state()
        return [
            ("deepids_queue_depth", "Records queued or being scored.", batcher.depth),
            ("deepids_queue_capacity", "Most records the queue holds before answering 503.",
             limits.max_queue_records),
            ("deepids_inflight_body_bytes", "Bytes of request bodies being read or parsed.", inflight.bytes),
            ("deepids_state_entities", "Entities with history kept for sequence models.", state["entities"]),
            ("deepids_state_max_entities", "Bound on entities kept (least recently seen evicted first; "
                                           "0 = unbounded).", state["max_entities"] or 0),
            ("deepids_state_idle_ttl_seconds", "Idle time after which an entity's history is forgotten "
                                               "(0 = never).", state["idle_ttl_seconds"] or 0),
            ("deepids_threshold", "The model's alert threshold.", scorer.threshold),
        ]

    def evictions():
        state = scorer.state()
        return [("deepids_state_evictions_total", "Entities evicted from the history, by cause.", "cause",
                 {"lru": state["evicted_lru"], "idle": state["evicted_idle"]})]

    metrics.add_gauges(gauges, evictions)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format: deepids counters and gauges, and the process metrics."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def create_app(scorer: LiveScorer, *, max_body_bytes: int = DEFAULT_MAX_BODY,
               max_queue_records: int = DEFAULT_MAX_QUEUE, max_batch_records: int = DEFAULT_MAX_BATCH,
               max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT, retry_after: int = 1,
               body_timeout: float = DEFAULT_BODY_TIMEOUT, token: str | None = None, docs: bool = True,
               max_requests: int | None = None, queue_timeout: float = DEFAULT_QUEUE_TIMEOUT):
    """The ASGI application serving one `LiveScorer` (see the module's docstring for the routes).

    With `token`, every route but ``/healthz`` needs ``Authorization: Bearer <token>``.
    """
    limits = Limits(max_body_bytes, max_queue_records, max_batch_records, max_inflight_bytes, body_timeout,
                    retry_after, queue_timeout)
    batcher = MicroBatcher(scorer, max_queue_records, max_batch_records)
    inflight = _Inflight()

    @asynccontextmanager
    async def lifespan(app):
        batcher.ensure_running()
        yield
        await batcher.close()

    app = FastAPI(title="deepids", version=_version(),
                  description="Score network flows or host events with a trained deepids detector.",
                  lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if docs else None)
    app.state.scorer = scorer
    app.state.batcher = batcher
    app.state.inflight = inflight
    _add_info_routes(app, scorer, batcher, limits, inflight)
    handler = ScoreHandler(scorer, batcher, limits, inflight)

    @app.post("/v1/score", openapi_extra=_OPENAPI_BODY)
    async def score(request: Request):
        """Score a JSON array of records, one JSON record, or NDJSON."""
        return await handler(request)

    if docs:
        @app.get("/docs", include_in_schema=False)
        async def documentation() -> HTMLResponse:
            return HTMLResponse(docs_html(app.openapi()))

    if max_requests is not None:           # inside the token guard: strangers are refused first
        app.add_middleware(RequestLimit, limit=max_requests, metrics=scorer.metrics, retry_after=retry_after)
    if token is not None:
        app.add_middleware(BearerTokenGuard, token=token, on_refused=scorer.metrics.count_unauthorized)
    return app


def _parse_and_canonicalise(scorer: LiveScorer, body: bytes, ctype: str) -> CanonicalRecords:
    if scorer.kind.name == "flows":     # lines of a Zeek, EVE, nfdump or NFStream log, as the sensor wrote them
        conn = _connection_log(scorer, body)
        if conn is not None:
            return conn
    items = parse_body(body, ctype)
    return scorer.canonicalise(items)


def _connection_log(scorer: LiveScorer, body: bytes) -> CanonicalRecords | None:
    from deepids.errors import InputError
    from deepids.io.connlogs.live import canonicalise_body

    try:
        canon = canonicalise_body(body, scorer.required)
    except InputError as exc:
        raise BodyError(400, str(exc)) from None
    if canon is not None:
        scorer.metrics.count_received(len(canon.index) + len(canon.rejected))
        if canon.rejected:
            scorer.metrics.count_rejected(canon.rejected)
    return canon


def _version() -> str:
    from deepids import __version__

    return __version__


def serve(scorer: LiveScorer, host: str = "127.0.0.1", port: int = 8000, *, max_body_bytes: int = DEFAULT_MAX_BODY,
          max_queue_records: int = DEFAULT_MAX_QUEUE, max_batch_records: int = DEFAULT_MAX_BATCH,
          max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT, limit_concurrency: int | None = 1024,
          log_level: str = "warning", token: str | None = None, tls_cert: str | None = None,
          tls_key: str | None = None, body_timeout: float = DEFAULT_BODY_TIMEOUT, docs: bool = True,
          queue_timeout: float = DEFAULT_QUEUE_TIMEOUT) -> None:
    """Run the service with uvicorn until interrupted (HTTPS when `tls_cert` and `tls_key` are given)."""
    import gc

    import uvicorn

    # a 1,000-record body makes ~100,000 short-lived objects: collect the young generation
    # less often, and leave the model and libraries loaded so far out of every collection
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    app = create_app(scorer, max_body_bytes=max_body_bytes, max_queue_records=max_queue_records,
                     max_batch_records=max_batch_records, max_inflight_bytes=max_inflight_bytes,
                     token=token, body_timeout=body_timeout, docs=docs, max_requests=limit_concurrency,
                     queue_timeout=queue_timeout)
    # the app refuses (and counts) requests beyond `limit_concurrency`; uvicorn's own limit, which
    # answers 503 uncounted, is only a backstop for connections that never send a request
    backstop = None if limit_concurrency is None else 2 * limit_concurrency + 64
    uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=backstop,
                access_log=False, ssl_certfile=tls_cert, ssl_keyfile=tls_key, server_header=False)
