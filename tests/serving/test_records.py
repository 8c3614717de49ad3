"""Records arriving one by one become canonical tables; bad ones are named, not dropped."""

import gzip
import json
import math

import numpy as np
import pytest

from deepids.features import EntityHistory
from deepids.io import read_flows
from deepids.io.records import (
    CsvLineParser,
    Unparsable,
    parse_ndjson,
    records_to_table,
)
from deepids.io.schema import FLOW_FEATURES

REQUIRED = [*FLOW_FEATURES, "dst_port"]


@pytest.mark.parametrize("name", [
    "cicids2017/GeneratedLabelledFlows/Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.head.csv.gz",
    "cse-cic-ids2018/ids2018_sample.csv.gz",
])
def test_csv_lines_give_the_same_table_as_the_file_reader(samples_dir, name):
    path = samples_dir / name
    lines = gzip.open(path, "rt").read().splitlines()
    parser = CsvLineParser(lines[0])
    got = records_to_table(parser.parse(lines[1:]), REQUIRED)
    ref, report = read_flows(path)
    assert got.rejected == [] and report.n_rejected == 0
    cols = [c for c in ref.columns if c in got.table.columns]
    assert set(REQUIRED) <= set(cols)
    assert got.table.select(cols).equals(ref.select(cols))
    assert got.index.tolist() == list(range(ref.height))


def test_json_records_in_either_spelling(flow_sample, samples_dir):
    a = records_to_table(json.loads(flow_sample.head(5).write_json()), REQUIRED)
    raw2018 = gzip.open(samples_dir / "cse-cic-ids2018" / "ids2018_sample.csv.gz", "rt").read().splitlines()[:4]
    b = records_to_table(CsvLineParser(raw2018[0]).parse(raw2018[1:]), REQUIRED)
    assert a.table.height == 5 and b.table.height == 3
    assert a.table.columns == b.table.columns


def _good(flow_sample, n=3):
    return json.loads(flow_sample.head(n).write_json())


def test_malformed_records_are_rejected_with_index_field_and_reason(flow_sample):
    recs = _good(flow_sample, 10)
    recs[1]["Flow Duration"] = "abc"
    del recs[2]["Total Fwd Packets"]
    recs[3] = [1, 2, 3]
    recs[4]["dst_port"] = 80.5
    recs[5]["Flow Bytes/s"] = {"nested": 1}
    recs[6]["Flow Packets/s"] = True
    recs[7]["Flow IAT Max"] = 10 ** 400
    recs.append(Unparsable("invalid JSON"))
    got = records_to_table(recs, REQUIRED)
    rej = {r.index: (r.field, r.reason) for r in got.rejected}
    assert rej == {
        1: ("Flow Duration", "non-numeric value"),
        2: ("Total Fwd Packets", "missing field"),
        3: (None, "not a JSON object"),
        4: ("dst_port", "non-integer value"),
        5: ("Flow Bytes/s", "wrong type"),
        6: ("Flow Packets/s", "wrong type"),
        7: ("Flow IAT Max", "number out of range"),
        10: (None, "invalid JSON"),
    }
    assert got.index.tolist() == [0, 8, 9]
    assert got.table.height == 3 and got.n_input == len(recs)


def test_nan_infinity_null_and_huge_numbers_are_values_not_rejections(flow_sample):
    recs = _good(flow_sample, 4)
    recs[0]["Flow Bytes/s"] = "Infinity"
    recs[1]["Flow Bytes/s"] = float("nan")
    recs[2]["Flow Bytes/s"] = None
    recs[3]["Flow Bytes/s"] = 1e300
    got = records_to_table(recs, REQUIRED)
    assert got.rejected == []
    v = got.table["Flow Bytes/s"].to_list()
    assert v[0] == math.inf and math.isnan(v[1]) and math.isnan(v[2]) and v[3] == 1e300


def test_metadata_and_timestamps():
    rec = {f: 1.0 for f in FLOW_FEATURES}
    recs = [dict(rec, **{" Source IP": "10.0.0.1", "Destination Port": "443", "Timestamp": "7/7/2017 3:30"}),
            dict(rec, src_ip="10.0.0.2", dst_port=80, timestamp=1_500_000_000),
            dict(rec, src_ip=None, dst_port=None, timestamp="not a time")]
    got = records_to_table(recs, REQUIRED)
    t = got.table
    assert t["src_ip"].to_list() == ["10.0.0.1", "10.0.0.2", None]
    assert t["dst_port"].to_list() == [443, 80, None]
    assert str(t["timestamp"][0]) == "2017-07-07 15:30:00"
    assert t["timestamp"][1].year == 2017 and t["timestamp"][2] is None
    assert got.unparsed_timestamps == 1


