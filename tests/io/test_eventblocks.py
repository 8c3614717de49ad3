"""The columnar JSON-Lines event reader gives what the per-event path gives: on every shipped
JSON-Lines event log, the fuzz corpus, crafted corner cases and a few shared OTRF recordings."""

from __future__ import annotations

import gzip
import json

import pytest

from deepids.errors import DeepidsError
from deepids.io import eventblocks, eventlines
from deepids.io.events import EVENT_COLUMNS, events_from_records, raw_fields
from deepids.io.logs import is_log_file, iter_event_batches

EMPIRE = "otrf/atomic/discovery/empire_shell_samr_EnumDomainUsers_2020-09-21193527.json.gz"
SHARED = ("atomic/discovery/empire_shell_net_localgroup_administrators_2020-09-21191843.json.gz",
          "atomic/lateral_movement/covenant_psremoting_command_2020-08-06115603.json.gz",
          "atomic/persistence/empire_schtasks_creation_standard_user_2020-09-21031526.json.gz")


def _read(monkeypatch, paths, fast: bool, batch_size: int):
    """Every chunk of the read, with the path forced; or the error's text."""
    monkeypatch.setattr(eventblocks, "FAST", fast)
    try:
        return [(t, r) for t, r in iter_event_batches(paths, batch_size=batch_size, keep_raw=True)]
    except DeepidsError as exc:
        return str(exc)


def assert_alike(monkeypatch, paths, batch_size: int = 10_000) -> int:
    """Both paths give equal chunks (`raw` equal as JSON), record numbers and reports; the events read."""
    fast, slow = _read(monkeypatch, paths, True, batch_size), _read(monkeypatch, paths, False, batch_size)
    if isinstance(slow, str) or isinstance(fast, str):
        assert fast == slow
        return 0
    assert len(fast) == len(slow)
    cols = [c for c in EVENT_COLUMNS if c != "raw"]
    for (a, ra), (b, rb) in zip(fast, slow):
        assert a.schema == b.schema
        assert a.select(cols).equals(b.select(cols))
        assert [raw_fields(x) for x in a.get_column("raw")] == [raw_fields(x) for x in b.get_column("raw")]
        assert a.get_column("raw").null_count() == b.get_column("raw").null_count()
        assert ra.numbers.tolist() == rb.numbers.tolist()
        assert ra.to_dict() == rb.to_dict()
    return sum(t.height for t, _ in fast)


@pytest.fixture
def columnar_blocks(monkeypatch):
    """Counts the blocks the columnar path read itself (not handed to the per-event path)."""
    counts = {"columnar": 0, "refused": 0}
    real = eventblocks.columnar_piece

    def counting(block, source_file, keep_raw):
        piece = real(block, source_file, keep_raw)
        counts["columnar" if piece is not None else "refused"] += 1
        return piece

    monkeypatch.setattr(eventblocks, "columnar_piece", counting)
    return counts


def test_shipped_json_lines_event_logs_read_alike(samples_dir, monkeypatch, columnar_blocks):
    data = samples_dir.parent
    files = sorted(f for f in data.rglob("*") if f.is_file() and is_log_file(f) and not f.name.endswith(".evtx"))
    assert any(f.name.endswith(".json.gz") for f in files)
    for f in files:
        assert_alike(monkeypatch, f)
    read = assert_alike(monkeypatch, samples_dir / "otrf", batch_size=97)     # chunks across blocks and files
    assert read == 2374 and columnar_blocks["columnar"] > 0
    numbers = [n for _, r in iter_event_batches(samples_dir / "otrf", batch_size=97) for n in r.numbers]
    assert numbers == list(range(2374))        # each event's position among the records read


def test_fuzz_corpus_reads_alike(monkeypatch, columnar_blocks):
    from pathlib import Path

    corpus = Path(__file__).parents[1] / "fuzz" / "corpus"
    files = sorted(f for f in corpus.iterdir() if is_log_file(f) and not f.name.endswith(".evtx"))
    assert len(files) >= 5
    for f in files:
        for size in (10_000, 7):
            assert_alike(monkeypatch, f, size)


