"""Models: each keeps its pure torch module apart from the estimator users build.

Importing this package imports every model module, and each registers itself in
`deepids.models.registry.MODELS` (see `registry.py`); nothing here is needed by the models.
"""

# the order of these imports is the registry's order (the CLI lists models in it)
from deepids.models.lstm_ae import LSTMAutoencoder, LSTMAutoencoderNet  # noqa: I001
from deepids.models.dense_ae import DenseAutoencoder
from deepids.models.ensemble import LSTMAutoencoderEnsemble
from deepids.models.supervised import BaseClassifier, CNNClassifier, DNNClassifier
from deepids.models.classic import IsolationForestDetector, RandomForestFlowClassifier
from deepids.models.two_stage import TwoStageDetector
from deepids.models.gan import GANDetector
from deepids.models.rarity import EventRarityDetector
from deepids.models.context import ContextDetector
from deepids.models.base import BaseDetector, Scores
from deepids.models.registry import MODELS, load_model, model_from_document

__all__ = ["MODELS", "BaseDetector", "BaseClassifier", "Scores", "LSTMAutoencoder", "LSTMAutoencoderNet", "DenseAutoencoder", "LSTMAutoencoderEnsemble",
           "DNNClassifier", "CNNClassifier", "TwoStageDetector", "RandomForestFlowClassifier",
           "IsolationForestDetector", "GANDetector", "EventRarityDetector", "ContextDetector", "load_model", "model_from_document"]
