"""Packet captures (pcap, pcapng, optionally gzip-compressed) as columns of packet headers.

Reading is done by dpkt's readers (``dpkt.pcap.Reader``, ``dpkt.pcapng.Reader``); the
headers are then parsed for whole chunks of packets at once with numpy, from the first
:data:`SNAP` bytes of each packet, instead of building one Python object per packet.

What is kept per packet (see :class:`Packets`): the capture time in microseconds, the IP
version, source and destination address (16 bytes, IPv4 in the first 4), the transport
protocol, ports, TCP flags and window, the transport header length and the payload length
(from the IP length fields, so Ethernet padding of short frames is not payload).

Link types: Ethernet (with up to two 802.1Q/802.1ad tags), Linux cooked capture v1 and v2
(``tcpdump -i any``), raw IP, and BSD loopback. Only TCP and UDP over IPv4 or IPv6 become
packets of a flow, as in CICFlowMeter; every other packet is counted by reason in
:class:`CaptureReport` (not IP, not TCP/UDP, non-first IP fragment, IPv6 extension header,
truncated header).

Damage: a capture that ends in the middle of a record, or holds a record whose length is
impossible, is read up to the last whole record; :attr:`CaptureReport.damage` says where
and why, and nothing is raised. A file that is no capture at all raises :class:`InputError`.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from deepids.errors import InputError

__all__ = [
    "CAPTURE_SUFFIXES",
    "CaptureReport",
    "Packets",
    "is_capture",
    "read_packets",
]

#: file names a directory argument holding captures is expanded to
CAPTURE_SUFFIXES: tuple[str, ...] = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz")

#: bytes of each packet kept for header parsing (L2 + two VLAN tags + IPv4 options + TCP window)
SNAP = 128
#: a record longer than this is taken as damage (pcap's own maximum snap length is 256 KiB)
MAX_RECORD = 1 << 20
_CHUNK = 20_000

_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

# link-layer types (tcpdump.org/linktypes.html)
DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_RAW_OPENBSD, DLT_LOOP = 0, 1, 101, 12, 108
DLT_LINUX_SLL, DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL2 = 113, 228, 229, 276

# reasons a packet is not part of any flow
S_NOT_IP = "not IPv4/IPv6"
S_NOT_TCP_UDP = "not TCP/UDP"
S_FRAGMENT = "non-first IP fragment"
S_IPV6_EXT = "IPv6 extension header before TCP/UDP"
S_TRUNCATED = "headers cut short (snap length)"
S_LINKTYPE = "unsupported link type"


def _magic(path: Path) -> tuple[bytes, bool]:
    """The first 4 bytes of the (decompressed) file and whether it is gzip-compressed."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read(4), True
        except (OSError, EOFError):
            return b"", True
    return head, False


def is_capture(path: str | os.PathLike[str]) -> bool:
    """Whether the file is a pcap or pcapng capture (gzip allowed), from its magic number."""
    p = Path(path)
    if not p.is_file():
        return False
    head, _ = _magic(p)
    return head in _PCAP_MAGICS or head == _PCAPNG_MAGIC


@dataclass
class CaptureReport:
    """What was read from a capture: packets, the packets left out by reason, and damage."""

    path: str
    format: str = ""                         # "pcap" | "pcapng"
    compressed: bool = False
    linktype: int | None = None
    packets: int = 0                         # records read
    bytes: int = 0                           # captured bytes of those records
    tcp_udp_packets: int = 0                 # packets that enter flows
    skipped: dict[str, int] = field(default_factory=dict)
    damage: str | None = None                # where and why reading stopped early
    first_ts: int | None = None              # microseconds since the epoch
    last_ts: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "compressed": self.compressed,
                "linktype": self.linktype, "packets": self.packets, "bytes": self.bytes,
                "tcp_udp_packets": self.tcp_udp_packets,
                "skipped": dict(sorted(self.skipped.items(), key=lambda kv: -kv[1])),
                "damage": self.damage}

    def line(self) -> str:
        text = (f"{self.path}: {self.packets:,} packets ({self.format}"
                f"{', gzip' if self.compressed else ''}), {self.tcp_udp_packets:,} TCP/UDP")
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n:,} {r}" for r, n in
                                             sorted(self.skipped.items(), key=lambda kv: -kv[1]))
        if self.damage:
            text += f"; DAMAGED: {self.damage}"
        return text


