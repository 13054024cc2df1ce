"""Config precedence (CLI > environment > file > default), validation and device sizing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.config import Config, build_config
from trainer.errors import ConfigError


def test_cli_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('study = "from-file"\ntrials = 7\nseed = 3\n[search_space]\n'
                    'learning_rate = {low = 1e-5, high = 1e-4, log = true}\n')
    env = {"SENTIMENT_STUDY": "from-env", "SENTIMENT_TRIALS": "9"}
    config = build_config({"config": str(path), "trials": 2}, env)
    assert config.trials == 2  # CLI
    assert config.study == "from-env"  # environment over file
    assert config.seed == 3  # file over default
    assert config.db == Config().db  # default
    assert config.search_space["learning_rate"]["high"] == 1e-4


def test_json_config_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"max_length": 128}))
    assert build_config({"config": str(path)}, {}).max_length == 128


@pytest.mark.parametrize(
    ("cli", "env", "words"),
    [
        ({"trials": -1}, {}, "trials must be a whole number"),
        ({"train_size": 0}, {}, "train_size"),
        ({}, {"SENTIMENT_TRIALS": "many"}, "SENTIMENT_TRIALS must be a whole number"),
        ({"study": "   "}, {}, "study name is empty"),
        ({"study": "x" * 600}, {}, "600 characters"),
    ],
)
def test_bad_values_raise_config_error_naming_them(cli, env, words) -> None:
    with pytest.raises(ConfigError, match=words):
        build_config(cli, env)


def test_config_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        build_config({"config": str(tmp_path / "missing.toml")}, {})
    bad = tmp_path / "bad.toml"
    bad.write_text("trials = [")
    with pytest.raises(ConfigError, match="not valid"):
        build_config({"config": str(bad)}, {})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'")
    with pytest.raises(ConfigError, match="unknown keys \\['colour'\\]"):
        build_config({"config": str(unknown)}, {})


def test_a_command_ignores_file_keys_and_variables_of_options_it_does_not_use(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.toml"  # one file shared by every command
    path.write_text('trials = 7\nseed = 3\n[search_space]\nnum_train_epochs = {choices = [1]}\n')
    env = {"SENTIMENT_TRIALS": "many", "SENTIMENT_HEARTBEAT": "x", "SENTIMENT_SEED": "5"}
    baseline = build_config({"config": str(path), "max_length": 64}, env, command="baseline")
    assert baseline.seed == 5  # used: environment over file
    assert (baseline.trials, baseline.search_space, baseline.heartbeat) == (None, {}, 60)
    assert baseline.max_length is None
    tune = build_config({"config": str(path)}, {"SENTIMENT_TRIALS": "9"}, command="tune")
    assert tune.trials == 9 and tune.search_space == {"num_train_epochs": {"choices": [1]}}
    with pytest.raises(ConfigError, match="SENTIMENT_TRIALS must be a whole number"):
        build_config({}, env, command="tune")


def test_sizes_follow_the_device_but_never_override_the_user() -> None:
    cpu = Config(train_size=64).sized_for("cpu")
    assert cpu.train_size == 64 and cpu.eval_size is not None and cpu.test_size is not None
    gpu = Config().sized_for("cuda:0")
    assert gpu.train_size is None and gpu.test_size is None  # the whole splits
    assert gpu.max_length == 512


def test_fingerprint_changes_only_with_the_named_fields() -> None:
    a = Config(seed=1).fingerprint("data", "seed")
    assert a == Config(seed=1, trials=5).fingerprint("data", "seed")
    assert a != Config(seed=2).fingerprint("data", "seed")


def test_a_cpu_freezes_the_lowest_layers_and_nothing_frozen_keeps_earlier_fingerprints() -> None:
    assert Config().sized_for("cpu").frozen_layers == 2
    assert Config().sized_for("cuda").frozen_layers == 0
    assert Config(frozen_layers=0).sized_for("cpu").frozen_layers == 0  # the user's value wins
    names = ("data", "seed", "frozen_layers")
    # Runs stored before the option trained every layer: their fingerprints still match.
    assert Config(frozen_layers=0).fingerprint(*names) == Config().fingerprint("data", "seed")
    assert Config(frozen_layers=2).fingerprint(*names) != Config().fingerprint("data", "seed")
    with pytest.raises(ConfigError, match="frozen_layers must be a whole number ≥ 0"):
        Config(frozen_layers=-1)


def test_a_cpu_retrains_the_final_model_on_more_reviews_than_the_trials() -> None:
    cpu = Config().sized_for("cpu")
    assert cpu.final_train_size > cpu.train_size  # multi-fidelity: trials small, final larger
    assert cpu.test_size >= 1000
    assert Config().sized_for("cuda").final_train_size is None  # the best trial's own model


def test_the_device_search_space_sits_under_the_users_parameter_by_parameter() -> None:
    mine = {"learning_rate": {"low": 1e-5, "high": 2e-5, "log": True}}
    cpu = Config(search_space=mine).sized_for("cpu")
    assert cpu.search_space["learning_rate"] == mine["learning_rate"]  # the user's wins
    assert cpu.search_space["num_train_epochs"] == {"low": 1, "high": 1}  # the CPU's stays
    assert Config(search_space=mine).sized_for("cuda").search_space == mine
    assert Config(search_space="bad").sized_for("cpu").search_space == "bad"  # refused later
