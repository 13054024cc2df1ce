"""Fine-tune a sequence classifier for sentiment: the Hugging Face Trainer or our fast loop."""
from __future__ import annotations

import functools
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.errors import ConfigError, TrainingDiverged
from trainer.transformer.loop import frozen_lower, train_fast
from trainer.transformer.model import (
    Classifier,
    default_device,
    free_memory,
    load_classifier,
    predict_proba,
    token_limit,
)
from trainer.transformer.params import resolve
from trainer.transformer.truncate import encode_ids


def fine_tune(model: str, train_texts: Sequence[str], train_labels: Sequence[int],
              val_texts: Sequence[str], val_labels: Sequence[int], params: dict, *,
              max_length: int, output_dir: str | Path, seed: int,
              on_epoch: Callable[[int, np.ndarray], None] | None = None,
              device: str | None = None, progress: bool = False,
              engine: str = "auto", frozen_layers: int = 0) -> Classifier:
    """Fine-tune a model for binary sentiment.

    Two engines share the same contract and parameter checks (trainer.transformer.params): the
    Hugging Face Trainer ("hf"), and trainer.transformer.loop's length-bucketed loop ("fast":
    11-12x the throughput of a plain Trainer script that pads to 512 tokens in fp32 on an H200;
    on a CPU, far less padding than random batches; `python -m bench train` measures
    both). "auto" is "fast" on every device.

    Args:
        model: hub id, local directory or OFFLINE_MODELS name.
        train_texts: training reviews.
        train_labels: 0 negative, 1 positive.
        val_texts: validation reviews, scored after every epoch.
        val_labels: their labels (only checked here: the caller scores on_epoch's probabilities).
        params: learning_rate, warmup_ratio, num_train_epochs, per_device_train_batch_size,
            weight_decay; missing ones take trainer.transformer.params.DEFAULTS.
        max_length: tokens kept per review.
        output_dir: Trainer's working directory (no checkpoints are written there).
        seed: seeds the new head's initialisation, shuffling and dropout.
        on_epoch: called as on_epoch(epoch, validation probabilities) after each epoch, epochs
            counted from 1; whatever it raises (e.g. optuna.TrialPruned) propagates unchanged.
        device: "cuda" or "cpu"; default_device() when None.
        progress: show tqdm bars.
        engine: "auto", "hf" or "fast".
        frozen_layers: the lowest layers kept as pretrained, the embeddings counted as the
            first (trainer.transformer.loop.frozen_lower).

    Returns:
        The trained classifier in eval mode, with new_head False.

    Raises:
        ConfigError: a hyperparameter is unknown or out of range.
        ModelError: the model cannot be loaded.
        TrainingDiverged: the loss became NaN or infinite.
    """
    from transformers import set_seed

    hp = resolve(params)
    if engine not in ("auto", "hf", "fast"):
        raise ConfigError(f"unknown training engine {engine!r}; use auto, hf or fast")
    if len(val_texts) != len(val_labels):
        raise ConfigError(f"got {len(val_texts)} validation texts but {len(val_labels)} labels; "
                          f"pass one label each")
    device = device or default_device()
    set_seed(seed)  # shuffling and dropout
    clf = load_classifier(model, device=device, seed=seed)  # a new head drawn from seed
    fast = engine in ("auto", "fast")
    trainer = None
    try:
        if fast:
            trained = train_fast(clf.model, clf.tokenizer, train_texts, train_labels, val_texts,
                                 hp, max_length=token_limit(clf, max_length),
                                 seed=seed, on_epoch=on_epoch, device=device, progress=progress,
                                 positive_index=clf.positive_index, frozen_layers=frozen_layers)
        else:
            trainer = _build_trainer(clf, (train_texts, train_labels), val_texts, hp,
                                     max_length=token_limit(clf, max_length),
                                     output_dir=output_dir, seed=seed, on_epoch=on_epoch,
                                     progress=progress)
            with frozen_lower(clf.model, frozen_layers):
                trainer.train()
            trained = trainer.model.eval()
    except BaseException as error:
        # The traceback keeps every frame's locals (model, optimizer) alive: clear them so the
        # memory is freed now, while the exception itself propagates unchanged.
        trainer = clf = None
        traceback.clear_frames(error.__traceback__)
        free_memory()
        raise
    result = Classifier(trained, clf.tokenizer, clf.positive_index, False, model, device)
    trainer = clf = None
    free_memory()
    return result


