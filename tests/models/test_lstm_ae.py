"""The LSTM autoencoder on real CICIDS2017 flows: quality floor, persistence, contract."""

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import roc_auc_score

from deepids.datasets import holdout_split
from deepids.errors import ConfigError, ModelFormatError, SchemaError
from deepids.io import read_flows
from deepids.models import LSTMAutoencoder, LSTMAutoencoderNet, load_model

# Measured ROC-AUC on this split: 0.941 (seed 0); 0.923-0.941 over seeds 0-2. The floor leaves that spread.
ROC_AUC_FLOOR = 0.92


@pytest.fixture(scope="module")
def split(flow_sample):
    return holdout_split(flow_sample)


@pytest.fixture(scope="module")
def fitted(split):
    train, _ = split
    return LSTMAutoencoder(sequence_length=1, verbose=False).fit(train)


def test_network_has_the_published_shape():
    net = LSTMAutoencoderNet(n_features=78, sequence_length=10)
    assert (net.encoder.hidden_size, net.decoder.hidden_size) == (64, 32)
    assert net.decoder.input_size == 64 and net.output.out_features == 78
    assert net(torch.zeros(5, 10, 78)).shape == (5, 10, 78)


def test_quality_floor_on_held_out_real_flows(fitted, split):
    _, test = split
    y = (test["label"] != "benign").to_numpy()
    scores = fitted.score_samples(test)
    assert len(scores) == test.height                       # every record is scored
    assert roc_auc_score(y, scores) >= ROC_AUC_FLOOR
    pred = fitted.predict(test)
    assert pred[~y].mean() < 0.03                           # the 99th-percentile threshold holds on benign
    assert pred[y].mean() > 0.25


def test_training_leaves_attacks_out_and_says_so(fitted, split):
    train, _ = split
    s = fitted.training_summary_
    assert s["attack_records_left_out"] == int((train["label"] != "benign").sum())
    assert s["benign_records"] + s["attack_records_left_out"] == train.height
    assert fitted.threshold_.method == "percentile" and fitted.threshold_.n_scores == s["validation_windows"]


def test_save_load_gives_identical_scores(fitted, split, tmp_path):
    _, test = split
    fitted.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["class"] == "LSTMAutoencoder" and doc["format_version"] == 1
    assert doc["threshold"]["method"] == "percentile" and doc["hyperparameters"]["sequence_length"] == 1
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(fitted.score_samples(test), again.score_samples(test))
    assert again.threshold_ == fitted.threshold_


def test_windowed_model_chunked_scoring_matches_whole_table(split):
    train, test = split
    model = LSTMAutoencoder(sequence_length=4, epochs=1, verbose=False, entity="dst_port").fit(train[:1500])
    whole = model.score_records(test)
    history = model.new_history()
    parts = [model.score_chunk(test[i:i + 333], history).score for i in range(0, test.height, 333)]
    np.testing.assert_allclose(np.concatenate(parts), whole.score, rtol=1e-5, atol=1e-6)
    assert len(whole.top_features(3)[0]) == 3


def test_cross_dataset_columns_fit(fitted, ids2018_sample):
    scores = fitted.score_samples(ids2018_sample)
    assert len(scores) == ids2018_sample.height and np.isfinite(scores).all()


def test_missing_columns_are_a_clear_error(fitted, split):
    _, test = split
    with pytest.raises(SchemaError, match="lacks 2 column"):
        fitted.score_samples(test.drop("Flow Duration", "Flow IAT Max"))


@pytest.mark.parametrize("kwargs", [{"sequence_length": 0}, {"score_mode": "median"}, {"validation_fraction": 1.5},
                                    {"objective": "all"}, {"objective": "last", "score_mode": "window"}])
def test_bad_hyperparameters(kwargs, split):
    with pytest.raises(ConfigError):
        LSTMAutoencoder(verbose=False, **kwargs).fit(split[0])


def test_too_few_benign_records(split):
    train, _ = split
    with pytest.raises(SchemaError, match="benign records"):
        LSTMAutoencoder(verbose=False).fit(train.filter(pl.col("label") != "benign"))


