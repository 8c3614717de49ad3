"""Scoring throughput and peak memory: single process against Ray with 1 and 2 actors.

Input: RESAMPLED REAL ROWS. The rows of a real flow file (default: the bundled CICIDS2017
sample, 8,002 real flows) are drawn with replacement into ``--files`` Parquet files holding
``--rows`` records in all; nothing is synthesised, but the records repeat (the JSON says so).
The model is a dense autoencoder (T=1) trained for one epoch on the source rows: its quality is
irrelevant here, its cost per record is the real one.

Each configuration runs in its own process (and, for Ray, its own local cluster on loopback
with ``--cpus`` CPUs), scoring all the files into Parquet:

* ``single``: ``deepids.scoring.score_files`` (what ``deepids score`` runs);
* ``ray1``, ``ray2``: ``deepids.distributed.ray_score.score_files_ray`` with 1 and 2 actors.

Reported per run: seconds, records/s, the ratio to single-process, and peak resident memory
(VmHWM) of the driver and of each Ray worker process (read from /proc before the cluster stops).
The load average is recorded beside the figures: on a shared host they are upper bounds on cost.

Run: ``python -m bench.ray_score [--rows 4000000 16000000] [--files 8] [--out bench/results/ray_score.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT / "data" / "samples" / "cicids2017" / "cicids2017_sample.csv.gz"
MODES = ("single", "ray1", "ray2")


def resample(source: Path, rows: int, files: int, folder: Path, seed: int = 0) -> list[str]:
    """Write `rows` records drawn with replacement from `source`'s real rows into `files` Parquet files."""
    import polars as pl

    from deepids.io import read_flows

    table, _ = read_flows(source)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(files):
        n = rows // files + (1 if k < rows % files else 0)
        path = folder / f"resampled-{k:03d}.parquet"
        import pyarrow.parquet as pq

        with pq.ParquetWriter(str(path), table.to_arrow().schema) as writer:
            for start in range(0, n, 500_000):
                take = rng.integers(0, table.height, min(500_000, n - start))
                writer.write_table(table[pl.Series(take)].to_arrow())
        paths.append(str(path))
    return paths


def peak_rss_mb(pid: int | str = "self") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def ray_worker_peaks() -> list[float]:
    """Peak resident memory (MB) of every Ray worker process on this machine (names start with 'ray::')."""
    peaks = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if name.startswith(b"ray::"):
            mb = peak_rss_mb(proc.name)
            if mb is not None:
                peaks.append(round(mb, 1))
    return sorted(peaks, reverse=True)


def run_one(mode: str, model: str, files: list[str], out: Path, cpus: int, chunk_rows: int) -> dict:
    """One configuration, in this process: seconds, records and peak memory."""
    from deepids.models import load_model

    started = time.perf_counter()
    if mode == "single":
        from deepids.scoring import score_files

        summary = score_files(load_model(model), files, out / "scores.parquet", batch_size=chunk_rows, progress=False)
        records, workers = summary.records, []
    else:
        from deepids.distributed.cluster import ray_session
        from deepids.distributed.ray_score import score_files_ray

        with ray_session(num_cpus=cpus):
            result = score_files_ray(model, files, out / "scores", actors=int(mode[3:]), chunk_rows=chunk_rows,
                                     cpus_per_actor=min(0.75, 0.9 * cpus / int(mode[3:])))
            workers = ray_worker_peaks()
        assert result.counts_add_up, result
        records = result.records_scored
    seconds = time.perf_counter() - started
    return {"mode": mode, "records": records, "seconds": round(seconds, 2),
            "records_per_second": round(records / seconds), "driver_peak_mb": round(peak_rss_mb() or 0, 1),
            "ray_worker_peak_mb": workers[:6], "ray_workers": len(workers)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[4_000_000, 16_000_000])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray_score.json")
    parser.add_argument("--run", nargs=3, metavar=("MODE", "MODEL", "FILES_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:                              # a child process: one configuration
        mode, model, files = args.run
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_one(mode, model, json.loads(files), Path(tmp), args.cpus, args.chunk_rows)))
        return {}
    return compare(args)


def compare(args) -> dict:
    from deepids.io import read_flows
    from deepids.models import DenseAutoencoder

    results = {"benchmark": "ray_score", "input": f"RESAMPLED real rows of {args.source.name} (drawn with "
               "replacement; records repeat)", "model": "dense-ae (T=1), 1 epoch", "host": platform.node(),
               "cpus_visible": os.cpu_count(), "ray_cluster_cpus": args.cpus, "chunk_rows": args.chunk_rows,
               "runs": []}
    with tempfile.TemporaryDirectory(prefix="deepids-bench-ray-") as tmp:
        tmp = Path(tmp)
        model = DenseAutoencoder(epochs=1, verbose=False).fit(read_flows(args.source)[0]).save(tmp / "model")
        for rows in args.rows:
            folder = tmp / f"rows-{rows}"
            folder.mkdir()
            files = resample(args.source, rows, args.files, folder)
            single = None
            for mode in args.modes:
                load = os.getloadavg()[0]
                proc = subprocess.run([sys.executable, "-m", "bench.ray_score", "--cpus", str(args.cpus),
                                       "--chunk-rows", str(args.chunk_rows), "--run", mode, str(model),
                                       json.dumps(files)], capture_output=True, text=True, cwd=ROOT)
                if proc.returncode != 0:
                    raise RuntimeError(f"{mode} at {rows} rows failed:\n{proc.stderr[-3000:]}")
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                run.update(rows=rows, files=args.files, load_average_before=round(load, 2))
                if mode == "single":
                    single = run["seconds"]
                run["time_vs_single"] = round(run["seconds"] / single, 2) if single else None
                results["runs"].append(run)
                print(json.dumps(run), file=sys.stderr)
            for f in files:
                os.unlink(f)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