def _corners(good: list[bytes]) -> list[bytes]:
    """Real events with one field changed each to a case the columnar reader must hand over or match."""
    base = json.loads(good[0])
    sec = next(json.loads(ln) for ln in good if b'"EventID":4688' in ln or b'"EventID": 4688' in ln)
    ps = next(json.loads(ln) for ln in good if b"Host Application = " in ln)

    def edit(event, **fields):
        return json.dumps({**event, **fields}).encode()

    return [
        edit(base, ProcessId=7456.0), edit(base, ProcessId=7456.5), edit(base, ProcessId=1e20),
        edit(base, ProcessId=" 12 "), edit(base, ProcessId="1_000"), edit(base, ProcessId="0x"),
        edit(base, ProcessId="0xFFFFFFFFFFFFFFFFFF"), edit(base, ProcessId=True),
        edit(base, ProcessId=12345678901234567),
        edit(base, ProcessId="-"), edit(base, ProcessId=""), edit(base, ProcessId=None, SourceProcessId="0x1d20"),
        edit(base, Image=5.0), edit(base, Image=True), edit(base, Image={"a": 1}), edit(base, Image=[]),
        edit(base, Image=17), edit(base, Hostname="  workstation5.theshire.local "), edit(base, Hostname="10.0.0.5"),
        edit(base, Hostname="ŞTATİON"), edit(base, Hostname=None, Computer="DC1.x"), edit(base, Hostname=-1.5),
        edit(base, Channel="security"), edit(base, Channel=""), edit(base, Channel=7),
        edit(base, SubjectUserName="THESHIRE\\Pgustavo"), edit(base, SubjectUserName="-", User="a@b"),
        edit(base, EventID="4624", TargetUserName="x", SubjectUserName="y"), edit(base, EventID="0x1000"),
        edit(base, EventID=None), edit(base, EventID="abc"), edit(base, EventID=4625.0),
        edit(base, EventType="audit_failure"), edit(base, EventType="ſuccess"), edit(base, EventType=0),
        edit(base, **{"@timestamp": 1600731327}), edit(base, **{"@timestamp": 1e20}),
        edit(base, **{"@timestamp": "-", "EventTime": "2020-09-21 19:35:26"}),
        edit(base, **{"@timestamp": "2020-09-21 19:35:27 UTC"}), edit(base, **{"@timestamp": "yesterday"}),
        edit(base, CommandLine=0), edit(base, CommandLine=""), edit(ps, CommandLine=None),
        edit(ps, ContextInfo={"x": "Host Application = evil.exe"}), edit(ps, ContextInfo="Host Application = \n x"),
        edit(ps, ContextInfo="HostApplication=\u2003a b\u2003\r\nmore", Message="HostApplication=other"),
        edit(sec), edit(sec, Channel="Security", NewProcessId="0x10", ProcessId="0x20"),
        edit(base, IpPort="-", SourcePort="4444", DestPort=None, DestinationPort=" 80"),
        edit(base, Message="caf\u00e9 \ud83d\ude00"),
        b'{"EventID": 1, "Channel": "Security", "Note": "\\ud800x", "@timestamp": "2020-09-21T23:35:27.841Z"}',
        b'{"EventID": 1, "Channel": "Security", "Image": "\\ud800x", "@timestamp": "2020-09-21T23:35:27.841Z"}',
        b'{"EventID": 1, "Hostname": "\\udfff", "Message": "Host Application = \\ud800"}',
        b'{"EventID": 1, "Image": "first", "Image": "second", "Hostname": "A", "Hostname": null}',
        b'{"EventID": 1, "Image": "first", "Image" : "second"}', b'{"EventID": 1, "ProcessId": "1", "ProcessId":\t"2"}',
        b'{"EventID": 4688, "Channel": "Security", "deep": ' + b"[" * 1100 + b"]" * 1100 + b"}",
        b'{"EventID": 4688, "Channel": "Security", "deep": ' + b"[" * 1010 + b"]" * 1010 + b"}",
        b'{"EventID": 4688, "Channel": "Security", "deep": ' + b"[" * 600 + b"]" * 600 + b"}",
        json.dumps({"@timestamp": base["@timestamp"], "winlog": {"event_id": 4688, "channel": "Security",
                    "event_data": {"NewProcessId": "0x10"}}, "host": {"name": "h.example"}}).encode(),
        b'{"EventID": 1, "Channel": "Security", "winlog": "not an object"}',
        b'{"EventID": 1, "Image": "a\\u0000b", "Message": "HostApplication=x\\u0000y", "Big": 1e400}',
        b'{"EventID": 1, "Huge": 123456789012345678901234567890, "Tiny": 1e-400, "Neg": -0.0}',
        b'{"EventID": 1, "Image": 123456789012345678901234567890, "ProcessId": -9223372036854775809}',
        b'{"EventID": 1, "Image": 18446744073709551615, "ProcessId": 9223372036854775807, "x": [{"y": [1.5]}]}',
        b'{"EventID": 1, "Image": "a\xe2\x80\xa8b", "Hostname": "h\xc2\xa0"}\r', b'\xef\xbb\xbf{"EventID": 1}',
        b"   ", b'{"EventID": NaN}', b"[1, 2]", b'{"EventID": 3', b"\xff\xfe",
    ]


