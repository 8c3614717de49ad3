"""Drive the real `deepids` command on the real samples shipped in data/samples."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepids", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2, one error line on stderr (the last; progress lines may precede it), no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("deepids: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def sample(samples_dir) -> Path:
    return samples_dir / "cicids2017" / "cicids2017_sample.csv.gz"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, samples_dir) -> Path:
    out = tmp_path_factory.mktemp("cli") / "flows"
    benign = samples_dir / "cicids2017" / "MachineLearningCVE" / "m1.csv.gz"
    proc = run("train", "--model", "lstm-ae", "--data", benign, "--data", samples_dir / "cicids2017" /
               "cicids2017_sample.csv.gz", "--out", out, "--sequence-length", "1", "--epochs", "3",
               "--batch-size", "128", "--seed", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "left out 1,577 attack records" in proc.stderr     # the sample's attack rows, counted
    return out


def test_train_writes_json_and_safetensors(model_dir):
    doc = json.loads((model_dir / "model.json").read_text())
    assert (model_dir / "weights.safetensors").exists()
    assert doc["hyperparameters"]["epochs"] == 3 and doc["hyperparameters"]["seed"] == 1
    assert doc["threshold"]["method"] == "percentile" and doc["threshold"]["params"] == {"percentile": 99.0}
    assert doc["training"]["attack_records_left_out"] == 1577


def test_evaluate_prints_table_and_writes_json(model_dir, sample, tmp_path):
    proc = run("evaluate", "--model", model_dir, "--data", sample, "--json", tmp_path / "m.json",
               "--plots", tmp_path / "plots", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "F-measure" in proc.stdout and "PortScan" in proc.stdout
    m = json.loads((tmp_path / "m.json").read_text())
    for key in ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "loss", "threshold", "n_records",
                "n_attacks", "per_label", "confusion_matrix"):
        assert key in m
    assert m["n_records"] == 8002 and m["n_attacks"] == 1577
    assert m["roc_auc"] > 0.7       # 3 epochs: a sanity floor; the quality floor is in tests/models
    assert (tmp_path / "plots" / "roc_pr.png").exists()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_score_writes_one_row_per_record(model_dir, samples_dir, tmp_path, suffix):
    data = samples_dir / "cicids2017" / "GeneratedLabelledFlows" / "baseline_portscan.csv.gz"
    out = tmp_path / f"scores{suffix}"
    proc = run("score", "--model", model_dir, "--data", data, "--out", out, "--batch-size", "300", "--quiet")
    assert proc.returncode == 0, proc.stderr
    df = {".csv": pl.read_csv, ".parquet": pl.read_parquet, ".jsonl": pl.read_ndjson}[suffix](out)
    assert df.height == 1000
    for col in ("record", "flow_id", "src_ip", "src_port", "dst_ip", "dst_port", "timestamp", "label", "score",
                "is_anomaly", "top_features"):
        assert col in df.columns
    assert df["record"].to_list() == list(range(1000))
    assert "scored 1,000 records" in proc.stderr and "rejected 0" in proc.stderr


def test_cross_dataset_scoring_uses_the_2018_names(model_dir, samples_dir, tmp_path):
    out = tmp_path / "s.csv"
    proc = run("score", "-m", model_dir, "-d", samples_dir / "cse-cic-ids2018" / "ids2018_sample.csv.gz",
               "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert pl.read_csv(out).height == 502


def test_inspect_json(sample, tmp_path):
    proc = run("inspect", sample, "--json", tmp_path / "i.json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads((tmp_path / "i.json").read_text())
    assert d["layout"] == "cicids2017" and d["records"] == 8002 and d["rejected"] == 0
    assert d["labels"]["benign"] == 6425 and d["labels"]["PortScan"] == 459
    table = run("inspect", sample)
    assert "cicids2017" in table.stdout and "PortScan" in table.stdout


def test_malformed_rows_are_rejected_counted_and_the_rest_scored(model_dir, sample, tmp_path):
    lines = gzip.open(sample, "rt").read().splitlines()
    bad = lines[:50]
    bad[10] = ",".join(bad[10].split(",")[:20])                       # truncated row
    fields = bad[20].split(",")
    fields[3] = "oops"
    bad[20] = ",".join(fields)                                        # text in a numeric column
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(bad) + "\n")
    out = tmp_path / "s.csv"
    proc = run("score", "-m", model_dir, "-d", path, "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "scored 47 records" in proc.stderr and "rejected 2" in proc.stderr
    assert pl.read_csv(out).height == 47


# ----------------------------------------------------------------- user mistakes
def test_missing_file(model_dir, tmp_path):
    assert_user_error(run("score", "-m", model_dir, "-d", tmp_path / "nope.csv", "-o", tmp_path / "s.csv"),
                      "nope.csv")


def test_empty_file(model_dir, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_user_error(run("evaluate", "-m", model_dir, "-d", empty), "empty.csv")


def test_unknown_layout(tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text("hello world\nthis is not a flow file\n")
    assert_user_error(run("inspect", odd), "odd.csv")


def test_evaluate_needs_labels(model_dir, sample, tmp_path):
    unlabelled = tmp_path / "unlabelled.csv"
    pl.read_csv(sample, infer_schema=False).drop(" Label").write_csv(unlabelled)
    assert_user_error(run("evaluate", "-m", model_dir, "-d", unlabelled), "label")


def test_columns_that_do_not_fit_the_model_are_named(model_dir, samples_dir, tmp_path):
    kdd = samples_dir / "nsl-kdd" / "KDDTest+.txt.gz"
    assert_user_error(run("score", "-m", model_dir, "-d", kdd, "-o", tmp_path / "s.csv"), "lacks", "Flow Duration")


def test_damaged_and_newer_models(model_dir, sample, tmp_path):
    import shutil

    newer = tmp_path / "newer"
    shutil.copytree(model_dir, newer)
    doc = json.loads((newer / "model.json").read_text())
    (newer / "model.json").write_text(json.dumps({**doc, "format_version": 7}))
    assert_user_error(run("evaluate", "-m", newer, "-d", sample), "format 7", "upgrade")
    (newer / "weights.safetensors").unlink()
    (newer / "model.json").write_text(json.dumps(doc))
    assert_user_error(run("evaluate", "-m", newer, "-d", sample), "weights.safetensors")
    assert_user_error(run("evaluate", "-m", tmp_path / "none", "-d", sample), "no model")


def test_bad_output_name_and_unknown_model(model_dir, sample, tmp_path):
    assert_user_error(run("score", "-m", model_dir, "-d", sample, "-o", tmp_path / "s.xlsx"), ".csv")
    assert_user_error(run("train", "--model", "transformer", "-d", sample, "-o", tmp_path / "m"), "unknown model")


def test_benchmark_command(sample, tmp_path):
    proc = run("benchmark", "-d", sample, "-o", tmp_path / "b", "--models", "dnn,random-forest", "--quick", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "test rows duplicating training rows removed" in proc.stderr and "results.md" in proc.stdout
    assert "| random-forest |" in (tmp_path / "b" / "results.md").read_text()
    assert (tmp_path / "b" / "report.html").exists()
    assert_user_error(run("benchmark", "-d", sample, "-o", tmp_path / "c", "--models", "svm"), "unknown model")


def test_train_classifier_on_unlabelled_data_is_refused(sample, tmp_path):
    unlabelled = tmp_path / "u.csv"
    pl.read_csv(sample, infer_schema=False).drop(" Label").write_csv(unlabelled)
    assert_user_error(run("train", "--model", "dnn", "-d", unlabelled, "-o", tmp_path / "m"), "need labels")


def test_train_streamed_from_files(samples_dir, sample, tmp_path):
    benign = samples_dir / "cicids2017" / "MachineLearningCVE" / "m1.csv.gz"
    proc = run("train", "--model", "dense-ae", "--stream", "--chunk-rows", "1500", "-d", benign, "-d", sample,
               "-o", tmp_path / "m", "--epochs", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "streamed in chunks of 1,500" in proc.stderr and "left out 1,577 attack records" in proc.stderr
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    t = doc["training"]
    assert t["train_windows"] + t["validation_windows"] + t["held_back_unused"] == t["benign_records"]
    assert t["benign_records"] + t["attack_records_left_out"] == t["records"]
    assert run("score", "-m", tmp_path / "m", "-d", sample, "-o", tmp_path / "s.csv", "-q").returncode == 0
    assert_user_error(run("train", "--model", "dnn", "--stream", "-d", sample, "-o", tmp_path / "c"), "--stream")
