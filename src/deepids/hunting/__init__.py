"""Threat hunting on event logs: ranked entity windows with evidence, and the HTML report."""

from deepids.hunting.hunt import EVIDENCE_FIELDS, HuntResult, hunt, window_scores
from deepids.hunting.report import write_hunt_report

__all__ = ["EVIDENCE_FIELDS", "HuntResult", "hunt", "window_scores", "write_hunt_report"]
