"""Packets to flows: features against crafted packets with known answers.

The captures are written with dpkt (an independent encoder) into a temporary folder; every
expected value below is worked out by hand from the packets.
"""

from __future__ import annotations

import gzip
import socket
import struct

import dpkt
import numpy as np
import polars as pl
import pytest

from deepids.errors import InputError
from deepids.io import read_flows
from deepids.io.flowmeter import R_SINGLE_PACKET, capture_flows
from deepids.io.pcap import is_capture, read_packets
from deepids.io.schema import FLOW_FEATURES, METADATA_COLUMNS

T0 = 1_700_000_000.0          # 2023-11-14 22:13:20 UTC
A, B, C = "10.0.0.1", "10.0.0.2", "192.168.1.9"
F, S, R, P, K, U = dpkt.tcp.TH_FIN, dpkt.tcp.TH_SYN, dpkt.tcp.TH_RST, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_ACK, dpkt.tcp.TH_URG


def tcp(src, dst, sport, dport, flags, payload=b"", win=1000, opts=b""):
    seg = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, win=win, data=payload, opts=opts)
    seg.off = (20 + len(opts)) // 4
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=dpkt.ip.IP_PROTO_TCP, data=seg)
    ip.len = 20 + len(bytes(seg))
    return dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip)


def udp(src, dst, sport, dport, payload=b""):
    d = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    d.ulen = 8 + len(payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=dpkt.ip.IP_PROTO_UDP, data=d)
    ip.len = 20 + len(bytes(d))
    return dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip)


def write(path, packets, ng=False, compress=False):
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        w = dpkt.pcapng.Writer(fh) if ng else dpkt.pcap.Writer(fh)
        for t, pkt in packets:
            w.writepkt(bytes(pkt), ts=T0 + t)
    return path


def one(frame, **where):
    m = frame
    for k, v in where.items():
        m = m.filter(pl.col(k) == v)
    assert m.height == 1, m
    return m.row(0, named=True)


# a TCP connection A:40000 -> B:80 closed by FIN from the client, then the last ACK
HANDSHAKE = [
    (0.000, tcp(A, B, 40000, 80, S, win=64240)),                    # fwd, 0 payload
    (0.010, tcp(B, A, 80, 40000, S | K, win=65160)),                # bwd
    (0.020, tcp(A, B, 40000, 80, K, win=502)),                      # fwd
    (0.030, tcp(A, B, 40000, 80, P | K, b"x" * 100, win=502)),      # fwd 100
    (0.060, tcp(B, A, 80, 40000, P | K, b"y" * 300, win=509)),      # bwd 300
    (0.100, tcp(A, B, 40000, 80, F | K, win=502)),                  # fwd, FIN ends the flow
    (0.110, tcp(B, A, 80, 40000, K, win=509)),                      # new flow, then a second packet
    (0.120, tcp(B, A, 80, 40000, F | K, win=509)),
]


@pytest.fixture
def conn_pcap(tmp_path):
    return write(tmp_path / "conn.pcap", HANDSHAKE)


