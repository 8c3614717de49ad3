"""LSTM-AE ensemble and the two-stage model on real CICIDS2017 flows."""

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from deepids.datasets import holdout_split
from deepids.errors import ConfigError, SchemaError
from deepids.evaluation import family_metrics
from deepids.features.families import UNKNOWN_ANOMALY, attack_families
from deepids.models import LSTMAutoencoderEnsemble, TwoStageDetector, load_model


@pytest.fixture(scope="module")
def split(flow_sample):
    return holdout_split(flow_sample)


@pytest.fixture(scope="module")
def ensemble(split):
    return LSTMAutoencoderEnsemble(n_members=3, sequence_length=1, verbose=False).fit(split[0])


def test_ensemble_floor_and_members_share_one_validation_split(ensemble, split):
    _, test = split
    y = (test["label"] != "benign").to_numpy()
    # measured with 5 members: 0.936 (mean aggregate); 3 members: ~0.935
    assert roc_auc_score(y, ensemble.score_samples(test)) >= 0.92
    masks = [m.validation_mask(ensemble.training_summary_["benign_records"]) for m in ensemble.members_]
    assert all((mask == masks[0]).all() for mask in masks)
    assert len({m.seed for m in ensemble.members_}) == 3


def test_ensemble_round_trip_and_chunks(ensemble, split, tmp_path):
    _, test = split
    again = load_model(ensemble.save(tmp_path / "e"))
    whole = ensemble.score_samples(test)
    np.testing.assert_array_equal(again.score_samples(test), whole)
    history = again.new_history()
    parts = [again.score_chunk(test[i:i + 700], history).score for i in range(0, test.height, 700)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6)


def test_ensemble_rejects_bad_settings(split):
    with pytest.raises(ConfigError):
        LSTMAutoencoderEnsemble(aggregate="vote", verbose=False).fit(split[0])
    with pytest.raises(ConfigError):
        LSTMAutoencoderEnsemble(n_members=2, sequence_lengths=[1], verbose=False).fit(split[0])


@pytest.fixture(scope="module")
def two_stage(split):
    # stage one a binary DNN here, to test stage two's naming on most attacks quickly
    return TwoStageDetector(detector="dnn", verbose=False).fit(split[0])


def test_two_stage_names_families(two_stage, split, tmp_path):
    _, test = split
    scores = two_stage.score_records(test)
    fm = family_metrics(test["label"].to_numpy(), scores.predicted, min_support=10)
    assert set(fm["macro_f1_families"]) == {"Brute Force", "DDoS", "DoS", "PortScan"}
    assert fm["macro_f1"] >= 0.90            # measured 0.958 with a DNN stage one (the demo split, seed 42)
    again = load_model(two_stage.save(tmp_path / "t"))
    np.testing.assert_array_equal(again.score_records(test).predicted, scores.predicted)


def test_unseen_family_is_never_named_and_low_confidence_is_unknown(split):
    train, test = split
    fams = attack_families(train["label"].to_numpy())
    without_ddos = train.filter(pl.Series(fams != "DDoS"))
    model = TwoStageDetector(detector="dnn", min_confidence=0.9, verbose=False).fit(without_ddos)
    assert "DDoS" not in model.classifier_.classes_
    ddos = test.filter(pl.Series(attack_families(test["label"].to_numpy()) == "DDoS"))
    names = model.score_records(ddos).predicted
    assert "DDoS" not in set(names.tolist())
    # measured: ~15 % of the unseen DDoS flows come out unknown-anomaly; most flagged ones are
    # named DoS (both are HTTP floods), the rest pass stage one as benign
    model.min_confidence = 1.01                  # nothing is confident enough: every flagged record is unknown
    flagged = model.score_records(ddos)
    named = flagged.predicted[flagged.score > model.threshold_.value]
    assert len(named) and (named == UNKNOWN_ANOMALY).all()


def test_two_stage_needs_labels(split):
    with pytest.raises(SchemaError, match="needs labels"):
        TwoStageDetector(verbose=False).fit(split[0].drop("label"))
