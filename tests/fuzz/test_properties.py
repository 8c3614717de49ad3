"""Property-based fuzzing (Hypothesis, derandomized: the same examples on every run).

Whatever bytes arrive, each reader and live path either raises a `DeepidsError` or accounts
for every record: scored or rejected with a reason, counts adding up.
"""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepids.errors import DeepidsError
from deepids.serving.follow import split_lines

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


@FUZZ
@given(chunks=st.lists(st.binary(max_size=64), max_size=12), limit=st.integers(min_value=1, max_value=40))
def test_split_lines_keeps_every_byte_and_offset(chunks, limit):
    data = b"".join(chunks)
    pieces = list(split_lines(iter(chunks), max_line_bytes=limit))
    end = 0
    rebuilt = b""
    for line, offset in pieces:
        size = line if isinstance(line, int) else len(line)
        assert offset == end + size
        end = offset
        if isinstance(line, int):
            assert size > limit
            rebuilt += data[offset - size:offset]
        else:
            assert len(line) <= limit
            rebuilt += line
    assert rebuilt == data and end == len(data)


@pytest.fixture(scope="module")
def flow_scorer(flow_sample):
    from deepids.models import IsolationForestDetector
    from deepids.serving import LiveScorer

    return LiveScorer(IsolationForestDetector(n_estimators=5, seed=0).fit(flow_sample[:800]))


@pytest.fixture(scope="module")
def friday(samples_dir):
    path = samples_dir / "cicids2017/GeneratedLabelledFlows/Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.head.csv.gz"
    return gzip.open(path, "rt", newline="").read().splitlines()


@FUZZ
@given(body=st.binary(max_size=400) | st.builds(lambda v: json.dumps(v).encode(), json_values))
def test_any_body_is_answered_record_by_record(flow_scorer, body):
    from deepids.serving.service import BodyError, parse_body

    try:
        items = parse_body(body, "application/json")
    except BodyError as exc:
        assert 400 <= exc.status < 500
        return
    batch = flow_scorer.score(items)
    assert len(batch.index) + len(batch.rejected) == len(items)


@FUZZ
@given(fields=st.lists(st.dictionaries(st.sampled_from(["Flow Duration", " Destination Port", "Flow Bytes/s",
                                                        "Source IP", " Timestamp", "x"]), json_values,
                                       max_size=6), min_size=1, max_size=6))
def test_records_with_any_values_are_scored_or_rejected(flow_scorer, friday, fields):
    from deepids.io.records import CsvLineParser

    base = CsvLineParser(friday[0]).parse(friday[1:2])[0]
    items = [dict(base, **f) for f in fields]
    batch = flow_scorer.score(items)
    assert len(batch.index) + len(batch.rejected) == len(items)
    assert len(batch.score) == len(batch.index) and batch.is_anomaly.dtype == bool


@FUZZ
@given(lines=st.lists(st.binary(max_size=120), max_size=8))
def test_a_stream_of_any_lines_adds_up(flow_scorer, friday, lines):
    from deepids.serving.follow import Line
    from deepids.serving.stream import StreamScorer

    follower = StreamScorer(flow_scorer)
    try:
        follower.process([Line(friday[0].encode() + b"\n")] + [Line(x + b"\n") for x in lines])
    except DeepidsError:
        return
    s = follower.summary
    assert s.read == s.scored + s.n_rejected


@FUZZ
@given(events=st.lists(json_values | st.dictionaries(st.sampled_from(
    ["EventID", "Channel", "Hostname", "@timestamp", "winlog", "TargetUserName", "CommandLine"]), json_values,
    max_size=7), max_size=6))
def test_windows_events_of_any_shape_are_read_or_rejected(events):
    from deepids.io.logs import events_from_records

    table, index, rejected = events_from_records(events)
    assert len(index) + len(rejected) == len(events) and table.height == len(index)


@FUZZ
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".csv", ".jsonl", ".evtx", ".parquet", ".pcap"]))
def test_any_file_is_read_or_refused_in_one_line(tmp_path_factory, data, suffix):
    from deepids.io import inspect_flows
    from deepids.io.logs import read_events

    path = tmp_path_factory.mktemp("any") / f"input{suffix}"
    path.write_bytes(data)
    try:
        if suffix in (".jsonl", ".evtx"):
            read_events(path)
        else:
            inspect_flows(path)
    except DeepidsError as exc:
        assert "\n" not in str(exc).strip()
