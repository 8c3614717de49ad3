"""`deepids serve`: the HTTP service scores what it can, names what it refuses, and never dies."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import warnings

import httpx
import numpy as np
import polars as pl
import pytest

with warnings.catch_warnings():      # starlette's notice about its httpx-based test client
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from deepids.io import read_flows
from deepids.io.records import CsvLineParser
from deepids.serving import LiveScorer
from deepids.serving.service import create_app


def _records(lines):
    return CsvLineParser(lines[0]).parse(lines[1:])


@pytest.fixture()
def client(seq_model):
    with TestClient(create_app(LiveScorer(seq_model), max_body_bytes=2_000_000)) as c:
        yield c


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_requests_in_pieces_score_like_the_whole_file(client, seq_model, friday_path, friday_lines):
    records = _records(friday_lines)
    got = []
    for start in range(0, len(records), 50):     # JSON arrays and NDJSON, alternately
        part = records[start:start + 50]
        if (start // 50) % 2:
            r = client.post("/v1/score", content="\n".join(json.dumps(x) for x in part),
                            headers={"content-type": "application/x-ndjson"})
        else:
            r = client.post("/v1/score", json=part)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rejected"] == [] and [x["record"] for x in body["results"]] == list(range(len(part)))
        got += [x["score"] for x in body["results"]]
    table, _ = read_flows(friday_path)
    whole = seq_model.score_records(table)       # per-source windows over the whole file at once
    np.testing.assert_allclose(got, whole.score, rtol=1e-5, atol=1e-6)
    first = body["results"][0]
    assert set(first) == {"record", "score", "is_anomaly", "threshold", "top_features"}
    assert first["threshold"] == pytest.approx(seq_model.threshold_.value) and len(first["top_features"]) == 3


def test_good_and_malformed_records_all_accounted_for(client, friday_lines):
    records = _records(friday_lines)[:40]
    records[3] = dict(records[3], **{" Flow Duration": "twelve"})
    records[7] = {k: v for k, v in records[7].items() if k.strip() != "Total Fwd Packets"}
    records[11] = "not a record"
    records[12] = dict(records[12], **{" Destination Port": "80.5"})
    records[13] = dict(records[13], **{" Flow IAT Max": 10 ** 400})
    records[14] = dict(records[14], **{"Flow Bytes/s": [1, 2]})
    records[15] = dict(records[15], **{"Flow Bytes/s": float("nan"), "Flow Packets/s": float("inf")})
    body = "\n".join(json.dumps(x) for x in records) + "\n{broken json\n"
    r = client.post("/v1/score", content=body, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200
    out = r.json()
    rejected = {x["record"]: (x["field"], x["reason"]) for x in out["rejected"]}
    assert rejected == {
        3: (" Flow Duration", "non-numeric value"),
        7: ("Total Fwd Packets", "missing field"),
        11: (None, "not a JSON object"),
        12: (" Destination Port", "non-integer value"),
        13: (" Flow IAT Max", "number out of range"),
        14: ("Flow Bytes/s", "wrong type"),
        40: (None, "invalid JSON"),
    }
    scored = [x["record"] for x in out["results"]]
    assert 15 in scored and all(math.isfinite(x["score"]) for x in out["results"])
    assert sorted(scored + list(rejected)) == list(range(41))
    m = client.get("/metrics").text
    assert _metric(m, "deepids_records_received_total") == 41
    assert _metric(m, "deepids_records_scored_total") == 34
    assert _metric(m, "deepids_records_rejected_total") == 7
    assert 'deepids_records_rejected_total{reason="missing field"} 1' in m


@pytest.mark.parametrize("body, ctype, status", [
    (b"", "application/json", 400),
    (b"   \n ", "application/json", 400),
    (b"[]", "application/json", 400),
    (b"42", "application/json", 400),
    (b'"a string"', "application/json", 400),
    (b"\x00\xff\xfe garbage \x81\x82", "application/octet-stream", 400),
    (b"[" * 100_000, "application/json", 400),
    (b"not json\nnor this\n", "application/x-ndjson", 400),
    (b"{}", "application/json", 422),
    (b"[1, 2, null, true]", "application/json", 422),
    (b'[{"Flow Duration": 1e999, "Total Fwd Packets": NaN}]', "application/json", 422),
])
def test_garbage_gets_a_4xx_and_the_server_lives_on(client, body, ctype, status):
    r = client.post("/v1/score", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert "detail" in r.json()
    assert client.get("/healthz").json()["status"] == "ok"


def test_oversized_body_gets_413(seq_model, friday_lines):
    with TestClient(create_app(LiveScorer(seq_model), max_body_bytes=10_000)) as c:
        big = json.dumps(_records(friday_lines)[:20])
        assert len(big) > 10_000
        r = c.post("/v1/score", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        # without Content-Length (chunked upload) the limit still holds
        r = c.post("/v1/score", content=iter([big[i:i + 4096].encode() for i in range(0, len(big), 4096)]))
        assert r.status_code == 413
        assert c.get("/healthz").status_code == 200


def test_model_metrics_health_and_openapi(client, seq_model):
    info = client.get("/v1/model").json()
    assert info["model"] == "lstm-ae" and info["class"] == "LSTMAutoencoder"
    assert info["features"] == seq_model.feature_names_
    assert info["threshold"]["method"] == "percentile" and info["threshold"]["n_scores"] > 0
    assert info["training"]["benign_records"] > 0 and info["hyperparameters"]["sequence_length"] == 4
    m = client.get("/metrics")
    assert m.headers["content-type"].startswith("text/plain")
    for name in ("deepids_records_scored_total", "deepids_records_rejected_total", "deepids_alerts_total",
                 "deepids_request_duration_seconds_bucket", "deepids_queue_depth", "deepids_state_entities",
                 "deepids_state_max_entities", "deepids_state_idle_ttl_seconds", "deepids_state_evictions_total"):
        assert name in m.text
    assert client.get("/healthz").json()["status"] == "ok"
    assert "/v1/score" in client.get("/openapi.json").json()["paths"]


class _GatedScorer(LiveScorer):
    """Holds every batch until released, so the queue can be filled on purpose."""

    gate: threading.Event

    def score_table(self, table):
        self.gate.wait(10)
        return super().score_table(table)


def _gated_app(seq_model, friday_lines, monkeypatch, **options):
    """(an app whose every request goes through the queue and whose scorer waits at its gate, the
    scorer, the records): for the tests that fill the queue on purpose."""
    import deepids.serving.service as service

    monkeypatch.setattr(service, "_INLINE_RECORDS", 0)    # every request goes through the queue
    scorer = _GatedScorer(seq_model)
    scorer.gate = threading.Event()
    return create_app(scorer, **options), scorer, _records(friday_lines)


def test_full_queue_answers_503_with_retry_after_and_counts_it(seq_model, friday_lines, monkeypatch):
    app, scorer, records = _gated_app(seq_model, friday_lines, monkeypatch, max_queue_records=30,
                                      max_batch_records=10)

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            tasks = [asyncio.create_task(c.post("/v1/score", json=records[10 * i:10 * i + 10])) for i in range(8)]
            await asyncio.sleep(0.3)
            depth = app.state.batcher.depth
            scorer.gate.set()
            answers = await asyncio.gather(*tasks)
            metrics = (await c.get("/metrics")).text
        await app.state.batcher.close()
        return depth, answers, metrics

    depth, answers, metrics = asyncio.run(run())
    codes = [a.status_code for a in answers]
    assert depth <= 30
    assert codes.count(503) >= 4 and codes.count(200) >= 1 and set(codes) <= {200, 503}
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    # a request that finds the queue full is refused before its body is read: counted as a
    # request; one whose records find no room after parsing has its records counted as rejected
    unread = _metric(metrics, "deepids_requests_refused_unread_total")
    assert unread >= 1 and 'deepids_requests_refused_unread_total{reason="queue full"}' in metrics
    assert _metric(metrics, 'deepids_requests_total{code="503"}') == codes.count(503)
    assert _metric(metrics, "deepids_records_received_total") == 10 * (8 - unread)
    assert _metric(metrics, "deepids_records_scored_total") == 10 * codes.count(200)
    assert _metric(metrics, "deepids_records_rejected_total") == 10 * (codes.count(503) - unread)
    assert _metric(metrics, 'deepids_records_rejected_total{reason="overloaded"}') == 10 * (codes.count(503) - unread)


def test_records_waiting_past_the_queue_timeout_are_refused_unscored_and_counted(seq_model, friday_lines,
                                                                                   monkeypatch):
    app, scorer, records = _gated_app(seq_model, friday_lines, monkeypatch, max_batch_records=10,
                                      queue_timeout=0.3)

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            first = asyncio.create_task(c.post("/v1/score", json=records[:10]))   # taken, then held at the gate
            await asyncio.sleep(0.1)
            waiting = [asyncio.create_task(c.post("/v1/score", json=records[10 * i:10 * i + 10])) for i in (1, 2)]
            await asyncio.sleep(0.6)              # past the queue timeout while the first batch is held
            scorer.gate.set()
            answers = [await first] + list(await asyncio.gather(*waiting))
            metrics = (await c.get("/metrics")).text
            depth = app.state.batcher.depth
        await app.state.batcher.close()
        return answers, metrics, depth

    answers, metrics, depth = asyncio.run(run())
    codes = [a.status_code for a in answers]
    assert codes == [200, 503, 503], [a.text for a in answers]     # the held batch is still answered
    assert "waited 0.3 s" in answers[1].json()["detail"] and answers[1].headers["retry-after"] == "1"
    assert depth == 0
    assert _metric(metrics, "deepids_records_received_total") == 30
    assert _metric(metrics, "deepids_records_scored_total") == 10
    assert _metric(metrics, 'deepids_records_rejected_total{reason="waited too long in the queue"}') == 20


def test_real_server_on_loopback(seq_model, friday_lines):
    import socket
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(LiveScorer(seq_model)), host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            r = c.post("/v1/score", json=_records(friday_lines)[:5])
            assert r.status_code == 200 and len(r.json()["results"]) == 5
            assert c.get("/healthz").json()["status"] == "ok"
    finally:
        server.should_exit = True
        thread.join(10)


def test_bodies_over_the_inflight_budget_wait_their_turn(seq_model, friday_lines):
    app = create_app(LiveScorer(seq_model), max_inflight_bytes=50_000)
    with TestClient(app) as c:
        app.state.inflight.bytes = 40_000          # as if other bodies were being parsed
        body = json.dumps(_records(friday_lines)[:10])
        r = c.post("/v1/score", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        app.state.inflight.bytes = 0
        r = c.post("/v1/score", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200 and app.state.inflight.bytes == 0
        m = c.get("/metrics").text
        assert 'deepids_requests_total{code="503"} 1' in m and "deepids_inflight_body_bytes 0" in m
        assert 'deepids_requests_refused_unread_total{reason="bodies in flight"} 1' in m


def test_fuzzed_bodies_never_get_a_5xx(client, friday_lines):
    rng = np.random.default_rng(7)
    good = _records(friday_lines)[:5]
    keys = list(good[0])
    junk = [None, True, "", "NaN", "-Infinity", "1e309", -1, 2 ** 70, 1.5, "x" * 1000, [], {}, {"a": [1]},
            "\u0000", "１２", float("nan"), float("inf")]
    bodies = []
    for _ in range(60):
        rec = dict(good[int(rng.integers(len(good)))])
        for k in rng.choice(keys, size=int(rng.integers(1, 6)), replace=False):
            if rng.random() < 0.3:
                rec.pop(k, None)
            else:
                rec[k] = junk[int(rng.integers(len(junk)))]
        bodies.append(json.dumps([rec, good[0]]).encode())
    for _ in range(20):
        bodies.append(bytes(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8)))
    bodies += [b"\n\n\n", b"[{}", b"{\"a\": 1}\n[", b"null", b"[null]", b"\xef\xbb\xbf[]", b"1e999999"]
    for body in bodies:
        r = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
        assert r.status_code in (200, 400, 422), (body[:80], r.status_code, r.text[:200])
        if r.status_code == 200:
            out = r.json()
            assert len(out["results"]) + len(out["rejected"]) >= 1
    m = client.get("/metrics").text
    assert _metric(m, "deepids_records_received_total") == (
        _metric(m, "deepids_records_scored_total") + _metric(m, "deepids_records_rejected_total"))
    assert client.get("/healthz").status_code == 200


def test_fuzzed_ndjson_and_literals_every_record_answered(client, friday_lines):
    """NDJSON and JSON bodies with NaN/Infinity literals, huge numbers, wrong types, odd bytes:
    every record in a 200/422 answer is either scored or rejected, and /metrics adds up."""
    rng = np.random.default_rng(11)
    good = _records(friday_lines)[:8]
    keys = list(good[0])
    literals = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, "123456789012345678901234567890",
                "true", "null", '""', '"NaN"', '"Infinity"', "[]", "{}", '{"x": NaN}', '"\\ud800"', '"\\u0000"',
                "-0", "0.0e-400", '" 12 "']
    sent = 0
    for i in range(40):
        lines = []
        for _ in range(int(rng.integers(1, 6))):
            rec = dict(good[int(rng.integers(len(good)))])
            text = json.dumps(rec)
            for k in rng.choice(keys, size=int(rng.integers(1, 4)), replace=False):
                text = text.replace(json.dumps(k) + ": " + json.dumps(rec[k]),
                                    json.dumps(k) + ": " + literals[int(rng.integers(len(literals)))], 1)
            if rng.random() < 0.1:
                text = text[: int(rng.integers(1, len(text)))]                     # cut short
            if rng.random() < 0.1:
                text = text.encode().replace(b"1", b"\xff", 1).decode("latin-1")  # odd bytes
            lines.append(text)
        ndjson = i % 2 == 0
        body = ("\n".join(lines) if ndjson else "[" + ",".join(lines) + "]").encode("utf-8", "surrogateescape")
        if rng.random() < 0.1:
            body = b"\xef\xbb\xbf" + body
        r = client.post("/v1/score", content=body,
                        headers={"content-type": "application/x-ndjson" if ndjson else "application/json"})
        assert r.status_code in (200, 400, 422), (body[:120], r.status_code, r.text[:200])
        if r.status_code in (200, 422):
            out = r.json()
            n = len(lines) if ndjson else None
            got = sorted([x["record"] for x in out["results"]] + [x["record"] for x in out["rejected"]])
            assert got == list(range(len(got))) and (n is None or len(got) == n)
            assert all(x["score"] is None or math.isfinite(x["score"]) for x in out["results"])
            sent += len(got)
    m = client.get("/metrics").text
    assert _metric(m, "deepids_records_received_total") == sent > 0
    assert _metric(m, "deepids_records_received_total") == (
        _metric(m, "deepids_records_scored_total") + _metric(m, "deepids_records_rejected_total"))
    for body in (b"", b" ", b"\n\n", b"\x00" * 100, b"\xff\xfe\xfd", b"[" * 2000, b"{" * 2000, b"NaN", b"Infinity",
                 b"1e999999", b"[NaN]", b"[[]]", b"[{}]"):
        for ctype in ("application/json", "application/x-ndjson", ""):
            r = client.post("/v1/score", content=body, headers={"content-type": ctype} if ctype else {})
            assert r.status_code in (400, 422), (body[:40], ctype, r.status_code)
            assert r.json()["detail"]
    assert client.get("/healthz").json()["status"] == "ok"


def test_small_requests_on_an_idle_server_are_scored_inline(client, seq_model, friday_lines):
    """A lone small request is scored on the event loop; the scores are those of the queue path."""
    records = _records(friday_lines)[:40]
    inline = [client.post("/v1/score", json=records[i:i + 4]).json() for i in range(0, 40, 4)]
    with TestClient(create_app(LiveScorer(seq_model))) as c:
        c.app.state.batcher.idle = lambda: False                 # force the queue path
        queued = [c.post("/v1/score", json=records[i:i + 4]).json() for i in range(0, 40, 4)]
    assert [x["score"] for b in inline for x in b["results"]] == [x["score"] for b in queued for x in b["results"]]
    assert client.app.state.batcher.idle()


@pytest.mark.parametrize("name,sample", [("conn.log", "zeek/conn.log"),
                                         ("nf.csv", "nfdump/lab_slice_nfdump.csv.gz"),
                                         ("eve.json", "suricata/lab_slice_eve.json.gz")])
def test_a_connection_log_posted_as_written_scores_as_the_file_does(samples_dir, tmp_path, name, sample):
    """A body of sensor lines (a Zeek conn.log with its header, nfdump CSV, EVE events): the same
    records, numbers and scores as `score` on the same file; a damaged record keeps its number."""
    import gzip

    from deepids.io.connlogs import read_conn
    from deepids.models import IsolationForestDetector
    from deepids.scoring import ChunkScorer, scored_chunks

    src = samples_dir / sample
    lines = (gzip.open(src, "rb") if sample.endswith(".gz") else open(src, "rb")).read().splitlines()[:400]
    first = next(i for i, ln in enumerate(lines) if not ln.startswith(b"#")) + 1
    lines[first + 5] = lines[first + 5][:30]                  # one record cut short: rejected
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    model = IsolationForestDetector(n_estimators=10, seed=0).fit(read_conn(src)[0])
    scorer = ChunkScorer(model)
    frames = [scorer.frame(chunk, scores) for chunk, scores, _ in scored_chunks(model, [path], scorer=scorer)]
    want = pl.concat(frames)
    with TestClient(create_app(LiveScorer(model))) as c:
        r = c.post("/v1/score", content=path.read_bytes(), headers={"content-type": "text/plain"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["n_rejected"] == 1 and doc["scored"] == want.height
    assert [x["record"] for x in doc["results"]] == want["record"].to_list()
    assert doc["rejected"][0]["record"] not in set(want["record"].to_list())
    np.testing.assert_allclose([x["score"] for x in doc["results"]], want["score"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_a_connection_log_posted_to_a_cic_model_is_one_clear_refusal(seq_model, samples_dir):
    with TestClient(create_app(LiveScorer(seq_model))) as c:
        r = c.post("/v1/score", content=(samples_dir / "zeek" / "conn.log").read_bytes())
    assert r.status_code == 400 and "zeek-conn log, but the model reads other records" in r.json()["detail"]
