"""Classify reviews with any stored model: model references, predictors, input validation."""
from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from storage import Run, RunSpec
from trainer.errors import TrainerError

MAX_REVIEW_CHARS = 20_000
REF_HELP = "baseline, pretrained, final, trial:N or run:ID"
REF_STAGES = {"baseline": "baseline", "pretrained": "pretrained", "final": "finetuned",
              "trial": "trial"}


class Predictor(Protocol):
    name: str

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


def _stored(spec: RunSpec) -> tuple[bool, str | None]:
    artifact = spec.artifact
    if not artifact:
        return False, "no saved model for this run"
    if spec.stage == "pretrained" or Path(artifact).exists():
        return True, None
    return False, f"its saved model {artifact} no longer exists"


def _label(run_id: int, spec: RunSpec) -> str:
    if spec.stage == "trial":
        return f"trial {spec.trial} of {spec.study} (run {run_id})"
    if spec.stage == "finetuned":
        return f"fine-tuned, study {spec.study} (run {run_id})"
    return f"{spec.stage}: {Path(spec.model).name or spec.model} (run {run_id})"


def _ref(run_id: int, spec: RunSpec) -> str:
    return f"trial:{spec.trial}" if spec.stage == "trial" else f"run:{run_id}"


def model_choices(store) -> list[ModelChoice]:
    """Every stored run whose model can be loaded, newest first within each stage."""
    order = {"baseline": 0, "pretrained": 1, "finetuned": 2, "trial": 3}
    specs = sorted(store.run_specs().items(), key=lambda kv: (order.get(kv[1].stage, 9), -kv[0]))
    return [ModelChoice(_label(i, spec), _ref(i, spec), i, *_stored(spec))
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
    stage = REF_STAGES.get(kind)
    if stage is None or (kind == "trial") != arg.isdigit() or (kind != "trial" and arg):
        raise TrainerError(f"unknown model reference {ref!r}; use {REF_HELP}")
    per_study = stage in ("finetuned", "trial") and study is not None
    specs = store.run_specs(stage=stage, study=study if per_study else None)
    ids = [i for i, spec in specs.items()
           if spec.artifact and (not arg or spec.trial == int(arg))]
    if not ids:
        command = {"finetuned": "final", "trial": "tune"}.get(stage, stage)
        raise TrainerError(f"no stored {ref} model yet; run `python -m trainer {command}` first")
    return store.get_run(ids[-1])


class _BaselinePredictor:
    def __init__(self, run: Run) -> None:
        from trainer.baseline.io import load_baseline

        self.name = _label(run.id, run.spec)
        self._model = load_baseline(run.spec.artifact)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.predict_proba(list(texts))

    def explain(self, text: str, top_k: int = 10) -> list:
        return self._model.contributions(text, top_k=top_k)


class _TransformerPredictor:
    def __init__(self, run: Run, max_length: int, fast: bool = False) -> None:
        from trainer.transformer import model as transformer

        self.name = _label(run.id, run.spec)
        self._max_length = max_length
        self._clf = transformer.load_classifier(run.spec.artifact)
        self._fast = None
        if fast and self._clf.device == "cpu":
            from trainer.transformer.fast import FastClassifier

            self._fast = FastClassifier.from_classifier(self._clf, max_length=max_length)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        from trainer.transformer.model import predict_proba

        if self._fast is not None:
            return self._fast.predict_proba(list(texts))
        return predict_proba(self._clf, list(texts), max_length=self._max_length)

    def explain(self, text: str, top_k: int = 10) -> list:
        from trainer.transformer.attribution import explain

        return explain(self._clf, text, max_length=self._max_length, top_k=top_k)


def load_predictor(store, ref: str, *, max_length: int = 256, study: str | None = None,
                   fast: bool = False):
    """Load the model a reference names, ready to classify.

    fast: on a CPU, score transformer models with trainer.transformer.fast.FastClassifier (bf16 or
    int8; probabilities within about 1e-2 of fp32); explanations stay fp32.

    Raises:
        TrainerError: unknown reference, or the model's files are gone or unreadable.
    """
    run = resolve_ref(store, ref, study)
    available, reason = _stored(run.spec)
    if not available:
        raise TrainerError(f"cannot load {ref}: {reason}; train it again")
    if run.spec.stage == "baseline":
        return _BaselinePredictor(run)
    return _TransformerPredictor(run, max_length, fast)


def label_of(prob: float, threshold: float = 0.5) -> tuple[str, float]:
    """The predicted label and the probability of that label."""
    return ("positive", prob) if prob >= threshold else ("negative", 1.0 - prob)