def test_tcp_connection_features(conn_pcap):
    flows, report = capture_flows(conn_pcap)
    assert report.capture.packets == 8 and report.capture.tcp_udp_packets == 8
    assert report.capture.damage is None
    assert flows.columns == list(METADATA_COLUMNS) + list(FLOW_FEATURES)
    assert flows.height == 2                                  # FIN split the 5-tuple in two flows
    f = flows.row(0, named=True)
    assert (f["src_ip"], f["src_port"], f["dst_ip"], f["dst_port"], f["protocol"]) == (A, 40000, B, 80, 6)
    assert f["flow_id"] == "10.0.0.1-10.0.0.2-40000-80-6"
    assert f["timestamp"].isoformat() == "2023-11-14T22:13:20"
    assert f["Flow Duration"] == pytest.approx(100_000)
    assert (f["Total Fwd Packets"], f["Total Backward Packets"]) == (4, 2)
    assert (f["Total Length of Fwd Packets"], f["Total Length of Bwd Packets"]) == (100, 300)
    assert (f["Fwd Packet Length Max"], f["Fwd Packet Length Min"], f["Fwd Packet Length Mean"]) == (100, 0, 25)
    assert f["Fwd Packet Length Std"] == pytest.approx(np.std([0, 0, 100, 0], ddof=1))
    assert (f["Bwd Packet Length Max"], f["Bwd Packet Length Min"], f["Bwd Packet Length Mean"]) == (300, 0, 150)
    assert f["Flow Bytes/s"] == pytest.approx(400 / 0.1)
    assert f["Flow Packets/s"] == pytest.approx(6 / 0.1)
    iat = [10_000, 10_000, 10_000, 30_000, 40_000]
    assert f["Flow IAT Mean"] == pytest.approx(np.mean(iat))
    assert f["Flow IAT Std"] == pytest.approx(np.std(iat, ddof=1))
    assert (f["Flow IAT Max"], f["Flow IAT Min"]) == (40_000, 10_000)
    fwd_iat = [20_000, 10_000, 70_000]
    assert f["Fwd IAT Total"] == pytest.approx(100_000)
    assert f["Fwd IAT Mean"] == pytest.approx(np.mean(fwd_iat))
    assert f["Fwd IAT Std"] == pytest.approx(np.std(fwd_iat, ddof=1))
    assert (f["Fwd IAT Max"], f["Fwd IAT Min"]) == (70_000, 10_000)
    assert (f["Bwd IAT Total"], f["Bwd IAT Mean"], f["Bwd IAT Std"]) == (50_000, 50_000, 0)
    assert (f["Fwd Header Length"], f["Bwd Header Length"]) == (80, 40)
    assert f["Fwd Packets/s"] == pytest.approx(40) and f["Bwd Packets/s"] == pytest.approx(20)
    # packet length statistics: the first packet (0 bytes) counted twice, 7 values
    vals = [0, 0, 0, 0, 100, 300, 0]
    assert f["Packet Length Mean"] == pytest.approx(np.mean(vals))
    assert f["Packet Length Std"] == pytest.approx(np.std(vals, ddof=1))
    assert f["Packet Length Variance"] == pytest.approx(np.var(vals, ddof=1))
    assert (f["Min Packet Length"], f["Max Packet Length"]) == (0, 300)
    assert f["Average Packet Size"] == pytest.approx(400 / 6)
    assert (f["FIN Flag Count"], f["SYN Flag Count"], f["RST Flag Count"]) == (1, 2, 0)
    assert (f["PSH Flag Count"], f["ACK Flag Count"], f["URG Flag Count"]) == (2, 5, 0)
    assert f["Down/Up Ratio"] == 0                             # 2 // 4
    assert (f["Avg Fwd Segment Size"], f["Avg Bwd Segment Size"]) == (25, 150)
    assert (f["Subflow Fwd Packets"], f["Subflow Bwd Bytes"]) == (4, 300)
    assert (f["Init_Win_bytes_forward"], f["Init_Win_bytes_backward"]) == (64240, 65160)
    assert f["act_data_pkt_fwd"] == 1 and f["min_seg_size_forward"] == 20
    assert f["Fwd PSH Flags"] == 0                            # first packet only (SYN)
    assert all(f[c] == 0 for c in ("Active Mean", "Idle Mean", "Fwd Avg Bytes/Bulk", "Bwd Avg Bulk Rate"))
    # the closing packets form a flow of their own, B -> A (its first packet's direction)
    g = flows.row(1, named=True)
    assert (g["src_ip"], g["src_port"], g["dst_port"]) == (B, 80, 40000)
    assert g["flow_id"] == f["flow_id"]
    assert (g["Total Fwd Packets"], g["Total Backward Packets"], g["Flow Duration"]) == (2, 0, 10_000)
    assert g["Init_Win_bytes_backward"] == -1


