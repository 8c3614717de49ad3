"""Outputs appear whole or not at all; a failed run leaves what was there and no partial file."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from deepids.atomic import atomic_dir, atomic_path, open_append, write_text
from deepids.errors import OutputError
from deepids.scoring import ScoreWriter

CIC = "cicids2017/cicids2017_sample.csv.gz"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".partial", ".old")))


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    out = tmp_path / "summary.json"
    out.write_text("old")
    for exc in (ValueError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with atomic_path(out) as tmp:
                tmp.write_text("half")
                raise exc
    assert out.read_text() == "old" and _leftovers(tmp_path) == []
    write_text(out, "new")
    assert out.read_text() == "new" and stat.S_IMODE(out.stat().st_mode) == 0o640


def test_a_symlink_at_the_name_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "alerts.ndjson"
    link.symlink_to(victim)
    write_text(link, "scores")
    assert victim.read_text() == "keep me" and not link.is_symlink() and link.read_text() == "scores"
    link2 = tmp_path / "appended.ndjson"
    link2.symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link"):
        open_append(link2)
    assert victim.read_text() == "keep me"


def test_a_directory_is_swapped_in_whole_and_keeps_what_it_does_not_replace(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("old")
    (model / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        with atomic_dir(model) as tmp:
            (tmp / "model.json").write_text("half")
            raise RuntimeError("killed")
    assert (model / "model.json").read_text() == "old" and _leftovers(tmp_path) == []
    with atomic_dir(model) as tmp:
        (tmp / "model.json").write_text("new")
    assert (model / "model.json").read_text() == "new" and (model / "notes.txt").read_text() == "mine"
    assert _leftovers(tmp_path) == []


def test_score_writer_failing_midway_leaves_the_previous_output(tmp_path):
    out = tmp_path / "scores.parquet"
    pl.DataFrame({"record": [0], "score": [0.5]}).write_parquet(out)
    with pytest.raises(ValueError):
        with ScoreWriter(out) as w:
            w.write(pl.DataFrame({"record": [0, 1], "score": [1.0, 2.0]}))
            raise ValueError("the reader failed")
    assert pl.read_parquet(out).height == 1 and _leftovers(tmp_path) == []
    with ScoreWriter(tmp_path / "s.csv") as w:
        w.write(pl.DataFrame({"src_ip": ["=cmd|' /C calc'!A0", "10.0.0.1"], "score": [1.0, 2.0],
                              "top_features": [["a"], ["b"]]}))
    text = (tmp_path / "s.csv").read_text()
    assert "'=cmd" in text and "\n10.0.0.1," in text
    assert stat.S_IMODE((tmp_path / "s.csv").stat().st_mode) == 0o640


def test_a_failed_model_save_keeps_the_working_model(tmp_path, flow_sample, monkeypatch):
    import deepids.models.base as base
    from deepids.models import IsolationForestDetector, load_model

    data = flow_sample[:600]
    first = IsolationForestDetector(n_estimators=10, seed=0).fit(data)
    path = first.save(tmp_path / "model")
    before = first.score_records(data).score
    outside = tmp_path / "outside.json"
    outside.write_text("not a model")
    second = IsolationForestDetector(n_estimators=10, seed=1).fit(data)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(base, "save_file", full)
    with pytest.raises(OutputError, match="disk is full"):
        second.save(path)
    monkeypatch.undo()
    np.testing.assert_array_equal(load_model(path).score_records(data).score, before)
    assert _leftovers(tmp_path) == []
    # a model.json that is a symlink out of the directory is replaced, never written through
    (path / "model.json").unlink()
    (path / "model.json").symlink_to(outside)
    second.save(path)
    assert outside.read_text() == "not a model" and not (path / "model.json").is_symlink()
    assert stat.S_IMODE((path / "model.json").stat().st_mode) == 0o640


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs, where this process may mount one (root, and a kernel that allows it)."""
    mnt = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_while_scoring_is_one_line_and_leaves_no_file(tiny_disk, tmp_path, samples_dir, flow_sample):
    from deepids.models import IsolationForestDetector

    model = IsolationForestDetector(n_estimators=10, seed=0).fit(flow_sample[:600]).save(tmp_path / "m")
    out = tiny_disk / "scores.csv"
    r = subprocess.run([sys.executable, "-m", "deepids", "score", "--model", str(model), "--data",
                        str(samples_dir / CIC), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr and "disk is full" in last and str(out) in last
    assert list(tiny_disk.iterdir()) == []


def test_an_interrupted_score_leaves_the_old_output_and_no_partial(tmp_path, samples_dir, flow_sample, monkeypatch):
    from deepids.models import IsolationForestDetector
    from deepids.scoring import score_files

    model = IsolationForestDetector(n_estimators=10, seed=0).fit(flow_sample[:600])
    out = tmp_path / "scores.parquet"
    score_files(model, samples_dir / CIC, out, batch_size=2000, progress=False)
    before = pl.read_parquet(out).height
    assert before == 8002
    calls = []
    original = ScoreWriter.write

    def interrupted(self, df):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt        # Ctrl-C (or SIGTERM, which the CLI turns into it) mid-run
        original(self, df)

    monkeypatch.setattr(ScoreWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        score_files(model, samples_dir / CIC, out, batch_size=2000, progress=False)
    assert pl.read_parquet(out).height == before and _leftovers(tmp_path) == []
