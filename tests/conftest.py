"""Shared fixtures: the shipped real-data samples, and the optional shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "data" / "samples"
# ../shared/data relative to the repository root (present on the development machines only)
SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"


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