def test_single_packet_flows_are_dropped_and_counted(tmp_path):
    pkts = [(0.0, tcp(A, B, 1, 22, S)), (0.5, tcp(A, B, 2, 23, S)), (0.6, tcp(B, A, 23, 2, R | K)),
            (1.0, udp(A, C, 5353, 53, b"q" * 30))]
    flows, report = capture_flows(write(tmp_path / "scan.pcap", pkts))
    assert flows.height == 1                     # the SYN/RST pair; the lone SYN and UDP are dropped
    assert report.dropped == {R_SINGLE_PACKET: 2}
    f = flows.row(0, named=True)
    assert (f["Total Fwd Packets"], f["Total Backward Packets"], f["RST Flag Count"]) == (1, 1, 1)
    kept, _ = capture_flows(tmp_path / "scan.pcap", min_packets=1)
    assert kept.height == 3
    u = one(kept, protocol=17)
    assert (u["Total Length of Fwd Packets"], u["Fwd Header Length"], u["Init_Win_bytes_forward"]) == (30, 8, -1)


def test_rst_ends_a_flow_unless_told_otherwise(tmp_path):
    pkts = [(0.0, tcp(A, B, 5, 80, S)), (0.1, tcp(B, A, 80, 5, R | K)), (0.2, tcp(A, B, 5, 80, S)),
            (0.3, tcp(B, A, 80, 5, R | K))]
    path = write(tmp_path / "rst.pcap", pkts)
    assert capture_flows(path)[0].height == 2
    assert capture_flows(path, end_on_rst=False)[0].height == 1


def test_flow_timeout_starts_a_new_flow_with_the_old_direction(tmp_path):
    pkts = [(0.0, udp(A, C, 1000, 53, b"a")), (60.0, udp(C, A, 53, 1000, b"bb")),
            (121.0, udp(C, A, 53, 1000, b"ccc")), (122.0, udp(A, C, 1000, 53, b"dddd"))]
    flows, _ = capture_flows(write(tmp_path / "timeout.pcap", pkts))
    assert flows.height == 2
    first, second = flows.row(0, named=True), flows.row(1, named=True)
    assert first["Flow Duration"] == pytest.approx(60e6)
    # the packet 121 s after the flow began opens a new flow; A stays its source
    assert (second["src_ip"], second["Total Fwd Packets"], second["Total Backward Packets"]) == (A, 1, 1)
    assert (second["Total Length of Fwd Packets"], second["Total Length of Bwd Packets"]) == (4, 3)
    shorter, _ = capture_flows(tmp_path / "timeout.pcap", flow_timeout=30)
    assert shorter.height == 1                    # 0 | 60 | 121,122: only the last pair has 2 packets


def test_active_and_idle_periods(tmp_path):
    # active 0..2 s, idle 8 s, active 10..11 s, idle 6 s, then 17, 17.5 (last period not counted)
    times = [0, 1, 2, 10, 11, 17, 17.5]
    pkts = [(t, udp(A, B, 7, 9, b"z")) for t in times]
    f = capture_flows(write(tmp_path / "idle.pcap", pkts))[0].row(0, named=True)
    assert (f["Idle Mean"], f["Idle Max"], f["Idle Min"]) == (7e6, 8e6, 6e6)
    assert f["Idle Std"] == pytest.approx(np.std([8e6, 6e6], ddof=1))
    assert (f["Active Mean"], f["Active Max"], f["Active Min"]) == (1.5e6, 2e6, 1e6)
    f2 = capture_flows(tmp_path / "idle.pcap", activity_timeout=7)[0].row(0, named=True)
    assert (f2["Idle Mean"], f2["Active Mean"]) == (8e6, 2e6)


