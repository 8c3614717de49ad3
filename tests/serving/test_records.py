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
