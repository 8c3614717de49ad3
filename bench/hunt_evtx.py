"""Hunting in EVTX files from other environments: attack samples vs benign samples.

    python -m bench.hunt_evtx [--logs DIR] [--train-events 30000] [--epochs 10] [--out FILE]

Models train on the OTRF recordings (one Windows lab, 2020). They then hunt, by host and 5-minute
window, over the union of `evtx_attack_samples` (277 EVTX recordings of attacks, by ATT&CK tactic)
and `evtx_benign_and_parser_samples` (real logs of unrelated machines, no attack, five damaged
files): both are out of the training environment, so this asks whether attack windows still rank
above merely unfamiliar ones. A window is an attack window when it holds an event from an attack
sample file. Reports window ROC-AUC / PR-AUC, the share of attack windows among the top 20 and
top 50 findings, and the same for the rarity baseline. Writes JSON to bench/results/hunt_evtx.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from bench.hunt_otrf import rarity_scores
from deepids.features.events import event_features
from deepids.hunting.hunt import window_scores
from deepids.io.logs import log_files, read_events
from deepids.models.dense_ae import DenseAutoencoder
from deepids.models.gan import GANDetector

WINDOWS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "logs" / "windows"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", type=Path, default=WINDOWS)
    ap.add_argument("--train-events", type=int, default=30000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hunt_evtx.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    started, load_before = time.time(), os.getloadavg()
    train_events, _ = read_events(args.logs / "otrf_security_datasets" / "atomic", keep_raw=False)
    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.choice(train_events.height, min(args.train_events, train_events.height), replace=False))
    train_all = event_features(train_events)
    ftr = train_all[sample.tolist()]
    attack_dir, benign_dir = args.logs / "evtx_attack_samples", args.logs / "evtx_benign_and_parser_samples"
    attack_files = {p.name for p in log_files(attack_dir)}
    events, report = read_events([attack_dir, benign_dir], keep_raw=False)
    events = events.filter(pl.col("timestamp") > pl.datetime(1990, 1, 1))   # one record stamped 1601 (zero time)
    is_attack = np.isin(events.get_column("source_file").to_numpy(), list(attack_files)).astype(int)
    fte = event_features(events)
    print(f"train on {len(sample):,} OTRF events; hunt {events.height:,} EVTX events "
          f"({int(is_attack.sum()):,} from attack samples); read report: {report.n_rejected} rejected", flush=True)
    scores = {"rarity-baseline": rarity_scores(train_all, fte)}
    gan = GANDetector(epochs=args.epochs, seed=args.seed, verbose=False).fit(ftr)
    for method in ("reconstruction", "latent-search", "discriminator"):
        scores[f"gan/{method}"] = gan.score_records(fte, method=method).score
    scores["dense-ae"] = DenseAutoencoder(epochs=args.epochs, seed=args.seed, verbose=False).fit(ftr).score_records(fte).score
    command = " ".join(sys.argv[1:] if argv is None else argv)
    results = {"command": f"python -m bench.hunt_evtx {command}", "train_events_sampled": len(sample),
               "hunted_events": events.height, "attack_events": int(is_attack.sum()),
               "read": {k: v for k, v in report.to_dict().items() if k not in ("files", "damaged_files")},
               "cpu_count": os.cpu_count(), "loadavg_before": load_before, "models": {}}
    for name, s in scores.items():
        w = window_scores(events, s, by="host", window="5m", top_k=10)
        y = np.array([int(is_attack[np.asarray(r)].max()) for r in w.get_column("rows").to_list()])
        ranked = np.argsort(-w.get_column("score").to_numpy(), kind="stable")
        results["models"][name] = {
            "event_roc_auc": float(roc_auc_score(is_attack, s)),
            "window_roc_auc": float(roc_auc_score(y, w.get_column("score").to_numpy())),
            "window_pr_auc": float(average_precision_score(y, w.get_column("score").to_numpy())),
            "windows": int(len(y)), "attack_windows": int(y.sum()),
            "attack_share_top20": float(y[ranked[:20]].mean()), "attack_share_top50": float(y[ranked[:50]].mean()),
        }
        r = results["models"][name]
        print(f"  {name:22s} event AUC {r['event_roc_auc']:.3f} window AUC {r['window_roc_auc']:.3f} "
              f"PR {r['window_pr_auc']:.3f} attack share top20 {r['attack_share_top20']:.2f} "
              f"top50 {r['attack_share_top50']:.2f} ({r['attack_windows']}/{r['windows']} attack windows)", flush=True)
    results["seconds"] = round(time.time() - started, 1)
    results["loadavg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
