"""The real `deepids` command on a UNSW-NB15-shaped table of real records: roles shown by
`inspect`, a planted leak named before training, the expected rates printed by `train`, and
`evaluate` counting records the model was trained on."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepids", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


GENERIC = ("--layout", "generic", "--label-column", "attack_cat")


@pytest.fixture(scope="module")
def leaky_csv(unsw_shaped_csv, tmp_path_factory):
    path = tmp_path_factory.mktemp("leak") / "unsw_leak.csv"
    table = pl.read_csv(unsw_shaped_csv)
    table.with_columns((pl.col("label") * 1.0).alias("score_x")).write_csv(path)   # the 0/1 label, renamed
    return path


def test_inspect_says_which_columns_are_features_and_why(unsw_shaped_csv):
    proc = run("inspect", unsw_shaped_csv, *GENERIC, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    roles = {r["column"]: r for r in json.loads(proc.stdout)["columns"]}
    assert roles["id"]["role"] == "identifier" and "row or flow id" in roles["id"]["reason"]
    assert roles["label.1"]["role"] == "excluded" and "label-like" in roles["label.1"]["reason"]
    assert roles["proto"]["role"] == "feature" and "one-hot" in roles["proto"]["reason"]
    shown = run("inspect", unsw_shaped_csv, *GENERIC)
    assert "not features" in shown.stdout and "id: identifier" in shown.stdout


def test_a_planted_leak_is_named_before_training_and_strict_refuses(leaky_csv, tmp_path):
    proc = run("train", "-d", leaky_csv, *GENERIC, "--model", "dnn", "--epochs", "2", "-q", "-o", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    warning = proc.stderr.index("possible label leak: column 'score_x'")
    assert warning < proc.stderr.index("trained dnn")                 # reported before training
    strict = run("train", "-d", leaky_csv, *GENERIC, "--model", "dnn", "-q", "-o", tmp_path / "s", "--strict-leakage")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert strict.stderr.strip().splitlines()[-1].startswith("deepids: error: possible label leak")
    assert "'score_x'" in strict.stderr and not (tmp_path / "s").exists()
    dropped = run("train", "-d", leaky_csv, *GENERIC, "--model", "dnn", "--epochs", "2", "-q", "-o", tmp_path / "d",
                  "--strict-leakage", "--drop-columns", "score_x")
    assert dropped.returncode == 0, dropped.stderr


def test_train_prints_expected_rates_and_evaluate_counts_training_rows(unsw_shaped_csv, tmp_path):
    proc = run("train", "-d", unsw_shaped_csv, *GENERIC, "--model", "dnn", "--epochs", "5", "-q",
               "-o", tmp_path / "m", "--false-alarms", "100")
    assert proc.returncode == 0, proc.stderr
    assert "at most 100 false alarms per 10,000 benign flows" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("expected at this threshold") and "false alarms per 10,000" in last and "detected" in last
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["training"]["expected_at_threshold"]["validation_records"] > 0
    ev = run("evaluate", "-m", tmp_path / "m", "-d", unsw_shaped_csv, *GENERIC, "-q", "--json", tmp_path / "e.json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads((tmp_path / "e.json").read_text())["duplicates_of_training_rows"] == 3000
    assert "3,000 of the 3,000 evaluated records repeat a training row" in ev.stderr
    odd = tmp_path / "odd.csv"        # the same columns, but sbytes written with its unit: text, not numbers
    pl.read_csv(unsw_shaped_csv).with_columns(pl.format("{} B", pl.col("sbytes")).alias("sbytes")).write_csv(odd)
    other = run("evaluate", "-m", tmp_path / "m", "-d", odd, *GENERIC, "-q")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "'sbytes' held numbers when the model was trained and hold text here" in other.stderr


def test_feature_columns_choice_and_mistakes(unsw_shaped_csv, tmp_path):
    proc = run("train", "-d", unsw_shaped_csv, *GENERIC, "--model", "dnn", "--epochs", "2", "-q", "-o", tmp_path / "m",
               "--feature-columns", "dur,proto,sbytes,dbytes")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["state"]["input_columns"] == ["dur", "sbytes", "dbytes", "proto"]
    bad = run("train", "-d", unsw_shaped_csv, *GENERIC, "--model", "dnn", "-q", "-o", tmp_path / "b",
              "--feature-columns", "dur,id")
    assert bad.returncode == 2 and "'id', which cannot be a feature" in bad.stderr


def test_two_stage_options_from_the_command_line(samples_dir, tmp_path):
    sample = samples_dir / "cicids2017" / "cicids2017_sample.csv.gz"
    proc = run("train", "-d", sample, "--model", "two-stage", "--stage-one", "supervised", "--novelty", "confidence",
               "--epochs", "2", "-q", "-o", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    params = json.loads((tmp_path / "m" / "model.json").read_text())["hyperparameters"]
    assert (params["stage_one"], params["novelty"], params["detector"]) == ("supervised", "confidence", "dnn")
    assert proc.stderr.strip().splitlines()[-1].startswith("expected at this threshold")
    bad = run("train", "-d", sample, "--model", "two-stage", "--stage-one", "both", "-q", "-o", tmp_path / "b")
    assert bad.returncode == 2 and "stage_one" in bad.stderr and "Traceback" not in bad.stderr
    other = run("train", "-d", sample, "--model", "dnn", "--stage-one", "hybrid", "-q", "-o", tmp_path / "c")
    assert other.returncode == 2 and "--stage-one does not apply to dnn" in other.stderr


def test_streamed_training_guards_leaks_and_takes_the_column_choice(leaky_csv, tmp_path):
    """`train --stream` reads the files in chunks: the guard runs on a sample of every chunk and the
    column choice is decided on the first, before any training, as for a table read at once."""
    base = ("train", "-d", leaky_csv, *GENERIC, "--model", "dense-ae", "--stream", "--chunk-rows", "700",
            "--epochs", "1", "-q")
    proc = run(*base, "-o", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.index("possible label leak: column 'score_x'") < proc.stderr.index("streamed in chunks")
    strict = run(*base, "-o", tmp_path / "s", "--strict-leakage")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert strict.stderr.strip().splitlines()[-1].startswith("deepids: error: possible label leak")
    assert not (tmp_path / "s").exists()
    dropped = run(*base, "-o", tmp_path / "d", "--strict-leakage", "--drop-columns", "score_x")
    assert dropped.returncode == 0, dropped.stderr
    columns = json.loads((tmp_path / "d" / "model.json").read_text())["state"]["input_columns"]
    assert "score_x" not in columns and "sbytes" in columns
    chosen = run(*base, "-o", tmp_path / "f", "--feature-columns", "dur,proto,sbytes,dbytes")
    assert chosen.returncode == 0, chosen.stderr
    doc = json.loads((tmp_path / "f" / "model.json").read_text())
    assert doc["state"]["input_columns"] == ["dur", "sbytes", "dbytes", "proto"]
    bad = run(*base, "-o", tmp_path / "b", "--feature-columns", "dur,id")
    assert bad.returncode == 2 and "'id', which cannot be a feature" in bad.stderr
