"""From the options a user gave `deepids train` to a model, strictly.

What a model takes is read from its class (`_param_names()`, the keywords of `__init__`), never
from a list kept here: an option the chosen model does not take is an error that names it, and
an option the user left out is not passed at all, so the model's own default applies. A
composite model is configured through its parts: the two-stage model's stage one
(`--detector`) and stage two (`--classifier`) each receive the options their class takes.
"""

from __future__ import annotations

import inspect
from enum import Enum

from deepids.errors import ConfigError

# command-line option (the typer parameter's name) -> the model parameter it sets
MODEL_OPTIONS = {
    "sequence_length": "sequence_length", "epochs": "epochs", "batch_size": "batch_size",
    "learning_rate": "learning_rate", "patience": "patience", "seed": "seed", "entity": "entity",
    "score_mode": "score_mode", "objective": "objective", "threshold": "threshold_method",
    "percentile": "threshold_percentile", "fpr": "threshold_fpr", "threshold_value": "threshold_value",
    "device": "device", "target": "target", "score_method": "score_method", "members": "n_members",
    "detector": "detector", "classifier": "classifier", "stage_one": "stage_one", "novelty": "novelty",
}
# threshold options that only mean something with one threshold method
THRESHOLD_OPTIONS = {"percentile": "percentile", "fpr": "fpr", "threshold_value": "fixed"}
# what the two-stage model's own parameters hold: the names and the options of its stages
STAGES = {"detector": "detector_params", "classifier": "classifier_params"}


def flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def was_given(ctx, option: str) -> bool:
    """Whether the user set `option` (command line or environment) rather than leaving its default.

    Compared by name: typer ships its own copy of click, whose ParameterSource is not click's.
    """
    source = ctx.get_parameter_source(option)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def given_options(ctx) -> dict:
    """The model options typed on the command line (or set in the environment), with plain values."""
    values, given = ctx.params, {}
    for option in MODEL_OPTIONS:
        if not was_given(ctx, option):
            continue
        value = values[option]
        if isinstance(value, Enum):
            value = value.value
        if option == "entity" and isinstance(value, str) and value.lower() == "none":
            value = None
        given[option] = value
    return given


def _default(cls, param: str):
    p = inspect.signature(cls.__init__).parameters.get(param)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def _takers(param: str) -> str:
    from deepids.models import MODELS

    names = [name for name, cls in MODELS.items() if param in cls._param_names()]
    return f" (it applies to {', '.join(names)})" if names else ""


def _model_class(name: str):
    from deepids.models import MODELS

    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name]


def model_params(model: str, given: dict, verbose: bool) -> dict:
    """The keyword arguments of `model`'s class for the options given; ConfigError naming any it does not take."""
    cls = _model_class(model)
    accepted = set(cls._param_names())
    if set(STAGES.values()) <= accepted:
        return _composite_params(model, cls, given, verbose)
    params = {"verbose": verbose} if "verbose" in accepted else {}
    for option, value in given.items():
        param = MODEL_OPTIONS[option]
        if param not in accepted:
            raise ConfigError(f"{flag(option)} does not apply to {model}{_takers(param)}")
        params[param] = value
    _check_threshold_options(model, cls, given, params)
    return params


def _check_threshold_options(model: str, cls, given: dict, params: dict) -> None:
    method = params.get("threshold_method", _default(cls, "threshold_method"))
    for option, needs in THRESHOLD_OPTIONS.items():
        if option in given and method != needs:
            raise ConfigError(f"{flag(option)} applies with --threshold {needs}, and {model} would use "
                              f"--threshold {method}")


def _composite_params(model: str, cls, given: dict, verbose: bool) -> dict:
    """Two stages: each option goes to the model itself, or to every stage whose class takes it."""
    own = set(cls._param_names())
    params = {"verbose": verbose} if "verbose" in own else {}
    for option in ("detector", "classifier"):
        if option in given:
            _model_class(given[option])
            params[option] = given[option]
    stages = {role: _model_class(params.get(role, _default(cls, role))) for role in STAGES}
    stage_params: dict[str, dict] = {role: {} for role in STAGES}
    for option, value in given.items():
        param = MODEL_OPTIONS[option]
        if option in STAGES:
            continue
        if param in own:
            params[param] = value
            continue
        takers = [role for role, stage in stages.items() if param in stage._param_names()
                  and not (role == "classifier" and param == "target")]     # stage two always names families
        if not takers:
            names = " and ".join(f"--{role} {stage.model_name}" for role, stage in stages.items())
            raise ConfigError(f"{flag(option)} does not apply to {model} with {names}")
        for role in takers:
            stage_params[role][param] = value
    for role, stage in stages.items():
        chosen = {option: v for option, v in given.items() if MODEL_OPTIONS[option] in stage_params[role]}
        _check_threshold_options(f"{role} {stage.model_name}", stage, chosen, stage_params[role])
        if stage_params[role]:
            params[STAGES[role]] = stage_params[role]
    return params


def build_model(model: str, given: dict, verbose: bool):
    """An unfitted model of the registered name `model`, configured by the options given.

    Its parameters are checked here when the model can check them, so a mistake fails before
    any data is read.
    """
    estimator = _model_class(model)(**model_params(model, given, verbose))
    check = getattr(estimator, "_validate_params", None)
    if callable(check):
        check()
    return estimator
