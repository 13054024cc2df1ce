"""CPU inference: eager fp32 PyTorch (the plain way) vs trainer.transformer.fast.FastClassifier,
and one-shot `python -m trainer predict` with and without --fast, each in a fresh process."""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import add_common_arguments, cpu_name, emit, figure

CACHE = Path("/tmp/sentiment-bench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--model", default="minilm-offline",
                        help="model dir or name; one without a sentiment head is fine-tuned first")
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--single", type=int, default=60, help="single-review calls timed")
    parser.add_argument("--finetune-size", type=int, default=2000)
    parser.add_argument("--finetune-length", type=int, default=256)
    parser.add_argument("--method", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--one-shot", default="3,100,300", metavar="N[,N…]",
                        help="review counts scored by one-shot `python -m trainer predict` "
                             "calls, with and without --fast (below and above "
                             "trainer.transformer.fast.FAST_MIN_TOKENS); empty: none")
    parser.add_argument("--one-shot-repeats", type=int, default=1,
                        help="fresh processes per side and review count")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures; see add_arguments for the options."""
    import torch

    parser = argparse.ArgumentParser(prog="python -m bench infer", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = run(args)
    emit("infer", figures, args.results_dir, args.tag)
    return 0


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure both sides on the same reviews, interleaved so a busy machine slows both alike."""
    import torch

    from trainer.data import load_imdb
    from trainer.splits import stratified_subset
    from trainer.transformer.fast import FastClassifier

    data = load_imdb(args.data)
    clf, tuned, model_dir = sentiment_model(args.model, data, args)
    test = stratified_subset(data.test, args.test_size, args.seed)
    fast = FastClassifier.from_classifier(clf, max_length=args.max_length, method=args.method)
    eager = _eager(clf, args.max_length)
    median = median_reviews(clf.tokenizer, test.texts, args.max_length)
    single = _single_latency(eager, fast, median, args.single)
    batch = _batch_scores(eager, fast, test.texts, args.batch_size)
    labels = np.asarray(test.labels) == 1
    accuracy = {k: float(np.mean((p >= 0.5) == labels)) for k, p in batch["probs"].items()}
    dev = cpu_name()
    config = {"method": fast.method, "traced": fast.graphs is not None, "model": str(args.model),
              "finetuned_here": tuned, "test_size": len(test), "max_length": args.max_length,
              "median_tokens": single["tokens"], "threads": torch.get_num_threads()}
    one_shot = one_shot_figures(clf, model_dir, test, batch["probs"]["peer"], args, dev,
                                config)
    return [
        *one_shot,
        figure("infer_single_p50_ms", "ms", single["ours"][0], single["peer"][0],
               higher_is_better=False, device=dev, config=config),
        figure("infer_single_p90_ms", "ms", single["ours"][1], single["peer"][1],
               higher_is_better=False, device=dev, config=config),
        figure("infer_batch_reviews_per_s", "reviews/s", batch["ours"], batch["peer"],
               higher_is_better=True, device=dev,
               config={**config, "batch_size": args.batch_size}),
        figure("infer_test_accuracy", "accuracy", accuracy["ours"], accuracy["peer"],
               higher_is_better=True, device=dev,
               config={**config,
                       "difference_points": 100 * (accuracy["ours"] - accuracy["peer"])}),
    ]


def sentiment_model(name: str, data: Any, args: argparse.Namespace
                    ) -> tuple[Any, dict[str, Any] | None, str]:
    """Load the model on the CPU; one with a new head is fine-tuned once and cached in CACHE.

    Returns:
        The classifier, how it was fine-tuned here (None for a model used as given), and the
        directory or hub id it was loaded from.
    """
    from trainer.transformer.model import load_classifier, resolve_model, save_classifier

    params = {"learning_rate": 1e-4, "warmup_ratio": 0.1, "num_train_epochs": 1,
              "per_device_train_batch_size": 16, "weight_decay": 0.01}
    tuned = {"train_reviews": args.finetune_size, "max_length": args.finetune_length,
             "by": "trainer.transformer.loop.train_fast", **params}
    key = f"{resolve_model(name)}|{args.finetune_size}|{args.finetune_length}|{args.seed}"
    cached = CACHE / f"finetuned-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if (cached / "config.json").exists():  # only models without a head were cached
        return load_classifier(str(cached), device="cpu"), tuned, str(cached)
    clf = load_classifier(name, device="cpu", seed=args.seed)
    if not clf.new_head:
        return clf, None, resolve_model(name)
    from trainer.splits import stratified_subset
    from trainer.transformer.loop import train_fast

    train = stratified_subset(data.train, args.finetune_size, args.seed)
    train_fast(clf.model, clf.tokenizer, train.texts, train.labels, [], params,
               max_length=args.finetune_length, seed=args.seed, device="cpu", progress=True)
    save_classifier(clf, cached)
    return load_classifier(str(cached), device="cpu"), tuned, str(cached)


