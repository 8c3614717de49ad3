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
* Flows are written when the capture has been read, ordered by start time (CICFlowMeter writes
  them as they end). ``timestamp`` is the first packet's time in **UTC**, to the microsecond
  (CICIDS2017 timestamps are local time, to the minute or second).
* IPv6 extension headers are not followed, and non-first IPv4 fragments are skipped (counted).

Memory: the headers of the whole capture are held while flows are made; the peak measured is
about 0.7 KB per packet (docs/RESULTS.md). Split very large captures first.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from deepids.io.pcap import CaptureReport, Packets, read_packets
from deepids.io.schema import FLOW_FEATURES, METADATA_COLUMNS

__all__ = ["FlowMeterReport", "capture_flows", "capture_lines", "packets_to_flows", "to_cic_layout", "write_flows",
           "FLOW_TIMEOUT_S", "ACTIVITY_TIMEOUT_S"]

FLOW_TIMEOUT_S = 120.0
ACTIVITY_TIMEOUT_S = 5.0

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

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
# grouped statistics over contiguous segments
# ------------------------------------------------------------------------------------------

def _group_starts(sg: np.ndarray) -> np.ndarray:
    """True where a run of equal values begins (same length as ``sg``)."""
    out = np.ones(sg.size, dtype=bool)
    out[1:] = sg[1:] != sg[:-1]
    return out


def _seg_sum(values: np.ndarray, seg: np.ndarray, nseg: int) -> np.ndarray:
    return np.bincount(seg, weights=values.astype(np.float64), minlength=nseg)


def _seg_stats(values: np.ndarray, seg: np.ndarray, nseg: int) -> dict[str, np.ndarray]:
    """n, sum, mean, sample std (0 for n<2), max, min per segment; 0 where a segment is empty.

    ``seg`` must be non-decreasing (values of one segment contiguous)."""
    v = values.astype(np.float64)
    n = np.bincount(seg, minlength=nseg).astype(np.float64)
    total = np.bincount(seg, weights=v, minlength=nseg)
    mean = np.divide(total, n, out=np.zeros(nseg), where=n > 0)
    dev = np.bincount(seg, weights=(v - mean[seg]) ** 2, minlength=nseg)
    var = np.divide(dev, n - 1, out=np.zeros(nseg), where=n > 1)
    mx = np.zeros(nseg)
    mn = np.zeros(nseg)
    if v.size:
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        present = seg[starts]
        mx[present] = np.maximum.reduceat(v, starts)
        mn[present] = np.minimum.reduceat(v, starts)
    return {"n": n, "sum": total, "mean": mean, "std": np.sqrt(var), "var": var, "max": mx, "min": mn}


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


def _ip_strings(addr: np.ndarray, version: np.ndarray) -> np.ndarray:
    """Text of (unique) addresses, vectorised over distinct values."""
    if not len(addr):
        return np.empty(0, dtype=object)
    packed = np.ascontiguousarray(addr).view(np.dtype((np.void, 16))).ravel()
    uniq, inv = np.unique(packed, return_inverse=True)
    inv = inv.ravel()
    ver_of = np.zeros(len(uniq), dtype=np.uint8)
    ver_of[inv] = version
    text = np.empty(len(uniq), dtype=object)
    for j, (u, v) in enumerate(zip(uniq, ver_of)):
        raw = bytes(u)
        text[j] = str(ipaddress.IPv4Address(raw[:4])) if v == 4 else str(ipaddress.IPv6Address(raw))
    return text[inv]


