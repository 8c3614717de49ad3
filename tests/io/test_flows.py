"""Flow readers on the shipped real samples (data/samples) and on ../shared/data.

Expected numbers are computed independently from the raw files with Python's csv module
wherever possible, rather than copied from the reader's output.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections import Counter
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from deepids.errors import InputError, SchemaError
from deepids.io import (
    ReadReport,
    detect_layout,
    inspect_flows,
    iter_flow_batches,
    parse_timestamps,
    read_flows,
)
from deepids.io.flows import R_FIELDS
from deepids.io.schema import FLOW_FEATURES, LABEL, LAYOUTS, NSL_KDD_CATEGORICAL, NSL_KDD_COLUMNS

CIC17 = Path("cicids2017")
SAMPLE = CIC17 / "cicids2017_sample.csv.gz"
M1 = CIC17 / "MachineLearningCVE" / "m1.csv.gz"
FRIDAY = "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.head.csv.gz"
MLCVE_FRIDAY = CIC17 / "MachineLearningCVE" / FRIDAY
GLF_FRIDAY = CIC17 / "GeneratedLabelledFlows" / FRIDAY
PORTSCAN = CIC17 / "GeneratedLabelledFlows" / "baseline_portscan.csv.gz"
XSS = CIC17 / "GeneratedLabelledFlows" / "baseline_xss.csv.gz"
SQLI = CIC17 / "GeneratedLabelledFlows" / "baseline_sqli.csv.gz"
IDS2018 = Path("cse-cic-ids2018") / "ids2018_sample.csv.gz"
KDD_TEST = Path("nsl-kdd") / "KDDTest+.txt.gz"


def raw_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a gzipped CSV, read with the csv module only."""
    text = gzip.open(path, "rb").read().decode("utf-8", "replace")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[0], [r for r in rows[1:] if r]


def col_index(header: list[str], name: str) -> int:
    return [h.strip() for h in header].index(name)


# ---------------------------------------------------------------------------- layouts

@pytest.mark.parametrize(("rel", "layout"), [
    (SAMPLE, "cicids2017"),
    (M1, "cicids2017"),
    (MLCVE_FRIDAY, "cicids2017"),
    (GLF_FRIDAY, "cicids2017-labelled"),
    (PORTSCAN, "cicids2017-labelled"),
    (XSS, "cicids2017-labelled"),
    (IDS2018, "cse-cic-ids2018"),
    (KDD_TEST, "nsl-kdd"),
])
def test_detect_layout(samples_dir: Path, rel: Path, layout: str) -> None:
    assert detect_layout(samples_dir / rel) == layout


def test_detect_layout_parquet_is_generic(samples_dir: Path, tmp_path: Path) -> None:
    df, _ = read_flows(samples_dir / IDS2018)
    df.write_parquet(tmp_path / "flows.parquet")
    assert detect_layout(tmp_path / "flows.parquet") == "generic"
    assert set(LAYOUTS) >= {"cicids2017", "cicids2017-labelled", "cse-cic-ids2018", "nsl-kdd", "generic"}


# ---------------------------------------------------------------------------- CICIDS2017

def test_cicids2017_sample_counts_and_columns(samples_dir: Path) -> None:
    df, report = read_flows(samples_dir / SAMPLE)
    header, rows = raw_rows(samples_dir / SAMPLE)
    assert len(rows) == 8002
    assert report.layout == "cicids2017"
    assert report.records == df.height == 8002
    assert report.n_rejected == 0
    assert df.columns == ["dst_port", *FLOW_FEATURES, LABEL]
    assert df["dst_port"].dtype == pl.Int64
    assert all(df[f].dtype == pl.Float64 for f in FLOW_FEATURES)
    assert df[LABEL].dtype == pl.Utf8
    expected = {"benign": 6425, "DoS Hulk": 657, "PortScan": 459, "DDoS": 345, "DoS GoldenEye": 34,
                "FTP-Patator": 23, "SSH-Patator": 18, "DoS Slowhttptest": 17, "DoS slowloris": 15,
                "Web Attack - Brute Force": 4, "Bot": 4, "Web Attack - XSS": 1}
    assert report.labels == expected
    assert dict(Counter(df[LABEL].to_list())) == expected
    # row order is file order: the destination ports match the raw column
    assert df["dst_port"].to_list() == [int(r[0]) for r in rows]


