"""Run configuration: each option declared once on Config, overridden by file, environment, CLI."""
from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from trainer.errors import ConfigError

DEFAULT_MODEL = "JamesH/Movie_review_sentiment_analysis_model"
DEFAULT_DATA = "stanfordnlp/imdb"
TRUNCATION = "head+tail"  # how a long review is cut to max_length (trainer.transformer.truncate)

COMMAND_NAMES = ("run", "baseline", "pretrained", "tune", "worker", "final", "predict", "report",
                 "audit")

# Which command reads which option, from what each one calls (stages.py, tuning/study.py,
# report.py, predict.py); `run` chains the four stages, so it reads them all.
TUNING = frozenset({"run", "tune", "worker"})
SCORING = frozenset({"run", "pretrained", "final"})  # score the test subset with a transformer
TRANSFORMER_STAGES = TUNING | SCORING
STAGES = TRANSFORMER_STAGES | {"baseline"}
EVERY = frozenset(COMMAND_NAMES)
AUDIT = frozenset({"audit"})  # reads the data and the stored runs; `run` ends with it


@dataclass(frozen=True)
class Option:
    """How one Config field is set from outside, and which commands read it.

    env: its environment variable (None: config file and command line only).
    help: what it sets, for `--help`; the default is added from the field.
    commands: the commands that use it; the others refuse its flag and ignore its variable.
    kind: str or int, what the flag and the variable are converted to.
    metavar: the value's name in `--help`.
    flag: False for an option set only in the config file (search_space).
    """

    env: str | None
    help: str
    commands: frozenset[str]
    kind: type = str
    metavar: str = "N"
    flag: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(self.commands - EVERY)
        if unknown:
            raise ValueError(f"Option commands must be among {list(COMMAND_NAMES)}, got {unknown}")


OPTION = "option"  # the key of a Config field's metadata that holds its Option


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **spec: Any) -> Any:
    """A Config field with its Option (the keyword arguments) in its metadata.

    Args:
        default: the field's default value.
        default_factory: for a mutable default, as dataclasses.field.
        spec: Option's fields (env, help, commands, kind, metavar, flag).

    Returns:
        A dataclasses.field.
    """
    return field(default=default, default_factory=default_factory,
                 metadata={OPTION: Option(**spec)})