def packets_to_flows(p: Packets, *, flow_timeout: float = FLOW_TIMEOUT_S,
                     activity_timeout: float = ACTIVITY_TIMEOUT_S, end_on_rst: bool = True,
                     min_packets: int = 2) -> tuple[pl.DataFrame, dict[str, int]]:
    """Flows (metadata + ``FLOW_FEATURES``) from packets, and the counts of dropped flows."""
    n = len(p)
    if n == 0:
        return _empty_flows(), {}
    timeout_us = int(round(flow_timeout * 1e6))
    act_us = int(round(activity_timeout * 1e6))

    # canonical 5-tuple id: endpoints ordered, both directions map to one key
    a = np.concatenate([p.src, p.sport.astype(">u2").view(np.uint8).reshape(-1, 2)], axis=1)
    b = np.concatenate([p.dst, p.dport.astype(">u2").view(np.uint8).reshape(-1, 2)], axis=1)
    diff = a.astype(np.int16) - b.astype(np.int16)
    a_first = diff[np.arange(n), np.argmax(diff != 0, axis=1)] <= 0      # a <= b, byte-wise
    lo = np.where(a_first[:, None], a, b)
    hi = np.where(a_first[:, None], b, a)
    tup = np.concatenate([lo, hi, p.proto[:, None]], axis=1)
    _, key = np.unique(np.ascontiguousarray(tup).view(np.dtype((np.void, 37))).ravel(), return_inverse=True)
    key = key.ravel()

    term_flags = FIN | (RST if end_on_rst else 0)
    term = (p.proto == 6) & ((p.flags & term_flags) != 0)
    order, start, inherited = _assign_flows(key, p.ts, term, timeout_us)

    # everything below is in flow order: flows contiguous, packets in capture order within
    ts = p.ts[order]
    src = p.src[order]
    sport = p.sport[order]
    flags = p.flags[order].astype(np.int64)
    payload = p.payload[order].astype(np.int64)
    hlen = p.header_len[order].astype(np.int64)
    window = p.window[order].astype(np.int64)
    proto = p.proto[order]
    version = p.version[order]
    dst = p.dst[order]
    dport = p.dport[order]

    seg = np.cumsum(start) - 1
    nflow = int(seg[-1]) + 1
    first_idx = np.flatnonzero(start)
    last_idx = np.r_[first_idx[1:], n] - 1
    counts = last_idx - first_idx + 1

    # direction: the flow's source is its first packet's source, or, for a flow started by
    # a timeout, the previous flow's source (CICFlowMeter keeps it)
    owner = first_idx.copy()
    inh_flows = np.flatnonzero(inherited[first_idx])
    for f in inh_flows.tolist():        # chains of timeouts inherit from the chain's head
        owner[f] = owner[f - 1]
    fsrc = src[owner]
    fsport = sport[owner]
    fwd = np.all(src == fsrc[seg], axis=1) & (sport == fsport[seg])
    # the flow's destination: the other endpoint
    first_is_owner = fwd[first_idx]
    fdst = np.where(first_is_owner[:, None], dst[first_idx], src[first_idx])
    fdport = np.where(first_is_owner, dport[first_idx], sport[first_idx])

    is_first = start
    cols: dict[str, np.ndarray] = {}
    t0 = ts[first_idx].astype(np.float64)
    t1 = ts[last_idx].astype(np.float64)
    duration = t1 - t0
    cols["Flow Duration"] = duration

    fs = _seg_stats(payload[fwd], seg[fwd], nflow)
    bs = _seg_stats(payload[~fwd], seg[~fwd], nflow)
    nf, nb = fs["n"], bs["n"]
    cols["Total Fwd Packets"] = nf
    cols["Total Backward Packets"] = nb
    cols["Total Length of Fwd Packets"] = fs["sum"]
    cols["Total Length of Bwd Packets"] = bs["sum"]
    for name, st in (("Fwd", fs), ("Bwd", bs)):
        cols[f"{name} Packet Length Max"] = st["max"]
        cols[f"{name} Packet Length Min"] = st["min"]
        cols[f"{name} Packet Length Mean"] = st["mean"]
        cols[f"{name} Packet Length Std"] = st["std"]
    total_bytes = fs["sum"] + bs["sum"]
    secs = duration / 1e6
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["Flow Bytes/s"] = total_bytes / secs
        cols["Flow Packets/s"] = counts / secs

    gap = np.diff(ts, prepend=ts[0]).astype(np.float64)
    not_first = ~is_first
    iat = _seg_stats(gap[not_first], seg[not_first], nflow)
    cols["Flow IAT Mean"], cols["Flow IAT Std"] = iat["mean"], iat["std"]
    cols["Flow IAT Max"], cols["Flow IAT Min"] = iat["max"], iat["min"]
    for name, mask in (("Fwd", fwd), ("Bwd", ~fwd)):
        idx = np.flatnonzero(mask)
        sg = seg[idx]
        same = ~_group_starts(sg)
        d = np.diff(ts[idx], prepend=ts[idx[0]] if idx.size else 0).astype(np.float64)
        st = _seg_stats(d[same], sg[same], nflow)
        cols[f"{name} IAT Total"], cols[f"{name} IAT Mean"] = st["sum"], st["mean"]
        cols[f"{name} IAT Std"], cols[f"{name} IAT Max"], cols[f"{name} IAT Min"] = st["std"], st["max"], st["min"]

    first_fwd = fwd[first_idx]
    ff = flags[first_idx]
    cols["Fwd PSH Flags"] = (first_fwd & ((ff & PSH) != 0)).astype(np.float64)
    cols["Bwd PSH Flags"] = (~first_fwd & ((ff & PSH) != 0)).astype(np.float64)
    cols["Fwd URG Flags"] = (first_fwd & ((ff & URG) != 0)).astype(np.float64)
    cols["Bwd URG Flags"] = (~first_fwd & ((ff & URG) != 0)).astype(np.float64)
    cols["Fwd Header Length"] = _seg_sum(hlen[fwd], seg[fwd], nflow)
    cols["Bwd Header Length"] = _seg_sum(hlen[~fwd], seg[~fwd], nflow)
    pos = duration > 0
    cols["Fwd Packets/s"] = np.divide(nf, secs, out=np.zeros(nflow), where=pos)
    cols["Bwd Packets/s"] = np.divide(nb, secs, out=np.zeros(nflow), where=pos)

    # packet length statistics over n+1 values: the first packet's payload counted twice
    dup_vals = np.concatenate([payload, payload[first_idx]])
    dup_seg = np.concatenate([seg, np.arange(nflow)])
    o = np.argsort(dup_seg, kind="stable")
    ls = _seg_stats(dup_vals[o], dup_seg[o], nflow)
    cols["Min Packet Length"], cols["Max Packet Length"] = ls["min"], ls["max"]
    cols["Packet Length Mean"], cols["Packet Length Std"] = ls["mean"], ls["std"]
    cols["Packet Length Variance"] = ls["var"]

    for name, bit in (("FIN", FIN), ("SYN", SYN), ("RST", RST), ("PSH", PSH), ("ACK", ACK),
                      ("URG", URG), ("CWE", CWR), ("ECE", ECE)):
        cols[f"{name} Flag Count"] = _seg_sum(((flags & bit) != 0).astype(np.float64), seg, nflow)

    cols["Down/Up Ratio"] = np.where(nf > 0, np.floor_divide(nb, np.maximum(nf, 1)), 0.0)
    cols["Average Packet Size"] = ls["sum"] / counts
    cols["Avg Fwd Segment Size"] = fs["mean"]
    cols["Avg Bwd Segment Size"] = bs["mean"]
    for name in ("Fwd Avg Bytes/Bulk", "Fwd Avg Packets/Bulk", "Fwd Avg Bulk Rate",
                 "Bwd Avg Bytes/Bulk", "Bwd Avg Packets/Bulk", "Bwd Avg Bulk Rate"):
        cols[name] = np.zeros(nflow)
    cols["Subflow Fwd Packets"], cols["Subflow Fwd Bytes"] = nf, fs["sum"]
    cols["Subflow Bwd Packets"], cols["Subflow Bwd Bytes"] = nb, bs["sum"]

    # first packet of each direction: its TCP window
    for name, mask in (("Init_Win_bytes_forward", fwd), ("Init_Win_bytes_backward", ~fwd)):
        idx = np.flatnonzero(mask)
        sg = seg[idx]
        firsts = idx[np.r_[True, sg[1:] != sg[:-1]]] if idx.size else idx
        val = np.full(nflow, -1.0)
        val[seg[firsts]] = window[firsts]
        cols[name] = val
    data_fwd = fwd & not_first & (payload >= 1)
    cols["act_data_pkt_fwd"] = _seg_sum(data_fwd.astype(np.float64), seg, nflow)
    mseg = np.full(nflow, 0.0)
    if fwd.any():
        fi = np.flatnonzero(fwd)
        sg = seg[fi]
        st = np.flatnonzero(np.r_[True, sg[1:] != sg[:-1]])
        mseg[sg[st]] = np.minimum.reduceat(hlen[fi], st)
    cols["min_seg_size_forward"] = mseg

    # active / idle: a gap above the activity timeout on a packet that is neither the flow's
    # first nor a FIN-closing packet (CICFlowMeter skips updateActiveIdleTime for those)
    closing = np.zeros(n, dtype=bool)
    closing[last_idx] = term[order][last_idx] & (counts > 1)
    idle_mask = not_first & ~closing & (gap > act_us)
    idle_idx = np.flatnonzero(idle_mask)
    isg = seg[idle_idx]
    idle = _seg_stats(gap[idle_idx], isg, nflow)
    prev_same = ~_group_starts(isg)
    active_start = np.where(prev_same, ts[np.r_[0, idle_idx[:-1]]] if idle_idx.size else 0,
                            ts[first_idx[isg]] if idle_idx.size else 0)
    active_len = (ts[idle_idx - 1] - active_start).astype(np.float64) if idle_idx.size else np.zeros(0)
    keep_a = active_len > 0
    act = _seg_stats(active_len[keep_a], isg[keep_a], nflow)
    for name, st in (("Active", act), ("Idle", idle)):
        cols[f"{name} Mean"], cols[f"{name} Std"] = st["mean"], st["std"]
        cols[f"{name} Max"], cols[f"{name} Min"] = st["max"], st["min"]

    # metadata
    fver = version[first_idx]
    src_txt = _ip_strings(fsrc, fver)
    dst_txt = _ip_strings(fdst, fver)
    fproto = proto[first_idx].astype(np.int64)
    flow_id = _flow_ids(src[first_idx], dst[first_idx], sport[first_idx], dport[first_idx],
                        fproto, fver)
    meta = {
        "flow_id": pl.Series("flow_id", flow_id, dtype=pl.Utf8),
        "src_ip": pl.Series("src_ip", src_txt, dtype=pl.Utf8),
        "src_port": pl.Series("src_port", fsport.astype(np.int64)),
        "dst_ip": pl.Series("dst_ip", dst_txt, dtype=pl.Utf8),
        "dst_port": pl.Series("dst_port", fdport.astype(np.int64)),
        "protocol": pl.Series("protocol", fproto),
        "timestamp": pl.Series("timestamp", ts[first_idx]).cast(pl.Datetime("us")),
    }
    frame = pl.DataFrame([meta[m] for m in METADATA_COLUMNS]
                         + [pl.Series(f, np.asarray(cols[f], dtype=np.float64)) for f in FLOW_FEATURES])
    keep = counts >= min_packets
    dropped = {}
    if (~keep).any():
        dropped[R_SINGLE_PACKET if min_packets == 2 else f"flow of fewer than {min_packets} packets"] = \
            int((~keep).sum())
        frame = frame.filter(pl.Series(keep))
    frame = frame.with_row_index("_o").sort(["timestamp", "_o"]).drop("_o")
    return frame, dropped


