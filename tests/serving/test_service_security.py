"""`deepids serve` lets in only who holds the token, shows no more than it must, and holds no door open."""

from __future__ import annotations

import asyncio
import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings

import httpx
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from deepids.errors import ConfigError
from deepids.io.records import CsvLineParser
from deepids.serving import LiveScorer
from deepids.serving.alerts import WebhookSink, ecs_alert, redact_url
from deepids.serving.security import check_bind, resolve_token, without_paths
from deepids.serving.service import create_app

TOKEN = "s3cret-token-for-the-tests-0123456789"


def _records(lines, n):
    return CsvLineParser(lines[0]).parse(lines[1:n + 1])


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def test_without_the_token_every_route_but_healthz_is_401_and_counted(seq_model, friday_lines):
    app = create_app(LiveScorer(seq_model), token=TOKEN)
    auth = {"authorization": f"Bearer {TOKEN}"}
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        records = _records(friday_lines, 5)
        refused = [c.post("/v1/score", json=records),
                   c.post("/v1/score", json=records, headers={"authorization": "Bearer wrong"}),
                   c.post("/v1/score", json=records, headers={"authorization": f"Basic {TOKEN}"}),
                   c.get("/v1/model"), c.get("/metrics"), c.get("/docs"), c.get("/openapi.json")]
        for r in refused:
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        ok = c.post("/v1/score", json=records, headers=auth)
        assert ok.status_code == 200 and ok.json()["scored"] == 5
        assert c.post("/v1/score", json=records, headers={"authorization": f"bearer {TOKEN}"}).status_code == 200
        m = c.get("/metrics", headers=auth).text
    assert _metric(m, "deepids_requests_unauthorized_total") == len(refused)
    # a refused request never reached the scorer
    assert _metric(m, "deepids_records_received_total") == 10
    assert "process_resident_memory_bytes" in m or sys.platform != "linux"


def test_the_token_option_and_the_bind_rule():
    assert resolve_token(None) is None or "DEEPIDS_TOKEN" in __import__("os").environ
    with pytest.raises(ConfigError):
        resolve_token("   ")
    with pytest.raises(ConfigError):
        resolve_token("short")
    assert check_bind("127.0.0.1", None, False) is None and check_bind("::1", None, False) is None
    assert check_bind("localhost", None, False) is None and check_bind("0.0.0.0", TOKEN, False) is None
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        with pytest.raises(ConfigError, match="without a token"):
            check_bind(host, None, False)
    assert "WITHOUT authentication" in check_bind("0.0.0.0", None, True)