def test_ndjson_and_csv_line_problems():
    items = parse_ndjson('{"a": 1}\n\n{oops\n[1]\n')
    assert items[0] == {"a": 1} and isinstance(items[1], Unparsable) and items[2] == [1]
    p = CsvLineParser("a,b,c\r\n")
    out = p.parse(["1,2,3", "1,2", ",,", "a,b,c", '"x,y",2,3'])
    assert out[0] == {"a": "1", "b": "2", "c": "3"}
    assert [o.reason for o in out[1:4]] == ["wrong number of fields", "empty row", "repeated header line"]
    assert out[4]["a"] == "x,y"


def test_bounded_entity_history_evicts_lru_and_idle():
    now = [0.0]
    h = EntityHistory(3, max_entities=2, idle_ttl=10.0, clock=lambda: now[0])
    X = np.arange(6, dtype=np.float32).reshape(6, 1)

    def feed(ents):
        ents = np.asarray(ents)
        h.windows(X[: len(ents)], ents, np.arange(len(ents)))

    feed(["a", "b"])
    feed(["c"])                       # a is least recently seen
    assert list(h.tails) == ["b", "c"] and h.evicted_lru == 1
    now[0] = 5.0
    feed(["b"])
    now[0] = 12.0                     # c idle since t=0
    feed(["d"])
    assert set(h.tails) == {"b", "d"} and h.evicted_idle == 1
    assert len(h) == 2


def test_unbounded_history_is_unchanged_by_default():
    h = EntityHistory(2)
    X = np.arange(100, dtype=np.float32).reshape(100, 1)
    h.windows(X, np.asarray([str(i) for i in range(100)]), np.arange(100))
    assert len(h) == 100 and h.evicted_lru == h.evicted_idle == 0


def test_timestamp_cache_overflow_keeps_values(monkeypatch):
    import deepids.io.records as records

    monkeypatch.setattr(records, "_TS_CACHE_SIZE", 3)
    rec = {f: 1.0 for f in FLOW_FEATURES}
    stamps = [f"2017-07-07 10:0{i}:00" for i in range(8)]
    for _ in range(2):
        got = records_to_table([dict(rec, timestamp=t, dst_port=80) for t in stamps], REQUIRED)
        assert [str(v) for v in got.table["timestamp"].to_list()] == [t for t in stamps]
    assert len(records._TS_CACHE) <= 8


# --------------------------------------------------------------------------------------
# The fast paths (orjson, one key set read as columns) agree with the standard library
# --------------------------------------------------------------------------------------

_TEXTS = [
    b'[{"a": NaN, "b": Infinity, "c": -Infinity}]',
    b'{"a":NaN}',
    b'[NaN, Infinity,-Infinity ]',
    b'NaN',
    b'-NaN',
    b'[1, -NaN]',
    b'{"a": "x: NaN, y"}',
    b'{"a": "NaN", "b": "Infinity", "NaN": 1}',
    b'{"a": "\\ud800"}',
    b'{"a": "\xff\xfe"}',
    b'[1e999, -1e999, 123456789012345678901234567890, 1' + b'0' * 400 + b']',
    b'{"a": 1, "a": 2}',
    b'[' * 5000 + b']' * 5000,
    b'{"a": 1} {"b": 2}',
    b'',
    b'   ',
    b'[true, false, null, "s", {"x": [1, 2]}]',
    b'{"a": NaNx}',
    b'{"a": Infinityy}',
]


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, str) and isinstance(b, float) and not math.isfinite(b):
        return float(a) == b or (math.isnan(float(a)) and math.isnan(b))    # "NaN" for NaN
    if isinstance(a, float) and isinstance(b, int):
        return a == float(b)                                                 # big integers
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("text", _TEXTS)
def test_loads_json_reads_what_the_standard_library_reads(text):
    from deepids.io.records import loads_json

    try:
        want = json.loads(text.decode("utf-8", "replace"))
    except (ValueError, RecursionError) as exc:
        want = type(exc)
    try:
        got = loads_json(text)
    except (ValueError, RecursionError) as exc:
        got = type(exc)
    if isinstance(want, type) or isinstance(got, type):
        assert isinstance(want, type) and isinstance(got, type), (want, got)
    else:
        assert _same(got, want), (got, want)


