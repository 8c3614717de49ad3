"""Packet-capture benchmark: packets/s of `deepids flows` and of candidate packet libraries.

Input: ``--capture FILE`` (e.g. the lab capture, real traffic), or, by default, a SYNTHETIC
capture written here with dpkt: ``--connections`` TCP connections (handshake, a few data
packets of random size each way, FIN) plus DNS-like UDP pairs, interleaved in time. The JSON
says which.

Measured, each as the best of ``--repeat`` runs (the 2 cores are shared; the load average
is recorded beside the figures):

* ``deepids``: :func:`deepids.io.flowmeter.capture_flows` end to end (read + header parse +
  flows + 76 features), and its two halves (``read_packets``; ``packets_to_flows``);
* ``dpkt_decode``: dpkt's reader plus a full per-packet decode (Ethernet -> IP -> TCP/UDP,
  reading ports, flags and lengths): the per-packet object approach, without any flow logic;
* with ``--other-python PY`` (an interpreter that has them; they are not deepids
  dependencies): ``scapy`` (``PcapReader`` + the same field reads) and the ``cicflowmeter``
  PyPI package (its command line, flows to CSV), on the first ``--subset`` packets only,
  because they are slow.

Run: ``python -m bench.pcap [--capture FILE] [--other-python /path/python] [--out bench/results/pcap.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

T0 = 1_700_000_000.0


def synthetic_capture(path: Path, connections: int, seed: int = 0) -> int:
    """Write a synthetic pcap; returns the packet count."""
    import dpkt

    rng = np.random.default_rng(seed)
    pkts: list[tuple[float, bytes]] = []

    def eth(ip):
        return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip))

    def tcp(s, d, sp, dp, flags, n):
        seg = dpkt.tcp.TCP(sport=sp, dport=dp, flags=flags, win=64240, data=b"x" * n)
        ip = dpkt.ip.IP(src=s, dst=d, p=6, data=seg)
        ip.len = 20 + len(bytes(seg))
        return eth(ip)

    def udp(s, d, sp, dp, n):
        u = dpkt.udp.UDP(sport=sp, dport=dp, data=b"q" * n)
        u.ulen = 8 + n
        ip = dpkt.ip.IP(src=s, dst=d, p=17, data=u)
        ip.len = 20 + len(bytes(u))
        return eth(ip)

    span = max(60.0, connections / 50)
    for c in range(connections):
        cli = socket.inet_aton(f"10.0.{(c // 250) % 250}.{c % 250 + 1}")
        srv = socket.inet_aton(f"10.1.0.{int(rng.integers(1, 20))}")
        sp, dp = 20000 + c % 40000, int(rng.choice([80, 443, 22, 21]))
        t = float(rng.uniform(0, span))
        seq = [(cli, srv, sp, dp, 0x02, 0), (srv, cli, dp, sp, 0x12, 0), (cli, srv, sp, dp, 0x10, 0)]
        for _ in range(int(rng.integers(1, 8))):
            seq.append((cli, srv, sp, dp, 0x18, int(rng.integers(0, 1400))))
            seq.append((srv, cli, dp, sp, 0x18, int(rng.integers(0, 1400))))
        seq += [(cli, srv, sp, dp, 0x11, 0), (srv, cli, dp, sp, 0x11, 0), (cli, srv, sp, dp, 0x10, 0)]
        for s, d, a, b, f, n in seq:
            pkts.append((t, tcp(s, d, a, b, f, n)))
            t += float(rng.exponential(0.01))
        if c % 3 == 0:
            pkts.append((t, udp(cli, srv, 30000 + c % 30000, 53, 30)))
            pkts.append((t + 0.001, udp(srv, cli, 53, 30000 + c % 30000, 90)))
    pkts.sort(key=lambda tp: tp[0])
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh)
        for t, raw in pkts:
            w.writepkt(raw, ts=T0 + t)
    return len(pkts)


def best(fn, repeat: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def dpkt_decode(path: Path) -> int:
    import dpkt

    n = 0
    with open(path, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP):
                l4 = ip.data
                if isinstance(l4, dpkt.tcp.TCP):
                    _ = (ip.src, ip.dst, l4.sport, l4.dport, l4.flags, l4.win, len(l4.data))
                elif isinstance(l4, dpkt.udp.UDP):
                    _ = (ip.src, ip.dst, l4.sport, l4.dport, len(l4.data))
            n += 1
    return n


SCAPY_SNIPPET = """
import sys, time
from scapy.all import PcapReader, IP, TCP, UDP
t = time.perf_counter(); n = 0
for p in PcapReader(sys.argv[1]):
    if IP in p:
        ip = p[IP]
        l4 = p[TCP] if TCP in p else (p[UDP] if UDP in p else None)
        if l4 is not None:
            _ = (ip.src, ip.dst, l4.sport, l4.dport, len(l4.payload))
    n += 1
