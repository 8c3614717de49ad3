"""A small sequence model (LSTM-AE, windows of 4 flows per source IP) for the serving tests."""

from __future__ import annotations

import gzip

import pytest

FRIDAY = "cicids2017/GeneratedLabelledFlows/Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.head.csv.gz"


@pytest.fixture(scope="session")
def seq_model(flow_sample):
    from deepids.models import LSTMAutoencoder

    return LSTMAutoencoder(sequence_length=4, epochs=1, verbose=False, seed=0).fit(flow_sample[:1500])


@pytest.fixture(scope="session")
def seq_model_dir(seq_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("serving") / "model"
    seq_model.save(path)
    return path


@pytest.fixture(scope="session")
def friday_path(samples_dir):
    """299 real CICIDS2017 flows with source IPs (44) and timestamps, in time order per source."""
    return samples_dir / FRIDAY


@pytest.fixture(scope="session")
def friday_lines(friday_path):
    return gzip.open(friday_path, "rt", newline="").read().splitlines()