def test_ids2018_sample_has_the_same_features(samples_dir: Path) -> None:
    df17, _ = read_flows(samples_dir / SAMPLE)
    df18, report = read_flows(samples_dir / IDS2018)
    assert report.layout == "cse-cic-ids2018"
    assert report.records == 502 and report.n_rejected == 0
    assert df18.columns == ["dst_port", "protocol", *FLOW_FEATURES, LABEL]
    feats17 = [c for c in df17.columns if c in FLOW_FEATURES]
    feats18 = [c for c in df18.columns if c in FLOW_FEATURES]
    assert feats17 == feats18 == list(FLOW_FEATURES)
    assert report.labels["benign"] == 361
    assert report.labels["Infilteration"] == 11          # kept as the dataset spells it
    # values land under the canonical name: 'Tot Fwd Pkts' -> 'Total Fwd Packets'
    header, rows = raw_rows(samples_dir / IDS2018)
    i = col_index(header, "Tot Fwd Pkts")
    assert df18["Total Fwd Packets"].to_list() == [float(r[i]) for r in rows]


@pytest.mark.parametrize("rel", [M1, SAMPLE, GLF_FRIDAY])
def test_duplicate_fwd_header_length_dropped(samples_dir: Path, rel: Path) -> None:
    header, rows = raw_rows(samples_dir / rel)
    stripped = [h.strip() for h in header]
    # the quirk is really there, spelled one way or the other
    assert stripped.count("Fwd Header Length") == 2 or "Fwd Header Length.1" in stripped
    df, _ = read_flows(samples_dir / rel)
    assert df.columns.count("Fwd Header Length") == 1
    assert not any(c.startswith("Fwd Header Length.") for c in df.columns)
    first = stripped.index("Fwd Header Length")
    assert df["Fwd Header Length"].to_list() == [float(r[first]) for r in rows]
    assert [c for c in df.columns if c in FLOW_FEATURES] == list(FLOW_FEATURES)


def test_infinity_nan_and_empty_cells(samples_dir: Path) -> None:
    """Real 'Infinity', 'NaN', 'inf' and empty cells become inf / nan, not rejections."""
    seen: Counter = Counter()
    for rel in (MLCVE_FRIDAY, SAMPLE):
        header, rows = raw_rows(samples_dir / rel)
        df, report = read_flows(samples_dir / rel)
        assert report.n_rejected == 0
        for name in ("Flow Bytes/s", "Flow Packets/s"):
            i = col_index(header, name)
            values = df[name].to_list()
            for k, row in enumerate(rows):
                cell = row[i].strip()
                if cell.lower() in ("infinity", "inf"):
                    assert values[k] == math.inf, (rel, name, k)
                    seen["inf"] += 1
                elif cell.lower() == "nan" or cell == "":
                    assert math.isnan(values[k]), (rel, name, k)
                    seen["empty" if cell == "" else "nan"] += 1
    assert seen["inf"] >= 20 and seen["nan"] >= 1 and seen["empty"] >= 1


def test_negative_values_are_kept(samples_dir: Path) -> None:
    header, rows = raw_rows(samples_dir / M1)
    df, _ = read_flows(samples_dir / M1)
    i = col_index(header, "Init_Win_bytes_backward")
    n_negative = sum(float(r[i]) < 0 for r in rows)
    assert n_negative > 0
    assert int((df["Init_Win_bytes_backward"] < 0).sum()) == n_negative