@pytest.mark.parametrize("size", [10_000, 4])
def test_crafted_corner_cases_read_alike(samples_dir, tmp_path, monkeypatch, columnar_blocks, size):
    good = [ln for ln in gzip.open(samples_dir / EMPIRE, "rb").read().split(b"\n") if ln.strip()]
    corners = _corners(good)
    path = tmp_path / "corners.jsonl"
    path.write_bytes(b"\n".join(good[:30] + corners + good[30:60]) + b"\n")
    assert assert_alike(monkeypatch, path, size) > 60
    # record numbers: the position of each event among the non-blank lines, counted independently
    lines = [ln for ln in path.read_bytes().split(b"\n") if ln.strip()]
    kept = [i for i, ln in enumerate(lines)
            if not isinstance(r := eventlines.line_record(ln), eventlines.Reject)
            and not isinstance(eventlines.python_row(r, "x", False), eventlines.Reject)]
    numbers = [n for _, r in iter_event_batches(path, batch_size=size) for n in r.numbers]
    assert numbers == kept and len(kept) < len(lines)
    # each corner alone, among clean events: a block the columnar reader keeps reading, or hands over whole
    for i, line in enumerate(corners):
        one = tmp_path / f"corner{i}.jsonl"
        one.write_bytes(b"\n".join(good[:5] + [line] + good[5:10]))
        assert_alike(monkeypatch, one, size)
    assert columnar_blocks["columnar"] > columnar_blocks["refused"] > 0


def test_a_lone_surrogate_in_a_field_read_goes_the_per_event_way(samples_dir, tmp_path):
    """The NDJSON reader reads `\\ud800` as NUL; such a line is handed to the per-event path, which
    rejects it as a bad field (a table cannot hold a lone surrogate); one kept elsewhere is kept."""
    import io

    import polars as pl

    lines = [b'{"EventID": 1, "Image": "\\ud800x"}', b'{"EventID": 1, "Image": "\\ud83d\\ude00"}',
             b'{"EventID": 1, "Image": "plain"}']
    df = pl.read_ndjson(io.BytesIO(b"\n".join(lines)), schema=eventblocks._SCHEMA)
    assert df.get_column("Image")[0] != "\ud800x"
    text = pl.Series(lines, dtype=pl.Binary).cast(pl.Utf8)
    assert eventblocks._odd_lines(text, df).to_list() == [True, True, False]
    path = tmp_path / "surrogates.jsonl"
    path.write_bytes(b"\n".join(lines + [b'{"EventID": 1, "Note": "\\ud800"}']))
    (events, report), = iter_event_batches(path, keep_raw=True)
    assert events.get_column("image").to_list() == ["\U0001f600", "plain", None]
    assert report.rejected == {eventlines.R_BAD_FIELD: 1}
    assert raw_fields(events.get_column("raw")[2]) == {"EventID": 1, "Note": "\ud800"}
    table, _, rejected = events_from_records([{"EventID": 1, "Image": "\ud800"}, {"EventID": 2}])
    assert table.height == 1 and len(rejected) == 1 and rejected[0].index == 0


@pytest.mark.parametrize("fast", [True, False])
def test_an_event_nested_too_deep_for_raw_is_kept_with_and_without_raw(tmp_path, monkeypatch, fast):
    """Nesting of ~1000 levels: read by both JSON readers, but not writable back by Python's json. The
    event is kept without `raw` either way, so a second read without `raw` finds the same events."""
    monkeypatch.setattr(eventblocks, "FAST", fast)
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b'{"EventID": 1}\n{"EventID": 2, "deep": ' + b"[" * 1010 + b"]" * 1010 + b"}\n")
    (with_raw, _), = iter_event_batches(path, keep_raw=True)
    (without, _), = iter_event_batches(path, keep_raw=False)
    assert with_raw.get_column("event_id").to_list() == without.get_column("event_id").to_list() == [1, 2]
    assert with_raw.get_column("raw").to_list() == ['{"EventID": 1}' if fast else '{"EventID":1}', None]