def test_pcapng_gzip_and_reader_hook(tmp_path, conn_pcap):
    ng = write(tmp_path / "conn.pcapng.gz", HANDSHAKE, ng=True, compress=True)
    assert is_capture(ng) and is_capture(conn_pcap)
    a, _ = capture_flows(conn_pcap)
    b, rep = capture_flows(ng)
    assert rep.capture.format == "pcapng" and rep.capture.compressed
    assert a.equals(b)
    # read_flows accepts a capture like any flow file
    df, report = read_flows(ng)
    assert report.layout == "pcap" and report.records == 2
    assert df.select(FLOW_FEATURES).equals(a.select(FLOW_FEATURES))
    assert any("8 packets" in n for n in report.to_dict()["notes"])


def test_truncated_capture_is_read_up_to_the_damage(tmp_path, conn_pcap):
    data = conn_pcap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-30])                   # the last record loses its tail
    packets, report = read_packets(cut)
    assert len(packets) == 7 and report.packets == 7
    assert "truncated" in report.damage
    flows, meter = capture_flows(cut)
    assert flows.height == 1 and "DAMAGED" in meter.line()     # the closing flow lost its 2nd packet
    assert meter.dropped == {R_SINGLE_PACKET: 1}
    # a record header claiming an impossible length: stop there
    bad = bytearray(data)
    bad[24 + 8:24 + 12] = struct.pack("<I", 50_000_000)    # first record's caplen
    (tmp_path / "bad.pcap").write_bytes(bytes(bad))
    packets, report = read_packets(tmp_path / "bad.pcap")
    assert len(packets) == 0 and "corrupt" in report.damage
    # a gzip stream cut short
    gz = tmp_path / "cut.pcap.gz"
    gz.write_bytes(gzip.compress(data)[:-40])
    packets, report = read_packets(gz)
    assert report.damage is not None and len(packets) <= 8


def test_not_a_capture(tmp_path):
    (tmp_path / "x.pcap").write_bytes(b"hello world")
    assert not is_capture(tmp_path / "x.pcap")
    with pytest.raises(InputError):
        read_packets(tmp_path / "x.pcap")
    with pytest.raises(InputError):
        read_packets(tmp_path / "missing.pcap")


def test_vectorised_headers_match_dpkt(tmp_path):
    """Header fields parsed with numpy agree with dpkt's decoder on varied packets (VLAN tags,
    IPv4 options, TCP options, IPv6, Ethernet padding)."""
    rng = np.random.default_rng(0)
    pkts = []
    for i in range(300):
        kind = i % 4
        payload = bytes(rng.integers(0, 256, int(rng.integers(0, 40))).tolist())
        if kind == 0:
            e = tcp(A, C, int(rng.integers(1, 65535)), 443, int(rng.integers(0, 256)), payload,
                    win=int(rng.integers(0, 65535)), opts=b"\x01" * (4 * int(rng.integers(0, 4))))
        elif kind == 1:
            e = udp(C, A, 53, int(rng.integers(1024, 65535)), payload)
        elif kind == 2:                                   # 802.1Q tagged
            e = tcp(B, A, 22, 5000 + i, K, payload)
            e = dpkt.ethernet.Ethernet(bytes(e)[:12] + b"\x81\x00\x00\x05" + bytes(e)[12:])
        else:                                             # IPv6
            seg = dpkt.tcp.TCP(sport=1000 + i, dport=80, flags=S | K, win=777, data=payload)
            ip6 = dpkt.ip6.IP6(src=b"\x20\x01" + b"\x00" * 13 + b"\x01", dst=b"\xfe\x80" + b"\x00" * 13 + b"\x02",
                               nxt=6, hlim=64, data=seg, plen=len(bytes(seg)))
            e = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP6, data=ip6)
        raw = bytes(e)
        raw = raw + b"\x00" * max(0, 60 - len(raw))       # Ethernet minimum frame padding
        pkts.append((i * 0.01, raw))
    path = tmp_path / "mix.pcap"
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh)
        for t, raw in pkts:
            w.writepkt(raw, ts=T0 + t)
    packets, report = read_packets(path)
    assert len(packets) == 300 and not report.skipped
    for i, (_, raw) in enumerate(pkts):
        eth = dpkt.ethernet.Ethernet(raw)
        ip = eth.data
        l4 = ip.data
        assert packets.sport[i] == l4.sport and packets.dport[i] == l4.dport
        if isinstance(l4, dpkt.tcp.TCP):
            assert packets.flags[i] == l4.flags and packets.window[i] == l4.win
            assert packets.header_len[i] == l4.off * 4
            assert packets.payload[i] == len(l4.data)
        else:
            assert packets.payload[i] == len(l4.data) and packets.header_len[i] == 8
        n = 4 if packets.version[i] == 4 else 16
        assert bytes(packets.src[i, :n]) == ip.src and bytes(packets.dst[i, :n]) == ip.dst


