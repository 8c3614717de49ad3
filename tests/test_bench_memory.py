"""Smoke test of bench/memory.py on the shipped samples, repeated twice (the figures themselves are
in README, measured with the defaults)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="GNU time (/usr/bin/time) is not installed")
def test_memory_bench_smoke(tmp_path):
    out = tmp_path / "memory.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "bench.memory", "--capture-copies", "2", "--log-copies", "2",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    flows, logs = doc["flows"]["runs"], doc["score_logs"]["runs"]
    # copies far apart in time: the same flows twice; the same events twice
    assert flows["x2"]["flows"] == 2 * flows["x1"]["flows"] > 0
    assert flows["x2"]["packets"] == 2 * flows["x1"]["packets"]
    assert logs["x2"]["events"] == 2 * logs["x1"]["events"] == 2 * 2374
    for part in ("flows", "score_logs"):
        assert doc[part]["ratio"] > 0 and all(r["peak_rss_mb"] > 0 for r in doc[part]["runs"].values())
