"""Lines of a file (followed as it grows, through rotation and truncation) or stdin, with their byte offsets.

`LineReader` reads in a background thread into a bounded queue (a fast producer waits rather
than filling memory). Each item is a `Line`: the raw bytes, the identity of the file they
came from (`FileId`: device, inode and a fingerprint of its first bytes) and the offset just
past them, which is what a restarted follower resumes from.

- Rotation (a new file at the path): the old file is read to its end before the new one is
  opened, so lines written to it just before the rename are not lost.
- Truncation (copytruncate): the file is read again from its start; lines written between
  the last read and the truncation are in the rotated copy only, and are counted as
  ``truncations`` (their number cannot be known).
- A line longer than ``max_line_bytes`` is not held in memory: its bytes are skipped up to
  the next newline and it arrives as a `LongLine`, to be rejected and counted.
- Reading a line is linear in its length (no ``rest += chunk``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from deepids.errors import InputError

EOF = object()
FINGERPRINT_BYTES = 1024
DEFAULT_MAX_LINE = 16 << 20
_READ = 1 << 16


@dataclass(frozen=True)
class FileId:
    """Which file: device and inode, and a hash of its first bytes (up to 1 KiB, with how many)."""

    dev: int
    ino: int
    fingerprint: str
    fingerprint_bytes: int

    def to_dict(self) -> dict:
        return {"dev": self.dev, "ino": self.ino, "fingerprint": self.fingerprint,
                "fingerprint_bytes": self.fingerprint_bytes}

    @classmethod
    def from_dict(cls, d: dict) -> "FileId":
        return cls(int(d["dev"]), int(d["ino"]), str(d["fingerprint"]), int(d["fingerprint_bytes"]))

    @property
    def key(self) -> str:
        return f"{self.dev}:{self.ino}"


def _fingerprint(fd: int, n: int = FINGERPRINT_BYTES) -> tuple[str, int]:
    head = os.pread(fd, n, 0)
    return hashlib.sha256(head).hexdigest()[:32], len(head)


def file_id(fd: int, n: int = FINGERPRINT_BYTES) -> FileId:
    st = os.fstat(fd)
    fp, size = _fingerprint(fd, n)
    return FileId(st.st_dev, st.st_ino, fp, size)


def same_file(fd: int, saved: FileId) -> bool:
    """The open file is the one `saved` describes (same device and inode, same first bytes)."""
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (saved.dev, saved.ino):
        return False
    return _fingerprint(fd, saved.fingerprint_bytes)[0] == saved.fingerprint


@dataclass(frozen=True)
class Line:
    data: bytes
    file: FileId | None = None
    end: int | None = None          # offset just past this line in `file`

    @property
    def key(self) -> str | None:
        """A key that names this record across restarts: file identity and start offset."""
        return None if self.file is None else f"{self.file.key}:{self.end - len(self.data)}"


@dataclass(frozen=True)
class LongLine:
    """A line over the length limit, skipped without being held."""

    size: int
    file: FileId | None = None
    end: int | None = None


def split_lines(chunks: Iterator[bytes], start: int = 0, max_line_bytes: int = DEFAULT_MAX_LINE,
                final: bool = True) -> Iterator[tuple[bytes | int, int]]:
    """(line bytes, end offset) for each line of `chunks`; a too-long line gives (its length, end).

    The last line without a newline is given only when `final`.
    """
    pending = _Pending(start, max_line_bytes)
    for chunk in chunks:
        yield from pending.feed(chunk)
    if final:
        yield from pending.finish()


class LineReader:
    """Reads lines from a file (optionally following it) or stdin into a bounded queue of `Line`s.

    `resume` = (FileId, offset) starts a followed file where a previous run stopped: at the
    offset when the file at the path is the same file, else in the rotated file of that
    identity beside it (read to its end first), else from the start.
    """

    def __init__(self, source: str | Path, *, follow: bool = False, poll_interval: float = 0.2,
                 max_queued_lines: int = 50_000, stdin: IO[bytes] | None = None,
                 max_line_bytes: int = DEFAULT_MAX_LINE, resume: tuple[FileId, int] | None = None):
        self.source = str(source)
        self.follow = follow
        self.poll_interval = poll_interval
        self.max_line_bytes = max_line_bytes
        self.lines: queue.Queue = queue.Queue(maxsize=max_queued_lines)
        self.error: BaseException | None = None
        self.truncations = 0
        self.rotations = 0
        self.resumed: str | None = None      # how the saved position was used
        self._resume = resume
        self._stop = threading.Event()
        self._stdin = stdin
        if self.source != "-":
            p = Path(self.source)
            if not p.exists():
                raise InputError(f"{p}: no such file")
            if not p.is_file():
                raise InputError(f"{p} is not a regular file")
        self._thread = threading.Thread(target=self._run, name="deepids-stream-reader", daemon=True)

    def start(self) -> "LineReader":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self.lines.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _emit(self, pieces, file: FileId | None) -> bool:
        for line, end in pieces:
            item = LongLine(line, file, end) if isinstance(line, int) else Line(line, file, end)
            if not self._put(item):
                return False
        return True

    def _run(self) -> None:
        try:
            if self.source == "-" and self._stdin is not None:
                self._emit(split_lines(iter(lambda: self._stdin.read(_READ), b""), 0, self.max_line_bytes), None)
            elif self.source == "-":
                fd = sys.stdin.fileno()      # raw reads: no buffered-reader lock held by this daemon thread
                self._emit(split_lines(iter(lambda: os.read(fd, _READ), b""), 0, self.max_line_bytes), None)
            else:
                self._read_file(Path(self.source))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self.error = exc
        finally:
            while True:
                try:
                    self.lines.put(EOF, timeout=0.2)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        try:
                            self.lines.get_nowait()
                        except queue.Empty:
                            pass

    def _read_file(self, path: Path) -> None:
        from deepids.io.pcap import is_capture

        if is_capture(path):             # streamed as flows by deepids.serving.stream.stream_capture
            raise InputError(f"{path} is a packet capture: score it with run_stream (flows, not lines)")
        with open(path, "rb") as probe:
            magic = probe.read(8)
        gz = magic[:2] == b"\x1f\x8b"
        for sig, what in ((b"ElfFile\x00", "a Windows EVTX log"), (b"PAR1", "a Parquet file"),
                          (b"BZh", "bzip2-compressed"), (b"\x28\xb5\x2f\xfd", "zstd-compressed")):
            if magic.startswith(sig):
                raise InputError(f"{path} is {what}; stream reads CSV or NDJSON text (plain or gzip). "
                                 f"Use deepids score for it")
        if gz:
            if self.follow:
                raise InputError(f"{path} is gzip-compressed; --follow needs a plain text file")
            with gzip.open(path, "rb") as fh:
                self._emit(split_lines(iter(lambda: fh.read(_READ), b""), 0, self.max_line_bytes), None)
            return
        fh, offset = self._open_resumed(path)
        try:
            self._follow(path, fh, offset)
        finally:
            fh.close()

    def _open_resumed(self, path: Path):
        """The file to start with and the offset in it."""
        fh = open(path, "rb")
        if self._resume is None:
            return fh, 0
        saved, offset = self._resume
        size = os.fstat(fh.fileno()).st_size
        if same_file(fh.fileno(), saved):
            if size >= offset:
                self.resumed = f"at byte {offset:,}"
                return fh, offset
            self.resumed = "from the start (the file is shorter than the saved offset: truncated)"
            self.truncations += 1
            return fh, 0
        rotated = _find_rotated(path, saved)
        if rotated is not None:
            fh.close()
            self.resumed = f"in the rotated {rotated.name} at byte {offset:,}, then {path.name}"
            self.rotations += 1
            return open(rotated, "rb"), offset
        self.resumed = "from the start (a new file at the path; the saved one was not found)"
        return fh, 0

    def _follow(self, path: Path, fh, offset: int) -> None:
        fid = file_id(fh.fileno())
        fh.seek(offset)
        pieces = _Pending(offset, self.max_line_bytes)
        while not self._stop.is_set():
            chunk = fh.read(_READ)
            if chunk:
                if not self._emit(pieces.feed(chunk), fid):
                    return
                continue
            if not self.follow:
                break
            time.sleep(self.poll_interval)        # at the end: wait for more, notice truncation or rotation
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue                          # rotated away; wait for the new file
            opened = os.fstat(fh.fileno())
            if (st.st_dev, st.st_ino) != (opened.st_dev, opened.st_ino):
                # rotated: read the old file to its end (lines written before the rename) first
                while (chunk := fh.read(_READ)) and not self._stop.is_set():
                    if not self._emit(pieces.feed(chunk), fid):
                        return
                if not self._emit(pieces.finish(), fid):
                    return
                fh.close()
                fh = open(path, "rb")
                fid = file_id(fh.fileno())
                pieces = _Pending(0, self.max_line_bytes)
                self.rotations += 1
            elif st.st_size < fh.tell() or (fid.fingerprint_bytes and not same_file(fh.fileno(), fid)):
                fh.seek(0)                        # truncated (copytruncate): read again from the start
                fid = file_id(fh.fileno())
                pieces = _Pending(0, self.max_line_bytes)
                self.truncations += 1
            elif fid.fingerprint_bytes < FINGERPRINT_BYTES and st.st_size > fid.fingerprint_bytes:
                fid = file_id(fh.fileno())        # the file grew past its first bytes: a fuller fingerprint
        if not self._stop.is_set():
            self._emit(pieces.finish(), fid)


class _Pending:
    """Bytes of an unfinished line, kept as pieces (joined once), and the offset reached."""

    def __init__(self, offset: int, max_line: int):
        self.offset = offset
        self.max_line = max_line
        self.pieces: list[bytes] = []
        self.held = 0
        self.skipping = 0

    def feed(self, chunk: bytes) -> list[tuple[bytes | int, int]]:
        out: list[tuple[bytes | int, int]] = []
        pos = 0
        while True:
            nl = chunk.find(b"\n", pos)
            part = chunk[pos:] if nl < 0 else chunk[pos:nl + 1]
            if self.skipping or self.held + len(part) > self.max_line:
                self.skipping += self.held + len(part)
                self.pieces, self.held = [], 0
                if nl >= 0:
                    self.offset += self.skipping
                    out.append((self.skipping, self.offset))
                    self.skipping = 0
            elif nl >= 0:
                line = b"".join(self.pieces) + part if self.pieces else part
                self.pieces, self.held = [], 0
                self.offset += len(line)
                out.append((line, self.offset))
            elif part:
                self.pieces.append(part)
                self.held += len(part)
            if nl < 0:
                return out
            pos = nl + 1

    def finish(self) -> list[tuple[bytes | int, int]]:
        """The last line without a newline (at the end of the input, or of a rotated file)."""
        if self.skipping:
            n, self.skipping = self.skipping, 0
            self.offset += n
            return [(n, self.offset)]
        if not self.pieces:
            return []
        line = b"".join(self.pieces)
        self.pieces, self.held = [], 0
        self.offset += len(line)
        return [(line, self.offset)]


def _find_rotated(path: Path, saved: FileId) -> Path | None:
    """A file beside `path` that is the saved file (rotated while nobody was following)."""
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return None
    for p in siblings:
        if p == path or not p.name.startswith(path.name.split(".")[0]):
            continue
        try:
            with open(p, "rb") as fh:
                if same_file(fh.fileno(), saved):
                    return p
        except OSError:
            continue
    return None