@dataclass(frozen=True)
class Config:
    """Everything a stage needs. Sizes left at None are chosen for the device (see `sized_for`).

    search_space maps a hyperparameter name to {"low": …, "high": …, "log": bool} or
    {"choices": […]}, replacing that parameter's default range in the Optuna study.
    """

    db: str = option("sqlite:///runs/sentiment.db", env="SENTIMENT_DB", metavar="URL",
                     help="database URL: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB",
                     commands=EVERY)
    data: str = option(DEFAULT_DATA, env="IMDB_DATA", metavar="SRC", commands=STAGES | AUDIT,
                       help="hub id, or a folder of train/test parquet, csv or jsonl files, "
                            "or an aclImdb folder")
    model: str = option(DEFAULT_MODEL, env="SENTIMENT_MODEL", metavar="ID_OR_DIR",
                        help="hub id, local model folder, or minilm-offline",
                        commands=TRANSFORMER_STAGES)
    study: str = option("imdb-finetune", env="SENTIMENT_STUDY", metavar="NAME",
                        help="Optuna study name",
                        commands=TUNING | {"final", "predict"} | AUDIT)
    trials: int | None = option(None, env="SENTIMENT_TRIALS", kind=int, commands=TUNING,
                                help="trials to run: tune and worker add this many, "
                                     "run tops the study up to this many")
    # final retrains the best trial on the same subsets when its saved model is gone.
    train_size: int | None = option(None, env="SENTIMENT_TRAIN_SIZE", kind=int,
                                    commands=TUNING | {"final"},
                                    help="training reviews per trial (a seeded, label-stratified "
                                         "subset of the train split)")
    # Multi-fidelity: trials compare parameters on train_size reviews, the final model is the
    # best trial's parameters retrained on more.
    final_train_size: int | None = option(
        None, env="SENTIMENT_FINAL_TRAIN_SIZE", kind=int, commands={"run", "final"},
        help="training reviews of the final model: when above --train-size, the best trial's "
             "parameters are retrained on this many (a seeded, label-stratified subset of the "
             "train split, never the validation rows); otherwise the best trial's own model")
    eval_size: int | None = option(None, env="SENTIMENT_EVAL_SIZE", kind=int,
                                   commands=TUNING | {"final"},
                                   help="validation reviews, carved from the train split, that "
                                        "score each trial")
    test_size: int | None = option(None, env="SENTIMENT_TEST_SIZE", kind=int, commands=SCORING,
                                   help="test reviews the pretrained and final models are "
                                        "scored on (a seeded, label-stratified subset)")
    max_length: int | None = option(None, env="SENTIMENT_MAX_LENGTH", kind=int,
                                    commands=TRANSFORMER_STAGES, help="tokens kept per review")
    frozen_layers: int | None = option(
        None, env="SENTIMENT_FROZEN_LAYERS", kind=int, commands=TUNING | {"final"},
        help="lowest layers kept as pretrained while fine-tuning, the embeddings counted as the "
             "first: 0 trains every layer, 2 keeps the embeddings and the lowest encoder layer")
    seed: int = option(42, env="SENTIMENT_SEED", kind=int, commands=STAGES | AUDIT,
                       help="seed of the subsets, the training and the sampler")
    artifacts: str = option("runs/artifacts", env="SENTIMENT_ARTIFACTS", metavar="DIR",
                            help="folder for saved models", commands=STAGES - {"pretrained"})
    heartbeat: int = option(60, env="SENTIMENT_HEARTBEAT", kind=int, commands=TUNING,
                            help="seconds between a running trial's heartbeats, 0 for none; a "
                                 "trial whose worker stops beating is failed and retried once")
    lock_timeout: int = option(60, env="SENTIMENT_LOCK_TIMEOUT", kind=int, commands=STAGES,
                               help="seconds a command waits in all for a locked or unreachable "
                                    "database (saying so after 2 s) before it gives up; a "
                                    "finished stage's result is then kept on disk")
    batch_size: int | None = option(None, env="SENTIMENT_BATCH_SIZE", kind=int, commands=SCORING,
                                    help="reviews per batch when scoring the test subset")
    behaviour: str | None = option(None, env="SENTIMENT_BEHAVIOUR", metavar="FILE",
                                   commands=AUDIT | {"run"},
                                   help="JSONL file of your own behavioural test cases, run on "
                                        "every audited model beside the built-in ones")
    trial: int | None = option(None, env="SENTIMENT_AUDIT_TRIAL", kind=int, commands=AUDIT,
                               help="also audit the model of this trial of --study")
    search_space: dict[str, Any] = option(default_factory=dict, env=None, flag=False,
                                          commands=TUNING,
                                          help="hyperparameter ranges (config file only)")

    def __post_init__(self) -> None:
        if self.trial is not None and (not isinstance(self.trial, int) or self.trial < 0):
            raise ConfigError(f"trial must be a trial number ≥ 0, got {self.trial!r}")
        for name in ("trials", "train_size", "final_train_size", "eval_size", "test_size",
                     "max_length", "batch_size", "frozen_layers"):
            value, least = getattr(self, name), 0 if name in ("trials", "frozen_layers") else 1
            if value is not None and (not isinstance(value, int) or value < least):
                raise ConfigError(f"{name} must be a whole number ≥ {least}, got {value!r}")
        if not isinstance(self.lock_timeout, int) or self.lock_timeout < 1:
            raise ConfigError(
                f"lock_timeout must be a whole number of seconds ≥ 1, got {self.lock_timeout!r}"
            )
        if self.heartbeat < 0:
            raise ConfigError(
                f"heartbeat must be 0 (off) or a number of seconds, got {self.heartbeat}"
            )
        if not self.study.strip():
            raise ConfigError("the study name is empty; pass --study NAME")
        if len(self.study) > 200:
            raise ConfigError(f"the study name has {len(self.study)} characters; use at most 200")

    def sized_for(self, device: str) -> Config:
        """Fill the unset sizes (full data on a GPU, subsets that finish on 2 CPU cores) and put
        the device's search ranges under the config's own (which win, parameter by parameter)."""
        kind = "cuda" if device.startswith("cuda") else "cpu"
        sizes = {k: v for k, v in DEVICE_DEFAULTS[kind].items() if getattr(self, k) is None}
        space = self.search_space  # a malformed one is refused, with its name, when it is used
        if isinstance(space, dict):
            space = {**DEVICE_SEARCH_SPACE[kind], **space}
        return replace(self, **sizes, search_space=space)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self, *names: str) -> str:
        """A short hash of the named fields: a stage done with the same settings is not redone."""
        picked = {n: getattr(self, n) for n in names}
        if "max_length" in names:  # what max_length keeps changed once: older results differ
            picked["truncation"] = TRUNCATION
        if not picked.get("frozen_layers"):  # nothing frozen: as every run before the option
            picked.pop("frozen_layers", None)
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