@dataclass
class Packets:
    """TCP/UDP packets of a capture, one array entry per packet, in capture order."""

    ts: np.ndarray          # int64 microseconds since the epoch
    version: np.ndarray     # uint8: 4 or 6
    src: np.ndarray         # (n, 16) uint8: IPv4 in the first 4 bytes, zero-padded
    dst: np.ndarray         # (n, 16) uint8
    proto: np.ndarray       # uint8: 6 or 17
    sport: np.ndarray       # int32
    dport: np.ndarray       # int32
    flags: np.ndarray       # uint16 TCP flags (FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ECE=64 CWR=128); 0 for UDP
    window: np.ndarray      # int32 TCP window; -1 for UDP
    header_len: np.ndarray  # int32 transport header bytes (TCP data offset * 4, UDP 8)
    payload: np.ndarray     # int32 transport payload bytes

    def __len__(self) -> int:
        return int(self.ts.size)

    @classmethod
    def empty(cls) -> "Packets":
        return cls(np.empty(0, np.int64), np.empty(0, np.uint8), np.empty((0, 16), np.uint8),
                   np.empty((0, 16), np.uint8), np.empty(0, np.uint8), np.empty(0, np.int32),
                   np.empty(0, np.int32), np.empty(0, np.uint16), np.empty(0, np.int32),
                   np.empty(0, np.int32), np.empty(0, np.int32))

    @classmethod
    def concat(cls, parts: list["Packets"]) -> "Packets":
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))


class _GuardedFile:
    """A file wrapper that notes short reads and refuses impossible record lengths, so that a
    damaged capture ends cleanly at the last whole record instead of yielding a cut packet.

    :meth:`mark` is called before each record: an empty read as the first read of a record is
    the clean end of the file; any other short read is truncation."""

    __slots__ = ("_read", "offset", "_reads", "short", "refused", "damaged")

    def __init__(self, fh):
        self._read = fh.read
        self.offset = 0
        self._reads = 0
        self.short: tuple[int, int, int] | None = None     # (offset, wanted, got)
        self.refused: tuple[int, int] | None = None         # (offset, wanted)
        self.damaged = False

    def mark(self) -> None:
        self._reads = 0

    def read(self, n: int = -1) -> bytes:
        if self.damaged:
            return b""
        if n is None or n < 0 or n > MAX_RECORD:
            self.refused = (self.offset, -1 if n is None else n)
            self.damaged = True
            return b""
        data = self._read(n)
        self._reads += 1
        got = len(data)
        if got < n and (got or self._reads > 1):
            self.short = (self.offset, n, got)
            self.damaged = True
        self.offset += got
        return data


def _records(path: Path, report: CaptureReport) -> Iterator[tuple[int, bytes, int]]:
    """(timestamp µs, first SNAP bytes, wire length of the captured data) per record."""
    import dpkt

    head, compressed = _magic(path)
    report.compressed = compressed
    if head in _PCAP_MAGICS:
        report.format = "pcap"
    elif head == _PCAPNG_MAGIC:
        report.format = "pcapng"
    elif not head:
        raise InputError(f"{path} is empty")
    else:
        raise InputError(f"{path} is not a pcap or pcapng capture")
    raw = gzip.open(path, "rb") if compressed else open(path, "rb")
    guard = _GuardedFile(raw)
    try:
        try:
            reader = dpkt.pcap.Reader(guard) if report.format == "pcap" else dpkt.pcapng.Reader(guard)
        except (ValueError, dpkt.UnpackError, EOFError, OSError) as exc:
            raise InputError(f"{path}: not a readable {report.format} capture: {exc}") from None
        report.linktype = int(reader.datalink())
        nano = report.format == "pcap" and head in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        it = iter(reader)
        while True:
            start = guard.offset
            guard.mark()
            try:
                ts, buf = next(it)
            except StopIteration:
                break
            except (dpkt.UnpackError, ValueError, struct.error, EOFError) as exc:
                report.damage = _damage_text(guard, start, f"unreadable record ({type(exc).__name__})")
                return
            if guard.damaged:
                report.damage = _damage_text(guard, start, None)
                return
            tsu = int(ts * 1_000_000) if nano else int(round(float(ts) * 1_000_000))
            yield tsu, buf[:SNAP], len(buf)
        if guard.damaged:
            report.damage = _damage_text(guard, start, None)
    except (OSError, EOFError) as exc:              # gzip stream cut short, disk errors
        report.damage = f"read error after {report.packets:,} packets: {exc}"
    finally:
        raw.close()


