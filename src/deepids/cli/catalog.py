"""`deepids models`: the models `deepids train --model` takes, read from the registry."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from deepids.cli.configure import MODEL_OPTIONS, STAGES, flag
from deepids.cli.render import models_table, out, write_json


def model_catalog() -> list[dict]:
    """Each registered model: its kind and every parameter with its default and the option that sets it."""
    from deepids.models import MODELS, BaseClassifier

    options = {param: flag(option) for option, param in MODEL_OPTIONS.items()}
    rows = []
    for name, cls in MODELS.items():
        names = cls._param_names()
        kind = ("two stages" if set(STAGES.values()) <= set(names)
                else "classifier" if issubclass(cls, BaseClassifier) else "detector")
        signature = inspect.signature(cls.__init__).parameters
        params = [{"name": p, "default": signature[p].default, "option": options.get(p)}
                  for p in names if p != "verbose"]
        rows.append({"model": name, "kind": kind, "summary": (cls.__doc__ or "").strip().split("\n")[0],
                     "parameters": params})
    return rows


def models(
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the list as JSON here ('-' for stdout).")] = None,
) -> None:
    """List the models to train, with their parameters, defaults and the train options that set them."""
    rows = model_catalog()
    if json_out:
        write_json({"models": rows}, json_out)
        if str(json_out) == "-":
            return
    out.print(models_table(rows))
