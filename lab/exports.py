"""The lab's capture as the flow records sensors write: NetFlow (softflowd -> nfcapd -> nfdump),
Suricata EVE and NFStream, each labelled from the run's schedule with the lab's own rule.

    python lab/exports.py data/lab --pcap data/lab/lab_slice.pcap.gz --out data/samples/lab_slice
    python lab/exports.py /tmp/run                          # the run's full lab.pcap

(run it with deepids' environment; the tools are Debian packages: ``softflowd``, ``nfdump``,
``suricata`` from bookworm-backports; NFStream from ``pip install 'deepids[nfstream]'``).
Each tool that is missing is skipped and said so. Outputs in ``--out``:

* ``lab_nfdump.csv.gz`` — ``softflowd -a -v 9 -r`` exports NetFlow v9 to ``nfcapd`` on the
  loopback; ``TZ=UTC nfdump -B -O tstart -o csv`` writes the flows bidirectionally (nfdump
  pairs the two directions), ordered by start; a ``label`` column is appended;
* ``lab_eve.json.gz`` — ``suricata -r`` with the packaged configuration and no rules: every
  event is kept (dns, ftp, ssh … are what readers must skip), flow events get a ``label`` key;
* ``lab_nfstream.csv.gz`` — ``NFStreamer(statistical_analysis=True)``, plus ``label``;
* ``exports.json`` — tool versions, commands, record and label counts.

Labels: :func:`lab.label_flows`, the rule of ``lab_flows.parquet``: a record from or to the
attacker whose first packet lies within an attack's span (plus the margin) carries its name.
nfdump's CSV prints start times in whole seconds; the rule takes the latest time it can mean.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import orjson
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab  # noqa: E402


def events_of(manifest: dict) -> list[lab.Event]:
    keep = {"kind", "label", "planned_start_s", "bound", "start", "end"}
    return [lab.Event(**{k: v for k, v in e.items() if k in keep}) for e in manifest["schedule"]]


def labels_for(src: pl.Series, dst: pl.Series, ts: pl.Series, events: list[lab.Event]) -> pl.Series:
    frame = pl.DataFrame({"src_ip": src, "dst_ip": dst, "timestamp": ts})
    return lab.label_flows(frame, events)["label"]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _packets_seen(ctl: Path) -> int:
    out = subprocess.run(["softflowctl", "-c", str(ctl), "statistics"], capture_output=True, text=True,
                         timeout=30).stdout
    n = 0
    for line in out.splitlines():
        if line.startswith(("Packets processed:", "Ignored packets:")):
            n += int(line.split(":")[1].split()[0])
    return n


def netflow(pcap: Path, out: Path, events: list[lab.Event], work: Path) -> dict:
    port = _free_udp_port()
    store = work / "nfcap"
    store.mkdir()
    nfcapd = subprocess.Popen(["nfcapd", "-w", str(store), "-p", str(port), "-b", "127.0.0.1", "-t", "86400",
                               "-B", str(16 << 20)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    ctl = work / "softflowd.ctl"
    argv = ["softflowd", "-d", "-a", "-v", "9", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-c", str(ctl),
            "-p", str(work / "softflowd.pid")]
    sf = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # softflowd 1.1.0 reading a capture file processes a batch of packets each time its loop
        # wakes (a control command wakes it) and does not exit at the end: wake it until the
        # packet count stops growing, then shut it down (every flow is expired and exported)
        for _ in range(40):
            if ctl.exists():
                break
            time.sleep(0.25)
        seen, stable = -1, 0
        while stable < 5:
            now = _packets_seen(ctl)
            stable = stable + 1 if now == seen else 0
            seen = now
            time.sleep(0.1)
        subprocess.run(["softflowctl", "-c", str(ctl), "shutdown"], capture_output=True, timeout=30)
        sf.wait(timeout=900)
    finally:
        if sf.poll() is None:
            sf.kill()
        time.sleep(2.0)
        nfcapd.send_signal(signal.SIGINT)
        nfcapd.wait(timeout=30)
    files = sorted(str(p) for p in store.glob("nfcapd.*"))
    env = {**os.environ, "TZ": "UTC"}
    info = subprocess.run(["nfdump", "-R", str(store), "-I"], capture_output=True, text=True, env=env).stdout
    csv = subprocess.run(["nfdump", "-R", str(store), "-B", "-O", "tstart", "-o", "csv"], capture_output=True,
                         text=True, env=env, check=True).stdout
    lines = csv.splitlines()
    footer = lines.index("Summary") if "Summary" in lines else len(lines)
    body = [ln for ln in lines[:footer] if ln.strip()]
    table = pl.read_csv("\n".join(body).encode(), infer_schema=False)
    # nfdump's CSV prints whole seconds (truncated): the first packet lies in [ts, ts + 1 s); the
    # rule is applied to the latest possible time (the attacker's benign sessions pause 2 s
    # before an attack, so no benign flow of its moves into an attack's span)
    ts = table["ts"].str.strip_chars().str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us", strict=False)
    ts = ts + timedelta(microseconds=999_999)
    label = labels_for(table["sa"].str.strip_chars(), table["da"].str.strip_chars(), ts, events)
    with gzip.open(out, "wt", newline="") as fh:
        fh.write(body[0] + ",label\n")
        for line, lab_ in zip(body[1:], label.to_list()):
            fh.write(f"{line},{lab_}\n")
        fh.write("\n".join(lines[footer:]) + "\n")      # nfdump's summary footer, as nfdump wrote it
    return {"command": " ".join(argv[:-4]) + f" -> nfcapd -> TZ=UTC nfdump -B -O tstart -o csv",
            "nfcapd_files": len(files), "records": table.height, "labels": _counts(label),
            "nfdump_info": [ln for ln in info.splitlines() if ln.split(":")[0] in ("Flows", "Packets",
                                                                                  "Sequence failures")]}


def suricata(pcap: Path, out: Path, events: list[lab.Event], work: Path) -> dict:
    logdir = work / "suricata"
    logdir.mkdir()
    argv = ["suricata", "-r", str(pcap), "-l", str(logdir), "-k", "none"]
    subprocess.run(argv, capture_output=True, check=True, timeout=1800)
    rows = [orjson.loads(ln) for ln in (logdir / "eve.json").read_bytes().splitlines() if ln.strip()]
    flows = [r for r in rows if r.get("event_type") == "flow"]
    start = pl.Series([r["flow"]["start"] for r in flows]).str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%z", time_unit="us").dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    label = labels_for(pl.Series([r["src_ip"] for r in flows]), pl.Series([r["dest_ip"] for r in flows]),
                       start, events)
    for r, lab_ in zip(flows, label.to_list()):
        r["label"] = lab_
    with gzip.open(out, "wb") as fh:
        for r in rows:
            fh.write(orjson.dumps(r) + b"\n")
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r.get("event_type", "?")] = kinds.get(r.get("event_type", "?"), 0) + 1
    return {"command": " ".join(argv[:2] + ["CAPTURE"] + argv[3:]), "events": kinds, "records": len(flows),
            "labels": _counts(label)}


def nfstream(pcap: Path, out: Path, events: list[lab.Event], work: Path) -> dict:
    from nfstream import NFStreamer

    csv = work / "nfstream.csv"
    NFStreamer(source=str(pcap), statistical_analysis=True).to_csv(path=str(csv))
    table = pl.read_csv(csv, infer_schema=False)
    ts = pl.from_epoch(table["bidirectional_first_seen_ms"].cast(pl.Int64), time_unit="ms").cast(pl.Datetime("us"))
    label = labels_for(table["src_ip"], table["dst_ip"], ts, events)
    table = table.with_columns(label.alias("label"))
    with gzip.open(out, "wb") as fh:
        table.write_csv(fh)
    return {"command": "NFStreamer(source=CAPTURE, statistical_analysis=True).to_csv()", "records": table.height,
            "labels": _counts(label)}


def _counts(label: pl.Series) -> dict:
    vc = label.value_counts(sort=True)
    return dict(zip(vc["label"].to_list(), vc["count"].to_list()))


def _versions() -> dict:
    out = {}
    for pkg in ("softflowd", "nfdump", "suricata"):
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
        out[f"deb:{pkg}"] = r.stdout.strip() or None
    try:
        import nfstream as nfs
        out["nfstream"] = nfs.__version__
    except ImportError:
        out["nfstream"] = None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a lab run directory (manifest.json, lab.pcap)")
    ap.add_argument("--pcap", type=Path, default=None, help="capture to export (default: RUN/lab.pcap)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: RUN)")
    args = ap.parse_args(argv)
    manifest = json.loads((args.run / "manifest.json").read_text())
    events = events_of(manifest)
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    pcap = args.pcap or args.run / "lab.pcap"
    result = {"run": str(args.run), "capture": pcap.name, "tools": _versions(), "exports": {}}
    with tempfile.TemporaryDirectory(prefix="deepids-exports-") as tmp:
        work = Path(tmp)
        if pcap.suffix == ".gz":
            plain = work / pcap.stem
            with gzip.open(pcap, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            pcap = plain
        jobs = [("netflow", "lab_nfdump.csv.gz", netflow, ("softflowd", "nfcapd", "nfdump", "softflowctl")),
                ("suricata", "lab_eve.json.gz", suricata, ("suricata",)),
                ("nfstream", "lab_nfstream.csv.gz", nfstream, ())]
        for name, fname, fn, tools in jobs:
            missing = [t for t in tools if shutil.which(t) is None]
            if name == "nfstream" and result["tools"]["nfstream"] is None:
                missing = ["nfstream (pip)"]
            if missing:
                result["exports"][name] = {"skipped": f"missing: {', '.join(missing)}"}
                print(f"{name}: skipped, missing {', '.join(missing)}", flush=True)
                continue
            sub = work / name
            sub.mkdir()
            result["exports"][name] = {"file": fname, **fn(pcap, out / fname, events, sub)}
            print(name, result["exports"][name].get("records"), result["exports"][name].get("labels"), flush=True)
    (out / "exports.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
