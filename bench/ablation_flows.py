"""Which LSTM-AE settings matter: held-out ROC-AUC on the demo split, seeds 0-2, one row per step.

Run: `python -m bench.ablation_flows` (about 5 minutes on 2 cores) -> bench/results/ablation_flows.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

import deepids.models.lstm_ae as lstm_ae
import deepids.models.reconstruction as reconstruction
from deepids.datasets import SAMPLE, holdout_split, samples_dir
from deepids.features.preprocess import FlowPreprocessor
from deepids.io import read_flows

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


def main(out: Path = Path("bench/results/ablation_flows.json")) -> None:
    table, _ = read_flows(samples_dir() / SAMPLE)
    train, test = holdout_split(table)
    y = (test["label"] != "benign").to_numpy()
    rows = []
    original = reconstruction.FlowPreprocessor
    try:
        for name, model_kw, feature_kw in STEPS:
            class Preprocessor(FlowPreprocessor):
                def __init__(self, **kw):
                    super().__init__(**{**kw, **feature_kw})

            reconstruction.FlowPreprocessor = Preprocessor
            aucs = [roc_auc_score(y, lstm_ae.LSTMAutoencoder(sequence_length=1, seed=seed, verbose=False, **model_kw)
                                  .fit(train).score_samples(test)) for seed in (0, 1, 2)]
            rows.append({"step": name, "roc_auc_by_seed": [round(a, 4) for a in aucs],
                         "mean_roc_auc": round(float(np.mean(aucs)), 4)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        reconstruction.FlowPreprocessor = original
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"split": "demo holdout_split of the bundled CICIDS2017 sample, seed 42",
                               "sequence_length": 1, "steps": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