def _damage_text(guard: _GuardedFile, start: int, why: str | None) -> str:
    if guard.refused is not None:
        off, n = guard.refused
        return (f"record at byte {start:,} claims {n:,} bytes (more than {MAX_RECORD:,}): "
                f"the capture is corrupt from there on; read up to byte {start:,}")
    if guard.short is not None:
        off, n, got = guard.short
        return (f"capture ends inside a record at byte {start:,} (wanted {n:,} bytes at byte "
                f"{off:,}, found {got:,}): truncated; read up to byte {start:,}")
    return f"{why} at byte {start:,}; read up to there"


def _u16(a: np.ndarray, rows: np.ndarray, off: np.ndarray) -> np.ndarray:
    return (a[rows, off].astype(np.int32) << 8) | a[rows, off + 1].astype(np.int32)


def _parse_chunk(ts: list[int], snaps: list[bytes], caplens: list[int], linktype: int,
                 skipped: Counter) -> Packets:
    """Vectorised parse of the headers of one chunk of records."""
    n = len(ts)
    buf = np.frombuffer(b"".join(s.ljust(SNAP, b"\0") for s in snaps), dtype=np.uint8).reshape(n, SNAP)
    cap = np.minimum(np.asarray(caplens, dtype=np.int64), SNAP)
    rows = np.arange(n)
    l3 = np.full(n, -1, dtype=np.int64)       # offset of the IP header, -1 when not IP
    if linktype == DLT_EN10MB:
        et = _u16(buf, rows, np.full(n, 12))
        off = np.full(n, 14, dtype=np.int64)
        for _ in range(2):                      # 802.1Q / 802.1ad tags
            tagged = (et == 0x8100) | (et == 0x88A8)
            off = np.where(tagged, off + 4, off)
            et = np.where(tagged, _u16(buf, rows, off - 2), et)
        l3 = np.where((et == 0x0800) | (et == 0x86DD), off, -1)
    elif linktype == DLT_LINUX_SLL:
        et = _u16(buf, rows, np.full(n, 14))
        l3 = np.where((et == 0x0800) | (et == 0x86DD), 16, -1)
    elif linktype == DLT_LINUX_SLL2:
        et = _u16(buf, rows, np.full(n, 0))
        l3 = np.where((et == 0x0800) | (et == 0x86DD), 20, -1)
    elif linktype in (DLT_RAW, DLT_RAW_OPENBSD, DLT_IPV4, DLT_IPV6):
        l3 = np.zeros(n, dtype=np.int64)
    elif linktype in (DLT_NULL, DLT_LOOP):
        l3 = np.full(n, 4, dtype=np.int64)
    else:
        skipped[f"{S_LINKTYPE} {linktype}"] += n
        return Packets.empty()
    is_ip = l3 >= 0
    l3c = np.where(is_ip, l3, 0)
    version = buf[rows, l3c] >> 4
    is_ip &= (version == 4) | (version == 6)
    is_ip &= cap >= l3c + 20
    skipped[S_NOT_IP] += int((~is_ip).sum())
    v4 = is_ip & (version == 4)
    v6 = is_ip & (version == 6)

    ihl = (buf[rows, l3c] & 0x0F).astype(np.int64) * 4
    proto = np.where(v4, buf[rows, np.minimum(l3c + 9, SNAP - 1)], buf[rows, np.minimum(l3c + 6, SNAP - 1)])
    ip_len4 = _u16(buf, rows, np.minimum(l3c + 2, SNAP - 2)).astype(np.int64)
    ip_len6 = _u16(buf, rows, np.minimum(l3c + 4, SNAP - 2)).astype(np.int64) + 40
    ip_total = np.where(v4, ip_len4, ip_len6)
    frag = (_u16(buf, rows, np.minimum(l3c + 6, SNAP - 2)) & 0x1FFF) != 0
    l4 = np.where(v4, l3c + ihl, l3c + 40)
    is_l4 = (proto == 6) | (proto == 17)
    v6_ext = v6 & np.isin(proto, (0, 43, 44, 51, 60, 135, 139, 140))
    skipped[S_IPV6_EXT] += int(v6_ext.sum())
    skipped[S_NOT_TCP_UDP] += int((is_ip & ~is_l4 & ~v6_ext).sum())
    skipped[S_FRAGMENT] += int((v4 & frag & is_l4).sum())     # offset > 0: no transport header
    keep = is_ip & is_l4 & ~(v4 & frag)
    need = np.where(proto == 6, l4 + 16, l4 + 8)
    short = keep & ((need > cap) | (v4 & (ihl < 20)))
    skipped[S_TRUNCATED] += int(short.sum())
    keep &= ~short
    idx = np.flatnonzero(keep)
    if not idx.size:
        return Packets.empty()
    b = buf[idx]
    r = np.arange(idx.size)
    l3k, l4k, v4k = l3c[idx], l4[idx], v4[idx]
    src = np.zeros((idx.size, 16), dtype=np.uint8)
    dst = np.zeros((idx.size, 16), dtype=np.uint8)
    cols4 = np.arange(4)
    cols16 = np.arange(16)
    s4 = b[r[:, None], (l3k + 12)[:, None] + cols4]
    d4 = b[r[:, None], (l3k + 16)[:, None] + cols4]
    s6 = b[r[:, None], np.minimum((l3k + 8)[:, None] + cols16, SNAP - 1)]
    d6 = b[r[:, None], np.minimum((l3k + 24)[:, None] + cols16, SNAP - 1)]
    src[:, :4] = np.where(v4k[:, None], s4, s6[:, :4])
    src[:, 4:] = np.where(v4k[:, None], 0, s6[:, 4:])
    dst[:, :4] = np.where(v4k[:, None], d4, d6[:, :4])
    dst[:, 4:] = np.where(v4k[:, None], 0, d6[:, 4:])
    pk = proto[idx]
    tcp = pk == 6
    sport = _u16(b, r, l4k)
    dport = _u16(b, r, l4k + 2)
    doff = np.minimum(l4k + 12, SNAP - 2)
    thl = np.where(tcp, (b[r, doff] >> 4).astype(np.int32) * 4, 8)
    flags = np.where(tcp, ((b[r, doff].astype(np.int32) & 1) << 8) | b[r, doff + 1], 0).astype(np.uint16)
    window = np.where(tcp, _u16(b, r, np.minimum(l4k + 14, SNAP - 2)), -1).astype(np.int32)
    ip_hdr = np.where(v4k, ihl[idx], 40)
    payload = np.maximum(ip_total[idx] - ip_hdr - thl, 0).astype(np.int32)
    return Packets(
        ts=np.asarray(ts, dtype=np.int64)[idx], version=np.where(v4k, 4, 6).astype(np.uint8),
        src=src, dst=dst, proto=pk.astype(np.uint8), sport=sport.astype(np.int32),
        dport=dport.astype(np.int32), flags=flags, window=window, header_len=thl.astype(np.int32),
        payload=payload)


