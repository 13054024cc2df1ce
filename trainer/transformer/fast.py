"""Fast CPU scoring: bf16 or int8, traced graphs, batches padded to their longest, fused encoder
layers (trainer.transformer.fused_layers)."""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from trainer.transformer.fused_layers import (
    Graph,
    check_logits,
    fuse_layers,
    pack_weights,
    padding_mask,
)
from trainer.transformer.model import predict_proba, token_limit, uses_sdpa
from trainer.transformer.truncate import encode_ids

log = logging.getLogger(__name__)

METHODS = ("auto", "int8", "bf16", "fp32")
# bf16 where the CPU computes it natively, else int8: 3.1x and 2.4x eager fp32 for one review
# on 2 Xeon cores, 0.1-0.4 accuracy points lost; figures and what was tried in
# bench/results/README.md.
NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16"})
VNNI = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# Preparing (fusing, int8 or bf16, tracing) takes seconds that only enough tokens earn back:
# break-even fell between 22,000 and 51,000 tokens on 2 shared EPYC cores; a margin above it
# keeps --fast never slower (bench/results/README.md).
FAST_MIN_TOKENS = 60_000
COUNT_CHUNK = 256  # reviews tokenised at a time while counting: stops soon after the threshold


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 pays off."""
    return bool(_cpu_flags() & NATIVE_BF16)


def _int8_available() -> bool:
    engines = torch.backends.quantized.supported_engines
    return any(e in engines for e in ("x86", "fbgemm", "qnnpack"))


class _FullRangeLinear(torch.ao.nn.quantized.dynamic.Linear):
    """A dynamic int8 Linear that quantises activations to 8 bits, not PyTorch's default 7.

    The 7-bit default avoids int16 overflow in AVX2's multiply-add; VNNI accumulates in int32,
    so on CPUs with it the eighth bit is free accuracy.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed_params._packed_params
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)


def _quantize(model: torch.nn.Module) -> torch.nn.Module:
    vnni = bool(_cpu_flags() & VNNI)
    linear = _FullRangeLinear if vnni else torch.ao.nn.quantized.dynamic.Linear
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not installed;
        # the eager dynamic path still works in torch 2.11 to 2.13.
        warnings.simplefilter("ignore")
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear: qconfig}, dtype=torch.qint8,
            mapping={torch.nn.Linear: linear})


class FastClassifier:
    """A CPU copy of a classifier, prepared once for fast scoring (int8, bf16 or fp32)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, positive_index: int,
                 max_length: int, method: str, name: str = "") -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.positive_index, self.max_length = positive_index, max_length
        self.method, self.name = method, name
        self.sdpa = uses_sdpa(model)
        self.lock = threading.Lock()
        self.graphs = _trace(model, tokenizer, self.sdpa)

    @classmethod
    def from_classifier(cls, clf: Any, *, max_length: int, method: str = "auto") -> FastClassifier:
        """Prepare a loaded trainer.transformer.Classifier for CPU scoring; clf is left unchanged.

        Args:
            clf: the classifier (on any device).
            max_length: tokens kept per review.
            method: "int8" (dynamic quantisation of every Linear layer), "bf16" (bf16 weights
                and activations; fast only on CPUs with native bf16), "fp32", or "auto"
                (bf16 on CPUs with native bf16, else int8 where this torch build has a
                quantised engine, else fp32).

        Returns:
            The fast classifier.

        Raises:
            ValueError: an unknown method, or int8 without a quantised engine.
        """
        chosen = _choose(method)
        model = copy.deepcopy(clf.model).to("cpu").float().eval()
        fuse_layers(model, clf.tokenizer)
        if chosen == "int8":
            model = _quantize(model)
        else:
            model = model.to(torch.bfloat16 if chosen == "bf16" else torch.float32)
            pack_weights(model)
        limit = token_limit(clf, max_length)
        return cls(model, clf.tokenizer, positive_index=clf.positive_index, max_length=limit,
                   method=chosen, name=getattr(clf, "name", ""))

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Positive-class probabilities, scored in length-sorted batches.

        Args:
            texts: the reviews.
            batch_size: reviews per forward pass at most.

        Returns:
            float64 probabilities in the order of texts.
        """
        texts = [str(t) for t in texts]
        probs = np.empty(len(texts), dtype=np.float64)
        if not texts:
            return probs
        # One caller at a time, tokenizer included: a fast tokenizer shared between threads fails
        # with "Already borrowed" when two calls set its truncation at once.
        with self.lock, torch.inference_mode():
            ids = encode_ids(self.tokenizer, texts, self.max_length)
            order = np.argsort([len(row) for row in ids], kind="stable")
            for start in range(0, len(order), max(1, batch_size)):
                rows = order[start:start + batch_size]
                probs[rows] = self._score([ids[i] for i in rows])
        return probs

    def _score(self, rows: list[list[int]]) -> np.ndarray:
        inputs = self._inputs(rows)
        if self.graphs is not None:
            plain, masked = self.graphs
            mask = inputs["attention_mask"]
            logits = (plain(inputs["input_ids"]) if mask is None
                      else masked(inputs["input_ids"], mask))
        else:
            logits = self.model(**inputs).logits
        return torch.softmax(logits.float(), dim=-1)[:, self.positive_index].numpy()

    def _inputs(self, rows: list[list[int]]) -> dict[str, torch.Tensor | None]:
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        keep = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            keep[i, :len(row)] = True
        if all(len(r) == width for r in rows):
            return {"input_ids": ids, "attention_mask": None}  # lets SDPA skip masking entirely
        return {"input_ids": ids, "attention_mask": padding_mask(keep, self.sdpa)}


