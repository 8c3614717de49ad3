"""Default training time and scoring speed of log models on the shared OTRF recordings.

    python -m bench.hunt_speed [--otrf DIR] [--models event-rarity,gan,dense-ae] [--threads 2] [--out FILE]

Trains each model with its CLI defaults and process-tree context (`fit_log_model`) on every
event of the shared OTRF recordings (175k events), then times, on the same events: the context
features (`EventContext`: process table and rarity), and the model's scoring of the features with
each score method (the GAN's `reconstruction` default and `latent-search`). Reading the files is
timed apart (`read_events`). Every step has its wall seconds and its CPU seconds (the process's,
all threads), and rates per wall second and per CPU second: the host is shared, and the CPU
figures are the ones that hold when others load it. `scoring_events_per_second` is the context
features and the default score together, what `deepids score` spends past reading. Peak memory
is the process's.

End to end, as the CLI runs them (`end_to_end`, with `--end-to-end`, the default): `deepids train`'s
path (`log_context_from_files` and `fit_log_files`: two reads a chunk at a time, then save) and `deepids score`'s
(`score_files` of the saved and reloaded model over the recordings into a Parquet file: reading,
features, scores and writing together, what the CLI's "events/s" says).
Writes JSON to bench/results/hunt_speed.json; say the host's load beside any figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from bench.hunt_loro import DEFAULT_OTRF
from deepids.hunting.logs import LogFeatures, fit_log_files, fit_log_model, log_context_from_files
from deepids.io.logs import read_events
from deepids.models.registry import load_model
from deepids.scoring import score_files


class Timed:
    """Wall and CPU seconds (the process's, all threads) of a `with` block."""

    def __init__(self, wall: float = 0.0, cpu: float = 0.0):
        self.wall, self.cpu = wall, cpu

    def __enter__(self) -> "Timed":
        self._t, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self._t, time.process_time() - self._c

    def rates(self, n: int, prefix: str = "") -> dict:
        return {f"{prefix}events_per_second": round(n / max(self.wall, 1e-9)),
                f"{prefix}events_per_cpu_second": round(n / max(self.cpu, 1e-9))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--otrf", type=Path, default=DEFAULT_OTRF)
    ap.add_argument("--models", default="event-rarity,gan,dense-ae")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latent-search-events", type=int, default=20_000, help="events scored with latent-search")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: the model's own; "
                                                             "smaller only for smoke runs)")
    ap.add_argument("--events-cache", type=Path, default=None, help="as bench.hunt_loro")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hunt_speed.json")
    ap.add_argument("--no-end-to-end", dest="end_to_end", action="store_false",
                    help="skip the end-to-end train and score of the recordings as the CLI runs them")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from deepids.models import MODELS

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
               "host": "shared 2-core development machine (its load: loadavg_*)", "loadavg_before": load_before,
               "epochs": args.epochs or "the model's own", "models": {}}
    for name in [m for m in args.models.split(",") if m]:
        cls = MODELS[name]
        epochs = {"epochs": args.epochs} if args.epochs and "epochs" in cls._param_names() else {}
        with Timed() as train:
            model = fit_log_model(cls(seed=0, verbose=False, **epochs), events)
        history = model.training_summary_.get("history", {})
        with Timed() as feature:
            features = LogFeatures(model)(events)
        entry = {"train_seconds_with_context": round(train.wall, 1), "train_cpu_seconds": round(train.cpu, 1),
                 "epochs_run": len(history.get("train_loss", [])),
                 "context_features_seconds": round(feature.wall, 1), "context_features_cpu_seconds": round(feature.cpu, 1),
                 **feature.rates(events.height, "context_features_"), "score": {}}
        methods = ["reconstruction", "latent-search"] if name == "gan" else [None]
        for method in methods:
            rows = features if method != "latent-search" else features.head(args.latent_search_events)
            with Timed() as scored:
                model.score_records(rows, **({"method": method} if method else {}))
            entry["score"][method or "default"] = {"events": rows.height, "seconds": round(scored.wall, 2),
                                                   "cpu_seconds": round(scored.cpu, 2), **scored.rates(rows.height)}
        default = entry["score"].get(getattr(model, "score_method", None) or "default") or entry["score"]["default"]
        both = Timed(feature.wall + default["seconds"], feature.cpu + default["cpu_seconds"])
        entry["scoring"] = {"what": "context features + default score", **both.rates(events.height)}
        if args.end_to_end:
            entry["end_to_end"] = end_to_end(cls, epochs, args.otrf / "atomic")
        results["models"][name] = entry
        print(name, json.dumps(entry), flush=True)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    results["loadavg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def end_to_end(cls, params: dict, recordings: Path) -> dict:
    """`deepids train` then `deepids score` on the recordings, as the CLI runs them (see the docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        with Timed() as train:
            context, _ = log_context_from_files(recordings)
            fit_log_files(cls(seed=0, verbose=False, **params), context, recordings).save(Path(tmp) / "model")
        model = load_model(Path(tmp) / "model")
        with Timed() as scored:
            summary = score_files(model, recordings, Path(tmp) / "scores.parquet")
    return {"train": {"seconds": round(train.wall, 1), "cpu_seconds": round(train.cpu, 1)},
            "score": {"events": summary.records, "seconds": round(scored.wall, 2), "cpu_seconds": round(scored.cpu, 2),
                      **scored.rates(summary.records)}}


if __name__ == "__main__":
    main()
