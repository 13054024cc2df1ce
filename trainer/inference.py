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
# - AMD EPYC (no native bf16), session 1: fp32 57 ms, int8 16 ms, bf16 23 ms.
# - Xeon with AMX (avx512_bf16, amx_bf16), against eager fp32 in the same runs: bf16 9.3 ms
#   against 28.8 (3.1x; 3.06x and 3.10x in two runs before the pooler and head were packed
#   too), int8 12.0 against 28.5 (2.4x). The fused layers (_FastLayer,
#   _pack_weights) made bf16 1.29x faster than the layers as transformers runs them, with the
#   last cut to the first token (10.75 against 13.85 ms, interleaved); int8 gains 1.01x.
# int8 is dynamic quantisation of every nn.Linear with per-channel weight scales and, on CPUs
# with VNNI, full 8-bit activations (PyTorch's default keeps 7 bits, for CPUs without VNNI).
# Against fp32 on 2,000 test reviews int8 costs 0.2-0.4 accuracy points, bf16 0.1-0.15; on the
# Xeon bf16 also scores batches 2x faster than int8. So: bf16 where the CPU has it natively.
# Tried on the Xeon and left out:
# - freezing the traces: no faster once the layers are fused, and it cannot hold packed
#   weights; torch.jit.optimize_for_inference on frozen traces: no change (14.7 against 15.2).
# - the oneDNN graph fuser (torch.jit.enable_onednn_fusion) on transformers' layers: 11.6 ms
#   against 13.5 without it, where the fused layers took 10.5.
# - keys and values padded to a multiple of 16 tokens, where the flash kernel runs faster
#   (0.35 against 0.44 ms per layer at 232 tokens): no gain left after padding and masking.
# - ONNX Runtime exported, BERT-fused, int8 (25 ms).
# - torch.compile with freezing and max-autotune (AMX micro-kernel GEMMs), before the fused
#   layers: 1.17-1.35x faster than the traced graph, interleaved, for a one-time 45-60 s
#   compile (cold cache); no command of ours scores single reviews long enough to earn that
#   back. Its options must be set with torch._inductor.config.patch around the first call:
#   torch.compile(options=...) left the graph no faster than the trace.
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
        _fuse_layers(model, clf.tokenizer)
        if chosen == "int8":
            model = _quantize(model)
        else:
            model = model.to(torch.bfloat16 if chosen == "bf16" else torch.float32)
            _pack_weights(model)
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
        return {"input_ids": ids, "attention_mask": _attention_mask(keep, self.sdpa)}


def _attention_mask(keep: torch.Tensor, sdpa: bool) -> torch.Tensor:
    """The padding mask as the model takes it: SDPA takes a 4-D boolean mask as it is, where
    transformers would otherwise rebuild it at every call."""
    return keep[:, None, None, :] if sdpa else keep


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


class _FastLayer(torch.nn.Module):
    """A BERT-style encoder layer in fewer, fused matrix products.

    - Query, key and value come from one product: one call instead of three.
    - first_only: the layer's output for the first token only ([CLS], <s>), all that a sequence
      classifier reads of the last layer; every token's keys and values still count.
    - After _pack_weights, oneDNN computes bias, GELU and the residual add inside the products.
    """

    def __init__(self, layer: torch.nn.Module, first_only: bool) -> None:
        super().__init__()
        heads = layer.attention.self
        self.first_only, self.size, self.scaling = (
            first_only, heads.attention_head_size, heads.scaling)
        self.query = heads.query if first_only else None
        parts = (heads.key, heads.value) if first_only else (heads.query, heads.key, heads.value)
        self.projection = _concatenated(parts)
        self.out, self.norm = layer.attention.output.dense, layer.attention.output.LayerNorm
        self.up, self.act = layer.intermediate.dense, layer.intermediate.intermediate_act_fn
        self.down, self.out_norm = layer.output.dense, layer.output.LayerNorm

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
                *args: Any, **kwargs: Any) -> torch.Tensor:
        batch = hidden.shape[0]

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch, x.shape[1], -1, self.size).transpose(1, 2)

        projected = _linear(self.projection, hidden)
        if self.first_only:
            hidden = hidden[:, :1]
            query, (key, value) = _linear(self.query, hidden), projected.chunk(2, dim=-1)
            if attention_mask is not None:
                attention_mask = attention_mask[:, :, :1]
        else:
            query, key, value = projected.chunk(3, dim=-1)
        context = torch.nn.functional.scaled_dot_product_attention(
            split(query), split(key), split(value), attn_mask=attention_mask,
            scale=self.scaling)
        context = context.transpose(1, 2).reshape(batch, hidden.shape[1], -1)
        attended = self.norm(_linear(self.out, context, residual=hidden))
        inner = _linear(self.up, attended, act=self.act)
        return self.out_norm(_linear(self.down, inner, residual=attended))


def _concatenated(parts: Sequence[torch.nn.Linear]) -> torch.nn.Linear:
    """One Linear layer whose output is the given layers' outputs side by side."""
    joined = torch.nn.Linear(parts[0].in_features, sum(p.out_features for p in parts),
                             dtype=parts[0].weight.dtype)
    with torch.no_grad():
        joined.weight.copy_(torch.cat([p.weight for p in parts]))
        joined.bias.copy_(torch.cat([p.bias for p in parts]))
    return joined


