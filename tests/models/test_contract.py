"""The model contract, checked over every registered model (as river/checks and sklearn's test_common).

Adding a model means adding its tiny settings to `TINY` (a test fails until you do); then
these checks are the checklist: it fits on a small real sample, save -> load gives identical
scores, scoring in chunks (with the history carried across them) equals scoring the whole
table, bad parameters fail before any training, and an unfitted model raises NotFittedError.
Flow models train on the shipped CICIDS2017 sample; the GAN, made for event logs, on the
shipped OTRF Windows events.
"""

from __future__ import annotations

import numpy as np
import pytest

from deepids.errors import ConfigError, DeepidsError, NotFittedError
from deepids.models import MODELS, load_model
from deepids.models.base import BaseDetector

pytestmark = pytest.mark.usefixtures("one_thread")

# the smallest settings that still train each model on a real sample (seconds, not minutes)
TINY = {
    "lstm-ae": {"epochs": 2, "sequence_length": 3, "encoder_units": 8, "decoder_units": 4},
    "dense-ae": {"epochs": 2, "hidden": (16, 8, 16)},
    "lstm-ae-ensemble": {"n_members": 2, "epochs": 1, "sequence_length": 3},
    "dnn": {"epochs": 2, "hidden": (16, 8)},
    "cnn": {"epochs": 1},
    "random-forest": {"n_estimators": 5, "n_jobs": 1},
    "iforest": {"n_estimators": 10, "n_jobs": 1},
    "two-stage": {"detector": "dense-ae", "classifier": "random-forest",
                  "detector_params": {"epochs": 1, "hidden": [8]}, "classifier_params": {"n_estimators": 5, "n_jobs": 1}},
    "context": {"detector": "dense-ae", "detector_params": {"epochs": 1, "hidden": [8]}, "last_flows": 5},
    "gan": {"epochs": 1, "latent_steps": 2, "generator_hidden": (16, 16), "discriminator_hidden": (16, 8),
            "encoder_hidden": (16,)},
    "event-rarity": {},
}
EVENT_MODELS = {"gan"}
CONTEXT_MODELS = {"event-rarity"}     # read events with their process-tree context (EventContext)


@pytest.fixture(scope="module")
def flows(flow_sample):
    """(train, test): 1,500 and 600 real flows drawn with a seed; test in time order for chunking."""
    order = np.random.default_rng(0).permutation(flow_sample.height)
    train = flow_sample[np.sort(order[:1500])]
    test = flow_sample[np.sort(order[1500:2100])]
    return train, test.sort("timestamp", maintain_order=True, nulls_last=True) if "timestamp" in test.columns else test


@pytest.fixture(scope="module")
def events(samples_dir):
    from deepids.features.events import event_features
    from deepids.io.logs import read_events

    table = event_features(read_events(samples_dir / "otrf")[0])
    return table[:1200], table[1200:1800]


@pytest.fixture(scope="module")
def context_events(samples_dir):
    """The same events with process-tree context and rarity fitted on the first 1,200."""
    from deepids.features.events import EventContext
    from deepids.io.logs import read_events

    raw = read_events(samples_dir / "otrf")[0]
    context = EventContext.fit(raw[:1200])
    table = context.features(raw)
    return table[:1200], table[1200:1800]


@pytest.fixture(scope="module")
def data(flows, events, context_events):
    return lambda name: context_events if name in CONTEXT_MODELS else events if name in EVENT_MODELS else flows


@pytest.fixture(scope="module")
def fitted(data):
    cache: dict[str, BaseDetector] = {}

    def get(name: str) -> BaseDetector:
        if name not in cache:
            cache[name] = MODELS[name](**TINY[name], verbose=False).fit(data(name)[0])
        return cache[name]

    return get


