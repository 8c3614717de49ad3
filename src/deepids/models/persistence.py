"""The saved-model format, read as if it came from a stranger.

A saved model is a directory: `model.json` (format version, class, hyperparameters, feature
schema, preprocessing state, threshold and its provenance, training summary) and
`weights.safetensors`. Reading never unpickles, and checks before it allocates:
- both files are regular files inside the directory (a symlink that leads out of it, a FIFO or
  a device is refused), `model.json` is at most `MAX_DOCUMENT_BYTES` and nested at most
  `MAX_DEPTH` deep;
- the safetensors header is read and checked by hand first (its declared length against the
  file, every tensor's dtype, shape and byte range) before the tensors are loaded;
- every floating-point weight is finite.
Each problem is one `ModelFormatError` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from deepids.errors import ModelFormatError

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 64
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def read_model_document(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and check a saved model directory: (document, tensors). Never unpickles."""
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"no model at {path}")
    if not path.is_dir():
        raise ModelFormatError(f"{path} is not a model directory (expected {MODEL_JSON} and {WEIGHTS} inside)")
    meta = _member_file(path, MODEL_JSON, f"{path} is not a deepids model: {MODEL_JSON} is missing")
    doc = _read_document(meta)
    weights = _member_file(path, WEIGHTS, f"{path} is damaged: {WEIGHTS} is missing")
    check_safetensors_header(weights)
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise ModelFormatError(f"{weights} is damaged: {exc}") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelFormatError(f"{weights} is damaged: tensor {name!r} holds NaN or infinite values")
    return doc, tensors


def _member_file(directory: Path, name: str, missing: str) -> Path:
    """`directory/name` if it is a regular file inside `directory` (a symlink may point within it)."""
    candidate = directory / name
    if not os.path.lexists(candidate):
        raise ModelFormatError(missing)
    resolved = candidate.resolve()
    if resolved.parent != directory.resolve():
        raise ModelFormatError(f"{candidate} leads out of the model directory (to {resolved}); refusing to read it")
    try:
        mode = os.stat(resolved).st_mode
    except OSError as exc:
        raise ModelFormatError(f"{candidate} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ModelFormatError(f"{candidate} is not a regular file")
    return resolved


def _read_document(meta: Path) -> dict:
    size = meta.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise ModelFormatError(f"{meta} is {size:,} bytes, more than a model document may be "
                               f"({MAX_DOCUMENT_BYTES:,})")
    try:
        doc = json.loads(meta.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{meta} is damaged: {exc}") from None
    except RecursionError:
        raise ModelFormatError(f"{meta} is damaged: nested deeper than {MAX_DEPTH} levels") from None
    if _depth(doc) > MAX_DEPTH:
        raise ModelFormatError(f"{meta} is damaged: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(doc, dict) or "format_version" not in doc or not isinstance(doc.get("class"), str):
        raise ModelFormatError(f"{meta} is damaged: format_version or class missing")
    version = doc["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFormatError(f"{meta} is damaged: format_version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise ModelFormatError(f"{meta.parent} was saved in model format {version}; this deepids reads format "
                               f"{FORMAT_VERSION} and older: upgrade deepids")
    for key in ("hyperparameters", "state"):
        if not isinstance(doc.get(key), dict):
            raise ModelFormatError(f"{meta} is damaged: '{key}' missing")
    if not isinstance(doc.get("training", {}) or {}, dict):
        raise ModelFormatError(f"{meta} is damaged: 'training' is not a mapping")
    return doc


def _depth(obj) -> int:
    """How deeply `obj` nests (without recursion: a document from a stranger may nest deeply)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def check_safetensors_header(path: Path) -> None:
    """Check a safetensors file's header before anything is allocated from it."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelFormatError(f"{path} is damaged: {size} bytes, shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise ModelFormatError(f"{path} is damaged: its header declares {n:,} bytes, the file has {size - 8:,}")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelFormatError(f"{path} is damaged: its header is not JSON") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{path} is damaged: its header is not a mapping")
    data_bytes = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        problem = _tensor_problem(info, data_bytes)
        if problem:
            raise ModelFormatError(f"{path} is damaged: tensor {name!r} {problem}")


def _tensor_problem(info, data_bytes: int) -> str | None:
    if not isinstance(info, dict) or info.get("dtype") not in DTYPE_BYTES:
        return "has an unknown dtype"
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        return "has no valid shape"
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        return "has no valid byte range"
    start, stop = offsets
    if not 0 <= start <= stop <= data_bytes:
        return f"reaches past the end of the file (bytes {start}..{stop} of {data_bytes})"
    if math.prod(shape) * DTYPE_BYTES[info["dtype"]] != stop - start:
        return f"declares shape {shape} but holds {stop - start} bytes"
    return None


def jsonable(obj):
    """`obj` with numpy values, tuples and paths turned into JSON types (non-finite floats -> None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if not math.isfinite(f) else f
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj
