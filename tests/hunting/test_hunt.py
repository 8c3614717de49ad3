"""`hunt` findings and the HTML report on real OTRF events."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from deepids.errors import ConfigError
from deepids.hunting import EVIDENCE_FIELDS, hunt, window_scores, write_hunt_report
from deepids.hunting.logs import attack_label_names
from deepids.io.logs import read_events
from deepids.io.otrf import empire_attack_labels, read_otrf_index, recording_agents
from deepids.models.base import Scores


@pytest.fixture(scope="module")
def labelled(samples_dir):
    root = samples_dir / "otrf"
    empire = next(r for r in read_otrf_index(root) if r.is_empire)
    events, _ = read_events(root / empire.file)
    return root, events, empire_attack_labels(events, recording_agents(root, empire))


def test_findings_shape_and_order(labelled, tmp_path):
    root, events, y = labelled
    rng = np.random.default_rng(0)
    # scores that know the labels, to check the plumbing (ranking, evidence, features), not a model
    score = y + 0.1 * rng.random(len(y))
    ferr = np.c_[y, 1 - y].astype(np.float32)
    result = hunt(events, Scores(score=score, feature_error=ferr, feature_names=["a", "b"]), by="host",
                  window="5m", top=3, attack_labels=attack_label_names(root))
    f = result.findings
    assert [x["rank"] for x in f] == list(range(1, len(f) + 1)) and len(f) <= 3
    assert f[0]["entity"] == "WORKSTATION5" and f[0]["entity_type"] == "host"
    assert [x["score"] for x in f] == sorted([x["score"] for x in f], reverse=True)
    for key in ("rank", "entity", "entity_type", "window_start", "window_end", "score", "top_features", "evidence"):
        assert key in f[0]
    assert f[0]["top_features"][0]["feature"] == "a"
    assert f[0]["window_counts"]["events"] == f[0]["events"] and f[0]["window_counts"]["process_created"] > 0
    ev = f[0]["evidence"][0]
    assert set(EVIDENCE_FIELDS) <= set(ev) and ev["record_id"] is not None
    assert f[0]["attack_labels"] == ["Empire Net Domain Users (T1087.002; TA0007)"]
    doc = json.loads(json.dumps(result.to_dict()))
    assert set(doc["timeline"]) == set(events.get_column("host").unique())
    html = write_hunt_report(result, tmp_path / "hunt.html").read_text()
    assert "<svg" in html and "WORKSTATION5" in html and "Evidence" in html


def test_window_scores_cover_every_event(labelled):
    _, events, y = labelled
    w = window_scores(events, y.astype(float), by="user", window="1m", top_k=3)
    assert w.get_column("events").sum() == events.filter(pl.col("user").is_not_null()).height
    # the events without a user are in no window: counted in the summary, not lost
    summary = hunt(events, Scores(score=y.astype(float)), by="user", window="1m").summary
    assert summary["events_in_no_window"] == events.filter(pl.col("user").is_null()).height > 0
    with pytest.raises(ConfigError):
        window_scores(events, y, by="ip")
    with pytest.raises(ConfigError):
        hunt(events, Scores(score=y.astype(float)), top=0)


def test_evidence_shows_each_kind_of_event_first(labelled):
    """The highest-scored event of each kind (channel, event id) comes first, then the rest by score."""
    from deepids.hunting.hunt import evidence_rows

    _, events, _ = labelled
    kind = [f"{c}/{e}" for c, e in zip(events["channel"].to_list(), events["event_id"].to_list())]
    common = max(set(kind), key=kind.count)
    # the most common kind scores highest: plain score order would show nothing else
    score = np.array([2.0 + i / len(kind) if k == common else i / len(kind) for i, k in enumerate(kind)])
    rows = np.arange(events.height)
    shown = evidence_rows(events, rows, score, 10)
    assert len(shown) == 10 and len(set(shown.tolist())) == 10 and shown[0] == int(np.argmax(score))
    shown_kinds = [kind[i] for i in shown]
    assert len(set(shown_kinds)) == min(10, len(set(kind)))          # one of each kind before any repeat
    firsts = [score[i] for i in shown[:len(set(shown_kinds))]]
    assert firsts == sorted(firsts, reverse=True)
    assert evidence_rows(events, rows[:3], score, 10).tolist() == sorted(rows[:3], key=lambda i: -score[i])
    assert len(evidence_rows(events, rows, score, 0)) == 0
