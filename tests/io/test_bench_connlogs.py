"""Smoke test of `python -m bench.connlogs` (reading speed per connection-log source)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_connlogs_smoke(tmp_path):
    out = tmp_path / "connlogs.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POLARS_MAX_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "bench.connlogs", "--records", "3000", "--batch-size", "1000",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert "RESAMPLED" in doc["input"] and set(doc["sources"]) == set(doc["inputs"])
    for source, r in doc["sources"].items():
        assert r["layout"] == source and r["rejected"] == 0
        assert r["records"] >= 2400 and r["records_per_s"] > 0 and r["peak_rss_mb"] > 0
