"""`deepids score --engine ray` and `deepids train --engine ray`, driven as a user types them.

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


def test_score_on_ray_from_the_command_line(samples_dir, tmp_path):
    from deepids.io import read_flows
    from deepids.models import DenseAutoencoder

    flows = samples_dir.parent / "lab" / "lab_flows.parquet"
    DenseAutoencoder(epochs=1, verbose=False).fit(read_flows(flows)[0].head(2_000)).save(tmp_path / "model")
    scored = deepids("score", "--engine", "ray", "--model", tmp_path / "model", "--data", flows,
                     "--out", tmp_path / "scores", "--actors", "1", "-q")
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "every record accounted for" in scored.stderr
    summary = json.loads((tmp_path / "scores" / "_summary.json").read_text())
    rows = pl.read_parquet(tmp_path / "scores" / "*.parquet")
    assert summary["counts_add_up"] and summary["records_scored"] == rows.height == 15_762
    assert rows.select(["source_file", "record"]).n_unique() == rows.height
    # train --engine ray runs train_ray (tests/distributed/test_ray_train.py); here only that the
    # command refuses what it cannot do before starting a cluster
    refused = deepids("train", "--engine", "ray", "--model", "dense-ae", "--data", flows, "--out", tmp_path / "m",
                      "--checkpoint-dir", tmp_path / "ck")
    assert refused.returncode == 2 and "local training" in refused.stderr and "Traceback" not in refused.stderr


def test_a_users_mistake_on_the_ray_engine_is_one_line(samples_dir, tmp_path):
    proc = deepids("score", "--engine", "ray", "--model", tmp_path / "absent", "--data", samples_dir,
                   "--out", tmp_path / "out")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = deepids("train", "--engine", "ray", "--model", "random-forest", "--data",
                   samples_dir / "cicids2017" / "cicids2017_sample.csv.gz", "--out", tmp_path / "m")
    assert proc.returncode == 2 and "autoencoders" in proc.stderr and "Traceback" not in proc.stderr
