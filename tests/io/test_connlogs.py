"""Connection logs: Zeek (TSV, JSON), Suricata EVE, nfdump CSV and NFStream on real files."""

from __future__ import annotations

import gzip
import shutil

import polars as pl
import pytest

from deepids.errors import InputError
from deepids.io.connlogs import CONN_FEATURES, detect_source, iter_conn_batches, read_conn
from deepids.io.connlogs.schema import R_FIELDS, R_JSON, R_TIME, r_negative, r_number, r_port

CANONICAL = ["src_ip", "src_port", "dst_ip", "dst_port", "protocol", "timestamp", *CONN_FEATURES, "state"]


@pytest.fixture(scope="module")
def files(samples_dir):
    return {
        "zeek-conn": samples_dir / "zeek" / "conn.log",
        "zeek-conn-json": samples_dir / "zeek" / "conn.json.log",
        "suricata-eve": samples_dir / "suricata" / "lab_slice_eve.json.gz",
        "nfdump-csv": samples_dir / "nfdump" / "lab_slice_nfdump.csv.gz",
        "nfstream": samples_dir / "nfstream" / "lab_slice_nfstream.csv.gz",
    }


def _lines(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        return [ln for ln in fh.read().split(b"\n") if ln.strip()]


@pytest.mark.parametrize("source", ["zeek-conn", "zeek-conn-json", "suricata-eve", "nfdump-csv", "nfstream"])
def test_each_source_is_detected_and_maps_onto_the_canonical_record(files, source):
    path = files[source]
    assert detect_source(path) == source
    df, report = read_conn(path)
    assert report.layout == source
    missing = [c for c in CANONICAL if c not in df.columns]
    assert missing == (["state"] if source == "nfstream" else [])     # NFStream keeps no connection state
    assert df.schema["timestamp"] == pl.Datetime("us") and df["timestamp"].null_count() == 0
    assert df.schema["protocol"] == pl.Int64 and df.schema["dst_port"] == pl.Int64
    for c in CONN_FEATURES:
        assert df.schema[c] == pl.Float64 and (df[c] >= 0).all()
    assert report.records == df.height > 0 and report.n_rejected == 0


@pytest.mark.parametrize("source,header,footer", [
    ("zeek-conn", 8, 1), ("zeek-conn-json", 0, 0), ("nfdump-csv", 1, 3), ("nfstream", 1, 0)])
def test_counts_add_up_to_the_lines_of_the_file(files, source, header, footer):
    path = files[source]
    _, report = read_conn(path)
    assert report.records + report.n_rejected + sum(report.ignored.values()) + header == len(_lines(path))
    assert sum(report.ignored.values()) == footer


def test_suricata_keeps_flow_events_and_counts_the_others(files):
    df, report = read_conn(files["suricata-eve"])
    assert report.ignored == {"'dns' events (not flows)": 90, "'ftp' events (not flows)": 50,
                              "'ssh' events (not flows)": 15, "'stats' events (not flows)": 1}
    assert report.records == 2454 and report.records + sum(report.ignored.values()) == len(_lines(files["suricata-eve"]))
    # the time is the flow's first packet, the duration end - start; tcp flags each way are features
    assert df["timestamp"].min().isoformat() >= "2026-11-22T20:44:44"
    assert {"tcp_flags_ts", "tcp_flags_tc", "tcp_syn", "reason"} <= set(df.columns)
    assert df["tcp_syn"].drop_nans().is_in([0.0, 1.0]).all()


def test_lab_exports_carry_the_same_labels_from_the_schedule(files):
    counts = {}
    for source in ("suricata-eve", "nfdump-csv", "nfstream"):
        _, report = read_conn(files[source])
        counts[source] = report.labels
    assert counts["suricata-eve"] == counts["nfdump-csv"] == counts["nfstream"]
    assert counts["nfdump-csv"] == {"PortScan": 2000, "DoS slowloris": 317, "benign": 130, "SSH-BruteForce": 7}


def test_zeek_tsv_and_json_quirks(files, tmp_path):
    df, _ = read_conn(files["zeek-conn"])
    # '-' durations and byte counts of one-packet connections are 0; '(empty)' tunnel_parents is no feature
    s0 = df.filter(pl.col("state") == "S0")
    assert s0.height and (s0["dst_packets"] == 0).all()
    assert "tunnel_parents" not in df.columns and {"missed_bytes", "orig_ip_bytes", "history"} <= set(df.columns)
    # gzip and a rotated name read the same
    gz = tmp_path / "conn.09:00:00-10:00:00.log.gz"
    with open(files["zeek-conn"], "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert read_conn(gz)[0].equals(df)
    # a tab after #separator (as some tools write it) and two concatenated logs
    text = files["zeek-conn"].read_text()
    odd = tmp_path / "odd.log"
    odd.write_text(text.replace("#separator \\x09", "#separator\t\\x09", 1) + text)
    both, report = read_conn(odd)
    assert both.height == 2 * df.height and report.n_rejected == 0
    assert sum(report.ignored.values()) == 1 + 8 + 1     # #close, the second header, its #close


def test_damaged_files_give_counted_rejections(files, tmp_path):
    lines = files["zeek-conn"].read_text().splitlines()
    body = lines[8:-1]
    broken = [body[0].replace("\t", " ", 3),                        # wrong number of fields
              body[1].split("\t", 1)[0].replace("1", "x") + "\t" + body[1].split("\t", 1)[1],   # bad ts
              "\t".join(f if i != 3 else "99999" for i, f in enumerate(body[2].split("\t"))),  # port
              "\t".join(f if i != 9 else "-5" for i, f in enumerate(body[3].split("\t"))),     # negative
              "\t".join(f if i != 15 else "many" for i, f in enumerate(body[4].split("\t")))]  # orig_pkts
    path = tmp_path / "damaged.log"
    path.write_text("\n".join(lines[:8] + broken + body[5:] + lines[-1:]) + "\n")
    df, report = read_conn(path)
    assert report.rejected == {R_FIELDS: 1, R_TIME: 1, r_port("id.orig_p"): 1, r_negative("orig_bytes"): 1,
                               r_number("orig_pkts"): 1}
    assert df.height == len(body) - 5

    eve = _lines(files["suricata-eve"])[:300]
    bad = tmp_path / "eve.json"
    bad.write_bytes(b"\n".join(eve[:100] + [eve[100][:40], b"[1, 2]"] + eve[101:]) + b"\n")
    _, report = read_conn(bad)
    assert report.rejected == {R_JSON: 2}
    assert report.records + sum(report.ignored.values()) + 2 == 301

    nf = _lines(files["nfdump-csv"])
    cut = tmp_path / "nf.csv"
    cut.write_bytes(b"\n".join(nf[:50] + [nf[50][:30]] + nf[51:]) + b"\n")
    _, report = read_conn(cut)
    assert report.rejected == {R_FIELDS: 1} and report.records == len(nf) - 1 - 3 - 1


def test_not_a_connection_log_is_one_clear_error(tmp_path, samples_dir):
    dns = tmp_path / "dns.log"
    dns.write_text("#separator \\x09\n#path\tdns\n#fields\tts\tuid\tquery\n#types\ttime\tstring\tstring\n1.0\tC\tx\n")
    with pytest.raises(InputError, match="Zeek dns log"):
        read_conn(dns)
    with pytest.raises(InputError, match="not a connection log"):
        list(iter_conn_batches(samples_dir / "cicids2017" / "cicids2017_sample.csv.gz"))
    assert detect_source(samples_dir / "cicids2017" / "cicids2017_sample.csv.gz") is None


def test_batches_are_bounded_and_add_up(files):
    parts = list(iter_conn_batches(files["nfdump-csv"], batch_size=500))
    assert max(f.height for f, _ in parts) <= 500 and len(parts) >= 5
    whole, report = read_conn(files["nfdump-csv"])
    assert sum(f.height for f, _ in parts) == whole.height
    merged = parts[0][1]
    for _, r in parts[1:]:
        merged = merged.merge(r)
    assert merged.to_dict() == report.to_dict()


def test_nfdump_icmp_codes_and_unreadable_ports(files, tmp_path):
    nf = _lines(files["nfdump-csv"])
    names = nf[0].decode().split(",")
    dp, pr = names.index("dp"), names.index("pr")

    def edit(line: bytes, port: str, proto: str | None = None) -> bytes:
        parts = line.decode().split(",")
        parts[dp] = port
        if proto:
            parts[pr] = proto
        return ",".join(parts).encode()

    # ICMP type 3 code 3 is 3 * 256 + 3, as nfdump stores it; a word is no port: rejected
    body = [edit(nf[1], "3.3", "ICMP"), edit(nf[2], "http"), edit(nf[3], "53")] + nf[4:-3]
    path = tmp_path / "nf.csv"
    path.write_bytes(b"\n".join([nf[0], *body, *nf[-3:]]) + b"\n")
    df, report = read_conn(path)
    assert report.rejected == {r_port("dp"): 1}
    assert df["dst_port"][:2].to_list() == [771, 53] and df["protocol"][0] == 1
    # a batch without ICMP codes reads its ports as numbers: the same values
    plain, _ = read_conn(files["nfdump-csv"])
    assert plain.schema["dst_port"] == pl.Int64 and plain["dst_port"][3:10].to_list() == df["dst_port"][2:9].to_list()


def test_times_with_and_without_a_zone_in_one_batch():
    from deepids.io.connlogs.schema import parse_time

    values = ["2026-11-22T20:44:44.123456+0000", "2026-11-22T21:44:44+01:00", "2026-11-22T20:44:44Z",
              "2026-11-22 20:44:46", "2026-11-22 20:44:46.5", "2026-11-22T20:44:46.25", "yesterday", None]
    got = pl.DataFrame({"t": values}).lazy().select(parse_time(pl.col("t"))).collect()["t"].to_list()
    assert [g.isoformat() if g else None for g in got] == [
        "2026-11-22T20:44:44.123456", "2026-11-22T20:44:44", "2026-11-22T20:44:44", "2026-11-22T20:44:46",
        "2026-11-22T20:44:46.500000", "2026-11-22T20:44:46.250000", None, None]


def test_connection_logs_are_read_by_the_flows_kinds_registered_reader(files, tmp_path):
    import numpy as np

    from deepids.kinds import kind_of_paths
    from deepids.kinds.flows import CONNECTION_LOGS

    kind = kind_of_paths([files["zeek-conn"]])
    assert kind.name == "flows" and CONNECTION_LOGS in kind.readers and CONNECTION_LOGS.claims(files["nfstream"])
    assert not CONNECTION_LOGS.claims(files["nfdump-csv"].parent.parent / "cicids2017" / "cicids2017_sample.csv.gz")
    # two logs read together: record numbers run over both; a rejected record keeps its number,
    # header and #close lines are no records and have none
    lines = files["zeek-conn"].read_text().splitlines()
    body = lines[8:-1]
    body[3] = "x" + body[3]                                  # an unreadable ts: rejected
    body[7] = body[7][:20]                                   # a line cut short: rejected, numbered too
    damaged = tmp_path / "conn.log"
    damaged.write_text("\n".join(lines[:8] + body + lines[-1:]) + "\n")
    chunks = list(kind.read_chunks([damaged, files["zeek-conn"]], batch_size=100))
    numbers = np.concatenate([r.numbers for _, r in chunks])
    assert sum(f.height for f, _ in chunks) == numbers.size
    assert numbers.tolist() == [k for k in range(2 * len(body)) if k not in (3, 7)]
    # EVE: other event types are no records either; numbers count flow events only
    eve = list(kind.read_chunks([files["suricata-eve"]], batch_size=500))
    assert np.concatenate([r.numbers for _, r in eve]).tolist() == list(range(2454))


def test_concatenated_nfdump_files_and_an_open_quote_in_nfstream(files, tmp_path):
    from deepids.io.connlogs.live import ConnLineParser
    from deepids.io.connlogs.text import R_QUOTED

    def both(source, path):
        """(file reader's report, stream parser's table and rejections) of the same lines."""
        _, report = read_conn(path)
        parser = ConnLineParser(source)
        canon = parser.canonicalise(parser.records(path.read_text().splitlines()))
        return report, canon, parser

    # `cat a.csv b.csv`: the first footer, then the second header, sit in the middle; no records
    nf = _lines(files["nfdump-csv"])
    cat = tmp_path / "two.csv"
    cat.write_bytes(b"\n".join(nf + nf) + b"\n")
    report, canon, parser = both("nfdump-csv", cat)
    assert report.n_rejected == 0 and report.records == canon.table.height == 2 * (len(nf) - 4)
    assert report.ignored == dict(parser.ignored) == {"nfdump summary footer lines": 6,
                                                      "repeated nfdump headers (concatenated files)": 1}
    # NFStream quotes fields: a quote left open costs its own line only, in the file as in a stream
    lines = _lines(files["nfstream"])[:80]
    lines[10] = lines[10] + b',"cut'
    open_quote = tmp_path / "nfs.csv"
    open_quote.write_bytes(b"\n".join(lines) + b"\n")
    report, canon, _ = both("nfstream", open_quote)
    assert report.rejected == {R_FIELDS: 1} and R_QUOTED not in report.rejected
    assert report.records == canon.table.height == 78 and [r.reason for r in canon.rejected] == [R_FIELDS]
