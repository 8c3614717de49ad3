"""The bytes of a delimited text file as Arrow's CSV reader should see them.

Two things break Arrow's reader on real damaged files, and both are mended here, before it reads:

- **Bytes that are not UTF-8.** Arrow decodes a malformed row as UTF-8 before it hands it to the
  row handler; when that fails the whole read fails (and, with its read-ahead thread, can take
  the process down). Invalid sequences become U+FFFD here, as the column decoder
  (``io.arrow``) would turn them anyway; valid text, multi-byte characters split across reads
  included, passes unchanged, and an ASCII block is passed through without decoding.
- **A damaged or truncated compressed file.** Arrow's decompressor fails on the block that holds
  the damage and everything decoded in that block is lost with it. Here the stream is
  decompressed in Python (gzip, with several members; bzip2), and at the damage it ends after the
  last complete line: the rows before the damage are read, the cut line is counted
  (``cut_lines``), and ``damage`` says what happened, for the read report's notes.
"""

from __future__ import annotations

import bz2
import codecs
import zlib
from pathlib import Path

import pyarrow as pa

from deepids.errors import InputError

__all__ = ["LineQuotes", "RepairedStream", "odd_quotes", "open_text"]

_READ = 1 << 20
_LINES_READ = 4 << 20
_FEED = 1 << 14     # compressed bytes per decompress call: at damage, at most this much is lost


