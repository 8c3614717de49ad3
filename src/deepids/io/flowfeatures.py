"""The CICFlowMeter features of flows, from their packets (see :mod:`deepids.io.flowmeter` for
the rules). Packets come in flow order: each flow's packets contiguous, in capture order within
it; every function here is vectorised over all the flows of a batch."""

from __future__ import annotations

import ipaddress

import numpy as np
import polars as pl

from deepids.io.schema import FLOW_FEATURES, METADATA_COLUMNS

__all__ = ["FlowPackets", "flow_table", "empty_flows"]

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80


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
# one batch of flows
# ------------------------------------------------------------------------------------------

class FlowPackets:
    """The packets of some flows in flow order, and where each flow starts and which way it goes.

    ``p`` holds the :class:`~deepids.io.pcap.Packets` arrays (already in flow order), ``start``
    marks each flow's first packet, ``fwd`` the packets going from the flow's source, ``term``
    the packets that end a TCP flow (FIN, or RST with ``end_on_rst``)."""

    def __init__(self, p, start: np.ndarray, fwd: np.ndarray, term: np.ndarray):
        self.p, self.start, self.fwd, self.term = p, start, fwd, term
        self.n = len(p)
        self.seg = np.cumsum(start) - 1
        self.first_idx = np.flatnonzero(start)
        self.nflow = self.first_idx.size
        self.last_idx = np.r_[self.first_idx[1:], self.n] - 1
        self.counts = self.last_idx - self.first_idx + 1


def _size_features(fp: FlowPackets, cols: dict) -> tuple[dict, dict]:
    p, seg, fwd, nflow = fp.p, fp.seg, fp.fwd, fp.nflow
    ts = p.ts
    payload = p.payload.astype(np.int64)
    t0 = ts[fp.first_idx].astype(np.float64)
    duration = ts[fp.last_idx].astype(np.float64) - t0
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
    secs = duration / 1e6
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["Flow Bytes/s"] = (fs["sum"] + bs["sum"]) / secs
        cols["Flow Packets/s"] = fp.counts / secs
    pos = duration > 0
    cols["Fwd Packets/s"] = np.divide(nf, secs, out=np.zeros(nflow), where=pos)
    cols["Bwd Packets/s"] = np.divide(nb, secs, out=np.zeros(nflow), where=pos)
    return fs, bs


def _time_features(fp: FlowPackets, cols: dict) -> np.ndarray:
    """Flow and per-direction inter-arrival times; returns each packet's gap to the previous one."""
    ts, seg, nflow = fp.p.ts, fp.seg, fp.nflow
    gap = np.diff(ts, prepend=ts[0]).astype(np.float64)
    not_first = ~fp.start
    iat = _seg_stats(gap[not_first], seg[not_first], nflow)
    cols["Flow IAT Mean"], cols["Flow IAT Std"] = iat["mean"], iat["std"]
    cols["Flow IAT Max"], cols["Flow IAT Min"] = iat["max"], iat["min"]
    for name, mask in (("Fwd", fp.fwd), ("Bwd", ~fp.fwd)):
        idx = np.flatnonzero(mask)
        sg = seg[idx]
        same = ~_group_starts(sg)
        d = np.diff(ts[idx], prepend=ts[idx[0]] if idx.size else 0).astype(np.float64)
        st = _seg_stats(d[same], sg[same], nflow)
        cols[f"{name} IAT Total"], cols[f"{name} IAT Mean"] = st["sum"], st["mean"]
        cols[f"{name} IAT Std"], cols[f"{name} IAT Max"], cols[f"{name} IAT Min"] = st["std"], st["max"], st["min"]
    return gap


def _flag_and_length_features(fp: FlowPackets, cols: dict, fs: dict, bs: dict) -> None:
    p, seg, fwd, nflow, first_idx = fp.p, fp.seg, fp.fwd, fp.nflow, fp.first_idx
    flags = p.flags.astype(np.int64)
    payload = p.payload.astype(np.int64)
    hlen = p.header_len.astype(np.int64)
    first_fwd = fwd[first_idx]
    ff = flags[first_idx]
    cols["Fwd PSH Flags"] = (first_fwd & ((ff & PSH) != 0)).astype(np.float64)
    cols["Bwd PSH Flags"] = (~first_fwd & ((ff & PSH) != 0)).astype(np.float64)
    cols["Fwd URG Flags"] = (first_fwd & ((ff & URG) != 0)).astype(np.float64)
    cols["Bwd URG Flags"] = (~first_fwd & ((ff & URG) != 0)).astype(np.float64)
    cols["Fwd Header Length"] = _seg_sum(hlen[fwd], seg[fwd], nflow)
    cols["Bwd Header Length"] = _seg_sum(hlen[~fwd], seg[~fwd], nflow)
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
    nf, nb = fs["n"], bs["n"]
    cols["Down/Up Ratio"] = np.where(nf > 0, np.floor_divide(nb, np.maximum(nf, 1)), 0.0)
    cols["Average Packet Size"] = ls["sum"] / fp.counts
    cols["Avg Fwd Segment Size"] = fs["mean"]
    cols["Avg Bwd Segment Size"] = bs["mean"]
    for name in ("Fwd Avg Bytes/Bulk", "Fwd Avg Packets/Bulk", "Fwd Avg Bulk Rate",
                 "Bwd Avg Bytes/Bulk", "Bwd Avg Packets/Bulk", "Bwd Avg Bulk Rate"):
        cols[name] = np.zeros(nflow)
    cols["Subflow Fwd Packets"], cols["Subflow Fwd Bytes"] = nf, fs["sum"]
    cols["Subflow Bwd Packets"], cols["Subflow Bwd Bytes"] = nb, bs["sum"]