def iter_packets(path: str | os.PathLike[str], report: CaptureReport | None = None, progress=None
                 ) -> Iterator[Packets]:
    """The TCP/UDP packets of one capture, in chunks of up to 20,000 records read, in capture order.

    ``report`` (a :class:`CaptureReport`) is filled as the chunks are read, and complete once the
    iterator ends. ``progress``, if given, is called with the number of records read so far after
    each chunk. Raises :class:`InputError` when the file is missing or no capture; damage after a
    valid start is reported in ``CaptureReport.damage``, not raised.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p} is not a regular file")
    report = report if report is not None else CaptureReport(path=str(p))
    report.path = str(p)
    skipped: Counter = Counter()
    ts_buf: list[int] = []
    snaps: list[bytes] = []
    caplens: list[int] = []

    def chunk() -> Packets:
        part = _parse_chunk(ts_buf, snaps, caplens, report.linktype, skipped)
        report.packets += len(ts_buf)
        report.bytes += sum(caplens)
        report.tcp_udp_packets += len(part)
        if report.first_ts is None:
            report.first_ts = ts_buf[0]
        report.last_ts = ts_buf[-1]
        ts_buf.clear()
        snaps.clear()
        caplens.clear()
        report.skipped = {k: int(v) for k, v in skipped.items() if v}
        if progress is not None:
            progress(report.packets)
        return part

    for tsu, snap, caplen in _records(p, report):
        ts_buf.append(tsu)
        snaps.append(snap)
        caplens.append(caplen)
        if len(ts_buf) >= _CHUNK:
            yield chunk()
    if ts_buf:
        yield chunk()


def read_packets(path: str | os.PathLike[str], progress=None) -> tuple[Packets, CaptureReport]:
    """Read all the TCP/UDP packets of one capture and a report of everything read and skipped
    (see :func:`iter_packets`)."""
    report = CaptureReport(path=str(path))
    packets = Packets.concat(list(iter_packets(path, report, progress)))
    return packets, report
