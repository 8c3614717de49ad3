"""Features: fitted on training data only, saved with the model."""

from deepids.features.preprocess import FlowPreprocessor, feature_columns, signed_log1p
from deepids.features.windows import EntityHistory, window_order, windows_by_entity

__all__ = ["FlowPreprocessor", "feature_columns", "signed_log1p", "EntityHistory", "window_order",
           "windows_by_entity"]
