"""`deepids train` is strict: an option the chosen model does not take is an error naming it, an
option left out takes the model's own default, and composite models are configured by parts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from deepids.cli.configure import model_params
from deepids.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_cli import assert_user_error, run  # noqa: E402


@pytest.fixture(scope="module")
def sample(samples_dir) -> Path:
    return samples_dir / "cicids2017" / "cicids2017_sample.csv.gz"


def test_options_left_out_are_not_passed():
    assert model_params("lstm-ae", {}, verbose=False) == {"verbose": False}
    assert model_params("dnn", {"epochs": 4, "target": "family"}, verbose=True) == {
        "verbose": True, "epochs": 4, "target": "family"}


@pytest.mark.parametrize("model, given, named", [
    ("dnn", {"sequence_length": 20}, "--sequence-length"),
    ("dnn", {"threshold": "fpr"}, "--threshold"),
    ("random-forest", {"epochs": 3}, "--epochs"),
    ("lstm-ae", {"detector": "dnn"}, "--detector"),
    ("lstm-ae", {"members": 3}, "--members"),
    ("gan", {"entity": None}, "--entity"),
])
def test_an_option_the_model_does_not_take_is_named(model, given, named):
    with pytest.raises(ConfigError, match=f"^{named} does not apply to {model}"):
        model_params(model, given, verbose=False)


def test_threshold_options_must_match_the_method():
    with pytest.raises(ConfigError, match="--fpr applies with --threshold fpr"):
        model_params("lstm-ae", {"fpr": 0.02}, verbose=False)          # the model's default is percentile
    assert model_params("lstm-ae", {"threshold": "fpr", "fpr": 0.02}, verbose=False)["threshold_fpr"] == 0.02


def test_ensemble_members():
    assert model_params("lstm-ae-ensemble", {"members": 2}, verbose=False)["n_members"] == 2


def test_two_stage_passes_each_option_to_the_stages_that_take_it():
    p = model_params("two-stage", {"detector": "dnn", "classifier": "random-forest", "epochs": 2, "seed": 3},
                     verbose=False)
    assert p["detector"] == "dnn" and p["classifier"] == "random-forest" and p["seed"] == 3
    assert p["detector_params"] == {"epochs": 2} and "classifier_params" not in p    # forests have no epochs
    p = model_params("two-stage", {"detector": "lstm-ae", "sequence_length": 5, "threshold": "fpr"}, verbose=False)
    assert p["detector_params"] == {"sequence_length": 5, "threshold_method": "fpr"}
    with pytest.raises(ConfigError, match="--sequence-length does not apply to two-stage with --detector dnn"):
        model_params("two-stage", {"detector": "dnn", "sequence_length": 5}, verbose=False)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        model_params("two-stage", {"classifier": "nope"}, verbose=False)


@pytest.mark.parametrize("args, named", [
    (["--model", "dnn", "--sequence-length", "20"], "--sequence-length"),
    (["--model", "dnn", "--threshold", "fpr"], "--threshold"),
    (["--model", "dnn", "--chunk-rows", "10"], "--chunk-rows"),
    (["--model", "dense-ae", "--num-workers", "3"], "--num-workers applies with --engine ray"),
    (["--model", "dense-ae", "--context-flows", "5"], "--context-flows applies with --entity-context"),
    (["--model", "event-rarity"], "event-rarity reads Windows event logs (.evtx, JSON Lines), not flow files"),
])
def test_train_exits_2_naming_the_option_before_reading(args, named, sample, tmp_path):
    proc = run("train", "--data", sample, "--out", tmp_path / "m", *args)
    assert_user_error(proc, named)
    assert "read " not in proc.stderr and not (tmp_path / "m").exists()


def test_train_two_stage_with_a_dnn_detector(sample, tmp_path):
    proc = run("train", "--model", "two-stage", "--detector", "dnn", "--classifier", "dnn", "--epochs", "2",
               "--data", sample, "--out", tmp_path / "m", "--quiet")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    params = doc["hyperparameters"]
    assert params["detector"] == "dnn" and params["classifier"] == "dnn"
    assert params["detector_params"] == {"epochs": 2} and params["classifier_params"] == {"epochs": 2}
    stages = [s["hyperparameters"] for s in doc["state"]["stages"]]
    assert stages[0]["target"] == "binary" and stages[1]["target"] == "family"
    assert stages[0]["epochs"] == stages[1]["epochs"] == 2


def test_models_lists_every_registered_model_with_its_train_options():
    from deepids.models import MODELS

    proc = run("models", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    rows = {row["model"]: row for row in json.loads(proc.stdout)["models"]}
    assert list(rows) == list(MODELS)
    two = {p["name"]: p for p in rows["two-stage"]["parameters"]}
    assert rows["two-stage"]["kind"] == "two stages" and two["detector"]["option"] == "--detector"
    assert rows["dnn"]["kind"] == "classifier" and rows["lstm-ae"]["kind"] == "detector"
    lstm = {p["name"]: p for p in rows["lstm-ae"]["parameters"]}
    assert lstm["sequence_length"] == {"name": "sequence_length", "default": 10, "option": "--sequence-length"}


def test_column_choice_and_leakage_options_apply_to_flow_files_only(samples_dir, sample, tmp_path):
    """Event-log features are computed by deepids, not read from the user's columns: naming columns
    or asking for the leakage guard on logs is refused, as is --false-alarms when streaming."""
    logs = samples_dir / "evtx" / "new-user-security.evtx"
    for option in (["--drop-columns", "x"], ["--feature-columns", "x"], ["--strict-leakage"]):
        proc = run("train", "--data", logs, "--out", tmp_path / "m", "--model", "dense-ae", *option)
        assert_user_error(proc, "applies with flow files (not event logs)")
    proc = run("train", "--data", sample, "--out", tmp_path / "m", "--model", "dense-ae", "--stream",
               "--false-alarms", "50")
    assert_user_error(proc, "--false-alarms applies with flow files read at once")
    assert not (tmp_path / "m").exists()
