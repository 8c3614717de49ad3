"""deepids: deep-learning intrusion and anomaly detection for network flows and host logs.

    from deepids import read_flows, LSTMAutoencoder, load_model
    table, report = read_flows("Friday.csv")
    model = LSTMAutoencoder().fit(table)          # attack rows, when labelled, are left out
    scores = model.score_samples(table)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module; imported on first use so `import deepids` stays light
_EXPORTS = {
    "read_flows": "deepids.io", "iter_flow_batches": "deepids.io", "inspect_flows": "deepids.io",
    "detect_layout": "deepids.io", "ReadReport": "deepids.io",
    "FlowPreprocessor": "deepids.features", "windows_by_entity": "deepids.features",
    "LSTMAutoencoder": "deepids.models", "load_model": "deepids.models", "MODELS": "deepids.models",
    "Threshold": "deepids.thresholds", "calibrate_threshold": "deepids.thresholds",
    "detection_metrics": "deepids.evaluation", "plot_detection": "deepids.evaluation",
    "score_files": "deepids.scoring", "collect_scores": "deepids.scoring",
    "DeepidsError": "deepids.errors", "InputError": "deepids.errors", "SchemaError": "deepids.errors",
    "ModelFormatError": "deepids.errors", "ConfigError": "deepids.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deepids' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
