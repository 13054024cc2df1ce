"""Fast CPU scoring: bf16 or int8, traced graphs, batches padded to their longest, a last layer cut
to the first token."""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from trainer.loop import _is_sdpa
from trainer.transformer import _max_length

log = logging.getLogger(__name__)

METHODS = ("auto", "int8", "bf16", "fp32")
# Single 230-token review, traced graphs, p50 on 2 cores (bench/results/infer-*.jsonl):
# - AMD EPYC (no native bf16): fp32 57 ms, int8 16 ms, bf16 23 ms.
# - Xeon with AMX (avx512_bf16, amx_bf16): eager fp32 31-43 ms, int8 and bf16 both 15-21 ms;
#   with the last layer cut to the first token, int8 12.7 ms and bf16 15.0 ms against eager
#   fp32 30-34 ms in the same runs.
# int8 is dynamic quantisation of every nn.Linear with per-channel weight scales and, on CPUs
# with VNNI, full 8-bit activations (PyTorch's default keeps 7 bits, for CPUs without VNNI).
# Against fp32 on 2,000 test reviews int8 costs 0.2-0.4 accuracy points, bf16 0.1; on the
# Xeon bf16 also scores batches 1.8x faster than int8. So: bf16 where the CPU has it natively.
# Tried on the Xeon and left out: bf16 weights pre-packed for oneDNN (cannot be traced; no
# faster untraced), torch.jit.optimize_for_inference on the frozen traces (no change: 14.7
# against 15.2 ms), ONNX Runtime exported, BERT-fused, int8 (25 ms), and torch.compile with
# freezing and max-autotune (AMX micro-kernel GEMMs) for single reviews of any length: 1.17-1.35x
# faster than the traced graph, interleaved, for a one-time 45-60 s compile (cold cache), and
# no command of ours scores single reviews long enough to earn that back. Its options must be
# set with torch._inductor.config.patch around the first call: torch.compile(options=...)
# left the graph no faster than the trace.
NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16"})
VNNI = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
Graph = Callable[..., torch.Tensor]


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
            model, {torch.nn.Linear: qconfig}, dtype=torch.qint8, mapping={torch.nn.Linear: linear})


