"""Options declared once on Config: generated flags, help and env vars; unused flags refused."""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from trainer.cli import COMMANDS, RefusedFlag, add_config_options, build_parser, main
from trainer.config import (
    COMMAND_NAMES,
    ENV,
    Config,
    Option,
    build_config,
    env_vars,
    flag,
    option,
    options_of,
    used_by,
)
from trainer.errors import ConfigError


def _command_parsers() -> dict[str, argparse.ArgumentParser]:
    # argparse has no public way to list a parser's actions; _actions is what its help walks.
    (sub,) = [a for a in build_parser()._actions if isinstance(a.choices, dict)]
    return dict(sub.choices)


def _help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())  # argparse wraps lines anywhere


@pytest.mark.parametrize(
    ("argv", "refused", "users"),
    [
        (["baseline", "--trials", "5"], "--trials", "run, tune, worker"),
        (["baseline", "--model", "m"], "--model", "run, pretrained, tune, worker, final"),
        (["pretrained", "--heartbeat=0"], "--heartbeat", "run, tune, worker"),
        (["tune", "--batch-size", "8"], "--batch-size", "run, pretrained, final"),
        (["worker", "--test-size"], "--test-size", "run, pretrained, final"),
        (["report", "--study", "s"], "--study", "run, tune, worker, final, predict, audit"),
        (["predict", "fine", "--seed", "1"], "--seed",
         "run, baseline, pretrained, tune, worker, final, audit"),
    ],
)
def test_a_flag_the_command_does_not_use_is_one_line_exit_1_before_anything_runs(
    argv: list[str], refused: str, users: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "s.db"
    assert main([*argv, "--db", f"sqlite:///{db}"]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"error: {argv[0]} does not take {refused} (used by {users}); remove it"
    ]
    assert captured.out == ""
    assert not db.exists()  # refused while parsing: no store was opened


def test_predict_points_a_model_flag_to_model_ref(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "fine", "--model", "some/model"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "--model-ref" in line


def test_an_unknown_flag_keeps_argparse_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["baseline", "--colour", "blue"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --colour" in capsys.readouterr().err


def test_every_option_of_every_command_has_help_and_only_refused_flags_are_hidden() -> None:
    parsers = _command_parsers()
    assert set(parsers) == set(COMMAND_NAMES) == set(COMMANDS)
    for command, parser in parsers.items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                assert isinstance(action, RefusedFlag), (command, action.option_strings)
            else:
                assert action.help and action.help.strip(), (command, action.option_strings)


def test_command_help_documents_each_option_it_takes_with_its_env_var() -> None:
    for command, parser in _command_parsers().items():
        text = _help(parser)
        assert "--config FILE" in text and "--db URL" in text, command
        for name, opt in used_by(command).items():
            if opt.flag:
                assert f"{flag(name)} {opt.metavar} {opt.help} [{opt.env}]" in text, name
        for name in set(options_of(Config)) - set(used_by(command)):
            if command != "predict" or name != "max_length":  # predict's own --max-length
                assert f"{flag(name)} " not in text, (command, name)
    tune = _help(_command_parsers()["tune"])
    assert "[SENTIMENT_TRIALS] (default: sized for the device, 8 on a GPU, 3 on a CPU)" in tune
    assert "[SENTIMENT_HEARTBEAT] (default 60)" in tune


def test_top_level_help_still_lists_the_commands() -> None:
    text = build_parser().format_help()
    assert all(command in text for command in COMMAND_NAMES)


def test_predict_keeps_its_own_max_length_apart_from_the_config_field() -> None:
    parser = build_parser()
    assert parser.parse_args(["predict", "fine"]).max_length == 256
    args = parser.parse_args(["predict", "fine", "--max-length", "64"])
    assert args.max_length == 64
    config = build_config(vars(args), {"SENTIMENT_MAX_LENGTH": "100"}, command="predict")
    assert config.max_length is None  # the Config field is not predict's


def test_an_exported_variable_for_an_unused_option_is_not_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SENTIMENT_TRIALS", "many")  # would be a ConfigError for tune
    assert main(["report", "--json", "--db", f"sqlite:///{tmp_path / 's.db'}"]) == 0
    assert capsys.readouterr().err == ""


def test_env_is_generated_from_the_field_metadata() -> None:
    assert set(options_of(Config)) == {f.name for f in fields(Config)}  # nothing undeclared
    assert ENV == {
        "db": "SENTIMENT_DB", "data": "IMDB_DATA", "model": "SENTIMENT_MODEL",
        "study": "SENTIMENT_STUDY", "trials": "SENTIMENT_TRIALS",
        "train_size": "SENTIMENT_TRAIN_SIZE", "eval_size": "SENTIMENT_EVAL_SIZE",
        "test_size": "SENTIMENT_TEST_SIZE", "max_length": "SENTIMENT_MAX_LENGTH",
        "seed": "SENTIMENT_SEED", "artifacts": "SENTIMENT_ARTIFACTS",
        "heartbeat": "SENTIMENT_HEARTBEAT", "batch_size": "SENTIMENT_BATCH_SIZE",
        "behaviour": "SENTIMENT_BEHAVIOUR", "trial": "SENTIMENT_AUDIT_TRIAL",
        "lock_timeout": "SENTIMENT_LOCK_TIMEOUT", "final_train_size": "SENTIMENT_FINAL_TRAIN_SIZE",
        "frozen_layers": "SENTIMENT_FROZEN_LAYERS",
    }


@dataclass(frozen=True)
class WithWarmup(Config):
    warmup: int = option(3, env="SENTIMENT_WARMUP", kind=int, commands=frozenset({"tune"}),
                         help="warmup epochs")


def test_a_field_declared_with_an_option_gets_its_env_var_flag_and_refusal() -> None:
    assert env_vars(options_of(WithWarmup))["warmup"] == "SENTIMENT_WARMUP"
    tune = argparse.ArgumentParser()
    add_config_options(tune, "tune", WithWarmup)
    assert tune.parse_args(["--warmup", "5"]).warmup == 5
    assert tune.parse_args([]).warmup is None  # unset stays visible
    assert "--warmup N warmup epochs [SENTIMENT_WARMUP] (default 3)" in _help(tune)
    baseline = argparse.ArgumentParser()
    add_config_options(baseline, "baseline", WithWarmup)
    assert "--warmup" not in _help(baseline)
    with pytest.raises(ConfigError, match=r"^baseline does not take --warmup \(used by tune\); "
                                          r"remove it$"):
        baseline.parse_args(["--warmup", "5"])


def test_an_option_naming_an_unknown_command_is_refused() -> None:
    with pytest.raises(ValueError, match="'tunes'"):
        Option(env=None, help="x", commands=frozenset({"tunes"}))


def _option_entries(help_text: str) -> dict[str, str]:
    """The options of a --help text, each with its help as printed (wrapped lines joined)."""
    entries: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        start = re.match(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        if start:
            current = start.group(1)
            entries[current] = start.group(2) or ""
        elif current and line.startswith("   ") and line.strip():
            entries[current] = f"{entries[current]} {line.strip()}".strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("command", [None, *COMMAND_NAMES])
def test_every_option_in_each_help_text_has_its_help(
    command: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"] if command is None else [command, "--help"])
    assert exit_.value.code == 0
    entries = _option_entries(capsys.readouterr().out)
    parser = build_parser() if command is None else _command_parsers()[command]
    shown = {s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
    assert {s for e in entries for s in re.findall(r"-[-\w]+", e)} == shown  # each one parsed
    assert all(len(text.split()) >= 2 for text in entries.values()), entries