class _OneDNNLinear(torch.nn.Module):
    """A Linear layer whose weight oneDNN packed once, not at every call; see _linear."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        # Packed for 4,096 rows (a batch of reviews): one review (232 rows) ran no slower with
        # this packing than with its own, and batches 7% faster (bf16, Xeon).
        weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 4096)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(self, x)


def _linear(linear: torch.nn.Module, x: torch.Tensor, act: torch.nn.Module | None = None,
            residual: torch.Tensor | None = None) -> torch.Tensor:
    """act(linear(x)) + residual, in one oneDNN call where the weight is packed for it."""
    if isinstance(linear, _OneDNNLinear):
        weight, bias = linear.weight, linear.bias
        if residual is not None and act is None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
        if _is_erf_gelu(act) and residual is None:
            return _onednn_linear()(x, weight, bias, "gelu", "none")
        y = _onednn_linear()(x, weight, bias, "none", "")
    else:
        y = linear(x)
    y = y if act is None else act(y)
    return y if residual is None else y + residual


def _linear_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      attr: str, algorithm: str) -> torch.Tensor:
    scalars: list[number | None] = []  # noqa: F821 - TorchScript's type for int or float
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, scalars, algorithm)


@functools.cache
def _onednn_linear() -> Graph:
    """oneDNN's linear with an activation inside, scripted: a trace cannot record its call
    (it takes a list of optional numbers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated; it still works here
        return torch.jit.script(_linear_pointwise)


def _is_erf_gelu(act: torch.nn.Module | None) -> bool:
    if isinstance(act, torch.nn.GELU):
        return act.approximate == "none"
    # transformers' "gelu" (GELUActivation) calls torch's exact GELU unless told to use Python.
    return getattr(act, "act", None) is torch.nn.functional.gelu


@functools.cache
def _onednn_runs(dtype: torch.dtype) -> bool:
    """Whether oneDNN's packed linear products run here in dtype and compute what they should."""
    if dtype not in (torch.float32, torch.bfloat16) or not torch.backends.mkldnn.is_available():
        return False
    gen = torch.Generator().manual_seed(0)
    weight, bias, x, other = (torch.randn(shape, generator=gen).to(dtype)
                              for shape in ((5, 4), (5,), (2, 3, 4), (2, 3, 5)))
    plain = torch.nn.Linear(4, 5, dtype=dtype)
    with torch.no_grad():
        plain.weight.copy_(weight)
        plain.bias.copy_(bias)
    try:
        packed = _OneDNNLinear(plain)
        with torch.inference_mode():
            pairs = [(_linear(packed, x, act, res), _linear(plain, x, act, res))
                     for act, res in ((None, None), (torch.nn.GELU(), None), (None, other))]
    except (RuntimeError, AttributeError):  # no oneDNN build, or no such dtype on this CPU
        return False
    # bf16 rounds to 1/256 of a value, once in a fused product, twice (product, GELU) without.
    return all(torch.allclose(got.float(), want.float(), rtol=2e-2, atol=2e-2)
               for got, want in pairs)


def _pack_weights(model: torch.nn.Module) -> None:
    """Swap every Linear layer for a oneDNN-packed one where oneDNN runs its dtype.

    Against the same model unpacked, interleaved, Xeon with AMX: MiniLM's fused layers, one
    230-token review, bf16 9.9 against 10.7 ms, fp32 21.6 against 22.6; 160 reviews in batches
    of 32, bf16 99 against 91 reviews/s, fp32 32 against 30. DeBERTa-v3-base size, traced, bf16,
    one 230-token review: 88 against 98 ms.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and _onednn_runs(child.weight.dtype):
                setattr(module, name, _OneDNNLinear(child))


def _fuse_layers(model: torch.nn.Module, tokenizer: Any) -> None:
    """Swap BERT-style encoder layers for _FastLayer where the logits stay the same.

    Checked in fp32 on reviews with and without padding, first with the last layer cut to the
    first token, then without (a head that reads more than the first token); other
    architectures (DeBERTa) keep their layers. Quantised afterwards, int8 rounds one row's
    activations otherwise than a whole review's: MiniLM logits moved 0.011 with the last layer
    cut, against 0.076 between int8 and fp32 either way.
    """
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        return
    original = list(layers)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tokenizer), (2, 29), generator=gen)
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[0, 17:] = False
    keep = _attention_mask(keep, _is_sdpa(model))
    with torch.inference_mode():
        want = [model(input_ids=ids).logits, model(input_ids=ids, attention_mask=keep).logits]
    for first_only in (True, False):
        try:
            for i, layer in enumerate(original):  # outside inference mode: traced later
                layers[i] = _FastLayer(layer, first_only and i == len(original) - 1)
            with torch.inference_mode():
                _check(model(input_ids=ids).logits, want[0])
                _check(model(input_ids=ids, attention_mask=keep).logits, want[1])
            return
        except Exception as error:  # noqa: BLE001 - not a BERT-style layer, or other logits
            log.debug("fused layers (first token only: %s) not used: %s", first_only, error)
            for i, layer in enumerate(original):
                layers[i] = layer


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
    the examples); a model that cannot be traced is scored eagerly instead. DeBERTa-v3-base
    (eager attention), bf16, one 230-token review, Xeon: 92 ms traced against 116 eager.
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
    return torch.full((batch, width), token), _attention_mask(keep, sdpa)


def _check_graphs(wrapped: torch.nn.Module, plain: Graph, masked: Graph, token: int,
                  sdpa: bool) -> None:
    ids = torch.full((1, 37), token)
    ids_m, mask = _masked_example(3, 29, token, sdpa)
    _check(plain(ids), wrapped(ids))
    _check(masked(ids_m, mask), wrapped(ids_m, mask))


def _check(got: torch.Tensor, want: torch.Tensor) -> None:
    # bf16 keeps 8 bits of mantissa: a trace or a fused layer may round in another order.
    atol = 5e-2 if want.dtype == torch.bfloat16 else 1e-4
    if got.shape != want.shape or not torch.allclose(got.float(), want.float(), atol=atol):
        raise RuntimeError("a prepared graph disagrees with the model on a new shape")