def test_crlf_file(samples_dir: Path) -> None:
    raw = gzip.open(samples_dir / MLCVE_FRIDAY, "rb").read()
    assert raw.count(b"\r\n") == raw.count(b"\n") > 9000        # really CRLF throughout
    df, report = read_flows(samples_dir / MLCVE_FRIDAY)
    assert report.records == 9998 and report.n_rejected == 0
    assert report.labels == {"benign": 9998}                   # no stray '\r' in the last column
    assert not df.select(pl.col(FLOW_FEATURES[-1]).is_nan().any()).item()


def test_web_attack_labels_normalised(samples_dir: Path) -> None:
    xss, rep_xss = read_flows(samples_dir / XSS)
    assert rep_xss.records == 652
    assert xss[LABEL].unique().to_list() == ["Web Attack - XSS"]
    sqli, _ = read_flows(samples_dir / SQLI)
    assert sqli[LABEL].unique().to_list() == ["Web Attack - Sql Injection"]
    sample, _ = read_flows(samples_dir / SAMPLE)
    _, rows = raw_rows(samples_dir / SAMPLE)
    raw_brute = sum(r[-1] == "Web Attack \ufffd Brute Force" for r in rows)
    assert raw_brute == 4
    assert int((sample[LABEL] == "Web Attack - Brute Force").sum()) == raw_brute


def test_labelled_flows_metadata_and_timestamps(samples_dir: Path) -> None:
    df, report = read_flows(samples_dir / GLF_FRIDAY)
    assert report.layout == "cicids2017-labelled"
    assert df.columns[:7] == ["flow_id", "src_ip", "src_port", "dst_ip", "dst_port", "protocol", "timestamp"]
    assert df.columns[7:] == [*FLOW_FEATURES, LABEL]
    assert df.schema["timestamp"] == pl.Datetime("us")
    assert [df.schema[c] for c in ("src_port", "dst_port", "protocol")] == [pl.Int64] * 3
    assert df.schema["src_ip"] == pl.Utf8 and df.schema["flow_id"] == pl.Utf8
    header, rows = raw_rows(samples_dir / GLF_FRIDAY)
    assert {r[col_index(header, "Timestamp")] for r in rows} == {"7/7/2017 3:30"}
    # 12-hour clock without AM/PM: 3:30 on the Friday is 15:30
    assert df["timestamp"].unique().to_list() == [datetime(2017, 7, 7, 15, 30)]
    assert report.time_range == ("2017-07-07T15:30:00", "2017-07-07T15:30:00")
    assert report.entities["src_ip"] == len({r[col_index(header, "Source IP")] for r in rows})
    assert report.entities["dst_ip"] == len({r[col_index(header, "Destination IP")] for r in rows})
    assert report.entities["dst_port"] == len({int(r[col_index(header, "Destination Port")]) for r in rows})


def test_timestamps_12_hour_fix_on_real_files(samples_dir: Path) -> None:
    portscan, report = read_flows(samples_dir / PORTSCAN)
    header, rows = raw_rows(samples_dir / PORTSCAN)
    raw_ts = [r[col_index(header, "Timestamp")] for r in rows]
    for k, text in enumerate(raw_ts):
        date, clock = text.split(" ")
        hour, minute = map(int, clock.split(":"))
        hour = hour + 12 if hour < 8 else hour
        day, month, year = map(int, date.split("/"))
        assert portscan["timestamp"][k] == datetime(year, month, day, hour, minute)
    assert report.time_range[0].startswith("2017-07-07T13:") and report.unparsed_timestamps == 0
    xss, report = read_flows(samples_dir / XSS)        # morning: 10:15 stays 10:15, day-first date
    assert report.time_range == ("2017-07-06T10:15:00", "2017-07-06T10:35:00")


