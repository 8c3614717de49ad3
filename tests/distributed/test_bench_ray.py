"""Smoke test of bench/ray_score.py on a tiny input: it runs end to end and writes its JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'deepids[ray]')")

ROOT = Path(__file__).resolve().parents[2]


def test_bench_ray_score_smoke(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from bench import ray_score

    out = tmp_path / "ray_score.json"
    ray_score.main(["--rows", "3000", "--files", "2", "--modes", "single", "ray1", "--chunk-rows", "1000",
                    "--out", str(out)])
    result = json.loads(out.read_text())
    assert "RESAMPLED" in result["input"]
    assert [r["mode"] for r in result["runs"]] == ["single", "ray1"]
    assert all(r["records"] == 3000 and r["records_per_second"] > 0 for r in result["runs"])
    assert result["runs"][1]["ray_workers"] >= 1
