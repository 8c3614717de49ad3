"""Scoring on a local Ray cluster equals single-process scoring, record by record.

The cluster (`ray_cluster`, conftest.py) is started by deepids on loopback with 2 CPUs, token
authentication on. Skipped, saying why, when the `ray` extra is not installed.
"""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'deepids[ray]')")

from deepids.distributed.ray_score import SUMMARY_FILE, score_files_ray  # noqa: E402
from deepids.errors import ConfigError, InputError  # noqa: E402
from deepids.io import read_flows  # noqa: E402
from deepids.models import DenseAutoencoder, LSTMAutoencoder  # noqa: E402
from deepids.scoring import score_files  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
CHUNK = 4_000          # smaller than the lab files: entity histories cross chunk and file boundaries


@pytest.fixture(scope="module")
def flow_folder(tmp_path_factory, samples_dir):
    """Seven real flow files with source IPs and timestamps: the three lab runs and the
    GeneratedLabelledFlows samples."""
    folder = tmp_path_factory.mktemp("flows")
    root = samples_dir.parent
    for run in ("lab", "lab_dense", "lab_mistakes"):
        shutil.copy(root / run / "lab_flows.parquet", folder / f"{run}.parquet")
    for f in sorted((samples_dir / "cicids2017" / "GeneratedLabelledFlows").iterdir()):
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def training_rows(samples_dir):
    flows, _ = read_flows(samples_dir.parent / "lab" / "lab_flows.parquet")
    return flows.head(3_000)


def _saved(model, rows, path):
    model.fit(rows)
    return model.save(path)


def _single_process(model_dir, folder, tmp_path):
    from deepids.distributed.ray_score import input_files
    from deepids.models import load_model

    files = input_files(folder)
    out = tmp_path / "single.parquet"
    summary = score_files(load_model(model_dir), files, out, batch_size=CHUNK, progress=False)
    return files, pl.read_parquet(out), summary


def _cluster_in_file_order(out, files) -> pl.DataFrame:
    scored = pl.read_parquet(out / "*.parquet")
    order = pl.DataFrame({"source_file": files, "file_order": np.arange(len(files))})
    return scored.join(order, on="source_file").sort(["file_order", "record"])


def _assert_same_scores(model_dir, folder, tmp_path, **cluster_options):
    files, single, single_summary = _single_process(model_dir, folder, tmp_path)
    summary = score_files_ray(model_dir, folder, tmp_path / "cluster", chunk_rows=CHUNK, **cluster_options)
    cluster = _cluster_in_file_order(tmp_path / "cluster", files)
    assert summary.counts_add_up
    assert summary.records_scored == summary.records_read == single_summary.records == cluster.height
    assert summary.records_rejected == single_summary.read.n_rejected
    assert summary.alerts == single_summary.alerts
    for key in ("src_ip", "timestamp", "label"):
        assert cluster.get_column(key).equals(single.get_column(key)), key
    np.testing.assert_allclose(cluster["score"].to_numpy(), single["score"].to_numpy(), rtol=0, atol=1e-6)
    assert (cluster["is_anomaly"] == single["is_anomaly"]).all()
    # every record keyed by its file and its number in it: numbers run 0..n-1 in each file
    per_file = cluster.group_by("source_file").agg(pl.col("record").min().alias("lo"),
                                                   pl.col("record").max().alias("hi"), pl.len().alias("n"))
    assert (per_file["lo"] == 0).all() and (per_file["hi"] == per_file["n"] - 1).all()
    assert (tmp_path / "cluster" / SUMMARY_FILE).exists()
    return summary


def test_dense_autoencoder_scores_equal_single_process(ray_cluster, flow_folder, training_rows, tmp_path):
    model_dir = _saved(DenseAutoencoder(epochs=2, verbose=False), training_rows, tmp_path / "dense")
    summary = _assert_same_scores(model_dir, flow_folder, tmp_path, actors=2, cpus_per_actor=0.5)
    assert summary.partitions is None and summary.files == 7


def test_lstm_autoencoder_windows_of_10_per_source_ip_equal_single_process(ray_cluster, flow_folder, training_rows,
                                                                            tmp_path):
    model = LSTMAutoencoder(sequence_length=10, epochs=1, verbose=False)
    model_dir = _saved(model, training_rows, tmp_path / "lstm")
    summary = _assert_same_scores(model_dir, flow_folder, tmp_path, actors=2, cpus_per_actor=0.5, partitions=3)
    assert summary.partitions == 3


def test_a_users_mistake_is_a_deepids_error(ray_cluster, flow_folder, training_rows, tmp_path):
    model_dir = _saved(DenseAutoencoder(epochs=1, verbose=False), training_rows.head(500), tmp_path / "m")
    with pytest.raises(InputError, match="no such file"):
        score_files_ray(model_dir, tmp_path / "absent.csv", tmp_path / "out")
    with pytest.raises(InputError, match="no file matches"):
        score_files_ray(model_dir, str(tmp_path / "nothing-*.csv"), tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.parquet").write_bytes(b"")
    with pytest.raises(ConfigError, match="not empty"):
        score_files_ray(model_dir, flow_folder, tmp_path / "full")


def test_a_mistake_met_on_a_worker_reaches_the_caller_as_one_line(ray_cluster, flow_folder, training_rows, tmp_path,
                                                                  samples_dir):
    import gzip

    model_dir = _saved(DenseAutoencoder(epochs=1, verbose=False), training_rows.head(500), tmp_path / "m")
    folder = tmp_path / "flows"
    folder.mkdir()
    real = samples_dir / "cicids2017" / "GeneratedLabelledFlows" / "baseline_sqli.csv.gz"
    shutil.copy(real, folder / "a.csv.gz")
    with gzip.open(real, "rt") as fh:                        # the same real file cut to its header
        (folder / "b.csv").write_text(fh.readline())
    with pytest.raises(InputError, match="has a header but no data rows") as caught:
        score_files_ray(model_dir, folder, tmp_path / "out", actors=1, cpus_per_actor=0.5)
    assert "\n" not in str(caught.value)
