"""`serve` and `stream` with a model trained on Windows event logs (the shipped OTRF recordings).

A small GAN is trained on two OTRF atomic folders (as tests/hunting does); the Empire discovery
recording it never saw is streamed, posted and nested into the Winlogbeat layout.
"""

from __future__ import annotations

import gzip
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from deepids.hunting.logs import read_log_features, score_events
from deepids.io.logs import R_FLOW_RECORD, R_NO_EVENT_ID
from deepids.serving import LiveScorer
from deepids.serving.alerts import MemorySink
from deepids.serving.service import create_app
from deepids.serving.stream import run_stream

with warnings.catch_warnings():      # starlette's notice about its httpx-based test client
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ATOMIC = Path(__file__).resolve().parents[2] / "data" / "samples" / "otrf" / "atomic"
# 633 real events of an Empire SAMR user enumeration (PowerShell, Security, Sysmon)
EMPIRE = ATOMIC / "discovery" / "empire_shell_samr_EnumDomainUsers_2020-09-21193527.json.gz"


@pytest.fixture(scope="module")
def log_model(one_thread):
    from deepids.models import MODELS

    _, features, _ = read_log_features([ATOMIC / "lateral_movement", ATOMIC / "execution"])
    return MODELS["gan"](epochs=2, verbose=False, seed=0).fit(features)


@pytest.fixture(scope="module")
def empire_events() -> list[dict]:
    return [json.loads(line) for line in gzip.open(EMPIRE, "rt").read().split("\n") if line.strip()]


@pytest.fixture(scope="module")
def empire_batch_scores(log_model):
    _, features, _ = read_log_features([EMPIRE])
    return score_events(log_model, features).score


def test_streaming_events_gives_the_batch_scores_and_alerts_name_host_and_user(
        log_model, empire_events, empire_batch_scores, tmp_path):
    path = tmp_path / "winlogbeat.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in empire_events))
    scorer = LiveScorer(log_model)
    assert scorer.kind.name == "windows-events"
    scores, sink = io.StringIO(), MemorySink()
    summary = run_stream(scorer, path, [sink], batch_size=100, scores_out=scores)
    got = [json.loads(line) for line in scores.getvalue().splitlines()]
    assert summary.format == "ndjson"
    assert summary.read == summary.scored == len(empire_events) == 633 and summary.rejected == {}
    assert [g["record"] for g in got] == list(range(633))
    np.testing.assert_allclose([g["score"] for g in got], empire_batch_scores, rtol=1e-5, atol=1e-6)
    flagged = empire_batch_scores > log_model.threshold_.value
    assert summary.alerts == len(sink.alerts) == int(flagged.sum()) > 0
    for alert in sink.alerts:
        original = empire_events[alert["deepids"]["record_number"]]
        assert alert["deepids"]["record"] == original
        assert alert["host"]["name"] == original["Hostname"].split(".")[0].upper()
        assert alert["event"]["kind"] == "alert" and alert["deepids"]["top_features"]
    with_user = [a for a in sink.alerts if "user" in a]
    assert with_user, "no alert names a user"
    for alert in with_user:
        original = json.dumps(empire_events[alert["deepids"]["record_number"]]).lower()
        assert alert["user"]["name"] in original


