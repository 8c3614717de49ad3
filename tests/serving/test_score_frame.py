"""One score frame: `deepids score`, `stream` and `serve` name their output alike and number the
records alike, and event logs scored chunk by chunk give the whole-input scores."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from deepids.io.records import CsvLineParser
from deepids.scoring import SCORE_FIELDS, score_files
from deepids.serving import LiveScorer
from deepids.serving.service import create_app
from deepids.serving.stream import run_stream

with warnings.catch_warnings():      # starlette's notice about its httpx-based test client
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ATOMIC = Path(__file__).resolve().parents[2] / "data" / "samples" / "otrf" / "atomic"


def test_score_stream_and_serve_share_record_numbers_and_field_names(seq_model, friday_path, friday_lines,
                                                                     tmp_path):
    # a record with a word in a numeric column in the middle: it keeps its number everywhere
    bad = friday_lines[40].split(",")
    bad[7] = "oops"                                  # Flow Duration
    lines = [*friday_lines[:40], ",".join(bad), *friday_lines[40:80]]
    path = tmp_path / "flows.csv"
    path.write_text("\n".join(lines) + "\n")

    score_files(seq_model, path, tmp_path / "scores.jsonl", progress=False)
    scored = pl.read_ndjson(tmp_path / "scores.jsonl")
    streamed_out = io.StringIO()
    run_stream(LiveScorer(seq_model), path, scores_out=streamed_out, batch_size=17)
    streamed = [json.loads(x) for x in streamed_out.getvalue().splitlines()]
    records = CsvLineParser(lines[0]).parse(lines[1:])
    with TestClient(create_app(LiveScorer(seq_model))) as client:
        served = client.post("/v1/score", json=[r if isinstance(r, dict) else {"bad": 1} for r in records]).json()

    assert scored.columns[0] == "record" and scored.columns[-4:] == list(SCORE_FIELDS[1:])
    assert set(streamed[0]) - {"record_key"} == set(served["results"][0]) == set(SCORE_FIELDS)
    numbers = [*range(39), *range(40, 80)]         # record 39 is the rejected one, in all three
    assert scored["record"].to_list() == [x["record"] for x in streamed] == numbers
    assert [x["record"] for x in served["results"]] == numbers
    assert [(x["record"], x["reason"]) for x in served["rejected"]] == [(39, "non-numeric value")]
    np.testing.assert_allclose([x["score"] for x in streamed], scored["score"].to_list(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([x["score"] for x in served["results"]], scored["score"].to_list(),
                               rtol=1e-5, atol=1e-6)
    assert scored["is_anomaly"].dtype == pl.Boolean
    assert [x["is_anomaly"] for x in streamed] == scored["is_anomaly"].to_list()


@pytest.fixture(scope="module")
def log_model(one_thread):
    from deepids.hunting.logs import read_log_features
    from deepids.models import MODELS

    _, features, _ = read_log_features([ATOMIC / "lateral_movement"])
    return MODELS["gan"](epochs=2, verbose=False, seed=0).fit(features)


def test_event_logs_scored_in_chunks_equal_whole_scoring(log_model, tmp_path):
    from deepids.features.events import event_features
    from deepids.io.logs import read_events

    small = score_files(log_model, ATOMIC, tmp_path / "small.parquet", batch_size=97, progress=False)
    whole = score_files(log_model, ATOMIC, tmp_path / "whole.parquet", batch_size=10 ** 6, progress=False)
    a, b = pl.read_parquet(tmp_path / "small.parquet"), pl.read_parquet(tmp_path / "whole.parquet")
    assert small.records == whole.records == a.height == 2374
    assert a.equals(b)
    events, _ = read_events(ATOMIC, keep_raw=False)
    at_once = log_model.score_records(event_features(events)).score
    np.testing.assert_allclose(a["score"].to_numpy(), at_once, rtol=1e-6)
    assert a["record"].to_list() == list(range(a.height)) and a["is_anomaly"].dtype == pl.Boolean
    assert small.to_dict()["read"] == whole.to_dict()["read"]
