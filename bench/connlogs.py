"""Reading speed of the connection-log readers: records/s and peak memory per source.

Inputs are built from the real samples in ``data/samples/{zeek,suricata,nfdump,nfstream}``
(RESAMPLED: their records repeated, in order, until ``--records`` records; headers, the EVE
events of other types and nfdump's footer kept as in the sample; the JSON says so). Each
source is read in a fresh process, so its peak RSS is its own, as ``deepids inspect`` reads
it: every batch (``--batch-size`` records) parsed, cast to the canonical connection record and
its report merged. The host's load average is recorded beside the figures (the machine is
shared; figures from a loaded host are lower bounds), and so is the CPU time the read took
(all threads), whose records per CPU-second depend less on the load.

Run: ``python -m bench.connlogs [--records 500000] [--out bench/results/connlogs.json]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = {
    "zeek-conn": ("zeek/conn.log", 8, 1),              # (sample, header lines, trailing lines)
    "zeek-conn-json": ("zeek/conn.json.log", 0, 0),
    "suricata-eve": ("suricata/lab_slice_eve.json.gz", 0, 0),
    "nfdump-csv": ("nfdump/lab_slice_nfdump.csv.gz", 1, 3),
    "nfstream": ("nfstream/lab_slice_nfstream.csv.gz", 1, 0),
}


def _lines(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return [ln for ln in fh.read().split(b"\n") if ln.strip()]


def build_input(source: str, records: int, out: Path, samples: Path) -> dict:
    """The sample's records repeated to about `records` records; returns what was written."""
    name, head, tail = SAMPLES[source]
    lines = _lines(samples / name)
    header, body, footer = lines[:head], lines[head:len(lines) - tail], lines[len(lines) - tail:]
    per_line = 1.0
    if source == "suricata-eve":             # body lines include other event types
        per_line = sum(b'"event_type":"flow"' in ln for ln in body) / len(body)
    reps = max(1, round(records / (len(body) * per_line)))
    with open(out, "wb") as fh:
        fh.write(b"\n".join(header) + (b"\n" if header else b""))
        for _ in range(reps):
            fh.write(b"\n".join(body) + b"\n")
        fh.write(b"\n".join(footer) + (b"\n" if footer else b""))
    return {"sample": name, "repetitions": reps, "bytes": out.stat().st_size}


def measure(path: str, batch_size: int) -> dict:
    """Read one file as `deepids inspect` does (run in its own process)."""
    from deepids.io.connlogs import iter_conn_batches

    t0 = time.perf_counter()
    use = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = use.ru_utime + use.ru_stime
    report = None
    for _, part in iter_conn_batches(path, batch_size=batch_size):
        report = part if report is None else report.merge(part)
    seconds = time.perf_counter() - t0
    use = resource.getrusage(resource.RUSAGE_SELF)
    cpu = use.ru_utime + use.ru_stime - cpu0
    return {"cpu_seconds": round(cpu, 3), "records_per_cpu_s": round(report.records / cpu),"layout": report.layout, "records": report.records, "rejected": report.n_rejected,
            "ignored": sum(report.ignored.values()), "seconds": round(seconds, 3),
            "records_per_s": round(report.records / seconds), "batch_size": batch_size,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--batch-size", type=int, default=200_000)
    ap.add_argument("--sources", default=",".join(SAMPLES))
    ap.add_argument("--samples", type=Path, default=ROOT / "data" / "samples")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "connlogs.json")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:                      # the child process: one file
        print(json.dumps(measure(args.measure, args.batch_size)))
        return
    result = {"what": "connection-log readers: records/s and peak RSS, one fresh process per source",
              "input": "RESAMPLED: the real samples' records repeated in order (see 'inputs')",
              "command": "python -m bench.connlogs " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "loadavg_before": list(os.getloadavg()), "inputs": {}, "sources": {}}
    with tempfile.TemporaryDirectory(prefix="deepids-bench-connlogs-") as tmp:
        for source in args.sources.split(","):
            path = Path(tmp) / f"{source}.input"
            result["inputs"][source] = build_input(source, args.records, path, args.samples)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                                                 os.environ.get("PYTHONPATH", "")])}
            done = subprocess.run([sys.executable, "-m", "bench.connlogs", "--measure", str(path),
                                   "--batch-size", str(args.batch_size)], cwd=ROOT, env=env, capture_output=True,
                                  text=True, check=True)
            result["sources"][source] = json.loads(done.stdout.strip().splitlines()[-1])
            print(source, result["sources"][source], flush=True)
            path.unlink()
    result["loadavg_after"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
