"""Fine-tuning: a plain HF Trainer script (fp32, default args; dynamic padding or padding to
max length; optionally bf16=True too) against train_fast, on the same reviews, in one run."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import RESULTS, add_common_arguments, device_name, emit, figure, slug

WARM_FRACTION = 0.1  # throughput is timed from the first step after this share of the samples


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--model", default="minilm-offline", help="model dir or offline name")
    parser.add_argument("--train-size", type=int, default=None, help="default: the whole split")
    parser.add_argument("--test-size", type=int, default=None, help="default: the whole split")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=1, help="our epochs")
    parser.add_argument("--peer-epochs", type=int, default=None, help="default: --epochs")
    parser.add_argument("--only", choices=("both", "peer", "ours"), default="both",
                        help="peer: run the peer and save its figures for a later --peer-json")
    parser.add_argument("--peer-json", default=None,
                        help="the peer's figures from an earlier --only peer run on this device")
    parser.add_argument("--peer-padding", choices=("dynamic", "max_length"), default="dynamic",
                        help="dynamic: DataCollatorWithPadding, as a user writes it; "
                             "max_length: every review padded to --max-length (the GPU runs)")
    parser.add_argument("--peer-bf16", action="store_true",
                        help="also run the peer with bf16=True and compare with that too")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--tokens-per-batch", type=int, default=None)
    parser.add_argument("--frozen-layers", type=int, default=None,
                        help="our lowest layers kept as pretrained, the embeddings first "
                             "(default: the trainer's for the device, 2 on a CPU, 0 on a GPU)")
    parser.add_argument("--lr", type=float, default=5e-5, help="our base learning rate")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="the batch the base learning rate is meant for")
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--device", default=None)
    parser.add_argument("--progress", action="store_true")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures; see add_arguments for the options."""
    parser = argparse.ArgumentParser(prog="python -m bench train", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.only == "ours" and not args.peer_json:
        parser.error("--only ours needs --peer-json with the peer's figures")
    from trainer.config import DEVICE_DEFAULTS
    from trainer.data import load_imdb
    from trainer.splits import stratified_subset
    from trainer.transformer.model import default_device, free_memory, resolve_model

    args.device = args.device or default_device()
    args.peer_epochs = args.peer_epochs or args.epochs
    args.kind = "cuda" if args.device.startswith("cuda") else "cpu"
    if args.frozen_layers is None:
        args.frozen_layers = DEVICE_DEFAULTS[args.kind]["frozen_layers"]
    data = load_imdb(args.data)
    train = stratified_subset(data.train, args.train_size, args.seed)
    test = stratified_subset(data.test, args.test_size, args.seed)
    model = resolve_model(args.model)
    peer_path = (Path(args.results_dir or RESULTS)
                 / f"train-peer-{slug(device_name(args.device))}.json")
    if args.peer_json:
        peer = json.loads(Path(args.peer_json).read_text(encoding="utf-8"))
    else:
        peer = run_peer(model, train, test, args)
        peer_path.parent.mkdir(parents=True, exist_ok=True)
        peer_path.write_text(json.dumps(peer) + "\n", encoding="utf-8")
        free_memory()
    if args.only == "peer":
        print(json.dumps(peer), flush=True)
        return 0
    peer_bf16 = run_peer(model, train, test, args, bf16=True) if args.peer_bf16 else None
    ours = run_ours(model, train, test, args)
    rows = figures(ours, peer, args)
    if peer_bf16 is not None:
        rows += figures(ours, peer_bf16, args, suffix="_vs_peer_bf16")
    emit("train", rows, args.results_dir, args.tag)
    return 0


def figures(ours: dict[str, Any], peer: dict[str, Any], args: argparse.Namespace,
            suffix: str = "") -> list[dict]:
    """The side-by-side figures; accuracy is named with both epoch counts when they differ.

    Args:
        ours: run_ours' figures.
        peer: run_peer's figures.
        args: the parsed options (the device).
        suffix: appended to every figure's name (which peer it is measured against).

    Returns:
        One figure dict per measurement; accuracy carries its 95% Wilson intervals.
    """
    dev = device_name(args.device)
    config = {"ours": ours["config"], "peer": peer["config"]}
    same = ours["config"]["epochs"] == peer["config"]["epochs"]
    accuracy = "test_accuracy" + ("" if same else
                                  f"_ours{ours['config']['epochs']}ep_peer{peer['config']['epochs']}ep")
    rows = [("train_samples_per_s", "samples/s", "warm_samples_per_s", True),
            ("train_epoch_wall_s", "s", "epoch_wall_s", False),
            (accuracy, "accuracy", "test_accuracy", True),
            ("test_predict_reviews_per_s", "reviews/s", "predict_reviews_per_s", True)]
    out = [figure(name + suffix, unit, ours[key], peer[key], higher_is_better=hib, device=dev,
                  config=config) for name, unit, key, hib in rows]
    n = ours["config"]["test_size"]
    out[2]["ci95"] = {side: _wilson(run["test_accuracy"], n)
                      for side, run in (("ours", ours), ("peer", peer))}
    return out


def _wilson(accuracy: float, n: int) -> list[float]:
    from trainer.metrics import wilson_interval

    return [round(v, 4) for v in wilson_interval(round(accuracy * n), n)]


class _Clock:
    """Times training from the first step after WARM_FRACTION of the samples to the end."""

    def __init__(self, device: str, total: int) -> None:
        self.cuda, self.warm_at = device.startswith("cuda"), WARM_FRACTION * total
        self.total, self.samples, self.start, self.start_samples = total, 0, None, 0

    def step(self, samples: int) -> None:
        self.samples += samples
        if self.start is None and self.samples >= self.warm_at and self.samples < self.total:
            self.start, self.start_samples = self._now(), self.samples

    def stop(self) -> float:
        """Warm samples per second (the whole run when it had too few steps to skip any)."""
        end = self._now()
        return (self.total - self.start_samples) / (end - self.start) if self.start else 0.0

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()


def run_peer(model: str, train: Any, test: Any, args: argparse.Namespace,
             bf16: bool = False) -> dict[str, Any]:
    """A plain Trainer script: TrainingArguments defaults (batch 8, lr 5e-5), fp32 unless bf16,
    each batch padded to its longest review (or every review to max_length)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model)
    net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2,
                                                             dtype=torch.float32)
    start = time.perf_counter()
    pad = args.peer_padding == "max_length"
    train_set = _Padded(tokenizer, train.texts, train.labels, args.max_length, pad)
    clock = _Clock(args.device, len(train) * args.peer_epochs)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _peer_trainer(net, train_set, clock, args, tmp, tokenizer, bf16)
        trainer.train()
        wall = time.perf_counter() - start
        warm = clock.stop() if clock.start else len(train) * args.peer_epochs / wall
        test_set = _Padded(tokenizer, test.texts, test.labels, args.max_length, pad)
        begin = time.perf_counter()
        logits = trainer.predict(test_set).predictions
        predict_s = time.perf_counter() - begin
    accuracy = float(np.mean(np.argmax(logits, axis=1) == np.asarray(test.labels)))
    config = {"epochs": args.peer_epochs, "batch_size": 8, "learning_rate": 5e-5,
              "max_length": args.max_length, "precision": "bf16" if bf16 else "fp32",
              "padding": args.peer_padding,
              "train_size": len(train), "test_size": len(test)}
    return {"warm_samples_per_s": warm, "epoch_wall_s": wall / args.peer_epochs,
            "test_accuracy": accuracy, "predict_reviews_per_s": len(test) / predict_s,
            "config": config}


def _peer_trainer(net: Any, train_set: Any, clock: _Clock, args: argparse.Namespace,
                  output_dir: str, tokenizer: Any, bf16: bool) -> Any:
    from transformers import (
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    class Steps(TrainerCallback):
        def on_step_end(self, targs: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.step(targs.per_device_train_batch_size)

    training_args = TrainingArguments(
        output_dir=output_dir, num_train_epochs=args.peer_epochs, seed=args.seed, report_to=[],
        save_strategy="no", logging_strategy="no", disable_tqdm=not args.progress,
        use_cpu=not args.device.startswith("cuda"), bf16=bf16,
    )
    trainer = Trainer(model=net, args=training_args, train_dataset=train_set, callbacks=[Steps()],
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.remove_callback(PrinterCallback)  # it prints the run's log dict to stdout
    return trainer


class _Padded:
    """Reviews tokenised once, as a plain script does: padded to max_length, or not at all
    (the collator pads each batch)."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], labels: Any, max_length: int,
                 pad: bool) -> None:
        self.enc = tokenizer(list(texts), padding="max_length" if pad else False,
                             truncation=True, max_length=max_length)
        self.labels = [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**{k: v[i] for k, v in self.enc.items()}, "labels": self.labels[i]}


