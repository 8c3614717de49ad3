"""`deepids demo`: the whole flow path on the real CICIDS2017 sample bundled with the repository."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from deepids.datasets import CROSS, SAMPLE, holdout_split, samples_dir

log = logging.getLogger(__name__)


def run_demo(out_dir: Path, *, epochs: int = 20, verbose: bool = True, print_metrics=None, info=None) -> dict:
    """The demo; `info` receives its progress lines (default: this module's logger at INFO)."""
    from deepids.evaluation import detection_metrics, plot_detection
    from deepids.io import read_flows
    from deepids.models import LSTMAutoencoder, load_model

    info = info or log.info

    samples = samples_dir()
    table, report = read_flows(samples / SAMPLE)
    info(f"read {report.records:,} records from {SAMPLE} ({report.layout}), rejected {report.n_rejected}")
    train, test = holdout_split(table)
    info(f"split 70/30 by label: {train.height:,} records to train on (attacks left out), "
         f"{test.height:,} held out for evaluation")
    info("the sample is shuffled and has no IPs or timestamps, so each window holds one flow (--sequence-length 1);"
         " on time-ordered captures use windows of 10")
    model = LSTMAutoencoder(sequence_length=1, epochs=epochs, verbose=verbose)
    model.fit(train)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model")
    model = load_model(out_dir / "model")

    result = model.score_records(test)
    metrics = detection_metrics(test.get_column("label").to_numpy(), result.score, model.threshold_.value,
                                result.loss)
    if print_metrics:
        print_metrics(metrics, title=f"LSTM autoencoder on {test.height:,} held-out CICIDS2017 flows")
    plots = plot_detection(test.get_column("label").to_numpy(), result.score, model.threshold_.value,
                           out_dir / "plots", title="LSTM-AE, held-out CICIDS2017 sample")

    cross_table, _ = read_flows(samples / CROSS)
    cross = model.score_records(cross_table)
    cross_metrics = detection_metrics(cross_table.get_column("label").to_numpy(), cross.score,
                                      model.threshold_.value, cross.loss)
    if print_metrics:
        print_metrics(cross_metrics, title=f"same model on {cross_table.height:,} CSE-CIC-IDS2018 flows (cross-dataset)")
    doc = {"cicids2017_holdout": metrics, "cse_cic_ids2018": cross_metrics, "model": str(out_dir / "model")}
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n")
    info(f"wrote {out_dir / 'model'}, {out_dir / 'metrics.json'}, " + ", ".join(str(p) for p in plots))
    return doc
