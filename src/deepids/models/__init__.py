"""Models: each keeps its pure torch module apart from the estimator users build."""

from pathlib import Path

from deepids.errors import ModelFormatError
from deepids.models.base import BaseDetector, Scores, read_model_document
from deepids.models.context import ContextDetector
from deepids.models.classic import IsolationForestDetector, RandomForestFlowClassifier
from deepids.models.dense_ae import DenseAutoencoder
from deepids.models.ensemble import LSTMAutoencoderEnsemble
from deepids.models.gan import GANDetector
from deepids.models.lstm_ae import LSTMAutoencoder, LSTMAutoencoderNet
from deepids.models.supervised import BaseClassifier, CNNClassifier, DNNClassifier
from deepids.models.two_stage import TwoStageDetector

MODELS: dict[str, type[BaseDetector]] = {
    LSTMAutoencoder.model_name: LSTMAutoencoder,
    DenseAutoencoder.model_name: DenseAutoencoder,
    LSTMAutoencoderEnsemble.model_name: LSTMAutoencoderEnsemble,
    DNNClassifier.model_name: DNNClassifier,
    CNNClassifier.model_name: CNNClassifier,
    RandomForestFlowClassifier.model_name: RandomForestFlowClassifier,
    IsolationForestDetector.model_name: IsolationForestDetector,
    TwoStageDetector.model_name: TwoStageDetector,
    GANDetector.model_name: GANDetector,
    ContextDetector.model_name: ContextDetector,
}


def model_from_document(doc: dict, tensors: dict, where: str = "model") -> BaseDetector:
    """Rebuild a model from its document and tensors (as `BaseDetector.to_document` made them)."""
    by_class = {cls.__name__: cls for cls in MODELS.values()}
    cls = by_class.get(doc.get("class"))
    if cls is None:
        raise ModelFormatError(f"{where}: unknown model class {doc.get('class')!r}")
    try:
        return cls._from_document(doc, tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"{where} is damaged: {type(exc).__name__}: {exc}") from None


def load_model(path: str | Path) -> BaseDetector:
    """Load a saved model directory (JSON + safetensors; nothing is unpickled)."""
    doc, tensors = read_model_document(path)
    return model_from_document(doc, tensors, str(path))


__all__ = ["MODELS", "BaseDetector", "BaseClassifier", "Scores", "LSTMAutoencoder", "LSTMAutoencoderNet", "DenseAutoencoder", "LSTMAutoencoderEnsemble",
           "DNNClassifier", "CNNClassifier", "TwoStageDetector", "RandomForestFlowClassifier",
           "IsolationForestDetector", "GANDetector", "ContextDetector", "load_model", "model_from_document"]