def test_damaged_and_newer_model_directories(fitted, tmp_path):
    path = fitted.save(tmp_path / "m")
    doc = json.loads((path / "model.json").read_text())
    (path / "model.json").write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(ModelFormatError, match="format 99"):
        load_model(path)
    (path / "model.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="damaged"):
        load_model(path)
    (path / "model.json").write_text(json.dumps(doc))
    (path / "weights.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelFormatError, match="damaged"):
        load_model(path)
    with pytest.raises(ModelFormatError, match="no model"):
        load_model(tmp_path / "nowhere")


def test_same_seed_same_model(split):
    train, test = split
    a = LSTMAutoencoder(sequence_length=1, epochs=1, verbose=False, seed=3).fit(train[:2000])
    b = LSTMAutoencoder(sequence_length=1, epochs=1, verbose=False, seed=3).fit(train[:2000])
    np.testing.assert_array_equal(a.score_samples(test), b.score_samples(test))


@pytest.mark.parametrize("method, check", [
    ("best-f1", lambda t: t.method == "best-f1" and 0 < t.params["f1"] <= 1),
    ("fpr", lambda t: t.method == "fpr" and t.params == {"fpr": 0.05}),
    ("fixed", lambda t: t.method == "fixed" and t.value == 0.25),
])
def test_threshold_strategies_travel_with_the_model(split, method, check, tmp_path):
    train, _ = split
    model = LSTMAutoencoder(sequence_length=1, epochs=1, verbose=False, threshold_method=method,
                            threshold_fpr=0.05, threshold_value=0.25).fit(train[:2500])
    assert check(model.threshold_)
    assert load_model(model.save(tmp_path / "m")).threshold_ == model.threshold_


@pytest.mark.parametrize("score_mode", ["last", "window"])
def test_fast_windowed_scoring_equals_the_plain_network(split, score_mode, monkeypatch):
    """Scoring shares the encoder's input projection across overlapping windows (and projects the
    decoder's repeated input once): the scores must be those of `forward` on each window."""
    train, test = split
    model = LSTMAutoencoder(sequence_length=5, epochs=1, verbose=False, score_mode=score_mode).fit(train[:1500])
    fast = model.score_records(test)
    monkeypatch.setattr(LSTMAutoencoderNet, "supports_windowed_inference", lambda self: False)
    plain = model.score_records(test)
    np.testing.assert_allclose(fast.score, plain.score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.loss, plain.loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.feature_error, plain.feature_error, rtol=1e-5, atol=1e-6)


def test_windowed_inference_reconstructs_like_forward():
    torch.manual_seed(0)
    net = LSTMAutoencoderNet(n_features=12, sequence_length=6).eval()
    X = torch.randn(50, 12)
    idx = torch.from_numpy(np.clip(np.arange(50)[:, None] + np.arange(-5, 1)[None, :], 0, None))
    with torch.inference_mode():
        whole = net(X[idx])
        reconstruct = net.windowed_inference(X)
        torch.testing.assert_close(reconstruct(idx, False), whole, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(reconstruct(idx, True), whole[:, -1], rtol=1e-5, atol=1e-6)


def test_scoring_threads_do_not_change_scores(split):
    """Batches run on Python threads (one torch thread each) when torch has several threads."""
    from deepids.models.training import torch_threads

    train, test = split
    model = LSTMAutoencoder(sequence_length=3, epochs=1, verbose=False).fit(train[:1500])
    with torch_threads(1):
        one = model._score_windows(model.preprocessor_.transform(test), model._window_index(test), batch_size=256)
    with torch_threads(2):
        two = model._score_windows(model.preprocessor_.transform(test), model._window_index(test), batch_size=256)
    np.testing.assert_array_equal(one.score, two.score)
    np.testing.assert_array_equal(one.feature_error, two.feature_error)


LAB_RUN = Path(__file__).resolve().parents[2] / "data" / "lab_mistakes"


@pytest.fixture(scope="module")
def lab_time_split():
    """A committed lab run: train on the benign-only time before the first attack, test after it."""
    manifest = json.loads((LAB_RUN / "manifest.json").read_text())
    first = min(e["start"] for e in manifest["schedule"] if e["start"])
    cut = datetime.fromtimestamp(first, timezone.utc).replace(tzinfo=None)
    flows, _ = read_flows(LAB_RUN / "lab_flows.parquet")
    flows = flows.sort("timestamp", maintain_order=True)
    return flows.filter(pl.col("timestamp") < cut), flows, (flows["timestamp"] >= cut).to_numpy()


def test_sequences_per_host_beat_single_flows_on_scans_in_the_lab(lab_time_split, tmp_path):
    """Windows of 10 flows per source host, trained on the newest step (objective "last"),
    against one flow at a time, on the lab run whose benign users also hit closed ports.

    lab/compare.py (epochs until early stopping, seeds 0-2): overall 0.990 against 0.981, port
    scans 0.998 against 0.961-0.974. The published objective (every step) stays near 0.81.
    """
    train, flows, is_test = lab_time_split
    labels = flows["label"].to_numpy()[is_test]
    attack = labels != "benign"
    scans = (labels == "PortScan") | ~attack

    def fit_and_score(**kw):
        model = LSTMAutoencoder(epochs=150, patience=20, verbose=False, **kw).fit(train)
        return model, model.score_samples(flows)

    model, scores = fit_and_score(sequence_length=10, objective="last")
    _, single = fit_and_score(sequence_length=1, entity=None)
    assert roc_auc_score(attack, scores[is_test]) >= 0.97
    seq_scans = roc_auc_score(labels[scans] == "PortScan", scores[is_test][scans])
    one_scans = roc_auc_score(labels[scans] == "PortScan", single[is_test][scans])
    assert seq_scans >= 0.99 and seq_scans > one_scans + 0.01

    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.objective == "last"
    np.testing.assert_array_equal(loaded.score_samples(flows), scores)


def test_training_streamed_from_a_file_in_chunks(split, tmp_path):
    """`fit_files` reads the file in chunks every epoch; quality stays near the in-memory fit.

    Measured on this split (T=1): 0.931 with chunks of 1,000 (in memory: 0.941).
    """
    train, test = split
    train.write_parquet(tmp_path / "train.parquet")
    model = LSTMAutoencoder(sequence_length=1, verbose=False).fit_files(tmp_path / "train.parquet", chunk_rows=1000)
    s = model.training_summary_
    assert s["attack_records_left_out"] == int((train["label"] != "benign").sum())
    assert s["train_windows"] + s["validation_windows"] + s["held_back_unused"] == s["benign_records"]
    assert s["read"]["records"] == train.height
    y = (test["label"] != "benign").to_numpy()
    scores = model.score_samples(test)
    assert roc_auc_score(y, scores) >= 0.90
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(load_model(tmp_path / "m").score_samples(test), scores)
    with pytest.raises(ConfigError, match="best-f1"):
        LSTMAutoencoder(sequence_length=1, epochs=1, threshold_method="best-f1",
                        verbose=False).fit_files(tmp_path / "train.parquet", chunk_rows=1000)


def test_training_objective_follows_the_score_mode_unless_set():
    assert LSTMAutoencoder().training_objective() == "last"
    assert LSTMAutoencoder(score_mode="window").training_objective() == "window"
    assert LSTMAutoencoder(objective="window").training_objective() == "window"
