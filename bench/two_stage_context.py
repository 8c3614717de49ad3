"""Two-stage with and without entity context, leaving one attack family out, on a time-ordered
capture with source addresses (the project's lab capture by default).

Run: `python -m bench.two_stage_context` (about 10 minutes on a loaded 2-core machine)
     -> bench/results/two_stage_context.json and a markdown table on stdout.

Entity context (`deepids train --entity-context`) needs each flow's source address and time:
the bundled CICIDS2017 sample (MachineLearningCVE format) has neither, so this runs on
`data/lab/lab_flows.parquet` (15,762 flows, ordered by time; data/lab/README.md).

Protocol: a stratified 70/30 split by label, seed 0. For each configuration (stage one
supervised / hybrid, with / without entity context; novelty check: the default, embedding) the
model is trained on the training part, and once more without each attack family of at least
20 flows. The **whole capture is scored in time order**, as a sensor sees it, so a flow's
context holds every flow before it. Reported: end-to-end attack-family macro-F1 on the test
part; for each family left out, the share of its flows (all of them: the model never trained
on any) flagged as an attack or `unknown-anomaly`; false alarms per 10,000 benign test flows.
CLI defaults otherwise (`--context-seconds 60`, `--context-flows 20`). Nothing is chosen here:
this is a measurement, the default is chosen by `bench/two_stage.py`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from deepids.datasets import holdout_split
from deepids.evaluation.metrics import family_metrics
from deepids.features.families import UNKNOWN_ANOMALY, attack_families
from deepids.io import read_flows
from deepids.io.schema import BENIGN, LABEL
from deepids.models import TwoStageDetector
from deepids.models.context import ContextDetector

LAB = Path("data/lab/lab_flows.parquet")
MIN_FAMILY = 20
STAGE_ONES = ("supervised", "hybrid")
ROW = "__bench_row"


def _build(context: bool, params: dict):
    return ContextDetector(detector="two-stage", detector_params=params) if context else TwoStageDetector(**params)


def _measure(model, table: pl.DataFrame, labels: np.ndarray, is_test: np.ndarray) -> dict:
    """Per stage one: the names of every flow of `table`, scored in order."""
    two_stage = model.detector_ if isinstance(model, ContextDetector) else model
    out = {}
    for stage_one in STAGE_ONES:
        two_stage.stage_one = stage_one
        names = model.score_records(table).predicted
        out[stage_one] = {"names": names,
                          "false_alarms_per_10k": float(1e4 * (names[is_test & (labels == BENIGN)] != BENIGN).mean())}
    return out


def run(data: Path = LAB, *, quick: bool = False, seed: int = 0, info=print) -> dict:
    table, _ = read_flows(data)
    if not {"src_ip", "timestamp"} <= set(table.columns):
        raise SystemExit(f"{data}: entity context needs source addresses and time stamps")
    table = table.with_row_index(ROW)
    train, test = holdout_split(table, test_fraction=0.3, seed=seed)
    is_test = table.get_column(ROW).is_in(test.get_column(ROW).implode()).to_numpy()
    table, train = table.drop(ROW), train.drop(ROW)
    labels = table.get_column(LABEL).to_numpy().astype(object)
    fams = attack_families(labels)
    counts = dict(zip(*np.unique(fams[fams != BENIGN], return_counts=True)))
    families = sorted(f for f, n in counts.items() if n >= MIN_FAMILY)[:1 if quick else None]
    params = {"verbose": False, "seed": seed}
    if quick:
        params.update(detector_params={"epochs": 1}, classifier_params={"epochs": 1})
    train_fams = attack_families(train.get_column(LABEL).to_numpy())
    result = {}
    for context in (False, True):
        for left_out in [None, *families]:
            started = time.perf_counter()
            part = train if left_out is None else train.filter(pl.Series(train_fams != left_out))
            measured = _measure(_build(context, params).fit(part), table, fams, is_test)
            for stage_one, m in measured.items():
                entry = result.setdefault(f"{stage_one}{' + entity context' if context else ''}", {"lofo": {}})
                if left_out is None:
                    fm = family_metrics(labels[is_test], m["names"][is_test], min_support=10)
                    entry["end_to_end"] = {"macro_f1": fm["macro_f1"],
                                           "false_alarms_per_10k": m["false_alarms_per_10k"]}
                else:
                    held = m["names"][fams == left_out]
                    entry["lofo"][left_out] = {"flows": len(held), "flagged": float((held != BENIGN).mean()),
                                               "unknown": float((held == UNKNOWN_ANOMALY).mean()),
                                               "false_alarms_per_10k": m["false_alarms_per_10k"]}
            info(f"  context={context} without {left_out}: {time.perf_counter() - started:.0f}s")
    return {"protocol": {"data": str(data), "split": f"stratified 70/30 by label, seed {seed}",
                         "scored": "the whole capture in time order; end to end on the test part",
                         "families_left_out": families, "benign_test_flows": int((is_test & (fams == BENIGN)).sum()),
                         "quick": quick, "host": "shared 2-core machine, timings not reported"},
            "results": result}


def markdown(result: dict) -> str:
    fams = result["protocol"]["families_left_out"]
    rows = ["| stage one | macro-F1 | false alarms /10k | "
            + " | ".join(f"without {f}: flagged (false alarms /10k)" for f in fams) + " | mean | min |",
            "| --- | ---: | ---: | " + " | ".join("---:" for _ in fams) + " | ---: | ---: |"]
    for key, entry in result["results"].items():
        e2e, lofo = entry["end_to_end"], [entry["lofo"][f] for f in fams]
        flagged = [x["flagged"] for x in lofo]
        rows.append(f"| {key} | {e2e['macro_f1']:.3f} | {e2e['false_alarms_per_10k']:.0f} | "
                    + " | ".join(f"{100 * x['flagged']:.1f} % ({x['false_alarms_per_10k']:.0f})" for x in lofo)
                    + f" | {100 * np.mean(flagged):.1f} % | {100 * min(flagged):.1f} % |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=LAB)
    parser.add_argument("--out", type=Path, default=Path("bench/results/two_stage_context.json"))
    parser.add_argument("--quick", action="store_true", help="1 epoch, one family: a smoke test, not a result")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args.data, quick=args.quick, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
