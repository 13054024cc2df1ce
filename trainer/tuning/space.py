"""The search space: default ranges, the config file's overrides checked, one trial's draw."""
from __future__ import annotations

import math
from typing import Any

import optuna

from trainer.errors import ConfigError

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "learning_rate": {"low": 1e-6, "high": 1e-4, "log": True},
    "warmup_ratio": {"low": 0.0, "high": 0.2, "log": False},
    "num_train_epochs": {"low": 1, "high": 5, "log": False},
    "per_device_train_batch_size": {"choices": [8, 16, 32]},
    "weight_decay": {"low": 0.0, "high": 0.1, "log": False},
}
INT_PARAMS = frozenset({"num_train_epochs", "per_device_train_batch_size"})
# (lowest allowed, highest allowed, lowest is allowed itself) for any value a user may set.
_LIMITS = {
    "learning_rate": (0.0, 1.0, False),
    "warmup_ratio": (0.0, 1.0, True),
    "num_train_epochs": (1, 1000, True),
    "per_device_train_batch_size": (1, 65536, True),
    "weight_decay": (0.0, 10.0, True),
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
    unknown = sorted(set(overrides) - set(DEFAULT_SPACE))
    if unknown:
        raise ConfigError(
            f"search_space names unknown hyperparameters {unknown}; known: {sorted(DEFAULT_SPACE)}"
        )
    return {name: _checked(name, overrides.get(name, default))
            for name, default in DEFAULT_SPACE.items()}


def _checked(name: str, spec: Any) -> dict[str, Any]:
    example = "{low = 1, high = 3} or {choices = [8, 16]}"
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"search_space.{name} must be a table like {example}, got {spec!r}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list | tuple):
            raise ConfigError(f"search_space.{name} must be like {example}, got {spec!r}")
        choices = [_number(name, c) for c in spec["choices"]]
        if not choices:
            raise ConfigError(f"search_space.{name} has no choices; give at least one")
        return {"choices": choices}
    if not {"low", "high"} <= set(spec) <= {"low", "high", "log"}:
        raise ConfigError(f"search_space.{name} must be like {example}, got {spec!r}")
    low, high, use_log = _number(name, spec["low"]), _number(name, spec["high"]), spec.get("log")
    if low > high:
        raise ConfigError(f"search_space.{name} has low {low} above high {high}; swap them")
    if not isinstance(use_log, bool | None) or (use_log and low <= 0):
        raise ConfigError(f"search_space.{name}.log must be true or false (and low above 0)")
    return {"low": low, "high": high, "log": bool(use_log)}


def _number(name: str, value: Any) -> int | float:
    lowest, highest, inclusive = _LIMITS[name]
    ok_type = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok_type or not math.isfinite(value) or (name in INT_PARAMS and value != int(value)):
        kind = "a whole number" if name in INT_PARAMS else "a number"
        raise ConfigError(f"search_space.{name} needs {kind}, got {value!r}")
    if value > highest or value < lowest or (value == lowest and not inclusive):
        sign = ">=" if inclusive else ">"
        raise ConfigError(
            f"search_space.{name} must be {sign} {lowest} and <= {highest}, got {value!r}"
        )
    return int(value) if name in INT_PARAMS else float(value)


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
        elif name in INT_PARAMS:
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec["log"])
        else:
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec["log"])
    return params
