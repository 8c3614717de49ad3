"""Leave-recordings-out evaluation of threat hunting on the OTRF Security-Datasets recordings.

    python -m bench.hunt_otrf [--otrf DIR] [--folds 3] [--train-events 30000] [--epochs 10] [--out FILE]

Labels: per-event labels exist only for the Empire recordings whose metadata lists the agents
(`deepids.io.otrf.empire_attack_labels`: agent PIDs on the agent's host and their child
processes). Those recordings are split into folds; for each fold every model trains on *all
other* recordings (other Empire ones and the non-Empire ones, unlabelled, attacks included) and
scores the fold's recordings, which it never saw. A second protocol trains on the non-Empire
recordings only. Training events are a uniform random sample (`--train-events`) of the training
recordings, for time on a shared 2-core machine; the sample is said in the output.

Per held-out recording and overall: event-level ROC-AUC, window-level (host, 5-minute windows,
window score = mean of the top 10 event scores, a window is an attack window when it holds an
attack event) ROC-AUC and PR-AUC, and the rank of the best attack window in `hunt` over that
recording alone, and among all non-attack windows of the fold's held-out recordings (as if this
recording's attack were the only one in the data hunted). The rarity baseline scores each
event by -log10 of the share of training events with the same (event, process image) pair.
Writes JSON (with the load average and CPU count) to bench/results/hunt_otrf.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from deepids.features.events import event_features
from deepids.hunting.hunt import window_scores
from deepids.io.logs import read_events
from deepids.io.otrf import empire_attack_labels, read_otrf_index, recording_agents
from deepids.models.dense_ae import DenseAutoencoder
from deepids.models.gan import GANDetector

DEFAULT_OTRF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "logs" / "windows" / "otrf_security_datasets"
GAN_METHODS = ("reconstruction", "discriminator", "latent-search")


def rarity_scores(train_features: pl.DataFrame, features: pl.DataFrame) -> np.ndarray:
    key = lambda f: (f.get_column("event") + "|" + f.get_column("image")).to_list()  # noqa: E731
    counts = Counter(key(train_features))
    total = sum(counts.values())
    return np.array([-np.log10((counts.get(k, 0) + 1) / (total + 1)) for k in key(features)])


def _auc(y, s):
    y = np.asarray(y)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


def _ap(y, s):
    y = np.asarray(y)
    return float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else None


def window_table(events: pl.DataFrame, scores: np.ndarray, labels: np.ndarray) -> pl.DataFrame:
    w = window_scores(events, scores, by="host", window="5m", top_k=10)
    attack = [int(labels[np.asarray(r)].max()) for r in w.get_column("rows").to_list()]
    files = events.get_column("source_file").to_numpy()
    rec = [files[r[0]] for r in w.get_column("rows").to_list()]
    return w.drop("rows").with_columns(pl.Series("attack", attack), pl.Series("recording", rec))


def best_attack_rank(w: pl.DataFrame) -> int | None:
    ranked = w.sort("score", descending=True).with_row_index("rank", offset=1)
    hits = ranked.filter(pl.col("attack") == 1)
    return int(hits.get_column("rank").min()) if hits.height else None


def evaluate_scores(events, labels, scores) -> dict:
    out = {"event_roc_auc": _auc(labels, scores), "event_pr_auc": _ap(labels, scores), "recordings": {}}
    w_all = window_table(events, scores, labels)
    out["window_roc_auc"] = _auc(w_all["attack"], w_all["score"])
    out["window_pr_auc"] = _ap(w_all["attack"], w_all["score"])
    files = events.get_column("source_file").to_numpy()
    benign_window_scores = w_all.filter(pl.col("attack") == 0).get_column("score").to_numpy()
    for name in sorted(set(files)):
        m = files == name
        w = w_all.filter(pl.col("recording") == name)
        attack_scores = w.filter(pl.col("attack") == 1).get_column("score")
        # the recording's best attack window among every non-attack window of the held-out recordings
        pooled_rank = (int((benign_window_scores > attack_scores.max()).sum()) + 1) if attack_scores.len() else None
        out["recordings"][name] = {
            "events": int(m.sum()), "attack_events": int(labels[m].sum()),
            "event_roc_auc": _auc(labels[m], scores[m]), "windows": w.height,
            "attack_window_rank": best_attack_rank(w), "attack_window_rank_among_fold": pooled_rank,
            "fold_non_attack_windows": int(len(benign_window_scores))}
    recs = out["recordings"].values()
    ranks = [r["attack_window_rank"] for r in recs]
    out["attack_window_in_top5"] = sum(1 for r in ranks if r is not None and r <= 5)
    out["attack_window_in_top5_among_fold"] = sum(1 for r in recs if r["attack_window_rank_among_fold"] is not None
                                                  and r["attack_window_rank_among_fold"] <= 5)
    out["attack_window_ranked_first"] = sum(1 for r in ranks if r == 1)
    out["mean_windows_per_recording"] = float(np.mean([r["windows"] for r in recs])) if ranks else None
    out["recordings_held_out"] = len(ranks)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--otrf", type=Path, default=DEFAULT_OTRF)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--train-events", type=int, default=30000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core host)")
    ap.add_argument("--protocols", default="folds,non-empire")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hunt_otrf.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    load_before = os.getloadavg()
    t = time.time()
    events, report = read_events(args.otrf / "atomic")
    read_seconds = time.time() - t
    t = time.time()
    features = event_features(events)
    feature_seconds = time.time() - t
    files = events.get_column("source_file").to_numpy()
    index = read_otrf_index(args.otrf)
    labelled = [r for r in index if r.is_empire and recording_agents(args.otrf, r)]
    empire_all = {r.name for r in index if r.is_empire}
    labels = np.zeros(events.height, dtype=np.int64)
    for r in labelled:
        m = files == r.name
        labels[m] = empire_attack_labels(events.filter(pl.Series(m)), recording_agents(args.otrf, r))
    print(f"read {events.height:,} events; {len(labelled)} labelled Empire recordings, "
          f"{int(labels.sum()):,} attack events", flush=True)

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(labelled))
    splits = []
    if "folds" in args.protocols:
        for k in range(args.folds):
            held = {labelled[i].name for i in order[k::args.folds]}
            splits.append((f"fold{k + 1}", held, set(held)))
    if "non-empire" in args.protocols:
        held = {r.name for r in labelled}
        splits.append(("non-empire-training", held, set(empire_all)))

    results = {"command": "python -m bench.hunt_otrf " + " ".join(sys.argv[1:] if argv is None else argv),
               "labels": "OTRF Empire per-event labels: agent PIDs on the agent's host and their child processes "
                         "(deepids.io.otrf.empire_attack_labels)",
               "events": events.height, "attack_events": int(labels.sum()),
               "labelled_recordings": [r.name for r in labelled],
               "train_sample": f"uniform random sample of at most {args.train_events:,} events of the training "
                               "recordings (resampled real events, no synthetic ones)",
               "epochs": args.epochs, "cpu_count": os.cpu_count(), "torch_threads": args.threads,
               "loadavg_before": load_before, "protocols": {},
               "read_seconds": round(read_seconds, 1),
               "read_events_per_second": round(events.height / read_seconds),
               "feature_events_per_second": round(events.height / feature_seconds)}
    for name, held, excluded in splits:
        test_mask = np.isin(files, list(held))
        train_idx = np.flatnonzero(~np.isin(files, list(excluded)))
        sample = np.sort(rng.choice(train_idx, min(args.train_events, len(train_idx)), replace=False))
        ftr = features[sample.tolist()]
        test_events = events.filter(pl.Series(test_mask))
        fte = features.filter(pl.Series(test_mask))
        y = labels[test_mask]
        print(f"[{name}] train on {len(train_idx):,} events ({len(sample):,} sampled) of "
              f"{len(set(files[train_idx]))} recordings; score {test_events.height:,} events of {len(held)} held-out "
              f"recordings ({int(y.sum()):,} attack)", flush=True)
        entry = {"held_out": sorted(held), "train_events": int(len(train_idx)), "train_sampled": int(len(sample)),
                 "models": {}}
        all_rarity = rarity_scores(features[train_idx.tolist()], fte)
        entry["models"]["rarity-baseline"] = evaluate_scores(test_events, y, all_rarity)
        t = time.time()
        gan = GANDetector(epochs=args.epochs, seed=args.seed, verbose=False).fit(ftr)
        fit_s = time.time() - t
        for method in GAN_METHODS:
            t = time.time()
            s = gan.score_records(fte, method=method).score
            res = evaluate_scores(test_events, y, s)
            score_s = time.time() - t
            res.update(train_seconds=round(fit_s, 1), score_seconds=round(score_s, 1),
                       score_events_per_second=round(len(s) / max(score_s, 1e-9)))
            entry["models"][f"gan/{method}"] = res
        t = time.time()
        dae = DenseAutoencoder(epochs=args.epochs, seed=args.seed, verbose=False).fit(ftr)
        fit_s = time.time() - t
        res = evaluate_scores(test_events, y, dae.score_records(fte).score)
        res.update(train_seconds=round(fit_s, 1))
        entry["models"]["dense-ae"] = res
        for model, r in entry["models"].items():
            print(f"  {model:22s} event AUC {r['event_roc_auc']:.3f}  window AUC {r['window_roc_auc']:.3f}  "
                  f"PR {r['window_pr_auc']:.3f}  top5 {r['attack_window_in_top5']}/{r['recordings_held_out']}  "
                  f"top5 among fold {r['attack_window_in_top5_among_fold']}/{r['recordings_held_out']}", flush=True)
        results["protocols"][name] = entry

    # overall, per model: pooled over the folds (each recording scored once, by a model that never saw it)
    folds = [p for n, p in results["protocols"].items() if n.startswith("fold")]
    if folds:
        overall = {}
        for model in folds[0]["models"]:
            recs = {k: v for p in folds for k, v in p["models"][model]["recordings"].items()}
            aucs = [r["event_roc_auc"] for r in recs.values() if r["event_roc_auc"] is not None]
            overall[model] = {
                "mean_event_roc_auc_per_recording": float(np.mean(aucs)),
                "event_roc_auc_per_fold": [p["models"][model]["event_roc_auc"] for p in folds],
                "window_roc_auc_per_fold": [p["models"][model]["window_roc_auc"] for p in folds],
                "window_pr_auc_per_fold": [p["models"][model]["window_pr_auc"] for p in folds],
                "attack_window_in_top5": sum(1 for r in recs.values() if r["attack_window_rank"] is not None
                                             and r["attack_window_rank"] <= 5),
                "attack_window_in_top5_among_fold": sum(p["models"][model]["attack_window_in_top5_among_fold"]
                                                        for p in folds),
                "attack_window_ranked_first": sum(1 for r in recs.values() if r["attack_window_rank"] == 1),
                "mean_windows_per_recording": float(np.mean([r["windows"] for r in recs.values()])),
                "recordings": len(recs)}
        results["overall_folds"] = overall
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    results["seconds"] = round(time.time() - started, 1)
    results["loadavg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} ({results['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
