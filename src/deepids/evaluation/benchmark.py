"""`deepids benchmark`: every model trained and tested on the same split, one table.

Protocol (printed with the results):
- one split, fixed seed: stratified by label when only `--data` is given, or train on `--data`
  and test on `--test` (cross-dataset);
- exact duplicates (same features and label) are removed from the test set when they also
  occur in the training set, and counted;
- features, scalers and vocabularies are fitted on training rows only, inside each model;
- unsupervised detectors see benign training rows only; classifiers see all training rows.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from deepids.errors import ConfigError, InputError
from deepids.evaluation.metrics import detection_metrics, family_metrics, names_families
from deepids.features.preprocess import feature_columns
from deepids.io import read_flows
from deepids.io.schema import BENIGN, LABEL

DEFAULT_MODELS = ("lstm-ae", "lstm-ae-ensemble", "dense-ae", "iforest", "dnn", "cnn", "random-forest", "two-stage")
QUICK_EPOCHS = 3
log = logging.getLogger(__name__)


@dataclass
class BenchmarkResult:
    protocol: dict
    models: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)      # model -> (labels, scores, threshold, predicted)

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "models": self.models}


def peak_rss_reset() -> None:
    """Reset the kernel's peak-RSS mark of this process (Linux); harmless elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def remove_leaked_duplicates(train: pl.DataFrame, test: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop test rows whose features and label also occur in training; returns (test, how many)."""
    cols = [c for c in feature_columns(train) if c in test.columns] + ([LABEL] if LABEL in test.columns else [])
    key = pl.concat_str([pl.col(c).cast(pl.Utf8).fill_null("∅") for c in cols], separator="|")
    seen = set(train.select(key.alias("k")).to_series().to_list())
    keys = test.select(key.alias("k")).to_series()
    leaked = keys.is_in(list(seen)).to_numpy()
    return test.filter(pl.Series(~leaked)), int(leaked.sum())


def model_params(name: str, cls, *, quick: bool, sequence_length: int, seed: int, verbose: bool) -> dict:
    accepted = set(cls._param_names())
    options = {"seed": seed, "verbose": verbose, "sequence_length": sequence_length}
    if quick:
        options.update(epochs=QUICK_EPOCHS, n_members=3, n_estimators=50)
    if name == "two-stage":
        from deepids.models import MODELS

        stage_one = MODELS[cls().detector]          # the class's own stage one: only what it accepts
        options["detector_params"] = {k: v for k, v in {"sequence_length": sequence_length,
                                                         **({"epochs": QUICK_EPOCHS} if quick else {})}.items()
                                      if k in stage_one._param_names()}
        if quick:
            options["classifier_params"] = {"epochs": QUICK_EPOCHS}
    return {k: v for k, v in options.items() if k in accepted}


def run_benchmark(data, out_dir: Path, *, test=None, models=None, quick: bool = False, seed: int = 0,
                  test_fraction: float = 0.3, sequence_length: int | None = None, layout: str | None = None,
                  label_column: str | None = None, verbose: bool = True, info=None) -> BenchmarkResult:
    from deepids.datasets import holdout_split
    from deepids.models import MODELS

    info = info or log.info          # the caller's lines (the CLI prints them), else this module's logger

    data = list(data) if isinstance(data, (list, tuple)) else [data]
    test = None if test is None else (list(test) if isinstance(test, (list, tuple)) else [test])
    names = list(models or [m for m in DEFAULT_MODELS if m in MODELS])
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(MODELS)}")
    table, report = read_flows(data, layout=layout, label_column=label_column)
    if LABEL not in table.columns:
        raise InputError("benchmark needs labelled data (name the label column with --label-column)")
    if test is not None:
        train = table
        test_table, test_report = read_flows(test, layout=layout, label_column=label_column)
        if LABEL not in test_table.columns:
            raise InputError("the --test data has no labels")
        split = f"train on {', '.join(map(str, data))}; test on {', '.join(map(str, test))}"
    else:
        train, test_table = holdout_split(table, test_fraction=test_fraction, seed=seed)
        test_report = None
        split = f"stratified {100 * (1 - test_fraction):.0f}/{100 * test_fraction:.0f} split by label, seed {seed}"
    test_table, leaked = remove_leaked_duplicates(train, test_table)
    ordered = any(c in table.columns for c in ("src_ip", "timestamp"))
    if sequence_length is None:
        sequence_length = 10 if ordered else 1
    protocol = {
        "split": split, "seed": seed, "train_records": train.height, "test_records": test_table.height,
        "test_duplicates_of_training_rows_removed": leaked,
        "records_rejected_by_reader": report.n_rejected + (test_report.n_rejected if test_report else 0),
        "train_labels": dict(train.group_by(LABEL).len().sort("len", descending=True).iter_rows()),
        "test_labels": dict(test_table.group_by(LABEL).len().sort("len", descending=True).iter_rows()),
        "fitting": "features, scalers and vocabularies fitted on training rows only, inside each model",
        "unsupervised": "detectors see benign training rows only",
        "sequence_length": sequence_length,
        "sequence_note": ("records carry src_ip/timestamp: windows of each source's recent flows" if ordered else
                          "records carry no src_ip or timestamp, so windows hold one record"),
        "quick": quick,
    }
    result = BenchmarkResult(protocol=protocol)
    y_test = test_table.get_column(LABEL).to_numpy().astype(object)
    for name in names:
        cls = MODELS[name]
        info(f"[{names.index(name) + 1}/{len(names)}] {name}")
        model = cls(**model_params(name, cls, quick=quick, sequence_length=sequence_length, seed=seed,
                                   verbose=verbose))
        metrics, scores = _measure(model, train, test_table, y_test)
        result.models[name] = metrics
        result.scores[name] = (y_test, scores.score, model.threshold_.value, scores.predicted)
        info(f"    ROC-AUC {_fmt(metrics['roc_auc'])}  F1 {metrics['f1']:.4f}  accuracy {metrics['accuracy']:.4f}  "
             f"{metrics['train_seconds']:.1f}s")
    write_outputs(result, out_dir)
    return result