def test_parse_timestamps_formats() -> None:
    values = pl.Series(["7/7/2017 3:56", "6/7/2017 10:40", "7/7/2017 12:05", "14/02/2018 08:31:01",
                        "3/7/2017 1:02:03", "2018-02-14 08:31:01", "2018-02-14T08:31:01.250000",
                        "not a time", "", None])
    got = parse_timestamps(values).to_list()
    assert got == [datetime(2017, 7, 7, 15, 56), datetime(2017, 7, 6, 10, 40), datetime(2017, 7, 7, 12, 5),
                   datetime(2018, 2, 14, 8, 31, 1), datetime(2017, 7, 3, 1, 2, 3),
                   datetime(2018, 2, 14, 8, 31, 1), datetime(2018, 2, 14, 8, 31, 1, 250000),
                   None, None, None]


def test_unparsed_timestamps_counted_not_rejected(samples_dir: Path, tmp_path: Path) -> None:
    header, rows = raw_rows(samples_dir / SQLI)
    t = col_index(header, "Timestamp")
    rows[3][t] = "yesterday"
    path = tmp_path / "sqli.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    df, report = read_flows(path)
    assert report.records == 21 and report.n_rejected == 0
    assert report.unparsed_timestamps == 1 and report.to_dict()["unparsed_timestamps"] == 1
    assert df["timestamp"].null_count() == 1 and df["timestamp"][3] is None


def test_duplicates_counted_like_the_csv_module(samples_dir: Path) -> None:
    for rel in (M1, SAMPLE):
        _, rows = raw_rows(samples_dir / rel)
        expected = len(rows) - len({tuple(r) for r in rows})
        assert expected > 0
        df, report = read_flows(samples_dir / rel)
        assert report.duplicates == expected
        assert df.height == len(rows)                 # duplicates are kept, only counted


def test_duplicates_and_entities_across_files(samples_dir: Path) -> None:
    _, rows = raw_rows(samples_dir / M1)
    once = len(rows) - len({tuple(r) for r in rows})
    df, report = read_flows([samples_dir / M1, samples_dir / M1])
    assert df.height == 2 * len(rows)
    assert report.duplicates == once + len(rows)      # every row of the second copy repeats
    assert report.entities["dst_port"] == len({r[0] for r in rows})
    assert report.files == [str(samples_dir / M1)]


# ---------------------------------------------------------------------------- NSL-KDD

def test_nsl_kdd(samples_dir: Path) -> None:
    df, report = read_flows(samples_dir / KDD_TEST)
    lines = gzip.open(samples_dir / KDD_TEST, "rt").read().splitlines()
    fields = [line.split(",") for line in lines if line]
    assert len(fields) == 22544 and {len(f) for f in fields} == {43}
    assert report.layout == "nsl-kdd" and report.records == 22544 and report.n_rejected == 0
    assert df.columns == [*NSL_KDD_COLUMNS, LABEL]             # difficulty dropped
    for c in NSL_KDD_COLUMNS:
        assert df.schema[c] == (pl.Utf8 if c in NSL_KDD_CATEGORICAL else pl.Float64), c
    raw_labels = Counter(f[41] for f in fields)
    assert report.labels["benign"] == raw_labels["normal"]
    assert report.labels["neptune"] == raw_labels["neptune"]
    assert df["src_bytes"].to_list() == [float(f[4]) for f in fields]


# ---------------------------------------------------------------------------- streaming

@pytest.mark.parametrize(("rels", "batch_size"), [
    ([SAMPLE], 997),
    ([PORTSCAN, XSS, GLF_FRIDAY], 250),
    ([KDD_TEST], 5000),
])
def test_batches_equal_read_flows(samples_dir: Path, rels: list[Path], batch_size: int) -> None:
    paths = [samples_dir / r for r in rels]
    whole, report = read_flows(paths)
    frames, merged = [], None
    for frame, part in iter_flow_batches(paths, batch_size=batch_size):
        assert frame.height <= batch_size
        frames.append(frame)
        merged = part if merged is None else merged.merge(part)
    assert len(frames) >= 3
    assert pl.concat(frames).equals(whole)
    assert merged.to_dict() == report.to_dict()
    assert inspect_flows(paths).to_dict() == report.to_dict()