def _window_features(fp: FlowPackets, cols: dict) -> None:
    p, seg, fwd, nflow = fp.p, fp.seg, fp.fwd, fp.nflow
    window = p.window.astype(np.int64)
    hlen = p.header_len.astype(np.int64)
    # first packet of each direction: its TCP window
    for name, mask in (("Init_Win_bytes_forward", fwd), ("Init_Win_bytes_backward", ~fwd)):
        idx = np.flatnonzero(mask)
        sg = seg[idx]
        firsts = idx[np.r_[True, sg[1:] != sg[:-1]]] if idx.size else idx
        val = np.full(nflow, -1.0)
        val[seg[firsts]] = window[firsts]
        cols[name] = val
    data_fwd = fwd & ~fp.start & (p.payload.astype(np.int64) >= 1)
    cols["act_data_pkt_fwd"] = _seg_sum(data_fwd.astype(np.float64), seg, nflow)
    mseg = np.full(nflow, 0.0)
    if fwd.any():
        fi = np.flatnonzero(fwd)
        sg = seg[fi]
        st = np.flatnonzero(np.r_[True, sg[1:] != sg[:-1]])
        mseg[sg[st]] = np.minimum.reduceat(hlen[fi], st)
    cols["min_seg_size_forward"] = mseg


def _active_idle_features(fp: FlowPackets, cols: dict, gap: np.ndarray, act_us: int) -> None:
    """A gap above the activity timeout on a packet that is neither the flow's first nor a
    FIN-closing packet (CICFlowMeter skips updateActiveIdleTime for those)."""
    ts, seg, nflow, first_idx, last_idx = fp.p.ts, fp.seg, fp.nflow, fp.first_idx, fp.last_idx
    closing = np.zeros(fp.n, dtype=bool)
    closing[last_idx] = fp.term[last_idx] & (fp.counts > 1)
    idle_mask = ~fp.start & ~closing & (gap > act_us)
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


def _metadata(fp: FlowPackets) -> dict[str, pl.Series]:
    """The flow's source is the endpoint its owner packet came from (``fwd`` of the first packet
    tells whether that is the first packet's source or its destination)."""
    p, f = fp.p, fp.first_idx
    own = fp.fwd[f]
    fsrc = np.where(own[:, None], p.src[f], p.dst[f])
    fdst = np.where(own[:, None], p.dst[f], p.src[f])
    fsport = np.where(own, p.sport[f], p.dport[f])
    fdport = np.where(own, p.dport[f], p.sport[f])
    fver = p.version[f]
    fproto = p.proto[f].astype(np.int64)
    flow_id = _flow_ids(p.src[f], p.dst[f], p.sport[f], p.dport[f], fproto, fver)
    return {
        "flow_id": pl.Series("flow_id", flow_id, dtype=pl.Utf8),
        "src_ip": pl.Series("src_ip", _ip_strings(fsrc, fver), dtype=pl.Utf8),
        "src_port": pl.Series("src_port", fsport.astype(np.int64)),
        "dst_ip": pl.Series("dst_ip", _ip_strings(fdst, fver), dtype=pl.Utf8),
        "dst_port": pl.Series("dst_port", fdport.astype(np.int64)),
        "protocol": pl.Series("protocol", fproto),
        "timestamp": pl.Series("timestamp", p.ts[f]).cast(pl.Datetime("us")),
    }


def flow_table(fp: FlowPackets, act_us: int) -> pl.DataFrame:
    """One row per flow, in flow order: the metadata columns and ``FLOW_FEATURES``."""
    if fp.nflow == 0:
        return empty_flows()
    cols: dict[str, np.ndarray] = {}
    fs, bs = _size_features(fp, cols)
    gap = _time_features(fp, cols)
    _flag_and_length_features(fp, cols, fs, bs)
    _window_features(fp, cols)
    _active_idle_features(fp, cols, gap, act_us)
    meta = _metadata(fp)
    return pl.DataFrame([meta[m] for m in METADATA_COLUMNS]
                        + [pl.Series(f, np.asarray(cols[f], dtype=np.float64)) for f in FLOW_FEATURES])


# ------------------------------------------------------------------------------------------
# addresses
# ------------------------------------------------------------------------------------------

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


def empty_flows() -> pl.DataFrame:
    schema = {"flow_id": pl.Utf8, "src_ip": pl.Utf8, "src_port": pl.Int64, "dst_ip": pl.Utf8,
              "dst_port": pl.Int64, "protocol": pl.Int64, "timestamp": pl.Datetime("us")}
    schema.update({f: pl.Float64 for f in FLOW_FEATURES})
    return pl.DataFrame(schema=schema)


