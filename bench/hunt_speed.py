"""Default training time and scoring speed of log models on the shared OTRF recordings.

    python -m bench.hunt_speed [--otrf DIR] [--models gan,dense-ae] [--threads 2] [--out FILE]

Trains each model with its CLI defaults and process-tree context (`fit_log_model`) on every
event of the shared OTRF recordings (175k events), then times, on the same events: the context
features (`EventContext`: process table and rarity), and the model's scoring of the features with
each score method (the GAN's `reconstruction` default and `latent-search`). Reading the files is
timed apart (`read_events`). Peak memory is the process's. Writes JSON to bench/results/hunt_speed.json;
the host is shared, so say its load beside any figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import polars as pl
import torch

from bench.hunt_loro import DEFAULT_OTRF
from deepids.hunting.logs import LogFeatures, fit_log_model
from deepids.io.logs import read_events


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--otrf", type=Path, default=DEFAULT_OTRF)
    ap.add_argument("--models", default="gan,dense-ae")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latent-search-events", type=int, default=20_000, help="events scored with latent-search")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: the model's own; "
                                                             "smaller only for smoke runs)")
    ap.add_argument("--events-cache", type=Path, default=None, help="as bench.hunt_loro")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hunt_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from deepids.models.dense_ae import DenseAutoencoder
    from deepids.models.gan import GANDetector

    load_before = os.getloadavg()
    t = time.time()
    if args.events_cache and args.events_cache.exists():
        events = pl.read_parquet(args.events_cache)
    else:
        events, _ = read_events(args.otrf / "atomic")
        if args.events_cache:
            events.write_parquet(args.events_cache)
    read_s = time.time() - t
    command = " ".join(sys.argv[1:] if argv is None else argv)
    results = {"command": f"python -m bench.hunt_speed {command}", "events": events.height,
               "read_seconds": round(read_s, 1), "torch_threads": args.threads, "cpu_count": os.cpu_count(),
               "host": "shared 2-core development machine, loaded by other work", "loadavg_before": load_before,
               "epochs": args.epochs or "the model's own", "models": {}}
    for name in [m for m in args.models.split(",") if m]:
        cls = {"gan": GANDetector, "dense-ae": DenseAutoencoder}[name]
        t = time.time()
        model = fit_log_model(cls(seed=0, verbose=False, **({"epochs": args.epochs} if args.epochs else {})), events)
        train_s = time.time() - t
        history = model.training_summary_.get("history", {})
        t = time.time()
        features = LogFeatures(model)(events)
        feature_s = time.time() - t
        entry = {"train_seconds_with_context": round(train_s, 1), "epochs_run": len(history.get("train_loss", [])),
                 "context_features_seconds": round(feature_s, 1),
                 "context_features_events_per_second": round(events.height / feature_s), "score": {}}
        methods = ["reconstruction", "latent-search"] if name == "gan" else [None]
        for method in methods:
            rows = features if method != "latent-search" else features.head(args.latent_search_events)
            t = time.time()
            model.score_records(rows, **({"method": method} if method else {}))
            s = time.time() - t
            entry["score"][method or "default"] = {"events": rows.height, "seconds": round(s, 2),
                                                   "events_per_second": round(rows.height / s)}
        results["models"][name] = entry
        print(name, json.dumps(entry), flush=True)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    results["loadavg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
