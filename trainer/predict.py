"""Classify reviews with any stored model: model references, predictors, review input."""
from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from storage import Run, RunSpec
from storage.records import STAGES, Stage, run_label
from trainer.errors import DataError, TrainerError

MAX_REVIEW_CHARS = 20_000
REF_HELP = ", ".join(f"{s.ref}:N" if s is Stage.TRIAL else s.ref for s in Stage) + " or run:ID"
REVIEW_COLUMNS = ("text", "review")  # header names of the review column, in this preference
UNTRAINED_HEAD = "untrained (chance-level)"  # the `head` of a prediction whose head is random


class Predictor(Protocol):
    """A loaded model: untrained_head is True when its head is random (chance-level scores);
    notes say what a user should know before reading its scores."""

    name: str
    untrained_head: bool
    notes: tuple[str, ...]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def explain(self, text: str, top_k: int = 10) -> list: ...


@dataclass(frozen=True)
class ModelChoice:
    """A stored model a user can pick, and whether its saved files are still there."""

    label: str
    ref: str
    run_id: int
    available: bool
    reason: str | None = None


def validate_review(text: str, max_chars: int = MAX_REVIEW_CHARS) -> str:
    """Return the review without NUL and other control characters (newlines and tabs kept).

    Raises:
        TrainerError: the review is empty, whitespace only, or longer than max_chars.
    """
    cleaned = "".join(
        c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs")
    )
    if not cleaned.strip():
        raise TrainerError("the review is empty; type or paste some text to classify")
    if len(cleaned) > max_chars:
        raise TrainerError(
            f"the review has {len(cleaned):,} characters; shorten it to at most {max_chars:,}"
        )
    return cleaned


@dataclass(frozen=True, eq=False)
class ReviewTable:
    """A CSV of reviews as uploaded: every column as text, and the one that holds the reviews."""

    frame: pd.DataFrame  # every column, in the file's order, as str ("" where a row is short)
    column: str  # the name of the review column in `frame`
    source: str  # the file's name, for messages
    headerless: bool = False  # one column and no header: the first row is a review too

    @property
    def reviews(self) -> list[str]:
        """The review of each row, in file order."""
        return self.frame[self.column].tolist()

    @property
    def notice(self) -> str | None:
        """How the file was read, where the user should know: None when it had a header."""
        if not self.headerless:
            return None
        return (f"{self.source} has one column and no header row, so its first row was read "
                "as a review too; to give the file a header, name the column text")

    def __len__(self) -> int:
        return len(self.frame)


def read_reviews_csv(data: bytes, source: str, *, max_rows: int | None = None) -> ReviewTable:
    """Parse a CSV of reviews (UTF-8 with or without BOM, LF or CRLF, quoted line breaks).

    The reviews are in the column named 'text' or 'review' (any case, spaces around ignored),
    or in the only column. A file of one column has a header row only when its first cell is
    'text', 'review' (the same way) or blank; otherwise every row, the first included, is a
    review, the column is called 'text' and the table is `headerless` (its `notice` says so).
    A file of several columns always has a header. Blank lines are skipped; a short row reads
    "" for what it lacks.

    Args:
        data: the file's bytes.
        source: the file's name, as messages should call it.
        max_rows: the most reviews accepted (None: any number).

    Returns:
        The whole table, and which of its columns holds the reviews.

    Raises:
        DataError: invalid UTF-8 (with the line), not a readable CSV, a field longer than the
            csv module reads (with its line), empty, no review column, a header but no
            reviews, or more than max_rows reviews.
    """
    rows = _csv_rows(_decoded(data, source), source)
    if not rows:
        raise DataError(f"{source} is empty; expected a header row with a column named text, "
                        "then one review per row")
    headerless = not _has_header(rows[0])
    if headerless:
        rows = [[REVIEW_COLUMNS[0]], *rows]
    names = _unique([str(h) for h in rows[0]])
    column = _review_column(names, source)
    body = rows[1:]
    if not body:
        raise DataError(f"{source} has a header but no reviews; add one review per row")
    if max_rows is not None and len(body) > max_rows:
        raise DataError(f"{source} has {len(body):,} reviews; give at most {max_rows:,} at a "
                        "time (split the file)")
    frame = pd.DataFrame([r + [""] * (len(names) - len(r)) for r in body], columns=names,
                         dtype=str)
    return ReviewTable(frame, column, source, headerless)


def _has_header(first: list[str]) -> bool:
    """Whether the first row names columns: always with several, else 'text', 'review' or ""."""
    return len(first) > 1 or first[0].strip().lower() in ("", *REVIEW_COLUMNS)