class FastClassifier:
    """A CPU copy of a classifier, prepared once for fast scoring (int8, bf16 or fp32)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, positive_index: int,
                 max_length: int, method: str, name: str = "") -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.positive_index, self.max_length = positive_index, max_length
        self.method, self.name = method, name
        self.sdpa = _is_sdpa(model)
        self.lock = threading.Lock()
        self.graphs = _trace(model, tokenizer) if self.sdpa else None

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
        _read_first_token_only(model, clf.tokenizer)
        if chosen == "int8":
            model = _quantize(model)
        elif chosen == "bf16":
            model = model.to(torch.bfloat16)
        limit = _max_length(clf, max_length)
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
            ids = self.tokenizer(texts, truncation=True, max_length=self.max_length,
                                 return_attention_mask=False,
                                 return_token_type_ids=False)["input_ids"]
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
            logits = plain(inputs["input_ids"]) if mask is None else masked(inputs["input_ids"], mask)
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
        # SDPA takes a 4-D boolean mask as is; transformers would otherwise rebuild it per call.
        return {"input_ids": ids, "attention_mask": keep[:, None, None, :] if self.sdpa else keep}


def _choose(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown inference method {method!r}; expected one of {METHODS}")
    if method == "int8" and not _int8_available():
        raise ValueError("int8 inference needs a quantised engine (x86, fbgemm or qnnpack), which "
                         "this torch build lacks; use method='fp32'")
    if method != "auto":
        return method
    if _cpu_flags() & NATIVE_BF16:
        return "bf16"
    return "int8" if _int8_available() else "fp32"


class _FirstTokenLayer(torch.nn.Module):
    """A BERT-style encoder layer computed for the first token only.

    A sequence classifier reads only the first token ([CLS], <s>) of the last layer: the other
    tokens' attention and feed-forward there are ~10% of a forward pass (232-token review,
    bf16, Xeon: 11.9 against 13.2 ms). Their keys and values still count.
    """

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
                *args: Any, **kwargs: Any) -> torch.Tensor:
        attention, heads = self.layer.attention, self.layer.attention.self
        batch, width = hidden.shape[:2]

        def split(x: torch.Tensor, n: int) -> torch.Tensor:
            return x.view(batch, n, -1, heads.attention_head_size).transpose(1, 2)

        first = hidden[:, :1]
        mask = None if attention_mask is None else attention_mask[:, :, :1]
        context = torch.nn.functional.scaled_dot_product_attention(
            split(heads.query(first), 1), split(heads.key(hidden), width),
            split(heads.value(hidden), width), attn_mask=mask, scale=heads.scaling)
        attended = attention.output(context.transpose(1, 2).reshape(batch, 1, -1), first)
        return self.layer.output(self.layer.intermediate(attended), attended)


def _read_first_token_only(model: torch.nn.Module, tokenizer: Any) -> None:
    """Compute the last encoder layer for the first token only where the logits stay the same.

    Checked in fp32 on reviews with and without padding; other architectures (DeBERTa, a head
    that reads more than the first token) keep their full last layer. Quantised afterwards,
    int8 rounds one row's activations otherwise than a whole review's: MiniLM logits moved
    0.011, against 0.076 between int8 and fp32 either way.
    """
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        return
    full = layers[-1]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tokenizer), (2, 29), generator=gen)
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[0, 17:] = False
    keep = keep[:, None, None, :] if _is_sdpa(model) else keep  # as FastClassifier passes it
    try:
        with torch.inference_mode():
            want = [model(input_ids=ids).logits, model(input_ids=ids, attention_mask=keep).logits]
            layers[-1] = _FirstTokenLayer(full)
            _check(model(input_ids=ids).logits, want[0])
            _check(model(input_ids=ids, attention_mask=keep).logits, want[1])
    except Exception as error:  # noqa: BLE001 - not a BERT-style layer, or other logits
        log.debug("full last layer kept: %s", error)
        layers[-1] = full


class _Logits(torch.nn.Module):
    """The classifier as a function of tensors only, so that it can be traced."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).logits


def _trace(model: torch.nn.Module, tokenizer: Any) -> tuple[Graph, Graph] | None:
    """Frozen TorchScript graphs without and with a padding mask; None if they disagree.

    Sequence length and batch size stay dynamic in the traces (checked on other shapes than
    the examples); a model that cannot be traced is scored eagerly instead.
    """
    token = min(1000, len(tokenizer) - 1)
    wrapped = _Logits(model).eval()
    try:
        with warnings.catch_warnings(), torch.inference_mode(), _transformers_quiet():
            warnings.simplefilter("ignore")  # TorchScript is deprecated; it still works here
            plain = _freeze(wrapped, (torch.full((1, 8), token),))
            masked = _freeze(wrapped, _masked_example(2, 8, token))
            _check_graphs(wrapped, plain, masked, token)
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


def _freeze(module: torch.nn.Module, example: tuple) -> Graph:
    return torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))


def _masked_example(batch: int, width: int, token: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.ones((batch, width), dtype=torch.bool)
    keep[0, width // 2:] = False
    return torch.full((batch, width), token), keep[:, None, None, :]


def _check_graphs(wrapped: torch.nn.Module, plain: Graph, masked: Graph, token: int) -> None:
    ids = torch.full((1, 37), token)
    ids_m, mask = _masked_example(3, 29, token)
    _check(plain(ids), wrapped(ids))
    _check(masked(ids_m, mask), wrapped(ids_m, mask))


def _check(got: torch.Tensor, want: torch.Tensor) -> None:
    # Freezing may fold constants in another order: bf16 keeps 8 bits of mantissa.
    atol = 5e-2 if want.dtype == torch.bfloat16 else 1e-4
    if got.shape != want.shape or not torch.allclose(got.float(), want.float(), atol=atol):
        raise RuntimeError("a prepared graph disagrees with the model on a new shape")