def run_ours(model: str, train: Any, test: Any, args: argparse.Namespace) -> dict[str, Any]:
    """train_fast from the same checkpoint, then predict_fast on the test split."""
    from transformers import set_seed

    from bench import timed
    from trainer.transformer.fast import native_bf16
    from trainer.transformer.loop import PAD_MULTIPLE, predict_fast, train_fast
    from trainer.transformer.model import load_classifier

    set_seed(args.seed)  # the new head is initialised from the global RNG, as in the peer
    clf = load_classifier(model, device=args.device)
    params = {"learning_rate": args.lr, "warmup_ratio": args.warmup,
              "num_train_epochs": args.epochs, "per_device_train_batch_size": args.batch_size,
              "weight_decay": args.weight_decay}
    if args.tokens_per_batch:
        params["tokens_per_batch"] = args.tokens_per_batch
    compile_ = {"auto": None, "on": True, "off": False}[args.compile]
    clock = _Clock(args.device, len(train) * args.epochs)
    _, wall = timed(lambda: train_fast(
        clf.model, clf.tokenizer, train.texts, train.labels, [], params,
        max_length=args.max_length, seed=args.seed, device=args.device, progress=args.progress,
        compile=compile_, positive_index=clf.positive_index, frozen_layers=args.frozen_layers,
        on_step=lambda step, n: clock.step(n)), args.device)
    warm = clock.stop() if clock.start else len(train) * args.epochs / wall
    probs, predict_s = timed(lambda: predict_fast(
        clf.model, clf.tokenizer, test.texts, max_length=args.max_length,
        positive_index=clf.positive_index, device=args.device), args.device)
    accuracy = float(np.mean((probs >= 0.5) == (np.asarray(test.labels) == 1)))
    config = {"epochs": args.epochs, **params, "max_length": args.max_length,
              "compile": args.compile,
              "padding": f"length buckets of {PAD_MULTIPLE[args.kind]}",
              "frozen_layers": args.frozen_layers,
              "precision": "bf16 autocast" if args.device.startswith("cuda") or native_bf16()
              else "fp32",
              "train_size": len(train), "test_size": len(test)}
    return {"warm_samples_per_s": warm, "epoch_wall_s": wall / args.epochs,
            "test_accuracy": accuracy, "predict_reviews_per_s": len(test) / predict_s,
            "config": config}
