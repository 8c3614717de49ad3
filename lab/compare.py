"""Sequences per host vs one flow at a time on the lab data, and transfer to/from CICIDS2017.

    python lab/compare.py --lab data/lab_dense --out results/lab_compare_dense.json [--epochs 300 --patience 30 --seeds 0,1,2]

Protocol (time-ordered, no shuffling):

* train on the lab flows that start before the first attack (the benign-only period), test on
  every flow from the first attack on. Scores are computed over the whole time-ordered table so
  that a test flow's window holds that host's *preceding* flows (earlier flows are context,
  never labels); metrics are taken on the test flows only.
* LSTM-AE with windows of T=10 of each source host's recent flows (``entity=src_ip``), trained
  with the published objective (every step of the window) and with ``objective="last"`` (the
  newest step in its context), against the same network with T=1 (one flow at a time). Every
  model trains until early stopping (``--epochs`` is only a cap). ROC-AUC per attack kind = that
  attack's test flows vs the benign test flows; overall = all attacks vs benign.
* Ablation, inter-flow context: three columns computed by this script from each source host's
  previous flow (seconds since it started, same destination port, same destination address)
  are added to every model input, for T=1 and for T=10. deepids' own feature pipeline does not
  compute them (yet): they show what timing between flows adds, not a shipped feature.
* Transfer: the T=1 model trained on the benign rows of the bundled CICIDS2017 sample scores the
  lab test flows, and the T=1 model trained on the lab's benign time scores the CICIDS2017 sample.
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
from deepids.models.lstm_ae import LSTMAutoencoder


def aucs(labels: np.ndarray, scores: np.ndarray) -> dict:
    benign = labels == "benign"
    out = {"overall": _auc(~benign, scores), "per_attack": {}}
    for name in sorted(set(labels[~benign].tolist())):
        m = benign | (labels == name)
        out["per_attack"][name] = {"roc_auc": _auc(labels[m] == name, scores[m]), "flows": int((labels == name).sum())}
    out["benign_flows"] = int(benign.sum())
    return out


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    if y.all() or not y.any():
        return None
    s = np.nan_to_num(s, nan=np.nanmax(s[np.isfinite(s)]) if np.isfinite(s).any() else 0.0, posinf=1e30)
    return round(float(roc_auc_score(y, s)), 4)


def with_context(flows: pl.DataFrame) -> pl.DataFrame:
    """Three inter-flow columns from each source host's previous flow (the table is time-ordered)."""
    start = pl.col("timestamp").dt.epoch("us") / 1e6
    prev = lambda c: c.shift(1).over("src_ip")    # noqa: E731
    return flows.with_columns(
        (start - prev(start)).fill_null(600.0).alias("Host Flow Gap"),
        (pl.col("dst_port") == prev(pl.col("dst_port"))).fill_null(False).cast(pl.Float64).alias("Host Same Dst Port"),
        (pl.col("dst_ip") == prev(pl.col("dst_ip"))).fill_null(False).cast(pl.Float64).alias("Host Same Dst IP"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lab", type=Path, default=Path("data/lab"))
    ap.add_argument("--cic", type=Path, default=Path("data/samples/cicids2017/cicids2017_sample.csv.gz"))
    ap.add_argument("--out", type=Path, default=Path("results/lab_compare.json"))
    ap.add_argument("--epochs", type=int, default=300, help="cap on epochs; early stopping ends training")
    ap.add_argument("--patience", type=int, default=30)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    manifest = json.loads((args.lab / "manifest.json").read_text())
    first = min(e["start"] for e in manifest["schedule"] if e["start"])
    cut = datetime.fromtimestamp(first, timezone.utc).replace(tzinfo=None)
    lab, _ = read_flows(args.lab / "lab_flows.parquet")
    lab = lab.sort("timestamp", maintain_order=True)
    train = lab.filter(pl.col("timestamp") < cut)
    is_test = (lab["timestamp"] >= cut).to_numpy()
    test_labels = lab["label"].to_numpy()[is_test]
    assert (train["label"] == "benign").all()
    cic, _ = read_flows(args.cic)
    result = {"protocol": __doc__.split("Protocol")[1].strip(), "lab_flows": lab.height, "train_flows": train.height,
              "test_flows": int(is_test.sum()), "epochs": args.epochs, "patience": args.patience, "seeds": seeds,
              "cpu_count": os.cpu_count(), "loadavg_before": list(os.getloadavg()), "runs": {}}

    def run(name, make, fit_on, score_on, labels, mask=None):
        rows = []
        for seed in seeds:
            t = time.perf_counter()
            model = make(seed)
            model.fit(fit_on)
            s = model.score_records(score_on).score
            if mask is not None:
                s = s[mask]
            rows.append({"seed": seed, **aucs(labels, s), "seconds": round(time.perf_counter() - t, 1)})
            print(name, seed, rows[-1]["overall"], {k: v["roc_auc"] for k, v in rows[-1]["per_attack"].items()},
                  flush=True)
        kinds = rows[0]["per_attack"].keys()
        result["runs"][name] = {
            "seeds": rows,
            "mean_overall": round(float(np.mean([r["overall"] for r in rows])), 4),
            "mean_per_attack": {k: round(float(np.mean([r["per_attack"][k]["roc_auc"] for r in rows])), 4) for k in kinds},
        }

    common = dict(epochs=args.epochs, verbose=False, patience=args.patience)
    context = with_context(lab)
    train_ctx = context.filter(pl.col("timestamp") < cut)
    for name, table, fit_on, kw in [
        ("lab: LSTM-AE T=1", lab, train, dict(sequence_length=1, entity=None)),
        ("lab: LSTM-AE T=10 per src_ip, objective window (published)", lab, train,
         dict(sequence_length=10, objective="window")),
        ("lab: LSTM-AE T=10 per src_ip, objective last", lab, train, dict(sequence_length=10, objective="last")),
        ("ablation: T=1 + inter-flow context", context, train_ctx, dict(sequence_length=1, entity=None)),
        ("ablation: T=10 per src_ip, objective last + inter-flow context", context, train_ctx,
         dict(sequence_length=10, objective="last")),
    ]:
        run(name, lambda s, kw=kw: LSTMAutoencoder(seed=s, **kw, **common), fit_on, table, test_labels, is_test)
    cic_benign = cic.filter(pl.col("label") == "benign")
    run("transfer: CICIDS2017 sample (benign) -> lab test, T=1",
        lambda s: LSTMAutoencoder(sequence_length=1, entity=None, seed=s, **common), cic_benign, lab, test_labels, is_test)
    run("transfer: lab benign time -> CICIDS2017 sample, T=1",
        lambda s: LSTMAutoencoder(sequence_length=1, entity=None, seed=s, **common), train, cic, cic["label"].to_numpy())
    result["loadavg_after"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
