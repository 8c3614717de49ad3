"""Pictures of a detector's scores: ROC and PR curves, and benign vs attack score histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepids.io.schema import BENIGN


def plot_detection(labels: np.ndarray, scores: np.ndarray, threshold: float, out_dir: str | Path,
                   title: str = "") -> list[Path]:
    """Write roc_pr.png and score_histogram.png into out_dir; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, dtype=object)
    y = (labels != BENIGN).astype(int)
    written = []

    if 0 < y.sum() < len(y):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
        fpr, tpr, _ = roc_curve(y, scores)
        ax1.plot(fpr, tpr, lw=2, label=f"ROC-AUC {roc_auc_score(y, scores):.3f}")
        ax1.legend(loc="lower right")
        ax1.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
        ax1.set(xlabel="false-positive rate", ylabel="detection rate", title="ROC")
        prec, rec, _ = precision_recall_curve(y, scores)
        ax2.plot(rec, prec, lw=2, label=f"PR-AUC {average_precision_score(y, scores):.3f}")
        ax2.legend(loc="lower left")
        ax2.axhline(y.mean(), ls="--", c="grey", lw=1)
        ax2.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        written.append(out_dir / "roc_pr.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.2))
    s = np.asarray(scores, dtype=float)
    finite = s[np.isfinite(s)]
    bins = np.logspace(np.log10(max(finite.min(), 1e-4)), np.log10(max(finite.max(), 1e-3)), 60)
    ax.hist(np.clip(s[y == 0], bins[0], None), bins=bins, alpha=0.6, label=f"benign ({(y == 0).sum()})", density=True)
    if y.sum():
        ax.hist(np.clip(s[y == 1], bins[0], None), bins=bins, alpha=0.6, label=f"attack ({y.sum()})", density=True)
    ax.axvline(threshold, c="red", ls="--", label=f"threshold {threshold:.3g}")
    ax.set(xscale="log", xlabel="anomaly score", ylabel="density", title=title or "scores")
    ax.legend()
    fig.tight_layout()
    written.append(out_dir / "score_histogram.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written