def test_serve_refuses_0000_without_a_token_in_one_line(seq_model_dir, tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "DEEPIDS_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "deepids", "serve", "--model", str(seq_model_dir),
                        "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "without a token" in r.stderr, r.stderr


def test_docs_are_offline_and_can_be_turned_off(seq_model):
    with TestClient(create_app(LiveScorer(seq_model))) as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "/v1/score" in page.text
        assert "http://" not in page.text and "https://" not in page.text and "<script" not in page.text
        assert c.get("/redoc").status_code == 404
    with TestClient(create_app(LiveScorer(seq_model), docs=False)) as c:
        assert c.get("/docs").status_code == 404 and c.get("/openapi.json").status_code == 404


def test_model_metadata_shows_file_names_not_paths(seq_model):
    scorer = LiveScorer(seq_model)
    scorer.model_info = lambda: {"training": {"data": ["/home/analyst/cases/secret/flows.csv",
                                                       "C:\\Users\\x\\logs.evtx"], "note": "a/b is fine"}}
    with TestClient(create_app(scorer)) as c:
        info = c.get("/v1/model").json()
    assert info["training"]["data"] == ["flows.csv", "logs.evtx"] and info["training"]["note"] == "a/b is fine"
    assert without_paths({"x": ["./rel/p.csv", 3]}) == {"x": ["p.csv", 3]}


def test_chunked_bodies_cannot_pass_the_inflight_budget(seq_model, friday_lines):
    app = create_app(LiveScorer(seq_model), max_inflight_bytes=50_000, max_body_bytes=10_000_000)
    body = json.dumps(_records(friday_lines, 200)).encode()
    assert len(body) > 50_000
    with TestClient(app) as c:
        app.state.inflight.bytes = 1              # another body is being read
        r = c.post("/v1/score", content=iter([body[i:i + 4096] for i in range(0, len(body), 4096)]))
        assert r.status_code == 503 and app.state.inflight.bytes == 1
        app.state.inflight.bytes = 0
        r = c.post("/v1/score", content=iter([body[i:i + 4096] for i in range(0, len(body), 4096)]))
        assert r.status_code == 200 and app.state.inflight.bytes == 0


def test_a_stalled_body_gets_408_and_holds_nothing(seq_model, friday_lines):
    app = create_app(LiveScorer(seq_model), body_timeout=0.3)
    first = json.dumps(_records(friday_lines, 3)).encode()

    async def stalled():
        yield first[:10]
        await asyncio.sleep(5)
        yield first[10:]

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post("/v1/score", content=stalled())
            m = (await c.get("/metrics")).text
        await app.state.batcher.close()
        return r, m

    r, m = asyncio.run(run())
    assert r.status_code == 408 and app.state.inflight.bytes == 0
    assert _metric(m, 'deepids_requests_total{code="408"}') == 1


def test_a_client_that_hangs_up_is_not_a_server_error(seq_model):
    from starlette.requests import ClientDisconnect

    app = create_app(LiveScorer(seq_model))

    async def run():
        sent = []

        async def receive():
            if not sent:
                sent.append(1)
                return {"type": "http.request", "body": b"[{", "more_body": True}
            return {"type": "http.disconnect"}

        async def send(message):
            pass

        scope = {"type": "http", "method": "POST", "path": "/v1/score", "headers": [], "query_string": b"",
                 "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1),
                 "root_path": "", "app": app}
        await app(scope, receive, send)
        await app.state.batcher.close()

    try:
        asyncio.run(run())
    except ClientDisconnect:            # pragma: no cover - the failure this test is about
        pytest.fail("a client disconnect escaped the handler")
    snap = app.state.scorer.metrics.snapshot()
    assert snap["requests"] == {"499": 1} and app.state.inflight.bytes == 0


class _Receiver(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        type(self).seen.append(self.headers.get("authorization"))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_sends_the_token_and_never_reports_credentials():
    _Receiver.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        alert = ecs_alert({"a": 1}, {}, score=1.0, threshold=0.5, model="m", top_features=[])
        sink = WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/in", token="hook-token", backoff=0.05)
        sink.emit([alert])
        assert sink.close()["delivered"] == 1
        url = f"http://user:pa55@127.0.0.1:{server.server_address[1]}/in?api_key=K3Y&index=ids"
        sink = WebhookSink(url, backoff=0.05)
        sink.emit([alert])
        stats = sink.close()
    finally:
        server.shutdown()
    assert _Receiver.seen[0] == "Bearer hook-token" and stats["delivered"] == 1
    assert "pa55" not in json.dumps(stats) and "K3Y" not in json.dumps(stats) and "index=ids" in stats["sink"]
    assert redact_url("https://h/x?token=a&b=c") == "https://h/x?token=***&b=c"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls_and_token_on_a_real_server(seq_model, friday_lines, tmp_path):
    import uvicorn

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(LiveScorer(seq_model), token=TOKEN), host="127.0.0.1",
                                           port=port, log_level="error", ssl_certfile=str(cert),
                                           ssl_keyfile=str(key)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=str(cert), timeout=10) as c:
            assert c.post("/v1/score", json=_records(friday_lines, 3)).status_code == 401
            r = c.post("/v1/score", json=_records(friday_lines, 3), headers={"authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200 and r.json()["scored"] == 3
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)      # no plain HTTP on a TLS port
    finally:
        server.should_exit = True
        thread.join(10)


def test_requests_beyond_the_limit_get_a_counted_503_and_healthz_still_answers(seq_model, friday_lines):
    from deepids.serving.service import RequestLimit

    app = create_app(LiveScorer(seq_model), max_requests=2)
    with TestClient(app) as c:
        guard = c.app.middleware_stack
        while guard is not None and not isinstance(guard, RequestLimit):
            guard = getattr(guard, "app", None)
        assert guard is not None
        guard.active = 2                           # as if two requests were in progress
        r = c.post("/v1/score", json=_records(friday_lines, 3))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert c.get("/healthz").status_code == 200
        guard.active = 0
        assert c.post("/v1/score", json=_records(friday_lines, 3)).status_code == 200
        m = c.get("/metrics").text
    assert _metric(m, 'deepids_requests_refused_unread_total{reason="too many requests"}') == 1
    assert _metric(m, 'deepids_requests_total{code="503"}') == 1
