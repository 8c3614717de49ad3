import numpy as np
import pytest

from deepids.evaluation import detection_metrics, plot_detection


def test_metrics_count_records_and_per_label_rates():
    labels = np.array(["benign"] * 6 + ["PortScan"] * 3 + ["DDoS"] * 1, dtype=object)
    scores = np.array([0.1, 0.2, 0.1, 0.3, 0.9, 0.2, 0.8, 0.7, 0.1, 0.95])
    m = detection_metrics(labels, scores, threshold=0.5, loss=np.full(10, 0.25))
    assert m["n_records"] == 10 and m["n_attacks"] == 4
    assert m["confusion_matrix"]["matrix"] == [[5, 1], [1, 3]]
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.8) and m["loss"] == pytest.approx(0.25)
    assert m["per_label"]["PortScan"]["detection_rate"] == pytest.approx(2 / 3)
    assert m["per_label"]["benign"]["false_positive_rate"] == pytest.approx(1 / 6)
    assert 0.5 < m["roc_auc"] <= 1 and list(m["per_label"])[0] == "benign"


def test_metrics_without_attacks_report_no_auc():
    m = detection_metrics(np.array(["benign"] * 3, dtype=object), np.array([0.1, 0.2, 0.3]), 0.25)
    assert m["roc_auc"] is None and m["n_attacks"] == 0 and m["per_label"]["benign"]["flagged"] == 1


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array(["benign"] * 200 + ["DoS Hulk"] * 50, dtype=object)
    scores = np.r_[rng.exponential(0.2, 200), rng.exponential(1.0, 50)]
    paths = plot_detection(labels, scores, 0.5, tmp_path)
    assert [p.name for p in paths] == ["roc_pr.png", "score_histogram.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
