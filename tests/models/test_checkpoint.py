"""Training that can resume: a run stopped after epoch 3 (an exception, or kill -9) and resumed from its
checkpoint ends where an uninterrupted run with the same seed ends (validation loss within 1e-4, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from deepids.errors import ConfigError, ModelFormatError
from deepids.models import MODELS
from deepids.models.checkpoint import CHECKPOINT

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = {
    "lstm-ae": {"epochs": 6, "patience": 10, "sequence_length": 3, "encoder_units": 8, "decoder_units": 4},
    "dnn": {"epochs": 5, "patience": 10, "hidden": (16, 8)},
    "gan": {"epochs": 5, "patience": 10, "latent_steps": 2, "generator_hidden": (16, 16),
            "discriminator_hidden": (16, 8), "encoder_hidden": (16,)},
}


class Stop(Exception):
    pass


def stop_after(epoch: int):
    def progress(report):
        if report.epoch == epoch:
            raise Stop
    return progress


@pytest.fixture(scope="module")
def train(flow_sample):
    return flow_sample[np.sort(np.random.default_rng(0).permutation(flow_sample.height)[:1500])]


@pytest.fixture(scope="module")
def events(samples_dir):
    from deepids.features.events import event_features
    from deepids.io.logs import read_events

    return event_features(read_events(samples_dir / "otrf")[0])[:1000]


def _assert_same_run(resumed, uninterrupted):
    a, b = resumed.training_summary_["history"], uninterrupted.training_summary_["history"]
    assert len(a["val_loss"]) == len(b["val_loss"])
    np.testing.assert_allclose(a["val_loss"], b["val_loss"], atol=1e-4)
    assert abs(a["best_val_loss"] - b["best_val_loss"]) <= 1e-4 and a["best_epoch"] == b["best_epoch"]
    assert a["resumed_from_epoch"] == 3


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_stopped_after_epoch_3_and_resumed_ends_like_an_uninterrupted_run(name, train, events, tmp_path):
    data = events if name == "gan" else train
    cls = MODELS[name]
    uninterrupted = cls(**SETTINGS[name], verbose=False).fit(data)
    with pytest.raises(Stop):
        cls(**SETTINGS[name], verbose=False).fit(data, checkpoint_dir=tmp_path, progress=stop_after(3))
    assert (tmp_path / CHECKPOINT).is_file()
    seen = []
    resumed = cls(**SETTINGS[name], verbose=False).fit(data, checkpoint_dir=tmp_path, resume=True,
                                                       progress=lambda r: seen.append(r.epoch))
    assert seen == list(range(4, SETTINGS[name]["epochs"] + 1))          # only the epochs left ran
    _assert_same_run(resumed, uninterrupted)
    test = data[1000:1300] if name != "gan" else data[:300]
    np.testing.assert_allclose(resumed.score_samples(test), uninterrupted.score_samples(test), rtol=1e-4, atol=1e-5)


def test_killed_with_sigkill_in_epoch_4_resumes_to_the_same_validation_loss(train, samples_dir, tmp_path):
    """A real kill -9 of the training process, after the checkpoint of epoch 3 was written."""
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from deepids.io import read_flows
        from deepids.models import MODELS
        table = read_flows({str(samples_dir / "cicids2017" / "cicids2017_sample.csv.gz")!r})[0]
        train = table[np.sort(np.random.default_rng(0).permutation(table.height)[:1500])]
        def progress(report):
            if report.epoch == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        MODELS["lstm-ae"](**{SETTINGS["lstm-ae"]!r}, verbose=False).fit(
            train, checkpoint_dir={str(tmp_path)!r}, progress=progress)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == -9, run.stderr[-2000:]
    resumed = MODELS["lstm-ae"](**SETTINGS["lstm-ae"], verbose=False).fit(train, checkpoint_dir=tmp_path, resume=True)
    uninterrupted = MODELS["lstm-ae"](**SETTINGS["lstm-ae"], verbose=False).fit(train)
    _assert_same_run(resumed, uninterrupted)


def test_resume_with_other_settings_or_a_damaged_checkpoint_is_a_clear_error(train, tmp_path):
    settings = {**SETTINGS["dnn"], "epochs": 2}
    MODELS["dnn"](**settings, verbose=False).fit(train, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="another training run.*hidden"):
        MODELS["dnn"](**{**settings, "hidden": (8,)}, verbose=False).fit(train, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="another training run"):
        MODELS["dnn"](**settings, verbose=False).fit(train[:1000], checkpoint_dir=tmp_path, resume=True)
    data = (tmp_path / CHECKPOINT).read_bytes()
    (tmp_path / CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="checkpoint"):
        MODELS["dnn"](**settings, verbose=False).fit(train, checkpoint_dir=tmp_path, resume=True)


def test_resume_without_a_checkpoint_starts_afresh_and_more_epochs_continue(train, tmp_path):
    settings = {**SETTINGS["dnn"], "epochs": 2}
    first = MODELS["dnn"](**settings, verbose=False).fit(train, checkpoint_dir=tmp_path, resume=True)
    assert "resumed_from_epoch" not in first.training_summary_["history"]
    longer = MODELS["dnn"](**{**settings, "epochs": 4}, verbose=False).fit(train, checkpoint_dir=tmp_path, resume=True)
    assert longer.training_summary_["history"]["resumed_from_epoch"] == 2
    assert len(longer.training_summary_["history"]["val_loss"]) == 4


def test_composite_models_checkpoint_each_member(train, tmp_path):
    ensemble = MODELS["lstm-ae-ensemble"](n_members=2, epochs=1, sequence_length=2, verbose=False)
    ensemble.fit(train, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member0", "member1"]
    assert all((tmp_path / m / CHECKPOINT).is_file() for m in ("member0", "member1"))


def test_the_threshold_can_change_on_resume(train, tmp_path):
    """The threshold is chosen after training, so a resumed run may choose it differently."""
    MODELS["dense-ae"](epochs=2, hidden=(8,), verbose=False).fit(train, checkpoint_dir=tmp_path)
    again = MODELS["dense-ae"](epochs=2, hidden=(8,), threshold_method="fpr", verbose=False).fit(
        train, checkpoint_dir=tmp_path, resume=True)
    assert again.threshold_.method == "fpr" and again.training_summary_["history"]["resumed_from_epoch"] == 2