class _ReadOnlyStream:
    """What Arrow asks of a Python file object it reads from, beyond `read`, `tell` and `close`."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False


class RepairedStream(_ReadOnlyStream):
    """A readable binary file object over ``path`` (decompressed), with invalid UTF-8 replaced."""

    def __init__(self, path: Path, compression: str | None):
        self.path = path
        self.compression = compression
        self.damage: str | None = None
        self.cut_lines = 0
        self.raw_bytes = 0                  # compressed bytes consumed
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = False               # the decoder holds the start of a multi-byte character
        self._member_done = False           # the last compressed member ended cleanly
        self._buf = b""
        self._eof = False
        self.closed = False
        try:
            if compression in (None, "gzip", "bz2"):
                self._raw = pa.input_stream(str(path), compression=None)   # not guessed from the name
            else:                           # other codecs: Arrow decompresses, no damage recovery
                self._raw = pa.input_stream(str(path), compression=compression)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        self._inflate = self._new_inflater()

    # ------------------------------------------------------------------ decompression
    def _new_inflater(self):
        if self.compression == "gzip":
            return zlib.decompressobj(wbits=47)
        if self.compression == "bz2":
            return bz2.BZ2Decompressor()
        return None

    def _inflate_chunk(self, block: bytes) -> bytes:
        out = []
        at = self.raw_bytes - len(block)
        for start in range(0, len(block), _FEED):
            if self._eof:
                break
            self._inflate_piece(block[start:start + _FEED], out, at + start)
        return b"".join(out)

    def _inflate_piece(self, data: bytes, out: list[bytes], at: int) -> None:
        while data:
            try:
                out.append(self._inflate.decompress(data))
            except (zlib.error, OSError, EOFError) as exc:
                self._damaged(f"damaged compressed data at about byte {at:,} ({exc})")
                break
            data = self._inflate.unused_data if self._inflate.eof else b""
            if self._inflate.eof:
                self._inflate = self._new_inflater()    # the next member of a multi-member file
                if not data:
                    self._member_done = True
                    break
            self._member_done = False

    def _damaged(self, why: str) -> None:
        self.damage = why
        self._eof = True

    def _next_block(self) -> bytes:
        try:
            data = self._raw.read(_READ)
        except (OSError, pa.ArrowException, EOFError) as exc:
            self._damaged(f"read failed after {self.raw_bytes:,} bytes ({exc})")
            return b""
        self.raw_bytes += len(data)
        if self._inflate is None:
            if not data:
                self._eof = True
            return data
        if not data:
            self._eof = True
            if not self._member_done and self.raw_bytes:
                self.damage = f"the compressed file ends early, after {self.raw_bytes:,} bytes (truncated)"
            return b""
        return self._inflate_chunk(data)

    # ------------------------------------------------------------------ UTF-8
    def _repair(self, data: bytes, final: bool) -> bytes:
        if not self._pending:
            if data.isascii():
                return data
            try:                            # valid UTF-8 passes as it is (a character cut at the
                _, used = codecs.utf_8_decode(data, "strict", final)   # end waits for the next read)
            except UnicodeDecodeError:
                used = -1
            if used == len(data):
                return data
        text = self._decoder.decode(data, final)
        self._pending = bool(self._decoder.getstate()[0])
        return text.encode("utf-8")

    # ------------------------------------------------------------------ file object
    def read(self, n: int = -1) -> bytes:
        want = n if n is not None and n >= 0 else 1 << 62
        if not self._buf and self._inflate is None and not self._eof and want < 1 << 62:
            return self._read_plain(want)       # the common case: no copy beyond Arrow's own
        while len(self._buf) < want and not self._eof:
            block = self._next_block()
            self._buf += self._repair(block, final=self._eof)
        if self._eof and self.damage and self._buf:
            self._cut_partial_line()
        out, self._buf = self._buf[:want], self._buf[want:]
        return out

    def _read_plain(self, want: int) -> bytes:
        while True:                         # b"" only at the end (a cut character yields nothing yet)
            try:
                data = self._raw.read(want)
            except (OSError, pa.ArrowException, EOFError) as exc:
                raise InputError(f"cannot read {self.path}: {exc}") from None
            self.raw_bytes += len(data)
            if not data:
                self._eof = True
            out = self._repair(data, final=not data)
            if len(out) > want:             # replacement characters are longer than the bytes
                out, self._buf = out[:want], out[want:]
            if out or self._eof:
                return out

    def _cut_partial_line(self) -> None:
        """At damage, the text after the last line break is an incomplete row: dropped, counted."""
        if self._buf.endswith(b"\n"):
            return
        nl = self._buf.rfind(b"\n")
        self._buf = self._buf[:nl + 1] if nl >= 0 else b""
        self.cut_lines += 1

    def tell(self) -> int:
        return self.raw_bytes

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._raw.close()

    def __enter__(self) -> "RepairedStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def note(self) -> str | None:
        """One line for the read report, or None when the file was whole."""
        if self.damage is None:
            return None
        cut = f"; {self.cut_lines} cut line rejected" if self.cut_lines else ""
        return f"{self.path.name}: {self.damage}; the rows before the damage were read{cut}"


def open_text(path: Path, compression: str | None) -> RepairedStream:
    return RepairedStream(Path(path), compression)


def odd_quotes(line: bytes | str) -> bool:
    """A line with an odd number of double quotes: a quote left open (a cut or damaged write)."""
    return line.count(b'"' if isinstance(line, bytes) else '"') % 2 == 1


class LineQuotes(_ReadOnlyStream):
    """The bytes of a quoted CSV with each line whose quotes do not pair up replaced by ``-``: the
    reader then rejects that line alone (wrong number of fields), as a stream of the same lines
    does, instead of reading every line after it into one field."""

    def __init__(self, stream):
        self.stream = stream
        self._buf = b""
        self._rest = b""
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        while (n is None or n < 0 or len(self._buf) < n) and not self._eof:
            chunk = self.stream.read(_LINES_READ)
            if chunk:
                data = self._rest + chunk
                cut = data.rfind(b"\n") + 1
                data, self._rest = data[:cut], data[cut:]
            else:
                self._eof, data, self._rest = True, self._rest, b""
            if b'"' in data:
                data = b"\n".join(b"-" if odd_quotes(ln) else ln for ln in data.split(b"\n"))
            self._buf += data
        if n is None or n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    @property
    def closed(self) -> bool:
        return self.stream.closed

    def tell(self) -> int:
        return self.stream.tell()

    def close(self) -> None:
        self.stream.close()
