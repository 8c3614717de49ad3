"""Smoke tests of the hunting benches on the shipped OTRF samples (one Empire recording, four others)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, *args: str) -> None:
    """`python -m bench.<module> ...` from the repository root, as a user runs it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_hunt_loro_smoke(samples_dir, tmp_path):
    out = tmp_path / "loro.json"
    run_bench("hunt_loro", "--otrf", str(samples_dir / "otrf"), "--models", "rarity-baseline,context-rarity,event-rarity,gan",
              "--out", str(out))
    doc = json.loads(out.read_text())
    assert list(doc["folds"]) == ["T1087"]                       # the one labelled Empire recording's technique
    fold = doc["folds"]["T1087"]
    assert fold["train_recordings"] == 4                          # every other recording: no shared technique
    for model in ("rarity-baseline", "context-rarity", "event-rarity", "gan"):
        summary = doc["models"][model]["summary"]
        assert set(summary) == {"agent", "broad"}
        assert 0 <= summary["agent"]["min_event_roc_auc"] <= summary["agent"]["mean_event_roc_auc"] <= 1
    assert doc["attack_events"]["broad"] >= doc["attack_events"]["agent"] > 0
    assert doc["models"]["context-rarity"]["summary"]["agent"]["mean_event_roc_auc"] > 0.8
    assert doc["models"]["event-rarity"]["summary"]["agent"]["mean_event_roc_auc"] > 0.8


def test_hunt_all_smoke(samples_dir, tmp_path):
    out = tmp_path / "all.json"
    run_bench("hunt_all", "--otrf", str(samples_dir / "otrf"), "--top", "5", "--out", str(out))
    doc = json.loads(out.read_text())
    assert doc["recordings"] == 5 and set(doc["by"]) == {"tree", "host"}
    for by in ("tree", "host"):
        agent = doc["by"][by]["agent"]
        assert list(agent["best_rank_per_recording"]) == ["empire_shell_samr_EnumDomainUsers_2020-09-21193527.json.gz"]
        assert agent["in_top5"] + len(agent["missed"]) == 1
