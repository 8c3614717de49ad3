"""Which LSTM-AE settings matter: held-out ROC-AUC on the demo split, seeds 0-2, one row per step.

Run: `python -m bench.ablation_flows` (about 5 minutes on 2 cores) -> bench/results/ablation_flows.json
Smoke run: `python -m bench.ablation_flows --seeds 0 --epochs 1 --rows 400 --out /tmp/a.json` (not a result).

Each step changes the model's own parameters and, through `fit_preprocessor` (patched for the
step with `unittest.mock.patch.object`, which fails loudly if the name goes away), the feature
pipeline's rarity and port features.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np
from sklearn.metrics import roc_auc_score

import deepids.models.reconstruction as reconstruction
from deepids.datasets import SAMPLE, holdout_split, samples_dir
from deepids.features.preprocess import FlowPreprocessor
from deepids.io import read_flows
from deepids.models import LSTMAutoencoder

NO_RARITY = dict(frequency=(), port_feature=False)
SINGLE_RARITY = dict(frequency=("dst_port", "Init_Win_bytes_forward", "Init_Win_bytes_backward"))
STEPS = [
    ("published network: lr 1e-3, no noise, clip 10, no port/rarity features",
     dict(learning_rate=1e-3, noise=0.0, clip=10.0), NO_RARITY),
    ("+ denoising noise 0.5, clip 3, destination port", dict(learning_rate=1e-3), dict(frequency=())),
    ("+ rarity of port and initial windows", dict(learning_rate=1e-3), SINGLE_RARITY),
    ("+ rarity of the initial-window pair", dict(learning_rate=1e-3), {}),
    ("+ Adam lr 3e-3 (the default)", {}, {}),
]


def preprocessor_with(feature_kw: dict):
    """`fit_preprocessor` with the step's feature options (the model passes rows, columns and clip)."""
    def fit(rows, columns, clip: float = 3.0) -> FlowPreprocessor:
        return FlowPreprocessor(clip=clip, **feature_kw).fit(rows, columns)
    return fit


def run(train, test, seeds, epochs: int | None) -> list[dict]:
    y = (test["label"] != "benign").to_numpy()
    rows = []
    for name, model_kw, feature_kw in STEPS:
        kw = {**model_kw, **({"epochs": epochs} if epochs else {})}
        with mock.patch.object(reconstruction, "fit_preprocessor", preprocessor_with(feature_kw)):
            models = [LSTMAutoencoder(sequence_length=1, seed=seed, verbose=False, **kw).fit(train) for seed in seeds]
        aucs = [roc_auc_score(y, m.score_samples(test)) for m in models]
        rows.append({"step": name, "features": len(models[0].feature_names_),
                     "roc_auc_by_seed": [round(a, 4) for a in aucs], "mean_roc_auc": round(float(np.mean(aucs)), 4)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: the model's own)")
    ap.add_argument("--rows", type=int, default=0, help="only the first N rows of each part of the split "
                                                        "(smoke runs; 0 = all)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/ablation_flows.json"))
    args = ap.parse_args(argv)
    table, _ = read_flows(samples_dir() / SAMPLE)
    train, test = holdout_split(table)
    if args.rows:
        train, test = train.head(args.rows), test.head(args.rows)
    doc = {"split": "demo holdout_split of the bundled CICIDS2017 sample, seed 42", "sequence_length": 1,
           "command": " ".join(["python -m bench.ablation_flows", *(sys.argv[1:] if argv is None else argv)]),
           "train_records": train.height, "test_records": test.height,
           "steps": run(train, test, args.seeds, args.epochs)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


if __name__ == "__main__":
    main()
