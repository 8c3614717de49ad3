"""Training checkpoints: one safetensors file per training run, rewritten atomically after every epoch.

`checkpoint.safetensors` holds, as tensors: the network's weights (`network.*`), the best
weights so far (`best.*`), the optimizer's state tensors (`optimizer.*`), a custom step's
optimizer states (`step.*`) and torch's RNG states (`rng.*`); its header metadata holds, as
JSON, the epoch, the early-stopping state, the history, the optimizers' settings, the numpy
and Python RNG states and the fingerprint of the run (model, parameters, data size) that a
resume must match. Nothing is pickled, so a checkpoint from a stranger can do no more than a
model file can.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from deepids.atomic import atomic_path
from deepids.errors import ConfigError, ModelFormatError
from deepids.models.persistence import check_safetensors_header

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
KIND = "deepids-checkpoint"
VERSION = 1


class Checkpoints:
    """Where one training run keeps its checkpoint, and what a resume must match."""

    def __init__(self, directory: str | Path, fingerprint: dict):
        self.directory = Path(directory)
        self.path = self.directory / CHECKPOINT
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))   # as it reads back

    # ------------------------------------------------------------------ save
    def save(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer, step_fn, state) -> Path:
        tensors: dict[str, torch.Tensor] = {}
        _put(tensors, "network.", network.state_dict())
        if state.best_state is not None:
            _put(tensors, "best.", state.best_state)
        meta = {
            "version": VERSION, "fingerprint": self.fingerprint, "epoch": state.epoch,
            "bad_epochs": state.bad_epochs, "history": _history_dict(state.history),
            "optimizer": _flatten_optimizer("optimizer", optimizer.state_dict(), tensors),
            "numpy_generator": state.rng.bit_generator.state, "python_random": _python_random(),
        }
        step_state = getattr(step_fn, "state_dict", None)
        if step_state is not None:
            meta["step"] = {name: _flatten_optimizer(f"step.{name}", sd, tensors) for name, sd in step_state().items()}
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        legacy = np.random.get_state()
        tensors["rng.numpy_legacy"] = torch.from_numpy(np.asarray(legacy[1], dtype=np.int64))
        meta["numpy_legacy"] = [legacy[0], int(legacy[2]), int(legacy[3]), float(legacy[4])]
        with atomic_path(self.path) as tmp:        # synced and renamed: a kill leaves the previous epoch's
            save_file(tensors, str(tmp), metadata={"format": KIND, "state": json.dumps(meta, allow_nan=True)})
        return self.path

    # --------------------------------------------------------------- restore
    def restore(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer, step_fn, state,
                device: torch.device) -> bool:
        """Load the checkpoint into the loop's objects; False (start afresh) when there is none yet."""
        if not self.path.exists():
            log.info("no checkpoint in %s yet: training from the first epoch", self.directory)
            return False
        meta, tensors = self._read()
        if meta.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"the checkpoint in {self.directory} belongs to another training run "
                              f"({_first_difference(meta.get('fingerprint'), self.fingerprint)}); "
                              "resume with the same model, options and data, or use another directory")
        try:
            network.load_state_dict(_take(tensors, "network."))
            best = _take(tensors, "best.")
            state.best_state = {k: v.to(device) for k, v in best.items()} if best else None
            optimizer.load_state_dict(_unflatten_optimizer(meta["optimizer"], tensors))
            if "step" in meta:
                step_fn.load_state_dict({name: _unflatten_optimizer(sd, tensors) for name, sd in meta["step"].items()})
            _restore_history(state.history, meta["history"])
            state.bad_epochs = int(meta["bad_epochs"])
            state.rng.bit_generator.state = meta["numpy_generator"]
            random.setstate(_as_tuple(meta["python_random"]))
            name, pos, has_gauss, gauss = meta["numpy_legacy"]
            np.random.set_state((name, tensors["rng.numpy_legacy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
            torch.set_rng_state(tensors["rng.torch"])
            cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
            if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFormatError(f"{self.path} is damaged or does not fit this model: "
                                   f"{type(exc).__name__}: {exc}") from None
        return True

    def _read(self) -> tuple[dict, dict[str, torch.Tensor]]:
        check_safetensors_header(self.path)           # bounds checked before anything is allocated
        try:
            with safe_open(str(self.path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            if header.get("format") != KIND:
                raise ValueError("not a deepids checkpoint")
            meta = json.loads(header["state"])
            if not isinstance(meta, dict) or meta.get("version") != VERSION:
                raise ValueError(f"checkpoint version {meta.get('version') if isinstance(meta, dict) else '?'}")
        except Exception as exc:  # safetensors raises its own error types for a damaged file
            raise ModelFormatError(f"{self.path} is not a readable deepids checkpoint: {exc}") from None
        return meta, tensors


def _put(tensors: dict, prefix: str, state_dict: dict) -> None:
    for k, v in state_dict.items():
        tensors[prefix + k] = v.detach().to("cpu").clone().contiguous()


def _take(tensors: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _flatten_optimizer(prefix: str, sd: dict, tensors: dict) -> dict:
    """An optimizer's state_dict as JSON, its tensors moved into `tensors` under `prefix`."""
    state = {}
    for index, values in sd["state"].items():
        state[str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                name = f"{prefix}.{index}.{key}"
                tensors[name] = value.detach().to("cpu").clone().contiguous()
                state[str(index)][key] = {"tensor": name}
            else:
                state[str(index)][key] = {"value": value}
    return {"state": state, "param_groups": sd["param_groups"]}


def _unflatten_optimizer(flat: dict, tensors: dict) -> dict:
    state = {}
    for index, values in flat["state"].items():
        state[int(index)] = {key: tensors[v["tensor"]] if "tensor" in v else v["value"] for key, v in values.items()}
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in flat["param_groups"]]
    return {"state": state, "param_groups": groups}


def _python_random():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _as_tuple(value):
    version, internal, gauss = value
    return version, tuple(internal), gauss


def _history_dict(history) -> dict:
    return {"train_loss": history.train_loss, "val_loss": history.val_loss, "best_epoch": history.best_epoch,
            "best_val_loss": history.best_val_loss, "stopped_early": history.stopped_early,
            "seconds": history.seconds, "epoch_seconds": history.epoch_seconds}


def _restore_history(history, saved: dict) -> None:
    history.train_loss = [float(x) for x in saved["train_loss"]]
    history.val_loss = [float(x) for x in saved["val_loss"]]
    history.best_epoch = int(saved["best_epoch"])
    history.best_val_loss = float(saved["best_val_loss"])
    history.stopped_early = bool(saved["stopped_early"])
    history.seconds = float(saved["seconds"])
    history.epoch_seconds = [float(x) for x in saved["epoch_seconds"]]


def _first_difference(saved, wanted) -> str:
    if not isinstance(saved, dict):
        return "it has no fingerprint"
    for key in sorted(set(saved) | set(wanted)):
        if saved.get(key) != wanted.get(key):
            return f"{key}: {saved.get(key)!r} there, {wanted.get(key)!r} now"
    return "it differs"
