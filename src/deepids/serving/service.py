"""`deepids serve`: an HTTP scoring service (FastAPI + uvicorn).

Endpoints
---------
- ``POST /v1/score``: a JSON array of records, one JSON object, or NDJSON (one record per
  line). The answer lists every record: ``results`` (``index``, ``score``, ``is_anomaly``,
  ``threshold``, ``top_features``) for those scored and ``rejected`` (``index``, ``field``,
  ``reason``) for those refused. Status 200 when at least one record was scored, 422 when
  every record was refused (same body), 400 for a body that is empty, holds no record, or is
  neither JSON nor NDJSON, 413 for a body over ``max_body_bytes``, and 503 with
  ``Retry-After`` when the server is saturated; nothing of a 503'd request was scored, so it
  can be sent again as it is. A request that finds the scoring queue full, or the bodies
  being read and parsed holding ``max_inflight_bytes``, is refused before its body is read
  (cheaply: parsing is most of a record's cost), counted in
  ``deepids_requests_refused_unread_total{reason=...}``; one whose records find no room in
  the queue after parsing has them counted as rejected, ``reason="overloaded"``.
- ``GET /healthz``, ``GET /v1/model`` (the model's metadata), ``GET /metrics`` (Prometheus).
- ``/docs`` and ``/openapi.json`` as FastAPI serves them.

Micro-batching: requests are canonicalised as they arrive, then queued; one worker takes
everything queued (up to ``max_batch_records``), scores it as one table in a worker thread
and hands each request its share. An idle server scores a lone request at once, so a
single-record request does not wait for company; a request of a few records that finds the
server idle is scored on the event loop itself. The queue is bounded in records
(``max_queue_records``): memory cannot grow without bound under load.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from contextlib import asynccontextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import polars as pl
from fastapi import FastAPI, Request
from starlette.responses import PlainTextResponse, Response

from deepids.errors import DeepidsError
from deepids.io.records import CanonicalRecords, Unparsable, loads_json, parse_ndjson
from deepids.serving.scorer import R_OVERLOADED, LiveScorer, ScoredBatch

R_SCORING_FAILED = "scoring failed"
R_QUEUE_FULL = "queue full"
R_INFLIGHT = "bodies in flight"
DEFAULT_MAX_BODY = 16 << 20
DEFAULT_MAX_QUEUE = 65_536
DEFAULT_MAX_BATCH = 8_192
DEFAULT_MAX_INFLIGHT = 64 << 20
_THREAD_PARSE_BYTES = 64 << 10
_INLINE_RECORDS = 16        # an idle server scores requests this small on the event loop


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


def _torch_threads() -> int:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else 0


def _same_torch_threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


@dataclass
class _Pending:
    table: pl.DataFrame
    future: asyncio.Future
    n: int


class MicroBatcher:
    """Bounded queue of canonical tables, scored together by one worker."""

    def __init__(self, scorer: LiveScorer, max_queue_records: int = DEFAULT_MAX_QUEUE,
                 max_batch_records: int = DEFAULT_MAX_BATCH):
        self.scorer = scorer
        self.max_queue_records = max_queue_records
        self.max_batch_records = max_batch_records
        self.depth = 0                  # records queued or being scored
        self._queue: deque[_Pending] = deque()
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # torch's thread count (`--threads`) is per OS thread for its OpenMP/BLAS kernels: a new
        # thread starts with one per core. The scoring thread takes the server's own, or else
        # LSTM calls spin a team of threads on a busy host (a p99 of 300 ms instead of 6 ms).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepids-score",
                                            initializer=_same_torch_threads, initargs=(_torch_threads(),))
        # parsing is GIL-bound Python: one thread parses bodies first come, first served (more
        # threads would only interleave them and make each request wait longer)
        self.parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepids-parse")

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._event = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def idle(self) -> bool:
        """Nothing queued, nothing being scored."""
        return self.depth == 0

    def submit(self, table: pl.DataFrame) -> asyncio.Future | None:
        """Queue a table; None when the queue has no room for it."""
        self.ensure_running()
        n = table.height
        if self.depth + n > self.max_queue_records and self.depth > 0:
            return None
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(table, fut, n))
        self.depth += n
        self._event.set()
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._event.wait()
            self._event.clear()
            while self._queue:
                batch: list[_Pending] = []
                rows = 0
                while self._queue and (not batch or rows + self._queue[0].n <= self.max_batch_records):
                    p = self._queue.popleft()
                    batch.append(p)
                    rows += p.n
                try:
                    tables = [p.table for p in batch]
                    table = tables[0] if len(tables) == 1 else pl.concat(tables, how="vertical_relaxed")
                    result = await loop.run_in_executor(self._executor, self.scorer.score_table, table)
                except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
                else:
                    score, flagged, top = result
                    start = 0
                    for p in batch:
                        stop = start + p.n
                        if not p.future.done():
                            p.future.set_result((score[start:stop], flagged[start:stop], top[start:stop]))
                        start = stop
                finally:
                    self.depth -= rows

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.parser.shutdown(wait=False, cancel_futures=True)


def _json_response(payload: Any, status: int = 200, headers: dict | None = None) -> Response:
    # orjson writes non-finite floats as null; scores are made JSON-safe before this anyway
    return Response(orjson.dumps(payload), status_code=status, headers=headers, media_type="application/json")


class _Inflight:
    """Bytes of request bodies being read or parsed (the event loop is single-threaded)."""

    bytes: int = 0


def create_app(scorer: LiveScorer, *, max_body_bytes: int = DEFAULT_MAX_BODY,
               max_queue_records: int = DEFAULT_MAX_QUEUE, max_batch_records: int = DEFAULT_MAX_BATCH,
               max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT, retry_after: int = 1):
    """The FastAPI application serving one `LiveScorer`.

    Memory is bounded by three limits: one body (`max_body_bytes`, else 413), the bodies being
    read and parsed at once (`max_inflight_bytes`: a request arriving while they hold it gets
    503 before its body is read), and the records waiting to be scored (`max_queue_records`:
    503 after parsing, its records counted as rejected, reason "overloaded").
    """
    batcher = MicroBatcher(scorer, max_queue_records, max_batch_records)
    metrics = scorer.metrics
    inflight = _Inflight()

    def _busy(why: str, unread: bool = False) -> Response:
        headers = {"Retry-After": str(retry_after)}
        if unread:          # close rather than read and throw away a body we refused
            headers["Connection"] = "close"
        return _json_response({"detail": f"{why}; retry after {retry_after} s. Nothing of this request was scored.",
                               "retry_after": retry_after}, 503, headers=headers)

    @asynccontextmanager
    async def lifespan(app):
        batcher.ensure_running()
        yield
        await batcher.close()

    app = FastAPI(title="deepids", version=_version(),
                  description="Score network flows or host events with a trained deepids detector.",
                  lifespan=lifespan)
    app.state.scorer = scorer
    app.state.batcher = batcher
    app.state.inflight = inflight

    record_schema = {"type": "object", "additionalProperties": True,
                     "description": "One record in the model's column vocabulary: for a flow model, raw "
                                    "CICFlowMeter names in either dataset's spelling, or canonical names; for a "
                                    "log model, a Windows event (flat NXLog layout, or nested Winlogbeat)."}
    openapi_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"oneOf": [{"type": "array", "items": record_schema}, record_schema]}},
        "application/x-ndjson": {"schema": {"type": "string", "description": "one JSON record per line"}},
    }}}

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the model is loaded and the scoring worker is running."""
        return {"status": "ok", "model": scorer.name, "queue_depth": batcher.depth,
                "uptime_seconds": round(time.time() - metrics.started, 3)}

    @app.get("/v1/model")
    async def model_info() -> dict:
        """Model metadata: class, version, features, threshold and its provenance, training summary."""
        return scorer.model_info()

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        """Prometheus text format."""
        state = scorer.state()
        gauges = {
            "deepids_queue_depth": ("Records queued or being scored.", batcher.depth),
            "deepids_queue_capacity": ("Most records the queue holds before answering 503.", max_queue_records),
            "deepids_inflight_body_bytes": ("Bytes of request bodies being read or parsed.", inflight.bytes),
            "deepids_state_entities": ("Entities with history kept for sequence models.", state["entities"]),
            "deepids_state_max_entities": ("Bound on entities kept (least recently seen evicted first; "
                                           "0 = unbounded).", state["max_entities"] or 0),
            "deepids_state_idle_ttl_seconds": ("Idle time after which an entity's history is forgotten "
                                               "(0 = never).", state["idle_ttl_seconds"] or 0),
            "deepids_threshold": ("The model's alert threshold.", scorer.threshold),
        }
        labelled = {"deepids_state_evictions_total": (
            "counter", "Entities evicted from the history, by cause.",
            {'cause="lru"': state["evicted_lru"], 'cause="idle"': state["evicted_idle"]})}
        return PlainTextResponse(metrics.render(gauges, labelled),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/score", openapi_extra=openapi_body)
    async def score(request: Request):
        """Score a JSON array of records, one JSON record, or NDJSON."""
        started = time.perf_counter()
        status = 500
        try:
            response = await _score(request)
            status = response.status_code
            return response
        finally:
            metrics.observe_request(status, time.perf_counter() - started)

    async def _score(request: Request):
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > max_body_bytes
            except ValueError:
                return _json_response({"detail": "invalid Content-Length header"}, 400)
            if too_big:
                return _json_response({"detail": f"body of {length} bytes is over the limit of "
                                                 f"{max_body_bytes} bytes; split it"}, 413)
        expected = int(length) if length is not None else 0
        if batcher.depth >= max_queue_records:
            # the queue is full: refuse before reading and parsing, which is most of a record's cost
            metrics.count_refused(R_QUEUE_FULL)
            return _busy(f"the scoring queue is full ({batcher.depth} records waiting)", unread=True)
        if inflight.bytes > 0 and inflight.bytes + expected > max_inflight_bytes:
            # bodies being read or parsed already hold the memory budget: refuse before reading
            metrics.count_refused(R_INFLIGHT)
            return _busy(f"the server is reading {inflight.bytes} bytes of other requests", unread=True)
        chunks: list[bytes] = []
        size = 0
        held = expected                  # the announced length is reserved at once, so that the
        inflight.bytes += expected       # requests arriving together cannot all pass the check
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    return _json_response({"detail": f"body is over the limit of {max_body_bytes} bytes; "
                                                     f"split it"}, 413)
                chunks.append(chunk)
                if size > held:
                    inflight.bytes += size - held
                    held = size
            body = b"".join(chunks)
            del chunks
            ctype = request.headers.get("content-type", "").lower()
            try:
                if size > _THREAD_PARSE_BYTES:
                    canon = await asyncio.get_running_loop().run_in_executor(
                        batcher.parser, _parse_and_canonicalise, scorer, body, ctype)
                else:
                    canon = _parse_and_canonicalise(scorer, body, ctype)
            except BodyError as exc:
                return _json_response({"detail": exc.detail}, exc.status)
        finally:
            inflight.bytes -= held
        rejected = [r.to_dict() for r in canon.rejected]
        if canon.table.height == 0:
            return _json_response({"results": [], "rejected": rejected, "scored": 0, "n_rejected": len(rejected),
                                   "detail": "no record could be scored; see rejected"}, 422)
        inline = batcher.idle() and canon.table.height <= _INLINE_RECORDS
        fut = None if inline else batcher.submit(canon.table)
        if fut is None and not inline:
            metrics.count_rejected({R_OVERLOADED: canon.table.height})
            return _busy(f"the scoring queue is full ({batcher.depth} records waiting)")
        try:
            if inline:
                # nothing queued or being scored: a few records are scored right here, sparing
                # two thread hand-offs (each a wait for a core on a busy host)
                score_, flagged, top = scorer.score_table(canon.table)
            else:
                score_, flagged, top = await fut
        except DeepidsError as exc:
            metrics.count_rejected({R_SCORING_FAILED: canon.table.height})
            return _json_response({"detail": str(exc)}, 422)
        except Exception as exc:  # noqa: BLE001 - answered, counted, and the server goes on
            metrics.count_rejected({R_SCORING_FAILED: canon.table.height})
            return _json_response({"detail": f"scoring failed: {type(exc).__name__}: {exc}"}, 500)
        batch = ScoredBatch(canon.index, score_, flagged, top, scorer.threshold, canon.table, canon.rejected)
        results = batch.results()
        return _json_response({"results": results, "rejected": rejected, "scored": len(results),
                               "n_rejected": len(rejected), "alerts": int(np.count_nonzero(flagged))})

    return app


def _parse_and_canonicalise(scorer: LiveScorer, body: bytes, ctype: str) -> CanonicalRecords:
    items = parse_body(body, ctype)
    return scorer.canonicalise(items)


def _version() -> str:
    from deepids import __version__

    return __version__


def serve(scorer: LiveScorer, host: str = "127.0.0.1", port: int = 8000, *, max_body_bytes: int = DEFAULT_MAX_BODY,
          max_queue_records: int = DEFAULT_MAX_QUEUE, max_batch_records: int = DEFAULT_MAX_BATCH,
          max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT, limit_concurrency: int | None = 1024, log_level: str = "warning") -> None:
    """Run the service with uvicorn until interrupted."""
    import gc

    import uvicorn

    # a 1,000-record body makes ~100,000 short-lived objects: collect the young generation
    # less often, and leave the model and libraries loaded so far out of every collection
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    app = create_app(scorer, max_body_bytes=max_body_bytes, max_queue_records=max_queue_records,
                     max_batch_records=max_batch_records, max_inflight_bytes=max_inflight_bytes)
    uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=limit_concurrency,
                access_log=False)