print(n, time.perf_counter() - t)
"""


def subset(path: Path, n: int, out: Path) -> int:
    import dpkt

    k = 0
    with open(path, "rb") as fh, open(out, "wb") as fo:
        r = dpkt.pcap.Reader(fh)
        w = dpkt.pcap.Writer(fo, linktype=r.datalink())
        for ts, buf in r:
            w.writepkt(buf, ts=ts)
            k += 1
            if k >= n:
                break
    return k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", type=Path, default=None)
    ap.add_argument("--connections", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--subset", type=int, default=20_000)
    ap.add_argument("--other-python", default=None)
    ap.add_argument("--out", type=Path, default=Path("bench/results/pcap.json"))
    args = ap.parse_args()

    from deepids.io.flowmeter import capture_flows, packets_to_flows
    from deepids.io.pcap import read_packets

    tmp = Path(tempfile.mkdtemp(prefix="deepids-pcap-bench-"))
    if args.capture is None:
        cap = tmp / "synthetic.pcap"
        n_written = synthetic_capture(cap, args.connections)
        source = (f"SYNTHETIC capture written by bench/pcap.py with dpkt: {args.connections:,} TCP connections "
                  f"(+ UDP pairs), {n_written:,} packets; not real traffic")
    else:
        cap = args.capture
        source = f"{cap} (given capture)"
    result: dict = {"benchmark": "pcap", "input": source, "capture_bytes": cap.stat().st_size,
                    "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                "python": platform.python_version()},
                    "loadavg_before": list(os.getloadavg()), "results": {}}
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            result["machine"]["cpu"] = line.split(":", 1)[1].strip()
            break

    secs, (flows, report) = best(lambda: capture_flows(cap), args.repeat)
    n = report.capture.packets
    result["packets"] = n
    result["flows"] = flows.height
    result["results"]["deepids_capture_flows"] = {"seconds": round(secs, 4), "packets_per_s": round(n / secs)}
    secs_r, (packets, _) = best(lambda: read_packets(cap), args.repeat)
    result["results"]["deepids_read_packets"] = {"seconds": round(secs_r, 4), "packets_per_s": round(n / secs_r)}
    secs_f, _ = best(lambda: packets_to_flows(packets), args.repeat)
    result["results"]["deepids_packets_to_flows"] = {"seconds": round(secs_f, 4), "packets_per_s": round(n / secs_f)}
    secs_d, nd = best(lambda: dpkt_decode(cap), args.repeat)
    result["results"]["dpkt_decode_only"] = {"seconds": round(secs_d, 4), "packets_per_s": round(nd / secs_d),
                                             "note": "per-packet dpkt objects, no flows or features"}
    if args.other_python:
        sub = tmp / "subset.pcap"
        k = subset(cap, args.subset, sub)
        proc = subprocess.run([args.other_python, "-c", SCAPY_SNIPPET, str(sub)], capture_output=True, text=True,
                              timeout=900)
        if proc.returncode == 0:
            cnt, s = proc.stdout.split()
            result["results"]["scapy_decode_only"] = {"packets": int(cnt), "seconds": round(float(s), 3),
                                                      "packets_per_s": round(int(cnt) / float(s)),
                                                      "note": f"first {k:,} packets; PcapReader + field reads"}
        else:
            result["results"]["scapy_decode_only"] = {"error": proc.stderr.strip().splitlines()[-1:]}
        cfm = Path(args.other_python).parent / "cicflowmeter"
        if cfm.exists():
            t = time.perf_counter()
            proc = subprocess.run([str(cfm), "-f", str(sub), "-c", str(tmp / "cfm.csv")], capture_output=True,
                                  text=True, timeout=900)
            s = time.perf_counter() - t
            lines = sum(1 for _ in open(tmp / "cfm.csv")) if (tmp / "cfm.csv").exists() else 0
            rows = max(lines - 1, 0)
            ver = subprocess.run([args.other_python, "-c", "import importlib.metadata as m;"
                                  "print(m.version('cicflowmeter'))"], capture_output=True, text=True).stdout.strip()
            result["results"]["cicflowmeter_pypi"] = {
                "version": ver, "packets": k, "seconds": round(s, 3), "packets_per_s": round(k / s),
                "flows_written": rows, "returncode": proc.returncode,
                "note": f"first {k:,} packets, its command line (includes its start-up)"}
        sk, (fl_sub, _) = best(lambda: capture_flows(sub), args.repeat)
        result["results"]["deepids_capture_flows_subset"] = {"packets": k, "seconds": round(sk, 4),
                                                             "packets_per_s": round(k / sk),
                                                             "flows": fl_sub.height}
    import resource

    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["loadavg_after"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
