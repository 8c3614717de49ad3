"""`deepids benchmark` on the real sample, in quick mode with a few models."""

import json

import polars as pl
import pytest

from deepids.datasets import holdout_split
from deepids.errors import ConfigError
from deepids.evaluation.benchmark import remove_leaked_duplicates, run_benchmark
from deepids.features.preprocess import feature_columns


def test_leaked_duplicates_are_removed_and_counted(flow_sample):
    train, test = holdout_split(flow_sample, seed=0)
    cleaned, removed = remove_leaked_duplicates(train, test)
    cols = feature_columns(train) + ["label"]
    train_rows = set(train.select(cols).iter_rows())
    expected = sum(row in train_rows for row in test.select(cols).iter_rows())
    assert removed == expected > 0 and cleaned.height == test.height - removed
    assert not set(cleaned.select(cols).iter_rows()) & train_rows


@pytest.fixture(scope="module")
def bench(tmp_path_factory, samples_dir):
    out = tmp_path_factory.mktemp("bench")
    result = run_benchmark(samples_dir / "cicids2017" / "cicids2017_sample.csv.gz", out,
                           models=["dense-ae", "dnn"], quick=True, verbose=False, info=lambda *_: None)
    return out, result


def test_benchmark_writes_every_output(bench):
    out, result = bench
    for name in ("results.md", "results.json", "report.html", "roc_pr.png", "confusion_matrices.png",
                 "score_histograms.png"):
        assert (out / name).stat().st_size > 500, name
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["models"]) == {"dense-ae", "dnn"}
    p = doc["protocol"]
    assert p["test_duplicates_of_training_rows_removed"] > 0 and p["sequence_length"] == 1
    for m in doc["models"].values():
        for key in ("accuracy", "loss", "recall", "precision", "f1", "roc_auc", "pr_auc", "per_label",
                    "train_seconds", "scoring_records_per_second"):
            assert key in m
    assert doc["models"]["dnn"]["accuracy"] > 0.95          # quick mode: 3 epochs
    md = (out / "results.md").read_text()
    assert "| dnn |" in md and "F-measure" in md and "Recall per attack label" in md
    assert "<table>" in (out / "report.html").read_text()


def test_cross_dataset_benchmark(tmp_path, samples_dir):
    result = run_benchmark(samples_dir / "cicids2017" / "cicids2017_sample.csv.gz", tmp_path,
                           test=[samples_dir / "cse-cic-ids2018" / "ids2018_sample.csv.gz"], models=["dnn"],
                           quick=True, verbose=False, info=lambda *_: None)
    assert result.protocol["test_records"] <= 502 and "test on" in result.protocol["split"]
    assert 0 <= result.models["dnn"]["roc_auc"] <= 1


def test_unknown_model_is_a_clear_error(tmp_path, samples_dir):
    with pytest.raises(ConfigError, match="unknown model"):
        run_benchmark(samples_dir / "cicids2017" / "cicids2017_sample.csv.gz", tmp_path, models=["svm"],
                      info=lambda *_: None)


def test_unlabelled_data_is_refused(tmp_path, flow_sample):
    path = tmp_path / "u.parquet"
    flow_sample.drop("label").write_parquet(path)
    from deepids.errors import InputError

    with pytest.raises(InputError, match="labelled"):
        run_benchmark(path, tmp_path / "o", models=["dnn"], info=lambda *_: None)
    assert not pl.read_parquet(path).is_empty()