class _Encoded(torch.utils.data.Dataset):
    """Reviews tokenised once, without padding (DataCollatorWithPadding pads each batch)."""

    def __init__(self, encodings: dict[str, list], labels: Sequence[int]) -> None:
        self.encodings, self.labels = encodings, [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**{k: v[i] for k, v in self.encodings.items()}, "labels": self.labels[i]}


def _encode(clf: Classifier, texts: Sequence[str], labels: Sequence[int],
            max_length: int) -> _Encoded:
    if len(texts) != len(labels):
        raise ConfigError(f"got {len(texts)} texts but {len(labels)} labels; pass one label each")
    positive = clf.positive_index  # data labels are 0/1; the head's positive logit may be 0
    mapped = [positive if int(y) == 1 else 1 - positive for y in labels]
    return _Encoded({"input_ids": encode_ids(clf.tokenizer, texts, max_length)}, mapped)


def _build_trainer(clf: Classifier, train: tuple, val_texts: Sequence[str], hp: dict[str, Any], *,
                   max_length: int, output_dir: str | Path, seed: int,
                   on_epoch: Callable[[int, np.ndarray], None] | None, progress: bool) -> Any:
    from transformers import DataCollatorWithPadding, PrinterCallback

    checked_trainer, epoch_reporter = _trainer_classes()
    cuda = clf.device.startswith("cuda")
    batch = int(hp["per_device_train_batch_size"])
    reporter = epoch_reporter(clf, list(val_texts), max_length, max(32, 2 * batch), on_epoch)
    trainer = checked_trainer(
        model=clf.model,
        args=_training_args(hp, output_dir, seed, cuda, progress),
        train_dataset=_encode(clf, *train, max_length),
        processing_class=clf.tokenizer,
        data_collator=DataCollatorWithPadding(clf.tokenizer,
                                              pad_to_multiple_of=8 if cuda else None),
        callbacks=[reporter],
    )
    if not progress:
        trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
    return trainer


def _training_args(hp: dict[str, Any], output_dir: str | Path, seed: int, cuda: bool,
                   progress: bool) -> Any:
    from transformers import TrainingArguments

    batch = int(hp["per_device_train_batch_size"])
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=float(hp["learning_rate"]),
        # A float in [0, 1) is read as a share of the total steps (params keeps it below 1).
        warmup_steps=float(hp["warmup_ratio"]),
        num_train_epochs=float(hp["num_train_epochs"]),
        per_device_train_batch_size=batch,
        weight_decay=float(hp["weight_decay"]),
        train_sampling_strategy="group_by_length",
        # Validation is scored by EpochReporter, not Trainer.evaluate: with length grouping,
        # Trainer's eval sampler shuffles the rows and the predictions lose their order.
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="epoch",
        report_to=[],
        seed=seed,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        dataloader_pin_memory=cuda,
        disable_tqdm=not progress,
    )


@functools.cache
def _trainer_classes() -> tuple[type, type]:
    """Trainer and callback subclasses, defined on first use: importing Trainer is slow."""
    from transformers import Trainer, TrainerCallback

    class CheckedTrainer(Trainer):
        """Stops at the first NaN/inf loss instead of training on (Trainer only filters it)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                          num_items_in_batch=num_items_in_batch)
            loss = result[0] if return_outputs else result
            if not bool(torch.isfinite(loss.detach()).all()):
                raise TrainingDiverged(
                    f"training diverged: the loss became {loss.detach().float().mean().item()} "
                    f"at step {self.state.global_step + 1} with learning rate "
                    f"{self.args.learning_rate:g}; expected a finite loss: lower the learning rate"
                )
            return result

    class EpochReporter(TrainerCallback):
        """After each epoch, scores the validation texts and hands their probabilities on."""

        def __init__(self, clf: Classifier, texts: list[str], max_length: int, batch_size: int,
                     on_epoch: Callable[[int, np.ndarray], None] | None) -> None:
            self.clf, self.texts, self.on_epoch = clf, texts, on_epoch
            self.max_length, self.batch_size, self.epoch = max_length, batch_size, 0

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.epoch += 1
            if self.on_epoch is None or not self.texts:
                return
            model = kwargs["model"]
            current = Classifier(model, self.clf.tokenizer, self.clf.positive_index, False,
                                 self.clf.name, str(next(model.parameters()).device))
            probs = predict_proba(current, self.texts, max_length=self.max_length,
                                  batch_size=self.batch_size)
            self.on_epoch(self.epoch, probs)

    return CheckedTrainer, EpochReporter
