"""The search space: default ranges, the config file's overrides checked, one trial's draw."""
from __future__ import annotations

from typing import Any

import optuna

from trainer.errors import ConfigError
from trainer.transformer.params import PARAMS, TUNED, check_names, check_value

# Each searched parameter's default range or choices, as declared in trainer.transformer.params.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    name: {k: list(v) if isinstance(v, list) else v for k, v in PARAMS[name].search.items()}
    for name in TUNED
}


def resolve_space(overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The default search space with the config file's ranges or choices put in.

    Args:
        overrides: hyperparameter -> {"low": …, "high": …, "log": bool} or {"choices": […]}.

    Returns:
        Every hyperparameter's checked range or choices.

    Raises:
        ConfigError: an unknown hyperparameter, a malformed entry or a value out of bounds.
    """
    if not isinstance(overrides, dict):
        raise ConfigError(f"search_space must be a table of hyperparameters, got {overrides!r}")
    check_names(overrides, TUNED)
    return {name: _checked(name, overrides.get(name, default))
            for name, default in DEFAULT_SPACE.items()}


def _checked(name: str, spec: Any) -> dict[str, Any]:
    example = "{low = 1, high = 3} or {choices = [8, 16]}"
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"search_space.{name} must be a table like {example}, got {spec!r}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list | tuple):
            raise ConfigError(f"search_space.{name} must be like {example}, got {spec!r}")
        choices = [check_value(name, c) for c in spec["choices"]]
        if not choices:
            raise ConfigError(f"search_space.{name} has no choices; give at least one")
        return {"choices": choices}
    if not {"low", "high"} <= set(spec) <= {"low", "high", "log"}:
        raise ConfigError(f"search_space.{name} must be like {example}, got {spec!r}")
    low, high = check_value(name, spec["low"]), check_value(name, spec["high"])
    use_log = spec.get("log")
    if low > high:
        raise ConfigError(f"search_space.{name} has low {low} above high {high}; swap them")
    if not isinstance(use_log, bool | None) or (use_log and low <= 0):
        raise ConfigError(f"search_space.{name}.log must be true or false (and low above 0)")
    return {"low": low, "high": high, "log": bool(use_log)}


def suggest(trial: optuna.Trial, overrides: dict[str, Any]) -> dict[str, Any]:
    """Draw one trial's hyperparameters (fixed ones, as in a retried trial, are kept).

    Args:
        trial: the Optuna trial.
        overrides: the config's search_space (see `resolve_space`).

    Returns:
        Hyperparameter name -> value, the keys of DEFAULT_SPACE.

    Raises:
        ConfigError: the overrides are malformed.
    """
    params = {}
    for name, spec in resolve_space(overrides).items():
        if "choices" in spec:
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif PARAMS[name].kind is int:
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec["log"])
        else:
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec["log"])
    return params
