"""Command line: add_arguments + run per subcommand; each builds a Config and calls the library."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from storage import StorageError
from trainer.config import Config, build_config, default_note, flag, options_of, refusal
from trainer.errors import ConfigError, DataError, TrainerError
from trainer.predict import REF_HELP


class RefusedFlag(argparse.Action):
    """A flag the command does not use: giving it raises ConfigError with `message`."""

    def __init__(self, option_strings: list[str], dest: str, message: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS, **kwargs)
        self.message = message

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        raise ConfigError(self.message)


class ConsoleHandler(logging.Handler):
    """Log lines on stderr, above any progress bar, each once.

    huggingface_hub and datasets print through their own handlers and still propagate to the
    root: their records are left to them, or every such line would appear twice.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(lambda record: not printed_by_own_handler(record))

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)  # clears and redraws the bars
        except Exception:
            self.handleError(record)


def printed_by_own_handler(record: logging.LogRecord) -> bool:
    """Whether a logger between the record's and the root has a handler of its own."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None and logger is not logging.root:
        if logger.handlers:
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def add_config_options(
    p: argparse.ArgumentParser, command: str, config_class: type = Config
) -> None:
    """Add the Config options `command` uses, generated from the fields' metadata; refuse the rest.

    A flag the command declares itself (predict's --max-length and --model) is kept as it is.

    Args:
        p: the command's parser, its own arguments added already.
        command: the command's name.
        config_class: the dataclass whose fields declare the options (Config).
    """
    options = options_of(config_class)
    g = p.add_argument_group("configuration", "Each option also reads the environment "
                             "variable in brackets; the command line wins over the environment, "
                             "which wins over the --config file.")
    for name, opt in options.items():
        if not opt.flag:
            continue
        if command in opt.commands:
            env = f" [{opt.env}]" if opt.env else ""
            g.add_argument(flag(name), type=opt.kind, metavar=opt.metavar,
                           help=f"{opt.help}{env} ({default_note(name, config_class)})")
        else:
            # argparse raises on a flag declared twice: the command's own declaration wins.
            with contextlib.suppress(argparse.ArgumentError):
                p.add_argument(flag(name), action=RefusedFlag,
                               message=refusal(command, name, options))
    g.add_argument("--config", metavar="FILE",
                   help="TOML or JSON file with any of the options (search_space too); keys "
                        "this command does not use are ignored")


def _config(args: argparse.Namespace) -> Config:
    return build_config(vars(args), command=args.command)


def _store(config: Config, *, read_only: bool = False):
    from storage.store import open_store

    if read_only:  # predict and report only read: they never migrate or create anything
        return open_store(config.db, read_only=True)
    return open_store(config.db, lock_timeout_s=config.lock_timeout)


@contextlib.contextmanager
def _context(args: argparse.Namespace) -> Iterator[Any]:
    """The stages' Context; a command that fails before writing leaves no new database file."""
    from trainer.stages import Context

    config = _config(args)
    store = _store(config)
    try:
        yield Context(config, store, progress=not args.quiet)
    except BaseException:
        store.discard_if_unused()
        raise


def shown_db(config: Config) -> str:
    """The database URL as messages show it (password and secret parameters masked)."""
    from storage.engine import display_url, normalize_url

    return display_url(normalize_url(config.db))


@contextlib.contextmanager
def _naming_database(config: Config, *, when: bool = True) -> Iterator[None]:
    """A lookup that finds nothing says which database it read (the default or --db)."""
    from storage.store import NotFilledError

    try:
        yield
    except (NotFilledError, TrainerError) as e:
        if not when or shown_db(config) in str(e):
            raise
        raise TrainerError(naming_database(str(e), config)) from e


def naming_database(message: str, config: Config) -> str:
    """`message`, with the database it is about added when it does not name it yet."""
    shown = shown_db(config)
    return message if shown in message else f"{message.rstrip('.')} (database {shown})"


def _print_runs(ctx, runs) -> None:
    from trainer.report import summary

    print(summary(ctx.store, runs))


def run_main_job(args: argparse.Namespace) -> int:
    from trainer import stages

    with _context(args) as ctx:
        _print_runs(ctx, stages.run_all(ctx))
    return 0


def _stage_runner(stage_name: str, transformers: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from trainer import stages

        with _context(args) as ctx:
            if transformers:
                ctx.config = stages.for_transformers(ctx.config)
            # final looks a study and its best trial up: finding none names the database.
            with _naming_database(ctx.config, when=stage_name == "final"):
                _print_runs(ctx, [getattr(stages, stage_name)(ctx)])
        return 0

    return run


def _tune_runner(join: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from trainer import stages
        from trainer.report import studies_table, study_entries

        with _context(args) as ctx:
            ctx.config = stages.for_transformers(ctx.config)
            study = stages.tune(ctx, ctx.config.trials, join=join)
            print(studies_table(study_entries(ctx.store.url, study.study_name)))
        return 0

    return run


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="*", metavar="TEXT", help="reviews to classify")
    p.add_argument("--file", help="CSV with a 'text' or 'review' column (or a single column)")
    p.add_argument(
        "--model-ref",
        default="baseline",
        metavar="REF",
        help=f"which stored model: {REF_HELP} (default baseline)",
    )
    p.add_argument("--max-length", type=int, default=256, metavar="N",
                   help="tokens kept per review by a transformer model (default 256)")
    p.add_argument("--fast", action="store_true",
                   help="on a CPU, score with bf16 or int8: several times faster for many "
                        "reviews; probabilities may differ from fp32 in the second decimal. "
                        "Preparing takes seconds, so a call with too little work to earn that "
                        "back is scored exactly as without it")
    p.add_argument("--model", action=RefusedFlag,
                   message="predict classifies with a stored model; choose it with --model-ref "
                           f"({REF_HELP}), not --model")


def run_predict(args: argparse.Namespace) -> int:
    from trainer.predict import (
        load_predictor,
        prediction_record,
        read_reviews_csv,
        validate_review,
    )

    config = _config(args)
    texts = list(args.texts)
    if args.file:
        try:
            data = Path(args.file).read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {args.file}: {e.strerror}; check the path") from e
        table = read_reviews_csv(data, args.file)
        if table.notice:  # stdout stays JSON lines only
            print(f"note: {table.notice}", file=sys.stderr)
        texts += table.reviews
    if not texts:
        raise TrainerError("no review given; pass TEXT arguments or --file reviews.csv")
    texts = [validate_review(t) for t in texts]
    with _naming_database(config):
        predictor = load_predictor(
            _store(config, read_only=True), args.model_ref, max_length=args.max_length,
            study=config.study, fast=args.fast,
        )
    for note in predictor.notes:  # once per call, on stderr: stdout stays JSON lines only
        print(f"note: {note}", file=sys.stderr)
    for prob in predictor.predict_proba(texts):
        print(json.dumps(prediction_record(float(prob), predictor)))
    return 0


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print report JSON")
    p.add_argument("--with-trials", action="store_true", help="include every trial's run")


def run_report(args: argparse.Namespace) -> int:
    from storage.store import FILL_COMMAND, NotFilledError, open_store
    from trainer.report import build_report, empty_report, render

    config, note = _config(args), None
    try:  # a report only reads: nothing is created, migrated or switched to WAL
        store = open_store(config.db, read_only=True)
    except NotFilledError as e:  # nothing stored yet: an empty report, and what fills it
        report, note = empty_report(), naming_database(str(e), config)
    else:
        with store:
            report = build_report(store, with_trials=args.with_trials)
        if not report["runs"] and not report["studies"]:
            note = (f"The database {shown_db(config)} holds no evaluated model and no study "
                    f"yet; {FILL_COMMAND} fills it.")
    print(json.dumps(report, indent=2) if args.json else render(report))
    if note is not None and not args.json:  # --json prints the one object, nothing else
        print(f"\n{note}")
    return 0


def run_audit_command(args: argparse.Namespace) -> int:
    from trainer import stages
    from trainer.report import audit_summary

    with _context(args) as ctx:
        print(audit_summary(ctx.store, stages.audit(ctx)))
    return 0


def add_stage_arguments(p: argparse.ArgumentParser) -> None:
    """The stage commands take only the Config options, which every command gets."""


# name -> (help, add_arguments, run); build_parser adds each command's Config options.
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "run": (
        "the main job: baseline → pretrained → tune → final (resumable)",
        add_stage_arguments,
        run_main_job,
    ),
    "baseline": (
        "stage 1: TF-IDF + logistic regression on the whole train split",
        add_stage_arguments,
        _stage_runner("baseline", False),
    ),
    "pretrained": (
        "stage 2: score the pretrained model, before fine-tuning, on the test split",
        add_stage_arguments,
        _stage_runner("pretrained", True),
    ),
    "tune": (
        "stage 3: create or resume the Optuna study and run --trials more trials",
        add_stage_arguments,
        _tune_runner(False),
    ),
    "worker": (
        "join an existing study (same --db) from another process or machine",
        add_stage_arguments,
        _tune_runner(True),
    ),
    "final": (
        "stage 4: score the study's best model once on the test split",
        add_stage_arguments,
        _stage_runner("final", True),
    ),
    "predict": (
        "classify reviews given as arguments or in --file; prints JSON lines",
        add_predict_arguments,
        run_predict,
    ),
    "report": (
        "what the database holds: one row per evaluated model, one per study",
        add_report_arguments,
        run_report,
    ),
    "audit": (
        "audit the data and the stored models: duplicates and leakage, label issues, behaviour, "
        "slices, truncation",
        add_stage_arguments,
        run_audit_command,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train, tune and inspect movie-review sentiment classifiers.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        add_config_options(p, name)
        # Also accepted after the command; SUPPRESS keeps the top-level value when absent.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks")
        p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ConfigError as e:  # a flag the command does not use (RefusedFlag)
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not logging.root.handlers:  # as logging.basicConfig: an embedding program's setup wins
        logging.root.addHandler(ConsoleHandler())
        logging.root.setLevel(logging.WARNING)
    logging.getLogger("trainer").setLevel(logging.INFO)
    try:
        return COMMANDS[args.command][2](args)
    except (TrainerError, StorageError, ValueError) as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
