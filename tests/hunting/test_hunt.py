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


@pytest.fixture(scope="module")
def sample_events(samples_dir):
    """The five shipped OTRF recordings together: three hosts, recordings on different days."""
    events, _ = read_events(samples_dir / "otrf" / "atomic")
    return events


def _continues(ranked: pl.DataFrame) -> list[bool]:
    """Per ranked finding: does its span overlap or touch a higher-ranked finding's on the same host?"""
    rows = ranked.select("entity", "window_start", "window_end").rows()
    return [any(h == rows[i][0] and s <= rows[i][2] and rows[i][1] <= e for h, s, e in rows[:i])
            for i in range(len(rows))]


def test_ties_show_new_host_and_time_before_continuations(sample_events):
    """Saturated scores (all within the tolerance): every finding that opens a new host-and-time comes
    before any second window of one already shown. In plain score order the second windows sit among
    the first ones and push other hosts and days down."""
    from deepids.hunting.hunt import rank_windows

    events = sample_events
    rng = np.random.default_rng(0)
    score = 30.0 + 1e-3 * rng.random(events.height)          # differences far below log10(2) / 10
    windows = window_scores(events, score, by="host", window="1m")
    assert windows.height > 10
    tolerance = np.log10(2) / 10
    ranked = rank_windows(windows, tolerance=tolerance)
    assert ranked.height == windows.height and set(ranked.get_column("window_start").to_list()) == set(
        windows.get_column("window_start").to_list())
    flags = _continues(ranked)
    first_continuation = flags.index(True)
    assert all(flags[first_continuation:])
    assert first_continuation >= len(windows.get_column("entity").unique()) + 1   # hosts, and days of one host
    by_name = windows.sort(["score", "entity", "window_start"], descending=[True, False, False])
    assert _continues(by_name).index(True) < first_continuation           # what the rule changes
    # exact ordering (tolerance 0): the scores alone decide
    assert rank_windows(windows).get_column("score").to_list() == sorted(windows.get_column("score").to_list(),
                                                                         reverse=True)
    # a score above the tie group ranks first, whatever it continues
    boosted = score.copy()
    best = ranked.row(ranked.height - 1, named=True)
    boosted[np.asarray(best["rows"])] += 1.0
    top = rank_windows(window_scores(events, boosted, by="host", window="1m"), tolerance=tolerance).row(0, named=True)
    assert (top["entity"], top["window_start"]) == (best["entity"], best["window_start"])
    with pytest.raises(ConfigError):
        rank_windows(windows, tolerance=-1.0)


def test_hunt_uses_the_model_resolution(sample_events):
    """`hunt` ranks as `rank_windows` with the model's resolution / top_k; the summary says so."""
    from deepids.hunting.hunt import rank_windows
    from deepids.models.rarity import SCORE_RESOLUTION, EventRarityDetector

    assert EventRarityDetector.score_resolution == SCORE_RESOLUTION == pytest.approx(np.log10(2))
    rng = np.random.default_rng(1)
    score = 30.0 + 1e-3 * rng.random(sample_events.height)
    result = hunt(sample_events, Scores(score=score), by="host", window="1m", top=8,
                  score_resolution=SCORE_RESOLUTION)
    expected = rank_windows(window_scores(sample_events, score, by="host", window="1m"),
                            tolerance=SCORE_RESOLUTION / 10).head(8)
    assert [(f["entity"], f["score"]) for f in result.findings] == [
        (e, round(s, 6)) for e, s in expected.select("entity", "score").rows()]
    assert "0.0301" in result.summary["ties"]
    plain = hunt(sample_events, Scores(score=score), by="host", window="1m", top=8)
    assert [f["score"] for f in plain.findings] == sorted([f["score"] for f in plain.findings], reverse=True)
