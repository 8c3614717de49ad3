"""The registry of model classes: name -> class, filled by the `register` decorator.

Model modules import `register` from here and nothing imports them back: composite models
(the ensemble, two stages) reach their members through `MODELS` and `model_from_document`
at fit or load time, and `deepids.models` imports every model module once so that the
registry is full whenever the package is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from deepids.errors import ConfigError, DeepidsError, ModelFormatError
from deepids.models.persistence import MODEL_JSON, read_model_document

if TYPE_CHECKING:
    from deepids.models.base import BaseDetector

MODELS: dict[str, type["BaseDetector"]] = {}
M = TypeVar("M")


def register(cls: M) -> M:
    """Class decorator: make a model available by its `model_name` (CLI, composites, loading)."""
    name = cls.model_name
    if not name or (name in MODELS and MODELS[name] is not cls):
        raise ValueError(f"cannot register {cls.__name__}: model name {name!r} is empty or taken")
    MODELS[name] = cls
    return cls


def model_class(name: str) -> type["BaseDetector"]:
    """The class registered as `name`; ConfigError listing the names otherwise."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name]


def model_from_document(doc: dict, tensors: dict, where: str = "model") -> "BaseDetector":
    """Rebuild a model from its document and tensors (as `BaseDetector.to_document` made them)."""
    by_class = {cls.__name__: cls for cls in MODELS.values()}
    cls = by_class.get(doc.get("class")) if isinstance(doc, dict) else None
    if cls is None:
        raise ModelFormatError(f"{where}: unknown model class {doc.get('class') if isinstance(doc, dict) else doc!r}")
    try:
        return cls._from_document(doc, tensors)
    except ModelFormatError:
        raise
    except DeepidsError as exc:
        raise ModelFormatError(f"{where} is damaged: {exc}") from None
    except KeyError as exc:
        raise ModelFormatError(f"{where} is damaged: {exc.args[0]!r} is missing") from None
    except (TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise ModelFormatError(f"{where} is damaged: {exc}") from None


def load_model(path: str | Path) -> "BaseDetector":
    """Load a saved model directory (JSON + safetensors; nothing is unpickled)."""
    doc, tensors = read_model_document(path)
    return model_from_document(doc, tensors, str(Path(path) / MODEL_JSON))