def one_shot_figures(clf: Any, model_dir: str, test: Any, probs: np.ndarray,
                     args: argparse.Namespace, device: str,
                     config: dict[str, Any]) -> list[dict[str, Any]]:
    """Wall seconds of fresh `python -m trainer predict` processes, --fast (ours) vs not (peer).

    The model is stored with its measured scores in a temporary SQLite database, as `run` would
    store it; each side runs args.one_shot_repeats times per review count, in turns, and the
    median counts. A process's start-up (imports, loading) is part of what a user waits for.
    """
    from storage.store import open_store
    from trainer.metrics import evaluate
    from trainer.transformer.fast import FAST_MIN_TOKENS

    sizes = [int(n) for n in args.one_shot.split(",") if n.strip()]
    if not sizes:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        spec = _stored_spec(model_dir, tuned=bool(config["finetuned_here"]))
        with open_store(url) as store:
            run_id = store.save_run(spec, evaluate(test.labels, probs, n_bootstrap=0))
        figures = []
        for n in sizes:
            texts = [test.texts[i % len(test)] for i in range(n)]
            reviews = _reviews_csv(Path(tmp) / f"reviews-{n}.csv", texts)
            command = [sys.executable, "-m", "trainer", "predict", "--file", str(reviews),
                       "--db", url, "--model-ref", f"run:{run_id}",
                       "--max-length", str(args.max_length)]
            seconds = _one_shot_seconds(command, args.one_shot_repeats)
            tokens = _tokens(clf, texts, args.max_length)
            figures.append(figure(
                f"infer_one_shot_{n}_reviews_s", "s", seconds["ours"], seconds["peer"],
                higher_is_better=False, device=device,
                config={**config, "reviews": n, "tokens": tokens,
                        "fast_min_tokens": FAST_MIN_TOKENS,
                        "fast_path": "prepared" if tokens >= FAST_MIN_TOKENS else "eager",
                        "repeats": args.one_shot_repeats}))
    return figures


def _stored_spec(model_dir: str, *, tuned: bool) -> Any:
    """The run `predict` loads the benchmarked model through: fine-tuned here, or as given."""
    from storage import RunSpec

    stage = "finetuned" if tuned else "pretrained"
    return RunSpec(stage=stage, model=model_dir, split="test", data_source="bench infer",
                   study="bench" if tuned else None, artifact=model_dir)


def _reviews_csv(path: Path, texts: Sequence[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)
    return path


def _one_shot_seconds(command: list[str], repeats: int) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the scoring is measured, not a hub probe
    times: dict[str, list[float]] = {"peer": [], "ours": []}
    for i in range(max(1, repeats)):
        pair = [("peer", command), ("ours", [*command, "--fast"])]
        for side, call in pair if i % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            done = subprocess.run(call, env=env, capture_output=True, text=True, check=False)
            times[side].append(time.perf_counter() - start)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(call[:4])} failed: {done.stderr[-2000:]}")
    return {side: statistics.median(t) for side, t in times.items()}


def _tokens(clf: Any, texts: Sequence[str], max_length: int) -> int:
    from trainer.transformer.model import token_limit

    ids = clf.tokenizer(list(texts), truncation=True, max_length=token_limit(clf, max_length))
    return sum(len(row) for row in ids["input_ids"])


def median_reviews(tokenizer: Any, texts: Sequence[str], max_length: int,
                   count: int = 20) -> list[str]:
    """The reviews whose token count is closest to the median token count."""
    lengths = np.array([len(r) for r in tokenizer(list(texts), truncation=True,
                                                   max_length=max_length)["input_ids"]])
    closest = np.argsort(np.abs(lengths - np.median(lengths)), kind="stable")[:count]
    return [texts[i] for i in closest]


def _eager(clf: Any, max_length: int) -> Callable[[list[str]], np.ndarray]:
    """The plain way: tokenise, pad to the batch's longest, fp32 forward, softmax."""
    import torch

    def score(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            batch = clf.tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                                  return_tensors="pt")
            logits = clf.model(**batch).logits
            return torch.softmax(logits, dim=-1)[:, clf.positive_index].numpy()

    return score


def _single_latency(eager: Callable, fast: Any, reviews: list[str], calls: int) -> dict[str, Any]:
    for text in reviews[:5]:  # warm-up: first calls allocate and pick kernels
        eager([text])
        fast.predict_proba([text])
    times: dict[str, list[float]] = {"peer": [], "ours": []}
    for i in range(calls):
        text = reviews[i % len(reviews)]
        pair = [("peer", lambda t=text: eager([t])),
                ("ours", lambda t=text: fast.predict_proba([t]))]
        for side, call in pair if i % 2 else pair[::-1]:
            start = time.perf_counter()
            call()
            times[side].append(1000 * (time.perf_counter() - start))
    tokens = int(np.median([len(fast.tokenizer(t)["input_ids"]) for t in reviews]))
    return {side: (float(np.percentile(t, 50)), float(np.percentile(t, 90)))
            for side, t in times.items()} | {"tokens": tokens}


def _batch_scores(eager: Callable, fast: Any, texts: Sequence[str], batch_size: int,
                  chunk: int = 500) -> dict[str, Any]:
    """Score every review both ways, chunk by chunk in turn; reviews per second of each."""
    seconds = {"peer": 0.0, "ours": 0.0}
    probs = {"peer": np.empty(len(texts)), "ours": np.empty(len(texts))}
    for start in range(0, len(texts), chunk):
        part = list(texts[start:start + chunk])
        t0 = time.perf_counter()
        probs["peer"][start:start + chunk] = np.concatenate(
            [eager(part[i:i + batch_size]) for i in range(0, len(part), batch_size)])
        t1 = time.perf_counter()
        probs["ours"][start:start + chunk] = fast.predict_proba(part, batch_size=batch_size)
        t2 = time.perf_counter()
        seconds["peer"] += t1 - t0
        seconds["ours"] += t2 - t1
    return {side: len(texts) / s for side, s in seconds.items()} | {"probs": probs}
