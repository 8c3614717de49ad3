"""io/textstream.py: the bytes Arrow's CSV reader sees (UTF-8 repaired, damaged compression cut cleanly)."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import pytest

from deepids.io import textstream
from deepids.io.textstream import open_text


def _read_all(path: Path, compression, size: int = 7) -> tuple[bytes, textstream.RepairedStream]:
    stream = open_text(path, compression)
    parts = []
    while True:
        part = stream.read(size)
        if not part:
            break
        parts.append(part)
    stream.close()
    return b"".join(parts), stream


@pytest.mark.parametrize("size", [1, 2, 3, 5, 1 << 20])
def test_valid_utf8_passes_unchanged_whatever_the_read_size(tmp_path, monkeypatch, size):
    text = "label,bytes\nWeb Attack – Brute Force,12\nnaïve ünïcödé 🙂,3\n".encode() * 50
    path = tmp_path / "t.csv"
    path.write_bytes(text)
    monkeypatch.setattr(textstream, "_READ", 4)          # multi-byte characters cut between reads
    data, stream = _read_all(path, None, size)
    assert data == text and stream.note() is None


def test_invalid_utf8_becomes_the_replacement_character(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n1,\xff\xfe\n2,\x96x\n")
    monkeypatch.setattr(textstream, "_READ", 3)
    data, _ = _read_all(path, None, 2)
    assert data == "a,b\n1,\ufffd\ufffd\n2,\ufffdx\n".encode()


def test_multi_member_gzip_and_bzip2_read_whole(tmp_path):
    body = b"".join(b"%d,x\n" % i for i in range(5000))
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(body[:9000]) + gzip.compress(body[9000:]))
    assert _read_all(gz, "gzip", 4096)[0] == body
    bz = tmp_path / "t.csv.bz2"
    bz.write_bytes(bz2.compress(body))
    assert _read_all(bz, "bz2", 4096)[0] == body


def test_truncated_gzip_ends_after_the_last_whole_line(tmp_path):
    body = b"".join(b"%d,%d\n" % (i, i * i) for i in range(200_000))
    packed = gzip.compress(body)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    data, stream = _read_all(path, "gzip", 1 << 16)
    assert data.endswith(b"\n") and body.startswith(data) and len(data) > len(body) // 4
    assert stream.cut_lines == 1
    assert "truncated" in stream.note() and "cut.csv.gz" in stream.note()


def test_a_read_never_returns_more_than_asked(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xff" * 100 + b"\n")
    stream = open_text(path, None)
    parts = []
    while part := stream.read(10):
        assert len(part) <= 10
        parts.append(part)
    assert b"".join(parts) == "\ufffd".encode() * 100 + b"\n"
