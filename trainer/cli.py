"""Command line: one add_arguments + run per subcommand; each builds a Config and calls the library."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from storage import StorageError
from trainer.config import Config, build_config
from trainer.errors import DataError, TrainerError


def _common(p: argparse.ArgumentParser, *, sizes: bool = True) -> None:
    """Options shared by the data/model commands; defaults are None so 'unset' is visible."""
    g = p.add_argument_group("where (each also has an environment variable)")
    g.add_argument(
        "--db", help="database URL [SENTIMENT_DB] (default sqlite:///runs/sentiment.db)"
    )
    g.add_argument(
        "--data",
        help="hub id, or a folder of train/test parquet|csv|jsonl, or aclImdb "
        "[IMDB_DATA] (default stanfordnlp/imdb)",
    )
    g.add_argument(
        "--model", help="hub id, local model folder, or minilm-offline [SENTIMENT_MODEL]"
    )
    g.add_argument("--study", help="Optuna study name [SENTIMENT_STUDY] (default imdb-finetune)")
    g.add_argument("--artifacts", help="folder for saved models [SENTIMENT_ARTIFACTS]")
    g.add_argument("--config", help="TOML or JSON file with any of these options and search_space")
    if sizes:
        s = p.add_argument_group("sizes (default: full data on a GPU, small subsets on a CPU)")
        for flag in (
            "trials",
            "train-size",
            "eval-size",
            "test-size",
            "max-length",
            "seed",
            "batch-size",
            "heartbeat",
        ):
            s.add_argument(f"--{flag}", type=int)


def _config(args: argparse.Namespace) -> Config:
    return build_config(vars(args))


def _store(config: Config):
    from storage.store import open_store

    return open_store(config.db)


def _context(args: argparse.Namespace):
    from trainer.stages import Context

    config = _config(args)
    return Context(config, _store(config), progress=not args.quiet)


def _print_runs(ctx, runs) -> None:
    from trainer.report import summary

    print(summary(ctx.store, runs))


def run_main_job(args: argparse.Namespace) -> int:
    from trainer import stages

    ctx = _context(args)
    _print_runs(ctx, stages.run_all(ctx))
    return 0


def _stage_runner(stage_name: str, transformers: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from trainer import stages

        ctx = _context(args)
        if transformers:
            ctx.config = stages.for_transformers(ctx.config)
        _print_runs(ctx, [getattr(stages, stage_name)(ctx)])
        return 0

    return run


def _tune_runner(join: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from trainer import stages
        from trainer.report import studies_table, study_entries

        ctx = _context(args)
        ctx.config = stages.for_transformers(ctx.config)
        study = stages.tune(ctx, ctx.config.trials, join=join)
        print(studies_table(study_entries(ctx.store.url, study.study_name)))
        return 0

    return run


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="*", metavar="TEXT", help="reviews to classify")
    p.add_argument("--file", help="CSV with a 'text' column (or a single column)")
    p.add_argument(
        "--model-ref",
        default="baseline",
        help="baseline | pretrained | final | trial:N | run:ID (default baseline)",
    )
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--fast", action="store_true",
                   help="on a CPU, score with bf16 or int8: several times faster for many "
                        "reviews; probabilities may differ from fp32 in the second decimal")
    _common(p, sizes=False)


def run_predict(args: argparse.Namespace) -> int:
    from trainer.predict import label_of, load_predictor, validate_review

    config = _config(args)
    if args.model:
        raise TrainerError("predict classifies with a stored model; choose it with --model-ref "
                           "(baseline, pretrained, final, trial:N or run:ID), not --model")
    texts = list(args.texts) + (read_reviews_csv(args.file) if args.file else [])
    if not texts:
        raise TrainerError("no review given; pass TEXT arguments or --file reviews.csv")
    texts = [validate_review(t) for t in texts]
    predictor = load_predictor(
        _store(config), args.model_ref, max_length=args.max_length, study=config.study,
        fast=args.fast,
    )
    for prob in predictor.predict_proba(texts):
        label, score = label_of(float(prob))
        print(
            json.dumps(
                {
                    "label": label,
                    "score": round(score, 6),
                    "p_positive": round(float(prob), 6),
                    "model": predictor.name,
                }
            )
        )
    return 0


def read_reviews_csv(path: str) -> list[str]:
    """Reviews from a CSV: the 'text' column, or the only column. BOM and CRLF are fine.

    Raises:
        DataError: missing file, invalid UTF-8, no usable column.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}; check the path") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path} is not valid UTF-8 (line {line}); save it as UTF-8 and retry"
        ) from e
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:  # e.g. a field over csv's 131,072-character limit
        raise DataError(f"{path} is not a readable CSV ({e}); expected one review per row, "
                        "quoted when it holds commas or line breaks; fix it and retry") from e
    if not rows:
        raise DataError(f"{path} is empty; expected a header row with a 'text' column")
    header = [h.strip().lower() for h in rows[0]]
    if "text" in header:
        col = header.index("text")
    elif len(header) == 1:
        col = 0
    else:
        raise DataError(f"expected a 'text' column in {path}, found {rows[0]}")
    return [r[col] for r in rows[1:] if len(r) > col]


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print report JSON")
    p.add_argument("--with-trials", action="store_true", help="include every trial's run")
    _common(p, sizes=False)


def run_report(args: argparse.Namespace) -> int:
    from trainer.report import build_report, render

    report = build_report(_store(_config(args)), with_trials=args.with_trials)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


# name -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "run": (
        "the main job: baseline → pretrained → tune → final (resumable)",
        _common,
        run_main_job,
    ),
    "baseline": (
        "stage 1: TF-IDF + logistic regression on the whole train split",
        _common,
        _stage_runner("baseline", False),
    ),
    "pretrained": (
        "stage 2: score the pretrained model, before fine-tuning, on the test split",
        _common,
        _stage_runner("pretrained", True),
    ),
    "tune": (
        "stage 3: create or resume the Optuna study and run --trials more trials",
        _common,
        _tune_runner(False),
    ),
    "worker": (
        "join an existing study (same --db) from another process or machine",
        _common,
        _tune_runner(True),
    ),
    "final": (
        "stage 4: score the study's best model once on the test split",
        _common,
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
        # Also accepted after the command; SUPPRESS keeps the top-level value when absent.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
        p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
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