def test_other_link_types_and_skipped_packets(tmp_path):
    """Linux cooked v2 (tcpdump -i any) and raw IP captures; ICMP, ARP and non-first fragments are
    counted as skipped, not turned into flows."""
    eth_pkts = [bytes(tcp(A, B, 1234, 80, S)), bytes(tcp(B, A, 80, 1234, S | K))]
    icmp = dpkt.ip.IP(src=socket.inet_aton(A), dst=socket.inet_aton(B), p=1, data=dpkt.icmp.ICMP(type=8, data=b"ping"))
    icmp.len = 20 + len(bytes(icmp.data))
    frag = dpkt.ip.IP(src=socket.inet_aton(A), dst=socket.inet_aton(B), p=17, data=b"x" * 30)
    frag.offset = 800                                       # bytes: a non-first fragment
    frag.len = 50
    ips = [bytes(e)[14:] for e in eth_pkts] + [bytes(icmp), bytes(frag)]

    sll2 = lambda ip: struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\x02" * 6 + b"\0\0") + ip  # noqa: E731
    for linktype, frames in ((276, [sll2(ip) for ip in ips]), (101, ips)):
        path = tmp_path / f"lt{linktype}.pcap"
        with open(path, "wb") as fh:
            w = dpkt.pcap.Writer(fh, linktype=linktype)
            for i, f in enumerate(frames):
                w.writepkt(f, ts=T0 + i * 0.1)
        flows, report = capture_flows(path)
        assert report.capture.linktype == linktype
        assert report.capture.tcp_udp_packets == 2 and flows.height == 1
        assert report.capture.skipped == {"not TCP/UDP": 1, "non-first IP fragment": 1}
        assert flows.row(0, named=True)["SYN Flag Count"] == 2
    arp = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\xff" * 6, type=dpkt.ethernet.ETH_TYPE_ARP, data=b"\0" * 28)
    _, report = capture_flows(write(tmp_path / "arp.pcap", [(0, arp)] + HANDSHAKE[:2]))
    assert report.capture.skipped == {"not IPv4/IPv6": 1}


@pytest.mark.parametrize("options", [{}, {"flow_timeout": 2.0, "activity_timeout": 0.5},
                                     {"flow_timeout": 0.3, "end_on_rst": False}])
def test_the_meter_fed_in_chunks_gives_the_flows_of_the_whole_capture(samples_dir, options):
    """Flows emitted as they end, chunk by chunk, are the whole capture's flows in the same order;
    short timeouts make flows resume across chunks (direction carried over) on the real lab capture."""
    from deepids.io.flowmeter import FlowMeter, _take, packets_to_flows

    packets, _ = read_packets(samples_dir.parent / "lab" / "lab_slice.pcap.gz")
    whole, dropped = packets_to_flows(packets, **options)
    for k in (997, 4000):
        meter = FlowMeter(**options)
        parts = [meter.add(_take(packets, np.arange(i, min(i + k, len(packets))))) for i in range(0, len(packets), k)]
        held = meter.held_packets
        parts.append(meter.finish())
        assert pl.concat(parts).equals(whole) and dict(meter.dropped) == dropped
        assert 0 < held < len(packets)          # only the open flows' packets were held at the end
