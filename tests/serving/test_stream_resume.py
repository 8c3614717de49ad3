"""`deepids stream --follow` survives kill -9, rotation and truncation: every record scored exactly once."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from deepids.models import load_model
from deepids.serving import LiveScorer
from deepids.serving.alerts import MemorySink
from deepids.serving.follow import split_lines
from deepids.serving.stream import run_stream

N = 100_000


def _stream_cmd(model, src, tmp):
    return [sys.executable, "-m", "deepids", "stream", "--model", str(model), "--input", str(src), "--follow",
            "--state", str(tmp / "state"), "--scores", str(tmp / "scores.ndjson"), "--rejected",
            str(tmp / "rejected.ndjson"), "--alerts", str(tmp / "alerts.ndjson"), "--summary-json",
            str(tmp / "summary.json"), "--flush-interval", "0.2"]


def _lines(path):
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


@pytest.mark.slow
def test_killed_three_times_while_the_file_grows_every_record_once(seq_model_dir, friday_lines, tmp_path):
    src = tmp_path / "flows.csv"
    src.write_text(friday_lines[0] + "\n")
    data = list(itertools.islice(itertools.cycle(friday_lines[1:]), N))
    done = threading.Event()

    def grow():                                   # 100,000 real flows appended over about 15 s
        with open(src, "a") as fh:
            for start in range(0, N, 700):
                fh.write("".join(line + "\n" for line in data[start:start + 700]))
                fh.flush()
                time.sleep(0.1)
        done.set()

    writer = threading.Thread(target=grow, daemon=True)
    writer.start()
    rng = random.Random(16)
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "xdg"))
    scored = tmp_path / "scores.ndjson"
    for _ in range(3):
        before = _lines(scored) if scored.exists() else 0
        proc = subprocess.Popen(_stream_cmd(seq_model_dir, src, tmp_path), stderr=subprocess.PIPE, env=env)
        target = before + rng.randrange(3_000, 15_000)       # kill it mid-stream, at a random point
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not scored.exists() or _lines(scored) < target):
            time.sleep(rng.uniform(0.05, 0.3))
        proc.kill()                               # SIGKILL: no flush, no summary, no goodbye
        proc.wait()
    proc = subprocess.Popen(_stream_cmd(seq_model_dir, src, tmp_path), stderr=subprocess.PIPE, env=env)
    writer.join(120)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (done.is_set() and _lines(scored) >= N):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    summary = json.loads((tmp_path / "summary.json").read_text())
    scores = [json.loads(line) for line in open(scored)]
    # exactly once: every record number and every record key appears once in the scores
    assert sorted(s["record"] for s in scores) == list(range(N))
    assert len({s["record_key"] for s in scores}) == N
    assert summary["records_read"] == summary["records_scored"] == N and summary["records_rejected"] == 0
    assert summary["follow"]["runs"] == 4 and summary["follow"]["entities_restored"] > 0
    alerts = [json.loads(line) for line in open(tmp_path / "alerts.ndjson")]
    assert len(alerts) == summary["alerts"] == sum(s["is_anomaly"] for s in scores)
    assert len({a["deepids"]["record_key"] for a in alerts}) == len(alerts)
    # and with the windows each record would have had in one uninterrupted run
    whole = run_stream(LiveScorer(load_model(seq_model_dir)), src, [MemorySink()], scores_out=_Collect(),
                       batch_size=5000)
    assert whole.read == N
    got = np.array([s["score"] for s in sorted(scores, key=lambda s: s["record"])])
    np.testing.assert_allclose(got, np.array(_Collect.last), rtol=1e-5, atol=1e-6)


class _Collect:
    last: list = []

    def __init__(self):
        type(self).last = []

    def write(self, text):
        type(self).last += [json.loads(line)["score"] for line in text.splitlines()]

    def flush(self):
        pass


def _append(path, lines):
    with open(path, "a") as fh:
        fh.write("".join(line + "\n" for line in lines))


def test_rotation_reads_the_old_file_to_its_end_first(seq_model, friday_lines, tmp_path):
    src = tmp_path / "flows.csv"
    header, rows = friday_lines[0], friday_lines[1:]
    src.write_text(header + "\n" + "\n".join(rows[:100]) + "\n")
    stop = threading.Event()
    out: dict = {}

    def follow():
        out["summary"] = run_stream(LiveScorer(seq_model), src, [MemorySink()], follow=True, poll_interval=0.05,
                                    flush_interval=0.05, stop=stop, state_path=tmp_path / "state")

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(1.5)
    with open(src, "a") as old:                   # logrotate: rename, the writer still holds the old file
        os.rename(src, tmp_path / "flows.csv.1")
        old.write("\n".join(rows[100:150]) + "\n")   # written after the rename, before the new file
        old.flush()
        src.write_text(header + "\n" + "\n".join(rows[150:200]) + "\n")
    time.sleep(1.5)
    stop.set()
    t.join(30)
    s = out["summary"]
    # 200 records; the new file's header line is a repeated header, rejected and counted
    assert s.scored == 200 and s.read == 201 and s.rejected == {"repeated header line": 1}
    assert s.follow["rotations"] == 1


def test_a_stream_restarted_after_rotation_finishes_the_rotated_file(seq_model, friday_lines, tmp_path):
    src = tmp_path / "flows.ndjson"
    from deepids.io.records import CsvLineParser

    records = [json.dumps(r) for r in CsvLineParser(friday_lines[0]).parse(friday_lines[1:121])]
    _append(src, records[:60])
    first = run_stream(LiveScorer(seq_model), src, state_path=tmp_path / "state")
    assert first.read == 60
    _append(src, records[60:80])                  # written, then rotated while nobody followed
    os.rename(src, tmp_path / "flows.ndjson.1")
    _append(src, records[80:120])
    again = run_stream(LiveScorer(seq_model), src, follow=True, poll_interval=0.05, flush_interval=0.05,
                       state_path=tmp_path / "state", stop=_stop_after(2.0))
    assert again.read == 120 and again.scored == 120 and "rotated" in again.follow["resumed"]


def test_copytruncate_starts_again_and_says_so(seq_model, friday_lines, tmp_path):
    src = tmp_path / "flows.csv"
    src.write_text(friday_lines[0] + "\n" + "\n".join(friday_lines[1:81]) + "\n")
    stop = threading.Event()
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(s=run_stream(
        LiveScorer(seq_model), src, follow=True, poll_interval=0.05, flush_interval=0.05, stop=stop)))
    t.start()
    time.sleep(1.5)
    os.truncate(src, 0)
    time.sleep(0.5)
    src.write_text(friday_lines[0] + "\n" + "\n".join(friday_lines[81:101]) + "\n")
    time.sleep(1.5)
    stop.set()
    t.join(30)
    s = out["s"]
    assert s.scored == 100 and s.follow["truncations"] == 1


def _stop_after(seconds):
    ev = threading.Event()
    threading.Timer(seconds, ev.set).start()
    return ev


def test_long_lines_are_skipped_and_counted_without_being_held(seq_model, friday_lines, tmp_path):
    src = tmp_path / "flows.csv"
    with open(src, "w") as fh:
        fh.write(friday_lines[0] + "\n" + "\n".join(friday_lines[1:11]) + "\n")
        fh.write("9" * (3 << 20) + "\n")          # 3 MiB of digits on one line
        fh.write("\n".join(friday_lines[11:21]) + "\n")
    s = run_stream(LiveScorer(seq_model), src, max_line_bytes=1 << 20)
    assert s.read == 21 and s.scored == 20 and s.rejected == {"line too long": 1}
    # splitting is linear: a 50 MB line in 64 KiB chunks
    chunks = [b"x" * 65536] * 800 + [b"\n"]
    assert list(split_lines(iter(chunks), max_line_bytes=1 << 20)) == [(800 * 65536 + 1, 800 * 65536 + 1)]


def test_a_resumed_stream_never_cuts_a_file_it_did_not_write(seq_model, friday_lines, tmp_path):
    from deepids.atomic import open_append

    src = tmp_path / "flows.csv"
    src.write_text(friday_lines[0] + "\n" + "\n".join(friday_lines[1:51]) + "\n")
    with open_append(tmp_path / "a.ndjson") as out:
        run_stream(LiveScorer(seq_model), src, scores_out=out, state_path=tmp_path / "state")
    other = tmp_path / "b.ndjson"
    other.write_text("x" * 100_000 + "\n")        # someone else's file, larger than the saved size
    _append(src, friday_lines[51:61])
    with open_append(other) as out:
        s = run_stream(LiveScorer(seq_model), src, scores_out=out, state_path=tmp_path / "state")
    assert s.read == 60 and other.read_text().startswith("x" * 100_000)
    assert len(other.read_text().splitlines()) == 11      # the old line, then the 10 new records
