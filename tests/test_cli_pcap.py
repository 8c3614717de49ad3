"""Drive `deepids flows` and the pcap input of score / evaluate / inspect / stream."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

from deepids.io.schema import FLOW_FEATURES, METADATA_COLUMNS

sys.path.insert(0, str(Path(__file__).parent / "io"))
from test_pcap import HANDSHAKE, A, B, S, R, K, tcp, udp, write  # noqa: E402
from test_cli import assert_user_error, run  # noqa: E402


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    pkts = list(HANDSHAKE)
    pkts += [(1.0 + i * 0.01, tcp(A, B, 41000 + i, 22 + i, S)) for i in range(20)]          # a little scan
    pkts += [(1.005 + i * 0.01, tcp(B, A, 22 + i, 41000 + i, R | K)) for i in range(20)]
    pkts += [(2.0, udp(A, B, 5000, 53, b"q" * 20)), (2.001, udp(B, A, 53, 5000, b"r" * 60))]
    pkts.sort(key=lambda tp: tp[0])
    return write(tmp_path_factory.mktemp("pcap") / "lab.pcap", pkts)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, samples_dir) -> Path:
    out = tmp_path_factory.mktemp("pcapmodel") / "dense"
    proc = run("train", "--model", "dense-ae", "-d", samples_dir / "cicids2017" / "MachineLearningCVE" / "m1.csv.gz",
               "-o", out, "--epochs", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


def test_flows_command(capture, tmp_path):
    out = tmp_path / "flows.parquet"
    proc = run("flows", capture, "--out", out, "--json", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 23 flows" in proc.stdout and "packets/s" in proc.stderr
    df = pl.read_parquet(out)
    assert df.columns == list(METADATA_COLUMNS) + list(FLOW_FEATURES) and df.height == 23
    assert json.loads((tmp_path / "r.json").read_text())["capture"]["packets"] == 50
    cic = tmp_path / "flows.csv"
    assert run("flows", capture, "--out", cic, "--cic-names", "-q").returncode == 0
    proc = run("inspect", cic, "--json", "-")
    assert json.loads(proc.stdout)["layout"] == "cicids2017-labelled"


def test_flows_command_user_errors(capture, tmp_path):
    (tmp_path / "x.pcap").write_text("not a capture")
    assert_user_error(run("flows", tmp_path / "x.pcap", "--out", tmp_path / "o.parquet"), "not a pcap")
    assert_user_error(run("flows", capture, "--out", tmp_path / "o.txt"), "format")
    assert_user_error(run("flows", capture, "--out", tmp_path / "o.csv", "--flow-timeout", "0"), "positive")


def test_score_inspect_evaluate_stream_accept_a_capture(capture, model_dir, tmp_path):
    out = tmp_path / "scores.csv"
    proc = run("score", "-m", model_dir, "-d", capture, "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert pl.read_csv(out).height == 23
    assert "50 packets (pcap)" in proc.stderr or "50 packets" in run("inspect", capture).stdout
    assert_user_error(run("evaluate", "-m", model_dir, "-d", capture), "label")
    proc = run("stream", "-m", model_dir, "-i", capture, "--alerts", tmp_path / "alerts.ndjson",
               "--summary-json", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["records_read"] == 23 and summary["records_scored"] == 23


def test_inspect_reports_damage_without_failing(capture, tmp_path):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(capture.read_bytes()[:-50])
    proc = run("inspect", cut, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["layout"] == "pcap" and any("DAMAGED" in n and "truncated" in n for n in d["notes"])
