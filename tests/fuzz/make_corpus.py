"""Writes the committed corpus of damaged inputs (tests/fuzz/corpus/) from the real samples.

Run it from the repository root to regenerate: ``python tests/fuzz/make_corpus.py``. Every file
is derived from real data shipped in data/ (CICIDS2017 flows, OTRF events, EVTX samples, the
lab capture) by a seeded, documented damage; the seeded random-byte files are the ones the
issue names (seeds 5, 7, 10, 12, 13, 16, 17, 18 of ``random.Random(seed).randbytes(3000)``).
The 50 MB line is made at test time, not committed.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "data" / "samples"
OUT = Path(__file__).resolve().parent / "corpus"
FRIDAY = SAMPLES / "cicids2017/GeneratedLabelledFlows/Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.head.csv.gz"
OTRF = SAMPLES / "otrf/atomic/discovery/empire_shell_samr_EnumDomainUsers_2020-09-21193527.json.gz"
EVTX = SAMPLES / "evtx/Security_short_selected.evtx"
PCAP = ROOT / "data/lab/lab_slice.pcap.gz"
ZEEK = SAMPLES / "zeek/conn.log"
EVE = SAMPLES / "suricata/lab_slice_eve.json.gz"
NFDUMP = SAMPLES / "nfdump/lab_slice_nfdump.csv.gz"
NFSTREAM = SAMPLES / "nfstream/lab_slice_nfstream.csv.gz"


def flows_csv() -> dict[str, bytes]:
    lines = gzip.open(FRIDAY, "rb").read().split(b"\n")[:41]
    head, rows = lines[0], lines[1:]
    body = b"\n".join(rows) + b"\n"
    out = {f"random_seed{s}.csv": random.Random(s).randbytes(3000) for s in (5, 7, 10, 12, 13, 16, 17, 18)}
    out["bare_cr_in_header.csv"] = head.replace(b", Source IP", b",\r Source IP", 1) + b"\n" + body
    out["cr_only_endings.csv"] = b"\r".join([head] + rows) + b"\r"
    out["crlf_endings.csv"] = b"\r\n".join([head] + rows) + b"\r\n"
    out["nul_in_rows.csv"] = head + b"\n" + b"\n".join(r[:20] + b"\x00" + r[20:] if i % 5 == 0 else r
                                                       for i, r in enumerate(rows)) + b"\n"
    out["utf16.csv"] = (b"\n".join([head] + rows)).decode("latin-1").encode("utf-16")
    out["utf8_bom.csv"] = b"\xef\xbb\xbf" + head + b"\n" + body
    out["ragged_rows.csv"] = head + b"\n" + b"\n".join(r[: len(r) * (i % 4 + 1) // 4] for i, r in enumerate(rows)) + b"\n"
    out["header_only.csv"] = head + b"\n"
    out["empty.csv"] = b""
    out["blank_lines_only.csv"] = b"\n\n \n\t\n"
    out["semicolons.csv"] = b"\n".join(x.replace(b",", b";") for x in [head] + rows) + b"\n"
    out["markup_and_escapes.csv"] = head + b"\n" + b"\n".join(
        r.replace(b"BENIGN", b"[/x][bold]\x1b[2J\x1b]0;pwned\x07") if i % 2 else r.replace(b"DDoS", b"[/x]")
        for i, r in enumerate(rows)) + b"\n"
    out["formula_cells.csv"] = head + b"\n" + b"\n".join(r.replace(b"BENIGN", b"=cmd|' /C calc'!A0") for r in rows) + b"\n"
    out["invalid_utf8.csv"] = head + b"\n" + b"\n".join(r.replace(b"BENIGN", b"BEN\xff\xfeIGN") for r in rows) + b"\n"
    out["huge_numbers.csv"] = head + b"\n" + b"\n".join(
        r.replace(b",0,", b",1e400,", 1) if i % 3 == 0 else r.replace(b",0,", b",-inf,", 1)
        for i, r in enumerate(rows)) + b"\n"
    out["repeated_headers.csv"] = head + b"\n" + b"\n".join(r if i % 7 else head for i, r in enumerate(rows)) + b"\n"
    out["unterminated_quote.csv"] = head + b"\n" + rows[0] + b"\n\"" + rows[1] + b"\n" + b"\n".join(rows[2:]) + b"\n"
    return out


def parquet() -> None:
    pl.DataFrame({"Flow Duration": [1, 2], "Total Fwd Packets": [[1, 2], [3]]}).write_parquet(
        OUT / "list_column.parquet")
    pl.DataFrame({"Flow Duration": [1, 2], "Label": [{"x": 1}, {"x": 2}]}).write_parquet(OUT / "struct_column.parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"Flow Duration": [1, 2], "Destination Port": pa.array(
        [[("a", 1)], [("b", 2)]], type=pa.map_(pa.string(), pa.int64()))}), OUT / "map_column.parquet")
    good = (OUT / "list_column.parquet").read_bytes()
    (OUT / "truncated.parquet").write_bytes(good[: len(good) // 2])


def jsonl() -> dict[str, bytes]:
    events = gzip.open(OTRF, "rb").read().split(b"\n")[:30]
    events = [e for e in events if e.strip()]
    one = json.loads(events[0])
    deep = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    out = {
        "deep_nesting.jsonl": b"\n".join(events[:5] + [deep] + events[5:10]) + b"\n",
        "timestamp_1e20.jsonl": b"\n".join(events[:5] + [json.dumps(dict(one, **{"@timestamp": 1e20})).encode()]
                                           + events[5:10]) + b"\n",
        "timestamp_nan.jsonl": b"\n".join(events[:5] + [json.dumps(dict(one, **{"@timestamp": float("nan")})).encode()]
                                          + events[5:10]) + b"\n",
        "invalid_utf8.jsonl": b"\n".join(events[:5] + [events[5][:40] + b"\xff\xfe\xfd" + events[5][40:]]
                                         + events[6:10]) + b"\n",
        "wrong_types.jsonl": b"\n".join(events[:3] + [json.dumps(v).encode() for v in (
            [1, 2], "text", 3, None, {"EventID": [1]}, {"EventID": {"x": 1}}, {"EventID": "x" * 100},
            {"EventID": 1e308, "Channel": 5}, dict(one, Hostname=["a"]))] + events[3:6]) + b"\n",
        "markup_in_fields.jsonl": b"\n".join(json.dumps(dict(json.loads(e), Hostname="ws[/x]\x1b[2J",
                                                             Channel="Sec[/b]\x1b]0;t\x07")).encode()
                                             for e in events[:10]) + b"\n",
        "not_json.jsonl": b"\n".join(events[:3] + [b"{broken", b"\x00\x01\x02", b"]]]"] + events[3:6]) + b"\n",
    }
    return out


def evtx() -> None:
    data = EVTX.read_bytes()
    (OUT / "truncated_half.evtx").write_bytes(data[: len(data) // 2])
    (OUT / "header_only.evtx").write_bytes(data[:4096])
    flipped = bytearray(data)
    rng = random.Random(3)
    for _ in range(60):
        flipped[rng.randrange(4096, len(flipped))] ^= 0xFF
    (OUT / "flipped_bytes.evtx").write_bytes(bytes(flipped))
    zeroed = bytearray(data)
    zeroed[4096:4096 + 512] = bytes(512)
    (OUT / "zeroed_chunk_header.evtx").write_bytes(bytes(zeroed))


def pcap() -> None:
    data = gzip.open(PCAP, "rb").read()[:20_000]
    (OUT / "truncated.pcap").write_bytes(data[:-37])                      # cut mid-packet
    bad_magic = bytearray(data)
    bad_magic[:4] = b"\xde\xad\xbe\xef"
    (OUT / "bad_magic.pcap").write_bytes(bytes(bad_magic))
    bad_len = bytearray(data)
    bad_len[24 + 8:24 + 12] = (0x7FFFFFFF).to_bytes(4, "little")           # first packet: caplen 2 GiB
    (OUT / "bad_packet_length.pcap").write_bytes(bytes(bad_len))
    (OUT / "header_only.pcap").write_bytes(data[:24])
    (OUT / "truncated_global_header.pcap").write_bytes(data[:10])


def _field(line: bytes, sep: bytes, i: int, value: bytes) -> bytes:
    parts = line.split(sep)
    parts[i] = value
    return sep.join(parts)


def connlogs() -> dict[str, bytes]:
    """Connection logs from the shipped Zeek, Suricata, nfdump and NFStream samples, damaged as
    sensors, disks and copies damage them (names say which reader reads them)."""
    out = {}
    zeek = ZEEK.read_bytes().split(b"\n")
    head, body = zeek[:8], [ln for ln in zeek[8:] if ln and not ln.startswith(b"#")][:150]
    bad = list(body)
    bad[3] = bad[3].replace(b"\t", b" ", 2)                 # a row with too few fields
    bad[5] = b"x" + bad[5]                                  # unreadable ts
    bad[7] = _field(bad[7], b"\t", 3, b"70000")             # port out of range
    bad[9] = _field(bad[9], b"\t", 9, b"-12")               # negative byte count
    bad[11] = _field(bad[11], b"\t", 15, b"\xff\xfe")        # invalid UTF-8 in a count
    bad[13] = b"#close\t2014-04-03-10-08-27"                 # a directive in the middle
    bad[15] = bad[15] + b"\tone\ttoo\tmany"                  # too many fields
    bad[17] = bad[17].replace(b"\t", b"\x00", 1)             # a NUL where a tab was
    out["zeek_damaged.log"] = b"\n".join(head + bad[:20] + [b""] + bad[20:]) + b"\n"
    out["zeek_no_fields.log"] = b"\n".join([ln for ln in head if not ln.startswith(b"#fields")] + body[:20]) + b"\n"
    out["zeek_cut_mid_record.log"] = b"\n".join(head + body[:40]) + b"\n" + body[40][:17]
    out["zeek_types_only.log"] = b"\n".join(head) + b"\n"

    eve = gzip.open(EVE, "rb").read().split(b"\n")[:300]
    flows = [i for i, ln in enumerate(eve) if b'"event_type":"flow"' in ln]
    bad = list(eve)
    bad[flows[2]] = bad[flows[2]][:70]                       # a write cut short
    bad[flows[4]] = b"[1, 2, 3]"                             # JSON, not an object
    bad[flows[6]] = b'{"event_type":"flow"}'                 # a flow event with nothing in it
    bad[flows[8]] = bad[flows[8]].replace(b'"flow":{', b'"flow":"gone","x":{', 1)   # flow is no object
    bad[flows[10]] = bad[flows[10]].replace(b'"src_port":', b'"src_port":"\xff\xfe","y":', 1)
    bad[flows[12]] = b'{"event_type":"flow","flow":' * 40 + b"1" + b"}" * 40   # deep nesting
    bad[flows[14]] = bad[flows[14]].replace(b'"dest_port":', b'"dest_port":-3,"z":', 1)
    bad[flows[16]] = b"\x00" * 64
    out["eve_damaged.json"] = b"\n".join(bad) + b"\n"

    nf = gzip.open(NFDUMP, "rb").read().split(b"\n")
    header, rows, footer = nf[0], [ln for ln in nf[1:] if ln][:200], [ln for ln in nf[1:] if ln][-3:]
    names = header.split(b",")
    col = {n: i for i, n in enumerate(names)}
    bad = list(rows)
    bad[3] = bad[3][:60]                                     # a line cut short
    bad[5] = _field(bad[5], b",", col[b"dp"], b"http")       # a port that is a word
    bad[7] = _field(bad[7], b",", col[b"ts"], b"2026-13-45 99:00:00")
    bad[9] = _field(bad[9], b",", col[b"ibyt"], b"-5")
    bad[11] = _field(bad[11], b",", col[b"sa"], b"\xc3\x28")  # invalid UTF-8 in an address
    bad[13] = bad[13].replace(b",", b"\x00", 1)
    bad[15] = _field(bad[15], b",", col[b"dp"], b"3.x")      # an ICMP type.code half written
    out["nfdump_damaged.csv"] = b"\n".join([header, *bad[:100], *footer, *bad[100:]]) + b"\n"
    out["nfdump_headerless_cut.csv"] = b"\n".join(
        ln.rsplit(b",", 1)[0] for ln in rows[:50]) + b"\n" + rows[50][:100]   # nfdump -q, no label, cut

    nfs = gzip.open(NFSTREAM, "rb").read().split(b"\n")
    header, rows = nfs[0], [ln for ln in nfs[1:] if ln][:150]
    names = header.split(b",")
    col = {n: i for i, n in enumerate(names)}
    bad = list(rows)
    bad[3] = bad[3] + b',"unterminated'                     # a quote left open: the rest is one field
    bad[5] = _field(bad[5], b",", col[b"bidirectional_first_seen_ms"], b"soon")
    bad[7] = _field(bad[7], b",", col[b"src2dst_packets"], b"-1")
    bad[9] = bad[9][: len(bad[9]) // 2]
    out["nfstream_damaged.csv"] = b"\n".join([header, *bad[:100]]) + b"\n"
    out["nfstream_quote_at_end.csv"] = b"\n".join([header, *rows[:60], bad[3]]) + b"\n"
    return out


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, data in {**flows_csv(), **jsonl(), **connlogs()}.items():
        (OUT / name).write_bytes(data)
    parquet()
    evtx()
    pcap()


if __name__ == "__main__":
    main()