def test_every_registered_model_has_tiny_settings_and_constraints():
    assert set(TINY) == set(MODELS), "add the new model's tiny settings to TINY"
    for name, cls in MODELS.items():
        unchecked = [p for p in cls._param_names() if p not in cls._parameter_constraints]
        assert not unchecked, f"{name}: parameters without a constraint: {unchecked}"
        assert cls.model_name == name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_then_save_load_gives_identical_scores(name, fitted, data, tmp_path):
    model = fitted(name)
    test = data(name)[1]
    scores = model.score_records(test)
    assert len(scores.score) == test.height and np.isfinite(scores.score).all()
    assert model.threshold_ is not None and np.isfinite(model.threshold_.value)
    again = load_model(model.save(tmp_path / name))
    assert type(again) is type(model) and again.threshold_ == model.threshold_
    np.testing.assert_array_equal(again.score_records(test).score, scores.score)
    np.testing.assert_array_equal(again.predict(test), model.predict(test))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_scoring_in_chunks_equals_scoring_the_whole_table(name, fitted, data):
    model = fitted(name)
    test = data(name)[1]
    whole = model.score_records(test).score
    history = model.new_history()
    parts = [model.score_chunk(test[i:i + 97], history).score for i in range(0, test.height, 97)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-5, atol=1e-6)


def _bad_parameters(cls) -> list[dict]:
    """Values each model must refuse when fit starts: the threshold's, and common ones."""
    params = set(cls._param_names())
    bad = [{"seed": -1}, {"verbose": "yes"}]
    if "threshold_method" in params:
        bad += [{"threshold_percentile": 150}, {"threshold_percentile": 0}, {"threshold_fpr": 1.0},
                {"threshold_method": "fixed"}, {"threshold_method": "magic"}]
    if "epochs" in params:
        bad += [{"epochs": 0}, {"batch_size": 2.5}]
    if "device" in params:
        bad += [{"device": "tpu"}]
    if cls.model_name == "two-stage":
        bad += [{"detector": "nope"}, {"classifier": "lstm-ae"}, {"detector_params": {"epochs": 0}},
                {"detector_params": {"threshold_percentile": 150}}, {"detector_params": {"no_such": 1}}]
    if cls.model_name == "lstm-ae-ensemble":
        bad += [{"n_members": 2, "sequence_lengths": [3]}, {"objective": "everything"}]
    return bad


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bad_parameters_fail_before_any_training(name, data, monkeypatch):
    started = []
    for cls in MODELS.values():       # composite models train members: no class may start
        monkeypatch.setattr(cls, "_fit", lambda self, *a, **k: started.append(type(self).__name__))
    cls = MODELS[name]
    train = data(name)[0]
    for bad in _bad_parameters(cls):
        with pytest.raises(ConfigError):
            cls(**{**TINY[name], **bad}).fit(train)
        assert started == [], f"{name} started training with {bad}"


@pytest.mark.parametrize("name", sorted(n for n, c in MODELS.items() if "threshold_method" in c._param_names()))
def test_best_f1_without_labelled_attacks_fails_before_training(name, data, monkeypatch):
    cls = MODELS[name]
    started = []
    monkeypatch.setattr(cls, "_fit", lambda self, *a, **k: started.append(1))
    train = data(name)[0]
    benign_only = train.drop("label") if "label" in train.columns else train
    with pytest.raises(ConfigError, match="best-f1"):
        cls(**TINY[name], threshold_method="best-f1").fit(benign_only)
    assert started == []


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_unfitted_model_raises_not_fitted(name, data, tmp_path):
    model = MODELS[name](**TINY[name])
    test = data(name)[1]
    for call in (lambda: model.score_records(test), lambda: model.predict(test),
                 lambda: model.score_chunk(test, None), lambda: model.save(tmp_path / "m")):
        with pytest.raises(NotFittedError):
            call()
    assert issubclass(NotFittedError, DeepidsError) and not issubclass(NotFittedError, ConfigError)


def test_best_f1_is_calibrated_once_for_every_detector(flows):
    """The base chooses best-f1 on held-back benign scores and the attack records' scores."""
    train, _ = flows
    model = MODELS["dense-ae"](**TINY["dense-ae"], threshold_method="best-f1", verbose=False).fit(train)
    assert model.threshold_.method == "best-f1"
    n_attacks = int((train["label"] != "benign").sum())
    assert model.threshold_.n_scores == model.training_summary_["validation_windows"] + n_attacks
