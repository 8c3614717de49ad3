"""Library progress is reported through the caller's callback, never drawn by the library."""

from __future__ import annotations

import pytest

from deepids.io import read_flows
from deepids.io.logs import log_files, read_events
from deepids.models import DenseAutoencoder
from deepids.scoring import collect_scores, score_files

CIC = "cicids2017/cicids2017_sample.csv.gz"


@pytest.fixture(scope="module")
def model(samples_dir):
    return DenseAutoencoder(epochs=1, verbose=False).fit(read_flows(samples_dir / CIC)[0])


def test_scoring_reports_records_done_after_each_chunk(model, samples_dir, tmp_path):
    calls = []
    summary = score_files(model, samples_dir / CIC, tmp_path / "s.parquet", batch_size=2000,
                          progress=lambda done, total: calls.append((done, total)))
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})     # grows, once per chunk
    assert len(calls) == 5 and calls[-1][0] == summary.records == 8002
    assert all(total is None for _, total in calls)          # a gzip file: no estimate
    calls.clear()
    collect_scores(model, samples_dir / CIC, batch_size=4000, progress=lambda done, total: calls.append(done))
    assert calls == [4000, 8000, 8002]


def test_the_former_switch_draws_nothing(model, samples_dir, tmp_path, capsys):
    score_files(model, samples_dir / CIC, tmp_path / "s.csv", batch_size=4000, progress=True)
    assert capsys.readouterr().err == ""


def test_reading_logs_reports_files_done(samples_dir):
    folder = samples_dir / "otrf" / "atomic"
    calls = []
    read_events(folder, progress=lambda done, total: calls.append((done, total)))
    n = len(log_files(folder))
    assert n > 1 and calls == [(k, n) for k in range(1, n + 1)]