def _mixed_records(flow_sample, rng):
    """Real flows with values of every kind put in: what clients send, well and badly."""
    recs = json.loads(flow_sample.head(60).write_json())
    keys = [k for k in recs[0] if k != "label"]
    junk = [None, True, False, "", "  ", "NaN", "Infinity", "-inf", "1e309", "12", " 7 ", "abc", -1, 2 ** 70,
            10 ** 400, 1.5, 80.0, float("nan"), float("inf"), [], {}, [1], {"a": 1}, "１２", "10.0.0.1"]
    for rec in recs:
        rec.pop("label", None)
        for k in rng.choice(keys, size=int(rng.integers(0, 4)), replace=False):
            rec[k] = junk[int(rng.integers(len(junk)))]
    for i, v in enumerate([float("nan"), float("inf"), float("-inf"), 6.0, True, [1]]):
        recs[i]["src_ip"] = v             # text columns get odd values too
        recs[-1 - i]["timestamp"] = v
    return recs


def _canon_equal(a, b):
    assert a.rejected == b.rejected
    assert a.index.tolist() == b.index.tolist()
    assert a.unparsed_timestamps == b.unparsed_timestamps
    assert a.table.columns == b.table.columns
    assert a.table.equals(b.table, null_equal=True)


@pytest.mark.parametrize("seed", range(6))
def test_one_key_set_fast_path_equals_the_record_by_record_path(flow_sample, seed):
    """Records sharing one key set are read as columns; the answer is the record-by-record one."""
    rng = np.random.default_rng(seed)
    recs = _mixed_records(flow_sample, rng)
    fast = records_to_table(recs, REQUIRED)
    # a last record with its keys in another order sends the whole batch down the general path
    last = dict(reversed(list(recs[0].items())))
    slow = records_to_table(recs + [last], REQUIRED)
    n = len(recs)
    cut_rejected = [r for r in slow.rejected if r.index < n]
    keep = slow.index < n
    assert fast.rejected == cut_rejected
    assert fast.index.tolist() == slow.index[keep].tolist()
    assert fast.table.equals(slow.table.head(int(keep.sum())), null_equal=True)
    assert fast.n_input == n


@pytest.mark.parametrize("seed", range(4))
def test_orjson_and_standard_library_give_the_same_canonical_records(flow_sample, seed):
    from deepids.io.records import loads_json

    rng = np.random.default_rng(100 + seed)
    body = json.dumps(_mixed_records(flow_sample, rng)).encode()    # NaN/Infinity as literals
    _canon_equal(records_to_table(loads_json(body), REQUIRED), records_to_table(json.loads(body), REQUIRED))
    nd = b"\n".join(json.dumps(r).encode() for r in _mixed_records(flow_sample, rng)) + b"\n{oops\n\n[1]\r\n"
    _canon_equal(records_to_table(parse_ndjson(nd), REQUIRED),
                 records_to_table([_std_line(line) for line in nd.split(b"\n") if line.strip()], REQUIRED))


def _std_line(line):
    try:
        return json.loads(line)
    except ValueError:
        return Unparsable("invalid JSON")


def test_live_records_and_file_cells_follow_one_rule(flow_sample, tmp_path):
    """A cell means the same in a file and in a live record: the column rules of deepids.io.cast."""
    from deepids.io.records import CsvLineParser

    cells = ["1_000", " 12 ", "Infinity", "", "0x10"]
    rec = _good(flow_sample, 1)[0]
    lines = [",".join(["Flow Duration", "Destination Port"] + [f for f in FLOW_FEATURES if f != "Flow Duration"])]
    for c in cells:
        lines.append(",".join([c, "80"] + [str(rec[f]) for f in FLOW_FEATURES if f != "Flow Duration"]))
    lines.append(",".join(["5", "NaN"] + [str(rec[f]) for f in FLOW_FEATURES if f != "Flow Duration"]))
    path = tmp_path / "cells.csv"
    path.write_text("\n".join(lines) + "\n")
    table, report = read_flows(path)
    live = records_to_table(CsvLineParser(lines[0]).parse(lines[1:]), REQUIRED)
    assert [r.index for r in live.rejected] == [0, 4, 5]
    assert {r.reason for r in live.rejected} == {"non-numeric value", "non-integer value"}
    assert report.n_rejected == 3
    assert table["Flow Duration"].to_list()[:2] == live.table["Flow Duration"].to_list()[:2] == [12.0, math.inf]