def _decoded(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f'{source} is not valid UTF-8 (line {line}); save it as "CSV UTF-8" '
                        "and try again") from None


def _csv_rows(text: str, source: str) -> list[list[str]]:
    """Non-blank rows; the header's width is the most fields a row may have."""
    if not text.strip():
        return []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[list[str]] = []
    while True:
        start = reader.line_num + 1  # a quoted line break makes a record span several lines
        try:
            row = next(reader, None)
        except csv.Error as e:
            raise _unreadable(e, source, start, reader.line_num) from None
        if row is None:
            return rows
        if rows and len(row) > len(rows[0]):
            first = "the header" if _has_header(rows[0]) else "the first row"
            raise DataError(
                f"{source} is not a readable CSV (the row from line {start} has {len(row)} "
                f"fields, {first} {len(rows[0])}); quote fields that hold commas, then try "
                "again")
        if row:
            rows.append(row)


def _unreadable(e: csv.Error, source: str, start: int, line: int) -> DataError:
    """The csv module's error as what the user can fix: a far too long review, or a quote.

    csv stops at a field over its field_size_limit. Within one line that is one review (quoted
    or not) far over the limit a review may have; across lines it is a quote left open. The
    limit stays as it is: it is process-wide (the dashboard reads uploads on several threads),
    it bounds what an open quote can swallow, and so long a review is refused anyway.
    """
    detail, limit = str(e), csv.field_size_limit()  # no argument: reads, does not change it
    if "field limit" in detail and line == start:
        return DataError(
            f"{source} has a field longer than {limit:,} characters on line {line}; reviews "
            f"are limited to {MAX_REVIEW_CHARS:,} characters, so shorten that review or leave "
            "it out, then try again")
    if "field limit" in detail:
        detail = (f"a quoted field still open on line {line}, over {limit:,} characters long "
                  f"where a review may have {MAX_REVIEW_CHARS:,}")
    return DataError(
        f"{source} is not a readable CSV (the row from line {start}: {detail}); check that every "
        "quote is closed and that fields holding commas, quotes or line breaks are quoted, "
        "then try again")


