"""The `deepids` command on the shipped event-log samples: train, score, evaluate, hunt, inspect.

Commands run in-process (typer's runner: one torch import for the module); the user-error test runs
the real console entry point in a subprocess, where errors become one line and exit code 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from deepids.io import read_flows

ATOMIC = Path(__file__).resolve().parents[2] / "data" / "samples" / "otrf" / "atomic"
EMPIRE_DIR = ATOMIC / "discovery"


pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args):
    """In-process: .returncode, .stdout, .stderr like a finished process."""
    from deepids.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    result.returncode = result.exit_code
    return result


def run_process(*args) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "deepids", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def log_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("logs") / "win"
    proc = run("train", "--model", "gan", "--data", ATOMIC / "lateral_movement", "--data", ATOMIC / "execution",
               "--out", out, "--epochs", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "read 1,122 records (windows-events)" in proc.stderr
    return out


def test_hunt_writes_findings_and_report(log_model, tmp_path):
    proc = run("hunt", "--model", log_model, "--data", EMPIRE_DIR, "--top", "5", "--by", "host",
               "--out", tmp_path / "hunt.html", "--json", tmp_path / "findings.json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "findings.json").read_text())
    f = doc["findings"]
    assert 1 <= len(f) <= 5 and f[0]["rank"] == 1
    assert {"rank", "entity", "entity_type", "window_start", "window_end", "score", "top_features",
            "evidence"} <= set(f[0])
    assert {"timestamp", "record_id", "event_id", "channel", "user", "image", "parent_image",
            "command_line"} <= set(f[0]["evidence"][0])
    assert "<svg" in (tmp_path / "hunt.html").read_text()


def test_score_and_evaluate_logs(log_model, tmp_path):
    out = tmp_path / "scores.csv"
    proc = run("score", "--model", log_model, "--data", EMPIRE_DIR, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = pl.read_csv(out)
    assert rows.height == 633 + 619
    assert rows.columns == ["record", "timestamp", "host", "channel", "event_id", "record_id", "user", "image",
                            "source_file", "score", "threshold", "is_anomaly", "top_features"]
    assert rows["record"].to_list() == list(range(rows.height)) and rows["is_anomaly"].dtype == pl.Boolean
    proc = run("evaluate", "--model", log_model, "--data", EMPIRE_DIR, "--json", tmp_path / "m.json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n_records"] == 633 and m["roc_auc"] is not None and "Empire" in m["labels"]


def test_inspect_logs_same_keys_as_flows(samples_dir, tmp_path):
    proc = run("inspect", samples_dir / "evtx", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    logs = json.loads(proc.stdout)
    flows = read_flows(samples_dir / "cse-cic-ids2018" / "ids2018_sample.csv.gz")[1].to_dict()
    assert set(flows) <= set(logs)
    assert logs["records"] == 11 and logs["layout"] == "windows-events" and logs["hosts"]


def test_user_errors_are_one_line(log_model, tmp_path, samples_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    proc = run_process("hunt", "--model", log_model, "--data", bad)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("deepids: error: no events read")
    assert "1 rejected" in proc.stderr


def test_hunt_by_process_tree(log_model, tmp_path):
    """A model trained by the CLI carries process-tree context: hunt ranks process trees per window."""
    proc = run("hunt", "--model", log_model, "--data", EMPIRE_DIR, "--top", "3", "--by", "tree",
               "--out", tmp_path / "hunt.html", "--json", tmp_path / "findings.json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    f = json.loads((tmp_path / "findings.json").read_text())["findings"]
    assert 1 <= len(f) <= 3 and f[0]["entity_type"] == "tree" and f[0]["processes"]
    assert f[0]["host"] and f[0]["entity"].startswith(f[0]["host"] + ":")
    assert "<svg" in (tmp_path / "hunt.html").read_text()
