"""Reading Windows event logs: the shipped OTRF and EVTX samples, damaged EVTX files, corrupt JSON lines."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from deepids.errors import InputError
from deepids.io.logs import (EVENT_COLUMNS, R_EVTX_MISSING, flatten_winlogbeat, normalise_host, normalise_user, parse_int,
                             read_events)

EMPIRE = "discovery/empire_shell_samr_EnumDomainUsers_2020-09-21193527.json.gz"


@pytest.fixture(scope="module")
def otrf(samples_dir):
    return samples_dir / "otrf"


def test_otrf_recordings_read_completely(otrf):
    events, report = read_events(otrf)
    # INDEX.csv event counts of the five shipped recordings: 633 + 619 + 349 + 506 + 267
    assert report.records == events.height == 2374 and report.n_rejected == 0
    assert tuple(events.columns) == EVENT_COLUMNS
    hosts = set(events.get_column("host").unique())
    assert hosts <= {"WORKSTATION5", "WORKSTATION6", "MORDORDC"}      # FQDN and short names are one host
    assert "security" not in set(events.get_column("channel").unique())   # lower-case channel normalised
    assert events.get_column("timestamp").null_count() == 0
    d = report.to_dict()
    for key in ("layout", "files", "records", "rejected", "rejected_reasons", "duplicates", "labels", "time_range",
                "unparsed_timestamps", "entities", "channels", "event_ids", "hosts"):
        assert key in d


def test_security_process_creation_pids_are_hex(otrf):
    events, _ = read_events(otrf / "atomic" / EMPIRE)
    created = events.filter((pl.col("channel") == "Security") & (pl.col("event_id") == 4688))
    assert created.height > 0
    # 4688's creator ProcessId is written in hex (0x1d20 = 7456, the Empire agent)
    assert 7456 in set(created.get_column("parent_process_id").to_list())
    sysmon = events.filter((pl.col("channel") == "Microsoft-Windows-Sysmon/Operational") & (pl.col("event_id") == 1))
    assert sysmon.get_column("image").drop_nulls().len() == sysmon.height


def test_corrupt_lines_are_rejected_and_counted(otrf, tmp_path):
    lines = gzip.open(otrf / "atomic" / EMPIRE, "rb").read().split(b"\n")
    good = [ln for ln in lines if ln.strip()][:50]
    # a bare \r inside a Message stays inside its line; a truncated line and a non-object are rejected
    bad = [good[0][: len(good[0]) // 2], b"[1, 2, 3]", b'{"Channel": "Security"}']
    path = tmp_path / "mixed.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(good[:25] + bad + good[25:]) + b"\n")
    events, report = read_events(path)
    assert events.height == 50
    assert report.rejected == {"corrupt JSON line": 1, "JSON line is not an object": 1, "no event id": 1}


def test_winlogbeat_layout_gives_the_same_events(otrf, tmp_path):
    flat = [json.loads(ln) for ln in gzip.open(otrf / "atomic" / EMPIRE, "rb").read().split(b"\n") if ln.strip()][:200]
    keep = {"EventID", "Channel", "Hostname", "@timestamp", "SourceName", "RecordNumber"}
    nested = [{"@timestamp": r["@timestamp"], "host": {"name": r["Hostname"]}, "message": r.get("Message"),
               "winlog": {"event_id": r["EventID"], "channel": r["Channel"], "provider_name": r["SourceName"],
                          "record_id": r["RecordNumber"], "computer_name": r["Hostname"],
                          "process": {"pid": r.get("ExecutionProcessID")},
                          "event_data": {k: v for k, v in r.items() if k not in keep}}} for r in flat]
    (tmp_path / "flat.jsonl").write_text("\n".join(json.dumps(r) for r in flat))
    (tmp_path / "nested.ndjson").write_text("\n".join(json.dumps(r) for r in nested))
    a, _ = read_events(tmp_path / "flat.jsonl")
    b, _ = read_events(tmp_path / "nested.ndjson")
    cols = [c for c in EVENT_COLUMNS if c not in ("raw", "source_file")]
    assert a.select(cols).equals(b.select(cols))
    assert flatten_winlogbeat(nested[0])["EventID"] == flat[0]["EventID"]


def test_evtx_samples(samples_dir):
    events, report = read_events(samples_dir / "evtx")
    assert report.records == 11 and report.n_rejected == 0       # 7 + 4 records (parser INDEX)
    assert set(events.get_column("event_id")) >= {4720, 4732, 4625}
    assert (events.filter(pl.col("event_id") == 4625).get_column("outcome") == "failure").all()


def test_damaged_evtx_files_are_recovered_and_counted(shared_data):
    folder = shared_data / "logs" / "windows" / "evtx_benign_and_parser_samples"
    events, report = read_events(folder)
    assert events.height == 22127                  # every readable record (the shared INDEX.csv count)
    # sample_with_a_bad_chunk_magic.evtx has 12 zeroed chunks among its 16: their records are
    # lost, and counted (estimated from the intact chunk headers), not silently dropped
    assert report.rejected == {"damaged evtx chunk/record": 17, R_EVTX_MISSING: 1599}
    assert len(report.damaged_files) == 5


def test_a_truncated_or_zeroed_evtx_file_says_what_it_lost(shared_data, tmp_path):
    security = next((shared_data / "logs" / "windows" / "evtx_benign_and_parser_samples").rglob("security.evtx"))
    data = security.read_bytes()
    (tmp_path / "half.evtx").write_bytes(data[:len(data) // 2])
    events, report = read_events(tmp_path / "half.evtx")
    assert events.height == 1414                  # of 2,261: the rest is counted, not silently lost
    assert 800 <= report.rejected[R_EVTX_MISSING] <= 900 and report.damaged_files
    zeroed = bytearray(data)
    zeroed[4096 + 3 * 65536:4096 + 5 * 65536] = bytes(2 * 65536)
    (tmp_path / "zeroed.evtx").write_bytes(bytes(zeroed))
    events, report = read_events(tmp_path / "zeroed.evtx")
    assert events.height + report.rejected[R_EVTX_MISSING] == pytest.approx(2261, abs=20)


def test_helpers_and_errors(tmp_path):
    assert normalise_host("WORKSTATION6.theshire.local") == normalise_host("workstation6") == "WORKSTATION6"
    assert normalise_host("10.0.0.5") == "10.0.0.5"
    assert normalise_user("THESHIRE\\pgustavo") == normalise_user("pgustavo@theshire.local") == "pgustavo"
    assert normalise_user("-") is None
    assert parse_int("0x1d20") == 7456 and parse_int("12") == 12 and parse_int("-") is None
    with pytest.raises(InputError):
        read_events(tmp_path / "missing.evtx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        read_events(tmp_path / "empty")


def test_evtx_attack_samples_parse_completely(shared_data):
    # GPL-3.0 data: read from ../shared/data only, never copied into the repository
    events, report = read_events(shared_data / "logs" / "windows" / "evtx_attack_samples", keep_raw=False)
    assert events.height == 8255 and report.n_rejected == 0 and report.unparsed_timestamps == 0


def test_event_logs_read_in_chunks_equal_the_whole_read(otrf):
    """Chunks of any size give the same events, and their merged report the same counts."""
    from deepids.io.logs import iter_event_batches

    whole, report = read_events(otrf, keep_raw=False)
    for size in (1, 97, 1000):
        parts = list(iter_event_batches(otrf, batch_size=size))
        assert all(t.height <= size for t, _ in parts)
        merged = parts[0][1]
        for _, r in parts[1:]:
            merged = merged.merge(r)
        assert pl.concat([t for t, _ in parts]).equals(whole)
        assert merged.to_dict() == report.to_dict()
    assert report.records == whole.height > 2000