def _unique(names: list[str]) -> list[str]:
    """Header names made unique as pandas does: a repeated name gets .1, .2, ..."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}.{count}")
    return out


def _review_column(names: list[str], source: str) -> str:
    by_key = {}
    for name in names:
        by_key.setdefault(name.strip().lower(), name)
    for key in REVIEW_COLUMNS:
        if key in by_key:
            return by_key[key]
    if len(names) == 1:
        return names[0]
    raise DataError(f"expected a column named 'text' or 'review' (or a single column) in "
                    f"{source}, found {names}; rename the column that holds the reviews to text")


def _stored(spec: RunSpec) -> tuple[bool, str | None]:
    artifact = spec.artifact
    if not artifact:
        return False, "no saved model for this run"
    if spec.stage == Stage.PRETRAINED or Path(artifact).exists():  # a hub id is no path
        return True, None
    return False, f"its saved model {artifact} no longer exists"


def _ref(run_id: int, spec: RunSpec) -> str:
    return f"{Stage.TRIAL.ref}:{spec.trial}" if spec.stage == Stage.TRIAL else f"run:{run_id}"


def _listing_order(spec: RunSpec) -> int:
    return Stage(spec.stage).order if spec.stage in STAGES else len(Stage)


def model_choices(store) -> list[ModelChoice]:
    """Every stored run whose model can be loaded, newest first within each stage."""
    specs = sorted(store.run_specs().items(), key=lambda kv: (_listing_order(kv[1]), -kv[0]))
    return [ModelChoice(run_label(i, spec), _ref(i, spec), i, *_stored(spec))
            for i, spec in specs if spec.artifact]


def resolve_ref(store, ref: str, study: str | None = None) -> Run:
    """Find the run a model reference names.

    Args:
        ref: baseline | pretrained | final | trial:N | run:ID (the newest matching run).
        study: the study for `final` and `trial:N` (any study when None).

    Raises:
        TrainerError: the reference is malformed or names no stored model.
    """
    kind, _, arg = ref.partition(":")
    if kind == "run" and arg.isdigit():
        return store.get_run(int(arg))
    stage = Stage.of_ref(kind)
    numbered = stage is Stage.TRIAL
    if stage is None or numbered != arg.isdigit() or (not numbered and arg):
        raise TrainerError(f"unknown model reference {ref!r}; use {REF_HELP}")
    per_study = stage in (Stage.FINETUNED, Stage.TRIAL) and study is not None
    specs = store.run_specs(stage=stage, study=study if per_study else None)
    ids = [i for i, spec in specs.items()
           if spec.artifact and (not arg or spec.trial == int(arg))]
    if not ids:
        raise TrainerError(
            f"no stored {ref} model yet; run `python -m trainer {stage.command}` first")
    return store.get_run(ids[-1])


class _BaselinePredictor:
    untrained_head = False
    notes: tuple[str, ...] = ()

    def __init__(self, run: Run) -> None:
        from trainer.baseline.io import load_baseline

        self.name = run.label
        self._model = load_baseline(run.spec.artifact)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.predict_proba(list(texts))

    def explain(self, text: str, top_k: int = 10) -> list:
        return self._model.contributions(text, top_k=top_k)


class _TransformerPredictor:
    def __init__(self, run: Run, max_length: int, fast: bool = False,
                 seed: int | None = None, fast_min_tokens: int | None = None) -> None:
        from trainer.transformer import model as transformer

        self.name = run.label
        self._max_length = max_length
        # The seed the run was scored with, so a new head is the one its stored scores came from.
        seed = run.spec.config.get("seed", transformer.DEFAULT_SEED) if seed is None else seed
        self._clf = transformer.load_classifier(run.spec.artifact, seed=int(seed))
        self.untrained_head = self._clf.new_head
        self.notes = (*self._clf.notes, *_head_notes(self._clf.new_head, self.name, seed))
        self._fast = None
        if fast and self._clf.device == "cpu":
            from trainer.transformer.fast import FAST_MIN_TOKENS, WorkSizedScorer

            least = FAST_MIN_TOKENS if fast_min_tokens is None else fast_min_tokens
            self._fast = WorkSizedScorer(self._clf, max_length=max_length, min_tokens=least)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        from trainer.transformer.model import predict_proba

        if self._fast is not None:
            return self._fast.predict_proba(list(texts))
        return predict_proba(self._clf, list(texts), max_length=self._max_length)

    def explain(self, text: str, top_k: int = 10) -> list:
        from trainer.transformer.attribution import explain

        return explain(self._clf, text, max_length=self._max_length, top_k=top_k)


def _head_notes(new_head: bool, name: str, seed: int) -> tuple[str, ...]:
    if not new_head:
        return ()
    return (f"{name} has an untrained classification head (the checkpoint has none; drawn with "
            f"seed {seed}), so its scores are chance-level; fine-tune it with "
            "`python -m trainer tune`",)


def load_predictor(store, ref: str, *, max_length: int = 256, study: str | None = None,
                   fast: bool = False, seed: int | None = None,
                   fast_min_tokens: int | None = None) -> Predictor:
    """Load the model a reference names, ready to classify.

    Args:
        store: the open store.
        ref: a model reference (REF_HELP).
        max_length: tokens kept per review by a transformer model.
        study: the study for `final` and `trial:N`.
        fast: on a CPU, score transformer models with trainer.transformer.fast.WorkSizedScorer:
            eager for little work, a FastClassifier (bf16 or int8; probabilities within about
            1e-2 of fp32) once a call brings enough tokens to earn its preparation back;
            explanations stay fp32.
        seed: seeds a checkpoint's new head; None: the seed the run was scored with.
        fast_min_tokens: the tokens one call must bring to prepare the fast path (None:
            FAST_MIN_TOKENS, for one-shot calls; 0: at the first call, for a long-lived server).

    Returns:
        The predictor; its untrained_head and notes say what to tell the user.

    Raises:
        TrainerError: unknown reference, or the model's files are gone or unreadable.
    """
    run = resolve_ref(store, ref, study)
    available, reason = _stored(run.spec)
    if not available:
        raise TrainerError(f"cannot load {ref}: {reason}; train it again")
    if run.spec.stage == Stage.BASELINE:
        return _BaselinePredictor(run)
    return _TransformerPredictor(run, max_length, fast, seed, fast_min_tokens)


def label_of(prob: float, threshold: float = 0.5) -> tuple[str, float]:
    """The predicted label and the probability of that label."""
    return ("positive", prob) if prob >= threshold else ("negative", 1.0 - prob)


def prediction_record(prob_positive: float, predictor: Predictor) -> dict[str, object]:
    """One review's prediction as `predict` prints it (a JSON line).

    Args:
        prob_positive: the model's probability of the positive class.
        predictor: the model that gave it.

    Returns:
        label; score, the probability of that label (kept for compatibility); prob_positive;
        model; and head = UNTRAINED_HEAD when the model's head is untrained.
    """
    label, score = label_of(prob_positive)
    record: dict[str, object] = {"label": label, "score": round(score, 6),
                                 "prob_positive": round(prob_positive, 6),
                                 "model": predictor.name}
    if predictor.untrained_head:
        record["head"] = UNTRAINED_HEAD
    return record
