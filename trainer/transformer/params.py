"""The fine-tuning parameters, declared once each: type, default, bounds, default search range."""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trainer.errors import ConfigError


@dataclass(frozen=True)
class Param:
    """One fine-tuning parameter.

    Attributes:
        name: its key in a params dict and in the config's search_space.
        kind: int or float; values are coerced to it.
        default: what fine_tune uses when the parameter is not given; None: optional, unset.
        low: the lowest allowed value (allowed itself when low_inclusive).
        high: the highest allowed value (allowed itself when high_inclusive); math.inf: none.
        low_inclusive: whether low itself is allowed.
        high_inclusive: whether high itself is allowed.
        search: the default search range {"low", "high", "log"} or {"choices": [...]}; None
            for a parameter that is never searched.
    """

    name: str
    kind: type
    default: int | float | None
    low: float
    high: float
    low_inclusive: bool = True
    high_inclusive: bool = True
    search: Mapping[str, Any] | None = None

    def allowed(self) -> str:
        """The allowed values in words, e.g. "a number in (0, 1]" or "a whole number >= 1"."""
        kind = "a whole number" if self.kind is int else "a number"
        low = _shown(self.low)
        if math.isinf(self.high):
            return f"{kind} {'>=' if self.low_inclusive else '>'} {low}"
        opening, closing = "[" if self.low_inclusive else "(", "]" if self.high_inclusive else ")"
        return f"{kind} in {opening}{low}, {_shown(self.high)}{closing}"

    def check(self, value: Any) -> int | float:
        """The value coerced to this parameter's kind, once it is known to be allowed.

        Args:
            value: an int or float (a whole float such as 2.0 is accepted for an int).

        Returns:
            The value as an int or a float.

        Raises:
            ConfigError: the value is not a finite number of the right kind, or out of bounds;
                the message names the parameter, the value and the allowed range.
        """
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or (self.kind is int and value != int(value)):
            raise self._refusal(value)
        too_low = value < self.low or (value == self.low and not self.low_inclusive)
        too_high = value > self.high or (value == self.high and not self.high_inclusive)
        if too_low or too_high:
            raise self._refusal(value)
        return int(value) if self.kind is int else float(value)

    def _refusal(self, value: Any) -> ConfigError:
        return ConfigError(f"fine-tuning parameter {self.name} must be {self.allowed()}, got "
                           f"{value!r}; pick a value in that range")


def _shown(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


_DECLARED = (
    Param("learning_rate", float, 3e-5, 0.0, 1.0, low_inclusive=False,
          search={"low": 1e-6, "high": 1e-4, "log": True}),
    # Below 1: Hugging Face's TrainingArguments reads a warmup_steps float in [0, 1) as a
    # share of the total steps, and 1.0 or more as a step count.
    Param("warmup_ratio", float, 0.06, 0.0, 1.0, high_inclusive=False,
          search={"low": 0.0, "high": 0.2, "log": False}),
    Param("num_train_epochs", int, 2, 1, 1000, search={"low": 1, "high": 5, "log": False}),
    Param("per_device_train_batch_size", int, 16, 1, 65536, search={"choices": [8, 16, 32]}),
    Param("weight_decay", float, 0.01, 0.0, 10.0, search={"low": 0.0, "high": 0.1, "log": False}),
    # Only trainer.transformer.loop.train_fast reads it: padded tokens per optimizer step.
    Param("tokens_per_batch", int, None, 1, math.inf),
)
PARAMS: dict[str, Param] = {p.name: p for p in _DECLARED}
# What fine_tune accepts and the study searches; train_fast also takes FAST_LOOP's extras.
TUNED: tuple[str, ...] = tuple(p.name for p in _DECLARED if p.search is not None)
FAST_LOOP: tuple[str, ...] = (*TUNED, "tokens_per_batch")
DEFAULTS: dict[str, int | float] = {name: PARAMS[name].default for name in TUNED}


def check_value(name: str, value: Any) -> int | float:
    """One parameter's value, checked and coerced (see `Param.check`).

    Args:
        name: a key of PARAMS.
        value: the value to check.

    Returns:
        The value as the parameter's kind.

    Raises:
        ConfigError: the name is unknown, or the value is not allowed.
    """
    check_names([name], PARAMS)
    return PARAMS[name].check(value)


def check_names(names: Iterable[str], allowed: Iterable[str] = TUNED) -> None:
    """Refuse parameter names that are not among `allowed`.

    Args:
        names: the names given.
        allowed: the names accepted here.

    Raises:
        ConfigError: naming the unknown names and the known ones.
    """
    known = list(allowed)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(f"unknown fine-tuning parameters {unknown}; known: {sorted(known)}")


def resolve(params: Mapping[str, Any], *, allowed: Iterable[str] = TUNED,
            fill_defaults: bool = True) -> dict[str, int | float]:
    """A params dict checked and coerced: unknown names refused, defaults filled, bounds checked.

    Args:
        params: parameter name -> value; a None value of an optional parameter means unset.
        allowed: the names accepted (TUNED for fine_tune, FAST_LOOP for train_fast).
        fill_defaults: fill missing parameters from their defaults; False: a missing parameter
            that has a default is refused instead.

    Returns:
        Every given or filled parameter, as its kind; unset optional ones are left out.

    Raises:
        ConfigError: an unknown or missing name, or a value not allowed (the first one found).
    """
    names = list(allowed)
    check_names(params, names)
    wanted = [n for n in names if PARAMS[n].default is not None]
    missing = [n for n in wanted if params.get(n) is None]
    if missing and not fill_defaults:
        raise ConfigError(f"missing fine-tuning parameters {missing}; got {sorted(params)}: "
                          f"pass every one of {wanted}")
    given = {n: v for n, v in params.items() if v is not None}
    merged = {**{n: PARAMS[n].default for n in missing}, **given}
    return {n: PARAMS[n].check(merged[n]) for n in names if n in merged}