def test_long_lines_and_blank_lines_read_alike(samples_dir, tmp_path, monkeypatch):
    good = [ln for ln in gzip.open(samples_dir / EMPIRE, "rb").read().split(b"\n") if ln.strip()][:40]
    monkeypatch.setattr(eventlines, "MAX_LINE_BYTES", max(map(len, good[:20])) + 1)
    path = tmp_path / "long.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n\n".join(good[:20] + [b"x" * 100_000] + good[20:]) + b"\n \n")
    assert assert_alike(monkeypatch, path, 9) > 0
    fast = _read(monkeypatch, path, True, 9)
    merged = fast[0][1]
    for _, r in fast[1:]:
        merged = merged.merge(r)
    assert merged.rejected.get("line too long", 0) >= 1


def test_a_cut_gzip_file_reads_alike(samples_dir, tmp_path, monkeypatch):
    data = (samples_dir / EMPIRE).read_bytes()
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    fast = _read(monkeypatch, cut, True, 50)
    assert isinstance(fast, str) and "cannot read" in fast
    assert fast == _read(monkeypatch, cut, False, 50)
    # the chunks yielded before the damage are the same too
    chunks = {}
    for fast_path in (True, False):
        monkeypatch.setattr(eventblocks, "FAST", fast_path)
        got = []
        with pytest.raises(DeepidsError):
            for t, _ in iter_event_batches(cut, batch_size=50):
                got.append(t.height)
        chunks[fast_path] = got
    assert chunks[True] == chunks[False] and sum(chunks[True]) > 0


def _gzip_lines(path):
    """The non-blank lines `gzip.open` gives line by line (how event logs were read before), and its error."""
    out = []
    try:
        with gzip.open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    out.append(line.rstrip(b"\n"))
    except (OSError, EOFError) as exc:
        return out, f"cannot read {path}: {exc}"
    return out, None


@pytest.mark.parametrize("damage", ["cut", "flipped", "garbage", "members", "not gzip", "empty"])
def test_damaged_gzip_gives_the_lines_and_error_gzip_open_gives(samples_dir, tmp_path, damage):
    data = (samples_dir / EMPIRE).read_bytes()
    path = tmp_path / "damaged.json.gz"
    half = len(data) // 2
    damaged = {"cut": data[: len(data) * 2 // 3], "flipped": data[:half] + bytes([data[half] ^ 0x55]) + data[half + 1:],
               "garbage": data + b"garbage", "members": data + data,
               "not gzip": b'{"EventID": 1}\n', "empty": b""}[damage]
    path.write_bytes(damaged)
    expected, error = _gzip_lines(path)
    assert (error is not None) == (damage in ("cut", "flipped", "garbage", "not gzip"))
    assert bool(expected) == (damage not in ("not gzip", "empty"))
    got = []
    try:
        for block in eventlines.read_blocks(path, 100):
            got += block.lines
    except DeepidsError as exc:
        assert str(exc) == error
    else:
        assert error is None
    assert got == expected


def test_shared_otrf_recordings_read_alike(shared_data, monkeypatch, columnar_blocks):
    root = shared_data / "logs" / "windows" / "otrf_security_datasets"
    files = [root / f for f in SHARED if (root / f).exists()]
    if not files:
        pytest.skip("the chosen shared OTRF recordings are absent")
    assert assert_alike(monkeypatch, files) > 5000
    assert columnar_blocks["refused"] == 0


def test_raw_is_the_whole_event(samples_dir):
    """`raw` holds every field of the event, from files and from events arriving live alike."""
    good = [json.loads(ln) for ln in gzip.open(samples_dir / EMPIRE, "rb").read().split(b"\n") if ln.strip()][:50]
    table, index, rejected = events_from_records(good)
    assert not rejected and [raw_fields(r) for r in table.get_column("raw")] == good
    from deepids.io.logs import read_events

    events, _ = read_events(samples_dir / EMPIRE)
    assert raw_fields(events.get_column("raw")[0]) == good[0]


def test_the_whitespace_the_host_application_is_stripped_of_is_what_str_strip_strips():
    """`_PY_SPACE` is written out (computing it walked every code point at import)."""
    assert eventblocks._PY_SPACE == "".join(c for c in map(chr, range(0x110000)) if c.isspace())
