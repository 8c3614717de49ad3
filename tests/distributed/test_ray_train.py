"""Data-parallel training on a local Ray cluster (2 DDP workers, gloo) reaches single-process quality.

Skipped, saying why, when the `ray` extra is not installed or ../shared/data is absent.
"""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'deepids[ray]')")

from deepids.distributed.ray_train import batch_slices, train_ray  # noqa: E402
from deepids.errors import ConfigError  # noqa: E402
from deepids.models import DenseAutoencoder, IsolationForestDetector  # noqa: E402
from deepids.models.base import MODEL_JSON, WEIGHTS  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_two_workers_reach_the_single_process_validation_loss(ray_cluster, shared_data, tmp_path):
    data = shared_data / "flows" / "cicids2017" / "cicids2017_sample.csv.gz"
    options = dict(epochs=8, patience=8, verbose=False)
    single = DenseAutoencoder(**options).fit_files(data, chunk_rows=2_000, progress=False)
    cluster = train_ray(DenseAutoencoder(**options), data, tmp_path / "model", num_workers=2, chunk_rows=2_000)
    assert (tmp_path / "model" / MODEL_JSON).exists() and (tmp_path / "model" / WEIGHTS).exists()
    ours, theirs = (m.training_summary_ for m in (cluster, single))
    assert ours["distributed"]["workers"] == 2
    # the same held-back validation windows, so the two losses are measured on the same records
    assert ours["validation_windows"] == theirs["validation_windows"]
    assert ours["train_windows"] == theirs["train_windows"]
    best, reference = ours["history"]["best_val_loss"], theirs["history"]["best_val_loss"]
    assert abs(best - reference) <= 0.05 * reference, (best, reference)
    assert cluster.threshold_ is not None and cluster.feature_names_ == single.feature_names_


def test_every_worker_takes_every_step_on_its_slice_of_the_batch():
    batches = [(list(range(10)),), (list(range(10, 13)),), ([99],)]
    shares = [list(batch_slices(batches, rank, 3)) for rank in range(3)]
    assert [len(s) for s in shares] == [2, 2, 2]               # the 1-row batch is left out by all
    assert sum((s[0][0] for s in shares), []) == list(range(10))
    assert sum((s[1][0] for s in shares), []) == [10, 11, 12]


def test_only_autoencoders_train_on_the_cluster(tmp_path, samples_dir):
    data = samples_dir / "cicids2017" / "cicids2017_sample.csv.gz"
    with pytest.raises(ConfigError, match="autoencoders"):
        train_ray(IsolationForestDetector(), data, tmp_path / "m")
    with pytest.raises(ConfigError, match="best-f1"):
        train_ray(DenseAutoencoder(threshold_method="best-f1"), data, tmp_path / "m")


def test_the_cluster_survey_fits_features_on_the_chosen_columns(samples_dir):
    """`train --engine ray --feature-columns/--drop-columns`: the survey (pass 1, a Ray task) fits
    the preprocessor every worker uses on the columns the command chose; default, the roles'."""
    from deepids.distributed.ray_train import _survey
    from deepids.features.preprocess import feature_columns, fit_preprocessor
    from deepids.io import read_flows
    from deepids.io.roles import select_columns
    from deepids.models.base import benign_training_rows

    data = [str(samples_dir / "cicids2017" / "cicids2017_sample.csv.gz")]
    chosen = ["Flow Duration", "Total Fwd Packets", "Total Backward Packets"]
    survey = _survey(data, None, None, 2_000, 5_000, 0, 3.0, chosen)
    # what the same choice gives a table read at once: the chosen columns, and the destination
    # port (metadata) as a value and its rarity; no rarity of a feature left out (the TCP windows)
    table = select_columns(read_flows(data)[0], feature_columns=chosen)
    in_memory = fit_preprocessor(benign_training_rows(table)[0], feature_columns(table))
    assert survey["preprocessor"]["numeric_"] == in_memory.numeric_ == [*chosen, "dst_port rarity", "dst_port"]
    default = _survey(data, None, None, 2_000, 5_000, 0, 3.0)
    assert len(default["preprocessor"]["numeric_"]) > 60 and "label" not in default["preprocessor"]["numeric_"]