def _measure(model, train: pl.DataFrame, test_table: pl.DataFrame, y_test: np.ndarray) -> tuple[dict, object]:
    """Fit `model` on `train`, score `test_table`: (its metrics with times and peak memory, its scores)."""
    from deepids.models.supervised import BaseClassifier

    binary = (y_test != BENIGN).astype(int)
    peak_rss_reset()
    started = time.perf_counter()
    model.fit(train)
    train_seconds = time.perf_counter() - started
    train_peak = peak_rss_mb()
    started = time.perf_counter()
    scores = model.score_records(test_table)
    score_seconds = time.perf_counter() - started
    is_classifier = isinstance(model, BaseClassifier)
    loss = scores.loss
    if is_classifier:              # log loss of P(attack) against the truth
        p = np.clip(scores.score.astype(np.float64), 1e-7, 1 - 1e-7)
        loss = -(binary * np.log(p) + (1 - binary) * np.log(1 - p))
    metrics = detection_metrics(y_test, scores.score, model.threshold_.value, loss)
    if names_families(scores.predicted):
        metrics.update(family_metrics(y_test, scores.predicted, min_support=10))
        if model.model_name == "two-stage":
            flagged = (scores.score > model.threshold_.value) & (binary == 1)
            stage_two = family_metrics(y_test[flagged], scores.predicted[flagged], min_support=10)
            metrics["stage_two_on_flagged_attacks"] = {"records": int(flagged.sum()),
                                                       "macro_f1": stage_two["macro_f1"]}
    metrics.update({
        "kind": "classifier" if is_classifier else "detector",
        "train_seconds": round(train_seconds, 2),
        "scoring_records_per_second": round(test_table.height / max(score_seconds, 1e-9), 1),
        "peak_rss_mb": None if train_peak is None else round(max(train_peak, peak_rss_mb() or 0), 1),
        "threshold_method": model.threshold_.method,
        "hyperparameters": {k: v for k, v in model.get_params().items() if k != "verbose"},
    })
    return metrics, scores


def _fmt(v, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def results_markdown(result: BenchmarkResult) -> str:
    p = result.protocol
    lines = ["# deepids benchmark", "", "## Protocol", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in p.items() if k not in ("train_labels", "test_labels")]
    lines += [f"- test labels: {', '.join(f'{k} {v:,}' for k, v in p['test_labels'].items())}", ""]
    lines += ["## Results (per record, on the test set)", "",
              "| model | Accuracy | Loss | Recall | Precision | F-measure | ROC-AUC | PR-AUC | macro-F1 (families) | "
              "train s | scoring rows/s | peak RSS MB |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in result.models.items():
        lines.append(
            f"| {name} | {100 * m['accuracy']:.2f} % | {_fmt(m['loss'])} | {100 * m['recall']:.2f} % | "
            f"{100 * m['precision']:.2f} % | {100 * m['f1']:.2f} % | {_fmt(m['roc_auc'])} | {_fmt(m['pr_auc'])} | "
            f"{_fmt(m.get('macro_f1'), 3)} | {m['train_seconds']:.1f} | {m['scoring_records_per_second']:,.0f} | "
            f"{_fmt(m['peak_rss_mb'], 0)} |")
    labels = [k for k in result.protocol["test_labels"] if k != BENIGN]
    lines += ["", "## Recall per attack label (false-positive rate for benign)", "",
              "| model | benign FPR | " + " | ".join(labels) + " |", "| --- | ---: | " + " | ".join("---:" for _ in labels) + " |"]
    for name, m in result.models.items():
        per = m["per_label"]
        row = [f"{100 * per[BENIGN]['false_positive_rate']:.2f} %" if BENIGN in per else "n/a"]
        row += [f"{100 * per[label]['detection_rate']:.1f} %" if label in per else "n/a" for label in labels]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    two = result.models.get("two-stage")
    if two and "stage_two_on_flagged_attacks" in two:
        s2 = two["stage_two_on_flagged_attacks"]
        lines += ["", f"Two-stage: stage one flags at its threshold; stage two names the families of the "
                      f"{s2['records']:,} attack records stage one flagged with macro-F1 {_fmt(s2['macro_f1'], 3)} "
                      f"(end to end, over all test records: {_fmt(two.get('macro_f1'), 3)})."]
    lines += ["", "Loss: mean squared reconstruction error for autoencoders, log loss of P(attack) for "
                  "classifiers, none for the isolation forest. Thresholds: the 99th percentile of benign "
                  "validation scores for detectors, P(attack) > 0.5 for classifiers.", ""]
    return "\n".join(lines)


def write_outputs(result: BenchmarkResult, out_dir: Path) -> list[Path]:
    from deepids.evaluation.report import write_plots, write_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result.to_dict(), indent=2, default=_default) + "\n")
    (out_dir / "results.md").write_text(results_markdown(result))
    plots = write_plots(result, out_dir)
    write_report(result, out_dir, plots, results_markdown(result))
    return [out_dir / "results.json", out_dir / "results.md", out_dir / "report.html", *plots]


def _default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, Path)):
        return list(obj) if isinstance(obj, tuple) else str(obj)
    raise TypeError(type(obj).__name__)