def test_posted_events_good_and_malformed_add_up(log_model, empire_events, empire_batch_scores):
    flow = {"Destination Port": 80, "Flow Duration": 1200, "Total Fwd Packets": 3}
    no_id = {k: v for k, v in empire_events[1].items() if k != "EventID"}
    bad_time = dict(empire_events[7], **{"@timestamp": 2 ** 70})
    body = [empire_events[0], "not an event", no_id, empire_events[2], flow, 42, empire_events[3], bad_time]
    scorer = LiveScorer(log_model)
    with TestClient(create_app(scorer)) as client:
        r = client.post("/v1/score", json=body)
        assert r.status_code == 200
        doc = r.json()
        # an epoch timestamp out of range is no time (counted as unparsed, as files read it): scored
        assert [x["record"] for x in doc["results"]] == [0, 3, 6, 7]
        np.testing.assert_allclose([x["score"] for x in doc["results"]][:3], empire_batch_scores[[0, 2, 3]],
                                   rtol=1e-5, atol=1e-6)
        assert set(doc["results"][0]) == {"record", "score", "is_anomaly", "threshold", "top_features"}
        rejected = {x["record"]: x for x in doc["rejected"]}
        assert sorted(rejected) == [1, 2, 4, 5] and doc["scored"] + doc["n_rejected"] == len(body)
        assert rejected[2]["field"] == "EventID" and rejected[2]["reason"] == R_NO_EVENT_ID
        assert rejected[4]["reason"] == R_FLOW_RECORD
        assert rejected[1]["reason"] == rejected[5]["reason"] == "not a JSON object"
        # NDJSON with a line that is not JSON
        nd = "\n".join([json.dumps(empire_events[4]), "{oops", json.dumps(empire_events[5])]) + "\n"
        r = client.post("/v1/score", content=nd, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 200 and [x["record"] for x in r.json()["results"]] == [0, 2]
        assert r.json()["rejected"][0]["record"] == 1
        # only flows: every record refused, 422 with reasons, never a 500
        r = client.post("/v1/score", json=[flow, flow])
        assert r.status_code == 422 and {x["reason"] for x in r.json()["rejected"]} == {R_FLOW_RECORD}
        info = client.get("/v1/model").json()
        assert info["records"] == "windows-events" and "event" in info["input_columns"]
        metrics = client.get("/metrics").text
    snap = scorer.metrics.snapshot()
    assert snap["records_received"] == len(body) + 3 + 2
    assert snap["records_scored"] + snap["records_rejected"] == snap["records_received"]
    assert snap["records_scored"] == 6 and snap["rejected_reasons"]["not a JSON object"] == 2
    assert "deepids_records_scored_total 6" in metrics


def _winlogbeat(flat: dict) -> dict:
    """The flat OTRF (NXLog) event nested as Winlogbeat ships it."""
    top = {"EventID", "Channel", "Hostname", "@timestamp", "SourceName", "RecordNumber", "EventType", "Message",
           "ExecutionProcessID"}
    outcome = {"AUDIT_FAILURE": "failure", "AUDIT_SUCCESS": "success"}.get(flat.get("EventType"))
    return {
        "@timestamp": flat["@timestamp"],
        "host": {"name": flat["Hostname"]},
        "event": {"code": str(flat["EventID"]), **({"outcome": outcome} if outcome else {})},
        "winlog": {"event_id": str(flat["EventID"]), "channel": flat["Channel"], "computer_name": flat["Hostname"],
                   "provider_name": flat.get("SourceName"), "record_id": flat.get("RecordNumber"),
                   "event_data": {k: v for k, v in flat.items() if k not in top}},
        "message": flat.get("Message"),
    }


def test_nested_winlogbeat_events_score_as_their_flat_form(log_model, empire_events):
    # Security process creations and Sysmon events, with users, images and command lines
    picked = [e for e in empire_events if e.get("EventID") in (4688, 4624, 1, 10)][:20]
    assert len(picked) >= 5
    scorer = LiveScorer(log_model)
    flat = scorer.score(picked)
    nested = scorer.score([_winlogbeat(e) for e in picked])
    odd = dict(_winlogbeat(picked[0]), event="not an object")     # an ECS `event` that is not an object
    assert len(scorer.score([odd]).index) == 1
    assert len(flat.index) == len(nested.index) == len(picked)
    np.testing.assert_allclose(nested.score, flat.score, rtol=1e-6)
    assert nested.top_features == flat.top_features
    assert nested.table.get_column("host").to_list() == flat.table.get_column("host").to_list()
    assert nested.table.get_column("user").to_list() == flat.table.get_column("user").to_list()


def test_an_event_sent_to_a_flow_model_is_rejected_with_a_reason(seq_model, empire_events):
    scorer = LiveScorer(seq_model)
    assert scorer.kind.name == "flows"
    with TestClient(create_app(scorer)) as client:
        r = client.post("/v1/score", json=empire_events[:2])
    assert r.status_code == 422
    assert [(x["record"], x["reason"]) for x in r.json()["rejected"]] == [(0, "missing field"), (1, "missing field")]
    assert r.json()["rejected"][0]["field"]


def test_stream_command_on_a_saved_log_model(log_model, empire_events, tmp_path):
    from typer.testing import CliRunner

    from deepids.cli import app

    log_model.save(tmp_path / "win")
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in empire_events[:200]) + "[1]\n")
    result = CliRunner().invoke(app, ["stream", "--model", str(tmp_path / "win"), "--threads", "0", "--input", str(path), "--alerts",
                                      str(tmp_path / "alerts.ndjson"), "--summary-json", str(tmp_path / "s.json")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["records_read"] == 201 and summary["records_scored"] == 200
    assert summary["rejected_reasons"] == {"not a JSON object": 1}
    alerts = [json.loads(x) for x in (tmp_path / "alerts.ndjson").read_text().splitlines()]
    assert len(alerts) == summary["alerts"]
    assert all(a["host"]["name"] and a["deepids"]["record"]["EventID"] for a in alerts)


def test_live_equals_batch_with_process_context(one_thread, empire_events):
    """A model trained with process-tree context: posting events in batches of 50 scores them as the
    batch path does (the live scorer carries the process table from batch to batch)."""
    from deepids.hunting.logs import fit_log_model, read_log_events
    from deepids.models import MODELS

    train, _ = read_log_events([ATOMIC / "lateral_movement", ATOMIC / "execution"])
    model = fit_log_model(MODELS["gan"](epochs=2, verbose=False, seed=0), train)
    _, features, _ = read_log_features([EMPIRE], model=model)
    batch = score_events(model, features).score
    scorer = LiveScorer(model)
    live = np.concatenate([scorer.score(empire_events[i:i + 50]).score for i in range(0, len(empire_events), 50)])
    np.testing.assert_allclose(live, batch, rtol=1e-5, atol=1e-6)
