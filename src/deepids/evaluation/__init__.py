"""Evaluation: consumers of scores; they never reach into a model's internals."""

from deepids.evaluation.metrics import detection_metrics, family_metrics
from deepids.evaluation.plots import plot_detection

__all__ = ["detection_metrics", "family_metrics", "plot_detection"]
