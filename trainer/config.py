"""Run configuration: dataclass defaults, overridden by a config file, the environment and the CLI."""
from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from trainer.errors import ConfigError

DEFAULT_MODEL = "JamesH/Movie_review_sentiment_analysis_model"
DEFAULT_DATA = "stanfordnlp/imdb"

# Environment variables for every option (architecture.md: "every option also has an env var").
ENV = {
    "db": "SENTIMENT_DB",
    "data": "IMDB_DATA",
    "model": "SENTIMENT_MODEL",
    "study": "SENTIMENT_STUDY",
    "trials": "SENTIMENT_TRIALS",
    "train_size": "SENTIMENT_TRAIN_SIZE",
    "eval_size": "SENTIMENT_EVAL_SIZE",
    "test_size": "SENTIMENT_TEST_SIZE",
    "max_length": "SENTIMENT_MAX_LENGTH",
    "seed": "SENTIMENT_SEED",
    "artifacts": "SENTIMENT_ARTIFACTS",
    "heartbeat": "SENTIMENT_HEARTBEAT",
    "batch_size": "SENTIMENT_BATCH_SIZE",
}


@dataclass(frozen=True)
class Config:
    """Everything a stage needs. Sizes left at None are chosen for the device (see `sized_for`).

    search_space maps a hyperparameter name to {"low": …, "high": …, "log": bool} or
    {"choices": […]}, replacing that parameter's default range in the Optuna study.
    """

    db: str = "sqlite:///runs/sentiment.db"
    data: str = DEFAULT_DATA
    model: str = DEFAULT_MODEL
    study: str = "imdb-finetune"
    trials: int | None = None
    train_size: int | None = None
    eval_size: int | None = None
    test_size: int | None = None
    max_length: int | None = None
    seed: int = 42
    artifacts: str = "runs/artifacts"
    heartbeat: int = 60
    batch_size: int | None = None
    search_space: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("trials", "train_size", "eval_size", "test_size", "max_length", "batch_size"):
            value, least = getattr(self, name), 0 if name == "trials" else 1
            if value is not None and (not isinstance(value, int) or value < least):
                raise ConfigError(f"{name} must be a whole number ≥ {least}, got {value!r}")
        if self.heartbeat < 0:
            raise ConfigError(f"heartbeat must be 0 (off) or a number of seconds, got {self.heartbeat}")
        if not self.study.strip():
            raise ConfigError("the study name is empty; pass --study NAME")
        if len(self.study) > 200:
            raise ConfigError(f"the study name has {len(self.study)} characters; use at most 200")

    def sized_for(self, device: str) -> Config:
        """Fill the unset sizes: full data on a GPU, small subsets that finish on 2 CPU cores."""
        gpu = device.startswith("cuda")
        defaults = DEVICE_DEFAULTS["cuda" if gpu else "cpu"]
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self, *names: str) -> str:
        """A short hash of the named fields, so a stage done with the same settings is not redone."""
        picked = {n: getattr(self, n) for n in names}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


# None means "the whole split" for train/test sizes.
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cuda": {"trials": 8, "train_size": None, "eval_size": 2500, "test_size": None,
             "max_length": 512, "batch_size": 64},
    # The original study's 200 training and 200 evaluation reviews at 128 tokens: a whole `run`
    # with MiniLM took 3 min 11 s on 2 idle Xeon cores (bench/results/trainer-run-cpu-xeon-*.log)
    # and 17 min on 2 EPYC cores shared with a benchmark.
    "cpu": {"trials": 3, "train_size": 200, "eval_size": 200, "test_size": 500,
            "max_length": 128, "batch_size": 16},
}


def _coerce(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Config)}[name]
    if "int" in str(kind):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{ENV.get(name, name)} must be a whole number, got {raw!r}") from None
    return raw


def load_config_file(path: str) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict of Config fields."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror}") from e
    try:
        values = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"the config file {path} is not valid {p.suffix[1:] or 'TOML'}: {e}") from e
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"the config file {path} has unknown keys {unknown}; known: {sorted(known)}")
    return values


def build_config(cli: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    """Resolve each field: CLI > environment > config file > default.

    Args:
        cli: parsed options; None means "not given". The key "config" names a config file.
        env: the environment (os.environ when None).

    Raises:
        ConfigError: a value is malformed.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if cli.get("config"):
        values.update(load_config_file(cli["config"]))
    for name, var in ENV.items():
        if env.get(var):
            values[name] = _coerce(name, env[var])
    for f in fields(Config):
        if cli.get(f.name) is not None:
            values[f.name] = cli[f.name]
    try:
        return Config(**values)
    except TypeError as e:
        raise ConfigError(f"bad configuration: {e}") from e
