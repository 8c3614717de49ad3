"""`deepids inspect`, `train`, `score` and `stream` on each connection-log source (real files)."""

from __future__ import annotations

import gzip
import json
import shutil

import polars as pl
import pytest

from tests.test_cli import assert_user_error, run

SOURCES = {
    "zeek-conn": ("zeek", "conn.log"),
    "zeek-conn-json": ("zeek", "conn.json.log"),
    "suricata-eve": ("suricata", "lab_slice_eve.json.gz"),
    "nfdump-csv": ("nfdump", "lab_slice_nfdump.csv.gz"),
    "nfstream": ("nfstream", "lab_slice_nfstream.csv.gz"),
}


@pytest.fixture(scope="module")
def plain(samples_dir, tmp_path_factory):
    """Each sample uncompressed (stream reads plain text), keeping its name."""
    out = tmp_path_factory.mktemp("connlogs")
    files = {}
    for source, (folder, name) in SOURCES.items():
        src = samples_dir / folder / name
        dst = out / name.removesuffix(".gz")
        with (gzip.open(src, "rb") if name.endswith(".gz") else open(src, "rb")) as a, open(dst, "wb") as b:
            shutil.copyfileobj(a, b)
        files[source] = dst
    return files


def _damage(path, source, out):
    """A copy with one record that must be rejected, 100 records in (as a sensor's glitch leaves
    it): a port out of range, a cut JSON line, a port that is a word."""
    lines = path.read_text().splitlines()
    header = {"zeek-conn": 8, "nfdump-csv": 1, "nfstream": 1}.get(source, 0)
    i = header + 100
    if source == "zeek-conn":
        parts = lines[i].split("\t")
        parts[3] = "99999"
        lines[i] = "\t".join(parts)
        reason = "invalid port in 'id.orig_p'"
    elif source == "suricata-eve":
        i = next(k for k in range(100, len(lines)) if '"event_type":"flow"' in lines[k])
        lines[i] = lines[i][:60]
        reason = "malformed JSON"
    else:
        names = lines[0].split(",")
        parts = lines[i].split(",")
        parts[names.index("dp" if source == "nfdump-csv" else "src_port")] = "http"
        lines[i] = ",".join(parts)
        reason = "invalid port in 'dp'" if source == "nfdump-csv" else "invalid port in 'src_port'"
    out.write_text("\n".join(lines) + "\n")
    return reason


