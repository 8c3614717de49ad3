"""Peak memory of `deepids flows` and `deepids score` as the input grows: it must follow the chunk
(or, for a capture, the open flows), not the input's length.

Measured with ``/usr/bin/time -v`` (maximum resident set size of the whole command, Python and
torch included), one run each, on the real shipped samples made longer by repetition:

* ``flows``: the lab capture (``data/lab/lab_slice.pcap.gz``, real traffic of the attack lab) as
  it is, and the same packets written ``--capture-copies`` times one after the other into one
  pcap, each copy's timestamps shifted past the previous copy's end plus ``--gap`` seconds (more
  than the flow timeout, so the copies' flows do not merge);
* ``score`` on Windows event logs: a folder holding the shipped OTRF recordings
  (``data/samples/otrf``, five JSON Lines files) once, and a folder holding ``--log-copies``
  copies of them (the same files under other names), scored with a small GAN trained here on one
  copy (``deepids train --model gan --epochs 2``), CLI defaults otherwise.

The 2-core host is shared with other work: the load average is recorded beside the figures.

Run: ``python -m bench.memory [--capture-copies 10] [--log-copies 10] [--out bench/results/memory.json]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"


def repeat_capture(src: Path, dst: Path, copies: int, gap: float) -> int:
    """Write the packets of `src` `copies` times into `dst` (pcap), copy k shifted by k x (span + gap)
    seconds; returns the packets written."""
    import dpkt

    opener = gzip.open if src.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(src, "rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        linktype = reader.datalink()
        records = [(float(ts), bytes(buf)) for ts, buf in reader]
    span = records[-1][0] - records[0][0]
    with open(dst, "wb") as out:
        writer = dpkt.pcap.Writer(out, linktype=linktype)
        for k in range(copies):
            shift = k * (span + gap)
            for ts, buf in records:
                writer.writepkt(buf, ts=ts + shift)
    return len(records) * copies


def copy_logs(src: Path, dst: Path, copies: int) -> int:
    """`copies` copies of the event-log files under `src` in `dst` (renamed); returns the files."""
    files = sorted(f for f in src.rglob("*") if f.is_file() and f.name.endswith((".json.gz", ".jsonl", ".evtx")))
    dst.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        for f in files:
            shutil.copyfile(f, dst / f"copy{k:02d}_{f.name}")
    return len(files) * copies


def peak(cmd: list[str]) -> dict:
    """Peak RSS (MB) and wall seconds of a command, by /usr/bin/time -v."""
    started = time.perf_counter()
    done = subprocess.run([TIME, "-v", *cmd], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return {"peak_rss_mb": round(int(rss.group(1)) / 1024, 1), "seconds": round(time.perf_counter() - started, 2),
            "stderr_tail": done.stderr.split("\tCommand being timed")[0].strip().splitlines()[-3:]}


def deepids(*args) -> list[str]:
    return [sys.executable, "-m", "deepids", *map(str, args)]


def measure_flows(capture: Path, copies: int, gap: float, work: Path) -> dict:
    longer = work / f"capture_x{copies}.pcap"
    packets = repeat_capture(capture, longer, copies, gap)
    runs = {}
    for name, path in (("x1", capture), (f"x{copies}", longer)):
        out = work / f"flows_{name}.parquet"
        runs[name] = {"input": str(path), **peak(deepids("flows", path, "--out", out, "--quiet",
                                                          "--json", work / f"flows_{name}.json"))}
        report = json.loads((work / f"flows_{name}.json").read_text())
        runs[name].update(packets=report["capture"]["packets"], flows=report["flows"])
    runs[f"x{copies}"]["packets_written"] = packets
    return {"runs": runs, "ratio": round(runs[f"x{copies}"]["peak_rss_mb"] / runs["x1"]["peak_rss_mb"], 3)}


def measure_logs(otrf: Path, copies: int, work: Path) -> dict:
    one, many = work / "logs_x1", work / f"logs_x{copies}"
    copy_logs(otrf, one, 1)
    files = copy_logs(otrf, many, copies)
    model = work / "log_model"
    trained = subprocess.run(deepids("train", "--model", "gan", "--data", one, "--out", model, "--epochs", "2",
                                     "--quiet"), capture_output=True, text=True, cwd=ROOT)
    if trained.returncode != 0:
        raise SystemExit(f"training the log model failed:\n{trained.stderr[-2000:]}")
    runs = {}
    for name, folder in (("x1", one), (f"x{copies}", many)):
        out = work / f"scores_{name}.parquet"
        runs[name] = {"input": str(folder), **peak(deepids("score", "--model", model, "--data", folder,
                                                            "--out", out, "--quiet"))}
        import polars as pl

        runs[name]["events"] = pl.scan_parquet(out).select(pl.len()).collect().item()
    runs[f"x{copies}"]["files"] = files
    return {"runs": runs, "ratio": round(runs[f"x{copies}"]["peak_rss_mb"] / runs["x1"]["peak_rss_mb"], 3)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", type=Path, default=ROOT / "data" / "lab" / "lab_slice.pcap.gz")
    ap.add_argument("--capture-copies", type=int, default=10)
    ap.add_argument("--gap", type=float, default=300.0, help="seconds between copies of the capture")
    ap.add_argument("--otrf", type=Path, default=ROOT / "data" / "samples" / "otrf")
    ap.add_argument("--log-copies", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    args = ap.parse_args(argv)
    if not Path(TIME).exists():
        raise SystemExit(f"{TIME} is needed (GNU time, for the peak resident set size)")
    result = {"bench": "memory", "host": "shared 2-core machine (other work running)",
              "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="deepids-memory-") as tmp:
        work = Path(tmp)
        result["flows"] = measure_flows(args.capture, args.capture_copies, args.gap, work)
        result["score_logs"] = measure_logs(args.otrf, args.log_copies, work)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k]["ratio"] for k in ("flows", "score_logs")}))
    return result


if __name__ == "__main__":
    main()
