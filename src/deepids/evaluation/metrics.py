"""Detection metrics over records (not windows): one score and one verdict per record."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from deepids.io.schema import BENIGN


def detection_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float,
                      loss: np.ndarray | None = None) -> dict:
    """Metrics of a detector on labelled records.

    `labels` are normalised label strings ("benign" or an attack name); a record is flagged
    when its score is above `threshold`. Keys: roc_auc, pr_auc, accuracy, precision, recall,
    f1, loss, threshold, n_records, n_attacks, per_label, confusion_matrix.
    """
    labels = np.asarray(labels, dtype=object)
    scores = np.asarray(scores, dtype=np.float64)
    y = (labels != BENIGN).astype(np.int64)
    pred = (scores > threshold).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = 0 < y.sum() < len(y)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_label = {}
    for name in sorted(set(labels.tolist()), key=lambda v: (v != BENIGN, v)):
        mask = labels == name
        flagged = int(pred[mask].sum())
        entry = {"records": int(mask.sum()), "flagged": flagged}
        if name == BENIGN:
            entry["false_positive_rate"] = flagged / int(mask.sum())
        else:
            entry["detection_rate"] = flagged / int(mask.sum())
        per_label[name] = entry
    return {
        "roc_auc": float(roc_auc_score(y, scores)) if both else None,
        "pr_auc": float(average_precision_score(y, scores)) if both else None,
        "accuracy": float((tp + tn) / len(y)) if len(y) else None,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "loss": float(np.mean(loss)) if loss is not None and len(loss) else None,
        "threshold": float(threshold),
        "n_records": int(len(y)),
        "n_attacks": int(y.sum()),
        "false_positive_rate": float(fp / (fp + tn)) if fp + tn else None,
        "per_label": per_label,
        "confusion_matrix": {"labels": ["benign", "attack"], "matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
                             "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }
