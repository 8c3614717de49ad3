"""One hunt over every shared OTRF recording at once: where does each Empire attack land in the top 20?

    python -m bench.hunt_all [--otrf DIR] [--model event-rarity|gan|dense-ae|context-rarity] [--by tree,host]
                             [--top 20] [--ties hunt|names] [--out FILE]

The model (CLI defaults, with process-tree context: `deepids.hunting.logs.fit_log_model`) trains on
the recordings that are not Empire ones (Covenant, RDP, Mimikatz, SharpView, schtasks: other
tools, their own attacks unlabelled inside), then `hunt` ranks the process trees (or host
windows) of all 41 recordings together, as an analyst reading one top-20 list would. For every
labelled Empire recording (labels: `empire_attack_labels`, and the broad derivation) the bench
reports the rank of its best finding whose shown evidence (the `--evidence` events `hunt` shows:
`deepids.hunting.hunt.evidence_rows`) holds an attack event of that recording, and which recordings have none in the
top `--top`. Findings are ranked as `hunt` ranks them (`deepids.hunting.hunt.rank_windows`: scores
within the model's resolution / 10 tie, and among ties a new host and time comes before the
continuation of a higher finding); `--ties names` ranks by score, then entity name, as before that
rule. Writes JSON to bench/results/hunt_all.json.
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

from bench.hunt_loro import DEFAULT_OTRF, LABELS
from deepids.features.events import EventContext, context_score
from deepids.hunting.hunt import evidence_rows, group_scores, rank_windows, window_scores
from deepids.hunting.logs import LogFeatures, fit_log_model
from deepids.io.logs import read_events
from deepids.io.otrf import read_otrf_index, recording_agents
from deepids.models.rarity import SCORE_RESOLUTION

TOP_K = 10   # hunt's default: a finding's score is the mean of its 10 highest event scores


def evidence_ranks(events, score, labels, by: str, top: int, evidence: int,
                   tolerance: float | None) -> tuple[dict, list]:
    """(recording -> best rank (1-based) of a finding whose evidence holds one of its attack events,
    the top findings: entity, window, score, the recordings of their evidence and its attack events).
    Ranked as `hunt` ranks (`rank_windows`, ties within `tolerance`); `tolerance=None`: by score,
    then entity name and window start (the order before the tie-break)."""
    groups = (group_scores(events, score, by=by) if by in ("tree", "process")
              else window_scores(events, score, by=by, window="5m"))
    ranked = (groups.sort(["score", "entity", "window_start"], descending=[True, False, False]) if tolerance is None
              else rank_windows(groups, tolerance=tolerance))
    files = events.get_column("source_file").to_numpy()
    best: dict = {}
    head = []
    for rank, row in enumerate(ranked.iter_rows(named=True), start=1):
        rows = np.asarray(row["rows"])
        shown = evidence_rows(events, rows, score, evidence)
        for r in shown[labels[shown] == 1]:
            best.setdefault(files[r], rank)
        if rank <= top:
            head.append({"rank": rank, "entity": row["entity"], "window_start": str(row["window_start"]),
                         "score": round(float(row["score"]), 5), "events": int(row["events"]),
                         "evidence_recordings": sorted(set(files[shown].tolist())),
                         "evidence_attack_events": int(labels[shown].sum())})
    return best, head


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--otrf", type=Path, default=DEFAULT_OTRF)
    ap.add_argument("--model", choices=("event-rarity", "gan", "dense-ae", "context-rarity"), default="event-rarity",
                    help="event-rarity: the default of deepids train on logs; context-rarity: "
                         "deepids.features.events.context_score of the fitted context (weight 3)")
    ap.add_argument("--by", default="tree,host", help="comma-separated: tree, process, host, user")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--evidence", type=int, default=10)
    ap.add_argument("--ties", choices=("hunt", "names"), default="hunt",
                    help="hunt: rank as deepids hunt does (deepids.hunting.hunt.rank_windows: scores within the "
                         "model's resolution / 10 tie, a new host and time first); names: by score, then entity "
                         "name (the order before that tie-break)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--events-cache", type=Path, default=None, help="as bench.hunt_loro")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hunt_all.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
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
    train_mask = ~np.isin(files, [r.name for r in index if r.is_empire])
    from deepids.models import MODELS

    t = time.time()
    train_events = events.filter(pl.Series(train_mask))
    if args.model == "context-rarity":
        context = EventContext.fit(train_events)
    else:
        model = fit_log_model(MODELS[args.model](seed=args.seed, verbose=False), train_events)
    train_s = time.time() - t
    t = time.time()
    if args.model == "context-rarity":
        parts = context.keys(events)
        features, processes = context.features_from(parts), EventContext.processes(parts)
        score = context_score(features)
    else:
        features, processes = LogFeatures(model).with_processes(events)
        score = model.score_records(features).score.astype(np.float64)
    score_s = time.time() - t
    hunted = events.with_columns(processes)
    resolution = (SCORE_RESOLUTION if args.model == "context-rarity"
                  else getattr(model, "score_resolution", 0.0))
    tolerance = None if args.ties == "names" else resolution / TOP_K
    given = sys.argv[1:] if argv is None else list(argv)
    results = {"command": "python -m bench.hunt_all " + " ".join(given), "model": args.model,
               "top": args.top, "evidence": args.evidence, "ties": args.ties, "tie_tolerance": tolerance,
               "train_events": int(train_mask.sum()),
               "train_recordings": "the non-Empire recordings", "hunted_events": events.height,
               "recordings": len(index), "train_seconds": round(train_s, 1),
               "features_and_score_seconds": round(score_s, 1), "cpu_count": os.cpu_count(),
               "host": "shared 2-core development machine, loaded by other work", "loadavg_before": load_before,
               "by": {}}
    for by in [b for b in args.by.split(",") if b]:
        results["by"][by] = {}
        for d in labels:
            best, head = evidence_ranks(hunted, score, labels[d], by, args.top, args.evidence, tolerance)
            per = {r.name: best.get(r.name) for r in labelled}
            missed = sorted(k for k, v in per.items() if v is None or v > args.top)
            results["by"][by][d] = {"best_rank_per_recording": per, f"in_top{args.top}": len(per) - len(missed),
                                    "recordings": len(per), "missed": missed, "top_findings": head}
            print(f"{by}, {d} labels: {len(per) - len(missed)}/{len(per)} Empire recordings have an attack event as "
                  f"evidence in the top {args.top} findings; missed: {missed}", flush=True)
    results["seconds"] = round(time.time() - started, 1)
    results["loadavg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
