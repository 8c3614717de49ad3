"""Leave-recordings-out, grouped by ATT&CK technique: threat hunting on every labelled Empire recording.

    python -m bench.hunt_loro [--otrf DIR] [--models rarity-baseline,context-rarity,event-rarity,gan,dense-ae]
                              [--training all|benign] [--max-folds N] [--out FILE]

Every OTRF Empire recording whose metadata lists its agents gets per-event labels, by two
derivations reported side by side: `empire_attack_labels` (agent PIDs on the agent's host and
their child processes) and `empire_attack_labels_broad` (also events whose *target* process is an
agent process, and the agents' PowerShell 800/4103/4104 events found by their host application).

Folds: the labelled recordings are grouped by parent technique (T1003.002 -> T1003); each fold
holds out one group and trains on every recording of the collection (Empire or not) that shares
no parent technique with it, so the same technique is never in training and test. With
`--training all` (default) the training recordings are used whole, their attacks unlabelled, as
a user pointing `deepids train` at them would; with `--training benign` the labelled attack
events of training recordings are left out (the non-Empire recordings' attacks stay in, unlabelled).

Models, each with the CLI defaults: `rarity-baseline` (-log10 of the training share of the event's
(event kind, image) pair), `context-rarity` (`deepids.features.events.context_score`: the three
largest fitted rarities of `EventContext` (process tree, command-line shape, network, registry,
image loads, access, per host/user baselines) plus 3 x the process's suspicious command-line
traits; that weight was chosen while looking at these recordings), `event-rarity` (the registered
model, `deepids train` on logs by default: the same sum with the weight fixed a priori as the
rarity of an unseen key, log10(training events + 1); trained on every training event), `gan`,
`dense-ae` (both on `EventContext` features). Per held-out recording:
event ROC-AUC under both label derivations; overall the mean and the minimum over recordings.
Process context is computed over all recordings in file order with one carried process table,
as `deepids hunt` over the folder does. Writes JSON to bench/results/hunt_loro.json.
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
from sklearn.metrics import roc_auc_score

from deepids.features.events import EventContext, context_score
from deepids.io.logs import read_events
from deepids.io.otrf import empire_attack_labels, empire_attack_labels_broad, read_otrf_index, recording_agents
from deepids.models.rarity import EventRarityDetector

DEFAULT_OTRF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "logs" / "windows" / "otrf_security_datasets"
LABELS = {"agent": empire_attack_labels, "broad": empire_attack_labels_broad}


def parent_techniques(techniques) -> set[str]:
    return {t.split(".")[0] for t in techniques}


def technique_folds(index, labelled) -> list[tuple[str, list, set]]:
    """[(group, held-out labelled recordings, training recordings)]: grouped by parent technique."""
    groups: dict[str, list] = {}
    for r in labelled:
        groups.setdefault("+".join(sorted(parent_techniques(r.techniques))), []).append(r)
    # merge groups that share a technique (a recording with two techniques joins both)
    folds = []
    for name, recs in sorted(groups.items()):
        held_tech = set().union(*(parent_techniques(r.techniques) for r in recs))
        train = {r.name for r in index if not (parent_techniques(r.techniques) & held_tech)}
        folds.append((name, recs, train))
    return folds


def rarity_baseline(train_keys: list, test_keys: list) -> np.ndarray:
    counts = Counter(train_keys)
    total = len(train_keys)
    return np.array([-np.log10((counts.get(k, 0) + 1) / (total + 1)) for k in test_keys])


def _auc(y, s):
    y = np.asarray(y)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


def fit_model(name: str, features: pl.DataFrame, seed: int):
    from deepids.models.dense_ae import DenseAutoencoder
    from deepids.models.gan import GANDetector

    cls = {"gan": GANDetector, "dense-ae": DenseAutoencoder}[name]
    return cls(seed=seed, verbose=False).fit(features)


def summarise(per_recording: dict) -> dict:
    out = {}
    for derivation in LABELS:
        aucs = {k: v[derivation] for k, v in per_recording.items() if v[derivation] is not None}
        if aucs:
            worst = min(aucs, key=aucs.get)
            out[derivation] = {"mean_event_roc_auc": round(float(np.mean(list(aucs.values()))), 4),
                               "min_event_roc_auc": round(aucs[worst], 4), "min_recording": worst,
                               "recordings_below_0.70": sorted(k for k, v in aucs.items() if v < 0.70)}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--otrf", type=Path, default=DEFAULT_OTRF)
    ap.add_argument("--models", default="rarity-baseline,context-rarity,event-rarity,gan,dense-ae")
    ap.add_argument("--training", choices=("all", "benign"), default="all")
    ap.add_argument("--max-folds", type=int, default=0, help="only the first N folds (smoke runs)")
    ap.add_argument("--train-events", type=int, default=0,
                    help="train the neural models on a uniform sample of this many training events (0: all); the "
                         "rarity tables always count every training event")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--events-cache", type=Path, default=None,
                    help="a Parquet copy of the read events: read from it when present, else written (reruns)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hunt_loro.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    started, load_before = time.time(), os.getloadavg()
    if args.events_cache and args.events_cache.exists():
        events = pl.read_parquet(args.events_cache)
    else:
        events, _ = read_events(args.otrf / "atomic")
        if args.events_cache:
            events.write_parquet(args.events_cache)
    files = events.get_column("source_file").to_numpy()
    index = read_otrf_index(args.otrf)
    labelled = [r for r in index if r.is_empire and recording_agents(args.otrf, r)]
    labels = {d: np.zeros(events.height, dtype=np.int64) for d in LABELS}
    for r in labelled:
        m = files == r.name
        for d, fn in LABELS.items():
            labels[d][m] = fn(events.filter(pl.Series(m)), recording_agents(args.otrf, r))
    t = time.time()
    parts = EventContext().keys(events)        # one carried process table over all recordings, in file order
    context_seconds = time.time() - t
    event_image = parts["keys"]["event_image"]
    folds = technique_folds(index, labelled)[:args.max_folds or None]
    print(f"{events.height:,} events; {len(labelled)} labelled Empire recordings in {len(folds)} technique folds; "
          f"attack events: " + ", ".join(f"{d} {int(v.sum()):,}" for d, v in labels.items()), flush=True)
    given = sys.argv[1:] if argv is None else list(argv)
    results = {"command": "python -m bench.hunt_loro " + " ".join(given), "training": args.training,
               "neural_train_sample": args.train_events or "all training events",
               "labels": {d: fn.__doc__.split("\n")[0] for d, fn in LABELS.items()},
               "events": events.height, "attack_events": {d: int(v.sum()) for d, v in labels.items()},
               "cpu_count": os.cpu_count(), "torch_threads": args.threads, "loadavg_before": load_before,
               "host": "shared 2-core development machine, loaded by other work", "context_seconds":
               round(context_seconds, 1), "folds": {}, "models": {m: {"recordings": {}} for m in models}}
    for group, held, train_names in folds:
        train_mask = np.isin(files, list(train_names))
        if args.training == "benign":
            train_mask &= (labels["agent"] == 0) & (labels["broad"] == 0)
        train_rows = np.flatnonzero(train_mask)
        test_rows = np.flatnonzero(np.isin(files, [r.name for r in held]))
        ctx = EventContext().fit_keys({"keys": {k: [v[i] for i in train_rows] for k, v in parts["keys"].items()},
                                       "entities": {k: [v[i] for i in train_rows] for k, v in parts["entities"].items()}})
        ftest = ctx.features_from(parts, test_rows)
        scores = {}
        fold = {"held_out": [r.name for r in held], "train_recordings": len(train_names),
                "train_events": int(len(train_rows)), "seconds": {}}
        if "rarity-baseline" in models:
            scores["rarity-baseline"] = rarity_baseline([event_image[i] for i in train_rows],
                                                        [event_image[i] for i in test_rows])
        if "context-rarity" in models:
            scores["context-rarity"] = context_score(ftest)
        if "event-rarity" in models:
            t = time.time()
            model = EventRarityDetector(seed=args.seed, verbose=False).fit(ctx.features_from(parts, train_rows))
            fit_s = time.time() - t
            t = time.time()
            scores["event-rarity"] = model.score_records(ftest).score
            fold["seconds"]["event-rarity"] = {"train": round(fit_s, 1), "score": round(time.time() - t, 2),
                                               "train_events": int(len(train_rows)), "score_events": ftest.height,
                                               "indicator_weight": model.indicator_weight_}
        needs_train = [m for m in models if m in ("gan", "dense-ae")]
        if needs_train:
            sample = train_rows
            if args.train_events and len(train_rows) > args.train_events:
                sample = np.sort(np.random.default_rng(args.seed).choice(train_rows, args.train_events, replace=False))
            ftrain = ctx.features_from(parts, sample)
            for m in needs_train:
                t = time.time()
                model = fit_model(m, ftrain, args.seed)
                fit_s = time.time() - t
                t = time.time()
                scores[m] = model.score_records(ftest).score
                fold["seconds"][m] = {"train": round(fit_s, 1), "score": round(time.time() - t, 2),
                                      "train_events": ftrain.height, "score_events": ftest.height}
        test_files = files[test_rows]
        for m, s in scores.items():
            for r in held:
                mm = test_files == r.name
                results["models"][m]["recordings"][r.name] = {
                    "fold": group, "events": int(mm.sum()),
                    **{f"{d}_attack_events": int(labels[d][test_rows][mm].sum()) for d in LABELS},
                    **{d: _auc(labels[d][test_rows][mm], s[mm]) for d in LABELS}}
        results["folds"][group] = fold
        line = "  ".join(f"{m} " + "/".join(f"{results['models'][m]['recordings'][r.name][d] or float('nan'):.3f}"
                                            for d in LABELS) for m in scores for r in held[:1])
        print(f"[{group}] {len(held)} held out, train {len(train_rows):,} events: {line}", flush=True)
        _write(args.out, results)                # after every fold: a long run leaves its figures so far
    for m in models:
        results["models"][m]["summary"] = summarise(results["models"][m]["recordings"])
        s = results["models"][m]["summary"]
        print(f"{m:16s} " + "  ".join(f"{d}: mean {v['mean_event_roc_auc']:.3f} min {v['min_event_roc_auc']:.3f}"
                                      for d, v in s.items()), flush=True)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    results["seconds"] = round(time.time() - started, 1)
    results["loadavg_after"] = os.getloadavg()
    _write(args.out, results)
    print(f"wrote {args.out} ({results['seconds']:.0f}s)")


def _write(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
