"""Reading flow files into the canonical vocabulary of :mod:`deepids.io.schema`."""

from deepids.io.flows import (
    ReadReport,
    detect_layout,
    inspect_flows,
    iter_flow_batches,
    parse_timestamps,
    read_flows,
)
from deepids.io.labels import normalise_label, normalise_label_expr, normalise_labels

__all__ = [
    "ReadReport",
    "detect_layout",
    "read_flows",
    "iter_flow_batches",
    "inspect_flows",
    "parse_timestamps",
    "normalise_label",
    "normalise_labels",
    "normalise_label_expr",
]