# None means "the whole split" for train/test sizes.
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cuda": {"trials": 8, "train_size": None, "final_train_size": None, "eval_size": 2500,
             "test_size": None, "max_length": 512, "batch_size": 64, "frozen_layers": 0},
    # Sized so that `run --model minilm-offline` ends within about 15 minutes on 2 CPU cores:
    # three one-epoch trials on 300 reviews pick the parameters, the final model is retrained on
    # 1,500, and both transformer stages are scored on the same 1,000 test reviews at 256
    # tokens, head and tail, with the embeddings and the lowest layer frozen (0.870 in 5 min on
    # an AVX-512 EPYC; bench/results/README.md).
    "cpu": {"trials": 3, "train_size": 300, "final_train_size": 1500, "eval_size": 200,
            "test_size": 1000, "max_length": 256, "batch_size": 32, "frozen_layers": 2},
}
# Search ranges put under the config's search_space on each device. On a CPU every trial is
# one epoch (the budget buys more reviews rather than more passes), and the learning rate
# starts where a newly initialised head learns within one epoch of a few hundred reviews.
DEVICE_SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "cuda": {},
    "cpu": {"num_train_epochs": {"low": 1, "high": 1},
            "learning_rate": {"low": 5e-5, "high": 2e-4, "log": True},
            "per_device_train_batch_size": {"choices": [16, 32]}},
}


def options_of(config_class: type = Config) -> dict[str, Option]:
    """The Option of every field that declares one, in field order.

    Args:
        config_class: a dataclass whose fields carry an Option under metadata["option"].

    Returns:
        field name -> Option.
    """
    return {f.name: f.metadata[OPTION] for f in fields(config_class) if OPTION in f.metadata}


def env_vars(options: dict[str, Option]) -> dict[str, str]:
    """field name -> environment variable, for the options that have one."""
    return {name: o.env for name, o in options.items() if o.env}


OPTIONS = options_of(Config)
# Environment variables for every option (architecture.md: "every option also has an env var").
ENV = env_vars(OPTIONS)


def flag(name: str) -> str:
    """The command-line flag of a Config field: train_size -> --train-size."""
    return "--" + name.replace("_", "-")


def default_note(name: str, config_class: type = Config) -> str:
    """How an unset option is chosen, for `--help`: its default, or the sizes for each device.

    Args:
        name: a field of config_class.
        config_class: the dataclass that declares it.

    Returns:
        e.g. "default 42", or "default: sized for the device, 8 on a GPU, 3 on a CPU".
    """
    if name in DEVICE_DEFAULTS["cpu"]:
        gpu, cpu = (DEVICE_DEFAULTS[d][name] for d in ("cuda", "cpu"))
        gpu = "the whole split" if gpu is None else gpu
        return f"default: sized for the device, {gpu} on a GPU, {cpu} on a CPU"
    f: Field = {f.name: f for f in fields(config_class)}[name]
    return "no default" if f.default is MISSING else f"default {f.default}"


def used_by(command: str, options: dict[str, Option] = OPTIONS) -> dict[str, Option]:
    """The options a command reads (the others it refuses on its command line)."""
    return {name: o for name, o in options.items() if command in o.commands}


def refusal(command: str, name: str, options: dict[str, Option] = OPTIONS) -> str:
    """The one-line error for a flag the command does not use, naming those that do.

    Args:
        command: the command given.
        name: the Config field whose flag was given.
        options: where that field's Option is.

    Returns:
        e.g. "baseline does not take --trials (used by run, tune, worker); remove it".
    """
    users = ", ".join(c for c in COMMAND_NAMES if c in options[name].commands)
    return f"{command} does not take {flag(name)} (used by {users}); remove it"


def _coerce(name: str, raw: str) -> Any:
    if OPTIONS[name].kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(
                f"{ENV.get(name, name)} must be a whole number, got {raw!r}"
            ) from None
    return raw


def load_config_file(path: str) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict of Config fields.

    Args:
        path: a .json file, or TOML under any other name.

    Returns:
        field name -> value, every key a Config field.

    Raises:
        ConfigError: the file is unreadable, malformed or has a key that is no Config field.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror}") from e
    try:
        values = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        kind = p.suffix[1:] or "TOML"
        raise ConfigError(f"the config file {path} is not valid {kind}: {e}") from e
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"the config file {path} has unknown keys {unknown}; known: {sorted(known)}"
        )
    return values


def build_config(cli: dict[str, Any], env: dict[str, str] | None = None,
                 command: str | None = None) -> Config:
    """Resolve each field: CLI > environment > config file > default.

    Args:
        cli: parsed options; None means "not given". The key "config" names a config file.
        env: the environment (os.environ when None).
        command: apply only the options this command uses: a shared config file or an exported
            variable for another command's option is ignored, not an error. None: apply all.

    Returns:
        The resolved Config.

    Raises:
        ConfigError: a value is malformed.
    """
    env = os.environ if env is None else env
    names = set(OPTIONS if command is None else used_by(command))
    values: dict[str, Any] = {}
    if cli.get("config"):
        values.update((k, v) for k, v in load_config_file(cli["config"]).items() if k in names)
    for name, var in ENV.items():
        if name in names and env.get(var):
            values[name] = _coerce(name, env[var])
    for name in names:
        if cli.get(name) is not None:
            values[name] = cli[name]
    try:
        return Config(**values)
    except TypeError as e:
        raise ConfigError(f"bad configuration: {e}") from e
