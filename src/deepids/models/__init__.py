"""Models: each keeps its pure torch module apart from the estimator users build."""

from pathlib import Path

from deepids.errors import ModelFormatError
from deepids.models.base import BaseDetector, Scores, read_model_document
from deepids.models.dense_ae import DenseAutoencoder
from deepids.models.lstm_ae import LSTMAutoencoder, LSTMAutoencoderNet
from deepids.models.supervised import BaseClassifier, CNNClassifier, DNNClassifier

MODELS: dict[str, type[BaseDetector]] = {
    LSTMAutoencoder.model_name: LSTMAutoencoder,
    DenseAutoencoder.model_name: DenseAutoencoder,
    DNNClassifier.model_name: DNNClassifier,
    CNNClassifier.model_name: CNNClassifier,
}


def load_model(path: str | Path) -> BaseDetector:
    """Load a saved model directory (JSON + safetensors; nothing is unpickled)."""
    doc, tensors = read_model_document(path)
    by_class = {cls.__name__: cls for cls in MODELS.values()}
    cls = by_class.get(doc["class"])
    if cls is None:
        raise ModelFormatError(f"{path}: unknown model class {doc['class']!r}")
    try:
        return cls._from_document(doc, tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"{path} is damaged: {type(exc).__name__}: {exc}") from None


__all__ = ["MODELS", "BaseDetector", "BaseClassifier", "Scores", "LSTMAutoencoder", "LSTMAutoencoderNet", "DenseAutoencoder",
           "DNNClassifier", "CNNClassifier", "load_model"]
