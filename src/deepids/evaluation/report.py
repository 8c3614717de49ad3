"""Pictures and the one-page HTML report of a benchmark run."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from deepids.io.schema import BENIGN


def write_plots(result, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    written = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    for name, (labels, scores, _, _) in result.scores.items():
        y = (labels != BENIGN).astype(int)
        if not 0 < y.sum() < len(y):
            continue
        fpr, tpr, _ = roc_curve(y, scores)
        ax1.plot(fpr, tpr, lw=1.6, label=f"{name} ({roc_auc_score(y, scores):.3f})")
        prec, rec, _ = precision_recall_curve(y, scores)
        ax2.plot(rec, prec, lw=1.6, label=f"{name} ({average_precision_score(y, scores):.3f})")
    ax1.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax1.set(xlabel="false-positive rate", ylabel="detection rate", title="ROC (AUC)")
    ax2.set(xlabel="recall", ylabel="precision", title="precision-recall (AP)", ylim=(0, 1.02))
    ax1.legend(fontsize=8, loc="lower right")
    ax2.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    written.append(out_dir / "roc_pr.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    names = list(result.scores)
    cols = min(4, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        cm = np.asarray(result.models[name]["confusion_matrix"]["matrix"])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, f"{v:,}", ha="center", va="center", color="black" if v < cm.max() / 2 else "white")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["benign", "attack"], yticklabels=["benign", "attack"],
               xlabel="predicted", ylabel="true", title=name)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    written.append(out_dir / "confusion_matrices.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    detectors = [n for n in names if result.models[n]["kind"] == "detector"]
    if detectors:
        fig, axes = plt.subplots(1, len(detectors), figsize=(4.2 * len(detectors), 3.4), squeeze=False)
        for ax, name in zip(axes.flat, detectors):
            labels, scores, threshold, _ = result.scores[name]
            s = np.asarray(scores, dtype=float)
            bins = np.linspace(np.percentile(s, 0.5), np.percentile(s, 99.8), 60)
            ax.hist(np.clip(s[labels == BENIGN], bins[0], bins[-1]), bins=bins, alpha=0.6, density=True, label="benign")
            ax.hist(np.clip(s[labels != BENIGN], bins[0], bins[-1]), bins=bins, alpha=0.6, density=True, label="attack")
            ax.axvline(threshold, c="red", ls="--", lw=1, label="threshold")
            ax.set(title=name, xlabel="score")
            ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out_dir / "score_histograms.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def write_report(result, out_dir: Path, plots: list[Path], markdown: str) -> Path:
    """A self-contained HTML page: the protocol, the tables and the pictures (embedded)."""
    body = [_markdown_tables_to_html(markdown)]
    for path in plots:
        data = base64.b64encode(path.read_bytes()).decode()
        body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'
                    f"<figcaption>{html.escape(path.stem.replace('_', ' '))}</figcaption></figure>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>deepids benchmark</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0;font-size:14px}}td,th{{border:1px solid #ccc;padding:4px 8px}}
th{{background:#f0f3f7}}td{{text-align:right}}td:first-child{{text-align:left}}img{{max-width:100%}}
figcaption{{color:#666;font-size:13px}}</style></head><body>{''.join(body)}</body></html>"""
    out = out_dir / "report.html"
    from deepids.atomic import write_text

    write_text(out, page)          # whole or not at all, 0640
    return out


def _markdown_tables_to_html(markdown: str) -> str:
    out, in_table, in_list = [], False, False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            if not in_table:
                out.append("<table>")
                tag = "th"
                in_table = True
            else:
                tag = "td"
            out.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{html.escape(line[2:])}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        out.append("</table>")
    if in_list:
        out.append("</ul>")
    return "\n".join(out)
