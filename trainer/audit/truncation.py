"""How many test reviews a transformer run cut at its max length, in its own tokenizer."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from storage import Run
from storage.records import TruncationResult
from trainer.audit.slices import THRESHOLD

log = logging.getLogger(__name__)

BATCH = 1000  # reviews per tokenizer call


def load_tokenizer(run: Run) -> tuple[Any, int] | None:
    """The tokenizer of a run's model and the tokens it kept per review, offline only.

    The limit follows trainer.transformer.model.token_limit: the run's max_length, capped by
    the model's positions and the tokenizer's own maximum.

    Args:
        run: a stored pretrained or fine-tuned run (artifact: its model; config: max_length).

    Returns:
        (tokenizer, token limit), or None, with a logged warning, when the run names no model
        or max_length, or its tokenizer cannot be loaded from local files.
    """
    artifact, max_length = run.spec.artifact, run.spec.config.get("max_length")
    if not artifact or not max_length:
        log.warning("truncation of run %d skipped: it stores no model or no max_length", run.id)
        return None
    try:
        from transformers import AutoConfig, AutoTokenizer

        from trainer.transformer.model import token_limit

        tokenizer = AutoTokenizer.from_pretrained(artifact, trust_remote_code=False,
                                                  local_files_only=True)
        config = AutoConfig.from_pretrained(artifact, trust_remote_code=False,
                                            local_files_only=True)
    except (OSError, ValueError, TypeError, ImportError) as e:
        log.warning("truncation of run %d skipped: the tokenizer of %s could not be loaded "
                    "offline (%s)", run.id, artifact, str(e).strip().splitlines()[0] if str(e)
                    else type(e).__name__)
        return None
    shim = SimpleNamespace(model=SimpleNamespace(config=config), tokenizer=tokenizer)
    return tokenizer, token_limit(shim, int(max_length))


def token_counts(tokenizer: Any, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
    """Tokens of each text with the model's special tokens, untruncated.

    Args:
        tokenizer: a Hugging Face tokenizer.
        texts: the reviews.
        progress: show a progress bar.

    Returns:
        One count per text.
    """
    from tqdm.auto import tqdm

    counts = np.zeros(len(texts), dtype=np.int64)
    for start in tqdm(range(0, len(texts), BATCH), disable=not progress, unit="batch",
                      desc="audit: truncation"):
        batch = list(texts[start:start + BATCH])
        ids = tokenizer(batch, add_special_tokens=True, truncation=False, verbose=False)
        counts[start:start + len(batch)] = [len(x) for x in ids["input_ids"]]
    return counts


def truncation_result(run_id: int, predictions: pd.DataFrame, tokens: Mapping[str, int],
                      limit: int) -> TruncationResult:
    """Share of a run's scored reviews longer than `limit` tokens, and accuracy on each side.

    Args:
        run_id: the stored run.
        predictions: its predictions (review_id, label, prob), as Store.predictions gives them.
        tokens: each review's token count by id (reviews not in it are left out).
        limit: the tokens the run kept per review.

    Returns:
        The counts; an accuracy is NaN when its side holds no review.
    """
    scored = predictions.dropna(subset=["prob"])
    scored = scored[scored["review_id"].isin(tokens.keys())]
    right = (scored["prob"].to_numpy() >= THRESHOLD) == scored["label"].to_numpy()
    cut = scored["review_id"].map(tokens).to_numpy() > limit

    def accuracy(mask: np.ndarray) -> float:
        return float(np.mean(right[mask])) if mask.any() else float("nan")

    return TruncationResult(run_id, limit, len(scored), int(cut.sum()), accuracy(cut),
                            accuracy(~cut))


def run_truncation(run: Run, predictions: pd.DataFrame, texts: Mapping[str, str], *,
                   progress: bool = False) -> TruncationResult | None:
    """Truncation of one transformer run on the reviews it scored.

    Args:
        run: a stored pretrained or fine-tuned run.
        predictions: its stored predictions.
        texts: review texts by id (the split it was scored on).
        progress: show a progress bar while tokenising.

    Returns:
        The result, or None (logged) when its tokenizer cannot be loaded.
    """
    loaded = load_tokenizer(run)
    if loaded is None:
        return None
    tokenizer, limit = loaded
    ids = [i for i in predictions["review_id"] if i in texts]
    counts = token_counts(tokenizer, [texts[i] for i in ids], progress=progress)
    return truncation_result(run.id, predictions, dict(zip(ids, counts.tolist(), strict=True)),
                             limit)
