"""The fine-tuning parameter schema: bounds, coercion, names, defaults, one message everywhere."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from trainer.errors import ConfigError
from trainer.transformer import params
from trainer.tuning import space

# Every bound, just inside and just outside, written out: a changed bound fails here.
EDGES = [
    ("learning_rate", 1e-12, 0.0),
    ("learning_rate", 1.0, 1.0 + 1e-9),
    ("warmup_ratio", 0.0, -1e-9),
    ("warmup_ratio", 0.999, 1.0),
    ("num_train_epochs", 1, 0),
    ("num_train_epochs", 1000, 1001),
    ("per_device_train_batch_size", 1, 0),
    ("per_device_train_batch_size", 65536, 65537),
    ("weight_decay", 0.0, -1e-9),
    ("weight_decay", 10.0, 10.0 + 1e-9),
    ("tokens_per_batch", 1, 0),
]
ALLOWED = {
    "learning_rate": "a number in (0, 1]",
    "warmup_ratio": "a number in [0, 1)",
    "num_train_epochs": "a whole number in [1, 1000]",
    "per_device_train_batch_size": "a whole number in [1, 65536]",
    "weight_decay": "a number in [0, 10]",
    "tokens_per_batch": "a whole number >= 1",
}


@pytest.mark.parametrize(("name", "inside", "outside"), EDGES)
def test_each_bound_admits_the_edge_inside_and_refuses_the_one_outside(
    name: str, inside: float, outside: float
) -> None:
    assert params.check_value(name, inside) == inside
    with pytest.raises(ConfigError) as info:
        params.check_value(name, outside)
    assert str(info.value) == (f"fine-tuning parameter {name} must be {ALLOWED[name]}, got "
                               f"{outside!r}; pick a value in that range")


def test_a_very_large_token_budget_is_allowed() -> None:
    assert params.check_value("tokens_per_batch", 10**9) == 10**9


@pytest.mark.parametrize("name", sorted(params.PARAMS))
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1", None, True, [1]])
def test_what_is_not_a_finite_number_is_refused(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{name} must be {ALLOWED[name]}, got")):
        params.check_value(name, value)


def test_whole_floats_become_ints_and_ints_become_floats() -> None:
    epochs = params.check_value("num_train_epochs", 3.0)
    batch = params.check_value("per_device_train_batch_size", np.int64(8))
    rate = params.check_value("learning_rate", 1)
    assert (epochs, type(epochs)) == (3, int)
    assert (batch, type(batch)) == (8, int)
    assert (rate, type(rate)) == (1.0, float)


def test_a_fractional_value_of_a_whole_number_parameter_is_refused() -> None:
    with pytest.raises(ConfigError, match="num_train_epochs must be a whole number .* got 1.5"):
        params.check_value("num_train_epochs", 1.5)


def test_missing_parameters_take_the_defaults() -> None:
    resolved = params.resolve({"learning_rate": 1e-4, "num_train_epochs": 4.0})
    assert resolved == {"learning_rate": 1e-4, "warmup_ratio": 0.06, "num_train_epochs": 4,
                        "per_device_train_batch_size": 16, "weight_decay": 0.01}
    assert type(resolved["num_train_epochs"]) is int
    assert params.resolve({}) == params.DEFAULTS


def test_without_defaults_every_missing_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match=r"missing fine-tuning parameters \['warmup_ratio', "
                                          r"'weight_decay'\]"):
        params.resolve({"learning_rate": 1e-3, "num_train_epochs": 1,
                        "per_device_train_batch_size": 1}, fill_defaults=False)


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        params.resolve({"learning_rat": 1e-3, "dropout": 0.1})
    message = str(info.value)
    assert message.startswith("unknown fine-tuning parameters ['dropout', 'learning_rat']")
    assert "learning_rate" in message and "tokens_per_batch" not in message


def test_the_token_budget_is_for_the_fast_loop_only_and_may_be_unset() -> None:
    with pytest.raises(ConfigError, match="unknown fine-tuning parameters .'tokens_per_batch'"):
        params.resolve({"tokens_per_batch": 4096})
    fast = params.resolve({"tokens_per_batch": 4096.0}, allowed=params.FAST_LOOP)
    assert fast["tokens_per_batch"] == 4096 and type(fast["tokens_per_batch"]) is int
    unset = params.resolve({"tokens_per_batch": None}, allowed=params.FAST_LOOP)
    assert "tokens_per_batch" not in unset


def test_the_first_bad_value_is_reported() -> None:
    with pytest.raises(ConfigError, match="learning_rate"):
        params.resolve({"weight_decay": -1.0, "learning_rate": 0.0})


def test_the_defaults_and_the_default_search_space_lie_inside_the_bounds() -> None:
    assert params.TUNED == tuple(space.DEFAULT_SPACE)
    assert space.resolve_space({}) == space.DEFAULT_SPACE
    for name in params.TUNED:
        declared = params.PARAMS[name]
        assert declared.check(declared.default) == declared.default
        search = space.DEFAULT_SPACE[name]
        values = search.get("choices") or [search["low"], search["high"]]
        assert min(values) <= declared.default <= max(values)


# --- one message from the search space and both engines --------------------------------------

BAD = [("learning_rate", 0.0), ("learning_rate", 2.0), ("warmup_ratio", 1.0),
       ("num_train_epochs", 0), ("num_train_epochs", 2.5), ("per_device_train_batch_size", 65537),
       ("weight_decay", 11.0), ("weight_decay", math.nan)]


def _message(call: object) -> str:
    with pytest.raises(ConfigError) as info:
        call()  # type: ignore[operator]
    return str(info.value)


@pytest.mark.parametrize(("name", "value"), BAD)
def test_the_search_space_and_both_engines_refuse_a_bad_value_alike(
    name: str, value: float, tmp_path
) -> None:
    from trainer.transformer import finetune, loop

    bad = {**params.DEFAULTS, name: value}
    expected = _message(lambda: params.check_value(name, value))
    in_choices = _message(lambda: space.resolve_space({name: {"choices": [value]}}))
    as_range = _message(lambda: space.resolve_space({name: {"low": value, "high": value}}))
    for engine in ("hf", "fast"):  # the parameters are checked before the model is loaded
        tuned = _message(lambda: finetune.fine_tune(
            "unused", ["a review"], [1], [], [], bad, max_length=16, output_dir=tmp_path,
            seed=0, device="cpu", engine=engine))
        assert tuned == expected
    fast = _message(lambda: loop.train_fast(None, None, ["a review"], [1], [], bad,
                                            max_length=16, seed=0, device="cpu"))
    assert in_choices == as_range == fast == expected
    assert name in expected and repr(value) in expected
