"""Bidirectional flows with the CICFlowMeter feature set, from the packets of a capture.

:func:`capture_flows` turns a pcap/pcapng file into one row per flow: the metadata columns of
:mod:`deepids.io.schema` (``flow_id``, ``src_ip``, ``src_port``, ``dst_ip``, ``dst_port``,
``protocol``, ``timestamp``) and the 76 ``FLOW_FEATURES`` under their canonical (CICIDS2017)
names, so that a model trained on CICIDS2017 scores them.

Flow rules (CICFlowMeter, ``FlowGenerator`` / ``BasicFlow``)
-------------------------------------------------------------
* Packets are TCP or UDP over IPv4/IPv6, taken in capture order. A flow is keyed by the
  5-tuple in either direction; the **first packet's source is the flow's source** ("forward").
* **Flow timeout** (default 120 s, as CICIDS2017): a packet arriving more than ``flow_timeout``
  after the flow's *first* packet ends the flow and starts a new one, which keeps the old
  flow's direction.
* **FIN** ends a TCP flow: the FIN packet is its last packet, and the next packet of the same
  5-tuple starts a new flow (so the closing ACK/FIN of the other side become small flows of
  their own, as in CICIDS2017). A FIN on a flow's first packet does not end it.
* **Activity timeout** (default 5 s): a gap above it between packets of a flow closes an
  active period (``Active *``, added when longer than 0) and counts as an idle period
  (``Idle *``). The closing FIN packet and the last active period are not counted (as
  CICFlowMeter).
* **Flows of a single packet are dropped** (CICFlowMeter writes only flows with more than one
  packet); they are counted in the report (``min_packets`` changes it).

Features, as CICFlowMeter computes them
---------------------------------------
Lengths are transport *payload* bytes; header lengths are transport header bytes (TCP data
offset, UDP 8). Durations and IATs are in microseconds. Standard deviations are sample
standard deviations (n-1), 0 for one value. ``Flow Bytes/s`` and ``Flow Packets/s`` divide by
the duration unguarded (a flow within one microsecond gives ``inf``), ``Fwd/Bwd Packets/s``
give 0 then. ``Packet Length *`` statistics count the first packet's payload twice and
``Average Packet Size`` is (sum of those n+1 values) / n: CICFlowMeter adds the first packet
twice, and the CICIDS2017 files show it (Average Packet Size = Packet Length Mean x (n+1)/n
on every row of our sample). ``Down/Up Ratio`` is an integer division. ``Init_Win_bytes_*``
is the TCP window of the first packet in that direction, -1 when there is none or for UDP.
``act_data_pkt_fwd`` counts forward packets after the first with payload. ``Fwd/Bwd PSH/URG
Flags`` look at the flow's first packet only (as CICFlowMeter, whose CICIDS2017 columns are
0/1). ``Subflow *`` equal the totals (as on every CICIDS2017 row of our sample). The six bulk
features are 0 (as on every CICIDS2017 row).

Differences from CICFlowMeter (documented, deliberate)
------------------------------------------------------
* **RST also ends a TCP flow** (``end_on_rst``; CICFlowMeter-V3, which made CICIDS2017, ends
  flows on FIN only, so a reset connection there stays open until the flow timeout).
* **Flag counts** (``FIN Flag Count`` ... ``ECE Flag Count``; ``CWE`` is CWR) count the packets
  of the flow carrying the flag, as CICFlowMeter's code reads. The published CICIDS2017 files
  hold 0/1 in these columns (at most one set per flow), an artefact of the version that
  produced them; a CICIDS2017 model therefore sees larger values here than it was trained on.
* Flows are emitted ordered by start time (CICFlowMeter writes them as they end), as soon as no
  later packet can belong to them: when the capture has moved ``flow_timeout`` past their start. ``timestamp`` is the first packet's time in **UTC**, to the microsecond
  (CICIDS2017 timestamps are local time, to the minute or second).
* IPv6 extension headers are not followed, and non-first IPv4 fragments are skipped (counted).

Memory follows the open flows, not the capture's length: :class:`FlowMeter` reads packets in
chunks and holds only the packets of flows that started less than ``flow_timeout`` before the
newest packet (the others are complete: they are emitted and dropped). It also keeps, for each
5-tuple whose last flow ended by the timeout rather than FIN/RST, which endpoint was the source
(about 100 bytes per such 5-tuple), so that a flow resumed after the timeout keeps its direction
as in CICFlowMeter. This assumes packets in time order, as captures write them; a packet older
than the window it belongs to starts a new flow.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from deepids.io.flowfeatures import ACK, FIN, RST, FlowPackets, empty_flows, flow_table  # noqa: F401
from deepids.io.pcap import CaptureReport, Packets, iter_packets

__all__ = ["FlowMeter", "FlowMeterReport", "capture_flows", "iter_capture_flows", "write_capture_flows",
           "packets_to_flows", "to_cic_layout", "write_flows", "FLOW_TIMEOUT_S", "ACTIVITY_TIMEOUT_S"]

FLOW_TIMEOUT_S = 120.0
ACTIVITY_TIMEOUT_S = 5.0

#: packets handed to the meter at a time: fewer cut flows more often (the open flows' packets are
#: sorted again at every cut), more hold more packets at once (about 64 bytes each, plus the
#: temporaries of their features)
METER_PACKETS = 50_000

#: reason under which dropped single-packet flows are counted
R_SINGLE_PACKET = "single-packet flow (CICFlowMeter writes flows of 2+ packets)"


@dataclass
class FlowMeterReport:
    capture: CaptureReport
    flows: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"capture": self.capture.to_dict(), "flows": self.flows, "dropped": dict(self.dropped)}

    def line(self) -> str:
        text = f"{self.capture.line()}; {self.flows:,} flows"
        if self.dropped:
            text += " (dropped " + ", ".join(f"{n:,} {r}" for r, n in self.dropped.items()) + ")"
        return text


# ------------------------------------------------------------------------------------------
# flow assignment (sequential per 5-tuple: timeouts depend on where the previous flow started)
# ------------------------------------------------------------------------------------------

def _assign_flows(key: np.ndarray, ts: np.ndarray, term: np.ndarray, timeout_us: int):
    """Order packets by 5-tuple (then capture order) and cut them into flows.

    Returns (order, flow_start_mask_in_order, inherited_mask): ``inherited`` marks flows that
    began by a flow timeout and keep the previous flow's direction.
    """
    order = np.argsort(key, kind="stable")
    k = key[order]
    t = ts[order]
    e = term[order]
    n = k.size
    new_key = np.r_[True, k[1:] != k[:-1]] if n else np.zeros(0, bool)
    start = new_key.copy()
    inherited = np.zeros(n, dtype=bool)
    # packets that could need a decision: a terminator, or a key whose span exceeds the timeout.
    key_start_idx = np.flatnonzero(new_key)
    key_end_idx = np.r_[key_start_idx[1:], n] - 1
    span = t[key_end_idx] - t[key_start_idx] if n else np.zeros(0, np.int64)
    long_key = np.zeros(n, dtype=bool)
    if n:
        long_key = np.repeat(span > timeout_us, key_end_idx - key_start_idx + 1)
    simple = ~long_key
    # keys within the timeout: a flow ends after a terminator that is not its flow's first
    # packet. A run of terminators alternates: first packet (opens), next (closes), ...
    # computed with a short Python loop over terminator packets only.
    tl = t.tolist() if long_key.any() else None
    el = e.tolist()
    term_idx = np.flatnonzero(e & simple)
    is_first = start.copy()
    for i in term_idx.tolist():
        if not is_first[i] and i + 1 < n and not new_key[i + 1]:
            start[i + 1] = True
            is_first[i + 1] = True
    # keys longer than the timeout: the plain sequential rule
    for a, b in zip(key_start_idx[span > timeout_us].tolist(), (key_end_idx[span > timeout_us] + 1).tolist()):
        flow_t0 = tl[a]
        for i in range(a + 1, b):
            if start[i]:                 # set by a terminator before
                flow_t0 = tl[i]
                continue
            if tl[i] - flow_t0 > timeout_us:
                start[i] = True
                inherited[i] = True
                flow_t0 = tl[i]
            elif el[i] and i + 1 < b:
                start[i + 1] = True
    return order, start, inherited


# ------------------------------------------------------------------------------------------
# the meter: packets in, flows out as they end
# ------------------------------------------------------------------------------------------

def _five_tuples(p: Packets) -> tuple[np.ndarray, np.ndarray]:
    """(the canonical 5-tuple of each packet as 37 bytes, endpoints ordered so both directions
    map to one key; whether the packet's source is the lower endpoint)."""
    n = len(p)
    a = np.concatenate([p.src, p.sport.astype(">u2").view(np.uint8).reshape(-1, 2)], axis=1)
    b = np.concatenate([p.dst, p.dport.astype(">u2").view(np.uint8).reshape(-1, 2)], axis=1)
    diff = a.astype(np.int16) - b.astype(np.int16)
    a_first = diff[np.arange(n), np.argmax(diff != 0, axis=1)] <= 0      # a <= b, byte-wise
    lo = np.where(a_first[:, None], a, b)
    hi = np.where(a_first[:, None], b, a)
    tup = np.ascontiguousarray(np.concatenate([lo, hi, p.proto[:, None]], axis=1))
    return tup.view(np.dtype((np.void, 37))).ravel(), a_first


def _prefix(done: np.ndarray, key_first: np.ndarray) -> np.ndarray:
    """`done` only up to a 5-tuple's first flow not done (flows of a 5-tuple end in order)."""
    nd = (~done).astype(np.int64)
    before = np.cumsum(nd) - nd                          # flows not done before each flow
    group_start = np.maximum.accumulate(np.where(key_first, np.arange(done.size), 0))
    return done & (before - before[group_start] == 0)


def _take(p: Packets, idx: np.ndarray) -> Packets:
    return Packets(*(getattr(p, f)[idx] for f in Packets.__dataclass_fields__))


class FlowMeter:
    """Packets in (in capture order, chunk by chunk), flows out as soon as they are complete.

    ``add(packets)`` returns the flows that started more than ``flow_timeout`` before the newest
    packet seen, ordered by start time; ``finish()`` returns the rest. Together they give exactly
    the flows of the whole capture, in the same order (:func:`packets_to_flows`). Flows with
    fewer than ``min_packets`` packets are counted in ``dropped``, not returned.
    """

    def __init__(self, *, flow_timeout: float = FLOW_TIMEOUT_S, activity_timeout: float = ACTIVITY_TIMEOUT_S,
                 end_on_rst: bool = True, min_packets: int = 2):
        self.timeout_us = int(round(flow_timeout * 1e6))
        self.act_us = int(round(activity_timeout * 1e6))
        self.term_flags = FIN | (RST if end_on_rst else 0)
        self.min_packets = min_packets
        self.held = Packets.empty()          # packets of the flows not yet complete
        self.owner: dict[bytes, bool] = {}   # 5-tuple -> its next flow's source is the lower endpoint
        self.dropped: Counter = Counter()
        self.flows = 0

    @property
    def held_packets(self) -> int:
        return len(self.held)

    def add(self, packets: Packets) -> pl.DataFrame:
        buf = Packets.concat([self.held, packets]) if len(self.held) else packets
        if not len(buf):
            return empty_flows()
        return self._cut(buf, int(buf.ts.max()) - self.timeout_us)

    def finish(self) -> pl.DataFrame:
        buf, self.held = self.held, Packets.empty()
        return self._cut(buf, None) if len(buf) else empty_flows()

    def _cut(self, p: Packets, cutoff: int | None) -> pl.DataFrame:
        """Emit the flows of `p` that start before `cutoff` (all with None); hold the others."""
        keys, a_first = _five_tuples(p)
        uniq, key = np.unique(keys, return_inverse=True)
        key = key.ravel()
        term = (p.proto == 6) & ((p.flags & self.term_flags) != 0)
        order, start, inherited = _assign_flows(key, p.ts, term, self.timeout_us)
        first_idx = np.flatnonzero(start)
        fkey = key[order][first_idx]
        key_first = np.r_[True, fkey[1:] != fkey[:-1]]
        owner_lo, carried = self._owners(a_first[order][first_idx], fkey, key_first, uniq, inherited[first_idx])
        done = np.ones(first_idx.size, bool) if cutoff is None else _prefix(p.ts[order][first_idx] < cutoff,
                                                                             key_first)
        self._remember(uniq, fkey, key_first, done, owner_lo, carried | inherited[first_idx],
                       term[order], first_idx, start.size)
        seg = np.cumsum(start) - 1
        emit = done[seg]
        self.held = _take(p, order[~emit])
        sub = order[emit]
        fwd = a_first[sub] == owner_lo[seg[emit]]
        flows = flow_table(FlowPackets(_take(p, sub), start[emit], fwd, term[sub]), self.act_us)
        return self._finish_batch(flows)

    def _owners(self, first_lo: np.ndarray, fkey: np.ndarray, key_first: np.ndarray, uniq: np.ndarray,
                inherited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per flow: whether its source is the lower endpoint (its first packet's source, or, for a
        flow begun by the timeout, the previous flow's), and whether that came from an earlier batch."""
        owner_lo = first_lo.copy()
        carried = np.zeros(owner_lo.size, bool)
        if self.owner:
            for f in np.flatnonzero(key_first).tolist():
                v = self.owner.pop(uniq[fkey[f]].tobytes(), None)
                if v is not None:
                    owner_lo[f], carried[f] = v, True
        for f in np.flatnonzero(inherited).tolist():        # chains of timeouts inherit from their head
            owner_lo[f] = owner_lo[f - 1]
        return owner_lo, carried

    def _remember(self, uniq, fkey, key_first, done, owner_lo, inherits, term_s, first_idx, n) -> None:
        """Keep the direction a 5-tuple's next flow inherits: for the first flow held back when it
        began by the timeout, and for a 5-tuple all emitted whose last flow did not end by FIN/RST."""
        last_idx = np.r_[first_idx[1:], n] - 1
        ended = term_s[last_idx] & (last_idx > first_idx)
        key_last = np.r_[fkey[1:] != fkey[:-1], True]
        prev_done = np.r_[False, done[:-1]] & ~key_first
        first_held = ~done & (key_first | prev_done) & inherits
        open_end = done & key_last & ~ended
        for f in np.flatnonzero(first_held | open_end).tolist():
            self.owner[uniq[fkey[f]].tobytes()] = bool(owner_lo[f])

    def _finish_batch(self, flows: pl.DataFrame) -> pl.DataFrame:
        counts = (flows["Total Fwd Packets"] + flows["Total Backward Packets"]).to_numpy()
        keep = counts >= self.min_packets
        if (~keep).any():
            reason = R_SINGLE_PACKET if self.min_packets == 2 else f"flow of fewer than {self.min_packets} packets"
            self.dropped[reason] += int((~keep).sum())
            flows = flows.filter(pl.Series(keep))
        flows = flows.with_row_index("_o").sort(["timestamp", "_o"]).drop("_o")
        self.flows += flows.height
        return flows


def packets_to_flows(p: Packets, *, flow_timeout: float = FLOW_TIMEOUT_S,
                     activity_timeout: float = ACTIVITY_TIMEOUT_S, end_on_rst: bool = True,
                     min_packets: int = 2) -> tuple[pl.DataFrame, dict[str, int]]:
    """Flows (metadata + ``FLOW_FEATURES``) from packets, and the counts of dropped flows."""
    meter = FlowMeter(flow_timeout=flow_timeout, activity_timeout=activity_timeout, end_on_rst=end_on_rst,
                      min_packets=min_packets)
    meter.held = p
    frame = meter.finish()
    return frame, dict(meter.dropped)


def iter_capture_flows(path: str | os.PathLike[str], *, flow_timeout: float = FLOW_TIMEOUT_S,
                       activity_timeout: float = ACTIVITY_TIMEOUT_S, end_on_rst: bool = True,
                       min_packets: int = 2, progress=None,
                       report: FlowMeterReport | None = None) -> Iterator[pl.DataFrame]:
    """The flows of a capture as they end (ordered by start time), in batches; memory follows the
    open flows. ``report`` is complete when the iterator ends."""
    report = report if report is not None else FlowMeterReport(capture=CaptureReport(path=str(path)))
    meter = FlowMeter(flow_timeout=flow_timeout, activity_timeout=activity_timeout, end_on_rst=end_on_rst,
                      min_packets=min_packets)
    parts: list[Packets] = []
    pending = 0
    for packets in iter_packets(path, report.capture, progress):
        parts.append(packets)
        pending += len(packets)
        if pending < METER_PACKETS:
            continue
        flows = meter.add(Packets.concat(parts))
        parts, pending = [], 0
        report.flows, report.dropped = meter.flows, dict(meter.dropped)
        if flows.height:
            yield flows
    if parts:
        meter.held = Packets.concat([meter.held, *parts])
    flows = meter.finish()
    report.flows, report.dropped = meter.flows, dict(meter.dropped)
    if flows.height:
        yield flows


def capture_flows(path: str | os.PathLike[str], *, flow_timeout: float = FLOW_TIMEOUT_S,
                  activity_timeout: float = ACTIVITY_TIMEOUT_S, end_on_rst: bool = True,
                  min_packets: int = 2, progress=None) -> tuple[pl.DataFrame, FlowMeterReport]:
    """Read a capture and return its flows (ordered by start time) and a report."""
    report = FlowMeterReport(capture=CaptureReport(path=str(path)))
    parts = list(iter_capture_flows(path, flow_timeout=flow_timeout, activity_timeout=activity_timeout,
                                    end_on_rst=end_on_rst, min_packets=min_packets, progress=progress,
                                    report=report))
    frame = pl.concat(parts) if parts else empty_flows()
    return frame, report


# the GeneratedLabelledFlows (CICIDS2017) spelling of the metadata columns
CIC_METADATA_NAMES = {"flow_id": "Flow ID", "src_ip": "Source IP", "src_port": "Source Port",
                      "dst_ip": "Destination IP", "dst_port": "Destination Port", "protocol": "Protocol",
                      "timestamp": "Timestamp"}


def to_cic_layout(flows: pl.DataFrame) -> pl.DataFrame:
    """Rename the metadata (and ``label``) to the GeneratedLabelledFlows header names
    (``Flow ID``, ``Source IP``, ... ``Timestamp``, features, ``Label``)."""
    names = dict(CIC_METADATA_NAMES)
    if "label" in flows.columns:
        names["label"] = "Label"
    return flows.rename({k: v for k, v in names.items() if k in flows.columns})


def write_flows(flows: pl.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write flows as Parquet (zstd) or CSV, chosen by the file name."""
    from deepids.atomic import atomic_path

    p = str(path).lower()
    if not p.endswith((".parquet", ".pq", ".csv")):
        from deepids.errors import ConfigError

        raise ConfigError(f"cannot tell the output format of {path}: use .parquet or .csv")
    with atomic_path(path) as tmp:          # the output appears only when complete (0640)
        if p.endswith(".csv"):
            flows.write_csv(tmp)
        else:
            flows.write_parquet(tmp, compression="zstd", statistics=True)




def write_capture_flows(path: str | os.PathLike[str], out: str | os.PathLike[str], *, cic_names: bool = False,
                        **options) -> FlowMeterReport:
    """Write a capture's flows to Parquet or CSV as they end (memory follows the open flows), through a
    temporary file that takes `out`'s name when complete. `options` as :func:`iter_capture_flows`."""
    from deepids.errors import ConfigError
    from deepids.scoring import ScoreWriter

    if not str(out).lower().endswith((".parquet", ".pq", ".csv")):
        raise ConfigError(f"cannot tell the output format of {out}: use .parquet or .csv")
    report = FlowMeterReport(capture=CaptureReport(path=str(path)))
    with ScoreWriter(out) as writer:
        written = 0
        for flows in iter_capture_flows(path, report=report, **options):
            writer.write(to_cic_layout(flows) if cic_names else flows)
            written += flows.height
        if not written:                  # no flows: still a file with the columns
            writer.write(to_cic_layout(empty_flows()) if cic_names else empty_flows())
    return report