def _flow_ids(src: np.ndarray, dst: np.ndarray, sport: np.ndarray, dport: np.ndarray,
              proto: np.ndarray, version: np.ndarray) -> list[str]:
    """CICFlowMeter's Flow ID: ``ip-ip-port-port-proto``, the endpoint whose address is smaller
    first, comparing bytes as Java's *signed* bytes (so 192.x sorts before 10.x, as in CIC)."""
    s = src.view(np.int8).astype(np.int16)
    d = dst.view(np.int8).astype(np.int16)
    diff = s - d
    nz = diff != 0
    firstnz = np.argmax(nz, axis=1)
    sign = diff[np.arange(len(diff)), firstnz]
    forward = sign <= 0
    s_txt = _ip_strings(src, version)
    d_txt = _ip_strings(dst, version)
    out = []
    for f, st, dt, sp, dp, pr in zip(forward.tolist(), s_txt.tolist(), d_txt.tolist(), sport.tolist(),
                                     dport.tolist(), proto.tolist()):
        out.append(f"{st}-{dt}-{sp}-{dp}-{pr}" if f else f"{dt}-{st}-{dp}-{sp}-{pr}")
    return out


def _empty_flows() -> pl.DataFrame:
    schema = {"flow_id": pl.Utf8, "src_ip": pl.Utf8, "src_port": pl.Int64, "dst_ip": pl.Utf8,
              "dst_port": pl.Int64, "protocol": pl.Int64, "timestamp": pl.Datetime("us")}
    schema.update({f: pl.Float64 for f in FLOW_FEATURES})
    return pl.DataFrame(schema=schema)


def capture_flows(path: str | os.PathLike[str], *, flow_timeout: float = FLOW_TIMEOUT_S,
                  activity_timeout: float = ACTIVITY_TIMEOUT_S, end_on_rst: bool = True,
                  min_packets: int = 2, progress=None) -> tuple[pl.DataFrame, FlowMeterReport]:
    """Read a capture and return its flows (ordered by start time) and a report."""
    packets, cap = read_packets(path, progress=progress)
    frame, dropped = packets_to_flows(packets, flow_timeout=flow_timeout, activity_timeout=activity_timeout,
                                      end_on_rst=end_on_rst, min_packets=min_packets)
    return frame, FlowMeterReport(capture=cap, flows=frame.height, dropped=dropped)


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


def capture_lines(path: str | os.PathLike[str], report_to=None):
    """The flows of a capture as CSV lines (header first), for line-oriented consumers such as
    ``deepids stream``. The capture's summary (packets skipped, damage) goes to ``report_to``
    (default: stderr)."""
    import sys

    flows, meter = capture_flows(path)
    print(f"deepids: {meter.line()}", file=report_to or sys.stderr)
    text = flows.write_csv()
    for line in text.splitlines(keepends=True):
        yield line.encode("utf-8")