@pytest.mark.parametrize("source", ["zeek-conn", "suricata-eve", "nfdump-csv", "nfstream"])
def test_inspect_train_score_stream_agree(plain, tmp_path, source):
    path = tmp_path / plain[source].name
    reason = _damage(plain[source], source, path)
    proc = run("inspect", path, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["layout"] == source and report["rejected_reasons"] == {reason: 1}

    model = tmp_path / "model"
    # EVE and NFStream write a flow when it ends, so their files are not in start order; a sequence
    # model orders each chunk by time, and score's chunks are not stream's micro-batches: one
    # record per window there, so that batch and stream must agree record by record
    T = "1" if source in ("suricata-eve", "nfstream") else "4"
    proc = run("train", "--data", path, "--out", model, "--epochs", "2", "--sequence-length", T, "-q")
    assert proc.returncode == 0, proc.stderr
    assert f"({source})" in proc.stdout + proc.stderr

    scores = tmp_path / "scores.csv"
    proc = run("score", "--model", model, "--data", path, "--out", scores, "-q")
    assert proc.returncode == 0, proc.stderr
    batch = pl.read_csv(scores)
    assert batch.height == report["records"]
    assert {"record", "score", "threshold", "is_anomaly", "top_features", "src_ip", "dst_port",
            "timestamp"} <= set(batch.columns)

    streamed = tmp_path / "stream.jsonl"
    summary = tmp_path / "summary.json"
    rejected = tmp_path / "rejected.jsonl"
    proc = run("stream", "--model", model, "--input", path, "--scores", streamed, "--summary-json", summary,
               "--alerts", tmp_path / "alerts.jsonl", "--rejected", rejected)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(summary.read_text())
    assert s["format"] == source and s["records_scored"] == report["records"] and s["records_rejected"] == 1
    assert sum(s.get("ignored", {}).values()) == sum(report.get("ignored", {}).values())
    live = [json.loads(ln) for ln in streamed.read_text().splitlines()]
    # the same record numbers: the rejected record keeps its number, in the file and in the stream
    assert [r["record"] for r in live] == batch["record"].to_list()
    (bad,) = [json.loads(ln) for ln in rejected.read_text().splitlines()]
    assert bad["reason"] == reason and bad["record"] not in set(batch["record"].to_list())
    assert sorted([bad["record"], *batch["record"].to_list()]) == list(range(batch.height + 1))
    assert [r["score"] for r in live] == pytest.approx(batch["score"].to_list(), rel=1e-5, abs=1e-6)


def test_inspect_zeek_json(plain):
    proc = run("inspect", plain["zeek-conn-json"], "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["layout"] == "zeek-conn-json" and json.loads(proc.stdout)["records"] == 50


def test_damaged_connection_logs_are_counted_or_one_clear_error(plain, tmp_path, samples_dir):
    lines = plain["zeek-conn"].read_text().splitlines()
    damaged = tmp_path / "conn.log"
    damaged.write_text("\n".join(lines[:8] + [lines[8][:25]] + lines[9:]) + "\n")
    proc = run("inspect", damaged, "--json", "-")
    assert proc.returncode == 0 and json.loads(proc.stdout)["rejected_reasons"] == {"wrong number of fields": 1}

    no_fields = tmp_path / "headless.log"
    no_fields.write_text("\n".join(ln for ln in lines if not ln.startswith("#fields")) + "\n")
    assert_user_error(run("inspect", no_fields), "no #fields line")

    cut_gz = tmp_path / "nf.csv.gz"                      # a gzip file cut short: one line, exit 2
    cut_gz.write_bytes((samples_dir / "nfdump" / "lab_slice_nfdump.csv.gz").read_bytes()[:8000])
    assert_user_error(run("inspect", cut_gz), "ends early", "truncated")

    eve = tmp_path / "eve.json"
    text = plain["suricata-eve"].read_text()
    cut = text.index('"event_type":"flow"', 5000) + 40
    eve.write_text(text[:cut])      # cut inside a flow record, as a crash mid-write leaves it
    proc = run("inspect", eve, "--json", "-")
    assert proc.returncode == 0 and json.loads(proc.stdout)["rejected_reasons"] == {"malformed JSON": 1}


def test_flows_nfstream_from_a_capture(tmp_path, samples_dir):
    """`deepids flows CAPTURE --nfstream`: NFStream's CSV of the lab slice, read back as `nfstream`,
    the flows of the shipped NFStream sample (made from the same capture); a damaged capture is
    one line."""
    pytest.importorskip("nfstream")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "nfs.csv"
    proc = run("flows", root / "data" / "lab" / "lab_slice.pcap.gz", "--nfstream", "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    proc = run("inspect", out, "--json", "-")
    report = json.loads(proc.stdout)
    shipped = json.loads(run("inspect", samples_dir / "nfstream" / "lab_slice_nfstream.csv.gz", "--json", "-").stdout)
    assert report["layout"] == "nfstream" and report["records"] == shipped["records"] and report["rejected"] == 0
    assert_user_error(run("flows", root / "tests" / "fuzz" / "corpus" / "bad_magic.pcap", "--nfstream", "--out",
                          tmp_path / "x.csv"), "NFStream cannot read")
    assert_user_error(run("flows", root / "data" / "lab" / "lab_slice.pcap.gz", "--nfstream", "--out",
                          tmp_path / "x.parquet"), "give a .csv output")
