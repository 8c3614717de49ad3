"""Detection metrics over records (not windows): one score and one verdict per record."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from deepids.features.families import attack_families
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


def family_metrics(labels: np.ndarray, predicted: np.ndarray, min_support: int = 1) -> dict:
    """How well a model names what it sees: `macro_f1` over the attack families present in
    `labels` (with at least `min_support` records), and `per_family` precision, recall, F1,
    support (benign included, for reference). `predicted` holds class or family names."""
    truth = attack_families(labels)
    pred = attack_families(predicted)
    per_family = {}
    for fam in sorted(set(truth.tolist()), key=lambda f: (f != BENIGN, f)):
        tp = int(((truth == fam) & (pred == fam)).sum())
        support = int((truth == fam).sum())
        flagged = int((pred == fam).sum())
        precision = tp / flagged if flagged else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_family[fam] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    attacks = [f for f, m in per_family.items() if f != BENIGN and m["support"] >= min_support]
    return {"macro_f1": float(np.mean([per_family[f]["f1"] for f in attacks])) if attacks else None,
            "macro_f1_families": attacks, "per_family": per_family}


def names_families(predicted: np.ndarray | None) -> bool:
    """Whether a model's predicted names are attack families (not just benign/attack)."""
    return predicted is not None and bool(set(np.unique(predicted).tolist()) - {BENIGN, "attack"})