def test_report_to_dict_is_json_ready(samples_dir: Path) -> None:
    report = inspect_flows(samples_dir / PORTSCAN)
    d = json.loads(json.dumps(report.to_dict()))
    for key in ("layout", "records", "rejected", "rejected_reasons", "labels", "duplicates",
                "time_range", "entities", "files", "unparsed_timestamps"):
        assert key in d
    assert d["records"] == 1000 and d["rejected"] == 0 and d["labels"] == {"PortScan": 1000}
    assert isinstance(report, ReadReport) and report.n_rejected == 0


# ---------------------------------------------------------------------------- bad input

def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_flows(tmp_path / "nope.csv")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(InputError, match="empty.csv is empty"):
        read_flows(tmp_path / "empty.csv")
    (tmp_path / "empty.csv.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(InputError, match="is empty"):
        read_flows(tmp_path / "empty.csv.gz")


def test_header_only_file(samples_dir: Path, tmp_path: Path) -> None:
    first_line = gzip.open(samples_dir / M1, "rb").readline()
    (tmp_path / "header.csv").write_bytes(first_line)
    with pytest.raises(InputError, match="header but no data rows"):
        read_flows(tmp_path / "header.csv")


def test_directory_without_flow_files(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("nothing here")
    with pytest.raises(InputError, match="directory without flow files"):
        read_flows(tmp_path)


def test_directory_with_flow_files(samples_dir: Path) -> None:
    df, report = read_flows(samples_dir / "cicids2017" / "GeneratedLabelledFlows")
    assert report.records == 299 + 1000 + 21 + 652
    assert len(report.files) == 4


def test_unknown_columns(samples_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("time,host,bytes\n2020-01-01,a,3\n")
    with pytest.raises(InputError, match="cannot detect the layout of .*other.csv"):
        read_flows(path)
    with pytest.raises(InputError, match="cannot detect the layout"):
        detect_layout(path)


def test_truncated_gzip_keeps_the_rows_before_the_cut(samples_dir: Path, tmp_path: Path) -> None:
    """A .csv.gz cut in half: the rows before the cut are read, the cut line is rejected and
    counted, and the report says the file was truncated (nothing lost without a word)."""
    data = (samples_dir / SAMPLE).read_bytes()
    whole, _ = read_flows(samples_dir / SAMPLE)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    table, report = read_flows(path)
    assert whole.height // 3 < table.height < whole.height
    assert table.equals(whole.head(table.height))
    assert report.rejected == {R_FIELDS: 1}
    assert any("cut.csv.gz" in n and "truncated" in n for n in report.notes)


def test_gzip_damaged_at_the_start_is_a_clear_error(samples_dir: Path, tmp_path: Path) -> None:
    data = bytearray((samples_dir / SAMPLE).read_bytes())
    data[10:4000] = bytes(3990)
    path = tmp_path / "zeroed.csv.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="zeroed.csv.gz"):
        read_flows(path)


def test_invalid_utf8_in_a_malformed_row_rejects_that_row_only(samples_dir: Path, tmp_path: Path) -> None:
    """Arrow decodes a malformed row as UTF-8 before its row handler sees it; bytes that are not
    UTF-8 there used to fail the whole read (or abort the process)."""
    lines = gzip.decompress((samples_dir / SAMPLE).read_bytes()).split(b"\n")
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\n".join(lines[:50] + [b"1,2,\xff\xfe\xfa"] + lines[50:200]))
    table, report = read_flows(path)
    assert table.height == 199 and report.rejected == {R_FIELDS: 1}

def test_malformed_rows_rejected_with_reasons(samples_dir: Path, tmp_path: Path) -> None:
    lines = gzip.open(samples_dir / SAMPLE, "rb").read().split(b"\n")
    assert lines[-1] == b""
    lines[6] = b",".join(lines[6].split(b",")[:40])                 # truncated row
    fields = lines[11].split(b",")
    fields[1] = b"12ms"                                              # text in 'Flow Duration'
    lines[11] = b",".join(fields)
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\n".join(lines))
    df, report = read_flows(path)
    assert report.rejected == {"wrong number of fields": 1, "non-numeric value in 'Flow Duration'": 1}
    assert report.n_rejected == 2 and report.records == 8000
    assert report.to_dict()["rejected"] == 2
    good, _ = read_flows(samples_dir / SAMPLE)
    # data lines 6 and 11 are rows 5 and 10 of the frame
    expected = good.with_row_index("i").filter(~pl.col("i").is_in([5, 10])).drop("i")
    assert df.equals(expected)


def test_more_real_quirks_rejected(samples_dir: Path, tmp_path: Path) -> None:
    """A repeated header line (CSE-CIC-IDS2018 day files), a row of bare commas (CICIDS2017
    Thursday file), an empty label and a fractional port are rejected with their reasons."""
    lines = gzip.open(samples_dir / IDS2018, "rb").read().split(b"\n")
    header = lines[0]
    n_fields = header.count(b",") + 1
    lines[20] = header
    lines[30] = b"," * (n_fields - 1)
    fields = lines[40].split(b",")
    fields[-1] = b""
    lines[40] = b",".join(fields)
    fields = lines[50].split(b",")
    fields[0] = b"80.5"
    lines[50] = b",".join(fields)
    path = tmp_path / "quirks.csv"
    path.write_bytes(b"\n".join(lines))
    df, report = read_flows(path)
    assert report.rejected == {"repeated header line": 1, "empty row": 1, "empty label": 1,
                               "non-integer value in 'Dst Port'": 1}
    assert report.records == 502 - 4 == df.height


def test_bom_and_non_utf8_bytes(samples_dir: Path, tmp_path: Path) -> None:
    """The original CICIDS2017 Thursday files hold the raw cp1252 byte 0x96 in labels."""
    raw = gzip.open(samples_dir / XSS, "rb").read()
    assert b"Web Attack \xc2\x96 XSS" in raw
    mangled = b"\xef\xbb\xbf" + raw.replace(b"\xc2\x96", b"\x96").replace(b"\n", b"\r\n")
    path = tmp_path / "thursday.csv"
    path.write_bytes(mangled)
    with pytest.raises(UnicodeDecodeError):
        mangled.decode("utf-8")
    assert detect_layout(path) == "cicids2017-labelled"
    df, report = read_flows(path)
    assert report.records == 652 and report.n_rejected == 0
    assert report.labels == {"Web Attack - XSS": 652}
    assert df.columns[0] == "flow_id"                                   # BOM not in the name
    good, _ = read_flows(samples_dir / XSS)
    assert df.equals(good)


def test_forced_wrong_layout_names_missing_columns(samples_dir: Path) -> None:
    with pytest.raises(SchemaError) as info:
        read_flows(samples_dir / IDS2018, layout="cicids2017")
    msg = str(info.value)
    assert "'Total Fwd Packets'" in msg and "missing" in msg
    assert "49 required column(s)" in msg
    with pytest.raises(SchemaError, match="'Tot Fwd Pkts'"):
        read_flows(samples_dir / M1, layout="cse-cic-ids2018")
    with pytest.raises(SchemaError, match="'Flow ID'"):
        read_flows(samples_dir / M1, layout="cicids2017-labelled")
    with pytest.raises(SchemaError, match="42 or 43 fields"):
        read_flows(samples_dir / M1, layout="nsl-kdd")


def test_forced_layout_matching_file(samples_dir: Path) -> None:
    forced, _ = read_flows(samples_dir / M1, layout="cicids2017")
    detected, _ = read_flows(samples_dir / M1)
    assert forced.equals(detected)


def test_mixed_families_refused(samples_dir: Path) -> None:
    with pytest.raises(InputError, match="layout family"):
        read_flows([samples_dir / M1, samples_dir / KDD_TEST])


def test_cic_family_files_concatenate(samples_dir: Path) -> None:
    df, report = read_flows([samples_dir / M1, samples_dir / XSS, samples_dir / IDS2018])
    assert df.height == 999 + 652 + 502
    assert df.columns == ["flow_id", "src_ip", "src_port", "dst_ip", "dst_port", "protocol",
                          "timestamp", *FLOW_FEATURES, LABEL]
    assert df["flow_id"].null_count() == 999 + 502
    assert report.labels["benign"] == 999 + 361


# ---------------------------------------------------------------------------- generic

def test_generic_csv_with_label_column(samples_dir: Path, tmp_path: Path) -> None:
    """NSL-KDD rows written as a plain CSV with a header; the label column is 'attack'."""
    lines = gzip.open(samples_dir / KDD_TEST, "rt").read().splitlines()[:3000]
    path = tmp_path / "kdd_with_header.csv"
    path.write_text(",".join([*NSL_KDD_COLUMNS, "attack", "difficulty"]) + "\n" + "\n".join(lines) + "\n")
    with pytest.raises(InputError, match="cannot detect"):
        read_flows(path)
    df, report = read_flows(path, layout="generic", label_column="attack")
    assert report.layout == "generic" and report.records == 3000 and report.n_rejected == 0
    assert df.columns == [*NSL_KDD_COLUMNS, "difficulty", LABEL]
    assert df.schema["protocol_type"] == pl.Utf8 and df.schema["src_bytes"] == pl.Float64
    assert report.labels["benign"] == sum(line.split(",")[41] == "normal" for line in lines)
    with pytest.raises(SchemaError, match="no label column 'verdict'"):
        read_flows(path, layout="generic", label_column="verdict")


def test_generic_maps_known_cic_names(samples_dir: Path) -> None:
    generic, _ = read_flows(samples_dir / IDS2018, layout="generic")
    typed, _ = read_flows(samples_dir / IDS2018)
    assert generic.equals(typed)


def test_parquet_round_trip(samples_dir: Path, tmp_path: Path) -> None:
    df, report = read_flows(samples_dir / PORTSCAN)
    df.write_parquet(tmp_path / "portscan.parquet")
    back, back_report = read_flows(tmp_path / "portscan.parquet")
    assert back_report.layout == "generic"
    assert back.equals(df)
    assert back_report.labels == report.labels and back_report.time_range == report.time_range
    assert back_report.entities == report.entities
    forced, _ = read_flows(tmp_path / "portscan.parquet", layout="generic", label_column="label")
    assert forced.equals(df)
    batches = [f for f, _ in iter_flow_batches(tmp_path / "portscan.parquet", batch_size=300)]
    assert [b.height for b in batches] == [300, 300, 300, 100]


# ---------------------------------------------------------------------------- shared data

def test_every_shared_flow_file_reads_cleanly(shared_data: Path) -> None:
    files = sorted(p for p in (shared_data / "flows").rglob("*") if p.is_file()
                   and (p.name.endswith(".csv.gz") or p.name.endswith(".txt.gz")))
    assert len(files) >= 15
    for path in files:
        report = inspect_flows(path)
        assert report.n_rejected == 0, (path, report.rejected)
        assert report.records > 0 and report.unparsed_timestamps == 0, path


def test_shared_ddos_timestamps(shared_data: Path) -> None:
    path = shared_data / "flows" / CIC17 / "GeneratedLabelledFlows" / "baseline_ddos.csv.gz"
    header, rows = raw_rows(path)
    assert {r[col_index(header, "Timestamp")] for r in rows} == {"7/7/2017 3:56"}
    df, report = read_flows(path)
    assert df["timestamp"].unique().to_list() == [datetime(2017, 7, 7, 15, 56)]
    assert report.labels == {"DDoS": 1000}


@pytest.mark.parametrize("variant", ["timestamp", "identifiers"])
def test_ids2018_day_file_variants(samples_dir: Path, tmp_path: Path, variant: str) -> None:
    """The CSE-CIC-IDS2018 day files carry `Timestamp` after `Protocol` (80 columns), and one
    of them also `Flow ID`, `Src IP`, `Src Port`, `Dst IP` (84 columns). The sample lacks
    them, so they are added to its real rows in the day files' order and spelling."""
    header, rows = raw_rows(samples_dir / IDS2018)
    stamps = [f"{14 + k % 3:02d}/02/2018 {k % 24:02d}:{k % 60:02d}:01" for k in range(len(rows))]
    if variant == "timestamp":
        new_header = header[:2] + ["Timestamp"] + header[2:]
        new_rows = [r[:2] + [t] + r[2:] for r, t in zip(rows, stamps)]
    else:
        new_header = ["Flow ID", "Src IP", "Src Port", "Dst IP", *header[:2], "Timestamp", *header[2:]]
        new_rows = [[f"172.31.69.25-18.219.211.138-{r[0]}-{40000 + k}-6", "18.219.211.138",
                     str(40000 + k), "172.31.69.25", *r[:2], t, *r[2:]]
                    for k, (r, t) in enumerate(zip(rows, stamps))]
    path = tmp_path / "Wednesday-14-02-2018_TrafficForML_CICFlowMeter.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([new_header, *new_rows])
    assert detect_layout(path) == "cse-cic-ids2018"
    df, report = read_flows(path)
    plain, _ = read_flows(samples_dir / IDS2018)
    assert report.n_rejected == 0 and report.unparsed_timestamps == 0
    assert df.select(plain.columns).equals(plain)
    assert df["timestamp"][0] == datetime(2018, 2, 14, 0, 0, 1)        # day-first, no 12-hour shift
    assert df["timestamp"][13] == datetime(2018, 2, 15, 13, 13, 1)
    if variant == "identifiers":
        assert df.columns[:7] == ["flow_id", "src_ip", "src_port", "dst_ip", "dst_port", "protocol", "timestamp"]
        assert report.entities == {"src_ip": 1, "dst_ip": 1, "dst_port": plain["dst_port"].n_unique()}


def test_nsl_kdd_without_difficulty(samples_dir: Path, tmp_path: Path) -> None:
    """42 fields (KDD'99 style, labels ending in a dot) are read too."""
    lines = gzip.open(samples_dir / KDD_TEST, "rt").read().splitlines()[:500]
    trimmed = [",".join(line.split(",")[:41]) + "," + line.split(",")[41] + "." for line in lines]
    path = tmp_path / "kdd42.txt"
    path.write_text("\n".join(trimmed) + "\n")
    assert detect_layout(path) == "nsl-kdd"
    df, report = read_flows(path)
    full, _ = read_flows(samples_dir / KDD_TEST)
    assert report.records == 500 and report.n_rejected == 0
    assert df.equals(full.head(500))


def test_file_with_only_malformed_rows(samples_dir: Path, tmp_path: Path) -> None:
    lines = gzip.open(samples_dir / M1, "rb").read().split(b"\n")
    path = tmp_path / "broken.csv"
    path.write_bytes(b"\n".join([lines[0]] + [b",".join(line.split(b",")[:10]) for line in lines[1:4]]) + b"\n")
    df, report = read_flows(path)
    assert df.height == 0 and df.columns == ["dst_port", *FLOW_FEATURES, LABEL]
    assert report.records == 0 and report.rejected == {"wrong number of fields": 3}


def test_a_quote_left_open_rejects_its_line_only(samples_dir: Path, tmp_path: Path) -> None:
    """A cut write leaves a `"` open: Arrow would read every line after it into one field (the
    rows lost uncounted); the line is rejected alone, as a stream of the same lines does."""
    lines = gzip.decompress((samples_dir / SAMPLE).read_bytes()).split(b"\n")
    path = tmp_path / "quote.csv"
    path.write_bytes(b"\n".join(lines[:30] + [b'"' + lines[30]] + lines[31:100]) + b"\n")
    table, report = read_flows(path)
    assert table.height == 98 and report.rejected == {R_FIELDS: 1}
