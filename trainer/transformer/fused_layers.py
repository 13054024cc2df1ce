"""BERT-style encoder layers rewritten for CPU scoring, and Linear layers packed for oneDNN.

Used by trainer.transformer.fast.FastClassifier; each rewrite is checked against the model it
replaces.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from trainer.transformer.model import uses_sdpa

log = logging.getLogger(__name__)
Graph = Callable[..., torch.Tensor]


def padding_mask(keep: torch.Tensor, sdpa: bool) -> torch.Tensor:
    """The padding mask as the model takes it: SDPA takes a 4-D boolean mask as it is, where
    transformers would otherwise rebuild it at every call."""
    return keep[:, None, None, :] if sdpa else keep


class FastLayer(torch.nn.Module):
    """A BERT-style encoder layer in fewer, fused matrix products.

    - Query, key and value come from one product: one call instead of three.
    - first_only: the layer's output for the first token only ([CLS], <s>), all that a sequence
      classifier reads of the last layer; every token's keys and values still count.
    - After pack_weights, oneDNN computes bias, GELU and the residual add inside the products.
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


class OneDNNLinear(torch.nn.Module):
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
    if isinstance(linear, OneDNNLinear):
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
def onednn_runs(dtype: torch.dtype) -> bool:
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
        packed = OneDNNLinear(plain)
        with torch.inference_mode():
            pairs = [(_linear(packed, x, act, res), _linear(plain, x, act, res))
                     for act, res in ((None, None), (torch.nn.GELU(), None), (None, other))]
    except Exception:  # noqa: BLE001 - no oneDNN or TorchScript in this build, or no such dtype here
        return False
    # bf16 rounds to 1/256 of a value, once in a fused product, twice (product, GELU) without.
    return all(torch.allclose(got.float(), want.float(), rtol=2e-2, atol=2e-2)
               for got, want in pairs)


def pack_weights(model: torch.nn.Module) -> None:
    """Swap every Linear layer for a oneDNN-packed one where oneDNN runs its dtype.

    5-10% faster than unpacked on a Xeon with AMX (bench/results/README.md).
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and onednn_runs(child.weight.dtype):
                setattr(module, name, OneDNNLinear(child))


def fuse_layers(model: torch.nn.Module, tokenizer: Any) -> None:
    """Swap BERT-style encoder layers for FastLayer where the logits stay the same.

    Checked in fp32 on reviews with and without padding, first with the last layer cut to the
    first token, then without (a head that reads more than the first token); other
    architectures (DeBERTa) keep their layers. Quantised afterwards, int8 rounds one row's
    activations otherwise than a whole review's: MiniLM logits moved 0.011 with the last layer
    cut, against 0.076 between int8 and fp32 either way.
    """
    layers = encoder_layers(model)
    if layers is None:
        return
    original = list(layers)
    for first_only in (True, False):
        try:
            with _unchanged_logits(model, tokenizer):
                for i, layer in enumerate(original):  # outside inference mode: traced later
                    layers[i] = FastLayer(layer, first_only and i == len(original) - 1)
            return
        except Exception as error:  # noqa: BLE001 - not a BERT-style layer, or other logits
            log.debug("fused layers (first token only: %s) not used: %s", first_only, error)
            for i, layer in enumerate(original):
                layers[i] = layer


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's encoder layers, lowest first (BERT, DeBERTa, RoBERTa...); None if not found."""
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    return layers if isinstance(layers, torch.nn.ModuleList) and len(layers) else None


@contextlib.contextmanager
def _unchanged_logits(model: torch.nn.Module, tokenizer: Any) -> Iterator[None]:
    """Raise RuntimeError unless what the block does to the model keeps its fp32 logits, on a
    review with and one without padding (the model is in eval mode for the check)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tokenizer), (2, 29), generator=gen)
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[0, 17:] = False
    device = next(model.parameters()).device
    ids, keep = ids.to(device), padding_mask(keep, uses_sdpa(model)).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            want = [model(input_ids=ids).logits, model(input_ids=ids, attention_mask=keep).logits]
        yield
        with torch.inference_mode():
            check_logits(model(input_ids=ids).logits, want[0])
            check_logits(model(input_ids=ids, attention_mask=keep).logits, want[1])
    finally:
        model.train(was_training)


class FirstTokenLayer(torch.nn.Module):
    """A BERT-style encoder layer, trainable, that outputs the first token ([CLS]) only.

    A sequence classifier reads nothing else of its last layer, so training through this
    layer computes the same loss and gradients with a fraction of the layer's work: every
    token's keys and values, one token's query, attention output and feed-forward. It shares
    the wrapped layer's parameters and applies its dropouts.
    """

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
                *args: Any, **kwargs: Any) -> torch.Tensor:
        heads, batch = self.layer.attention.self, hidden.shape[0]

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch, x.shape[1], -1, heads.attention_head_size).transpose(1, 2)

        first = hidden[:, :1]
        if attention_mask is not None:
            attention_mask = attention_mask[:, :, :1]
        context = torch.nn.functional.scaled_dot_product_attention(
            split(heads.query(first)), split(heads.key(hidden)), split(heads.value(hidden)),
            attn_mask=attention_mask, dropout_p=heads.dropout.p if heads.training else 0.0,
            scale=heads.scaling)
        attended = self.layer.attention.output(context.transpose(1, 2).reshape(batch, 1, -1),
                                               first)
        return self.layer.output(self.layer.intermediate(attended), attended)


@contextlib.contextmanager
def first_token_last_layer(model: torch.nn.Module, tokenizer: Any) -> Iterator[bool]:
    """Train with the last encoder layer cut to the first token, where the logits stay the same.

    Yields whether the cut is in place (False for a model whose layers are not BERT-style, or
    whose head reads more than the first token); the original layer is back afterwards.
    """
    layers = encoder_layers(model)
    if layers is None:
        yield False
        return
    last = layers[-1]
    try:
        with _unchanged_logits(model, tokenizer):
            layers[-1] = FirstTokenLayer(last)
    except Exception as error:  # noqa: BLE001 - not a BERT-style layer, or other logits
        log.debug("training the whole last layer: %s", error)
        layers[-1] = last
        yield False
        return
    try:
        yield True
    finally:
        layers[-1] = last


def check_logits(got: torch.Tensor, want: torch.Tensor) -> None:
    """Raise RuntimeError unless a prepared model's logits match the original model's."""
    # bf16 keeps 8 bits of mantissa: a trace or a fused layer may round in another order.
    atol = 5e-2 if want.dtype == torch.bfloat16 else 1e-4
    if got.shape != want.shape or not torch.allclose(got.float(), want.float(), atol=atol):
        raise RuntimeError("the prepared model's logits differ from the original model's")
