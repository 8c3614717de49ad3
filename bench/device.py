"""Training and file scoring on whatever device torch finds (a GPU when there is one).

    python -m bench.device [--rows 200000] [--epochs 4] [--batch-sizes 64,1024]
                           [--models lstm-ae,dense-ae] [--out bench/results/device.json]

For each model: training on the bundled CICIDS2017 sample (8,002 flows) at each batch size
(seconds, training samples per second as the training history reports them), then
`score_files` on a CSV of `--rows` rows — real rows of the sample RESAMPLED with replacement —
in chunks of 100,000, best of 3. The device is the models' default (`auto`: cuda when
present); the JSON names it. Without a GPU this measures the CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.flows import write_resampled_csv
from deepids.datasets import SAMPLE, samples_dir
from deepids.io import read_flows
from deepids.models import MODELS, load_model
from deepids.scoring import score_files
from deepids.models.training import resolve_device

HERE = Path(__file__).resolve().parent


def measure(name: str, table, csv: Path, rows: int, epochs: int, batch_sizes: list[int], workdir: Path) -> dict:
    entry: dict = {}
    model = None
    for bs in batch_sizes:
        model = MODELS[name](epochs=epochs, batch_size=bs, verbose=False)
        t = time.perf_counter()
        model.fit(table)
        history = (model.training_summary_ or {}).get("history", {})
        entry[f"fit_batch_{bs}"] = {"seconds": round(time.perf_counter() - t, 2),
                                    "samples_per_s": history.get("samples_per_second")}
    loaded = load_model(model.save(workdir / name))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        summary = score_files(loaded, csv, workdir / f"{name}.parquet", batch_size=100_000)
        best = min(best, time.perf_counter() - t)
    assert summary.records == rows, "every record must be scored"
    entry["score_file"] = {"records": rows, "chunk_rows": 100_000, "records_per_s_best": round(rows / best, 1)}
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-sizes", default="64,1024")
    ap.add_argument("--models", default="lstm-ae,dense-ae")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "device.json")
    args = ap.parse_args()
    source = samples_dir() / SAMPLE
    table, _ = read_flows(source)
    device = resolve_device(None)
    result = {"device": str(device), "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "training_rows": table.height,
              "data": f"{args.rows:,} rows of {SAMPLE} RESAMPLED with replacement (repeated real flows)",
              "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "flows.csv"
        write_resampled_csv(source, csv, args.rows)
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        for name in args.models.split(","):
            result["models"][name] = measure(name, table, csv, args.rows, args.epochs, sizes, Path(tmp))
            print(json.dumps({name: result["models"][name]}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