def worth_preparing(tokenizer: Any, texts: Sequence[str], max_length: int,
                    min_tokens: int = FAST_MIN_TOKENS) -> bool:
    """Whether scoring texts is enough work to earn back a FastClassifier's preparation.

    Args:
        tokenizer: the model's tokenizer.
        texts: the reviews to score.
        max_length: tokens kept per review.
        min_tokens: the fewest tokens (truncated, special tokens included) worth preparing for.

    Returns:
        True once the reviews hold at least min_tokens tokens; counting stops there.
    """
    total = 0
    for start in range(0, len(texts), COUNT_CHUNK):
        chunk = [str(t) for t in texts[start:start + COUNT_CHUNK]]
        ids = encode_ids(tokenizer, chunk, max_length)
        total += sum(len(row) for row in ids)
        if total >= min_tokens:
            return True
    return False


class WorkSizedScorer:
    """Scores eagerly until one call brings enough work to prepare a FastClassifier, then fast.

    Once prepared, the fast copy scores every later call: its cost is already paid.
    """

    def __init__(self, clf: Any, *, max_length: int, min_tokens: int = FAST_MIN_TOKENS,
                 method: str = "auto") -> None:
        self.clf, self.max_length = clf, max_length
        self.min_tokens, self.method = min_tokens, method
        self.fast: FastClassifier | None = None
        self.lock = threading.Lock()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Positive-class probabilities in the order of texts, by the path the work calls for."""
        texts = [str(t) for t in texts]
        with self.lock:
            if self.fast is None and worth_preparing(self.clf.tokenizer, texts,
                                                     token_limit(self.clf, self.max_length),
                                                     self.min_tokens):
                self.fast = FastClassifier.from_classifier(self.clf, max_length=self.max_length,
                                                           method=self.method)
        if self.fast is not None:
            return self.fast.predict_proba(texts)
        return predict_proba(self.clf, texts, max_length=self.max_length)


def _choose(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown inference method {method!r}; expected one of {METHODS}")
    if method == "int8" and not _int8_available():
        raise ValueError("int8 inference needs a quantised engine (x86, fbgemm or qnnpack), which "
                         "this torch build lacks; use method='fp32'")
    if method != "auto":
        return method
    if native_bf16():
        return "bf16"
    return "int8" if _int8_available() else "fp32"


class _Logits(torch.nn.Module):
    """The classifier as a function of tensors only, so that it can be traced."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).logits


def _trace(model: torch.nn.Module, tokenizer: Any, sdpa: bool) -> tuple[Graph, Graph] | None:
    """TorchScript graphs without and with a padding mask; None if they disagree.

    Sequence length and batch size stay dynamic in the traces (checked on other shapes than
    the examples); a model that cannot be traced is scored eagerly instead.
"""
    token = min(1000, len(tokenizer) - 1)
    wrapped = _Logits(model).eval()
    try:
        with warnings.catch_warnings(), torch.inference_mode(), _transformers_quiet():
            warnings.simplefilter("ignore")  # TorchScript is deprecated; it still works here
            # Not frozen: freezing gained nothing, and cannot hold oneDNN's packed weights.
            plain = torch.jit.trace(wrapped, (torch.full((1, 8), token),), check_trace=False)
            masked = torch.jit.trace(wrapped, _masked_example(2, 8, token, sdpa),
                                     check_trace=False)
            _check_graphs(wrapped, plain, masked, token, sdpa)
    except Exception as error:  # noqa: BLE001 - any tracing failure means: run eagerly
        log.warning("scoring without traced graphs (%s); expect ~20%% slower scoring", error)
        return None
    return plain, masked


@contextlib.contextmanager
def _transformers_quiet() -> Iterator[None]:
    """No transformers warnings for a while.

    Tracing probes every attribute of every module, and reading a classifier's loss_function
    makes transformers warn that it will use a causal-LM loss, which scoring never computes.
    """
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _masked_example(batch: int, width: int, token: int, sdpa: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.ones((batch, width), dtype=torch.bool)
    keep[0, width // 2:] = False
    return torch.full((batch, width), token), padding_mask(keep, sdpa)


def _check_graphs(wrapped: torch.nn.Module, plain: Graph, masked: Graph, token: int,
                  sdpa: bool) -> None:
    ids = torch.full((1, 37), token)
    ids_m, mask = _masked_example(3, 29, token, sdpa)
    check_logits(plain(ids), wrapped(ids))
    check_logits(masked(ids_m, mask), wrapped(ids_m, mask))
