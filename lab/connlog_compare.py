"""One lab run, two sensors: the LSTM-AE with entity context on NetFlow (nfdump CSV) and on the
CIC-style flows of the same capture.

    python lab/connlog_compare.py --run RUN --out results/connlog_compare.json [--seeds 0,1,2]

RUN holds ``lab_flows.parquet`` and ``manifest.json`` (``lab/lab.py``) and ``lab_nfdump.csv.gz``
(``lab/exports.py``). Protocol as ``lab/compare.py``: train on the records that start before
the first attack (benign only), score every record in file order, take ROC-AUC on the records
from the first attack on (all attacks vs benign, and per attack). Model: ``ContextDetector``
around the LSTM-AE with the CLI's defaults (T=10 per source address, objective last, 20 epochs,
patience 3), entity context with its defaults (60 s, last 20 records).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from deepids.io import read_flows
from deepids.models.context import ContextDetector
from deepids.models.lstm_ae import LSTMAutoencoder


def evaluate(table: pl.DataFrame, cut: datetime, seed: int, context: bool) -> dict:
    train = table.filter(pl.col("timestamp") < cut)
    test = (table["timestamp"] >= cut).to_numpy()
    params = dict(seed=seed, verbose=False)
    model = ContextDetector(detector_params=params) if context else LSTMAutoencoder(**params)
    t = time.perf_counter()
    model.fit(train)
    score = model.score_records(table).score[test]
    labels = table["label"].to_numpy()[test]
    benign = labels == "benign"
    per = {}
    for name in sorted(set(labels[~benign].tolist())):
        m = benign | (labels == name)
        per[name] = round(float(roc_auc_score(labels[m] == name, score[m])), 4)
    return {"seed": seed, "roc_auc": round(float(roc_auc_score(~benign, score)), 4), "per_attack": per,
            "train_records": train.height, "test_records": int(test.sum()), "seconds": round(time.perf_counter() - t, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("results/connlog_compare.json"))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--context-only", action="store_true", help="only the models with entity context")
    args = ap.parse_args()
    manifest = json.loads((args.run / "manifest.json").read_text())
    first = min(e["start"] for e in manifest["schedule"] if e["start"])
    cut = datetime.fromtimestamp(first, timezone.utc).replace(tzinfo=None)
    tables = {"nfdump-csv": read_flows(args.run / "lab_nfdump.csv.gz")[0],
              "cic (lab_flows.parquet)": read_flows(args.run / "lab_flows.parquet")[0]}
    result = {"protocol": __doc__.split("Protocol as")[1].strip(), "run": str(args.run), "cpu_count": os.cpu_count(),
              "loadavg_before": list(os.getloadavg()), "runs": {}}
    for name, table in tables.items():
        for context in ((True,) if args.context_only else (True, False)):
            key = f"{name}, lstm-ae{' + entity context' if context else ''}"
            rows = [evaluate(table, cut, int(s), context) for s in args.seeds.split(",")]
            result["runs"][key] = {"mean_roc_auc": round(float(np.mean([r["roc_auc"] for r in rows])), 4),
                                   "seeds": rows}
            print(key, result["runs"][key]["mean_roc_auc"], rows[0]["per_attack"], flush=True)
    result["loadavg_after"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
