"""The state file of `deepids stream --follow`: where to resume after a crash, a kill -9 or a reboot.

Like Filebeat's registry, it names the file being read by identity (device, inode and a hash
of its first bytes, `follow.FileId`) and the byte offset just past the last record fully
handled: scored or rejected, its score, rejection and alert written and synced. With it go
what is needed to carry on as if the run had never stopped:

- the counts so far (records read, scored, rejected by reason, alerts), so record numbers
  continue and the final summary covers every run;
- the CSV header line, when resuming in the middle of a CSV file;
- the sizes of the ``--scores``, ``--rejected`` and ``--alerts`` files at that point: a resumed
  run cuts them back to those sizes before appending, so records handled after the last
  checkpoint (and handled again after the restart) appear in them exactly once;
- each entity's recent records (the per-entity window history of sequence models), so a
  record's window after a restart is the one it would have had.

It is written atomically (temporary file, fsync, rename) after every flushed batch. The file
is safetensors: the history arrays as tensors, everything else as JSON in its metadata
(nothing is unpickled when it is read).
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from deepids.errors import ConfigError, InputError

STATE_VERSION = 1
_META_KEY = "deepids_stream_state"


def default_state_path(source: str | Path, model_label: str = "") -> Path:
    """A state file under ``$XDG_STATE_HOME/deepids`` (``~/.local/state/deepids``) named after the input."""
    import hashlib

    root = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "deepids"
    real = str(Path(source).resolve())
    digest = hashlib.sha256(f"{real}\0{model_label}".encode()).hexdigest()[:16]
    return root / f"stream-{Path(source).name[:40]}-{digest}.state"


def histories_of(history) -> list:
    """The per-entity histories a scorer carries (an ensemble carries one per member)."""
    if history is None:
        return []
    if isinstance(history, (list, tuple)):
        return [h for sub in history for h in histories_of(sub)]
    return [history] if hasattr(history, "tails") else []


def save_state(path: str | Path, doc: dict, history=None) -> None:
    """Write the state atomically: `doc` (JSON-able) and the per-entity tails of `history`."""
    from safetensors.numpy import save

    from deepids.atomic import write_bytes

    tensors, entities = {}, []
    for i, h in enumerate(histories_of(history)):
        names = list(h.tails.keys())
        tails = [np.asarray(h.tails[k], dtype=np.float32) for k in names]
        entities.append({"names": [str(n) for n in names], "lengths": [len(t) for t in tails]})
        if tails:
            tensors[f"history_{i}"] = np.ascontiguousarray(np.concatenate(tails, axis=0))
    meta = dict(doc, version=STATE_VERSION, saved_at=time.time(), histories=entities)
    write_bytes(path, save(tensors, metadata={_META_KEY: json.dumps(meta)}), perms=0o600)


def load_state(path: str | Path) -> tuple[dict, dict[str, np.ndarray]] | None:
    """(doc, tensors) of a state file, or None when there is none. A damaged one is an InputError."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    if not path.exists():
        return None
    if path.is_symlink() or not path.is_file():
        raise InputError(f"stream state {path} is not a regular file")
    if path.stat().st_size > 1 << 31:
        raise InputError(f"stream state {path} is over 2 GiB; remove it to start afresh")
    data = path.read_bytes()
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        doc = json.loads(header.get("__metadata__", {}).get(_META_KEY, "null"))
        tensors = load(data)
    except (ValueError, SafetensorError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"stream state {path} is damaged ({type(exc).__name__}); remove it to start "
                         f"afresh") from None
    if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
        raise InputError(f"stream state {path} is not a deepids stream state of version {STATE_VERSION}")
    return doc, tensors


def restore_histories(history, doc: dict, tensors: dict[str, np.ndarray]) -> int:
    """Put saved per-entity tails back into `history`; returns the number of entities restored."""
    targets = histories_of(history)
    saved = doc.get("histories") or []
    if len(saved) != len(targets):
        raise ConfigError("the stream state was saved with a different model (its entity histories do not "
                          "match); remove it or use another --state")
    restored = 0
    now = time.monotonic()
    for i, (h, info) in enumerate(zip(targets, saved)):
        rows = tensors.get(f"history_{i}")
        names, lengths = info["names"], info["lengths"]
        if rows is None:
            continue
        if sum(lengths) != len(rows):
            raise InputError("the stream state is damaged (history rows do not add up); remove it")
        h.tails = OrderedDict()
        start = 0
        for name, n in zip(names, lengths):
            h.tails[name] = rows[start:start + n].copy()
            if hasattr(h, "_seen"):
                h._seen[name] = now
            start += n
        restored += len(names)
    return restored


def output_sizes(handles: dict) -> dict[str, dict]:
    """Flush and sync the outputs; each one's identity (device, inode) and size now (what a
    resumed run cuts it back to)."""
    sizes = {}
    for name, fh in handles.items():
        if fh is None:
            continue
        fh.flush()
        try:
            os.fsync(fh.fileno())
        except (OSError, ValueError):
            pass
        st = os.fstat(fh.fileno())
        sizes[name] = {"size": st.st_size, "dev": st.st_dev, "ino": st.st_ino}
    return sizes


def cut_back(handles: dict, sizes: dict[str, dict]) -> dict[str, int]:
    """Cut each output back to its checkpointed size (records after it will be written again).

    Only the very file the state saved is cut (same device and inode): an output named
    differently this time, or replaced since, is appended to as it is. Returns the bytes
    removed per output.
    """
    removed = {}
    for name, fh in handles.items():
        saved = sizes.get(name)
        if fh is None or not isinstance(saved, dict):
            continue
        fh.flush()
        st = os.fstat(fh.fileno())
        if (st.st_dev, st.st_ino) != (saved.get("dev"), saved.get("ino")):
            continue
        if st.st_size > saved["size"]:
            os.ftruncate(fh.fileno(), saved["size"])
            removed[name] = st.st_size - saved["size"]
    return removed
