"""`deepids train --engine ray` and `deepids score --engine ray`, driven as a user types them.

Each command starts its own local Ray cluster on loopback. Skipped, saying why, without the ray extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'deepids[ray]')")


def deepids(*args):
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    return subprocess.run([sys.executable, "-m", "deepids", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)


def test_train_and_score_on_ray_from_the_command_line(samples_dir, tmp_path):
    flows = samples_dir.parent / "lab" / "lab_flows.parquet"
    trained = deepids("train", "--engine", "ray", "--num-workers", "2", "--model", "dense-ae", "--data", flows,
                      "--out", tmp_path / "model", "--epochs", "1", "--chunk-rows", "5000", "-q")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "trained on 2 Ray workers" in trained.stderr
    scored = deepids("score", "--engine", "ray", "--model", tmp_path / "model", "--data", flows,
                     "--out", tmp_path / "scores", "--actors", "1", "-q")
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "every record accounted for" in scored.stderr
    summary = json.loads((tmp_path / "scores" / "_summary.json").read_text())
    rows = pl.read_parquet(tmp_path / "scores" / "*.parquet")
    assert summary["counts_add_up"] and summary["records_scored"] == rows.height == 15_762
    assert rows.select(["source_file", "record"]).n_unique() == rows.height


def test_a_users_mistake_on_the_ray_engine_is_one_line(samples_dir, tmp_path):
    proc = deepids("score", "--engine", "ray", "--model", tmp_path / "absent", "--data", samples_dir,
                   "--out", tmp_path / "out")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = deepids("train", "--engine", "ray", "--model", "random-forest", "--data", samples_dir, "--out", tmp_path / "m")
    assert proc.returncode == 2 and "autoencoders" in proc.stderr and "Traceback" not in proc.stderr
