"""Loading a model from a stranger: every tampered directory is one ModelFormatError, never a crash later."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from deepids.errors import ModelFormatError
from deepids.models import DenseAutoencoder, load_model
from deepids.models.base import MODEL_JSON, WEIGHTS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(flow_sample, tmp_path_factory):
    """A real model directory (a small dense autoencoder on the CICIDS2017 sample)."""
    model = DenseAutoencoder(epochs=1, hidden=(16, 8, 16), verbose=False).fit(flow_sample[:1500])
    return model.save(tmp_path_factory.mktemp("model") / "m")


@pytest.fixture
def copy(saved, tmp_path):
    target = tmp_path / "m"
    shutil.copytree(saved, target)
    return target


def _edit(directory, change):
    doc = json.loads((directory / MODEL_JSON).read_text())
    change(doc)
    (directory / MODEL_JSON).write_text(json.dumps(doc))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(threshold=None), "no threshold"),
    (lambda d: d.update(threshold="high"), "threshold is a mapping"),
    (lambda d: d["threshold"].update(value="0.5"), "finite number"),
    (lambda d: d["threshold"].update(value=True), "finite number"),
    (lambda d: d["threshold"].update(method="magic"), "threshold method"),
    (lambda d: d["hyperparameters"].update(epochs="ten"), "epochs must be"),
    (lambda d: d["hyperparameters"].update(hidden=[28_000, 8, 16]), "shape"),
    (lambda d: d["hyperparameters"].update(hidden=[10**9]), "hidden must be"),
    (lambda d: d["hyperparameters"].update(device=5), "device must be"),
    (lambda d: d["hyperparameters"].update(threshold_percentile=150), "threshold_percentile"),
    (lambda d: d["state"].update(error_scale=[1.0]), "error_scale"),
    (lambda d: d["state"].pop("preprocessor"), "damaged"),
    (lambda d: d.update(format_version="1"), "format_version"),
    (lambda d: d.update(format_version=99), "upgrade deepids"),
    (lambda d: d.update(hyperparameters=[]), "hyperparameters"),
    (lambda d: d.update({"class": 7}), "class missing"),
])
def test_a_tampered_document_is_one_clear_error(copy, change, message):
    _edit(copy, change)
    with pytest.raises(ModelFormatError, match=message):
        load_model(copy)


def test_deep_nesting_is_refused(copy):
    original = (copy / MODEL_JSON).read_text()
    text = json.dumps(json.loads(original))[:-1] + ', "deep": ' + "[" * 10_000 + "]" * 10_000 + "}"
    (copy / MODEL_JSON).write_text(text)
    with pytest.raises(ModelFormatError, match="nested deeper"):
        load_model(copy)
    (copy / MODEL_JSON).write_text(original)
    nested: list = []
    for _ in range(70):
        nested = [nested]
    _edit(copy, lambda d: d["state"].update(deep=nested))
    with pytest.raises(ModelFormatError, match="nested deeper"):
        load_model(copy)


def test_cuda_on_a_cpu_host_falls_back_to_the_cpu_with_a_warning(copy, flow_sample, caplog):
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    _edit(copy, lambda d: d["hyperparameters"].update(device="cuda"))
    with caplog.at_level(logging.WARNING, logger="deepids"):
        scores = load_model(copy).score_samples(flow_sample[:50])
    assert np.isfinite(scores).all()
    assert any("not available on this host" in r.getMessage() for r in caplog.records)


def test_truncated_weights_are_refused(copy):
    data = (copy / WEIGHTS).read_bytes()
    for cut in (4, 8 + 10, len(data) // 2, len(data) - 1):
        (copy / WEIGHTS).write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match="damaged"):
            load_model(copy)


def test_an_oversized_header_is_refused_before_it_is_read(copy):
    data = (copy / WEIGHTS).read_bytes()
    (copy / WEIGHTS).write_bytes(struct.pack("<Q", 2**40) + data[8:])
    with pytest.raises(ModelFormatError, match="header declares"):
        load_model(copy)


def test_a_header_that_points_past_the_file_is_refused(copy):
    data = (copy / WEIGHTS).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"][1] += 10**9
    raw = json.dumps(header).encode()
    (copy / WEIGHTS).write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    with pytest.raises(ModelFormatError, match="past the end"):
        load_model(copy)


def test_nan_weights_are_refused(copy):
    tensors = load_file(str(copy / WEIGHTS))
    name = next(iter(tensors))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(copy / WEIGHTS))
    with pytest.raises(ModelFormatError, match="NaN"):
        load_model(copy)


def test_a_symlink_out_of_the_directory_is_refused(copy, saved, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.copy(saved / MODEL_JSON, outside)
    (copy / MODEL_JSON).unlink()
    (copy / MODEL_JSON).symlink_to(outside)
    with pytest.raises(ModelFormatError, match="leads out of the model directory"):
        load_model(copy)
    (copy / MODEL_JSON).unlink()
    (copy / MODEL_JSON).symlink_to("/dev/zero")
    with pytest.raises(ModelFormatError, match="leads out of the model directory"):
        load_model(copy)


def test_a_fifo_or_a_directory_in_place_of_a_file_is_refused(copy):
    (copy / MODEL_JSON).unlink()
    os.mkfifo(copy / MODEL_JSON)
    with pytest.raises(ModelFormatError, match="not a regular file"):
        load_model(copy)
    (copy / MODEL_JSON).unlink()
    (copy / MODEL_JSON).mkdir()
    with pytest.raises(ModelFormatError, match="not a regular file"):
        load_model(copy)


def test_the_untampered_copy_still_loads(copy, saved, flow_sample):
    np.testing.assert_array_equal(load_model(copy).score_samples(flow_sample[:100]),
                                  load_model(saved).score_samples(flow_sample[:100]))


def test_absurd_work_declared_in_model_json_is_refused():
    """Parameters a stranger could use to make loading or scoring hang (10^8 latent steps, huge windows)."""
    from deepids.errors import ConfigError
    from deepids.models import GANDetector, LSTMAutoencoder

    with pytest.raises(ConfigError, match="latent_steps"):
        GANDetector(latent_steps=10**8)._validate_params()
    with pytest.raises(ConfigError, match="sequence_length"):
        LSTMAutoencoder(sequence_length=10**8)._validate_params()


@pytest.mark.parametrize("tamper", ["symlink", "threshold", "truncated"])
def test_the_cli_says_one_line_for_a_tampered_model(copy, saved, tmp_path, samples_dir, tamper):
    import subprocess
    import sys

    if tamper == "symlink":
        (copy / MODEL_JSON).unlink()
        (copy / MODEL_JSON).symlink_to(saved / MODEL_JSON)
    elif tamper == "threshold":
        _edit(copy, lambda d: d.update(threshold="high"))
    else:
        (copy / WEIGHTS).write_bytes((copy / WEIGHTS).read_bytes()[:100])
    data = samples_dir / "cicids2017" / "MachineLearningCVE" / "m1.csv.gz"
    proc = subprocess.run([sys.executable, "-m", "deepids", "score", "-m", str(copy), "-d", str(data),
                           "-o", str(tmp_path / "scores.csv")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("deepids: error: ")]
    assert len(errors) == 1 and str(MODEL_JSON if tamper != "truncated" else WEIGHTS) in errors[0]
    assert not (tmp_path / "scores.csv").exists()
