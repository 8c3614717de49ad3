"""Shared fixtures: the shipped real-data samples, and the optional shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "data" / "samples"
# ../shared/data relative to the repository root (present on the development machines only)
SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: small networks train several times faster that way on a
    shared 2-core machine. Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """data/samples: small unmodified copies of real public datasets (see PROVENANCE.md)."""
    assert SAMPLES_DIR.is_dir(), f"{SAMPLES_DIR} is missing from the repository"
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (the full development data); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared real-data folder {SHARED_DATA} is absent (only on development machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def flow_sample(samples_dir):
    """The bundled CICIDS2017 stratified sample (8,002 real flows), as read_flows returns it."""
    from deepids.io import read_flows

    return read_flows(samples_dir / "cicids2017" / "cicids2017_sample.csv.gz")[0]


@pytest.fixture(scope="session")
def ids2018_sample(samples_dir):
    """The bundled CSE-CIC-IDS2018 sample (502 real flows)."""
    from deepids.io import read_flows

    return read_flows(samples_dir / "cse-cic-ids2018" / "ids2018_sample.csv.gz")[0]
