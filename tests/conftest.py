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


# UNSW-NB15's column shapes (an integer `id`, categorical `proto`/`service`/`state`, the attack
# category in `attack_cat` and a 0/1 `label`) filled with REAL records: NSL-KDD test records from
# data/samples/nsl-kdd/KDDTest+.txt.gz (protocol_type -> proto, flag -> state, duration -> dur,
# src_bytes -> sbytes, dst_bytes -> dbytes, the other measurements under their NSL-KDD names),
# attack_cat = the record's NSL-KDD attack category (Normal, DoS, Probe, R2L, U2R), label = 0 for
# Normal and 1 otherwise. UNSW-NB15 itself is not in the shared data, so its shape is rebuilt
# around real traffic records; nothing is invented but the id (1..n, as UNSW-NB15 numbers rows).
UNSW_SHAPED_ROWS = 3000
_NSL_MEASUREMENTS = ("land", "wrong_fragment", "hot", "logged_in", "count", "srv_count", "serror_rate",
                     "rerror_rate", "same_srv_rate", "diff_srv_rate", "dst_host_count", "dst_host_srv_count",
                     "dst_host_same_srv_rate", "dst_host_serror_rate")


def unsw_shaped_table(samples_dir: Path, rows: int = UNSW_SHAPED_ROWS):
    """A polars table in UNSW-NB15's shape built from the first `rows` real NSL-KDD test records."""
    import polars as pl

    from deepids.features.families import attack_family
    from deepids.io.schema import NSL_KDD_COLUMNS

    raw = pl.read_csv(samples_dir / "nsl-kdd" / "KDDTest+.txt.gz", has_header=False, n_rows=rows,
                      new_columns=[*NSL_KDD_COLUMNS, "attack", "difficulty"])
    category = [("Normal" if a == "normal" else attack_family(a)) for a in raw["attack"].to_list()]
    return pl.DataFrame({
        "id": list(range(1, raw.height + 1)),
        "dur": raw["duration"], "proto": raw["protocol_type"], "service": raw["service"], "state": raw["flag"],
        "sbytes": raw["src_bytes"], "dbytes": raw["dst_bytes"], **{c: raw[c] for c in _NSL_MEASUREMENTS},
        "attack_cat": category, "label": [0 if c == "Normal" else 1 for c in category],
    })


@pytest.fixture(scope="session")
def unsw_shaped_csv(samples_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("unsw") / "unsw_nb15_shaped.csv"
    unsw_shaped_table(samples_dir).write_csv(path)
    return path


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), a test module stays on one
    worker, so its module-scoped fixtures (trained models) are built once; the Ray modules (and
    the Ray bench's smoke test) share one worker, so two local Ray clusters never start side by
    side. The bench smoke tests share nothing and are spread one by one."""
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        group = "ray" if module.startswith("tests/distributed/") or item.name.startswith("test_ray") else module
        if module == "tests/bench/test_bench_smoke.py" and group != "ray":
            group = item.nodeid      # each harness runs in its own process, shares nothing: spread them
        item.add_marker(pytest.mark.xdist_group(group))
