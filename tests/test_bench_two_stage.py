"""Smoke test of bench/two_stage.py (quick mode: 2 epochs, one family left out)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.usefixtures("one_thread")
def test_two_stage_bench_writes_json_with_every_variant(tmp_path):
    out = tmp_path / "two_stage.json"
    proc = subprocess.run([sys.executable, "-m", "bench.two_stage", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    variants = {"supervised/embedding", "supervised/confidence", "hybrid/embedding", "hybrid/confidence"}
    assert set(result["test"]["end_to_end"]) == variants and result["chosen"] in variants
    lofo = result["test"]["leave_one_family_out"]
    assert len(lofo) == 1 and all(v["flows"] >= 1 for v in lofo.values())
    assert "validation split of the training part" in result["protocol"]["tuning"]
    assert "| stage one / novelty |" in proc.stdout
