"""The attack lab: target checks and labelling (anywhere), the committed lab data (anywhere),
and a short real run (root with the Debian tools only; skipped otherwise)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from deepids.io import read_flows
from deepids.io.flowmeter import capture_flows

REPO = Path(__file__).resolve().parents[1]
LAB_DATA = REPO / "data" / "lab"


def _load_lab():
    spec = importlib.util.spec_from_file_location("deepids_lab", REPO / "lab" / "lab.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["deepids_lab"] = mod          # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


lab = _load_lab()


@pytest.mark.parametrize("addr", ["8.8.8.8", "127.0.0.1", "10.77.0.99", "10.77.1.10", "::1", "srv", ""])
def test_targets_outside_the_lab_are_refused(addr, tmp_path):
    with pytest.raises(lab.LabError):
        lab.check_target(addr)
    with pytest.raises(lab.LabError):
        lab.attack_argv("portscan-syn", addr, 10, tmp_path)


def test_every_attack_targets_a_lab_host_and_is_bounded(tmp_path):
    for a in lab.ATTACKS:
        argv = lab.attack_argv(a.kind, lab.SERVER, a.seconds, tmp_path)
        assert any(lab.SERVER in x for x in argv), argv
        text = " ".join(argv)
        bounded = {"nmap": "--max-rate", "hping3": "-c", "hydra": "passwords.txt", "slowhttptest": "-l"}
        for tool, flag in bounded.items():
            if argv[0] == tool:
                assert flag in text, argv
        assert 0 < a.seconds <= 120


def test_labels_come_from_attacker_address_and_time_span():
    t = 1_700_000_000.0
    ts = lambda s: datetime.fromtimestamp(t + s, timezone.utc).replace(tzinfo=None)  # noqa: E731
    flows = pl.DataFrame({
        "src_ip": [lab.ATTACKER, lab.ATTACKER, "10.77.0.21", lab.SERVER, lab.ATTACKER],
        "dst_ip": [lab.SERVER, lab.SERVER, lab.SERVER, lab.ATTACKER, lab.SERVER],
        "timestamp": [ts(5), ts(15), ts(15), ts(21), ts(40)],
    })
    ev = lab.Event("portscan-syn", "PortScan", 10, "x", start=t + 10, end=t + 20)
    out = lab.label_flows(flows, [ev])["label"].to_list()
    # before the span; in it; another host in it; the server's reply flow within the margin; after it
    assert out == ["BENIGN", "PortScan", "BENIGN", "PortScan", "BENIGN"]


needs_lab_data = pytest.mark.skipif(not (LAB_DATA / "manifest.json").exists(), reason="data/lab not generated")


@needs_lab_data
@pytest.mark.parametrize("folder", ["lab", "lab_dense", "lab_mistakes"])
def test_committed_lab_flows_match_the_manifest(folder):
    data = REPO / "data" / folder
    manifest = json.loads((data / "manifest.json").read_text())
    df, report = read_flows(data / "lab_flows.parquet")
    assert report.layout == "cicids2017-labelled" and report.n_rejected == 0
    assert df.height == manifest["flows"]
    counts = df["label"].value_counts()
    assert sum(counts["count"].to_list()) == df.height
    assert (df["label"] != "benign").sum() == sum(n for k, n in manifest["labels"].items() if k != "BENIGN")
    attacks = {e["label"] for e in manifest["schedule"] if e["start"]}
    assert len(attacks) >= 5
    # benign-only period first: nothing before the first attack is labelled an attack
    first = min(e["start"] for e in manifest["schedule"] if e["start"])
    cut = datetime.fromtimestamp(first - 1, timezone.utc).replace(tzinfo=None)
    assert (df.filter(pl.col("timestamp") < cut)["label"] == "benign").all()
    assert df.filter(pl.col("timestamp") < cut).height > 300          # 382 (lab), 1,445 (lab_dense), more (lab_mistakes)


@needs_lab_data
def test_committed_pcap_slice_reads():
    manifest = json.loads((LAB_DATA / "manifest.json").read_text())
    flows, report = capture_flows(LAB_DATA / manifest["slice"]["file"])
    assert report.capture.packets == manifest["slice"]["packets"] and report.capture.damage is None
    assert flows.height > 100 and (flows["src_ip"] == lab.ATTACKER).sum() > 0


def _can_run_lab() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    gone = lab.missing_tools()
    if gone:
        return f"missing tools: {', '.join(gone)}"
    if subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count(lab.PREFIX + "-"):
        return "a lab is running"
    return None


@pytest.mark.skipif(_can_run_lab() is not None, reason=str(_can_run_lab()))
def test_short_lab_run_captures_labels_and_tears_down(tmp_path):
    scan = lab.Attack("PortScan", "portscan-connect", 8, "test")
    run = lab.Lab(tmp_path / "out", minutes=0.4, seed=3, benign_fraction=0.35, attacks=(scan,),
                  clients=("c1",), log=lambda m: None)
    try:
        manifest = run.go()
    finally:
        run.teardown()
        shutil.rmtree(run.work, ignore_errors=True)
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(lab.PREFIX + "-")]
    assert subprocess.run(["id", lab.LAB_USER], capture_output=True).returncode != 0
    assert manifest["labels"].get("PortScan", 0) > 50 and manifest["labels"].get("BENIGN", 0) > 0
    assert manifest["schedule"][0]["start"] is not None and manifest["tools"]["deb:nmap"]
    df, _ = read_flows(tmp_path / "out" / "lab_flows.parquet")
    assert set(df["label"].unique()) <= {"benign", "PortScan"}
