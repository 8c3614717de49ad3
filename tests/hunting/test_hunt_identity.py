"""`run_hunt` (what `deepids hunt` runs) gives the findings of `hunt` on the events held whole.

The reference holds every scored event's canonical fields (the `raw` fields dropped) with its
`process` and `process_tree`, as the one scorer gave them chunk by chunk, and hands them to
`hunt`; `run_hunt` must give the same JSON document and the same HTML report on the shipped OTRF
recordings (by host, user, process and tree) and on the shared OTRF recordings (by tree and by
host; skipped where ../shared/data is absent)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from deepids.hunting import hunt, write_hunt_report
from deepids.hunting.commands import run_hunt
from deepids.hunting.logs import attack_label_names, fit_log_model, otrf_root_of
from deepids.io.logs import read_events
from deepids.models import MODELS
from deepids.models.base import Scores
from deepids.scoring import ChunkScorer, check_kind, scored_chunks

pytestmark = pytest.mark.usefixtures("one_thread")
# what run_hunt adds to the summary beside what hunt gives
RUN_ONLY = ("read", "model", "attack_labels")


def hunt_whole(detector, data, **options):
    """The reference: every event's canonical fields held, then `hunt` (as run_hunt did before it read twice)."""
    scorer = ChunkScorer(detector, check_kind(detector, data))
    frames, parts = [], []
    for chunk, result, _ in scored_chunks(detector, data, scorer=scorer):
        if result is None:
            continue
        kept = chunk.drop("raw", strict=False)
        processes = getattr(scorer.state, "processes", None)
        frames.append(kept.with_columns(processes) if processes is not None else kept)
        parts.append(result)
    ferr = [p.feature_error for p in parts]
    scores = Scores(score=np.concatenate([p.score for p in parts]),
                    feature_error=None if any(f is None for f in ferr) else np.concatenate(ferr),
                    feature_names=list(parts[0].feature_names))
    root = otrf_root_of(data)
    return hunt(pl.concat(frames, how="vertical_relaxed"), scores,
                attack_labels=attack_label_names(root) if root else None,
                score_resolution=getattr(detector, "score_resolution", 0.0), **options)


def assert_same_hunt(detector, data, tmp_path, **options):
    expected = hunt_whole(detector, data, **options)
    got = run_hunt(detector, data, **options)
    want, have = expected.to_dict(), got.to_dict()
    assert have["findings"] == want["findings"]
    assert have["timeline"] == want["timeline"]
    assert {k: v for k, v in have["summary"].items() if k not in RUN_ONLY} == want["summary"]
    html = [write_hunt_report(r, tmp_path / f"{name}.html").read_text()
            for name, r in (("want", expected), ("have", got))]
    assert html[0] == html[1]
    return got


@pytest.fixture(scope="module")
def sample_model(samples_dir):
    """The default log model (event-rarity) trained on the shipped OTRF recordings."""
    events, _ = read_events(samples_dir / "otrf" / "atomic")
    return fit_log_model(MODELS["event-rarity"](verbose=False), events)


@pytest.fixture(scope="module")
def sample_gan(samples_dir):
    """A small GAN (per-feature errors: the findings' top features) trained on the shipped recordings."""
    events, _ = read_events(samples_dir / "otrf" / "atomic")
    return fit_log_model(MODELS["gan"](seed=0, epochs=2, verbose=False), events)


@pytest.mark.parametrize("by", ["host", "user", "process", "tree"])
def test_same_findings_on_the_shipped_recordings(sample_model, samples_dir, tmp_path, by):
    data = [samples_dir / "otrf" / "atomic"]
    got = assert_same_hunt(sample_model, data, tmp_path, by=by)
    assert got.findings and got.findings[0]["evidence"]
    assert any(f.get("attack_labels") for f in got.findings)
    if by in ("host", "user"):
        assert all(f["window_counts"]["events"] == f["events"] for f in got.findings)
    else:
        assert all(f["processes"] for f in got.findings)


@pytest.mark.parametrize("by", ["host", "tree"])
def test_same_findings_with_feature_errors(sample_gan, samples_dir, tmp_path, by):
    data = [samples_dir / "otrf" / "atomic"]
    got = assert_same_hunt(sample_gan, data, tmp_path, by=by, top=5, top_k=3, evidence=4, window="1m")
    assert all(f["top_features"] for f in got.findings)


@pytest.mark.parametrize("by", ["tree", "host"])
def test_same_findings_on_the_shared_recordings(sample_model, shared_data, tmp_path, by):
    atomic = shared_data / "logs" / "windows" / "otrf_security_datasets" / "atomic"
    if not atomic.is_dir():
        pytest.skip(f"{atomic} is absent")
    # nine recordings of three tactics, seven of them Empire ones (all 41 agree too, in about 35 s each)
    data = [atomic / tactic for tactic in ("discovery", "defense_evasion", "persistence")]
    got = assert_same_hunt(sample_model, data, tmp_path, by=by)
    assert len(got.findings) == 20 and got.summary["events"] > 10_000


def test_files_changed_between_the_reads(sample_model, samples_dir, tmp_path, monkeypatch):
    """The second read must see the events the first one scored: a recording that lost events
    in between is a one-line InputError, not findings described from the wrong events."""
    import gzip
    import shutil

    import deepids.hunting.commands as commands
    from deepids.errors import InputError

    source = next((samples_dir / "otrf" / "atomic").rglob("*.json.gz"))
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    first_read = commands.first_read

    def then_truncate(*args, **kwargs):
        read = first_read(*args, **kwargs)
        lines = gzip.open(copy, "rt", encoding="utf-8").read().splitlines(keepends=True)
        with gzip.open(copy, "wt", encoding="utf-8") as f:
            f.writelines(lines[: len(lines) // 2])
        return read

    monkeypatch.setattr(commands, "first_read", then_truncate)
    with pytest.raises(InputError, match="the files changed while being hunted"):
        run_hunt(sample_model, [copy], by="host")


@pytest.mark.parametrize("options", [{"by": "ip"}, {"top": 0}, {"top_k": 0}, {"window": "soon"}])
def test_options_refused_before_reading(sample_model, tmp_path, options):
    """A wrong option is refused before the files are read (here: a path that does not exist)."""
    from deepids.errors import ConfigError

    with pytest.raises(ConfigError):
        run_hunt(sample_model, [tmp_path / "absent"], **options)
