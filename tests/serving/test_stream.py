"""`deepids stream`: streaming a file scores it as batch scoring does, and every line is accounted for."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time

import numpy as np
import polars as pl
from typer.testing import CliRunner

from deepids.cli import app
from deepids.io import read_flows
from deepids.serving import LiveScorer
from deepids.serving.alerts import MemorySink, WebhookSink, ecs_alert
from deepids.serving.stream import run_stream


def test_streaming_a_file_gives_the_batch_scores(seq_model, friday_path):
    scorer = LiveScorer(seq_model)
    scores = io.StringIO()
    summary = run_stream(scorer, friday_path, [MemorySink()], batch_size=37, scores_out=scores)
    got = [json.loads(line) for line in scores.getvalue().splitlines()]
    table, _ = read_flows(friday_path)
    whole = seq_model.score_records(table)
    assert [g["record"] for g in got] == list(range(table.height))
    np.testing.assert_allclose([g["score"] for g in got], whole.score, rtol=1e-5, atol=1e-6)
    assert summary.read == summary.scored == table.height and summary.rejected == {}
    assert summary.alerts == int((whole.score > seq_model.threshold_.value).sum())


def test_good_and_malformed_lines_add_up_and_alerts_are_ecs(seq_model, friday_lines, tmp_path):
    lines = list(friday_lines[:61])
    lines[5] = lines[5].replace(",", ";", 3)                   # wrong number of fields
    cells = lines[9].split(",")
    cells[8] = "lots"                                          # Total Fwd Packets
    lines[9] = ",".join(cells)
    lines.insert(20, friday_lines[0])                          # repeated header
    lines.insert(30, "," * (len(cells) - 1))                   # empty row
    lines.insert(31, "")                                       # blank line: not a record
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(lines) + "\n")
    scorer = LiveScorer(seq_model)
    scorer.threshold = 0.0                                     # every scored record raises an alert
    sink = MemorySink()
    summary = run_stream(scorer, path, [sink], batch_size=16)
    assert summary.read == 62                                  # 60 data lines + header again + empty row
    assert summary.rejected == {"wrong number of fields": 1, "non-numeric value": 1,
                                "repeated header line": 1, "empty row": 1}
    assert summary.scored + summary.n_rejected == summary.read
    assert summary.alerts == summary.scored == len(sink.alerts) == 58
    a = sink.alerts[0]
    assert a["event"]["kind"] == "alert" and a["event"]["module"] == "deepids"
    assert a["source"]["ip"] and a["destination"]["port"] >= 0 and a["@timestamp"].startswith("2017-07-07T15:30")
    assert a["deepids"]["threshold"] == 0.0 and len(a["deepids"]["top_features"]) == 3
    assert a["deepids"]["record"][" Source IP"] == a["source"]["ip"]
    m = scorer.metrics
    assert m.records_received == m.records_scored + m.records_rejected == 62


def test_follow_scores_lines_as_they_are_appended(seq_model, friday_lines, tmp_path):
    path = tmp_path / "growing.csv"
    path.write_text("\n".join(friday_lines[:11]) + "\n")
    scorer = LiveScorer(seq_model)
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "s", run_stream(scorer, path, [MemorySink()], follow=True, flush_interval=0.05, poll_interval=0.02,
                        stop=stop)))
    thread.start()

    def wait_for(n):
        for _ in range(400):
            if scorer.metrics.records_received >= n:
                return True
            time.sleep(0.025)
        return False

    try:
        assert wait_for(10)
        with open(path, "a") as fh:
            fh.write("\n".join(friday_lines[11:30]) + "\n")
            half = friday_lines[30]
            fh.write(half[:40])                               # a partial line waits for its end
            fh.flush()
            assert wait_for(29)
            time.sleep(0.1)
            assert scorer.metrics.records_received == 29
            fh.write(half[40:] + "\n")
        assert wait_for(30)
    finally:
        stop.set()
        thread.join(10)
    s = result["s"]
    assert s.read == s.scored == 30 and s.interrupted


def test_stdin_ndjson(seq_model, friday_lines):
    from deepids.io.records import CsvLineParser

    records = CsvLineParser(friday_lines[0]).parse(friday_lines[1:21])
    body = "".join(json.dumps(r) + "\n" for r in records) + "not json\n"
    summary = run_stream(LiveScorer(seq_model), "-", [MemorySink()], stdin=io.BytesIO(body.encode()))
    assert summary.format == "ndjson" and summary.read == 21 and summary.scored == 20
    assert summary.rejected == {"invalid JSON": 1}


class _Receiver(http.server.BaseHTTPRequestHandler):
    fail_first = 0
    bodies: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
        else:
            cls.bodies.append(body)
            self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_retries_until_delivered(seq_model, friday_path):
    _Receiver.fail_first, _Receiver.bodies = 2, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        scorer = LiveScorer(seq_model)
        scorer.threshold = float(np.median(seq_model.score_records(read_flows(friday_path)[0]).score))
        sink = WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/alerts", backoff=0.05, batch_size=50)
        summary = run_stream(scorer, friday_path, [sink], batch_size=100)
    finally:
        server.shutdown()
    webhook = summary.sinks[0]
    received = [json.loads(line) for b in _Receiver.bodies for line in b.decode().splitlines()]
    assert summary.alerts > 50 and webhook["delivered"] == len(received) == summary.alerts
    assert webhook["failed_posts"] == 2 and webhook["dropped"] == webhook["undelivered"] == 0
    assert sorted(a["deepids"]["record_number"] for a in received) == sorted(
        {a["deepids"]["record_number"] for a in received})


def test_webhook_buffer_is_bounded_and_losses_are_counted():
    import socket

    with socket.socket() as s:                       # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = WebhookSink(f"http://127.0.0.1:{port}/", max_buffer=5, backoff=0.05, close_timeout=0.3, timeout=0.5)
    alert = ecs_alert({"a": 1}, {}, score=1.0, threshold=0.5, model="m", top_features=[])
    sink.emit([alert] * 12)
    stats = sink.close()
    assert stats["dropped"] == 7 and stats["undelivered"] == 5 and stats["delivered"] == 0
    assert stats["failed_posts"] >= 1 and stats["last_error"]


def test_stream_command_writes_alerts_and_a_summary(seq_model_dir, friday_path, tmp_path):
    alerts, summary = tmp_path / "alerts.ndjson", tmp_path / "summary.json"
    r = CliRunner().invoke(app, ["stream", "--model", str(seq_model_dir), "--input", str(friday_path),
                                 "--alerts", str(alerts), "--summary-json", str(summary)])
    assert r.exit_code == 0, r.output
    d = json.loads(summary.read_text())
    assert d["records_read"] == d["records_scored"] == 299 and d["records_rejected"] == 0
    assert d["state"]["entities"] == 44 and d["state"]["max_entities"] == 100_000
    lines = alerts.read_text().splitlines()
    assert len(lines) == d["alerts"]
    for line in lines:
        assert json.loads(line)["event"]["kind"] == "alert"


def test_stream_command_errors_are_one_line(seq_model_dir, tmp_path):
    from deepids.cli import main
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "deepids", "stream", "--model", str(seq_model_dir),
                        "--input", str(tmp_path / "nope.csv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such file" in r.stderr
    del main


def test_serve_command_refuses_a_missing_model(tmp_path):
    from deepids.errors import ModelFormatError

    r = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "nothing"), "--port", "0"])
    assert isinstance(r.exception, ModelFormatError)
    r = CliRunner().invoke(app, ["stream", "--model", str(tmp_path), "--input", "-", "--follow"])
    assert r.exit_code != 0


def test_ctrl_c_while_a_batch_is_scored_counts_it_once(seq_model, friday_path):
    """SIGINT arriving in the middle of a batch: that batch is finished and counted once, and the
    lines already read are scored after it (before, it was interrupted half-way and scored again)."""
    import os
    import signal

    scorer = LiveScorer(seq_model)
    score = scorer.score
    calls = []

    def interrupted_on_the_second_batch(items):
        calls.append(len(items))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)     # delivered to this (the main) thread, mid-batch
            time.sleep(0.05)
        return score(items)

    scorer.score = interrupted_on_the_second_batch
    scores = io.StringIO()
    summary = run_stream(scorer, friday_path, [MemorySink()], batch_size=37, scores_out=scores)
    numbers = [json.loads(line)["record"] for line in scores.getvalue().splitlines()]
    assert summary.interrupted and len(numbers) == len(set(numbers)) == summary.scored == summary.read
    assert numbers == list(range(len(numbers))) and sum(calls) == summary.read


def test_following_a_growing_nfdump_csv_scores_each_record_once(samples_dir, tmp_path):
    """`stream --follow` on a connection log written in pieces (nfdump CSV, its header first and
    its footer last): every record scored once, numbered as `score` numbers the whole file."""
    import gzip

    from deepids.io.connlogs import read_conn
    from deepids.models import IsolationForestDetector
    from deepids.scoring import ChunkScorer, scored_chunks

    src = samples_dir / "nfdump" / "lab_slice_nfdump.csv.gz"
    lines = gzip.open(src, "rb").read().decode().splitlines()[:301] + ["Summary", "flows,bytes,packets,a,b,c",
                                                                      "1,2,3,4,5,6"]
    whole = tmp_path / "whole.csv"
    whole.write_text("\n".join(lines) + "\n")
    model = IsolationForestDetector(n_estimators=10, seed=0).fit(read_conn(src)[0])
    scorer = ChunkScorer(model)
    want = pl.concat([scorer.frame(c, s) for c, s, _ in scored_chunks(model, [whole], scorer=scorer)])

    path = tmp_path / "growing.csv"
    path.write_text("\n".join(lines[:101]) + "\n")
    live = LiveScorer(model)
    scores, stop, result = io.StringIO(), threading.Event(), {}
    thread = threading.Thread(target=lambda: result.setdefault("s", run_stream(
        live, path, [MemorySink()], follow=True, flush_interval=0.05, poll_interval=0.02, stop=stop,
        scores_out=scores)))
    thread.start()
    try:
        for start in (101, 201):
            for _ in range(400):
                if live.metrics.records_received >= start - 1:
                    break
                time.sleep(0.025)
            with open(path, "a") as fh:
                fh.write("\n".join(lines[start:start + 100]) + "\n")
        with open(path, "a") as fh:
            fh.write("\n".join(lines[301:]) + "\n")
        for _ in range(400):
            if live.metrics.records_received >= 300:
                break
            time.sleep(0.025)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join(10)
    s = result["s"]
    got = [json.loads(ln) for ln in scores.getvalue().splitlines()]
    assert s.read == s.scored == want.height == 300 and s.ignored == {"nfdump summary footer lines": 3}
    assert [g["record"] for g in got] == want["record"].to_list()
    np.testing.assert_allclose([g["score"] for g in got], want["score"].to_numpy(), rtol=1e-5, atol=1e-6)
